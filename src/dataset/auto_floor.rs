//! `percentiles = "auto"`: the floor (low percentile) of each image channel's stretch, chosen
//! from the data, so that the stretch does not zero the objects a model is to find.
//!
//! The published floor (the 95th percentile, docs/published-code.md §1) suits objects
//! that fill a few percent of a volume; where they fill more, it maps most of them to 0.
//!
//! - **Annotated volumes** (a mask channel pairs with the image channel, [`paired_classes`]):
//!   per volume, the highest whole percentile whose stretch maps at most
//!   [`AUTO_MAX_ZEROED`] of the class's annotated voxels to 0 (the exact stretch, uint8
//!   truncation included); the floor is the lowest of these over the volumes.
//! - **Unlabelled volumes** (no mask, or a model that must not read masks, as the CycleGAN
//!   trained on synthetic masks): per volume, the percentile rank of the histogram's mode (the
//!   background peak: intensities dimmer than typical background are noise); the floor is
//!   the lowest over the volumes.
//!
//! The ceiling stays the preset's (`preprocess::preset_percentiles`).

use serde::Serialize;

use super::preprocess::{
    Arithmetic, PercentileStretch, PreprocessConfig, Preprocessor, percentiles,
};
use super::threshold::ValueRange;
use super::{Dataset, DatasetError};
use crate::preset::Preset;

/// The largest share of a class's annotated voxels an `auto` floor may map to 0 in any
/// annotated volume.
pub const AUTO_MAX_ZEROED: f64 = 0.03;

/// Where an `auto` floor came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FloorSource {
    /// The annotated foreground of the paired mask channel.
    AnnotatedForeground,
    /// The intensity histogram (no annotation used).
    ImageHistogram,
}

impl FloorSource {
    pub fn describe(self) -> &'static str {
        match self {
            FloorSource::AnnotatedForeground => "annotated foreground",
            FloorSource::ImageHistogram => "image histogram",
        }
    }
}

/// The floor chosen for one image channel, with what it was chosen from (provenance).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AutoFloor {
    pub channel: String,
    /// The low percentile of the stretch.
    pub percentile: f64,
    pub source: FloorSource,
    /// The mask channel whose foreground decided (annotated source).
    pub class: Option<String>,
    /// Mean foreground share of that class over the volumes used (annotated source).
    pub foreground_share: Option<f64>,
    /// The volumes the floor was chosen from.
    pub volumes: Vec<String>,
}

/// For each image channel, the mask channel it shows: the one of the same name, else the one
/// at the same position (the published channel convention, docs/published-code.md §1),
/// never `pair` (no image channel shows pairs).
pub fn paired_classes(image_channels: &[String], mask_channels: &[String]) -> Vec<Option<usize>> {
    image_channels
        .iter()
        .enumerate()
        .map(|(i, c)| {
            mask_channels.iter().position(|m| m == c).or_else(|| {
                let named = mask_channels.iter().any(|m| image_channels.contains(m));
                (!named && mask_channels.get(i).is_some_and(|m| m != "pair")).then_some(i)
            })
        })
        .collect()
}

/// The floors the stretch of `config` (percentiles `auto`) uses on `dataset`, chosen from the
/// volumes `ids`; masks are read only when `use_masks`. One floor per image channel.
pub fn choose_floors(
    dataset: &Dataset,
    ids: &[String],
    use_masks: bool,
    config: &PreprocessConfig,
    preset: Preset,
) -> Result<Vec<AutoFloor>, DatasetError> {
    let spec = dataset.spec();
    if ids.is_empty() {
        return Err(DatasetError::Config(format!(
            "percentiles = \"auto\" needs at least one volume of dataset `{}` to choose from",
            spec.name
        )));
    }
    let channels = &spec.image_channels;
    let classes = paired_classes(channels, &spec.mask_channels);
    let stretches: Vec<PercentileStretch> = channels
        .iter()
        .map(|c| PercentileStretch {
            low_percentile: 0.0,
            high_percentile: super::preprocess::preset_percentiles(preset, c)[1],
            equal_guard: config.equal_guard,
            quantize: config.quantize,
        })
        .collect();
    // Per channel: (volume floors from masks, foreground shares), floors from histograms.
    let mut masked: Vec<Vec<(f64, f64)>> = vec![Vec::new(); channels.len()];
    let mut unlabelled: Vec<Vec<f64>> = vec![Vec::new(); channels.len()];
    for id in ids {
        let v = dataset.load(id)?;
        let arithmetic = Arithmetic::for_dtype(v.dtype);
        for (c, stretch) in stretches.iter().enumerate() {
            let values = v.image.channel(c);
            let fg = match (&v.mask, classes[c]) {
                (Some(m), Some(k)) if use_masks => Some(m.channel(k)),
                _ => None,
            };
            match fg.and_then(|fg| annotated_floor(values, fg, stretch, arithmetic)) {
                Some(found) => masked[c].push(found),
                None => unlabelled[c].push(histogram_floor(values, stretch, arithmetic)),
            }
        }
    }
    Ok(channels
        .iter()
        .enumerate()
        .map(|(c, name)| {
            if masked[c].is_empty() {
                AutoFloor {
                    channel: name.clone(),
                    percentile: lowest(unlabelled[c].iter().copied()),
                    source: FloorSource::ImageHistogram,
                    class: None,
                    foreground_share: None,
                    volumes: ids.to_vec(),
                }
            } else {
                let n = masked[c].len() as f64;
                AutoFloor {
                    channel: name.clone(),
                    percentile: lowest(masked[c].iter().map(|m| m.0)),
                    source: FloorSource::AnnotatedForeground,
                    class: classes[c].map(|k| spec.mask_channels[k].clone()),
                    foreground_share: Some(masked[c].iter().map(|m| m.1).sum::<f64>() / n),
                    volumes: ids.to_vec(),
                }
            }
        })
        .collect())
}

