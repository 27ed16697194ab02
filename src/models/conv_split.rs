//! burn's generic convolutions in pieces small enough for lavapipe's loop limit.
//!
//! burn 0.22 computes the weight gradient of a convolution on its cubecl backends as another
//! convolution, run by its direct kernel, whose kernel is the output gradient: each thread
//! loops over every output voxel of a sample (for a transposed convolution, every input
//! voxel), and inside that over the batch. Mesa's lavapipe, the software Vulkan device of CI,
//! stops any shader loop nest after 65,535 iterations in all (llvmpipe's loop limiter), so
//! past about 21,800 voxels per sample those sums come out short: relative errors of 0.04–0.8
//! for every kernel size, stride and channel count, while the output and the input gradient
//! stay exact (docs/gpu.md, "Wrong weight gradients on lavapipe"). A 32³ patch has 32,768.
//!
//! In training on such a device the convolutions here are computed piece by piece along the
//! spatial axes so that no piece's loops reach the limit: a convolution as the concatenation
//! of its output slabs (each from the input rows it reads), a transposed convolution as the
//! sum of the outputs of its input slabs. autodiff then adds the pieces' weight gradients. The
//! values are those of the whole operation, only the order of the sums differs. Hardware GPUs
//! have no such limit and the CPU backend runs seglab's own kernels: neither comes here.

use std::sync::Mutex;

use burn::tensor::module::{conv_transpose3d, conv3d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, PadMode};
use burn::tensor::{Device, Tensor};

/// Loop iterations a piece's weight gradient may spend per thread: lavapipe's limit of
/// 65,535 with room for the loops' bookkeeping.
const LOOP_BUDGET: usize = 60_000;

/// The most voxels per sample a piece may have when the batch is `batch`: each voxel costs
/// the direct kernel's spatial loop one iteration, its channel loop (over the batch) up to
/// `batch`, and their exits. Measured on lavapipe (Mesa 22.3.6) with batch 1 and 2: 20,480
/// voxels exact, 21,504 wrong; this bound gives 15,000 and 12,000.
pub fn max_voxels(batch: usize) -> usize {
    LOOP_BUDGET / (3 + batch)
}

/// Whether a convolution on `x` whose weight gradient loops over `voxels` voxels per sample
/// must be split: training (autodiff) on a device with a loop limit, past [`max_voxels`].
pub fn needed(x: &Tensor<5>, voxels: usize) -> bool {
    voxels > max_voxels(x.dims()[0]) && x.device().is_autodiff() && limits_loops(&x.device())
}

/// Whether `device` is lavapipe (llvmpipe), whose shaders stop loops after 65,535 iterations;
/// asked once per device.
fn limits_loops(device: &Device) -> bool {
    static SEEN: Mutex<Vec<(Device, bool)>> = Mutex::new(Vec::new());
    let device = device.clone().without_autodiff();
    if device == Device::flex() {
        return false;
    }
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, limited)) = seen.iter().find(|(d, _)| *d == device) {
        return limited;
    }
    let limited = crate::backend::device_name(&device).starts_with("llvmpipe");
    seen.push((device, limited));
    limited
}

/// `conv3d(x, weight)` with stride `stride` and no padding (pad `x` first), in output slabs
/// of at most [`max_voxels`] voxels per sample; `bias` added once.
///
/// # Shapes
///
/// - x: `[batch, in, d, h, w]`, weight: `[out, in, k, k, k]`
/// - output: `[batch, out, (d − k)/s + 1, (h − k)/s + 1, (w − k)/s + 1]`
pub fn conv3d_in_slabs(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Option<Tensor<1>>,
    stride: usize,
) -> Tensor<5> {
    let y = conv_slabs(x, &weight, stride, 2);
    crate::kernels::conv::add_bias(y, bias)
}

/// Splits along spatial `axis` (2, 3 or 4) into output rows whose voxels per sample stay
/// within [`max_voxels`]; a single row still over it is split along the next axis.
fn conv_slabs(x: Tensor<5>, weight: &Tensor<5>, stride: usize, axis: usize) -> Tensor<5> {
    let k = weight.dims()[2];
    let [_, _, d, h, w] = x.dims();
    let out = crate::kernels::conv::output_size([d, h, w], k, stride, [(0, 0); 3]);
    let voxels: usize = out.iter().product();
    let limit = max_voxels(x.dims()[0]);
    if voxels <= limit || axis > 4 {
        let options = ConvOptions::new([stride; 3], [0; 3], [1; 3], 1);
        return conv3d(x, weight.clone(), None, options);
    }
    let rows = out[axis - 2];
    let per_row = voxels / rows;
    let chunk = (limit / per_row).max(1);
    let slabs = (0..rows)
        .step_by(chunk)
        .map(|first| {
            let last = (first + chunk).min(rows); // output rows first..last
            let input = x
                .clone()
                .narrow(axis, first * stride, (last - first - 1) * stride + k);
            conv_slabs(input, weight, stride, axis + 1)
        })
        .collect();
    Tensor::cat(slabs, axis)
}

/// burn's `conv_transpose3d(x, weight)` with stride `stride`, uncropped (output (n − 1)·s + k
/// per axis), as the sum of the outputs of input slabs of at most [`max_voxels`] voxels per
/// sample; `bias` added once.
///
/// # Shapes
///
/// - x: `[batch, in, d, h, w]`, weight: `[in, out, k, k, k]`
/// - output: `[batch, out, (d − 1)·s + k, (h − 1)·s + k, (w − 1)·s + k]`
pub fn conv_transpose3d_in_slabs(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Option<Tensor<1>>,
    stride: usize,
) -> Tensor<5> {
    let y = transpose_slabs(x, &weight, stride, 2);
    crate::kernels::conv::add_bias(y, bias)
}

/// Splits the input along spatial `axis` into rows whose voxels per sample stay within
/// [`max_voxels`]; the output of input rows a..b covers output rows a·s..(b − 1)·s + k, zero-
/// padded to the whole output and summed (neighbouring slabs overlap by k − s rows).
fn transpose_slabs(x: Tensor<5>, weight: &Tensor<5>, stride: usize, axis: usize) -> Tensor<5> {
    let k = weight.dims()[2];
    let voxels: usize = x.dims()[2..].iter().product();
    let limit = max_voxels(x.dims()[0]);
    if voxels <= limit || axis > 4 {
        let options = ConvTransposeOptions::new([stride; 3], [0; 3], [0; 3], [1; 3], 1);
        return conv_transpose3d(x, weight.clone(), None, options);
    }
    let rows = x.dims()[axis];
    let full = (rows - 1) * stride + k;
    let chunk = (limit / (voxels / rows)).max(1);
    (0..rows)
        .step_by(chunk)
        .map(|first| {
            let last = (first + chunk).min(rows);
            let y = transpose_slabs(
                x.clone().narrow(axis, first, last - first),
                weight,
                stride,
                axis + 1,
            );
            let before = first * stride;
            let after = full - before - y.dims()[axis];
            let mut pads = [(0, 0); 3];
            pads[axis - 2] = (before, after);
            y.pad(pads, PadMode::Constant(0.0))
        })
        .reduce(|sum, y| sum + y)
        .expect("a tensor has at least one row")
}
