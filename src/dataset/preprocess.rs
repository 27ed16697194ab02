//! Intensity preprocessing of whole volumes, before any patching: the per-channel percentile
//! contrast stretch of docs/published-code.md §1.3, then scaling to the range a model
//! expects (§1.5).
//!
//! The steps, in order:
//! 1. `percentile-stretch` ([`PercentileStretch`]): per channel, NumPy's default (linear)
//!    percentiles `low` and `high` over all voxels; clip to [low, high]; if low == high, lower
//!    `low` by the guard (10) *after* clipping; rescale linearly to [0, 255] as
//!    `(v − low) / (high − low) · 255`; truncate to an integer as the published uint8 cast does
//!    (or keep the float with `quantize = false`).
//! 2. `scale` ([`Scale`]): [0, 255] → [0, 1] (`v / 255`, U-Net and Vox2Vox) or [−1, 1]
//!    (`(v − 127.5) / 127.5`, CycleGAN).
//!
//! Percentile pairs come from the preset by channel name ([`preset_percentiles`]), overridden
//! by the dataset's `[preprocess]` table, overridden by an explicit [`PreprocessConfig`].
//! Either may say `percentiles = "auto"` ([`Percentiles::Auto`]): each channel's floor is then
//! chosen from the data by `dataset::auto_floor` and its ceiling stays the preset's.

use rayon::prelude::*;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::DatasetError;
use super::spec::PreprocessDefaults;
use crate::preset::Preset;
use crate::volume::{DType, Volume};

/// The (low, high) percentiles a preset uses for a channel, by channel name
/// (docs/published-code.md §1.3; paper and thesis values from their texts): `code` =
/// Golgi 95–99.8 and nuclei 95–98, `paper` = 95–98, `thesis` = 5–98. Channels with other
/// names use the nuclei pair.
pub fn preset_percentiles(preset: Preset, channel: &str) -> [f64; 2] {
    match (preset, channel) {
        (Preset::Code, "golgi") => [95.0, 99.8],
        (Preset::Code, _) | (Preset::Paper, _) => [95.0, 98.0],
        (Preset::Thesis, _) => [5.0, 98.0],
    }
}

/// The (low, high) percentiles of the stretch as a user writes them: one pair per image
/// channel, or `"auto"` (a floor per channel chosen from the data, the preset's ceiling).
/// Pairs serialize as before `"auto"` existed, so configs with pairs keep their trial ids.
#[derive(Clone, Debug, PartialEq)]
pub enum Percentiles {
    Auto,
    Pairs(Vec<[f64; 2]>),
}

impl Serialize for Percentiles {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Percentiles::Auto => s.serialize_str("auto"),
            Percentiles::Pairs(pairs) => pairs.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Percentiles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PercentilesVisitor;
        impl<'de> Visitor<'de> for PercentilesVisitor {
            type Value = Percentiles;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"auto\" or a list of [low, high] pairs, one per image channel")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Percentiles, E> {
                if v == "auto" {
                    Ok(Percentiles::Auto)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Percentiles, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = seq.next_element::<[f64; 2]>()? {
                    pairs.push(pair);
                }
                Ok(Percentiles::Pairs(pairs))
            }
        }
        d.deserialize_any(PercentilesVisitor)
    }
}

impl Percentiles {
    /// The pairs, or `None` for `auto`.
    pub fn pairs(&self) -> Option<&[[f64; 2]]> {
        match self {
            Percentiles::Auto => None,
            Percentiles::Pairs(p) => Some(p),
        }
    }

    /// Checks every pair (`auto` is always valid); the error names `field`.
    pub fn validate(&self, field: &str) -> Result<(), DatasetError> {
        match self {
            Percentiles::Auto => Ok(()),
            Percentiles::Pairs(p) => validate_percentiles(p, field),
        }
    }
}

/// Which floating-point type NumPy interpolates percentiles in: float64 for integer arrays,
/// the array's own float32 for float32 arrays. Intensities travel as `f32` in seglab, so the
/// file's sample type decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arithmetic {
    F64,
    F32,
}

