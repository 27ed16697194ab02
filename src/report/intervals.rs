//! 95 % confidence intervals of the per-configuration means of the metric tables
//! (`ReportOptions::ci`): the percentile bootstrap of the mean over a configuration's test
//! cases, resampling cases within folds (`stats::bootstrap`), NaN cases left out.

use std::collections::{BTreeMap, HashMap};

use polars::prelude::*;

use super::ReportError;
use super::input::Columns;
use crate::stats::bootstrap::{DEFAULT_RESAMPLES, stratified_mean_ci};

/// Seed of the bootstrap streams (one stream per cell, all seeded alike).
pub const SEED: u64 = 0;

/// A metric-table cell: (config label, class, metric).
pub(crate) type CellKey = (String, String, String);

/// (config label, class, metric) → (low, high), from the per-case rows `cases`
/// (`config`, `fold`, `class`, `metric`, `value`, as `Prepared::cases`).
pub(crate) fn case_mean_intervals(
    cases: &DataFrame,
) -> Result<HashMap<CellKey, (f64, f64)>, ReportError> {
    let cols = Columns::require(
        cases,
        &["config", "fold", "class", "metric", "value"],
        "results",
    )?;
    let config = cols.str("config")?;
    let fold = cols.u64("fold")?;
    let class = cols.str("class")?;
    let metric = cols.str("metric")?;
    let value = cols.f64("value")?;
    let mut strata: BTreeMap<CellKey, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for i in 0..cases.height() {
        let (Some(cf), Some(cl), Some(m), Some(v)) = (&config[i], &class[i], &metric[i], value[i])
        else {
            continue;
        };
        if v.is_finite() {
            strata
                .entry((cf.clone(), cl.clone(), m.clone()))
                .or_default()
                .entry(fold[i].unwrap_or_default())
                .or_default()
                .push(v);
        }
    }
    Ok(strata
        .into_iter()
        .map(|(key, folds)| {
            let folds: Vec<Vec<f64>> = folds.into_values().collect();
            let ci = stratified_mean_ci(&folds, 0.95, DEFAULT_RESAMPLES, SEED);
            (key, (ci.low, ci.high))
        })
        .filter(|(_, (lo, hi))| lo.is_finite() && hi.is_finite())
        .collect())
}
