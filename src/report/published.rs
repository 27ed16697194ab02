//! The published results beside the measured ones. `data/published/tables.toml` (compiled into
//! seglab) transcribes the thesis' and the EMBC paper's tables; a sweep spec names the one it
//! reproduces (`reproduces = "thesis-5.5"`), and the report adds a table in the published
//! layout with, for every cell, the published value, the measured one and their difference.
//!
//! A published row stands for the trials of one model whose configuration holds the row's
//! `match` values (dotted config keys, compared on the trial's stored `config_json`). Measured
//! values come from [`aggregate`] with the report's aggregation, so they are the numbers of the
//! report's own tables.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

use polars::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use super::ReportError;
use super::aggregate::{Aggregation, aggregate, polars_error};
use super::input::{ReportInput, f64_column, string_column, trial_configs, u64_column};
use super::prepare::Prepared;
use super::tables::{Align, Cell, ColumnSpec, Row, Stat, Table};
use super::timing::{TimingRow, duration};

/// The transcription, as compiled in.
const TABLES_TOML: &str = include_str!("../../data/published/tables.toml");

/// Every published table and timing table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedTables {
    #[serde(rename = "table")]
    pub tables: Vec<MetricTable>,
    #[serde(rename = "timing")]
    pub timings: Vec<TimingTable>,
}

/// A published table of per-class metrics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricTable {
    pub id: String,
    /// Where it is printed (document, table, section, page).
    pub source: String,
    pub title: String,
    /// Classes in the published column order.
    pub classes: Vec<String>,
    #[serde(rename = "row")]
    pub rows: Vec<MetricRow>,
}

/// One published row: a model, the config values that select its trials, and per metric the
/// value of each class.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricRow {
    pub label: String,
    pub model: String,
    #[serde(default, rename = "match")]
    pub match_values: BTreeMap<String, toml::Value>,
    pub dice: BTreeMap<String, f64>,
    pub precision: BTreeMap<String, f64>,
    pub recall: BTreeMap<String, f64>,
}

impl MetricRow {
    /// The published value of `metric` for `class`.
    pub fn value(&self, metric: &str, class: &str) -> Option<f64> {
        match metric {
            "dice" => self.dice.get(class),
            "precision" => self.precision.get(class),
            "recall" => self.recall.get(class),
            _ => None,
        }
        .copied()
    }
}

/// A published timing table: hours of annotation per volume and each model's times.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingTable {
    pub id: String,
    pub source: String,
    pub title: String,
    pub annotation_hours_per_volume: f64,
    pub train_volumes: u32,
    pub test_volumes: u32,
    #[serde(rename = "model")]
    pub models: Vec<TimingModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingModel {
    pub model: String,
    pub label: String,
    #[serde(default)]
    pub synth_hours: f64,
    pub train_hours: f64,
    #[serde(default)]
    pub test_hours: f64,
    pub annotated_train_volumes: u32,
    pub total_hours: f64,
}

/// The compiled-in transcription.
pub fn published() -> &'static PublishedTables {
    static TABLES: OnceLock<PublishedTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        toml::from_str(TABLES_TOML).expect("data/published/tables.toml parses (a unit test checks)")
    })
}

/// Ids a spec may name in `reproduces`.
pub fn ids() -> Vec<&'static str> {
    let p = published();
    p.tables
        .iter()
        .map(|t| t.id.as_str())
        .chain(p.timings.iter().map(|t| t.id.as_str()))
        .collect()
}

/// The published metric table `id`, if it is one.
pub fn metric_table(id: &str) -> Option<&'static MetricTable> {
    published().tables.iter().find(|t| t.id == id)
}

/// The published timing table `id`, if it is one.
pub fn timing_table(id: &str) -> Option<&'static TimingTable> {
    published().timings.iter().find(|t| t.id == id)
}

/// The metrics of published tables, in their column order.
const METRICS: [&str; 3] = ["dice", "precision", "recall"];

