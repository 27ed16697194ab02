//! Layers shared by the three models, written to behave like the Keras layers of the published
//! code (docs/published-code.md §9):
//!
//! - [`Conv3dLayer`] and [`ConvTranspose3dLayer`]: every 3D convolution of seglab goes through
//!   these two wrappers, which apply TensorFlow's 'same' padding rule (asymmetric when the
//!   kernel and stride call for it) and its transposed-convolution cropping. The
//!   convolution itself is [`super::conv::conv3d`], which picks a GEMM-based form for
//!   stride 1 and burn's for strided convolutions.
//! - [`InstanceNorm3d`]: keras-contrib `InstanceNormalization`, per channel (`axis=-1`,
//!   CycleGAN) or over all channels with a scalar γ, β (`axis=None`, Vox2Vox); ε is added to
//!   the standard deviation, not the variance.
//! - [`keras_batch_norm`]: burn's `BatchNorm` with Keras' momentum and ε.
//! - [`max_pool3d`]: 2×2×2 max pooling (burn has none; reshape trick of docs/design.md §4).
//! - [`Dropout3d`]: inverted dropout whose masks come from a seedable host RNG shared by a
//!   network, so a trial's randomness does not depend on burn's process-global device RNG.

use std::sync::{Arc, Mutex};

use burn::module::{Flag, Module, Param};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::activation::{leaky_relu, relu};
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::{MaxPoolOptions, PadMode};
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::ChaCha8Rng;
use rand::{Rng, RngExt, SeedableRng};
use rayon::prelude::*;

use super::conv::{self, ComputePath};
use super::init::{self, Fans, InitScheme, SeedStream};
use crate::kernels::{self, NormAct, NormGroups, NormScale};

/// How a convolution pads its input (Keras `padding=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// TensorFlow 'same': output size ⌈n / stride⌉, total padding
    /// max((⌈n/s⌉ − 1)·s + k − n, 0), the smaller half before and the larger half after.
    /// k3 s2 on an even size pads (0, 1); k4 s1 pads (1, 2); k4 s2 pads (1, 1).
    Same,
    /// No padding.
    Valid,
    /// `ZeroPadding3D(p)` followed by a 'valid' convolution (the Vox2Vox discriminator).
    Zeros(usize),
    /// The amounts of [`Padding::Same`], filled by reflection (edge not repeated) instead of
    /// zeros: a window's border then looks like more content, so a network cannot learn its
    /// position from the padding (the CycleGAN paper's generators pad this way).
    Reflect,
}

impl Padding {
    /// (before, after) padding of one axis of `size` voxels.
    pub fn amounts(self, size: usize, kernel: usize, stride: usize) -> (usize, usize) {
        match self {
            Padding::Same | Padding::Reflect => {
                let out = size.div_ceil(stride);
                let total = ((out.max(1) - 1) * stride + kernel).saturating_sub(size);
                (total / 2, total - total / 2)
            }
            Padding::Valid => (0, 0),
            Padding::Zeros(p) => (p, p),
        }
    }
}

/// A 3D convolution with a cubic kernel, a bias and Keras padding semantics.
///
/// The weight has burn's layout `[out, in, k, k, k]`; the bias is zero-initialised.
#[derive(Module, Debug)]
pub struct Conv3dLayer {
    pub weight: Param<Tensor<5>>,
    pub bias: Param<Tensor<1>>,
    pub kernel: usize,
    pub stride: usize,
    #[module(skip)]
    pub padding: Padding,
}

impl Conv3dLayer {
    /// A convolution `[in, out]` channels, kernel k³, stride s, drawing its kernel with
    /// `init` from the next seed of `seeds`.
    pub fn new(
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        padding: Padding,
        init: InitScheme,
        seeds: &mut SeedStream,
        device: &Device,
    ) -> Self {
        let [cin, cout] = channels;
        Self {
            weight: init.kernel(
                [cout, cin, kernel, kernel, kernel],
                Fans::conv(channels, kernel),
                seeds.next_seed(),
                device,
            ),
            bias: init::zeros(cout, device),
            kernel,
            stride,
            padding,
        }
    }