/// The preprocessing of `config` on `dataset` (the `auto` floors chosen from `ids`, masks
/// read when `use_masks`), and the floors when it chose them.
pub fn resolve_on(
    dataset: &Dataset,
    config: &PreprocessConfig,
    preset: Preset,
    ids: &[String],
    use_masks: bool,
) -> Result<(Preprocessor, Option<Vec<AutoFloor>>), DatasetError> {
    let spec = dataset.spec();
    if !config.is_auto(&spec.preprocess) {
        let pre = config.resolve(preset, &spec.image_channels, &spec.preprocess)?;
        return Ok((pre, None));
    }
    let floors = choose_floors(dataset, ids, use_masks, config, preset)?;
    let lows: Vec<f64> = floors.iter().map(|f| f.percentile).collect();
    let pre =
        config.resolve_with_floors(preset, &spec.image_channels, &spec.preprocess, Some(&lows))?;
    Ok((pre, Some(floors)))
}

/// One line per channel for logs and `data import`, e.g.
/// `nuclei: floor at the 61st percentile (annotated foreground of nuclei, 21.3 % of the voxels, 3 volumes)`.
pub fn describe_floors(floors: &[AutoFloor]) -> Vec<String> {
    floors
        .iter()
        .map(|f| {
            let from = match (&f.class, f.foreground_share) {
                (Some(class), Some(share)) => format!(
                    "annotated foreground of {class}, {:.1} % of the voxels",
                    share * 100.0
                ),
                _ => f.source.describe().to_string(),
            };
            format!(
                "{}: floor at percentile {} ({from}, {} volume(s))",
                f.channel,
                f.percentile,
                f.volumes.len()
            )
        })
        .collect()
}

fn lowest(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(f64::INFINITY, f64::min).max(0.0)
}

/// Whole percentiles 0, 1, … up to (not above) the stretch's ceiling, and the ceiling.
fn candidate_floors(stretch: &PercentileStretch) -> Vec<f64> {
    let top = stretch.high_percentile.floor() as usize;
    let mut qs: Vec<f64> = (0..=top).map(|p| p as f64).collect();
    qs.push(stretch.high_percentile);
    qs
}

/// The highest whole percentile floor whose stretch maps at most [`AUTO_MAX_ZEROED`] of the
/// voxels where `fg` is set to 0, with the foreground share; `None` without foreground.
fn annotated_floor(
    values: &[f32],
    fg: &[u8],
    stretch: &PercentileStretch,
    arithmetic: Arithmetic,
) -> Option<(f64, f64)> {
    let mut inside: Vec<f32> = values
        .iter()
        .zip(fg)
        .filter(|&(_, &m)| m != 0)
        .map(|(&v, _)| v)
        .collect();
    if inside.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    inside.sort_unstable_by(f32::total_cmp);
    let qs = candidate_floors(stretch);
    let at = percentiles(values, &qs, arithmetic);
    let high = *at.last().expect("the ceiling is a candidate");
    let allowed = (AUTO_MAX_ZEROED * inside.len() as f64).floor() as usize;
    let mut best = 0.0;
    for (p, &low) in qs.iter().zip(&at).take(qs.len() - 1) {
        let bounds = super::preprocess::StretchBounds { low, high };
        // The stretch is monotone: the zeroed voxels are a prefix of the sorted ones.
        let zeroed = inside.partition_point(|&v| stretch.stretch_value(v, bounds) == 0.0);
        if zeroed > allowed {
            break;
        }
        best = *p;
    }
    Some((best, inside.len() as f64 / values.len() as f64))
}

