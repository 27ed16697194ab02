//! The synthetic-mask configuration: every distribution of docs/published-code.md §2 as a
//! field, with the published code's values as defaults ([`MaskConfig::preset`] is the one
//! place where default values are written).
//!
//! Integer distributions are inclusive ranges `{ min, max }`. The published code draws them
//! with NumPy's `randint(low, high)`, whose `high` is *exclusive*: `randint(45, 70)` is written
//! here as `{ min = 45, max = 69 }`. The thesis and the papers state closed intervals
//! (`[5,9]` pixels), which the `thesis` and `paper` presets take literally.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::SynthError;
use crate::preset::Preset;

/// A uniform integer distribution over `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntRange {
    pub min: u32,
    pub max: u32,
}

impl IntRange {
    pub const fn new(min: u32, max: u32) -> Self {
        Self { min, max }
    }

    /// The same value every time.
    pub const fn fixed(v: u32) -> Self {
        Self { min: v, max: v }
    }

    /// Mean of the distribution.
    pub fn mean(&self) -> f64 {
        (f64::from(self.min) + f64::from(self.max)) / 2.0
    }

    pub(crate) fn sample(&self, rng: &mut impl rand::Rng) -> u32 {
        use rand::RngExt;
        rng.random_range(self.min..=self.max)
    }

    pub(crate) fn check(&self, field: &str) -> Result<(), SynthError> {
        if self.min > self.max {
            return Err(SynthError::config(
                format!("{field}.min"),
                format!("must be ≤ max, got {} > {}", self.min, self.max),
            ));
        }
        Ok(())
    }

    pub(crate) fn check_positive(&self, field: &str) -> Result<(), SynthError> {
        self.check(field)?;
        if self.min == 0 {
            return Err(SynthError::config(
                format!("{field}.min"),
                "must be > 0, got 0",
            ));
        }
        Ok(())
    }
}

/// A uniform real distribution over `[min, max)` (exactly `min` when both are equal).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatRange {
    pub min: f64,
    pub max: f64,
}

impl FloatRange {
    pub const fn new(min: f64, max: f64) -> Self {
        Self { min, max }
    }

    pub fn mean(&self) -> f64 {
        (self.min + self.max) / 2.0
    }

    pub(crate) fn sample(&self, rng: &mut impl rand::Rng) -> f64 {
        use rand::RngExt;
        if self.max > self.min {
            rng.random_range(self.min..self.max)
        } else {
            self.min
        }
    }

    pub(crate) fn check(&self, field: &str) -> Result<(), SynthError> {
        if !self.min.is_finite() || !self.max.is_finite() {
            return Err(SynthError::config(
                field,
                format!("must be finite, got [{}, {}]", self.min, self.max),
            ));
        }
        if self.min > self.max {
            return Err(SynthError::config(
                format!("{field}.min"),
                format!("must be ≤ max, got {} > {}", self.min, self.max),
            ));
        }
        Ok(())
    }

    pub(crate) fn check_within(&self, field: &str, lo: f64, hi: f64) -> Result<(), SynthError> {
        self.check(field)?;
        if self.min < lo || self.max > hi {
            return Err(SynthError::config(
                field,
                format!(
                    "must lie within [{lo}, {hi}], got [{}, {}]",
                    self.min, self.max
                ),
            ));
        }
        Ok(())
    }
}

/// Nucleus semi-axes in voxels along the window's X, Y and Z axes (before warp and rotation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AxesRange {
    /// Semi-axis `a` along X (the long axis in the published code).
    pub x: IntRange,
    /// Semi-axis `b` along Y.
    pub y: IntRange,
    /// Semi-axis `c` along Z.
    pub z: IntRange,
}

/// Where the nucleus centre sits relative to its Golgi (the Golgi is at the window centre).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum OffsetConfig {
    /// As coded: the nucleus centre is at relative position `pos` on all three window axes at
    /// once, i.e. at `pos·(n−1)`; the Golgi is at 0.5, so the offset is `(pos−0.5)·(W−1, W−1,
    /// Z−1)`, a shift along the window diagonal (§2.1). `pos` is rounded to `decimals`
    /// decimals after the draw (the code rounds to 2).
    Relative {
        pos: FloatRange,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decimals: Option<u32>,
    },
    /// As stated in the papers ("distance between the nucleus and Golgi … [−6, 6] pixels"): a
    /// signed distance `d` in voxels along the same diagonal, i.e. an offset of
    /// `d·(1, 1, (Z−1)/(W−1))` in (X, Y, Z), so that the geometry stays that of the code.
    Voxels { distance: FloatRange },
}

