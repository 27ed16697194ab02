//! The one 3D convolution every network of seglab calls ([`conv3d`], and
//! [`conv_transpose3d`] for upsampling), with several implementations of the same function:
//!
//! - [`ConvPath::Kernel`], the default on the CPU: [`conv_kernel::padded_conv3d`], a
//!   registered backend operation with a handwritten backward pass (all three passes are
//!   GEMMs over shifted views of the padded input). Strided convolutions run it on their
//!   polyphase form, transposed convolutions on their output phases (rearranged by
//!   [`phases`], itself a backend operation), so burn's generic
//!   convolution gradients — the slow part of training on the CPU (issue "Training and
//!   prediction speed on CPU") — are never used.
//! - [`conv3d_shifted_gemm`] and [`conv3d_im2col`]: the same products written in tensor
//!   operations, differentiated by autodiff (the previous defaults, kept for comparison).
//! - burn's native `conv3d`, the path on every other backend (wgpu, CUDA).
//!
//! `SEGLAB_CONV=burn|gemm|im2col|hybrid|kernel` forces one path, for benchmarks. All compute
//! the same function: the tests below check values and gradients against burn's convolution
//! and against finite differences; the choice only changes speed.

use super::phases::{self, KernelUse, PhaseLayout};
use super::{conv_kernel, conv_split};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::module::{conv_transpose3d as burn_conv_transpose3d, conv3d as burn_conv3d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, PadMode};

/// Which implementation [`conv3d`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPath {
    /// burn's `conv3d` (native forward, generic backward).
    Burn,
    /// [`conv3d_shifted_gemm`].
    ShiftedGemm,
    /// [`conv3d_im2col`]: one matrix product per chunk of output voxels over the k³·in
    /// stacked shifted views.
    Im2col,
    /// burn's forward and input gradient, [`conv3d_shifted_gemm`]'s weight gradient (both
    /// forward passes are computed).
    Hybrid,
    /// [`conv_kernel::padded_conv3d`]: seglab's GEMM convolution with a handwritten backward
    /// pass; flex devices only, others fall back to [`ConvPath::Burn`].
    Kernel,
}

impl ConvPath {
    /// `burn`, `gemm`, `im2col`, `hybrid` or `kernel`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "burn" => Some(ConvPath::Burn),
            "gemm" => Some(ConvPath::ShiftedGemm),
            "hybrid" => Some(ConvPath::Hybrid),
            "im2col" => Some(ConvPath::Im2col),
            "kernel" => Some(ConvPath::Kernel),
            _ => None,
        }
    }
}

/// The path forced by the environment variable `SEGLAB_CONV` (see [`ConvPath::parse`]), read
/// once; for benchmarking the implementations against each other without rebuilding.
fn forced_path() -> Option<ConvPath> {
    static FORCED: std::sync::OnceLock<Option<ConvPath>> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| {
        std::env::var("SEGLAB_CONV")
            .ok()
            .and_then(|v| ConvPath::parse(v.trim()))
    })
}

/// Bytes of columns per chunk in inference (no autodiff): small enough to stay cheap to
/// allocate, large enough for an efficient matrix product.
const INFER_COLUMN_BYTES: usize = 32 << 20;

/// The implementation chosen for a convolution (overridable with `SEGLAB_CONV`):
/// [`ConvPath::Kernel`] on flex (CPU) devices, burn's convolution elsewhere (wgpu, CUDA).
///
/// Measured with `cargo bench --profile dev --bench conv` on 2 cores (forward + backward,
/// ms): 2×16×64³ k3 burn 1619, shifted GEMM 3669, kernel 416; 2×4×32³ k7 burn 465, shifted
/// GEMM 683, kernel 71. The kernel also wins every forward pass (inference).
pub fn choose_path(x: &Tensor<5>, weight_dims: [usize; 5], stride: usize) -> ConvPath {
    if let Some(path) = forced_path() {
        return path;
    }
    let inner_kernel = weight_dims[2].div_ceil(stride.max(1));
    if conv_kernel::supports(x, inner_kernel, 0) {
        ConvPath::Kernel
    } else {
        ConvPath::Burn
    }
}

