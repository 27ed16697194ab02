//! Speed of the three models on the device they train on: the median wall-clock milliseconds of
//! one training step (every optimizer step of the model: one for the U-Net, G and D for
//! Vox2Vox, G_BA, D_A ×2, G_AB, D_B ×2 for CycleGAN) and of one predicted window, after warm-up.
//!
//! The figures are what `seglab bench` prints and what `benches/peers/run.sh` divides by
//! PyTorch's figures for the same architectures (issue "Training and prediction speed on CPU").
//! Inputs are random (images uniform in [0, 1], masks {0, 1} at 20 %) drawn on the host from a
//! fixed seed, so a run measures the same work every time.

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use super::{
    Batch, CycleGanTrainConfig, CycleGanTrainer, TrainError, Trainer, Unet3dTrainConfig,
    Unet3dTrainer, Vox2VoxTrainConfig, Vox2VoxTrainer,
};
use crate::backend::{Backend, DeviceSpec};
use crate::models::{
    CycleGanConfig, ModelError, ModelKind, ScaleSpec, Unet3dConfig, Vox2VoxConfig,
};
use crate::preset::Preset;

/// What is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchPhase {
    /// One training step with all optimizer updates.
    Train,
    /// One forward pass in inference mode over a batch of windows.
    Predict,
}

/// One benchmark: which model, at which scale, how many samples per batch, how many timed
/// repetitions after how many warm-up runs.
#[derive(Clone, Debug)]
pub struct BenchSpec {
    pub model: ModelKind,
    pub scale: ScaleSpec,
    /// Mask channels = image channels (the published 2-class task by default).
    pub classes: usize,
    /// Samples per step; `None` = the published batch ([`default_batch`]).
    pub batch: Option<usize>,
    /// Timed repetitions (the median is reported).
    pub steps: usize,
    /// Untimed runs before timing (allocator and thread-pool warm-up).
    pub warmup: usize,
}

impl BenchSpec {
    /// A 2-class benchmark with the published batch, 1 warm-up run and `steps` timed runs.
    pub fn new(model: ModelKind, scale: ScaleSpec, steps: usize) -> Self {
        Self {
            model,
            scale,
            classes: 2,
            batch: None,
            steps,
            warmup: 1,
        }
    }
}

/// The published training batch of a model (docs/published-code.md §3.3, §4.4, §5.4):
/// U-Net 4, Vox2Vox 4, CycleGAN 2. Prediction always defaults to one window per batch.
pub fn default_batch(model: ModelKind, phase: BenchPhase) -> usize {
    match (phase, model) {
        (BenchPhase::Predict, _) => 1,
        (BenchPhase::Train, ModelKind::CycleGan) => 2,
        (BenchPhase::Train, _) => 4,
    }
}

/// The result of one benchmark, as printed by `seglab bench --json`.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub phase: BenchPhase,
    pub model: ModelKind,
    pub scale: String,
    /// The model's base width: U-Net base filters, Vox2Vox and CycleGAN generator filters.
    pub width: usize,
    /// Edge of the cubic patch / window.
    pub patch: usize,
    pub batch: usize,
    pub classes: usize,
    /// The `--device` backend: cpu, wgpu or cuda.
    pub backend: Backend,
    /// The device's own name (`cpu`, or the GPU's, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub device: String,
    /// Worker threads of the CPU backend's pool.
    pub threads: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    /// Every timed repetition, in order.
    pub samples_ms: Vec<f64>,
}

/// A trainer for `spec` on `device` with the `code` preset and seed 0, plus its base width.
fn build(spec: &BenchSpec, device: &Device) -> Result<(Box<dyn Trainer>, usize), TrainError> {
    let c = spec.classes;
    let names: Vec<&str> = ["golgi", "nuclei", "pair"][..c.min(3)].to_vec();
    Ok(match spec.model {
        ModelKind::Unet3d => {
            let cfg = Unet3dConfig::for_scale(c, c, &spec.scale)?;
            cfg.validate_patch(spec.scale.patch_size())?;
            let width = cfg.base_filters;
            let t =
                Unet3dTrainer::new(cfg, Unet3dTrainConfig::for_preset(Preset::Code), 0, device)?;
            (Box::new(t), width)
        }
        ModelKind::Vox2Vox => {
            let cfg = Vox2VoxConfig::for_scale(c, c, &spec.scale)?;
            cfg.validate_patch(spec.scale.patch_size())?;
            let width = cfg.generator_filters;
            let t = Vox2VoxTrainer::new(
                cfg,
                Vox2VoxTrainConfig::for_task(names.as_slice(), Preset::Code),
                0,
                device,
            )?;
            (Box::new(t), width)
        }
        ModelKind::CycleGan => {
            let cfg = CycleGanConfig::for_scale(c, c, &spec.scale)?;
            cfg.validate_patch(spec.scale.patch_size())?;
            let width = cfg.generator_filters;
            let t = CycleGanTrainer::new(
                cfg,
                CycleGanTrainConfig::for_preset(Preset::Code),
                names.as_slice(),
                names.as_slice(),
                0,
                device,
            )?;
            (Box::new(t), width)
        }
        ModelKind::Threshold => {
            return Err(ModelError::config(
                "model",
                "must be a trained model (unet3d, vox2vox or cyclegan)",
                "threshold",
            )
            .into());
        }
    })
}

