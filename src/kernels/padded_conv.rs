//! A stride-1 3D convolution for the CPU (flex) backend with a handwritten backward pass,
//! registered with burn as a backend extension.
//!
//! burn's autodiff differentiates `conv3d` with the backend's generic gradients; the weight
//! gradient is a convolution whose kernel is the whole output gradient, one huge and poorly
//! parallel reduction, and flex's forward pass builds its im2col columns element by element.
//! Here all three passes are matrix products (gemm crate) on the flattened padded grid
//! (`Grid`), where each kernel offset is a strided view and nothing is copied:
//!
//! - forward: Y = Σ over offsets of `W[:, :, a, b, c] · shift_abc(X)`, chunk by chunk of output
//!   positions (few input channels: the shifted rows stacked into columns, one product);
//! - input gradient: the forward pass applied to dY with the flipped, transposed kernel (the
//!   flip folded into the rearrangement the products need anyway) and padding k − 1 − p (the
//!   transpose of a stride-1 convolution);
//! - weight gradient: `dW[:, :, a, b, c] = Σ over chunks dY · shift_abc(X)ᵀ`, each rayon
//!   thread summing its own chunks.
//!
//! The per-offset products read the kernel offset-major ([`Kernel::offset_major`]); grids with
//! few input channels or fewer positions than output channels stack instead
//! ([`Grid::stacks`]). Chunks shrink until every rayon thread has work, also for a single
//! window (prediction). Each chunk's products go to a per-thread scratch and its output voxels
//! straight on to the output ([`Grid::scatter_chunk`]), so the output exists once, not also as
//! a zero-filled grid copied off in a second pass; the padded copies of the inputs are written
//! once each, zeros included ([`copy_rows`]).
//!
//! At inference (no autodiff) [`padded_conv3d_bias_relu`] adds the bias and applies ReLU while
//! the output is copied out of the scratch, so a convolution–bias–ReLU writes its activation
//! once.

use std::mem::MaybeUninit;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::flex::{flex_tensor, values, write_zeros, written_once};

/// The convolution as a backend operation: `x` `[batch, in, d, h, w]`, `weight`
/// `[out, in, k, k, k]`, stride 1, zero padding `pad` on every side, no bias.
#[backend_extension(Flex, Autodiff)]
pub trait PaddedConv3d: Backend {
    /// See the module documentation.
    fn padded_conv3d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        pad: usize,
    ) -> FloatTensor<Self>;
}

/// [`PaddedConv3d`] on tensors: flex devices only (with or without autodiff), `pad < k`,
/// float32 — [`supports`] says whether a call qualifies.
pub fn padded_conv3d(x: Tensor<5>, weight: Tensor<5>, pad: usize) -> Tensor<5> {
    let out = <burn::backend::Dispatch as PaddedConv3d>::padded_conv3d(
        x.into_dispatch(),
        weight.into_dispatch(),
        pad,
    );
    Tensor::from_dispatch(out)
}

/// The inference form of the convolution: bias added and, with `relu`, ReLU applied while the
/// output leaves the kernel's scratch (one pass over the activation instead of three). No
/// backward pass: only for tensors without autodiff ([`padded_conv3d_bias_relu`]).
#[backend_extension(Flex)]
pub trait PaddedConv3dBiasRelu: Backend {
    /// See the trait documentation.
    fn padded_conv3d_bias_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        pad: usize,
        relu: bool,
    ) -> FloatTensor<Self>;
}

/// [`PaddedConv3dBiasRelu`] on tensors: as [`padded_conv3d`] plus `bias` `[out]` and an
/// optional ReLU; `x` must not be on an autodiff device.
pub fn padded_conv3d_bias_relu(
    x: Tensor<5>,
    weight: Tensor<5>,
    bias: Tensor<1>,
    pad: usize,
    relu: bool,
) -> Tensor<5> {
    assert!(
        !x.device().is_autodiff(),
        "padded_conv3d_bias_relu has no backward pass"
    );
    let out = <burn::backend::Dispatch as PaddedConv3dBiasRelu>::padded_conv3d_bias_relu(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        pad,
        relu,
    );
    Tensor::from_dispatch(out)
}

impl PaddedConv3dBiasRelu for Flex {
    fn padded_conv3d_bias_relu(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        pad: usize,
        relu: bool,
    ) -> FlexTensor {
        let bias = values(&bias);
        let w = values(&weight);
        let kernel = Kernel::new(&w, weight.layout().shape(), false);
        convolve(&x, kernel, pad, Some(Epilogue { bias: &bias, relu }))
    }
}