/// Whether the config tree holds every `match` value.
fn matches(config: &Value, wanted: &BTreeMap<String, toml::Value>) -> bool {
    wanted.iter().all(|(key, want)| {
        let got = key.split('.').try_fold(config, |node, part| node.get(part));
        let want = serde_json::to_value(want).ok();
        match (got, want) {
            (Some(g), Some(w)) => g == &w || (g.as_f64().is_some() && g.as_f64() == w.as_f64()),
            _ => false,
        }
    })
}

/// The comparison table of the published table `table`: per published row, its published
/// values, the measured ones (mean ± std, n per the aggregation) and the difference measured −
/// published. `None` when no task of the sweep has the table's classes.
pub(crate) fn comparison(
    input: &ReportInput,
    prep: &Prepared,
    table: &MetricTable,
    aggregation: Aggregation,
    decimals: usize,
) -> Result<Option<Table>, ReportError> {
    let wanted: HashSet<&str> = table.classes.iter().map(String::as_str).collect();
    let Some(task) = prep.tasks.iter().find(|t| {
        t.classes.len() == wanted.len() && t.classes.iter().all(|c| wanted.contains(c.as_str()))
    }) else {
        return Ok(None);
    };
    let configs = trial_configs(input)?;
    let mut columns = vec![
        ColumnSpec::new("Model", "model", Align::Left),
        ColumnSpec::new("", "source", Align::Left),
    ];
    for m in METRICS {
        for c in &table.classes {
            columns.push(ColumnSpec::metric_class(m, c, Align::Right));
        }
    }
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for row in &table.rows {
        let ids: HashSet<&str> = prep
            .trials
            .iter()
            .filter(|t| t.task == task.key && t.model == row.model)
            .filter(|t| {
                configs
                    .get(&t.id)
                    .is_some_and(|c| matches(c, &row.match_values))
            })
            .map(|t| t.id.as_str())
            .collect();
        let measured = measured(prep, &ids, aggregation)?;
        if ids.is_empty() {
            notes.push(format!(
                "{}: no trial of the sweep matches this row.",
                row.label
            ));
        }
        let published_cells: Vec<Cell> = METRICS
            .iter()
            .flat_map(|m| table.classes.iter().map(move |c| (m, c)))
            .map(|(m, c)| number(row.value(m, c), decimals))
            .collect();
        let measured_cells: Vec<Cell> = METRICS
            .iter()
            .flat_map(|m| table.classes.iter().map(move |c| (m, c)))
            .map(|(m, c)| match measured.get(&(m.to_string(), c.clone())) {
                Some(s) => Cell::Stat(Stat {
                    decimals,
                    show_n: true,
                    ..s.clone()
                }),
                None => Cell::Text("–".into()),
            })
            .collect();
        let difference_cells: Vec<Cell> = METRICS
            .iter()
            .flat_map(|m| table.classes.iter().map(move |c| (m, c)))
            .map(|(m, c)| {
                let got = measured
                    .get(&(m.to_string(), c.clone()))
                    .and_then(|s| s.mean);
                let diff = got.zip(row.value(m, c)).map(|(g, p)| g - p);
                signed(diff, decimals)
            })
            .collect();
        for (i, (source, cells)) in [
            ("published", published_cells),
            ("measured", measured_cells),
            ("measured − published", difference_cells),
        ]
        .into_iter()
        .enumerate()
        {
            let mut all = vec![
                Cell::Text(if i == 0 {
                    row.label.clone()
                } else {
                    String::new()
                }),
                Cell::Text(source.into()),
            ];
            all.extend(cells);
            rows.push(Row {
                cells: all,
                rule_above: i == 0 && !rows.is_empty(),
            });
        }
    }
    Ok(Some(Table {
        name: format!("published-{}", table.id),
        title: format!("{} — published and measured", table.title),
        caption: format!(
            "Published values from {}, measured values from this sweep's {} trials: {}. A \
             row's trials are those of its model whose configuration holds the row's \
             settings. Difference: measured mean − published value.",
            table.source,
            task.name,
            aggregation.describe()
        ),
        columns,
        rows,
        notes,
    }))
}

