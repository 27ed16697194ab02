//! [`MlflowMirror`]: the live mirror a running sweep feeds event by event.
//!
//! The mirror never fails the sweep (docs/design.md §5: the store is the source of truth
//! and MLflow an asynchronous mirror). A request that fails after its quick retries is logged
//! as a warning; when the server is unreachable the mirror stops trying for a while
//! ([`MlflowMirror::PAUSE_WHEN_DOWN`]), so a dead server costs the sweep seconds, not minutes,
//! and counts what it skipped. `seglab mlflow sync` fills every gap later from the store; the
//! runs the mirror creates are the very runs the sync finds again (same tags, same keys, same
//! timestamps: see [`super::mapping`]). Refused credentials or an untrusted certificate turn
//! the mirror off for the rest of the sweep with one warning: retrying cannot fix them.
//!
//! [`MirrorOptions`] is how every command that runs trials sets the mirror up.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::client::{
    Metric, MlflowClient, RetryPolicy, Run, is_settings_error, is_unreachable, params_to_log,
};
use super::mapping::{self, TAG_CHOSEN, TAG_TRIAL};
use super::sync::{self, Artifacts, Uploads};
use super::target::MlflowTarget;
use crate::experiment::paths::SweepPaths;
use crate::tracking::{EpochRow, Result, ResultRow, TimingRow, TrialEvent, TrialStatus};

/// What the mirror knows about one trial attempt.
struct AttemptState {
    event: TrialEvent,
    run: Option<Run>,
    /// Params already logged (sent once per run).
    params_done: bool,
    /// Results received so far (the per-class means are logged when the attempt ends).
    results: Vec<ResultRow>,
}

/// The live MLflow mirror of one sweep. Every method returns nothing: problems become warnings
/// and the later `seglab mlflow sync` repairs what was missed.
pub struct MlflowMirror {
    client: MlflowClient,
    experiment: String,
    sweep: String,
    paths: Option<SweepPaths>,
    experiment_id: Option<String>,
    parent: Option<Run>,
    attempts: HashMap<(String, u32), AttemptState>,
    artifacts: Artifacts,
    paused_until: Option<Instant>,
    /// Set by refused credentials or an untrusted certificate: nothing more is sent.
    off: bool,
    skipped: usize,
    failures: usize,
}

/// The `--mlflow-*` settings of a command that runs trials (`sweep run`, `sweep task`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MirrorOptions {
    /// The tracking server; no mirror when None.
    pub uri: Option<String>,
    /// A CA bundle for the server's certificate (else `MLFLOW_TRACKING_SERVER_CERT_PATH`).
    pub ca_bundle: Option<PathBuf>,
    pub artifacts: Artifacts,
}

impl MirrorOptions {
    /// The live mirror of `sweep` (its experiment has the sweep's name), or None without a
    /// URI. Credentials come from MLflow's variables. Errors only on settings that cannot work
    /// (a malformed address, half a login, an unreadable CA bundle), before any trial runs.
    pub fn open(&self, sweep: &str, paths: &SweepPaths) -> Result<Option<MlflowMirror>> {
        let Some(uri) = &self.uri else {
            return Ok(None);
        };
        let target = MlflowTarget::from_env(uri, self.ca_bundle.as_deref())?;
        let mirror = MlflowMirror::new(target, sweep, sweep, Some(paths.clone()))?;
        Ok(Some(mirror.with_artifacts(self.artifacts)))
    }

    /// The same settings as arguments of a worker's `seglab sweep task` (credentials travel in
    /// the inherited environment, never on a command line).
    pub fn worker_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        if let Some(uri) = &self.uri {
            args.extend(["--mlflow-uri".into(), uri.into()]);
        }
        if let Some(ca) = &self.ca_bundle {
            args.extend(["--mlflow-ca-bundle".into(), ca.into()]);
        }
        let artifacts = match self.artifacts {
            Artifacts::None => Some("none"),
            Artifacts::Files => None,
            Artifacts::Checkpoints => Some("checkpoints"),
        };
        if let Some(a) = artifacts {
            args.extend(["--mlflow-artifacts".into(), a.into()]);
        }
        args
    }
}

