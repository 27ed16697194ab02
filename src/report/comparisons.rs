//! The report's comparisons table and forest plot of one task: every pair of configurations
//! (`report::paired`), per metric and class, with the paired unit, n, the mean difference,
//! its 95 % bootstrap interval and the p-values, Holm-adjusted within each metric and class.

use polars::prelude::*;

use super::ReportError;
use super::input::{ReportInput, string_column};
use super::paired::{CASE_UNIT, ComparisonRow, paired_comparisons};
use super::plots::ForestPlot;
use super::prepare::{Config, Task, class_label, metric_label, model_label};
use super::tables::{Align, Cell, ColumnSpec, Row, Table};
use crate::stats::PairedSettings;

/// Significance level of the marks in the comparisons table (Holm-adjusted p below it).
pub const ALPHA: f64 = 0.05;

/// The comparisons of `task` for `metrics`, or None when no two configurations share a case.
pub(crate) fn task_comparisons(
    input: &ReportInput,
    task: &Task,
    metrics: &[String],
) -> Result<Vec<ComparisonRow>, ReportError> {
    let trials = task_trials(input, task)?;
    let mut rows =
        paired_comparisons(&trials, &input.results, metrics, &PairedSettings::default())?;
    // Classes in the task's table order (nuclei, golgi, pair), metrics as requested.
    let class_pos = |c: &str| {
        task.classes
            .iter()
            .position(|x| x == c)
            .unwrap_or(usize::MAX)
    };
    let metric_pos = |m: &str| metrics.iter().position(|x| x == m).unwrap_or(usize::MAX);
    rows.sort_by_key(|r| (metric_pos(&r.metric), class_pos(&r.class)));
    Ok(rows)
}

/// The trials of `task` (its `classes` value).
pub(crate) fn task_trials(input: &ReportInput, task: &Task) -> Result<DataFrame, ReportError> {
    let polars = |source| ReportError::Polars {
        what: "trials",
        source,
    };
    let classes = string_column(&input.trials, "classes").map_err(polars)?;
    let keep: BooleanChunked = classes
        .iter()
        .map(|c| c.as_deref() == Some(task.key.as_str()))
        .collect();
    input.trials.filter(&keep).map_err(polars)
}

/// Whether `arm` (`model key=value …`, `report::paired`) is the configuration `config` of
/// the metric tables (model and swept values; display keys are the last dotted segments).
pub(crate) fn arm_matches(arm: &str, config: &Config) -> bool {
    let (model, rest) = arm.split_once(' ').unwrap_or((arm, ""));
    if model != config.model {
        return false;
    }
    let params = arm_params(rest);
    params.len() == config.params.len()
        && config.params.iter().all(|(short, value)| {
            params
                .iter()
                .any(|(k, v)| (k == short || k.ends_with(&format!(".{short}"))) && v == value)
        })
}

/// The `key=value` pairs of an arm label's configuration part (values may hold spaces).
fn arm_params(rest: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for token in rest.split(' ').filter(|t| !t.is_empty()) {
        match token.split_once('=') {
            Some((k, v)) if !k.contains(['[', ',']) => out.push((k.to_string(), v.to_string())),
            _ => {
                if let Some(last) = out.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(token);
                }
            }
        }
    }
    out
}

/// An arm label for display: the model's published name, then its configuration.
pub(crate) fn arm_label(arm: &str) -> String {
    let mut parts = arm.splitn(2, ' ');
    let model = model_label(parts.next().unwrap_or_default());
    match parts.next() {
        Some(rest) => format!("{model} ({rest})"),
        None => model,
    }
}

