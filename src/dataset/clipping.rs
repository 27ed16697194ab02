//! Will a preprocessing hide the objects? For each image channel and the mask channel it shows
//! (`auto_floor::paired_classes`): the share of that class's annotated voxels the
//! preprocessing maps to 0, and the Dice of Otsu's threshold on the preprocessed channel (the
//! `threshold` baseline of `train/trial.rs`), over a dataset's annotated volumes.
//!
//! `seglab data info` prints these figures; `sweep plan` / `sweep run` stop on them
//! (`experiment::preflight`).

use serde::Serialize;

use super::auto_floor::paired_classes;
use super::preprocess::Preprocessor;
use super::threshold::otsu_threshold;
use super::{Dataset, DatasetError};

/// The share of a class's annotated voxels a preprocessing may map to 0 before `data info`
/// warns and `sweep plan` / `sweep run` stop (`--max-zeroed` changes it for a sweep).
pub const DEFAULT_MAX_ZEROED: f64 = 0.10;

/// The figures of one image channel under one preprocessing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClipFigure {
    pub channel: String,
    /// The mask channel the image channel shows.
    pub class: String,
    /// The low percentile of the channel's stretch (`None`: stretch off).
    pub floor: Option<f64>,
    /// Share of the class's annotated voxels mapped to 0, pooled over the annotated volumes.
    pub zeroed: f64,
    /// Otsu's Dice on the preprocessed channel, mean over the annotated volumes.
    pub otsu_dice: f64,
    /// The annotated volumes measured.
    pub volumes: usize,
}

/// Running sums of one channel under one preprocessing.
#[derive(Clone, Copy, Default)]
struct Tally {
    foreground: usize,
    zeroed: usize,
    dice_sum: f64,
    volumes: usize,
}

/// The figures of each preprocessing in `preprocessors` (outer) for each image channel that
/// shows a mask channel with annotated voxels (inner), over the volumes of `dataset` that
/// have a mask. Each volume is loaded once. Empty when no volume has a mask.
pub fn measure_clipping(
    dataset: &Dataset,
    preprocessors: &[Preprocessor],
) -> Result<Vec<Vec<ClipFigure>>, DatasetError> {
    let spec = dataset.spec();
    let pairs: Vec<(usize, usize)> = paired_classes(&spec.image_channels, &spec.mask_channels)
        .into_iter()
        .enumerate()
        .filter_map(|(c, k)| k.map(|k| (c, k)))
        .collect();
    let mut tallies = vec![vec![Tally::default(); pairs.len()]; preprocessors.len()];
    for entry in spec.volumes.iter().filter(|v| v.mask.is_some()) {
        let v = dataset.load(&entry.id)?;
        let Some(mask) = &v.mask else { continue };
        for (pre, tally) in preprocessors.iter().zip(tallies.iter_mut()) {
            let (image, _) = pre.apply(&v.image, v.dtype)?;
            let zero = pre.scale().apply(0.0);
            for (&(c, k), t) in pairs.iter().zip(tally.iter_mut()) {
                let (values, fg) = (image.channel(c), mask.channel(k));
                let n_fg = fg.iter().filter(|&&m| m != 0).count();
                if n_fg == 0 {
                    continue;
                }
                let zeroed = pre.stretches().map_or(0, |_| {
                    values
                        .iter()
                        .zip(fg)
                        .filter(|&(&x, &m)| m != 0 && x == zero)
                        .count()
                });
                t.foreground += n_fg;
                t.zeroed += zeroed;
                t.dice_sum += otsu_dice(values, fg);
                t.volumes += 1;
            }
        }
    }
    Ok(preprocessors
        .iter()
        .zip(tallies)
        .map(|(pre, tally)| {
            let floors = pre.pairs();
            pairs
                .iter()
                .zip(tally)
                .filter(|(_, t)| t.volumes > 0)
                .map(|(&(c, k), t)| ClipFigure {
                    channel: spec.image_channels[c].clone(),
                    class: spec.mask_channels[k].clone(),
                    floor: floors.as_ref().map(|p| p[c][0]),
                    zeroed: t.zeroed as f64 / t.foreground.max(1) as f64,
                    otsu_dice: t.dice_sum / t.volumes.max(1) as f64,
                    volumes: t.volumes,
                })
                .collect()
        })
        .collect())
}

/// Dice of `values > otsu(values)` against the 0/1 mask `fg` (0 when Otsu has no threshold).
fn otsu_dice(values: &[f32], fg: &[u8]) -> f64 {
    let Some(t) = otsu_threshold(values) else {
        return 0.0;
    };
    let (mut both, mut pred, mut truth) = (0usize, 0usize, 0usize);
    for (&v, &m) in values.iter().zip(fg) {
        let p = v > t;
        let g = m != 0;
        both += usize::from(p && g);
        pred += usize::from(p);
        truth += usize::from(g);
    }
    if pred + truth == 0 {
        return 1.0;
    }
    2.0 * both as f64 / (pred + truth) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otsu_dice_of_separated_and_mixed_channels() {
        let mut v: Vec<f32> = vec![10.0; 80];
        v.extend(vec![200.0; 20]);
        let mut fg = vec![0u8; 80];
        fg.extend(vec![1u8; 20]);
        assert_eq!(otsu_dice(&v, &fg), 1.0);
        // Half the objects as dim as the background: recall 0.5, precision 1.
        for x in &mut v[80..90] {
            *x = 10.0;
        }
        assert!((otsu_dice(&v, &fg) - 2.0 / 3.0).abs() < 1e-12);
    }
}
