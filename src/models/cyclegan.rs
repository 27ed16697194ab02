//! The self-supervised 3D CycleGAN of the published code (docs/published-code.md §5): two
//! ResNet-style generators (G_AB image → mask, the segmenter; G_BA mask → image) and two
//! unconditional 3D PatchGANs (D_A on images, D_B on masks).
//!
//! The generator is c7s1-32, d64, d128, nine "residual" blocks, u64, u32, c7s1-C with
//! per-channel instance norm (ε on the std) and ReLU; the published blocks **concatenate**
//! `[block output, block input]` instead of adding (channels grow 128 → 1280, 26,483,270
//! parameters for 2 channels; additive blocks give 8,567,366), and the output layer applies an
//! instance norm before tanh. Both are options here ([`ResidualMode`], `final_norm`). The
//! discriminator is C64 (no norm), C128, C256, C512 (stride 2), C512 (stride 1) and a 1-filter
//! output convolution, all 4³ 'same', LeakyReLU 0.2, linear output (27,832,513 parameters).

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::blocks::{Conv3dLayer, ConvTranspose3dLayer, InstanceNorm3d, Padding, activate};
use super::init::{InitScheme, SeedStream};
use super::{ModelError, ScaleSpec, non_negative_finite, positive, positive_finite};

/// How a generator block combines its output with its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResidualMode {
    /// As coded and as the thesis describes it: `concat([output, input])`, so every block adds
    /// `4·generator_filters` channels.
    Concat,
    /// A standard residual block: `output + input`.
    Add,
}

/// Configuration of the CycleGAN generators and discriminators. Defaults are the published
/// code's (§5.1, §5.2).
#[derive(Config, Debug)]
pub struct CycleGanConfig {
    /// Channels of the image domain A.
    pub image_channels: usize,
    /// Channels of the mask domain B (one tanh map per class).
    pub mask_channels: usize,
    /// Filters of the first generator layer; the downsampling layers have 2× and 4× (32).
    #[config(default = 32)]
    pub generator_filters: usize,
    /// Residual blocks at 1/4 of the patch (9).
    #[config(default = 9)]
    pub residual_blocks: usize,
    /// Concatenating (as coded) or additive residual blocks.
    #[config(default = "ResidualMode::Concat")]
    pub residual_mode: ResidualMode,
    /// Instance norm between the last convolution and tanh (as coded: on).
    #[config(default = true)]
    pub final_norm: bool,
    /// Reflection instead of zero padding in the generators' stride-1 convolutions (the stem,
    /// the residual blocks and the output layer). As coded: off (Keras 'same', zeros). With
    /// zeros a generator can learn where its window's border is, and the demo's CycleGAN did:
    /// it marked the first rows of every prediction window as foreground.
    #[config(default = false)]
    pub reflect_padding: bool,
    /// Filters of the first discriminator layer; then 2×, 4×, 8×, 8× (64).
    #[config(default = 64)]
    pub discriminator_filters: usize,
    /// ε added to the standard deviation in the instance norms (keras-contrib default 1e-3).
    #[config(default = 1e-3)]
    pub norm_epsilon: f64,
    /// Negative slope of the discriminator LeakyReLUs (0.2).
    #[config(default = 0.2)]
    pub leaky_slope: f64,
    /// Kernel initialiser (N(0, 0.02); biases are always zero).
    #[config(default = "InitScheme::Normal002")]
    pub initializer: InitScheme,
}

/// Convolution → instance norm → ReLU.
#[derive(Module, Debug)]
pub struct ConvNormRelu {
    pub conv: Conv3dLayer,
    pub norm: InstanceNorm3d,
}

impl ConvNormRelu {
    fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        self.norm.forward_activated(self.conv.forward(x), 0.0)
    }
}

/// Transposed convolution → instance norm → ReLU.
#[derive(Module, Debug)]
pub struct UpNormRelu {
    pub up: ConvTranspose3dLayer,
    pub norm: InstanceNorm3d,
}

/// Conv 3³ → IN → ReLU → Conv 3³ → IN, combined with the block input by [`ResidualMode`].
#[derive(Module, Debug)]
pub struct ResidualBlock {
    pub first: ConvNormRelu,
    pub conv: Conv3dLayer,
    pub norm: InstanceNorm3d,
    #[module(skip)]
    pub mode: ResidualMode,
}

impl ResidualBlock {
    fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let y = self
            .norm
            .forward(self.conv.forward(self.first.forward(x.clone())));
        match self.mode {
            ResidualMode::Concat => Tensor::cat(vec![y, x], 1),
            ResidualMode::Add => y + x,
        }
    }
}