/// The elastic deformation of each pair (§2.2).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticConfig {
    pub enabled: bool,
    /// Gaussian σ of the smoothing, as a fraction of the window size on each axis (0.75).
    pub sigma_factor: f64,
    /// The displacement amplitude α is drawn uniformly from
    /// `[alpha_min·σ, alpha_max·σ)` per axis (1/8 and 1/2 in the code).
    pub alpha_min: f64,
    pub alpha_max: f64,
    /// Spacing in voxels of the coarse grid on which the smoothed noise is computed before
    /// trilinear upsampling. Not a parameter of the code (which filters at full resolution);
    /// with σ ≈ 100 voxels any step up to 16 is indistinguishable.
    pub grid_step: u32,
}

/// The rotation applied to each pair after the warp (§2.3).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RotationConfig {
    None,
    /// About the Z axis only, an integer angle in degrees (the code: `0..=179`).
    Z {
        degrees: IntRange,
    },
    /// A uniformly random 3-D rotation (not in the code: nuclei there never tilt out of the
    /// XY plane).
    Full,
}

/// What to do when a new object touches an object of the same channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverlapRule {
    /// Draw a new position (rejection sampling), at most `max_attempts` times.
    Reject,
    /// Insert anyway (the 3-class code does this for pairs).
    Allow,
}

/// The synthetic-mask generator's configuration (docs/published-code.md §2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    /// 1 = nuclei only, 2 = Golgi + nuclei, 3 = Golgi + nuclei + pair. Mask channel order is
    /// `golgi, nuclei[, pair]`; the 1-class mask has the single channel `nuclei`.
    pub classes: u8,
    /// Side in voxels (X and Y) of the window each object is built in (128); in Z the window
    /// spans the whole volume depth. Objects reaching beyond it are cut, as in the code.
    pub window: u32,
    /// Nucleus–Golgi pairs per volume (in the 1-class task: nuclei per volume, drawn exactly as
    /// the nuclei of pairs).
    pub pairs: IntRange,
    /// Golgi without a nucleus per volume (3-class only; not in the pair channel).
    pub isolated_golgi: IntRange,
    /// Nuclei without a Golgi per volume (3-class only; not in the pair channel).
    pub isolated_nuclei: IntRange,
    /// Golgi sphere radius in voxels.
    pub golgi_radius: IntRange,
    pub nucleus_axes: AxesRange,
    pub offset: OffsetConfig,
    pub elastic: ElasticConfig,
    pub rotation: RotationConfig,
    /// Overlap rule for pairs; isolated objects are always rejection-sampled, each against its
    /// own channel (§2.5).
    pub pair_overlap: OverlapRule,
    /// Warp and rotate isolated objects like pairs (the code does not: they keep their long
    /// axis along X).
    pub transform_isolated: bool,
    /// Positions tried per object before it is given up and counted as unplaced (the code
    /// retries forever).
    pub max_attempts: u32,
}

impl Default for MaskConfig {
    /// The published 2-class generator (§2.4).
    fn default() -> Self {
        Self::preset(Preset::Code, 2)
    }
}

