//! The one epoch driver of seglab: every trainer ([`Trainer`]) is fitted by
//! [`fit`], which owns the epoch loop, validation, early stopping, model selection, collapse
//! detection, checkpoints, resume and the per-epoch rows.
//!
//! **Epochs.** Supervised models (U-Net, Vox2Vox) take paired image/mask patches; an epoch is
//! ⌊patches / batch⌋ steps over the patch grid (reshuffled per epoch when `train.shuffle`, in
//! the fixed published order otherwise, docs/published-code.md §1.7), or
//! `train.iterations_per_epoch` steps. CycleGAN epochs are iteration based (§5.4): each step
//! draws `batch` image patches and, independently, `batch` synthetic-mask patches, uniformly
//! with replacement; ⌊image patches / batch⌋ steps unless `train.iterations_per_epoch` is set.
//! Every draw depends only on (seed, epoch), so an epoch can be replayed.
//!
//! **Validation** runs after every epoch on the validation *patches* (the grid of the
//! validation volumes, as the published Keras `validation_data` and Vox2Vox validation pass
//! do; `train.val_batches` caps it): the trainer's validation losses (`valid_step`) and the
//! per-class Dice of the thresholded prediction (`dice_<class>`, pooled over all validation
//! patches) when the validation volumes have masks. CycleGAN's validation losses pair the
//! validation images with a fixed draw of synthetic masks, so they need no ground truth.
//! With `train.val_volumes` the Dice comes instead from the whole validation volumes,
//! predicted exactly as the test volumes are (`infer::predict_volume` with `infer.*`) and
//! pooled over them: the criterion then measures what the trial reports. Per-window
//! normalisation makes the two differ: a demo CycleGAN scored 0.33 nuclei Dice on its
//! validation patches and 0.61 on the same volumes merged with centre-weighted windows.
//!
//! **Model selection** ([`Selection`]): `val-loss` (the trainer's first validation loss —
//! for CycleGAN the segmenter's composite cycle + identity + adversarial loss on validation
//! images and synthetic masks, the documented unsupervised criterion) or `val-dice` (mean
//! validation Dice, needs masks). The best epoch is written to `checkpoint_best` and, with
//! `train.restore_best`, restored after training. Early stopping: `train.patience`
//! consecutive epochs without an improvement larger than `train.min_delta`.
//!
//! **Collapse** ([`CollapseConfig`](super::config::CollapseConfig)): the mean absolute
//! difference between the predicted probabilities of consecutive validation patches
//! (`output_spread`) is compared with that of their inputs; an output spread below the
//! threshold for inputs that differ means the segmenter ignores its input. After
//! `collapse.patience` such epochs in a row training stops with [`StopReason::Collapse`].
//!
//! **Checkpoints and resume.** `checkpoint_best` holds the weights of the best epoch only
//! (no optimizer state: prediction and restore-best need no more) with its `driver.json`.
//! `checkpoint_latest` holds the trainer's full state (weights,
//! optimizer moments, pools, step counter) plus `driver.json` ([`DriverState`]: epochs done,
//! the position inside an interrupted epoch with its partial loss sums, best value and epoch,
//! patience counters, the epoch history and cumulative timings). It is written every
//! `train.checkpoint_every` epochs, at the end and when the [`StopFlag`] is raised (checked
//! before every step). A resumed fit re-emits the stored history to the sink and continues
//! with exactly the batches and random streams the uninterrupted fit would have used, so
//! its losses are identical. Both files are staged beside the checkpoint and swapped in
//! together. The step inside the epoch goes to `progress.json` beside it (`train::progress`)
//! for `sweep status`.
//!
//! A non-finite training loss stops the fit with [`TrainError::NonFinite`].

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::checkpoint::Contents;
use super::config::TrialSink;
use super::config::{DriverConfig, PatchConfig, PatchSampling, Selection, StopFlag, StopReason};
use super::progress::{ProgressWriter, StepProgress};
use super::{Batch, StepLosses, TrainError, Trainer};
use crate::dataset::augment::{AugmentConfig, ImageValues, augment_batch};
use crate::dataset::patches::{
    GridPatches, PatchBatch, PatchOrigin, PatchSet, PatchVolume, RandomPatches,
};
use crate::infer::calibrate::{ThresholdCounts, candidate_thresholds, dice_of};
use crate::infer::{InferError, SlidingWindowConfig, WindowPredictor, predict_volume};
use crate::metrics::Connectivity;
use crate::metrics::components::label;
use crate::models::init::derive_seed;
use crate::tracking::EpochRow;
use crate::volume::Volume;

/// Validation rows `threshold_<class>`: the calibrated thresholds (`train.calibrate_threshold`).
pub const THRESHOLD_PREFIX: &str = "threshold_";

/// The driver's own file inside a checkpoint directory.
pub const DRIVER_STATE_FILE: &str = "driver.json";

/// Random streams of the driver (derived from the trial seed).
const STREAM_ORDER: u64 = 101;
const STREAM_IMAGES: u64 = 102;
const STREAM_MASKS: u64 = 103;
const STREAM_VAL_MASKS: u64 = 104;
const STREAM_AUGMENT: u64 = 105;

