//! The fully resolved configuration of one trial ([`TrialConfig`]), its dotted-key overrides,
//! its canonical JSON, and the interface between a trial and whoever records it ([`TrialContext`], [`TrialSink`], [`StopFlag`],
//! [`TrialOutcome`]).
//!
//! Every section reuses the config type of the module it belongs to: `data.preprocess` is
//! [`PreprocessConfig`], `net` the model's `#[derive(Config)]` struct, `train.optimizer` /
//! `train.opt_g` / `train.opt_d` are [`AdamSettings`](super::AdamSettings), `loss` is [`DiceLossConfig`] (plus
//! `alpha` for Vox2Vox; `lambda_cycle`, `lambda_identity`, `golgi_weight` for CycleGAN), `synth`
//! is [`MaskConfig`], `infer` is [`SlidingWindowConfig`] and `eval` is [`EvalConfig`]. Only
//! the epoch driver's own settings ([`DriverConfig`]) and the patch settings ([`PatchConfig`])
//! are defined here.
//!
//! The JSON tree (what `config.json` holds and what the trial id hashes):
//!
//! ```text
//! model, classes, preset, scale
//! data.preprocess.*            dataset::preprocess::PreprocessConfig
//! data.patches.{size, sampling, step, count}
//! data.augment.{flip, rotate, max_degrees}    dataset::augment::AugmentConfig
//! net.*                        models::{Unet3dConfig, Vox2VoxConfig, CycleGanConfig}
//! train.{epochs, patience, min_delta, batch, shuffle, iterations_per_epoch, val_batches,
//!        val_volumes, calibrate_threshold, selection, checkpoint_every, max_minutes, keep,
//!        collapse.*}
//! train.optimizer (unet3d) | train.opt_g, train.opt_d (vox2vox, cyclegan) | train.pool_size,
//!                              train.straight_through_masks (cyclegan)
//! loss.*                       Dice settings; vox2vox adds alpha; cyclegan: lambda_cycle,
//!                              lambda_identity, golgi_weight
//! synth.*                      synth::MaskConfig (cyclegan only)
//! cyclegan.masks               synthetic | annotated (cyclegan only)
//! infer.*                      infer::SlidingWindowConfig
//! eval.*                       metrics::EvalConfig
//! ```
//!
//! The `threshold` baseline has no `net`, `train`, `loss`, `synth`, `infer` or `data.patches`.
//!
//! Options added after trials were first stored ([`later_options`]) carry the value that
//! behaves as before they existed; a config at that value hashes as if the key did not exist
//! ([`TrialConfig::identity_value`]), so stored trials keep their ids, and a stored config
//! without the key reads back with it ([`TrialConfig::from_value`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Device;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::losses::DiceLossConfig;
use super::{CycleGanTrainConfig, TrainError, Unet3dTrainConfig, Vox2VoxTrainConfig};
use crate::dataset::MASK_CHANNELS;
use crate::dataset::augment::AugmentConfig;
use crate::dataset::preprocess::{PreprocessConfig, Scale};
use crate::dataset::splits::SplitScheme;
use crate::infer::SlidingWindowConfig;
use crate::metrics::EvalConfig;
use crate::models::{
    CycleGanConfig, ModelError, ModelKind, ModelScale, ScaleSpec, Unet3dConfig, Vox2VoxConfig,
};
use crate::preset::Preset;
use crate::synth::MaskConfig;
use crate::tracking::{EpochRow, ResultRow, TimingRow};

/// How training patches are chosen (docs/published-code.md §1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchSampling {
    /// `patchify` grid with `step` (the published supervised and CycleGAN patches).
    Grid,
    /// `count` patches per epoch at seeded random positions.
    Random,
}

/// Patch settings of a trial (`data.patches`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchConfig {
    /// Edge of the cubic patch in voxels (64 published, 32 at `cpu-small`). Volumes shorter
    /// than this along an axis are reflect-padded at the high end (§1.4: Z to 64).
    pub size: usize,
    pub sampling: PatchSampling,
    /// Grid step in voxels along every axis (64 for 2-class and CycleGAN, 48 for 3-class at
    /// the published size; scaled with the patch size).
    pub step: usize,
    /// Patches per epoch for `random` sampling (unused for `grid`).
    pub count: usize,
}

impl PatchConfig {
    /// Grid patches with the published step for `classes` classes (§1.4).
    pub fn published(size: usize, classes: usize) -> Self {
        let step = if classes >= 3 { size * 3 / 4 } else { size };
        Self {
            size,
            sampling: PatchSampling::Grid,
            step,
            count: 64,
        }
    }

    pub fn validate(&self) -> Result<(), TrainError> {
        if self.size == 0 {
            return Err(cfg_err("data.patches.size", "must be > 0", self.size));
        }
        if self.step == 0 || self.step > self.size {
            return Err(cfg_err(
                "data.patches.step",
                format!("must be between 1 and data.patches.size ({})", self.size),
                self.step,
            ));
        }
        if self.sampling == PatchSampling::Random && self.count == 0 {
            return Err(cfg_err(
                "data.patches.count",
                "must be > 0 for random sampling",
                self.count,
            ));
        }
        Ok(())
    }
}

/// The criterion that picks the best epoch (early stopping, `checkpoint_best`, restore-best).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// The first validation loss of the trainer, lower is better: U-Net Dice loss (Keras
    /// `val_loss`, §3.3), Vox2Vox generator total loss (§4.4), CycleGAN segmenter composite
    /// loss on validation images and synthetic masks — the documented *unsupervised*
    /// criterion, usable without any ground truth.
    ValLoss,
    /// Mean per-class Dice of the thresholded prediction on the validation patches, higher is
    /// better. Needs validation masks.
    ValDice,
    /// CycleGAN with synthetic masks: a criterion from unlabelled validation images only
    /// (`train::driver`, `label_free`: the image-domain cycle error plus how far the predicted
    /// masks' foreground fraction and object size per class stray from the synthetic masks'),
    /// lower is better. Reads no validation mask; thresholds stay at `infer.threshold`.
    LabelFree,
}

impl Selection {
    pub fn name(self) -> &'static str {
        match self {
            Selection::ValLoss => "val-loss",
            Selection::ValDice => "val-dice",
            Selection::LabelFree => "label-free",
        }
    }
}

/// Collapse detection (the segmenter gives the same output for different inputs).
/// After each epoch the driver predicts the validation patches; when the mean absolute
/// difference between the predictions of different patches is below `threshold` while their
/// inputs differ, the epoch counts as collapsed; `patience` consecutive collapsed epochs stop
/// training with the reason `collapse`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollapseConfig {
    pub enabled: bool,
    /// Mean absolute difference of probabilities between patch predictions, in [0, 1].
    pub threshold: f64,
    /// Consecutive collapsed epochs before stopping (≥ 1).
    pub patience: u32,
}

