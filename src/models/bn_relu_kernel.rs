//! Batch norm with batch statistics followed by ReLU, as one backend operation for the CPU
//! (flex) backend with a handwritten backward pass (issue "Training and prediction speed on
//! CPU"). Every convolution of the U-Net's training pass is followed by these two layers
//! (original-code-behaviour.md §3.1).
//!
//! burn differentiates `batch_norm_train` as one operation, but flex runs its default body:
//! the statistics through a channel-first copy of the whole activation, the normalisation as
//! four broadcast passes, ReLU and its mask as more; about twenty passes over every activation
//! per training step. Here the forward pass reads the activation twice (mean, then the
//! centred variance, accumulated in f64 per block) and writes `max(0, a·x + b)` once, with
//! `a = γ/√(var + ε)` and `b = β − a·mean` per channel. The backward pass recomputes the ReLU
//! mask from `x` (nothing but the input is kept), sums `g` and `g·x̂` per channel in one pass
//! (`g` the output gradient where the output is positive, `x̂` the normalised input) and writes
//! the input gradient in a second:
//!
//! `dx = a·(g − Σg/M − x̂·Σ(g·x̂)/M)`, `dγ = Σ(g·x̂)`, `dβ = Σg` (M voxels per channel).

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::{DType, Shape, Tensor, TensorData};
use rayon::prelude::*;

use super::conv_kernel::values;

/// The operation: `x` `[batch, channels, …]`, `gamma` and `beta` `[channels]`; returns the
/// output (shape of `x`) and the batch statistics `[2, channels]` (mean, biased variance),
/// which carry no gradient.
#[backend_extension(Flex, Autodiff)]
pub trait BatchNormRelu: Backend {
    /// See the module documentation.
    fn batch_norm_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// [`BatchNormRelu`] on tensors: `relu(batch_norm(x))` with the batch's own statistics, and
/// those statistics (mean, biased variance). Flex devices and float32 only ([`supports`]).
pub fn batch_norm_relu_train(
    x: Tensor<5>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> (Tensor<5>, Tensor<1>, Tensor<1>) {
    let channels = gamma.dims()[0];
    let (y, stats) = <burn::backend::Dispatch as BatchNormRelu>::batch_norm_relu_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    );
    let stats: Tensor<2> = Tensor::from_dispatch(stats);
    let mean = stats.clone().narrow(0, 0, 1).reshape([channels]);
    let variance = stats.narrow(0, 1, 1).reshape([channels]);
    (Tensor::from_dispatch(y), mean, variance)
}

/// Whether [`batch_norm_relu_train`] can run on `x`: a flex (CPU) device and float32, unless
/// `SEGLAB_BN=burn` asks for burn's batch norm (for benchmarks).
pub fn supports(x: &Tensor<5>) -> bool {
    static BURN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let forced_burn = *BURN.get_or_init(|| std::env::var("SEGLAB_BN").is_ok_and(|v| v == "burn"));
    !forced_burn
        && x.dtype() == DType::F32
        && x.device().without_autodiff() == burn::tensor::Device::flex()
}

/// Per-channel constants of one call: the statistics and the affine map they give.
#[derive(Clone, Debug)]
struct Affine {
    mean: Vec<f32>,
    var: Vec<f32>,
    inv_std: Vec<f32>,
    /// `a = γ·inv_std` and `b = β − a·mean`: the output is `max(0, a·x + b)`.
    a: Vec<f32>,
    b: Vec<f32>,
}

/// `[batch, channels, rest]` of a tensor: the layout of its slabs.
fn slabs(x: &FlexTensor) -> [usize; 3] {
    let s = x.layout().shape();
    let rest = (2..s.num_dims()).map(|i| s[i]).product();
    [s[0], s[1], rest]
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

/// Sums `per_slab` over the batch: slab `i` belongs to channel `i % channels`.
fn per_channel(per_slab: &[f64], channels: usize) -> Vec<f64> {
    let mut out = vec![0.0; channels];
    for (i, v) in per_slab.iter().enumerate() {
        out[i % channels] += v;
    }
    out
}

/// Mean and biased variance per channel (two passes: the variance of the centred values).
fn moments(x: &[f32], [batch, channels, rest]: [usize; 3]) -> (Vec<f64>, Vec<f64>) {
    let count = (batch * rest) as f64;
    let sums: Vec<f64> = x
        .par_chunks(rest)
        .map(|s| block_sum(s.len(), |i| s[i]))
        .collect();
    let mean: Vec<f64> = per_channel(&sums, channels)
        .into_iter()
        .map(|v| v / count)
        .collect();
    let squares: Vec<f64> = x
        .par_chunks(rest)
        .enumerate()
        .map(|(slab, s)| {
            let m = mean[slab % channels] as f32;
            block_sum(s.len(), |i| (s[i] - m) * (s[i] - m))
        })
        .collect();
    let var = per_channel(&squares, channels)
        .into_iter()
        .map(|v| v / count)
        .collect();
    (mean, var)
}

/// The forward pass: output and per-channel constants.
fn forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    epsilon: f64,
) -> (FlexTensor, Affine) {
    let dims = slabs(x);
    let [_, channels, rest] = dims;
    let xs = values(x);
    let (mean, var) = moments(&xs, dims);
    let (gamma, beta) = (values(gamma), values(beta));
    let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + epsilon).sqrt()).collect();
    let a: Vec<f64> = (0..channels)
        .map(|c| gamma[c] as f64 * inv_std[c])
        .collect();
    let affine = Affine {
        b: (0..channels)
            .map(|c| (beta[c] as f64 - a[c] * mean[c]) as f32)
            .collect(),
        a: a.iter().map(|&v| v as f32).collect(),
        mean: mean.iter().map(|&v| v as f32).collect(),
        var: var.iter().map(|&v| v as f32).collect(),
        inv_std: inv_std.iter().map(|&v| v as f32).collect(),
    };
    let mut y = vec![0.0f32; xs.len()];
    y.par_chunks_mut(rest)
        .zip(xs.par_chunks(rest))
        .enumerate()
        .for_each(|(slab, (out, input))| {
            let (a, b) = (affine.a[slab % channels], affine.b[slab % channels]);
            for (o, &v) in out.iter_mut().zip(input) {
                *o = (a * v + b).max(0.0);
            }
        });
    let shape = x.layout().shape().clone();
    (FlexTensor::from_data(TensorData::new(y, shape)), affine)
}

