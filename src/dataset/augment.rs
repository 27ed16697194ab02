//! Random flips and rotations of training patches (`data.augment`), the augmentations the thesis
//! tried for the U-Net (thesis §5.3.1: "transformations such as rotations and flips
//! (reflections) to patches"; off by default, as in every published model's training).
//!
//! The published augmentation notebook flips each axis with probability ½ and rotates in the
//! plane of the two axes other than the first one of its (X, Y, Z) arrays — here the (z, y)
//! plane, about the x axis — by an angle uniform in [−30°, 30°] with probability 0.4, images
//! interpolated and masks by nearest neighbour, with a constant border. seglab applies the
//! same transforms to each sample of a batch as it is drawn, with its own probabilities
//! ([`AugmentConfig`]): an image and its mask always get the same transform, so they stay
//! aligned; the unpaired domains of the CycleGAN get independent ones.

use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::patches::PatchBatch;

/// Augmentation of training patches; all probabilities 0 (the default) turn it off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Probability of flipping each axis (z, y, x) of a patch, independently (published 0.5).
    pub flip: f64,
    /// Probability of rotating a patch in its (z, y) plane (published 0.4).
    pub rotate: f64,
    /// Largest rotation angle in degrees; angles are uniform in [−max, max] (published 30).
    pub max_degrees: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            flip: 0.0,
            rotate: 0.0,
            max_degrees: 30.0,
        }
    }
}

impl AugmentConfig {
    /// True when no transform can happen.
    pub fn is_off(&self) -> bool {
        self.flip == 0.0 && self.rotate == 0.0
    }

    /// Checks the ranges; the error names `data.augment.<field>` and the value.
    pub fn validate(&self) -> Result<(), String> {
        for (field, p) in [("flip", self.flip), ("rotate", self.rotate)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!(
                    "data.augment.{field} must be a probability in [0, 1], got {p}"
                ));
            }
        }
        if !(self.max_degrees.is_finite() && (0.0..=180.0).contains(&self.max_degrees)) {
            return Err(format!(
                "data.augment.max_degrees must lie within [0, 180], got {}",
                self.max_degrees
            ));
        }
        Ok(())
    }
}

/// The transform drawn for one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transform {
    /// Flip axis z, y, x.
    pub flip: [bool; 3],
    /// Rotation angle in the (z, y) plane, radians (0 = none).
    pub angle: f64,
}

impl Transform {
    /// Draws a transform: each flip with probability `flip`, a rotation with probability
    /// `rotate`.
    pub fn draw(cfg: &AugmentConfig, rng: &mut impl rand::Rng) -> Self {
        let flip = [0; 3].map(|_| rng.random_bool(cfg.flip));
        let angle = if rng.random_bool(cfg.rotate) {
            rng.random_range(-cfg.max_degrees..=cfg.max_degrees)
                .to_radians()
        } else {
            0.0
        };
        Transform { flip, angle }
    }

    fn is_identity(&self) -> bool {
        self.flip == [false; 3] && self.angle == 0.0
    }
}

/// What the image channels of a batch hold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ImageValues {
    /// Intensities: interpolated linearly; `fill` is the value of an empty voxel (0 for
    /// images scaled to [0, 1], −1 for [−1, 1]).
    Intensities { fill: f32 },
    /// Labels, such as the CycleGAN's synthetic masks: nearest neighbour, border 0.
    Labels,
}

