//! The CycleGAN training step (docs/published-code.md §5.3–§5.4).
//!
//! Domains: A = real images, B = (synthetic) masks, both mapped to [−1, 1]. One iteration:
//!
//! 1. the batch brings image patches A and, independently drawn, mask patches B;
//! 2. fake_A = G_BA(B) and fake_B = G_AB(A) with the pre-update generators;
//! 3. each fake passes its domain's [`ImagePool`] (50 images);
//! 4. G_BA is updated through its composite: adversarial through the frozen D_A, identity
//!    G_BA(A) ≈ A, forward cycle G_AB(G_BA(B)) ≈ B and backward cycle G_BA(G_AB(A)) ≈ A through
//!    the frozen G_AB, with λ_id = 5 and λ_cyc = 10 and the channel-weighted L1;
//! 5. D_A takes one Adam step on 0.5·mean((D_A(A) − 1)²), then a separate one on
//!    0.5·mean(D_A(pooled fake_A)²);
//! 6. G_AB is updated through its composite (using the G_BA updated in 4);
//! 7. D_B as in 5, on B and the pooled fake_B.
//!
//! One Adam per network (G lr 5e-4, D lr 1e-4, β1 0.5, ε 1e-7). A "frozen" network is a
//! `no_grad` copy: gradients flow through it to the network being stepped, but nothing of it
//! is updated, as with Keras' compile-time `trainable = False`.
//!
//! Option not in the published code: `straight_through_masks` hands the segmenter's output on
//! as a binary mask (its sign) wherever it stands for a mask, with straight-through gradients.

use std::path::Path;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use rand::rngs::ChaCha8Rng;
use rand::{Rng, RngExt, SeedableRng};

use super::checkpoint::{self, CheckpointInfo, CheckpointWriter, Contents};
use super::losses::{channel_weights, lsgan, weighted_l1};
use super::{AdamSettings, Batch, Progress, StepLosses, TrainError, Trainer};
use crate::models::init::derive_seed;
use crate::models::materialize;
use crate::models::{
    CycleGanConfig, CycleGanDiscriminator, CycleGanGenerator, ModelError, ModelKind,
};
use crate::preset::Preset;

/// Training settings of the CycleGAN. Defaults are the published code's (§5.3, §5.4).
#[derive(Config, Debug, PartialEq)]
pub struct CycleGanTrainConfig {
    /// Optimizer of each generator (Adam lr 5e-4, β1 0.5).
    #[config(default = "AdamSettings::new(5e-4).with_beta_1(0.5)")]
    pub opt_g: AdamSettings,
    /// Optimizer of each discriminator (Adam lr 1e-4, β1 0.5).
    #[config(default = "AdamSettings::new(1e-4).with_beta_1(0.5)")]
    pub opt_d: AdamSettings,
    /// Weight of each cycle-consistency term (10).
    #[config(default = 10.0)]
    pub lambda_cycle: f64,
    /// Weight of the identity term (5).
    #[config(default = 5.0)]
    pub lambda_identity: f64,
    /// L1 weight of the `golgi` channel in the cycle and identity terms, in both domains; other
    /// channels weigh 1 (3.5, the paper's value).
    #[config(default = 3.5)]
    pub golgi_weight: f64,
    /// Generated images kept per domain for the discriminator updates (50); 0 disables the pool.
    #[config(default = 50)]
    pub pool_size: usize,
    /// Hand the segmenter's output on as a binary mask: wherever it stands for a mask — at the
    /// mask discriminator, in its pool, at the painter in both cycles — it is replaced by its
    /// sign, and gradients pass straight through as if it were not (Bengio et al. 2013). Not
    /// in the published code (false).
    #[config(default = false)]
    pub straight_through_masks: bool,
}