/// Whether [`padded_conv3d`] can run this convolution: a flex (CPU) device, float32 and a
/// padding smaller than the kernel (so the input gradient is a convolution with padding ≥ 0).
pub fn supports(x: &Tensor<5>, kernel: usize, pad: usize) -> bool {
    pad < kernel && super::flex_f32(x)
}

impl PaddedConv3d for Flex {
    fn padded_conv3d(x: FlexTensor, weight: FlexTensor, pad: usize) -> FlexTensor {
        let w = values(&weight);
        convolve(
            &x,
            Kernel::new(&w, weight.layout().shape(), false),
            pad,
            None,
        )
    }
}

#[derive(Debug)]
struct PaddedConv3dBackward;

impl Backward<Flex, 2> for PaddedConv3dBackward {
    /// (input node, weight node, padding)
    type State = (NodeId, NodeId, usize);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let dy: FlexTensor = grads.consume::<Flex>(&ops.node);
        let (x_state, weight_state, pad) = ops.state;
        let x: FlexTensor = checkpointer.retrieve_node_output(x_state);
        let weight: FlexTensor = checkpointer.retrieve_node_output(weight_state);
        let k = weight.layout().shape()[2];
        if let Some(node) = node_x {
            let w = values(&weight);
            let flipped = Kernel::new(&w, weight.layout().shape(), true);
            grads.register::<Flex>(node.id, convolve(&dy, flipped, k - 1 - pad, None));
        }
        if let Some(node) = node_weight {
            grads.register::<Flex>(node.id, weight_gradient(&x, &dy, k, pad));
        }
    }
}

impl<C: CheckpointStrategy> PaddedConv3d for Autodiff<Flex, C> {
    fn padded_conv3d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        pad: usize,
    ) -> FloatTensor<Self> {
        match PaddedConv3dBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                let y = Flex::padded_conv3d(x.into_primitive(), weight.into_primitive(), pad);
                prep.finish((x_state, weight_state, pad), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::padded_conv3d(
                x.into_primitive(),
                weight.into_primitive(),
                pad,
            )),
        }
    }
}

/// The kernel a convolution multiplies by: a weight `[out, in, k, k, k]` as stored, or
/// (`flipped`) seen as `[in, out, k, k, k]` with every kernel reversed along all three axes —
/// the kernel of the input-gradient convolution. The flip costs no pass of its own: it is
/// applied while the product form rearranges the weight ([`Kernel::offset_major`],
/// [`Kernel::stacked`]).
#[derive(Clone, Copy)]
struct Kernel<'a> {
    weight: &'a [f32],
    /// Output and input channels of the convolution it serves (swapped when flipped).
    out: usize,
    inp: usize,
    k: usize,
    flipped: bool,
}

impl<'a> Kernel<'a> {
    fn new(weight: &'a [f32], shape: &[usize], flipped: bool) -> Self {
        let (out, inp) = if flipped {
            (shape[1], shape[0])
        } else {
            (shape[0], shape[1])
        };
        Self {
            weight,
            out,
            inp,
            k: shape[2],
            flipped,
        }
    }

    fn k3(&self) -> usize {
        self.k * self.k * self.k
    }

    /// The kernel as k³ contiguous `[out, in]` matrices, one per offset (`[k³, out, in]`).
    /// Read in place, each offset's matrix sits at stride k³: every product would gather it
    /// again, for every chunk, and a decoder kernel of the paper U-Net (256·768·27 values,
    /// 21 MB) does not stay in cache between offsets. One pass here, reading rows of k³ in
    /// order and writing k³ streams.
    fn offset_major(&self) -> Vec<f32> {
        let k3 = self.k3();
        let pairs = self.out * self.inp;
        // source row j = (a, b) of the stored weight [a, b, k³]
        let (rows_a, rows_b) = if self.flipped {
            (self.inp, self.out)
        } else {
            (self.out, self.inp)
        };
        let rearrange = |out: &mut [MaybeUninit<f32>]| {
            let dst = SharedOut(out.as_mut_ptr().cast());
            self.weight
                .par_chunks(k3 * 256)
                .enumerate()
                .for_each(|(block, rows)| {
                    for (i, row) in rows.chunks(k3).enumerate() {
                        let j = block * 256 + i;
                        let (a, b) = (j / rows_b, j % rows_b);
                        for (s, &v) in row.iter().enumerate() {
                            let (o, pair) = if self.flipped {
                                (k3 - 1 - s, b * rows_a + a)
                            } else {
                                (s, j)
                            };
                            // SAFETY: (o, pair) runs over [k³, out·in] once, each from one
                            // task.
                            unsafe { dst.at(o * pairs + pair).write(v) };
                        }
                    }
                });
        };
        // SAFETY: every one of the weight's values is written once.
        unsafe { written_once(self.weight.len(), rearrange) }
    }

