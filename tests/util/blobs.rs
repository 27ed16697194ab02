//! The easy blob domain of the training tests and of `benches/cyclegan_blobs.rs`: image =
//! blurred mask + noise, with Golgi spheres and nuclei ellipsoids in two channels, and the
//! CycleGAN's unpaired setting on it (README, Limits, gives what it learns and how fast).

use burn::tensor::{Device, Tensor};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};

use seglab::metrics::{Counts, EmptyPolicy};
use seglab::models::{CycleGanConfig, ModelScale, ScaleSpec};
use seglab::preset::Preset;
use seglab::train::{AdamSettings, Batch, CycleGanTrainConfig, CycleGanTrainer};

/// Mask channel names: Golgi first, as in the published data (§1).
pub const CLASSES: [&str; 2] = ["golgi", "nuclei"];

/// Patch edge of the CycleGAN's unpaired setting: the smallest the published discriminators
/// can judge (at 16³ their scores do not depend on the input, so only the cycle and identity
/// terms would train).
pub const CYCLEGAN_PATCH: usize = 32;

/// One sample of the easy blob domain: mask channel 0 ("golgi") holds 2–3 small spheres,
/// channel 1 ("nuclei") 1–2 large ellipsoids; the image is each mask channel blurred
/// (Gaussian σ = 1 voxel), scaled to 0.8 and plus N(0, 0.05) noise, clamped to [0, 1].
/// Returns (image, mask), each `[2, n, n, n]` flattened.
pub fn blob_sample(rng: &mut ChaCha8Rng, n: usize) -> (Vec<f32>, Vec<f32>) {
    let vox = n * n * n;
    let mut mask = vec![0f32; 2 * vox];
    let mut add_ellipsoid = |ch: usize, c: [f64; 3], r: [f64; 3]| {
        for z in 0..n {
            for y in 0..n {
                for x in 0..n {
                    let d = [
                        (z as f64 - c[0]) / r[0],
                        (y as f64 - c[1]) / r[1],
                        (x as f64 - c[2]) / r[2],
                    ];
                    if d.iter().map(|v| v * v).sum::<f64>() <= 1.0 {
                        mask[ch * vox + (z * n + y) * n + x] = 1.0;
                    }
                }
            }
        }
    };
    let nf = n as f64;
    for _ in 0..rng.random_range(2..=3) {
        let r = rng.random_range(2.0..3.5);
        let c = [0; 3].map(|_| rng.random_range(r..nf - r));
        add_ellipsoid(0, c, [r; 3]);
    }
    for _ in 0..rng.random_range(1..=2) {
        let r = [
            rng.random_range(4.0..6.0),
            rng.random_range(5.0..8.0),
            rng.random_range(5.0..8.0),
        ];
        let c = [0; 3].map(|_| rng.random_range(4.0..nf - 4.0));
        add_ellipsoid(1, c, r);
    }
    let noise = Normal::new(0.0, 0.05).unwrap();
    let mut image = blur(&mask, n);
    for v in &mut image {
        *v = (*v * 0.8 + noise.sample(rng) as f32).clamp(0.0, 1.0);
    }
    (image, mask)
}

/// Separable Gaussian blur (σ = 1, radius 3, zero border) of every channel.
fn blur(v: &[f32], n: usize) -> Vec<f32> {
    let k: Vec<f32> = (-3i32..=3).map(|i| (-(i * i) as f32 / 2.0).exp()).collect();
    let s: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|x| x / s).collect();
    let mut cur = v.to_vec();
    for axis in 0..3 {
        let stride = [n * n, n, 1][axis];
        let mut next = vec![0f32; cur.len()];
        for (i, out) in next.iter_mut().enumerate() {
            let pos = (i / stride) % n;
            let mut acc = 0f32;
            for (j, w) in k.iter().enumerate() {
                let p = pos as i64 + j as i64 - 3;
                if (0..n as i64).contains(&p) {
                    acc += w * cur[(i as i64 + (p - pos as i64) * stride as i64) as usize];
                }
            }
            *out = acc;
        }
        cur = next;
    }
    cur
}

