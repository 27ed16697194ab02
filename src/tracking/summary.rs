//! The pooled summary behind `seglab runs compare` and the store benchmark: mean ± std of a
//! value column per group, NaN values excluded and counted.
//!
//! This is deliberately only the *pooled* aggregation (every row of a group counts once, like
//! nnU-Net's pooled CV, tracking-anchors.md §3.3); reports with over-folds and over-seeds
//! aggregation go through `report::aggregate`.

use polars::prelude::*;

use super::{Result, TrackingError};

/// Groups `rows` by `by` (in order of first appearance, then sorted by the keys) and returns
/// the keys plus `mean` and `std` (sample, ddof 1) of `value` over its non-NaN rows, `n` (rows
/// counted) and `n_nan` (NaN rows left out). A group whose values are all NaN has null mean
/// and std; a single value has a null std.
pub fn pooled_summary(rows: &DataFrame, by: &[&str], value: &str) -> Result<DataFrame> {
    for c in by.iter().chain([&value]) {
        if rows.column(c).is_err() {
            let known: Vec<&str> = rows.get_column_names().iter().map(|s| s.as_str()).collect();
            return Err(TrackingError::Query(format!(
                "no column `{c}` to summarize by (known: {})",
                known.join(", ")
            )));
        }
    }
    let keys: Vec<Expr> = by.iter().map(|c| col(*c)).collect();
    let v = col(value);
    let finite_or_inf = v.clone().filter(v.clone().is_not_nan());
    rows.clone()
        .lazy()
        .group_by(keys.clone())
        .agg([
            finite_or_inf.clone().mean().alias("mean"),
            finite_or_inf.std(1).alias("std"),
            v.clone()
                .is_not_nan()
                .sum()
                .cast(DataType::UInt32)
                .alias("n"),
            v.is_nan().sum().cast(DataType::UInt32).alias("n_nan"),
        ])
        .sort_by_exprs(keys, SortMultipleOptions::default())
        .collect()
        .map_err(|e| TrackingError::polars("summarizing", e))
}
