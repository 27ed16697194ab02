//! Training: the losses of the published code ([`losses`]) and one training step per model
//! ([`unet3d::Unet3dTrainer`], [`vox2vox::Vox2VoxTrainer`], [`cyclegan::CycleGanTrainer`]),
//! each implementing [`Trainer`] — the interface the epoch driver drives. [`Batch`] carries
//! one mini-batch, [`StepLosses`] the named losses of one step, [`AdamSettings`] one optimizer,
//! [`checkpoint`] the on-disk state (weights, optimizer moments, image pools, step counter).
//!
//! Randomness: every trainer derives all of its random draws (weights, dropout masks, image
//! pool choices) from its seed and the step counter, on the host, so the same seed gives the
//! same losses on the CPU and a run resumed from a checkpoint continues exactly as the
//! uninterrupted run would. burn's process-global device RNG is never used.
//!
//! [`config`] holds the resolved configuration of one trial ([`TrialConfig`]) and the
//! interface to whoever records it ([`TrialSink`], [`TrialContext`], [`StopFlag`]).
//!
//! The trainers do not load data, loop over epochs or decide when to stop; that is the
//! driver's job (`train/driver.rs`), and sliding-window prediction is `infer/`'s.

use std::path::PathBuf;

use burn::config::Config;
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Tensor, TensorData};

use crate::models::{ModelError, ModelKind};

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod cyclegan;
pub mod driver;
pub mod losses;
pub mod progress;
pub mod retention;
pub mod trial;
pub mod unet3d;
pub mod vox2vox;

pub use checkpoint::CheckpointInfo;
pub use config::{
    DriverConfig, MemorySink, PruneDecision, StopFlag, StopReason, TrialConfig, TrialContext,
    TrialOutcome, TrialSink, TrialSummary,
};
pub use cyclegan::{CycleGanTrainConfig, CycleGanTrainer};
pub use trial::run_trial;
pub use unet3d::{Unet3dTrainConfig, Unet3dTrainer};
pub use vox2vox::{Vox2VoxTrainConfig, Vox2VoxTrainer};

/// Errors of training and checkpoint handling.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ModelError),
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("batch: {0}")]
    Batch(String),
    /// An invalid or unknown trial setting; the message names the dotted key.
    #[error("{0}")]
    Setting(String),
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    #[error(transparent)]
    Infer(#[from] crate::infer::InferError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    Synth(#[from] crate::synth::SynthError),
    /// A loss became NaN or infinite: training diverged.
    #[error(
        "loss `{name}` is {value} at epoch {epoch}, step {step}: training diverged \
         (lower the learning rate or check the inputs)"
    )]
    NonFinite {
        name: String,
        value: f64,
        epoch: u32,
        step: u64,
    },
    /// The sink (store, MLflow mirror, CSV files) could not record rows.
    #[error("recording rows: {0}")]
    Sink(String),
    #[error(transparent)]
    Write(#[from] crate::atomic::WriteError),
}