/// `count` samples as (images, masks) batch tensors on `device`.
pub fn blob_batch(rng: &mut ChaCha8Rng, count: usize, n: usize, device: &Device) -> Batch {
    let (mut images, mut masks) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let (i, m) = blob_sample(rng, n);
        images.extend(i);
        masks.extend(m);
    }
    let shape = [count, 2, n, n, n];
    Batch::from_host(images, shape, masks, shape, device).unwrap()
}

/// Per-class Dice of thresholded (> 0.5) probabilities against binary masks, pooled over the
/// batch: seglab's voxel [`Counts`] of every sample's channel, summed. The blob masks always
/// hold objects of both classes, so the empty-mask rule never applies.
pub fn dice_per_class(pred: Tensor<5>, mask: Tensor<5>) -> Vec<f64> {
    let [b, c, d, h, w] = pred.dims();
    let binary = |t: Tensor<5>| -> Vec<u8> {
        let v = t.try_into_vec_as::<f32>().unwrap();
        v.iter().map(|&x| u8::from(x > 0.5)).collect()
    };
    let (p, m) = (binary(pred), binary(mask));
    let vox = d * h * w;
    (0..c)
        .map(|ch| {
            let counts = (0..b)
                .map(|s| (s * c + ch) * vox)
                .map(|o| Counts::of(&p[o..o + vox], &m[o..o + vox]))
                .fold(Counts::default(), |acc, n| acc + n);
            counts.dice(0.0, EmptyPolicy::Nan)
        })
        .collect()
}

/// The CycleGAN of the easy unpaired setting: `cpu-small` widths ÷ 16 (the generator's stem
/// has 2 filters, one per channel) and faster optimizers than published (G 5e-3, D 2e-3).
pub fn easy_cyclegan_config() -> (CycleGanConfig, CycleGanTrainConfig) {
    let mut scale = ScaleSpec::new(ModelScale::CpuSmall);
    scale.width_divisor = Some(16);
    let model = CycleGanConfig::for_scale(2, 2, &scale).unwrap();
    model.validate_patch(CYCLEGAN_PATCH).unwrap();
    let train = CycleGanTrainConfig::for_preset(Preset::Code)
        .with_opt_g(AdamSettings::new(5e-3).with_beta_1(0.5))
        .with_opt_d(AdamSettings::new(2e-3).with_beta_1(0.5));
    (model, train)
}

/// Unpaired batches of the blob domain: every draw takes 2 image patches and, independently,
/// 2 mask patches from two separate collections of 8 batches, plus 4 held-out test samples.
/// The same on every run (fixed seeds), whatever the trainer's seed.
pub struct UnpairedBlobs {
    images: Vec<Batch>,
    masks: Vec<Batch>,
    draw: ChaCha8Rng,
    pub test: Batch,
}

impl UnpairedBlobs {
    pub fn new(device: &Device) -> Self {
        let n = CYCLEGAN_PATCH;
        let mut image_rng = ChaCha8Rng::seed_from_u64(21);
        let mut mask_rng = ChaCha8Rng::seed_from_u64(22);
        Self {
            images: (0..8)
                .map(|_| blob_batch(&mut image_rng, 2, n, device))
                .collect(),
            masks: (0..8)
                .map(|_| blob_batch(&mut mask_rng, 2, n, device))
                .collect(),
            draw: ChaCha8Rng::seed_from_u64(24),
            test: blob_batch(&mut ChaCha8Rng::seed_from_u64(23), 4, n, device),
        }
    }

    /// The next training batch: images of one collection entry, masks of another.
    pub fn next_batch(&mut self) -> Batch {
        let i = self.draw.random_range(0..self.images.len());
        let m = self.draw.random_range(0..self.masks.len());
        Batch {
            images: self.images[i].images.clone(),
            masks: self.masks[m].masks.clone(),
        }
    }
}

/// Per-class Dice of `trainer`'s segmenter on the test images, and on the test masks fed to it
/// as images (its identity term's task).
pub fn cyclegan_scores(trainer: &CycleGanTrainer, test: &Batch) -> (Vec<f64>, Vec<f64>) {
    use seglab::train::Trainer;
    let masks = test.masks.clone().inner();
    (
        dice_per_class(trainer.predict(test.images.clone()), masks.clone()),
        dice_per_class(trainer.predict(test.masks.clone()), masks),
    )
}
