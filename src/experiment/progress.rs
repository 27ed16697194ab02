//! How far a running sweep has got, for `seglab sweep status` (docs/sweeps.md): each running
//! trial's epoch out of its total, its latest validation score and the time it has left, and
//! the sweep's estimated end. Everything comes from the store, so it works for local workers
//! and Slurm array tasks alike.
//!
//! Estimates: a running trial with finished epochs has `(epochs − done) × seconds per epoch`
//! left (the epochs table's cumulative `wall_s`; early stopping can end it sooner), less the
//! part of the current epoch its `progress.json` (`train::progress`) says is done. One
//! without epochs yet, and a trial still to run, takes the mean wall time of the finished
//! trials of its model (of all finished trials when its model has none). The sweep's end
//! hands the trials still to run, in plan order, to whichever running trial's worker frees
//! first — as many workers as trials run now.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::ExperimentError;
use super::paths::SweepPaths;
use super::runner::TrialState;
use crate::tracking::{Store, TrackingError, TrialEvent, TrialStatus};
use crate::train::progress::StepProgress;

/// The progress of one running trial.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialProgress {
    pub trial_id: String,
    /// Finished epochs (0 before the first one ends, and for the threshold baseline).
    pub epoch: u32,
    /// Steps done and steps of the epoch in progress (its `progress.json`), when known.
    pub step: Option<(u64, u64)>,
    /// `train.epochs` (0 for the threshold baseline).
    pub epochs: u32,
    /// The latest validation score: `dice_mean` when there is one, else the first `dice_*`
    /// value, else the first validation value.
    pub score: Option<(String, f64)>,
    /// Estimated seconds left (module doc); None without any basis.
    pub left_s: Option<f64>,
}

/// The progress of a sweep.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SweepProgress {
    /// The running trials, in plan order.
    pub running: Vec<TrialProgress>,
    /// Trials still to run (never started, or stopped and resumable).
    pub pending: usize,
    /// Finished trials whose wall time the estimates use.
    pub finished: usize,
    /// Estimated seconds until the sweep's last trial ends; None when nothing runs or some
    /// trial has no basis for an estimate.
    pub left_s: Option<f64>,
}

/// What the store says about the trials' epochs: per trial, the last finished epoch with its
/// cumulative seconds and validation values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LastEpoch {
    pub epoch: u32,
    pub wall_s: f64,
    /// `(metric, value)` of the epoch's validation rows, in store order.
    pub val: Vec<(String, f64)>,
}

/// The progress of the sweep whose trials are in `states` (plan order), read from its
/// store; `now_ms` is the current time (Unix ms).
pub fn sweep_progress(
    states: &[TrialState],
    sweep_dir: &Path,
    now_ms: i64,
) -> Result<SweepProgress, ExperimentError> {
    let store_dir = SweepPaths::new(sweep_dir).store();
    if !store_dir.is_dir() {
        let (events, epochs) = (HashMap::new(), HashMap::new());
        return Ok(estimate(states, &events, &epochs, &HashMap::new(), now_ms));
    }
    let store = Store::open(&store_dir)?;
    let events: HashMap<String, TrialEvent> = TrialEvent::from_frame(&store.chosen_trials()?)?
        .into_iter()
        .map(|e| (e.trial_id.clone(), e))
        .collect();
    let epochs = last_epochs(&store)?;
    let paths = SweepPaths::new(sweep_dir);
    let steps: HashMap<String, StepProgress> = states
        .iter()
        .filter(|s| s.status == Some(TrialStatus::Running))
        .filter_map(|s| {
            let p = crate::train::progress::read(paths.trial_paths(&s.trial.trial_id).dir())?;
            Some((s.trial.trial_id.clone(), p))
        })
        .collect();
    Ok(estimate(states, &events, &epochs, &steps, now_ms))
}

/// The last epoch of each trial's chosen attempt (the canonical view).
fn last_epochs(store: &Store) -> Result<HashMap<String, LastEpoch>, ExperimentError> {
    let df = store.canonical()?.epochs;
    let err = |e| TrackingError::polars("epochs of running trials", e);
    let column = |name: &str| df.column(name).map_err(err);
    let (ids, split) = (column("trial_id")?.str(), column("split")?.str());
    let (ids, split) = (ids.map_err(err)?, split.map_err(err)?);
    let metric = column("metric")?.str().map_err(err)?;
    let epoch = column("epoch")?.u32().map_err(err)?;
    let (value, wall) = (column("value")?.f64(), column("wall_s")?.f64());
    let (value, wall) = (value.map_err(err)?, wall.map_err(err)?);
    let mut out: HashMap<String, LastEpoch> = HashMap::new();
    for i in 0..df.height() {
        let (Some(id), Some(e)) = (ids.get(i), epoch.get(i)) else {
            continue;
        };
        let last = out.entry(id.to_string()).or_default();
        if e > last.epoch {
            *last = LastEpoch {
                epoch: e,
                wall_s: wall.get(i).unwrap_or(f64::NAN),
                val: Vec::new(),
            };
        }
        if e == last.epoch
            && split.get(i) == Some("val")
            && let (Some(m), Some(v)) = (metric.get(i), value.get(i))
        {
            last.val.push((m.to_string(), v));
        }
    }
    Ok(out)
}