impl Arithmetic {
    /// The arithmetic NumPy would use on an array of this on-disk sample type.
    pub fn for_dtype(dtype: DType) -> Self {
        match dtype {
            DType::U8 | DType::U16 => Arithmetic::F64,
            DType::F32 => Arithmetic::F32,
        }
    }
}

/// NumPy's `np.percentile(values, qs)` with the default `method="linear"` (Hyndman & Fan
/// type 7), computed by selection rather than a full sort. `qs` are in [0, 100]. Any NaN in
/// `values` makes every result NaN (as NumPy); an empty slice gives NaNs too.
///
/// Follows NumPy's exact arithmetic: virtual index `n·q + (1 − q) − 1` with `q = p / 100`,
/// neighbours clamped at both ends, and the two-sided lerp (`a + (b − a)·t`, or
/// `b − (b − a)·(1 − t)` when `t ≥ 0.5`).
pub fn percentiles(values: &[f32], qs: &[f64], arithmetic: Arithmetic) -> Vec<f64> {
    let n = values.len();
    if n == 0 || values.iter().any(|v| v.is_nan()) {
        return vec![f64::NAN; qs.len()];
    }
    let plans: Vec<(usize, usize, f64)> = qs
        .iter()
        .map(|&p| {
            let q = p / 100.0;
            // NumPy's linear rule: n·q + (α + q·(1 − α − β)) − 1 with α = β = 1.
            let virtual_index = n as f64 * q + (1.0 - q) - 1.0;
            let prev = virtual_index.floor();
            let gamma = virtual_index - prev;
            let (lo, hi) = if virtual_index >= (n - 1) as f64 {
                (n - 1, n - 1)
            } else if virtual_index < 0.0 {
                (0, 0)
            } else {
                (prev as usize, prev as usize + 1)
            };
            (lo, hi, gamma)
        })
        .collect();
    let mut ranks: Vec<usize> = plans.iter().flat_map(|&(a, b, _)| [a, b]).collect();
    ranks.sort_unstable();
    ranks.dedup();
    let stats = order_statistics(values, &ranks);
    let at = |r: usize| stats[ranks.binary_search(&r).expect("rank was requested")];
    plans
        .iter()
        .map(|&(lo, hi, t)| lerp(at(lo), at(hi), t, arithmetic))
        .collect()
}

/// NumPy's `_lerp` in the given arithmetic.
fn lerp(a: f32, b: f32, t: f64, arithmetic: Arithmetic) -> f64 {
    match arithmetic {
        Arithmetic::F64 => {
            let (a, b) = (f64::from(a), f64::from(b));
            let diff = b - a;
            if t >= 0.5 {
                b - diff * (1.0 - t)
            } else {
                a + diff * t
            }
        }
        Arithmetic::F32 => {
            let diff = b - a;
            let r = if t >= 0.5 {
                b - diff * (1.0 - t) as f32
            } else {
                a + diff * t as f32
            };
            f64::from(r)
        }
    }
}

/// The values of ascending `ranks` (0-based positions in sorted order) of `values`, which
/// hold no NaN. Integer-valued data with a modest range use a counting pass (no copy);
/// anything else a copy and `select_nth_unstable`.
fn order_statistics(values: &[f32], ranks: &[usize]) -> Vec<f32> {
    const MAX_BINS: f32 = (1 << 20) as f32;
    let (mut min, mut max, mut integral) = (f32::INFINITY, f32::NEG_INFINITY, true);
    for &v in values {
        min = min.min(v);
        max = max.max(v);
        integral &= v.fract() == 0.0;
    }
    if integral && min.is_finite() && max.is_finite() && max - min < MAX_BINS {
        let mut counts = vec![0usize; (max - min) as usize + 1];
        for &v in values {
            counts[(v - min) as usize] += 1;
        }
        let mut out = Vec::with_capacity(ranks.len());
        let (mut seen, mut bin) = (0usize, 0usize);
        for &r in ranks {
            while seen + counts[bin] <= r {
                seen += counts[bin];
                bin += 1;
            }
            out.push(min + bin as f32);
        }
        return out;
    }
    let mut work = values.to_vec();
    let mut out = Vec::with_capacity(ranks.len());
    let mut start = 0;
    for &r in ranks {
        let (_, nth, _) = work[start..].select_nth_unstable_by(r - start, f32::total_cmp);
        out.push(*nth);
        start = r;
    }
    out
}

