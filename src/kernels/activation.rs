//! LeakyReLU without a norm before it, as one backend operation for the CPU (flex) backend
//! with a handwritten backward pass: the first block of Vox2Vox's generator and of both
//! discriminators (docs/published-code.md §4.1, §5.1). burn composes it from a comparison, a
//! product and a masked select, each a pass over the activation, and as many again for the
//! gradient (2–3 % of a Vox2Vox `cpu-small` step); here the forward pass and the backward pass
//! are one parallel pass each. The slope is positive, so the output has the sign of the input
//! and the backward pass needs only `x`.

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

use super::flex::{flex_like, values, written_once};

/// `y = x` where `x ≥ 0`, `slope·x` elsewhere.
#[backend_extension(Flex, Autodiff)]
pub trait LeakyRelu: Backend {
    /// See the module documentation.
    fn leaky_relu_op(x: FloatTensor<Self>, slope: f32) -> FloatTensor<Self>;
}

/// [`LeakyRelu`] on tensors: flex devices (with or without autodiff), float32, a positive
/// slope ([`leaky_relu_supported`]).
pub fn leaky_relu(x: Tensor<5>, slope: f32) -> Tensor<5> {
    let y = <burn::backend::Dispatch as LeakyRelu>::leaky_relu_op(x.into_dispatch(), slope);
    Tensor::from_dispatch(y)
}

/// Whether [`leaky_relu`] takes `slope` on a Flex device: a positive one (the output then has
/// the sign of the input).
pub fn leaky_relu_supported(slope: f32) -> bool {
    slope > 0.0
}

/// Values per parallel task.
const CHUNK: usize = 1 << 14;

/// `f(x, other)` for every value of `x` (and of `other`, of the same length), in parallel.
fn map_pairs(x: &[f32], other: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    // SAFETY: every value of the output is written once.
    unsafe {
        written_once(x.len(), |out| {
            out.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK).zip(other.par_chunks(CHUNK)))
                .for_each(|(dst, (x, o))| {
                    for ((d, &x), &o) in dst.iter_mut().zip(x).zip(o) {
                        d.write(f(x, o));
                    }
                })
        })
    }
}

fn forward(x: &FlexTensor, slope: f32) -> FlexTensor {
    let v = values(x);
    let y = map_pairs(&v, &v, |x, _| if x >= 0.0 { x } else { slope * x });
    flex_like(y, x)
}

impl LeakyRelu for Flex {
    fn leaky_relu_op(x: FlexTensor, slope: f32) -> FlexTensor {
        forward(&x, slope)
    }
}

#[derive(Debug)]
struct LeakyReluBackward;

impl Backward<Flex, 1> for LeakyReluBackward {
    /// (input node, slope)
    type State = (NodeId, f32);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let dy: FlexTensor = grads.consume::<Flex>(&ops.node);
        let (x_state, slope) = ops.state;
        if let Some(node) = node_x {
            let x: FlexTensor = checkpointer.retrieve_node_output(x_state);
            let dx = map_pairs(&values(&dy), &values(&x), |g, x| {
                if x >= 0.0 { g } else { slope * g }
            });
            grads.register::<Flex>(node.id, flex_like(dx, &dy));
        }
    }
}

impl<C: CheckpointStrategy> LeakyRelu for Autodiff<Flex, C> {
    fn leaky_relu_op(x: FloatTensor<Self>, slope: f32) -> FloatTensor<Self> {
        match LeakyReluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let y = forward(&x.into_primitive(), slope);
                prep.finish((x_state, slope), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(&x.into_primitive(), slope)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::test_support::{assert_close, to_vec};
    use burn::tensor::{Device, Distribution};

    /// Values and input gradient equal burn's `leaky_relu`, over several parallel chunks and
    /// with exact zeros in the input (burn's mask counts 0 as non-negative too).
    #[test]
    fn equals_burns_leaky_relu_values_and_gradient() {
        let dev = Device::flex().autodiff();
        let shape = [2, 3, 20, 21, 22];
        let base = Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
        let x0 = base.clone().mask_fill(base.lower_elem(-1.5), 0.0);
        assert!(to_vec(x0.clone()).contains(&0.0), "no zero inputs drawn");
        let r = Tensor::<5>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
        let run = |ours: bool| {
            let x = x0.clone().detach().require_grad();
            assert!(leaky_relu_supported(0.2) && super::super::flex_f32(&x));
            let y = if ours {
                leaky_relu(x.clone(), 0.2)
            } else {
                burn::tensor::activation::leaky_relu(x.clone(), 0.2)
            };
            let grads = (y.clone() * r.clone()).sum().backward();
            (to_vec(y), to_vec(x.grad(&grads).unwrap()))
        };
        let ((y, dx), (y_ref, dx_ref)) = (run(true), run(false));
        assert!(y.iter().any(|&v| v < 0.0) && y.iter().any(|&v| v > 0.0));
        assert_close(&y, &y_ref, 0.0, "values");
        assert_close(&dx, &dx_ref, 0.0, "input gradient");
    }
}
