//! The losses of the published code, each a plain function over burn tensors plus, where it
//! has options, a `#[derive(Config)]` struct whose defaults are the published values:
//!
//! - [`dice_loss`] with [`DiceLossConfig`]: soft Dice over the whole batch, either one global
//!   Dice over all samples and channels (U-Net §3.2, Vox2Vox 2-class §4.3) or per class with
//!   class weights β (Vox2Vox 3-class, the thesis' eq. 5.2), optionally plus a binary
//!   cross-entropy term (`bce_weight`, off as published; nnU-Net's Dice + CE) and a focal term
//!   (`focal_weight`, [`focal_loss`], off as published; the thesis §5.3.1 tried it for the
//!   U-Net);
//! - [`lsgan`]: the least-squares adversarial loss of Vox2Vox and CycleGAN (§4.3, §5.3);
//! - [`weighted_l1`]: the channel-weighted mean absolute error of the CycleGAN cycle and identity
//!   terms (§5.3; Golgi weight 3.5, see [`channel_weights`]).

use burn::config::Config;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::models::ModelError;

/// How the Dice of a multi-channel prediction is formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiceMode {
    /// One Dice over the flattened batch: all samples and all channels together.
    Global,
    /// One Dice per channel (over all samples of the batch), combined with class weights.
    PerClass,
}

/// Soft Dice loss settings. The defaults are the U-Net's (§3.2): one global Dice with smoothing
/// 1 in numerator and denominator. Vox2Vox uses smoothing 0 / 1e-5 (§4.3).
#[derive(Config, Debug, PartialEq)]
pub struct DiceLossConfig {
    /// Global or per-class Dice.
    #[config(default = "DiceMode::Global")]
    pub mode: DiceMode,
    /// Class weights β in mask-channel order (per-class mode only); `None` weighs all classes 1.
    pub class_weights: Option<Vec<f64>>,
    /// Added to 2·Σ(y·p).
    #[config(default = 1.0)]
    pub smooth_numerator: f64,
    /// Added to Σy + Σp.
    #[config(default = 1.0)]
    pub smooth_denominator: f64,
    /// Divide the weighted sum by Σβ (the 3-class Vox2Vox code does; the thesis' eq. 5.2 does not).
    #[config(default = true)]
    pub normalize_weights: bool,
    /// Weight of a voxel-wise binary cross-entropy added to the Dice loss (0 = Dice only, as
    /// published). Soft Dice alone gives small gradients while the sigmoid outputs are still
    /// diffuse, so a U-Net trained for only a few hundred steps stays near 0.5 everywhere;
    /// Dice + CE (as nnU-Net trains) learns the same masks in far fewer steps.
    #[config(default = 0.0)]
    pub bce_weight: f64,
    /// Weight of a focal loss term (Lin et al., ICCV 2017) added to the Dice loss; 0 = off,
    /// as in the published models (the thesis §5.3.1 tried it for the U-Net).
    #[config(default = 0.0)]
    pub focal_weight: f64,
    /// The focal loss' focusing parameter γ (Lin et al.: 2).
    #[config(default = 2.0)]
    pub focal_gamma: f64,
    /// The focal loss' foreground weight α; background voxels weigh 1 − α (Lin et al.: 0.25).
    #[config(default = 0.25)]
    pub focal_alpha: f64,
}

