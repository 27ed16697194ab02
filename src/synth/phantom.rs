//! The phantom microscopy renderer: paired images and exact ground-truth masks of nuclei and
//! Golgi that resemble the retina crops of the papers, so that every model and report can be
//! exercised and scored without private data.
//!
#![doc = include_str!("phantom.md")]

use std::f64::consts::{PI, TAU};
use std::str::FromStr;

use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::SynthError;
use super::config::{FloatRange, IntRange};
use super::filter::{block_mean, gaussian_blur, upsample, upsample_at};
use super::geometry::{Rotation, Vec3};
use super::rng::{stream, tag};
use crate::volume::{AnyVolume, DType, Volume};

/// Named phantom presets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhantomPreset {
    /// Calibrated to be about as hard as the real retina crops (docs/design.md §6: per-channel Otsu
    /// Dice ≈ 0.55–0.75 on nuclei and 0.3–0.5 on Golgi).
    #[default]
    Retina,
    /// Bright, sharp, clean objects that a threshold nearly separates: for fast tests.
    Easy,
    /// The `retina` image model at the published object scale: nuclei and Golgi sized like the
    /// published synthetic masks (nucleus semi-axes 17–29 × 8–12 × 8–12 voxels, Golgi of about
    /// the volume of a sphere of radius 5–8), drawn into the eight published crop shapes and
    /// written in the published file layout (`synth::dataset::write_published_phantom`).
    Published,
}

impl PhantomPreset {
    pub const ALL: [PhantomPreset; 3] = [
        PhantomPreset::Retina,
        PhantomPreset::Easy,
        PhantomPreset::Published,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PhantomPreset::Retina => "retina",
            PhantomPreset::Easy => "easy",
            PhantomPreset::Published => "published",
        }
    }
}

display_by_name!(PhantomPreset);

impl FromStr for PhantomPreset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PhantomPreset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown phantom preset `{s}`, expected one of: retina, easy, published")
            })
    }
}

/// Cells: nuclei, where they sit and what they look like.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellConfig {
    /// Nuclei per 10 000 voxels of XY area (the count scales with the field of view).
    pub density: FloatRange,
    /// Vessels per volume.
    pub vessels: IntRange,
    /// Fraction of nuclei placed on a vessel wall (the rest lie freely).
    pub on_vessel: f64,
    /// Vessel radius in voxels (distance of wall nuclei from the centre line).
    pub vessel_radius: FloatRange,
    /// Nucleus semi-axes in voxels: long, middle, short.
    pub long_axis: FloatRange,
    pub mid_axis: FloatRange,
    pub short_axis: FloatRange,
    /// Relative amplitude of the random radial bumps of the surface (0 = ellipsoids).
    pub irregularity: f64,
    /// Largest tilt of a free nucleus' long axis out of the XY plane, degrees.
    pub max_tilt_degrees: f64,
    /// Smallest distance between two nuclei, voxels.
    pub min_gap: f64,
    /// Fraction of nuclei without a Golgi.
    pub without_golgi: f64,
    /// Positions tried per object before it is left out.
    pub max_attempts: u32,
}

/// Golgi clusters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GolgiConfig {
    /// Blobs per cluster.
    pub blobs: IntRange,
    /// Blob radius in voxels.
    pub blob_radius: FloatRange,
    /// σ in voxels of the blob centres around the cluster centre, along the nucleus surface
    /// and away from it.
    pub spread_along: f64,
    pub spread_across: f64,
    /// Distance in voxels from the nucleus surface to the cluster centre.
    pub gap: FloatRange,
    /// Probability that a vessel cell's Golgi points upstream (else a random direction).
    pub polarity: f64,
    /// Golgi clusters without a nucleus per 10 000 voxels of XY area.
    pub lone_density: FloatRange,
}

/// Autofluorescent dust in the Golgi channel (not Golgi, not in the masks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DustConfig {
    /// Dust blobs per 10 000 voxels of XY area.
    pub density: FloatRange,
    /// Radius in voxels.
    pub radius: FloatRange,
    /// Brightness as a multiple of the Golgi channel's `photons`.
    pub brightness: FloatRange,
    /// Smallest distance in voxels between dust and any Golgi voxel.
    pub min_distance: f64,
}

/// Optics shared by both channels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpticsConfig {
    /// PSF Gaussian σ (z, y, x) in voxels.
    pub psf_sigma: [f64; 3],
    /// σ (z, y, x) in voxels of the out-of-focus haze.
    pub haze_sigma: [f64; 3],
    /// Fraction of the intensity left at the deepest slice (1 = no fall-off).
    pub depth_attenuation: f64,
}

/// Brightness, background and detector of one channel (units: photons per voxel).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Median object brightness, expected photons per voxel at the surface.
    pub photons: f64,
    /// σ of ln(brightness) between objects.
    pub brightness_spread: f64,
    /// Fraction of objects dimmed by `dim_factor`.
    pub dim_fraction: f64,
    pub dim_factor: FloatRange,
    /// Relative amplitude and correlation length (voxels) of the texture inside objects.
    pub texture: f64,
    pub texture_scale: f64,
    /// Weight of the out-of-focus haze.
    pub haze: f64,
    /// Mean background, photons per voxel.
    pub background: f64,
    /// Relative amplitude of the slow background variation.
    pub background_variation: f64,
    /// Fraction of the other channel's density that bleeds into this one.
    pub crosstalk: f64,
    /// Gaussian read noise, photons (σ).
    pub read_noise: f64,
    /// Detector offset in grey levels.
    pub offset: f64,
    /// Grey levels per photon.
    pub gain: f64,
}

/// The phantom renderer's configuration. See the module documentation for the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhantomConfig {
    /// Image sample type: `u8` or `u16`.
    pub sample_type: DType,
    /// Mask channels: 2 = golgi, nuclei; 3 = golgi, nuclei, pair.
    pub mask_classes: u8,
    pub cells: CellConfig,
    pub golgi: GolgiConfig,
    pub dust: DustConfig,
    pub optics: OpticsConfig,
    pub nuclei_channel: ChannelConfig,
    pub golgi_channel: ChannelConfig,
}

impl Default for PhantomConfig {
    fn default() -> Self {
        Self::preset(PhantomPreset::Retina)
    }
}

