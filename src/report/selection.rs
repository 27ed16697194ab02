//! Nested selection (`cv.select = "inner"`; Cawley & Talbot, JMLR 11, 2010; Varma & Simon,
//! BMC Bioinformatics 7, 2006): for each model and outer fold, the configuration with the best
//! mean inner-validation score is chosen, and the outer-test scores of the chosen
//! configurations are the honest estimate of what the model-plus-tuning procedure achieves.
//!
//! The inner-validation score of a trial is the best value over its epochs of the `val` split's
//! selection metric (`cv.select_metric`, default `dice_mean`: the mean validation Dice over the
//! task's classes, the value `train.selection = val-dice` keeps its checkpoint on); the score
//! of a configuration on a fold is the mean over its seeds. [`nested_selection`] reads the
//! trials and the `epochs` table only: it has no access to test results, so the choice cannot
//! depend on a test volume. [`selected_test_scores`] then reads the chosen configurations'
//! test results.

use std::collections::BTreeMap;

use polars::prelude::*;

use super::ReportError;
use super::comparisons::{arm_label, task_trials};
use super::input::{Columns, ReportInput};
use super::paired::{TrialInfo, arm_order, trial_info};
use super::prepare::{Task, class_label, metric_label, model_label};
use super::tables::{Align, Cell, ColumnSpec, Row, Table};

/// The configuration chosen for one model on one outer fold.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldChoice {
    pub model: String,
    /// Outer fold index and split id.
    pub fold: u64,
    pub split: String,
    /// The chosen arm (`model key=value …`).
    pub chosen: String,
    /// Every candidate with its mean inner-validation score and the number of trials (seeds)
    /// behind it, in arm order.
    pub candidates: Vec<(String, f64, usize)>,
}

/// The choices of every model with two or more configurations, per outer fold (module doc).
pub fn nested_selection(
    trials: &DataFrame,
    epochs: &DataFrame,
    metric: &str,
) -> Result<Vec<FoldChoice>, ReportError> {
    let info = trial_info(trials)?;
    let best = best_validation(epochs, metric)?;
    let arms = arm_order(&info);
    // (model, fold, split) → arm → scores of its trials.
    let mut scores: BTreeMap<(String, u64, String), BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for (id, t) in &info {
        let entry = scores
            .entry((t.model.clone(), t.fold, t.split.clone()))
            .or_default()
            .entry(t.arm.clone())
            .or_default();
        if let Some(v) = best.get(id) {
            entry.push(*v);
        }
    }
    let mut out = Vec::new();
    for ((model, fold, split), by_arm) in scores {
        if by_arm.len() < 2 {
            continue;
        }
        let candidates: Vec<(String, f64, usize)> = arms
            .iter()
            .filter_map(|a| by_arm.get(a).map(|v| (a.clone(), mean(v), v.len())))
            .collect();
        let Some(chosen) = choose(&candidates) else {
            continue;
        };
        out.push(FoldChoice {
            model,
            fold,
            split,
            chosen,
            candidates,
        });
    }
    Ok(out)
}