    /// The kernel as one contiguous `[out, in·k³]` matrix (the weight itself unless flipped).
    fn stacked(&self) -> std::borrow::Cow<'a, [f32]> {
        if !self.flipped {
            return std::borrow::Cow::Borrowed(self.weight);
        }
        let k3 = self.k3();
        let mut out = vec![0.0; self.weight.len()];
        for (r, dst) in out.chunks_mut(self.inp * k3).enumerate() {
            for (c, dst) in dst.chunks_mut(k3).enumerate() {
                let src = &self.weight[(c * self.out + r) * k3..][..k3];
                dst.iter_mut()
                    .zip(src.iter().rev())
                    .for_each(|(d, s)| *d = *s);
            }
        }
        std::borrow::Cow::Owned(out)
    }
}

/// Geometry of a stride-1 convolution on the padded grid: input `[batch, in, d, h, w]` padded
/// by `pad` to Dp×Hp×Wp, kernel k³, output D'×H'×W' with voxel (z, y, x) at flat grid position
/// q = (z·Hp + y)·Wp + x. Kernel offset (a, b, c) pairs output position q with input position
/// q + (a·Hp + b)·Wp + c, so for every offset the whole convolution is one matrix product on
/// strided views of the flat grids; positions with x ≥ W' or y ≥ H' are computed and dropped.
struct Grid {
    batch: usize,
    input: [usize; 3],
    output: [usize; 3],
    pad: usize,
    k: usize,
    /// Padded height and width.
    hp: usize,
    wp: usize,
    /// Flat size of one channel of the padded input.
    grid: usize,
    /// Flat positions that hold an output voxel: the last one + 1.
    len: usize,
}

impl Grid {
    fn new(x: &FlexTensor, k: usize, pad: usize) -> Self {
        let s = x.layout().shape();
        let [d, h, w] = [s[2], s[3], s[4]];
        let (dp, hp, wp) = (d + 2 * pad, h + 2 * pad, w + 2 * pad);
        assert!(
            dp >= k && hp >= k && wp >= k,
            "conv3d: kernel {k} larger than the padded input {dp}×{hp}×{wp}"
        );
        let output = [dp - k + 1, hp - k + 1, wp - k + 1];
        Self {
            batch: s[0],
            input: [d, h, w],
            output,
            pad,
            k,
            hp,
            wp,
            grid: dp * hp * wp,
            len: (output[0] - 1) * hp * wp + (output[1] - 1) * wp + output[2],
        }
    }

    /// Flat offset of every kernel position, in weight order (a, b, c).
    fn offsets(&self) -> Vec<usize> {
        let k = self.k;
        (0..k * k * k)
            .map(|o| ((o / (k * k)) * self.hp + (o / k) % k) * self.wp + o % k)
            .collect()
    }

    /// Input values `[batch·in, d, h, w]` → zero-padded grid `[batch·in, grid]`.
    fn pad_input(&self, x: &[f32]) -> Vec<f32> {
        let [d, h, w] = self.input;
        let p = self.pad;
        copy_rows(
            x,
            [d * h * w, self.grid],
            [d, h, w],
            |z, y| (z * h + y) * w,
            |z, y| ((z + p) * self.hp + y + p) * self.wp + p,
        )
    }

    /// The output gradient `dy` `[batch, out, d', h', w']` of sample `b` at the grid positions
    /// `q0 .. q0 + m`, zeros where a position holds no output voxel, as `[m, out]`
    /// (`positions_major`) or `[out, m]`: the weight gradient's dY operand, copied once per
    /// chunk and shared by its k³ products ([`WeightGradientLayout`] says which layout).
    fn output_chunk(
        &self,
        dy: &[f32],
        [b, q0, m, cout]: [usize; 4],
        positions_major: bool,
    ) -> Vec<f32> {
        let plane = self.output.iter().product::<usize>();
        let mut t = vec![0.0; m * cout];
        for [dense, at, len] in self.output_runs(q0, m) {
            for co in 0..cout {
                let run = &dy[(b * cout + co) * plane + dense..][..len];
                if positions_major {
                    for (i, &v) in run.iter().enumerate() {
                        t[(at + i) * cout + co] = v;
                    }
                } else {
                    t[co * m + at..][..len].copy_from_slice(run);
                }
            }
        }
        t
    }

