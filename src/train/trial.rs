//! One trial end to end (docs/training.md):
//!
//! 1. load the dataset, make or read the split (`dataset::splits`), preprocess the volumes
//!    of the fold (timing `preprocess`; the resolved percentiles, and the floors an `auto`
//!    stretch chose, in `preprocessing.json`);
//! 2. CycleGAN: generate one synthetic mask per training volume, same shape, seeded by
//!    (trial seed, volume index), saved under `synth_masks/` (timing `synth_masks`);
//! 3. cut patches (timing `patches`);
//! 4. fit with the epoch driver (`train/driver.rs`; timings `train`, `validate`);
//! 5. predict every test volume with `infer::predict_volume` and write the masks as ImageJ
//!    TIFFs under `predictions/` (timing `predict`);
//! 6. evaluate each test volume with `metrics::evaluate` (timing `evaluate`).
//!
//! The `threshold` baseline runs steps 1, 5 and 6 only: class `c` is image channel `c`
//! (the published channel convention, docs/published-code.md §1.2) thresholded at its
//! Otsu threshold over the preprocessed test volume (`dataset::threshold`).

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;

use super::config::{
    Learned, MaskSource, ModelSettings, StopFlag, StopReason, TrialConfig, TrialContext,
    TrialOutcome, TrialSink, TrialSummary,
};
use super::driver::{FitData, FitEnd, FitOptions, TrainerWindows, fit};
use super::{
    CycleGanTrainConfig, CycleGanTrainer, TrainError, Trainer, Unet3dTrainConfig, Unet3dTrainer,
    Vox2VoxTrainConfig, Vox2VoxTrainer, checkpoint,
};
use crate::dataset::Dataset;
use crate::dataset::auto_floor::{AutoFloor, describe_floors, resolve_on};
use crate::dataset::patches::{PatchSet, PatchVolume};
use crate::dataset::preprocess::Preprocessor;
use crate::dataset::splits::Fold;
use crate::dataset::splits::{SplitScheme, fold_at, load_or_create_splits};
use crate::dataset::threshold::otsu_threshold;
use crate::experiment::paths::TrialPaths;
use crate::infer::predict_volume;
use crate::metrics::evaluate;
use crate::models::init::derive_seed;
use crate::models::{CycleGanConfig, ModelKind, Unet3dConfig, Vox2VoxConfig};
use crate::synth::dataset::write_mask_file;
use crate::synth::generate_masks;
use crate::tracking::{ResultRow, TimingRow};
use crate::volume::Volume;

/// Seed stream of the synthetic masks of a trial.
const STREAM_SYNTH: u64 = 201;

/// The seed of the synthetic mask a trial with seed `trial_seed` draws for its `index`-th
/// training volume.
pub fn synthetic_mask_seed(trial_seed: u64, index: usize) -> u64 {
    derive_seed(derive_seed(trial_seed, STREAM_SYNTH), index as u64)
}

/// A preprocessed volume of the fold with its masks restricted to the trial's classes.
struct FoldVolume {
    id: String,
    image: Volume<f32>,
    mask: Option<Volume<u8>>,
}

/// The supervised CycleGAN's mask domain (`cyclegan.masks = "annotated"`, the thesis'
/// Table 5.5): the training volumes' annotated masks, each a volume of its own, drawn
/// independently of the images as synthetic masks are.
fn annotated_mask_domain(train: &[FoldVolume]) -> Result<Vec<PatchVolume>, TrainError> {
    train
        .iter()
        .map(|v| {
            let mask = v.mask.as_ref().ok_or_else(|| {
                TrainError::Setting(format!(
                    "cyclegan.masks = \"annotated\": training volume `{}` has no mask",
                    v.id
                ))
            })?;
            Ok(PatchVolume {
                id: v.id.clone(),
                image: mask.map(f32::from),
                mask: None,
            })
        })
        .collect()
}