impl MlflowMirror {
    /// How long the mirror leaves an unreachable server alone before trying again.
    pub const PAUSE_WHEN_DOWN: Duration = Duration::from_secs(30);

    /// A mirror of `sweep` into the experiment `experiment` on the server of `target` (an
    /// address, or a [`MlflowTarget`] with CA bundle and credentials). Only settings that
    /// cannot work are an error (reported before the sweep starts); the server itself is
    /// contacted with the first event. `paths` (the sweep folder) enables uploads of trial
    /// files: predictions and figures (see [`MlflowMirror::with_artifacts`]).
    pub fn new(
        target: impl Into<MlflowTarget>,
        experiment: &str,
        sweep: &str,
        paths: Option<SweepPaths>,
    ) -> Result<Self> {
        Self::with_policy(target, experiment, sweep, paths, RetryPolicy::quick())
    }

    /// [`MlflowMirror::new`] with another retry policy.
    pub fn with_policy(
        target: impl Into<MlflowTarget>,
        experiment: &str,
        sweep: &str,
        paths: Option<SweepPaths>,
        policy: RetryPolicy,
    ) -> Result<Self> {
        Ok(MlflowMirror {
            client: MlflowClient::new(target, policy)?,
            experiment: experiment.to_string(),
            sweep: sweep.to_string(),
            paths,
            experiment_id: None,
            parent: None,
            attempts: HashMap::new(),
            artifacts: Artifacts::default(),
            paused_until: None,
            off: false,
            skipped: 0,
            failures: 0,
        })
    }

    /// The mirror uploading `artifacts` (with `Checkpoints`, each trial's best checkpoint too).
    pub fn with_artifacts(mut self, artifacts: Artifacts) -> Self {
        self.artifacts = artifacts;
        self
    }

    /// Events not mirrored because the server was unreachable or refused them (a later
    /// `seglab mlflow sync` sends them).
    pub fn missed(&self) -> usize {
        self.skipped + self.failures
    }

    /// A status event of a trial attempt (start, end).
    pub fn trial_event(&mut self, event: &TrialEvent) {
        let key = (event.trial_id.clone(), event.attempt);
        let state = self
            .attempts
            .entry(key.clone())
            .or_insert_with(|| AttemptState {
                event: event.clone(),
                run: None,
                params_done: false,
                results: Vec::new(),
            });
        state.event = event.clone();
        self.guarded(|m| m.push_event(&key));
    }

    /// Training-curve rows (any attempts that had a start event).
    pub fn epochs(&mut self, rows: &[EpochRow]) {
        for (key, rows) in group(rows, |r| (r.trial_id.clone(), r.attempt)) {
            self.log_on_run(&key, |started| mapping::epoch_metrics(&rows, started));
        }
    }

    /// Test-metric rows; the per-class means follow with the attempt's end event.
    pub fn results(&mut self, rows: &[ResultRow]) {
        for (key, rows) in group(rows, |r| (r.trial_id.clone(), r.attempt)) {
            if let Some(state) = self.attempts.get_mut(&key) {
                state.results.extend(rows.iter().cloned());
            }
            self.log_on_run(&key, |started| {
                mapping::dedup_points(mapping::result_metrics(&rows, started))
            });
        }
    }

    /// Phase timings.
    pub fn timings(&mut self, rows: &[TimingRow]) {
        for (key, rows) in group(rows, |r| (r.trial_id.clone(), r.attempt)) {
            self.log_on_run(&key, |started| mapping::timing_metrics(&rows, started));
        }
    }

