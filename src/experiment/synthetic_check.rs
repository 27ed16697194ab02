//! The synthetic-mask check of the preflight (`experiment::preflight`): for a CycleGAN trial
//! that learns from synthetic masks, the foreground share of each class in the masks the
//! trial generates for its training volumes, beside the share in those volumes' annotated
//! masks, where the dataset has them.
//!
//! The published generator draws a fixed number of objects per volume (`synth.pairs`, 45–69
//! per published crop; docs/published-code.md §2). On volumes of another size the same count
//! gives another density: on the published-scale phantom at half its Y/X extent
//! (`synth phantom --preset published --scale 0.5`) the synthetic masks hold about four times
//! the annotated nuclei and ten times the annotated Golgi foreground, and the segmenter is
//! trained towards masks that dense (docs/cyclegan.md). The check needs annotated training
//! volumes; without them it reports nothing.

use std::error::Error;

use serde::Serialize;

use crate::dataset::Dataset;
use crate::synth::config::MaskConfig;
use crate::synth::generate_masks;
use crate::train::config::{MaskSource, ModelSettings, TrialConfig};
use crate::train::trial::synthetic_mask_seed;

/// A synthetic share more than this many times the annotated one, or less than its inverse,
/// is reported.
pub const MAX_RATIO: f64 = 2.0;

/// One class: the foreground share of the synthetic masks and of the annotated masks of the
/// same training volumes (voxels pooled over the volumes).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SynthFigure {
    pub class: String,
    pub synthetic: f64,
    pub annotated: f64,
}

impl SynthFigure {
    /// The synthetic share over the annotated one (infinite when the annotated share is 0).
    pub fn ratio(&self) -> f64 {
        self.synthetic / self.annotated
    }

    /// True when the ratio lies outside [1/[`MAX_RATIO`], [`MAX_RATIO`]].
    pub fn is_off(&self) -> bool {
        let r = self.ratio();
        !(1.0 / MAX_RATIO..=MAX_RATIO).contains(&r)
    }
}

/// The synthetic-mask settings of a CycleGAN trial on synthetic masks, else `None`.
pub fn synthetic_settings(config: &TrialConfig) -> Option<&MaskConfig> {
    match &config.settings {
        ModelSettings::CycleGan {
            synth,
            masks: MaskSource::Synthetic,
            ..
        } => Some(synth),
        _ => None,
    }
}

/// The figures of a trial with synthetic-mask settings `synth` and classes `classes` whose
/// training volumes are `train_ids`, its masks drawn as the trial draws them with `seed`;
/// `None` when a training volume has no annotated mask.
pub fn measure(
    dataset: &Dataset,
    synth: &MaskConfig,
    classes: &[String],
    train_ids: &[String],
    seed: u64,
) -> Result<Option<Vec<SynthFigure>>, Box<dyn Error>> {
    let annotated_names = &dataset.spec().mask_channels;
    let synthetic_names = synth.channel_names();
    // Per class: (synthetic foreground, annotated foreground, voxels).
    let mut counts = vec![[0u64; 3]; classes.len()];
    for (i, id) in train_ids.iter().enumerate() {
        let volume = dataset.load(id)?;
        let Some(mask) = volume.mask else {
            return Ok(None);
        };
        let generated = generate_masks(synth, mask.spatial(), synthetic_mask_seed(seed, i))?;
        for (class, c) in classes.iter().zip(counts.iter_mut()) {
            let (Some(a), Some(s)) = (
                annotated_names.iter().position(|n| n == class),
                synthetic_names.iter().position(|n| n == class),
            ) else {
                continue;
            };
            c[0] += foreground(generated.mask.channel(s));
            c[1] += foreground(mask.channel(a));
            c[2] += mask.channel(a).len() as u64;
        }
    }
    Ok(Some(
        classes
            .iter()
            .zip(counts)
            .filter(|(_, c)| c[2] > 0)
            .map(|(class, c)| SynthFigure {
                class: class.clone(),
                synthetic: c[0] as f64 / c[2] as f64,
                annotated: c[1] as f64 / c[2] as f64,
            })
            .collect(),
    ))
}

fn foreground(channel: &[u8]) -> u64 {
    channel.iter().filter(|&&v| v != 0).count() as u64
}

/// The warning for a trial's figures that are off, or `None`.
pub fn warning(trial_id: &str, figures: &[SynthFigure]) -> Option<String> {
    let off: Vec<String> = figures
        .iter()
        .filter(|f| f.is_off())
        .map(|f| {
            format!(
                "{} {:.2} % against {:.2} % ({:.1}×)",
                f.class,
                f.synthetic * 100.0,
                f.annotated * 100.0,
                f.ratio()
            )
        })
        .collect();
    (!off.is_empty()).then(|| {
        format!(
            "  trial {trial_id}: foreground of the synthetic masks against the annotated masks \
             of its training volumes: {}",
            off.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(synthetic: f64, annotated: f64) -> SynthFigure {
        SynthFigure {
            class: "golgi".into(),
            synthetic,
            annotated,
        }
    }

    #[test]
    fn shares_within_a_factor_of_two_are_not_reported() {
        assert!(!figure(0.02, 0.011).is_off());
        assert!(!figure(0.011, 0.02).is_off());
        assert!(figure(0.05, 0.02).is_off());
        assert!(figure(0.004, 0.02).is_off());
        assert!(figure(0.01, 0.0).is_off());
        assert_eq!(warning("t", &[figure(0.02, 0.011)]), None);
        let w = warning("t", &[figure(0.05, 0.02)]).unwrap();
        assert!(w.contains("golgi 5.00 % against 2.00 % (2.5×)"), "{w}");
    }
}
