//! The polyphase rearrangement of a volume (its s³ sub-lattices as channels) and its inverse,
//! as backend operations for the CPU (flex) backend.
//!
//! Strided convolutions run as stride-1 convolutions of the input's phases and transposed
//! convolutions produce their output as phases ([`super::conv`]). As an 8-D reshape +
//! permute + pad + slice, flex copies these through its generic strided iterator (about a
//! third of the Vox2Vox's prediction time at `cpu-small`). Here each direction is one
//! parallel loop that also applies the zero padding (or the crop), and each is the other's
//! backward pass: the index map is injective, so the adjoint of the zero-filling gather is
//! the gather the other way.
//!
//! Index map, per axis: phase tensor `[batch, c·s³, q…]` at channel `c·s³ + (βz·s + βy)·s +
//! βx` and index `i` holds the volume `[batch, c, n…]` at `s·i + β − before` (zero when that
//! lies outside `0..n`).
//!
//! Kernels get their own operation ([`kernel_phases`]): every layer rearranges its whole
//! weight on every forward pass, and for transposed convolutions also flips and transposes
//! it, which flex does as a strided copy (with the per-volume loop above, about a third of
//! the `cpu-small` Vox2Vox's prediction time). It is one parallel gather through the taps of
//! a single kernel (the same for every input/output channel pair); its backward is the
//! gather the other way.

use std::mem::MaybeUninit;

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

/// Stride, zero padding before the volume on each axis, and the sizes of both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhaseLayout {
    pub stride: usize,
    pub before: [usize; 3],
    /// Volume sizes `n` (depth, height, width).
    pub volume: [usize; 3],
    /// Phase sizes `q`; `s·q ≥ n + before` so that every voxel has a place.
    pub phases: [usize; 3],
}

/// The rearrangement as backend operations (see the module documentation).
#[backend_extension(Flex, Autodiff)]
pub trait PhaseShuffle: Backend {
    /// `[batch, c, n…]` → `[batch, c·s³, q…]`, zeros where no voxel lands.
    fn to_phases(x: FloatTensor<Self>, layout: PhaseLayout) -> FloatTensor<Self>;
    /// `[batch, c·s³, q…]` → `[batch, c, n…]` (the inverse on the voxels' places).
    fn from_phases(p: FloatTensor<Self>, layout: PhaseLayout) -> FloatTensor<Self>;
    /// A kernel in its polyphase form (see [`KernelLayout`]).
    fn kernel_phases(w: FloatTensor<Self>, layout: KernelLayout) -> FloatTensor<Self>;
}

/// [`PhaseShuffle::to_phases`] on tensors of a flex (CPU) device, float32.
pub fn to_phases(x: Tensor<5>, layout: PhaseLayout) -> Tensor<5> {
    let out = <burn::backend::Dispatch as PhaseShuffle>::to_phases(x.into_dispatch(), layout);
    Tensor::from_dispatch(out)
}

/// [`PhaseShuffle::from_phases`] on tensors of a flex (CPU) device, float32.
pub fn from_phases(p: Tensor<5>, layout: PhaseLayout) -> Tensor<5> {
    let out = <burn::backend::Dispatch as PhaseShuffle>::from_phases(p.into_dispatch(), layout);
    Tensor::from_dispatch(out)
}

/// What a polyphase kernel is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelUse {
    /// A strided convolution run on the input's phases: `[out, in, k³]` →
    /// `[out, in·s³, kk³]`, tap s·α + β of each axis at channel `in·s³ + β` and position α.
    Strided,
    /// A transposed convolution run as one stride-1 convolution producing the output's
    /// phases: burn's `[in, out, k³]` → `[out·s³, in, kk³]` holding tap s·(kk − 1 − α) + β at
    /// channel `out·s³ + β` and position α (the strided form, flipped and transposed).
    Transposed,
}

/// A kernel `[a, b, k, k, k]`, its stride s and use; kk = ⌈k/s⌉, taps past k are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelLayout {
    pub stride: usize,
    pub dims: [usize; 3],
    pub kernel_use: KernelUse,
}

/// Marks a polyphase place past the kernel's edge (a zero).
const NO_TAP: usize = usize::MAX;

impl KernelLayout {
    fn kk(&self) -> usize {
        self.dims[2].div_ceil(self.stride)
    }

    fn input_shape(&self) -> [usize; 5] {
        let [a, b, k] = self.dims;
        [a, b, k, k, k]
    }