impl PhantomConfig {
    /// The values of a named preset (the one place phantom defaults are written).
    pub fn preset(preset: PhantomPreset) -> Self {
        let retina = Self {
            sample_type: DType::U8,
            mask_classes: 3,
            cells: CellConfig {
                density: FloatRange::new(2.2, 3.0),
                vessels: IntRange::new(1, 3),
                on_vessel: 0.7,
                vessel_radius: FloatRange::new(3.0, 5.0),
                long_axis: FloatRange::new(13.0, 22.0),
                mid_axis: FloatRange::new(7.0, 10.0),
                short_axis: FloatRange::new(5.5, 8.0),
                irregularity: 0.25,
                max_tilt_degrees: 20.0,
                min_gap: 1.0,
                without_golgi: 0.12,
                max_attempts: 200,
            },
            golgi: GolgiConfig {
                blobs: IntRange::new(6, 12),
                blob_radius: FloatRange::new(2.2, 3.6),
                spread_along: 4.0,
                spread_across: 1.2,
                gap: FloatRange::new(2.5, 5.0),
                polarity: 0.7,
                lone_density: FloatRange::new(0.2, 0.5),
            },
            dust: DustConfig {
                density: FloatRange::new(5.0, 8.0),
                radius: FloatRange::new(1.0, 2.5),
                brightness: FloatRange::new(2.0, 4.0),
                min_distance: 3.0,
            },
            optics: OpticsConfig {
                psf_sigma: [2.2, 0.9, 0.9],
                haze_sigma: [4.0, 12.0, 12.0],
                depth_attenuation: 0.45,
            },
            // Calibrated (benches/synth.rs): over 12 volumes of 48 × 192 × 192, a per-channel
            // Otsu threshold scores a mean Dice of about 0.64 on nuclei and 0.44 on Golgi.
            nuclei_channel: ChannelConfig {
                photons: 45.0,
                brightness_spread: 0.2,
                dim_fraction: 0.45,
                dim_factor: FloatRange::new(0.12, 0.3),
                texture: 0.2,
                texture_scale: 3.0,
                haze: 1.0,
                background: 1.5,
                background_variation: 0.5,
                crosstalk: 0.0,
                read_noise: 1.0,
                offset: 8.0,
                gain: 2.5,
            },
            golgi_channel: ChannelConfig {
                photons: 90.0,
                brightness_spread: 0.4,
                dim_fraction: 0.45,
                dim_factor: FloatRange::new(0.2, 0.4),
                texture: 0.3,
                texture_scale: 2.0,
                haze: 1.5,
                background: 0.8,
                background_variation: 0.5,
                crosstalk: 0.05,
                read_noise: 0.8,
                offset: 8.0,
                gain: 2.5,
            },
        };
        match preset {
            PhantomPreset::Retina => retina,
            PhantomPreset::Published => Self::published(retina),
            PhantomPreset::Easy => {
                let clean = |c: ChannelConfig| ChannelConfig {
                    photons: 80.0,
                    brightness_spread: 0.1,
                    dim_fraction: 0.0,
                    texture: 0.05,
                    haze: 0.0,
                    background: 2.0,
                    background_variation: 0.0,
                    crosstalk: 0.0,
                    read_noise: 1.0,
                    ..c
                };
                Self {
                    cells: CellConfig {
                        irregularity: 0.05,
                        ..retina.cells
                    },
                    dust: DustConfig {
                        density: FloatRange::new(0.0, 0.0),
                        ..retina.dust
                    },
                    optics: OpticsConfig {
                        psf_sigma: [0.6, 0.4, 0.4],
                        haze_sigma: retina.optics.haze_sigma,
                        depth_attenuation: 1.0,
                    },
                    nuclei_channel: clean(retina.nuclei_channel),
                    golgi_channel: clean(retina.golgi_channel),
                    ..retina
                }
            }
        }
    }

    /// The `published` preset: `retina`'s image model with objects at the scale of the
    /// published synthetic masks (the published generator's nucleus semi-axes 17–29 × 8–12 ×
    /// 8–12 and Golgi spheres of radius 5–8, 0.5–2.2 k voxels; here a Golgi is a cluster of
    /// 3–6 blobs of radius 3.5–5.5 of about that volume), their density (45–69 pairs in a
    /// crop of about 3.3 × 10⁵ voxels² → 1.4–2.0 per 10 000 voxels²) and a PSF and haze
    /// grown with the objects, so that the voxels are about 1.4 times finer than `retina`'s.
    /// Larger objects are easier to threshold, so there is more dust in the Golgi channel.
    /// Calibrated (benches/synth.rs, `SEGLAB_SYNTH_PUBLISHED_SCALE=0.5`): over the eight crops
    /// at half their Y and X extent, a per-channel Otsu threshold scores a mean Dice of about
    /// 0.66 on nuclei and 0.36 on Golgi.
    fn published(retina: Self) -> Self {
        Self {
            cells: CellConfig {
                density: FloatRange::new(1.4, 2.0),
                vessels: IntRange::new(2, 5),
                vessel_radius: FloatRange::new(4.0, 7.0),
                long_axis: FloatRange::new(17.0, 29.0),
                mid_axis: FloatRange::new(8.0, 12.0),
                short_axis: FloatRange::new(8.0, 12.0),
                min_gap: 1.5,
                ..retina.cells
            },
            golgi: GolgiConfig {
                blobs: IntRange::new(3, 6),
                blob_radius: FloatRange::new(3.5, 5.5),
                spread_along: 3.5,
                spread_across: 1.5,
                gap: FloatRange::new(3.0, 6.0),
                lone_density: FloatRange::new(0.15, 0.35),
                ..retina.golgi
            },
            dust: DustConfig {
                density: FloatRange::new(8.0, 12.0),
                radius: FloatRange::new(1.5, 3.5),
                min_distance: 4.0,
                ..retina.dust
            },
            optics: OpticsConfig {
                psf_sigma: [3.0, 1.3, 1.3],
                haze_sigma: [5.5, 16.0, 16.0],
                ..retina.optics
            },
            ..retina
        }
    }