/// A random batch of `batch` samples with `channels` channels on `device` (seeded host draws).
fn random_batch(batch: usize, channels: usize, n: usize, device: &Device) -> Batch {
    let shape = [batch, channels, n, n, n];
    let len = shape.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let images: Vec<f32> = (0..len).map(|_| rng.random::<f32>()).collect();
    let masks: Vec<f32> = (0..len)
        .map(|_| f32::from(u8::from(rng.random::<f32>() < 0.2)))
        .collect();
    Batch {
        images: Tensor::from_data(TensorData::new(images, shape), device),
        masks: Tensor::from_data(TensorData::new(masks, shape), device),
    }
}

/// Median of a non-empty sample.
fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Runs `f` `warmup` times untimed, then `steps` times timed; milliseconds per run.
fn time_runs(warmup: usize, steps: usize, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..warmup {
        f();
    }
    (0..steps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

/// Times `spec` in `phase` on the device `device` names (trainers add autodiff themselves).
pub fn run(
    spec: &BenchSpec,
    phase: BenchPhase,
    device: DeviceSpec,
) -> Result<BenchReport, TrainError> {
    let (backend, device) = (
        device.backend,
        device.device().map_err(|reason| ModelError::Device {
            spec: device.to_string(),
            reason,
        })?,
    );
    if spec.steps == 0 {
        return Err(ModelError::config("steps", "must be ≥ 1", 0).into());
    }
    let (mut trainer, width) = build(spec, &device)?;
    let n = spec.scale.patch_size();
    let batch = spec.batch.unwrap_or(default_batch(spec.model, phase));
    if batch == 0 {
        return Err(ModelError::config("batch", "must be ≥ 1", 0).into());
    }
    let data = random_batch(batch, spec.classes, n, trainer.device());
    let samples = match phase {
        BenchPhase::Train => time_runs(spec.warmup, spec.steps, || {
            // The losses are read back, so the step's work is complete when the timer stops.
            let _ = trainer.train_step(&data);
        }),
        BenchPhase::Predict => {
            let windows = data.images.clone().inner();
            time_runs(spec.warmup, spec.steps, || {
                let _ = trainer.predict(windows.clone()).into_data();
            })
        }
    };
    Ok(BenchReport {
        phase,
        model: spec.model,
        scale: spec.scale.scale.name().to_string(),
        width,
        patch: n,
        batch,
        classes: spec.classes,
        backend,
        device: crate::backend::device_name(&device),
        threads: rayon::current_num_threads(),
        median_ms: median(&samples),
        min_ms: samples.iter().copied().fold(f64::INFINITY, f64::min),
        samples_ms: samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelScale;

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn tiny_unet_bench_reports_its_shape() {
        let mut scale = ScaleSpec::new(ModelScale::CpuSmall);
        scale.width_divisor = Some(32);
        scale.patch_size = Some(16);
        let mut spec = BenchSpec::new(ModelKind::Unet3d, scale, 2);
        spec.batch = Some(1);
        let r = run(&spec, BenchPhase::Train, DeviceSpec::CPU).unwrap();
        assert_eq!((r.width, r.patch, r.batch), (1, 16, 1));
        assert_eq!(r.samples_ms.len(), 2);
        assert!(r.median_ms > 0.0 && r.min_ms <= r.median_ms);
        let p = run(&spec, BenchPhase::Predict, DeviceSpec::CPU).unwrap();
        assert_eq!(p.batch, 1);
        assert_eq!(p.phase, BenchPhase::Predict);
    }

    #[test]
    fn threshold_and_zero_steps_are_rejected() {
        let scale = ScaleSpec::new(ModelScale::CpuSmall);
        let spec = BenchSpec::new(ModelKind::Threshold, scale, 1);
        let err = run(&spec, BenchPhase::Train, DeviceSpec::CPU).unwrap_err();
        assert!(err.to_string().contains("threshold"), "{err}");
        let spec = BenchSpec::new(ModelKind::Unet3d, scale, 0);
        let err = run(&spec, BenchPhase::Train, DeviceSpec::CPU).unwrap_err();
        assert!(err.to_string().contains("steps"), "{err}");
    }
}
