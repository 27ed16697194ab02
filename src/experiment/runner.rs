//! The local sweep runner (docs/sweeps.md): [`run_sweep`] runs the pending
//! trials of a sweep, each in its own worker process (`seglab sweep task SPEC --trial ID`,
//! isolation from crashes and memory growth), `jobs` at once; [`run_task`] is what a worker
//! does (also a SLURM array task): one attempt of one trial, written to the store as it goes.
//!
//! The store is the record and the only channel between the two (tracking module doc):
//!
//! - A worker numbers its attempt after the highest one in the store, writes `running`, feeds
//!   rows to the store (and the MLflow mirror) through [`StoreSink`], and ends with one
//!   terminal event: `finished`, `failed` (with the error; panics included), `killed` (stopped
//!   by SIGTERM/SIGINT: Ctrl-C; it checkpointed first) or `interrupted` (stopped by SIGUSR1: a
//!   SLURM preemption or time limit; it checkpointed first).
//! - The parent skips trials whose chosen attempt is `finished`, and `failed` ones unless
//!   `retry_failed`; `killed` and `interrupted` ones run again as a new attempt that resumes
//!   from `checkpoint_latest`. A worker that exits without a terminal event gets one from the
//!   parent: `killed` when the sweep was being stopped, else `failed` with its exit status or
//!   signal. At start, the parent marks `interrupted` the attempts a dead earlier run left
//!   `running` on this host (a `kill -9` of the whole sweep, a reboot); one local runner per
//!   sweep at a time (a lock file in the store folder) makes that safe.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::ExperimentError;
use super::paths::SweepPaths;
use super::preflight::Preflight;
use super::provenance::Provenance;
use super::prune::Pruner;
use super::spec::SweepSpec;
use super::trial::{Trial, expand};
use crate::tracking::mlflow::MlflowMirror;
use crate::tracking::{
    EpochRow, ResultRow, Store, TimingRow, TrialEvent, TrialStatus, hostname, now_ms,
};
use crate::train::{
    PruneDecision, StopFlag, TrainError, TrialContext, TrialOutcome, TrialSink, run_trial,
};

/// How long stopped workers get to checkpoint before they are killed.
pub const STOP_GRACE: Duration = Duration::from_secs(60);

/// How often the parent looks at its workers.
const POLL: Duration = Duration::from_millis(100);

/// Options of [`run_sweep`].
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The sweep folder (see [`SweepSpec::sweep_dir`]).
    pub sweep_dir: PathBuf,
    /// Workers at once (≥ 1).
    pub jobs: usize,
    pub retry_failed: bool,
    pub mlflow_uri: Option<String>,
    /// The devices the workers run on (`cpu`, `wgpu:N` or `cuda:N`; at least one): each new
    /// worker takes the one the fewest running workers use, so with `jobs` ≤ the number of
    /// devices every worker has a device of its own.
    pub devices: Vec<String>,
    /// The seglab executable that runs workers (normally the running one).
    pub exe: PathBuf,
    /// Show a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Run only the trials with these ids (`--filter`); all of them when `None`.
    pub only: Option<std::collections::BTreeSet<String>>,
    /// Run without the spec's `[prune]` (`--no-prune`): pruned trials resume and run to the end.
    pub no_prune: bool,
}

/// What [`run_sweep`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepSummary {
    pub trials: usize,
    /// Finished before this run started.
    pub already_finished: usize,
    /// Failed before and left alone (no `retry_failed`).
    pub skipped_failed: usize,
    pub finished: usize,
    pub failed: usize,
    /// Stopped by Ctrl-C / SIGTERM (resumable).
    pub killed: usize,
    /// Stopped by `train.max_minutes` (resumable).
    pub timed_out: usize,
    /// Pruned now, and before this run (left alone).
    pub pruned: usize,
    pub already_pruned: usize,
    /// True when the run was stopped before all trials ran.
    pub stopped: bool,
}

impl SweepSummary {
    /// Trials whose chosen attempt is failed (before or now).
    pub fn any_failed(&self) -> bool {
        self.failed + self.skipped_failed > 0
    }
}

