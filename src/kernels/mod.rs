//! seglab's hand-written CPU kernels: an optimisation of burn's Flex (CPU) backend only.
//!
//! burn runs the networks' layers on the CPU as chains of generic tensor operations, one pass
//! over the activation each, and differentiates them with generic gradients (docs/gpu.md,
//! docs/performance.md). The kernels here compute the same functions as registered backend
//! operations with handwritten backward passes, as matrix products or single parallel loops:
//!
//! - [`conv3d`], [`conv3d_bias_relu`] and [`conv_transpose3d`]: the 3D convolutions, all run
//!   by one GEMM convolution ([`padded_conv`]) — strided ones on their polyphase form,
//!   transposed ones producing their output phases ([`phases`]);
//! - [`norm_act`]: a batch or instance norm and the activation after it, as one operation;
//! - [`leaky_relu`]: LeakyReLU without a norm before it;
//! - [`FusedAdam`]: burn's Adam update as one pass over each parameter.
//!
//! Each entry serves a Flex device only and leaves every other device to burn: the model code
//! (`models::conv`, `models::blocks`) asks [`ComputePath::of`] and, where an entry has one,
//! its `*_supported` check, and calls burn's operation where either says no; [`FusedAdam`]
//! asks the same itself and delegates to burn's `Adam`. burn's operations are the reference:
//! they run on every GPU backend, the tests compare every kernel with them (values and
//! gradients), and `SEGLAB_KERNELS=burn` selects them on the CPU too
//! ([`ComputePath::selected`]). The path a trial ran on is recorded in the store's
//! `trials.compute_path` column.
//!
//! No model, layer or training logic lives here: only the operations.

use burn::tensor::{DType, Device, Tensor};

pub mod activation;
pub mod adam;
pub mod conv;
mod flex;
pub mod norm_act;
pub mod padded_conv;
pub mod phases;

pub use activation::leaky_relu;
pub use adam::{FusedAdam, FusedAdamState};
pub use conv::{conv_transpose3d, conv3d, conv3d_bias_relu};
pub use norm_act::{NormAct, NormGroups, NormScale, norm_act};

/// The environment variable that selects the [`ComputePath`] of the CPU backend.
pub const PATH_VARIABLE: &str = "SEGLAB_KERNELS";

/// Which implementation computes the layers: seglab's kernels or burn's generic operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComputePath {
    /// The kernels of this module (Flex devices, float32).
    Kernels,
    /// burn's operations: every GPU backend, and the reference the kernels are tested against.
    Burn,
}

impl ComputePath {
    /// The name in `SEGLAB_KERNELS` and in the store: `kernels` or `burn`.
    pub fn name(self) -> &'static str {
        match self {
            ComputePath::Kernels => "kernels",
            ComputePath::Burn => "burn",
        }
    }

    /// `kernels` or `burn`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "kernels" => Some(ComputePath::Kernels),
            "burn" => Some(ComputePath::Burn),
            _ => None,
        }
    }

    /// The path `SEGLAB_KERNELS` selects for the CPU, read once: `burn` runs burn's operations
    /// there too (to compare the two, or to rule the kernels out as the cause of a
    /// difference); unset or `kernels` runs the kernels.
    ///
    /// # Panics
    /// On any other value, naming the variable and the values it takes.
    pub fn selected() -> ComputePath {
        static SELECTED: std::sync::OnceLock<ComputePath> = std::sync::OnceLock::new();
        *SELECTED.get_or_init(|| match std::env::var(PATH_VARIABLE) {
            Err(_) => ComputePath::Kernels,
            Ok(v) => ComputePath::parse(v.trim()).unwrap_or_else(|| {
                panic!("{PATH_VARIABLE} must be `kernels` or `burn`, got `{v}`")
            }),
        })
    }

    /// The path of `device` (with or without autodiff): the selected one on a Flex device,
    /// burn's everywhere else.
    pub fn on(device: &Device) -> ComputePath {
        if device.clone().without_autodiff() == Device::flex() {
            ComputePath::selected()
        } else {
            ComputePath::Burn
        }
    }

    /// The path for an operation on `x`: [`ComputePath::on`] its device, and burn's for
    /// anything but float32.
    pub fn of<const D: usize>(x: &Tensor<D>) -> ComputePath {
        if x.dtype() == DType::F32 {
            ComputePath::on(&x.device())
        } else {
            ComputePath::Burn
        }
    }
}

display_by_name!(ComputePath);

/// Whether the kernels can take `x` at all: float32 on a Flex device, whatever
/// `SEGLAB_KERNELS` says (the tests run both paths in one process).
fn flex_f32<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && x.device().without_autodiff() == Device::flex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_name_themselves() {
        for path in [ComputePath::Kernels, ComputePath::Burn] {
            assert_eq!(ComputePath::parse(path.name()), Some(path));
        }
        assert_eq!(ComputePath::parse("gemm"), None);
    }

    #[test]
    fn flex_devices_take_the_selected_path() {
        assert_eq!(ComputePath::on(&Device::flex()), ComputePath::selected());
        assert_eq!(
            ComputePath::on(&Device::flex().autodiff()),
            ComputePath::selected()
        );
    }
}
