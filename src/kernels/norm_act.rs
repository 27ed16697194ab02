//! A normalisation (batch norm or instance norm) and the activation after it (ReLU,
//! LeakyReLU or none) as one backend operation for the CPU (flex) backend, with a handwritten
//! backward pass. Every convolution of the three models is followed by such a pair: batch
//! norm and ReLU in the U-Net (docs/published-code.md §3.1), instance norm and LeakyReLU in
//! Vox2Vox (§4.1), instance norm and ReLU, or instance norm before tanh, in the CycleGAN
//! (§5.1).
//!
//! burn composes them from generic operations, and flex runs each as its own pass over the
//! activation: batch norm's default `batch_norm_train` body (a channel-first copy per
//! statistic, four broadcast passes), the instance norm's mean, variance, clamp, root,
//! subtraction, division and affine map, then the activation and, in training, its mask;
//! about twenty passes per activation and training step. Here the forward pass reads the
//! activation twice (mean, then the centred variance, accumulated in f64 per block) and writes
//! `act(a·x + b)` once, with `a = γ·r` and `b = β − a·mean` per slab (sample and channel) and
//! `r` the inverse scale of the slab's group. The backward pass recomputes the activation's
//! slope from `x` (nothing but the input is kept), sums `g` and `g·x̂` per slab in one pass
//! (`g` the output gradient times that slope, `x̂ = (x − mean)·r`) and writes the input
//! gradient in a second:
//!
//! `dx = a·(g − mean_G(g) − x̂·mean_G(g·x̂)·k)`, `dγ = Σ(g·x̂)`, `dβ = Σg`,
//!
//! with `G` the voxels that share the statistics ([`NormGroups`]) and `k` from the way the
//! variance becomes the scale ([`NormScale`]): `k = 1` for `r = 1/√(var + ε)` (batch norm),
//! `k = (σ + ε)/σ` for `r = 1/(σ + ε)`, `σ = √var` (keras-contrib's instance norm), and
//! `k = 0` where `var` is below the floor (σ is then a constant).

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::{Shape, Tensor, TensorData};
use rayon::prelude::*;

use super::flex::{flex_like, values};

/// Which voxels share one mean and variance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormGroups {
    /// Batch norm: one group per channel, over the batch and the voxels; γ, β per channel.
    Channel,
    /// Instance norm: one group per sample and channel; γ, β per channel.
    SampleChannel,
    /// keras-contrib's instance norm with `axis=None` (Vox2Vox as coded, §4.1): one group per
    /// sample over all its channels; one scalar γ and β.
    Sample,
}

/// How a group's variance becomes the scale `r` that multiplies `x − mean`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormScale {
    /// `r = 1/√(var + ε)`: batch norm (Keras and burn).
    RootOfVariancePlusEpsilon,
    /// `r = 1/(√max(var, floor) + ε)`: keras-contrib's instance norm, ε on the standard
    /// deviation; the floor keeps the gradient finite for a constant group.
    StdPlusEpsilon { floor: f64 },
}

/// One call's normalisation and activation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormAct {
    pub groups: NormGroups,
    pub scale: NormScale,
    pub epsilon: f64,
    /// The activation's slope below zero: 0 is ReLU, 1 is no activation.
    pub slope: f32,
}

