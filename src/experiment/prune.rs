//! Pruning by successive halving on epoch rungs (asynchronous, as ASHA): the `[prune]` table
//! of a sweep spec.
//!
//! ```toml
//! [prune]
//! metric = "dice_mean"   # a validation metric of the epochs table (default dice_mean)
//! min_epochs = 2         # the first rung
//! reduction = 3          # rungs at min_epochs × reduction^k; a third goes on at each
//! goal = "max"           # max (default) or min, for losses
//! ```
//!
//! A trial reaches rung k after `min_epochs × reduction^k` epochs (below its `train.epochs`).
//! There its value is the best validation value of its epochs so far. It goes on when that
//! value is at least the rung's cut: the m-th best of the values every trial of its group has
//! reached the rung with (itself included), m = max(1, ⌊count / reduction⌋), so about one in
//! `reduction` trials goes on. A trial behind the cut stops, checkpointed, with status
//! `pruned` and a message naming its rung, value and the cut.
//!
//! A group is the trials of one model, task and fold (folds differ in difficulty, and models
//! are compared by the report, not here). The values come from the store's epochs table, so
//! parallel workers and Slurm array tasks judge against every trial that got there first; the
//! decisions therefore depend on the order trials reach a rung, as in ASHA. `dice_mean` is
//! the mean of the trial's `dice_<class>` validation values.

use std::collections::BTreeMap;

use polars::prelude::*;

use crate::tracking::{Store, Table, TrackingError};
use crate::train::PruneDecision;

/// A parsed `[prune]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct PruneSpec {
    pub metric: String,
    pub min_epochs: u32,
    pub reduction: u32,
    /// True when larger values are better.
    pub maximize: bool,
}

const KEYS: [&str; 4] = ["metric", "min_epochs", "reduction", "goal"];

impl PruneSpec {
    /// Parses the `[prune]` table; errors name the key and what was expected.
    pub fn parse(table: &toml::Table) -> Result<PruneSpec, String> {
        for key in table.keys() {
            if !KEYS.contains(&key.as_str()) {
                let hint = crate::keys::nearest(key, &KEYS)
                    .map(|n| format!(", did you mean `{n}`?"))
                    .unwrap_or_default();
                return Err(format!("unknown key `prune.{key}`{hint}"));
            }
        }
        let metric = match table.get("metric") {
            None => "dice_mean".to_string(),
            Some(toml::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(v) => {
                return Err(format!(
                    "prune.metric: expected the name of a validation metric such as \
                     \"dice_mean\" or \"dice_nuclei\", got {v}"
                ));
            }
        };
        let positive = |key: &str, min: i64| match table.get(key) {
            Some(toml::Value::Integer(i)) if *i >= min => Ok(Some(*i as u32)),
            Some(v) => Err(format!("prune.{key}: expected an integer ≥ {min}, got {v}")),
            None => Ok(None),
        };
        let min_epochs = positive("min_epochs", 1)?
            .ok_or("prune.min_epochs: expected `min_epochs = <epochs before the first rung>`")?;
        let reduction = positive("reduction", 2)?.unwrap_or(3);
        let maximize = match table.get("goal").map(|v| v.as_str()) {
            None | Some(Some("max")) => true,
            Some(Some("min")) => false,
            Some(_) => return Err("prune.goal: expected \"max\" or \"min\"".into()),
        };
        Ok(PruneSpec {
            metric,
            min_epochs,
            reduction,
            maximize,
        })
    }

    /// The rung index of `epoch` when it is a rung below `max_epochs`.
    pub fn rung_of(&self, epoch: u32, max_epochs: u32) -> Option<u32> {
        let mut at = u64::from(self.min_epochs);
        let mut k = 0;
        while at < u64::from(max_epochs) {
            if at == u64::from(epoch) {
                return Some(k);
            }
            at *= u64::from(self.reduction);
            k += 1;
        }
        None
    }

    /// The cut of a rung whose values are `values` (module doc); `None` without values.
    pub fn cut(&self, values: &[f64]) -> Option<f64> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(|a, b| a.total_cmp(b));
        if self.maximize {
            sorted.reverse();
        }
        let m = (sorted.len() / self.reduction as usize).max(1);
        Some(sorted[m - 1])
    }

    /// True when `value` is behind `cut`.
    fn behind(&self, value: f64, cut: f64) -> bool {
        if self.maximize {
            value < cut
        } else {
            value > cut
        }
    }
}

/// What one worker needs to judge its trial at the rungs.
#[derive(Clone, Debug)]
pub struct Pruner {
    pub spec: PruneSpec,
    pub trial_id: String,
    /// The trials of the trial's group (itself included).
    pub group: Vec<String>,
    /// The trial's classes (for `dice_mean`).
    pub classes: Vec<String>,
    pub max_epochs: u32,
}

impl Pruner {
    /// The decision after `epoch` (its rows already in `store`): `Some` when the trial is
    /// behind its rung's cut.
    pub fn judge(&self, store: &Store, epoch: u32) -> Result<Option<PruneDecision>, TrackingError> {
        let Some(rung) = self.spec.rung_of(epoch, self.max_epochs) else {
            return Ok(None);
        };
        let values = self.rung_values(store, epoch)?;
        let Some(&own) = values.get(&self.trial_id) else {
            return Ok(None); // no validation value: nothing to judge on
        };
        let all: Vec<f64> = values.values().copied().collect();
        let Some(cut) = self.spec.cut(&all) else {
            return Ok(None);
        };
        Ok(self.spec.behind(own, cut).then(|| PruneDecision {
            rung,
            epoch,
            metric: self.spec.metric.clone(),
            value: own,
            cut,
            trials_at_rung: all.len(),
        }))
    }