impl Default for CollapseConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold: 1e-3,
            patience: 3,
        }
    }
}

/// The epoch driver's settings (`train.*` minus the optimizers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverConfig {
    /// Maximum number of epochs (U-Net 100, Vox2Vox 200, CycleGAN 100).
    pub epochs: u32,
    /// Stop after this many consecutive epochs without improvement of the selection criterion
    /// (Keras semantics; U-Net 10, Vox2Vox 21 — its counter must *exceed* 20); 0 disables.
    pub patience: u32,
    /// An epoch improves only when it beats the best value by more than this.
    pub min_delta: f64,
    /// Samples per step (4 supervised, 2 CycleGAN).
    pub batch: usize,
    /// Reshuffle the patch order every epoch (Keras `fit`: yes for the U-Net; the Vox2Vox loop:
    /// no, §1.7).
    pub shuffle: bool,
    /// Steps per epoch; `None` = ⌊patches / batch⌋ (a pass over the grid, the last partial batch
    /// dropped as Keras' Sequence does; for CycleGAN the published ⌊433/2⌋ iterations of random
    /// unpaired draws, §5.4).
    pub iterations_per_epoch: Option<u32>,
    /// Validate on at most this many validation batches per epoch (`None`: all of them).
    pub val_batches: Option<u32>,
    /// Validation Dice from the whole validation volumes, predicted as the test volumes are
    /// (`infer.*`), instead of from the validation patches (as published: off).
    #[serde(default)]
    pub val_volumes: bool,
    /// Choose each class's foreground threshold where its Dice on the validation volumes
    /// peaks (`infer::calibrate`; needs `val_volumes`); the test volumes and `seglab predict`
    /// then use the thresholds of the selected epoch instead of `infer.threshold`. Off as
    /// published.
    #[serde(default)]
    pub calibrate_threshold: bool,
    pub selection: Selection,
    /// Restore the best epoch's weights before prediction (Keras `restore_best_weights`).
    pub restore_best: bool,
    /// Write `checkpoint_latest` every N epochs (and always on stop or interruption).
    pub checkpoint_every: u32,
    pub collapse: CollapseConfig,
    /// Wall-clock minutes one attempt may train (`None`: no limit). When they run out the
    /// driver checkpoints and the trial ends `timeout`; a re-run resumes it. A budget rather
    /// than a setting of the model, so not part of the trial id ([`BUDGET_OPTIONS`]).
    #[serde(default)]
    pub max_minutes: Option<f64>,
    /// Which checkpoints a finished trial keeps ([`Keep`], `train::retention`). Not part of
    /// the trial id ([`BUDGET_OPTIONS`]): it changes what stays on disk, not what is computed.
    #[serde(default)]
    pub keep: Keep,
}

/// The checkpoints a trial keeps once it has finished (`train.keep`). Until then it keeps
/// both, so a timed-out, pruned or interrupted trial resumes from `checkpoint_latest`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Keep {
    /// `checkpoint_best` only (weights only; made from the final weights when the fit had no
    /// validation and so no best epoch).
    #[serde(rename = "best")]
    Best,
    /// `checkpoint_latest` only (the full final training state).
    #[serde(rename = "last")]
    Last,
    /// Both (the behaviour before `train.keep` existed).
    #[default]
    #[serde(rename = "best+last")]
    BestLast,
}

impl Keep {
    pub fn keeps_best(self) -> bool {
        matches!(self, Keep::Best | Keep::BestLast)
    }

    pub fn keeps_last(self) -> bool {
        matches!(self, Keep::Last | Keep::BestLast)
    }
}

impl DriverConfig {
    /// The published settings of `model` (docs/published-code.md §3.3, §4.4, §5.4), with
    /// validation-Dice model selection and collapse detection for CycleGAN, whose published
    /// checkpoints were picked by hand (§5.4, §10.1 item 7).
    pub fn published(model: ModelKind) -> Self {
        let base = Self {
            epochs: 100,
            patience: 10,
            min_delta: 0.0,
            batch: 4,
            shuffle: true,
            iterations_per_epoch: None,
            val_batches: None,
            val_volumes: false,
            calibrate_threshold: false,
            selection: Selection::ValLoss,
            restore_best: true,
            checkpoint_every: 1,
            collapse: CollapseConfig::default(),
            max_minutes: None,
            keep: Keep::BestLast,
        };
        match model {
            ModelKind::Vox2Vox => Self {
                epochs: 200,
                patience: 21,
                shuffle: false,
                ..base
            },
            ModelKind::CycleGan => Self {
                batch: 2,
                patience: 0,
                selection: Selection::ValDice,
                collapse: CollapseConfig {
                    enabled: true,
                    ..CollapseConfig::default()
                },
                ..base
            },
            _ => base,
        }
    }

    pub fn validate(&self) -> Result<(), TrainError> {
        if self.epochs == 0 {
            return Err(cfg_err("train.epochs", "must be ≥ 1", self.epochs));
        }
        if self.batch == 0 {
            return Err(cfg_err("train.batch", "must be ≥ 1", self.batch));
        }
        if !(self.min_delta >= 0.0 && self.min_delta.is_finite()) {
            return Err(cfg_err("train.min_delta", "must be ≥ 0", self.min_delta));
        }
        if self.iterations_per_epoch == Some(0) {
            return Err(cfg_err(
                "train.iterations_per_epoch",
                "must be ≥ 1 or null",
                0,
            ));
        }
        if self.val_batches == Some(0) {
            return Err(cfg_err("train.val_batches", "must be ≥ 1 or null", 0));
        }
        if self.checkpoint_every == 0 {
            return Err(cfg_err("train.checkpoint_every", "must be ≥ 1", 0));
        }
        if let Some(m) = self.max_minutes
            && !(m > 0.0 && m.is_finite())
        {
            return Err(cfg_err("train.max_minutes", "must be > 0 or null", m));
        }
        if self.calibrate_threshold && !self.val_volumes {
            return Err(cfg_err(
                "train.calibrate_threshold",
                "needs train.val_volumes = true (thresholds are chosen on whole validation volumes)",
                true,
            ));
        }
        let c = &self.collapse;
        if !(0.0..=1.0).contains(&c.threshold) {
            return Err(cfg_err(
                "train.collapse.threshold",
                "must be in [0, 1]",
                c.threshold,
            ));
        }
        if c.patience == 0 {
            return Err(cfg_err("train.collapse.patience", "must be ≥ 1", 0));
        }
        Ok(())
    }
}

