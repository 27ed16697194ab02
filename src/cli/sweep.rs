//! `seglab sweep plan / run / status / slurm` and the hidden worker `seglab sweep task`: sweeps
//! of trials expanded from an `experiments/*.toml` spec (experiment module doc; docs/sweeps.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::runs::{format_duration, format_utc, render_table};
use crate::dataset::clipping::DEFAULT_MAX_ZEROED;
use crate::experiment::ExperimentError;
use crate::experiment::filter::TrialFilter;
use crate::experiment::overrides::{self, SpecOverrides};
use crate::experiment::paths::SweepPaths;
use crate::experiment::preflight::Preflight;
use crate::experiment::progress::sweep_progress;
use crate::experiment::prune::{PruneSpec, Pruner};
use crate::experiment::runner::{
    RunOptions, TaskOptions, TaskSignals, TrialState, run_sweep, run_task, sweep_state,
};
use crate::experiment::slurm::{
    self, Manifest, SlurmJobs, SlurmOptions, SlurmResources, TimeLimit,
};
use crate::experiment::spec::{SweepRecord, SweepSpec};
use crate::experiment::trial::{Trial, expand};
use crate::tracking::mlflow::{Artifacts, MirrorOptions};
use crate::tracking::{TrialStatus, now_ms};

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub command: SweepCommand,
}

#[derive(Debug, Subcommand)]
pub enum SweepCommand {
    /// Print the trials a spec expands to, without running anything.
    Plan(PlanArgs),
    /// Run the trials of a spec that are not finished (resumable: run it
    /// again after a crash or Ctrl-C).
    Run(RunArgs),
    /// Show the state of every trial of a spec, from its store (and its SLURM
    /// jobs from squeue).
    Status(StatusArgs),
    /// Write (and with --submit, submit) a SLURM job array of the trials that
    /// are not finished, plus a report job that runs after it.
    Slurm(SlurmArgs),
    /// Run one attempt of one trial (the worker process of `sweep run`).
    #[command(hide = true)]
    Task(TaskArgs),
}

/// Changes to a spec for one sweep folder (recorded there: later commands on the
/// folder use the same).
#[derive(Debug, Default, Args)]
pub struct OverrideArgs {
    /// Change the spec: scale=cpu-small, preset=thesis, cv.seeds=[0],
    /// cv.run_folds=[0] or a config key of the trials, e.g. train.epochs=2
    /// (repeatable; wins over the spec's [set] and [[grid]] values).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Use this dataset folder instead of the spec's.
    #[arg(long, value_name = "DIR")]
    pub dataset: Option<PathBuf>,
}

/// The preprocessing check before any training (`experiment::preflight`).
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Run even where the percentile stretch maps more than --max-zeroed of
    /// a class's annotated voxels to 0.
    #[arg(long)]
    pub allow_clipping: bool,
    /// The share of a class's annotated voxels the stretch may map to 0.
    #[arg(long, value_name = "SHARE", default_value_t = DEFAULT_MAX_ZEROED)]
    pub max_zeroed: f64,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The sweep spec (experiments/<name>.toml).
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// The sweep folder [default: <spec folder>/<name>/].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    #[command(flatten)]
    pub check: CheckArgs,
    /// Only the trials whose column KEY (model, classes, preset, scale, fold,
    /// seed, trial or a swept config key) has VALUE (repeatable; all must
    /// match).
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The sweep spec (experiments/<name>.toml).
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// The sweep folder [default: <spec folder>/<name>/].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Trials run at once, each in its own process [default: 1, or the
    /// number of --devices].
    #[arg(long, short, value_name = "N")]
    pub jobs: Option<usize>,
    /// Run failed trials again (they are skipped otherwise).
    #[arg(long)]
    pub retry_failed: bool,
    #[command(flatten)]
    pub mlflow: MlflowFlags,
    /// cpu, wgpu:N or cuda:N (every worker).
    #[arg(
        long,
        value_name = "DEVICE",
        default_value = "cpu",
        conflicts_with = "devices"
    )]
    pub device: String,
    /// Comma-separated devices, e.g. cuda:0,cuda:1: each worker runs on
    /// one that no other worker uses while there are enough of them
    /// [--jobs defaults to their number].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub devices: Vec<String>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    #[command(flatten)]
    pub check: CheckArgs,
    /// Run only the trials whose column KEY (model, classes, preset, scale,
    /// fold, seed, trial or a swept config key) has VALUE (repeatable; all
    /// must match). The others are left as they are.
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Run without the spec's [prune]: no trial is stopped at a rung, and
    /// trials pruned earlier resume and run to the end.
    #[arg(long)]
    pub no_prune: bool,
}