/// Per trial: the latest event of its highest attempt, and of its chosen attempt.
fn latest_by_trial(store: &Store) -> Result<HashMap<String, TrialEvent>, ExperimentError> {
    let events = TrialEvent::from_frame(&store.attempts()?)?;
    let mut out: HashMap<String, TrialEvent> = HashMap::new();
    for e in events {
        match out.get(&e.trial_id) {
            Some(prev) if prev.attempt >= e.attempt => {}
            _ => {
                out.insert(e.trial_id.clone(), e);
            }
        }
    }
    Ok(out)
}

/// The status of each trial's chosen attempt (the canonical view).
fn chosen_status(store: &Store) -> Result<HashMap<String, TrialStatus>, ExperimentError> {
    Ok(TrialEvent::from_frame(&store.chosen_trials()?)?
        .into_iter()
        .map(|e| (e.trial_id, e.status))
        .collect())
}

/// The trials of a sweep that still have to run, split from those left alone.
#[derive(Debug)]
pub struct Pending<'a> {
    /// In spec order: never started, killed, interrupted, still `running`, and failed ones
    /// when `retry_failed`.
    pub to_run: Vec<&'a Trial>,
    /// Chosen attempt finished.
    pub already_finished: usize,
    /// Chosen attempt failed and `retry_failed` not set.
    pub skipped_failed: usize,
    /// Chosen attempt pruned and pruning on.
    pub already_pruned: usize,
}

/// Which of `trials` still have to run, by the status of their chosen attempt in `store`. The
/// one rule behind `sweep run` and the manifest of `sweep slurm`, so both skip the same trials.
/// Pruned trials run again (resumed) only when `rerun_pruned` (pruning off).
pub fn pending_trials<'a>(
    trials: &'a [Trial],
    store: &Store,
    retry_failed: bool,
    rerun_pruned: bool,
) -> Result<Pending<'a>, ExperimentError> {
    let status = chosen_status(store)?;
    let mut pending = Pending {
        to_run: Vec::new(),
        already_finished: 0,
        skipped_failed: 0,
        already_pruned: 0,
    };
    for t in trials {
        match status.get(&t.trial_id) {
            Some(TrialStatus::Finished) => pending.already_finished += 1,
            Some(TrialStatus::Failed) if !retry_failed => pending.skipped_failed += 1,
            Some(TrialStatus::Pruned) if !rerun_pruned => pending.already_pruned += 1,
            _ => pending.to_run.push(t),
        }
    }
    Ok(pending)
}