    /// Per trial of the group that reached `epoch`: its best metric value up to `epoch`.
    fn rung_values(
        &self,
        store: &Store,
        epoch: u32,
    ) -> Result<BTreeMap<String, f64>, TrackingError> {
        let wanted: Vec<String> = if self.spec.metric == "dice_mean" {
            self.classes.iter().map(|c| format!("dice_{c}")).collect()
        } else {
            vec![self.spec.metric.clone()]
        };
        let frame = store
            .scan(Table::Epochs)?
            .filter(col("split").eq(lit("val")))
            .filter(col("epoch").lt_eq(lit(epoch)))
            .select([col("trial_id"), col("epoch"), col("metric"), col("value")])
            .collect()
            .map_err(|e| TrackingError::polars("epochs of a rung", e))?;
        let column = |name: &str| {
            frame
                .column(name)
                .map_err(|e| TrackingError::polars("epochs of a rung", e))
        };
        let ids = column("trial_id")?.str().cloned();
        let epochs = column("epoch")?.u32().cloned();
        let metrics = column("metric")?.str().cloned();
        let values = column("value")?.f64().cloned();
        let (Ok(ids), Ok(epochs), Ok(metrics), Ok(values)) = (ids, epochs, metrics, values) else {
            return Ok(BTreeMap::new());
        };
        // (trial, epoch) → the wanted metrics' values (attempts repeat the same history).
        let mut per_epoch: BTreeMap<(String, u32), BTreeMap<String, f64>> = BTreeMap::new();
        for i in 0..frame.height() {
            let (Some(id), Some(e), Some(m), Some(v)) =
                (ids.get(i), epochs.get(i), metrics.get(i), values.get(i))
            else {
                continue;
            };
            if !self.group.iter().any(|g| g == id) || !wanted.iter().any(|w| w == m) {
                continue;
            }
            per_epoch
                .entry((id.to_string(), e))
                .or_default()
                .insert(m.to_string(), v);
        }
        let mut best: BTreeMap<String, f64> = BTreeMap::new();
        let mut reached: BTreeMap<String, bool> = BTreeMap::new();
        for ((id, e), metrics) in per_epoch {
            if metrics.len() < wanted.len() {
                continue;
            }
            let v = metrics.values().sum::<f64>() / metrics.len() as f64;
            if e == epoch {
                reached.insert(id.clone(), true);
            }
            if !v.is_finite() {
                continue;
            }
            let entry = best.entry(id).or_insert(v);
            let better = if self.spec.maximize {
                v > *entry
            } else {
                v < *entry
            };
            if better {
                *entry = v;
            }
        }
        best.retain(|id, _| reached.contains_key(id));
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Result<PruneSpec, String> {
        PruneSpec::parse(&text.parse::<toml::Table>().unwrap())
    }

    #[test]
    fn rungs_grow_by_the_reduction_below_the_epoch_budget() {
        let s = spec("min_epochs = 2\nreduction = 3\n").unwrap();
        let rungs: Vec<(u32, u32)> = (1..=30)
            .filter_map(|e| s.rung_of(e, 20).map(|r| (e, r)))
            .collect();
        assert_eq!(rungs, [(2, 0), (6, 1), (18, 2)]);
        // The last epoch is no rung: a trial that got there finishes.
        assert_eq!(s.rung_of(2, 2), None);
    }

    #[test]
    fn the_cut_keeps_about_one_in_reduction() {
        let s = spec("min_epochs = 1\n").unwrap();
        // 9 values: the 3rd best is the cut.
        let values: Vec<f64> = (1..=9).map(f64::from).collect();
        assert_eq!(s.cut(&values), Some(7.0));
        // Fewer values than the reduction: only the best goes on.
        assert_eq!(s.cut(&[0.2, 0.5]), Some(0.5));
        assert!(s.behind(0.2, 0.5) && !s.behind(0.5, 0.5));
        let min = spec("min_epochs = 1\ngoal = \"min\"\n").unwrap();
        assert_eq!(min.cut(&values), Some(3.0));
        assert!(min.behind(4.0, 3.0));
        assert_eq!(s.cut(&[f64::NAN]), None);
    }

    #[test]
    fn bad_tables_name_the_key_and_what_was_expected() {
        let cases = [
            (
                "reduction = 3\n",
                "prune.min_epochs: expected `min_epochs = ",
            ),
            (
                "min_epochs = 0\n",
                "prune.min_epochs: expected an integer ≥ 1, got 0",
            ),
            (
                "min_epochs = 1\nreduction = 1\n",
                "prune.reduction: expected an integer ≥ 2",
            ),
            (
                "min_epochs = 1\ngoal = \"up\"\n",
                "prune.goal: expected \"max\" or \"min\"",
            ),
            (
                "min_epoch = 1\n",
                "unknown key `prune.min_epoch`, did you mean `min_epochs`?",
            ),
            (
                "min_epochs = 1\nmetric = 3\n",
                "prune.metric: expected the name",
            ),
        ];
        for (text, wanted) in cases {
            let e = spec(text).unwrap_err();
            assert!(e.contains(wanted), "{text}: {e}");
        }
        let s = spec("min_epochs = 2\n").unwrap();
        assert_eq!(
            (s.metric.as_str(), s.reduction, s.maximize),
            ("dice_mean", 3, true)
        );
    }
}
