//! The Vox2Vox training step (docs/published-code.md §4.3–§4.4).
//!
//! Generator loss α·Dice + mean((1 − D(x, G(x)))²) with α = 5; discriminator loss
//! 0.5·[mean((1 − D(x, y))²) + mean(D(x, G(x))²)]. Both networks are updated simultaneously from
//! one forward pass of the generator, as the published `GradientTape` loop does: the generator's
//! gradients flow through a frozen copy of the pre-update discriminator, the discriminator
//! sees the pre-update generator's output detached, and a single backward pass over the sum of
//! the two losses yields exactly ∂L_G/∂θ_G and ∂L_D/∂θ_D. One Adam per network (lr 2e-4 for 2
//! classes, 2e-5 for 3, β1 0.5, ε 1e-7). Dropout 0.2 is active in training.
//!
//! One difference in the noise: Keras evaluates D(x, G(x)) once for both losses and so shares
//! one dropout mask between them; here the discriminator runs once for G's loss and once for
//! D's (real and generated masks stacked in one batch), with independent masks from the same
//! seeded stream.

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};

use super::checkpoint::{self, CheckpointInfo, CheckpointWriter, Contents};
use super::losses::{DiceLossConfig, DiceMode, dice_loss, lsgan};
use super::{AdamSettings, Batch, Progress, StepLosses, TrainError, Trainer};
use crate::models::init::derive_seed;
use crate::models::materialize;
use crate::models::{ModelError, ModelKind, Vox2VoxConfig, Vox2VoxDiscriminator, Vox2VoxGenerator};
use crate::preset::Preset;

/// Training settings of Vox2Vox. Defaults are the published 2-class code's (§4.3, §4.4); see
/// [`Vox2VoxTrainConfig::for_task`] for the 3-class values and the presets.
#[derive(Config, Debug, PartialEq)]
pub struct Vox2VoxTrainConfig {
    /// Generator optimizer (Adam lr 2e-4, β1 0.5).
    #[config(default = "AdamSettings::new(2e-4).with_beta_1(0.5)")]
    pub opt_g: AdamSettings,
    /// Discriminator optimizer (Adam lr 2e-4, β1 0.5).
    #[config(default = "AdamSettings::new(2e-4).with_beta_1(0.5)")]
    pub opt_d: AdamSettings,
    /// Weight α of the Dice term in the generator loss (5).
    #[config(default = 5.0)]
    pub alpha: f64,
    /// Dice loss: 1 − 2Σyp / (Σy + Σp + 1e-5) over the whole batch and all channels (2-class code).
    #[config(
        default = "DiceLossConfig::new().with_smooth_numerator(0.0).with_smooth_denominator(1e-5)"
    )]
    pub loss: DiceLossConfig,
}

impl Vox2VoxTrainConfig {
    /// The settings for a task with the mask channels `classes` (`golgi`, `nuclei`, `pair`)
    /// under a fidelity preset:
    ///
    /// - `code`: 1–2 classes as the 2-class notebook (lr 2e-4, one unweighted global Dice);
    ///   3 classes as the 3-class notebook (lr 2e-5, per-class Dice weighted Golgi 6.63, others 1,
    ///   divided by the weight sum);
    /// - `thesis`: lr 2e-5 and per-class Dice β_golgi = 6, others 1, not normalised (eq. 5.2);
    /// - `paper`: states none of these and keeps the code's.
    pub fn for_task<S: AsRef<str>>(classes: &[S], preset: Preset) -> Self {
        let cfg = Self::new();
        let per_class = |golgi: f64, normalize: bool| {
            let weights = classes
                .iter()
                .map(|c| if c.as_ref() == "golgi" { golgi } else { 1.0 })
                .collect();
            cfg.loss
                .clone()
                .with_mode(DiceMode::PerClass)
                .with_class_weights(Some(weights))
                .with_normalize_weights(normalize)
        };
        let slow = |cfg: Self| {
            let (g, d) = (cfg.opt_g.at_lr(2e-5), cfg.opt_d.at_lr(2e-5));
            cfg.with_opt_g(g).with_opt_d(d)
        };
        match preset {
            Preset::Code | Preset::Paper if classes.len() >= 3 => {
                let loss = per_class(6.63, true);
                slow(cfg).with_loss(loss)
            }
            Preset::Code | Preset::Paper => cfg,
            Preset::Thesis => {
                let loss = per_class(6.0, false);
                slow(cfg).with_loss(loss)
            }
        }
    }

    /// Checks the settings for a network with `mask_channels` outputs.
    pub fn validate(&self, mask_channels: usize) -> Result<(), TrainError> {
        self.opt_g.validate("train.opt_g")?;
        self.opt_d.validate("train.opt_d")?;
        if !(self.alpha >= 0.0 && self.alpha.is_finite()) {
            return Err(ModelError::config("train.alpha", "must be ≥ 0", self.alpha).into());
        }
        self.loss.validate(mask_channels)?;
        Ok(())
    }
}

/// Per-step random streams of the trainer (dropout of G and of D).
const STREAM_DROPOUT_G: u64 = 1;
const STREAM_DROPOUT_D: u64 = 2;

/// Trains a Vox2Vox generator and discriminator, one optimizer each.
pub struct Vox2VoxTrainer {
    generator: Vox2VoxGenerator,
    discriminator: Vox2VoxDiscriminator,
    opt_g: ModuleOptimizer,
    opt_d: ModuleOptimizer,
    model_config: Vox2VoxConfig,
    config: Vox2VoxTrainConfig,
    progress: Progress,
}

