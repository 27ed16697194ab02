//! Networks of seglab: the supervised 3D U-Net ([`unet3d::Unet3d`], docs/published-code.md
//! §3), the supervised Vox2Vox generator and conditional 3D PatchGAN ([`vox2vox`], §4) and the
//! self-supervised CycleGAN's ResNet-style generators and 3D PatchGANs ([`cyclegan`], §5).
//!
//! Every network is built from the Keras-faithful layers of [`blocks`] (convolutions with the
//! Keras 'same' padding rules of §9, Keras instance and batch norms, 3D max pooling) and
//! initialised by [`init`]. Each model has one `#[derive(Config)]` struct whose defaults are the
//! published code's values (the `code` preset); [`ModelScale`] and [`ScaleSpec`] choose the
//! widths and patch size (`paper` = the published widths and 64³ patches, `cpu-small` = the
//! same topology with fewer filters and 32³ patches). [`ModelKind`] names a model,
//! [`parse_device`] turns `--device cpu|wgpu:N|cuda:N` into a burn [`Device`] and
//! [`trainable_params`] counts parameters the way Keras' "Trainable params" line does.
//!
//! This module holds architectures only: no losses, optimizers, data handling or file I/O
//! (those live in `train/`), and no sliding-window logic (`infer/`).

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub mod blocks;
pub mod conv;
pub mod conv_split;
pub mod cyclegan;
pub mod init;
#[cfg(test)]
pub(crate) mod test_support;
pub mod unet3d;
pub mod vox2vox;

pub use cyclegan::{CycleGanConfig, CycleGanDiscriminator, CycleGanGenerator, ResidualMode};
pub use init::InitScheme;
pub use unet3d::{Unet3d, Unet3dConfig};
pub use vox2vox::{Vox2VoxConfig, Vox2VoxDiscriminator, Vox2VoxGenerator, Vox2VoxNorm};

/// Errors of model configuration and device selection.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration value is out of range; `field` is the dotted path of the value.
    #[error("{field} {expected}, got {got}")]
    Config {
        field: String,
        expected: String,
        got: String,
    },
    /// `--device` could not be turned into a device.
    #[error("device `{spec}`: {reason}")]
    Device { spec: String, reason: String },
}

impl ModelError {
    /// A [`ModelError::Config`] for `field`, which should satisfy `expected` but is `got`.
    pub fn config(
        field: impl Into<String>,
        expected: impl Into<String>,
        got: impl fmt::Display,
    ) -> Self {
        ModelError::Config {
            field: field.into(),
            expected: expected.into(),
            got: got.to_string(),
        }
    }
}

/// The models a trial can train. `threshold` is the training-free per-channel Otsu baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Unet3d,
    Vox2Vox,
    CycleGan,
    Threshold,
}

impl ModelKind {
    pub const ALL: [ModelKind; 4] = [
        ModelKind::Unet3d,
        ModelKind::Vox2Vox,
        ModelKind::CycleGan,
        ModelKind::Threshold,
    ];

    /// The name used on the command line, in sweep specs and in the store.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Unet3d => "unet3d",
            ModelKind::Vox2Vox => "vox2vox",
            ModelKind::CycleGan => "cyclegan",
            ModelKind::Threshold => "threshold",
        }
    }
}

display_by_name!(ModelKind);

impl FromStr for ModelKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelKind::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown model `{s}`, expected one of: unet3d, vox2vox, cyclegan, threshold"
                )
            })
    }
}

/// Model size preset (docs/design.md §1).
///
/// `paper` is the published widths with 64³ patches (GPU territory: the Vox2Vox generator alone
/// has 150 M parameters). `cpu-small` keeps every layer of the topology but divides all filter
/// counts by [`ModelScale::width_divisor`] (8) and trains on 32³ patches; see
/// [`ModelScale::CpuSmall`] for the measured cost. Explicit overrides go through [`ScaleSpec`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelScale {
    /// The published widths and 64³ patches (docs/published-code.md §3–§5).
    #[default]
    Paper,
    /// Same topology, widths ÷ 8, 32³ patches: a training step of every model takes well under
    /// a second on 2 CPU cores (measured by `cargo bench --bench models`; the figures are in
    /// the README of the models issue report). 32 is the smallest cube the Vox2Vox
    /// discriminator accepts (its two valid 4³ convolutions need 32/8 + 2 − 3 + 2 − 3 ≥ 1).
    CpuSmall,
}

