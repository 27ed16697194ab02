//! `seglab mlflow sync`: replays a store into MLflow, idempotently.
//!
//! The store is the source of truth (docs/design.md §5). For every trial attempt the
//! replay works out what MLflow should hold (params, tags, metric points, status, artifacts; see
//! [`super::mapping`]), finds the attempt's run by its tags or creates it, and sends only what is
//! missing: params not yet logged (a different logged value is an error, never overwritten),
//! metric points whose (key, step) the run lacks, changed tags, missing artifacts, the status.
//! Finally it stamps the run with a digest of that desired state; a later replay skips runs whose
//! digest matches, so running it twice creates no duplicate runs or metric points and costs one
//! search request when nothing changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::experiment::paths::{SweepPaths, report_dir};

use sha2::{Digest, Sha256};

use super::client::{
    Metric, MlflowClient, Param, Run, RunInfo, RunStatus, Tag, is_settings_error, is_unreachable,
    params_to_log, same_metric_value,
};
use super::mapping::{self, TAG_ATTEMPT, TAG_DIGEST, TAG_KIND, TAG_TRIAL};
use crate::tracking::{
    EpochRow, Result, ResultRow, Store, Table, TimingRow, TrackingError, TrialEvent, TrialStatus,
};

/// Options of a replay.
#[derive(Clone, Debug, Default)]
pub struct SyncOptions {
    /// MLflow experiment name; default: the sweep name.
    pub experiment: Option<String>,
    /// The sweep folder whose trial folders hold the files to upload (predictions, figures,
    /// checkpoints); None uploads only each attempt's `config.json` (taken from the store).
    pub sweep_paths: Option<SweepPaths>,
    /// Which files go to the runs.
    pub artifacts: Artifacts,
    /// The sweep's report folder (`seglab report`), uploaded to the sweep's run under `report/`.
    pub report: Option<PathBuf>,
    /// Where `reports/<sweep>/` is looked for when `report` is None (`seglab report` writes it
    /// under the working folder); nothing is looked for when both are None.
    pub reports_root: Option<PathBuf>,
}

/// Which files the MLflow runs get (`--mlflow-artifacts`, `mlflow sync --artifacts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Artifacts {
    /// No files.
    None,
    /// Each attempt's `config.json`; the chosen attempt's predictions and figures; the sweep's
    /// report.
    #[default]
    Files,
    /// `Files` and each chosen attempt's best checkpoint (weights only).
    Checkpoints,
}