    fn output_shape(&self) -> [usize; 5] {
        let ([a, b, _], s3, kk) = (self.dims, self.stride.pow(3), self.kk());
        match self.kernel_use {
            KernelUse::Strided => [a, b * s3, kk, kk, kk],
            KernelUse::Transposed => [b * s3, a, kk, kk, kk],
        }
    }

    /// For each phase β and position α (`β·kk³ + α`), the tap of one `k³` kernel it holds
    /// (the same for every (a, b) pair), or [`NO_TAP`].
    fn taps(&self) -> Vec<usize> {
        let (k, s, kk) = (self.dims[2], self.stride, self.kk());
        let tap_of = |pos: usize, phase: usize| match self.kernel_use {
            KernelUse::Strided => s * pos + phase,
            KernelUse::Transposed => s * (kk - 1 - pos) + phase,
        };
        let mut taps = Vec::with_capacity(s.pow(3) * kk.pow(3));
        for (bz, by, bx) in cube(s) {
            for (az, ay, ax) in cube(kk) {
                let t = [tap_of(az, bz), tap_of(ay, by), tap_of(ax, bx)];
                taps.push(if t.iter().all(|&t| t < k) {
                    (t[0] * k + t[1]) * k + t[2]
                } else {
                    NO_TAP
                });
            }
        }
        taps
    }

    /// The polyphase form of the contiguous kernel `w`.
    fn forward(&self, w: &[f32]) -> Vec<f32> {
        let ([a, b, k], taps) = (self.dims, self.taps());
        let (k3, s3) = (k * k * k, self.stride.pow(3));
        let kk3 = taps.len() / s3;
        let mut out = vec![0.0f32; taps.len() * a * b];
        // One row: the kk³ positions of one phase of one (a, b) kernel.
        let fill = |row: &mut [f32], kernel: usize, phase: usize| {
            let src = &w[kernel * k3..][..k3];
            for (d, &t) in row.iter_mut().zip(&taps[phase * kk3..][..kk3]) {
                if t != NO_TAP {
                    *d = src[t];
                }
            }
        };
        let rows = out
            .par_chunks_mut(kk3)
            .with_min_len(PARALLEL_GRAIN / kk3 + 1);
        match self.kernel_use {
            // rows ordered (a, b, β)
            KernelUse::Strided => rows
                .enumerate()
                .for_each(|(r, row)| fill(row, r / s3, r % s3)),
            // rows ordered (b, β, a)
            KernelUse::Transposed => rows.enumerate().for_each(|(r, row)| {
                let (ib, beta, ia) = (r / (s3 * a), r / a % s3, r % a);
                fill(row, ia * b + ib, beta)
            }),
        }
        out
    }

    /// The gradient of the kernel from the gradient `g` of its polyphase form: each tap takes
    /// the gradient of the one place it went to.
    fn backward(&self, g: &[f32]) -> Vec<f32> {
        let ([a, b, k], taps) = (self.dims, self.taps());
        let (k3, s3) = (k * k * k, self.stride.pow(3));
        let kk3 = taps.len() / s3;
        let mut out = vec![0.0f32; a * b * k3];
        out.par_chunks_mut(k3)
            .with_min_len(PARALLEL_GRAIN / k3 + 1)
            .enumerate()
            .for_each(|(kernel, dst)| {
                let (ia, ib) = (kernel / b, kernel % b);
                for (i, &t) in taps.iter().enumerate() {
                    if t == NO_TAP {
                        continue;
                    }
                    let (phase, pos) = (i / kk3, i % kk3);
                    let row = match self.kernel_use {
                        KernelUse::Strided => kernel * s3 + phase,
                        KernelUse::Transposed => (ib * s3 + phase) * a + ia,
                    };
                    dst[t] = g[row * kk3 + pos];
                }
            });
        out
    }
}

/// (z, y, x) over `0..n` on each axis, x fastest.
fn cube(n: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..n).flat_map(move |z| (0..n).flat_map(move |y| (0..n).map(move |x| (z, y, x))))
}

/// Values per parallel task, at least: below this a thread hand-off costs more than the copy.
const PARALLEL_GRAIN: usize = 1 << 15;

