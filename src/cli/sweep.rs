//! `seglab sweep plan / run / status` and the hidden worker `seglab sweep task`: sweeps of
//! trials expanded from an `experiments/*.toml` spec (experiment module doc, issue 6).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::runs::render_table;
use crate::experiment::ExperimentError;
use crate::experiment::runner::{
    RunOptions, TaskOptions, TaskSignals, run_sweep, run_task, sweep_state,
};
use crate::experiment::spec::SweepSpec;
use crate::experiment::trial::{Trial, expand};
use crate::tracking::TrialStatus;

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
    /// Show the state of every trial of a spec, from its store.
    Status(StatusArgs),
    /// Run one attempt of one trial (the worker process of `sweep run`).
    #[command(hide = true)]
    Task(TaskArgs),
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The sweep spec (experiments/<name>.toml).
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The sweep spec (experiments/<name>.toml).
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// The sweep folder [default: <spec folder>/<name>/].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Trials run at once, each in its own process.
    #[arg(long, short, value_name = "N", default_value_t = 1)]
    pub jobs: usize,
    /// Run failed trials again (they are skipped otherwise).
    #[arg(long)]
    pub retry_failed: bool,
    /// Mirror into this MLflow server while running, e.g.
    /// http://127.0.0.1:5000 (the store stays the record; if the server
    /// is down, `seglab mlflow sync` fills it in later).
    #[arg(long, value_name = "URL")]
    pub mlflow_uri: Option<String>,
    /// cpu or cuda:N.
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The sweep spec (experiments/<name>.toml).
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// The sweep folder [default: <spec folder>/<name>/].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TaskArgs {
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// The id of the trial to run.
    #[arg(long, value_name = "ID")]
    pub trial: String,
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[arg(long, value_name = "URL")]
    pub mlflow_uri: Option<String>,
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: String,
}

pub fn run(args: SweepArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SweepCommand::Plan(a) => plan(a),
        SweepCommand::Run(a) => run_cmd(a),
        SweepCommand::Status(a) => status(a),
        SweepCommand::Task(a) => task(a),
    }
}

fn load(spec: &std::path::Path) -> anyhow::Result<(SweepSpec, Vec<Trial>)> {
    let spec = SweepSpec::load(spec)?;
    let trials = expand(&spec)?;
    Ok((spec, trials))
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

fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let (spec, trials) = load(&args.spec)?;
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
        spec.sweep_dir(None).display()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_cmd(args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.jobs == 0 {
        anyhow::bail!("--jobs: expected at least 1");
    }
    crate::models::parse_device(&args.device).context("--device")?;
    let spec = SweepSpec::load(&args.spec)?;
    let opts = RunOptions {
        sweep_dir: spec.sweep_dir(args.out.as_deref()),
        jobs: args.jobs,
        retry_failed: args.retry_failed,
        mlflow_uri: args.mlflow_uri,
        device: args.device,
        exe: std::env::current_exe().context("locating the seglab executable")?,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let s = run_sweep(&spec, &opts)?;
    eprintln!(
        "sweep {}: {} trial(s); finished {} now and {} earlier; failed {}{}; stopped {}{}",
        spec.name,
        s.trials,
        s.finished,
        s.already_finished,
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
    eprintln!("store: {}", opts.sweep_dir.join("store").display());
    Ok(if s.any_failed() {
        ExitCode::from(1)
    } else if s.stopped {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (spec, trials) = load(&args.spec)?;
    let dir = spec.sweep_dir(args.out.as_deref());
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
    let failed = states.iter().any(|s| s.status == Some(TrialStatus::Failed));
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn task(args: TaskArgs) -> anyhow::Result<ExitCode> {
    // Handlers first: a stop request during the expansion must not be lost.
    let signals = TaskSignals::install().context("installing signal handlers")?;
    let (spec, trials) = load(&args.spec)?;
    let trial = trials
        .into_iter()
        .find(|t| t.trial_id == args.trial)
        .ok_or_else(|| ExperimentError::UnknownTrial {
            spec: args.spec.clone(),
            trial_id: args.trial.clone(),
        })?;
    let opts = TaskOptions {
        sweep_dir: spec.sweep_dir(args.out.as_deref()),
        device: args.device,
        mlflow_uri: args.mlflow_uri,
    };
    let status = run_task(&spec, &trial, &opts, &signals)?;
    Ok(match status {
        TrialStatus::Finished => ExitCode::SUCCESS,
        TrialStatus::Failed => ExitCode::from(1),
        _ => ExitCode::from(130),
    })
}