/// Runs the pending trials of `spec` (see the module doc). Returns when every trial ran or
/// the run was stopped (SIGINT/SIGTERM to this process).
pub fn run_sweep(spec: &SweepSpec, opts: &RunOptions) -> Result<SweepSummary, ExperimentError> {
    let mut trials = expand(spec)?;
    if let Some(only) = &opts.only {
        trials.retain(|t| only.contains(&t.trial_id));
    }
    let paths = SweepPaths::new(&opts.sweep_dir);
    let store = Store::create(paths.store())?;
    let _lock = SweepLock::acquire(&paths.store())?;
    let mut mirror = open_mirror(opts.mlflow_uri.as_deref(), spec, &paths)?;
    mark_dead_attempts(&store, mirror.as_mut())?;
    if let Some(m) = mirror.as_mut() {
        m.start_sweep();
    }
    let prov = Provenance::collect(spec.file.parent().unwrap_or(Path::new("")));

    let pending = pending_trials(&trials, &store, opts.retry_failed, opts.no_prune)?;
    let mut summary = SweepSummary {
        trials: trials.len(),
        already_finished: pending.already_finished,
        skipped_failed: pending.skipped_failed,
        already_pruned: pending.already_pruned,
        ..Default::default()
    };
    let mut queue: Vec<&Trial> = pending.to_run;
    queue.reverse(); // pop() takes them in spec order

    let stopping = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        signal_hook::flag::register(sig, stopping.clone()).map_err(|source| {
            ExperimentError::Io {
                path: PathBuf::from("<signal handler>"),
                source,
            }
        })?;
    }
    let progress = Progress::new(opts.progress, &summary, queue.len(), &trials);
    let mut running: Vec<Worker> = Vec::new();
    let mut stop_sent: Option<Instant> = None;
    let jobs = opts.jobs.max(1);
    loop {
        if stopping.load(Ordering::SeqCst) && stop_sent.is_none() {
            summary.stopped = true;
            stop_sent = Some(Instant::now());
            progress.note(&format!(
                "stopping: asking {} running trial(s) to checkpoint",
                running.len()
            ));
            for w in &running {
                signal(&w.child, libc::SIGTERM);
            }
        }
        if let Some(at) = stop_sent
            && at.elapsed() > STOP_GRACE
        {
            for w in &running {
                signal(&w.child, libc::SIGKILL);
            }
        }
        while stop_sent.is_none() && running.len() < jobs {
            let Some(trial) = queue.pop() else { break };
            let device = free_device(&opts.devices, running.iter().map(|w| w.device.as_str()));
            running.push(spawn_worker(spec, opts, &paths, trial, device)?);
        }
        if running.is_empty() {
            break;
        }
        let mut i = 0;
        while i < running.len() {
            let exited = running[i]
                .child
                .try_wait()
                .map_err(|source| ExperimentError::Io {
                    path: opts.exe.clone(),
                    source,
                })?;
            let Some(exit) = exited else {
                i += 1;
                continue;
            };
            let w = running.swap_remove(i);
            let end = settle(
                &store,
                &w,
                exit,
                stop_sent.is_some(),
                mirror.as_mut(),
                &prov,
            )?;
            match end {
                TrialStatus::Finished => summary.finished += 1,
                TrialStatus::Failed => summary.failed += 1,
                TrialStatus::Timeout => summary.timed_out += 1,
                TrialStatus::Pruned => summary.pruned += 1,
                _ => summary.killed += 1,
            }
            let dice = if end == TrialStatus::Finished {
                mean_dice(&store, &w.trial.trial_id)?
            } else {
                Vec::new()
            };
            let ended = EndedTrial {
                trial: &w.trial,
                status: end,
                seconds: (now_ms() - w.started_ms) as f64 / 1000.0,
                dice,
                left: queue.len() + running.len(),
            };
            progress.trial_ended(&ended, &summary, running.len());
        }
        progress.tick(&summary, running.len());
        std::thread::sleep(POLL);
    }
    progress.finish(&summary);
    if let Some(m) = mirror.as_mut() {
        let failed = summary.any_failed();
        if !summary.stopped {
            m.finish_sweep(failed, now_ms());
        }
    }
    Ok(summary)
}

/// One running worker process.
struct Worker {
    trial: Trial,
    child: Child,
    /// The highest attempt of the trial in the store before the worker started.
    prev_attempt: u32,
    started_ms: i64,
    /// The `--device` the worker runs on.
    device: String,
}

/// The device of `devices` the fewest running workers use (`in_use`: one entry per running
/// worker), the first of those on a tie.
fn free_device<'a>(devices: &[String], in_use: impl Iterator<Item = &'a str> + Clone) -> String {
    let users = |d: &String| in_use.clone().filter(|u| u == d).count();
    devices
        .iter()
        .min_by_key(|d| users(d))
        .cloned()
        .unwrap_or_else(|| "cpu".to_string())
}

fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: sending a signal to our own child process; no memory is involved.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn spawn_worker(
    spec: &SweepSpec,
    opts: &RunOptions,
    paths: &SweepPaths,
    trial: &Trial,
    device: String,
) -> Result<Worker, ExperimentError> {
    let store = Store::open(paths.store())?;
    let prev_attempt = latest_by_trial(&store)?
        .get(&trial.trial_id)
        .map_or(0, |e| e.attempt);
    let tpaths = paths.trial_paths(&trial.trial_id);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExperimentError::Io { path, source }
    };
    std::fs::create_dir_all(tpaths.dir()).map_err(io(tpaths.dir()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(tpaths.log())
        .map_err(io(&tpaths.log()))?;
    let log2 = log.try_clone().map_err(io(&tpaths.log()))?;
    let mut cmd = Command::new(&opts.exe);
    cmd.arg("sweep")
        .arg("task")
        .arg(&spec.file)
        .arg("--trial")
        .arg(&trial.trial_id)
        .arg("--out")
        .arg(&opts.sweep_dir)
        .arg("--device")
        .arg(&device);
    if let Some(uri) = &opts.mlflow_uri {
        cmd.arg("--mlflow-uri").arg(uri);
    }
    if opts.no_prune {
        cmd.arg("--no-prune");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; the closure touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                // A worker whose parent dies (killed alone) stops cleanly instead of running on.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    let child = cmd.spawn().map_err(io(&opts.exe))?;
    Ok(Worker {
        trial: trial.clone(),
        child,
        prev_attempt,
        started_ms: now_ms(),
        device,
    })
}

/// Makes sure a worker that exited left a terminal event; returns the attempt's final status.
fn settle(
    store: &Store,
    w: &Worker,
    exit: std::process::ExitStatus,
    stopping: bool,
    mirror: Option<&mut MlflowMirror>,
    prov: &Provenance,
) -> Result<TrialStatus, ExperimentError> {
    let latest = latest_by_trial(store)?.remove(&w.trial.trial_id);
    let own = latest.filter(|e| e.attempt > w.prev_attempt);
    if let Some(e) = &own
        && e.status.is_terminal()
    {
        return Ok(e.status);
    }
    let (status, error) = if stopping {
        (
            TrialStatus::Killed,
            Some("stopped before it could record its end".to_string()),
        )
    } else {
        (TrialStatus::Failed, Some(describe_exit(exit)))
    };
    let event = match own {
        Some(e) => e.with_status(status, now_ms(), error),
        None => {
            // Died before its first event: record the attempt anyway.
            let mut e = w
                .trial
                .event(w.prev_attempt + 1, status, w.started_ms, &w.device, prov);
            e.error = error;
            e
        }
    };
    store.write_trial_event(&event)?;
    if let Some(m) = mirror {
        m.trial_event(&event);
    }
    Ok(status)
}

/// "worker exited with status 3" / "worker was killed by signal 9 (SIGKILL)".
fn describe_exit(exit: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = exit.signal() {
        let name = match sig {
            libc::SIGKILL => " (SIGKILL; out of memory?)",
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGABRT => " (SIGABRT)",
            libc::SIGTERM => " (SIGTERM)",
            libc::SIGBUS => " (SIGBUS)",
            _ => "",
        };
        format!("the worker process was killed by signal {sig}{name} without recording an end")
    } else {
        format!(
            "the worker process exited with status {} without recording an end",
            exit.code().unwrap_or(-1)
        )
    }
}

/// Marks `interrupted` the attempts that a dead earlier run on this host left `running`.
fn mark_dead_attempts(
    store: &Store,
    mut mirror: Option<&mut MlflowMirror>,
) -> Result<usize, ExperimentError> {
    let host = hostname();
    let mut n = 0;
    for e in TrialEvent::from_frame(&store.attempts()?)? {
        if e.status == TrialStatus::Running && e.host == host {
            let ev = e.with_status(
                TrialStatus::Interrupted,
                now_ms(),
                Some("its process died while running (found at the next sweep start)".into()),
            );
            store.write_trial_event(&ev)?;
            if let Some(m) = mirror.as_deref_mut() {
                m.trial_event(&ev);
            }
            n += 1;
        }
    }
    if n > 0 {
        tracing::info!("{n} attempt(s) of a dead earlier run marked interrupted; they resume");
    }
    Ok(n)
}

/// One local runner per sweep: `store/.sweep.lock` holds the pid and host of the holder; a
/// lock of a dead process on this host is taken over.
struct SweepLock(PathBuf);

impl SweepLock {
    fn acquire(store_dir: &Path) -> Result<SweepLock, ExperimentError> {
        let path = store_dir.join(".sweep.lock");
        let me = format!("{} {}", std::process::id(), hostname());
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "{me}");
                    return Ok(SweepLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path).unwrap_or_default();
                    let mut it = owner.split_whitespace();
                    let pid = it.next().and_then(|p| p.parse::<i32>().ok());
                    let host = it.next().unwrap_or_default();
                    // SAFETY: signal 0 only checks that the process exists.
                    let alive = pid.is_some_and(|p| unsafe { libc::kill(p, 0) } == 0);
                    if host == hostname() && !alive {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    return Err(ExperimentError::Busy {
                        path,
                        owner: owner.trim().to_string(),
                    });
                }
                Err(source) => return Err(ExperimentError::Io { path, source }),
            }
        }
        Err(ExperimentError::Busy {
            path,
            owner: String::new(),
        })
    }
}