/// The patches a fit uses.
pub struct FitData<'a> {
    /// Training patches: paired images and masks (U-Net, Vox2Vox) or images only (CycleGAN).
    pub train: &'a PatchSet,
    /// CycleGAN only: the synthetic masks (domain B) as an image-only set whose image
    /// channels are the mask channels (0/1 values), drawn independently of `train`.
    pub synthetic: Option<&'a PatchSet>,
    /// Validation patches; masks, when present, give the validation Dice.
    pub val: Option<&'a PatchSet>,
    /// The validation volumes themselves (unpadded, with masks) for `train.val_volumes`.
    pub val_volumes: &'a [PatchVolume],
}

/// Settings and identity of one fit.
pub struct FitOptions<'a> {
    pub driver: &'a DriverConfig,
    pub patches: &'a PatchConfig,
    /// Mask channel names (validation rows `dice_<class>`).
    pub classes: &'a [String],
    /// Sliding-window prediction (`infer.*`): its threshold marks foreground in validation
    /// patches; `train.val_volumes` predicts whole validation volumes with all of it.
    pub infer: &'a SlidingWindowConfig,
    pub seed: u64,
    pub trial_id: &'a str,
    pub attempt: u32,
    pub checkpoint_latest: PathBuf,
    pub checkpoint_best: PathBuf,
    /// Continue from `checkpoint_latest` when it holds a driver state.
    pub resume: bool,
    /// Flips and rotations of the training patches (`data.augment`).
    pub augment: &'a AugmentConfig,
    /// The model-scale value of an empty image voxel (the border of rotated patches).
    pub image_fill: f32,
}

/// One epoch of the history: mean training losses, validation values, cumulative seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: u32,
    pub train: Vec<(String, f64)>,
    pub val: Vec<(String, f64)>,
    /// Cumulative training + validation seconds at the end of the epoch.
    pub wall_s: f64,
}

/// Everything besides the trainer's state that a resumed fit needs (`driver.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DriverState {
    /// Completed epochs.
    pub epochs_done: u32,
    /// Steps already taken in the epoch after `epochs_done` (an interrupted epoch).
    pub step_in_epoch: u64,
    /// Loss sums of those steps, in the trainer's loss order.
    pub partial: Vec<(String, f64)>,
    pub best_value: Option<f64>,
    pub best_epoch: Option<u32>,
    /// Epochs since the last improvement.
    pub bad_epochs: u32,
    /// Consecutive collapsed epochs.
    pub collapsed_epochs: u32,
    pub history: Vec<EpochRecord>,
    pub train_s: f64,
    pub validate_s: f64,
    /// Set once training has ended (a resume then skips straight to prediction).
    pub stopped: Option<StopReason>,
}

impl DriverState {
    /// The per-class thresholds calibrated on the validation volumes after `epoch`
    /// (`train.calibrate_threshold`; its `threshold_<class>` rows in class order), if any.
    pub fn calibrated_thresholds(&self, epoch: u32) -> Option<Vec<f32>> {
        let rec = self.history.iter().find(|r| r.epoch == epoch)?;
        let t: Vec<f32> = rec
            .val
            .iter()
            .filter(|(k, _)| k.starts_with(THRESHOLD_PREFIX))
            .map(|&(_, v)| v as f32)
            .collect();
        (!t.is_empty()).then_some(t)
    }
}

/// How a fit ended.
#[derive(Clone, Debug, PartialEq)]
pub enum FitEnd {
    Stopped(StopReason),
    /// The stop flag was raised; `checkpoint_latest` holds the state.
    Interrupted,
    /// `train.max_minutes` ran out; `checkpoint_latest` holds the state.
    TimedOut,
    /// Behind a rung's cut (the sink's [`TrialSink::rung`]); `checkpoint_latest` holds the
    /// state.
    Pruned(super::config::PruneDecision),
}

/// The result of [`fit`].
#[derive(Clone, Debug, PartialEq)]
pub struct FitReport {
    pub end: FitEnd,
    pub state: DriverState,
}