    /// # Shapes
    ///
    /// - input: `[batch, in, depth, height, width]`
    /// - output: `[batch, out, depth', height', width']` with, per axis, n' = ⌈n / s⌉ for
    ///   'same' and n' = (n + before + after − k) / s + 1 otherwise.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        self.forward_with(x, self.weight.val(), self.bias.val(), false)
    }

    /// [`forward`](Self::forward) with another weight and bias of the same shapes (a batch
    /// norm folded in, [`conv_batch_norm_relu`]), followed by ReLU when `relu`.
    fn forward_with(
        &self,
        x: Tensor<5>,
        weight: Tensor<5>,
        bias: Tensor<1>,
        relu: bool,
    ) -> Tensor<5> {
        let [_, _, d, h, w] = x.dims();
        let pads = [d, h, w].map(|n| self.padding.amounts(n, self.kernel, self.stride));
        let (x, pads) = match self.padding {
            // [batch, in, d + pads, h + pads, w + pads], then a 'valid' convolution
            Padding::Reflect => (x.pad(pads, PadMode::Reflect), [(0, 0); 3]),
            _ => (x, pads),
        };
        let path = ComputePath::of(&x);
        if relu {
            conv::conv3d_bias_relu(x, weight, bias, self.stride, pads, path)
        } else {
            conv::conv3d(x, weight, Some(bias), self.stride, pads, path)
        }
    }
}

/// A 3D transposed convolution with a cubic kernel, a bias and Keras 'same' semantics: the
/// output is exactly `n·s` per axis. TensorFlow computes the full transposed convolution
/// ((n − 1)·s + k voxels) and crops k − s voxels, ⌊(k − s)/2⌋ before and the rest after: k3 s2
/// drops the last voxel, k4 s2 one on each side, k2 s2 nothing (docs/published-code.md §9).
///
/// The weight has burn's layout `[in, out, k, k, k]`.
#[derive(Module, Debug)]
pub struct ConvTranspose3dLayer {
    pub weight: Param<Tensor<5>>,
    pub bias: Param<Tensor<1>>,
    pub kernel: usize,
    pub stride: usize,
}

impl ConvTranspose3dLayer {
    /// A transposed convolution `[in, out]` channels, kernel k³ (k ≥ s), stride s. He-normal
    /// fans follow Keras (fan-in from the output channels, see [`Fans::conv_transpose`]).
    pub fn new(
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        init: InitScheme,
        seeds: &mut SeedStream,
        device: &Device,
    ) -> Self {
        assert!(
            kernel >= stride,
            "'same' transposed convolution needs kernel ≥ stride"
        );
        let [cin, cout] = channels;
        Self {
            weight: init.kernel(
                [cin, cout, kernel, kernel, kernel],
                Fans::conv_transpose(channels, kernel),
                seeds.next_seed(),
                device,
            ),
            bias: init::zeros(cout, device),
            kernel,
            stride,
        }
    }

    /// # Shapes
    ///
    /// - input: `[batch, in, depth, height, width]`
    /// - output: `[batch, out, depth·s, height·s, width·s]`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        if self.kernel == self.stride {
            // Non-overlapping blocks, nothing to crop: a matrix product.
            return conv::conv_transpose3d_blocks(x, self.weight.val(), Some(self.bias.val()));
        }
        let crop = self.kernel - self.stride;
        let path = ComputePath::of(&x);
        conv::conv_transpose3d(
            x,
            self.weight.val(),
            Some(self.bias.val()),
            self.stride,
            (crop / 2, crop - crop / 2),
            path,
        ) // [batch, out, d·s, h·s, w·s]
    }
}

/// keras-contrib `InstanceNormalization` (docs/published-code.md §4.1, §5.1):
/// y = γ·(x − μ)/(σ + ε) + β with the biased standard deviation σ.
///
/// - per channel (`axis=-1`): μ, σ per sample and channel over D·H·W; γ, β per channel;
/// - scalar (`axis=None`): μ, σ per sample over C·D·H·W; one γ and one β for the layer.
#[derive(Module, Debug)]
pub struct InstanceNorm3d {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
    pub epsilon: f64,
    pub per_channel: bool,
}

/// Variance floor under the square root: keeps the backward pass finite (instead of 0·∞ = NaN)
/// when a sample or channel is constant, e.g. an all-background patch. Forward values are
/// unchanged for any variance ≥ 1e-12.
const VARIANCE_FLOOR: f64 = 1e-12;