/// The model-specific part of a trial: the network and its trainer's settings (which hold the
/// optimizers and the loss).
#[derive(Clone, Debug)]
pub enum ModelSettings {
    Unet3d {
        net: Unet3dConfig,
        train: Unet3dTrainConfig,
    },
    Vox2Vox {
        net: Vox2VoxConfig,
        train: Vox2VoxTrainConfig,
    },
    CycleGan {
        net: CycleGanConfig,
        train: CycleGanTrainConfig,
        synth: MaskConfig,
        masks: MaskSource,
    },
    Threshold,
}

/// Everything a trained model needs besides the common sections.
#[derive(Clone, Debug, PartialEq)]
pub struct Learned {
    pub patches: PatchConfig,
    pub augment: AugmentConfig,
    pub driver: DriverConfig,
    pub infer: SlidingWindowConfig,
}

/// Where the CycleGAN's mask domain comes from (`cyclegan.masks`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaskSource {
    /// Synthetic masks drawn by `synth` for each training volume: the self-supervised method.
    #[default]
    Synthetic,
    /// The training volumes' annotated masks, drawn independently of their images (still
    /// unpaired): the supervised CycleGAN of the thesis' Table 5.5.
    Annotated,
}

/// The fully resolved configuration of one trial (docs/design.md §1). Build it with
/// [`TrialConfig::resolve`], change it with [`TrialConfig::apply_overrides`], store it with
/// [`TrialConfig::canonical_json`] and read it back with [`TrialConfig::from_json`].
/// Two configs are equal when their JSON trees are.
#[derive(Clone, Debug)]
pub struct TrialConfig {
    pub model: ModelKind,
    /// Mask channel names in mask-channel order (`golgi`, `nuclei`, `pair`).
    pub classes: Vec<String>,
    pub preset: Preset,
    pub scale: ModelScale,
    pub preprocess: PreprocessConfig,
    pub settings: ModelSettings,
    /// Patches, driver and sliding-window settings; `None` for `threshold`.
    pub learned: Option<Learned>,
    pub eval: EvalConfig,
}

impl PartialEq for TrialConfig {
    fn eq(&self, other: &Self) -> bool {
        self.to_value() == other.to_value()
    }
}

fn cfg_err(field: &str, expected: impl Into<String>, got: impl std::fmt::Display) -> TrainError {
    ModelError::config(field, expected, got).into()
}