impl CycleGanTrainConfig {
    /// The settings of a fidelity preset: `code` as published; `thesis` with the thesis text's
    /// learning rates (G 1e-3, D 5e-3, §5.3.3 of the thesis); `paper` states only the Golgi
    /// weight 3.5, which the code shares.
    pub fn for_preset(preset: Preset) -> Self {
        let cfg = Self::new();
        match preset {
            Preset::Code | Preset::Paper => cfg,
            Preset::Thesis => {
                let (g, d) = (cfg.opt_g.at_lr(1e-3), cfg.opt_d.at_lr(5e-3));
                cfg.with_opt_g(g).with_opt_d(d)
            }
        }
    }

    /// Checks the settings against the model (identity terms feed masks to the image → mask
    /// generator, so they need as many image as mask channels).
    pub fn validate(&self, model: &CycleGanConfig) -> Result<(), TrainError> {
        self.opt_g.validate("train.opt_g")?;
        self.opt_d.validate("train.opt_d")?;
        for (name, v) in [
            ("train.lambda_cycle", self.lambda_cycle),
            ("train.lambda_identity", self.lambda_identity),
            ("train.golgi_weight", self.golgi_weight),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(ModelError::config(name, "must be ≥ 0", v).into());
            }
        }
        if self.lambda_identity > 0.0 && model.image_channels != model.mask_channels {
            return Err(ModelError::config(
                "train.lambda_identity",
                format!(
                    "must be 0 when image and mask channels differ ({} vs {})",
                    model.image_channels, model.mask_channels
                ),
                self.lambda_identity,
            )
            .into());
        }
        Ok(())
    }
}

/// The history of generated images a discriminator trains on (Shrivastava et al.; §5.4):
/// until full, every new image is stored and used; then each new image is used as is with
/// probability ½, otherwise a random stored image is used and replaced by the new one.
#[derive(Clone, Debug, Default)]
pub struct ImagePool {
    capacity: usize,
    images: Vec<Tensor<5>>,
}

impl ImagePool {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            images: Vec::new(),
        }
    }

    /// Images currently stored.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The images the discriminator sees for the generated `batch`, one by one as above.
    ///
    /// # Shapes
    ///
    /// - batch: `[batch, channels, n, n, n]` (plain device)
    /// - output: `[batch, channels, n, n, n]`
    pub fn query(&mut self, batch: Tensor<5>, rng: &mut impl Rng) -> Tensor<5> {
        if self.capacity == 0 {
            return batch;
        }
        let n = batch.dims()[0];
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let image = batch.clone().narrow(0, i, 1); // [1, channels, n, n, n]
            if self.images.len() < self.capacity {
                self.images.push(image.clone());
                out.push(image);
            } else if rng.random::<f64>() < 0.5 {
                out.push(image);
            } else {
                let ix = rng.random_range(0..self.images.len());
                out.push(std::mem::replace(&mut self.images[ix], image));
            }
        }
        Tensor::cat(out, 0)
    }

    /// The stored images as one tensor `[stored, channels, n, n, n]`, or `None` when empty.
    fn stacked(&self) -> Option<Tensor<5>> {
        (!self.images.is_empty()).then(|| Tensor::cat(self.images.clone(), 0))
    }

    fn restore(&mut self, stacked: Tensor<5>) {
        let n = stacked.dims()[0];
        self.images = (0..n).map(|i| stacked.clone().narrow(0, i, 1)).collect();
    }
}

/// A pool as a module, so that it is saved in the same burnpack format as the weights.
#[derive(Module, Debug)]
struct PoolRecord {
    images: Param<Tensor<5>>,
}

/// Per-step random stream of the image pools.
const STREAM_POOL: u64 = 1;

/// Trains the two generators and two discriminators of a CycleGAN, one optimizer each.
pub struct CycleGanTrainer {
    g_ab: CycleGanGenerator,
    g_ba: CycleGanGenerator,
    d_a: CycleGanDiscriminator,
    d_b: CycleGanDiscriminator,
    opt_g_ab: ModuleOptimizer,
    opt_g_ba: ModuleOptimizer,
    opt_d_a: ModuleOptimizer,
    opt_d_b: ModuleOptimizer,
    pool_a: ImagePool,
    pool_b: ImagePool,
    image_weights: Vec<f64>,
    mask_weights: Vec<f64>,
    model_config: CycleGanConfig,
    config: CycleGanTrainConfig,
    progress: Progress,
}