    /// Uploads an ended attempt's `config.json` and trial files (predictions, figures).
    pub fn trial_files(&mut self, trial_id: &str, attempt: u32) {
        let key = (trial_id.to_string(), attempt);
        self.guarded(|m| {
            let Some(_) = m.run_for(&key)? else {
                return Ok(());
            };
            let state = &m.attempts[&key];
            let uploads = Uploads::choose(m.paths.as_ref(), m.artifacts);
            let desired = sync::desired_for_attempt(&state.event, "", true, &[], &[], &[], uploads);
            let run = state.run.as_ref().expect("run_for found it");
            sync::upload_missing(&m.client, &run.info, &desired.artifacts).map(|_| ())
        });
    }

    /// Finds or creates the sweep's parent run now, before any trial worker starts. Workers
    /// (`sweep task`, each with its own mirror) then find it instead of racing to create it:
    /// two creators that search, create and search again can each adopt a different run when
    /// one's second search happens before the other's run exists.
    pub fn start_sweep(&mut self) {
        self.guarded(|m| m.parent().map(|_| ()));
    }

    /// Marks the sweep's parent run ended: finished, or failed when `any_failed`.
    pub fn finish_sweep(&mut self, any_failed: bool, at_ms: i64) {
        self.guarded(|m| {
            let Some(parent) = m.parent()? else {
                return Ok(());
            };
            let status = if any_failed {
                super::RunStatus::Failed
            } else {
                super::RunStatus::Finished
            };
            m.client
                .update_run(&parent.info.run_id, status, Some(at_ms))
        });
        if self.missed() > 0 {
            tracing::warn!(
                "the MLflow mirror missed {} update(s); run `seglab mlflow sync` on the sweep folder to complete MLflow",
                self.missed()
            );
        }
    }

    /// Logs the metric points `points(started_ms)` of attempt `key` on its run; nothing for an
    /// attempt the mirror has seen no start event of ([`Self::run_for`]).
    fn log_on_run(&mut self, key: &(String, u32), points: impl FnOnce(i64) -> Vec<Metric>) {
        self.guarded(|m| {
            let Some(run_id) = m.run_for(key)? else {
                return Ok(());
            };
            let points = points(m.attempts[key].event.started_ms);
            m.client.log_batch(&run_id, &points, &[], &[]).map(|_| ())
        });
    }

    /// Runs one mirror step unless the mirror is off or paused; turns errors into warnings.
    fn guarded(&mut self, step: impl FnOnce(&mut Self) -> Result<()>) {
        if self.off {
            self.skipped += 1;
            return;
        }
        if let Some(until) = self.paused_until {
            if Instant::now() < until {
                self.skipped += 1;
                return;
            }
            self.paused_until = None;
        }
        if let Err(e) = step(self) {
            self.failures += 1;
            if is_settings_error(&e) {
                tracing::warn!(
                    "MLflow mirror: {e}; the mirror is off for this run (the store keeps everything: fix the setting, then run `seglab mlflow sync`)"
                );
                self.off = true;
            } else if is_unreachable(&e) {
                tracing::warn!(
                    "MLflow mirror: {e}; the sweep goes on (the store keeps everything) and the mirror retries in {} s",
                    Self::PAUSE_WHEN_DOWN.as_secs()
                );
                self.paused_until = Some(Instant::now() + Self::PAUSE_WHEN_DOWN);
            } else {
                tracing::warn!("MLflow mirror: {e}");
            }
        }
    }

    fn experiment_id(&mut self) -> Result<String> {
        if let Some(id) = &self.experiment_id {
            return Ok(id.clone());
        }
        let exp = self.client.get_or_create_experiment(&self.experiment)?;
        self.experiment_id = Some(exp.experiment_id.clone());
        Ok(exp.experiment_id)
    }

