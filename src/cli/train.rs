//! `seglab train`: one trial on one fold, outside any sweep. Writes the resolved config,
//! checkpoints, a log, the test predictions and `epochs.csv`, `results.csv`,
//! `timings.csv` into `--out`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use sha2::{Digest, Sha256};

use crate::dataset::splits::SplitScheme;
use crate::experiment::paths::TrialPaths;
use crate::models::{ModelKind, ModelScale, parse_device};
use crate::preset::Preset;
use crate::train::config::{MemorySink, parse_override};
use crate::train::retention::retain;
use crate::train::{StopFlag, TrialConfig, TrialContext, TrialOutcome, run_trial};

/// Train and evaluate one model on one cross-validation fold: preprocess,
/// (CycleGAN: synthesise masks), cut patches, fit, predict and evaluate the
/// fold's test volumes. Ctrl-C checkpoints; `--resume` continues.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset folder (with dataset.toml).
    #[arg(long, value_name = "DIR")]
    pub dataset: PathBuf,
    /// unet3d, vox2vox, cyclegan or threshold (per-channel Otsu baseline).
    #[arg(long, value_parser = parse_model)]
    pub model: ModelKind,
    /// Mask channels to segment, in order, e.g. `golgi,nuclei` or `nuclei`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub classes: Vec<String>,
    /// Fold index (0-based) of the split.
    #[arg(long, default_value_t = 0)]
    pub fold: u32,
    /// Seed of the weights and every random draw of training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Seed of the split (a sweep's `cv.split_seed`).
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Split scheme: nested-K (the paper's nested K-fold), kfold-K,
    /// leave-one-out, or split:NAME (a split preset of the dataset, e.g.
    /// split:thesis after `data import --layout published`).
    #[arg(long, default_value = "nested-3", value_parser = parse_scheme)]
    pub cv: SplitScheme,
    /// Model size: paper (published widths, 64³) or cpu-small (÷8, 32³).
    #[arg(long, default_value = "cpu-small", value_parser = parse_scale)]
    pub scale: ModelScale,
    /// Fidelity preset for disputed values: code, thesis or paper.
    #[arg(long, default_value = "code", value_parser = parse_preset)]
    pub preset: Preset,
    /// Override one config value by dotted key, e.g. `train.epochs=5` or
    /// `loss.golgi_weight=5.0` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Device: `cpu`, `wgpu:N` or `cuda:N` (never chosen implicitly).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Continue from the checkpoint in --out after an interruption.
    #[arg(long)]
    pub resume: bool,
    /// Print the resolved config as JSON and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Output folder of the trial.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

fn parse_model(s: &str) -> Result<ModelKind, String> {
    s.parse()
}

fn parse_scale(s: &str) -> Result<ModelScale, String> {
    s.parse()
}

fn parse_preset(s: &str) -> Result<Preset, String> {
    s.parse()
}

/// `nested-3`, `kfold-5`, `leave-one-out`, or `split:NAME` (a split preset of the dataset).
pub fn parse_scheme(s: &str) -> Result<SplitScheme, String> {
    const EXPECTED: &str = "expected nested-K, kfold-K, leave-one-out or split:NAME";
    if s == "leave-one-out" {
        return Ok(SplitScheme::LeaveOneOut);
    }
    if let Some(name) = s.strip_prefix("split:").filter(|n| !n.is_empty()) {
        return Ok(SplitScheme::Named(name.to_string()));
    }
    let k = |rest: &str| {
        rest.parse::<usize>()
            .map_err(|_| format!("{EXPECTED}, got `{s}`"))
    };
    if let Some(rest) = s.strip_prefix("nested-") {
        return Ok(SplitScheme::Nested { k: k(rest)? });
    }
    if let Some(rest) = s.strip_prefix("kfold-") {
        return Ok(SplitScheme::KFold { k: k(rest)? });
    }
    Err(format!("{EXPECTED}, got `{s}`"))
}

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let overrides = args
        .set
        .iter()
        .map(|s| parse_override(s))
        .collect::<Result<Vec<_>, _>>()?;
    let config = TrialConfig::resolve(args.model, &args.classes, args.preset, args.scale)?
        .apply_overrides(&overrides)?;
    if args.print_config {
        let v = config.to_value();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let device = parse_device(&args.device)?;
    // A local id: the trial's config, fold, seed and split (a sweep adds the dataset
    // fingerprint and names trials itself).
    let key = format!(
        "{{\"config\":{},\"cv\":\"{}\",\"fold\":{},\"seed\":{}}}",
        config.canonical_json(),
        if args.split_seed == args.seed {
            args.cv.to_string()
        } else {
            format!("{} split seed {}", args.cv, args.split_seed)
        },
        args.fold,
        args.seed
    );
    let digest = Sha256::digest(key.as_bytes());
    let trial_id: String = digest[..6].iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    let ctx = TrialContext {
        trial_id,
        attempt: 1,
        config,
        fold: args.fold,
        seed: args.seed,
        scheme: args.cv.clone(),
        split_seed: args.split_seed,
        dataset: args.dataset.clone(),
        splits_dir: args.out.clone(),
        trial_dir: args.out.clone(),
        device,
        resume: args.resume,
    };
    let stop = StopFlag::new();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.as_atomic())
            .context("installing the Ctrl-C handler")?;
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
    let mut sink = MemorySink::default();
    let outcome = run_trial(&ctx, &mut sink, &stop);
    let paths = TrialPaths::new(&args.out);
    write_csvs(&paths, &sink)?;
    let outcome = outcome.with_context(|| format!("trial in {}", args.out.display()))?;
    match outcome {
        TrialOutcome::Finished(s) => {
            if let Some(driver) = ctx.config.driver() {
                retain(&paths, driver.keep)
                    .with_context(|| format!("train.keep in {}", args.out.display()))?;
            }
            eprintln!(
                "finished: {} epochs, best epoch {}, {} test volumes; see {}",
                s.epochs,
                s.best_epoch.map_or("-".into(), |e| e.to_string()),
                s.test_volumes.len(),
                paths.log().display()
            );
            Ok(ExitCode::SUCCESS)
        }
        TrialOutcome::TimedOut { epoch } => {
            eprintln!(
                "train.max_minutes ran out after epoch {epoch}; continue with --resume \
                 (checkpoint in {})",
                paths.checkpoint_latest().display()
            );
            Ok(ExitCode::from(1))
        }
        TrialOutcome::Pruned(d) => {
            eprintln!("{d}");
            Ok(ExitCode::from(1))
        }
        TrialOutcome::Interrupted { epoch } => {
            eprintln!(
                "interrupted after epoch {epoch}; continue with --resume (checkpoint in {})",
                paths.checkpoint_latest().display()
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// The rows as CSV files (the store's columns), written atomically.
fn write_csvs(paths: &TrialPaths, sink: &MemorySink) -> anyhow::Result<()> {
    let mut epochs = String::from("trial_id,attempt,epoch,split,metric,value,wall_s\n");
    for r in &sink.epochs {
        let _ = writeln!(
            epochs,
            "{},{},{},{},{},{},{}",
            r.trial_id, r.attempt, r.epoch, r.split, r.metric, r.value, r.wall_s
        );
    }
    let mut results = String::from("trial_id,attempt,volume,class,metric,value\n");
    for r in &sink.results {
        let _ = writeln!(
            results,
            "{},{},{},{},{},{}",
            r.trial_id, r.attempt, r.volume, r.class, r.metric, r.value
        );
    }
    let mut timings = String::from("trial_id,attempt,phase,seconds\n");
    for r in &sink.timings {
        let _ = writeln!(
            timings,
            "{},{},{},{}",
            r.trial_id, r.attempt, r.phase, r.seconds
        );
    }
    for (name, text) in [
        ("epochs.csv", epochs),
        ("results.csv", results),
        ("timings.csv", timings),
    ] {
        let path = paths.file(name);
        crate::atomic::write_file(&path, text.as_bytes())
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(())
}