/// The trial's preprocessing on `dataset`. An `auto` stretch chooses its floors from the
/// fold's training and validation volumes (never the test ones), from their masks unless the
/// model learns without annotations (the CycleGAN on synthetic masks).
pub fn resolve_preprocessing(
    dataset: &Dataset,
    cfg: &TrialConfig,
    fold: &Fold,
) -> Result<(Preprocessor, Option<Vec<AutoFloor>>), TrainError> {
    let ids: Vec<String> = fold.train.iter().chain(&fold.val).cloned().collect();
    Ok(resolve_on(
        dataset,
        &cfg.preprocess,
        cfg.preset,
        &ids,
        reads_masks(cfg),
    )?)
}

/// Whether the model of `cfg` learns from annotated masks (the threshold baseline counts: it
/// stands for what the annotated data allow).
fn reads_masks(cfg: &TrialConfig) -> bool {
    !matches!(
        cfg.settings,
        ModelSettings::CycleGan {
            masks: MaskSource::Synthetic,
            ..
        }
    )
}

/// Runs one trial (module doc). Rows go to `sink` as they are produced; `stop` is honoured
/// between training steps (checkpoint, then [`TrialOutcome::Interrupted`]).
pub fn run_trial(
    ctx: &TrialContext,
    sink: &mut dyn TrialSink,
    stop: &StopFlag,
) -> Result<TrialOutcome, TrainError> {
    let cfg = &ctx.config;
    cfg.validate()?;
    let paths = TrialPaths::new(&ctx.trial_dir);
    create_dir(paths.dir())?;
    crate::atomic::write_file(&paths.config(), cfg.canonical_json().as_bytes())?;
    let log_path = paths.log();
    let mut log_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_err(&log_path))?;
    let mut log = |line: &str| {
        let _ = writeln!(log_file, "{line}");
    };
    log(&format!(
        "trial {} attempt {}: {} on {} (fold {}, seed {}, {}, split seed {})",
        ctx.trial_id,
        ctx.attempt,
        cfg.model,
        cfg.classes.join(","),
        ctx.fold,
        ctx.seed,
        ctx.scheme,
        ctx.split_seed
    ));
    let mut timings: Vec<(&'static str, f64)> = Vec::new();

    // 1. Dataset, split, preprocessing.
    let t = Instant::now();
    let fold = prepare_fold(ctx, &paths, &mut log)?;
    timings.push(("preprocess", t.elapsed().as_secs_f64()));
    log(&format!(
        "fold {}: {} train, {} val, {} test volumes",
        ctx.fold,
        fold.split.train.len(),
        fold.split.val.len(),
        fold.split.test.len()
    ));

    // 2.–4. The mask domain, patches, fit.
    let trained = match cfg.learned() {
        Some(l) => {
            let run = TrainingRun {
                ctx,
                learned: l,
                paths: &paths,
                fold: &fold,
            };
            match run.train(sink, stop, &mut log, &mut timings)? {
                Fitted::Trained(trained) => trained,
                Fitted::Ended(outcome) => return Ok(outcome),
            }
        }
        None => Trained {
            trainer: None,
            thresholds: None,
            epochs: 0,
            best_epoch: None,
            stop: StopReason::NoTraining,
        },
    };

    // 5. Predict the test volumes; 6. evaluate them.
    let (predict_s, evaluate_s) =
        predict_and_evaluate(ctx, &paths, &fold.test, &trained, sink, &mut log)?;
    timings.push(("predict", predict_s));
    timings.push(("evaluate", evaluate_s));
    let rows: Vec<TimingRow> = timings
        .iter()
        .map(|&(phase, seconds)| TimingRow {
            trial_id: ctx.trial_id.clone(),
            attempt: ctx.attempt,
            phase: phase.to_string(),
            seconds,
        })
        .collect();
    sink.timings(&rows)?;
    log("finished");
    Ok(TrialOutcome::Finished(TrialSummary {
        epochs: trained.epochs,
        best_epoch: trained.best_epoch,
        stop: trained.stop,
        test_volumes: fold.test.iter().map(|v| v.id.clone()).collect(),
    }))
}

/// The volumes of a trial's fold, preprocessed, and what the model reads them as.
struct PreparedFold {
    split: Fold,
    /// The dataset's image channel names plus the blank channels added for the model.
    image_names: Vec<String>,
    train: Vec<FoldVolume>,
    val: Vec<FoldVolume>,
    test: Vec<FoldVolume>,
}