/// Maps stretched intensities in [0, 255] to the range a model expects
/// (docs/published-code.md §1.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// `v / 255` → [0, 1] (U-Net, Vox2Vox).
    #[default]
    Unit,
    /// `(v − 127.5) / 127.5` → [−1, 1] (CycleGAN).
    Symmetric,
}

impl Scale {
    #[inline]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Scale::Unit => v / 255.0,
            Scale::Symmetric => (v - 127.5) / 127.5,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scale::Unit => "unit",
            Scale::Symmetric => "symmetric",
        }
    }
}

/// Preprocessing settings as a user writes them (sweep specs, the CLI). Unset percentiles
/// come from the dataset, then from the preset; see [`PreprocessConfig::resolve`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessConfig {
    /// Apply the percentile stretch. When off, intensities are taken to be in [0, 255]
    /// already (a preprocessed uint8 file) and only scaled.
    pub stretch: bool,
    /// (low, high) percentiles per image channel, in [0, 100], or `"auto"`; overrides
    /// dataset and preset.
    pub percentiles: Option<Percentiles>,
    /// How far `low` is lowered when low == high (§1.3: 10 intensity units).
    pub equal_guard: f64,
    /// Truncate the stretched values to integers 0..=255, as the published uint8 cast does.
    pub quantize: bool,
    pub scale: Scale,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        Self {
            stretch: true,
            percentiles: None,
            equal_guard: 10.0,
            quantize: true,
            scale: Scale::Unit,
        }
    }
}

impl PreprocessConfig {
    /// Checks ranges; the error names the field and the value.
    pub fn validate(&self) -> Result<(), DatasetError> {
        if let Some(p) = &self.percentiles {
            p.validate("preprocess.percentiles")?;
        }
        if !(self.equal_guard.is_finite() && self.equal_guard > 0.0) {
            return Err(DatasetError::Config(format!(
                "preprocess.equal_guard must be a positive number, got {}",
                self.equal_guard
            )));
        }
        Ok(())
    }