impl ModelScale {
    pub const ALL: [ModelScale; 2] = [ModelScale::Paper, ModelScale::CpuSmall];

    pub fn name(self) -> &'static str {
        match self {
            ModelScale::Paper => "paper",
            ModelScale::CpuSmall => "cpu-small",
        }
    }

    /// Every filter count of the published networks is divided by this.
    pub fn width_divisor(self) -> usize {
        match self {
            ModelScale::Paper => 1,
            ModelScale::CpuSmall => 8,
        }
    }

    /// Edge length of the cubic training patches and inference windows.
    pub fn patch_size(self) -> usize {
        match self {
            ModelScale::Paper => 64,
            ModelScale::CpuSmall => 32,
        }
    }
}

display_by_name!(ModelScale);

impl FromStr for ModelScale {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelScale::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown scale `{s}`, expected one of: paper, cpu-small"))
    }
}

/// A [`ModelScale`] plus explicit overrides of its width divisor and patch size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleSpec {
    pub scale: ModelScale,
    /// Overrides [`ModelScale::width_divisor`]; must divide every published filter count
    /// (a power of two up to 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_divisor: Option<usize>,
    /// Overrides [`ModelScale::patch_size`] (voxels per edge of the cubic patch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_size: Option<usize>,
}

impl ScaleSpec {
    pub fn new(scale: ModelScale) -> Self {
        Self {
            scale,
            width_divisor: None,
            patch_size: None,
        }
    }

    /// The width divisor in force (the override, else the scale's).
    pub fn width_divisor(&self) -> usize {
        self.width_divisor.unwrap_or(self.scale.width_divisor())
    }

    /// The patch size in force (the override, else the scale's).
    pub fn patch_size(&self) -> usize {
        self.patch_size.unwrap_or(self.scale.patch_size())
    }

    /// Divides a published filter count, checking that the division is exact and leaves at
    /// least one filter.
    pub fn width(&self, published: usize, field: &str) -> Result<usize, ModelError> {
        let d = self.width_divisor();
        if d == 0 || !published.is_multiple_of(d) || published / d == 0 {
            return Err(ModelError::config(
                "scale.width_divisor",
                format!("must divide the published {field} ({published}) into a whole number ≥ 1"),
                d,
            ));
        }
        Ok(published / d)
    }
}

/// `--device` parsing lives in [`crate::backend`]; re-exported here, where the networks are.
pub use crate::backend::parse_device;

/// The number of trainable parameters of `module`, as Keras' model summary counts them:
/// every float parameter except batch-norm running statistics (which burn stores as module
/// state next to the weights). Parameters are not materialised, so counting the 150 M
/// parameter Vox2Vox generator costs nothing.
pub fn trainable_params<M: Module>(module: &M) -> usize {
    struct Counter {
        path: Vec<String>,
        count: usize,
    }
    impl ModuleVisitor for Counter {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let running = self
                .path
                .last()
                .is_some_and(|n| n == "running_mean" || n == "running_var");
            if !running {
                self.count += param.lazy_shape().num_elements();
            }
        }
    }
    let mut counter = Counter {
        path: Vec::new(),
        count: 0,
    };
    module.visit(&mut counter);
    counter.count
}

/// Checks that a count or width is positive.
pub(crate) fn positive(field: &str, value: usize) -> Result<(), ModelError> {
    if value == 0 {
        return Err(ModelError::config(field, "must be > 0", value));
    }
    Ok(())
}

