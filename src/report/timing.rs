//! The timing breakdown: what each model costs, manual annotation included, in the layout of
//! the thesis' Table 5.7 (and, training rows only, the EMBC paper's Table I).
//!
//! Timing model (thesis §5.3.4, paper §II-D): a *supervised* model costs the manual
//! annotation of its training volumes (hours per volume × annotated training volumes) plus its
//! training time; a *self-supervised* model costs the synthetic-mask generation plus its
//! training time. Testing costs the annotation of the test volumes (every model needs it to
//! be scored) plus the prediction time. Totals add training and testing; ratios divide by the
//! fastest model. From the store: a trial that recorded a `synth_masks` phase is
//! self-supervised; one with a `train` phase and no `synth_masks` phase is supervised; one
//! without a `train` phase (a threshold baseline, which only preprocesses and predicts) needs no
//! training annotation.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use polars::prelude::*;
use serde_json::Value;

use super::ReportError;
use super::aggregate::{Aggregation, aggregate, polars_error, require_columns};
use super::input::{
    ReportInput, f64_column, string_column, trial_configs, trial_validation_volumes, u64_column,
};
use super::prepare::{Prepared, Task, model_rank};
use super::tables::{Align, Cell, ColumnSpec, Row, Table};

/// The phase of the optimisation steps themselves: only a trial that has it learned anything.
pub const TRAIN_STEP_PHASE: &str = "train";
/// Phases of the `timings` table that count as training compute.
pub const TRAIN_PHASES: [&str; 4] = ["preprocess", "patches", TRAIN_STEP_PHASE, "validate"];
/// Phases that count as testing compute.
pub const TEST_PHASES: [&str; 2] = ["predict", "evaluate"];
/// The phase of synthetic-mask generation.
pub const SYNTH_PHASE: &str = "synth_masks";

/// One model's time budget. Hours throughout.
#[derive(Clone, Debug, PartialEq)]
pub struct TimingRow {
    /// Display name of the model.
    pub model: String,
    /// Manual annotation per volume (from dataset.toml); `None` when unknown.
    pub annotation_hours_per_volume: Option<f64>,
    /// Annotated volumes the model trains on (0 for a self-supervised model).
    pub annotated_train_volumes: f64,
    /// Annotated volumes it is tested on.
    pub annotated_test_volumes: f64,
    /// Synthetic-mask generation.
    pub synth_hours: f64,
    /// Training compute.
    pub train_hours: f64,
    /// Testing compute (prediction and evaluation).
    pub test_hours: f64,
    /// Trials behind the compute times (0 for rows written by hand).
    pub n_trials: u32,
}

impl TimingRow {
    /// Whether the model learns from annotated or synthetic masks (a threshold baseline does not).
    pub fn learns(&self) -> bool {
        self.annotated_train_volumes > 0.0 || self.synth_hours > 0.0
    }

    fn annotation(&self, volumes: f64) -> f64 {
        if volumes == 0.0 {
            0.0
        } else {
            self.annotation_hours_per_volume.unwrap_or(0.0) * volumes
        }
    }

    /// Annotation of the training volumes.
    pub fn train_annotation_hours(&self) -> f64 {
        self.annotation(self.annotated_train_volumes)
    }

    /// Annotation of the test volumes.
    pub fn test_annotation_hours(&self) -> f64 {
        self.annotation(self.annotated_test_volumes)
    }

    /// Training time: annotation of the training volumes + synthetic masks + training.
    pub fn training_time(&self) -> f64 {
        self.train_annotation_hours() + self.synth_hours + self.train_hours
    }

    /// Testing time: annotation of the test volumes + prediction.
    pub fn testing_time(&self) -> f64 {
        self.test_annotation_hours() + self.test_hours
    }

    /// Training plus testing time.
    pub fn total_time(&self) -> f64 {
        self.training_time() + self.testing_time()
    }

    fn annotation_text(&self, volumes: f64) -> String {
        let per = match self.annotation_hours_per_volume {
            Some(h) => duration(h),
            None => "? h".into(),
        };
        format!("({per} × {})", trim(volumes, 2))
    }