/// The terms of one generator composite.
struct Composite {
    total: Tensor<1>,
    adversarial: Tensor<1>,
    identity: Tensor<1>,
    cycle: Tensor<1>,
}

impl CycleGanTrainer {
    /// Freshly initialised networks on the autodiff version of `device`. `image_names` and
    /// `mask_names` are the channel names of the two domains (they choose the channels the
    /// Golgi L1 weight applies to).
    pub fn new<S: AsRef<str>>(
        model_config: CycleGanConfig,
        config: CycleGanTrainConfig,
        image_names: &[S],
        mask_names: &[S],
        seed: u64,
        device: &Device,
    ) -> Result<Self, TrainError> {
        model_config.validate()?;
        config.validate(&model_config)?;
        for (field, names, n) in [
            (
                "image channel names",
                image_names.len(),
                model_config.image_channels,
            ),
            (
                "mask channel names",
                mask_names.len(),
                model_config.mask_channels,
            ),
        ] {
            if names != n {
                return Err(ModelError::config(
                    field,
                    format!("must name all {n} channels"),
                    names,
                )
                .into());
            }
        }
        let progress = Progress::start(seed, device);
        let device = &progress.device;
        let g_ab = model_config.init_segmenter(derive_seed(seed, 0), device);
        let g_ba = model_config.init_painter(derive_seed(seed, 1), device);
        let d_a = model_config.init_image_discriminator(derive_seed(seed, 2), device);
        let d_b = model_config.init_mask_discriminator(derive_seed(seed, 3), device);
        materialize(&g_ab);
        materialize(&g_ba);
        materialize(&d_a);
        materialize(&d_b);
        Ok(Self {
            g_ab,
            g_ba,
            d_a,
            d_b,
            opt_g_ab: config.opt_g.init(),
            opt_g_ba: config.opt_g.init(),
            opt_d_a: config.opt_d.init(),
            opt_d_b: config.opt_d.init(),
            pool_a: ImagePool::new(config.pool_size),
            pool_b: ImagePool::new(config.pool_size),
            image_weights: channel_weights(image_names, config.golgi_weight),
            mask_weights: channel_weights(mask_names, config.golgi_weight),
            model_config,
            config,
            progress,
        })
    }

    /// G_AB, the segmenter (image → mask).
    pub fn segmenter(&self) -> &CycleGanGenerator {
        &self.g_ab
    }

    /// G_BA (mask → image).
    pub fn painter(&self) -> &CycleGanGenerator {
        &self.g_ba
    }

    /// The composite loss of generator `g` (domain X → Y) with the other generator `f` (Y → X)
    /// and Y's discriminator `d`, for inputs `x` of X and `y` of Y. `f` and `d` should be frozen
    /// (or plain) copies; gradients then reach `g` only. `y_is_mask` says whether `g` is the
    /// segmenter (its outputs are then handed on through [`Self::as_mask`], and `f`'s are not).
    #[allow(clippy::too_many_arguments)]
    fn composite(
        &self,
        g: &CycleGanGenerator,
        f: &CycleGanGenerator,
        d: &CycleGanDiscriminator,
        x: Tensor<5>,
        y: Tensor<5>,
        w_x: &[f64],
        w_y: &[f64],
        y_is_mask: bool,
    ) -> Composite {
        let hand_on = |t: Tensor<5>, is_mask: bool| if is_mask { self.as_mask(t) } else { t };
        let gx = hand_on(g.forward(x.clone()), y_is_mask); // [batch, Y channels, n, n, n]
        let adversarial = lsgan(d.forward(gx.clone()), 1.0);
        let identity = if self.config.lambda_identity > 0.0 {
            weighted_l1(g.forward(y.clone()), y.clone(), w_y)
        } else {
            Tensor::zeros([1], &gx.device())
        };
        let forward_cycle = weighted_l1(f.forward(gx), x, w_x);
        let fy = hand_on(f.forward(y.clone()), !y_is_mask);
        let backward_cycle = weighted_l1(g.forward(fy), y, w_y);
        let cycle = forward_cycle + backward_cycle;
        let total = adversarial.clone()
            + identity.clone() * self.config.lambda_identity
            + cycle.clone() * self.config.lambda_cycle;
        Composite {
            total,
            adversarial,
            identity,
            cycle,
        }
    }