impl Drop for SweepLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The mean test Dice per class of a trial's last attempt with results (the one that just
/// finished), over its test volumes, from the store; classes in store order. NaN volumes
/// (empty reference and prediction) are left out; a class with nothing else has no mean.
fn mean_dice(store: &Store, trial_id: &str) -> Result<Vec<(String, Option<f64>)>, ExperimentError> {
    use polars::prelude::*;
    let frame = store
        .scan(crate::tracking::Table::Results)?
        .filter(col("trial_id").eq(lit(trial_id)))
        .filter(col("attempt").eq(col("attempt").max()))
        .filter(col("metric").eq(lit("dice")))
        .group_by_stable([col("class")])
        .agg([col("value").filter(col("value").is_not_nan()).mean()])
        .collect()
        .map_err(|e| crate::tracking::TrackingError::polars("results of an ended trial", e))?;
    let classes = frame.column("class").and_then(|c| c.str().cloned());
    let values = frame.column("value").and_then(|c| c.f64().cloned());
    Ok(match (classes, values) {
        (Ok(c), Ok(v)) => c
            .iter()
            .zip(v.iter())
            .filter_map(|(c, v)| Some((c?.to_string(), v)))
            .collect(),
        _ => Vec::new(),
    })
}

/// What the line of a trial that ended says.
struct EndedTrial<'a> {
    trial: &'a Trial,
    status: TrialStatus,
    /// Wall time of this attempt.
    seconds: f64,
    /// Mean test Dice per class (finished trials).
    dice: Vec<(String, Option<f64>)>,
    /// Trials still queued or running.
    left: usize,
}

/// A duration for a log line: `42s`, `4m12s`, `1h03m`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The progress bar of a sweep (trials done / running / failed and an ETA, on a terminal) and
/// one line per ended trial, which is all a log file of the sweep shows: the trial, what
/// distinguishes it (model, classes, the keys the sweep varies, fold, seed), its mean test
/// Dice per class, its wall time, the trials left and the sweep's elapsed time. The full
/// configuration is in the store (`seglab runs ls`).
struct Progress {
    bar: indicatif::ProgressBar,
    started: Instant,
    /// Config keys with more than one value among the sweep's trials.
    varying: Vec<String>,
}

impl Progress {
    fn new(show: bool, s: &SweepSummary, pending: usize, trials: &[Trial]) -> Progress {
        use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
        let bar = ProgressBar::with_draw_target(
            Some(s.trials as u64),
            if show {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} trials · {msg} · {elapsed_precise} (ETA {eta})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_position((s.already_finished + s.skipped_failed) as u64);
        bar.reset_eta();
        let mut values: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
        for t in trials {
            for (k, v) in &t.params {
                values.entry(k).or_default().insert(v);
            }
        }
        let varying = values
            .into_iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(k, _)| k.to_string())
            .collect();
        let p = Progress {
            bar,
            started: Instant::now(),
            varying,
        };
        p.note(&format!(
            "{} trial(s): {} finished earlier, {} failed earlier{}, {} to run",
            s.trials,
            s.already_finished,
            s.skipped_failed,
            if s.skipped_failed > 0 {
                " (left alone; --retry-failed reruns them)"
            } else {
                ""
            },
            pending
        ));
        p
    }

    fn message(s: &SweepSummary, running: usize) -> String {
        format!("running {running}, failed {}", s.failed + s.skipped_failed)
    }

