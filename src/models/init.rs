//! Weight initialisers of the published networks (docs/published-code.md §9): Glorot-uniform
//! (U-Net, the Keras default), He-normal truncated (Vox2Vox) and N(0, 0.02) (CycleGAN), all with
//! zero biases — and [`SeedStream`], the seed derivation every random draw of a trial uses.
//!
//! Why not burn's `Initializer`: it also initialises the bias with the weight's distribution
//! and has no truncated normal (docs/design.md §4). Why host-side draws: burn's device
//! RNG is process-global on the Flex backend (one mutex for all devices and threads), so two
//! trainings in one process, or two tests, would interleave their draws. Here every kernel is
//! drawn from its own ChaCha8 stream seeded from (trial seed, parameter ordinal), so a seed
//! fixes the weights whatever else the process does. Parameters are lazy: nothing is drawn
//! until a parameter is first used, which keeps `seglab models` free and lets a checkpoint load
//! skip initialisation entirely.

use burn::module::{Param, ParamId};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};
use serde::{Deserialize, Serialize};

/// How convolution kernels are initialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InitScheme {
    /// Keras `glorot_uniform`: U(−l, l) with l = √(6 / (fan_in + fan_out)).
    #[serde(rename = "glorot-uniform")]
    GlorotUniform,
    /// Keras `he_normal`: a normal of std √(2 / fan_in) / 0.8796 truncated at two of its
    /// standard deviations (so the kept values have std √(2 / fan_in)).
    #[serde(rename = "he-normal")]
    HeNormal,
    /// `RandomNormal(stddev=0.02)` of the CycleGAN notebooks: plain N(0, 0.02²).
    #[serde(rename = "normal-0.02")]
    Normal002,
}

/// Fan-in and fan-out of a kernel in Keras' convention (`_compute_fans`): the receptive field
/// (k³) times the second-last and the last axis of the Keras kernel. For a convolution these
/// are `in·k³` and `out·k³`; a transposed convolution's Keras kernel is (k, k, k, out, in), so
/// its fan-in is `out·k³` (docs/published-code.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fans {
    pub fan_in: usize,
    pub fan_out: usize,
}

impl Fans {
    /// Fans of a convolution with `[in, out]` channels and a cubic kernel of edge `k`.
    pub fn conv(channels: [usize; 2], k: usize) -> Self {
        let rf = k * k * k;
        Fans {
            fan_in: channels[0] * rf,
            fan_out: channels[1] * rf,
        }
    }

    /// Fans of a transposed convolution with `[in, out]` channels (Keras convention).
    pub fn conv_transpose(channels: [usize; 2], k: usize) -> Self {
        let rf = k * k * k;
        Fans {
            fan_in: channels[1] * rf,
            fan_out: channels[0] * rf,
        }
    }
}

/// The truncation point of Keras' truncated normal, in standard deviations of the untruncated
/// distribution.
const TRUNCATION: f64 = 2.0;
/// Std of a standard normal truncated to [−2, 2]; Keras divides by it so that the truncated
/// draws have the intended std.
const TRUNCATED_STD: f64 = 0.879_625_661_034_239_8;

/// A deterministic stream of seeds derived from one base seed: the n-th call of
/// [`SeedStream::next_seed`] returns `mix(base, n)`. Networks hand one seed to each parameter
/// in construction order, so adding a layer at the end does not change the earlier ones.
#[derive(Clone, Debug)]
pub struct SeedStream {
    base: u64,
    next: u64,
}

impl SeedStream {
    pub fn new(base: u64) -> Self {
        Self { base, next: 0 }
    }

    /// The next seed of the stream.
    pub fn next_seed(&mut self) -> u64 {
        let s = derive_seed(self.base, self.next);
        self.next += 1;
        s
    }

    /// An independent sub-stream (for one network of a multi-network model).
    pub fn fork(&mut self) -> SeedStream {
        SeedStream::new(self.next_seed())
    }
}

/// Mixes a base seed with a stream index (SplitMix64 finaliser over both), so that nearby
/// seeds and indices give unrelated streams. Used for parameter seeds, per-step seeds and
/// data-sampling seeds alike.
pub fn derive_seed(base: u64, index: u64) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    mix(mix(base.wrapping_add(0x9e37_79b9_7f4a_7c15)) ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03))
}

impl InitScheme {
    /// A lazily initialised kernel of `shape`, drawn from its own stream seeded by `seed`.
    pub fn kernel<const D: usize>(
        self,
        shape: [usize; D],
        fans: Fans,
        seed: u64,
        device: &Device,
    ) -> Param<Tensor<D>> {
        Param::uninitialized(
            ParamId::new(),
            move |device, require_grad| {
                let data = TensorData::new(self.draw(shape.iter().product(), fans, seed), shape);
                let t = Tensor::<D>::from_data(data, device);
                if require_grad { t.require_grad() } else { t }
            },
            device.clone(),
            true,
            shape.into(),
        )
    }

