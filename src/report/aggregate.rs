//! The one aggregation layer of seglab: per-case rows in, statistics out.
//!
//! Every table and every plot of a report, and `seglab runs compare`, get their numbers from
//! [`aggregate`] (mean, std, n) or, for box plots, [`distribution`] (quartiles, whiskers,
//! outliers). Nothing else in seglab computes a mean of metrics; this
//! follows nnU-Net's single metrics function and the reporting practice of
//! docs/design.md §3 (state the aggregation; the choice changes the numbers).
//!
//! Conventions shared by both functions:
//! - the input is a long frame with a `value` column (f64) and the identity columns the
//!   aggregation needs (`trial_id`, `fold`);
//! - a non-finite `value` (NaN, as Dice on an empty reference and empty prediction, or ±inf)
//!   is excluded from every statistic and counted in `n_nan`, never turned into a number
//!   (docs/design.md §3);
//! - averages are never averaged silently: the two-stage aggregations first take the mean of
//!   the rows of each unit (a fold, or a trial), then the statistics over units.

use std::str::FromStr;

use polars::prelude::*;

use super::ReportError;

/// How per-case rows become one mean ± std (docs/statistics.md, "Means and spreads").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Aggregation {
    /// Mean ± std of fold means: first the mean per fold over that fold's rows (its test
    /// volumes, and its seeds when there are several), then mean and sample std over folds.
    /// `n` counts folds. The thesis' and the paper's "average of cross-validation results".
    #[default]
    OverFolds,
    /// Mean ± std over trials: first the mean per trial (one fold and one seed) over its rows,
    /// then mean and sample std over trials. `n` counts trials.
    OverSeedsAndFolds,
    /// nnU-Net's cross-validation number: mean and sample std over all (trial, volume) rows at
    /// once. `n` counts rows.
    Pooled,
}

impl Aggregation {
    pub const ALL: [Aggregation; 3] = [
        Aggregation::OverFolds,
        Aggregation::OverSeedsAndFolds,
        Aggregation::Pooled,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Aggregation::OverFolds => "over-folds",
            Aggregation::OverSeedsAndFolds => "over-seeds-folds",
            Aggregation::Pooled => "pooled",
        }
    }

    /// What one unit of `n` is, for table headers ("3 folds").
    pub fn unit(self) -> &'static str {
        match self {
            Aggregation::OverFolds => "folds",
            Aggregation::OverSeedsAndFolds => "trials",
            Aggregation::Pooled => "cases",
        }
    }

    /// One sentence stating the aggregation, for table captions and figure captions.
    pub fn describe(self) -> &'static str {
        match self {
            Aggregation::OverFolds => {
                "mean ± std over folds: for each fold, the mean over its test volumes (and its \
                 seeds); then the mean and sample standard deviation (ddof = 1) of the fold \
                 means; n counts folds"
            }
            Aggregation::OverSeedsAndFolds => {
                "mean ± std over seeds × folds: for each trial (one fold, one seed), the mean \
                 over its test volumes; then the mean and sample standard deviation (ddof = 1) \
                 of the trial means; n counts trials"
            }
            Aggregation::Pooled => {
                "pooled (as nnU-Net's cross-validation summary): the mean and sample standard \
                 deviation (ddof = 1) over all (trial, test volume) cases at once; n counts \
                 cases"
            }
        }
    }

    /// The aggregation of per-epoch values (learning curves), where a trial has one value per
    /// epoch and metric rather than one per test volume: (units of n, one sentence).
    pub fn describe_per_epoch(self) -> (&'static str, &'static str) {
        match self {
            Aggregation::OverFolds => (
                "folds",
                "mean ± std over folds: each fold's value (the mean over its seeds), then the \
                 mean and sample standard deviation (ddof = 1) of the fold values",
            ),
            Aggregation::OverSeedsAndFolds | Aggregation::Pooled => (
                "trials",
                "mean ± std over trials (seeds × folds): the mean and sample standard \
                 deviation (ddof = 1) of the trials' values",
            ),
        }
    }
}

display_by_name!(Aggregation);

impl FromStr for Aggregation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Aggregation::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown aggregation `{s}`, expected over-folds, over-seeds-folds or pooled"
                )
            })
    }
}