/// The live MLflow mirror of a command that runs trials. Credentials come
/// from MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or
/// MLFLOW_TRACKING_TOKEN (docs/mlflow.md).
#[derive(Debug, Args)]
pub struct MlflowFlags {
    /// Mirror into this MLflow server while running, e.g.
    /// http://127.0.0.1:5000 or https://mlflow.example.org (the store stays
    /// the record; if the server is down, `seglab mlflow sync` fills it in
    /// later).
    #[arg(long, value_name = "URL")]
    pub mlflow_uri: Option<String>,
    /// PEM file of CA certificates that vouch for the server's certificate,
    /// trusted beside the system's [default:
    /// $MLFLOW_TRACKING_SERVER_CERT_PATH].
    #[arg(long, value_name = "FILE", requires = "mlflow_uri")]
    pub mlflow_ca_bundle: Option<PathBuf>,
    /// Files uploaded to the runs: none; files (config.json, predictions,
    /// figures); checkpoints (files and each trial's best checkpoint)
    /// [default: files].
    #[arg(long, value_name = "WHAT", requires = "mlflow_uri")]
    pub mlflow_artifacts: Option<Artifacts>,
}

impl MlflowFlags {
    pub fn options(&self) -> MirrorOptions {
        MirrorOptions {
            uri: self.mlflow_uri.clone(),
            ca_bundle: self.mlflow_ca_bundle.clone(),
            artifacts: self.mlflow_artifacts.unwrap_or_default(),
        }
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The sweep spec (experiments/<name>.toml).
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// The sweep folder [default: <spec folder>/<name>/].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

/// Writes `<sweep>/slurm/`: manifest.json (the trials that are not finished;
/// task i runs row i), array.sbatch (the job array: requeued on USR1 after a
/// checkpoint, resumed after the restart) and report.sbatch (`seglab report`,
/// run after the array). Without --submit, prints the sbatch commands so the
/// scripts can be reviewed or edited first.
#[derive(Debug, Args)]
pub struct SlurmArgs {
    /// The sweep spec (experiments/<name>.toml).
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// The sweep folder [default: <spec folder>/<name>/]; it must be on a
    /// filesystem the compute nodes share.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The SLURM partition (sbatch --partition) [default: the cluster's].
    #[arg(long, value_name = "P")]
    pub partition: Option<String>,
    /// Time limit of each array task, HH:MM:SS or D-HH:MM:SS; USR1 comes a
    /// tenth of it (1 to 10 minutes) before the end [default: the cluster's
    /// limit, warned 180 s before it].
    #[arg(long, value_name = "HH:MM:SS")]
    pub time: Option<String>,
    /// GPUs per array task (the tasks then run on --device cuda:0).
    #[arg(long, value_name = "N", conflicts_with = "gpus_per_task")]
    pub gpus: Option<u32>,
    /// GPUs per task (sbatch --gpus-per-task), for clusters that ask for it
    /// instead of --gpus (the tasks then run on --device cuda:0).
    #[arg(long, value_name = "N")]
    pub gpus_per_task: Option<u32>,
    /// CPUs per array task (sbatch --cpus-per-task); seglab's threads follow.
    #[arg(long, value_name = "N")]
    pub cpus_per_task: Option<u32>,
    /// Memory per array task's node (sbatch --mem), e.g. 16G.
    #[arg(long, value_name = "SIZE")]
    pub mem: Option<String>,
    /// The account to charge (sbatch --account), for both jobs.
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
    /// Quality of service (sbatch --qos), for both jobs.
    #[arg(long, value_name = "NAME")]
    pub qos: Option<String>,
    /// Node features the tasks need (sbatch --constraint), e.g. a100|h100.
    #[arg(long, value_name = "FEATURES")]
    pub constraint: Option<String>,
    /// Array tasks running at once (the %K of --array=0-N%K) [default: no cap].
    #[arg(long, value_name = "K")]
    pub max_parallel: Option<u32>,
    /// cpu or cuda:N [default: cpu, or cuda:0 with --gpus].
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Put failed trials in the manifest too (they are left out otherwise).
    #[arg(long)]
    pub retry_failed: bool,
    /// Submit with sbatch, print the job ids and record them for `sweep status`.
    #[arg(long)]
    pub submit: bool,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    #[command(flatten)]
    pub check: CheckArgs,
}

#[derive(Debug, Args)]
pub struct TaskArgs {
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// The id of the trial to run.
    #[arg(long, value_name = "ID", required_unless_present = "index")]
    pub trial: Option<String>,
    /// Run row N of the sweep's SLURM manifest (an array task's
    /// $SLURM_ARRAY_TASK_ID); requeues itself when stopped by USR1.
    #[arg(long, value_name = "N", conflicts_with = "trial")]
    pub index: Option<usize>,
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub mlflow: MlflowFlags,
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub no_prune: bool,
}

pub fn run(args: SweepArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SweepCommand::Plan(a) => plan(a),
        SweepCommand::Run(a) => run_cmd(a),
        SweepCommand::Status(a) => status(a),
        SweepCommand::Slurm(a) => slurm_cmd(a),
        SweepCommand::Task(a) => task(a),
    }
}

/// The spec with the sweep folder's overrides (given here, or recorded there earlier; with
/// `record`, given ones are recorded), and the folder.
fn load_spec(
    path: &Path,
    out: Option<&Path>,
    given: &OverrideArgs,
    record: bool,
) -> anyhow::Result<(SweepSpec, PathBuf)> {
    let spec = SweepSpec::load(path)?;
    let dir = spec.sweep_dir(out);
    let given = SpecOverrides::parse(&given.set, given.dataset.as_deref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let resolved = overrides::resolve(&dir, &given, record)?;
    if !resolved.is_empty() && given.is_empty() {
        eprintln!(
            "sweep folder {} runs with `{}` (recorded there)",
            dir.display(),
            resolved.describe()
        );
    }
    Ok((resolved.apply(spec)?, dir))
}

/// [`load_spec`] and the spec's trials.
fn load(
    path: &Path,
    out: Option<&Path>,
    given: &OverrideArgs,
) -> anyhow::Result<(SweepSpec, Vec<Trial>, PathBuf)> {
    let (spec, dir) = load_spec(path, out, given, false)?;
    let trials = expand(&spec)?;
    Ok((spec, trials, dir))
}

/// The keys swept by the spec (the columns of the plan).
fn swept_keys(trials: &[Trial]) -> Vec<String> {
    let mut values: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for t in trials {
        for (k, v) in &t.params {
            values.entry(k).or_default().insert(v);
        }
    }
    values
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, _)| k.to_string())
        .collect()
}