impl DiceLossConfig {
    /// Checks the settings against the number of mask channels; errors name `loss.<field>`.
    pub fn validate(&self, channels: usize) -> Result<(), ModelError> {
        if !(self.smooth_numerator >= 0.0 && self.smooth_numerator.is_finite()) {
            return Err(ModelError::config(
                "loss.smooth_numerator",
                "must be ≥ 0",
                self.smooth_numerator,
            ));
        }
        if !(self.smooth_denominator > 0.0 && self.smooth_denominator.is_finite()) {
            return Err(ModelError::config(
                "loss.smooth_denominator",
                "must be > 0 (it keeps an empty batch finite)",
                self.smooth_denominator,
            ));
        }
        for (field, v) in [
            ("loss.bce_weight", self.bce_weight),
            ("loss.focal_weight", self.focal_weight),
            ("loss.focal_gamma", self.focal_gamma),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(ModelError::config(field, "must be finite and ≥ 0", v));
            }
        }
        if !(0.0..=1.0).contains(&self.focal_alpha) {
            return Err(ModelError::config(
                "loss.focal_alpha",
                "must lie within [0, 1]",
                self.focal_alpha,
            ));
        }
        if let Some(w) = &self.class_weights {
            if w.len() != channels {
                return Err(ModelError::config(
                    "loss.class_weights",
                    format!("must have one weight per mask channel ({channels})"),
                    format!("{w:?}"),
                ));
            }
            if w.iter().any(|v| !(*v >= 0.0 && v.is_finite())) || w.iter().sum::<f64>() <= 0.0 {
                return Err(ModelError::config(
                    "loss.class_weights",
                    "must be finite, ≥ 0 and not all 0",
                    format!("{w:?}"),
                ));
            }
            if self.mode == DiceMode::Global {
                return Err(ModelError::config(
                    "loss.class_weights",
                    "only apply with loss.mode = \"per-class\"",
                    format!("{w:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// 1 − soft Dice between predicted probabilities and binary targets.
///
/// Global: 1 − (2Σyp + s_n)/(Σy + Σp + s_d) over every element of the batch. Per class:
/// Σ_c β_c·(1 − Dice_c) (divided by Σβ when `normalize_weights`), Dice_c over channel c of all
/// samples. With `bce_weight` w > 0, w · mean binary cross-entropy is added; with
/// `focal_weight` f > 0, f · [`focal_loss`].
///
/// # Shapes
///
/// - pred, target: `[batch, channels, depth, height, width]`
/// - output: `[1]`
pub fn dice_loss(pred: Tensor<5>, target: Tensor<5>, cfg: &DiceLossConfig) -> Tensor<1> {
    let mut loss = soft_dice_loss(pred.clone(), target.clone(), cfg);
    if cfg.bce_weight > 0.0 {
        loss = loss + binary_cross_entropy(pred.clone(), target.clone()) * cfg.bce_weight;
    }
    if cfg.focal_weight > 0.0 {
        loss = loss + focal_loss(pred, target, cfg.focal_gamma, cfg.focal_alpha) * cfg.focal_weight;
    }
    loss
}

/// The binary focal loss of Lin et al. (ICCV 2017, eq. 5), averaged over all elements:
/// −α_t (1 − p_t)^γ ln p_t with p_t = p and α_t = α where y = 1, p_t = 1 − p and α_t = 1 − α
/// where y = 0; p clamped to [1e-7, 1 − 1e-7] as in [`binary_cross_entropy`]. γ = 0 and α = ½
/// give half the cross-entropy.
pub fn focal_loss<const D: usize>(
    pred: Tensor<D>,
    target: Tensor<D>,
    gamma: f64,
    alpha: f64,
) -> Tensor<1> {
    let eps = 1e-7;
    let p = pred.clamp(eps, 1.0 - eps);
    // p_t = y·p + (1 − y)·(1 − p) = 1 − y − p + 2·y·p
    let p_t = target.clone().neg() + 1.0 - p.clone() + target.clone() * p * 2.0;
    let alpha_t = target * (2.0 * alpha - 1.0) + (1.0 - alpha);
    let modulating = (p_t.clone().neg() + 1.0).powf_scalar(gamma);
    (alpha_t * modulating * p_t.log()).mean().neg()
}

/// Mean of −[y·ln p + (1−y)·ln(1−p)] over all elements, with p clamped to [1e-7, 1 − 1e-7] as
/// Keras does, so a saturated sigmoid gives a finite loss.
pub fn binary_cross_entropy<const D: usize>(pred: Tensor<D>, target: Tensor<D>) -> Tensor<1> {
    let eps = 1e-7;
    let p = pred.clamp(eps, 1.0 - eps);
    let pos = target.clone() * p.clone().log();
    let neg = (target.neg() + 1.0) * (p.neg() + 1.0).log();
    (pos + neg).mean().neg()
}

fn soft_dice_loss(pred: Tensor<5>, target: Tensor<5>, cfg: &DiceLossConfig) -> Tensor<1> {
    let (sn, sd) = (cfg.smooth_numerator, cfg.smooth_denominator);
    match cfg.mode {
        DiceMode::Global => {
            let inter = (pred.clone() * target.clone()).sum(); // [1]
            let total = pred.sum() + target.sum(); // [1]
            let dice = (inter * 2.0 + sn) / (total + sd);
            dice.neg() + 1.0
        }
        DiceMode::PerClass => {
            let [_, c, _, _, _] = pred.dims();
            let per_channel = |t: Tensor<5>| t.sum_dims(&[0, 2, 3, 4]).reshape([c]); // [channels]
            let inter = per_channel(pred.clone() * target.clone());
            let total = per_channel(pred) + per_channel(target);
            let loss = ((inter * 2.0 + sn) / (total + sd)).neg() + 1.0; // [channels]
            let weights = cfg.class_weights.clone().unwrap_or_else(|| vec![1.0; c]);
            let norm = if cfg.normalize_weights {
                weights.iter().sum::<f64>()
            } else {
                1.0
            };
            let w = weights
                .iter()
                .map(|&v| (v / norm) as f32)
                .collect::<Vec<_>>();
            let w = Tensor::<1>::from_data(TensorData::new(w, [c]), &loss.device());
            (loss * w).sum()
        }
    }
}

/// Least-squares GAN loss: mean((scores − target)²), target 1 for "real", 0 for "generated".
///
/// # Shapes
///
/// - scores: `[batch, 1, d, h, w]` (any shape)
/// - output: `[1]`
pub fn lsgan<const D: usize>(scores: Tensor<D>, target: f64) -> Tensor<1> {
    (scores - target).square().mean()
}

/// Channel-weighted L1 ("wmae", §5.3): Σ_c w_c · mean over batch and voxels of |y_c − ŷ_c|, not
/// normalised by Σw.
///
/// # Shapes
///
/// - pred, target: `[batch, channels, depth, height, width]`, `weights.len() == channels`
/// - output: `[1]`
pub fn weighted_l1(pred: Tensor<5>, target: Tensor<5>, weights: &[f64]) -> Tensor<1> {
    let [_, c, _, _, _] = pred.dims();
    assert_eq!(weights.len(), c, "one L1 weight per channel");
    let per_channel = (pred - target).abs().mean_dims(&[0, 2, 3, 4]).reshape([c]); // [channels]
    let w = weights.iter().map(|&v| v as f32).collect::<Vec<_>>();
    let w = Tensor::<1>::from_data(TensorData::new(w, [c]), &per_channel.device());
    (per_channel * w).sum()
}

/// Per-channel L1 weights: `golgi_weight` for the channel named `golgi`, 1 for the others
/// (the paper's 3.5 : 1, §5.3).
pub fn channel_weights<S: AsRef<str>>(names: &[S], golgi_weight: f64) -> Vec<f64> {
    names
        .iter()
        .map(|n| {
            if n.as_ref() == "golgi" {
                golgi_weight
            } else {
                1.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn t(v: &[f32], shape: [usize; 5]) -> Tensor<5> {
        Tensor::from_data(TensorData::new(v.to_vec(), shape), &Device::flex())
    }

    fn scalar(x: Tensor<1>) -> f64 {
        x.into_scalar::<f32>() as f64
    }

    #[test]
    fn global_dice_is_one_dice_over_everything() {
        // 2 samples × 2 channels × 1×1×2 voxels.
        let p = t(&[0.5, 1.0, 0.0, 0.25, 1.0, 0.0, 0.5, 0.5], [2, 2, 1, 1, 2]);
        let y = t(&[1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0], [2, 2, 1, 1, 2]);
        // Σyp = 0.5 + 1 + 1 + 0.5 = 3; Σy = 4; Σp = 3.75.
        let l = scalar(dice_loss(p.clone(), y.clone(), &DiceLossConfig::new()));
        assert!((l - (1.0 - 7.0 / 8.75)).abs() < 1e-6, "{l}");
        let vox = DiceLossConfig::new()
            .with_smooth_numerator(0.0)
            .with_smooth_denominator(1e-5);
        let l = scalar(dice_loss(p, y, &vox));
        assert!((l - (1.0 - 6.0 / (7.75 + 1e-5))).abs() < 1e-6, "{l}");
    }

    #[test]
    fn per_class_dice_weights_classes() {
        // 1 sample, channel 0 perfect, channel 1 all wrong.
        let p = t(&[1.0, 0.0, 0.0, 1.0], [1, 2, 1, 1, 2]);
        let y = t(&[1.0, 0.0, 1.0, 0.0], [1, 2, 1, 1, 2]);
        let cfg = DiceLossConfig::new()
            .with_mode(DiceMode::PerClass)
            .with_smooth_numerator(0.0)
            .with_smooth_denominator(1e-5)
            .with_class_weights(Some(vec![6.63, 1.0]));
        cfg.validate(2).unwrap();
        // DL_0 = 1 − 2/(2 + 1e-5) ≈ 5e-6, DL_1 = 1 − 0/(2 + 1e-5) = 1.
        let dl0 = 1.0 - 2.0 / (2.0 + 1e-5);
        let l = scalar(dice_loss(p.clone(), y.clone(), &cfg));
        assert!((l - (6.63 * dl0 + 1.0) / 7.63).abs() < 1e-6, "{l}");
        let thesis = cfg.clone().with_normalize_weights(false);
        let l = scalar(dice_loss(p, y, &thesis));
        assert!((l - (6.63 * dl0 + 1.0)).abs() < 1e-6, "{l}");
    }

    #[test]
    fn bce_term_adds_the_weighted_cross_entropy() {
        let p = t(&[0.9, 0.2], [1, 1, 1, 1, 2]);
        let y = t(&[1.0, 0.0], [1, 1, 1, 1, 2]);
        let bce = -(0.9f64.ln() + 0.8f64.ln()) / 2.0;
        assert!((scalar(binary_cross_entropy(p.clone(), y.clone())) - bce).abs() < 1e-6);
        let dice_only = scalar(dice_loss(p.clone(), y.clone(), &DiceLossConfig::new()));
        let cfg = DiceLossConfig::new().with_bce_weight(0.5);
        let l = scalar(dice_loss(p, y.clone(), &cfg));
        assert!((l - (dice_only + 0.5 * bce)).abs() < 1e-6, "{l}");
        // A saturated wrong prediction stays finite.
        let wrong = t(&[0.0, 1.0], [1, 1, 1, 1, 2]);
        assert!(scalar(binary_cross_entropy(wrong, y)).is_finite());
        let err = DiceLossConfig::new().with_bce_weight(-1.0).validate(1);
        assert!(err.unwrap_err().to_string().starts_with("loss.bce_weight"));
    }

    #[test]
    fn focal_loss_matches_the_formula() {
        let p = t(&[0.9, 0.2, 0.6, 0.01], [1, 1, 1, 2, 2]);
        let y = t(&[1.0, 0.0, 0.0, 1.0], [1, 1, 1, 2, 2]);
        // −α_t (1 − p_t)^γ ln p_t, γ = 2, α = 0.25, by hand:
        let terms = [
            0.25 * 0.1f64.powi(2) * 0.9f64.ln(),   // y = 1, p_t = 0.9
            0.75 * 0.2f64.powi(2) * 0.8f64.ln(),   // y = 0, p_t = 0.8
            0.75 * 0.6f64.powi(2) * 0.4f64.ln(),   // y = 0, p_t = 0.4
            0.25 * 0.99f64.powi(2) * 0.01f64.ln(), // y = 1, p_t = 0.01
        ];
        let want = -terms.iter().sum::<f64>() / 4.0;
        let got = scalar(focal_loss(p.clone(), y.clone(), 2.0, 0.25));
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // γ = 0, α = ½: half the binary cross-entropy.
        let half_bce = scalar(binary_cross_entropy(p.clone(), y.clone())) / 2.0;
        assert!((scalar(focal_loss(p.clone(), y.clone(), 0.0, 0.5)) - half_bce).abs() < 1e-6);
        // The Dice loss adds it with its weight.
        let dice = DiceLossConfig::new();
        let with = dice.clone().with_focal_weight(3.0);
        let diff = scalar(dice_loss(p.clone(), y.clone(), &with)) - scalar(dice_loss(p, y, &dice));
        assert!((diff - 3.0 * want).abs() < 1e-5, "{diff}");
    }

    #[test]
    fn dice_settings_are_checked() {
        let cfg = DiceLossConfig::new()
            .with_mode(DiceMode::PerClass)
            .with_class_weights(Some(vec![1.0]));
        let err = cfg.validate(2).unwrap_err().to_string();
        assert!(
            err.starts_with("loss.class_weights must have one weight per mask channel (2)"),
            "{err}"
        );
        let err = DiceLossConfig::new()
            .with_class_weights(Some(vec![1.0, 2.0]))
            .validate(2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("per-class"), "{err}");
        assert!(
            DiceLossConfig::new()
                .with_smooth_denominator(0.0)
                .validate(2)
                .is_err()
        );
    }

    #[test]
    fn lsgan_and_weighted_l1() {
        let s = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 0.0, 0.5, 2.0], [2, 2]),
            &Device::flex(),
        );
        assert!((scalar(lsgan(s.clone(), 1.0)) - (0.0 + 1.0 + 0.25 + 1.0) / 4.0).abs() < 1e-6);
        assert!((scalar(lsgan(s, 0.0)) - (1.0 + 0.0 + 0.25 + 4.0) / 4.0).abs() < 1e-6);

        let p = t(&[1.0, 1.0, 0.0, 0.0], [1, 2, 1, 1, 2]);
        let y = t(&[0.0, 1.0, 1.0, 1.0], [1, 2, 1, 1, 2]);
        // channel 0: mean |·| = 0.5; channel 1: 1.0 → 3.5·0.5 + 1·1.
        let w = channel_weights(&["golgi", "nuclei"], 3.5);
        assert_eq!(w, vec![3.5, 1.0]);
        assert!((scalar(weighted_l1(p, y, &w)) - 2.75).abs() < 1e-6);
    }
}