/// The operation: `x` `[batch, channels, …]`, `gamma` and `beta` `[channels]` (`[1]` for
/// [`NormGroups::Sample`]); returns the output (shape of `x`) and the statistics of every
/// group `[2, groups]` (mean, biased variance), which carry no gradient.
#[backend_extension(Flex, Autodiff)]
pub trait NormActivation: Backend {
    /// See the module documentation.
    fn norm_act(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        spec: NormAct,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// [`NormActivation`] on tensors: the output, and each group's mean and biased variance (the
/// batch statistics of a batch norm). Flex devices and float32 only (`x` on
/// [`super::ComputePath::Kernels`]).
pub fn norm_act(
    x: Tensor<5>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    spec: NormAct,
) -> (Tensor<5>, Tensor<1>, Tensor<1>) {
    let (y, stats) = <burn::backend::Dispatch as NormActivation>::norm_act(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        spec,
    );
    let stats: Tensor<2> = Tensor::from_dispatch(stats);
    let groups = stats.dims()[1];
    let mean = stats.clone().narrow(0, 0, 1).reshape([groups]);
    let variance = stats.narrow(0, 1, 1).reshape([groups]);
    (Tensor::from_dispatch(y), mean, variance)
}

/// `[batch, channels, rest]` of a tensor and how its slabs (one per sample and channel, `rest`
/// voxels each) form groups.
#[derive(Clone, Copy, Debug)]
struct Layout {
    batch: usize,
    channels: usize,
    rest: usize,
    groups: NormGroups,
}

impl Layout {
    fn of(x: &FlexTensor, groups: NormGroups) -> Self {
        let s = x.layout().shape();
        let rest = (2..s.num_dims()).map(|i| s[i]).product();
        Self {
            batch: s[0],
            channels: s[1],
            rest,
            groups,
        }
    }

    fn group_count(&self) -> usize {
        match self.groups {
            NormGroups::Channel => self.channels,
            NormGroups::SampleChannel => self.batch * self.channels,
            NormGroups::Sample => self.batch,
        }
    }

    /// The group of slab `slab` (sample `slab / channels`, channel `slab % channels`).
    fn group(&self, slab: usize) -> usize {
        match self.groups {
            NormGroups::Channel => slab % self.channels,
            NormGroups::SampleChannel => slab,
            NormGroups::Sample => slab / self.channels,
        }
    }

    /// The index of slab `slab`'s γ and β.
    fn affine(&self, slab: usize) -> usize {
        match self.groups {
            NormGroups::Sample => 0,
            _ => slab % self.channels,
        }
    }

    fn affine_count(&self) -> usize {
        match self.groups {
            NormGroups::Sample => 1,
            _ => self.channels,
        }
    }

    /// Voxels per group.
    fn group_size(&self) -> f64 {
        (self.batch * self.channels * self.rest / self.group_count()) as f64
    }

    /// Sums per-slab values into their groups.
    fn per_group(&self, per_slab: impl Iterator<Item = f64>) -> Vec<f64> {
        let mut out = vec![0.0; self.group_count()];
        for (slab, v) in per_slab.enumerate() {
            out[self.group(slab)] += v;
        }
        out
    }

    /// Slabs per parallel task: small slabs are handed out together.
    fn min_slabs_per_task(&self) -> usize {
        (BLOCK / self.rest.max(1)).max(1)
    }
}

/// The constants of one call: per group the statistics, the inverse scale `r` and the
/// backward pass's `k`; per slab the affine map `a·x + b`.
#[derive(Clone, Debug)]
struct Constants {
    layout: Layout,
    slope: f32,
    mean: Vec<f32>,
    var: Vec<f32>,
    r: Vec<f32>,
    k: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Constants {
    /// The activation's derivative at the output of slab `slab`'s affine map for input `v`.
    #[inline]
    fn slope_at(&self, slab: usize, v: f32) -> f32 {
        if self.a[slab] * v + self.b[slab] > 0.0 {
            1.0
        } else {
            self.slope
        }
    }
}

/// Elements per block of the f32 partial sums (then added in f64).
const BLOCK: usize = 4096;

/// Σ f(i) over `0..n` with eight f32 lanes per block of [`BLOCK`] and f64 between blocks:
/// vectorisable, and accurate to f32 rounding of a block's sum.
fn block_sum(n: usize, f: impl Fn(usize) -> f32) -> f64 {
    let mut total = 0.0f64;
    let mut start = 0;
    while start < n {
        let end = (start + BLOCK).min(n);
        let mut lanes = [0.0f32; 8];
        let mut i = start;
        while i + 8 <= end {
            for (l, lane) in lanes.iter_mut().enumerate() {
                *lane += f(i + l);
            }
            i += 8;
        }
        for j in i..end {
            lanes[0] += f(j);
        }
        total += lanes.iter().map(|&v| v as f64).sum::<f64>();
        start = end;
    }
    total
}

/// Mean and biased variance per group (two passes: the variance of the centred values).
fn moments(x: &[f32], layout: Layout) -> (Vec<f64>, Vec<f64>) {
    let (rest, count) = (layout.rest, layout.group_size());
    let task = layout.min_slabs_per_task();
    let sums: Vec<f64> = x
        .par_chunks(rest)
        .with_min_len(task)
        .map(|s| block_sum(s.len(), |i| s[i]))
        .collect();
    let mean: Vec<f64> = layout
        .per_group(sums.into_iter())
        .into_iter()
        .map(|v| v / count)
        .collect();
    let squares: Vec<f64> = x
        .par_chunks(rest)
        .with_min_len(task)
        .enumerate()
        .map(|(slab, s)| {
            let m = mean[layout.group(slab)] as f32;
            block_sum(s.len(), |i| (s[i] - m) * (s[i] - m))
        })
        .collect();
    let var = layout
        .per_group(squares.into_iter())
        .into_iter()
        .map(|v| v / count)
        .collect();
    (mean, var)
}

/// `r` and `k` of a group with variance `var` (module documentation).
fn scale_of(var: f64, spec: &NormAct) -> (f64, f64) {
    match spec.scale {
        NormScale::RootOfVariancePlusEpsilon => (1.0 / (var + spec.epsilon).sqrt(), 1.0),
        NormScale::StdPlusEpsilon { floor } => {
            let sigma = var.max(floor).sqrt();
            let k = if var > floor {
                (sigma + spec.epsilon) / sigma
            } else {
                0.0
            };
            (1.0 / (sigma + spec.epsilon), k)
        }
    }
}

/// The forward pass: output and the call's constants.
fn forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    spec: NormAct,
) -> (FlexTensor, Constants) {
    let layout = Layout::of(x, spec.groups);
    let slabs = layout.batch * layout.channels;
    let xs = values(x);
    let (mean, var) = moments(&xs, layout);
    let (gamma, beta) = (values(gamma), values(beta));
    assert_eq!(
        (gamma.len(), beta.len()),
        (layout.affine_count(), layout.affine_count()),
        "norm_act: γ and β need one value per {:?} affine index",
        spec.groups
    );
    let (r, k): (Vec<f64>, Vec<f64>) = var.iter().map(|&v| scale_of(v, &spec)).unzip();
    let a: Vec<f64> = (0..slabs)
        .map(|s| gamma[layout.affine(s)] as f64 * r[layout.group(s)])
        .collect();
    let b: Vec<f32> = (0..slabs)
        .map(|s| (beta[layout.affine(s)] as f64 - a[s] * mean[layout.group(s)]) as f32)
        .collect();
    let constants = Constants {
        layout,
        slope: spec.slope,
        mean: mean.iter().map(|&v| v as f32).collect(),
        var: var.iter().map(|&v| v as f32).collect(),
        r: r.iter().map(|&v| v as f32).collect(),
        k: k.iter().map(|&v| v as f32).collect(),
        a: a.iter().map(|&v| v as f32).collect(),
        b,
    };
    let rest = layout.rest;
    let mut y = vec![0.0f32; xs.len()];
    y.par_chunks_mut(rest)
        .zip(xs.par_chunks(rest))
        .with_min_len(layout.min_slabs_per_task())
        .enumerate()
        .for_each(|(slab, (out, input))| {
            let (a, b, slope) = (constants.a[slab], constants.b[slab], spec.slope);
            for (o, &v) in out.iter_mut().zip(input) {
                let z = a * v + b;
                *o = z.max(0.0) + slope * z.min(0.0);
            }
        });
    (flex_like(y, x), constants)
}

/// The statistics as a `[2, groups]` tensor (mean, variance).
fn stats_tensor(constants: &Constants) -> FlexTensor {
    let values: Vec<f32> = constants
        .mean
        .iter()
        .chain(&constants.var)
        .copied()
        .collect();
    FlexTensor::from_data(TensorData::new(
        values,
        Shape::new([2, constants.mean.len()]),
    ))
}

/// The backward pass: gradients of `x`, γ and β.
fn backward(x: &FlexTensor, dy: &FlexTensor, c: &Constants) -> [FlexTensor; 3] {
    let layout = c.layout;
    let rest = layout.rest;
    let task = layout.min_slabs_per_task();
    let (xs, dys) = (values(x), values(dy));
    let sums: Vec<(f64, f64)> = xs
        .par_chunks(rest)
        .zip(dys.par_chunks(rest))
        .with_min_len(task)
        .enumerate()
        .map(|(slab, (x, dy))| {
            let group = layout.group(slab);
            let (m, r) = (c.mean[group], c.r[group]);
            let g = block_sum(rest, |i| c.slope_at(slab, x[i]) * dy[i]);
            let gx = block_sum(rest, |i| c.slope_at(slab, x[i]) * dy[i] * (x[i] - m) * r);
            (g, gx)
        })
        .collect();
    let count = layout.group_size();
    let mean_g = layout.per_group(sums.iter().map(|p| p.0));
    let mean_gx = layout.per_group(sums.iter().map(|p| p.1));
    let mut dx = vec![0.0f32; xs.len()];
    dx.par_chunks_mut(rest)
        .zip(xs.par_chunks(rest).zip(dys.par_chunks(rest)))
        .with_min_len(task)
        .enumerate()
        .for_each(|(slab, (out, (x, dy)))| {
            let group = layout.group(slab);
            let (m, r, a) = (c.mean[group], c.r[group], c.a[slab]);
            let mean_g = (mean_g[group] / count) as f32;
            let mean_gx = (mean_gx[group] / count) as f32 * c.k[group];
            for i in 0..rest {
                let g = c.slope_at(slab, x[i]) * dy[i];
                out[i] = a * (g - mean_g - (x[i] - m) * r * mean_gx);
            }
        });
    let mut dgamma = vec![0.0f64; layout.affine_count()];
    let mut dbeta = vec![0.0f64; layout.affine_count()];
    for (slab, (g, gx)) in sums.iter().enumerate() {
        dgamma[layout.affine(slab)] += gx;
        dbeta[layout.affine(slab)] += g;
    }
    let affine_tensor = |v: Vec<f64>| {
        let n = v.len();
        FlexTensor::from_data(TensorData::new(
            v.into_iter().map(|s| s as f32).collect::<Vec<_>>(),
            Shape::new([n]),
        ))
    };
    [
        flex_like(dx, x),
        affine_tensor(dgamma),
        affine_tensor(dbeta),
    ]
}

impl NormActivation for Flex {
    fn norm_act(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        spec: NormAct,
    ) -> (FlexTensor, FlexTensor) {
        let (y, constants) = forward(&x, &gamma, &beta, spec);
        (y, stats_tensor(&constants))
    }
}

#[derive(Debug)]
struct NormActBackward;

impl Backward<Flex, 3> for NormActBackward {
    /// (input node, the call's constants)
    type State = (NodeId, Constants);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy: FlexTensor = grads.consume::<Flex>(&ops.node);
        let (x_state, constants) = ops.state;
        let x: FlexTensor = checkpointer.retrieve_node_output(x_state);
        let [dx, dgamma, dbeta] = backward(&x, &dy, &constants);
        for (node, grad) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

impl<C: CheckpointStrategy> NormActivation for Autodiff<Flex, C> {
    fn norm_act(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        spec: NormAct,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        match NormActBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let (y, constants) = forward(
                    &x.into_primitive(),
                    &gamma.into_primitive(),
                    &beta.into_primitive(),
                    spec,
                );
                let stats = stats_tensor(&constants);
                (
                    prep.finish((x_state, constants), y),
                    FloatTensor::<Self>::new(stats),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (y, stats) = Flex::norm_act(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    spec,
                );
                (prep.finish(y), FloatTensor::<Self>::new(stats))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::{
        InstanceNorm3d, activate, batch_norm_relu_train as fused_layer, keras_batch_norm,
    };
    use crate::models::test_support::{assert_close, to_vec};
    use burn::tensor::Device;
    use burn::tensor::activation::relu;
    use rand::rngs::ChaCha8Rng;
    use rand::{RngExt, SeedableRng};

    /// Values N(shift, 1)-ish from a seed (uniform sum), shape `dims`.
    fn tensor<const D: usize>(dims: [usize; D], seed: u64, shift: f32, dev: &Device) -> Tensor<D> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = dims.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| shift + rng.random::<f32>() + rng.random::<f32>() - 1.0)
            .collect();
        Tensor::from_data(TensorData::new(v, dims.to_vec()), dev)
    }

    /// Output, running statistics and gradients (of L = Σ y·r) of the fused layer and of
    /// burn's batch norm followed by ReLU, from identical layers and inputs.
    #[test]
    fn fused_layer_equals_burns_batch_norm_and_relu() {
        let dev = Device::flex().autodiff();
        // Channel means away from zero (the variance pass must centre them), an odd voxel
        // count (the lanes' remainder), and a γ, β that put part of every channel below 0.
        for (case, dims) in [[2, 3, 5, 4, 3], [3, 2, 8, 8, 9]].into_iter().enumerate() {
            let seed = 10 * case as u64;
            let x = tensor(dims, seed, 3.0, &dev);
            let r = tensor(dims, seed + 1, 0.0, &dev);
            let run = |fused: bool| {
                let mut bn = keras_batch_norm(dims[1], 0.1, 1e-3, &dev);
                bn.gamma = bn
                    .gamma
                    .map(|_| tensor([dims[1]], seed + 2, 1.0, &dev).require_grad());
                bn.beta = bn
                    .beta
                    .map(|_| tensor([dims[1]], seed + 3, 0.0, &dev).require_grad());
                let x = x.clone().require_grad();
                let y = if fused {
                    fused_layer(&bn, x.clone())
                } else {
                    relu(bn.forward(x.clone()))
                };
                let grads = (y.clone() * r.clone()).sum().backward();
                let grad = |t: Tensor<1>| to_vec(t.grad(&grads).unwrap());
                [
                    to_vec(y),
                    to_vec(bn.running_mean.value()),
                    to_vec(bn.running_var.value()),
                    to_vec(x.grad(&grads).unwrap()),
                    grad(bn.gamma.val()),
                    grad(bn.beta.val()),
                ]
            };
            let (ours, theirs) = (run(true), run(false));
            let names = ["output", "running mean", "running var", "dx", "dγ", "dβ"];
            for ((name, a), b) in names.iter().zip(&ours).zip(&theirs) {
                assert_close(a, b, 2e-4, &format!("case {case} {name}"));
            }
            assert!(ours[0].contains(&0.0) && ours[0].iter().any(|&v| v > 0.0));
        }
    }

    /// Output and gradients (of L = Σ y·r) of the fused instance norms and activations and of
    /// burn's composition, per channel and scalar (Vox2Vox as coded), for ReLU, LeakyReLU and
    /// no activation.
    #[test]
    fn fused_instance_norm_equals_burns_composition() {
        let dev = Device::flex().autodiff();
        for (case, (dims, per_channel, slope)) in [
            ([2, 3, 5, 4, 3], true, 0.0),
            ([2, 3, 5, 4, 3], false, 0.3),
            ([3, 2, 4, 4, 4], true, 1.0),
            ([1, 4, 2, 2, 2], false, 0.0),
        ]
        .into_iter()
        .enumerate()
        {
            let seed = 100 + 10 * case as u64;
            let x = tensor(dims, seed, 3.0, &dev);
            let r = tensor(dims, seed + 1, 0.0, &dev);
            let affine = if per_channel { dims[1] } else { 1 };
            let run = |fused: bool| {
                let mut norm = InstanceNorm3d::new(dims[1], per_channel, 1e-3, &dev);
                norm.gamma = norm
                    .gamma
                    .map(|_| tensor([affine], seed + 2, 1.0, &dev).require_grad());
                norm.beta = norm
                    .beta
                    .map(|_| tensor([affine], seed + 3, 0.0, &dev).require_grad());
                let x = x.clone().require_grad();
                let y = if fused {
                    norm.forward_activated(x.clone(), slope)
                } else {
                    activate(norm.forward_composed(x.clone()), slope)
                };
                let grads = (y.clone() * r.clone()).sum().backward();
                let grad = |t: Tensor<1>| to_vec(t.grad(&grads).unwrap());
                [
                    to_vec(y),
                    to_vec(x.grad(&grads).unwrap()),
                    grad(norm.gamma.val()),
                    grad(norm.beta.val()),
                ]
            };
            let (ours, theirs) = (run(true), run(false));
            for ((name, a), b) in ["output", "dx", "dγ", "dβ"].iter().zip(&ours).zip(&theirs) {
                assert_close(a, b, 2e-4, &format!("case {case} {name}"));
            }
            // Part of every case lies below zero, where the activations differ.
            let below = |v: &f32| if slope == 0.0 { *v == 0.0 } else { *v < 0.0 };
            assert!(ours[0].iter().any(below), "case {case}: nothing below zero");
        }
    }

    /// The input gradient against central finite differences of L = Σ y·r, for batch norm and
    /// both instance norms.
    #[test]
    fn input_gradient_matches_finite_differences() {
        let ks = NormScale::StdPlusEpsilon { floor: 1e-12 };
        let bn = NormScale::RootOfVariancePlusEpsilon;
        for (groups, scale, slope, affine) in [
            (NormGroups::Channel, bn, 0.0, 2),
            (NormGroups::SampleChannel, ks, 0.3, 2),
            (NormGroups::Sample, ks, 0.0, 1),
        ] {
            let spec = NormAct {
                groups,
                scale,
                epsilon: 1e-3,
                slope,
            };
            check_finite_differences(spec, affine);
        }
    }

    fn check_finite_differences(spec: NormAct, affine: usize) {
        let dims = [2, 2, 3, 3, 3];
        let plain = Device::flex();
        let x = to_vec(tensor(dims, 5, 1.0, &plain));
        let (gamma, beta) = (
            tensor([affine], 6, 1.0, &plain),
            tensor([affine], 7, 0.0, &plain),
        );
        let r = tensor(dims, 8, 0.0, &plain);
        let loss = |v: &[f64]| -> f64 {
            let x = Tensor::<5>::from_data(
                TensorData::new(
                    v.iter().map(|&a| a as f32).collect::<Vec<_>>(),
                    dims.to_vec(),
                ),
                &plain,
            );
            let (y, _, _) = norm_act(x, gamma.clone(), beta.clone(), spec);
            to_vec(y * r.clone()).iter().map(|&a| a as f64).sum()
        };
        let dev = plain.clone().autodiff();
        let xa =
            Tensor::<5>::from_data(TensorData::new(x.clone(), dims.to_vec()), &dev).require_grad();
        let (y, _, _) = norm_act(
            xa.clone(),
            Tensor::from_data(gamma.to_data(), &dev),
            Tensor::from_data(beta.to_data(), &dev),
            spec,
        );
        let grads = (y * Tensor::from_data(r.to_data(), &dev)).sum().backward();
        let analytic = to_vec(xa.grad(&grads).unwrap());
        let base: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let h = 1e-2;
        for i in (0..base.len()).step_by(7) {
            let (mut up, mut down) = (base.clone(), base.clone());
            up[i] += h;
            down[i] -= h;
            let numeric = (loss(&up) - loss(&down)) / (2.0 * h);
            assert!(
                (numeric - analytic[i] as f64).abs() < 2e-2 * (1.0 + numeric.abs()),
                "{spec:?} dx[{i}]: finite differences {numeric}, backward {}",
                analytic[i]
            );
        }
    }
}
