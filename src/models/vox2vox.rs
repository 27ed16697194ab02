//! The supervised Vox2Vox of the published code (docs/published-code.md §4): a 4-level U-Net
//! generator with a concatenating ("dense-like") 4-block bottleneck and a conditional 3D
//! PatchGAN discriminator on `[image, mask]`. Kernels 4³, LeakyReLU 0.3 (Keras default),
//! dropout 0.2, He-normal init and keras-contrib instance norm with `axis=None` (statistics
//! over C·D·H·W with one scalar γ, β per layer). 150,498,710 (G) and 11,060,167 (D) trainable
//! parameters for 2 classes at the published widths.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::blocks::{
    Conv3dLayer, ConvTranspose3dLayer, Dropout3d, DropoutRng, InstanceNorm3d, Padding, activate,
};
use super::init::{InitScheme, SeedStream};
use super::{ModelError, ScaleSpec, non_negative_finite, positive, positive_finite};

/// Which statistics the Vox2Vox instance norms use (docs/published-code.md §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vox2VoxNorm {
    /// As coded (keras-contrib `axis=None`): per sample over all channels and voxels, scalar
    /// γ and β — effectively a layer norm.
    Scalar,
    /// A true instance norm: per sample and channel, per-channel γ and β.
    PerChannel,
}

/// Configuration of the Vox2Vox generator and discriminator. Defaults are the published
/// code's (§4.1, §4.2).
#[derive(Config, Debug)]
pub struct Vox2VoxConfig {
    /// Image channels.
    pub in_channels: usize,
    /// Mask channels (one sigmoid map per class).
    pub out_channels: usize,
    /// Generator filters of the first level; the levels have 1, 2, 4 and 8 times this (64).
    #[config(default = 64)]
    pub generator_filters: usize,
    /// Concatenating bottleneck blocks at 1/16 of the patch (4).
    #[config(default = 4)]
    pub bottleneck_blocks: usize,
    /// Discriminator filters of the first layer; then 2, 4 and 8 times this (64).
    #[config(default = 64)]
    pub discriminator_filters: usize,
    /// Instance-norm statistics.
    #[config(default = "Vox2VoxNorm::Scalar")]
    pub norm: Vox2VoxNorm,
    /// ε added to the standard deviation in the norms (keras-contrib default 1e-3).
    #[config(default = 1e-3)]
    pub norm_epsilon: f64,
    /// Negative slope of the LeakyReLUs (Keras default 0.3; pix2pix uses 0.2).
    #[config(default = 0.3)]
    pub leaky_slope: f64,
    /// Dropout rate in the encoder, decoder and discriminator blocks (0.2).
    #[config(default = 0.2)]
    pub dropout: f64,
    /// Kernel initialiser (He-normal truncated; biases are always zero).
    #[config(default = "InitScheme::HeNormal")]
    pub initializer: InitScheme,
}

/// Convolution → [instance norm] → LeakyReLU → [dropout]: one encoder or discriminator block.
#[derive(Module, Debug)]
pub struct DownBlock {
    pub conv: Conv3dLayer,
    pub norm: Option<InstanceNorm3d>,
    pub dropout: Option<Dropout3d>,
    pub slope: f64,
}

impl DownBlock {
    fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let y = self.conv.forward(x);
        let y = match &self.norm {
            Some(norm) => norm.forward_activated(y, self.slope),
            None => activate(y, self.slope),
        };
        match &self.dropout {
            Some(d) => d.forward(y),
            None => y,
        }
    }
}

/// A bottleneck block: y = conv(x), output `[LReLU(IN(y)), y]` (activated first, raw second).
#[derive(Module, Debug)]
pub struct DenseBlock {
    pub conv: Conv3dLayer,
    pub norm: InstanceNorm3d,
    pub slope: f64,
}