fn trial_cells(t: &Trial, keys: &[String]) -> Vec<String> {
    let mut row = vec![
        t.trial_id.clone(),
        t.config.model.name().to_string(),
        t.config.classes.join(","),
        t.config.preset.name().to_string(),
        t.config.scale.name().to_string(),
        t.fold.to_string(),
        t.seed.to_string(),
    ];
    for k in keys {
        row.push(t.params.get(k).cloned().unwrap_or_else(|| "-".into()));
    }
    row
}

fn headers(keys: &[String], extra: &[&str]) -> (Vec<String>, Vec<bool>) {
    let mut h: Vec<String> = [
        "trial", "model", "classes", "preset", "scale", "fold", "seed",
    ]
    .map(String::from)
    .to_vec();
    let mut right = vec![false, false, false, false, false, true, true];
    h.extend(keys.iter().cloned());
    right.extend(keys.iter().map(|_| false));
    h.extend(extra.iter().map(|s| s.to_string()));
    right.extend(extra.iter().map(|_| false));
    (h, right)
}

/// The trials `--filter` keeps (all when it is empty).
fn filtered(spec: &Path, filter: &[String], trials: Vec<Trial>) -> anyhow::Result<Vec<Trial>> {
    let filter =
        TrialFilter::parse(filter).map_err(|e| anyhow::anyhow!("{}: {e}", spec.display()))?;
    if filter.is_empty() {
        return Ok(trials);
    }
    filter
        .select(trials)
        .map_err(|e| anyhow::anyhow!("{}: {e}", spec.display()))
}

fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let (spec, trials, dir) = load(&args.spec, args.out.as_deref(), &args.overrides)?;
    let trials = filtered(&args.spec, &args.filter, trials)?;
    let keys = swept_keys(&trials);
    let (h, right) = headers(&keys, &[]);
    let rows: Vec<Vec<String>> = trials.iter().map(|t| trial_cells(t, &keys)).collect();
    print!("{}", render_table(&h, &rows, &right));
    println!(
        "{} trial(s) of sweep {} on {} ({}, seeds {:?}); folder {}",
        trials.len(),
        spec.name,
        spec.dataset.display(),
        spec.cv.scheme,
        spec.cv.seeds,
        dir.display()
    );
    let (_, stop) = preflight(&spec, &trials, &args.check)?;
    Ok(stop.unwrap_or(ExitCode::SUCCESS))
}

/// The preprocessing check of `trials` (module doc of `experiment::preflight`): prints one
/// line when it passes, the stop message when it does not; `Some(exit code)` to stop with.
fn preflight(
    spec: &SweepSpec,
    trials: &[Trial],
    args: &CheckArgs,
) -> anyhow::Result<(Preflight, Option<ExitCode>)> {
    if !(0.0..=1.0).contains(&args.max_zeroed) {
        anyhow::bail!(
            "--max-zeroed: expected a share between 0 and 1, got {}",
            args.max_zeroed
        );
    }
    let check = Preflight::run(
        trials,
        args.max_zeroed,
        args.allow_clipping,
        &spec.allow_clipping,
        &spec.file,
    )?;
    if let Some(warning) = check.synthetic_warning() {
        eprintln!("{warning}");
    }
    match check.stop_message(&spec.dataset) {
        None => {
            let allowed = check
                .trials
                .values()
                .filter(|c| {
                    c.clipping_allowed && c.figures.iter().any(|f| f.zeroed > args.max_zeroed)
                })
                .count();
            let exempt = if allowed > 0 {
                format!(
                    ", but for {allowed} trial(s) of models the spec lets clip (allow_clipping; \
                     their figures go to the store)"
                )
            } else {
                String::new()
            };
            eprintln!(
                "preprocessing check: every trial keeps at least {:.0} % of each class's \
                 annotated voxels above 0{exempt}",
                (1.0 - args.max_zeroed) * 100.0
            );
            Ok((check, None))
        }
        Some(message) if args.allow_clipping => {
            eprintln!("{message}\n(going on: --allow-clipping)");
            Ok((check, None))
        }
        Some(message) => {
            eprintln!("{message}");
            Ok((check, Some(ExitCode::from(2))))
        }
    }
}