/// The estimates of the module doc from the trials' chosen events, last epochs and steps.
pub fn estimate(
    states: &[TrialState],
    events: &HashMap<String, TrialEvent>,
    epochs: &HashMap<String, LastEpoch>,
    steps: &HashMap<String, StepProgress>,
    now_ms: i64,
) -> SweepProgress {
    let durations = finished_durations(states, events);
    let typical = |model: &str| -> Option<f64> {
        durations
            .get(model)
            .or_else(|| durations.get(ALL_MODELS))
            .map(|(sum, n)| sum / *n as f64)
    };
    let mut progress = SweepProgress {
        finished: durations.get(ALL_MODELS).map_or(0, |(_, n)| *n),
        ..SweepProgress::default()
    };
    let mut pending_s: Vec<Option<f64>> = Vec::new();
    for s in states {
        let model = s.trial.config.model.name();
        match s.status {
            Some(TrialStatus::Running) => {
                let id = &s.trial.trial_id;
                let seen = Seen {
                    last: epochs.get(id),
                    step: steps.get(id),
                    started_ms: events.get(id).map(|e| e.started_ms),
                };
                let trial = running_trial(s, &seen, typical(model), now_ms);
                progress.running.push(trial);
            }
            None | Some(TrialStatus::Killed | TrialStatus::Interrupted | TrialStatus::Timeout) => {
                pending_s.push(typical(model));
            }
            _ => {}
        }
    }
    progress.pending = pending_s.len();
    let lefts: Option<Vec<f64>> = progress.running.iter().map(|r| r.left_s).collect();
    let pending: Option<Vec<f64>> = pending_s.into_iter().collect();
    progress.left_s = match (lefts, pending) {
        (Some(l), Some(p)) if !l.is_empty() => Some(schedule(l, &p)),
        _ => None,
    };
    progress
}

/// The key of [`finished_durations`] that pools all models.
const ALL_MODELS: &str = "";

/// Sum and count of the wall times (seconds) of finished trials, per model and pooled.
fn finished_durations(
    states: &[TrialState],
    events: &HashMap<String, TrialEvent>,
) -> BTreeMap<String, (f64, usize)> {
    let mut out: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for s in states
        .iter()
        .filter(|s| s.status == Some(TrialStatus::Finished))
    {
        let Some(e) = events.get(&s.trial.trial_id) else {
            continue;
        };
        let Some(end) = e.ended_ms else { continue };
        let secs = (end - e.started_ms).max(0) as f64 / 1000.0;
        for key in [s.trial.config.model.name(), ALL_MODELS] {
            let entry = out.entry(key.to_string()).or_default();
            entry.0 += secs;
            entry.1 += 1;
        }
    }
    out
}

/// What the store and the trial folder say of a running trial.
struct Seen<'a> {
    last: Option<&'a LastEpoch>,
    step: Option<&'a StepProgress>,
    started_ms: Option<i64>,
}

/// One running trial's progress (module doc).
fn running_trial(
    s: &TrialState,
    seen: &Seen,
    typical_s: Option<f64>,
    now_ms: i64,
) -> TrialProgress {
    let epochs = s.trial.config.driver().map_or(0, |d| d.epochs);
    let epoch = seen.last.map_or(0, |l| l.epoch);
    // The step counts only while it is in the epoch after the last finished one.
    let step = seen
        .step
        .filter(|p| p.epoch == epoch + 1 && p.steps > 0)
        .map(|p| (p.step.min(p.steps), p.steps));
    let in_epoch = step.map_or(0.0, |(d, n)| d as f64 / n as f64);
    let left_s = match seen.last {
        Some(l) if l.epoch > 0 && epochs > 0 && l.wall_s.is_finite() => {
            let left = f64::from(epochs.saturating_sub(l.epoch)) - in_epoch;
            Some(left.max(0.0) * l.wall_s / f64::from(l.epoch))
        }
        _ => typical_s.map(|t| {
            let elapsed = seen
                .started_ms
                .map_or(0.0, |s| (now_ms - s).max(0) as f64 / 1000.0);
            (t - elapsed).max(0.0)
        }),
    };
    TrialProgress {
        trial_id: s.trial.trial_id.clone(),
        epoch,
        step,
        epochs,
        score: seen.last.and_then(|l| latest_score(&l.val)),
        left_s,
    }
}

/// `dice_mean`, else the first `dice_*` value, else the first value.
fn latest_score(val: &[(String, f64)]) -> Option<(String, f64)> {
    val.iter()
        .find(|(m, _)| m == "dice_mean")
        .or_else(|| val.iter().find(|(m, _)| m.starts_with("dice_")))
        .or_else(|| val.first())
        .cloned()
}

/// Seconds until the last of `pending` (in order) ends when each goes to the worker that
/// frees first; the workers free after `running` seconds.
fn schedule(mut free: Vec<f64>, pending: &[f64]) -> f64 {
    for &p in pending {
        let (i, _) = free
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .expect("at least one worker");
        free[i] += p;
    }
    free.into_iter().fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_trials_go_to_the_worker_that_frees_first() {
        // Workers free after 360 s and 480 s; a 600 s trial goes to the first.
        assert_eq!(schedule(vec![360.0, 480.0], &[600.0]), 960.0);
        assert_eq!(schedule(vec![360.0, 480.0], &[600.0, 100.0]), 960.0);
        assert_eq!(schedule(vec![100.0], &[]), 100.0);
    }

    #[test]
    fn the_score_prefers_the_mean_dice() {
        let val = |v: &[(&str, f64)]| -> Vec<(String, f64)> {
            v.iter().map(|(m, x)| (m.to_string(), *x)).collect()
        };
        let s = latest_score(&val(&[
            ("dice_golgi", 0.2),
            ("dice_mean", 0.4),
            ("loss", 1.0),
        ]));
        assert_eq!(s, Some(("dice_mean".into(), 0.4)));
        let s = latest_score(&val(&[("loss", 1.0), ("dice_nuclei", 0.3)]));
        assert_eq!(s, Some(("dice_nuclei".into(), 0.3)));
        assert_eq!(
            latest_score(&val(&[("loss", 1.0)])),
            Some(("loss".into(), 1.0))
        );
        assert_eq!(latest_score(&[]), None);
    }
}