/// Transposed convolution → IN → LReLU → concat skip → dropout: one decoder level.
#[derive(Module, Debug)]
pub struct UpBlock {
    pub up: ConvTranspose3dLayer,
    pub norm: InstanceNorm3d,
    pub dropout: Dropout3d,
    pub slope: f64,
}

/// The Vox2Vox generator (segmenter).
#[derive(Module, Debug)]
pub struct Vox2VoxGenerator {
    pub encoders: Vec<DownBlock>,
    pub bottleneck_in: DownBlock,
    pub bottleneck: Vec<DenseBlock>,
    pub decoders: Vec<UpBlock>,
    pub out: ConvTranspose3dLayer,
    #[module(skip)]
    pub dropout_rng: DropoutRng,
}

/// The conditional 3D PatchGAN discriminator: 3 strided blocks, then two 'valid' 4³
/// convolutions after one voxel of zero padding each; linear output (LSGAN).
#[derive(Module, Debug)]
pub struct Vox2VoxDiscriminator {
    pub blocks: Vec<DownBlock>,
    pub conv4: DownBlock,
    pub out: Conv3dLayer,
    #[module(skip)]
    pub dropout_rng: DropoutRng,
}

impl Vox2VoxConfig {
    /// The published networks for `in_channels` → `out_channels` at a scale.
    pub fn for_scale(
        in_channels: usize,
        out_channels: usize,
        scale: &ScaleSpec,
    ) -> Result<Self, ModelError> {
        let cfg = Self::new(in_channels, out_channels)
            .with_generator_filters(scale.width(64, "vox2vox.generator_filters")?)
            .with_discriminator_filters(scale.width(64, "vox2vox.discriminator_filters")?);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field; the error names the field (`model.<field>`) and the value.
    pub fn validate(&self) -> Result<(), ModelError> {
        positive("model.in_channels", self.in_channels)?;
        positive("model.out_channels", self.out_channels)?;
        positive("model.generator_filters", self.generator_filters)?;
        positive("model.discriminator_filters", self.discriminator_filters)?;
        positive_finite("model.norm_epsilon", self.norm_epsilon)?;
        non_negative_finite("model.leaky_slope", self.leaky_slope)?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::config(
                "model.dropout",
                "must be in [0, 1)",
                self.dropout,
            ));
        }
        Ok(())
    }

    /// Checks that cubic patches of `size` voxels fit both networks: the generator halves the
    /// patch four times and the discriminator's two valid 4³ convolutions need size/8 ≥ 3, so
    /// sizes are multiples of 16 from 32 up.
    pub fn validate_patch(&self, size: usize) -> Result<(), ModelError> {
        if size < 32 || !size.is_multiple_of(16) {
            return Err(ModelError::config(
                "patch_size",
                "must be a multiple of 16 and ≥ 32 for Vox2Vox",
                size,
            ));
        }
        Ok(())
    }

    fn norm(&self, channels: usize, device: &Device) -> InstanceNorm3d {
        InstanceNorm3d::new(
            channels,
            self.norm == Vox2VoxNorm::PerChannel,
            self.norm_epsilon,
            device,
        )
    }

    #[allow(clippy::too_many_arguments)] // one argument per column of the published layer table
    fn down(
        &self,
        channels: [usize; 2],
        stride: usize,
        padding: Padding,
        norm: bool,
        dropout: Option<&DropoutRng>,
        seeds: &mut SeedStream,
        device: &Device,
    ) -> DownBlock {
        DownBlock {
            conv: Conv3dLayer::new(
                channels,
                4,
                stride,
                padding,
                self.initializer,
                seeds,
                device,
            ),
            norm: norm.then(|| self.norm(channels[1], device)),
            dropout: dropout.map(|rng| Dropout3d::new(self.dropout, rng.clone())),
            slope: self.leaky_slope,
        }
    }

    /// The stride-2 'same' down blocks from `cin` channels through `widths`, each with dropout
    /// and all but the first with a norm: the generator's encoder and the discriminator's
    /// first three blocks.
    fn encoder(
        &self,
        cin: usize,
        widths: [usize; 3],
        rng: &DropoutRng,
        seeds: &mut SeedStream,
        device: &Device,
    ) -> Vec<DownBlock> {
        let mut cin = cin;
        let mut blocks = Vec::new();
        for (i, w) in widths.into_iter().enumerate() {
            blocks.push(self.down([cin, w], 2, Padding::Same, i > 0, Some(rng), seeds, device));
            cin = w;
        }
        blocks
    }

    /// Builds the generator; kernels come from streams derived from `seed`, dropout masks from
    /// a stream the training step reseeds (see [`DropoutRng`]).
    pub fn init_generator(&self, seed: u64, device: &Device) -> Vox2VoxGenerator {
        let mut seeds = SeedStream::new(seed);
        let rng = DropoutRng::new(seeds.next_seed());
        let f = self.generator_filters;
        let widths = [f, 2 * f, 4 * f];
        let encoders = self.encoder(self.in_channels, widths, &rng, &mut seeds, device);
        let cin = widths[2];
        let b = 8 * f;
        let bottleneck_in = self.down([cin, b], 2, Padding::Same, true, None, &mut seeds, device);
        let mut bottleneck = Vec::new();
        let mut cin = b;
        for _ in 0..self.bottleneck_blocks {
            bottleneck.push(DenseBlock {
                conv: Conv3dLayer::new(
                    [cin, b],
                    4,
                    1,
                    Padding::Same,
                    self.initializer,
                    &mut seeds,
                    device,
                ),
                norm: self.norm(b, device),
                slope: self.leaky_slope,
            });
            cin = 2 * b;
        }
        let mut decoders = Vec::new();
        for &w in widths.iter().rev() {
            decoders.push(UpBlock {
                up: ConvTranspose3dLayer::new([cin, w], 4, 2, self.initializer, &mut seeds, device),
                norm: self.norm(w, device),
                dropout: Dropout3d::new(self.dropout, rng.clone()),
                slope: self.leaky_slope,
            });
            cin = 2 * w;
        }
        let out = ConvTranspose3dLayer::new(
            [cin, self.out_channels],
            4,
            2,
            self.initializer,
            &mut seeds,
            device,
        );
        Vox2VoxGenerator {
            encoders,
            bottleneck_in,
            bottleneck,
            decoders,
            out,
            dropout_rng: rng,
        }
    }

    /// Builds the discriminator (input: image and mask channels concatenated).
    pub fn init_discriminator(&self, seed: u64, device: &Device) -> Vox2VoxDiscriminator {
        let mut seeds = SeedStream::new(seed);
        let rng = DropoutRng::new(seeds.next_seed());
        let f = self.discriminator_filters;
        let cin = self.in_channels + self.out_channels;
        let blocks = self.encoder(cin, [f, 2 * f, 4 * f], &rng, &mut seeds, device);
        let cin = 4 * f;
        let conv4 = self.down(
            [cin, 8 * f],
            1,
            Padding::Zeros(1),
            true,
            None,
            &mut seeds,
            device,
        );
        let out = Conv3dLayer::new(
            [8 * f, 1],
            4,
            1,
            Padding::Zeros(1),
            self.initializer,
            &mut seeds,
            device,
        );
        Vox2VoxDiscriminator {
            blocks,
            conv4,
            out,
            dropout_rng: rng,
        }
    }
}