    /// Mask channel names in file order.
    pub fn mask_channel_names(&self) -> Vec<&'static str> {
        if self.mask_classes == 2 {
            vec!["golgi", "nuclei"]
        } else {
            vec!["golgi", "nuclei", "pair"]
        }
    }

    /// Checks every field; the error names the field path and the value.
    pub fn validate(&self) -> Result<(), SynthError> {
        let fraction = |field: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(SynthError::config(
                    field,
                    format!("must lie within [0, 1], got {v}"),
                ))
            }
        };
        let non_negative = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(SynthError::config(field, format!("must be ≥ 0, got {v}")))
            }
        };
        let positive_range = |field: &str, r: FloatRange| {
            r.check(field)?;
            if r.min <= 0.0 {
                return Err(SynthError::config(
                    format!("{field}.min"),
                    format!("must be > 0, got {}", r.min),
                ));
            }
            Ok(())
        };
        if !matches!(self.sample_type, DType::U8 | DType::U16) {
            return Err(SynthError::config(
                "sample_type",
                format!("must be u8 or u16, got {}", self.sample_type),
            ));
        }
        if !(2..=3).contains(&self.mask_classes) {
            return Err(SynthError::config(
                "mask_classes",
                format!("must be 2 or 3, got {}", self.mask_classes),
            ));
        }
        let c = &self.cells;
        c.density.check("cells.density")?;
        non_negative("cells.density.min", c.density.min)?;
        c.vessels.check("cells.vessels")?;
        fraction("cells.on_vessel", c.on_vessel)?;
        positive_range("cells.vessel_radius", c.vessel_radius)?;
        positive_range("cells.long_axis", c.long_axis)?;
        positive_range("cells.mid_axis", c.mid_axis)?;
        positive_range("cells.short_axis", c.short_axis)?;
        fraction("cells.irregularity", c.irregularity)?;
        if !(0.0..=90.0).contains(&c.max_tilt_degrees) {
            return Err(SynthError::config(
                "cells.max_tilt_degrees",
                format!("must lie within [0, 90], got {}", c.max_tilt_degrees),
            ));
        }
        non_negative("cells.min_gap", c.min_gap)?;
        fraction("cells.without_golgi", c.without_golgi)?;
        if c.max_attempts == 0 {
            return Err(SynthError::config(
                "cells.max_attempts",
                "must be ≥ 1, got 0",
            ));
        }
        let g = &self.golgi;
        g.blobs.check_positive("golgi.blobs")?;
        positive_range("golgi.blob_radius", g.blob_radius)?;
        non_negative("golgi.spread_along", g.spread_along)?;
        non_negative("golgi.spread_across", g.spread_across)?;
        g.gap.check("golgi.gap")?;
        non_negative("golgi.gap.min", g.gap.min)?;
        fraction("golgi.polarity", g.polarity)?;
        g.lone_density.check("golgi.lone_density")?;
        non_negative("golgi.lone_density.min", g.lone_density.min)?;
        let d = &self.dust;
        d.density.check("dust.density")?;
        non_negative("dust.density.min", d.density.min)?;
        positive_range("dust.radius", d.radius)?;
        d.brightness.check("dust.brightness")?;
        non_negative("dust.brightness.min", d.brightness.min)?;
        non_negative("dust.min_distance", d.min_distance)?;
        let o = &self.optics;
        for (i, axis) in ["z", "y", "x"].iter().enumerate() {
            non_negative(&format!("optics.psf_sigma.{axis}"), o.psf_sigma[i])?;
            non_negative(&format!("optics.haze_sigma.{axis}"), o.haze_sigma[i])?;
        }
        if !(o.depth_attenuation > 0.0 && o.depth_attenuation <= 1.0) {
            return Err(SynthError::config(
                "optics.depth_attenuation",
                format!("must lie within (0, 1], got {}", o.depth_attenuation),
            ));
        }
        for (name, ch) in [
            ("nuclei_channel", &self.nuclei_channel),
            ("golgi_channel", &self.golgi_channel),
        ] {
            non_negative(&format!("{name}.photons"), ch.photons)?;
            non_negative(&format!("{name}.brightness_spread"), ch.brightness_spread)?;
            fraction(&format!("{name}.dim_fraction"), ch.dim_fraction)?;
            ch.dim_factor.check(&format!("{name}.dim_factor"))?;
            non_negative(&format!("{name}.dim_factor.min"), ch.dim_factor.min)?;
            non_negative(&format!("{name}.texture"), ch.texture)?;
            if !(ch.texture_scale >= 1.0 && ch.texture_scale.is_finite()) {
                return Err(SynthError::config(
                    format!("{name}.texture_scale"),
                    format!("must be ≥ 1, got {}", ch.texture_scale),
                ));
            }
            non_negative(&format!("{name}.haze"), ch.haze)?;
            non_negative(&format!("{name}.background"), ch.background)?;
            non_negative(
                &format!("{name}.background_variation"),
                ch.background_variation,
            )?;
            fraction(&format!("{name}.crosstalk"), ch.crosstalk)?;
            non_negative(&format!("{name}.read_noise"), ch.read_noise)?;
            non_negative(&format!("{name}.offset"), ch.offset)?;
            if !(ch.gain > 0.0 && ch.gain.is_finite()) {
                return Err(SynthError::config(
                    format!("{name}.gain"),
                    format!("must be > 0, got {}", ch.gain),
                ));
            }
        }
        Ok(())
    }

    /// Reads a TOML file of overrides on top of `self` (see [`MaskConfig::with_overrides_file`]).
    ///
    /// [`MaskConfig::with_overrides_file`]: super::MaskConfig::with_overrides_file
    pub fn with_overrides_file(&self, path: &std::path::Path) -> Result<Self, SynthError> {
        super::config::merge_toml_file(self, path)
    }
}

/// Where the renderer put things, for tests and the dataset README. Coordinates are (z, y, x).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhantomReport {
    pub seed: u64,
    pub shape: [usize; 3],
    pub nuclei: usize,
    /// Nuclei with a Golgi.
    pub paired: usize,
    /// Golgi clusters without a nucleus.
    pub lone_golgi: usize,
    /// Dust blobs: centre and radius.
    pub dust: Vec<([f64; 3], f64)>,
    /// Objects (nuclei, lone Golgi, dust) that found no free position.
    pub unplaced: usize,
}

/// One rendered phantom volume.
#[derive(Clone, Debug)]
pub struct Phantom {
    /// Channels `golgi, nuclei`, uint8 or uint16.
    pub image: AnyVolume,
    /// Channels `golgi, nuclei[, pair]`, values 0/1.
    pub mask: Volume<u8>,
    pub report: PhantomReport,
}

// ---------------------------------------------------------------------------------------------
// Ground-truth objects. Vectors are (x, y, z) in voxels.

struct Vessel {
    control: [Vec3; 3],
    /// +1 or −1: the flow runs towards increasing or decreasing curve parameter.
    flow: f64,
}

impl Vessel {
    fn point(&self, t: f64) -> Vec3 {
        let [a, b, c] = self.control;
        std::array::from_fn(|d| {
            (1.0 - t) * (1.0 - t) * a[d] + 2.0 * (1.0 - t) * t * b[d] + t * t * c[d]
        })
    }

