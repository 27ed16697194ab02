//! `seglab predict`: sliding-window prediction of one image with a checkpoint.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::dataset::preprocess::{Percentiles, PreprocessConfig};
use crate::dataset::spec::PreprocessDefaults;
use crate::experiment::paths::TrialPaths;
use crate::infer::{MergeMode, SlidingWindowConfig, predict_volume};
use crate::models::parse_device;
use crate::preset::Preset;
use crate::synth::dataset::write_mask_file;
use crate::train::TrialConfig;
use crate::train::driver::{DRIVER_STATE_FILE, TrainerWindows, read_state};
use crate::train::trial::{checkpoint_out_channels, describe_thresholds, trainer_from_checkpoint};
use crate::volume::{AnyVolume, DType, read_tiff, write_tiff};

/// Predict a whole image with a trained checkpoint: percentile stretch, sliding
/// windows, merge, threshold; writes an ImageJ TIFF mask (0/255 per class).
/// Preprocessing and window settings come from the trial's config.json beside
/// the checkpoint when it exists, else from the defaults and the options.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Checkpoint folder (checkpoint_best or checkpoint_latest of a trial).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Image TIFF, channels as the model was trained on.
    #[arg(long, value_name = "TIF")]
    pub image: PathBuf,
    /// Output mask TIFF.
    #[arg(long, value_name = "TIF")]
    pub out: PathBuf,
    /// Window edge in voxels when the trial config is absent (32 = cpu-small,
    /// 64 = paper).
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Window step in voxels (default: the trial's, else 3/4 of the window).
    #[arg(long)]
    pub step: Option<usize>,
    /// Window merge: or (as published), mean or gaussian (default: the trial's, else or).
    #[arg(long, value_parser = parse_merge)]
    pub merge: Option<MergeMode>,
    /// Average each window's prediction over the window and its seven mirror images
    /// (test-time augmentation, 8× the time; default: the trial's `infer.mirror`).
    #[arg(long)]
    pub mirror: bool,
    /// Foreground threshold on the merged probabilities, for every class (default: the
    /// thresholds the trial calibrated on its validation volumes, else the trial's, else 0.5).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Image channel names for the preset percentiles, e.g. golgi,nuclei.
    #[arg(long, value_delimiter = ',', default_value = "golgi,nuclei")]
    pub channels: Vec<String>,
    /// Also write the merged probabilities (float32 TIFF).
    #[arg(long, value_name = "TIF")]
    pub probabilities: Option<PathBuf>,
    /// Device: `cpu`, `wgpu:N` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// The thresholds calibrated for the weights in checkpoint `dir` (its `driver.json`: the
/// last validated epoch), if the trial calibrated any (`train.calibrate_threshold`).
fn calibrated_thresholds(dir: &std::path::Path) -> anyhow::Result<Option<Vec<f32>>> {
    if !dir.join(DRIVER_STATE_FILE).exists() {
        return Ok(None);
    }
    let state = read_state(dir).with_context(|| format!("checkpoint {}", dir.display()))?;
    Ok(state.calibrated_thresholds(state.epochs_done))
}

fn parse_merge(s: &str) -> Result<MergeMode, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("expected or, mean or gaussian, got `{s}`"))
}