    /// The runs along x of output voxels among the grid positions `q0 .. q0 + m`, as
    /// [index of the first voxel in one dense output channel `[d', h', w']`, its position in
    /// the chunk, length].
    fn output_runs(&self, q0: usize, m: usize) -> impl Iterator<Item = [usize; 3]> + '_ {
        let [_, oh, ow] = self.output;
        let q1 = q0 + m;
        (q0 / self.wp..q1.div_ceil(self.wp)).filter_map(move |r| {
            let (z, y) = (r / self.hp, r % self.hp);
            let row_start = r * self.wp;
            let lo = q0.saturating_sub(row_start);
            let hi = ow.min(q1 - row_start);
            (y < oh && lo < hi).then(|| [(z * oh + y) * ow + lo, row_start + lo - q0, hi - lo])
        })
    }

    /// Hands the output voxels of a chunk of grid positions `q0 .. q0 + m` of batch `b` to
    /// `write(row, start, values)`: `scratch` holds the chunk's `[out, m]` values, `row` is
    /// the output slab (batch·out + channel) and `start` the flat index in the dense output
    /// `[batch, out, d', h', w']` of the first of `values` (a run along x).
    fn scatter_chunk(
        &self,
        scratch: &[f32],
        [b, q0, cout]: [usize; 3],
        mut write: impl FnMut(usize, usize, &[f32]),
    ) {
        let m = scratch.len() / cout;
        let plane = self.output.iter().product::<usize>();
        for [dense, at, len] in self.output_runs(q0, m) {
            for co in 0..cout {
                let slab = b * cout + co;
                write(slab, slab * plane + dense, &scratch[co * m + at..][..len]);
            }
        }
    }

    /// Whether a convolution `in` → `out` on this grid multiplies stacked columns
    /// ([`Grid::columns`], one product per chunk) rather than one product per kernel offset.
    /// Few input channels make each offset's product too thin (inner size `in`); few output
    /// positions per sample (a bottleneck at 2³: `len ≤ out`, so the columns are no larger
    /// than the kernel) make the k³ products re-read the whole kernel at stride k³ for a
    /// handful of columns — 1.4–2.0 ms instead of 0.3 ms for Vox2Vox's 128→64 k4 at 2³.
    fn stacks(&self, cin: usize, cout: usize) -> bool {
        cin < STACK_BELOW_CHANNELS || self.few_positions(cout)
    }

    /// Fewer grid positions per sample than `out` channels: stacked columns are no larger
    /// than the kernel. The weight gradient stacks only then (with few input channels its
    /// per-offset products have a long inner size and need no copies).
    fn few_positions(&self, cout: usize) -> bool {
        self.len <= cout
    }

    /// The k³ shifted views of `m` positions of the `cin` channel grids starting at `x`,
    /// stacked as columns `[(in, offset), m]` (row copies).
    fn columns(&self, x: &[f32], cin: usize, offsets: &[usize], m: usize) -> Vec<f32> {
        let mut columns = Vec::with_capacity(cin * offsets.len() * m);
        for ci in 0..cin {
            for &off in offsets {
                columns.extend_from_slice(&x[ci * self.grid + off..][..m]);
            }
        }
        columns
    }

    /// Chunks of flat positions for `rows` output rows: about 512 KiB of output per chunk
    /// (kept in cache across the k³ products), at least 256 positions.
    fn chunk(&self, rows: usize) -> usize {
        self.split(((128 << 10) / rows.max(1)).clamp(256, 8192))
    }

    /// Chunks of flat positions for stacked columns `[depth, chunk]`: about 1 MiB of
    /// columns, at least 256 positions.
    fn columns_chunk(&self, depth: usize) -> usize {
        self.split(((256 << 10) / depth.max(1)).clamp(256, 8192))
    }

    /// `preferred` positions per chunk, made smaller when the batch × chunks tasks would
    /// leave a rayon thread idle: with one window (prediction) a 16³ layer is a single
    /// chunk of the preferred size and ran on one core. Chunks stay multiples of 16
    /// positions (one AVX-512 register) and at least [`MIN_CHUNK`].
    fn split(&self, preferred: usize) -> usize {
        let tasks = 2 * rayon::current_num_threads();
        let chunks = self.len.div_ceil(preferred).max(tasks.div_ceil(self.batch));
        self.len
            .div_ceil(chunks)
            .next_multiple_of(16)
            .clamp(MIN_CHUNK, preferred.max(MIN_CHUNK))
    }
}

