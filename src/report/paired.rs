//! Paired comparisons of a sweep's arms (models, or model configurations where a swept key or
//! the task varies within a model, labelled `model key=value …`) on the test cases both have — the one code path behind
//! `seglab runs compare --paired` and the report's comparisons table and forest plot.
//!
//! - A *case* is one test volume of one finished trial: (split, seed, volume), the split being
//!   the trial's `split_id` (the hash of its fold's volume ids; `fold<k>` for stores written
//!   before split ids were recorded). Two arms pair on equal cases; pairs where either value is
//!   not finite are dropped and counted.
//! - Per pair of arms and per (metric, class): the mean of a − b over the n paired cases, its
//!   95 % percentile bootstrap interval resampling cases within splits (folds), the two-sided
//!   Wilcoxon signed-rank and sign-flip permutation p-values (`crate::stats`), and the
//!   corrected resampled t-test of the fold means (Nadeau & Bengio 2003) when two or more
//!   splits are present.
//! - Holm's adjustment runs over the comparisons of one table: one metric and one class, all
//!   pairs of arms; it adjusts the Wilcoxon p-values.
//!
//! `docs/statistics.md` explains what each number means.

use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::*;

use super::ReportError;
use super::input::{Columns, string_column};
use super::prepare::model_rank;
use crate::stats::paired::FoldSizes;
use crate::stats::{PairedSettings, TTest, WilcoxonMethod, compare_paired, holm_adjust};

/// What the paired unit is, printed with every result.
pub const CASE_UNIT: &str = "test case (split, seed, volume)";

/// One paired comparison a − b of one metric and class.
#[derive(Clone, Debug, PartialEq)]
pub struct ComparisonRow {
    pub metric: String,
    pub class: String,
    pub a: String,
    pub b: String,
    /// Paired cases with finite values in both arms.
    pub n: usize,
    /// Cases both arms have where a value is not finite (left out of n).
    pub n_dropped: usize,
    /// Splits (folds) the cases come from.
    pub folds: usize,
    pub mean_diff: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_wilcoxon: f64,
    pub wilcoxon_method: Option<WilcoxonMethod>,
    pub p_permutation: f64,
    pub permutation_exact: bool,
    /// Holm-adjusted Wilcoxon p over the comparisons of this metric and class.
    pub p_holm: f64,
    /// Corrected resampled t-test of the fold means (None below two folds).
    pub fold_t_test: Option<TTest>,
}

impl ComparisonRow {
    /// The JSON object of `runs compare --paired --json` (non-finite numbers are null).
    pub fn to_json(&self) -> serde_json::Value {
        let num = |v: f64| {
            if v.is_finite() {
                serde_json::json!(v)
            } else {
                serde_json::Value::Null
            }
        };
        serde_json::json!({
            "metric": self.metric,
            "class": self.class,
            "a": self.a,
            "b": self.b,
            "n": self.n,
            "mean_diff": num(self.mean_diff),
            "ci_low": num(self.ci_low),
            "ci_high": num(self.ci_high),
            "p_wilcoxon": num(self.p_wilcoxon),
            "p_permutation": num(self.p_permutation),
            "p_holm": num(self.p_holm),
        })
    }
}

/// A finished trial's arm and the split and seed of its cases.
pub(crate) struct TrialInfo {
    pub model: String,
    pub arm: String,
    pub split: String,
    pub fold: u64,
    pub seed: u64,
    pub sizes: Option<FoldSizes>,
}

/// Case key: (split, seed, volume).
type CaseKey = (String, u64, String);