/// Step 1: opens the dataset, reads or makes the split, resolves and records the
/// preprocessing, and loads the fold's volumes (training and validation ones only for
/// learned models).
fn prepare_fold(
    ctx: &TrialContext,
    paths: &TrialPaths,
    log: &mut dyn FnMut(&str),
) -> Result<PreparedFold, TrainError> {
    let cfg = &ctx.config;
    let dataset = Dataset::open(&ctx.dataset)?;
    let folds = match &ctx.scheme {
        SplitScheme::Named(name) => dataset.named_folds(name)?,
        scheme => load_or_create_splits(
            &ctx.splits_dir,
            &dataset.ids(),
            &dataset.groups(),
            scheme,
            ctx.split_seed,
        )?,
    };
    let fold = fold_at(&folds, ctx.fold as usize)?.clone();
    let spec = dataset.spec();
    let class_index: Vec<usize> = cfg
        .classes
        .iter()
        .map(|c| {
            spec.mask_channels
                .iter()
                .position(|m| m == c)
                .ok_or_else(|| {
                    TrainError::Setting(format!(
                        "classes: dataset `{}` has no mask channel `{c}` (it has: {})",
                        spec.name,
                        spec.mask_channels.join(", ")
                    ))
                })
        })
        .collect::<Result<_, _>>()?;
    let (pre, floors) = resolve_preprocessing(&dataset, cfg, &fold)?;
    log(&format!("preprocessing: {}", pre.describe()));
    if let Some(floors) = &floors {
        for line in describe_floors(floors) {
            log(&format!("auto floor {line}"));
        }
    }
    let record = serde_json::json!({
        "describe": pre.describe(),
        "percentiles": pre.pairs(),
        "auto_floors": floors,
    });
    crate::atomic::write_file(
        &paths.preprocessing(),
        serde_json::to_string_pretty(&record)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    let blank = blank_image_channels(cfg, &spec.image_channels);
    if blank > 0 {
        log(
            "image channels: golgi, nuclei and an empty third channel, as the published 3-class \
             networks take them",
        );
    }
    let load = |ids: &[String]| -> Result<Vec<FoldVolume>, TrainError> {
        ids.iter()
            .map(|id| {
                let v = dataset.load(id)?;
                let (image, _) = pre.apply(&v.image, v.dtype)?;
                let image = with_blank_channels(image, blank, cfg.preprocess.scale.apply(0.0));
                let mask = v
                    .mask
                    .map(|m| m.select_channels(&class_index))
                    .transpose()
                    .map_err(|e| TrainError::Setting(format!("volume `{id}`: {e}")))?;
                Ok(FoldVolume {
                    id: id.clone(),
                    image,
                    mask,
                })
            })
            .collect()
    };
    let test = load(&fold.test)?;
    let trained = cfg.model != ModelKind::Threshold;
    let (train, val) = if trained {
        (load(&fold.train)?, load(&fold.val)?)
    } else {
        (Vec::new(), Vec::new())
    };
    let mut image_names = spec.image_channels.clone();
    image_names.extend((0..blank).map(|_| BLANK_CHANNEL.to_string()));
    Ok(PreparedFold {
        split: fold,
        image_names,
        train,
        val,
        test,
    })
}

/// A fitted model and what the fit says about it.
struct Trained {
    /// None for the threshold baseline.
    trainer: Option<Box<dyn Trainer>>,
    /// The per-class thresholds calibrated for the trained weights
    /// (`train.calibrate_threshold`).
    thresholds: Option<Vec<f32>>,
    epochs: u32,
    best_epoch: Option<u32>,
    stop: StopReason,
}

/// How the training of a trial ended.
enum Fitted {
    Trained(Trained),
    /// The fit ended before its last epoch (stop flag, time budget, pruning); the latest
    /// checkpoint holds the state.
    Ended(TrialOutcome),
}

/// Steps 2–4 of a learned model's trial.
struct TrainingRun<'a> {
    ctx: &'a TrialContext,
    learned: &'a Learned,
    paths: &'a TrialPaths,
    fold: &'a PreparedFold,
}