/// Checks that a real setting (an epsilon) is finite and > 0.
pub(crate) fn positive_finite(field: &str, value: f64) -> Result<(), ModelError> {
    if !(value > 0.0 && value.is_finite()) {
        return Err(ModelError::config(field, "must be > 0", value));
    }
    Ok(())
}

/// Checks that a real setting (a slope) is finite and ≥ 0.
pub(crate) fn non_negative_finite(field: &str, value: f64) -> Result<(), ModelError> {
    if !(value >= 0.0 && value.is_finite()) {
        return Err(ModelError::config(field, "must be ≥ 0", value));
    }
    Ok(())
}

/// Draws every lazy parameter of `module` now, on the device it was built for.
///
/// Trainers call this right after building their networks: a lazy parameter that is first
/// touched through a `valid()` copy (as the CycleGAN step does when it generates its fakes)
/// would otherwise be materialised without gradient tracking for the training copy too.
pub fn materialize<M: Module>(module: &M) {
    struct Touch;
    impl ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

/// Trainable parameter counts of every network of the three models, as printed by
/// `seglab models --json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamCounts {
    pub unet3d: usize,
    pub vox2vox_generator: usize,
    pub vox2vox_discriminator: usize,
    /// The segmenting generator G_AB (image → mask); G_BA has the same count when image and
    /// mask channels agree, as they do in every published configuration.
    pub cyclegan_generator: usize,
    pub cyclegan_discriminator: usize,
}

/// Counts the trainable parameters of every network for a task with `classes` mask channels
/// and as many image channels (the published convention, docs/published-code.md §1.4: the
/// 3-class models take a 3-channel image whose third channel is empty). `cyclegan` chooses the
/// CycleGAN variant (residual mode, final norm); its channel counts are overwritten.
/// Parameters stay lazy, so `device` only names where they would live.
pub fn param_counts(
    scale: &ScaleSpec,
    classes: usize,
    cyclegan: &CycleGanConfig,
    device: &Device,
) -> Result<ParamCounts, ModelError> {
    let unet = Unet3dConfig::for_scale(classes, classes, scale)?;
    let vox = Vox2VoxConfig::for_scale(classes, classes, scale)?;
    let mut cyc = cyclegan.clone();
    cyc.image_channels = classes;
    cyc.mask_channels = classes;
    let cyc = cyc.scaled(scale)?;
    Ok(ParamCounts {
        unet3d: trainable_params(&unet.init(0, device)),
        vox2vox_generator: trainable_params(&vox.init_generator(0, device)),
        vox2vox_discriminator: trainable_params(&vox.init_discriminator(0, device)),
        cyclegan_generator: trainable_params(&cyc.init_segmenter(0, device)),
        cyclegan_discriminator: trainable_params(&cyc.init_mask_discriminator(0, device)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_kind_and_scale_names_round_trip() {
        for m in ModelKind::ALL {
            assert_eq!(m.name().parse::<ModelKind>().unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.name()));
        }
        for s in ModelScale::ALL {
            assert_eq!(s.name().parse::<ModelScale>().unwrap(), s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
        }
        assert!("unet".parse::<ModelKind>().is_err());
        assert!("small".parse::<ModelScale>().is_err());
    }

    #[test]
    fn device_errors_name_the_value() {
        for bad in [
            "", "gpu", "cuda", "cuda:", "cuda:x", "cuda:-1", "CPU", "wgpu:x",
        ] {
            let err = parse_device(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn scale_overrides_and_width_checks() {
        let mut s = ScaleSpec::new(ModelScale::CpuSmall);
        assert_eq!((s.width_divisor(), s.patch_size()), (8, 32));
        assert_eq!(s.width(64, "filters").unwrap(), 8);
        s.width_divisor = Some(3);
        s.patch_size = Some(48);
        assert_eq!(s.patch_size(), 48);
        let err = s.width(64, "generator_filters").unwrap_err().to_string();
        assert!(err.contains("scale.width_divisor"), "{err}");
        assert!(err.contains("got 3"), "{err}");
        s.width_divisor = Some(128);
        assert!(s.width(64, "filters").is_err());
    }
}