impl InstanceNorm3d {
    /// A norm over `channels` channels; `per_channel = false` gives the scalar-affine variant.
    pub fn new(channels: usize, per_channel: bool, epsilon: f64, device: &Device) -> Self {
        let n = if per_channel { channels } else { 1 };
        Self {
            gamma: init::ones(n, device),
            beta: init::zeros(n, device),
            epsilon,
            per_channel,
        }
    }

    /// The norm alone (before tanh in the CycleGAN).
    ///
    /// # Shapes
    ///
    /// - input: `[batch, channels, depth, height, width]`
    /// - output: same as input
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        self.forward_activated(x, 1.0)
    }

    /// `LeakyReLU(norm(x))` with negative slope `slope` (0: ReLU, 1: no activation). On flex
    /// devices one operation ([`kernels::norm_act`]); elsewhere burn's tensor operations
    /// ([`Self::forward_composed`]).
    pub fn forward_activated(&self, x: Tensor<5>, slope: f64) -> Tensor<5> {
        if ComputePath::of(&x) != ComputePath::Kernels {
            return activate(self.forward_composed(x), slope);
        }
        let spec = NormAct {
            groups: if self.per_channel {
                NormGroups::SampleChannel
            } else {
                NormGroups::Sample
            },
            scale: NormScale::StdPlusEpsilon {
                floor: VARIANCE_FLOOR,
            },
            epsilon: self.epsilon,
            slope: slope as f32,
        };
        kernels::norm_act(x, self.gamma.val(), self.beta.val(), spec).0
    }

    /// The norm from burn's tensor operations (other backends; the reference in tests).
    pub(crate) fn forward_composed(&self, x: Tensor<5>) -> Tensor<5> {
        let shape = x.dims();
        let [n, c, d, h, w] = shape;
        let groups = if self.per_channel { c } else { 1 };
        let x = x.reshape([n, groups, c / groups * d * h * w]); // [batch, groups, voxels]
        let (var, mean) = x.clone().var_mean_bias(2); // [batch, groups, 1] each
        let std = var.clamp_min(VARIANCE_FLOOR).sqrt();
        let y = (x - mean) / (std + self.epsilon);
        let y = y.reshape(shape); // [batch, channels, depth, height, width]
        let affine = [1, groups, 1, 1, 1];
        y * self.gamma.val().reshape(affine) + self.beta.val().reshape(affine)
    }
}

/// LeakyReLU with negative slope `slope`: 0 is ReLU, 1 the identity (on the CPU as one
/// operation, [`kernels::leaky_relu`]).
pub(crate) fn activate(x: Tensor<5>, slope: f64) -> Tensor<5> {
    if slope == 1.0 {
        x
    } else if slope == 0.0 {
        relu(x)
    } else if ComputePath::of(&x) == ComputePath::Kernels
        && kernels::activation::leaky_relu_supported(slope as f32)
    {
        kernels::leaky_relu(x, slope as f32)
    } else {
        leaky_relu(x, slope)
    }
}

/// `relu(bn(conv(x)))`. When the batch norm uses its running statistics (inference: no
/// autodiff, or the layer's training flag off — burn's own rule) it is an affine map per
/// output channel, folded here into the convolution: weight·s and (bias − mean)·s + β with
/// s = γ / √(var + ε); bias and ReLU are then applied as the output leaves the convolution
/// ([`conv::conv3d_bias_relu`]). The activation is written once, where burn's generic
/// `batch_norm` makes four broadcast passes over it (sub, div, mul, add) and the bias and
/// ReLU two more.
///
/// In training the batch norm and ReLU after the convolution are one operation on the CPU
/// ([`batch_norm_relu_train`]).
pub fn conv_batch_norm_relu(conv: &Conv3dLayer, bn: &BatchNorm, x: Tensor<5>) -> Tensor<5> {
    if x.device().is_autodiff() && bn.training.is_enabled() {
        return batch_norm_relu_train(bn, conv.forward(x));
    }
    let weight = conv.weight.val();
    let [cout, ..] = weight.dims();
    let scale = bn.gamma.val() / bn.running_var.value().add_scalar(bn.epsilon).sqrt();
    let weight = weight * scale.clone().reshape([cout, 1, 1, 1, 1]);
    let bias = (conv.bias.val() - bn.running_mean.value()) * scale + bn.beta.val();
    conv.forward_with(x, weight, bias, true)
}