/// The statistics as a `[2, channels]` tensor (mean, variance).
fn stats_tensor(affine: &Affine) -> FlexTensor {
    let values: Vec<f32> = affine.mean.iter().chain(&affine.var).copied().collect();
    FlexTensor::from_data(TensorData::new(values, Shape::new([2, affine.mean.len()])))
}

/// The backward pass: gradients of `x`, γ and β.
fn backward(x: &FlexTensor, dy: &FlexTensor, affine: &Affine) -> [FlexTensor; 3] {
    let dims = slabs(x);
    let [batch, channels, rest] = dims;
    let (xs, dys) = (values(x), values(dy));
    let gate = |c: usize, v: f32, g: f32| {
        if affine.a[c] * v + affine.b[c] > 0.0 {
            g
        } else {
            0.0
        }
    };
    let sums: Vec<(f64, f64)> = xs
        .par_chunks(rest)
        .zip(dys.par_chunks(rest))
        .enumerate()
        .map(|(slab, (x, dy))| {
            let c = slab % channels;
            let (m, s) = (affine.mean[c], affine.inv_std[c]);
            let g = block_sum(rest, |i| gate(c, x[i], dy[i]));
            let gx = block_sum(rest, |i| gate(c, x[i], dy[i]) * (x[i] - m) * s);
            (g, gx)
        })
        .collect();
    let sum_g = per_channel(&sums.iter().map(|p| p.0).collect::<Vec<_>>(), channels);
    let sum_gx = per_channel(&sums.iter().map(|p| p.1).collect::<Vec<_>>(), channels);
    let count = (batch * rest) as f64;
    let mut dx = vec![0.0f32; xs.len()];
    dx.par_chunks_mut(rest)
        .zip(xs.par_chunks(rest).zip(dys.par_chunks(rest)))
        .enumerate()
        .for_each(|(slab, (out, (x, dy)))| {
            let c = slab % channels;
            let (m, s, a) = (affine.mean[c], affine.inv_std[c], affine.a[c]);
            let mean_g = (sum_g[c] / count) as f32;
            let mean_gx = (sum_gx[c] / count) as f32;
            for i in 0..rest {
                let g = gate(c, x[i], dy[i]);
                out[i] = a * (g - mean_g - (x[i] - m) * s * mean_gx);
            }
        });
    let per_channel_tensor = |v: Vec<f64>| {
        FlexTensor::from_data(TensorData::new(
            v.into_iter().map(|s| s as f32).collect::<Vec<_>>(),
            Shape::new([channels]),
        ))
    };
    let shape = x.layout().shape().clone();
    [
        FlexTensor::from_data(TensorData::new(dx, shape)),
        per_channel_tensor(sum_gx),
        per_channel_tensor(sum_g),
    ]
}