/// A 3D convolution with a cubic kernel, stride `stride` and explicit zero padding
/// `(before, after)` per spatial axis (asymmetric allowed, as TensorFlow's 'same' needs).
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
    path: ConvPath,
) -> Tensor<5> {
    match path {
        ConvPath::ShiftedGemm if stride == 1 => conv3d_shifted_gemm(x, weight, bias, pads),
        ConvPath::Im2col if stride == 1 => {
            let budget = if x.device().is_autodiff() {
                usize::MAX
            } else {
                INFER_COLUMN_BYTES
            };
            conv3d_im2col(x, weight, bias, pads, budget)
        }
        ConvPath::Hybrid if stride == 1 && x.device().is_autodiff() => {
            let native = burn_conv(x.clone(), weight.clone().detach(), bias, 1, pads);
            let g = conv3d_shifted_gemm(x.detach(), weight, None, pads);
            native + g.clone() - g.detach()
        }
        ConvPath::Kernel => kernel_conv(x, weight, bias, stride, pads),
        _ => burn_conv(x, weight, bias, stride, pads),
    }
}

/// [`ConvPath::Kernel`]: stride 1 runs [`conv_kernel::padded_conv3d`] directly (the symmetric
/// part of the padding inside it, the rest as explicit zeros); stride s > 1 runs it on the
/// polyphase form ([`polyphase`]); the bias is added after. burn's convolution where the
/// kernel does not apply.
fn kernel_conv(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Option<Tensor<1>>,
    stride: usize,
    pads: [(usize, usize); 3],
) -> Tensor<5> {
    let [cout, _, k, _, _] = weight.dims();
    let sym = if stride == 1 { symmetric_pad(pads) } else { 0 };
    let inner_kernel = k.div_ceil(stride);
    if !conv_kernel::supports(&x, inner_kernel, sym) {
        return burn_conv(x, weight, bias, stride, pads);
    }
    let y = if stride == 1 {
        conv_kernel::padded_conv3d(pad_asymmetric(x, pads, sym), weight, sym)
    } else {
        let [_, _, d, h, w] = x.dims();
        let volume = [d, h, w];
        let out: [usize; 3] =
            std::array::from_fn(|i| (volume[i] + pads[i].0 + pads[i].1 - k) / stride + 1);
        let (xs, ws) = polyphase(x, weight, stride, pads);
        let y = conv_kernel::padded_conv3d(xs, ws, 0);
        let [n, c, ..] = y.dims();
        y.slice([0..n, 0..c, 0..out[0], 0..out[1], 0..out[2]])
    };
    match bias {
        Some(bias) => y + bias.reshape([1, cout, 1, 1, 1]),
        None => y,
    }
}

/// The padding every side of every axis gets (the part seglab's kernel pads itself).
fn symmetric_pad(pads: [(usize, usize); 3]) -> usize {
    pads.iter().map(|&(b, a)| b.min(a)).min().unwrap_or(0)
}

/// `x` zero-padded by what `pads` asks beyond the symmetric `sym` the kernel pads itself.
fn pad_asymmetric(x: Tensor<5>, pads: [(usize, usize); 3], sym: usize) -> Tensor<5> {
    let extra = pads.map(|(b, a)| (b - sym, a - sym));
    if extra.iter().any(|&(b, a)| b + a > 0) {
        x.pad(extra, PadMode::Constant(0.0))
    } else {
        x
    }
}

/// `relu(conv3d(x, weight, bias))`. At inference (no autodiff) on the kernel path with stride
/// 1 the bias and the ReLU are applied as the output leaves the kernel
/// ([`conv_kernel::padded_conv3d_bias_relu`]), one pass over the activation instead of three;
/// otherwise the separate operations.
pub fn conv3d_bias_relu(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Tensor<1>,
    stride: usize,
    pads: [(usize, usize); 3],
    path: ConvPath,
) -> Tensor<5> {
    let k = weight.dims()[2];
    let sym = symmetric_pad(pads);
    if path == ConvPath::Kernel
        && stride == 1
        && !x.device().is_autodiff()
        && conv_kernel::supports(&x, k, sym)
    {
        let x = pad_asymmetric(x, pads, sym);
        return conv_kernel::padded_conv3d_bias_relu(x, weight, bias, sym, true);
    }
    relu(conv3d(x, weight, Some(bias), stride, pads, path))
}

/// A stride-s convolution of the input zero-padded by `pads` as a stride-1 convolution of its
/// s³ polyphase components: with a = s·α + β, y[z] = Σₐ w[a]·x[s·z + a] = Σ_β Σ_α w[s·α + β]·x_β[z + α]
/// where x_β[i] = x[s·i + β] of the padded input. Returns the input `[batch, in·s³, ⌈n/s⌉, …]`
/// (n the padded size; [`phases::to_phases`] pads while it rearranges) and the kernel
/// `[out, in·s³, ⌈k/s⌉³]` (taps past k are zero). Flex devices only (as the kernel path).
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

