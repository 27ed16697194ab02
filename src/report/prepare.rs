//! Shapes the canonical store view into what tables and plots consume: trials with their
//! task and configuration label, per-case rows (`cases`), per-epoch rows (`curves`) and the
//! list of missing trials. No statistics are computed here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use polars::prelude::*;

use super::aggregate::{polars_error, require_columns};
use super::input::{ReportInput, distinct, string_column, u64_column};
use super::{ReportError, ReportOptions};

/// One trial as the report sees it (its chosen attempt).
#[derive(Clone, Debug)]
pub(crate) struct Trial {
    pub id: String,
    pub status: String,
    pub model: String,
    pub task: String,
    pub fold: Option<u64>,
    pub seed: Option<u64>,
    /// Configuration keys that may vary between trials (`param.*`, `preset`, `scale`).
    pub params: BTreeMap<String, String>,
    pub error: Option<String>,
    /// The free-text labels and notes of the trial's spec and grid block (empty, None in
    /// stores written before them).
    pub tags: Vec<String>,
    pub notes: Option<String>,
    /// Index into [`Prepared::configs`].
    pub config: usize,
}

/// A task: one class list (2-class, 3-class, …).
#[derive(Clone, Debug)]
pub(crate) struct Task {
    /// The `classes` value of the store ("golgi,nuclei").
    pub key: String,
    /// "2-class (golgi, nuclei)".
    pub name: String,
    /// File-name part: "2class".
    pub slug: String,
    /// Classes in table order: nuclei, golgi, pair, then any others (the thesis' order).
    pub classes: Vec<String>,
}

/// A model with one value of every swept key: one row of a comparison table.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub task: String,
    pub model: String,
    /// Swept keys and this configuration's values (display keys).
    pub params: Vec<(String, String)>,
    /// "CycleGAN (golgi_weight = 3.5)".
    pub label: String,
}

/// A trial that has no rows in the tables, and why.
#[derive(Clone, Debug)]
pub(crate) struct Missing {
    pub trial_id: Option<String>,
    pub config: String,
    pub fold: Option<u64>,
    pub seed: Option<u64>,
    pub status: String,
    pub detail: String,
}

pub(crate) struct Prepared {
    pub trials: Vec<Trial>,
    pub tasks: Vec<Task>,
    pub configs: Vec<Config>,
    /// Swept keys per task (display keys), in order.
    pub swept: BTreeMap<String, Vec<String>>,
    /// Per-case rows of finished trials: `trial_id`, `fold`, `seed`, `task`, `model`,
    /// `config` (label), `volume`, `class`, `metric`, `value`, plus one column per swept key.
    pub cases: DataFrame,
    /// Per-epoch rows of every trial: `trial_id`, `fold`, `seed`, `task`, `model`, `config`,
    /// `split`, `metric`, `epoch`, `value`.
    pub curves: DataFrame,
    pub missing: Vec<Missing>,
    pub warnings: Vec<String>,
}

/// Display names of the published models; others are shown as stored.
pub(crate) fn model_label(model: &str) -> String {
    match model {
        "unet3d" | "unet" => "U-Net".into(),
        "vox2vox" => "Vox2Vox".into(),
        "cyclegan" => "CycleGAN".into(),
        "threshold" | "otsu" => "Otsu threshold".into(),
        other => other.into(),
    }
}

/// Sort rank of models: the order of the thesis' tables, then alphabetical.
pub(crate) fn model_rank(model: &str) -> (usize, String) {
    let known = ["unet3d", "unet", "vox2vox", "cyclegan", "threshold", "otsu"];
    let rank = known
        .iter()
        .position(|m| *m == model)
        .unwrap_or(known.len());
    (rank, model.to_string())
}

/// Display names of classes.
pub(crate) fn class_label(class: &str) -> String {
    match class {
        "nuclei" => "Nuclei".into(),
        "golgi" => "Golgi".into(),
        "pair" => "Pair".into(),
        other => other.into(),
    }
}

/// Display names of metrics (`results.metric`).
pub(crate) fn metric_label(metric: &str) -> String {
    match metric {
        "dice" => "Dice".into(),
        "precision" => "Precision".into(),
        "recall" => "Recall".into(),
        "iou" => "IoU".into(),
        "hd95" => "HD95".into(),
        "assd" => "ASSD".into(),
        "object_f1" => "Object F1".into(),
        other => other.into(),
    }
}