/// [`PhaseShuffle::kernel_phases`] on a flex (CPU) device, float32: `weight` `[a, b, k, k, k]`
/// in the polyphase form for stride `stride` and `kernel_use`.
pub fn kernel_phases(weight: Tensor<5>, stride: usize, kernel_use: KernelUse) -> Tensor<5> {
    let [a, b, k, k1, k2] = weight.dims();
    assert!(
        k == k1 && k == k2,
        "kernel_phases: kernel {k}×{k1}×{k2} is not a cube"
    );
    let layout = KernelLayout {
        stride,
        dims: [a, b, k],
        kernel_use,
    };
    let out =
        <burn::backend::Dispatch as PhaseShuffle>::kernel_phases(weight.into_dispatch(), layout);
    Tensor::from_dispatch(out)
}

impl PhaseShuffle for Flex {
    fn to_phases(x: FlexTensor, layout: PhaseLayout) -> FlexTensor {
        shuffle(&x, layout, Direction::ToPhases)
    }

    fn from_phases(p: FlexTensor, layout: PhaseLayout) -> FlexTensor {
        shuffle(&p, layout, Direction::FromPhases)
    }

    fn kernel_phases(w: FlexTensor, layout: KernelLayout) -> FlexTensor {
        flex_tensor(layout.forward(&values(&w)), layout.output_shape())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    ToPhases,
    FromPhases,
}

/// Backward of either direction: the other direction with the same layout.
#[derive(Debug)]
struct ShuffleBackward(Direction);

impl Backward<Flex, 1> for ShuffleBackward {
    type State = PhaseLayout;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad: FlexTensor = grads.consume::<Flex>(&ops.node);
        if let Some(node) = parent {
            let back = match self.0 {
                Direction::ToPhases => Direction::FromPhases,
                Direction::FromPhases => Direction::ToPhases,
            };
            grads.register::<Flex>(node.id, shuffle(&grad, ops.state, back));
        }
    }
}

/// `compute` on the flex tensor of `x`, recorded for autodiff with `backward` and its `state`
/// when `x` is tracked.
fn tracked<C: CheckpointStrategy, O: Backward<Flex, 1>>(
    x: FloatTensor<Autodiff<Flex, C>>,
    backward: O,
    state: O::State,
    compute: impl FnOnce(FlexTensor) -> FlexTensor,
) -> FloatTensor<Autodiff<Flex, C>> {
    match backward.prepare::<C>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let out = compute(x.into_primitive());
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(compute(x.into_primitive())),
    }
}

impl<C: CheckpointStrategy> PhaseShuffle for Autodiff<Flex, C> {
    fn to_phases(x: FloatTensor<Self>, layout: PhaseLayout) -> FloatTensor<Self> {
        let d = Direction::ToPhases;
        tracked::<C, _>(x, ShuffleBackward(d), layout, |x| shuffle(&x, layout, d))
    }

    fn from_phases(p: FloatTensor<Self>, layout: PhaseLayout) -> FloatTensor<Self> {
        let d = Direction::FromPhases;
        tracked::<C, _>(p, ShuffleBackward(d), layout, |p| shuffle(&p, layout, d))
    }

    fn kernel_phases(w: FloatTensor<Self>, layout: KernelLayout) -> FloatTensor<Self> {
        tracked::<C, _>(w, KernelPhasesBackward, layout, |w| {
            Flex::kernel_phases(w, layout)
        })
    }
}

/// Backward of [`PhaseShuffle::kernel_phases`]: each weight takes the gradient of the one
/// place it went to (the map is injective and every tap has a place).
#[derive(Debug)]
struct KernelPhasesBackward;

impl Backward<Flex, 1> for KernelPhasesBackward {
    type State = KernelLayout;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad: FlexTensor = grads.consume::<Flex>(&ops.node);
        if let Some(node) = parent {
            let layout = ops.state;
            let back = layout.backward(&values(&grad));
            grads.register::<Flex>(node.id, flex_tensor(back, layout.input_shape()));
        }
    }
}