impl TrainingRun<'_> {
    fn train(
        &self,
        sink: &mut dyn TrialSink,
        stop: &StopFlag,
        log: &mut dyn FnMut(&str),
        timings: &mut Vec<(&'static str, f64)>,
    ) -> Result<Fitted, TrainError> {
        let synthetic = self.mask_domain(timings)?;
        let t = Instant::now();
        let sets = self.patch_sets(synthetic)?;
        timings.push(("patches", t.elapsed().as_secs_f64()));
        let (ctx, l, cfg) = (self.ctx, self.learned, &self.ctx.config);
        let mut trainer = build_trainer(cfg, &self.fold.image_names, ctx.seed, &ctx.device)?;
        let report = fit(
            trainer.as_mut(),
            &FitData {
                train: &sets.train,
                synthetic: sets.synthetic.as_ref(),
                val: sets.val.as_ref(),
                val_volumes: &sets.val_volumes,
            },
            &FitOptions {
                driver: &l.driver,
                patches: &l.patches,
                classes: &cfg.classes,
                infer: &l.infer,
                seed: ctx.seed,
                trial_id: &ctx.trial_id,
                attempt: ctx.attempt,
                checkpoint_latest: self.paths.checkpoint_latest(),
                checkpoint_best: self.paths.checkpoint_best(),
                resume: ctx.resume,
                augment: &l.augment,
                image_fill: cfg.preprocess.scale.apply(0.0),
            },
            sink,
            stop,
            log,
        )?;
        timings.push(("train", report.state.train_s));
        timings.push(("validate", report.state.validate_s));
        let epoch = report.state.epochs_done;
        let reason = match report.end {
            FitEnd::Interrupted => return Ok(Fitted::Ended(TrialOutcome::Interrupted { epoch })),
            FitEnd::TimedOut => return Ok(Fitted::Ended(TrialOutcome::TimedOut { epoch })),
            FitEnd::Pruned(d) => return Ok(Fitted::Ended(TrialOutcome::Pruned(d))),
            FitEnd::Stopped(reason) => reason,
        };
        // The epoch whose weights the trainer holds.
        let epoch = if l.driver.restore_best {
            report.state.best_epoch
        } else {
            Some(report.state.epochs_done)
        };
        let thresholds = epoch.and_then(|e| report.state.calibrated_thresholds(e));
        if let (Some(t), Some(e)) = (&thresholds, epoch) {
            log(&format!(
                "thresholds calibrated on the validation volumes after epoch {e}: {}",
                describe_thresholds(&cfg.classes, t)
            ));
        }
        Ok(Fitted::Trained(Trained {
            trainer: Some(trainer),
            thresholds,
            epochs: report.state.epochs_done,
            best_epoch: epoch,
            stop: reason,
        }))
    }

    /// Step 2: the CycleGAN's mask domain: synthetic masks (written to the trial folder), or
    /// the annotated ones; None for the supervised models.
    fn mask_domain(
        &self,
        timings: &mut Vec<(&'static str, f64)>,
    ) -> Result<Option<Vec<PatchVolume>>, TrainError> {
        let ctx = self.ctx;
        Ok(match &ctx.config.settings {
            ModelSettings::CycleGan {
                synth,
                masks: MaskSource::Synthetic,
                ..
            } => {
                let t = Instant::now();
                let mut out = Vec::new();
                for (i, v) in self.fold.train.iter().enumerate() {
                    let seed = synthetic_mask_seed(ctx.seed, i);
                    let m = generate_masks(synth, v.image.spatial(), seed)?;
                    write_mask_file(
                        &self.paths.synth_masks().join(format!("{}.tif", v.id)),
                        &m.mask,
                    )?;
                    out.push(PatchVolume {
                        id: v.id.clone(),
                        image: m.mask.map(f32::from),
                        mask: None,
                    });
                }
                timings.push(("synth_masks", t.elapsed().as_secs_f64()));
                Some(out)
            }
            ModelSettings::CycleGan {
                masks: MaskSource::Annotated,
                ..
            } => Some(annotated_mask_domain(&self.fold.train)?),
            _ => None,
        })
    }

    /// Step 3: the patch sets of the fit. The CycleGAN (unpaired, `synthetic` is its mask
    /// domain) never sees the ground truth of its training images.
    fn patch_sets(&self, synthetic: Option<Vec<PatchVolume>>) -> Result<FitSets, TrainError> {
        let l = self.learned;
        let (train_vols, val_vols) = (&self.fold.train, &self.fold.val);
        let size = [l.patches.size; 3];
        let unpaired = synthetic.is_some();
        let to_patch = |v: &FoldVolume, with_mask: bool| PatchVolume {
            id: v.id.clone(),
            image: v.image.clone(),
            mask: if with_mask { v.mask.clone() } else { None },
        };
        if train_vols.is_empty() {
            return Err(TrainError::Setting(format!(
                "fold {} has no training volumes",
                self.ctx.fold
            )));
        }
        let train = PatchSet::new(
            train_vols.iter().map(|v| to_patch(v, !unpaired)).collect(),
            size,
        )?;
        let val_masks = !val_vols.is_empty() && val_vols.iter().all(|v| v.mask.is_some());
        let val_volumes: Vec<PatchVolume> = if l.driver.val_volumes && val_masks {
            val_vols.iter().map(|v| to_patch(v, true)).collect()
        } else {
            Vec::new()
        };
        let val = if val_vols.is_empty() {
            None
        } else {
            Some(PatchSet::new(
                val_vols.iter().map(|v| to_patch(v, val_masks)).collect(),
                size,
            )?)
        };
        let synthetic = synthetic.map(|s| PatchSet::new(s, size)).transpose()?;
        Ok(FitSets {
            train,
            synthetic,
            val,
            val_volumes,
        })
    }
}

/// The patch sets a fit reads (see [`FitData`]).
struct FitSets {
    train: PatchSet,
    synthetic: Option<PatchSet>,
    val: Option<PatchSet>,
    val_volumes: Vec<PatchVolume>,
}

/// Steps 5 and 6: predicts every test volume (the trained model, or Otsu's threshold for the
/// baseline), writes the mask, and evaluates it where there is ground truth. Returns the
/// seconds spent predicting and evaluating.
fn predict_and_evaluate(
    ctx: &TrialContext,
    paths: &TrialPaths,
    test: &[FoldVolume],
    trained: &Trained,
    sink: &mut dyn TrialSink,
    log: &mut dyn FnMut(&str),
) -> Result<(f64, f64), TrainError> {
    let cfg = &ctx.config;
    let (mut predict_s, mut evaluate_s) = (0.0, 0.0);
    for v in test {
        let t = Instant::now();
        let mask = match (&trained.trainer, cfg.learned()) {
            (Some(tr), Some(l)) => {
                let mut windows = TrainerWindows {
                    trainer: tr.as_ref(),
                    out_channels: cfg.classes.len(),
                };
                let pred = predict_volume(&mut windows, &v.image, &l.infer)?;
                match &trained.thresholds {
                    Some(t) => pred.mask_at(t)?,
                    None => pred.mask,
                }
            }
            _ => otsu_mask(&v.image, cfg.classes.len(), &v.id)?,
        };
        write_mask_file(&paths.prediction(&v.id), &mask)?;
        predict_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        if let Some(gt) = &v.mask {
            let e = evaluate(&mask, gt, &cfg.classes, &cfg.eval)?;
            let rows: Vec<ResultRow> = e
                .rows()
                .into_iter()
                .map(|r| ResultRow {
                    trial_id: ctx.trial_id.clone(),
                    attempt: ctx.attempt,
                    volume: v.id.clone(),
                    class: r.class,
                    metric: r.metric,
                    value: r.value,
                })
                .collect();
            let dice: Vec<String> = e
                .classes
                .iter()
                .map(|(c, m)| format!("{c} {:.4}", m.voxel.dice))
                .collect();
            log(&format!("test {}: dice {}", v.id, dice.join(", ")));
            sink.results(&rows)?;
        } else {
            log(&format!("test {}: no ground truth, not evaluated", v.id));
        }
        evaluate_s += t.elapsed().as_secs_f64();
    }
    Ok((predict_s, evaluate_s))
}

/// `golgi 0.50, nuclei 0.85`.
pub fn describe_thresholds(classes: &[String], thresholds: &[f32]) -> String {
    classes
        .iter()
        .zip(thresholds)
        .map(|(c, t)| format!("{c} {t:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The threshold baseline: image channel `c` > its Otsu threshold is class `c`.
fn otsu_mask(image: &Volume<f32>, classes: usize, id: &str) -> Result<Volume<u8>, TrainError> {
    if image.channels() < classes {
        return Err(TrainError::Setting(format!(
            "threshold baseline: volume `{id}` has {} image channels for {classes} classes",
            image.channels()
        )));
    }
    let [_, z, y, x] = image.shape();
    let mut out = Volume::<u8>::zeros([classes, z, y, x]).with_spacing(image.spacing);
    for c in 0..classes {
        let src = image.channel(c);
        let t = otsu_threshold(src).unwrap_or(f32::INFINITY);
        for (o, &v) in out.channel_mut(c).iter_mut().zip(src) {
            *o = u8::from(v > t);
        }
    }
    Ok(out)
}

/// The name of an empty image channel (see [`blank_image_channels`]).
const BLANK_CHANNEL: &str = "blank";

/// How many empty image channels the trial's network takes beyond the dataset's: one for a
/// 3-class network on golgi and nuclei images, whose published versions read the crops' empty
/// blue channel as a third input (zeros for the U-Net and Vox2Vox, −1 for the CycleGAN after
/// scaling; thesis §4.1, the published 3-class notebooks); none otherwise.
fn blank_image_channels(cfg: &TrialConfig, dataset_channels: &[String]) -> usize {
    let inputs = match &cfg.settings {
        ModelSettings::Unet3d { net, .. } => net.in_channels,
        ModelSettings::Vox2Vox { net, .. } => net.in_channels,
        ModelSettings::CycleGan { net, .. } => net.image_channels,
        ModelSettings::Threshold => return 0,
    };
    let published = dataset_channels == ["golgi", "nuclei"];
    if published && inputs == 3 { 1 } else { 0 }
}

/// `image` with `n` more channels, every voxel `fill`.
fn with_blank_channels(image: Volume<f32>, n: usize, fill: f32) -> Volume<f32> {
    if n == 0 {
        return image;
    }
    let [_, z, y, x] = image.shape();
    let blank = Volume::filled([n, z, y, x], fill);
    Volume::stack_channels(&[&image, &blank]).expect("same spatial shape")
}

/// A fresh trainer for the trial's model (the networks take the dataset's image channels).
pub fn build_trainer(
    cfg: &TrialConfig,
    image_names: &[String],
    seed: u64,
    device: &Device,
) -> Result<Box<dyn Trainer>, TrainError> {
    let check = |field: &str, n: usize| {
        if n != image_names.len() {
            Err(TrainError::Setting(format!(
                "{field} = {n} but the dataset has {} image channels ({}); set --set {field}={}",
                image_names.len(),
                image_names.join(", "),
                image_names.len()
            )))
        } else {
            Ok(())
        }
    };
    Ok(match &cfg.settings {
        ModelSettings::Unet3d { net, train } => {
            check("net.in_channels", net.in_channels)?;
            Box::new(Unet3dTrainer::new(
                net.clone(),
                train.clone(),
                seed,
                device,
            )?)
        }
        ModelSettings::Vox2Vox { net, train } => {
            check("net.in_channels", net.in_channels)?;
            Box::new(Vox2VoxTrainer::new(
                net.clone(),
                train.clone(),
                seed,
                device,
            )?)
        }
        ModelSettings::CycleGan { net, train, .. } => {
            check("net.image_channels", net.image_channels)?;
            Box::new(CycleGanTrainer::new(
                net.clone(),
                train.clone(),
                image_names,
                &cfg.classes,
                seed,
                device,
            )?)
        }
        ModelSettings::Threshold => {
            return Err(TrainError::Setting(
                "the threshold baseline has no trainer".into(),
            ));
        }
    })
}

/// Rebuilds a trainer from a checkpoint directory alone (`seglab predict`): the model and
/// training configuration come from its `state.json`.
pub fn trainer_from_checkpoint(
    dir: &Path,
    device: &Device,
) -> Result<Box<dyn Trainer>, TrainError> {
    let info = checkpoint::read_info(dir)?;
    let path = dir.join(checkpoint::STATE_FILE);
    let bad = |e: serde_json::Error| TrainError::Checkpoint {
        path: path.clone(),
        message: format!("configuration: {e}"),
    };
    let (net, train) = (&info.model_config, &info.train_config);
    let channels = |key: &str| stored_channels(net, key, &path);
    let mut trainer: Box<dyn Trainer> = match info.model {
        ModelKind::Unet3d => Box::new(Unet3dTrainer::new(
            over_defaults(
                &Unet3dConfig::new(channels("in_channels")?, channels("out_channels")?),
                net,
            )
            .map_err(bad)?,
            over_defaults(&Unet3dTrainConfig::new(), train).map_err(bad)?,
            info.seed,
            device,
        )?),
        ModelKind::Vox2Vox => Box::new(Vox2VoxTrainer::new(
            over_defaults(
                &Vox2VoxConfig::new(channels("in_channels")?, channels("out_channels")?),
                net,
            )
            .map_err(bad)?,
            over_defaults(&Vox2VoxTrainConfig::new(), train).map_err(bad)?,
            info.seed,
            device,
        )?),
        ModelKind::CycleGan => {
            let net: CycleGanConfig = over_defaults(
                &CycleGanConfig::new(channels("image_channels")?, channels("mask_channels")?),
                net,
            )
            .map_err(bad)?;
            // Channel names only weigh the training losses; prediction does not use them.
            let names = |n: usize| (0..n).map(|i| format!("channel{i}")).collect::<Vec<_>>();
            let (img, msk) = (names(net.image_channels), names(net.mask_channels));
            Box::new(CycleGanTrainer::new(
                net,
                over_defaults(&CycleGanTrainConfig::new(), train).map_err(bad)?,
                &img,
                &msk,
                info.seed,
                device,
            )?)
        }
        ModelKind::Threshold => {
            return Err(TrainError::Checkpoint {
                path,
                message: "the threshold baseline has no checkpoint".into(),
            });
        }
    };
    trainer.load_checkpoint(dir)?;
    Ok(trainer)
}

/// A configuration stored by a checkpoint, laid over `defaults` ([`checkpoint::overlay`]): an
/// option added to seglab after the checkpoint was written takes its default, which is the
/// behaviour before the option existed, instead of failing as a missing field.
fn over_defaults<T: serde::Serialize + serde::de::DeserializeOwned>(
    defaults: &T,
    stored: &serde_json::Value,
) -> Result<T, serde_json::Error> {
    let mut merged = serde_json::to_value(defaults)?;
    checkpoint::overlay(&mut merged, stored);
    serde_json::from_value(merged)
}

/// The number of mask channels a checkpoint's network predicts.
pub fn checkpoint_out_channels(dir: &Path) -> Result<usize, TrainError> {
    let info = checkpoint::read_info(dir)?;
    let key = match info.model {
        ModelKind::CycleGan => "mask_channels",
        _ => "out_channels",
    };
    stored_channels(&info.model_config, key, &dir.join(checkpoint::STATE_FILE))
}

/// A channel count `key` of a stored model configuration (read from `path`).
fn stored_channels(net: &serde_json::Value, key: &str, path: &Path) -> Result<usize, TrainError> {
    net.get(key)
        .and_then(|v| v.as_u64())
        .map(|n| n as usize)
        .ok_or_else(|| TrainError::Checkpoint {
            path: path.to_path_buf(),
            message: format!("model configuration has no `{key}`"),
        })
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn create_dir(dir: &Path) -> Result<(), TrainError> {
    fs::create_dir_all(dir).map_err(io_err(dir))
}