/// Every paired comparison of `metrics` (all classes) between the arms of the finished trials
/// of `trials`, from the per-case `results` (module doc).
pub fn paired_comparisons(
    trials: &DataFrame,
    results: &DataFrame,
    metrics: &[String],
    settings: &PairedSettings,
) -> Result<Vec<ComparisonRow>, ReportError> {
    let info = trial_info(trials)?;
    let values = case_values(results, &info, metrics)?;
    let arms = arm_order(&info);
    let mut out = Vec::new();
    for ((metric, class), by_arm) in &values {
        let start = out.len();
        for (i, a) in arms.iter().enumerate() {
            for b in &arms[i + 1..] {
                let (Some(va), Some(vb)) = (by_arm.get(a), by_arm.get(b)) else {
                    continue;
                };
                out.push(compare_arms(metric, class, a, b, va, vb, &info, settings));
            }
        }
        let p: Vec<f64> = out[start..].iter().map(|r| r.p_wilcoxon).collect();
        for (row, adjusted) in out[start..].iter_mut().zip(holm_adjust(&p)) {
            row.p_holm = adjusted;
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn compare_arms(
    metric: &str,
    class: &str,
    a: &str,
    b: &str,
    va: &BTreeMap<CaseKey, f64>,
    vb: &BTreeMap<CaseKey, f64>,
    info: &BTreeMap<String, TrialInfo>,
    settings: &PairedSettings,
) -> ComparisonRow {
    let mut by_split: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut dropped = 0;
    for (key, x) in va {
        let Some(y) = vb.get(key) else { continue };
        if x.is_finite() && y.is_finite() {
            by_split.entry(key.0.as_str()).or_default().push(x - y);
        } else {
            dropped += 1;
        }
    }
    let sizes = fold_sizes(info, by_split.keys().copied());
    let strata: Vec<Vec<f64>> = by_split.into_values().collect();
    let c = compare_paired(&strata, sizes, settings);
    ComparisonRow {
        metric: metric.to_string(),
        class: class.to_string(),
        a: a.to_string(),
        b: b.to_string(),
        n: c.n,
        n_dropped: dropped,
        folds: c.folds,
        mean_diff: c.mean_diff,
        ci_low: c.ci.low,
        ci_high: c.ci.high,
        p_wilcoxon: c.wilcoxon.p_value,
        wilcoxon_method: (c.n > 0).then_some(c.wilcoxon.method),
        p_permutation: c.permutation.p_value,
        permutation_exact: c.permutation.exact,
        p_holm: f64::NAN,
        fold_t_test: c.fold_t_test,
    }
}

/// Mean training and test set sizes of the splits (the corrected t-test assumes one size;
/// the splits of one scheme differ by at most a volume).
fn fold_sizes<'a>(
    info: &BTreeMap<String, TrialInfo>,
    splits: impl Iterator<Item = &'a str>,
) -> Option<FoldSizes> {
    let wanted: BTreeSet<&str> = splits.collect();
    let mut seen = BTreeMap::new();
    for t in info.values() {
        if let (true, Some(s)) = (wanted.contains(t.split.as_str()), t.sizes) {
            seen.insert(t.split.as_str(), s);
        }
    }
    if seen.is_empty() || seen.len() < wanted.len() {
        return None;
    }
    let k = seen.len() as f64;
    let mean = |f: fn(&FoldSizes) -> usize| {
        (seen.values().map(|s| f(s) as f64).sum::<f64>() / k).round() as usize
    };
    Some(FoldSizes {
        n_train: mean(|s| s.n_train),
        n_test: mean(|s| s.n_test),
    })
}

/// Arms in a fixed order: by model as the thesis' tables list them (U-Net, Vox2Vox, CycleGAN,
/// threshold), then by label.
pub(crate) fn arm_order(info: &BTreeMap<String, TrialInfo>) -> Vec<String> {
    let rank = |arm: &str| model_rank(arm.split_whitespace().next().unwrap_or_default()).0;
    let mut arms: Vec<String> = info
        .values()
        .map(|t| t.arm.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    arms.sort_by_key(|a| rank(a));
    arms
}

/// Finished trials by id: arm label, split key, seed, fold sizes.
pub(crate) fn trial_info(trials: &DataFrame) -> Result<BTreeMap<String, TrialInfo>, ReportError> {
    let cols = Columns::require(
        trials,
        &["trial_id", "status", "model", "fold", "seed"],
        "trials",
    )?;
    let ids = cols.str("trial_id")?;
    let status = cols.str("status")?;
    let model = cols.str("model")?;
    let fold = cols.u64("fold")?;
    let seed = cols.u64("seed")?;
    let split_id = cols.optional_str("split_id")?;
    let split_json = cols.optional_str("split_json")?;
    // The task counts as a configuration key: a model trained on two tasks is two arms.
    let mut params = vec![("classes".to_string(), cols.optional_str("classes")?)];
    params.extend(param_columns(trials).map_err(|e| cols.error(e))?);
    let varying = varying_keys(&model, &status, &params);
    let mut out = BTreeMap::new();
    for i in 0..trials.height() {
        if status[i].as_deref() != Some("finished") {
            continue;
        }
        let (Some(id), Some(m)) = (&ids[i], &model[i]) else {
            continue;
        };
        let mut arm = m.clone();
        for (key, values) in &params {
            if let (true, Some(v)) = (varying.contains(&(m.clone(), key.clone())), &values[i]) {
                arm.push_str(&format!(" {key}={v}"));
            }
        }
        let split = split_id[i]
            .clone()
            .unwrap_or_else(|| format!("fold{}", fold[i].unwrap_or_default()));
        let sizes = split_json[i].as_deref().and_then(split_sizes);
        out.insert(
            id.clone(),
            TrialInfo {
                model: m.clone(),
                arm,
                split,
                fold: fold[i].unwrap_or_default(),
                seed: seed[i].unwrap_or_default(),
                sizes,
            },
        );
    }
    Ok(out)
}

/// `param.<key>` columns by key.
fn param_columns(trials: &DataFrame) -> PolarsResult<Vec<(String, Vec<Option<String>>)>> {
    let mut out = Vec::new();
    for name in trials.get_column_names() {
        if let Some(key) = name.strip_prefix("param.") {
            out.push((key.to_string(), string_column(trials, name)?));
        }
    }
    Ok(out)
}

/// (model, key) pairs where the key takes more than one value among the model's finished
/// trials: those keys name the model's configurations.
fn varying_keys(
    model: &[Option<String>],
    status: &[Option<String>],
    params: &[(String, Vec<Option<String>>)],
) -> BTreeSet<(String, String)> {
    let mut values: BTreeMap<(String, String), BTreeSet<Option<String>>> = BTreeMap::new();
    for (key, column) in params {
        for (i, v) in column.iter().enumerate() {
            if let (Some(m), Some("finished")) = (&model[i], status[i].as_deref()) {
                values
                    .entry((m.clone(), key.clone()))
                    .or_default()
                    .insert(v.clone());
            }
        }
    }
    values
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, _)| k)
        .collect()
}

/// Training and test volume counts of a `split_json` value.
fn split_sizes(json: &str) -> Option<FoldSizes> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let len = |k: &str| v.get(k).and_then(|x| x.as_array()).map(Vec::len);
    Some(FoldSizes {
        n_train: len("train")?,
        n_test: len("test")?,
    })
}