impl MaskConfig {
    /// The values of `preset` for a `classes`-class mask (1, 2 or 3; other values are kept and
    /// rejected by [`validate`](Self::validate)).
    ///
    /// - `code`: §2.4 (2-class, also used for 1-class) and §2.5 (3-class), `randint` highs
    ///   made inclusive.
    /// - `thesis`: the thesis' 40–90 pairs per crop, with the intervals the thesis' extended
    ///   abstract states: Golgi radius [5, 9], nucleus semi-axes [17, 30] × [8, 13] × [8, 13],
    ///   nucleus–Golgi distance [−6, 6] voxels, rotation [0, 180]°.
    /// - `paper`: the EMBC paper, same intervals with 45–70 pairs.
    ///
    /// Isolated-object counts and everything the texts do not state keep the code's values.
    pub fn preset(preset: Preset, classes: u8) -> Self {
        let three = classes == 3;
        let code = Self {
            classes,
            window: 128,
            pairs: IntRange::new(45, 69),
            isolated_golgi: if three {
                IntRange::new(2, 5)
            } else {
                IntRange::fixed(0)
            },
            isolated_nuclei: if three {
                IntRange::new(1, 3)
            } else {
                IntRange::fixed(0)
            },
            golgi_radius: IntRange::new(5, 8),
            nucleus_axes: if three {
                AxesRange {
                    x: IntRange::new(16, 29),
                    y: IntRange::new(8, 11),
                    z: IntRange::new(8, 11),
                }
            } else {
                AxesRange {
                    x: IntRange::new(17, 29),
                    y: IntRange::new(8, 12),
                    z: IntRange::new(8, 12),
                }
            },
            offset: OffsetConfig::Relative {
                pos: if three {
                    FloatRange::new(0.40, 0.60)
                } else {
                    FloatRange::new(0.45, 0.55)
                },
                decimals: Some(2),
            },
            elastic: ElasticConfig {
                enabled: true,
                sigma_factor: 0.75,
                alpha_min: 0.125,
                alpha_max: 0.5,
                grid_step: 8,
            },
            rotation: RotationConfig::Z {
                degrees: IntRange::new(0, 179),
            },
            pair_overlap: if three {
                OverlapRule::Allow
            } else {
                OverlapRule::Reject
            },
            transform_isolated: false,
            max_attempts: 1000,
        };
        let stated = |pairs: IntRange| Self {
            pairs,
            golgi_radius: IntRange::new(5, 9),
            nucleus_axes: AxesRange {
                x: IntRange::new(17, 30),
                y: IntRange::new(8, 13),
                z: IntRange::new(8, 13),
            },
            offset: OffsetConfig::Voxels {
                distance: FloatRange::new(-6.0, 6.0),
            },
            rotation: RotationConfig::Z {
                degrees: IntRange::new(0, 180),
            },
            ..code.clone()
        };
        match preset {
            Preset::Code => code,
            Preset::Thesis => stated(IntRange::new(40, 90)),
            Preset::Paper => stated(IntRange::new(45, 70)),
        }
    }

    /// Mask channel names in file order.
    pub fn channel_names(&self) -> Vec<&'static str> {
        match self.classes {
            1 => vec!["nuclei"],
            2 => vec!["golgi", "nuclei"],
            _ => vec!["golgi", "nuclei", "pair"],
        }
    }

    /// Checks every field; the error names the field path and the value.
    pub fn validate(&self) -> Result<(), SynthError> {
        if !(1..=3).contains(&self.classes) {
            return Err(SynthError::config(
                "classes",
                format!("must be 1, 2 or 3, got {}", self.classes),
            ));
        }
        if self.window < 8 {
            return Err(SynthError::config(
                "window",
                format!("must be ≥ 8, got {}", self.window),
            ));
        }
        self.pairs.check("pairs")?;
        self.isolated_golgi.check("isolated_golgi")?;
        self.isolated_nuclei.check("isolated_nuclei")?;
        self.golgi_radius.check_positive("golgi_radius")?;
        self.nucleus_axes.x.check_positive("nucleus_axes.x")?;
        self.nucleus_axes.y.check_positive("nucleus_axes.y")?;
        self.nucleus_axes.z.check_positive("nucleus_axes.z")?;
        let half = self.window / 2;
        for (name, r) in [
            ("golgi_radius", self.golgi_radius),
            ("nucleus_axes.x", self.nucleus_axes.x),
            ("nucleus_axes.y", self.nucleus_axes.y),
        ] {
            if r.max >= half {
                return Err(SynthError::config(
                    format!("{name}.max"),
                    format!(
                        "must be < window/2 = {half} so the object fits its window, got {}",
                        r.max
                    ),
                ));
            }
        }
        match self.offset {
            OffsetConfig::Relative { pos, decimals } => {
                pos.check_within("offset.pos", 0.0, 1.0)?;
                if let Some(d) = decimals
                    && d > 9
                {
                    return Err(SynthError::config(
                        "offset.decimals",
                        format!("must be ≤ 9, got {d}"),
                    ));
                }
            }
            OffsetConfig::Voxels { distance } => {
                let lim = f64::from(half);
                distance.check_within("offset.distance", -lim, lim)?;
            }
        }
        let e = &self.elastic;
        if !(e.sigma_factor.is_finite() && e.sigma_factor > 0.0) {
            return Err(SynthError::config(
                "elastic.sigma_factor",
                format!("must be > 0, got {}", e.sigma_factor),
            ));
        }
        FloatRange::new(e.alpha_min, e.alpha_max).check_within("elastic.alpha", 0.0, 10.0)?;
        if e.grid_step == 0 {
            return Err(SynthError::config(
                "elastic.grid_step",
                "must be ≥ 1, got 0",
            ));
        }
        if let RotationConfig::Z { degrees } = self.rotation {
            degrees.check("rotation.degrees")?;
            if degrees.max > 360 {
                return Err(SynthError::config(
                    "rotation.degrees.max",
                    format!("must be ≤ 360, got {}", degrees.max),
                ));
            }
        }
        if self.max_attempts == 0 {
            return Err(SynthError::config("max_attempts", "must be ≥ 1, got 0"));
        }
        Ok(())
    }

    /// Reads a TOML file of overrides on top of `self` (usually a preset): keys present in the
    /// file replace the preset's, missing keys keep it; unknown keys are errors.
    pub fn with_overrides_file(&self, path: &Path) -> Result<Self, SynthError> {
        merge_toml_file(self, path)
    }
}