    fn note(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    fn tick(&self, s: &SweepSummary, running: usize) {
        self.bar.set_message(Self::message(s, running));
    }

    fn trial_ended(&self, e: &EndedTrial, s: &SweepSummary, running: usize) {
        if e.status != TrialStatus::Killed {
            self.bar.inc(1);
        }
        self.note(&self.line(e));
        self.tick(s, running);
    }

    /// `e11adc8dfea1 finished in 4m12s: cyclegan golgi,nuclei loss.golgi_weight=3.5 fold 0
    /// seed 0 · dice golgi 0.021 nuclei 0.812 · 9 left · 18m30s elapsed`.
    fn line(&self, e: &EndedTrial) -> String {
        let t = e.trial;
        let mut what = format!("{} {}", t.config.model.name(), t.config.classes.join(","));
        for k in &self.varying {
            if let Some(v) = t.params.get(k) {
                what.push_str(&format!(" {k}={v}"));
            }
        }
        let dice = if e.dice.is_empty() {
            String::new()
        } else {
            let per_class: Vec<String> = e
                .dice
                .iter()
                .map(|(c, v)| match v {
                    Some(v) => format!("{c} {v:.3}"),
                    None => format!("{c} –"),
                })
                .collect();
            format!(" · dice {}", per_class.join(" "))
        };
        format!(
            "{} {} in {}: {what} fold {} seed {}{dice} · {} left · {} elapsed",
            t.trial_id,
            e.status,
            duration(e.seconds),
            t.fold,
            t.seed,
            e.left,
            duration(self.started.elapsed().as_secs_f64())
        )
    }

    fn finish(&self, s: &SweepSummary) {
        self.bar.set_message(Self::message(s, 0));
        self.bar.abandon();
    }
}

/// Options of [`run_task`].
#[derive(Clone, Debug)]
pub struct TaskOptions {
    pub sweep_dir: PathBuf,
    pub device: String,
    pub mlflow_uri: Option<String>,
    /// The trial's judge at the rungs of the spec's `[prune]` (`None`: no pruning).
    pub pruner: Option<Pruner>,
}

/// The stop requests a worker honours: SIGTERM/SIGINT (→ `killed`) and SIGUSR1 (→
/// `interrupted`, SLURM's warning before a preemption or time limit).
#[derive(Clone, Debug, Default)]
pub struct TaskSignals {
    pub stop: StopFlag,
    pub usr1: Arc<AtomicBool>,
}

impl TaskSignals {
    /// Registers the handlers of this process.
    pub fn install() -> std::io::Result<TaskSignals> {
        let s = TaskSignals::default();
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1] {
            signal_hook::flag::register(sig, s.stop.as_atomic())?;
        }
        signal_hook::flag::register(libc::SIGUSR1, s.usr1.clone())?;
        Ok(s)
    }
}

/// The MLflow mirror of the sweep `spec` in `paths` when an MLflow URI is given: one
/// experiment per sweep, named after it, with uploads of the sweep folder's trial files.
fn open_mirror(
    uri: Option<&str>,
    spec: &SweepSpec,
    paths: &SweepPaths,
) -> Result<Option<MlflowMirror>, ExperimentError> {
    uri.map(|uri| MlflowMirror::new(uri, &spec.name, &spec.name, Some(paths.clone())))
        .transpose()
        .map_err(Into::into)
}