/// Augments every sample of `batch` in place: one transform per sample, applied to its image
/// channels (as `values` says) and its mask channels (nearest neighbour, border 0) alike.
pub fn augment_batch(
    batch: &mut PatchBatch,
    cfg: &AugmentConfig,
    values: ImageValues,
    rng: &mut impl rand::Rng,
) {
    if cfg.is_off() {
        return;
    }
    let size = batch.size;
    let per_channel: usize = size.iter().product();
    let image_channels = batch.image_channels;
    let mask_channels = batch.mask_channels.unwrap_or(0);
    for sample in 0..batch.len {
        let t = Transform::draw(cfg, rng);
        if t.is_identity() {
            continue;
        }
        let image = &mut batch.image[sample * image_channels * per_channel..]
            [..image_channels * per_channel];
        let (fill, interp) = match values {
            ImageValues::Intensities { fill } => (fill, Interpolation::Linear),
            ImageValues::Labels => (0.0, Interpolation::Nearest),
        };
        for channel in image.chunks_mut(per_channel) {
            apply(channel, size, &t, fill, interp);
        }
        if mask_channels > 0 {
            let mask = &mut batch.mask[sample * mask_channels * per_channel..]
                [..mask_channels * per_channel];
            for channel in mask.chunks_mut(per_channel) {
                let mut f: Vec<f32> = channel.iter().map(|&m| f32::from(m)).collect();
                apply(&mut f, size, &t, 0.0, Interpolation::Nearest);
                for (m, v) in channel.iter_mut().zip(f) {
                    *m = u8::from(v > 0.5);
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Interpolation {
    Linear,
    Nearest,
}

/// Applies `t` to one (d, h, w) channel in place: the rotation about the patch centre in the
/// (z, y) plane first (each output voxel samples the input at the inversely rotated
/// position; outside the patch the value is `fill`), then the flips.
fn apply(data: &mut [f32], [d, h, w]: [usize; 3], t: &Transform, fill: f32, interp: Interpolation) {
    if t.angle != 0.0 {
        let src = data.to_vec();
        let (cz, cy) = ((d as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
        let (sin, cos) = t.angle.sin_cos();
        let at = |z: isize, y: isize, x: usize| -> f32 {
            if z < 0 || y < 0 || z >= d as isize || y >= h as isize {
                fill
            } else {
                src[(z as usize * h + y as usize) * w + x]
            }
        };
        for z in 0..d {
            for y in 0..h {
                // Inverse rotation of the output position (z, y) about the centre.
                let (dz, dy) = (z as f64 - cz, y as f64 - cy);
                let sz = cz + cos * dz + sin * dy;
                let sy = cy - sin * dz + cos * dy;
                for x in 0..w {
                    data[(z * h + y) * w + x] = match interp {
                        Interpolation::Nearest => at(sz.round() as isize, sy.round() as isize, x),
                        Interpolation::Linear => {
                            let (z0, y0) = (sz.floor(), sy.floor());
                            let (fz, fy) = ((sz - z0) as f32, (sy - y0) as f32);
                            let (z0, y0) = (z0 as isize, y0 as isize);
                            let top = at(z0, y0, x) * (1.0 - fy) + at(z0, y0 + 1, x) * fy;
                            let bottom =
                                at(z0 + 1, y0, x) * (1.0 - fy) + at(z0 + 1, y0 + 1, x) * fy;
                            top * (1.0 - fz) + bottom * fz
                        }
                    };
                }
            }
        }
    }
    if t.flip == [false; 3] {
        return;
    }
    let src = data.to_vec();
    let pick = |i: usize, n: usize, flip: bool| if flip { n - 1 - i } else { i };
    for z in 0..d {
        let sz = pick(z, d, t.flip[0]);
        for y in 0..h {
            let sy = pick(y, h, t.flip[1]);
            for x in 0..w {
                let sx = pick(x, w, t.flip[2]);
                data[(z * h + y) * w + x] = src[(sz * h + sy) * w + sx];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::ChaCha8Rng;

    /// A batch of `n` samples of one image and one mask channel, the image equal to the mask
    /// (an off-centre block, so that every flip and rotation moves it).
    fn batch(n: usize, s: usize) -> PatchBatch {
        let mut mask = Vec::new();
        for _ in 0..n {
            for z in 0..s {
                for y in 0..s {
                    for x in 0..s {
                        let inside = z < s / 2 && (1..s / 2 + 2).contains(&y) && x < s / 3;
                        mask.push(u8::from(inside));
                    }
                }
            }
        }
        PatchBatch {
            image: mask.iter().map(|&m| f32::from(m)).collect(),
            mask,
            len: n,
            size: [s; 3],
            image_channels: 1,
            mask_channels: Some(1),
        }
    }

    #[test]
    fn flips_keep_image_and_mask_identical() {
        let mut b = batch(8, 12);
        let before = b.mask.clone();
        let cfg = AugmentConfig {
            flip: 0.5,
            ..AugmentConfig::default()
        };
        let values = ImageValues::Intensities { fill: 0.0 };
        augment_batch(&mut b, &cfg, values, &mut ChaCha8Rng::seed_from_u64(3));
        assert_ne!(b.mask, before, "some sample must have been flipped");
        let image_as_mask: Vec<u8> = b.image.iter().map(|&v| v as u8).collect();
        assert_eq!(image_as_mask, b.mask);
        // Flips move voxels, never create or drop them.
        let count = |v: &[u8]| v.iter().filter(|&&m| m == 1).count();
        assert_eq!(count(&b.mask), count(&before));
    }

    #[test]
    fn rotations_keep_image_and_mask_aligned() {
        let mut b = batch(6, 16);
        let cfg = AugmentConfig {
            rotate: 1.0,
            max_degrees: 30.0,
            ..AugmentConfig::default()
        };
        let before = b.mask.clone();
        let values = ImageValues::Intensities { fill: 0.0 };
        augment_batch(&mut b, &cfg, values, &mut ChaCha8Rng::seed_from_u64(5));
        assert_ne!(b.mask, before);
        // The interpolated image thresholded at ½ agrees with the nearest-neighbour mask except
        // on a thin rim of the rotated block.
        let disagree = b
            .image
            .iter()
            .zip(&b.mask)
            .filter(|&(&v, &m)| u8::from(v > 0.5) != m)
            .count();
        let fg = b.mask.iter().filter(|&&m| m == 1).count();
        assert!(fg > 0);
        assert!(
            disagree * 10 < fg,
            "{disagree} of {fg} foreground voxels disagree"
        );
    }

    #[test]
    fn a_quarter_turn_maps_z_to_y() {
        // One voxel at (z=0, y=1) in a 3³ patch, rotated by +90° about the centre (1, 1).
        let mut data = vec![0.0f32; 27];
        data[3] = 1.0; // z = 0, y = 1, x = 0
        let t = Transform {
            flip: [false; 3],
            angle: std::f64::consts::FRAC_PI_2,
        };
        apply(&mut data, [3, 3, 3], &t, 0.0, Interpolation::Nearest);
        let at: Vec<usize> = (0..27).filter(|&i| data[i] == 1.0).collect();
        // Output (z, y) samples input (cz + dy, cy − dz): the voxel at (0, 1) lands at
        // z = 1, y = 0.
        assert_eq!(at, vec![3 * 3]);
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let e = AugmentConfig {
            flip: 1.5,
            ..AugmentConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("data.augment.flip"), "{e}");
    }
}
