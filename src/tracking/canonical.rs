//! The canonical view of a store (the rule is in the `tracking` module doc): the latest event
//! of each attempt, the chosen attempt of each trial, and the rows of the chosen attempts.

use polars::prelude::*;

use super::{Result, TrackingError};

/// The rows that count: for each trial its chosen attempt (`trials`, one row per trial: the
/// attempt's latest event plus an `attempts` column counting the trial's attempts) and that
/// attempt's `epochs`, `results` and `timings` rows, in store order.
#[derive(Clone, Debug)]
pub struct Canonical {
    pub trials: DataFrame,
    pub epochs: DataFrame,
    pub results: DataFrame,
    pub timings: DataFrame,
}

impl Canonical {
    /// Applies the rule to the four raw tables (as [`super::Store::read`] returns them).
    pub fn from_tables(
        trials: DataFrame,
        epochs: DataFrame,
        results: DataFrame,
        timings: DataFrame,
    ) -> Result<Canonical> {
        let chosen = chosen(latest_events(trials)?)?;
        let keys = chosen
            .select(["trial_id", "attempt"])
            .map_err(|e| TrackingError::polars("canonical view", e))?;
        Ok(Canonical {
            epochs: only_chosen(epochs, &keys)?,
            results: only_chosen(results, &keys)?,
            timings: only_chosen(timings, &keys)?,
            trials: chosen,
        })
    }

    /// `results` with the given columns of the trial (e.g. `model`, `fold`, `seed`,
    /// `param.loss.golgi_weight`) joined on, for tables grouped by trial attributes.
    pub fn results_with(&self, trial_columns: &[&str]) -> Result<DataFrame> {
        with_trial_columns(&self.results, &self.trials, trial_columns)
    }

    /// `epochs` with the given trial columns joined on (learning curves by model).
    pub fn epochs_with(&self, trial_columns: &[&str]) -> Result<DataFrame> {
        with_trial_columns(&self.epochs, &self.trials, trial_columns)
    }

    /// `timings` with the given trial columns joined on.
    pub fn timings_with(&self, trial_columns: &[&str]) -> Result<DataFrame> {
        with_trial_columns(&self.timings, &self.trials, trial_columns)
    }
}

fn err(e: PolarsError) -> TrackingError {
    TrackingError::polars("canonical view", e)
}

/// The latest event (highest `seq`, then the later row of a part) of every attempt, sorted by
/// trial and attempt.
pub(crate) fn latest_events(trials: DataFrame) -> Result<DataFrame> {
    trials
        .lazy()
        .sort_by_exprs(
            [col("trial_id"), col("attempt"), col("seq")],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .unique_stable(
            Some(cols(["trial_id", "attempt"])),
            UniqueKeepStrategy::Last,
        )
        .collect()
        .map_err(err)
}

/// From the latest events: per trial the highest finished attempt, else the highest attempt;
/// adds `attempts` (how many attempts the trial has). Sorted by trial.
pub(crate) fn chosen(latest: DataFrame) -> Result<DataFrame> {
    let counts = latest
        .clone()
        .lazy()
        .group_by([col("trial_id")])
        .agg([len().cast(DataType::UInt32).alias("attempts")]);
    latest
        .lazy()
        .with_column(col("status").eq(lit("finished")).alias("__finished"))
        .sort_by_exprs(
            [col("trial_id"), col("__finished"), col("attempt")],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .unique_stable(Some(cols(["trial_id"])), UniqueKeepStrategy::Last)
        .drop(cols(["__finished"]))
        .join(
            counts,
            [col("trial_id")],
            [col("trial_id")],
            JoinArgs::new(JoinType::Left),
        )
        .sort(["trial_id"], SortMultipleOptions::default())
        .collect()
        .map_err(err)
}

/// Joins `right` onto `rows` and keeps the order of `rows` (the lean feature set cannot ask
/// the join itself to keep it).
fn join_in_order(
    rows: DataFrame,
    right: LazyFrame,
    on: &[&str],
    how: JoinType,
) -> Result<DataFrame> {
    let keys: Vec<Expr> = on.iter().map(|c| col(*c)).collect();
    rows.lazy()
        .with_row_index("__row", None)
        .join(right, keys.clone(), keys, JoinArgs::new(how))
        .sort(["__row"], SortMultipleOptions::default())
        .drop(cols(["__row"]))
        .collect()
        .map_err(err)
}

fn only_chosen(rows: DataFrame, keys: &DataFrame) -> Result<DataFrame> {
    join_in_order(
        rows,
        keys.clone().lazy(),
        &["trial_id", "attempt"],
        JoinType::Inner,
    )
}

fn with_trial_columns(rows: &DataFrame, trials: &DataFrame, columns: &[&str]) -> Result<DataFrame> {
    let mut wanted: Vec<&str> = vec!["trial_id"];
    for c in columns {
        if trials.column(c).is_err() {
            let known: Vec<&str> = trials
                .get_column_names()
                .iter()
                .map(|s| s.as_str())
                .collect();
            return Err(TrackingError::Query(format!(
                "the trials table has no column `{c}` (known: {})",
                known.join(", ")
            )));
        }
        if !wanted.contains(c) && rows.column(c).is_err() {
            wanted.push(c);
        }
    }
    let right = trials.select(wanted).map_err(err)?;
    join_in_order(rows.clone(), right.lazy(), &["trial_id"], JoinType::Left)
}