impl Vox2VoxGenerator {
    /// Per-class probabilities (sigmoid).
    ///
    /// # Shapes
    ///
    /// - input: `[batch, in_channels, depth, height, width]`, sizes divisible by 16
    /// - output: `[batch, out_channels, depth, height, width]`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let mut skips = Vec::with_capacity(self.encoders.len());
        let mut x = x;
        for enc in &self.encoders {
            x = enc.forward(x); // [batch, f·2^i, n/2^(i+1), …]
            skips.push(x.clone());
        }
        let mut x = self.bottleneck_in.forward(x); // [batch, 8f, n/16, …]
        for block in &self.bottleneck {
            let y = block.conv.forward(x); // [batch, 8f, n/16, …]
            let a = block.norm.forward_activated(y.clone(), block.slope);
            x = Tensor::cat(vec![a, y], 1); // [batch, 16f, n/16, …]
        }
        for (dec, skip) in self.decoders.iter().zip(skips.into_iter().rev()) {
            let u = dec.norm.forward_activated(dec.up.forward(x), dec.slope); // [batch, w, 2m, …]
            x = dec.dropout.forward(Tensor::cat(vec![u, skip], 1)); // [batch, 2w, 2m, …]
        }
        sigmoid(self.out.forward(x)) // [batch, out_channels, n, n, n]
    }

    /// The generator's dropout random source (reseeded by the training step).
    pub fn dropout_rng(&self) -> &DropoutRng {
        &self.dropout_rng
    }
}