impl std::str::FromStr for Artifacts {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Artifacts::None),
            "files" => Ok(Artifacts::Files),
            "checkpoints" => Ok(Artifacts::Checkpoints),
            other => Err(format!(
                "{other:?} is not an artifact choice (none, files or checkpoints)"
            )),
        }
    }
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncReport {
    pub experiment_ids: Vec<String>,
    pub attempts: usize,
    pub runs_created: usize,
    pub runs_up_to_date: usize,
    pub runs_updated: usize,
    pub metrics_logged: usize,
    pub params_logged: usize,
    pub artifacts_uploaded: usize,
    /// Attempts that could not be mirrored (the replay continues with the others).
    pub failures: Vec<SyncFailure>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SyncFailure {
    pub trial_id: String,
    pub attempt: u32,
    pub error: String,
}

/// Everything MLflow should hold for one run.
pub(crate) struct Desired {
    pub params: Vec<Param>,
    pub tags: Vec<Tag>,
    pub metrics: Vec<Metric>,
    pub status: RunStatus,
    pub end_time: Option<i64>,
    pub artifacts: Vec<Artifact>,
}

/// One artifact to upload: its path in the run and where its bytes come from.
pub(crate) struct Artifact {
    pub path: String,
    pub source: ArtifactSource,
    pub size: u64,
}

pub(crate) enum ArtifactSource {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl Desired {
    /// A digest of the desired state; equal digests mean nothing to send.
    fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"seglab-mlflow-sync-v1\n");
        let mut params = self.params.clone();
        params.sort();
        for p in &params {
            h.update(format!("p\t{}\t{}\n", p.key, p.value));
        }
        let mut tags: Vec<&Tag> = self.tags.iter().filter(|t| t.key != TAG_DIGEST).collect();
        tags.sort();
        for t in tags {
            h.update(format!("t\t{}\t{}\n", t.key, t.value));
        }
        let mut points: Vec<(&str, i64, u64)> = self
            .metrics
            .iter()
            .map(|m| (m.key.as_str(), m.step, m.value.to_bits()))
            .collect();
        points.sort();
        for (k, s, v) in points {
            h.update(format!("m\t{k}\t{s}\t{v:x}\n"));
        }
        h.update(format!(
            "s\t{}\t{:?}\n",
            self.status.as_str(),
            self.end_time
        ));
        for a in &self.artifacts {
            h.update(format!("a\t{}\t{}\n", a.path, a.size));
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Replays every attempt of the store into MLflow (one experiment per sweep unless
/// `options.experiment` names one). Fails when the server is unreachable; per-attempt
/// problems (a param conflict, a refused request) are listed in the report and the replay goes
/// on.
pub fn sync_store(
    store: &Store,
    client: &MlflowClient,
    options: &SyncOptions,
) -> Result<SyncReport> {
    let attempts = TrialEvent::from_frame(&store.attempts()?)?;
    let chosen: HashSet<(String, u32)> = {
        let df = store.chosen_trials()?;
        TrialEvent::from_frame(&df)?
            .into_iter()
            .map(|e| (e.trial_id, e.attempt))
            .collect()
    };
    let epochs = by_attempt(EpochRow::from_frame(&store.read(Table::Epochs)?)?, |r| {
        (r.trial_id.clone(), r.attempt)
    });
    let results = by_attempt(ResultRow::from_frame(&store.read(Table::Results)?)?, |r| {
        (r.trial_id.clone(), r.attempt)
    });
    let timings = by_attempt(TimingRow::from_frame(&store.read(Table::Timings)?)?, |r| {
        (r.trial_id.clone(), r.attempt)
    });

    let mut sweeps: BTreeMap<&str, Vec<&TrialEvent>> = BTreeMap::new();
    for ev in &attempts {
        sweeps.entry(ev.sweep.as_str()).or_default().push(ev);
    }
    let mut report = SyncReport {
        attempts: attempts.len(),
        ..SyncReport::default()
    };
    for (sweep, events) in sweeps {
        validate_sweep_name(sweep)?;
        let name = options.experiment.as_deref().unwrap_or(sweep);
        let exp = client.get_or_create_experiment(name)?;
        report.experiment_ids.push(exp.experiment_id.clone());
        let existing = client.search_runs(&[&exp.experiment_id], &mapping::sweep_filter(sweep))?;
        let parent = get_or_create_run(
            client,
            &exp.experiment_id,
            &mapping::parent_filter(sweep),
            &mapping::sweep_identity(sweep),
            sweep,
            events.iter().map(|e| e.started_ms).min().unwrap_or(0),
            existing
                .iter()
                .filter(|r| r.tag(TAG_KIND) == Some(mapping::KIND_SWEEP)),
        )?;
        let mut runs: HashMap<(String, u32), Vec<&Run>> = HashMap::new();
        for r in existing
            .iter()
            .filter(|r| r.tag(TAG_KIND) == Some(mapping::KIND_TRIAL))
        {
            if let (Some(t), Some(Ok(a))) = (r.tag(TAG_TRIAL), r.tag(TAG_ATTEMPT).map(str::parse)) {
                runs.entry((t.to_string(), a)).or_default().push(r);
            }
        }
        for ev in &events {
            let key = (ev.trial_id.clone(), ev.attempt);
            let is_chosen = chosen.contains(&key);
            let desired = desired_for_attempt(
                ev,
                &parent.info.run_id,
                is_chosen,
                epochs.get(&key).map_or(&[][..], Vec::as_slice),
                results.get(&key).map_or(&[][..], Vec::as_slice),
                timings.get(&key).map_or(&[][..], Vec::as_slice),
                Uploads::choose(options.sweep_paths.as_ref(), options.artifacts),
            );
            let found = runs.get(&key).map(|v| v.as_slice()).unwrap_or(&[]);
            match sync_attempt(
                client,
                &exp.experiment_id,
                ev,
                &parent.info.run_id,
                found,
                &desired,
                &mut report,
            ) {
                Ok(()) => {}
                Err(e) if is_unreachable(&e) || is_settings_error(&e) => return Err(e),
                Err(e) => {
                    tracing::warn!("trial {} attempt {}: {e}", ev.trial_id, ev.attempt);
                    report.failures.push(SyncFailure {
                        trial_id: ev.trial_id.clone(),
                        attempt: ev.attempt,
                        error: e.to_string(),
                    });
                }
            }
        }
        let report_files = match options.artifacts {
            Artifacts::None => Vec::new(),
            _ => report_folder(options, sweep).map_or_else(Vec::new, |d| files_under(&d, "report")),
        };
        sync_parent(client, &parent, sweep, &events, &chosen, report_files)?;
    }
    Ok(report)
}

/// Sweep names end up inside MLflow filter strings and experiment names.
fn validate_sweep_name(sweep: &str) -> Result<()> {
    if sweep.is_empty() || sweep.contains(['\'', '`', '"', '\\']) {
        return Err(TrackingError::InvalidName {
            what: "sweep name",
            value: sweep.to_string(),
            expected: "a non-empty name without quotes or backslashes",
        });
    }
    Ok(())
}

fn by_attempt<T>(
    rows: Vec<T>,
    key: impl Fn(&T) -> (String, u32),
) -> HashMap<(String, u32), Vec<T>> {
    let mut map: HashMap<(String, u32), Vec<T>> = HashMap::new();
    for r in rows {
        map.entry(key(&r)).or_default().push(r);
    }
    map
}

/// The report folder of `sweep` to upload, if there is one.
fn report_folder(options: &SyncOptions, sweep: &str) -> Option<PathBuf> {
    options
        .report
        .clone()
        .or_else(|| options.reports_root.as_ref().map(|r| report_dir(r, sweep)))
        .filter(|d| d.is_dir())
}

/// Which artifacts a run gets.
#[derive(Clone, Copy)]
pub(crate) enum Uploads<'a> {
    Nothing,
    /// The attempt's `config.json` (from the store).
    ConfigOnly,
    /// `config.json` and, for the chosen attempt once ended, its trial folder's files (with
    /// the best checkpoint when `checkpoints`).
    WithTrialFiles {
        paths: &'a SweepPaths,
        checkpoints: bool,
    },
}

impl<'a> Uploads<'a> {
    /// What `artifacts` asks for, given the sweep folder when it is known.
    pub(crate) fn choose(paths: Option<&'a SweepPaths>, artifacts: Artifacts) -> Self {
        match (paths, artifacts) {
            (_, Artifacts::None) => Uploads::Nothing,
            (None, _) => Uploads::ConfigOnly,
            (Some(paths), a) => Uploads::WithTrialFiles {
                paths,
                checkpoints: a == Artifacts::Checkpoints,
            },
        }
    }
}

/// What MLflow should hold for one attempt.
#[allow(clippy::too_many_arguments)]
pub(crate) fn desired_for_attempt(
    ev: &TrialEvent,
    parent_run_id: &str,
    chosen: bool,
    epochs: &[EpochRow],
    results: &[ResultRow],
    timings: &[TimingRow],
    uploads: Uploads<'_>,
) -> Desired {
    let mut metrics = mapping::epoch_metrics(epochs, ev.started_ms);
    metrics.extend(mapping::result_metrics(results, ev.started_ms));
    metrics.extend(mapping::result_means(results, ev.started_ms));
    metrics.extend(mapping::timing_metrics(timings, ev.started_ms));
    let mut files = Vec::new();
    if !matches!(uploads, Uploads::Nothing) {
        if !ev.config_json.is_empty() {
            let bytes = ev.config_json.as_bytes().to_vec();
            files.push(Artifact {
                path: "config.json".to_string(),
                size: bytes.len() as u64,
                source: ArtifactSource::Bytes(bytes),
            });
        }
        // The trial folder holds the files of the latest attempt; they belong to the run of the
        // chosen attempt once it has ended.
        if let Uploads::WithTrialFiles { paths, checkpoints } = uploads
            && chosen
            && ev.status.is_terminal()
        {
            files.extend(trial_files(paths, &ev.trial_id, checkpoints));
        }
    }
    Desired {
        params: mapping::trial_params(ev),
        tags: mapping::trial_tags(ev, parent_run_id, chosen),
        metrics: mapping::dedup_points(metrics),
        status: mapping::run_status(ev.status),
        end_time: mapping::end_time(ev),
        artifacts: files,
    }
}

/// The files of a trial's `predictions/` and `figures/` folders (and `checkpoint_best/` when
/// `checkpoints`), with paths relative to the trial folder.
pub(crate) fn trial_files(paths: &SweepPaths, trial_id: &str, checkpoints: bool) -> Vec<Artifact> {
    let dir = paths.trial(trial_id);
    let mut subs = vec![
        paths.trial_predictions(trial_id),
        paths.trial_figures(trial_id),
    ];
    if checkpoints {
        subs.push(paths.trial_paths(trial_id).checkpoint_best());
    }
    let mut out: Vec<Artifact> = subs
        .iter()
        .filter_map(|sub| {
            let name = sub.strip_prefix(&dir).ok()?.to_string_lossy().into_owned();
            Some(files_under(sub, &name))
        })
        .flatten()
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Every file under `dir` (hidden names, i.e. files still being written, left out), as
/// artifacts at `prefix/<path relative to dir>`; nothing when `dir` does not exist.
pub(crate) fn files_under(dir: &Path, prefix: &str) -> Vec<Artifact> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            } else if meta.is_dir() {
                todo.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(Artifact {
                    path: format!("{prefix}/{}", rel.join("/")),
                    size: meta.len(),
                    source: ArtifactSource::File(path),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Finds the run matching `filter` among `known` (or on the server), creating it when absent.
/// Safe against a parallel creator: after creating, the runs are searched again and the oldest
/// (earliest start, then smallest id) wins everywhere; a losing duplicate is deleted.
pub(crate) fn get_or_create_run<'a>(
    client: &MlflowClient,
    experiment_id: &str,
    filter: &str,
    identity: &[Tag],
    run_name: &str,
    start_time: i64,
    known: impl Iterator<Item = &'a Run>,
) -> Result<Run> {
    if let Some(r) = oldest(known.cloned().collect()) {
        return Ok(r);
    }
    if let Some(r) = oldest(client.search_runs(&[experiment_id], filter)?) {
        return Ok(r);
    }
    let created = client.create_run(experiment_id, run_name, start_time, identity)?;
    let winner = oldest(client.search_runs(&[experiment_id], filter)?).unwrap_or(created.clone());
    if winner.info.run_id != created.info.run_id {
        tracing::debug!(
            "run {} lost a creation race to {}; deleting it",
            created.info.run_id,
            winner.info.run_id
        );
        client.delete_run(&created.info.run_id)?;
    }
    Ok(winner)
}

fn oldest(mut runs: Vec<Run>) -> Option<Run> {
    runs.sort_by(|a, b| {
        (a.info.start_time.unwrap_or(i64::MAX), &a.info.run_id)
            .cmp(&(b.info.start_time.unwrap_or(i64::MAX), &b.info.run_id))
    });
    runs.into_iter().next()
}

fn sync_attempt(
    client: &MlflowClient,
    experiment_id: &str,
    ev: &TrialEvent,
    parent_run_id: &str,
    found: &[&Run],
    desired: &Desired,
    report: &mut SyncReport,
) -> Result<()> {
    let digest = desired.digest();
    let created;
    let run = if found.is_empty() {
        created = get_or_create_run(
            client,
            experiment_id,
            &mapping::attempt_filter(&ev.sweep, &ev.trial_id, ev.attempt),
            &mapping::attempt_identity(ev, parent_run_id),
            &mapping::run_name(ev),
            ev.started_ms,
            std::iter::empty(),
        )?;
        report.runs_created += 1;
        &created
    } else {
        if found.len() > 1 {
            tracing::warn!(
                "trial {} attempt {} has {} MLflow runs; using the oldest",
                ev.trial_id,
                ev.attempt,
                found.len()
            );
        }
        let r = oldest(found.iter().map(|r| (*r).clone()).collect()).expect("not empty");
        if r.tag(TAG_DIGEST) == Some(digest.as_str()) {
            report.runs_up_to_date += 1;
            return Ok(());
        }
        report.runs_updated += 1;
        created = r;
        &created
    };
    let sent = push_run(client, run, desired)?;
    report.metrics_logged += sent.metrics;
    report.params_logged += sent.params;
    report.artifacts_uploaded += sent.artifacts;
    client.set_tag(&run.info.run_id, TAG_DIGEST, &digest)
}

/// What [`push_run`] sent.
#[derive(Default)]
pub(crate) struct Sent {
    pub metrics: usize,
    pub params: usize,
    pub artifacts: usize,
}

/// Brings one run to the desired state, sending only what it lacks.
pub(crate) fn push_run(client: &MlflowClient, run: &Run, desired: &Desired) -> Result<Sent> {
    let run_id = &run.info.run_id;
    let params = params_to_log(run_id, &run.data.params, &desired.params)?;
    let tags: Vec<Tag> = desired
        .tags
        .iter()
        .filter(|t| run.tag(&t.key) != Some(t.value.as_str()))
        .cloned()
        .collect();
    let metrics = missing_points(client, run, &desired.metrics)?;
    client.log_batch(run_id, &metrics, &params, &tags)?;
    let artifacts = upload_missing(client, &run.info, &desired.artifacts)?;
    if run.info.status != desired.status.as_str() || run.info.end_time != desired.end_time {
        client.update_run(run_id, desired.status, desired.end_time)?;
    }
    Ok(Sent {
        metrics: metrics.len(),
        params: params.len(),
        artifacts,
    })
}

/// The desired points whose (key, step) the run does not have yet. Keys the run has never seen
/// need no history request.
fn missing_points(client: &MlflowClient, run: &Run, desired: &[Metric]) -> Result<Vec<Metric>> {
    let known: HashSet<&str> = run.data.metrics.iter().map(|m| m.key.as_str()).collect();
    let mut by_key: BTreeMap<&str, Vec<&Metric>> = BTreeMap::new();
    for m in desired {
        by_key.entry(m.key.as_str()).or_default().push(m);
    }
    let mut out = Vec::new();
    for (key, points) in by_key {
        if !known.contains(key) {
            out.extend(points.into_iter().cloned());
            continue;
        }
        let history = client.metric_history(&run.info.run_id, key)?;
        let have: HashMap<i64, f64> = history.iter().map(|m| (m.step, m.value)).collect();
        for p in points {
            match have.get(&p.step) {
                None => out.push(p.clone()),
                Some(&v) if !same_metric_value(v, p.value) => tracing::warn!(
                    "run {}: metric {key} step {} is {v} in MLflow but {} in the store; MLflow metrics cannot be replaced",
                    run.info.run_id,
                    p.step,
                    p.value
                ),
                Some(_) => {}
            }
        }
    }
    Ok(out)
}

/// Uploads the artifacts the run lacks (missing, or another size).
pub(crate) fn upload_missing(
    client: &MlflowClient,
    run: &RunInfo,
    artifacts: &[Artifact],
) -> Result<usize> {
    if artifacts.is_empty() {
        return Ok(0);
    }
    let mut have: HashMap<String, Option<i64>> = HashMap::new();
    let mut dirs: Vec<&str> = artifacts
        .iter()
        .map(|a| a.path.rsplit_once('/').map_or("", |(d, _)| d))
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        for f in client.list_artifacts(&run.run_id, d)? {
            have.insert(f.path, f.file_size);
        }
    }
    let mut uploaded = 0;
    for a in artifacts {
        if have.get(&a.path) == Some(&Some(a.size as i64)) {
            continue;
        }
        let bytes = match &a.source {
            ArtifactSource::Bytes(b) => std::borrow::Cow::Borrowed(b.as_slice()),
            ArtifactSource::File(p) => {
                std::borrow::Cow::Owned(std::fs::read(p).map_err(|e| TrackingError::io(p, e))?)
            }
        };
        client.upload_artifact(run, &a.path, &bytes)?;
        uploaded += 1;
    }
    Ok(uploaded)
}

/// The parent run's status: running while any chosen attempt runs, failed when any chosen
/// attempt did not finish, else finished; ended at the last attempt's end.
fn sync_parent(
    client: &MlflowClient,
    parent: &Run,
    sweep: &str,
    events: &[&TrialEvent],
    chosen: &HashSet<(String, u32)>,
    report_files: Vec<Artifact>,
) -> Result<()> {
    let chosen_events: Vec<&&TrialEvent> = events
        .iter()
        .filter(|e| chosen.contains(&(e.trial_id.clone(), e.attempt)))
        .collect();
    let status = if chosen_events
        .iter()
        .any(|e| e.status == TrialStatus::Running)
    {
        RunStatus::Running
    } else if chosen_events
        .iter()
        .all(|e| e.status == TrialStatus::Finished)
    {
        RunStatus::Finished
    } else {
        RunStatus::Failed
    };
    let end_time = (status != RunStatus::Running)
        .then(|| {
            chosen_events
                .iter()
                .filter_map(|e| mapping::end_time(e))
                .max()
        })
        .flatten();
    let desired = Desired {
        params: Vec::new(),
        tags: mapping::sweep_tags(sweep, events.first().copied()),
        metrics: Vec::new(),
        status,
        end_time,
        artifacts: report_files,
    };
    let digest = desired.digest();
    if parent.tag(TAG_DIGEST) == Some(digest.as_str()) {
        return Ok(());
    }
    push_run(client, parent, &desired)?;
    client.set_tag(&parent.info.run_id, TAG_DIGEST, &digest)
}