/// Fits `trainer` on `data` (module doc). Rows go to `sink` once per epoch; `log` receives
/// one human-readable line per event.
pub fn fit(
    trainer: &mut dyn Trainer,
    data: &FitData,
    opts: &FitOptions,
    sink: &mut dyn TrialSink,
    stop: &StopFlag,
    log: &mut dyn FnMut(&str),
) -> Result<FitReport, TrainError> {
    let cfg = opts.driver;
    let plan = Plan::new(data, opts)?;
    let val_masks = data.val.is_some_and(|v| v.mask_channels().is_some());
    if cfg.selection == Selection::ValDice && data.val.is_some() && !val_masks {
        return Err(TrainError::Setting(
            "train.selection = val-dice needs validation volumes with masks; use \
             train.selection=val-loss (the unsupervised criterion)"
                .into(),
        ));
    }

    if cfg.selection == Selection::LabelFree {
        if data.synthetic.is_none() {
            return Err(TrainError::Setting(
                "train.selection = label-free compares predictions with synthetic masks: it \
                 needs the CycleGAN with cyclegan.masks = \"synthetic\""
                    .into(),
            ));
        }
        if cfg.calibrate_threshold {
            return Err(TrainError::Setting(
                "train.selection = label-free uses no validation mask, but \
                 train.calibrate_threshold chooses thresholds on them: turn it off"
                    .into(),
            ));
        }
        if data.val.is_none() {
            return Err(TrainError::Setting(
                "train.selection = label-free needs validation images; this fold has none".into(),
            ));
        }
    }
    if cfg.calibrate_threshold && data.val_volumes.is_empty() {
        return Err(TrainError::Setting(
            "train.calibrate_threshold needs validation volumes with masks; this fold has none"
                .into(),
        ));
    }

    let mut state = DriverState::default();
    if opts.resume && opts.checkpoint_latest.join(DRIVER_STATE_FILE).exists() {
        super::checkpoint::require_full(&opts.checkpoint_latest)?;
        trainer.load_checkpoint(&opts.checkpoint_latest)?;
        state = read_state(&opts.checkpoint_latest)?;
        log(&format!(
            "resumed from {} after {} epochs and {} steps",
            opts.checkpoint_latest.display(),
            state.epochs_done,
            state.step_in_epoch
        ));
        for rec in &state.history {
            sink.epochs(&rows_of(rec, opts))?;
        }
    }

    if state.stopped.is_none() {
        let deadline = cfg
            .max_minutes
            .map(|m| Instant::now() + std::time::Duration::from_secs_f64(m * 60.0));
        let end = epochs(
            trainer, data, opts, &plan, &mut state, sink, stop, deadline, log,
        )?;
        match end {
            FitEnd::Interrupted | FitEnd::TimedOut | FitEnd::Pruned(_) => {
                save(trainer, &opts.checkpoint_latest, &state, Contents::Full)?;
                let why = match &end {
                    FitEnd::TimedOut => "train.max_minutes ran out".to_string(),
                    FitEnd::Pruned(d) => d.to_string(),
                    _ => "interrupted".to_string(),
                };
                log(&format!(
                    "{why} after {} epochs and {} steps; state in {}",
                    state.epochs_done,
                    state.step_in_epoch,
                    opts.checkpoint_latest.display()
                ));
                return Ok(FitReport { end, state });
            }
            FitEnd::Stopped(reason) => {
                state.stopped = Some(reason);
                save(trainer, &opts.checkpoint_latest, &state, Contents::Full)?;
            }
        }
    }
    let reason = state.stopped.expect("set above");
    if cfg.restore_best
        && let Some(best) = state.best_epoch
        && best != state.epochs_done
    {
        trainer.load_checkpoint(&opts.checkpoint_best)?;
        log(&format!("restored the weights of epoch {best}"));
    }
    Ok(FitReport {
        end: FitEnd::Stopped(reason),
        state,
    })
}