/// Mean ± std per (metric, class) over the cases of the trials `ids`.
fn measured(
    prep: &Prepared,
    ids: &HashSet<&str>,
    aggregation: Aggregation,
) -> Result<HashMap<(String, String), Stat>, ReportError> {
    if ids.is_empty() || prep.cases.height() == 0 {
        return Ok(HashMap::new());
    }
    let e = polars_error("results");
    let trial = string_column(&prep.cases, "trial_id").map_err(&e)?;
    let mask: BooleanChunked = trial
        .iter()
        .map(|t| t.as_deref().is_some_and(|t| ids.contains(t)))
        .collect();
    let cases = prep.cases.filter(&mask).map_err(&e)?;
    let stats = aggregate(&cases, &["metric", "class"], aggregation)?;
    let metric = string_column(&stats, "metric").map_err(&e)?;
    let class = string_column(&stats, "class").map_err(&e)?;
    let mean = f64_column(&stats, "mean").map_err(&e)?;
    let std = f64_column(&stats, "std").map_err(&e)?;
    let n = u64_column(&stats, "n").map_err(&e)?;
    let n_nan = u64_column(&stats, "n_nan").map_err(&e)?;
    let mut out = HashMap::new();
    for i in 0..stats.height() {
        if let (Some(m), Some(c)) = (&metric[i], &class[i]) {
            out.insert(
                (m.clone(), c.clone()),
                Stat {
                    mean: mean[i],
                    std: std[i],
                    n: n[i].unwrap_or(0) as u32,
                    n_nan: n_nan[i].unwrap_or(0) as u32,
                    decimals: 4,
                    best: false,
                    show_n: true,
                    ci: None,
                    differs_from_best: false,
                },
            );
        }
    }
    Ok(out)
}

fn number(v: Option<f64>, decimals: usize) -> Cell {
    Cell::Value {
        text: v.map_or("–".into(), |v| format!("{v:.decimals$}")),
        value: v,
    }
}

fn signed(v: Option<f64>, decimals: usize) -> Cell {
    Cell::Value {
        text: v.map_or("–".into(), |v| format!("{v:+.decimals$}")),
        value: v,
    }
}