impl Vox2VoxDiscriminator {
    /// Patch realism scores (linear; LSGAN targets 1 = real, 0 = generated).
    ///
    /// # Shapes
    ///
    /// - image: `[batch, in_channels, n, n, n]`, mask: `[batch, out_channels, n, n, n]`
    /// - output: `[batch, 1, n/8 − 2, n/8 − 2, n/8 − 2]` (6³ for 64³ patches)
    pub fn forward(&self, image: Tensor<5>, mask: Tensor<5>) -> Tensor<5> {
        let mut x = Tensor::cat(vec![image, mask], 1); // [batch, in + out, n, n, n]
        for block in &self.blocks {
            x = block.forward(x); // [batch, f·2^i, n/2^(i+1), …]
        }
        let x = self.conv4.forward(x); // [batch, 8f, n/8 − 1, …]
        self.out.forward(x) // [batch, 1, n/8 − 2, …]
    }

    /// The discriminator's dropout random source (reseeded by the training step).
    pub fn dropout_rng(&self) -> &DropoutRng {
        &self.dropout_rng
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
        let two = Vox2VoxConfig::for_scale(2, 2, &paper).unwrap();
        assert_eq!(trainable_params(&two.init_generator(0, &dev)), 150_498_710);
        assert_eq!(
            trainable_params(&two.init_discriminator(0, &dev)),
            11_060_167
        );
        let three = Vox2VoxConfig::for_scale(3, 3, &paper).unwrap();
        assert_eq!(
            trainable_params(&three.init_generator(0, &dev)),
            150_510_999
        );
        assert_eq!(
            trainable_params(&three.init_discriminator(0, &dev)),
            11_068_359
        );
        // Per-channel norms add 2·(C − 1) parameters per norm layer.
        let per_channel = two.clone().with_norm(Vox2VoxNorm::PerChannel);
        let g = trainable_params(&per_channel.init_generator(0, &dev));
        let norms = [128, 256, 512, 512, 512, 512, 512, 256, 128, 64];
        assert_eq!(
            g,
            150_498_710 + norms.iter().map(|c| 2 * (c - 1)).sum::<usize>()
        );
    }

    #[test]
    fn cpu_shape_32() {
        let dev = Device::flex();
        let cfg = Vox2VoxConfig::new(1, 2)
            .with_generator_filters(2)
            .with_discriminator_filters(2);
        cfg.validate_patch(32).unwrap();
        assert!(cfg.validate_patch(16).is_err());
        let x = Tensor::ones([1, 1, 32, 32, 32], &dev);
        let y = cfg.init_generator(1, &dev).forward(x.clone());
        assert_eq!(y.dims(), [1, 2, 32, 32, 32]);
        let d = cfg.init_discriminator(2, &dev).forward(x, y);
        assert_eq!(d.dims(), [1, 1, 2, 2, 2]);
    }
}