/// A transposed convolution, stride s, kernel k ≥ s, weight `[in, out, k, k, k]` (burn's
/// layout), whose full output `[(n − 1)·s + k]` per axis is cropped by `crop = (before,
/// after)` voxels. On flex devices ([`ConvPath::Kernel`]) each of the s³ output phases is a
/// stride-1 convolution of the input with a flipped sub-kernel — one
/// [`conv_kernel::padded_conv3d`] with out·s³ channels, interleaved after — else burn's
/// `conv_transpose3d`.
pub fn conv_transpose3d(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Option<Tensor<1>>,
    stride: usize,
    crop: (usize, usize),
    path: ConvPath,
) -> Tensor<5> {
    let [n, _, d, h, w] = x.dims();
    let [_, cout, k, _, _] = weight.dims();
    let s = stride;
    let kk = k.div_ceil(s);
    let (before, after) = crop;
    let size = [d, h, w].map(|m| (m - 1) * s + k - before - after);
    if path != ConvPath::Kernel || !conv_kernel::supports(&x, kk, kk - 1) {
        if conv_split::needed(&x, d * h * w) {
            let y = conv_split::conv_transpose3d_in_slabs(x, weight, bias, s);
            return y.slice([
                0..n,
                0..cout,
                before..before + size[0],
                before..before + size[1],
                before..before + size[2],
            ]);
        }
        // burn crops `padding` voxels on both sides; the remainder by slicing.
        let sym = before.min(after);
        let y = burn_conv_transpose3d(
            x,
            weight,
            bias,
            ConvTransposeOptions::new([s; 3], [sym; 3], [0; 3], [1; 3], 1),
        );
        let b0 = before - sym;
        return y.slice([
            0..n,
            0..cout,
            b0..b0 + size[0],
            b0..b0 + size[1],
            b0..b0 + size[2],
        ]);
    }
    // Output o = s·m + β collects taps a = s·α + β from input m − α: a stride-1 correlation
    // of the input padded by kk − 1 with the sub-kernel w[s·(kk − 1 − α) + β].
    let wt = phases::kernel_phases(weight, s, KernelUse::Transposed); // [out·s³, in, kk, kk, kk]
    let y = conv_kernel::padded_conv3d(x, wt, kk - 1); // [batch, out·s³, n + kk − 1, …]
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
    );
    match bias {
        Some(bias) => y + bias.reshape([1, cout, 1, 1, 1]),
        None => y,
    }
}

/// burn's conv3d with asymmetric padding: the common part inside the convolution, the
/// remainder as explicit zeros. In training on a GPU backend, in slabs when a sample's output
/// is too large for burn's weight gradient ([`conv_split`]).
fn burn_conv(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Option<Tensor<1>>,
    stride: usize,
    pads: [(usize, usize); 3],
) -> Tensor<5> {
    let k = weight.dims()[2];
    let [_, _, d, h, w] = x.dims();
    let out: usize = [(d, pads[0]), (h, pads[1]), (w, pads[2])]
        .iter()
        .map(|&(n, (b, a))| (n + b + a - k) / stride + 1)
        .product();
    if conv_split::needed(&x, out) {
        let x = x.pad(pads, PadMode::Constant(0.0));
        return conv_split::conv3d_in_slabs(x, weight, bias, stride);
    }
    let sym = pads.map(|(b, a)| b.min(a));
    let extra: [(usize, usize); 3] =
        std::array::from_fn(|i| (pads[i].0 - sym[i], pads[i].1 - sym[i]));
    let x = if extra.iter().any(|&(b, a)| b + a > 0) {
        x.pad(extra, PadMode::Constant(0.0)) // [batch, in, d+…, h+…, w+…]
    } else {
        x
    };
    burn_conv3d(
        x,
        weight,
        bias,
        ConvOptions::new([stride; 3], sym, [1; 3], 1),
    )
}

/// The flattened padded input of a stride-1 convolution and its geometry.
struct FlatInput {
    /// `[batch, in, Dp·Hp·Wp]`
    flat: Tensor<3>,
    /// Padded height and width.
    hp: usize,
    wp: usize,
    /// Output size per axis.
    out: [usize; 3],
    /// Flat positions computed: the last valid one + 1.
    len: usize,
}