impl BatchNormRelu for Flex {
    fn batch_norm_relu_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor) {
        let (y, affine) = forward(&x, &gamma, &beta, epsilon);
        (y, stats_tensor(&affine))
    }
}

#[derive(Debug)]
struct BatchNormReluBackward;

impl Backward<Flex, 3> for BatchNormReluBackward {
    /// (input node, the call's per-channel constants)
    type State = (NodeId, Affine);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy: FlexTensor = grads.consume::<Flex>(&ops.node);
        let (x_state, affine) = ops.state;
        let x: FlexTensor = checkpointer.retrieve_node_output(x_state);
        let [dx, dgamma, dbeta] = backward(&x, &dy, &affine);
        for (node, grad) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

impl<C: CheckpointStrategy> BatchNormRelu for Autodiff<Flex, C> {
    fn batch_norm_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        match BatchNormReluBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let (y, affine) = forward(
                    &x.into_primitive(),
                    &gamma.into_primitive(),
                    &beta.into_primitive(),
                    epsilon,
                );
                let stats = stats_tensor(&affine);
                (
                    prep.finish((x_state, affine), y),
                    FloatTensor::<Self>::new(stats),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (y, stats) = Flex::batch_norm_relu_train(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                (prep.finish(y), FloatTensor::<Self>::new(stats))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blocks::{batch_norm_relu_train as fused_layer, keras_batch_norm};
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

    fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
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

    /// The input gradient against central finite differences of L = Σ y·r.
    #[test]
    fn input_gradient_matches_finite_differences() {
        let dims = [2, 2, 3, 3, 3];
        let plain = Device::flex();
        let x = to_vec(tensor(dims, 5, 1.0, &plain));
        let (gamma, beta) = (tensor([2], 6, 1.0, &plain), tensor([2], 7, 0.0, &plain));
        let r = tensor(dims, 8, 0.0, &plain);
        let loss = |v: &[f64]| -> f64 {
            let x = Tensor::<5>::from_data(
                TensorData::new(
                    v.iter().map(|&a| a as f32).collect::<Vec<_>>(),
                    dims.to_vec(),
                ),
                &plain,
            );
            let (y, _, _) = batch_norm_relu_train(x, gamma.clone(), beta.clone(), 1e-3);
            to_vec(y * r.clone()).iter().map(|&a| a as f64).sum()
        };
        let dev = plain.clone().autodiff();
        let xa =
            Tensor::<5>::from_data(TensorData::new(x.clone(), dims.to_vec()), &dev).require_grad();
        let (y, _, _) = batch_norm_relu_train(
            xa.clone(),
            Tensor::from_data(gamma.to_data(), &dev),
            Tensor::from_data(beta.to_data(), &dev),
            1e-3,
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
                "dx[{i}]: finite differences {numeric}, backward {}",
                analytic[i]
            );
        }
    }
}