/// Runs one attempt of `trial` (a worker's job; see the module doc). Returns the attempt's
/// terminal status; errors only when the store cannot be written.
pub fn run_task(
    spec: &SweepSpec,
    trial: &Trial,
    opts: &TaskOptions,
    signals: &TaskSignals,
) -> Result<TrialStatus, ExperimentError> {
    let paths = SweepPaths::new(&opts.sweep_dir);
    let store = Store::create(paths.store())?;
    let prev = latest_by_trial(&store)?.remove(&trial.trial_id);
    if let Some(p) = prev.as_ref().filter(|p| p.status == TrialStatus::Running) {
        // Only reached when no parent settled it (e.g. a requeued SLURM task): the earlier
        // process is gone.
        store.write_trial_event(&p.with_status(
            TrialStatus::Interrupted,
            now_ms(),
            Some("its process died while running".into()),
        ))?;
    }
    let attempt = prev.as_ref().map_or(1, |p| p.attempt + 1);
    let resume = prev.as_ref().is_some_and(|p| {
        matches!(
            p.status,
            TrialStatus::Killed
                | TrialStatus::Interrupted
                | TrialStatus::Running
                | TrialStatus::Timeout
                | TrialStatus::Pruned
        )
    });
    let prov = Provenance::collect(spec.file.parent().unwrap_or(Path::new("")));
    let started = now_ms();
    let device = crate::models::parse_device(&opts.device);
    let mut running = trial.event(attempt, TrialStatus::Running, started, &opts.device, &prov);
    running.preprocess_check = Preflight::stored(&opts.sweep_dir, &trial.trial_id);
    if let Ok(d) = &device {
        running.device_name = crate::backend::device_name(d);
        running.compute_path = crate::kernels::ComputePath::on(d).name().to_string();
    }
    store.write_trial_event(&running)?;
    let mut mirror = open_mirror(opts.mlflow_uri.as_deref(), spec, &paths)?;
    if let Some(m) = mirror.as_mut() {
        m.trial_event(&running);
    }
    tracing::info!(
        "trial {} attempt {attempt}{}: {} fold {} seed {}",
        trial.trial_id,
        if resume { " (resuming)" } else { "" },
        super::trial::describe(trial),
        trial.fold,
        trial.seed
    );

    let outcome = match device {
        Err(e) => Err(e.to_string()),
        Ok(device) => {
            let ctx = TrialContext {
                trial_id: trial.trial_id.clone(),
                attempt,
                config: trial.config.clone(),
                fold: trial.fold,
                seed: trial.seed,
                scheme: trial.scheme.clone(),
                split_seed: trial.split_seed,
                dataset: trial.dataset.clone(),
                splits_dir: paths.splits(),
                trial_dir: paths.trial(&trial.trial_id),
                device,
                resume,
            };
            let mut sink = StoreSink {
                store: &store,
                mirror: mirror.as_mut(),
                pruner: opts.pruner.as_ref(),
            };
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_trial(&ctx, &mut sink, &signals.stop)
            })) {
                Ok(Ok(o)) => Ok(o),
                Ok(Err(e)) => Err(e.to_string()),
                Err(panic) => Err(format!("panic: {}", panic_message(&panic))),
            }
        }
    };
    let (status, error) = match outcome {
        Ok(TrialOutcome::Finished(_)) => (TrialStatus::Finished, None),
        Ok(TrialOutcome::Interrupted { epoch }) => {
            let (status, why) = if signals.usr1.load(Ordering::SeqCst) {
                (
                    TrialStatus::Interrupted,
                    "SIGUSR1 (preemption or time limit)",
                )
            } else {
                (TrialStatus::Killed, "a stop request (Ctrl-C or SIGTERM)")
            };
            (
                status,
                Some(format!(
                    "stopped by {why} after epoch {epoch}; checkpoint_latest resumes it"
                )),
            )
        }
        Ok(TrialOutcome::TimedOut { epoch }) => (
            TrialStatus::Timeout,
            Some(format!(
                "train.max_minutes ran out after epoch {epoch}; a re-run resumes it from \
                 checkpoint_latest"
            )),
        ),
        Ok(TrialOutcome::Pruned(d)) => (TrialStatus::Pruned, Some(d.to_string())),
        Err(e) => (TrialStatus::Failed, Some(e)),
    };
    if let Some(e) = &error {
        tracing::warn!("trial {} attempt {attempt} {status}: {e}", trial.trial_id);
    }
    let end = running.with_status(status, now_ms(), error);
    store.write_trial_event(&end)?;
    if let Some(m) = mirror.as_mut() {
        m.trial_event(&end);
        m.trial_files(&trial.trial_id, attempt);
    }
    Ok(status)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The [`TrialSink`] of a sweep worker: every call becomes one store part (atomic), then goes
/// to the live MLflow mirror when there is one (which never fails the trial).
pub struct StoreSink<'a> {
    pub store: &'a Store,
    pub mirror: Option<&'a mut MlflowMirror>,
    /// Judges the trial at its rungs from the store's epochs (`[prune]`).
    pub pruner: Option<&'a Pruner>,
}

