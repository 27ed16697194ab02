//! The command line: one file per verb, each a clap `Args` struct plus a handler that resolves
//! the arguments and calls one library function.
//!
//! This module owns user-facing concerns only (help text, output formatting, exit codes).
//! Exit codes: 0 all good, 1 some trials failed, 2 usage, configuration or input error.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
pub mod data;
pub mod demo;
pub mod eval;
pub mod inspect;
pub mod mlflow;
pub mod models;
pub mod predict;
pub mod report;
pub mod runs;
pub mod sweep;
pub mod synth;
pub mod train;

/// seglab — a research harness for 3D fluorescence-microscopy segmentation of nuclei, Golgi and
/// nucleus–Golgi pairs: supervised 3D U-Net and Vox2Vox, self-supervised CycleGAN on synthetic
/// masks, cross-validation sweeps, a Parquet store and reports.
#[derive(Debug, Parser)]
#[command(
    name = "seglab",
    version,
    propagate_version = true,
    max_term_width = 79
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors in the log.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The main job: phantom data → model comparison sweep → report.
    Demo(demo::DemoArgs),
    // (about and long help come from the Args structs' doc comments)
    Inspect(inspect::InspectArgs),
    /// Look at a dataset folder (`data info DIR`).
    Data(data::DataArgs),
    /// Synthetic masks, phantom datasets and previews.
    Synth(synth::SynthArgs),
    /// Trainable parameter counts of every network at a scale.
    Models(models::ModelsArgs),
    /// Train and evaluate one model on one fold (one trial).
    Train(train::TrainArgs),
    /// Predict a whole image with a trained checkpoint.
    Predict(predict::PredictArgs),
    /// Compare a predicted mask with a reference mask (voxel, object,
    /// surface and pairing metrics).
    Eval(eval::EvalArgs),
    /// Sweeps: plan, run (resumable, N trials at once) and status of the
    /// trials of an experiments/*.toml spec.
    Sweep(sweep::SweepArgs),
    /// Look at a sweep's store: list trials, compare test metrics, compact.
    Runs(runs::RunsArgs),
    Report(report::ReportArgs),
    /// Mirror a sweep's store into an MLflow tracking server.
    Mlflow(mlflow::MlflowArgs),
    /// Time training steps and predicted windows of a model.
    Bench(bench::BenchArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Data(args) => data::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Models(args) => models::run(args),
        Command::Train(args) => train::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Runs(args) => runs::run(args),
        Command::Report(args) => report::run(args),
        Command::Mlflow(args) => mlflow::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

/// Logs go to stderr so that `--json` output on stdout stays machine-readable.
pub fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: worker and SLURM logs are files read later.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
