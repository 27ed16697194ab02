//! The burn backend and device a run uses, always named on the command line:
//! `--device cpu|wgpu:N|cuda:N`. burn's `Device::default()` would silently prefer a GPU when
//! one is compiled in and skips software adapters such as lavapipe (docs/design.md
//! §4), so seglab never asks for it.
//!
//! Every model, trainer, sliding-window prediction and checkpoint runs the same code on every
//! backend. The hand-written kernels (`src/kernels/`) are an optimisation of the CPU backend
//! (burn's Flex) only: each checks for a Flex device and otherwise leaves the operation to
//! burn. docs/gpu.md says how to build and run each backend.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::Serialize;

use crate::models::ModelError;

/// A burn backend seglab can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// burn's Flex CPU backend, with seglab's hand-written kernels.
    Cpu,
    /// burn's wgpu backend with WGSL shaders (Vulkan, Metal, DX12; the `wgpu` feature).
    Wgpu,
    /// burn's CUDA backend (the `cuda` feature).
    Cuda,
}

impl Backend {
    /// The name used in `--device` values and in the store.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
        }
    }

    /// Whether this build can run the backend (the CPU always; the others with their cargo
    /// feature of the same name).
    pub fn compiled(self) -> bool {
        match self {
            Backend::Cpu => true,
            Backend::Wgpu => cfg!(feature = "wgpu"),
            Backend::Cuda => cfg!(feature = "cuda"),
        }
    }
}

display_by_name!(Backend);

/// A parsed `--device` value: a backend and, for GPUs, the device index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceSpec {
    pub backend: Backend,
    /// The GPU index (always 0 for the CPU).
    pub index: usize,
}

impl DeviceSpec {
    /// `--device cpu`.
    pub const CPU: DeviceSpec = DeviceSpec {
        backend: Backend::Cpu,
        index: 0,
    };
}

impl FromStr for DeviceSpec {
    type Err = String;

    /// `cpu`, `wgpu:N` or `cuda:N`; the reason for a refusal names what was expected.
    fn from_str(spec: &str) -> Result<Self, String> {
        if spec == "cpu" {
            return Ok(DeviceSpec::CPU);
        }
        let expected = "expected `cpu`, `wgpu:N` or `cuda:N` (N = GPU index, e.g. wgpu:0)";
        let (name, index) = spec.split_once(':').ok_or_else(|| expected.to_string())?;
        let backend = match name {
            "wgpu" => Backend::Wgpu,
            "cuda" => Backend::Cuda,
            _ => return Err(expected.to_string()),
        };
        let index = index
            .parse()
            .map_err(|_| format!("the GPU index after `{name}:` must be a non-negative integer"))?;
        Ok(DeviceSpec { backend, index })
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.backend {
            Backend::Cpu => f.write_str("cpu"),
            b => write!(f, "{b}:{}", self.index),
        }
    }
}

impl DeviceSpec {
    /// The burn device, or why this build or machine has none: a backend compiled out (the
    /// reason says which feature to build with) or a GPU index past the devices present.
    pub fn device(&self) -> Result<Device, String> {
        if !self.backend.compiled() {
            let b = self.backend.name();
            return Err(format!(
                "this seglab was built without the `{b}` feature (cargo build --release \
                 --features {b}; docs/gpu.md)"
            ));
        }
        match self.backend {
            Backend::Cpu => Ok(Device::flex()),
            Backend::Wgpu => wgpu_device(self.index),
            Backend::Cuda => cuda_device(self.index),
        }
    }
}

/// Turns a `--device` value into a burn device (see [`DeviceSpec`]). The device is always
/// explicit, never burn's default.
pub fn parse_device(spec: &str) -> Result<Device, ModelError> {
    spec.parse::<DeviceSpec>()
        .and_then(|d| d.device())
        .map_err(|reason| ModelError::Device {
            spec: spec.to_string(),
            reason,
        })
}

/// The N-th adapter wgpu reaches, in the order burn enumerates them (hardware GPUs and
/// software rasterizers such as lavapipe alike).
#[cfg(feature = "wgpu")]
fn wgpu_device(index: usize) -> Result<Device, String> {
    let devices = Device::enumerate(burn::tensor::DeviceType::Wgpu);
    devices.get(index).cloned().ok_or_else(|| {
        let found = match devices.len() {
            0 => "no wgpu adapter on this machine (on Linux: a Vulkan driver, e.g. the \
                  mesa-vulkan-drivers package)"
                .to_string(),
            1 => "the one wgpu adapter here is wgpu:0".to_string(),
            n => format!("{n} wgpu adapters here: wgpu:0 to wgpu:{}", n - 1),
        };
        format!("wgpu:{index} does not exist; {found}")
    })
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device(_index: usize) -> Result<Device, String> {
    unreachable!("Backend::compiled refuses wgpu devices in builds without the feature")
}

#[cfg(feature = "cuda")]
fn cuda_device(index: usize) -> Result<Device, String> {
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_index: usize) -> Result<Device, String> {
    unreachable!("Backend::compiled refuses cuda devices in builds without the feature")
}

/// The name a device gives itself (`llvmpipe (LLVM 15.0.6, 256 bits)`, `NVIDIA H100 PCIe`),
/// `cpu` for the CPU backend. Opens the device.
pub fn device_name(device: &Device) -> String {
    let plain = device.clone().without_autodiff();
    if plain == Device::flex() {
        return "cpu".to_string();
    }
    gpu_name(&plain).unwrap_or_else(|| format!("{plain:?}"))
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn gpu_name(device: &Device) -> Option<String> {
    device.identity().map(|id| id.name)
}

#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
fn gpu_name(_device: &Device) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs_parse_and_print() {
        for s in ["cpu", "wgpu:0", "wgpu:3", "cuda:1"] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap().to_string(), s);
        }
        for bad in [
            "", "gpu", "cuda", "cuda:", "cuda:x", "cuda:-1", "CPU", "wgpu", "vulkan:0",
        ] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn devices_are_explicit() {
        assert_eq!(parse_device("cpu").unwrap(), Device::flex());
        assert_eq!(device_name(&Device::flex().autodiff()), "cpu");
        for (spec, feature) in [("wgpu:0", "wgpu"), ("cuda:0", "cuda")] {
            let compiled = spec.parse::<DeviceSpec>().unwrap().backend.compiled();
            if !compiled {
                let msg = parse_device(spec).unwrap_err().to_string();
                assert!(
                    msg.contains(&format!("without the `{feature}` feature"))
                        && msg.contains(&format!("--features {feature}")),
                    "{msg}"
                );
            }
        }
    }
}