/// The epoch loop; returns when training ends, the stop flag is raised, the `deadline` has
/// passed (checked before each step once this call took one, so every attempt progresses) or
/// the sink prunes the trial at a rung.
#[allow(clippy::too_many_arguments)]
fn epochs(
    trainer: &mut dyn Trainer,
    data: &FitData,
    opts: &FitOptions,
    plan: &Plan,
    state: &mut DriverState,
    sink: &mut dyn TrialSink,
    stop: &StopFlag,
    deadline: Option<Instant>,
    log: &mut dyn FnMut(&str),
) -> Result<FitEnd, TrainError> {
    let cfg = opts.driver;
    let mut taken = 0u64;
    let mut images = data.train.new_batch();
    let mut masks = data.synthetic.map(PatchSet::new_batch);
    let mut progress = ProgressWriter::beside(&opts.checkpoint_latest);
    while state.epochs_done < cfg.epochs {
        let epoch = state.epochs_done;
        let steps = plan.epoch(data.train, epoch, opts.seed);
        let t0 = Instant::now();
        for (i, (img_origins, mask_origins)) in steps.iter().enumerate() {
            if (i as u64) < state.step_in_epoch {
                continue;
            }
            if stop.is_requested() {
                state.train_s += t0.elapsed().as_secs_f64();
                return Ok(FitEnd::Interrupted);
            }
            if taken > 0 && deadline.is_some_and(|d| Instant::now() >= d) {
                state.train_s += t0.elapsed().as_secs_f64();
                return Ok(FitEnd::TimedOut);
            }
            let augment = (!opts.augment.is_off()).then(|| Augment {
                cfg: opts.augment,
                image_fill: opts.image_fill,
                seed: derive_seed(
                    derive_seed(derive_seed(opts.seed, STREAM_AUGMENT), epoch as u64),
                    i as u64,
                ),
            });
            let batch = make_batch(
                trainer,
                data.train,
                img_origins,
                &mut images,
                data.synthetic.zip(mask_origins.as_deref()),
                masks.as_mut(),
                augment,
            )?;
            let losses = trainer.train_step(&batch);
            for (name, v) in &losses.0 {
                if !v.is_finite() {
                    return Err(TrainError::NonFinite {
                        name: name.to_string(),
                        value: *v,
                        epoch: epoch + 1,
                        step: trainer.steps(),
                    });
                }
            }
            accumulate(&mut state.partial, &losses);
            state.step_in_epoch += 1;
            taken += 1;
            progress.step(&StepProgress {
                epoch: epoch + 1,
                step: state.step_in_epoch,
                steps: steps.len() as u64,
                epochs: cfg.epochs,
            });
        }
        state.train_s += t0.elapsed().as_secs_f64();
        let n = state.step_in_epoch.max(1) as f64;
        let train: Vec<(String, f64)> = state
            .partial
            .iter()
            .map(|(k, s)| (k.clone(), s / n))
            .collect();

        let t1 = Instant::now();
        let val = match data.val {
            Some(v) => validate(trainer, v, data, opts, plan)?,
            None => Vec::new(),
        };
        state.validate_s += t1.elapsed().as_secs_f64();
        state.epochs_done += 1;
        state.step_in_epoch = 0;
        state.partial.clear();
        let rec = EpochRecord {
            epoch: epoch + 1,
            train,
            val,
            wall_s: state.train_s + state.validate_s,
        };
        sink.epochs(&rows_of(&rec, opts))?;

        // Selection, early stopping, collapse.
        let mut reason = None;
        let value = selection_value(&rec, cfg.selection);
        let improved = match (value, state.best_value) {
            (None, _) => true, // no validation: the latest epoch is the best
            (Some(_), None) => true,
            (Some(v), Some(b)) => match cfg.selection {
                Selection::ValLoss | Selection::LabelFree => v < b - cfg.min_delta,
                Selection::ValDice => v > b + cfg.min_delta,
            },
        };
        state.history.push(rec.clone());
        if improved {
            state.best_value = value;
            state.best_epoch = Some(rec.epoch);
            state.bad_epochs = 0;
            if value.is_some() {
                save(trainer, &opts.checkpoint_best, state, Contents::Weights)?;
            }
        } else {
            state.bad_epochs += 1;
            if cfg.patience > 0 && state.bad_epochs >= cfg.patience {
                reason = Some(StopReason::EarlyStopping);
            }
        }
        if cfg.collapse.enabled && collapsed(&rec, cfg.collapse.threshold) {
            state.collapsed_epochs += 1;
            if state.collapsed_epochs >= cfg.collapse.patience {
                reason = Some(StopReason::Collapse);
            }
        } else {
            state.collapsed_epochs = 0;
        }
        if state.epochs_done >= cfg.epochs && reason.is_none() {
            reason = Some(StopReason::MaxEpochs);
        }
        log(&epoch_line(&rec, improved && value.is_some()));
        if reason.is_none()
            && state.epochs_done < cfg.epochs
            && let Some(d) = sink.rung(state.epochs_done, cfg.epochs)?
        {
            return Ok(FitEnd::Pruned(d));
        }
        if let Some(r) = reason {
            log(&format!(
                "training stopped: {} (best epoch {})",
                stop_text(r),
                state.best_epoch.map_or("-".into(), |e| e.to_string())
            ));
            return Ok(FitEnd::Stopped(r));
        }
        if state.epochs_done.is_multiple_of(cfg.checkpoint_every) {
            save(trainer, &opts.checkpoint_latest, state, Contents::Full)?;
        }
    }
    Ok(FitEnd::Stopped(StopReason::MaxEpochs))
}

fn stop_text(r: StopReason) -> &'static str {
    match r {
        StopReason::MaxEpochs => "maximum number of epochs",
        StopReason::EarlyStopping => "no improvement within train.patience epochs",
        StopReason::Collapse => "collapse (the prediction no longer depends on the input)",
        StopReason::NoTraining => "no training",
    }
}

