//! The 3D convolutions of the networks on the CPU kernels: every form runs
//! [`padded_conv3d`], the stride-1 GEMM convolution with a handwritten backward pass, so
//! burn's generic convolution gradients (the slow part of training on the CPU) are never
//! used.
//!
//! - stride 1: [`padded_conv3d`] directly, the symmetric part of the padding inside it and the
//!   rest as explicit zeros;
//! - stride s > 1: [`padded_conv3d`] on the input's s³ polyphase components
//!   ([`phases::to_phases`]);
//! - transposed: one [`padded_conv3d`] whose out·s³ channels are the output's phases,
//!   interleaved after ([`phases::from_phases`]).
//!
//! Each entry has a `*_supported` check (a Flex device, float32, a padding the kernel takes);
//! `models::conv` calls burn's convolution where it says no.
//!
//! Measured with `cargo bench --profile dev --bench conv` on 2 cores (forward + backward, ms):
//! 2×16×64³ k3: burn 1619, kernel 416; 2×4×32³ k7: burn 465, kernel 71. The kernel also wins
//! every forward pass (inference).

use burn::tensor::Tensor;
use burn::tensor::ops::PadMode;

use super::padded_conv::{self, padded_conv3d, padded_conv3d_bias_relu};
use super::phases::{self, KernelUse, PhaseLayout};

/// Whether [`conv3d`] takes a convolution of `x` with a k³ kernel, stride `stride` and zero
/// padding `pads`.
pub fn conv3d_supported(x: &Tensor<5>, k: usize, stride: usize, pads: [(usize, usize); 3]) -> bool {
    if stride == 1 {
        padded_conv::supports(x, k, symmetric_pad(pads))
    } else {
        padded_conv::supports(x, k.div_ceil(stride), 0)
    }
}

/// A 3D convolution with a cubic kernel, stride `stride`, explicit zero padding `(before,
/// after)` per spatial axis, and a bias. Only where [`conv3d_supported`].
///
/// # Shapes
///
/// - x: `[batch, in, depth, height, width]`
/// - weight: `[out, in, k, k, k]`, bias: `[out]`
/// - output: `[batch, out, d', h', w']`, n' = (n + before + after − k) / stride + 1
pub fn conv3d(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Option<Tensor<1>>,
    stride: usize,
    pads: [(usize, usize); 3],
) -> Tensor<5> {
    let k = weight.dims()[2];
    let y = if stride == 1 {
        let sym = symmetric_pad(pads);
        padded_conv3d(pad_beyond(x, pads, [sym; 3]), weight, sym)
    } else {
        let [_, _, d, h, w] = x.dims();
        let out = output_size([d, h, w], k, stride, pads);
        let (xs, ws) = polyphase(x, weight, stride, pads);
        let y = padded_conv3d(xs, ws, 0); // [batch, out, ⌈n/s⌉ − ⌈k/s⌉ + 1, …]
        let [n, c, ..] = y.dims();
        y.slice([0..n, 0..c, 0..out[0], 0..out[1], 0..out[2]]) // [batch, out, d', h', w']
    };
    add_bias(y, bias)
}

/// Whether [`conv3d_bias_relu`] takes a stride-1 convolution of `x` with a k³ kernel and
/// zero padding `pads`: as [`conv3d_supported`], and `x` without autodiff (the fused form has
/// no backward pass).
pub fn conv3d_bias_relu_supported(x: &Tensor<5>, k: usize, pads: [(usize, usize); 3]) -> bool {
    !x.device().is_autodiff() && conv3d_supported(x, k, 1, pads)
}

/// `relu(conv3d(x, weight, bias))` at stride 1 for inference: the bias and the ReLU are
/// applied as the output leaves the kernel ([`padded_conv3d_bias_relu`]), one pass over the
/// activation instead of three. Only where [`conv3d_bias_relu_supported`].
pub fn conv3d_bias_relu(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Tensor<1>,
    pads: [(usize, usize); 3],
) -> Tensor<5> {
    let sym = symmetric_pad(pads);
    padded_conv3d_bias_relu(pad_beyond(x, pads, [sym; 3]), weight, bias, sym, true)
}

/// Whether [`conv_transpose3d`] takes a transposed convolution of `x` with a k³ kernel and
/// stride `stride`.
pub fn conv_transpose3d_supported(x: &Tensor<5>, k: usize, stride: usize) -> bool {
    let kk = k.div_ceil(stride);
    padded_conv::supports(x, kk, kk - 1)
}