    /// "(28 h × 6) + 66 min = 169.10 h" — the thesis' cell, with its value.
    fn training_cell(&self, decimals: usize) -> Cell {
        let mut parts = Vec::new();
        if self.annotated_train_volumes > 0.0 {
            parts.push(self.annotation_text(self.annotated_train_volumes));
        }
        if self.synth_hours > 0.0 {
            parts.push(duration(self.synth_hours));
        }
        parts.push(duration(self.train_hours));
        formula(parts, self.training_time(), decimals)
    }

    fn testing_cell(&self, decimals: usize) -> Cell {
        let mut parts = Vec::new();
        if self.annotated_test_volumes > 0.0 {
            parts.push(self.annotation_text(self.annotated_test_volumes));
        }
        parts.push(duration(self.test_hours));
        formula(parts, self.testing_time(), decimals)
    }
}

fn formula(parts: Vec<String>, value: f64, decimals: usize) -> Cell {
    Cell::Value {
        text: format!("{} = {value:.decimals$} h", parts.join(" + ")),
        value: Some(value),
    }
}

/// A number with at most `decimals` decimals, trailing zeros removed.
fn trim(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A duration given in hours, in the unit a reader would use: "35 s", "66 min", "28.6 h".
pub fn duration(hours: f64) -> String {
    let seconds = hours * 3600.0;
    if seconds > 0.0 && seconds < 0.5 {
        "< 1 s".into()
    } else if seconds < 90.0 {
        format!("{} s", trim(seconds, 0))
    } else if seconds < 90.0 * 60.0 {
        format!("{} min", trim(seconds / 60.0, 1))
    } else {
        format!("{} h", trim(hours, 1))
    }
}

/// The timing breakdown of several models.
#[derive(Clone, Debug, PartialEq)]
pub struct TimingTable {
    pub rows: Vec<TimingRow>,
    /// Include the testing rows and totals (the thesis' layout); without them the table has
    /// the training rows of the paper's Table I.
    pub include_testing: bool,
    /// Decimals of hour values.
    pub decimals: usize,
}

impl TimingTable {
    /// `time / fastest time` per row, for `time` = training or total time. Only learned models
    /// enter the comparison: a baseline without training ([`TimingRow::learns`]) has a ratio of
    /// NaN (shown as "–") and is never the reference, since dividing by its near-zero training
    /// time would give ratios in the hundred thousands.
    pub fn ratios(&self, time: impl Fn(&TimingRow) -> f64) -> Vec<f64> {
        let Some(fastest) = self.fastest(&time).map(&time) else {
            return vec![f64::NAN; self.rows.len()];
        };
        self.rows
            .iter()
            .map(|r| {
                if r.learns() {
                    time(r) / fastest
                } else {
                    f64::NAN
                }
            })
            .collect()
    }

    fn fastest(&self, time: impl Fn(&TimingRow) -> f64) -> Option<&TimingRow> {
        self.rows
            .iter()
            .filter(|r| r.learns() && time(r) > 0.0)
            .min_by(|a, b| time(a).total_cmp(&time(b)))
    }

    /// The table: one column per model, one row per quantity.
    pub fn to_table(&self, name: &str, title: &str, caption: &str) -> Table {
        let mut columns = vec![ColumnSpec::new("", "quantity", Align::Left)];
        for r in &self.rows {
            columns.push(ColumnSpec::new(
                r.model.clone(),
                super::prepare::slug(&r.model),
                Align::Left,
            ));
        }
        let d = self.decimals;
        let mut rows = Vec::new();
        let mut push = |label: &str, cells: Vec<Cell>, rule_above: bool| {
            let mut all = vec![Cell::Text(label.into())];
            all.extend(cells);
            rows.push(Row {
                cells: all,
                rule_above,
            });
        };
        push(
            "Manual annotation per volume",
            self.rows
                .iter()
                .map(|r| match r.annotation_hours_per_volume {
                    Some(h) => Cell::Value {
                        text: duration(h),
                        value: Some(h),
                    },
                    None => Cell::Text("unknown".into()),
                })
                .collect(),
            false,
        );
        let count = |v: f64| Cell::Value {
            text: trim(v, 2),
            value: Some(v),
        };
        push(
            "Annotated training volumes",
            self.rows
                .iter()
                .map(|r| count(r.annotated_train_volumes))
                .collect(),
            false,
        );
        if self.include_testing {
            push(
                "Annotated test volumes",
                self.rows
                    .iter()
                    .map(|r| count(r.annotated_test_volumes))
                    .collect(),
                false,
            );
        }
        let hours = |v: f64| {
            if v > 0.0 {
                Cell::Value {
                    text: duration(v),
                    value: Some(v),
                }
            } else {
                Cell::Value {
                    text: "–".into(),
                    value: Some(0.0),
                }
            }
        };
        push(
            "Synthetic masks",
            self.rows.iter().map(|r| hours(r.synth_hours)).collect(),
            false,
        );
        push(
            "Training compute",
            self.rows.iter().map(|r| hours(r.train_hours)).collect(),
            false,
        );
        if self.include_testing {
            push(
                "Testing compute",
                self.rows.iter().map(|r| hours(r.test_hours)).collect(),
                false,
            );
        }
        push(
            "Training time",
            self.rows.iter().map(|r| r.training_cell(d)).collect(),
            true,
        );
        if self.include_testing {
            push(
                "Testing time",
                self.rows.iter().map(|r| r.testing_cell(d)).collect(),
                false,
            );
            push(
                "Total time",
                self.rows
                    .iter()
                    .map(|r| Cell::Value {
                        text: format!("{:.d$} h", r.total_time()),
                        value: Some(r.total_time()),
                    })
                    .collect(),
                false,
            );
        }
        let ratio_row = |ratios: Vec<f64>| -> Vec<Cell> {
            ratios
                .into_iter()
                .map(|x| Cell::Value {
                    text: if x.is_finite() {
                        format!("{x:.2}×")
                    } else {
                        "–".into()
                    },
                    value: x.is_finite().then_some(x),
                })
                .collect()
        };
        if let Some(f) = self.fastest(TimingRow::training_time) {
            let label = format!("Training time ÷ fastest ({})", f.model);
            push(
                &label,
                ratio_row(self.ratios(TimingRow::training_time)),
                true,
            );
        }
        if self.include_testing
            && let Some(f) = self.fastest(TimingRow::total_time)
        {
            let label = format!("Total time ÷ fastest ({})", f.model);
            push(&label, ratio_row(self.ratios(TimingRow::total_time)), false);
        }
        Table {
            name: name.into(),
            title: title.into(),
            caption: caption.into(),
            columns,
            rows,
            notes: Vec::new(),
        }
    }
}

/// The statement of the timing model, for captions.
pub const TIMING_MODEL: &str = "Timing model (thesis §5.3.4, paper §II-D): a supervised model \
costs the manual annotation of its training volumes (hours per volume from dataset.toml × \
annotated training volumes) plus its training compute; the self-supervised model costs the \
synthetic-mask generation plus its training compute. Testing time adds the annotation of the \
test volumes, which every model needs to be scored, and the prediction time.";

/// Long per-trial rows (trial, fold, model, quantity, value) for [`aggregate`].
#[derive(Default)]
struct QuantityRows {
    trial: Vec<String>,
    fold: Vec<Option<u64>>,
    model: Vec<String>,
    quantity: Vec<String>,
    value: Vec<f64>,
}

/// The timing rows of `task` from the store: per trial its phases, test volumes and
/// annotated training volumes; then the mean over the trials of each model through
/// [`aggregate`].
pub(crate) fn timing_rows(
    input: &ReportInput,
    prep: &Prepared,
    task: &Task,
) -> Result<(Vec<TimingRow>, Vec<String>), ReportError> {
    let mut notes = Vec::new();
    if input.timings.height() == 0 {
        return Ok((Vec::new(), notes));
    }
    let (per_trial, unknown_note) = phase_seconds(&input.timings)?;
    notes.extend(unknown_note);
    let test_volumes = test_volumes_of(&prep.cases)?;
    let annotated = annotated_volumes(input);
    let configs = trial_configs(input)?;
    let validation_volumes = trial_validation_volumes(input)?;
    let mut label_reading: BTreeSet<String> = BTreeSet::new();
    let mut split_unknown: BTreeSet<String> = BTreeSet::new();
    let hours_of = |ids: &mut dyn Iterator<Item = &String>| -> Option<f64> {
        let mut sum = 0.0;
        for id in ids {
            sum += annotated.iter().find(|(v, _)| v == id)?.1?;
        }
        Some(sum)
    };

    // long per-trial rows: (trial_id, fold, model, quantity, value)
    let mut rows = QuantityRows::default();
    // One column per compared configuration (a model with one value of every swept key), so
    // that configurations which differ in the annotation they use (`cyclegan.masks`) are
    // timed apart; its rank follows its model's.
    let mut ranks: HashMap<String, (usize, String)> = HashMap::new();
    let mut push = |t: &super::prepare::Trial, q: &str, v: f64| {
        let label = prep.configs[t.config].label.clone();
        ranks
            .entry(label.clone())
            .or_insert_with(|| (model_rank(&t.model).0, label.clone()));
        rows.trial.push(t.id.clone());
        rows.fold.push(t.fold);
        rows.model.push(label);
        rows.quantity.push(q.into());
        rows.value.push(v);
    };
    let mut unknown_hours = false;
    for t in prep
        .trials
        .iter()
        .filter(|t| t.task == task.key && t.status == "finished")
    {
        let Some(phases) = per_trial.get(&t.id) else {
            continue;
        };
        let Some(tests) = test_volumes.get(&t.id) else {
            continue;
        };
        let sum = |names: &[&str]| names.iter().filter_map(|p| phases.get(*p)).sum::<f64>();
        let synth = phases.get(SYNTH_PHASE).copied().unwrap_or(0.0);
        let train = sum(&TRAIN_PHASES);
        let test = sum(&TEST_PHASES);
        // Preprocessing alone (the threshold baseline) is not training.
        let supervised = synth == 0.0 && phases.get(TRAIN_STEP_PHASE).is_some_and(|&s| s > 0.0);
        let train_volumes: Vec<&String> = if supervised {
            annotated
                .iter()
                .map(|(id, _)| id)
                .filter(|id| !tests.contains(id))
                .collect()
        } else if synth > 0.0 && reads_validation_masks(configs.get(&t.id)) {
            // A self-supervised model that chose its checkpoint or thresholds on annotated
            // validation volumes needed their annotation.
            let label = prep.configs[t.config].label.clone();
            match validation_volumes.get(&t.id) {
                Some(val) => {
                    label_reading.insert(label);
                    annotated
                        .iter()
                        .map(|(id, _)| id)
                        .filter(|id| val.contains(id))
                        .collect()
                }
                None => {
                    split_unknown.insert(label);
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        let train_hours = hours_of(&mut train_volumes.iter().copied());
        let test_hours = hours_of(&mut tests.iter());
        unknown_hours |= train_hours.is_none() || test_hours.is_none() || annotated.is_empty();
        push(t, "synth", synth / 3600.0);
        push(t, "train", train / 3600.0);
        push(t, "test", test / 3600.0);
        push(t, "train_volumes", train_volumes.len() as f64);
        push(t, "test_volumes", tests.len() as f64);
        if let (Some(a), Some(b)) = (train_hours, test_hours) {
            push(t, "train_annotation", a);
            push(t, "test_annotation", b);
        }
    }
    if rows.trial.is_empty() {
        return Ok((Vec::new(), notes));
    }
    if !label_reading.is_empty() {
        notes.push(format!(
            "{}: self-supervised, but its checkpoint or thresholds were chosen on the annotated \
             masks of its validation volumes (train.selection other than label-free, or \
             train.calibrate_threshold), so their annotation counts as its training annotation.",
            label_reading.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if !split_unknown.is_empty() {
        notes.push(format!(
            "{}: chose its checkpoint or thresholds on annotated validation volumes that the \
             store does not name (written before splits were recorded); their annotation is \
             not counted.",
            split_unknown.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if unknown_hours {
        notes.push(
            "Annotation hours unknown (dataset.toml not found, or a volume without \
             annotation_hours and no annotation_hours_per_volume): times exclude annotation."
                .into(),
        );
    }
    Ok((summarise(rows, &ranks)?, notes))
}

/// Seconds per trial and phase of the `timings` rows (non-finite values count as 0), and a
/// note naming the phases the breakdown does not count.
#[allow(clippy::type_complexity)]
fn phase_seconds(
    timings: &DataFrame,
) -> Result<(HashMap<String, BTreeMap<String, f64>>, Option<String>), ReportError> {
    require_columns(timings, &["trial_id", "phase", "seconds"], "timings")?;
    let e = polars_error("timings");
    let ids = string_column(timings, "trial_id").map_err(&e)?;
    let phases = string_column(timings, "phase").map_err(&e)?;
    let seconds = f64_column(timings, "seconds").map_err(&e)?;
    let mut per_trial: HashMap<String, BTreeMap<String, f64>> = HashMap::new();
    let mut unknown: HashSet<String> = HashSet::new();
    for i in 0..ids.len() {
        let (Some(id), Some(phase)) = (&ids[i], &phases[i]) else {
            continue;
        };
        let known = phase == SYNTH_PHASE
            || TRAIN_PHASES.contains(&phase.as_str())
            || TEST_PHASES.contains(&phase.as_str());
        if !known {
            unknown.insert(phase.clone());
        }
        let s = seconds[i].filter(|s| s.is_finite()).unwrap_or(0.0);
        *per_trial
            .entry(id.clone())
            .or_default()
            .entry(phase.clone())
            .or_default() += s;
    }
    let note = (!unknown.is_empty()).then(|| {
        let mut u: Vec<_> = unknown.into_iter().collect();
        u.sort();
        format!("Phases not counted: {}.", u.join(", "))
    });
    Ok((per_trial, note))
}

/// The test volumes of each trial, from the per-case rows.
fn test_volumes_of(cases: &DataFrame) -> Result<HashMap<String, Vec<String>>, ReportError> {
    let e = polars_error("timings");
    let case_ids = string_column(cases, "trial_id").map_err(&e)?;
    let case_vols = string_column(cases, "volume").map_err(&e)?;
    let mut test_volumes: HashMap<String, Vec<String>> = HashMap::new();
    for (id, vol) in case_ids.into_iter().zip(case_vols) {
        if let (Some(id), Some(vol)) = (id, vol) {
            let list = test_volumes.entry(id).or_default();
            if !list.contains(&vol) {
                list.push(vol);
            }
        }
    }
    Ok(test_volumes)
}

/// The annotated volumes of the dataset with their annotation hours, where known.
fn annotated_volumes(input: &ReportInput) -> Vec<(String, Option<f64>)> {
    match &input.dataset {
        Some(spec) => spec
            .volumes
            .iter()
            .filter(|v| v.mask.is_some())
            .map(|v| {
                (
                    v.id.clone(),
                    v.annotation_hours.or(spec.annotation_hours_per_volume),
                )
            })
            .collect(),
        None => Vec::new(),
    }
}

/// One row per configuration: the mean of every quantity over its trials, in the order of
/// `ranks` (a configuration's model rank).
fn summarise(
    rows: QuantityRows,
    ranks: &HashMap<String, (usize, String)>,
) -> Result<Vec<TimingRow>, ReportError> {
    let e = polars_error("timings");
    let n = rows.trial.len();
    let frame = DataFrame::new(
        n,
        vec![
            Column::new("trial_id".into(), rows.trial),
            Column::new("fold".into(), rows.fold),
            Column::new("model".into(), rows.model),
            Column::new("quantity".into(), rows.quantity),
            Column::new("value".into(), rows.value),
        ],
    )
    .map_err(&e)?;
    let stats = aggregate(
        &frame,
        &["model", "quantity"],
        Aggregation::OverSeedsAndFolds,
    )?;
    let models = string_column(&stats, "model").map_err(&e)?;
    let quantities = string_column(&stats, "quantity").map_err(&e)?;
    let means = f64_column(&stats, "mean").map_err(&e)?;
    let trials = u64_column(&stats, "n_trials").map_err(&e)?;
    let mut by_model: BTreeMap<(usize, String), HashMap<String, (f64, u32)>> = BTreeMap::new();
    for i in 0..stats.height() {
        let (Some(m), Some(q)) = (&models[i], &quantities[i]) else {
            continue;
        };
        let rank = ranks.get(m).cloned().unwrap_or_else(|| model_rank(m));
        by_model.entry(rank).or_default().insert(
            q.clone(),
            (means[i].unwrap_or(0.0), trials[i].unwrap_or(0) as u32),
        );
    }
    Ok(by_model
        .into_iter()
        .map(|((_, label), q)| {
            let get = |k: &str| q.get(k).map(|v| v.0).unwrap_or(0.0);
            let train_volumes = get("train_volumes");
            let test_volumes = get("test_volumes");
            let per_volume = match (q.get("train_annotation"), q.get("test_annotation")) {
                (Some(a), Some(b)) if train_volumes + test_volumes > 0.0 => {
                    Some((a.0 + b.0) / (train_volumes + test_volumes))
                }
                _ => None,
            };
            TimingRow {
                model: label,
                annotation_hours_per_volume: per_volume,
                annotated_train_volumes: train_volumes,
                annotated_test_volumes: test_volumes,
                synth_hours: get("synth"),
                train_hours: get("train"),
                test_hours: get("test"),
                n_trials: q.get("train").map(|v| v.1).unwrap_or(0),
            }
        })
        .collect())
}

/// Whether a trial reads annotated validation masks to choose its checkpoint (every
/// `train.selection` but `label-free`: validation Dice and the validation losses both compare
/// with the masks) or to calibrate its thresholds. Unknown configurations read none.
fn reads_validation_masks(config: Option<&Value>) -> bool {
    let Some(train) = config.and_then(|c| c.get("train")) else {
        return false;
    };
    let selection = train.get("selection").and_then(Value::as_str);
    let calibrates = train.get("calibrate_threshold").and_then(Value::as_bool);
    selection.is_some_and(|s| s != "label-free") || calibrates == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_thesis() {
        assert_eq!(duration(35.0 / 3600.0), "35 s");
        assert_eq!(duration(66.0 / 60.0), "66 min");
        assert_eq!(duration(40.0 / 60.0), "40 min");
        assert_eq!(duration(28.6), "28.6 h");
        assert_eq!(duration(28.0), "28 h");
    }

    #[test]
    fn self_supervised_training_has_no_annotation_term() {
        let r = TimingRow {
            model: "CycleGAN".into(),
            annotation_hours_per_volume: Some(28.0),
            annotated_train_volumes: 0.0,
            annotated_test_volumes: 2.0,
            synth_hours: 40.0 / 60.0,
            train_hours: 28.6,
            test_hours: 35.0 / 3600.0,
            n_trials: 0,
        };
        match r.training_cell(2) {
            Cell::Value { text, .. } => assert_eq!(text, "40 min + 28.6 h = 29.27 h"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn self_supervised_annotation_follows_the_selection_mode() {
        let mut input = crate::report::fixture::small_sweep();
        // CycleGAN trials with Golgi weight 1 (c2…) choose label-free; those with 3.5 (c3…)
        // choose on validation Dice, which reads the validation volume's masks.
        let ids = string_column(&input.trials, "trial_id").unwrap();
        let configs: Vec<String> = ids
            .iter()
            .map(|id| match id.as_deref().map(|id| &id[..2]) {
                Some("c2") => r#"{"train":{"selection":"label-free"}}"#.to_string(),
                Some("c3") => r#"{"train":{"selection":"val-dice"}}"#.to_string(),
                _ => "{}".to_string(),
            })
            .collect();
        input
            .trials
            .with_column(Column::new("config_json".into(), configs))
            .unwrap();
        let prep = Prepared::new(&input, &Default::default()).unwrap();
        let (rows, notes) = timing_rows(&input, &prep, &prep.tasks[0]).unwrap();
        let cyclegan = |weight: &str| {
            rows.iter()
                .find(|r| r.model.starts_with("CycleGAN") && r.model.contains(weight))
                .unwrap_or_else(|| panic!("no CycleGAN {weight} column in {rows:?}"))
        };
        assert_eq!(cyclegan("1").annotated_train_volumes, 0.0);
        assert_eq!(cyclegan("3.5").annotated_train_volumes, 1.0);
        assert!(cyclegan("3.5").train_annotation_hours() > 0.0);
        let note = notes.iter().find(|n| n.contains("validation volumes"));
        let note = note.unwrap_or_else(|| panic!("no note on validation annotation: {notes:?}"));
        assert!(note.contains("3.5") && !note.contains("= 1)"), "{note}");
    }

    #[test]
    fn a_trial_without_a_train_phase_needs_no_training_annotation() {
        let mut input = crate::report::fixture::small_sweep();
        let unet: Vec<String> = {
            let ids = string_column(&input.trials, "trial_id").unwrap();
            let models = string_column(&input.trials, "model").unwrap();
            ids.into_iter()
                .zip(models)
                .filter(|(_, m)| m.as_deref() == Some("unet3d"))
                .filter_map(|(id, _)| id)
                .collect()
        };
        // The U-Net trials become baseline-like: preprocessing and prediction only.
        let ids = string_column(&input.timings, "trial_id").unwrap();
        let phases = string_column(&input.timings, "phase").unwrap();
        let mask: BooleanChunked = ids
            .iter()
            .zip(&phases)
            .map(|(id, p)| {
                let baseline_phase = matches!(p.as_deref(), Some("preprocess" | "predict"));
                Some(!id.as_ref().is_some_and(|id| unet.contains(id)) || baseline_phase)
            })
            .collect();
        let keep = input.timings.filter(&mask).unwrap();
        input.timings = keep;
        let prep = Prepared::new(&input, &Default::default()).unwrap();
        let task = &prep.tasks[0];
        let (rows, _) = timing_rows(&input, &prep, task).unwrap();
        let by = |m: &str| rows.iter().find(|r| r.model == m).unwrap();
        assert_eq!(by("U-Net").annotated_train_volumes, 0.0);
        assert!(by("Vox2Vox").annotated_train_volumes > 0.0);
    }

    #[test]
    fn a_baseline_is_neither_the_ratio_reference_nor_given_a_ratio() {
        let row = |model: &str, volumes: f64, synth: f64, train: f64| TimingRow {
            model: model.into(),
            annotation_hours_per_volume: Some(1.0),
            annotated_train_volumes: volumes,
            annotated_test_volumes: 2.0,
            synth_hours: synth,
            train_hours: train,
            test_hours: 0.0,
            n_trials: 1,
        };
        let table = TimingTable {
            rows: vec![
                row("U-Net", 4.0, 0.0, 0.1),
                row("CycleGAN", 0.0, 1e-4, 0.02),
                row("Otsu threshold", 0.0, 0.0, 2e-5),
            ],
            include_testing: true,
            decimals: 2,
        };
        let r = table.ratios(TimingRow::training_time);
        assert!((r[0] - 4.1 / (0.02 + 1e-4)).abs() < 1e-9, "{r:?}");
        assert!((r[1] - 1.0).abs() < 1e-12);
        assert!(r[2].is_nan());
        assert_eq!(duration(1e-4), "< 1 s");
        assert_eq!(duration(0.0), "0 s");
    }
}