impl TrialConfig {
    /// The defaults of one cell of the design: `model` on `classes` (mask channel names) under
    /// a fidelity `preset` at a `scale`. The network takes as many image channels as there
    /// are classes (the published convention, §1.4; `net.in_channels` /
    /// `net.image_channels` override it for other datasets).
    pub fn resolve<S: AsRef<str>>(
        model: ModelKind,
        classes: &[S],
        preset: Preset,
        scale: ModelScale,
    ) -> Result<Self, TrainError> {
        let classes: Vec<String> = classes.iter().map(|c| c.as_ref().to_string()).collect();
        validate_classes(&classes)?;
        let n = classes.len();
        let spec = ScaleSpec::new(scale);
        let size = spec.patch_size();
        let settings = match model {
            ModelKind::Unet3d => ModelSettings::Unet3d {
                net: Unet3dConfig::for_scale(n, n, &spec)?,
                train: Unet3dTrainConfig::for_preset(preset),
            },
            ModelKind::Vox2Vox => ModelSettings::Vox2Vox {
                net: Vox2VoxConfig::for_scale(n, n, &spec)?,
                train: Vox2VoxTrainConfig::for_task(&classes, preset),
            },
            ModelKind::CycleGan => ModelSettings::CycleGan {
                net: CycleGanConfig::for_scale(n, n, &spec)?,
                train: CycleGanTrainConfig::for_preset(preset),
                synth: MaskConfig::preset(preset, n as u8),
                masks: MaskSource::Synthetic,
            },
            ModelKind::Threshold => ModelSettings::Threshold,
        };
        let learned = (model != ModelKind::Threshold).then(|| Learned {
            patches: PatchConfig::published(size, n),
            augment: AugmentConfig::default(),
            driver: DriverConfig::published(model),
            infer: SlidingWindowConfig {
                window: [size; 3],
                step: [size * 3 / 4; 3],
                ..SlidingWindowConfig::default()
            },
        });
        let cfg = Self {
            model,
            classes,
            preset,
            scale,
            preprocess: PreprocessConfig::default(),
            settings,
            learned,
            eval: EvalConfig::default(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every section; errors name the field path and the value.
    pub fn validate(&self) -> Result<(), TrainError> {
        validate_classes(&self.classes)?;
        let n = self.classes.len();
        self.preprocess
            .validate()
            .map_err(|e| TrainError::Setting(e.to_string()))?;
        if self.preprocess.scale != Scale::Unit && self.model != ModelKind::Threshold {
            return Err(cfg_err(
                "data.preprocess.scale",
                "must be `unit`: every trainer maps [0, 1] to its own range itself",
                self.preprocess.scale.name(),
            ));
        }
        self.eval
            .validate()
            .map_err(|e| TrainError::Setting(format!("eval: {e}")))?;
        // The training patch and the inference window must both fit the network.
        let sizes: Vec<usize> = match &self.learned {
            Some(l) => vec![l.patches.size, l.infer.window[0]],
            None => Vec::new(),
        };
        match &self.settings {
            ModelSettings::Unet3d { net, train } => {
                net.validate().map_err(prefix_net)?;
                check_out(net.out_channels, n, "net.out_channels")?;
                train.validate(net.out_channels)?;
                for &s in &sizes {
                    net.validate_patch(s).map_err(prefix_patch)?;
                }
            }
            ModelSettings::Vox2Vox { net, train } => {
                net.validate().map_err(prefix_net)?;
                check_out(net.out_channels, n, "net.out_channels")?;
                train.validate(net.out_channels)?;
                for &s in &sizes {
                    net.validate_patch(s).map_err(prefix_patch)?;
                }
            }
            ModelSettings::CycleGan {
                net, train, synth, ..
            } => {
                net.validate().map_err(prefix_net)?;
                check_out(net.mask_channels, n, "net.mask_channels")?;
                train.validate(net)?;
                // Training patches also pass the discriminators; windows only the segmenter.
                if let Some(l) = &self.learned {
                    net.validate_patch(l.patches.size)
                        .map_err(|e| rename_field(e, "data.patches.size"))?;
                    net.validate_window(l.infer.window[0])
                        .map_err(|e| rename_field(e, "infer.window"))?;
                }
                synth
                    .validate()
                    .map_err(|e| TrainError::Setting(format!("synth: {e}")))?;
                let names = synth.channel_names();
                if names != self.classes {
                    return Err(cfg_err(
                        "synth.classes",
                        format!(
                            "must generate the trial's classes {:?} in that order (the \
                             generator's channels are {:?})",
                            self.classes, names
                        ),
                        synth.classes,
                    ));
                }
            }
            ModelSettings::Threshold => {
                if let Some(c) = self.classes.iter().find(|c| *c == "pair") {
                    return Err(cfg_err(
                        "classes",
                        "must not contain `pair` for the threshold baseline (Otsu has no \
                         rule for nucleus–Golgi pairs)",
                        c,
                    ));
                }
                if self.learned.is_some() {
                    return Err(TrainError::Setting(
                        "the threshold baseline has no train, infer or data.patches settings"
                            .into(),
                    ));
                }
            }
        }
        if let Some(l) = &self.learned {
            l.patches.validate()?;
            l.augment.validate().map_err(TrainError::Setting)?;
            let synthetic = matches!(
                self.settings,
                ModelSettings::CycleGan {
                    masks: MaskSource::Synthetic,
                    ..
                }
            );
            if l.driver.selection == Selection::LabelFree && !synthetic {
                return Err(cfg_err(
                    "train.selection",
                    "label-free compares predictions with synthetic masks: only for the \
                     CycleGAN with cyclegan.masks = \"synthetic\"",
                    "label-free",
                ));
            }
            l.driver.validate()?;
            l.infer
                .validate()
                .map_err(|e| TrainError::Setting(e.to_string()))?;
            if l.infer.window.iter().any(|&w| w != l.infer.window[0]) {
                return Err(cfg_err(
                    "infer.window",
                    "must be a cube (the networks take cubic patches)",
                    format!("{:?}", l.infer.window),
                ));
            }
        }
        Ok(())
    }

    /// The driver, patch and sliding-window settings (`None` for `threshold`).
    pub fn learned(&self) -> Option<&Learned> {
        self.learned.as_ref()
    }

    /// The configuration as a JSON tree (the layout of the module doc).
    pub fn to_value(&self) -> Value {
        let mut root = Map::new();
        root.insert("model".into(), json(&self.model));
        root.insert("classes".into(), json(&self.classes));
        root.insert("preset".into(), json(&self.preset));
        root.insert("scale".into(), json(&self.scale));
        let mut data = Map::new();
        data.insert("preprocess".into(), json(&self.preprocess));
        if let Some(l) = &self.learned {
            data.insert("patches".into(), json(&l.patches));
            data.insert("augment".into(), json(&l.augment));
            root.insert("infer".into(), json(&l.infer));
        }
        root.insert("data".into(), Value::Object(data));
        root.insert("eval".into(), json(&self.eval));
        let driver = || -> Map<String, Value> {
            match self.learned.as_ref().map(|l| json(&l.driver)) {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            }
        };
        match &self.settings {
            ModelSettings::Unet3d { net, train } => {
                root.insert("net".into(), json(net));
                let mut t = driver();
                t.insert("optimizer".into(), json(&train.optimizer));
                root.insert("train".into(), Value::Object(t));
                root.insert("loss".into(), json(&train.loss));
            }
            ModelSettings::Vox2Vox { net, train } => {
                root.insert("net".into(), json(net));
                let mut t = driver();
                t.insert("opt_g".into(), json(&train.opt_g));
                t.insert("opt_d".into(), json(&train.opt_d));
                root.insert("train".into(), Value::Object(t));
                let mut loss = object(json(&train.loss));
                loss.insert("alpha".into(), json(&train.alpha));
                root.insert("loss".into(), Value::Object(loss));
            }
            ModelSettings::CycleGan {
                net,
                train,
                synth,
                masks,
            } => {
                root.insert("net".into(), json(net));
                let mut t = driver();
                t.insert("opt_g".into(), json(&train.opt_g));
                t.insert("opt_d".into(), json(&train.opt_d));
                t.insert("pool_size".into(), json(&train.pool_size));
                t.insert(
                    "straight_through_masks".into(),
                    json(&train.straight_through_masks),
                );
                root.insert("train".into(), Value::Object(t));
                let mut loss = Map::new();
                loss.insert("lambda_cycle".into(), json(&train.lambda_cycle));
                loss.insert("lambda_identity".into(), json(&train.lambda_identity));
                loss.insert("golgi_weight".into(), json(&train.golgi_weight));
                root.insert("loss".into(), Value::Object(loss));
                root.insert("synth".into(), json(synth));
                let mut cyclegan = Map::new();
                cyclegan.insert("masks".into(), json(masks));
                root.insert("cyclegan".into(), Value::Object(cyclegan));
            }
            ModelSettings::Threshold => {}
        }
        Value::Object(root)
    }

    /// The JSON tree a trial id hashes: [`TrialConfig::to_value`] without the options of
    /// [`later_options`] that hold their original value (and without sections they leave
    /// empty).
    pub fn identity_value(&self) -> Value {
        let mut tree = self.to_value();
        for key in BUDGET_OPTIONS {
            let (parent, leaf) = key.rsplit_once('.').unwrap_or(("", key));
            if let Some(Value::Object(map)) = dotted_mut(&mut tree, parent) {
                map.remove(leaf);
            }
        }
        for (key, original) in later_options(self.model) {
            let (parent, leaf) = key.rsplit_once('.').unwrap_or(("", key));
            if let Some(Value::Object(map)) = dotted_mut(&mut tree, parent)
                && map.get(leaf) == Some(&original)
            {
                map.remove(leaf);
                if map.is_empty()
                    && let Some((grand, name)) = parent.rsplit_once('.').or(Some(("", parent)))
                    && let Some(Value::Object(up)) = dotted_mut(&mut tree, grand)
                {
                    up.remove(name);
                }
            }
        }
        tree
    }

    /// Reads a configuration from its JSON tree, rejecting unknown keys (with the nearest
    /// valid key) and validating it.
    pub fn from_value(value: &Value) -> Result<Self, TrainError> {
        let model: ModelKind = value
            .get("model")
            .cloned()
            .map(|m| parse("model", m))
            .transpose()?
            .ok_or_else(|| missing("model"))?;
        let mut value = value.clone();
        fill_later_options(&mut value, model);
        let value = &value;
        let root = value
            .as_object()
            .ok_or_else(|| TrainError::Setting("a trial config must be a JSON object".into()))?;
        let classes: Vec<String> = field(root, "classes")?;
        let preset: Preset = field(root, "preset")?;
        let scale: ModelScale = field(root, "scale")?;
        let empty = Map::new();
        let data = root
            .get("data")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let preprocess: PreprocessConfig = opt_field(data, "data.preprocess", "preprocess")?
            .ok_or_else(|| missing("data.preprocess"))?;
        let eval: EvalConfig = field(root, "eval")?;
        let train = root.get("train").and_then(Value::as_object);
        let learned = if model == ModelKind::Threshold {
            None
        } else {
            let train = train.ok_or_else(|| missing("train"))?;
            let mut t = train.clone();
            for k in [
                "optimizer",
                "opt_g",
                "opt_d",
                "pool_size",
                "straight_through_masks",
            ] {
                t.remove(k);
            }
            Some(Learned {
                patches: opt_field(data, "data.patches", "patches")?
                    .ok_or_else(|| missing("data.patches"))?,
                augment: opt_field(data, "data.augment", "augment")?
                    .ok_or_else(|| missing("data.augment"))?,
                driver: parse("train", Value::Object(t))?,
                infer: field(root, "infer")?,
            })
        };
        let train = train.cloned().unwrap_or_default();
        let loss = root
            .get("loss")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let settings = match model {
            ModelKind::Unet3d => ModelSettings::Unet3d {
                net: field(root, "net")?,
                train: Unet3dTrainConfig {
                    optimizer: field_in(&train, "train", "optimizer")?,
                    loss: parse("loss", Value::Object(loss))?,
                },
            },
            ModelKind::Vox2Vox => {
                let mut dice = loss.clone();
                let alpha = dice.remove("alpha").ok_or_else(|| missing("loss.alpha"))?;
                ModelSettings::Vox2Vox {
                    net: field(root, "net")?,
                    train: Vox2VoxTrainConfig {
                        opt_g: field_in(&train, "train", "opt_g")?,
                        opt_d: field_in(&train, "train", "opt_d")?,
                        alpha: parse("loss.alpha", alpha)?,
                        loss: parse::<DiceLossConfig>("loss", Value::Object(dice))?,
                    },
                }
            }
            ModelKind::CycleGan => ModelSettings::CycleGan {
                net: field(root, "net")?,
                train: CycleGanTrainConfig {
                    opt_g: field_in(&train, "train", "opt_g")?,
                    opt_d: field_in(&train, "train", "opt_d")?,
                    lambda_cycle: field_in(&loss, "loss", "lambda_cycle")?,
                    lambda_identity: field_in(&loss, "loss", "lambda_identity")?,
                    golgi_weight: field_in(&loss, "loss", "golgi_weight")?,
                    pool_size: field_in(&train, "train", "pool_size")?,
                    // Configs recorded before the option existed ran without it.
                    straight_through_masks: opt_field(
                        &train,
                        "train.straight_through_masks",
                        "straight_through_masks",
                    )?
                    .unwrap_or(false),
                },
                synth: field(root, "synth")?,
                masks: root
                    .get("cyclegan")
                    .and_then(|c| c.get("masks"))
                    .cloned()
                    .map(|m| parse("cyclegan.masks", m))
                    .transpose()?
                    .ok_or_else(|| missing("cyclegan.masks"))?,
            },
            ModelKind::Threshold => ModelSettings::Threshold,
        };
        let cfg = Self {
            model,
            classes,
            preset,
            scale,
            preprocess,
            settings,
            learned,
            eval,
        };
        // Unknown keys anywhere: every key of the input must survive the round trip.
        let known = cfg.to_value();
        check_known_keys(value, &known, "")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a configuration from JSON text (e.g. a trial's `config.json`).
    pub fn from_json(text: &str) -> Result<Self, TrainError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| TrainError::Setting(format!("trial config is not valid JSON: {e}")))?;
        Self::from_value(&value)
    }

    /// The canonical JSON of the configuration: object keys sorted at every level, no
    /// whitespace, floats in shortest round-trip form. Hashed into the trial id.
    pub fn canonical_json(&self) -> String {
        canonical_json(&self.to_value())
    }

    /// Applies dotted-key overrides (`loss.golgi_weight` = 5.0, `train.epochs` = 20) to the JSON
    /// tree and reads the result back. A key must already exist in the tree (a key whose
    /// value is `null`, such as `loss.class_weights`, exists); an unknown key is an error
    /// naming it and the nearest valid key. A number given for a 3-element number array
    /// (`infer.step` = 24) is broadcast to all three axes.
    pub fn apply_overrides(&self, overrides: &[(String, Value)]) -> Result<Self, TrainError> {
        if overrides.is_empty() {
            return Ok(self.clone());
        }
        let mut tree = self.to_value();
        for (key, value) in overrides {
            set_dotted(&mut tree, key, value.clone())?;
        }
        Self::from_value(&tree)
    }

    /// The settings of `train.*` that do not depend on the model's trainer, for the driver.
    pub fn driver(&self) -> Option<&DriverConfig> {
        self.learned.as_ref().map(|l| &l.driver)
    }

    /// The dotted keys of every leaf of the tree with their values (for `param.*` columns and
    /// MLflow params).
    pub fn flat_params(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        flatten("", &self.to_value(), &mut out);
        out
    }
}

/// Options that bound what an attempt may spend or keep without changing what it computes:
/// never part of a trial id, so changing them keeps a sweep's trials (and resumes them).
pub const BUDGET_OPTIONS: [&str; 2] = ["train.max_minutes", "train.keep"];

/// Options added to a model's configuration after trials were first stored, each with the
/// value that reproduces the behaviour before it existed (module doc). Keys are dotted paths of
/// the JSON tree.
pub fn later_options(model: ModelKind) -> Vec<(&'static str, Value)> {
    let augment = ("data.augment", json(&AugmentConfig::default()));
    let dice = DiceLossConfig::new();
    match model {
        ModelKind::Unet3d | ModelKind::Vox2Vox => vec![
            augment,
            ("loss.focal_weight", json(&dice.focal_weight)),
            ("loss.focal_gamma", json(&dice.focal_gamma)),
            ("loss.focal_alpha", json(&dice.focal_alpha)),
        ],
        ModelKind::CycleGan => vec![augment, ("cyclegan.masks", json(&MaskSource::Synthetic))],
        ModelKind::Threshold => Vec::new(),
    }
}

/// Adds the [`later_options`] a stored config lacks, with their original values (creating
/// their parent section where needed).
fn fill_later_options(tree: &mut Value, model: ModelKind) {
    for (key, original) in later_options(model) {
        let mut node = &mut *tree;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let Value::Object(map) = node else { break };
            if i + 1 == parts.len() {
                map.entry(part.to_string())
                    .or_insert_with(|| original.clone());
                break;
            }
            node = map
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
}

/// The node at a dotted path of the tree (the root for "").
fn dotted_mut<'a>(tree: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    if key.is_empty() {
        return Some(tree);
    }
    key.split('.')
        .try_fold(tree, |node, part| node.get_mut(part))
}

/// Parses one `--set key=value` argument: the value is read as JSON when it is valid JSON
/// (`5`, `true`, `[6.0, 1.0]`, `"x"`), else taken as a plain string (`mean`).
pub fn parse_override(arg: &str) -> Result<(String, Value), TrainError> {
    let (key, value) = arg.split_once('=').ok_or_else(|| {
        TrainError::Setting(format!("override `{arg}` must have the form key=value"))
    })?;
    let key = key.trim();
    if key.is_empty() {
        return Err(TrainError::Setting(format!(
            "override `{arg}` has an empty key"
        )));
    }
    let value = value.trim();
    let v = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((key.to_string(), v))
}

fn validate_classes(classes: &[String]) -> Result<(), TrainError> {
    if classes.is_empty() || classes.len() > 3 {
        return Err(cfg_err(
            "classes",
            "must name 1 to 3 mask channels",
            format!("{classes:?}"),
        ));
    }
    for (i, c) in classes.iter().enumerate() {
        if !MASK_CHANNELS.contains(&c.as_str()) {
            return Err(cfg_err(
                &format!("classes[{i}]"),
                format!("must be one of {}", MASK_CHANNELS.join(", ")),
                c,
            ));
        }
        if classes[..i].contains(c) {
            return Err(cfg_err(&format!("classes[{i}]"), "must be unique", c));
        }
    }
    Ok(())
}

fn check_out(got: usize, classes: usize, field: &str) -> Result<(), TrainError> {
    if got != classes {
        return Err(cfg_err(
            field,
            format!("must equal the number of classes ({classes})"),
            got,
        ));
    }
    Ok(())
}

/// The model configs name their fields `model.<field>`; in a trial they live under `net.`.
fn prefix_net(e: ModelError) -> TrainError {
    match e {
        ModelError::Config {
            field,
            expected,
            got,
        } => ModelError::Config {
            field: format!(
                "net.{}",
                field.strip_prefix("model.").unwrap_or(field.as_str())
            ),
            expected,
            got,
        }
        .into(),
        other => other.into(),
    }
}

fn prefix_patch(e: ModelError) -> TrainError {
    rename_field(e, "data.patches.size / infer.window")
}

/// A model config's error about its own field, renamed to the trial key it came from.
fn rename_field(e: ModelError, key: &str) -> TrainError {
    match e {
        ModelError::Config { expected, got, .. } => ModelError::Config {
            field: key.into(),
            expected,
            got,
        }
        .into(),
        other => other.into(),
    }
}

fn json<T: Serialize + ?Sized>(v: &T) -> Value {
    serde_json::to_value(v).expect("configuration serialises to JSON")
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn missing(path: &str) -> TrainError {
    TrainError::Setting(format!("trial config: `{path}` is missing"))
}

fn parse<T: DeserializeOwned>(path: &str, v: Value) -> Result<T, TrainError> {
    serde_json::from_value(v).map_err(|e| TrainError::Setting(format!("{path}: {e}")))
}

fn field<T: DeserializeOwned>(m: &Map<String, Value>, key: &str) -> Result<T, TrainError> {
    field_in(m, "", key)
}

fn field_in<T: DeserializeOwned>(
    m: &Map<String, Value>,
    section: &str,
    key: &str,
) -> Result<T, TrainError> {
    let path = join(section, key);
    let v = m.get(key).ok_or_else(|| missing(&path))?;
    parse(&path, v.clone())
}

fn opt_field<T: DeserializeOwned>(
    m: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Option<T>, TrainError> {
    m.get(key).map(|v| parse(path, v.clone())).transpose()
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn unknown_key(path: &str, key: &str, candidates: &Map<String, Value>) -> TrainError {
    let names: Vec<&str> = candidates.keys().map(String::as_str).collect();
    let full = join(path, key);
    let hint = match crate::keys::nearest(key, &names) {
        Some(n) => format!("; the nearest valid key is `{}`", join(path, n)),
        None if names.is_empty() => String::new(),
        None => format!(
            "; valid keys under `{}` are: {}",
            if path.is_empty() { "(top level)" } else { path },
            names.join(", ")
        ),
    };
    TrainError::Setting(format!("unknown config key `{full}`{hint}"))
}

/// Every key of `input` must exist in `known` (the re-serialised, parsed config).
fn check_known_keys(input: &Value, known: &Value, path: &str) -> Result<(), TrainError> {
    if let (Value::Object(i), Value::Object(k)) = (input, known) {
        for (key, v) in i {
            match k.get(key) {
                Some(kv) => check_known_keys(v, kv, &join(path, key))?,
                None => return Err(unknown_key(path, key, k)),
            }
        }
    }
    Ok(())
}

fn set_dotted(tree: &mut Value, key: &str, value: Value) -> Result<(), TrainError> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = tree;
    let mut path = String::new();
    for (i, part) in parts.iter().enumerate() {
        let Value::Object(map) = node else {
            return Err(TrainError::Setting(format!(
                "unknown config key `{key}`: `{path}` is a value, not a section"
            )));
        };
        if !map.contains_key(*part) {
            return Err(unknown_key(&path, part, map));
        }
        let child = map.get_mut(*part).expect("checked above");
        if i + 1 == parts.len() {
            *child = broadcast(child, value);
            return Ok(());
        }
        path = join(&path, part);
        node = child;
    }
    Ok(())
}

fn broadcast(old: &Value, new: Value) -> Value {
    match (old, &new) {
        (Value::Array(a), Value::Number(_)) if a.len() == 3 && a.iter().all(Value::is_number) => {
            Value::Array(vec![new.clone(), new.clone(), new])
        }
        _ => new,
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            let keys: BTreeSet<&String> = m.keys().collect();
            for k in keys {
                flatten(&join(prefix, k), &m[k], out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), canonical_json(other))),
    }
}

/// Canonical JSON text of `v`: keys sorted at every level, no whitespace, numbers as
/// serde_json writes them (integers exactly, floats in shortest round-trip form).
pub fn canonical_json(v: &Value) -> String {
    let mut s = String::new();
    write_canonical(v, &mut s);
    s
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            out.push('{');
            let keys: BTreeSet<&String> = m.keys().collect();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// A cooperative stop request (Ctrl-C, SIGTERM, SLURM's USR1): the driver checks it between
/// steps, writes `checkpoint_latest` and returns [`TrialOutcome::Interrupted`]. Clones share
/// the flag, so a signal handler can hold one.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the trial to stop at the next step boundary.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The shared flag itself (e.g. for `signal_hook::flag::register`).
    pub fn as_atomic(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

/// Where the rows of a trial go (the sweep runner's store and MLflow mirror, or the CSV files
/// of `seglab train`). One call per batch of rows; an error fails the trial.
/// Why a trial stopped at a rung (`[prune]` of a sweep): it was behind the rung's cut.
#[derive(Clone, Debug, PartialEq)]
pub struct PruneDecision {
    /// 0 for the first rung.
    pub rung: u32,
    pub epoch: u32,
    pub metric: String,
    /// The trial's value at the rung (its best up to the rung's epoch).
    pub value: f64,
    pub cut: f64,
    /// Trials whose value at this rung the cut was taken from (the trial included).
    pub trials_at_rung: usize,
}

impl std::fmt::Display for PruneDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pruned at rung {} (epoch {}): {} {:.4} behind the cut {:.4} of {} trial(s)",
            self.rung, self.epoch, self.metric, self.value, self.cut, self.trials_at_rung
        )
    }
}

pub trait TrialSink {
    /// Per-epoch train losses and validation metrics. On resume the driver first re-emits the
    /// epoch history its checkpoint carries (tracking's canonical-view rule).
    fn epochs(&mut self, rows: &[EpochRow]) -> Result<(), TrainError>;
    /// Test metrics, one call per test volume.
    fn results(&mut self, rows: &[ResultRow]) -> Result<(), TrainError>;
    /// Wall-clock seconds per phase, once at the end of the trial.
    fn timings(&mut self, rows: &[TimingRow]) -> Result<(), TrainError>;
    /// Called after each epoch's rows are written: `Some` stops the trial as pruned (a
    /// sweep's `[prune]`). Sinks without pruning keep the default.
    fn rung(&mut self, _epoch: u32, _max_epochs: u32) -> Result<Option<PruneDecision>, TrainError> {
        Ok(None)
    }
}

/// A sink that keeps every row in memory (tests, the CLI's file sink builds on it).
#[derive(Clone, Debug, Default)]
pub struct MemorySink {
    pub epochs: Vec<EpochRow>,
    pub results: Vec<ResultRow>,
    pub timings: Vec<TimingRow>,
}

impl TrialSink for MemorySink {
    fn epochs(&mut self, rows: &[EpochRow]) -> Result<(), TrainError> {
        self.epochs.extend_from_slice(rows);
        Ok(())
    }
    fn results(&mut self, rows: &[ResultRow]) -> Result<(), TrainError> {
        self.results.extend_from_slice(rows);
        Ok(())
    }
    fn timings(&mut self, rows: &[TimingRow]) -> Result<(), TrainError> {
        self.timings.extend_from_slice(rows);
        Ok(())
    }
}

/// Everything one trial run needs (docs/training.md).
#[derive(Clone, Debug)]
pub struct TrialContext {
    /// The trial id (rows carry it) and the attempt number (1 for the first run).
    pub trial_id: String,
    pub attempt: u32,
    pub config: TrialConfig,
    pub fold: u32,
    /// Seed of initialisation and sampling.
    pub seed: u64,
    pub scheme: SplitScheme,
    /// Seed of the partition (`cv.split_seed`); the same for every trial seed of a sweep.
    pub split_seed: u64,
    /// The dataset folder (with its `dataset.toml`).
    pub dataset: PathBuf,
    /// Where computed splits files are written and read (`experiments/<sweep>/splits/`).
    pub splits_dir: PathBuf,
    /// The trial folder (`experiments/<sweep>/trials/<id>/`); checkpoints, log and predictions
    /// go inside (`experiment::paths::TrialPaths`).
    pub trial_dir: PathBuf,
    pub device: Device,
    /// Continue from `checkpoint_latest` when it exists (a re-run of an interrupted trial).
    pub resume: bool,
}

/// Why training stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// All `train.epochs` ran.
    MaxEpochs,
    /// `train.patience` epochs without improvement.
    EarlyStopping,
    /// The segmenter's output stopped depending on its input.
    Collapse,
    /// The model does not train (`threshold`).
    NoTraining,
}

/// The end of a completed trial.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialSummary {
    /// Epochs trained (including those of earlier attempts).
    pub epochs: u32,
    /// The epoch whose weights predicted the test volumes (1-based), if any.
    pub best_epoch: Option<u32>,
    pub stop: StopReason,
    /// Test volumes predicted and evaluated.
    pub test_volumes: Vec<String>,
}