pub fn run(args: PredictArgs) -> anyhow::Result<ExitCode> {
    let device = parse_device(&args.device)?;
    let ckpt = &args.checkpoint;
    let out_channels =
        checkpoint_out_channels(ckpt).with_context(|| format!("checkpoint {}", ckpt.display()))?;
    let trainer = trainer_from_checkpoint(ckpt, &device)
        .with_context(|| format!("checkpoint {}", ckpt.display()))?;
    let raw = read_tiff(&args.image).with_context(|| format!("{}", args.image.display()))?;
    let dtype: DType = raw.dtype();
    let image = raw.to_f32();
    let channels: Vec<String> = args
        .channels
        .iter()
        .take(image.channels())
        .cloned()
        .collect();
    anyhow::ensure!(
        channels.len() == image.channels(),
        "{}: the image has {} channels but --channels names {}",
        args.image.display(),
        image.channels(),
        args.channels.len()
    );
    // The trial's own settings when the checkpoint sits in a trial folder.
    let trial = ckpt.parent().map(|d| TrialPaths::new(d).config());
    let trial = match trial.filter(|p| p.exists()) {
        Some(p) => {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("{}: cannot read", p.display()))?;
            Some(TrialConfig::from_json(&text).with_context(|| format!("{}", p.display()))?)
        }
        None => None,
    };
    let (preprocess, preset, mut cfg) = match &trial {
        Some(t) => (
            t.preprocess.clone(),
            t.preset,
            t.learned().map(|l| l.infer.clone()).unwrap_or_default(),
        ),
        None => {
            let w = args.window;
            let cfg = SlidingWindowConfig {
                window: [w; 3],
                step: [(w * 3 / 4).max(1); 3],
                ..SlidingWindowConfig::default()
            };
            (PreprocessConfig::default(), Preset::Code, cfg)
        }
    };
    let preprocess = match (&preprocess.percentiles, ckpt.parent()) {
        (Some(Percentiles::Auto), Some(dir)) => chosen_pairs(&preprocess, dir)?,
        _ => preprocess,
    };
    let pre = preprocess.resolve(preset, &channels, &PreprocessDefaults::default())?;
    let (image, _) = pre.apply(&image, dtype)?;
    if let Some(step) = args.step {
        cfg.step = [step; 3];
    }
    cfg.merge = args.merge.unwrap_or(cfg.merge);
    cfg.mirror |= args.mirror;
    cfg.threshold = args.threshold.unwrap_or(cfg.threshold);
    let calibrated = match args.threshold {
        Some(_) => None,
        None => calibrated_thresholds(ckpt)?,
    };
    let mut windows = TrainerWindows {
        trainer: trainer.as_ref(),
        out_channels,
    };
    let pred = predict_volume(&mut windows, &image, &cfg)?;
    let calibrated_mask = match &calibrated {
        Some(t) => {
            let classes: Vec<String> = match &trial {
                Some(tr) => tr.classes.clone(),
                None => (0..t.len()).map(|c| format!("class {c}")).collect(),
            };
            eprintln!(
                "thresholds calibrated on the trial's validation volumes: {}",
                describe_thresholds(&classes, t)
            );
            Some(
                pred.mask_at(t)
                    .with_context(|| format!("checkpoint {}", ckpt.display()))?,
            )
        }
        None => None,
    };
    let mask = calibrated_mask.as_ref().unwrap_or(&pred.mask);
    write_mask_file(&args.out, mask)
        .with_context(|| format!("{}: cannot write", args.out.display()))?;
    if let Some(p) = &args.probabilities {
        let tmp = p.with_extension("tmp.tif");
        write_tiff(&tmp, &AnyVolume::F32(pred.probabilities.clone()))
            .with_context(|| format!("{}: cannot write", p.display()))?;
        std::fs::rename(&tmp, p).with_context(|| format!("{}: cannot write", p.display()))?;
    }
    eprintln!("wrote {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

/// An `auto` stretch with the percentiles its trial chose (the trial folder's
/// `preprocessing.json`, written by `train::trial`).
fn chosen_pairs(config: &PreprocessConfig, trial_dir: &Path) -> anyhow::Result<PreprocessConfig> {
    let path = TrialPaths::new(trial_dir).preprocessing();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: cannot read the percentiles the trial's `auto` stretch chose",
            path.display()
        )
    })?;
    let record: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let pairs: Vec<[f64; 2]> =
        serde_json::from_value(record["percentiles"].clone()).with_context(|| {
            format!(
                "{}: field `percentiles`: expected a list of [low, high] pairs",
                path.display()
            )
        })?;
    Ok(config.with_pairs(pairs))
}