/// The highest whole percentile at or below the mode of the intensity histogram (one bin per
/// integer for integer data, else 256 bins over the range).
fn histogram_floor(values: &[f32], stretch: &PercentileStretch, arithmetic: Arithmetic) -> f64 {
    let Some(mode) = histogram_mode(values) else {
        return 0.0;
    };
    let qs = candidate_floors(stretch);
    let at = percentiles(values, &qs[..qs.len() - 1], arithmetic);
    qs.iter()
        .zip(&at)
        .take_while(|&(_, &v)| v <= f64::from(mode))
        .last()
        .map_or(0.0, |(&p, _)| p)
}

/// The centre of the fullest histogram bin, or `None` for empty or non-finite data.
fn histogram_mode(values: &[f32]) -> Option<f32> {
    let range = ValueRange::of(values)?;
    let (min, max) = (range.min, range.max);
    if min == max {
        return Some(min);
    }
    let (bins, width) = if range.integer_bins() {
        ((max - min) as usize + 1, 1.0)
    } else {
        (256, (max - min) / 256.0)
    };
    let mut counts = vec![0usize; bins];
    for &v in values {
        let i = (((v - min) / width) as usize).min(bins - 1);
        counts[i] += 1;
    }
    let (best, _) = counts
        .iter()
        .enumerate()
        .max_by_key(|&(i, &c)| (c, std::cmp::Reverse(i)))?;
    Some(if range.integer_bins() {
        min + best as f32
    } else {
        min + (best as f32 + 0.5) * width
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stretch(high: f64) -> PercentileStretch {
        PercentileStretch {
            low_percentile: 0.0,
            high_percentile: high,
            equal_guard: 10.0,
            quantize: true,
        }
    }

    #[test]
    fn channels_pair_by_name_then_position_never_with_pair() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            paired_classes(&s(&["golgi", "nuclei"]), &s(&["nuclei", "golgi", "pair"])),
            vec![Some(1), Some(0)]
        );
        assert_eq!(
            paired_classes(&s(&["dapi"]), &s(&["nuclei"])),
            vec![Some(0)]
        );
        assert_eq!(
            paired_classes(&s(&["a", "b", "c"]), &s(&["golgi", "nuclei", "pair"])),
            vec![Some(0), Some(1), None]
        );
        assert_eq!(paired_classes(&s(&["a"]), &s(&[])), vec![None]);
    }

    /// 1000 voxels: 800 background at 10..=29, 200 objects at 40..=139 (20 % foreground).
    fn dense() -> (Vec<f32>, Vec<u8>) {
        let mut v: Vec<f32> = (0..800).map(|i| (10 + i % 20) as f32).collect();
        v.extend((0..200).map(|i| (40 + i % 100) as f32));
        let mut m = vec![0u8; 800];
        m.extend(vec![1u8; 200]);
        (v, m)
    }

    #[test]
    fn annotated_floor_keeps_the_foreground_and_is_as_high_as_allowed() {
        let (v, m) = dense();
        let s = stretch(98.0);
        let (floor, share) = annotated_floor(&v, &m, &s, Arithmetic::F64).unwrap();
        assert_eq!(share, 0.2);
        // Every floor up to the background's top keeps all objects; the 95th would zero most.
        assert!((78.0..=80.0).contains(&floor), "{floor}");
        let at = |p: f64| {
            let b = percentiles(&v, &[p, 98.0], Arithmetic::F64);
            let bounds = super::super::preprocess::StretchBounds {
                low: b[0],
                high: b[1],
            };
            m.iter()
                .zip(&v)
                .filter(|&(&k, &x)| k == 1 && s.stretch_value(x, bounds) == 0.0)
                .count()
        };
        assert!(at(floor) <= 2, "{}", at(floor));
        assert!(at(floor + 1.0) > 2 || floor + 1.0 > 98.0);
        assert!(at(95.0) > 100, "the published floor zeroes most objects");
        assert_eq!(
            annotated_floor(&v, &vec![0; v.len()], &s, Arithmetic::F64),
            None
        );
    }

    #[test]
    fn histogram_floor_sits_at_the_background_peak() {
        // Background peaked at 20 (half of 800 voxels there), objects above.
        let mut v: Vec<f32> = (0..400).map(|i| (10 + i % 10) as f32).collect();
        v.extend(vec![20.0; 400]);
        v.extend((0..200).map(|i| (40 + i % 100) as f32));
        assert_eq!(histogram_mode(&v), Some(20.0));
        let floor = histogram_floor(&v, &stretch(98.0), Arithmetic::F64);
        // 40 % of the voxels lie below 20, 80 % at or below it.
        assert!((40.0..=79.0).contains(&floor), "{floor}");
        assert_eq!(histogram_mode(&[]), None);
        assert_eq!(histogram_mode(&[1.0, f32::NAN]), None);
    }
}