fn p_text(p: f64) -> String {
    if p.is_nan() {
        "–".into()
    } else if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

fn value(text: String, v: f64) -> Cell {
    Cell::Value {
        text: if v.is_finite() { text } else { "–".into() },
        value: v.is_finite().then_some(v),
    }
}

/// The comparisons table of `task` (`comparisons-<slug>`).
pub(crate) fn comparisons_table(task: &Task, rows: &[ComparisonRow], decimals: usize) -> Table {
    let col = |label: &str, key: &str, align| ColumnSpec::new(label, key, align);
    let columns = vec![
        col("Metric", "metric", Align::Left),
        col("Class", "class", Align::Left),
        col("A", "a", Align::Left),
        col("B", "b", Align::Left),
        col("n", "n", Align::Right),
        col("Mean A − B", "mean_diff", Align::Right),
        col("95 % CI low", "ci_low", Align::Right),
        col("95 % CI high", "ci_high", Align::Right),
        col("p Wilcoxon", "p_wilcoxon", Align::Right),
        col("p perm.", "p_permutation", Align::Right),
        col("p Holm", "p_holm", Align::Right),
        col("p t corr. (folds)", "p_t_corrected", Align::Right),
    ];
    let mut out = Vec::new();
    let mut last = None;
    for r in rows {
        let group = (r.metric.clone(), r.class.clone());
        let rule_above = last.as_ref().is_some_and(|g| *g != group);
        last = Some(group);
        let mark = if r.p_holm < ALPHA { " *" } else { "" };
        let t = r.fold_t_test.map_or(f64::NAN, |t| t.p_value);
        out.push(Row {
            cells: vec![
                Cell::Text(metric_label(&r.metric)),
                Cell::Text(class_label(&r.class)),
                Cell::Text(arm_label(&r.a)),
                Cell::Text(arm_label(&r.b)),
                value(r.n.to_string(), r.n as f64),
                value(format!("{:+.d$}", r.mean_diff, d = decimals), r.mean_diff),
                value(format!("{:+.d$}", r.ci_low, d = decimals), r.ci_low),
                value(format!("{:+.d$}", r.ci_high, d = decimals), r.ci_high),
                value(p_text(r.p_wilcoxon), r.p_wilcoxon),
                value(p_text(r.p_permutation), r.p_permutation),
                value(format!("{}{mark}", p_text(r.p_holm)), r.p_holm),
                value(p_text(t), t),
            ],
            rule_above,
        });
    }
    let settings = PairedSettings::default();
    let dropped: usize = rows.iter().map(|r| r.n_dropped).sum();
    let mut notes = vec![format!(
        "* Holm-adjusted p < {ALPHA}: the difference is unlikely under no difference, after \
         correcting for the comparisons of its metric and class."
    )];
    if dropped > 0 {
        notes.push(format!(
            "{dropped} paired case(s) with a non-finite value in either configuration are left \
             out of n."
        ));
    }
    Table {
        name: format!("comparisons-{}", task.slug),
        title: format!("Paired comparisons, {}", task.name),
        caption: format!(
            "Every pair of configurations A, B on the test cases both have. Paired unit: \
             {CASE_UNIT}; n = paired cases with finite values in both. Mean A − B over the n \
             cases; 95 % CI: percentile bootstrap of that mean, {} resamples of cases within \
             folds (seed {}). p Wilcoxon: two-sided signed-rank test (exact for n ≤ 50 without \
             ties or zeros, as scipy); p perm.: two-sided sign-flip permutation test of the \
             mean (exact up to {} sign patterns, else as many random ones); p Holm: the \
             Wilcoxon p adjusted by Holm's method over the comparisons of one metric and \
             class. p t corr.: corrected resampled t-test of the fold means (Nadeau & Bengio \
             2003), one value per fold, df = folds − 1 (– when fold sizes are not in the \
             store).",
            settings.bootstrap_resamples, settings.seed, settings.permutation_resamples
        ),
        columns,
        rows: out,
        notes,
    }
}

/// The forest plot of `rows` for one metric (all classes of the task).
pub(crate) fn forest_plot(task: &Task, metric: &str, rows: &[ComparisonRow]) -> Option<ForestPlot> {
    let rows: Vec<(String, ComparisonRow)> = rows
        .iter()
        .filter(|r| r.metric == metric && r.n > 0)
        .map(|r| {
            let label = format!(
                "{}: {} − {}",
                class_label(&r.class),
                arm_label(&r.a),
                arm_label(&r.b)
            );
            (label, r.clone())
        })
        .collect();
    (!rows.is_empty()).then(|| ForestPlot {
        title: format!(
            "Paired differences in {}, {}",
            metric_label(metric),
            task.name
        ),
        x_label: format!("{} difference A − B", metric_label(metric)),
        rows,
    })
}