/// `relu(bn(x))` with the batch's statistics, updating `bn`'s running statistics as burn's
/// `BatchNorm::forward` does in training (running = (1 − momentum)·running + momentum·batch).
/// On flex devices the two layers run as [`kernels::norm_act`], one backend
/// operation with a handwritten backward pass; elsewhere as burn's layers.
pub fn batch_norm_relu_train(bn: &BatchNorm, x: Tensor<5>) -> Tensor<5> {
    if ComputePath::of(&x) != ComputePath::Kernels {
        return relu(bn.forward(x));
    }
    let spec = NormAct {
        groups: NormGroups::Channel,
        scale: NormScale::RootOfVariancePlusEpsilon,
        epsilon: bn.epsilon,
        slope: 0.0,
    };
    let (y, mean, variance) = kernels::norm_act(x, bn.gamma.val(), bn.beta.val(), spec);
    let device = y.device();
    let mix = |running: Tensor<1>, batch: Tensor<1>| {
        (running.to_device(&device).mul_scalar(1.0 - bn.momentum)
            + batch.detach().mul_scalar(bn.momentum))
        .detach()
    };
    bn.running_mean
        .update(mix(bn.running_mean.value_sync(), mean));
    bn.running_var
        .update(mix(bn.running_var.value_sync(), variance));
    y
}

/// burn's `BatchNorm` configured as Keras' default `BatchNormalization` (U-Net, §3.1): burn's
/// momentum is the weight of the new batch, so Keras' 0.99 becomes 0.01; ε = 1e-3.
/// One deviation: burn keeps the biased batch variance as running variance where Keras keeps
/// the unbiased one (a factor m/(m−1) with m ≥ 4·64³ voxels per channel, i.e. < 10⁻⁶).
pub fn keras_batch_norm(
    channels: usize,
    momentum: f64,
    epsilon: f64,
    device: &Device,
) -> BatchNorm {
    BatchNormConfig::new(channels)
        .with_momentum(momentum)
        .with_epsilon(epsilon)
        .init(device)
}

/// 2×2×2 max pooling with stride 2 (Keras `MaxPooling3D()`), by pooling H×W with burn's
/// `max_pool2d` and then pairs of depth slices with `max_dim`. Spatial sizes must be even.
///
/// # Shapes
///
/// - input: `[batch, channels, depth, height, width]`
/// - output: `[batch, channels, depth/2, height/2, width/2]`
pub fn max_pool3d(x: Tensor<5>) -> Tensor<5> {
    let [n, c, d, h, w] = x.dims();
    assert!(
        d % 2 == 0 && h % 2 == 0 && w % 2 == 0,
        "max_pool3d needs even sizes, got {d}×{h}×{w}"
    );
    let x = x.reshape([n, c * d, h, w]); // [batch, channels·depth, height, width]
    let x = max_pool2d(x, MaxPoolOptions::new([2, 2])); // [batch, channels·depth, h/2, w/2]
    let x = x.reshape([n, c, d / 2, 2, h / 2 * (w / 2)]); // [batch, channels, d/2, 2, h/2·w/2]
    let x = x.max_dim(3); // [batch, channels, d/2, 1, h/2·w/2]
    x.reshape([n, c, d / 2, h / 2, w / 2])
}

/// The random source of a network's dropout layers: one ChaCha8 stream shared by all of them
/// (clones of a network share it too). The training step reseeds it from (trial seed, step)
/// before each forward pass, so the masks of step t are the same in an uninterrupted run and
/// in a run resumed from a checkpoint.
#[derive(Clone, Debug)]
pub struct DropoutRng(Arc<Mutex<ChaCha8Rng>>);