/// A CycleGAN generator (G_AB: image → mask, or G_BA: mask → image).
#[derive(Module, Debug)]
pub struct CycleGanGenerator {
    pub stem: ConvNormRelu,
    pub down: Vec<ConvNormRelu>,
    pub blocks: Vec<ResidualBlock>,
    pub up: Vec<UpNormRelu>,
    pub out: Conv3dLayer,
    pub out_norm: Option<InstanceNorm3d>,
}

/// One discriminator layer: convolution → [instance norm] → LeakyReLU.
#[derive(Module, Debug)]
pub struct PatchLayer {
    pub conv: Conv3dLayer,
    pub norm: Option<InstanceNorm3d>,
}

/// A CycleGAN 3D PatchGAN discriminator (unconditional).
#[derive(Module, Debug)]
pub struct CycleGanDiscriminator {
    pub layers: Vec<PatchLayer>,
    pub out: Conv3dLayer,
    pub slope: f64,
}

impl CycleGanConfig {
    /// The published networks scaled by `scale` (channel counts are kept).
    pub fn scaled(self, scale: &ScaleSpec) -> Result<Self, ModelError> {
        let cfg = self
            .with_generator_filters(scale.width(32, "cyclegan.generator_filters")?)
            .with_discriminator_filters(scale.width(64, "cyclegan.discriminator_filters")?);
        cfg.validate()?;
        Ok(cfg)
    }

    /// The published networks for the given channels at a scale.
    pub fn for_scale(
        image_channels: usize,
        mask_channels: usize,
        scale: &ScaleSpec,
    ) -> Result<Self, ModelError> {
        Self::new(image_channels, mask_channels).scaled(scale)
    }

    /// Checks every field; the error names the field (`model.<field>`) and the value.
    pub fn validate(&self) -> Result<(), ModelError> {
        positive("model.image_channels", self.image_channels)?;
        positive("model.mask_channels", self.mask_channels)?;
        positive("model.generator_filters", self.generator_filters)?;
        positive("model.discriminator_filters", self.discriminator_filters)?;
        positive_finite("model.norm_epsilon", self.norm_epsilon)?;
        non_negative_finite("model.leaky_slope", self.leaky_slope)?;
        Ok(())
    }

    /// Checks a training patch edge: a multiple of 16 (the generators' two stride-2 levels and
    /// the discriminators' four) and at least 32. At 16 the discriminators' last two instance
    /// norms each see a single voxel and output their bias, so the scores do not depend on the
    /// input and the adversarial terms train nothing.
    pub fn validate_patch(&self, size: usize) -> Result<(), ModelError> {
        if size < 32 || !size.is_multiple_of(16) {
            return Err(ModelError::config(
                "patch_size",
                "must be a multiple of 16 and at least 32 for CycleGAN (smaller patches leave \
                 its discriminators a single voxel to normalise)",
                size,
            ));
        }
        Ok(())
    }

    /// Checks a prediction window edge (only the segmenter sees windows): a positive multiple
    /// of 16, like the other models' windows.
    pub fn validate_window(&self, size: usize) -> Result<(), ModelError> {
        if size == 0 || !size.is_multiple_of(16) {
            return Err(ModelError::config(
                "window",
                "must be a positive multiple of 16 for CycleGAN",
                size,
            ));
        }
        Ok(())
    }

    fn norm(&self, channels: usize, device: &Device) -> InstanceNorm3d {
        InstanceNorm3d::new(channels, true, self.norm_epsilon, device)
    }

    /// Padding of a generator convolution with this stride: reflection for stride 1 when
    /// [`CycleGanConfig::reflect_padding`] is on, Keras 'same' otherwise.
    fn generator_padding(&self, stride: usize) -> Padding {
        if self.reflect_padding && stride == 1 {
            Padding::Reflect
        } else {
            Padding::Same
        }
    }

    fn conv_norm_relu(
        &self,
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        seeds: &mut SeedStream,
        device: &Device,
    ) -> ConvNormRelu {
        ConvNormRelu {
            conv: Conv3dLayer::new(
                channels,
                kernel,
                stride,
                self.generator_padding(stride),
                self.initializer,
                seeds,
                device,
            ),
            norm: self.norm(channels[1], device),
        }
    }