fn epoch_line(rec: &EpochRecord, best: bool) -> String {
    let fmt = |v: &[(String, f64)]| {
        v.iter()
            .map(|(k, x)| format!("{k} {x:.5}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "epoch {}: train [{}] val [{}] {:.1}s{}",
        rec.epoch,
        fmt(&rec.train),
        fmt(&rec.val),
        rec.wall_s,
        if best { " *best*" } else { "" }
    )
}

fn selection_value(rec: &EpochRecord, selection: Selection) -> Option<f64> {
    match selection {
        Selection::ValLoss => rec.val.iter().find(|(k, _)| k.starts_with("loss_")),
        Selection::ValDice => rec.val.iter().find(|(k, _)| k == "dice_mean"),
        Selection::LabelFree => rec.val.iter().find(|(k, _)| k == LABEL_FREE),
    }
    .map(|&(_, v)| v)
}

fn collapsed(rec: &EpochRecord, threshold: f64) -> bool {
    let get = |name: &str| rec.val.iter().find(|(k, _)| k == name).map(|&(_, v)| v);
    match (get("output_spread"), get("input_spread")) {
        (Some(out), Some(inp)) => inp > 1e-6 && out < threshold,
        _ => false,
    }
}

fn rows_of(rec: &EpochRecord, opts: &FitOptions) -> Vec<EpochRow> {
    let row = |split: &str, (metric, value): &(String, f64)| EpochRow {
        trial_id: opts.trial_id.to_string(),
        attempt: opts.attempt,
        epoch: rec.epoch,
        split: split.to_string(),
        metric: metric.clone(),
        value: *value,
        wall_s: rec.wall_s,
    };
    rec.train
        .iter()
        .map(|m| row("train", m))
        .chain(rec.val.iter().map(|m| row("val", m)))
        .collect()
}

fn accumulate(sums: &mut Vec<(String, f64)>, losses: &StepLosses) {
    for (name, v) in &losses.0 {
        match sums.iter_mut().find(|(k, _)| k == name) {
            Some((_, s)) => *s += v,
            None => sums.push((name.to_string(), *v)),
        }
    }
}

/// The batches of every epoch.
struct Plan {
    /// Training (image) origins: the grid, or `None` for random sampling.
    grid: Option<Vec<PatchOrigin>>,
    /// CycleGAN: the synthetic-mask grid.
    mask_grid: Option<Vec<PatchOrigin>>,
    val: Vec<PatchOrigin>,
    batch: usize,
    steps: usize,
    shuffle: bool,
    sampling: PatchSampling,
    count: usize,
    unpaired: bool,
}

type Step = (Vec<PatchOrigin>, Option<Vec<PatchOrigin>>);

impl Plan {
    fn new(data: &FitData, opts: &FitOptions) -> Result<Self, TrainError> {
        let p = opts.patches;
        let step = [p.step; 3];
        let cfg = opts.driver;
        let unpaired = data.synthetic.is_some();
        if !unpaired && data.train.mask_channels().is_none() {
            return Err(TrainError::Setting(
                "supervised training needs masks for the training volumes".into(),
            ));
        }
        let grid_of = |set: &PatchSet| -> Result<Vec<PatchOrigin>, TrainError> {
            Ok(GridPatches::new(set, step)?.origins().to_vec())
        };
        let grid = grid_of(data.train)?;
        let mask_grid = data.synthetic.map(grid_of).transpose()?;
        let val = match data.val {
            Some(v) => grid_of(v)?,
            None => Vec::new(),
        };
        let available = match p.sampling {
            PatchSampling::Grid => grid.len(),
            PatchSampling::Random => p.count,
        };
        if available == 0 {
            return Err(TrainError::Setting(
                "no training patches: the training volumes are smaller than data.patches.size"
                    .into(),
            ));
        }
        let steps = match cfg.iterations_per_epoch {
            Some(n) => n as usize,
            None => (available / cfg.batch).max(1),
        };
        Ok(Self {
            grid: (p.sampling == PatchSampling::Grid).then_some(grid),
            mask_grid,
            val,
            batch: cfg.batch,
            steps,
            shuffle: cfg.shuffle,
            sampling: p.sampling,
            count: p.count,
            unpaired,
        })
    }

    /// The batches of epoch `epoch` (0-based); a pure function of (seed, epoch).
    fn epoch(&self, set: &PatchSet, epoch: u32, seed: u64) -> Vec<Step> {
        let e = u64::from(epoch);
        let images: Vec<PatchOrigin> = match &self.grid {
            Some(g) => g.clone(),
            None => RandomPatches::new(derive_seed(derive_seed(seed, STREAM_ORDER), e))
                .sample(set, self.count),
        };
        if self.unpaired {
            // CycleGAN (§5.4): independent draws with replacement from both domains.
            let mut ri = RandomPatches::new(derive_seed(derive_seed(seed, STREAM_IMAGES), e));
            let mut rm = RandomPatches::new(derive_seed(derive_seed(seed, STREAM_MASKS), e));
            let masks = self.mask_grid.as_deref().unwrap_or_default();
            return (0..self.steps)
                .map(|_| {
                    (
                        ri.sample_from(&images, self.batch),
                        Some(rm.sample_from(masks, self.batch)),
                    )
                })
                .collect();
        }
        let order = if self.shuffle && self.sampling == PatchSampling::Grid {
            shuffled(&images, derive_seed(seed, STREAM_ORDER), e)
        } else {
            images
        };
        let n = order.len();
        (0..self.steps)
            .map(|s| {
                let o = (0..self.batch)
                    .map(|j| order[(s * self.batch + j) % n])
                    .collect();
                (o, None)
            })
            .collect()
    }
}

fn shuffled(origins: &[PatchOrigin], seed: u64, epoch: u64) -> Vec<PatchOrigin> {
    use rand::SeedableRng;
    use rand::rngs::ChaCha8Rng;
    use rand::seq::SliceRandom;
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, epoch));
    let mut v = origins.to_vec();
    v.shuffle(&mut rng);
    v
}

/// The augmentation of one training step: its settings and the seed of its draws.
struct Augment<'a> {
    cfg: &'a AugmentConfig,
    image_fill: f32,
    seed: u64,
}