    /// A segmenter output (tanh range) as the mask it is handed on as: itself, or with
    /// `straight_through_masks` its [`straight_through_sign`].
    fn as_mask(&self, t: Tensor<5>) -> Tensor<5> {
        if self.config.straight_through_masks {
            straight_through_sign(t)
        } else {
            t
        }
    }

    /// Two separate Adam steps of discriminator `d` (§5.4 step 5/7): real `real` → 1, then
    /// pooled generated `fake` → 0, each loss weighted 0.5. Returns (real, fake) losses.
    fn discriminator_steps(
        d: CycleGanDiscriminator,
        opt: &mut ModuleOptimizer,
        lr: f64,
        real: Tensor<5>,
        fake: Tensor<5>,
    ) -> (CycleGanDiscriminator, Tensor<1>, Tensor<1>) {
        let loss_real = lsgan(d.forward(real), 1.0) * 0.5;
        let grads = GradientsParams::from_grads(loss_real.backward(), &d);
        let d = opt.step(lr, d, grads);
        let loss_fake = lsgan(d.forward(fake), 0.0) * 0.5;
        let grads = GradientsParams::from_grads(loss_fake.backward(), &d);
        let d = opt.step(lr, d, grads);
        (d, loss_real, loss_fake)
    }
}

/// +1 where `t` > 0, else −1, with the gradient of the identity (a straight-through
/// estimator, Bengio et al. 2013). A mask discriminator that sees the segmenter's soft output
/// wins on "is it exactly ±1" alone — the output cannot saturate through the per-patch
/// instance norm before its tanh — and the painter can read information hidden in soft
/// values (see README, Limits); on the sign, both must deal with the mask's shape.
fn straight_through_sign(t: Tensor<5>) -> Tensor<5> {
    let hard = t.clone().greater_elem(0.0).float() * 2.0 - 1.0;
    t.clone() + (hard - t).detach()
}

/// [0, 1] → [−1, 1] (§1.5).
fn to_tanh_range(t: Tensor<5>) -> Tensor<5> {
    t * 2.0 - 1.0
}

impl Trainer for CycleGanTrainer {
    fn kind(&self) -> ModelKind {
        ModelKind::CycleGan
    }