impl FlatInput {
    fn new(x: Tensor<5>, k: usize, pads: [(usize, usize); 3]) -> Self {
        let [n, cin, d, h, w] = x.dims();
        let [dp, hp, wp] = [(d, pads[0]), (h, pads[1]), (w, pads[2])].map(|(s, (b, a))| s + b + a);
        assert!(
            dp >= k && hp >= k && wp >= k,
            "conv3d: kernel {k} larger than the padded input {dp}×{hp}×{wp}"
        );
        let out = [dp - k + 1, hp - k + 1, wp - k + 1];
        let len = (out[0] - 1) * hp * wp + (out[1] - 1) * wp + out[2];
        let xp = if pads.iter().any(|&(b, a)| b + a > 0) {
            x.pad(pads, PadMode::Constant(0.0)) // [batch, in, Dp, Hp, Wp]
        } else {
            x
        };
        Self {
            flat: xp.reshape([n, cin, dp * hp * wp]),
            hp,
            wp,
            out,
            len,
        }
    }

    /// Flat offset of kernel position (a, b, c).
    fn offset(&self, a: usize, b: usize, c: usize) -> usize {
        (a * self.hp + b) * self.wp + c
    }

    /// `[batch, out, L]` values at flat positions → `[batch, out, D', H', W']` (+ bias).
    fn unflatten(&self, y: Tensor<3>, bias: Option<Tensor<1>>) -> Tensor<5> {
        let [n, cout, _] = y.dims();
        let [od, oh, ow] = self.out;
        let plane = self.hp * self.wp;
        let y = y.pad([(0, od * plane - self.len)], PadMode::Constant(0.0)); // [batch, out, D'·Hp·Wp]
        let y =
            y.reshape([n, cout, od, self.hp, self.wp])
                .slice([0..n, 0..cout, 0..od, 0..oh, 0..ow]); // [batch, out, D', H', W']
        match bias {
            Some(bias) => y + bias.reshape([1, cout, 1, 1, 1]),
            None => y,
        }
    }
}

/// Stride-1 convolution as one matrix product `W [out, k³·in] · columns [k³·in, positions]`
/// per chunk of flat output positions, the columns being the k³ shifted views of the flat
/// padded input (see [`conv3d_shifted_gemm`]) stacked along the channel axis. Chunks hold at
/// most `column_bytes` of columns (`usize::MAX`: one chunk, as training uses, so that
/// autodiff sees a single product).
pub fn conv3d_im2col(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Option<Tensor<1>>,
    pads: [(usize, usize); 3],
    column_bytes: usize,
) -> Tensor<5> {
    let [n, cin, _, _, _] = x.dims();
    let [cout, wcin, k, _, _] = weight.dims();
    assert_eq!(cin, wcin, "conv3d: input channels {cin} vs weight {wcin}");
    let input = FlatInput::new(x, k, pads);
    let kk = k * k * k * cin;
    // [out, k, k, k, in] → [1, out, k³·in], matching the column order (a, b, c, channel).
    let wm = weight.permute([0, 2, 3, 4, 1]).reshape([1, cout, kk]);
    let chunk = (column_bytes / (4 * n * kk).max(1)).clamp(64, input.len.max(64));
    let mut parts = Vec::new();
    let mut q0 = 0;
    while q0 < input.len {
        let q1 = (q0 + chunk).min(input.len);
        let mut views = Vec::with_capacity(k * k * k);
        for a in 0..k {
            for b in 0..k {
                for c in 0..k {
                    let off = input.offset(a, b, c);
                    views.push(input.flat.clone().slice([0..n, 0..cin, off + q0..off + q1]));
                }
            }
        }
        let columns = Tensor::cat(views, 1); // [batch, k³·in, q1 − q0]
        parts.push(wm.clone().matmul(columns)); // [batch, out, q1 − q0]
        q0 = q1;
    }
    let y = if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Tensor::cat(parts, 2)
    }; // [batch, out, L]
    input.unflatten(y, bias)
}

/// Stride-1 convolution as Σ over the k³ kernel offsets of `W[:, :, a, b, c] · shift(x)`.
///
/// The padded input `[batch, in, Dp, Hp, Wp]` is flattened to `[batch, in, Dp·Hp·Wp]`; output
/// voxel (z, y, x) is computed at flat position q = z·Hp·Wp + y·Wp + x, and offset (a, b, c)
/// reads flat position q + a·Hp·Wp + b·Wp + c, so each offset is the slice
/// `[off, off + L)` of the flat input — a view, no copy. The products are computed for all
/// q < L (including the k − 1 "wrapped" columns of each row and plane, which are discarded at
/// the end): a (Hp·Wp)/(H'·W') overhead, 6 % at 64³ with k = 3.
pub fn conv3d_shifted_gemm(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Option<Tensor<1>>,
    pads: [(usize, usize); 3],
) -> Tensor<5> {
    let [n, cin, _, _, _] = x.dims();
    let [cout, wcin, k, _, _] = weight.dims();
    assert_eq!(cin, wcin, "conv3d: input channels {cin} vs weight {wcin}");
    let input = FlatInput::new(x, k, pads);
    let len = input.len;
    // [k, k, k, out, in] → one [1, out, in] matrix per offset.
    let wk = weight
        .permute([2, 3, 4, 0, 1])
        .reshape([k * k * k, cout, cin]);
    let mut acc: Option<Tensor<3>> = None;
    for a in 0..k {
        for b in 0..k {
            for c in 0..k {
                let o = (a * k + b) * k + c;
                let off = input.offset(a, b, c);
                let xs = input.flat.clone().slice([0..n, 0..cin, off..off + len]); // [batch, in, L]
                let wo = wk.clone().slice([o..o + 1, 0..cout, 0..cin]); // [1, out, in]
                let y = wo.matmul(xs); // [batch, out, L]
                acc = Some(match acc {
                    Some(s) => s + y,
                    None => y,
                });
            }
        }
    }
    input.unflatten(acc.expect("k ≥ 1"), bias)
}