/// How [`run_trial`](super::trial::run_trial) ended without error.
#[derive(Clone, Debug, PartialEq)]
pub enum TrialOutcome {
    Finished(TrialSummary),
    /// The stop flag was raised; `checkpoint_latest` holds the state after `epoch` epochs
    /// (resume with [`TrialContext::resume`]).
    Interrupted {
        epoch: u32,
    },
    /// `train.max_minutes` ran out; `checkpoint_latest` holds the state after `epoch` epochs.
    TimedOut {
        epoch: u32,
    },
    /// Behind its rung's cut; `checkpoint_latest` holds the state at the rung.
    Pruned(PruneDecision),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_cells() -> Vec<TrialConfig> {
        let mut out = Vec::new();
        for model in ModelKind::ALL {
            for classes in [vec!["nuclei"], vec!["golgi", "nuclei"]] {
                for preset in Preset::ALL {
                    for scale in ModelScale::ALL {
                        out.push(TrialConfig::resolve(model, &classes, preset, scale).unwrap());
                    }
                }
            }
        }
        let three = ["golgi", "nuclei", "pair"];
        for model in [ModelKind::Unet3d, ModelKind::Vox2Vox, ModelKind::CycleGan] {
            out.push(TrialConfig::resolve(model, &three, Preset::Code, ModelScale::Paper).unwrap());
        }
        out
    }