/// Builds the trainer's batch: images from `set`; masks from the same patches (paired) or
/// from the synthetic set at their own origins (unpaired). With `augment`, each image patch is
/// flipped and rotated together with its mask (paired), and the unpaired mask patches get
/// transforms of their own.
fn make_batch(
    trainer: &dyn Trainer,
    set: &PatchSet,
    origins: &[PatchOrigin],
    images: &mut PatchBatch,
    synthetic: Option<(&PatchSet, &[PatchOrigin])>,
    masks: Option<&mut PatchBatch>,
    augment: Option<Augment>,
) -> Result<Batch, TrainError> {
    use rand::SeedableRng;
    let mut rng = augment
        .as_ref()
        .map(|a| rand::rngs::ChaCha8Rng::seed_from_u64(a.seed));
    set.fill_batch(origins, images);
    if let (Some(a), Some(rng)) = (&augment, rng.as_mut()) {
        let values = ImageValues::Intensities { fill: a.image_fill };
        augment_batch(images, a.cfg, values, rng);
    }
    let image_shape = images.image_shape();
    let (mask_data, mask_shape) = match (synthetic, masks) {
        (Some((mset, mo)), Some(mb)) => {
            mset.fill_batch(mo, mb);
            if let (Some(a), Some(rng)) = (&augment, rng.as_mut()) {
                augment_batch(mb, a.cfg, ImageValues::Labels, rng);
            }
            (mb.image.clone(), mb.image_shape())
        }
        _ => {
            let shape = images
                .mask_shape()
                .ok_or_else(|| TrainError::Batch("the training patches have no masks".into()))?;
            (images.mask.iter().map(|&m| f32::from(m)).collect(), shape)
        }
    };
    Batch::from_host(
        images.image.clone(),
        image_shape,
        mask_data,
        mask_shape,
        trainer.device(),
    )
}

/// One validation pass: mean validation losses (`loss_<name>`), per-class Dice and its mean
/// (`dice_<class>`, `dice_mean`) when masks exist, and the input/output spreads.
fn validate(
    trainer: &mut dyn Trainer,
    val: &PatchSet,
    data: &FitData,
    opts: &FitOptions,
    plan: &Plan,
) -> Result<Vec<(String, f64)>, TrainError> {
    let synthetic = data.synthetic;
    let cfg = opts.driver;
    let mut origins = plan.val.clone();
    if let Some(max) = cfg.val_batches {
        origins.truncate(max as usize * cfg.batch);
    }
    if origins.is_empty() {
        return Ok(Vec::new());
    }
    let has_masks = val.mask_channels().is_some();
    // With `train.val_volumes` the Dice counts come from the whole volumes, after the loop.
    let on_volumes = cfg.val_volumes && !data.val_volumes.is_empty();
    let classes = opts.classes.len();
    let mut sums: Vec<(String, f64)> = Vec::new();
    let mut batches = 0usize;
    let mut counts = vec![[0u64; 3]; classes]; // tp, fp, fn
    let (mut out_spread, mut in_spread, mut pairs) = (0.0f64, 0.0f64, 0usize);
    let mut prev: Option<(Vec<f32>, Vec<f32>)> = None;
    let mut images = val.new_batch();
    let mut masks = synthetic.map(PatchSet::new_batch);
    let mut rm = RandomPatches::new(derive_seed(opts.seed, STREAM_VAL_MASKS));
    let mask_grid = plan.mask_grid.as_deref().unwrap_or_default();
    // Unpaired: what the predictions and the synthetic masks look like, per class.
    let mut shapes = synthetic.map(|_| MaskStatistics::new(classes, val.size()));
    for chunk in origins.chunks(cfg.batch) {
        let synth_origins = synthetic.map(|_| rm.sample_from(mask_grid, chunk.len()));
        // Validation losses need masks: the GT (paired) or synthetic draws (unpaired). The
        // losses and the prediction come from one call so that the paired trainers run the
        // network forward once per batch, not twice.
        let pred = if synthetic.is_some() || has_masks {
            let batch = make_batch(
                trainer,
                val,
                chunk,
                &mut images,
                synthetic.zip(synth_origins.as_deref()),
                masks.as_mut(),
                None,
            )?;
            let (losses, pred) = trainer.valid_predict(&batch);
            accumulate(&mut sums, &losses);
            batches += 1;
            pred
        } else {
            val.fill_batch(chunk, &mut images);
            let shape = images.image_shape();
            let input = Tensor::<5>::from_data(
                TensorData::new(images.image.clone(), shape),
                trainer.device(),
            );
            trainer.predict(input)
        };
        let probs: Vec<f32> = pred
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| TrainError::Batch(format!("prediction: {e:?}")))?;
        let per_out = probs.len() / chunk.len();
        let per_in = images.image.len() / chunk.len();
        if let (Some(st), Some(mb)) = (shapes.as_mut(), masks.as_ref()) {
            st.add_predicted(&probs, opts.infer.threshold);
            st.add_reference(&mb.image);
        }
        for k in 0..chunk.len() {
            let p = &probs[k * per_out..(k + 1) * per_out];
            let x = &images.image[k * per_in..(k + 1) * per_in];
            if let Some((pp, px)) = &prev {
                out_spread += mean_abs_diff(p, pp);
                in_spread += mean_abs_diff(x, px);
                pairs += 1;
            }
            prev = Some((p.to_vec(), x.to_vec()));
            if has_masks && !on_volumes {
                let m = &images.mask[k * per_out..(k + 1) * per_out];
                let per_class = per_out / classes;
                for (c, cnt) in counts.iter_mut().enumerate() {
                    let r = c * per_class..(c + 1) * per_class;
                    for (&pv, &mv) in p[r.clone()].iter().zip(&m[r]) {
                        tally(cnt, pv > opts.infer.threshold, mv != 0);
                    }
                }
            }
        }
    }
    let mut out: Vec<(String, f64)> = sums
        .into_iter()
        .map(|(k, s)| (format!("loss_{k}"), s / batches.max(1) as f64))
        .collect();
    // Per class: the Dice and, when calibrated, the threshold it was reached at.
    let per_class: Vec<(f64, Option<f32>)> = if on_volumes {
        let pooled = volume_counts(trainer, data.val_volumes, opts)?;
        (0..classes)
            .map(|c| {
                let (t, d) = pooled.best(c, opts.infer.threshold);
                (d, cfg.calibrate_threshold.then_some(t))
            })
            .collect()
    } else if has_masks {
        counts.iter().map(|&c| (dice_of(c), None)).collect()
    } else {
        Vec::new()
    };
    if !per_class.is_empty() {
        for (name, (d, _)) in opts.classes.iter().zip(&per_class) {
            out.push((format!("dice_{name}"), *d));
        }
        let mean = per_class.iter().map(|(d, _)| d).sum::<f64>() / classes as f64;
        out.push(("dice_mean".into(), mean));
        for (name, (_, t)) in opts.classes.iter().zip(&per_class) {
            if let Some(t) = t {
                out.push((format!("{THRESHOLD_PREFIX}{name}"), f64::from(*t)));
            }
        }
    }
    if pairs > 0 {
        out.push(("output_spread".into(), out_spread / pairs as f64));
        out.push(("input_spread".into(), in_spread / pairs as f64));
    }
    if let Some(st) = shapes {
        let cycle = out
            .iter()
            .find(|(k, _)| k == CYCLE_LOSS)
            .map(|&(_, v)| v)
            .unwrap_or(0.0);
        out.extend(st.rows(opts.classes, cycle));
    }
    Ok(out)
}