/// The fewest output positions one task of the convolution works on: below this the
/// products are too thin to pay for a task.
const MIN_CHUNK: usize = 64;

/// Copies the `[d, h]` rows of `w` values of every slab (`sizes` = source and destination slab
/// lengths) from row offset `from(z, y)` to `to(z, y)`, zeros elsewhere; slabs in parallel.
/// Each destination slab is written once, in order (zeros up to a row, the row, …), with no
/// zero-fill pass over the whole buffer first; `to` must increase along the rows.
fn copy_rows(
    src: &[f32],
    sizes: [usize; 2],
    [d, h, w]: [usize; 3],
    from: impl Fn(usize, usize) -> usize + Sync,
    to: impl Fn(usize, usize) -> usize + Sync,
) -> Vec<f32> {
    let [src_slab, dst_slab] = sizes;
    let total = src.len() / src_slab * dst_slab;
    // SAFETY: every slab is written from its first element to its last (rows ascending).
    unsafe {
        written_once(total, |out| {
            out.par_chunks_mut(dst_slab)
                .zip(src.par_chunks(src_slab))
                .for_each(|(dst, src)| {
                    let mut written = 0;
                    for z in 0..d {
                        for y in 0..h {
                            let start = to(z, y);
                            write_zeros(&mut dst[written..start]);
                            dst[start..][..w].write_copy_of_slice(&src[from(z, y)..][..w]);
                            written = start + w;
                        }
                    }
                    write_zeros(&mut dst[written..]);
                })
        })
    }
}

/// A float32 matrix in memory: first element, row stride and column stride (in elements).
#[derive(Clone, Copy)]
struct Strided {
    ptr: *const f32,
    row: usize,
    col: usize,
}

impl Strided {
    fn new(ptr: *const f32, row: usize, col: usize) -> Self {
        Self { ptr, row, col }
    }
}

/// dst `[m, n]` (+)= lhs `[m, k]` · rhs `[k, n]` with gemm's kernels on this thread (the
/// callers parallelise over chunks); `accumulate` adds to dst instead of overwriting it.
///
/// # Safety
/// Every element the strides address must lie inside its buffer; dst must not alias the
/// operands, nor be written by another thread at the same positions.
unsafe fn matmul(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    [dst_row, dst_col]: [usize; 2],
    accumulate: bool,
    lhs: Strided,
    rhs: Strided,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_col as isize,
            dst_row as isize,
            accumulate,
            lhs.ptr,
            lhs.col as isize,
            lhs.row as isize,
            rhs.ptr,
            rhs.col as isize,
            rhs.row as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Below this many input channels, [`convolve`] stacks the shifted views into columns
/// ([`Grid::stacks`]).
const STACK_BELOW_CHANNELS: usize = 8;

/// A raw pointer the tasks of one parallel loop write through, each to its own positions.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint positions (see the users), and the buffer outlives the loop.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer `i` elements on (a method, so closures capture the whole `Send` wrapper).
    ///
    /// # Safety
    /// `i` must lie inside the buffer.
    unsafe fn at(self, i: usize) -> *mut f32 {
        unsafe { self.0.add(i) }
    }
}

/// What [`convolve`] applies to each output value on its way out: `+ bias[channel]`, then
/// ReLU when `relu`.
#[derive(Clone, Copy)]
struct Epilogue<'a> {
    bias: &'a [f32],
    relu: bool,
}

impl Epilogue<'_> {
    /// Applies the epilogue to values of output channel `channel`.
    fn apply(self, values: &mut [f32], channel: usize) {
        let b = self.bias[channel];
        if self.relu {
            values.iter_mut().for_each(|v| *v = (*v + b).max(0.0));
        } else {
            values.iter_mut().for_each(|v| *v += b);
        }
    }
}