    /// The percentiles in force: this config's, else the dataset's (with the field that set
    /// them), else `None` (the preset's by channel name).
    fn chosen<'a>(
        &'a self,
        dataset: &'a PreprocessDefaults,
    ) -> Option<(&'a Percentiles, &'static str)> {
        match (&self.percentiles, &dataset.percentiles) {
            (Some(p), _) => Some((p, "preprocess.percentiles")),
            (None, Some(p)) => Some((p, "dataset preprocess.percentiles")),
            (None, None) => None,
        }
    }

    /// Whether the stretch chooses its floors from the data (`percentiles = "auto"` here or in
    /// the dataset's `[preprocess]` table, and the stretch on).
    pub fn is_auto(&self, dataset: &PreprocessDefaults) -> bool {
        self.stretch && matches!(self.chosen(dataset), Some((Percentiles::Auto, _)))
    }

    /// The preprocessing of a dataset with image channels `channels`: percentiles from this
    /// config, else from the dataset's `[preprocess]` table, else from `preset` by channel name.
    /// An `auto` stretch needs its floors: see [`PreprocessConfig::resolve_with_floors`].
    pub fn resolve(
        &self,
        preset: Preset,
        channels: &[String],
        dataset: &PreprocessDefaults,
    ) -> Result<Preprocessor, DatasetError> {
        self.resolve_with_floors(preset, channels, dataset, None)
    }

    /// [`PreprocessConfig::resolve`] with the floors (low percentiles, one per channel) an
    /// `auto` stretch uses; its ceilings are the preset's ([`preset_percentiles`]). `floors`
    /// is ignored when the percentiles are not `auto`.
    pub fn resolve_with_floors(
        &self,
        preset: Preset,
        channels: &[String],
        dataset: &PreprocessDefaults,
        floors: Option<&[f64]>,
    ) -> Result<Preprocessor, DatasetError> {
        self.validate()?;
        let auto = self.is_auto(dataset);
        let (pairs, field) = match self.chosen(dataset) {
            Some((Percentiles::Pairs(p), field)) => {
                validate_percentiles(p, field)?;
                (p.clone(), field)
            }
            Some((Percentiles::Auto, field)) if self.stretch => {
                let floors = floors.ok_or_else(|| {
                    DatasetError::Config(format!(
                        "{field} = \"auto\" chooses each channel's floor from the dataset's \
                         volumes, which are not at hand here; give the percentiles as \
                         [low, high] pairs"
                    ))
                })?;
                if floors.len() != channels.len() {
                    return Err(DatasetError::Config(format!(
                        "{field} = \"auto\": {} floors for {} image channels",
                        floors.len(),
                        channels.len()
                    )));
                }
                let pairs = channels
                    .iter()
                    .zip(floors)
                    .map(|(c, &floor)| {
                        let high = preset_percentiles(preset, c)[1];
                        [floor.clamp(0.0, high), high]
                    })
                    .collect();
                (pairs, field)
            }
            _ => (
                channels
                    .iter()
                    .map(|c| preset_percentiles(preset, c))
                    .collect(),
                "preset percentiles",
            ),
        };
        if pairs.len() != channels.len() {
            return Err(DatasetError::Config(format!(
                "{field} has {} pairs but the dataset has {} image channels ({})",
                pairs.len(),
                channels.len(),
                channels.join(", ")
            )));
        }
        let stretches = self.stretch.then(|| {
            pairs
                .iter()
                .map(|&[low, high]| PercentileStretch {
                    low_percentile: low,
                    high_percentile: high,
                    equal_guard: self.equal_guard,
                    quantize: self.quantize,
                })
                .collect()
        });
        Ok(Preprocessor {
            channels: channels.to_vec(),
            stretches,
            scale: self.scale,
            auto,
        })
    }

    /// This config with explicit (low, high) pairs, one per channel: the fixed floors
    /// `data info` compares.
    pub fn with_pairs(&self, pairs: Vec<[f64; 2]>) -> PreprocessConfig {
        PreprocessConfig {
            percentiles: Some(Percentiles::Pairs(pairs)),
            ..self.clone()
        }
    }
}

fn validate_percentiles(pairs: &[[f64; 2]], field: &str) -> Result<(), DatasetError> {
    for (i, &[low, high]) in pairs.iter().enumerate() {
        if !(0.0..=100.0).contains(&low) || !(0.0..=100.0).contains(&high) || low > high {
            return Err(DatasetError::Config(format!(
                "{field}[{i}] must satisfy 0 <= low <= high <= 100, got [{low}, {high}]"
            )));
        }
    }
    Ok(())
}

/// The percentile contrast stretch of one channel (docs/published-code.md §1.3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PercentileStretch {
    pub low_percentile: f64,
    pub high_percentile: f64,
    /// Subtracted from `low` when low == high, after clipping (§1.3: 10).
    pub equal_guard: f64,
    /// Truncate to an integer (the published uint8 cast).
    pub quantize: bool,
}

/// The intensities a stretch mapped to 0 and 255 (after the low == high guard).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StretchBounds {
    pub low: f64,
    pub high: f64,
}

impl PercentileStretch {
    /// The intensity bounds of `values` (NumPy percentiles in `arithmetic`, then the guard).
    pub fn bounds(&self, values: &[f32], arithmetic: Arithmetic) -> StretchBounds {
        let p = percentiles(
            values,
            &[self.low_percentile, self.high_percentile],
            arithmetic,
        );
        StretchBounds {
            low: p[0],
            high: p[1],
        }
    }