/// (metric, class) → arm → case → value, for the finished trials in `info`.
#[allow(clippy::type_complexity)]
fn case_values(
    results: &DataFrame,
    info: &BTreeMap<String, TrialInfo>,
    metrics: &[String],
) -> Result<Vec<((String, String), BTreeMap<String, BTreeMap<CaseKey, f64>>)>, ReportError> {
    let cols = Columns::require(
        results,
        &["trial_id", "volume", "class", "metric", "value"],
        "results",
    )?;
    let ids = cols.str("trial_id")?;
    let volume = cols.str("volume")?;
    let class = cols.str("class")?;
    let metric = cols.str("metric")?;
    let value = cols.f64("value")?;
    let mut out: BTreeMap<_, BTreeMap<String, BTreeMap<CaseKey, f64>>> = BTreeMap::new();
    for i in 0..results.height() {
        let (Some(id), Some(vol), Some(c), Some(m)) = (&ids[i], &volume[i], &class[i], &metric[i])
        else {
            continue;
        };
        let Some(t) = info.get(id) else { continue };
        if !metrics.contains(m) {
            continue;
        }
        let order = metrics.iter().position(|x| x == m).unwrap_or(usize::MAX);
        out.entry((format!("{order:03}:{m}"), c.clone()))
            .or_default()
            .entry(t.arm.clone())
            .or_default()
            .insert(
                (t.split.clone(), t.seed, vol.clone()),
                value[i].unwrap_or(f64::NAN),
            );
    }
    // The sort key keeps the order of `metrics`; it is dropped here.
    Ok(out
        .into_iter()
        .map(|((m, c), v)| ((m[4..].to_string(), c), v))
        .collect())
}