impl DropoutRng {
    pub fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))))
    }

    /// Restarts the stream from `seed`.
    pub fn reseed(&self, seed: u64) {
        *self.0.lock().expect("dropout RNG poisoned") = ChaCha8Rng::seed_from_u64(seed);
    }

    /// An inverted-dropout mask of `n` values: 0 with probability `rate`, else 1/(1 − rate).
    /// One draw from the shared stream keys the call; each chunk of [`MASK_CHUNK`] values
    /// comes from its own stream under that key (`synth::rng::stream`), so the chunks fill in
    /// parallel and the mask does not depend on the thread count. (Drawn one by one from the
    /// shared stream, the masks take 5 % of a single-thread Vox2Vox training step, all serial.)
    fn mask(&self, n: usize, rate: f64) -> Vec<f32> {
        let keep = 1.0 - rate;
        let scale = (1.0 / keep) as f32;
        // P(u32 < threshold) = keep, to 2⁻³² (keep < 1: rate > 0 here).
        let threshold = (keep * 4_294_967_296.0) as u64;
        let key: u64 = self.0.lock().expect("dropout RNG poisoned").random();
        let mut mask = vec![0.0f32; n];
        mask.par_chunks_mut(MASK_CHUNK)
            .enumerate()
            .for_each(|(i, chunk)| {
                let mut rng = crate::synth::rng::stream(key, &[i as u64]);
                for v in chunk {
                    if u64::from(rng.next_u32()) < threshold {
                        *v = scale;
                    }
                }
            });
        mask
    }
}

/// Values per independently drawn chunk of a dropout mask.
const MASK_CHUNK: usize = 1 << 14;

/// Inverted dropout (Keras `Dropout(rate)`), active while the network trains: on an autodiff
/// device and not switched off by `valid()`/`freeze()`, exactly like burn's `Dropout`.
#[derive(Module, Debug)]
pub struct Dropout3d {
    pub rate: f64,
    pub training: Param<Flag>,
    #[module(skip)]
    pub rng: DropoutRng,
}

impl Dropout3d {
    pub fn new(rate: f64, rng: DropoutRng) -> Self {
        assert!(
            (0.0..1.0).contains(&rate),
            "dropout rate must be in [0, 1), got {rate}"
        );
        Self {
            rate,
            training: Param::from_bool(true),
            rng,
        }
    }

    /// # Shapes
    ///
    /// - input: any
    /// - output: same as input
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.rate == 0.0 || !self.training.is_enabled() || !x.device().is_autodiff() {
            return x;
        }
        let shape = x.dims();
        let mask = self.rng.mask(shape.iter().product(), self.rate);
        let mask = Tensor::<D>::from_data(TensorData::new(mask, shape), &x.device());
        x * mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::test_support::{assert_close, to_vec};
    use burn::tensor::module::conv_transpose3d;
    use burn::tensor::ops::ConvTransposeOptions;

    fn device() -> Device {
        Device::flex()
    }

