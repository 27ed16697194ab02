//! `seglab mlflow sync`: replays a sweep's store into an MLflow tracking server (idempotent:
//! running it twice creates no duplicate runs or metric points).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::runs::open_sweep;
use crate::tracking::mlflow::{MlflowClient, RetryPolicy, SyncOptions, sync_store};

#[derive(Debug, Args)]
pub struct MlflowArgs {
    #[command(subcommand)]
    pub command: MlflowCommand,
}

#[derive(Debug, Subcommand)]
pub enum MlflowCommand {
    /// Copy a sweep's store into MLflow: one parent run per sweep, one nested
    /// run per trial attempt. Safe to repeat; only what is missing is sent.
    Sync(SyncArgs),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The sweep folder (experiments/<name>/) or its store/ folder.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The tracking server, e.g. http://127.0.0.1:5000 (plain http).
    #[arg(long, value_name = "URL", display_order = 20)]
    pub uri: String,
    /// MLflow experiment name [default: the sweep name].
    #[arg(long, value_name = "NAME", display_order = 21)]
    pub experiment: Option<String>,
    /// Do not upload config.json, predictions and figures.
    #[arg(long, display_order = 22)]
    pub no_artifacts: bool,
}

pub fn run(args: MlflowArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        MlflowCommand::Sync(a) => sync(a),
    }
}

fn sync(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let (paths, store) = open_sweep(&args.dir)?;
    let client = MlflowClient::new(&args.uri, RetryPolicy::default())?;
    let options = SyncOptions {
        experiment: args.experiment.clone(),
        sweep_paths: Some(paths.clone()),
        no_artifacts: args.no_artifacts,
    };
    let report = sync_store(&store, &client, &options)?;
    println!(
        "{} attempt(s) of {} mirrored to {} (experiment id {}): {} run(s) created, {} updated, {} already up to date; sent {} metric point(s), {} param(s), {} artifact(s)",
        report.attempts,
        paths.root().display(),
        client.uri(),
        if report.experiment_ids.is_empty() {
            "-".to_string()
        } else {
            report.experiment_ids.join(", ")
        },
        report.runs_created,
        report.runs_updated,
        report.runs_up_to_date,
        report.metrics_logged,
        report.params_logged,
        report.artifacts_uploaded,
    );
    if report.failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{} attempt(s) could not be mirrored:",
        report.failures.len()
    );
    for f in &report.failures {
        eprintln!("  {} (attempt {}): {}", f.trial_id, f.attempt, f.error);
    }
    Ok(ExitCode::from(1))
}
