//! Adam as one pass over each parameter on the CPU.
//!
//! burn's `Adam` updates a parameter with about a dozen element-wise tensor operations (the two
//! moments, their bias corrections, the square root, the division, the step), each a full pass
//! over the parameter with a fresh output buffer: 10.5 ms of a 78 ms Vox2Vox `cpu-small` training
//! step (2.5 M parameters). [`FusedAdam`] computes the same f32 operations in the same order per
//! element in one parallel pass, so its results are bit-identical to burn's (tested), and keeps
//! burn's state type ([`AdamState`]), so optimizer checkpoints are interchangeable with those
//! written by burn's `Adam`. Off the CPU backend, and with `SEGLAB_KERNELS=burn`, it delegates to
//! burn's `Adam`.
//!
//! Its state loads from a checkpoint onto the CPU backend ([`FusedAdamState`]) and moves to its
//! parameter's device on the next step, so a checkpoint written on one backend resumes on any
//! other.

use burn::optim::{
    Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, Optimizer, RecordState,
    StateSink, StateSource,
};
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;

/// Adam (optionally AMSGrad) with burn's update rule and state, fused on the CPU.
#[derive(Clone)]
pub struct FusedAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    amsgrad: bool,
    /// burn's optimizer with the same settings, for tensors off the CPU backend.
    reference: Adam,
}

impl FusedAdam {
    /// Adam with moment decays `beta_1`, `beta_2`, `epsilon` added to the bias-corrected √v̂,
    /// and the AMSGrad maximum when `amsgrad`.
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32, amsgrad: bool) -> Self {
        let reference = AdamConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_amsgrad(amsgrad)
            .build();
        Self {
            beta_1,
            beta_2,
            epsilon,
            amsgrad,
            reference,
        }
    }
}

/// Elements per parallel task of the update (~300 KB of the five streams in cache).
const CHUNK: usize = 1 << 14;

/// The per-step constants of the update, computed as burn's `Adam` computes them.
#[derive(Clone, Copy)]
struct StepScalars {
    beta_1: f32,
    beta_2: f32,
    /// √(1 − β2ᵗ) / (1 − β1ᵗ).
    combined: f32,
    /// ε·√(1 − β2ᵗ).
    epsilon: f32,
    lr: f32,
}

impl StepScalars {
    fn new(adam: &FusedAdam, time: usize, lr: LearningRate) -> Self {
        let t = time as i32;
        let bias_correction_2 = (1.0 - adam.beta_2.powi(t)).sqrt();
        Self {
            beta_1: adam.beta_1,
            beta_2: adam.beta_2,
            combined: bias_correction_2 / (1.0 - adam.beta_1.powi(t)),
            epsilon: adam.epsilon * bias_correction_2,
            lr: lr as f32,
        }
    }

    /// The moments of one element after gradient `g`; burn's operations in burn's order
    /// (`AdaptiveMomentum::transform`).
    #[inline(always)]
    fn moments(self, g: f32, m: &mut f32, v: &mut f32) {
        *m = *m * self.beta_1 + g * (1.0 - self.beta_1);
        *v = *v * self.beta_2 + (g * g) * (1.0 - self.beta_2);
    }

    /// The new value of one element from its first moment `m` and the second moment it uses
    /// `v` (burn's `Adam::step`).
    #[inline(always)]
    fn apply(self, p: &mut f32, m: f32, v: f32) {
        *p -= ((m * self.combined) / (v.sqrt() + self.epsilon)) * self.lr;
    }
}

/// burn's Adam state of one parameter, which a checkpoint loads onto the CPU backend.
///
/// burn's `ModuleOptimizer::load_record` builds optimizer state on `Device::default()`, which
/// in a build with a GPU feature is a GPU whatever device the run uses, and one that does not
/// come up on a machine whose only adapter is a software one (burn's default wgpu device skips
/// them). `ModuleOptimizer::step` moves every state to its parameter's device before using it
/// (`to_device`), so host memory is a neutral place to load to. The flattened names are
/// [`AdamState`]'s, so the files stay interchangeable with burn's `Adam`.
#[derive(Clone)]
pub struct FusedAdamState<const D: usize>(pub AdamState<D>);