impl Vox2VoxTrainer {
    /// Freshly initialised networks on the autodiff version of `device`.
    pub fn new(
        model_config: Vox2VoxConfig,
        config: Vox2VoxTrainConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self, TrainError> {
        model_config.validate()?;
        config.validate(model_config.out_channels)?;
        let progress = Progress::start(seed, device);
        let device = &progress.device;
        let generator = model_config.init_generator(derive_seed(seed, 0), device);
        let discriminator = model_config.init_discriminator(derive_seed(seed, 1), device);
        materialize(&generator);
        materialize(&discriminator);
        Ok(Self {
            generator,
            discriminator,
            opt_g: config.opt_g.init(),
            opt_d: config.opt_d.init(),
            model_config,
            config,
            progress,
        })
    }

    /// The generator (the segmenter).
    pub fn generator(&self) -> &Vox2VoxGenerator {
        &self.generator
    }

    /// Generator losses: (total, Dice, adversarial) for predictions `fake` scored by `d`.
    fn generator_losses(
        &self,
        d: &Vox2VoxDiscriminator,
        images: Tensor<5>,
        masks: Tensor<5>,
        fake: Tensor<5>,
    ) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
        let dice = dice_loss(fake.clone(), masks, &self.config.loss);
        let adv = lsgan(d.forward(images, fake), 1.0);
        let total = dice.clone() * self.config.alpha + adv.clone();
        (total, dice, adv)
    }
}

impl Trainer for Vox2VoxTrainer {
    fn kind(&self) -> ModelKind {
        ModelKind::Vox2Vox
    }

    fn train_step(&mut self, batch: &Batch) -> StepLosses {
        let (x, y) = (batch.images.clone(), batch.masks.clone());
        self.generator
            .dropout_rng()
            .reseed(self.progress.step_seed(STREAM_DROPOUT_G));
        self.discriminator
            .dropout_rng()
            .reseed(self.progress.step_seed(STREAM_DROPOUT_D));

        let fake = self.generator.forward(x.clone()); // [batch, classes, n, n, n]
        // G's loss through a frozen D: gradients reach θ_G only.
        let frozen_d = self.discriminator.clone().no_grad();
        let (loss_g, dice, adv) =
            self.generator_losses(&frozen_d, x.clone(), y.clone(), fake.clone());
        // D's loss on the real masks and the detached prediction (gradients reach θ_D only),
        // both halves in one batch: one pass of D's layers instead of two.
        let n = x.dims()[0];
        let scores = self.discriminator.forward(
            Tensor::cat(vec![x.clone(), x], 0),
            Tensor::cat(vec![y, fake.detach()], 0),
        );
        let real = lsgan(scores.clone().narrow(0, 0, n), 1.0);
        let generated = lsgan(scores.narrow(0, n, n), 0.0);
        let loss_d = (real + generated) * 0.5;

        let mut out = StepLosses::default();
        out.push("g_loss", loss_g.clone());
        out.push("dice_loss", dice);
        out.push("adv_loss", adv);
        out.push("d_loss", loss_d.clone());

        let mut grads = (loss_g + loss_d).backward();
        let grads_g = GradientsParams::from_module(&mut grads, &self.generator);
        let grads_d = GradientsParams::from_module(&mut grads, &self.discriminator);
        self.generator = self
            .opt_g
            .step(self.config.opt_g.lr, self.generator.clone(), grads_g);
        self.discriminator =
            self.opt_d
                .step(self.config.opt_d.lr, self.discriminator.clone(), grads_d);
        self.progress.steps += 1;
        out
    }

    fn valid_predict(&self, batch: &Batch) -> (StepLosses, Tensor<5>) {
        let (x, y) = (batch.images.clone().inner(), batch.masks.clone().inner());
        let g = self.generator.valid();
        let d = self.discriminator.valid();
        let fake = g.forward(x.clone());
        let (total, dice, adv) = self.generator_losses(&d, x.clone(), y.clone(), fake.clone());
        let real = lsgan(d.forward(x.clone(), y), 1.0);
        let generated = lsgan(d.forward(x, fake.clone()), 0.0);
        let mut out = StepLosses::default();
        out.push("g_loss", total);
        out.push("dice_loss", dice);
        out.push("adv_loss", adv);
        out.push("d_loss", (real + generated) * 0.5);
        (out, fake)
    }

    fn predict(&self, images: Tensor<5>) -> Tensor<5> {
        self.generator.valid().forward(images.inner())
    }

    fn progress(&self) -> &Progress {
        &self.progress
    }

    fn write_checkpoint(&self, folder: &Path, contents: Contents) -> Result<(), TrainError> {
        let w = CheckpointWriter::new(folder, contents);
        w.module("generator", &self.generator)?;
        w.module("discriminator", &self.discriminator)?;
        w.optimizer("generator", &self.opt_g)?;
        w.optimizer("discriminator", &self.opt_d)?;
        w.finish(&self.info())
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<(), TrainError> {
        let info = checkpoint::read_compatible(dir, ModelKind::Vox2Vox, &self.model_config)?;
        let generator = checkpoint::load_module(dir, "generator", self.generator.clone())?;
        let discriminator =
            checkpoint::load_module(dir, "discriminator", self.discriminator.clone())?;
        let opt_g = checkpoint::load_optimizer(dir, &info, "generator", self.config.opt_g.init())?;
        let opt_d =
            checkpoint::load_optimizer(dir, &info, "discriminator", self.config.opt_d.init())?;
        self.generator = generator;
        self.discriminator = discriminator;
        self.opt_g = opt_g;
        self.opt_d = opt_d;
        self.progress.resume(&info);
        Ok(())
    }
}

impl Vox2VoxTrainer {
    fn info(&self) -> CheckpointInfo {
        self.progress
            .header(ModelKind::Vox2Vox, &self.model_config, &self.config)
    }
}