/// The candidate with the highest finite score (the first in arm order on ties).
fn choose(candidates: &[(String, f64, usize)]) -> Option<String> {
    let mut best: Option<(&str, f64)> = None;
    for (arm, score, _) in candidates {
        if score.is_finite() && best.is_none_or(|(_, b)| *score > b) {
            best = Some((arm, *score));
        }
    }
    best.map(|(a, _)| a.to_string())
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The best finite value of `metric` on the `val` split over each trial's epochs.
fn best_validation(epochs: &DataFrame, metric: &str) -> Result<BTreeMap<String, f64>, ReportError> {
    let cols = Columns::require(epochs, &["trial_id", "split", "metric", "value"], "epochs")?;
    let ids = cols.str("trial_id")?;
    let split = cols.str("split")?;
    let name = cols.str("metric")?;
    let value = cols.f64("value")?;
    let mut best: BTreeMap<String, f64> = BTreeMap::new();
    for i in 0..epochs.height() {
        let (Some(id), Some("val"), Some(m), Some(v)) =
            (&ids[i], split[i].as_deref(), name[i].as_deref(), value[i])
        else {
            continue;
        };
        if m == metric && v.is_finite() {
            let e = best.entry(id.clone()).or_insert(v);
            *e = e.max(v);
        }
    }
    Ok(best)
}

/// The outer-test score of each choice: the mean of `metric` over the chosen configuration's
/// test cases (seeds × volumes) of that fold, per class, NaN cases left out.
pub fn selected_test_scores(
    choices: &[FoldChoice],
    trials: &DataFrame,
    results: &DataFrame,
    metric: &str,
) -> Result<Vec<BTreeMap<String, f64>>, ReportError> {
    let info = trial_info(trials)?;
    let cols = Columns::require(
        results,
        &["trial_id", "class", "metric", "value"],
        "results",
    )?;
    let ids = cols.str("trial_id")?;
    let class = cols.str("class")?;
    let name = cols.str("metric")?;
    let value = cols.f64("value")?;
    let chosen_trial = |c: &FoldChoice, t: &TrialInfo| {
        t.model == c.model && t.fold == c.fold && t.split == c.split && t.arm == c.chosen
    };
    let mut out = Vec::with_capacity(choices.len());
    for c in choices {
        let mut sums: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for i in 0..results.height() {
            let (Some(id), Some(cl), Some(m), Some(v)) =
                (&ids[i], &class[i], name[i].as_deref(), value[i])
            else {
                continue;
            };
            let hit = info.get(id).is_some_and(|t| chosen_trial(c, t));
            if hit && m == metric && v.is_finite() {
                sums.entry(cl.clone()).or_default().push(v);
            }
        }
        out.push(sums.into_iter().map(|(k, v)| (k, mean(&v))).collect());
    }
    Ok(out)
}

/// The selection metric of the task's trials (`cv.select_metric`), None without nested
/// selection.
fn select_metric(trials: &DataFrame) -> Result<Option<String>, ReportError> {
    let cols = Columns::require(trials, &[], "trials")?;
    Ok(cols
        .optional_str("select_metric")?
        .into_iter()
        .flatten()
        .next())
}

/// The nested-selection table of `task` (`nested-<slug>`) for test `metric`, or None when the
/// sweep did not ask for selection or no model has two configurations.
pub(crate) fn selection_table(
    input: &ReportInput,
    task: &Task,
    metric: &str,
    decimals: usize,
) -> Result<Option<Table>, ReportError> {
    let trials = task_trials(input, task)?;
    let Some(select) = select_metric(&trials)? else {
        return Ok(None);
    };
    let choices = nested_selection(&trials, &input.epochs, &select)?;
    if choices.is_empty() {
        return Ok(None);
    }
    let scores = selected_test_scores(&choices, &trials, &input.results, metric)?;
    let col = |label: String, key: String, align| ColumnSpec::new(label, key, align);
    let mut columns = vec![
        col("Model".into(), "model".into(), Align::Left),
        col("Outer fold".into(), "fold".into(), Align::Right),
        col("Chosen configuration".into(), "chosen".into(), Align::Left),
        col(
            format!("Inner {select}"),
            "inner_score".into(),
            Align::Right,
        ),
        col(
            "Candidates (inner score)".into(),
            "candidates".into(),
            Align::Left,
        ),
    ];
    for c in &task.classes {
        columns.push(col(
            format!("Test {} {}", metric_label(metric), class_label(c)),
            format!("test_{metric}_{c}"),
            Align::Right,
        ));
    }
    let fmt = |v: f64| Cell::Value {
        text: if v.is_finite() {
            format!("{v:.decimals$}")
        } else {
            "–".into()
        },
        value: v.is_finite().then_some(v),
    };
    let mut rows = Vec::new();
    let mut last_model: Option<String> = None;
    let mut per_model: BTreeMap<String, Vec<&BTreeMap<String, f64>>> = BTreeMap::new();
    for (choice, score) in choices.iter().zip(&scores) {
        let inner = choice
            .candidates
            .iter()
            .find(|(a, _, _)| *a == choice.chosen)
            .map_or(f64::NAN, |c| c.1);
        let candidates = choice
            .candidates
            .iter()
            .map(|(a, s, _)| format!("{} {s:.decimals$}", arm_label(a)))
            .collect::<Vec<_>>()
            .join("; ");
        let mut cells = vec![
            Cell::Text(model_label(&choice.model)),
            Cell::Value {
                text: choice.fold.to_string(),
                value: Some(choice.fold as f64),
            },
            Cell::Text(arm_label(&choice.chosen)),
            fmt(inner),
            Cell::Text(candidates),
        ];
        cells.extend(
            task.classes
                .iter()
                .map(|c| fmt(*score.get(c).unwrap_or(&f64::NAN))),
        );
        rows.push(Row {
            cells,
            rule_above: last_model.as_ref().is_some_and(|m| *m != choice.model),
        });
        last_model = Some(choice.model.clone());
        per_model
            .entry(choice.model.clone())
            .or_default()
            .push(score);
    }
    for (model, folds) in &per_model {
        let mut cells = vec![
            Cell::Text(model_label(model)),
            Cell::Text("mean".into()),
            Cell::Text("(chosen per fold)".into()),
            Cell::Empty,
            Cell::Empty,
        ];
        cells.extend(task.classes.iter().map(|c| {
            let v: Vec<f64> = folds
                .iter()
                .filter_map(|s| s.get(c).copied())
                .filter(|v| v.is_finite())
                .collect();
            fmt(mean(&v))
        }));
        rows.push(Row {
            cells,
            rule_above: true,
        });
    }
    Ok(Some(Table {
        name: format!("nested-{}", task.slug),
        title: format!("Nested selection, {}", task.name),
        caption: format!(
            "For each model with two or more configurations and each outer fold, the \
             configuration with the best mean inner-validation `{select}` (best value over \
             epochs on the fold's validation volumes, mean over seeds) is chosen without \
             reading the fold's test volumes; the test columns give the chosen configuration's \
             mean {} over that fold's test cases (seeds × volumes). The `mean` rows average \
             the outer folds: the estimate of the model with its tuning (Cawley & Talbot, \
             JMLR 11, 2010), free of the selection bias of choosing on test folds.",
            metric_label(metric)
        ),
        columns,
        rows,
        notes: Vec::new(),
    }))
}