/// Transposed convolution whose kernel equals its stride (the U-Net's 2³ stride-2
/// upsampling): the output blocks do not overlap, so it is one matrix product
/// `Wᵀ [out·s³, in] · x [in, voxels]` followed by a reordering of the s³ sub-voxels — GEMMs
/// forward and backward instead of burn's generic transposed-convolution gradients.
///
/// # Shapes
///
/// - x: `[batch, in, d, h, w]`
/// - weight: `[in, out, s, s, s]` (burn's layout), bias: `[out]`
/// - output: `[batch, out, d·s, h·s, w·s]`
pub fn conv_transpose3d_blocks(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Option<Tensor<1>>,
) -> Tensor<5> {
    let [n, cin, d, h, w] = x.dims();
    let [wcin, cout, s, _, _] = weight.dims();
    assert_eq!(
        cin, wcin,
        "conv_transpose3d: input channels {cin} vs weight {wcin}"
    );
    let xm = x.reshape([n, cin, d * h * w]); // [batch, in, voxels]
    let wm = weight
        .reshape([cin, cout * s * s * s])
        .transpose()
        .reshape([1, cout * s * s * s, cin]); // [1, out·s³, in]
    let y = wm.matmul(xm); // [batch, out·s³, voxels]
    let y = y
        .reshape([n, cout, s, s, s, d, h, w])
        .permute([0, 1, 5, 2, 6, 3, 7, 4]) // [batch, out, d, s, h, s, w, s]
        .reshape([n, cout, d * s, h * s, w * s]);
    match bias {
        Some(bias) => y + bias.reshape([1, cout, 1, 1, 1]),
        None => y,
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;
    use crate::models::test_support::{
        assert_close, random_tensor as tensor, random_values as values, to_vec,
    };

    /// (kernel, input channels, output channels, input size d×h×w, pads)
    type Case = (usize, usize, usize, [usize; 3], [(usize, usize); 3]);

    const CASES: [Case; 6] = [
        (3, 2, 3, [5, 4, 6], [(1, 1); 3]),
        (4, 3, 2, [4, 5, 4], [(1, 2); 3]),
        (1, 4, 2, [3, 3, 5], [(0, 0); 3]),
        (7, 1, 2, [5, 6, 5], [(3, 3); 3]),
        (2, 2, 2, [3, 4, 5], [(0, 1), (1, 0), (0, 0)]),
        (4, 2, 1, [6, 6, 6], [(1, 1); 3]),
    ];

    #[test]
    fn shifted_gemm_forward_equals_burns_convolution() {
        let dev = Device::flex();
        for (i, &(k, cin, cout, [d, h, w], pads)) in CASES.iter().enumerate() {
            let x = tensor([2, cin, d, h, w], i as u64, &dev);
            let wt = tensor([cout, cin, k, k, k], 100 + i as u64, &dev);
            let b = tensor([cout], 200 + i as u64, &dev);
            let run = |path| conv3d(x.clone(), wt.clone(), Some(b.clone()), 1, pads, path);
            let reference = to_vec(run(ConvPath::Burn));
            for path in [ConvPath::ShiftedGemm, ConvPath::Im2col, ConvPath::Kernel] {
                assert_close(
                    &to_vec(run(path)),
                    &reference,
                    1e-5,
                    &format!("case {i} {path:?}"),
                );
            }
            // Inference chunks (here 64 positions each) give the same values.
            let chunked = conv3d_im2col(x.clone(), wt.clone(), Some(b.clone()), pads, 1);
            assert_close(
                &to_vec(chunked),
                &reference,
                1e-5,
                &format!("case {i} chunked"),
            );
        }
    }

    /// Gradients of L = Σ y·r for input, weight and bias.
    fn gradients(case: &Case, seed: u64, path: ConvPath) -> [Vec<f32>; 3] {
        let &(k, cin, cout, [d, h, w], pads) = case;
        let dev = Device::flex().autodiff();
        let x = tensor([2, cin, d, h, w], seed, &dev).require_grad();
        let wt = tensor([cout, cin, k, k, k], seed + 1, &dev).require_grad();
        let b = tensor([cout], seed + 2, &dev).require_grad();
        let y = conv3d(x.clone(), wt.clone(), Some(b.clone()), 1, pads, path);
        let r = tensor(y.dims(), seed + 3, &dev);
        let grads = (y * r).sum().backward();
        [
            to_vec(x.grad(&grads).unwrap()),
            to_vec(wt.grad(&grads).unwrap()),
            to_vec(b.grad(&grads).unwrap()),
        ]
    }

    #[test]
    fn gradients_equal_burns_generic_backward() {
        for (i, case) in CASES.iter().enumerate() {
            let reference = gradients(case, 10 * i as u64, ConvPath::Burn);
            for path in [
                ConvPath::ShiftedGemm,
                ConvPath::Im2col,
                ConvPath::Hybrid,
                ConvPath::Kernel,
            ] {
                let got = gradients(case, 10 * i as u64, path);
                for (name, (g, r)) in ["x", "weight", "bias"]
                    .iter()
                    .zip(got.iter().zip(&reference))
                {
                    assert_close(g, r, 1e-4, &format!("case {i} {path:?} d{name}"));
                }
            }
        }
    }

    /// L = Σ y·r is linear in x and in the weight, so central differences are exact up to
    /// rounding: every gradient entry is checked, not a sample.
    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::flex();
        let case: Case = (3, 2, 2, [3, 4, 3], [(0, 1), (1, 1), (1, 0)]);
        let (k, cin, cout, [d, h, w], pads) = case;
        let [gx, gw, _] = gradients(&case, 7, ConvPath::ShiftedGemm);
        let x = values(2 * cin * d * h * w, 7);
        let wt = values(cout * cin * k * k * k, 8);
        let b = tensor([cout], 9, &dev);
        let loss = |x: &[f32], wt: &[f32]| -> f64 {
            let xt = Tensor::<5>::from_data(TensorData::new(x.to_vec(), [2, cin, d, h, w]), &dev);
            let wtt =
                Tensor::<5>::from_data(TensorData::new(wt.to_vec(), [cout, cin, k, k, k]), &dev);
            let y = conv3d(xt, wtt, Some(b.clone()), 1, pads, ConvPath::Burn);
            let r = to_vec(tensor(y.dims(), 10, &dev));
            to_vec(y)
                .iter()
                .zip(&r)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum()
        };
        let eps = 0.25f32;
        let fd = |v: &[f32], i: usize, f: &dyn Fn(&[f32]) -> f64| -> f32 {
            let (mut p, mut m) = (v.to_vec(), v.to_vec());
            p[i] += eps;
            m[i] -= eps;
            ((f(&p) - f(&m)) / (2.0 * f64::from(eps))) as f32
        };
        let fx: Vec<f32> = (0..x.len()).map(|i| fd(&x, i, &|v| loss(v, &wt))).collect();
        let fw: Vec<f32> = (0..wt.len())
            .map(|i| fd(&wt, i, &|v| loss(&x, v)))
            .collect();
        assert_close(&gx, &fx, 1e-3, "dx vs finite differences");
        assert_close(&gw, &fw, 1e-3, "dweight vs finite differences");
    }

    #[test]
    fn block_transposed_convolution_equals_burns() {
        use burn::tensor::module::conv_transpose3d;
        use burn::tensor::ops::ConvTransposeOptions;
        for s in [1usize, 2, 3] {
            let dev = Device::flex().autodiff();
            let x = tensor([2, 3, 2, 3, 4], s as u64, &dev).require_grad();
            let wt = tensor([3, 2, s, s, s], 10 + s as u64, &dev).require_grad();
            let b = tensor([2], 20 + s as u64, &dev).require_grad();
            let ours = conv_transpose3d_blocks(x.clone(), wt.clone(), Some(b.clone()));
            let theirs = conv_transpose3d(
                x.clone(),
                wt.clone(),
                Some(b.clone()),
                ConvTransposeOptions::new([s; 3], [0; 3], [0; 3], [1; 3], 1),
            );
            assert_eq!(ours.dims(), [2, 2, 2 * s, 3 * s, 4 * s]);
            let r = tensor(ours.dims(), 30, &dev);
            let (go, gt) = (
                (ours.clone() * r.clone()).sum().backward(),
                (theirs.clone() * r).sum().backward(),
            );
            assert_close(
                &to_vec(ours),
                &to_vec(theirs),
                1e-5,
                &format!("s{s} forward"),
            );
            for (name, t) in [("x", &x), ("weight", &wt)] {
                let (a, e) = (to_vec(t.grad(&go).unwrap()), to_vec(t.grad(&gt).unwrap()));
                assert_close(&a, &e, 1e-4, &format!("s{s} d{name}"));
            }
            let (a, e) = (to_vec(b.grad(&go).unwrap()), to_vec(b.grad(&gt).unwrap()));
            assert_close(&a, &e, 1e-4, &format!("s{s} dbias"));
        }
    }

    /// Values and the gradients of L = Σ y·r for input, weight and bias of `f(x, w, b)`.
    fn values_and_gradients(
        x_shape: [usize; 5],
        w_shape: [usize; 5],
        bias: usize,
        seed: u64,
        f: impl Fn(Tensor<5>, Tensor<5>, Tensor<1>) -> Tensor<5>,
    ) -> [Vec<f32>; 4] {
        let dev = Device::flex().autodiff();
        let x = tensor(x_shape, seed, &dev).require_grad();
        let wt = tensor(w_shape, seed + 1, &dev).require_grad();
        let b = tensor([bias], seed + 2, &dev).require_grad();
        let y = f(x.clone(), wt.clone(), b.clone());
        let r = tensor(y.dims(), seed + 3, &dev);
        let grads = (y.clone() * r).sum().backward();
        [
            to_vec(y),
            to_vec(x.grad(&grads).unwrap()),
            to_vec(wt.grad(&grads).unwrap()),
            to_vec(b.grad(&grads).unwrap()),
        ]
    }

    /// `f(…, ConvPath::Kernel)` gives the values and gradients of `f(…, ConvPath::Burn)`.
    fn assert_kernel_equals_burn(
        what: &str,
        [x_shape, w_shape]: [[usize; 5]; 2],
        bias: usize,
        seed: u64,
        f: impl Fn(Tensor<5>, Tensor<5>, Tensor<1>, ConvPath) -> Tensor<5>,
    ) {
        let run =
            |path| values_and_gradients(x_shape, w_shape, bias, seed, |x, w, b| f(x, w, b, path));
        let (got, reference) = (run(ConvPath::Kernel), run(ConvPath::Burn));
        for (name, (g, r)) in ["y", "dx", "dweight", "dbias"]
            .iter()
            .zip(got.iter().zip(&reference))
        {
            assert_close(g, r, 1e-4, &format!("{what} {name}"));
        }
    }

    /// Every form of the kernel's products: volumes large enough for several chunks of
    /// output positions per sample, with few (stacked columns) and many input channels (one
    /// product per offset) in the forward pass and in the input gradient (whose kernel is
    /// the flipped transpose, 10→3 stacks it); one sample (chunks split for the threads) and
    /// two; a bottleneck with fewer grid positions than output channels (stacked although
    /// the input has many channels); both layouts of the weight gradient's products (32 and
    /// 64 output channels fill whole registers: positions-major dY).
    #[test]
    fn kernel_path_equals_burns_for_every_product_form() {
        for (batch, cin, cout, n) in [
            (2, 2, 3, 24),
            (2, 9, 10, 22),
            (1, 10, 3, 20),
            (2, 9, 40, 2),
            (2, 20, 32, 12),
            (1, 8, 64, 10),
        ] {
            assert_kernel_equals_burn(
                &format!("{batch}×{cin}→{cout}"),
                [[batch, cin, n, n + 1, n], [cout, cin, 3, 3, 3]],
                cout,
                80,
                |x, w, b, path| conv3d(x, w, Some(b), 1, [(1, 1); 3], path),
            );
        }
    }

    /// At inference the kernel path adds the bias and applies ReLU as the output leaves the
    /// kernel: the values of burn's convolution, bias and ReLU, with symmetric and asymmetric
    /// ('same' for an even kernel) padding.
    #[test]
    fn fused_bias_relu_equals_burns_convolution_bias_and_relu() {
        let dev = Device::flex();
        // (kernel, pads, in, out)
        let cases = [
            (3, [(1, 1); 3], 3, 4),
            (4, [(1, 2), (2, 1), (1, 2)], 3, 4),
            (3, [(1, 1); 3], 8, 64),
        ];
        for (i, (k, pads, cin, cout)) in cases.into_iter().enumerate() {
            let seed = 90 + 3 * i as u64;
            let x = tensor([2, cin, 9, 10, 11], seed, &dev);
            let w = tensor([cout, cin, k, k, k], seed + 1, &dev);
            let b = tensor([cout], seed + 2, &dev);
            let got = to_vec(conv3d_bias_relu(
                x.clone(),
                w.clone(),
                b.clone(),
                1,
                pads,
                ConvPath::Kernel,
            ));
            let want = to_vec(relu(conv3d(x, w, Some(b), 1, pads, ConvPath::Burn)));
            assert!(want.contains(&0.0) && want.iter().any(|&v| v > 0.0));
            assert_close(&got, &want, 1e-4, &format!("k{k} {cin}→{cout}"));
        }
    }

    /// Strided convolutions through the polyphase form: Vox2Vox's k4 s2, the CycleGAN's
    /// k3 s2 with TensorFlow's asymmetric 'same' padding, odd sizes, a stride of 3.
    #[test]
    fn strided_kernel_path_equals_burns_values_and_gradients() {
        type Strided = (usize, usize, [usize; 3], [(usize, usize); 3]);
        let cases: [Strided; 4] = [
            (4, 2, [6, 7, 8], [(1, 1); 3]),
            (3, 2, [5, 6, 7], [(0, 1), (1, 1), (0, 0)]),
            (4, 2, [8, 8, 8], [(1, 2); 3]),
            (3, 3, [7, 6, 9], [(1, 1); 3]),
        ];
        for (i, (k, stride, [d, h, w], pads)) in cases.into_iter().enumerate() {
            assert_kernel_equals_burn(
                &format!("case {i}"),
                [[2, 3, d, h, w], [2, 3, k, k, k]],
                2,
                40 + i as u64,
                |x, wt, b, path| conv3d(x, wt, Some(b), stride, pads, path),
            );
        }
    }

    /// Vox2Vox's bottleneck shapes at 2³, where the kernel stacks although the inputs have
    /// many channels (fewer grid positions than output channels): the 'same' 4³ convolution,
    /// the k4 s2 convolution into it and the k4 s2 transposed convolution out of it, batch 4.
    #[test]
    fn bottleneck_shapes_equal_burns_values_and_gradients() {
        let pads = [(1, 2); 3];
        for (stride, n) in [(1, 2), (2, 4)] {
            assert_kernel_equals_burn(
                &format!("k4 s{stride} {n}³ → 2³"),
                [[4, 16, n, n, n], [24, 16, 4, 4, 4]],
                24,
                69 + stride as u64,
                |x, w, b, path| conv3d(x, w, Some(b), stride, pads, path),
            );
        }
        assert_kernel_equals_burn(
            "transposed k4 s2 2³ → 4³",
            [[4, 24, 2, 2, 2], [24, 16, 4, 4, 4]],
            16,
            72,
            |x, w, b, path| conv_transpose3d(x, w, Some(b), 2, (1, 1), path),
        );
    }

    /// Transposed convolutions through the output phases: the CycleGAN's k3 s2 ('same' crops
    /// 0 before and 1 after), k4 s2, k = s, a stride of 3.
    #[test]
    fn transposed_kernel_path_equals_burns_values_and_gradients() {
        let cases = [
            (3, 2, (0, 1)),
            (4, 2, (1, 1)),
            (2, 2, (0, 0)),
            (5, 3, (1, 1)),
        ];
        for (i, (k, stride, crop)) in cases.into_iter().enumerate() {
            assert_kernel_equals_burn(
                &format!("case {i}"),
                [[2, 3, 3, 4, 5], [3, 2, k, k, k]],
                2,
                60 + i as u64,
                |x, wt, b, path| conv_transpose3d(x, wt, Some(b), stride, crop, path),
            );
        }
    }

    #[test]
    fn the_kernel_path_applies_on_flex_devices() {
        for dev in [Device::flex(), Device::flex().autodiff()] {
            let x = tensor([1, 2, 4, 4, 4], 1, &dev);
            assert!(conv_kernel::supports(&x, 3, 1), "{dev:?}");
            assert!(!conv_kernel::supports(&x, 3, 3), "padding ≥ kernel");
        }
    }

    #[test]
    fn paths_parse() {
        assert_eq!(ConvPath::parse("gemm"), Some(ConvPath::ShiftedGemm));
        assert_eq!(ConvPath::parse("hybrid"), Some(ConvPath::Hybrid));
        assert_eq!(ConvPath::parse("burn"), Some(ConvPath::Burn));
        assert_eq!(ConvPath::parse("kernel"), Some(ConvPath::Kernel));
        assert_eq!(ConvPath::parse("fast"), None);
    }
}
