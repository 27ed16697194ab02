//! Speed of the three models on this machine's CPU: milliseconds per training step (published
//! batch sizes: U-Net 4, Vox2Vox 4, CycleGAN 2) and per predicted window (batch 1), at the
//! `cpu-small` and `paper` scales.
//!
//! ```sh
//! cargo bench --bench models                                # both scales
//! SEGLAB_BENCH_SCALES=cpu-small cargo bench --bench models  # one scale
//! ```
//!
//! `paper` steps take minutes on a 2-core CPU (the Vox2Vox generator has 150 M parameters);
//! they are timed once after one warm-up step.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};

use seglab::models::{CycleGanConfig, ModelScale, ScaleSpec, Unet3dConfig, Vox2VoxConfig};
use seglab::preset::Preset;
use seglab::train::{
    Batch, CycleGanTrainConfig, CycleGanTrainer, Trainer, Unet3dTrainConfig, Unet3dTrainer,
    Vox2VoxTrainConfig, Vox2VoxTrainer,
};

const CLASSES: [&str; 2] = ["golgi", "nuclei"];

fn random_batch(batch: usize, n: usize, device: &Device) -> Batch {
    let shape = [batch, 2, n, n, n];
    let images = Tensor::random(shape, Distribution::Uniform(0.0, 1.0), device);
    let masks = Tensor::<5>::random(shape, Distribution::Uniform(0.0, 1.0), device)
        .greater_elem(0.8)
        .float();
    Batch { images, masks }
}

/// Mean milliseconds of `f` over `reps` runs after `warmup` runs.
fn time_ms(warmup: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() * 1000.0 / reps as f64
}

fn bench(name: &str, scale: ModelScale, batch: usize, trainer: &mut dyn Trainer) {
    let n = ScaleSpec::new(scale).patch_size();
    let device = trainer.device().clone();
    let data = random_batch(batch, n, &device);
    let (warmup, reps) = match scale {
        ModelScale::CpuSmall => (2, 10),
        ModelScale::Paper => (1, 1),
    };
    let step = time_ms(warmup, reps, || {
        trainer.train_step(&data);
    });
    let window = data.images.clone().narrow(0, 0, 1).inner();
    let predict = time_ms(warmup, reps, || {
        let _ = trainer.predict(window.clone()).into_data();
    });
    println!(
        "{name:<9} {:<10} {n:>3}³ batch {batch}  {step:>10.1} ms/step  {predict:>9.1} ms/window",
        scale.name()
    );
}

fn main() {
    let scales = std::env::var("SEGLAB_BENCH_SCALES").unwrap_or_else(|_| "cpu-small,paper".into());
    let device = Device::flex();
    println!(
        "seglab models benchmark, Flex CPU backend, {} threads",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for s in scales.split(',') {
        let scale: ModelScale = s
            .trim()
            .parse()
            .expect("SEGLAB_BENCH_SCALES: paper or cpu-small");
        let spec = ScaleSpec::new(scale);
        let mut unet = Unet3dTrainer::new(
            Unet3dConfig::for_scale(2, 2, &spec).unwrap(),
            Unet3dTrainConfig::for_preset(Preset::Code),
            0,
            &device,
        )
        .unwrap();
        bench("unet3d", scale, 4, &mut unet);
        drop(unet);
        let mut vox = Vox2VoxTrainer::new(
            Vox2VoxConfig::for_scale(2, 2, &spec).unwrap(),
            Vox2VoxTrainConfig::for_task(&CLASSES, Preset::Code),
            0,
            &device,
        )
        .unwrap();
        bench("vox2vox", scale, 4, &mut vox);
        drop(vox);
        let mut cyc = CycleGanTrainer::new(
            CycleGanConfig::for_scale(2, 2, &spec).unwrap(),
            CycleGanTrainConfig::for_preset(Preset::Code),
            &CLASSES,
            &CLASSES,
            0,
            &device,
        )
        .unwrap();
        bench("cyclegan", scale, 2, &mut cyc);
    }
}
