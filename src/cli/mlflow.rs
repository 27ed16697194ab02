//! `seglab mlflow sync`: replays a sweep's store into an MLflow tracking server (idempotent:
//! running it twice creates no duplicate runs or metric points).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::runs::open_sweep;
use crate::tracking::mlflow::{
    Artifacts, MlflowClient, MlflowTarget, RetryPolicy, SyncOptions, sync_store,
};

#[derive(Debug, Args)]
pub struct MlflowArgs {
    #[command(subcommand)]
    pub command: MlflowCommand,
}

#[derive(Debug, Subcommand)]
pub enum MlflowCommand {
    /// Copy a sweep's store into MLflow: one parent run per sweep, one nested
    /// run per trial attempt. Safe to repeat; only what is missing is sent.
    /// Credentials come from MLFLOW_TRACKING_USERNAME and
    /// MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN.
    Sync(SyncArgs),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The sweep folder (experiments/<name>/) or its store/ folder.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The tracking server, e.g. http://127.0.0.1:5000 or
    /// https://mlflow.example.org.
    #[arg(long, value_name = "URL", display_order = 20)]
    pub uri: String,
    /// MLflow experiment name [default: the sweep name].
    #[arg(long, value_name = "NAME", display_order = 21)]
    pub experiment: Option<String>,
    /// PEM file of CA certificates that vouch for the server's certificate,
    /// trusted beside the system's [default:
    /// $MLFLOW_TRACKING_SERVER_CERT_PATH].
    #[arg(long, value_name = "FILE", display_order = 22)]
    pub ca_bundle: Option<PathBuf>,
    /// Files uploaded to the runs: none; files (config.json, predictions,
    /// figures, the sweep's report); checkpoints (files and each trial's best
    /// checkpoint) [default: files].
    #[arg(
        long,
        value_name = "WHAT",
        display_order = 23,
        conflicts_with = "no_artifacts"
    )]
    pub artifacts: Option<Artifacts>,
    /// The same as --artifacts none.
    #[arg(long, display_order = 24)]
    pub no_artifacts: bool,
    /// The sweep's report folder, uploaded to the sweep's run under report/
    /// [default: reports/<sweep>/ when it exists].
    #[arg(long, value_name = "DIR", display_order = 25)]
    pub report: Option<PathBuf>,
}

pub fn run(args: MlflowArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        MlflowCommand::Sync(a) => sync(a),
    }
}

fn sync(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let (paths, store) = open_sweep(&args.dir)?;
    if let Some(dir) = args.report.as_ref().filter(|d| !d.is_dir()) {
        bail!(
            "--report {}: not a folder (expected the output of `seglab report`)",
            dir.display()
        );
    }
    let target = MlflowTarget::from_env(&args.uri, args.ca_bundle.as_deref())?;
    let client = MlflowClient::new(target, RetryPolicy::default())?;
    let options = SyncOptions {
        experiment: args.experiment.clone(),
        sweep_paths: Some(paths.clone()),
        artifacts: match (args.no_artifacts, args.artifacts) {
            (true, _) => Artifacts::None,
            (false, a) => a.unwrap_or_default(),
        },
        report: args.report.clone(),
        reports_root: Some(PathBuf::from(".")),
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