    /// Builds a generator from `in_channels` to `out_channels` with kernels drawn from streams
    /// derived from `seed`.
    pub fn init_generator(
        &self,
        in_channels: usize,
        out_channels: usize,
        seed: u64,
        device: &Device,
    ) -> CycleGanGenerator {
        let mut seeds = SeedStream::new(seed);
        let f = self.generator_filters;
        let stem = self.conv_norm_relu([in_channels, f], 7, 1, &mut seeds, device);
        let down = vec![
            self.conv_norm_relu([f, 2 * f], 3, 2, &mut seeds, device),
            self.conv_norm_relu([2 * f, 4 * f], 3, 2, &mut seeds, device),
        ];
        let r = 4 * f;
        let mut blocks = Vec::new();
        let mut cin = r;
        for _ in 0..self.residual_blocks {
            blocks.push(ResidualBlock {
                first: self.conv_norm_relu([cin, r], 3, 1, &mut seeds, device),
                conv: Conv3dLayer::new(
                    [r, r],
                    3,
                    1,
                    self.generator_padding(1),
                    self.initializer,
                    &mut seeds,
                    device,
                ),
                norm: self.norm(r, device),
                mode: self.residual_mode,
            });
            if self.residual_mode == ResidualMode::Concat {
                cin += r;
            }
        }
        let mut up = Vec::new();
        for w in [2 * f, f] {
            up.push(UpNormRelu {
                up: ConvTranspose3dLayer::new([cin, w], 3, 2, self.initializer, &mut seeds, device),
                norm: self.norm(w, device),
            });
            cin = w;
        }
        let out = Conv3dLayer::new(
            [f, out_channels],
            7,
            1,
            self.generator_padding(1),
            self.initializer,
            &mut seeds,
            device,
        );
        let out_norm = self.final_norm.then(|| self.norm(out_channels, device));
        CycleGanGenerator {
            stem,
            down,
            blocks,
            up,
            out,
            out_norm,
        }
    }

    /// G_AB, the segmenter (image → mask).
    pub fn init_segmenter(&self, seed: u64, device: &Device) -> CycleGanGenerator {
        self.init_generator(self.image_channels, self.mask_channels, seed, device)
    }

    /// G_BA (mask → image).
    pub fn init_painter(&self, seed: u64, device: &Device) -> CycleGanGenerator {
        self.init_generator(self.mask_channels, self.image_channels, seed, device)
    }

    /// Builds a discriminator for inputs of `channels` channels.
    pub fn init_discriminator(
        &self,
        channels: usize,
        seed: u64,
        device: &Device,
    ) -> CycleGanDiscriminator {
        let mut seeds = SeedStream::new(seed);
        let f = self.discriminator_filters;
        let specs = [
            (f, 2, false),
            (2 * f, 2, true),
            (4 * f, 2, true),
            (8 * f, 2, true),
            (8 * f, 1, true),
        ];
        let mut layers = Vec::new();
        let mut cin = channels;
        for (w, stride, norm) in specs {
            layers.push(PatchLayer {
                conv: Conv3dLayer::new(
                    [cin, w],
                    4,
                    stride,
                    Padding::Same,
                    self.initializer,
                    &mut seeds,
                    device,
                ),
                norm: norm.then(|| self.norm(w, device)),
            });
            cin = w;
        }
        let out = Conv3dLayer::new(
            [cin, 1],
            4,
            1,
            Padding::Same,
            self.initializer,
            &mut seeds,
            device,
        );
        CycleGanDiscriminator {
            layers,
            out,
            slope: self.leaky_slope,
        }
    }

    /// D_A, the image-domain discriminator.
    pub fn init_image_discriminator(&self, seed: u64, device: &Device) -> CycleGanDiscriminator {
        self.init_discriminator(self.image_channels, seed, device)
    }

    /// D_B, the mask-domain discriminator.
    pub fn init_mask_discriminator(&self, seed: u64, device: &Device) -> CycleGanDiscriminator {
        self.init_discriminator(self.mask_channels, seed, device)
    }
}

impl CycleGanGenerator {
    /// Translation to the other domain, in [−1, 1] (tanh).
    ///
    /// # Shapes
    ///
    /// - input: `[batch, in_channels, depth, height, width]`, sizes divisible by 4
    /// - output: `[batch, out_channels, depth, height, width]`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let mut x = self.stem.forward(x); // [batch, f, n, n, n]
        for d in &self.down {
            x = d.forward(x); // [batch, 2f then 4f, n/2 then n/4, …]
        }
        for b in &self.blocks {
            x = b.forward(x); // [batch, 4f·(k+1) (concat) or 4f (add), n/4, …]
        }
        for u in &self.up {
            x = u.norm.forward_activated(u.up.forward(x), 0.0); // [batch, 2f then f, n/2 then n, …]
        }
        let mut y = self.out.forward(x); // [batch, out_channels, n, n, n]
        if let Some(norm) = &self.out_norm {
            y = norm.forward(y);
        }
        y.tanh()
    }
}

impl CycleGanDiscriminator {
    /// Patch realism scores (linear; LSGAN targets 1 = real, 0 = generated).
    ///
    /// # Shapes
    ///
    /// - input: `[batch, channels, n, n, n]`
    /// - output: `[batch, 1, n/16, n/16, n/16]` (4³ for 64³ patches)
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let mut x = x;
        for layer in &self.layers {
            x = layer.conv.forward(x); // [batch, w, n/2^(i+1) (4 strided layers), …]
            x = match &layer.norm {
                Some(norm) => norm.forward_activated(x, self.slope),
                None => activate(x, self.slope),
            };
        }
        self.out.forward(x) // [batch, 1, n/16, …]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ModelScale, trainable_params};