    /// Stretches `values` into `out` (same length), values in [0, 255]. Returns the bounds
    /// the clip used (before the guard) — `None` when `values` hold a NaN or infinity.
    pub fn apply(
        &self,
        values: &[f32],
        out: &mut [f32],
        arithmetic: Arithmetic,
    ) -> Option<StretchBounds> {
        assert_eq!(values.len(), out.len(), "stretch output length");
        if values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let bounds = self.bounds(values, arithmetic);
        out.par_chunks_mut(1 << 16)
            .zip(values.par_chunks(1 << 16))
            .for_each(|(o, v)| {
                for (o, &v) in o.iter_mut().zip(v) {
                    *o = self.stretch_value(v, bounds);
                }
            });
        Some(bounds)
    }

    /// One intensity stretched with `bounds`: clip first, then the low == high guard (the
    /// published order), rescale to [0, 255], truncate when quantizing.
    #[inline]
    pub fn stretch_value(&self, v: f32, bounds: StretchBounds) -> f32 {
        let (low, high) = (bounds.low, bounds.high);
        let rescale_low = if low == high {
            low - self.equal_guard
        } else {
            low
        };
        let clipped = f64::from(v).clamp(low, high);
        let s = (clipped - rescale_low) / (high - rescale_low) * 255.0;
        if self.quantize {
            s.trunc() as f32
        } else {
            s as f32
        }
    }
}

/// A resolved preprocessing for one dataset's image channels: the steps of the module doc.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocessor {
    channels: Vec<String>,
    /// One stretch per channel, or `None` when the stretch step is off.
    stretches: Option<Vec<PercentileStretch>>,
    scale: Scale,
    /// The floors were chosen from the data (`percentiles = "auto"`).
    auto: bool,
}

impl Preprocessor {
    /// The per-channel stretches (`None`: stretch off).
    pub fn stretches(&self) -> Option<&[PercentileStretch]> {
        self.stretches.as_deref()
    }

    pub fn scale(&self) -> Scale {
        self.scale
    }

    /// The image channel names, in order.
    pub fn channels(&self) -> &[String] {
        &self.channels
    }

    /// The (low, high) percentiles of each channel's stretch (`None`: stretch off).
    pub fn pairs(&self) -> Option<Vec<[f64; 2]>> {
        self.stretches.as_ref().map(|s| {
            s.iter()
                .map(|s| [s.low_percentile, s.high_percentile])
                .collect()
        })
    }

    /// A one-line description of the steps, for logs and provenance, e.g.
    /// `percentile-stretch(golgi 95–99.8, nuclei 95–98, guard 10, uint8) → scale(unit)`.
    pub fn describe(&self) -> String {
        let stretch = match &self.stretches {
            Some(s) => {
                let per: Vec<String> = self
                    .channels
                    .iter()
                    .zip(s)
                    .map(|(c, s)| format!("{c} {}–{}", s.low_percentile, s.high_percentile))
                    .collect();
                let first = s.first();
                format!(
                    "percentile-stretch({}{}, guard {}, {}) → ",
                    per.join(", "),
                    if self.auto { " (auto floors)" } else { "" },
                    first.map_or(10.0, |s| s.equal_guard),
                    if first.is_none_or(|s| s.quantize) {
                        "uint8"
                    } else {
                        "float"
                    }
                )
            }
            None => String::new(),
        };
        format!("{stretch}scale({})", self.scale.name())
    }

