//! The supervised 3D U-Net of the published code (docs/published-code.md §3.1): four
//! encoder levels of two 3³ convolutions + batch norm + ReLU, a bridge at 1/16 of the patch, four
//! decoder levels (2³ stride-2 transposed convolution, concatenation `[upsampled, skip]`, two
//! convolutions) and a 1³ convolution with a sigmoid per class. 22,582,114 trainable parameters
//! for 2 classes at the published widths.

use burn::config::Config;
use burn::module::Module;
use burn::nn::BatchNorm;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor};

use super::blocks::{
    Conv3dLayer, ConvTranspose3dLayer, Padding, conv_batch_norm_relu, keras_batch_norm, max_pool3d,
};
use super::init::{InitScheme, SeedStream};
use super::{ModelError, ScaleSpec, positive, positive_finite};

/// Encoder/decoder levels of the published U-Net; patches must be divisible by 2⁴.
pub const LEVELS: usize = 4;

/// Configuration of the 3D U-Net. Defaults are the published code's (§3.1).
#[derive(Config, Debug)]
pub struct Unet3dConfig {
    /// Image channels (2 for golgi + nuclei; 3 for the 3-class data, whose third is empty).
    pub in_channels: usize,
    /// Output channels, one sigmoid map per class.
    pub out_channels: usize,
    /// Filters of the first level; level i has `base_filters·2^i`, the bridge 16× (published: 32).
    #[config(default = 32)]
    pub base_filters: usize,
    /// Batch-norm momentum as burn counts it (weight of the new batch): Keras' 0.99 → 0.01.
    #[config(default = 0.01)]
    pub bn_momentum: f64,
    /// Batch-norm ε (Keras default 1e-3).
    #[config(default = 1e-3)]
    pub bn_epsilon: f64,
    /// Kernel initialiser (Keras default Glorot-uniform; biases are always zero).
    #[config(default = "InitScheme::GlorotUniform")]
    pub initializer: InitScheme,
}

/// Two 3³ 'same' convolutions, each followed by batch norm and ReLU (`ConvBlock` of §3.1).
#[derive(Module, Debug)]
pub struct ConvBlock {
    pub conv1: Conv3dLayer,
    pub bn1: BatchNorm,
    pub conv2: Conv3dLayer,
    pub bn2: BatchNorm,
}

impl ConvBlock {
    fn new(
        cin: usize,
        cout: usize,
        cfg: &Unet3dConfig,
        seeds: &mut SeedStream,
        device: &Device,
    ) -> Self {
        let conv = |cin, seeds: &mut SeedStream| {
            Conv3dLayer::new(
                [cin, cout],
                3,
                1,
                Padding::Same,
                cfg.initializer,
                seeds,
                device,
            )
        };
        let bn = || keras_batch_norm(cout, cfg.bn_momentum, cfg.bn_epsilon, device);
        Self {
            conv1: conv(cin, seeds),
            bn1: bn(),
            conv2: conv(cout, seeds),
            bn2: bn(),
        }
    }

    fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let x = conv_batch_norm_relu(&self.conv1, &self.bn1, x);
        conv_batch_norm_relu(&self.conv2, &self.bn2, x)
    }
}

/// The 3D U-Net.
#[derive(Module, Debug)]
pub struct Unet3d {
    pub encoders: Vec<ConvBlock>,
    pub bridge: ConvBlock,
    pub upsamplers: Vec<ConvTranspose3dLayer>,
    pub decoders: Vec<ConvBlock>,
    pub head: Conv3dLayer,
}