/// y = conv(x, kernel), stride 1, padding `pad`: for every chunk of output positions, the
/// k³ products `W[:, :, a, b, c] · shift_abc(X)` accumulated in a per-thread scratch
/// `[out, chunk]`, whose output voxels are then copied to `y` (with the optional
/// [`Epilogue`]) while they are in cache. The forward pass, and with a flipped [`Kernel`] the
/// input gradient.
fn convolve(x: &FlexTensor, kernel: Kernel, pad: usize, epilogue: Option<Epilogue>) -> FlexTensor {
    let (cout, cin, k) = (kernel.out, kernel.inp, kernel.k);
    let g = Grid::new(x, k, pad);
    let xp = g.pad_input(&values(x));
    let k3 = kernel.k3();
    let offsets = g.offsets();
    let stacked = g.stacks(cin, cout);
    let chunk = if stacked {
        g.columns_chunk(cin * k3)
    } else {
        g.chunk(cout)
    };
    let chunks = g.len.div_ceil(chunk);
    let w = if stacked {
        kernel.stacked()
    } else {
        kernel.offset_major().into()
    };
    let [od, oh, ow] = g.output;
    let total = g.batch * cout * od * oh * ow;
    let products = |y: &mut [MaybeUninit<f32>]| {
        let out = SharedOut(y.as_mut_ptr().cast());
        (0..g.batch * chunks)
            .into_par_iter()
            .for_each_init(Vec::<f32>::new, |scratch, task| {
                let (b, q0) = (task / chunks, (task % chunks) * chunk);
                let m = chunk.min(g.len - q0);
                let x_b = &xp[b * cin * g.grid + q0..];
                scratch.clear();
                scratch.reserve(cout * m);
                let dst = scratch.as_mut_ptr();
                // SAFETY (both branches): the products write all of scratch[..out·m] (the first
                // without reading it: gemm does not read dst unless asked to accumulate); they
                // read weight entries [co, ci, o] and input positions off + q0 .. off + q0 + m ≤
                // grid of each channel of batch b.
                if stacked {
                    let columns = g.columns(x_b, cin, &offsets, m);
                    unsafe {
                        matmul(
                            [cout, m, cin * k3],
                            dst,
                            [m, 1],
                            false,
                            Strided::new(w.as_ptr(), cin * k3, 1),
                            Strided::new(columns.as_ptr(), m, 1),
                        );
                    }
                } else {
                    for (o, &off) in offsets.iter().enumerate() {
                        unsafe {
                            matmul(
                                [cout, m, cin],
                                dst,
                                [m, 1],
                                o > 0,
                                Strided::new(w.as_ptr().add(o * cout * cin), cin, 1),
                                Strided::new(x_b.as_ptr().add(off), g.grid, 1),
                            );
                        }
                    }
                }
                unsafe { scratch.set_len(cout * m) };
                g.scatter_chunk(scratch, [b, q0, cout], |row, start, values| {
                    // SAFETY: output voxels of batch b at grid positions q0 .. q0 + m: this task's
                    // alone, inside y's capacity.
                    let dst =
                        unsafe { std::slice::from_raw_parts_mut(out.at(start), values.len()) };
                    dst.copy_from_slice(values);
                    if let Some(e) = epilogue {
                        e.apply(dst, row % cout);
                    }
                });
            });
    };
    // SAFETY: the chunks cover every grid position that holds an output voxel, for every
    // batch, and each writes all output channels of its voxels.
    let y = unsafe { written_once(total, products) };
    flex_tensor(y, [g.batch, cout, od, oh, ow])
}