    #[test]
    fn every_cell_round_trips_through_canonical_json() {
        for cfg in all_cells() {
            let text = cfg.canonical_json();
            let back = TrialConfig::from_json(&text).unwrap();
            assert_eq!(back, cfg, "{text}");
            assert_eq!(back.canonical_json(), text);
        }
    }

    #[test]
    fn canonical_json_sorts_keys_and_keeps_shortest_floats() {
        let v: Value =
            serde_json::from_str(r#"{"b": [1, 0.1, {"z": 1e-7, "a": 2.5}], "a": null}"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":null,"b":[1,0.1,{"a":2.5,"z":1e-7}]}"#
        );
        let cfg = TrialConfig::resolve(
            ModelKind::Unet3d,
            &["golgi", "nuclei"],
            Preset::Code,
            ModelScale::CpuSmall,
        )
        .unwrap();
        let text = cfg.canonical_json();
        assert!(text.contains(r#""epsilon":1e-7"#), "{text}");
        assert!(
            text.starts_with(r#"{"classes":["golgi","nuclei"],"data":"#),
            "{text}"
        );
    }

    /// The 2-class CycleGAN trial at `cpu-small` with the published settings.
    fn cyclegan_cpu_small() -> TrialConfig {
        TrialConfig::resolve(
            ModelKind::CycleGan,
            &["golgi", "nuclei"],
            Preset::Code,
            ModelScale::CpuSmall,
        )
        .unwrap()
    }

    #[test]
    fn overrides_change_values_and_reject_unknown_keys() {
        let cfg = cyclegan_cpu_small();
        let set = |k: &str| parse_override(k).unwrap();
        let c = cfg
            .apply_overrides(&[
                set("loss.golgi_weight=5.0"),
                set("train.epochs=20"),
                set("infer.merge=mean"),
                set("infer.step=16"),
                set("train.opt_g.lr=0.001"),
            ])
            .unwrap();
        let ModelSettings::CycleGan { train, .. } = &c.settings else {
            panic!()
        };
        assert_eq!(train.golgi_weight, 5.0);
        assert_eq!(train.opt_g.lr, 1e-3);
        let l = c.learned().unwrap();
        assert_eq!(l.driver.epochs, 20);
        assert_eq!(l.infer.step, [16; 3]);
        assert_eq!(l.infer.merge, crate::infer::MergeMode::Mean);
        assert_ne!(c.canonical_json(), cfg.canonical_json());

        let err = cfg
            .apply_overrides(&[set("loss.golgi_wieght=5")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`loss.golgi_wieght`"), "{err}");
        assert!(err.contains("`loss.golgi_weight`"), "{err}");
        let err = cfg
            .apply_overrides(&[set("trian.epochs=5")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`trian`") && err.contains("`train`"), "{err}");
        // Values are validated and the error names the field.
        let err = cfg
            .apply_overrides(&[set("train.epochs=0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.epochs"), "{err}");
        let err = cfg
            .apply_overrides(&[set("train.batch=two")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("train"), "{err}");
        assert!(parse_override("novalue").is_err());
    }

    #[test]
    fn from_json_rejects_unknown_keys_at_any_depth() {
        let cfg = TrialConfig::resolve(
            ModelKind::Vox2Vox,
            &["golgi", "nuclei"],
            Preset::Code,
            ModelScale::CpuSmall,
        )
        .unwrap();
        let mut v = cfg.to_value();
        v["net"]["generator_filterz"] = Value::from(3);
        let err = TrialConfig::from_value(&v).unwrap_err().to_string();
        assert!(err.contains("`net.generator_filterz`"), "{err}");
        assert!(err.contains("`net.generator_filters`"), "{err}");
        let mut v = cfg.to_value();
        v["loss"]["alhpa"] = Value::from(3);
        let err = TrialConfig::from_value(&v).unwrap_err().to_string();
        assert!(err.contains("`loss.alpha`"), "{err}");
    }

    /// CycleGAN training patches must be ≥ 32 (the discriminators); windows of 16 are fine.
    #[test]
    fn cyclegan_patches_of_16_are_rejected_but_windows_of_16_are_not() {
        let cfg = cyclegan_cpu_small();
        let set = |k: &str| parse_override(k).unwrap();
        let err = cfg
            .apply_overrides(&[set("data.patches.size=16")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data.patches.size") && err.contains("at least 32"),
            "{err}"
        );
        cfg.apply_overrides(&[set("infer.window=16"), set("infer.step=12")])
            .unwrap();
        let err = cfg
            .apply_overrides(&[set("infer.window=24")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("infer.window"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let cfg = TrialConfig::resolve(
            ModelKind::Unet3d,
            &["nuclei"],
            Preset::Code,
            ModelScale::CpuSmall,
        )
        .unwrap();
        let set = |k: &str| parse_override(k).unwrap();
        let err = cfg
            .apply_overrides(&[set("data.patches.size=20")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("data.patches.size"), "{err}");
        let err = cfg
            .apply_overrides(&[set("net.out_channels=2")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("net.out_channels"), "{err}");
        assert!(
            TrialConfig::resolve(
                ModelKind::Unet3d,
                &["golgi", "golgi"],
                Preset::Code,
                ModelScale::CpuSmall
            )
            .is_err()
        );
        let err = TrialConfig::resolve(
            ModelKind::Threshold,
            &["golgi", "nuclei", "pair"],
            Preset::Code,
            ModelScale::CpuSmall,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pair"), "{err}");
    }

    #[test]
    fn published_defaults_follow_the_reference() {
        let d = DriverConfig::published(ModelKind::Unet3d);
        assert_eq!(
            (d.epochs, d.patience, d.batch, d.shuffle),
            (100, 10, 4, true)
        );
        let d = DriverConfig::published(ModelKind::Vox2Vox);
        assert_eq!((d.epochs, d.patience, d.shuffle), (200, 21, false));
        let d = DriverConfig::published(ModelKind::CycleGan);
        assert_eq!((d.batch, d.iterations_per_epoch), (2, None));
        assert_eq!(PatchConfig::published(64, 2).step, 64);
        assert_eq!(PatchConfig::published(64, 3).step, 48);
    }

    #[test]
    fn later_options_at_their_original_values_leave_the_identity_unchanged() {
        let resolve = |model| {
            TrialConfig::resolve(
                model,
                &["golgi", "nuclei"],
                Preset::Code,
                ModelScale::CpuSmall,
            )
            .unwrap()
        };
        for model in [ModelKind::Unet3d, ModelKind::Vox2Vox, ModelKind::CycleGan] {
            let c = resolve(model);
            let id = c.identity_value();
            // The tree of a config written before the options existed.
            assert!(id.get("cyclegan").is_none(), "{model:?}");
            assert!(id["data"].get("augment").is_none(), "{model:?}");
            assert!(id["loss"].get("focal_weight").is_none(), "{model:?}");
            // Read back, a stored config without them gets them at their original values.
            let back = TrialConfig::from_value(&id).unwrap();
            assert_eq!(back.to_value(), c.to_value(), "{model:?}");
        }
        let changed = resolve(ModelKind::CycleGan)
            .apply_overrides(&[("cyclegan.masks".into(), serde_json::json!("annotated"))])
            .unwrap()
            .identity_value();
        assert_eq!(changed["cyclegan"]["masks"], "annotated");
        let focal = resolve(ModelKind::Unet3d)
            .apply_overrides(&[("loss.focal_weight".into(), serde_json::json!(1.0))])
            .unwrap()
            .identity_value();
        assert_eq!(focal["loss"]["focal_weight"], 1.0);
        assert!(focal["loss"].get("focal_gamma").is_none());
    }
}