impl Unet3dConfig {
    /// The published network for `in_channels` → `out_channels` at a scale.
    pub fn for_scale(
        in_channels: usize,
        out_channels: usize,
        scale: &ScaleSpec,
    ) -> Result<Self, ModelError> {
        let cfg = Self::new(in_channels, out_channels)
            .with_base_filters(scale.width(32, "unet3d.base_filters")?);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field; the error names the field (`model.<field>`) and the value.
    pub fn validate(&self) -> Result<(), ModelError> {
        positive("model.in_channels", self.in_channels)?;
        positive("model.out_channels", self.out_channels)?;
        positive("model.base_filters", self.base_filters)?;
        if !(0.0..=1.0).contains(&self.bn_momentum) {
            return Err(ModelError::config(
                "model.bn_momentum",
                "must be in [0, 1]",
                self.bn_momentum,
            ));
        }
        positive_finite("model.bn_epsilon", self.bn_epsilon)?;
        Ok(())
    }

    /// Checks that cubic patches of `size` voxels pass the four poolings.
    pub fn validate_patch(&self, size: usize) -> Result<(), ModelError> {
        let m = 1 << LEVELS;
        if size == 0 || !size.is_multiple_of(m) {
            return Err(ModelError::config(
                "patch_size",
                format!("must be a positive multiple of {m} for the U-Net"),
                size,
            ));
        }
        Ok(())
    }

    /// Builds the network; kernels are drawn from streams derived from `seed`.
    pub fn init(&self, seed: u64, device: &Device) -> Unet3d {
        let mut seeds = SeedStream::new(seed);
        let widths: Vec<usize> = (0..LEVELS).map(|i| self.base_filters << i).collect();
        let mut encoders = Vec::new();
        let mut cin = self.in_channels;
        for &w in &widths {
            encoders.push(ConvBlock::new(cin, w, self, &mut seeds, device));
            cin = w;
        }
        let bridge_width = self.base_filters << LEVELS;
        let bridge = ConvBlock::new(cin, bridge_width, self, &mut seeds, device);
        let mut upsamplers = Vec::new();
        let mut decoders = Vec::new();
        let mut cin = bridge_width;
        for &w in widths.iter().rev() {
            upsamplers.push(ConvTranspose3dLayer::new(
                [cin, w],
                2,
                2,
                self.initializer,
                &mut seeds,
                device,
            ));
            decoders.push(ConvBlock::new(2 * w, w, self, &mut seeds, device));
            cin = w;
        }
        let head = Conv3dLayer::new(
            [cin, self.out_channels],
            1,
            1,
            Padding::Valid,
            self.initializer,
            &mut seeds,
            device,
        );
        Unet3d {
            encoders,
            bridge,
            upsamplers,
            decoders,
            head,
        }
    }
}

impl Unet3d {
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
            let s = enc.forward(x); // [batch, f·2^i, n/2^i, …]
            x = max_pool3d(s.clone()); // [batch, f·2^i, n/2^(i+1), …]
            skips.push(s);
        }
        let mut x = self.bridge.forward(x); // [batch, 16f, n/16, …]
        for ((up, dec), skip) in self
            .upsamplers
            .iter()
            .zip(&self.decoders)
            .zip(skips.into_iter().rev())
        {
            let u = up.forward(x); // [batch, f·2^i, n/2^i, …]
            x = dec.forward(Tensor::cat(vec![u, skip], 1)); // [batch, f·2^i, n/2^i, …]
        }
        sigmoid(self.head.forward(x)) // [batch, out_channels, n, n, n]
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
        let two = Unet3dConfig::for_scale(2, 2, &paper).unwrap().init(0, &dev);
        assert_eq!(trainable_params(&two), 22_582_114);
        // Keras' total adds the 5,888 batch-norm moving statistics (§3.1).
        assert_eq!(two.num_params(), 22_588_002);
        let three = Unet3dConfig::for_scale(3, 3, &paper).unwrap().init(0, &dev);
        assert_eq!(three.num_params(), 22_588_899);
    }

    #[test]
    fn cpu_shape_16() {
        let dev = Device::flex();
        let cfg = Unet3dConfig::new(1, 2).with_base_filters(2);
        cfg.validate_patch(16).unwrap();
        let net = cfg.init(1, &dev);
        let y = net.forward(Tensor::ones([1, 1, 16, 16, 16], &dev));
        assert_eq!(y.dims(), [1, 2, 16, 16, 16]);
        let v = y.try_into_vec_as::<f32>().unwrap();
        assert!(v.iter().all(|&p| (0.0..=1.0).contains(&p)));
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let err = Unet3dConfig::new(2, 0).validate().unwrap_err().to_string();
        assert_eq!(err, "model.out_channels must be > 0, got 0");
        let err = Unet3dConfig::new(2, 2)
            .validate_patch(24)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("patch_size must be a positive multiple of 16"),
            "{err}"
        );
    }
}