    fn tangent(&self, t: f64) -> Vec3 {
        let [a, b, c] = self.control;
        normalise(std::array::from_fn(|d| {
            2.0 * (1.0 - t) * (b[d] - a[d]) + 2.0 * t * (c[d] - b[d])
        }))
    }
}

struct Nucleus {
    centre: Vec3,
    /// Columns: long, middle, short axis directions.
    rotation: Rotation,
    axes: Vec3,
    /// Radial bumps: (direction, frequency, phase, amplitude).
    bumps: Vec<(Vec3, f64, f64, f64)>,
    bump_max: f64,
    /// Flow-aligned upstream direction when on a vessel.
    upstream: Option<Vec3>,
}

impl Nucleus {
    /// Radial scale of the surface in the (normalised) direction `u`.
    fn scale(&self, u: Vec3) -> f64 {
        1.0 + self
            .bumps
            .iter()
            .map(|&(v, f, p, a)| a * (f * dot(u, v) + p).sin())
            .sum::<f64>()
    }

    /// Whether `p` lies inside the nucleus grown by `grow` voxels along each semi-axis.
    fn contains(&self, p: Vec3, grow: f64) -> bool {
        let l = self.rotation.transpose().apply(sub(p, self.centre));
        let q: Vec3 = std::array::from_fn(|d| l[d] / (self.axes[d] + grow));
        let rho = norm(q);
        if rho <= 1.0 - self.bump_max {
            return true;
        }
        if rho > 1.0 + self.bump_max {
            return false;
        }
        rho <= self.scale(q.map(|v| v / rho.max(1e-12)))
    }

    fn bounding_radius(&self, grow: f64) -> f64 {
        (self.axes.iter().fold(0.0f64, |m, &a| m.max(a)) + grow) * (1.0 + self.bump_max) + 1.0
    }

    /// Distance from the centre to the surface along the unit world direction `d`.
    fn surface_distance(&self, d: Vec3) -> f64 {
        let l = self.rotation.transpose().apply(d);
        let q: Vec3 = std::array::from_fn(|i| l[i] / self.axes[i]);
        let rho = norm(q);
        self.scale(q.map(|v| v / rho)) / rho
    }
}

struct Cluster {
    blobs: Vec<(Vec3, f64)>,
    /// Index of its nucleus, if any.
    nucleus: Option<usize>,
}

fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}
fn normalise(a: Vec3) -> Vec3 {
    let n = norm(a).max(1e-12);
    a.map(|v| v / n)
}
fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
/// Two unit vectors orthogonal to the unit vector `d` and to each other.
fn orthonormal(d: Vec3) -> (Vec3, Vec3) {
    let helper = if d[2].abs() < 0.9 {
        [0.0, 0.0, 1.0]
    } else {
        [1.0, 0.0, 0.0]
    };
    let e1 = normalise(cross(d, helper));
    (e1, cross(d, e1))
}
fn gauss(rng: &mut impl rand::Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// Voxel grid helpers over a (Z, Y, X) volume.
struct Grid {
    shape: [usize; 3],
}

impl Grid {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Calls `f(index, point)` for every voxel within `radius` (box) of `centre` (x, y, z).
    fn for_box(&self, centre: Vec3, radius: f64, mut f: impl FnMut(usize, Vec3)) {
        let [nz, ny, nx] = self.shape;
        let dims = [nx, ny, nz];
        let mut lo = [0usize; 3];
        let mut hi = [0usize; 3];
        for d in 0..3 {
            let (a, b) = ((centre[d] - radius).floor(), (centre[d] + radius).ceil());
            if b < 0.0 || a > (dims[d] - 1) as f64 {
                return;
            }
            lo[d] = a.max(0.0) as usize;
            hi[d] = (b as usize).min(dims[d] - 1);
        }
        for z in lo[2]..=hi[2] {
            for y in lo[1]..=hi[1] {
                for x in lo[0]..=hi[0] {
                    f((z * ny + y) * nx + x, [x as f64, y as f64, z as f64]);
                }
            }
        }
    }
}

/// The ground truth of one volume: label grids and the object lists.
struct Layout {
    /// Nucleus index + 1 per voxel (0 = none).
    nuclei: Vec<u16>,
    /// Cluster index + 1 per voxel (0 = none).
    golgi: Vec<u16>,
    nucleus_list: Vec<Nucleus>,
    clusters: Vec<Cluster>,
    dust: Vec<(Vec3, f64)>,
    unplaced: usize,
}

/// The field a phantom's cells are laid out in: the voxel grid, its extent (x, y, z) in
/// voxels and its area in units of 100 × 100 voxels (densities are per such area).
struct Field {
    grid: Grid,
    shape: [usize; 3],
    fx: f64,
    fy: f64,
    fz: f64,
    area: f64,
}

/// Lays out the cells of a phantom: vessels, nuclei (beside the vessels or free), Golgi
/// clusters beside their nuclei and lone ones, then dust. One random stream, drawn in that
/// order.
fn layout(cfg: &PhantomConfig, shape: [usize; 3], seed: u64) -> Layout {
    let [nz, ny, nx] = shape;
    let (fx, fy, fz) = (nx as f64, ny as f64, nz as f64);
    let field = Field {
        grid: Grid { shape },
        shape,
        fx,
        fy,
        fz,
        area: fx * fy / 1e4,
    };
    let mut rng = stream(seed, &[tag::LAYOUT]);
    let vessels = draw_vessels(cfg, &field, &mut rng);
    let (nuclei, nucleus_list, unplaced_nuclei) = place_nuclei(cfg, &field, &vessels, &mut rng);
    let (golgi, clusters, unplaced_golgi) =
        place_golgi(cfg, &field, &nuclei, &nucleus_list, &mut rng);
    let (dust, unplaced_dust) = place_dust(cfg, &field, &golgi, &mut rng);
    Layout {
        nuclei,
        golgi,
        nucleus_list,
        clusters,
        dust,
        unplaced: unplaced_nuclei + unplaced_golgi + unplaced_dust,
    }
}

/// Vessels: quadratic Bézier curves from one side of the field to the opposite one.
fn draw_vessels(
    cfg: &PhantomConfig,
    field: &Field,
    rng: &mut rand::rngs::ChaCha8Rng,
) -> Vec<Vessel> {
    let c = &cfg.cells;
    let Field { fx, fy, fz, .. } = *field;
    (0..c.vessels.sample(rng))
        .map(|_| {
            let depth = |rng: &mut rand::rngs::ChaCha8Rng| rng.random_range(0.3..0.7) * fz;
            let horizontal = rng.random_bool(0.5);
            let (a, b) = (rng.random_range(0.0..1.0), rng.random_range(0.0..1.0));
            let (p0, p2) = if horizontal {
                ([-10.0, a * fy, depth(rng)], [fx + 10.0, b * fy, depth(rng)])
            } else {
                ([a * fx, -10.0, depth(rng)], [b * fx, fy + 10.0, depth(rng)])
            };
            let p1 = [
                rng.random_range(0.2..0.8) * fx,
                rng.random_range(0.2..0.8) * fy,
                depth(rng),
            ];
            let flow = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            Vessel {
                control: [p0, p1, p2],
                flow,
            }
        })
        .collect()
}

/// Nuclei: each drawn (on a vessel or free) until it does not touch another one, at most
/// `max_attempts` times. Returns the label volume (nucleus index + 1), the nuclei and how
/// many could not be placed.
fn place_nuclei(
    cfg: &PhantomConfig,
    field: &Field,
    vessels: &[Vessel],
    rng: &mut rand::rngs::ChaCha8Rng,
) -> (Vec<u16>, Vec<Nucleus>, usize) {
    let c = &cfg.cells;
    let Field {
        fx, fy, fz, area, ..
    } = *field;
    let grid = &field.grid;
    let mut nuclei = vec![0u16; grid.len()];
    let mut nucleus_list: Vec<Nucleus> = Vec::new();

    let wanted = (c.density.sample(rng) * area).round() as usize;
    let unplaced = count_unplaced(wanted, c.max_attempts, || {
        let on_vessel = !vessels.is_empty() && rng.random_bool(c.on_vessel);
        let axes = [
            c.long_axis.sample(rng),
            c.mid_axis.sample(rng),
            c.short_axis.sample(rng),
        ];
        let (centre, rotation, upstream) = if on_vessel {
            let v = &vessels[rng.random_range(0..vessels.len())];
            let t = rng.random_range(0.0..1.0);
            let tangent = v.tangent(t);
            let (n1, n2) = orthonormal(tangent);
            let phi = rng.random_range(0.0..TAU);
            let radial: Vec3 = std::array::from_fn(|d| phi.cos() * n1[d] + phi.sin() * n2[d]);
            let r = c.vessel_radius.sample(rng);
            let p = v.point(t);
            let centre = std::array::from_fn(|d| p[d] + r * radial[d]);
            let mid = normalise(cross(radial, tangent));
            let upstream = tangent.map(|x| -v.flow * x);
            (
                centre,
                Rotation::from_axes(tangent, mid, radial),
                Some(upstream),
            )
        } else {
            let theta = rng.random_range(0.0..PI);
            let tilt = rng
                .random_range(-c.max_tilt_degrees..=c.max_tilt_degrees)
                .to_radians();
            let long = [
                tilt.cos() * theta.cos(),
                tilt.cos() * theta.sin(),
                tilt.sin(),
            ];
            let mid = normalise([-theta.sin(), theta.cos(), 0.0]);
            let short = cross(long, mid);
            let centre = [
                rng.random_range(0.0..fx),
                rng.random_range(0.0..fy),
                rng.random_range(0.2..0.8) * fz,
            ];
            (centre, Rotation::from_axes(long, mid, short), None)
        };
        let bumps: Vec<(Vec3, f64, f64, f64)> = (0..5)
            .map(|_| {
                let dir = normalise([gauss(rng), gauss(rng), gauss(rng)]);
                let freq = rng.random_range(1.5..3.5);
                let phase = rng.random_range(0.0..TAU);
                let amp = (c.irregularity * gauss(rng) / 5f64.sqrt())
                    .clamp(-c.irregularity, c.irregularity);
                (dir, freq, phase, amp)
            })
            .collect();
        let bump_max = bumps.iter().map(|b| b.3.abs()).sum::<f64>().min(0.9);
        let n = Nucleus {
            centre,
            rotation,
            axes,
            bumps,
            bump_max,
            upstream,
        };
        // Reject when the grown nucleus touches another one.
        let mut clash = false;
        grid.for_box(centre, n.bounding_radius(c.min_gap), |i, p| {
            if !clash && nuclei[i] != 0 && n.contains(p, c.min_gap) {
                clash = true;
            }
        });
        if clash {
            return false;
        }
        let label = (nucleus_list.len() + 1) as u16;
        grid.for_box(centre, n.bounding_radius(0.0), |i, p| {
            if n.contains(p, 0.0) {
                nuclei[i] = label;
            }
        });
        nucleus_list.push(n);
        true
    });

    (nuclei, nucleus_list, unplaced)
}

/// Golgi clusters beside their nuclei (upstream on a vessel with probability `polarity`),
/// then lone clusters outside every nucleus; rasterised so that Golgi is never inside a
/// nucleus. Returns the label volume (cluster index + 1), the clusters and how many lone
/// clusters could not be placed.
fn place_golgi(
    cfg: &PhantomConfig,
    field: &Field,
    nuclei: &[u16],
    nucleus_list: &[Nucleus],
    rng: &mut rand::rngs::ChaCha8Rng,
) -> (Vec<u16>, Vec<Cluster>, usize) {
    let c = &cfg.cells;
    let Field {
        fx,
        fy,
        fz,
        area,
        shape,
        ..
    } = *field;
    let grid = &field.grid;
    let mut golgi = vec![0u16; grid.len()];
    let g = &cfg.golgi;
    let mut clusters: Vec<Cluster> = Vec::new();
    let make_blobs = |rng: &mut rand::rngs::ChaCha8Rng, centre: Vec3, d: Vec3| {
        let (e1, e2) = orthonormal(d);
        (0..g.blobs.sample(rng))
            .map(|k| {
                let off: Vec3 = if k == 0 {
                    [0.0; 3]
                } else {
                    let (a, b, r) = (
                        gauss(rng) * g.spread_along,
                        gauss(rng) * g.spread_along,
                        gauss(rng) * g.spread_across,
                    );
                    std::array::from_fn(|i| a * e1[i] + b * e2[i] + r * d[i])
                };
                let radius = g.blob_radius.sample(rng);
                (std::array::from_fn(|i| centre[i] + off[i]), radius)
            })
            .collect::<Vec<_>>()
    };
    let random_direction = |rng: &mut rand::rngs::ChaCha8Rng| {
        // Mostly in the XY plane, like the cells.
        normalise([gauss(rng), gauss(rng), 0.35 * gauss(rng)])
    };
    for (idx, n) in nucleus_list.iter().enumerate() {
        if rng.random_bool(c.without_golgi) {
            continue;
        }
        let d = match n.upstream {
            Some(up) if rng.random_bool(g.polarity) => {
                let jitter = random_direction(rng);
                normalise(std::array::from_fn(|i| up[i] + 0.35 * jitter[i]))
            }
            _ => random_direction(rng),
        };
        let dist = n.surface_distance(d) + g.gap.sample(rng);
        let centre = std::array::from_fn(|i| n.centre[i] + dist * d[i]);
        let blobs = make_blobs(rng, centre, d);
        clusters.push(Cluster {
            blobs,
            nucleus: Some(idx),
        });
    }
    let lone = (g.lone_density.sample(rng) * area).round() as usize;
    let unplaced = count_unplaced(lone, c.max_attempts, || {
        let centre = [
            rng.random_range(0.0..fx),
            rng.random_range(0.0..fy),
            rng.random_range(0.2..0.8) * fz,
        ];
        let i = voxel_index(shape, centre);
        if i.is_some_and(|i| nuclei[i] != 0) {
            return false;
        }
        let d = random_direction(rng);
        let blobs = make_blobs(rng, centre, d);
        clusters.push(Cluster {
            blobs,
            nucleus: None,
        });
        true
    });
    // Rasterise clusters; Golgi never inside a nucleus.
    for (k, cl) in clusters.iter().enumerate() {
        let label = (k + 1) as u16;
        for &(centre, r) in &cl.blobs {
            grid.for_box(centre, r + 1.0, |i, p| {
                if nuclei[i] == 0 && norm(sub(p, centre)) <= r {
                    golgi[i] = label;
                }
            });
        }
    }

    (golgi, clusters, unplaced)
}

/// Dust: anywhere, but clear of every Golgi voxel. Returns the dust particles (centre,
/// radius) and how many could not be placed.
fn place_dust(
    cfg: &PhantomConfig,
    field: &Field,
    golgi: &[u16],
    rng: &mut rand::rngs::ChaCha8Rng,
) -> (Vec<(Vec3, f64)>, usize) {
    let c = &cfg.cells;
    let Field {
        fx, fy, fz, area, ..
    } = *field;
    let grid = &field.grid;
    let dd = &cfg.dust;
    let mut dust = Vec::new();
    let wanted = (dd.density.sample(rng) * area).round() as usize;
    let unplaced = count_unplaced(wanted, c.max_attempts, || {
        let centre = [
            rng.random_range(0.0..fx),
            rng.random_range(0.0..fy),
            rng.random_range(0.0..fz),
        ];
        let r = dd.radius.sample(rng);
        let reach = r + dd.min_distance;
        let mut clash = false;
        grid.for_box(centre, reach + 1.0, |i, p| {
            if !clash && golgi[i] != 0 && norm(sub(p, centre)) <= reach {
                clash = true;
            }
        });
        if clash {
            return false;
        }
        dust.push((centre, r));
        true
    });

    (dust, unplaced)
}

/// How many of `wanted` objects find no place by rejection sampling: each gets up to
/// `attempts` calls of `attempt`, which draws a candidate, places it when it fits and says
/// whether it did.
fn count_unplaced(wanted: usize, attempts: u32, mut attempt: impl FnMut() -> bool) -> usize {
    (0..wanted)
        .filter(|_| !(0..attempts).any(|_| attempt()))
        .count()
}

fn voxel_index(shape: [usize; 3], p: Vec3) -> Option<usize> {
    let [nz, ny, nx] = shape;
    let (x, y, z) = (p[0].round(), p[1].round(), p[2].round());
    if x < 0.0 || y < 0.0 || z < 0.0 || x >= nx as f64 || y >= ny as f64 || z >= nz as f64 {
        return None;
    }
    Some((z as usize * ny + y as usize) * nx + x as usize)
}

// ---------------------------------------------------------------------------------------------
// Image formation.

/// Log-normal brightness around `photons`, dimmed for a `dim_fraction` of the objects.
fn brightness(ch: &ChannelConfig, rng: &mut impl rand::Rng) -> f64 {
    let mut b = ch.photons * (ch.brightness_spread * gauss(rng)).exp();
    if ch.dim_fraction > 0.0 && rng.random_bool(ch.dim_fraction) {
        b *= ch.dim_factor.sample(rng);
    }
    b
}

/// The nodes of a smooth random field: normal values on a grid of spacing `scale` voxels,
/// interpolated trilinearly by [`upsample`] / [`upsample_at`].
fn noise_grid(
    shape: [usize; 3],
    scale: [f64; 3],
    rng: &mut impl rand::Rng,
) -> (Vec<f32>, [usize; 3]) {
    let cshape: [usize; 3] =
        std::array::from_fn(|d| ((shape[d] as f64 / scale[d]).ceil() as usize + 1).max(2));
    let coarse = (0..cshape.iter().product::<usize>())
        .map(|_| gauss(rng) as f32)
        .collect();
    (coarse, cshape)
}

/// A smooth zero-mean, unit-variance random field over the whole volume.
fn smooth_noise(shape: [usize; 3], scale: [f64; 3], rng: &mut impl rand::Rng) -> Vec<f32> {
    let (coarse, cshape) = noise_grid(shape, scale, rng);
    let mut f = upsample(&coarse, cshape, shape, scale);
    let n = f.len() as f64;
    let mean = f.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = f
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let sd = var.sqrt().max(1e-9);
    for v in &mut f {
        *v = ((f64::from(*v) - mean) / sd) as f32;
    }
    f
}

/// Haze: `density` blurred with a wide Gaussian, computed on a 2 × 4 × 4 coarser grid.
fn haze(density: &[f32], shape: [usize; 3], sigma: [f64; 3]) -> Vec<f32> {
    let factor = [2usize, 4, 4];
    let (mut coarse, cshape) = block_mean(density, shape, factor);
    gaussian_blur(
        &mut coarse,
        cshape,
        std::array::from_fn(|d| sigma[d] / factor[d] as f64),
    );
    upsample(&coarse, cshape, shape, factor.map(|f| f as f64))
}

/// A Poisson draw: inversion for small means, a rounded normal above 30.
fn poisson(lambda: f64, rng: &mut impl rand::Rng) -> f64 {
    if lambda <= 0.0 {
        return 0.0;
    }
    if lambda > 30.0 {
        return (lambda + lambda.sqrt() * gauss(rng)).round().max(0.0);
    }
    let u: f64 = rng.random();
    let (mut k, mut p) = (0u32, (-lambda).exp());
    let mut cdf = p;
    while u > cdf && k < 200 {
        k += 1;
        p *= lambda / f64::from(k);
        cdf += p;
    }
    f64::from(k)
}

/// Renders one phantom volume of `shape` = (Z, Y, X) from `seed` (see the module docs for the
/// model). Deterministic for (config, shape, seed), whatever the number of threads.
pub fn render_phantom(
    config: &PhantomConfig,
    shape: [usize; 3],
    seed: u64,
) -> Result<Phantom, SynthError> {
    config.validate()?;
    check_shape(shape)?;
    let lay = layout(config, shape, seed);
    let [golgi, nuclei] = fluorophore_density(config, &lay, shape, seed);
    let image = image_of(config, [golgi, nuclei], shape, seed);
    let paired_nucleus = paired_nuclei(&lay);
    let mask = masks_of(config, &lay, &paired_nucleus, shape);
    let report = PhantomReport {
        seed,
        shape,
        nuclei: lay.nucleus_list.len(),
        paired: paired_nucleus.iter().filter(|&&p| p).count(),
        lone_golgi: lay.clusters.iter().filter(|c| c.nucleus.is_none()).count(),
        dust: lay
            .dust
            .iter()
            .map(|&(c, r)| ([c[2], c[1], c[0]], r))
            .collect(),
        unplaced: lay.unplaced,
    };
    Ok(Phantom {
        image,
        mask,
        report,
    })
}

/// Refuses a volume shape with an empty axis or more than 2^31 voxels per channel.
fn check_shape(shape: [usize; 3]) -> Result<(), SynthError> {
    if shape.contains(&0) {
        return Err(SynthError::Shape {
            shape,
            message: "every axis must be ≥ 1".into(),
        });
    }
    if shape.iter().product::<usize>() > 1 << 31 {
        return Err(SynthError::Shape {
            shape,
            message: "more than 2^31 voxels per channel".into(),
        });
    }
    Ok(())
}

/// Step 1 of the model: the fluorophore density of the Golgi and nuclei channels, per voxel —
/// each object's brightness times its texture, the dust, then the cross-talk between the
/// channels.
fn fluorophore_density(
    config: &PhantomConfig,
    lay: &Layout,
    shape: [usize; 3],
    seed: u64,
) -> [Vec<f32>; 2] {
    let n = lay.nuclei.len();
    let [_, ny, nx] = shape;
    let mut rng = stream(seed, &[tag::TEXTURE]);
    let nb: Vec<f32> = lay
        .nucleus_list
        .iter()
        .map(|_| brightness(&config.nuclei_channel, &mut rng) as f32)
        .collect();
    let gb: Vec<f32> = lay
        .clusters
        .iter()
        .map(|_| brightness(&config.golgi_channel, &mut rng) as f32)
        .collect();
    // Texture: a smooth field evaluated at object voxels only. Trilinear interpolation of
    // unit normals has a mean variance of (2/3)³; dividing by its root gives unit variance.
    let unit = (8.0f32 / 27.0).sqrt();
    let texture = |ch: &ChannelConfig, rng: &mut rand::rngs::ChaCha8Rng| {
        let s = ch.texture_scale;
        let (grid, cshape) = noise_grid(shape, [s, s, s], rng);
        (grid, cshape, [s, s, s], ch.texture as f32 / unit)
    };
    let tn = texture(&config.nuclei_channel, &mut rng);
    let tg = texture(&config.golgi_channel, &mut rng);
    let mut dn = vec![0f32; n];
    let mut dg = vec![0f32; n];
    for i in 0..n {
        let (ln, lg) = (lay.nuclei[i], lay.golgi[i]);
        if ln == 0 && lg == 0 {
            continue;
        }
        let p = [i / (ny * nx), (i / nx) % ny, i % nx];
        if ln != 0 {
            let t = upsample_at(&tn.0, tn.1, tn.2, p);
            dn[i] = nb[ln as usize - 1] * (1.0 + tn.3 * t).max(0.0);
        }
        if lg != 0 {
            let t = upsample_at(&tg.0, tg.1, tg.2, p);
            dg[i] = gb[lg as usize - 1] * (1.0 + tg.3 * t).max(0.0);
        }
    }
    let grid = Grid { shape };
    for &(centre, r) in &lay.dust {
        let b = (config.golgi_channel.photons * config.dust.brightness.sample(&mut rng)) as f32;
        grid.for_box(centre, r + 1.0, |i, p| {
            if norm(sub(p, centre)) <= r {
                dg[i] = dg[i].max(b);
            }
        });
    }
    // Cross-talk: each channel receives a fraction of the other's density.
    let (xn, xg) = (
        config.nuclei_channel.crosstalk as f32,
        config.golgi_channel.crosstalk as f32,
    );
    let (dn, dg): (Vec<f32>, Vec<f32>) = dn
        .iter()
        .zip(&dg)
        .map(|(&a, &b)| (a + xn * b, b + xg * a))
        .unzip();
    [dg, dn]
}

/// Steps 2–5 of the model: the image of the Golgi and nuclei densities through the optics
/// (blur and haze), with the background, the depth attenuation and the detector's noise,
/// stored as the configured sample type.
fn image_of(
    config: &PhantomConfig,
    [golgi, nuclei]: [Vec<f32>; 2],
    shape: [usize; 3],
    seed: u64,
) -> AnyVolume {
    let [nz, ny, nx] = shape;
    let channels: Vec<Vec<f32>> = [
        (&config.golgi_channel, golgi, 0u64),
        (&config.nuclei_channel, nuclei, 1),
    ]
    .into_par_iter()
    .map(|(ch, density, c)| {
        let mut signal = density.clone();
        gaussian_blur(&mut signal, shape, config.optics.psf_sigma);
        if ch.haze > 0.0 {
            let h = haze(&density, shape, config.optics.haze_sigma);
            let w = ch.haze as f32;
            for (s, h) in signal.iter_mut().zip(h) {
                *s += w * h;
            }
        }
        let background = background_field(ch, shape, &mut stream(seed, &[tag::HAZE, c]));
        for (s, b) in signal.iter_mut().zip(background) {
            *s += b;
        }
        detect(ch, &config.optics, signal, shape, seed, c)
    })
    .collect();

    let max = match config.sample_type {
        DType::U16 => f32::from(u16::MAX),
        _ => f32::from(u8::MAX),
    };
    let image_data: Vec<f32> = channels.into_iter().flatten().collect();
    let image_shape = [2, nz, ny, nx];
    match config.sample_type {
        DType::U16 => AnyVolume::U16(
            Volume::from_vec(
                image_shape,
                image_data
                    .iter()
                    .map(|&v| v.clamp(0.0, max) as u16)
                    .collect(),
            )
            .expect("image size"),
        ),
        _ => AnyVolume::U8(
            Volume::from_vec(
                image_shape,
                image_data
                    .iter()
                    .map(|&v| v.clamp(0.0, max) as u8)
                    .collect(),
            )
            .expect("image size"),
        ),
    }
}

/// Per nucleus of the layout, whether a Golgi cluster is paired with it.
fn paired_nuclei(lay: &Layout) -> Vec<bool> {
    let mut p = vec![false; lay.nucleus_list.len()];
    for cl in &lay.clusters {
        if let Some(k) = cl.nucleus {
            p[k] = true;
        }
    }
    p
}

/// The ground-truth masks of the layout: Golgi, nuclei and, for 3 classes, the pairs (a
/// paired nucleus or a paired Golgi cluster).
fn masks_of(
    config: &PhantomConfig,
    lay: &Layout,
    paired_nucleus: &[bool],
    shape: [usize; 3],
) -> Volume<u8> {
    let [nz, ny, nx] = shape;
    let golgi_mask: Vec<u8> = lay.golgi.iter().map(|&l| u8::from(l != 0)).collect();
    let nuclei_mask: Vec<u8> = lay.nuclei.iter().map(|&l| u8::from(l != 0)).collect();
    let mut mask_data = golgi_mask;
    mask_data.extend_from_slice(&nuclei_mask);
    if config.mask_classes == 3 {
        mask_data.extend(lay.nuclei.iter().zip(&lay.golgi).map(|(&ln, &lg)| {
            let nucleus_paired = ln != 0 && paired_nucleus[ln as usize - 1];
            let golgi_paired = lg != 0 && lay.clusters[lg as usize - 1].nucleus.is_some();
            u8::from(nucleus_paired || golgi_paired)
        }));
    }
    Volume::from_vec([config.mask_classes as usize, nz, ny, nx], mask_data).expect("mask size")
}

/// Background photons: mean `background`, varied by a random linear gradient plus smooth
/// low-frequency noise, scaled so the variation stays within ±`background_variation`.
fn background_field(ch: &ChannelConfig, shape: [usize; 3], rng: &mut impl rand::Rng) -> Vec<f32> {
    let [nz, ny, nx] = shape;
    if ch.background_variation == 0.0 {
        return vec![ch.background as f32; nz * ny * nx];
    }
    let slow = smooth_noise(
        shape,
        [
            (nz as f64 / 2.0).max(1.0),
            (ny as f64 / 3.0).max(1.0),
            (nx as f64 / 3.0).max(1.0),
        ],
        rng,
    );
    let angle = rng.random_range(0.0..TAU);
    let (gx, gy) = (angle.cos() as f32, angle.sin() as f32);
    let mut field = vec![0f32; nz * ny * nx];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let i = (z * ny + y) * nx + x;
                let ramp = gx * (x as f32 / nx as f32 - 0.5) * 2.0
                    + gy * (y as f32 / ny as f32 - 0.5) * 2.0;
                field[i] = 0.6 * ramp + 0.4 * slow[i];
            }
        }
    }
    let max = field.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let (b, var) = (ch.background as f32, ch.background_variation as f32);
    field
        .iter()
        .map(|v| (b * (1.0 + var * v / max)).max(0.0))
        .collect()
}