impl<const D: usize> RecordState for FusedAdamState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        self.0.state_flatten(prefix, out);
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, _device: &Device) -> Option<Self> {
        AdamState::state_unflatten(prefix, src, &Device::flex()).map(Self)
    }
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = FusedAdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let fusable = grad.dtype() == DType::F32
            && tensor.device() == Device::flex()
            && super::ComputePath::of(&tensor) == super::ComputePath::Kernels;
        if !fusable {
            let (tensor, state) = self.reference.step(lr, tensor, grad, state.map(|s| s.0));
            return (tensor, state.map(FusedAdamState));
        }
        let (device, shape) = (tensor.device(), tensor.shape());
        let n = shape.num_elements();
        let mut p = f32s(tensor);
        let g = f32s(grad);
        // A first step starts from zero moments: burn's first step gives the same values.
        let (time, mut m, mut v, mut v_max) = match state {
            Some(s) => {
                let s = s.0.momentum;
                let v_max = match (self.amsgrad, s.max_moment_2) {
                    (true, Some(max)) => Some(f32s(max)),
                    (true, None) => Some(vec![0.0; n]),
                    (false, _) => None,
                };
                (s.time + 1, f32s(s.moment_1), f32s(s.moment_2), v_max)
            }
            None => (
                1,
                vec![0.0; n],
                vec![0.0; n],
                self.amsgrad.then(|| vec![0.0; n]),
            ),
        };
        let k = StepScalars::new(self, time, lr);
        let chunks = p
            .par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK));
        // Plain zipped loops, so that the compiler vectorises them (sqrt and division
        // included: exact in IEEE arithmetic, so the values do not change).
        match v_max.as_mut() {
            Some(v_max) => {
                chunks
                    .zip(v_max.par_chunks_mut(CHUNK))
                    .for_each(|((((p, g), m), v), v_max)| {
                        let elements = p.iter_mut().zip(g).zip(m).zip(v).zip(v_max);
                        for ((((p, &g), m), v), v_max) in elements {
                            k.moments(g, m, v);
                            *v_max = v_max.max(*v);
                            k.apply(p, *m, *v_max);
                        }
                    })
            }
            None => chunks.for_each(|(((p, g), m), v)| {
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                    k.moments(g, m, v);
                    k.apply(p, *m, *v);
                }
            }),
        }
        let tensor =
            |values: Vec<f32>| Tensor::from_data(TensorData::new(values, shape.clone()), &device);
        let mut momentum = AdaptiveMomentumState::new(time, tensor(m), tensor(v));
        momentum.max_moment_2 = v_max.map(tensor);
        (tensor(p), Some(FusedAdamState(AdamState::new(momentum))))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        FusedAdamState(<Adam as Optimizer>::to_device(state.0, device))
    }
}

/// The values of a float32 tensor (moved out without a copy when the tensor is not shared).
fn f32s<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .try_into_vec::<f32>()
        .expect("FusedAdam is only used on float32 tensors")
}

#[cfg(test)]
mod tests {
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{GradientsParams, ModuleOptimizer};

    use super::*;
    use crate::models::test_support::{random_tensor, to_vec};

    fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
        to_vec(t.clone())
    }

    /// Every value of parameter and state equals burn's Adam after several steps, with and
    /// without AMSGrad, for a tensor smaller than one task and one spread over several.
    #[test]
    fn fused_steps_equal_burns_adam_bit_for_bit() {
        let device = Device::flex();
        for amsgrad in [false, true] {
            for n in [37, 3 * CHUNK + 5] {
                let fused = FusedAdam::new(0.5, 0.999, 1e-7, amsgrad);
                let burn = fused.reference.clone();
                let start = random_tensor([n], 1, &device);
                let (mut a, mut b) = (start.clone(), start.clone());
                let (mut sa, mut sb) = (None, None);
                for step in 0..4u64 {
                    let g = random_tensor([n], 10 + step, &device) * 0.1;
                    let fused_state;
                    (a, fused_state) = fused.step(2e-4, a, g.clone(), sa.map(FusedAdamState));
                    sa = fused_state.map(|s| s.0);
                    (b, sb) = burn.step(2e-4, b, g, sb);
                }
                assert_eq!(values(&a), values(&b), "amsgrad {amsgrad}, {n} values");
                let (ma, mb) = (sa.unwrap().momentum, sb.unwrap().momentum);
                assert_eq!(ma.time, mb.time);
                assert_eq!(values(&ma.moment_1), values(&mb.moment_1));
                assert_eq!(values(&ma.moment_2), values(&mb.moment_2));
                assert_eq!(
                    ma.max_moment_2.as_ref().map(values),
                    mb.max_moment_2.as_ref().map(values)
                );
                assert_ne!(values(&a), values(&start), "the parameter moved");
            }
        }
    }

    fn step_module(opt: &mut ModuleOptimizer, model: Linear, seed: u64) -> Linear {
        let x = random_tensor([2, 6], seed, &model.weight.device());
        let loss = model.forward(x).powi_scalar(2).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        opt.step(1e-2, model, grads)
    }

    /// A checkpoint of the fused optimizer resumes in burn's Adam and the reverse: both store
    /// the same state, so checkpoints written before and after the switch load either way.
    #[test]
    fn optimizer_state_is_interchangeable_with_burns_adam() {
        let device = Device::flex().autodiff();
        let fused = || ModuleOptimizer::from(FusedAdam::new(0.9, 0.999, 1e-7, true));
        let burn = || {
            AdamConfig::new()
                .with_epsilon(1e-7)
                .with_amsgrad(true)
                .init()
        };
        let model = LinearConfig::new(6, 3).init(&device);
        for (first, second) in [(fused(), burn()), (burn(), fused())] {
            let (mut first, mut reference) = (first, fused());
            let (mut a, mut b) = (model.clone(), model.clone());
            for seed in 0..3 {
                a = step_module(&mut first, a, seed);
                b = step_module(&mut reference, b, seed);
            }
            let mut second = second.from_bytes(first.into_bytes().unwrap()).unwrap();
            a = step_module(&mut second, a, 7);
            b = step_module(&mut reference, b, 7);
            let weights = |m: &Linear| values(&m.weight.val().inner());
            assert_eq!(weights(&a), weights(&b));
        }
    }
}