/// Whether a larger value of `metric` is better (distances and losses are smaller-better).
pub(crate) fn higher_is_better(metric: &str) -> bool {
    let m = metric.to_ascii_lowercase();
    !(m.starts_with("hd")
        || m.contains("assd")
        || m.contains("distance")
        || m.contains("loss")
        || m.contains("error"))
}

/// A file-name-safe version of `s`.
pub(crate) fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if ch.is_ascii_alphanumeric() || ch == '.' || ch == '_' {
            out.push(ch.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

fn class_rank(class: &str) -> usize {
    ["nuclei", "golgi", "pair"]
        .iter()
        .position(|c| *c == class)
        .unwrap_or(3)
}

impl Prepared {
    pub fn new(input: &ReportInput, options: &ReportOptions) -> Result<Self, ReportError> {
        require_columns(
            &input.trials,
            &["trial_id", "status", "model", "classes", "fold", "seed"],
            "trials",
        )?;
        let mut warnings = input.warnings.clone();
        let mut trials = read_trials(&input.trials)?;
        let tasks = make_tasks(&trials);
        let (configs, swept) = make_configs(&mut trials, &tasks);

        let results_needed = ["trial_id", "volume", "class", "metric", "value"];
        require_columns(&input.results, &results_needed, "results")?;
        let with_results: HashSet<String> =
            distinct(&string_column(&input.results, "trial_id").map_err(polars_error("results"))?)
                .into_iter()
                .collect();
        let finished: Vec<&Trial> = trials
            .iter()
            .filter(|t| t.status == "finished" && with_results.contains(&t.id))
            .collect();
        let attrs = trial_frame(&finished, &configs, &swept)?;
        let cases = input
            .results
            .clone()
            .lazy()
            .select(results_needed.map(col))
            .join(
                attrs.clone().lazy(),
                [col("trial_id")],
                [col("trial_id")],
                JoinArgs::new(JoinType::Inner),
            )
            .collect()
            .map_err(polars_error("results"))?;

        let curves = if input.epochs.height() == 0 {
            DataFrame::empty()
        } else {
            let needed = ["trial_id", "epoch", "split", "metric", "value"];
            require_columns(&input.epochs, &needed, "epochs")?;
            let all: Vec<&Trial> = trials.iter().collect();
            let attrs = trial_frame(&all, &configs, &swept)?;
            input
                .epochs
                .clone()
                .lazy()
                .select(needed.map(col))
                .join(
                    attrs.lazy(),
                    [col("trial_id")],
                    [col("trial_id")],
                    JoinArgs::new(JoinType::Inner),
                )
                .collect()
                .map_err(polars_error("epochs"))?
        };

        let present: BTreeSet<String> =
            distinct(&string_column(&cases, "metric").map_err(polars_error("results"))?)
                .into_iter()
                .collect();
        for m in &options.metrics {
            if !present.contains(m) && cases.height() > 0 {
                warnings.push(format!(
                    "metric `{m}` has no rows in the results (present: {})",
                    present.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        let missing = find_missing(&trials, &configs, &with_results);
        Ok(Prepared {
            trials,
            tasks,
            configs,
            swept,
            cases,
            curves,
            missing,
            warnings,
        })
    }

    /// Configurations of `task`, in table order.
    pub fn configs_of(&self, task: &str) -> Vec<&Config> {
        self.configs.iter().filter(|c| c.task == task).collect()
    }

    /// The per-case result rows of `task` where `filter` also holds (`lit(true)`: all of them).
    pub fn task_cases(&self, task: &str, filter: Expr) -> Result<DataFrame, ReportError> {
        task_rows(&self.cases, task, filter, "results")
    }

    /// The per-epoch rows of `task` where `filter` also holds.
    pub fn task_curves(&self, task: &str, filter: Expr) -> Result<DataFrame, ReportError> {
        task_rows(&self.curves, task, filter, "epochs")
    }

    /// Number of trials whose rows are in the tables.
    pub fn finished_count(&self) -> usize {
        let ids: HashSet<String> = string_column(&self.cases, "trial_id")
            .map(|v| distinct(&v).into_iter().collect())
            .unwrap_or_default();
        ids.len()
    }
}

fn read_trials(df: &DataFrame) -> Result<Vec<Trial>, ReportError> {
    let err = polars_error("trials");
    let ids = string_column(df, "trial_id").map_err(&err)?;
    let status = string_column(df, "status").map_err(&err)?;
    let model = string_column(df, "model").map_err(&err)?;
    let classes = string_column(df, "classes").map_err(&err)?;
    let fold = u64_column(df, "fold").map_err(&err)?;
    let seed = u64_column(df, "seed").map_err(&err)?;
    let optional = |name: &str| match df.column(name) {
        Ok(_) => string_column(df, name).map_err(&err),
        Err(_) => Ok(vec![None; df.height()]),
    };
    let (error, tags, notes) = (optional("error")?, optional("tags")?, optional("notes")?);
    let param_names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .filter(|n| n.starts_with("param.") || n == "preset" || n == "scale")
        .collect();
    let mut params: Vec<Vec<Option<String>>> = Vec::new();
    for name in &param_names {
        params.push(string_column(df, name).map_err(&err)?);
    }
    let mut out = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let id = ids[i]
            .clone()
            .ok_or_else(|| ReportError::Input(format!("trials: row {i} has no trial_id")))?;
        let mut p = BTreeMap::new();
        for (name, values) in param_names.iter().zip(&params) {
            if let Some(v) = &values[i] {
                p.insert(name.trim_start_matches("param.").to_string(), v.clone());
            }
        }
        out.push(Trial {
            id,
            status: status[i].clone().unwrap_or_else(|| "unknown".into()),
            model: model[i].clone().unwrap_or_else(|| "unknown".into()),
            task: classes[i].clone().unwrap_or_default(),
            fold: fold[i],
            seed: seed[i],
            params: p,
            error: error[i].clone().filter(|e| !e.is_empty()),
            tags: tags[i]
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            notes: notes[i].clone().filter(|n| !n.is_empty()),
            config: 0,
        });
    }
    Ok(out)
}

fn make_tasks(trials: &[Trial]) -> Vec<Task> {
    let keys: BTreeSet<&str> = trials.iter().map(|t| t.task.as_str()).collect();
    let mut counts: HashMap<usize, usize> = HashMap::new();
    let split = |k: &str| -> Vec<String> {
        k.split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect()
    };
    for k in &keys {
        *counts.entry(split(k).len()).or_default() += 1;
    }
    let mut tasks: Vec<Task> = keys
        .iter()
        .map(|k| {
            let mut classes = split(k);
            let n = classes.len();
            let listed = classes.join(", ");
            classes.sort_by_key(|c| class_rank(c));
            let unique = counts[&n] == 1;
            Task {
                key: k.to_string(),
                name: format!("{n}-class ({listed})"),
                slug: if unique {
                    format!("{n}class")
                } else {
                    slug(&split(k).join("-"))
                },
                classes,
            }
        })
        .collect();
    tasks.sort_by_key(|t| (t.classes.len(), t.key.clone()));
    tasks
}

/// Groups trials into configurations (task, model, values of the keys swept for that model)
/// and sets `Trial::config`.
/// The value shown for a swept key a trial does not have.
const ABSENT: &str = "–";

fn make_configs(
    trials: &mut [Trial],
    tasks: &[Task],
) -> (Vec<Config>, BTreeMap<String, Vec<String>>) {
    // keys that vary within (task, model); a key some trials lack (a spec that gained a grid
    // key between runs into the same store) varies too, "–" standing for its absence
    let mut values: BTreeMap<(String, String), BTreeMap<String, BTreeSet<String>>> =
        BTreeMap::new();
    for t in trials.iter() {
        let entry = values.entry((t.task.clone(), t.model.clone())).or_default();
        for (k, v) in &t.params {
            entry.entry(k.clone()).or_default().insert(v.clone());
        }
    }
    for t in trials.iter() {
        let entry = values.entry((t.task.clone(), t.model.clone())).or_default();
        for (k, v) in entry.iter_mut() {
            if !t.params.contains_key(k) {
                v.insert(ABSENT.into());
            }
        }
    }
    let varying: BTreeMap<(String, String), Vec<String>> = values
        .into_iter()
        .map(|(group, keys)| {
            let swept = keys
                .into_iter()
                .filter(|(_, v)| v.len() > 1)
                .map(|(k, _)| k)
                .collect();
            (group, swept)
        })
        .collect();
    // short display keys: the last dotted segment unless two swept keys share it
    let all_swept: BTreeSet<String> = varying.values().flatten().cloned().collect();
    let short = |k: &str| -> String {
        let last = k.rsplit('.').next().unwrap_or(k);
        let clash = all_swept
            .iter()
            .filter(|o| o.rsplit('.').next() == Some(last))
            .count()
            > 1;
        if clash {
            k.to_string()
        } else {
            last.to_string()
        }
    };
    let mut swept: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((task, _), keys) in &varying {
        let entry = swept.entry(task.clone()).or_default();
        for k in keys {
            let s = short(k);
            if !entry.contains(&s) {
                entry.push(s);
            }
        }
    }

    let mut configs: Vec<Config> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for t in trials.iter_mut() {
        let keys = &varying[&(t.task.clone(), t.model.clone())];
        let params: Vec<(String, String)> = keys
            .iter()
            .map(|k| {
                (
                    short(k),
                    t.params.get(k).cloned().unwrap_or_else(|| ABSENT.into()),
                )
            })
            .collect();
        let id = format!(
            "{}|{}|{}",
            t.task,
            t.model,
            params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";")
        );
        let n = configs.len();
        let i = *index.entry(id).or_insert(n);
        if i == n {
            let label = if params.is_empty() {
                model_label(&t.model)
            } else {
                format!(
                    "{} ({})",
                    model_label(&t.model),
                    params
                        .iter()
                        .map(|(k, v)| format!("{k} = {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            configs.push(Config {
                task: t.task.clone(),
                model: t.model.clone(),
                params,
                label,
            });
        }
        t.config = i;
    }
    // table order: task, model rank, then parameter values (numerically when possible)
    let task_rank: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.key.as_str(), i))
        .collect();
    let mut order: Vec<usize> = (0..configs.len()).collect();
    order.sort_by(|&a, &b| {
        let (ca, cb) = (&configs[a], &configs[b]);
        (task_rank[ca.task.as_str()], model_rank(&ca.model))
            .cmp(&(task_rank[cb.task.as_str()], model_rank(&cb.model)))
            .then_with(|| compare_params(&ca.params, &cb.params))
    });
    let mut new_index = vec![0; configs.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    for t in trials.iter_mut() {
        t.config = new_index[t.config];
    }
    let configs = order.into_iter().map(|i| configs[i].clone()).collect();
    (configs, swept)
}

/// The rows of `frame` (the `what` table) of task `task` where `filter` also holds.
fn task_rows(
    frame: &DataFrame,
    task: &str,
    filter: Expr,
    what: &'static str,
) -> Result<DataFrame, ReportError> {
    frame
        .clone()
        .lazy()
        .filter(col("task").eq(lit(task.to_string())).and(filter))
        .collect()
        .map_err(polars_error(what))
}

/// Orders parameter values numerically where both parse as numbers.
pub(crate) fn compare_values(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.total_cmp(&y),
        _ => a.cmp(b),
    }
}

fn compare_params(a: &[(String, String)], b: &[(String, String)]) -> std::cmp::Ordering {
    for ((ka, va), (kb, vb)) in a.iter().zip(b) {
        let o = ka.cmp(kb).then_with(|| compare_values(va, vb));
        if o.is_ne() {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// The identity columns joined onto per-case and per-epoch rows.
fn trial_frame(
    trials: &[&Trial],
    configs: &[Config],
    swept: &BTreeMap<String, Vec<String>>,
) -> Result<DataFrame, ReportError> {
    let n = trials.len();
    let mut columns = vec![
        Column::new(
            "trial_id".into(),
            trials.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "fold".into(),
            trials.iter().map(|t| t.fold).collect::<Vec<_>>(),
        ),
        Column::new(
            "seed".into(),
            trials.iter().map(|t| t.seed).collect::<Vec<_>>(),
        ),
        Column::new(
            "task".into(),
            trials.iter().map(|t| t.task.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "model".into(),
            trials.iter().map(|t| t.model.clone()).collect::<Vec<_>>(),
        ),
        Column::new(
            "config".into(),
            trials
                .iter()
                .map(|t| configs[t.config].label.clone())
                .collect::<Vec<_>>(),
        ),
    ];
    let keys: BTreeSet<&String> = swept.values().flatten().collect();
    for key in keys {
        let values: Vec<Option<String>> = trials
            .iter()
            .map(|t| {
                configs[t.config]
                    .params
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
            })
            .collect();
        columns.push(Column::new(format!("param:{key}").into(), values));
    }
    DataFrame::new(n, columns).map_err(polars_error("trials"))
}

/// Trials without rows in the tables, plus (fold, seed) cells a configuration lacks although
/// other trials of its task use them.
fn find_missing(
    trials: &[Trial],
    configs: &[Config],
    with_results: &HashSet<String>,
) -> Vec<Missing> {
    let mut out = Vec::new();
    for t in trials {
        let (status, detail) = if t.status != "finished" {
            (
                t.status.clone(),
                t.error.clone().unwrap_or_else(|| match t.status.as_str() {
                    "running" => "still running".into(),
                    _ => String::new(),
                }),
            )
        } else if !with_results.contains(&t.id) {
            ("finished".into(), "no result rows in the store".into())
        } else {
            continue;
        };
        out.push(Missing {
            trial_id: Some(t.id.clone()),
            config: configs[t.config].label.clone(),
            fold: t.fold,
            seed: t.seed,
            status,
            detail,
        });
    }
    // inferred gaps: every configuration of a task should cover the task's folds × seeds
    type FoldsAndSeeds = (BTreeSet<Option<u64>>, BTreeSet<Option<u64>>);
    let mut grid: BTreeMap<&str, FoldsAndSeeds> = BTreeMap::new();
    let mut have: HashSet<(usize, Option<u64>, Option<u64>)> = HashSet::new();
    for t in trials {
        let g = grid.entry(t.task.as_str()).or_default();
        g.0.insert(t.fold);
        g.1.insert(t.seed);
        have.insert((t.config, t.fold, t.seed));
    }
    for (ci, c) in configs.iter().enumerate() {
        let (folds, seeds) = &grid[c.task.as_str()];
        for &fold in folds {
            for &seed in seeds {
                if !have.contains(&(ci, fold, seed)) {
                    out.push(Missing {
                        trial_id: None,
                        config: c.label.clone(),
                        fold,
                        seed,
                        status: "not in store".into(),
                        detail: "inferred: other trials of this task use this fold and seed".into(),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    #[test]
    fn configs_are_labelled_by_their_swept_keys() {
        let input = fixture::small_sweep();
        let p = Prepared::new(&input, &ReportOptions::default()).unwrap();
        let labels: Vec<&str> = p.configs.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            vec![
                "U-Net",
                "Vox2Vox",
                "CycleGAN (golgi_weight = 1.0)",
                "CycleGAN (golgi_weight = 3.5)",
                "U-Net",
            ]
        );
        assert_eq!(p.tasks.len(), 2);
        assert_eq!(p.tasks[0].slug, "2class");
        assert_eq!(p.tasks[0].classes, vec!["nuclei", "golgi"]);
        assert_eq!(p.tasks[1].classes, vec!["nuclei", "golgi", "pair"]);
        assert_eq!(p.swept["golgi,nuclei"], vec!["golgi_weight"]);
    }

    /// Trials recorded before their spec gained a grid key lack it: they form a row of their
    /// own instead of being pooled with the trials that have it.
    #[test]
    fn a_key_some_trials_lack_still_separates_the_rows() {
        let mut input = fixture::small_sweep();
        let key = "param.loss.golgi_weight";
        input.trials = input
            .trials
            .clone()
            .lazy()
            .with_column(
                when(col(key).eq(lit("1.0")))
                    .then(lit(NULL).cast(DataType::String))
                    .otherwise(col(key))
                    .alias(key),
            )
            .collect()
            .unwrap();
        let p = Prepared::new(&input, &ReportOptions::default()).unwrap();
        let labels: Vec<&str> = p.configs.iter().map(|c| c.label.as_str()).collect();
        assert!(
            labels.contains(&"CycleGAN (golgi_weight = –)"),
            "{labels:?}"
        );
        assert!(
            labels.contains(&"CycleGAN (golgi_weight = 3.5)"),
            "{labels:?}"
        );
        assert_eq!(p.swept["golgi,nuclei"], vec!["golgi_weight"]);
    }

    #[test]
    fn failed_running_and_absent_trials_are_listed() {
        let input = fixture::small_sweep();
        let p = Prepared::new(&input, &ReportOptions::default()).unwrap();
        let statuses: Vec<&str> = p.missing.iter().map(|m| m.status.as_str()).collect();
        assert!(statuses.contains(&"failed"), "{statuses:?}");
        assert!(statuses.contains(&"running"), "{statuses:?}");
        assert!(statuses.contains(&"not in store"), "{statuses:?}");
        let failed = p.missing.iter().find(|m| m.status == "failed").unwrap();
        assert!(failed.detail.contains("out of memory"), "{failed:?}");
    }

    #[test]
    fn slugs_are_file_name_safe() {
        assert_eq!(
            slug("CycleGAN (golgi weight = 3.5)"),
            "cyclegan-golgi-weight-3.5"
        );
        assert_eq!(slug("golgi,nuclei"), "golgi-nuclei");
    }
}