/// Depth attenuation, shot and read noise, gain and offset: grey values (unclipped) per voxel.
/// Parallel over z slices, each with its own random stream.
fn detect(
    ch: &ChannelConfig,
    optics: &OpticsConfig,
    mut expected: Vec<f32>,
    shape: [usize; 3],
    seed: u64,
    channel: u64,
) -> Vec<f32> {
    let [nz, ny, nx] = shape;
    let plane = ny * nx;
    let depth_rate = if nz > 1 {
        optics.depth_attenuation.ln() / (nz - 1) as f64
    } else {
        0.0
    };
    expected
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(z, slice)| {
            let mut rng = stream(seed, &[tag::NOISE, channel, z as u64]);
            let att = (depth_rate * z as f64).exp();
            for v in slice.iter_mut() {
                let lambda = f64::from(*v) * att;
                let counts = poisson(lambda, &mut rng) + ch.read_noise * gauss(&mut rng);
                let grey = ch.offset + ch.gain * counts;
                // Rounded to the nearest grey level; negatives clip to 0 later anyway.
                *v = if grey > 0.0 {
                    (grey + 0.5) as u32 as f32
                } else {
                    0.0
                };
            }
        });
    expected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_round_trip() {
        for p in PhantomPreset::ALL {
            let c = PhantomConfig::preset(p);
            c.validate().unwrap();
            let text = toml::to_string(&c).unwrap();
            let back: PhantomConfig = toml::from_str(&text).unwrap();
            assert_eq!(back, c);
        }
        assert_eq!("easy".parse::<PhantomPreset>(), Ok(PhantomPreset::Easy));
        assert!("hard".parse::<PhantomPreset>().is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = PhantomConfig::default();
        c.golgi_channel.gain = 0.0;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "golgi_channel.gain must be > 0, got 0"
        );
        let mut c = PhantomConfig::default();
        c.cells.long_axis = FloatRange::new(9.0, 5.0);
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "cells.long_axis.min must be ≤ max, got 9 > 5"
        );
    }

    #[test]
    fn poisson_mean_and_variance() {
        let mut rng = stream(1, &[0]);
        for lambda in [0.5, 4.0, 20.0, 80.0] {
            let xs: Vec<f64> = (0..20000).map(|_| poisson(lambda, &mut rng)).collect();
            let m = xs.iter().sum::<f64>() / xs.len() as f64;
            let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64;
            assert!((m / lambda - 1.0).abs() < 0.05, "λ {lambda}: mean {m}");
            assert!((v / lambda - 1.0).abs() < 0.1, "λ {lambda}: var {v}");
        }
    }

    #[test]
    fn small_render_has_objects_and_matching_shapes() {
        let p =
            render_phantom(&PhantomConfig::preset(PhantomPreset::Easy), [16, 64, 64], 2).unwrap();
        assert_eq!(p.image.shape(), [2, 16, 64, 64]);
        assert_eq!(p.mask.shape(), [3, 16, 64, 64]);
        assert!(p.report.nuclei > 0);
        assert!(p.mask.channel(1).contains(&1));
    }
}