    #[test]
    fn published_parameter_counts() {
        let dev = Device::flex();
        let paper = ScaleSpec::new(ModelScale::Paper);
        let two = CycleGanConfig::for_scale(2, 2, &paper).unwrap();
        assert_eq!(trainable_params(&two.init_segmenter(0, &dev)), 26_483_270);
        assert_eq!(trainable_params(&two.init_painter(0, &dev)), 26_483_270);
        assert_eq!(
            trainable_params(&two.init_mask_discriminator(0, &dev)),
            27_832_513
        );
        let add = two.clone().with_residual_mode(ResidualMode::Add);
        assert_eq!(trainable_params(&add.init_segmenter(0, &dev)), 8_567_366);
        let no_final = two.clone().with_final_norm(false);
        assert_eq!(
            trainable_params(&no_final.init_segmenter(0, &dev)),
            26_483_270 - 4
        );
        let three = CycleGanConfig::for_scale(3, 3, &paper).unwrap();
        assert_eq!(trainable_params(&three.init_segmenter(0, &dev)), 26_505_225);
        assert_eq!(
            trainable_params(&three.init_image_discriminator(0, &dev)),
            27_836_609
        );
    }

    /// `reflect_padding` reflects the generator's stride-1 convolutions only: the strided
    /// downsampling keeps Keras 'same' as coded, and the output still has the input's size.
    #[test]
    fn reflect_padding_reaches_the_stride_one_convolutions() {
        let dev = Device::flex();
        let cfg = CycleGanConfig::new(1, 2)
            .with_generator_filters(2)
            .with_residual_blocks(2)
            .with_reflect_padding(true);
        let g = cfg.init_segmenter(0, &dev);
        assert_eq!(g.stem.conv.padding, Padding::Reflect);
        assert!(g.down.iter().all(|d| d.conv.padding == Padding::Same));
        assert!(g.blocks.iter().all(|b| {
            b.first.conv.padding == Padding::Reflect && b.conv.padding == Padding::Reflect
        }));
        assert_eq!(g.out.padding, Padding::Reflect);
        let y = g.forward(Tensor::<5>::zeros([1, 1, 16, 16, 16], &dev));
        assert_eq!(y.dims(), [1, 2, 16, 16, 16]);
    }

    #[test]
    fn cpu_shape_16() {
        let dev = Device::flex();
        let cfg = CycleGanConfig::new(1, 1)
            .with_generator_filters(2)
            .with_discriminator_filters(2);
        cfg.validate_window(16).unwrap();
        let x = Tensor::ones([1, 1, 16, 16, 16], &dev);
        for mode in [ResidualMode::Concat, ResidualMode::Add] {
            let g = cfg.clone().with_residual_mode(mode).init_segmenter(1, &dev);
            let y = g.forward(x.clone());
            assert_eq!(y.dims(), [1, 1, 16, 16, 16]);
            let v = y.clone().try_into_vec_as::<f32>().unwrap();
            assert!(v.iter().all(|&p| (-1.0..=1.0).contains(&p)));
            let d = cfg.init_mask_discriminator(2, &dev).forward(y);
            assert_eq!(d.dims(), [1, 1, 1, 1, 1]);
        }
    }

    /// Why training patches must be at least 32: at 16 the discriminator's score is the same
    /// for any input (its last instance norms see one voxel each); at 32 it is not.
    #[test]
    fn discriminator_needs_patches_of_32() {
        let dev = Device::flex();
        let cfg = CycleGanConfig::new(1, 1).with_discriminator_filters(2);
        let d = cfg.init_mask_discriminator(1, &dev);
        let scores = |n: usize| {
            let a = Tensor::<5>::random([1, 1, n, n, n], burn::tensor::Distribution::Default, &dev);
            let b = Tensor::<5>::random([1, 1, n, n, n], burn::tensor::Distribution::Default, &dev)
                * 3.0;
            (d.forward(a) - d.forward(b))
                .abs()
                .max()
                .into_scalar::<f32>()
        };
        assert!(scores(16) < 1e-6, "scores at 16³ differ by {}", scores(16));
        assert!(
            scores(32) > 1e-4,
            "scores at 32³ differ by only {}",
            scores(32)
        );
        assert!(cfg.validate_patch(16).is_err());
        cfg.validate_patch(32).unwrap();
        cfg.validate_patch(48).unwrap();
        assert!(cfg.validate_patch(40).is_err());
    }
}