    fn train_step(&mut self, batch: &Batch) -> StepLosses {
        let a = to_tanh_range(batch.images.clone()); // real images
        let b = to_tanh_range(batch.masks.clone()); // (synthetic) masks
        let (lr_g, lr_d) = (self.config.opt_g.lr, self.config.opt_d.lr);
        let (wa, wb) = (self.image_weights.clone(), self.mask_weights.clone());

        // 2–3. Fakes of the pre-update generators, through the pools.
        let mut rng = ChaCha8Rng::seed_from_u64(self.progress.step_seed(STREAM_POOL));
        let fake_a = self.g_ba.valid().forward(b.clone().inner());
        let fake_b = self.as_mask(self.g_ab.valid().forward(a.clone().inner()));
        let pooled_a = self.pool_a.query(fake_a, &mut rng).autodiff();
        let pooled_b = self.pool_b.query(fake_b, &mut rng).autodiff();

        let mut out = StepLosses::default();
        // 4. G_BA (B → A) through frozen G_AB and D_A.
        let c = self.composite(
            &self.g_ba,
            &self.g_ab.clone().no_grad(),
            &self.d_a.clone().no_grad(),
            b.clone(),
            a.clone(),
            &wb,
            &wa,
            false,
        );
        out.push("g_ba_loss", c.total.clone());
        let grads = GradientsParams::from_grads(c.total.backward(), &self.g_ba);
        self.g_ba = self.opt_g_ba.step(lr_g, self.g_ba.clone(), grads);

        // 5. D_A: real images, then pooled generated images.
        let (d_a, real, fake) = Self::discriminator_steps(
            self.d_a.clone(),
            &mut self.opt_d_a,
            lr_d,
            a.clone(),
            pooled_a,
        );
        self.d_a = d_a;
        out.push("d_a_real", real);
        out.push("d_a_fake", fake);

        // 6. G_AB (A → B) through the updated, frozen G_BA and frozen D_B.
        let c = self.composite(
            &self.g_ab,
            &self.g_ba.clone().no_grad(),
            &self.d_b.clone().no_grad(),
            a,
            b.clone(),
            &wa,
            &wb,
            true,
        );
        out.push("g_ab_loss", c.total.clone());
        out.push("g_ab_adversarial", c.adversarial);
        out.push("g_ab_identity", c.identity);
        out.push("g_ab_cycle", c.cycle);
        let grads = GradientsParams::from_grads(c.total.backward(), &self.g_ab);
        self.g_ab = self.opt_g_ab.step(lr_g, self.g_ab.clone(), grads);

        // 7. D_B: real masks, then pooled generated masks.
        let (d_b, real, fake) =
            Self::discriminator_steps(self.d_b.clone(), &mut self.opt_d_b, lr_d, b, pooled_b);
        self.d_b = d_b;
        out.push("d_b_real", real);
        out.push("d_b_fake", fake);

        self.progress.steps += 1;
        out
    }

    fn valid_step(&self, batch: &Batch) -> StepLosses {
        let a = to_tanh_range(batch.images.clone().inner());
        let b = to_tanh_range(batch.masks.clone().inner());
        let (g_ab, g_ba, d_b) = (self.g_ab.valid(), self.g_ba.valid(), self.d_b.valid());
        let c = self.composite(
            &g_ab,
            &g_ba,
            &d_b,
            a,
            b,
            &self.image_weights,
            &self.mask_weights,
            true,
        );
        let mut out = StepLosses::default();
        out.push("g_ab_loss", c.total);
        out.push("g_ab_adversarial", c.adversarial);
        out.push("g_ab_identity", c.identity);
        out.push("g_ab_cycle", c.cycle);
        out
    }

    fn predict(&self, images: Tensor<5>) -> Tensor<5> {
        let y = self.g_ab.valid().forward(to_tanh_range(images.inner()));
        (y + 1.0) / 2.0 // tanh → [0, 1] (§6 step 3)
    }

    fn progress(&self) -> &Progress {
        &self.progress
    }

    fn write_checkpoint(&self, folder: &Path, contents: Contents) -> Result<(), TrainError> {
        let w = CheckpointWriter::new(folder, contents);
        w.module("g_ab", &self.g_ab)?;
        w.module("g_ba", &self.g_ba)?;
        w.module("d_a", &self.d_a)?;
        w.module("d_b", &self.d_b)?;
        w.optimizer("g_ab", &self.opt_g_ab)?;
        w.optimizer("g_ba", &self.opt_g_ba)?;
        w.optimizer("d_a", &self.opt_d_a)?;
        w.optimizer("d_b", &self.opt_d_b)?;
        let mut info = self.info();
        // The image pools are training state: a weights-only checkpoint leaves them out.
        let pools = if w.full() {
            vec![("pool_a", &self.pool_a), ("pool_b", &self.pool_b)]
        } else {
            Vec::new()
        };
        for (name, pool) in pools {
            match pool.stacked() {
                Some(images) => {
                    info.pool_shapes.push(images.dims());
                    w.module(
                        name,
                        &PoolRecord {
                            images: Param::from_tensor(images),
                        },
                    )?;
                }
                None => info.pool_shapes.push([0; 5]),
            }
        }
        w.finish(&info)
    }