impl StoreSink<'_> {
    /// Writes `rows` as one store part, then hands them to the mirror; empty calls do nothing.
    fn record<R>(
        &mut self,
        rows: &[R],
        write: impl FnOnce(&Store, &[R]) -> crate::tracking::Result<Vec<PathBuf>>,
        mirror: impl FnOnce(&mut MlflowMirror, &[R]),
    ) -> Result<(), TrainError> {
        if rows.is_empty() {
            return Ok(());
        }
        write(self.store, rows).map_err(|e| TrainError::Sink(e.to_string()))?;
        if let Some(m) = self.mirror.as_deref_mut() {
            mirror(m, rows);
        }
        Ok(())
    }
}

impl TrialSink for StoreSink<'_> {
    fn epochs(&mut self, rows: &[EpochRow]) -> Result<(), TrainError> {
        self.record(rows, Store::write_epochs, MlflowMirror::epochs)
    }

    fn results(&mut self, rows: &[ResultRow]) -> Result<(), TrainError> {
        self.record(rows, Store::write_results, MlflowMirror::results)
    }

    fn timings(&mut self, rows: &[TimingRow]) -> Result<(), TrainError> {
        self.record(rows, Store::write_timings, MlflowMirror::timings)
    }

    fn rung(&mut self, epoch: u32, max_epochs: u32) -> Result<Option<PruneDecision>, TrainError> {
        let Some(p) = self.pruner else {
            return Ok(None);
        };
        if p.max_epochs != max_epochs {
            return Err(TrainError::Sink(format!(
                "pruning: the trial has {max_epochs} epochs, its judge expected {}",
                p.max_epochs
            )));
        }
        p.judge(self.store, epoch)
            .map_err(|e| TrainError::Sink(e.to_string()))
    }
}

/// One row of `seglab sweep status`: a trial and the state of its chosen attempt.
#[derive(Clone, Debug)]
pub struct TrialState {
    pub trial: Trial,
    /// None = never started.
    pub status: Option<TrialStatus>,
    pub attempts: u32,
    pub error: Option<String>,
}

/// The state of every trial of the spec, from the store (pending when it has none).
pub fn sweep_state(
    trials: Vec<Trial>,
    sweep_dir: &Path,
) -> Result<Vec<TrialState>, ExperimentError> {
    let store_dir = SweepPaths::new(sweep_dir).store();
    let chosen: BTreeMap<String, (TrialEvent, u32)> = if store_dir.is_dir() {
        let store = Store::open(&store_dir)?;
        let df = store.chosen_trials()?;
        let attempts = df
            .column("attempts")
            .and_then(|c| c.u32().cloned())
            .map_err(|e| crate::tracking::TrackingError::polars("attempt counts", e))?;
        TrialEvent::from_frame(&df)?
            .into_iter()
            .enumerate()
            .map(|(i, e)| (e.trial_id.clone(), (e, attempts.get(i).unwrap_or(1))))
            .collect()
    } else {
        BTreeMap::new()
    };
    Ok(trials
        .into_iter()
        .map(|trial| {
            let found = chosen.get(&trial.trial_id);
            TrialState {
                status: found.map(|(e, _)| e.status),
                attempts: found.map_or(0, |(_, n)| *n),
                error: found.and_then(|(e, _)| e.error.clone()),
                trial,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::free_device;

    #[test]
    fn workers_spread_over_the_devices() {
        let devices: Vec<String> = ["cuda:0", "cuda:1"].map(String::from).to_vec();
        let mut running: Vec<String> = Vec::new();
        for expected in ["cuda:0", "cuda:1", "cuda:0", "cuda:1"] {
            let d = free_device(&devices, running.iter().map(String::as_str));
            assert_eq!(d, expected);
            running.push(d);
        }
        // A worker on cuda:0 ended: the next one takes its device.
        running.remove(0);
        assert_eq!(
            free_device(&devices, running.iter().map(String::as_str)),
            "cuda:0"
        );
    }
}