    fn parent(&mut self) -> Result<Option<Run>> {
        if let Some(p) = &self.parent {
            return Ok(Some(p.clone()));
        }
        let exp = self.experiment_id()?;
        let any = self.attempts.values().map(|s| s.event.clone()).next();
        let started = self
            .attempts
            .values()
            .map(|s| s.event.started_ms)
            .min()
            .unwrap_or_else(crate::tracking::now_ms);
        let parent = sync::get_or_create_run(
            &self.client,
            &exp,
            &mapping::parent_filter(&self.sweep),
            &mapping::sweep_identity(&self.sweep),
            &self.sweep,
            started,
            std::iter::empty(),
        )?;
        let tags: Vec<_> = mapping::sweep_tags(&self.sweep, any.as_ref())
            .into_iter()
            .filter(|t| parent.tag(&t.key) != Some(t.value.as_str()))
            .collect();
        self.client
            .log_batch(&parent.info.run_id, &[], &[], &tags)?;
        self.parent = Some(parent.clone());
        Ok(Some(parent))
    }

    /// The run of an attempt, found or created on first use; None for an attempt without a
    /// start event (rows of unknown attempts are left to the sync).
    fn run_for(&mut self, key: &(String, u32)) -> Result<Option<String>> {
        let Some(state) = self.attempts.get(key) else {
            tracing::debug!(
                "MLflow mirror: rows of {} a{} before its start event",
                key.0,
                key.1
            );
            return Ok(None);
        };
        if let Some(run) = &state.run {
            return Ok(Some(run.info.run_id.clone()));
        }
        let event = state.event.clone();
        let exp = self.experiment_id()?;
        let parent = self.parent()?.expect("created above");
        let run = sync::get_or_create_run(
            &self.client,
            &exp,
            &mapping::attempt_filter(&self.sweep, &event.trial_id, event.attempt),
            &mapping::attempt_identity(&event, &parent.info.run_id),
            &mapping::run_name(&event),
            event.started_ms,
            std::iter::empty(),
        )?;
        // A new attempt is the one that counts now: earlier attempts' runs lose the mark.
        let filter = format!(
            "{} and tags.`{TAG_TRIAL}` = '{}' and tags.`{TAG_CHOSEN}` = 'true'",
            mapping::sweep_filter(&self.sweep),
            event.trial_id
        );
        for other in self.client.search_runs(&[&exp], &filter)? {
            if other.info.run_id != run.info.run_id {
                self.client
                    .set_tag(&other.info.run_id, TAG_CHOSEN, "false")?;
            }
        }
        let id = run.info.run_id.clone();
        if let Some(state) = self.attempts.get_mut(key) {
            state.run = Some(run);
        }
        Ok(Some(id))
    }

    fn push_event(&mut self, key: &(String, u32)) -> Result<()> {
        let Some(run_id) = self.run_for(key)? else {
            return Ok(());
        };
        let parent_id = self.parent()?.map(|p| p.info.run_id).unwrap_or_default();
        let state = self.attempts.get(key).expect("run_for found it");
        let ev = state.event.clone();
        let run = state.run.clone().expect("run_for set it");
        let params = if state.params_done {
            Vec::new()
        } else {
            params_to_log(&run_id, &run.data.params, &mapping::trial_params(&ev))?
        };
        let tags = mapping::trial_tags(&ev, &parent_id, true);
        let means = if ev.status == TrialStatus::Finished {
            mapping::result_means(&state.results, ev.started_ms)
        } else {
            Vec::new()
        };
        self.client.log_batch(&run_id, &means, &params, &tags)?;
        if let Some(state) = self.attempts.get_mut(key) {
            state.params_done = true;
        }
        if ev.status.is_terminal() {
            self.client.update_run(
                &run_id,
                mapping::run_status(ev.status),
                mapping::end_time(&ev),
            )?;
        }
        Ok(())
    }
}

fn group<T: Clone>(rows: &[T], key: impl Fn(&T) -> (String, u32)) -> Vec<((String, u32), Vec<T>)> {
    let mut out: Vec<((String, u32), Vec<T>)> = Vec::new();
    for r in rows {
        let k = key(r);
        match out.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(r.clone()),
            None => out.push((k, vec![r.clone()])),
        }
    }
    out
}