    fn arange(shape: [usize; 5], device: &Device) -> Tensor<5> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 37) % 101) as f32 / 10.0 - 5.0)
            .collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    /// A direct (naive) convolution with explicit per-side zero padding, for reference.
    fn naive_conv(
        x: &[f32],
        xs: [usize; 5],
        wt: &[f32],
        k: usize,
        cout: usize,
        stride: usize,
        pad: (usize, usize),
    ) -> (Vec<f32>, [usize; 5]) {
        let [n, cin, d, h, w] = xs;
        let out = |len: usize| (len + pad.0 + pad.1 - k) / stride + 1;
        let (od, oh, ow) = (out(d), out(h), out(w));
        let mut y = vec![0f32; n * cout * od * oh * ow];
        let xi = |b, c, z: isize, yy: isize, xx: isize| -> f32 {
            if z < 0 || yy < 0 || xx < 0 || z >= d as isize || yy >= h as isize || xx >= w as isize
            {
                0.0
            } else {
                x[(((b * cin + c) * d + z as usize) * h + yy as usize) * w + xx as usize]
            }
        };
        for b in 0..n {
            for o in 0..cout {
                for z in 0..od {
                    for yy in 0..oh {
                        for xx in 0..ow {
                            let mut s = 0f32;
                            for c in 0..cin {
                                for a in 0..k {
                                    for bb in 0..k {
                                        for cc in 0..k {
                                            let wv =
                                                wt[(((o * cin + c) * k + a) * k + bb) * k + cc];
                                            s += wv
                                                * xi(
                                                    b,
                                                    c,
                                                    (z * stride + a) as isize - pad.0 as isize,
                                                    (yy * stride + bb) as isize - pad.0 as isize,
                                                    (xx * stride + cc) as isize - pad.0 as isize,
                                                );
                                        }
                                    }
                                }
                            }
                            y[(((b * cout + o) * od + z) * oh + yy) * ow + xx] = s;
                        }
                    }
                }
            }
        }
        (y, [n, cout, od, oh, ow])
    }

    #[test]
    fn tensorflow_same_padding_amounts() {
        assert_eq!(Padding::Same.amounts(64, 3, 2), (0, 1));
        assert_eq!(Padding::Same.amounts(64, 4, 2), (1, 1));
        assert_eq!(Padding::Same.amounts(4, 4, 1), (1, 2));
        assert_eq!(Padding::Same.amounts(64, 7, 1), (3, 3));
        assert_eq!(Padding::Same.amounts(64, 3, 1), (1, 1));
        assert_eq!(Padding::Same.amounts(7, 3, 2), (1, 1));
        assert_eq!(Padding::Same.amounts(1, 4, 2), (1, 2));
        assert_eq!(Padding::Valid.amounts(9, 4, 1), (0, 0));
        assert_eq!(Padding::Zeros(1).amounts(9, 4, 1), (1, 1));
    }

    #[test]
    fn asymmetric_same_convolutions_match_a_direct_convolution() {
        let dev = device();
        // (kernel, stride, size): k3 s2 pads (0, 1); k4 s1 pads (1, 2); k4 s2 pads (1, 1).
        for (k, s, size) in [(3, 2, 6), (4, 1, 4), (4, 2, 6), (7, 1, 5)] {
            let mut seeds = SeedStream::new(k as u64 * 10 + s as u64);
            let conv = Conv3dLayer::new(
                [2, 3],
                k,
                s,
                Padding::Same,
                InitScheme::GlorotUniform,
                &mut seeds,
                &dev,
            );
            let xs = [1, 2, size, size, size];
            let x = arange(xs, &dev);
            let y = conv.forward(x.clone());
            let pad = Padding::Same.amounts(size, k, s);
            let (expect, eshape) =
                naive_conv(&to_vec(x), xs, &to_vec(conv.weight.val()), k, 3, s, pad);
            assert_eq!(y.dims(), eshape, "k{k} s{s}");
            assert_eq!(eshape[2], size.div_ceil(s));
            assert_close(&to_vec(y), &expect, 1e-4, "same convolution");
        }
    }

    /// Folding the batch norm into the convolution (and the ReLU into its output) changes
    /// nothing at inference: same values as the convolution, burn's batch norm on its running
    /// statistics (set away from their initial 0 and 1, with γ and β away from 1 and 0) and
    /// ReLU; on an autodiff device with the layer training it is still the batch-statistics
    /// path.
    #[test]
    fn a_folded_batch_norm_equals_batch_norm_and_relu_after_the_convolution() {
        use burn::module::{Param, RunningState};
        let layers = |dev: &Device| {
            let mut seeds = SeedStream::new(3);
            let mut conv = Conv3dLayer::new(
                [2, 4],
                3,
                1,
                Padding::Same,
                InitScheme::GlorotUniform,
                &mut seeds,
                dev,
            );
            let channel =
                |v: [f32; 4]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [4]), dev);
            conv.bias = Param::from_tensor(channel([0.1, -0.2, 0.3, 0.0]));
            let mut bn = keras_batch_norm(4, 0.01, 1e-3, dev);
            bn.gamma = Param::from_tensor(channel([1.5, 0.5, -2.0, 1.0]));
            bn.beta = Param::from_tensor(channel([0.2, -1.0, 0.0, 3.0]));
            bn.running_mean = RunningState::new(channel([0.5, -0.3, 1.2, 0.0]));
            bn.running_var = RunningState::new(channel([2.0, 0.25, 4.0, 1.0]));
            (conv, bn, arange([2, 2, 5, 6, 7], dev))
        };
        let max_diff = |a: &[f32], b: &[f32]| {
            assert_eq!(a.len(), b.len());
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
                .fold(0.0f32, f32::max)
        };
        let (conv, bn, x) = layers(&device());
        let folded = to_vec(conv_batch_norm_relu(&conv, &bn, x.clone()));
        let reference = to_vec(relu(bn.forward(conv.forward(x))));
        assert!(reference.contains(&0.0) && reference.iter().any(|&v| v > 1.0));
        assert!(max_diff(&folded, &reference) < 1e-5);
        // Training: burn's batch-statistics path, untouched.
        let (conv, bn, x) = layers(&device().autodiff());
        let train = to_vec(conv_batch_norm_relu(&conv, &bn, x.clone()));
        assert!(max_diff(&train, &to_vec(relu(bn.forward(conv.forward(x))))) < 1e-5);
        assert!(
            max_diff(&train, &reference) > 0.1,
            "the training path used the running statistics"
        );
    }

    /// `Padding::Reflect` is a 'valid' convolution of the input mirrored at every face (edge
    /// voxel not repeated), with the output size of 'same'.
    #[test]
    fn reflect_padding_convolves_the_mirrored_input() {
        use crate::dataset::pad::reflect_index;
        let dev = device();
        for k in [3usize, 7] {
            let mut seeds = SeedStream::new(9);
            let conv = Conv3dLayer::new(
                [2, 3],
                k,
                1,
                Padding::Reflect,
                InitScheme::GlorotUniform,
                &mut seeds,
                &dev,
            );
            let dims = [4usize, 5, 6];
            let xs = [1, 2, dims[0], dims[1], dims[2]];
            let x = arange(xs, &dev);
            let y = conv.forward(x.clone());
            assert_eq!(y.dims(), [1, 3, 4, 5, 6], "k{k}");
            let p = (k / 2) as isize;
            let v = to_vec(x);
            let pd = dims.map(|n| n + k - 1);
            let mut padded = Vec::new();
            for c in 0..2 {
                for z in 0..pd[0] as isize {
                    for r in 0..pd[1] as isize {
                        for q in 0..pd[2] as isize {
                            let (z, r, q) = (
                                reflect_index(z - p, dims[0]),
                                reflect_index(r - p, dims[1]),
                                reflect_index(q - p, dims[2]),
                            );
                            padded.push(v[((c * dims[0] + z) * dims[1] + r) * dims[2] + q]);
                        }
                    }
                }
            }
            let ps = [1, 2, pd[0], pd[1], pd[2]];
            let (expect, eshape) =
                naive_conv(&padded, ps, &to_vec(conv.weight.val()), k, 3, 1, (0, 0));
            assert_eq!(eshape, [1, 3, 4, 5, 6]);
            assert_close(&to_vec(y), &expect, 1e-4, "reflect padding");
        }
    }

    /// The k3 s2 'same' transposed convolution equals the full transposed convolution with its
    /// last voxel per axis dropped (not burn's padding 1 + output padding 1, which is shifted).
    #[test]
    fn transposed_same_convolution_crops_like_tensorflow() {
        let dev = device();
        for (k, s) in [(3usize, 2usize), (4, 2), (2, 2)] {
            let mut seeds = SeedStream::new(5);
            let up = ConvTranspose3dLayer::new(
                [2, 3],
                k,
                s,
                InitScheme::GlorotUniform,
                &mut seeds,
                &dev,
            );
            let x = arange([1, 2, 3, 4, 5], &dev);
            let y = up.forward(x.clone());
            assert_eq!(y.dims(), [1, 3, 3 * s, 4 * s, 5 * s]);
            let full = conv_transpose3d(
                x,
                up.weight.val(),
                Some(up.bias.val()),
                ConvTransposeOptions::new([s; 3], [0; 3], [0; 3], [1; 3], 1),
            );
            let b = (k - s) / 2;
            let cropped = full.slice([0..1, 0..3, b..b + 3 * s, b..b + 4 * s, b..b + 5 * s]);
            assert_close(&to_vec(y), &to_vec(cropped), 1e-6, "transposed convolution");
        }
    }

    #[test]
    fn instance_norm_matches_the_keras_formula() {
        let dev = device();
        let x = arange([2, 3, 2, 3, 4], &dev);
        let v = to_vec(x.clone());
        let eps = 1e-3;
        for per_channel in [true, false] {
            let norm = InstanceNorm3d::new(3, per_channel, eps, &dev);
            let y = to_vec(norm.forward(x.clone()));
            let group = if per_channel { 24 } else { 72 };
            let mut expect = Vec::new();
            for chunk in v.chunks(group) {
                let m = chunk.iter().map(|&a| a as f64).sum::<f64>() / group as f64;
                let var = chunk.iter().map(|&a| (a as f64 - m).powi(2)).sum::<f64>() / group as f64;
                expect.extend(
                    chunk
                        .iter()
                        .map(|&a| ((a as f64 - m) / (var.sqrt() + eps)) as f32),
                );
            }
            assert_close(&y, &expect, 1e-5, "instance norm");
        }
        // Scalar variant: 2 parameters; per-channel: 2·C.
        assert_eq!(InstanceNorm3d::new(128, false, eps, &dev).num_params(), 2);
        assert_eq!(InstanceNorm3d::new(128, true, eps, &dev).num_params(), 256);
    }

    #[test]
    fn instance_norm_of_a_constant_input_has_finite_gradients() {
        let dev = device().autodiff();
        let norm = InstanceNorm3d::new(2, true, 1e-3, &dev);
        let x = Tensor::<5>::ones([1, 2, 2, 2, 2], &dev).require_grad();
        let y = norm.forward(x.clone());
        let grads = (y * 3.0).sum().backward();
        let g = to_vec(x.grad(&grads).unwrap());
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    }

    #[test]
    fn max_pool3d_matches_a_naive_maximum_and_passes_gradients() {
        let dev = device();
        let shape = [2, 3, 4, 6, 2];
        let x = arange(shape, &dev);
        let v = to_vec(x.clone());
        let y = max_pool3d(x);
        assert_eq!(y.dims(), [2, 3, 2, 3, 1]);
        let [n, c, d, h, w] = shape;
        let mut expect = Vec::new();
        for b in 0..n * c {
            for z in 0..d / 2 {
                for yy in 0..h / 2 {
                    for xx in 0..w / 2 {
                        let mut m = f32::NEG_INFINITY;
                        for (a, bb, cc) in itertools_product() {
                            m = m.max(v[((b * d + 2 * z + a) * h + 2 * yy + bb) * w + 2 * xx + cc]);
                        }
                        expect.push(m);
                    }
                }
            }
        }
        assert_eq!(to_vec(y), expect);

        let ad = dev.autodiff();
        let x = arange(shape, &ad).require_grad();
        let grads = max_pool3d(x.clone()).sum().backward();
        let g = to_vec(x.grad(&grads).unwrap());
        // Exactly one maximum per 2×2×2 window receives the gradient.
        assert_eq!(
            g.iter().filter(|&&v| v == 1.0).count(),
            n * c * d * h * w / 8
        );
    }

    fn itertools_product() -> impl Iterator<Item = (usize, usize, usize)> {
        (0..2).flat_map(|a| (0..2).flat_map(move |b| (0..2).map(move |c| (a, b, c))))
    }

    #[test]
    fn long_dropout_masks_differ_per_chunk_and_not_per_thread_count() {
        let n = 3 * MASK_CHUNK + 5;
        let rng = DropoutRng::new(4);
        let two = rng.mask(n, 0.2);
        rng.reseed(4);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let one = pool.install(|| rng.mask(n, 0.2));
        assert_eq!(one, two);
        let chunks: Vec<&[f32]> = two.chunks(MASK_CHUNK).collect();
        assert_ne!(chunks[0], chunks[1]);
        for chunk in &chunks[..3] {
            let dropped = chunk.iter().filter(|&&v| v == 0.0).count() as f64;
            let fraction = dropped / MASK_CHUNK as f64;
            assert!((0.18..0.22).contains(&fraction), "{fraction}");
        }
        // The next call draws a new key.
        assert_ne!(rng.mask(n, 0.2), two);
    }

    #[test]
    fn dropout_is_seeded_scaled_and_off_outside_training() {
        let ad = device().autodiff();
        let rng = DropoutRng::new(1);
        let drop = Dropout3d::new(0.2, rng.clone());
        let x = Tensor::<2>::ones([100, 100], &ad);
        let a = to_vec(drop.forward(x.clone()));
        let zeros = a.iter().filter(|&&v| v == 0.0).count();
        assert!((1700..2300).contains(&zeros), "{zeros}");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.25).abs() < 1e-6));
        rng.reseed(1);
        assert_eq!(to_vec(drop.forward(x.clone())), a);
        // Not on a plain device, nor after valid().
        let plain = Tensor::<2>::ones([10, 10], &device());
        assert_eq!(to_vec(drop.forward(plain)), vec![1.0; 100]);
        assert_eq!(to_vec(drop.valid().forward(x)), vec![1.0; 10_000]);
    }
}