/// Deserialises `path` as a partial override of `base`: tables are merged recursively, other
/// values replace the base's. Errors name the file.
pub(crate) fn merge_toml_file<T>(base: &T, path: &Path) -> Result<T, SynthError>
where
    T: Serialize + serde::de::DeserializeOwned,
{
    let text = std::fs::read_to_string(path).map_err(|e| SynthError::io(path, e))?;
    merge_toml_str(base, &text).map_err(|message| SynthError::ConfigFile {
        path: path.to_owned(),
        message,
    })
}

pub(crate) fn merge_toml_str<T>(base: &T, text: &str) -> Result<T, String>
where
    T: Serialize + serde::de::DeserializeOwned,
{
    let overrides: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut merged = toml::Table::try_from(base).map_err(|e| e.to_string())?;
    merge_tables(&mut merged, overrides);
    merged
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())
}

fn merge_tables(base: &mut toml::Table, overrides: toml::Table) {
    for (key, value) in overrides {
        // A tagged enum (`kind = …`) switching variant replaces the whole table.
        let merge = matches!(
            (base.get(&key), &value),
            (Some(toml::Value::Table(b)), toml::Value::Table(o))
                if o.get("kind").is_none_or(|k| Some(k) == b.get("kind"))
        );
        if !merge {
            base.insert(key, value);
        } else if let (Some(toml::Value::Table(b)), toml::Value::Table(o)) =
            (base.get_mut(&key), value)
        {
            merge_tables(b, o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_for_every_class_count() {
        for preset in Preset::ALL {
            for classes in 1..=3 {
                MaskConfig::preset(preset, classes).validate().unwrap();
            }
        }
        assert_eq!(MaskConfig::default(), MaskConfig::preset(Preset::Code, 2));
        assert_eq!(
            MaskConfig::preset(Preset::Thesis, 2).pairs,
            IntRange::new(40, 90)
        );
    }

    #[test]
    fn errors_name_field_and_value() {
        let mut c = MaskConfig {
            golgi_radius: IntRange::new(9, 5),
            ..Default::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert_eq!(err, "golgi_radius.min must be ≤ max, got 9 > 5");
        c.golgi_radius = IntRange::new(5, 8);
        c.classes = 4;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "classes must be 1, 2 or 3, got 4"
        );
        c.classes = 2;
        c.offset = OffsetConfig::Relative {
            pos: FloatRange::new(0.2, 1.5),
            decimals: None,
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("offset.pos must lie within [0, 1]"),
            "{err}"
        );
    }

    #[test]
    fn toml_round_trip_and_partial_override() {
        let base = MaskConfig::preset(Preset::Code, 3);
        let text = toml::to_string(&base).unwrap();
        let back: MaskConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, base);

        let merged: MaskConfig = merge_toml_str(
            &base,
            "pairs = { min = 3, max = 4 }\n[rotation]\nkind = \"full\"\n[elastic]\nenabled = false\n",
        )
        .unwrap();
        assert_eq!(merged.pairs, IntRange::new(3, 4));
        assert_eq!(merged.rotation, RotationConfig::Full);
        assert!(!merged.elastic.enabled);
        assert_eq!(merged.elastic.sigma_factor, 0.75);
        assert_eq!(merged.golgi_radius, base.golgi_radius);

        let err = merge_toml_str(&base, "pairz = 3").unwrap_err();
        assert!(err.contains("pairz"), "{err}");
    }
}