/// Either direction on contiguous values; one (batch, channel) volume per parallel task.
fn shuffle(t: &FlexTensor, layout: PhaseLayout, direction: Direction) -> FlexTensor {
    let shape = t.layout().shape().to_vec();
    let values = values(t);
    let s = layout.stride;
    let s3 = s * s * s;
    let [n0, n1, n2] = layout.volume;
    let [q0, q1, q2] = layout.phases;
    let (vsize, qsize) = (n0 * n1 * n2, q0 * q1 * q2);
    let (batch, channels) = match direction {
        Direction::ToPhases => (shape[0], shape[1]),
        Direction::FromPhases => (shape[0], shape[1] / s3),
    };
    let (src_block, dst_block, out_shape) = match direction {
        Direction::ToPhases => (vsize, s3 * qsize, [batch, channels * s3, q0, q1, q2]),
        Direction::FromPhases => (s3 * qsize, vsize, [batch, channels, n0, n1, n2]),
    };
    let source = match direction {
        Direction::ToPhases => layout.volume,
        Direction::FromPhases => layout.phases,
    };
    assert!(
        shape.len() == 5 && shape[2..] == source && values.len() == batch * channels * src_block,
        "phase shuffle: shape {shape:?} does not fit {layout:?}"
    );
    assert!(
        (0..3).all(|a| s * layout.phases[a] >= layout.volume[a] + layout.before[a]),
        "phase shuffle: {layout:?} leaves voxels without a place"
    );
    // Per axis, phase β and index i → the volume coordinate s·i + β − before, if inside.
    let maps: [Vec<Option<usize>>; 3] = std::array::from_fn(|a| {
        let (n, q) = (layout.volume[a], layout.phases[a]);
        (0..s * q)
            .map(|bi| (s * (bi % q) + bi / q).checked_sub(layout.before[a]))
            .map(|v| v.filter(|&v| v < n))
            .collect()
    });
    // Along x the places of a phase that hold a voxel are one run, l in lo..hi, voxel
    // x0 + s·(l − lo): copied as a strided run rather than place by place.
    let x_runs: Vec<[usize; 3]> = (0..s)
        .map(|bx| {
            let xs = &maps[2][bx * q2..][..q2];
            let lo = xs.iter().position(Option::is_some).unwrap_or(q2);
            let hi = xs.iter().rposition(Option::is_some).map_or(lo, |l| l + 1);
            [lo, hi, xs.get(lo).copied().flatten().unwrap_or(0)]
        })
        .collect();
    // Every destination value is written exactly once (the phases' places outside the volume
    // as zeros), so the buffer needs no zero-fill first.
    let total = batch * channels * dst_block;
    let shuffle = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(dst_block)
            .zip(values.par_chunks(src_block))
            .for_each(|(dst, src)| {
                for (bzi, z) in maps[0].iter().enumerate() {
                    let (bz, i) = (bzi / q0, bzi % q0);
                    for (byj, y) in maps[1].iter().enumerate() {
                        let (by, j) = (byj / q1, byj % q1);
                        let row = z.zip(*y).map(|(z, y)| (z * n1 + y) * n2);
                        for (bx, &[lo, hi, x0]) in x_runs.iter().enumerate() {
                            let phase = ((bz * s + by) * s + bx) * qsize + (i * q1 + j) * q2;
                            match (direction, row) {
                                (Direction::ToPhases, Some(row)) => {
                                    let places = &mut dst[phase..][..q2];
                                    write_zeros(&mut places[..lo]);
                                    let voxels = src[row + x0..].iter().step_by(s);
                                    places[lo..hi].iter_mut().zip(voxels).for_each(|(d, &v)| {
                                        d.write(v);
                                    });
                                    write_zeros(&mut places[hi..]);
                                }
                                (Direction::ToPhases, None) => write_zeros(&mut dst[phase..][..q2]),
                                (Direction::FromPhases, Some(row)) => {
                                    let from = &src[phase + lo..phase + hi];
                                    dst[row + x0..].iter_mut().step_by(s).zip(from).for_each(
                                        |(d, &v)| {
                                            d.write(v);
                                        },
                                    );
                                }
                                (Direction::FromPhases, None) => {}
                            }
                        }
                    }
                }
            })
    };
    // SAFETY: to phases, the loops visit every place of every phase; from phases, every voxel
    // has exactly one place (s·q ≥ n + before on every axis, asserted above).
    let out = unsafe { written_once(total, shuffle) };
    flex_tensor(out, out_shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn layout() -> PhaseLayout {
        PhaseLayout {
            stride: 2,
            before: [1, 0, 2],
            volume: [3, 4, 5],
            phases: [2, 3, 4],
        }
    }

    fn ramp(n: usize, dev: &Device) -> Tensor<5> {
        let v: Vec<f32> = (0..2 * 3 * n).map(|i| i as f32 + 1.0).collect();
        Tensor::from_data(TensorData::new(v, [2, 3, 3, 4, 5]), dev)
    }

    /// Every voxel lands where the index map says, the rest is zero, and the inverse
    /// restores the volume.
    #[test]
    fn to_phases_places_every_voxel_and_from_phases_inverts_it() {
        let dev = Device::flex();
        let l = layout();
        let x = ramp(60, &dev);
        let p = to_phases(x.clone(), l);
        assert_eq!(p.dims(), [2, 24, 2, 3, 4]);
        let pv = p.clone().try_into_vec_as::<f32>().unwrap();
        let xv = x.clone().try_into_vec_as::<f32>().unwrap();
        let (b, c, z, y, xx) = (1, 2, 2, 3, 1); // volume voxel; t = (3, 3, 3)
        let want = xv[(((b * 3 + c) * 3 + z) * 4 + y) * 5 + xx];
        let (bz, by, bx) = (1, 1, 1); // phase of t = 3 with stride 2
        let channel = c * 8 + (bz * 2 + by) * 2 + bx;
        assert_eq!(pv[(((b * 24 + channel) * 2 + 1) * 3 + 1) * 4 + 1], want);
        assert_eq!(pv.iter().filter(|v| **v != 0.0).count(), xv.len());
        let back = from_phases(p, l).try_into_vec_as::<f32>().unwrap();
        assert_eq!(back, xv);
    }

    /// The gradient of each direction is the other one: ⟨to(x), r⟩ differentiated in x gives
    /// from(r), and ⟨from(p), r⟩ in p gives to(r).
    #[test]
    fn each_direction_is_the_others_gradient() {
        let (flex, dev) = (Device::flex(), Device::flex().autodiff());
        let on = |t: Tensor<5>, d: &Device| Tensor::<5>::from_data(t.into_data(), d);
        let l = layout();
        let r = to_phases(ramp(60, &flex), l) * 0.5 + 1.0;
        let x = ramp(60, &dev).require_grad();
        let grads = (to_phases(x.clone(), l) * on(r.clone(), &dev))
            .sum()
            .backward();
        let gx = x.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap();
        let want = from_phases(r.clone(), l).try_into_vec_as::<f32>().unwrap();
        assert_eq!(gx, want);

        let p = on(r, &dev).require_grad();
        let rv = ramp(60, &flex);
        let grads = (from_phases(p.clone(), l) * on(rv.clone(), &dev))
            .sum()
            .backward();
        let gp = p.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap();
        assert_eq!(gp, to_phases(rv, l).try_into_vec_as::<f32>().unwrap());
    }

    /// The kernel op equals the general rearrangement of the kernel as a volume (flipped and
    /// transposed for transposed convolutions), values and gradients, with and without taps
    /// past k.
    #[test]
    fn kernel_phases_equal_the_volume_rearrangement() {
        let (flex, dev) = (Device::flex(), Device::flex().autodiff());
        for (k, s) in [(4usize, 2usize), (3, 2), (2, 2), (3, 3)] {
            let kk = k.div_ceil(s);
            let layout = PhaseLayout {
                stride: s,
                before: [0; 3],
                volume: [k; 3],
                phases: [kk; 3],
            };
            let reference = |w: Tensor<5>, u: KernelUse| {
                let p = to_phases(w, layout);
                match u {
                    KernelUse::Strided => p,
                    KernelUse::Transposed => p.flip([2, 3, 4]).swap_dims(0, 1),
                }
            };
            let n = 2 * 3 * k * k * k;
            let v: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let w =
                |d: &Device| Tensor::<5>::from_data(TensorData::new(v.clone(), [2, 3, k, k, k]), d);
            for u in [KernelUse::Strided, KernelUse::Transposed] {
                let got = kernel_phases(w(&flex), s, u);
                let want = reference(w(&flex), u);
                assert_eq!(got.dims(), want.dims(), "k {k} s {s} {u:?}");
                assert_eq!(
                    got.try_into_vec_as::<f32>().unwrap(),
                    want.try_into_vec_as::<f32>().unwrap(),
                    "k {k} s {s} {u:?}"
                );
                let gradient = |f: &dyn Fn(Tensor<5>) -> Tensor<5>| {
                    let x = w(&dev).require_grad();
                    let y = f(x.clone());
                    let r: Vec<f32> = (0..y.shape().num_elements())
                        .map(|i| (i % 7) as f32 - 2.0)
                        .collect();
                    let r = Tensor::<5>::from_data(TensorData::new(r, y.dims()), &dev);
                    let grads = (y * r).sum().backward();
                    x.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap()
                };
                assert_eq!(
                    gradient(&|x| kernel_phases(x, s, u)),
                    gradient(&|x| reference(x, u)),
                    "gradient, k {k} s {s} {u:?}"
                );
            }
        }
    }
}