fn run_cmd(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (devices, flag) = if args.devices.is_empty() {
        (vec![args.device], "--device")
    } else {
        (args.devices, "--devices")
    };
    let jobs = args.jobs.unwrap_or(if flag == "--devices" {
        devices.len()
    } else {
        1
    });
    if jobs == 0 {
        anyhow::bail!("--jobs: expected at least 1");
    }
    check_devices(&devices).context(flag)?;
    let (spec, sweep_dir) = load_spec(&args.spec, args.out.as_deref(), &args.overrides, true)?;
    let all = expand(&spec)?;
    let count = all.len();
    let trials = filtered(&args.spec, &args.filter, all)?;
    let only = (trials.len() < count).then(|| {
        eprintln!(
            "--filter {}: {} of {count} trial(s)",
            args.filter.join(" "),
            trials.len()
        );
        trials.iter().map(|t| t.trial_id.clone()).collect()
    });
    let (check, stop) = preflight(&spec, &trials, &args.check)?;
    if let Some(code) = stop {
        return Ok(code);
    }
    std::fs::create_dir_all(&sweep_dir)
        .with_context(|| format!("cannot create {}", sweep_dir.display()))?;
    check.write(&sweep_dir)?;
    SweepRecord::of(&spec).write(&sweep_dir)?;
    let opts = RunOptions {
        sweep_dir,
        jobs,
        retry_failed: args.retry_failed,
        mlflow: args.mlflow.options(),
        devices,
        exe: std::env::current_exe().context("locating the seglab executable")?,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        only,
        no_prune: args.no_prune,
    };
    let s = run_sweep(&spec, &opts)?;
    eprintln!(
        "sweep {}: {} trial(s); finished {} now and {} earlier; pruned {} now and {} earlier; \
         timed out {}; failed {}{}; stopped {}{}",
        spec.name,
        s.trials,
        s.finished,
        s.already_finished,
        s.pruned,
        s.already_pruned,
        s.timed_out,
        s.failed,
        if s.skipped_failed > 0 {
            format!(
                " now and {} earlier (--retry-failed reruns them)",
                s.skipped_failed
            )
        } else {
            String::new()
        },
        s.killed,
        if s.stopped {
            " (run the same command again to resume)"
        } else {
            ""
        }
    );
    eprintln!(
        "store: {}",
        SweepPaths::new(&opts.sweep_dir).store().display()
    );
    Ok(if s.any_failed() {
        ExitCode::from(1)
    } else if s.stopped {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (spec, trials, dir) = load(&args.spec, args.out.as_deref(), &args.overrides)?;
    let keys = swept_keys(&trials);
    let states = sweep_state(trials, &dir)?;
    let (h, mut right) = headers(&keys, &["status", "attempts", "error"]);
    let n = right.len();
    right[n - 2] = true;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let rows: Vec<Vec<String>> = states
        .iter()
        .map(|s| {
            let st = s.status.map_or("pending", TrialStatus::as_str);
            *counts.entry(st).or_default() += 1;
            let mut row = trial_cells(&s.trial, &keys);
            row.push(st.to_string());
            row.push(s.attempts.to_string());
            row.push(
                s.error
                    .as_deref()
                    .map(|e| e.lines().next().unwrap_or_default().to_string())
                    .unwrap_or_default(),
            );
            row
        })
        .collect();
    print!("{}", render_table(&h, &rows, &right));
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!(
        "sweep {} ({}): {} trial(s): {}",
        spec.name,
        dir.display(),
        states.len(),
        summary.join(", ")
    );
    print_progress(&states, &dir)?;
    let (total, checkpoints) = disk_use(&dir);
    println!(
        "disk: {} in {} ({} of it in checkpoints)",
        mebibytes(total),
        dir.display(),
        mebibytes(checkpoints)
    );
    print_slurm_jobs(&dir)?;
    let failed = states.iter().any(|s| s.status == Some(TrialStatus::Failed));
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The running trials' progress and the sweep's estimated end (`experiment::progress`);
/// nothing when no trial runs.
fn print_progress(states: &[TrialState], dir: &Path) -> anyhow::Result<()> {
    let now = now_ms();
    let p = sweep_progress(states, dir, now)?;
    if p.running.is_empty() {
        return Ok(());
    }
    let left = |s: Option<f64>| {
        s.map_or("time left unknown".into(), |s| {
            format!("~{} left", format_duration((s * 1000.0) as i64))
        })
    };
    println!("running:");
    for r in &p.running {
        let mut parts = Vec::new();
        if r.epochs > 0 {
            parts.push(format!("epoch {}/{}", r.epoch, r.epochs));
        }
        if let Some((done, steps)) = r.step {
            parts.push(format!("step {done}/{steps} of epoch {}", r.epoch + 1));
        }
        if let Some((metric, value)) = &r.score {
            parts.push(format!("{metric} {value:.4}"));
        }
        parts.push(left(r.left_s));
        println!("  {}: {}", r.trial_id, parts.join(", "));
    }
    let end = match p.left_s {
        Some(s) => format!(
            "{}, ends about {} UTC",
            left(Some(s)),
            format_utc(now + (s * 1000.0) as i64)
        ),
        None => "end unknown (no finished trial to time the rest by yet)".into(),
    };
    println!(
        "sweep: {end} ({} running, {} to run; from {} finished trial(s)' wall times and the \
         running trials' epochs)",
        p.running.len(),
        p.pending,
        p.finished
    );
    Ok(())
}

fn task(args: TaskArgs) -> anyhow::Result<ExitCode> {
    // Handlers first: a stop request during the expansion must not be lost.
    let signals = TaskSignals::install().context("installing signal handlers")?;
    let (spec, trials, sweep_dir) =
        load(&args.spec, args.out.as_deref(), &OverrideArgs::default())?;
    let trial_id = match (args.trial, args.index) {
        (Some(id), _) => id,
        (None, Some(index)) => {
            let path = SweepPaths::new(&sweep_dir).slurm_manifest();
            Manifest::read(&path)?
                .trial_id(&path, &spec.name, index)?
                .to_string()
        }
        (None, None) => anyhow::bail!("expected --trial ID or --index N"),
    };
    let pruner = match (&spec.prune, args.no_prune) {
        (Some(p), false) => trials
            .iter()
            .find(|t| t.trial_id == trial_id)
            .and_then(|t| pruner_of(p, t, &trials)),
        _ => None,
    };
    let trial = trials
        .into_iter()
        .find(|t| t.trial_id == trial_id)
        .ok_or_else(|| ExperimentError::UnknownTrial {
            spec: args.spec.clone(),
            trial_id: trial_id.clone(),
        })?;
    let array_task = args.index.and_then(|_| slurm::array_task_id());
    if args.index.is_some() && already_finished(&trial, &sweep_dir)? {
        // A task that Slurm runs again after the trial finished (a requeue that came late).
        tracing::info!("trial {trial_id} is already finished; nothing to do");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(task) = &array_task {
        tracing::info!(
            "SLURM array task {task}, restart {}: trial {trial_id}",
            slurm::restart_count()
        );
    }
    let opts = TaskOptions {
        sweep_dir,
        device: args.device,
        mlflow: args.mlflow.options(),
        pruner,
    };
    let status = run_task(&spec, &trial, &opts, &signals)?;
    if status == TrialStatus::Interrupted
        && let Some(task) = &array_task
    {
        // The store has the terminal event: let Slurm restart the task, which resumes.
        match slurm::requeue_self(task) {
            Ok(()) => tracing::info!("requeued {task}; its next run resumes the trial"),
            Err(e) => tracing::warn!(
                "{e}; the trial stays interrupted (`seglab sweep slurm SPEC --submit` resumes it)"
            ),
        }
    }
    Ok(match status {
        TrialStatus::Finished | TrialStatus::Pruned | TrialStatus::Timeout => ExitCode::SUCCESS,
        TrialStatus::Failed => ExitCode::from(1),
        _ => ExitCode::from(130),
    })
}

/// The judge of `trial` at the rungs of `spec` (module doc of `experiment::prune`): its group
/// is the trials of the same model, classes and fold. `None` for untrained models.
fn pruner_of(spec: &PruneSpec, trial: &Trial, trials: &[Trial]) -> Option<Pruner> {
    let max_epochs = trial.config.learned()?.driver.epochs;
    let group = trials
        .iter()
        .filter(|t| {
            t.config.model == trial.config.model
                && t.config.classes == trial.config.classes
                && t.fold == trial.fold
        })
        .map(|t| t.trial_id.clone())
        .collect();
    Some(Pruner {
        spec: spec.clone(),
        trial_id: trial.trial_id.clone(),
        group,
        classes: trial.config.classes.clone(),
        max_epochs,
    })
}

/// Bytes of the files under `dir` (0 when it does not exist), and of those inside a
/// `checkpoint_*` folder. Unreadable entries are skipped: the figure is for a human.
fn disk_use(dir: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let mut total = (0, 0);
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let in_checkpoint = entry
            .file_name()
            .to_string_lossy()
            .starts_with("checkpoint");
        let (all, ckpt) = if kind.is_dir() {
            let (all, ckpt) = disk_use(&entry.path());
            (all, if in_checkpoint { all } else { ckpt })
        } else {
            (entry.metadata().map_or(0, |m| m.len()), 0)
        };
        total = (total.0 + all, total.1 + ckpt);
    }
    total
}

/// `12.3 MiB`.
fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// True when the trial's chosen attempt in the sweep's store is finished.
fn already_finished(trial: &Trial, sweep_dir: &Path) -> anyhow::Result<bool> {
    let state = sweep_state(vec![trial.clone()], sweep_dir)?;
    Ok(state
        .first()
        .is_some_and(|s| s.status == Some(TrialStatus::Finished)))
}

fn slurm_cmd(args: SlurmArgs) -> anyhow::Result<ExitCode> {
    let opts = slurm_options(&args)?;
    let (spec, sweep_dir) = load_spec(&args.spec, args.out.as_deref(), &args.overrides, true)?;
    let (check, stop) = preflight(&spec, &expand(&spec)?, &args.check)?;
    if let Some(code) = stop {
        return Ok(code);
    }
    std::fs::create_dir_all(&sweep_dir)
        .with_context(|| format!("cannot create {}", sweep_dir.display()))?;
    check.write(&sweep_dir)?;
    let opts = SlurmOptions {
        sweep_dir: std::path::absolute(sweep_dir).context("--out: resolving the sweep folder")?,
        ..opts
    };
    let p = slurm::prepare(&spec, &opts)?;
    let earlier = format!(
        "{} finished earlier{}",
        p.already_finished,
        if p.skipped_failed > 0 {
            format!(
                ", {} failed earlier (--retry-failed includes them)",
                p.skipped_failed
            )
        } else {
            String::new()
        }
    );
    if p.tasks == 0 {
        println!(
            "sweep {}: nothing to run ({} trial(s): {earlier}); no SLURM files written",
            spec.name, p.trials
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "sweep {}: {} of {} trial(s) to run ({earlier}); wrote",
        spec.name, p.tasks, p.trials
    );
    println!("  manifest  {}", p.manifest.display());
    println!("  array     {}", p.array_script.display());
    println!("  report    {}", p.report_script.display());
    if p.tasks > slurm::DEFAULT_MAX_ARRAY_TASKS {
        eprintln!(
            "warning: {} array tasks; clusters with the default MaxArraySize (1001) refuse more \
             than {}",
            p.tasks,
            slurm::DEFAULT_MAX_ARRAY_TASKS
        );
    }
    if !args.submit {
        println!(
            "submit with (or add --submit, which also records the job ids for `sweep status`):"
        );
        println!("  array=$(sbatch --parsable {})", p.array_script.display());
        println!(
            "  sbatch --dependency=afterany:${{array%%;*}} {}",
            p.report_script.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let jobs = slurm::submit(&p, &SweepPaths::new(&opts.sweep_dir))?;
    println!(
        "submitted array job {} ({} task(s)) and report job {} (after the array; writes {})",
        jobs.array_job_id,
        jobs.tasks,
        jobs.report_job_id.as_deref().unwrap_or("-"),
        p.report_dir.display()
    );
    println!(
        "job ids recorded in {}; follow with `seglab sweep status {}`",
        SweepPaths::new(&opts.sweep_dir).slurm_jobs().display(),
        args.spec.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Checks that every device exists in this build and on this machine, and that none is listed
/// twice.
fn check_devices(devices: &[String]) -> anyhow::Result<()> {
    for (i, d) in devices.iter().enumerate() {
        crate::models::parse_device(d)?;
        if devices[..i].contains(d) {
            anyhow::bail!("`{d}` is listed twice (each worker gets a device of its own)");
        }
    }
    Ok(())
}

/// Checks the flags of `sweep slurm` (errors name the flag and what was expected); the sweep
/// folder is filled in once the spec is read.
fn slurm_options(args: &SlurmArgs) -> anyhow::Result<SlurmOptions> {
    let time = match &args.time {
        Some(t) => Some(
            t.parse::<TimeLimit>()
                .map_err(|e| anyhow::anyhow!("--time: {e}"))?,
        ),
        None => None,
    };
    if args.max_parallel == Some(0) {
        anyhow::bail!("--max-parallel: expected at least 1 (array tasks at once), got 0");
    }
    if args.gpus == Some(0) {
        anyhow::bail!("--gpus: expected at least 1 GPU per task, got 0 (leave it out for CPU)");
    }
    if let Some(p) = &args.partition
        && (p.is_empty()
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.,".contains(c)))
    {
        anyhow::bail!("--partition: expected a partition name as `sinfo` lists it, got `{p}`");
    }
    let resources = SlurmResources {
        cpus_per_task: args.cpus_per_task,
        mem: args.mem.clone(),
        account: args.account.clone(),
        qos: args.qos.clone(),
        constraint: args.constraint.clone(),
        gpus_per_task: args.gpus_per_task,
    };
    resources.check().map_err(anyhow::Error::msg)?;
    let with_gpus = args.gpus.is_some() || args.gpus_per_task.is_some();
    let device = args
        .device
        .clone()
        .unwrap_or_else(|| if with_gpus { "cuda:0" } else { "cpu" }.to_string());
    crate::models::parse_device(&device).context("--device")?;
    Ok(SlurmOptions {
        sweep_dir: PathBuf::new(),
        workdir: std::env::current_dir().context("reading the current folder")?,
        exe: std::env::current_exe().context("locating the seglab executable")?,
        partition: args.partition.clone(),
        time,
        gpus: args.gpus,
        max_parallel: args.max_parallel,
        device,
        retry_failed: args.retry_failed,
        resources,
    })
}

/// The sweep's recorded SLURM jobs and what `squeue` says about them (nothing when the sweep
/// was never submitted by `sweep slurm --submit`).
fn print_slurm_jobs(sweep_dir: &Path) -> anyhow::Result<()> {
    let Some(jobs) = SlurmJobs::read(&SweepPaths::new(sweep_dir))? else {
        return Ok(());
    };
    let mut ids = vec![jobs.array_job_id.as_str()];
    if let Some(r) = &jobs.report_job_id {
        ids.push(r);
    }
    println!(
        "SLURM: array job {} ({} task(s)), report job {}",
        jobs.array_job_id,
        jobs.tasks,
        jobs.report_job_id.as_deref().unwrap_or("-")
    );
    match slurm::squeue(&ids) {
        None => println!("  squeue is not on PATH: the queue state is unknown here"),
        Some(Err(e)) => println!("  {e}"),
        Some(Ok(lines)) if lines.len() <= 1 => println!("  none of these jobs is in the queue"),
        Some(Ok(lines)) => {
            for l in lines {
                println!("  {l}");
            }
        }
    }
    Ok(())
}
