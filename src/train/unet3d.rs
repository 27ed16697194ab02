//! The U-Net training step (docs/published-code.md §3.2–§3.3): soft Dice loss over the
//! batch, Adam with AMSGrad (lr 1e-4, ε 1e-7), batch norm in training mode.

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};

use super::checkpoint::{self, CheckpointInfo, CheckpointWriter, Contents};
use super::losses::{DiceLossConfig, dice_loss};
use super::{AdamSettings, Batch, Progress, StepLosses, TrainError, Trainer};
use crate::models::init::derive_seed;
use crate::models::materialize;
use crate::models::{ModelKind, Unet3d, Unet3dConfig};
use crate::preset::Preset;

/// Training settings of the U-Net. Defaults are the published code's (§3.3).
#[derive(Config, Debug, PartialEq)]
pub struct Unet3dTrainConfig {
    /// Adam with AMSGrad, lr 1e-4, Keras ε 1e-7.
    #[config(default = "AdamSettings::new(1e-4).with_amsgrad(true)")]
    pub optimizer: AdamSettings,
    /// Global soft Dice with smoothing 1 (§3.2).
    #[config(default = "DiceLossConfig::new()")]
    pub loss: DiceLossConfig,
}

impl Unet3dTrainConfig {
    /// The settings of a fidelity preset: `code` as published; `thesis` with the thesis text's
    /// learning rate 1e-3 (§5.3.1 of the thesis); `paper` states no U-Net settings and keeps the
    /// code's.
    pub fn for_preset(preset: Preset) -> Self {
        let cfg = Self::new();
        match preset {
            Preset::Code | Preset::Paper => cfg,
            Preset::Thesis => {
                let opt = cfg.optimizer.at_lr(1e-3);
                cfg.with_optimizer(opt)
            }
        }
    }

    /// Checks the settings for a network with `mask_channels` outputs.
    pub fn validate(&self, mask_channels: usize) -> Result<(), TrainError> {
        self.optimizer.validate("train.optimizer")?;
        self.loss.validate(mask_channels)?;
        Ok(())
    }
}

/// Trains a [`Unet3d`]: one network, one optimizer.
pub struct Unet3dTrainer {
    model: Unet3d,
    optim: ModuleOptimizer,
    model_config: Unet3dConfig,
    config: Unet3dTrainConfig,
    progress: Progress,
}

impl Unet3dTrainer {
    /// A freshly initialised network on the autodiff version of `device`.
    pub fn new(
        model_config: Unet3dConfig,
        config: Unet3dTrainConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self, TrainError> {
        model_config.validate()?;
        config.validate(model_config.out_channels)?;
        let progress = Progress::start(seed, device);
        let model = model_config.init(derive_seed(seed, 0), &progress.device);
        materialize(&model);
        Ok(Self {
            model,
            optim: config.optimizer.init(),
            model_config,
            config,
            progress,
        })
    }

    /// The network being trained.
    pub fn model(&self) -> &Unet3d {
        &self.model
    }
}

impl Trainer for Unet3dTrainer {
    fn kind(&self) -> ModelKind {
        ModelKind::Unet3d
    }

    fn train_step(&mut self, batch: &Batch) -> StepLosses {
        let pred = self.model.forward(batch.images.clone());
        let loss = dice_loss(pred, batch.masks.clone(), &self.config.loss);
        let mut out = StepLosses::default();
        out.push("loss", loss.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        self.model = self
            .optim
            .step(self.config.optimizer.lr, self.model.clone(), grads);
        self.progress.steps += 1;
        out
    }

    fn valid_predict(&self, batch: &Batch) -> (StepLosses, Tensor<5>) {
        let pred = self.model.valid().forward(batch.images.clone().inner());
        let mut out = StepLosses::default();
        out.push(
            "loss",
            dice_loss(pred.clone(), batch.masks.clone().inner(), &self.config.loss),
        );
        (out, pred)
    }

    fn predict(&self, images: Tensor<5>) -> Tensor<5> {
        self.model.valid().forward(images.inner())
    }

    fn progress(&self) -> &Progress {
        &self.progress
    }

    fn write_checkpoint(&self, folder: &Path, contents: Contents) -> Result<(), TrainError> {
        let w = CheckpointWriter::new(folder, contents);
        w.module("unet3d", &self.model)?;
        w.optimizer("unet3d", &self.optim)?;
        w.finish(&self.info())
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<(), TrainError> {
        let info = checkpoint::read_compatible(dir, ModelKind::Unet3d, &self.model_config)?;
        let model = checkpoint::load_module(dir, "unet3d", self.model.clone())?;
        let optim = checkpoint::load_optimizer(dir, &info, "unet3d", self.config.optimizer.init())?;
        self.model = model;
        self.optim = optim;
        self.progress.resume(&info);
        Ok(())
    }
}

impl Unet3dTrainer {
    fn info(&self) -> CheckpointInfo {
        self.progress
            .header(ModelKind::Unet3d, &self.model_config, &self.config)
    }
}