/// The published timing table beside the measured rows (from the report's timing breakdown):
/// per model, the published annotation per volume, compute and total, and the measured ones.
/// Without testing rows when the published table has none (the paper's Table I).
pub(crate) fn timing_comparison(table: &TimingTable, measured: &[TimingRow]) -> Table {
    let include_testing = table.test_volumes > 0;
    let mut columns = vec![
        ColumnSpec::new("Model", "model", Align::Left),
        ColumnSpec::new("", "source", Align::Left),
    ];
    let mut add = |label: &str, key: &str| columns.push(ColumnSpec::new(label, key, Align::Right));
    add("Annotation per volume", "annotation_per_volume_h");
    add("Annotated training volumes", "annotated_train_volumes");
    add("Synthetic masks", "synth_h");
    add("Training compute", "train_compute_h");
    add("Training time", "training_time_h");
    if include_testing {
        add("Testing time", "testing_time_h");
        add("Total", "total_h");
    }
    let hours = |h: f64| Cell::Value {
        text: if h > 0.0 { duration(h) } else { "–".into() },
        value: Some(h),
    };
    let total = |h: f64| Cell::Value {
        text: format!("{h:.2} h"),
        value: Some(h),
    };
    let mut rows = Vec::new();
    for m in &table.models {
        let annotation = table.annotation_hours_per_volume * f64::from(m.annotated_train_volumes);
        let training = annotation + m.synth_hours + m.train_hours;
        let testing =
            table.annotation_hours_per_volume * f64::from(table.test_volumes) + m.test_hours;
        let mut published = vec![
            Cell::Text(m.label.clone()),
            Cell::Text("published".into()),
            hours(table.annotation_hours_per_volume),
            number(Some(f64::from(m.annotated_train_volumes)), 0),
            hours(m.synth_hours),
            hours(m.train_hours),
            total(training),
        ];
        if include_testing {
            published.push(total(testing));
            published.push(total(m.total_hours));
        }
        rows.push(Row {
            cells: published,
            rule_above: !rows.is_empty(),
        });
        let label = super::prepare::model_label(&m.model);
        let mut cells = vec![Cell::Text(String::new()), Cell::Text("measured".into())];
        // A measured column is a configuration: "U-Net", or "U-Net (key = value)" in a sweep.
        let configuration = format!("{label} (");
        let row = measured.iter().find(|r| r.model == label).or_else(|| {
            measured
                .iter()
                .find(|r| r.model.starts_with(&configuration))
        });
        match row {
            Some(r) => {
                cells.push(match r.annotation_hours_per_volume {
                    Some(h) => hours(h),
                    None => Cell::Text("unknown".into()),
                });
                cells.push(number(Some(r.annotated_train_volumes), 2));
                cells.push(hours(r.synth_hours));
                cells.push(hours(r.train_hours));
                cells.push(total(r.training_time()));
                if include_testing {
                    cells.push(total(r.testing_time()));
                    cells.push(total(r.total_time()));
                }
            }
            None => {
                let n = columns.len() - 2;
                cells.extend((0..n).map(|_| Cell::Text("–".into())));
            }
        }
        rows.push(Row {
            cells,
            rule_above: false,
        });
    }
    Table {
        name: format!("published-{}", table.id),
        title: format!("{} — published and measured", table.title),
        caption: format!(
            "Published values from {}: {} h of annotation per volume, {} annotated training \
             volume(s) for a supervised model{}. Measured: this sweep's timing breakdown \
             (the mean over each model's trials; annotation hours from dataset.toml). The \
             published compute ran on one GTX 1070.",
            table.source,
            table.annotation_hours_per_volume,
            table.train_volumes,
            if include_testing {
                format!(
                    " and {} annotated test volume(s) for every model",
                    table.test_volumes
                )
            } else {
                ", training only".into()
            }
        ),
        columns,
        rows,
        notes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transcription_parses_and_is_consistent() {
        let p = published();
        assert_eq!(p.tables.len(), 7);
        assert_eq!(p.timings.len(), 2);
        for t in &p.tables {
            for r in &t.rows {
                for m in METRICS {
                    for c in &t.classes {
                        let v = r
                            .value(m, c)
                            .unwrap_or_else(|| panic!("{} {} {m} {c}", t.id, r.label));
                        assert!((0.0..=1.0).contains(&v), "{} {m} {c}: {v}", t.id);
                    }
                }
            }
        }
        // The thesis' Table 5.7 totals are its own parts added up (to its 2 decimals).
        for t in &p.timings {
            for m in &t.models {
                let sum = t.annotation_hours_per_volume
                    * f64::from(m.annotated_train_volumes + t.test_volumes)
                    + m.synth_hours
                    + m.train_hours
                    + m.test_hours;
                assert!(
                    (sum - m.total_hours).abs() < 0.06,
                    "{} {}: {sum}",
                    t.id,
                    m.label
                );
            }
        }
        assert!(ids().contains(&"thesis-5.5") && ids().contains(&"paper-I"));
    }

    #[test]
    fn rows_match_on_config_values() {
        let config = serde_json::json!({"cyclegan": {"masks": "annotated"}, "loss": {"w": 3.5}});
        let want = |k: &str, v: toml::Value| BTreeMap::from([(k.to_string(), v)]);
        assert!(matches(
            &config,
            &want("cyclegan.masks", "annotated".into())
        ));
        assert!(!matches(
            &config,
            &want("cyclegan.masks", "synthetic".into())
        ));
        assert!(matches(&config, &want("loss.w", toml::Value::Float(3.5))));
        assert!(!matches(&config, &want("loss.x", toml::Value::Float(3.5))));
        assert!(matches(&config, &BTreeMap::new()));
    }
}