    /// Preprocesses a whole image (raw intensities, channels as named at resolve time).
    /// `dtype` is the sample type of the source file (it selects NumPy's percentile
    /// arithmetic). Returns the model-ready volume and each channel's stretch bounds.
    pub fn apply(
        &self,
        image: &Volume<f32>,
        dtype: DType,
    ) -> Result<(Volume<f32>, Vec<Option<StretchBounds>>), DatasetError> {
        if image.channels() != self.channels.len() {
            return Err(DatasetError::Config(format!(
                "preprocessing expects {} image channels ({}), the volume has {}",
                self.channels.len(),
                self.channels.join(", "),
                image.channels()
            )));
        }
        let arithmetic = Arithmetic::for_dtype(dtype);
        let mut out = Volume::<f32>::zeros(image.shape()).with_spacing(image.spacing);
        let mut bounds = Vec::with_capacity(image.channels());
        for c in 0..image.channels() {
            let src = image.channel(c);
            let dst = out.channel_mut(c);
            match &self.stretches {
                Some(s) => {
                    let b = s[c].apply(src, dst, arithmetic).ok_or_else(|| {
                        DatasetError::Config(format!(
                            "image channel {} holds NaN or infinite intensities; the \
                             percentile stretch needs finite values",
                            self.channels[c]
                        ))
                    })?;
                    bounds.push(Some(b));
                }
                None => {
                    dst.copy_from_slice(src);
                    bounds.push(None);
                }
            }
            let scale = self.scale;
            dst.par_iter_mut().for_each(|v| *v = scale.apply(*v));
        }
        Ok((out, bounds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numpy_like_sorted(values: &[f32], p: f64) -> f64 {
        // Reference by full sort, same formula.
        let mut s = values.to_vec();
        s.sort_by(f32::total_cmp);
        let n = s.len();
        let q = p / 100.0;
        let vi = n as f64 * q + (1.0 - q) - 1.0;
        let lo = vi.floor().clamp(0.0, (n - 1) as f64) as usize;
        let hi = (lo + 1).min(n - 1);
        let t = vi - vi.floor();
        let (a, b) = (f64::from(s[lo]), f64::from(s[hi]));
        if vi >= (n - 1) as f64 {
            return f64::from(s[n - 1]);
        }
        if t >= 0.5 {
            b - (b - a) * (1.0 - t)
        } else {
            a + (b - a) * t
        }
    }

    #[test]
    fn known_numpy_values() {
        // np.percentile([1, 2, 3, 4, 5, 7], [0, 50, 95, 99.8, 100]) (uint8)
        let v = [7.0, 1.0, 3.0, 2.0, 5.0, 4.0];
        let p = percentiles(&v, &[0.0, 50.0, 95.0, 99.8, 100.0], Arithmetic::F64);
        assert_eq!(p[0], 1.0);
        assert_eq!(p[1], 3.5);
        assert!((p[2] - 6.5).abs() < 1e-12, "{}", p[2]);
        assert!((p[3] - 6.98).abs() < 1e-12, "{}", p[3]);
        assert_eq!(p[4], 7.0);
    }

    #[test]
    fn counting_and_selection_paths_agree_with_a_full_sort() {
        let ints: Vec<f32> = (0..5000u32).map(|i| ((i * 7919) % 257) as f32).collect();
        let floats: Vec<f32> = ints.iter().map(|v| v * 0.37 + 0.1).collect();
        for q in [0.0, 5.0, 33.3, 50.0, 95.0, 98.0, 99.8, 100.0] {
            let a = percentiles(&ints, &[q], Arithmetic::F64)[0];
            assert_eq!(a, numpy_like_sorted(&ints, q), "q={q}");
            let b = percentiles(&floats, &[q], Arithmetic::F64)[0];
            assert_eq!(b, numpy_like_sorted(&floats, q), "q={q}");
        }
    }

    #[test]
    fn nan_and_empty_give_nan() {
        assert!(percentiles(&[1.0, f32::NAN], &[50.0], Arithmetic::F64)[0].is_nan());
        assert!(percentiles(&[], &[50.0], Arithmetic::F64)[0].is_nan());
    }

    #[test]
    fn stretch_clips_rescales_and_truncates() {
        // 100 values 0..99: p95 = 94.05, p98 = 97.02
        let v: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let s = PercentileStretch {
            low_percentile: 95.0,
            high_percentile: 98.0,
            equal_guard: 10.0,
            quantize: true,
        };
        let mut out = vec![0.0; 100];
        let b = s.apply(&v, &mut out, Arithmetic::F64).unwrap();
        assert!((b.low - 94.05).abs() < 1e-9 && (b.high - 97.02).abs() < 1e-9);
        assert!(out[..95].iter().all(|&x| x == 0.0));
        assert!(out[98..].iter().all(|&x| x == 255.0));
        // 95 → (95 − 94.05) / 2.97 · 255 = 81.56… → 81
        assert_eq!(out[95], 81.0);
    }

    #[test]
    fn equal_bounds_guard_maps_everything_to_255() {
        // 99 % zeros: p95 = p98 = 0 → clip to 0, low = −10 → (0 + 10) / 10 · 255 = 255.
        let mut v = vec![0.0f32; 99];
        v.push(5.0);
        let s = PercentileStretch {
            low_percentile: 95.0,
            high_percentile: 98.0,
            equal_guard: 10.0,
            quantize: true,
        };
        let mut out = vec![0.0; v.len()];
        let b = s.apply(&v, &mut out, Arithmetic::F64).unwrap();
        assert_eq!((b.low, b.high), (0.0, 0.0));
        assert!(out.iter().all(|&x| x == 255.0));
    }

    #[test]
    fn preset_resolution_and_overrides() {
        let names = vec!["golgi".to_string(), "nuclei".to_string()];
        let none = PreprocessDefaults::default();
        let p = PreprocessConfig::default()
            .resolve(Preset::Code, &names, &none)
            .unwrap();
        let s = p.stretches().unwrap();
        assert_eq!([s[0].low_percentile, s[0].high_percentile], [95.0, 99.8]);
        assert_eq!([s[1].low_percentile, s[1].high_percentile], [95.0, 98.0]);
        let thesis = PreprocessConfig::default()
            .resolve(Preset::Thesis, &names, &none)
            .unwrap();
        assert_eq!(thesis.stretches().unwrap()[0].low_percentile, 5.0);
        let dataset = PreprocessDefaults {
            percentiles: Some(Percentiles::Pairs(vec![[1.0, 99.0], [2.0, 98.0]])),
        };
        let d = PreprocessConfig::default()
            .resolve(Preset::Code, &names, &dataset)
            .unwrap();
        assert_eq!(d.stretches().unwrap()[1].low_percentile, 2.0);
        let explicit = PreprocessConfig {
            percentiles: Some(Percentiles::Pairs(vec![[10.0, 90.0], [20.0, 80.0]])),
            ..Default::default()
        };
        let e = explicit.resolve(Preset::Code, &names, &dataset).unwrap();
        assert_eq!(e.stretches().unwrap()[0].high_percentile, 90.0);
        assert_eq!(
            e.describe(),
            "percentile-stretch(golgi 10–90, nuclei 20–80, guard 10, uint8) → scale(unit)"
        );
    }

    #[test]
    fn percentiles_read_auto_or_pairs_and_write_pairs_as_before() {
        let auto: PreprocessConfig =
            serde_json::from_value(serde_json::json!({"percentiles": "auto"})).unwrap();
        assert_eq!(auto.percentiles, Some(Percentiles::Auto));
        assert_eq!(serde_json::to_value(&auto).unwrap()["percentiles"], "auto");
        let pairs = serde_json::json!({"percentiles": [[95.0, 99.8], [50.0, 98.0]]});
        let config: PreprocessConfig = serde_json::from_value(pairs.clone()).unwrap();
        assert_eq!(
            config.percentiles,
            Some(Percentiles::Pairs(vec![[95.0, 99.8], [50.0, 98.0]]))
        );
        // Pairs serialize as a plain list, so configs without `auto` keep their trial ids.
        assert_eq!(
            serde_json::to_value(&config).unwrap()["percentiles"],
            pairs["percentiles"]
        );
        let toml_auto: PreprocessDefaults = toml::from_str("percentiles = \"auto\"").unwrap();
        assert_eq!(toml_auto.percentiles, Some(Percentiles::Auto));
        let err = serde_json::from_value::<PreprocessConfig>(
            serde_json::json!({"percentiles": "automatic"}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("\"auto\" or a list of [low, high] pairs"),
            "{err}"
        );
    }

    #[test]
    fn auto_takes_its_floors_and_the_preset_ceilings() {
        let names = vec!["golgi".to_string(), "nuclei".to_string()];
        let auto = PreprocessConfig {
            percentiles: Some(Percentiles::Auto),
            ..Default::default()
        };
        let none = PreprocessDefaults::default();
        assert!(auto.is_auto(&none));
        let err = auto
            .resolve(Preset::Code, &names, &none)
            .unwrap_err()
            .to_string();
        assert!(err.contains("preprocess.percentiles = \"auto\""), "{err}");
        let p = auto
            .resolve_with_floors(Preset::Code, &names, &none, Some(&[30.0, 21.0]))
            .unwrap();
        assert_eq!(p.pairs(), Some(vec![[30.0, 99.8], [21.0, 98.0]]));
        assert!(p.describe().contains("(auto floors)"), "{}", p.describe());
        // The dataset's `auto` applies when the trial sets nothing; a trial's pairs win.
        let dataset_auto = PreprocessDefaults {
            percentiles: Some(Percentiles::Auto),
        };
        assert!(PreprocessConfig::default().is_auto(&dataset_auto));
        let explicit = PreprocessConfig::default().with_pairs(vec![[1.0, 98.0], [2.0, 98.0]]);
        assert!(!explicit.is_auto(&dataset_auto));
        let off = PreprocessConfig {
            stretch: false,
            ..auto.clone()
        };
        assert!(!off.is_auto(&none));
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let names = vec!["golgi".to_string()];
        let bad = PreprocessConfig {
            percentiles: Some(Percentiles::Pairs(vec![[99.0, 95.0]])),
            ..Default::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("preprocess.percentiles[0]"), "{err}");
        assert!(err.contains("[99, 95]"), "{err}");
        let wrong_len = PreprocessConfig {
            percentiles: Some(Percentiles::Pairs(vec![[1.0, 2.0], [1.0, 2.0]])),
            ..Default::default()
        };
        let err = wrong_len
            .resolve(Preset::Code, &names, &PreprocessDefaults::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 pairs but the dataset has 1"), "{err}");
        let guard = PreprocessConfig {
            equal_guard: 0.0,
            ..Default::default()
        };
        assert!(
            guard
                .validate()
                .unwrap_err()
                .to_string()
                .contains("equal_guard")
        );
    }

    #[test]
    fn apply_scales_to_unit_and_symmetric() {
        let v = Volume::from_vec([1, 1, 1, 4], vec![0.0, 127.5, 255.0, 51.0]).unwrap();
        let names = vec!["x".to_string()];
        for (scale, want) in [
            (Scale::Unit, [0.0, 0.5, 1.0, 0.2]),
            (Scale::Symmetric, [-1.0, 0.0, 1.0, -0.6]),
        ] {
            let p = PreprocessConfig {
                stretch: false,
                scale,
                ..Default::default()
            }
            .resolve(Preset::Code, &names, &PreprocessDefaults::default())
            .unwrap();
            let (out, bounds) = p.apply(&v, DType::U8).unwrap();
            assert_eq!(bounds, vec![None]);
            for (a, b) in out.data().iter().zip(want) {
                assert!((a - b).abs() < 1e-6, "{scale:?}: {a} vs {b}");
            }
        }
        let nan = Volume::from_vec([1, 1, 1, 2], vec![0.0, f32::NAN]).unwrap();
        let p = PreprocessConfig::default()
            .resolve(Preset::Code, &names, &PreprocessDefaults::default())
            .unwrap();
        assert!(
            p.apply(&nan, DType::F32)
                .unwrap_err()
                .to_string()
                .contains("NaN")
        );
    }
}