/// A transposed convolution, stride s, kernel k ≥ s, weight `[in, out, k, k, k]` (burn's
/// layout), whose full output `[(n − 1)·s + k]` per axis is cropped by `crop = (before,
/// after)` voxels. Each of the s³ output phases is a stride-1 convolution of the input with a
/// flipped sub-kernel: one [`padded_conv3d`] with out·s³ channels, interleaved after. Only
/// where [`conv_transpose3d_supported`].
pub fn conv_transpose3d(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Option<Tensor<1>>,
    stride: usize,
    crop: (usize, usize),
) -> Tensor<5> {
    let [_, _, d, h, w] = x.dims();
    let k = weight.dims()[2];
    let s = stride;
    let kk = k.div_ceil(s);
    let (before, _) = crop;
    let size = transposed_output_size([d, h, w], k, s, crop);
    // Output o = s·m + β collects taps a = s·α + β from input m − α: a stride-1 correlation
    // of the input padded by kk − 1 with the sub-kernel w[s·(kk − 1 − α) + β].
    let wt = phases::kernel_phases(weight, s, KernelUse::Transposed); // [out·s³, in, kk, kk, kk]
    let y = padded_conv3d(x, wt, kk - 1); // [batch, out·s³, n + kk − 1, …]
    let [_, _, md, mh, mw] = y.dims();
    // Phase β of position m is output s·m + β of the full output; cropped by `before`.
    let y = phases::from_phases(
        y,
        PhaseLayout {
            stride: s,
            before: [before; 3],
            volume: size,
            phases: [md, mh, mw],
        },
    ); // [batch, out, size…]
    add_bias(y, bias)
}

/// The output size per axis of a convolution of a `volume` with a k³ kernel, stride `stride`
/// and zero padding `pads`: n' = (n + before + after − k) / stride + 1.
pub fn output_size(
    volume: [usize; 3],
    k: usize,
    stride: usize,
    pads: [(usize, usize); 3],
) -> [usize; 3] {
    std::array::from_fn(|i| (volume[i] + pads[i].0 + pads[i].1 - k) / stride + 1)
}

/// The output size per axis of a transposed convolution of a `volume` with a k³ kernel and
/// stride `s`, its full output (n − 1)·s + k cropped by `crop = (before, after)`.
pub fn transposed_output_size(
    volume: [usize; 3],
    k: usize,
    s: usize,
    crop: (usize, usize),
) -> [usize; 3] {
    volume.map(|m| (m - 1) * s + k - crop.0 - crop.1)
}

/// `y + bias` per output channel, when there is a bias.
pub fn add_bias(y: Tensor<5>, bias: Option<Tensor<1>>) -> Tensor<5> {
    match bias {
        Some(bias) => {
            let cout = bias.dims()[0];
            y + bias.reshape([1, cout, 1, 1, 1])
        }
        None => y,
    }
}

/// The padding every side of every axis gets (the part [`padded_conv3d`] pads itself).
fn symmetric_pad(pads: [(usize, usize); 3]) -> usize {
    pads.iter().map(|&(b, a)| b.min(a)).min().unwrap_or(0)
}

/// `x` zero-padded by what `pads` asks beyond the `sym` voxels per axis that the convolution
/// pads on both sides itself.
pub fn pad_beyond(x: Tensor<5>, pads: [(usize, usize); 3], sym: [usize; 3]) -> Tensor<5> {
    let extra: [(usize, usize); 3] =
        std::array::from_fn(|i| (pads[i].0 - sym[i], pads[i].1 - sym[i]));
    if extra.iter().any(|&(b, a)| b + a > 0) {
        x.pad(extra, PadMode::Constant(0.0))
    } else {
        x
    }
}

/// A stride-s convolution of the input zero-padded by `pads` as a stride-1 convolution of its
/// s³ polyphase components: with a = s·α + β, y[z] = Σₐ w[a]·x[s·z + a] = Σ_β Σ_α w[s·α + β]·x_β[z + α]
/// where x_β[i] = x[s·i + β] of the padded input. Returns the input `[batch, in·s³, ⌈n/s⌉, …]`
/// (n the padded size; [`phases::to_phases`] pads while it rearranges) and the kernel
/// `[out, in·s³, ⌈k/s⌉³]` (taps past k are zero).
fn polyphase(
    x: Tensor<5>,
    weight: Tensor<5>,
    s: usize,
    pads: [(usize, usize); 3],
) -> (Tensor<5>, Tensor<5>) {
    let [_, _, d, h, w] = x.dims();
    let volume = [d, h, w];
    let layout = PhaseLayout {
        stride: s,
        before: pads.map(|(b, _)| b),
        volume,
        phases: std::array::from_fn(|a| (volume[a] + pads[a].0 + pads[a].1).div_ceil(s)),
    };
    let kernel = phases::kernel_phases(weight, s, KernelUse::Strided);
    (phases::to_phases(x, layout), kernel)
}