/// Output columns of [`aggregate`], after the `group_by` columns.
pub const STAT_COLUMNS: [&str; 5] = ["mean", "std", "n", "n_nan", "n_trials"];

/// Aggregates the `value` column of `frame` per `group_by` key.
///
/// Output: the `group_by` columns, then `mean` (f64, null when no finite value), `std` (f64,
/// sample std with ddof = 1, null when fewer than two units), `n` (u32: units behind the
/// mean — folds, trials or cases, see [`Aggregation`]), `n_nan` (u32: input rows excluded
/// because their value was not finite) and `n_trials` (u32: distinct trials behind the
/// cell). Rows are sorted by the `group_by` columns.
///
/// Required input columns: `value` and `trial_id`, plus `fold` for
/// [`Aggregation::OverFolds`]. A unit whose rows are all non-finite has no mean and does not
/// count in `n`; its rows count in `n_nan`.
pub fn aggregate(
    frame: &DataFrame,
    group_by: &[&str],
    aggregation: Aggregation,
) -> Result<DataFrame, ReportError> {
    let mut needed = vec!["value", "trial_id"];
    if aggregation == Aggregation::OverFolds {
        needed.push("fold");
    }
    needed.extend_from_slice(group_by);
    require_columns(frame, &needed, "aggregate")?;

    let keys: Vec<Expr> = group_by.iter().map(|c| col(*c)).collect();
    let lf = finite_values(frame);
    // a group-by without keys is one group: a plain select
    let agg = |lf: LazyFrame, keys: Vec<Expr>, exprs: Vec<Expr>| {
        if keys.is_empty() {
            lf.select(exprs)
        } else {
            lf.group_by(keys).agg(exprs)
        }
    };
    let out = match aggregation {
        Aggregation::Pooled => agg(
            lf,
            keys,
            vec![
                col("value").mean().alias("mean"),
                col("value").std(1).alias("std"),
                col("value").count().cast(DataType::UInt32).alias("n"),
                col("_nan").sum().cast(DataType::UInt32).alias("n_nan"),
                col("trial_id")
                    .n_unique()
                    .cast(DataType::UInt32)
                    .alias("n_trials"),
            ],
        ),
        Aggregation::OverFolds | Aggregation::OverSeedsAndFolds => {
            let unit = if aggregation == Aggregation::OverFolds {
                "fold"
            } else {
                "trial_id"
            };
            let mut unit_keys = keys.clone();
            unit_keys.push(col(unit));
            let units = lf.group_by(unit_keys).agg([
                col("value").mean().alias("_unit_mean"),
                col("_nan").sum().alias("_unit_nan"),
                col("trial_id").n_unique().alias("_unit_trials"),
            ]);
            agg(
                units,
                keys,
                vec![
                    col("_unit_mean").mean().alias("mean"),
                    col("_unit_mean").std(1).alias("std"),
                    col("_unit_mean").count().cast(DataType::UInt32).alias("n"),
                    col("_unit_nan").sum().cast(DataType::UInt32).alias("n_nan"),
                    col("_unit_trials")
                        .sum()
                        .cast(DataType::UInt32)
                        .alias("n_trials"),
                ],
            )
        }
    };
    sorted(out, group_by)
        .collect()
        .map_err(polars_error("aggregate"))
}

/// Box-plot statistics of the `value` column per `group_by` key, from its finite values.
#[derive(Clone, Debug)]
pub struct Distribution {
    /// The `group_by` columns, then `q1`, `median`, `q3` (linear interpolation, as numpy's
    /// default percentile), `whisker_lo` and `whisker_hi` (the most extreme values within
    /// 1.5 · IQR of the quartiles — Tukey's rule, clipped to the data, unlike plotters'
    /// `Quartiles`: docs/design.md §4), `n` and `n_nan` (u32). Sorted by the keys.
    pub stats: DataFrame,
    /// The `group_by` columns and `value`: every finite value outside the whiskers.
    pub outliers: DataFrame,
}