/// dW `[out, in, k, k, k]` of a stride-1 convolution with padding `pad`, from the input `x`
/// `[batch, in, d, h, w]` and the output gradient `dy` `[batch, out, d', h', w']`: for every
/// chunk of output positions and kernel offset, `dW[:, :, a, b, c] += dY · shift_abc(X)ᵀ`
/// (or one product `dY · columnsᵀ` straight into the weight layout on a grid with
/// [`Grid::few_positions`]), the chunks spread over rayon's threads in fixed groups, each with
/// its own accumulator ([`sum_in_fixed_groups`]: the same rounding on every run).
///
/// Both operands run along the positions, and gemm's kernels want one of them contiguous
/// along its channels, so one must be transposed. dY is, once per chunk
/// ([`Grid::output_chunk`]), and where its channels fill gemm's vector lanes
/// ([`WeightGradientLayout`]) the products keep them there; otherwise gemm transposes the
/// shifted input itself in each of the k³ products (about 11 % of a `paper` U-Net training
/// step).
fn weight_gradient(x: &FlexTensor, dy: &FlexTensor, k: usize, pad: usize) -> FlexTensor {
    let g = Grid::new(x, k, pad);
    let cin = x.layout().shape()[1];
    let cout = dy.layout().shape()[1];
    let xp = g.pad_input(&values(x));
    let dy = values(dy);
    let k3 = k * k * k;
    let offsets = g.offsets();
    let stacked = g.few_positions(cout);
    let chunk = if stacked {
        g.columns_chunk(cin * k3)
    } else {
        g.chunk(cout + cin)
    };
    let chunks = g.len.div_ceil(chunk);
    let size = k3 * cout * cin;
    let layout = WeightGradientLayout::new(cout, cin);
    // Writes (or with `add`, adds) the products of one task — a chunk of positions of one
    // sample — into the accumulator at `acc` (stacked: `[out, in, k³]`, otherwise `[k³, in,
    // out]` or `[k³, out, in]`, see `layout`); gemm does not read dst unless asked to
    // accumulate.
    let products = |acc: *mut f32, task: usize, add: bool| {
        let (b, q0) = (task / chunks, (task % chunks) * chunk);
        let m = chunk.min(g.len - q0);
        let dy_chunk = g.output_chunk(&dy, [b, q0, m, cout], layout.positions_major());
        let dy_m = layout.output_operand(&dy_chunk, cout);
        let x_b = &xp[b * cin * g.grid + q0..];
        // SAFETY (both branches): acc is a group's own accumulator of `size` values, all
        // written by the products (m ≥ 1); dy_m views the `out·m` values of dy_chunk; rows
        // ci < in of X at stride grid, positions off + q0 + m ≤ grid (or the columns,
        // `[in·k³, m]`).
        if stacked {
            let columns = g.columns(x_b, cin, &offsets, m);
            unsafe {
                matmul(
                    [cout, cin * k3, m],
                    acc,
                    [cin * k3, 1],
                    add,
                    dy_m,
                    Strided::new(columns.as_ptr(), 1, m),
                );
            }
        } else {
            for (o, &off) in offsets.iter().enumerate() {
                unsafe {
                    matmul(
                        [cout, cin, m],
                        acc.add(o * cout * cin),
                        layout.strides(cout, cin),
                        add,
                        dy_m,
                        Strided::new(x_b.as_ptr().add(off), 1, g.grid),
                    );
                }
            }
        }
    };
    // SAFETY: every task's products write all `size` values of the accumulator.
    let acc = unsafe { sum_in_fixed_groups(g.batch * chunks, size, products) };
    let dw = if stacked {
        acc
    } else {
        // [k³, block] → [out, in, k³], written in order (the k³ rows read stay in cache)
        let pairs = cout * cin;
        // SAFETY: the k³ values of every (out, in) pair are written.
        unsafe {
            written_once(size, |dw| {
                dw.par_chunks_mut(k3).enumerate().for_each(|(j, dst)| {
                    let block = layout.index(j / cin, j % cin, cout, cin);
                    for (o, v) in dst.iter_mut().enumerate() {
                        v.write(acc[o * pairs + block]);
                    }
                })
            })
        }
    };
    flex_tensor(dw, [cout, cin, k, k, k])
}

/// How a weight-gradient product lays out its operands, for gemm's kernels: they put the
/// rows of the destination in the vector lanes (16 floats), want the left operand contiguous
/// along those rows, and otherwise pack (copy) it, once per product — k³ times per chunk.
#[derive(Clone, Copy, PartialEq)]
enum WeightGradientLayout {
    /// dY positions-major (`[m, out]`), the `[out, in]` block with output channels
    /// contiguous: gemm reads dY as it is. Where the output channels fill whole registers
    /// and the block is not tiny.
    OutInLanes,
    /// dY channel-major (`[out, m]`), the block with input channels contiguous: gemm
    /// transposes the shifted input itself, in each product (about 11 % of a `paper` U-Net
    /// training step), but takes its dot-product kernels for blocks of ≤ 256 values (both
    /// operands contiguous along the positions) and never copies dY value by value into
    /// zero-padded panels (with 2 or 4 output channels in the lanes a CycleGAN `cpu-small`
    /// step takes 2.4× as long).
    InInLanes,
}

impl WeightGradientLayout {
    fn new(cout: usize, cin: usize) -> Self {
        if cout.is_multiple_of(16) && cout * cin > 256 {
            Self::OutInLanes
        } else {
            Self::InInLanes
        }
    }

    fn positions_major(self) -> bool {
        self == Self::OutInLanes
    }

    /// dY `[out, m]` as a matrix view of its chunk copy ([`Grid::output_chunk`]).
    fn output_operand(self, chunk: &[f32], cout: usize) -> Strided {
        match self {
            Self::OutInLanes => Strided::new(chunk.as_ptr(), 1, cout),
            Self::InInLanes => Strided::new(chunk.as_ptr(), chunk.len() / cout, 1),
        }
    }

    /// Row and column strides of the `[out, in]` block.
    fn strides(self, cout: usize, cin: usize) -> [usize; 2] {
        match self {
            Self::OutInLanes => [1, cout],
            Self::InInLanes => [cin, 1],
        }
    }

    /// Position of (out, in) in the block.
    fn index(self, co: usize, ci: usize, cout: usize, cin: usize) -> usize {
        let [row, col] = self.strides(cout, cin);
        co * row + ci * col
    }
}