/// The validation row of the label-free criterion (`train.selection = label-free`).
pub const LABEL_FREE: &str = "label_free";
/// The CycleGAN's validation cycle loss (image and mask cycles of the segmenter's composite).
const CYCLE_LOSS: &str = "loss_g_ab_cycle";

/// Per class, the foreground fraction and mean connected-component size of thresholded
/// predictions and of the synthetic masks they are compared with, over validation patches:
/// the label-free criterion's evidence. Objects are counted per patch (26-connected), in
/// both alike, so that cut objects bias both the same way.
struct MaskStatistics {
    size: [usize; 3],
    /// Per class: (foreground voxels, voxels, objects) of predictions and of references.
    predicted: Vec<[u64; 3]>,
    reference: Vec<[u64; 3]>,
}

impl MaskStatistics {
    fn new(classes: usize, size: [usize; 3]) -> Self {
        Self {
            size,
            predicted: vec![[0; 3]; classes],
            reference: vec![[0; 3]; classes],
        }
    }

    /// Adds a batch of per-class probabilities (`[batch, classes, d, h, w]`), foreground above
    /// `threshold`.
    fn add_predicted(&mut self, probs: &[f32], threshold: f32) {
        let masks: Vec<u8> = probs.iter().map(|&p| u8::from(p > threshold)).collect();
        Self::add(&mut self.predicted, &masks, self.size);
    }

    /// Adds a batch of synthetic mask patches (values 0/1, same layout).
    fn add_reference(&mut self, masks: &[f32]) {
        let masks: Vec<u8> = masks.iter().map(|&m| u8::from(m > 0.5)).collect();
        Self::add(&mut self.reference, &masks, self.size);
    }

    fn add(into: &mut [[u64; 3]], masks: &[u8], size: [usize; 3]) {
        let per_channel: usize = size.iter().product();
        let classes = into.len();
        for (i, channel) in masks.chunks(per_channel).enumerate() {
            let c = &mut into[i % classes];
            c[0] += channel.iter().filter(|&&m| m != 0).count() as u64;
            c[1] += per_channel as u64;
            c[2] += label(channel, size, Connectivity::TwentySix).count() as u64;
        }
    }