/// Box-plot statistics per group (see [`Distribution`]). Requires `value` and the `group_by`
/// columns; every row is one case (no averaging happens here).
pub fn distribution(frame: &DataFrame, group_by: &[&str]) -> Result<Distribution, ReportError> {
    let mut needed = vec!["value"];
    needed.extend_from_slice(group_by);
    require_columns(frame, &needed, "distribution")?;
    let keys: Vec<Expr> = group_by.iter().map(|c| col(*c)).collect();
    let on: Vec<Expr> = keys.clone();
    let lf = finite_values(frame);
    let q = |p: f64| {
        col("value")
            .drop_nulls()
            .quantile(lit(p), QuantileMethod::Linear)
    };
    let quartiles = lf.clone().group_by(keys.clone()).agg([
        q(0.25).alias("q1"),
        q(0.5).alias("median"),
        q(0.75).alias("q3"),
        col("value").count().cast(DataType::UInt32).alias("n"),
        col("_nan").sum().cast(DataType::UInt32).alias("n_nan"),
    ]);
    let fenced = lf
        .filter(col("value").is_not_null())
        .join(
            quartiles.clone(),
            on.clone(),
            on.clone(),
            JoinArgs::new(JoinType::Inner),
        )
        .with_columns([
            (col("q1") - lit(1.5) * (col("q3") - col("q1"))).alias("_lo"),
            (col("q3") + lit(1.5) * (col("q3") - col("q1"))).alias("_hi"),
        ]);
    let inside = col("value")
        .gt_eq(col("_lo"))
        .and(col("value").lt_eq(col("_hi")));
    let whiskers = fenced.clone().filter(inside.clone()).group_by(keys).agg([
        col("value").min().alias("whisker_lo"),
        col("value").max().alias("whisker_hi"),
    ]);
    let stats = quartiles.join(whiskers, on.clone(), on, JoinArgs::new(JoinType::Left));
    let stats = sorted(stats, group_by)
        .select(
            group_by
                .iter()
                .map(|c| col(*c))
                .chain(
                    [
                        "q1",
                        "median",
                        "q3",
                        "whisker_lo",
                        "whisker_hi",
                        "n",
                        "n_nan",
                    ]
                    .map(col),
                )
                .collect::<Vec<_>>(),
        )
        .collect()
        .map_err(polars_error("distribution"))?;
    let outliers = sorted(fenced.filter(inside.not()), group_by)
        .select(
            group_by
                .iter()
                .map(|c| col(*c))
                .chain([col("value")])
                .collect::<Vec<_>>(),
        )
        .collect()
        .map_err(polars_error("distribution"))?;
    Ok(Distribution { stats, outliers })
}

/// `frame` as a lazy frame whose `value` is null where it was not finite, plus `_nan` (u32:
/// 1 where the input value was NaN or infinite).
fn finite_values(frame: &DataFrame) -> LazyFrame {
    let value = col("value").cast(DataType::Float64);
    frame.clone().lazy().with_columns([
        when(value.clone().is_finite())
            .then(value.clone())
            .otherwise(lit(NULL).cast(DataType::Float64))
            .alias("value"),
        value
            .is_finite()
            .not()
            .fill_null(lit(false))
            .cast(DataType::UInt32)
            .alias("_nan"),
    ])
}

fn sorted(lf: LazyFrame, by: &[&str]) -> LazyFrame {
    if by.is_empty() {
        return lf;
    }
    lf.sort(
        by.iter().map(|s| PlSmallStr::from(*s)).collect::<Vec<_>>(),
        SortMultipleOptions::default().with_maintain_order(true),
    )
}

/// Checks that `frame` has every column of `needed`.
pub(crate) fn require_columns(
    frame: &DataFrame,
    needed: &[&str],
    what: &'static str,
) -> Result<(), ReportError> {
    for c in needed {
        if frame.column(c).is_err() {
            return Err(ReportError::MissingColumn {
                what,
                column: (*c).to_string(),
                present: frame
                    .get_column_names()
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            });
        }
    }
    Ok(())
}