/// One mini-batch on the trainer's device.
///
/// `images` are preprocessed intensities in [0, 1]; `masks` are {0, 1}. For U-Net and Vox2Vox
/// the two are paired sample by sample; for CycleGAN they are independent draws (real image
/// patches and synthetic mask patches, §5.4) and may even differ in batch size. Each trainer
/// maps the values to its own range (CycleGAN: [−1, 1], §1.5).
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[batch, image_channels, n, n, n]`
    pub images: Tensor<5>,
    /// `[batch, mask_channels, n, n, n]`
    pub masks: Tensor<5>,
}

impl Batch {
    /// A batch from host data in (sample, channel, z, y, x) order.
    pub fn from_host(
        images: Vec<f32>,
        image_shape: [usize; 5],
        masks: Vec<f32>,
        mask_shape: [usize; 5],
        device: &Device,
    ) -> Result<Self, TrainError> {
        for (name, len, shape) in [
            ("images", images.len(), image_shape),
            ("masks", masks.len(), mask_shape),
        ] {
            if len != shape.iter().product::<usize>() {
                return Err(TrainError::Batch(format!(
                    "{name} have {len} values, shape {shape:?} needs {}",
                    shape.iter().product::<usize>()
                )));
            }
        }
        Ok(Self {
            images: Tensor::from_data(TensorData::new(images, image_shape), device),
            masks: Tensor::from_data(TensorData::new(masks, mask_shape), device),
        })
    }
}

/// The named losses of one step, in a fixed order per model (e.g. `loss`, `dice_loss`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepLosses(pub Vec<(&'static str, f64)>);

impl StepLosses {
    /// The value of `name`, if this step reported it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
    }

    fn push(&mut self, name: &'static str, value: Tensor<1>) {
        self.0.push((name, f64::from(value.into_scalar::<f32>())));
    }
}

/// One Adam optimizer (docs/published-code.md §3.3, §4.4, §5.4). Defaults are Keras': β1 0.9,
/// β2 0.999, ε 1e-7 (burn's own default ε is 1e-5).
///
/// burn adds ε to √v̂ (bias-corrected), Keras to √v of the uncorrected moment with a corrected
/// step size; the two differ by ε·(1 − √(1 − β2^t)), i.e. only in the first steps and by < 1e-7.
#[derive(Config, Debug, PartialEq)]
pub struct AdamSettings {
    /// Learning rate.
    pub lr: f64,
    #[config(default = 0.9)]
    pub beta_1: f64,
    #[config(default = 0.999)]
    pub beta_2: f64,
    #[config(default = 1e-7)]
    pub epsilon: f64,
    /// AMSGrad variant (the U-Net's optimizer, §3.3); burn implements it like Keras (the max of
    /// the second moments replaces the second moment).
    #[config(default = false)]
    pub amsgrad: bool,
}

impl AdamSettings {
    /// Checks the values; `field` is the config path of this optimizer (e.g. `train.opt_g`).
    pub fn validate(&self, field: &str) -> Result<(), ModelError> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(ModelError::config(
                format!("{field}.lr"),
                "must be > 0",
                self.lr,
            ));
        }
        for (name, v) in [("beta_1", self.beta_1), ("beta_2", self.beta_2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(ModelError::config(
                    format!("{field}.{name}"),
                    "must be in [0, 1)",
                    v,
                ));
            }
        }
        if !(self.epsilon > 0.0 && self.epsilon.is_finite()) {
            return Err(ModelError::config(
                format!("{field}.epsilon"),
                "must be > 0",
                self.epsilon,
            ));
        }
        Ok(())
    }

    /// These settings with learning rate `lr`.
    pub fn at_lr(&self, lr: f64) -> Self {
        Self { lr, ..self.clone() }
    }

    /// A fresh optimizer with these settings ([`crate::kernels::FusedAdam`]: burn's update and state,
    /// one pass per parameter on the CPU).
    pub fn init(&self) -> ModuleOptimizer {
        ModuleOptimizer::from(crate::kernels::FusedAdam::new(
            self.beta_1 as f32,
            self.beta_2 as f32,
            self.epsilon as f32,
            self.amsgrad,
        ))
    }
}

/// What the epoch driver needs from a model: a training step, a validation step, prediction,
/// and checkpoints. Implemented by the three trainers.
pub trait Trainer {
    /// Which model this trains.
    fn kind(&self) -> ModelKind;

    /// One optimisation step on `batch` (tensors on [`Trainer::device`]); returns the step's
    /// losses (computed before the update, as Keras reports them).
    fn train_step(&mut self, batch: &Batch) -> StepLosses;

    /// The losses of `batch` without updating anything (dropout off, batch norm in inference).
    /// The first entry is the model's validation criterion (U-Net: Dice loss; Vox2Vox: the
    /// generator's total loss, §4.4; CycleGAN: the segmenter's cycle + identity loss).
    fn valid_step(&self, batch: &Batch) -> StepLosses {
        self.valid_predict(batch).0
    }

    /// [`Trainer::valid_step`] together with [`Trainer::predict`] of `batch.images`. Validation
    /// needs both every epoch; the paired trainers override this to run the network forward
    /// once and return the prediction their loss was computed on, halving validation time.
    /// Implement at least one of `valid_step` and `valid_predict`.
    fn valid_predict(&self, batch: &Batch) -> (StepLosses, Tensor<5>) {
        (self.valid_step(batch), self.predict(batch.images.clone()))
    }

    /// Per-class probabilities in [0, 1] for `images` in [0, 1] (inference mode).
    ///
    /// # Shapes
    ///
    /// - images: `[batch, image_channels, n, n, n]` on any device of the trainer's backend
    /// - output: `[batch, mask_channels, n, n, n]` on a plain (non-autodiff) device
    fn predict(&self, images: Tensor<5>) -> Tensor<5>;

    /// Where the trainer stands: device, seed and steps taken.
    fn progress(&self) -> &Progress;

    /// Optimisation steps taken so far.
    fn steps(&self) -> u64 {
        self.progress().steps
    }

    /// The autodiff device the trainer trains on; batches must live there.
    fn device(&self) -> &Device {
        &self.progress().device
    }

    /// Writes the training state (`contents`: all of it, or the weights only) into the empty
    /// folder `folder` (not atomically: callers build `folder` through
    /// [`crate::atomic::build_folder`]).
    fn write_checkpoint(
        &self,
        folder: &std::path::Path,
        contents: checkpoint::Contents,
    ) -> Result<(), TrainError>;

    /// Writes the complete training state to the directory `dir`, atomically: built beside it
    /// and renamed into place, replacing an older checkpoint only once complete.
    fn save_checkpoint(&self, dir: &std::path::Path) -> Result<(), TrainError> {
        crate::atomic::build_folder(dir, true, |folder| {
            self.write_checkpoint(folder, checkpoint::Contents::Full)
        })
    }

    /// Restores the state written by [`Trainer::save_checkpoint`] into this trainer (built
    /// with the same configuration): the weights, and the optimizer state and image pools
    /// when the checkpoint is a full one.
    fn load_checkpoint(&mut self, dir: &std::path::Path) -> Result<(), TrainError>;
}

/// Where a trainer stands, whatever its networks: the autodiff device it trains on, the seed
/// every random draw derives from, and the optimisation steps taken. A checkpoint's header
/// records the seed and steps, so a resumed run continues the same random streams.
#[derive(Clone, Debug)]
pub struct Progress {
    pub device: Device,
    pub seed: u64,
    pub steps: u64,
}

impl Progress {
    /// A fresh trainer's start on the autodiff version of `device`; keeps freed memory in the
    /// process ([`keep_freed_memory`]) first.
    pub(crate) fn start(seed: u64, device: &Device) -> Self {
        keep_freed_memory();
        Self {
            device: device.clone().autodiff(),
            seed,
            steps: 0,
        }
    }

    /// The checkpoint header of a trainer of `model` with these configurations.
    pub(crate) fn header<M: serde::Serialize, T: serde::Serialize>(
        &self,
        model: ModelKind,
        model_config: &M,
        train_config: &T,
    ) -> CheckpointInfo {
        CheckpointInfo::new(model, self.steps, self.seed, model_config, train_config)
    }

    /// The seed of the per-step random stream `stream` at the current step.
    pub(crate) fn step_seed(&self, stream: u64) -> u64 {
        use crate::models::init::derive_seed;
        derive_seed(derive_seed(self.seed, stream), self.steps)
    }

    /// Continues from the checkpoint with header `info`: its step counter and the run's seed,
    /// which the per-step random streams derive from.
    pub(crate) fn resume(&mut self, info: &CheckpointInfo) {
        self.steps = info.steps;
        self.seed = info.seed;
    }
}

/// Keeps freed memory in the process instead of handing it back to the kernel after every
/// tensor (glibc): no `mmap` for large blocks and the largest trim threshold (2 GiB). Called
/// by every trainer's constructor ([`Progress::start`]), once per process; a user who sets
/// `MALLOC_MMAP_MAX_` or `MALLOC_TRIM_THRESHOLD_` keeps their own value.
///
/// Training allocates and frees tensors of 100+ MB in every layer (the `paper` U-Net's
/// activations are 134 MB). glibc maps every block above its mmap threshold (at most 32 MiB)
/// freshly and unmaps it on free, so each layer's tensors fault in and are zeroed again on
/// every step, and a trim threshold below what a step frees (1.5 GB) returns the heap top
/// between steps. `seglab bench train --model unet3d --scale paper --batch 4 --steps 3` on 2
/// cores: 14.3–14.8 s per step and 14 million page faults with a 32 MiB mmap threshold and a
/// 1 GiB trim threshold; 11.3–11.8 s and 0.9–1.0 million with these settings.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            for (variable, param, value) in [
                ("MALLOC_MMAP_MAX_", libc::M_MMAP_MAX, 0),
                (
                    "MALLOC_TRIM_THRESHOLD_",
                    libc::M_TRIM_THRESHOLD,
                    libc::c_int::MAX,
                ),
            ] {
                if std::env::var_os(variable).is_none() {
                    // SAFETY: mallopt only changes allocator parameters and is safe to call
                    // from any thread.
                    unsafe { libc::mallopt(param, value) };
                }
            }
        });
    }
}