    /// Draws `n` kernel values from the stream seeded by `seed`.
    pub fn draw(self, n: usize, fans: Fans, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        match self {
            InitScheme::GlorotUniform => {
                let limit = (6.0 / (fans.fan_in + fans.fan_out) as f64).sqrt();
                let dist = Uniform::new(-limit, limit).expect("finite, non-empty range");
                (0..n).map(|_| dist.sample(&mut rng) as f32).collect()
            }
            InitScheme::HeNormal => {
                // TensorFlow's truncated normal: redraw every value beyond two stds.
                let std = (2.0 / fans.fan_in as f64).sqrt() / TRUNCATED_STD;
                let dist = Normal::new(0.0, std).expect("finite std");
                let bound = TRUNCATION * std;
                (0..n)
                    .map(|_| {
                        loop {
                            let v: f64 = dist.sample(&mut rng);
                            if v.abs() <= bound {
                                break v as f32;
                            }
                        }
                    })
                    .collect()
            }
            InitScheme::Normal002 => {
                let dist = Normal::new(0.0, 0.02).expect("finite std");
                (0..n).map(|_| dist.sample(&mut rng) as f32).collect()
            }
        }
    }
}

/// A lazily initialised zero vector: the biases of every published layer (Keras
/// `bias_initializer='zeros'`) and the β of the norms.
pub fn zeros(n: usize, device: &Device) -> Param<Tensor<1>> {
    constant(n, 0.0, device)
}

/// A lazily initialised vector of ones (the γ of the norms).
pub fn ones(n: usize, device: &Device) -> Param<Tensor<1>> {
    constant(n, 1.0, device)
}

fn constant(n: usize, value: f32, device: &Device) -> Param<Tensor<1>> {
    Param::uninitialized(
        ParamId::new(),
        move |device, require_grad| {
            let t = Tensor::<1>::full([n], value, device);
            if require_grad { t.require_grad() } else { t }
        },
        device.clone(),
        true,
        [n].into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(v: &[f32]) -> (f64, f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let max = v.iter().map(|&x| (x as f64).abs()).fold(0.0, f64::max);
        (mean, var.sqrt(), max)
    }

    #[test]
    fn keras_fans_of_transposed_convolutions_use_the_output_channels() {
        assert_eq!(
            Fans::conv([2, 64], 4),
            Fans {
                fan_in: 128,
                fan_out: 4096
            }
        );
        assert_eq!(
            Fans::conv_transpose([1024, 256], 4),
            Fans {
                fan_in: 16384,
                fan_out: 65536
            }
        );
    }

    #[test]
    fn distributions_have_the_keras_spread() {
        let fans = Fans {
            fan_in: 100,
            fan_out: 300,
        };
        let n = 200_000;

        let v = InitScheme::GlorotUniform.draw(n, fans, 1);
        let (mean, std, max) = stats(&v);
        let limit = (6.0f64 / 400.0).sqrt();
        assert!(mean.abs() < 2e-3, "{mean}");
        assert!((std - limit / 3f64.sqrt()).abs() < 2e-3, "{std}");
        assert!(max <= limit + 1e-6);

        let v = InitScheme::HeNormal.draw(n, fans, 2);
        let (mean, std, max) = stats(&v);
        let target = (2.0f64 / 100.0).sqrt();
        assert!(mean.abs() < 2e-3, "{mean}");
        assert!(
            (std - target).abs() / target < 0.01,
            "std {std} vs {target}"
        );
        assert!(max <= 2.0 * target / TRUNCATED_STD + 1e-6, "{max}");

        let v = InitScheme::Normal002.draw(n, fans, 3);
        let (mean, std, _) = stats(&v);
        assert!(mean.abs() < 1e-3);
        assert!((std - 0.02).abs() < 5e-4, "{std}");
    }

    #[test]
    fn lazy_parameters_depend_only_on_their_seed() {
        let device = Device::flex();
        let fans = Fans::conv([4, 8], 3);
        let draw = |seed| {
            let p = InitScheme::HeNormal.kernel([8, 4, 3, 3, 3], fans, seed, &device);
            p.val().try_into_vec_as::<f32>().unwrap()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        let z = zeros(5, &device).val().try_into_vec_as::<f32>().unwrap();
        assert_eq!(z, vec![0.0; 5]);
        let o = ones(2, &device).val().try_into_vec_as::<f32>().unwrap();
        assert_eq!(o, vec![1.0; 2]);
    }

    #[test]
    fn seed_streams_are_reproducible_and_distinct() {
        let mut a = SeedStream::new(42);
        let mut b = SeedStream::new(42);
        let xs: Vec<u64> = (0..4).map(|_| a.next_seed()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_seed()).collect();
        assert_eq!(xs, ys);
        let mut set = xs.clone();
        set.sort_unstable();
        set.dedup();
        assert_eq!(set.len(), 4);
        assert_ne!(derive_seed(0, 1), derive_seed(1, 0));
        assert_ne!(SeedStream::new(43).next_seed(), xs[0]);
    }
}