/// Maps a polars error to [`ReportError::Polars`] naming the step.
pub(crate) fn polars_error(what: &'static str) -> impl Fn(PolarsError) -> ReportError {
    move |source| ReportError::Polars { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two folds; fold 0 has three volumes, fold 1 has one volume and a NaN.
    fn rows() -> DataFrame {
        df!(
            "model" => ["a", "a", "a", "a", "a"],
            "trial_id" => ["t0", "t0", "t0", "t1", "t1"],
            "fold" => [0u32, 0, 0, 1, 1],
            "seed" => [0u64, 0, 0, 0, 0],
            "value" => [0.2, 0.4, 0.6, 0.8, f64::NAN],
        )
        .unwrap()
    }

    fn get(df: &DataFrame, column: &str) -> Option<f64> {
        df.column(column)
            .unwrap()
            .cast(&DataType::Float64)
            .unwrap()
            .f64()
            .unwrap()
            .get(0)
    }

    #[test]
    fn over_folds_averages_fold_means_not_rows() {
        let out = aggregate(&rows(), &["model"], Aggregation::OverFolds).unwrap();
        // fold means 0.4 and 0.8 → 0.6, std = sqrt(0.08)
        assert!((get(&out, "mean").unwrap() - 0.6).abs() < 1e-12);
        assert!((get(&out, "std").unwrap() - 0.08f64.sqrt()).abs() < 1e-12);
        assert_eq!(get(&out, "n"), Some(2.0));
        assert_eq!(get(&out, "n_nan"), Some(1.0));
        assert_eq!(get(&out, "n_trials"), Some(2.0));
    }

    #[test]
    fn pooled_averages_rows_and_skips_nan() {
        let out = aggregate(&rows(), &["model"], Aggregation::Pooled).unwrap();
        assert!((get(&out, "mean").unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(get(&out, "n"), Some(4.0));
        assert_eq!(get(&out, "n_nan"), Some(1.0));
    }

    #[test]
    fn a_unit_of_only_nan_has_no_mean_and_no_count() {
        let df = df!(
            "trial_id" => ["t0", "t1"],
            "fold" => [0u32, 1],
            "value" => [0.5, f64::NAN],
        )
        .unwrap();
        let out = aggregate(&df, &[], Aggregation::OverSeedsAndFolds).unwrap();
        assert_eq!(get(&out, "mean"), Some(0.5));
        assert_eq!(get(&out, "std"), None, "one unit has no std");
        assert_eq!(get(&out, "n"), Some(1.0));
        assert_eq!(get(&out, "n_nan"), Some(1.0));
    }

    #[test]
    fn missing_column_is_named() {
        let df = df!("value" => [1.0]).unwrap();
        let err = aggregate(&df, &["model"], Aggregation::Pooled).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("trial_id"), "{msg}");
    }

    #[test]
    fn whiskers_are_clipped_to_data_and_outliers_listed() {
        let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 100.0, f64::NAN];
        let df = df!("g" => ["x"; 10], "value" => values).unwrap();
        let d = distribution(&df, &["g"]).unwrap();
        // numpy.percentile over the 9 finite values (linear): q1 = 3, median = 5, q3 = 7;
        // IQR = 4, fences -3 and 13
        assert_eq!(get(&d.stats, "q1"), Some(3.0));
        assert_eq!(get(&d.stats, "median"), Some(5.0));
        assert_eq!(get(&d.stats, "q3"), Some(7.0));
        assert_eq!(get(&d.stats, "whisker_lo"), Some(1.0));
        assert_eq!(get(&d.stats, "whisker_hi"), Some(8.0));
        assert_eq!(get(&d.stats, "n"), Some(9.0));
        assert_eq!(get(&d.stats, "n_nan"), Some(1.0));
        assert_eq!(d.outliers.height(), 1);
        assert_eq!(get(&d.outliers, "value"), Some(100.0));
    }

    #[test]
    fn quartiles_interpolate_linearly_like_numpy() {
        // numpy.percentile([1, 2, 4, 8], [25, 50, 75]) = [1.75, 3.0, 5.0]
        let df = df!("g" => ["x"; 4], "value" => [8.0, 1.0, 4.0, 2.0]).unwrap();
        let d = distribution(&df, &["g"]).unwrap();
        assert_eq!(get(&d.stats, "q1"), Some(1.75));
        assert_eq!(get(&d.stats, "median"), Some(3.0));
        assert_eq!(get(&d.stats, "q3"), Some(5.0));
        assert_eq!(d.outliers.height(), 0);
    }

    #[test]
    fn aggregation_names_round_trip() {
        for a in Aggregation::ALL {
            assert_eq!(a.name().parse::<Aggregation>().unwrap(), a);
        }
        assert!("mean".parse::<Aggregation>().is_err());
    }
}