    /// The rows `fg_<class>`, `fg_ref_<class>`, `size_<class>`, `size_ref_<class>` and
    /// [`LABEL_FREE`] = `cycle` + Σ_c |ln((fg + ε)/(fg_ref + ε))| +
    /// Σ_c |ln((size + 1)/(size_ref + 1))|, with ε = 1e-4 and sizes in voxels: 0 when the
    /// predictions look like the synthetic masks and the cycle is perfect; an empty or
    /// flooded class costs several units.
    fn rows(&self, classes: &[String], cycle: f64) -> Vec<(String, f64)> {
        const EPS: f64 = 1e-4;
        let fraction = |c: &[u64; 3]| c[0] as f64 / c[1].max(1) as f64;
        let mean_size = |c: &[u64; 3]| c[0] as f64 / c[2].max(1) as f64;
        let mut rows = Vec::new();
        let mut score = cycle;
        for (name, (p, r)) in classes
            .iter()
            .zip(self.predicted.iter().zip(&self.reference))
        {
            let (fp, fr) = (fraction(p), fraction(r));
            let (sp, sr) = (mean_size(p), mean_size(r));
            score += ((fp + EPS) / (fr + EPS)).ln().abs() + ((sp + 1.0) / (sr + 1.0)).ln().abs();
            rows.push((format!("fg_{name}"), fp));
            rows.push((format!("fg_ref_{name}"), fr));
            rows.push((format!("size_{name}"), sp));
            rows.push((format!("size_ref_{name}"), sr));
        }
        rows.push((LABEL_FREE.into(), score));
        rows
    }
}

/// Per class (tp, fp, fn) of whole `volumes` predicted with `opts.infer`, pooled, at
/// `infer.threshold` — and, with `train.calibrate_threshold`, at every candidate threshold
/// (`infer::calibrate`).
fn volume_counts(
    trainer: &dyn Trainer,
    volumes: &[PatchVolume],
    opts: &FitOptions,
) -> Result<ThresholdCounts, TrainError> {
    let thresholds = if opts.driver.calibrate_threshold {
        let mut t = candidate_thresholds();
        t.push(opts.infer.threshold);
        t
    } else {
        vec![opts.infer.threshold]
    };
    let mut counts = ThresholdCounts::new(opts.classes.len(), thresholds);
    for v in volumes {
        let gt = v.mask.as_ref().ok_or_else(|| {
            TrainError::Setting(format!(
                "train.val_volumes: validation volume {} has no mask",
                v.id
            ))
        })?;
        let mut windows = TrainerWindows {
            trainer,
            out_channels: opts.classes.len(),
        };
        let pred = predict_volume(&mut windows, &v.image, opts.infer)?;
        counts
            .add(&pred.probabilities, gt)
            .map_err(|e| TrainError::Batch(format!("validation volume {}: {e}", v.id)))?;
    }
    Ok(counts)
}

/// Counts one voxel into (tp, fp, fn).
fn tally(cnt: &mut [u64; 3], predicted: bool, truth: bool) {
    match (predicted, truth) {
        (true, true) => cnt[0] += 1,
        (true, false) => cnt[1] += 1,
        (false, true) => cnt[2] += 1,
        _ => {}
    }
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()).max(1);
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from((x - y).abs()))
        .sum::<f64>()
        / n as f64
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the trainer's checkpoint (`contents`) and the driver state into `dir`, replacing it
/// only once both are complete (one staging folder for both: [`crate::atomic::build_folder`]).
fn save(
    trainer: &dyn Trainer,
    dir: &Path,
    state: &DriverState,
    contents: Contents,
) -> Result<(), TrainError> {
    crate::atomic::build_folder(dir, true, |folder| {
        trainer.write_checkpoint(folder, contents)?;
        let file = folder.join(DRIVER_STATE_FILE);
        let json = serde_json::to_string_pretty(state).expect("driver state serialises");
        fs::write(&file, json).map_err(io_err(&file))
    })
}

/// Reads `driver.json` of a checkpoint directory.
pub fn read_state(dir: &Path) -> Result<DriverState, TrainError> {
    let path = dir.join(DRIVER_STATE_FILE);
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path,
        message: format!("not a driver state: {e}"),
    })
}

/// A trainer seen window by window by `infer::predict_volume` (the one prediction path).
pub struct TrainerWindows<'a> {
    pub trainer: &'a dyn Trainer,
    pub out_channels: usize,
}

impl WindowPredictor for TrainerWindows<'_> {
    fn out_channels(&self) -> usize {
        self.out_channels
    }

    fn predict(&mut self, windows: &[Volume<f32>]) -> Result<Vec<Volume<f32>>, InferError> {
        let Some(first) = windows.first() else {
            return Ok(Vec::new());
        };
        let [c, d, h, w] = first.shape();
        let mut data = Vec::with_capacity(windows.len() * first.voxels());
        for win in windows {
            data.extend_from_slice(win.data());
        }
        let input = Tensor::<5>::from_data(
            TensorData::new(data, [windows.len(), c, d, h, w]),
            self.trainer.device(),
        );
        let out = self
            .trainer
            .predict(input)
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| InferError::Predictor(format!("{e:?}")))?;
        let per = self.out_channels * d * h * w;
        if out.len() != per * windows.len() {
            return Err(InferError::Output(format!(
                "expected {} values, got {}",
                per * windows.len(),
                out.len()
            )));
        }
        out.chunks(per)
            .map(|chunk| {
                Volume::from_vec([self.out_channels, d, h, w], chunk.to_vec())
                    .map_err(|e| InferError::Output(e.to_string()))
            })
            .collect()
    }
}