/// Σ over `tasks` of what `products` writes into a `size`-long accumulator, the same sum on
/// every run: the tasks are cut into one contiguous group per rayon thread; the first task of
/// a group writes into the group's fresh accumulator ([`written_once`]: no zero-fill), the
/// others add to it in task order; then the groups are added in group order. (A rayon `fold`
/// would balance better, but where it splits depends on work stealing, and so would the
/// rounding of the sum: two trainings with the same seed drifted apart after a few hundred
/// steps.)
///
/// # Safety
/// `products(dst, task, add)` must write (or, with `add`, add to) all `size` values at `dst`.
unsafe fn sum_in_fixed_groups(
    tasks: usize,
    size: usize,
    products: impl Fn(*mut f32, usize, bool) + Sync,
) -> Vec<f32> {
    if tasks == 0 {
        return vec![0.0; size];
    }
    let groups = rayon::current_num_threads().clamp(1, tasks);
    let mut sums: Vec<Vec<f32>> = (0..groups)
        .into_par_iter()
        .map(|j| {
            let (first, end) = (j * tasks / groups, (j + 1) * tasks / groups);
            // SAFETY: the first task writes all `size` values (the caller's promise).
            let mut acc = unsafe {
                written_once(size, |dst| products(dst.as_mut_ptr().cast(), first, false))
            };
            for task in first + 1..end {
                products(acc.as_mut_ptr(), task, true);
            }
            acc
        })
        .collect();
    let (total, rest) = sums.split_first_mut().expect("at least one group");
    const SPAN: usize = 1 << 14;
    total.par_chunks_mut(SPAN).enumerate().for_each(|(i, dst)| {
        let at = i * SPAN;
        for acc in rest.iter() {
            dst.iter_mut().zip(&acc[at..]).for_each(|(d, v)| *d += v);
        }
    });
    std::mem::take(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(shape: [usize; 5]) -> Grid {
        let x = flex_tensor(vec![0.0; shape.iter().product()], shape);
        Grid::new(&x, 3, 1)
    }

    /// One window of a 16³ layer must not be a single chunk (one task, one busy core during
    /// prediction): every thread of the pool gets chunks (two each), while a batch with
    /// enough tasks keeps the cache-sized chunk and tiny grids keep [`MIN_CHUNK`].
    #[test]
    fn chunks_split_until_every_thread_has_work() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            let window = grid([1, 8, 16, 16, 16]);
            for rows in [8, 64] {
                let chunk = window.chunk(rows);
                assert!(
                    window.len.div_ceil(chunk) >= 4,
                    "{rows} rows: chunk {chunk}"
                );
                assert_eq!(chunk % 16, 0);
            }
            let batch = grid([8, 8, 16, 16, 16]);
            assert_eq!(batch.len.div_ceil(batch.chunk(8)), 1);
            let tiny = grid([1, 8, 2, 2, 2]);
            assert_eq!(tiny.chunk(8), MIN_CHUNK);
        });
    }

    /// The groups' sums are added in one fixed order, whatever the scheduling: the tasks'
    /// values make the rounding depend on the order, and 40 runs on 4 threads all give the sum
    /// of the defined order.
    #[test]
    fn fixed_groups_sum_in_the_same_order_every_run() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        // Task t adds 1e8 · (−1)^t + t: the exact total needs more digits than f32 has.
        let value = |t: usize| if t.is_multiple_of(2) { 1e8 } else { -1e8 } + t as f32;
        let tasks = 37;
        let products = |dst: *mut f32, t: usize, add: bool| {
            for i in 0..3 {
                // SAFETY: the accumulator holds 3 values.
                unsafe {
                    *dst.add(i) = if add {
                        *dst.add(i) + value(t)
                    } else {
                        value(t)
                    }
                };
            }
        };
        let expected = {
            let groups = 4;
            let group_sum = |j: usize| {
                let mut tasks_j = j * tasks / groups..(j + 1) * tasks / groups;
                let first = value(tasks_j.next().unwrap());
                tasks_j.fold(first, |a, t| a + value(t))
            };
            (1..groups).fold(group_sum(0), |a, j| a + group_sum(j))
        };
        for _ in 0..40 {
            let sum = pool.install(|| unsafe { sum_in_fixed_groups(tasks, 3, products) });
            assert_eq!(sum, vec![expected; 3]);
        }
        assert_eq!(
            pool.install(|| unsafe { sum_in_fixed_groups(0, 3, products) }),
            vec![0.0; 3]
        );
    }
}