    fn load_checkpoint(&mut self, dir: &Path) -> Result<(), TrainError> {
        let info = checkpoint::read_compatible(dir, ModelKind::CycleGan, &self.model_config)?;
        let g_ab = checkpoint::load_module(dir, "g_ab", self.g_ab.clone())?;
        let g_ba = checkpoint::load_module(dir, "g_ba", self.g_ba.clone())?;
        let d_a = checkpoint::load_module(dir, "d_a", self.d_a.clone())?;
        let d_b = checkpoint::load_module(dir, "d_b", self.d_b.clone())?;
        let opt_g_ab = checkpoint::load_optimizer(dir, &info, "g_ab", self.config.opt_g.init())?;
        let opt_g_ba = checkpoint::load_optimizer(dir, &info, "g_ba", self.config.opt_g.init())?;
        let opt_d_a = checkpoint::load_optimizer(dir, &info, "d_a", self.config.opt_d.init())?;
        let opt_d_b = checkpoint::load_optimizer(dir, &info, "d_b", self.config.opt_d.init())?;
        let plain = self.progress.device.clone().inner();
        let mut pools = [
            ImagePool::new(self.config.pool_size),
            ImagePool::new(self.config.pool_size),
        ];
        // A weights-only checkpoint has no pools: they start empty.
        let stored: &[&str] = if info.weights_only {
            &[]
        } else {
            &["pool_a", "pool_b"]
        };
        for (i, &name) in stored.iter().enumerate() {
            let Some(&shape) = info.pool_shapes.get(i) else {
                return Err(TrainError::Checkpoint {
                    path: dir.join(checkpoint::STATE_FILE),
                    message: "pool_shapes must list the two image pools".into(),
                });
            };
            if shape[0] > 0 {
                let empty = PoolRecord {
                    images: Param::from_tensor(Tensor::zeros(shape, &plain)),
                };
                let record = checkpoint::load_module(dir, name, empty)?;
                pools[i].restore(record.images.val());
            }
        }
        let [pool_a, pool_b] = pools;
        (self.g_ab, self.g_ba, self.d_a, self.d_b) = (g_ab, g_ba, d_a, d_b);
        (self.opt_g_ab, self.opt_g_ba, self.opt_d_a, self.opt_d_b) =
            (opt_g_ab, opt_g_ba, opt_d_a, opt_d_b);
        (self.pool_a, self.pool_b) = (pool_a, pool_b);
        self.progress.resume(&info);
        Ok(())
    }
}

impl CycleGanTrainer {
    fn info(&self) -> CheckpointInfo {
        self.progress
            .header(ModelKind::CycleGan, &self.model_config, &self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forward: the sign (0 counts as background). Backward: the incoming gradient unchanged.
    #[test]
    fn straight_through_sign_is_binary_forward_and_identity_backward() {
        let dev = Device::flex().autodiff();
        let values = [-0.9f32, -0.1, 0.0, 0.2, 0.7, -0.3, 0.05, 0.99];
        let x = Tensor::<1>::from_floats(values, &dev)
            .reshape([1, 1, 2, 2, 2])
            .require_grad();
        let weights = Tensor::<1>::from_floats([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &dev)
            .reshape([1, 1, 2, 2, 2]);
        let y = straight_through_sign(x.clone());
        let got = y.clone().try_into_vec_as::<f32>().unwrap();
        assert_eq!(got, [-1.0, -1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0]);
        let grads = (y * weights.clone()).sum().backward();
        let gx = x.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap();
        assert_eq!(gx, weights.try_into_vec_as::<f32>().unwrap());
    }
}
