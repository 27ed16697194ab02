//! The synthetic-mask generator (docs/published-code.md §2).
//!
//! One volume is made in two phases. First every object (pair, isolated Golgi, isolated
//! nucleus) is built in its own window from its own random stream: shape parameters, elastic
//! warp and rotation, rasterised into a list of window voxels. This phase runs in parallel.
//! Then the objects are placed in a fixed order on a canvas padded by half a window on each
//! side in X and Y (the reference's `(X+128) × (Y+128) × Z` canvas), each drawing window
//! positions from its own placement stream until it touches no object of the same channel or
//! `max_attempts` is reached. The canvas is finally cropped to the volume. Because the random
//! streams are tied to (seed, object) and placement is sequential, the mask is identical for
//! any number of threads.

use rand::RngExt;
use rayon::prelude::*;
use serde::Serialize;

use super::SynthError;
use super::config::{MaskConfig, OffsetConfig, OverlapRule, RotationConfig};
use super::geometry::{Ellipsoid, ObjectTransform, Rotation, WarpField};
use super::rng::{stream, tag};
use crate::volume::Volume;

/// What an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// A nucleus–Golgi pair (in the 1-class task: a nucleus drawn as the nucleus of a pair).
    Pair,
    IsolatedGolgi,
    IsolatedNucleus,
}

/// What was drawn for one object and where it went. Coordinates are (z, y, x) in voxels of
/// the output volume.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObjectRecord {
    pub kind: ObjectKind,
    /// Golgi sphere radius, when the object has a Golgi.
    pub golgi_radius: Option<u32>,
    /// Nucleus semi-axes (a, b, c) along the template's (X, Y, Z), when it has a nucleus.
    pub nucleus_axes: Option<[u32; 3]>,
    /// Nucleus centre minus Golgi centre in the template, (z, y, x) voxels (pairs only).
    pub offset: Option<[f64; 3]>,
    /// Rotation about Z in degrees (when rotated about Z only).
    pub angle_degrees: Option<f64>,
    /// Elastic amplitude α per axis (z, y, x), when warped.
    pub alpha: Option<[f64; 3]>,
    /// Whether a position was found.
    pub placed: bool,
    /// Positions tried (1 when accepted at once).
    pub attempts: u32,
    /// Volume coordinates of the window's first voxel (may be negative: windows stick out).
    pub window_origin: [i64; 3],
    /// Golgi / nucleus voxels inside the volume (0 when unplaced).
    pub golgi_voxels: usize,
    pub nucleus_voxels: usize,
    /// Centroid of the Golgi / nucleus voxels, including those cut off by the volume border.
    pub golgi_centroid: Option<[f64; 3]>,
    pub nucleus_centroid: Option<[f64; 3]>,
}

/// Summary of one generated volume.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MaskReport {
    /// The volume's seed.
    pub seed: u64,
    /// (Z, Y, X).
    pub shape: [usize; 3],
    pub pairs: usize,
    pub isolated_golgi: usize,
    pub isolated_nuclei: usize,
    /// Objects for which no non-overlapping position was found within `max_attempts`.
    pub unplaced: usize,
    pub objects: Vec<ObjectRecord>,
}

/// A generated mask: channels `golgi, nuclei[, pair]` (or `nuclei` alone), values 0/1.
#[derive(Clone, Debug)]
pub struct SynthMasks {
    pub mask: Volume<u8>,
    pub report: MaskReport,
}

/// One object built in its window, not yet placed.
struct Built {
    record: ObjectRecord,
    /// Window voxels (x, y, z) of the Golgi and of the nucleus.
    golgi: Vec<[i32; 3]>,
    nucleus: Vec<[i32; 3]>,
}

/// Generates one synthetic mask of `shape` = (Z, Y, X) from `seed` (docs/published-code.md
/// §2): the configured number of pairs, plus isolated objects for 3 classes, with the
/// configured shapes, warp, rotation and overlap rules.
///
/// Objects that find no free position within `config.max_attempts` are left out and counted
/// in [`MaskReport::unplaced`] (the reference would loop forever).
pub fn generate_masks(
    config: &MaskConfig,
    shape: [usize; 3],
    seed: u64,
) -> Result<SynthMasks, SynthError> {
    config.validate()?;
    let [depth, height, width] = shape;
    if depth == 0 || height == 0 || width == 0 {
        return Err(SynthError::Shape {
            shape,
            message: "every axis must be ≥ 1".into(),
        });
    }
    if depth > 4096 || height > 1 << 16 || width > 1 << 16 {
        return Err(SynthError::Shape {
            shape,
            message: "too large for the generator (Z ≤ 4096, Y and X ≤ 65536)".into(),
        });
    }

    let mut rng = stream(seed, &[tag::VOLUME]);
    let pairs = config.pairs.sample(&mut rng) as usize;
    let (iso_g, iso_n) = if config.classes == 3 {
        (
            config.isolated_golgi.sample(&mut rng) as usize,
            config.isolated_nuclei.sample(&mut rng) as usize,
        )
    } else {
        (0, 0)
    };
    let window = [config.window as usize, config.window as usize, depth];

    // Phase 1: build every object in parallel, each from its own stream.
    let jobs: Vec<(ObjectKind, u64, usize)> = (0..pairs)
        .map(|i| (ObjectKind::Pair, tag::PAIR, i))
        .chain((0..iso_g).map(|i| (ObjectKind::IsolatedGolgi, tag::ISOLATED_GOLGI, i)))
        .chain((0..iso_n).map(|i| (ObjectKind::IsolatedNucleus, tag::ISOLATED_NUCLEUS, i)))
        .collect();
    let built: Vec<Built> = jobs
        .par_iter()
        .map(|&(kind, t, i)| {
            let mut rng = stream(seed, &[t, i as u64]);
            build_object(config, kind, window, &mut rng)
        })
        .collect();

    // Phase 2: place them in order on the padded canvas.
    let margin = window[0] / 2;
    let canvas_shape = [depth, height + 2 * margin, width + 2 * margin];
    let mut canvas = Canvas::new(canvas_shape);
    let mut records = Vec::with_capacity(built.len());
    let mut unplaced = 0;
    for (job, mut b) in jobs.iter().zip(built) {
        let (kind, t, i) = *job;
        let reject = match kind {
            ObjectKind::Pair => config.pair_overlap == OverlapRule::Reject,
            _ => true,
        };
        let mut prng = stream(seed, &[tag::PLACEMENT, t, i as u64]);
        let mut origin = None;
        for attempt in 1..=config.max_attempts {
            // Window corner (x0, y0) uniform over [0, X) × [0, Y) in canvas coordinates (§2.1).
            let x0 = prng.random_range(0..width);
            let y0 = prng.random_range(0..height);
            b.record.attempts = attempt;
            if !reject || !canvas.overlaps(&b, x0, y0) {
                origin = Some((x0, y0));
                break;
            }
        }
        match origin {
            Some((x0, y0)) => {
                canvas.insert(&b, x0, y0);
                b.record.placed = true;
                b.record.window_origin = [0, y0 as i64 - margin as i64, x0 as i64 - margin as i64];
                let inside = |v: &[i32; 3]| {
                    let (x, y) = (x0 + v[0] as usize, y0 + v[1] as usize);
                    x >= margin && x < margin + width && y >= margin && y < margin + height
                };
                b.record.golgi_voxels = b.golgi.iter().filter(|v| inside(v)).count();
                b.record.nucleus_voxels = b.nucleus.iter().filter(|v| inside(v)).count();
                let o = b.record.window_origin;
                b.record.golgi_centroid = centroid(&b.golgi, o);
                b.record.nucleus_centroid = centroid(&b.nucleus, o);
            }
            None => unplaced += 1,
        }
        records.push(b.record);
    }
    if unplaced > 0 {
        tracing::warn!(
            "synthetic mask {shape:?} seed {seed}: {unplaced} of {} objects found no free \
             position in {} attempts and were left out",
            records.len(),
            config.max_attempts
        );
    }

    let mask = canvas.crop(config.classes, margin, height, width);
    Ok(SynthMasks {
        mask,
        report: MaskReport {
            seed,
            shape,
            pairs,
            isolated_golgi: iso_g,
            isolated_nuclei: iso_n,
            unplaced,
            objects: records,
        },
    })
}

fn centroid(voxels: &[[i32; 3]], origin: [i64; 3]) -> Option<[f64; 3]> {
    if voxels.is_empty() {
        return None;
    }
    let mut s = [0.0f64; 3];
    for v in voxels {
        for d in 0..3 {
            s[d] += f64::from(v[d]);
        }
    }
    let n = voxels.len() as f64;
    // (x, y, z) sums → (z, y, x) volume coordinates.
    Some([
        s[2] / n + origin[0] as f64,
        s[1] / n + origin[1] as f64,
        s[0] / n + origin[2] as f64,
    ])
}

/// Draws one object's parameters and rasterises it in its window (x, y, z sizes).
fn build_object(
    config: &MaskConfig,
    kind: ObjectKind,
    window: [usize; 3],
    rng: &mut impl rand::Rng,
) -> Built {
    let centre: [f64; 3] = std::array::from_fn(|d| (window[d] as f64 - 1.0) / 2.0);
    let has_golgi = kind != ObjectKind::IsolatedNucleus && config.classes != 1;
    let has_nucleus = kind != ObjectKind::IsolatedGolgi;
    // Draw order follows the reference: radius, semi-axes, pos, warp, angle.
    let radius = (kind != ObjectKind::IsolatedNucleus).then(|| config.golgi_radius.sample(rng));
    let axes = has_nucleus.then(|| {
        [
            config.nucleus_axes.x.sample(rng),
            config.nucleus_axes.y.sample(rng),
            config.nucleus_axes.z.sample(rng),
        ]
    });
    let nucleus_centre = has_nucleus.then(|| match config.offset {
        OffsetConfig::Relative { pos, decimals } => {
            let mut p = pos.sample(rng);
            if let Some(d) = decimals {
                let f = 10f64.powi(d as i32);
                p = (p * f).round() / f;
            }
            std::array::from_fn(|d| p * (window[d] as f64 - 1.0))
        }
        OffsetConfig::Voxels { distance } => {
            let dist = distance.sample(rng);
            let dir = [
                1.0,
                1.0,
                (window[2] as f64 - 1.0) / (window[0] as f64 - 1.0),
            ];
            std::array::from_fn(|d| centre[d] + dist * dir[d])
        }
    });
    let transformed = kind == ObjectKind::Pair || config.transform_isolated;
    let warp = (transformed && config.elastic.enabled)
        .then(|| WarpField::random(window, &config.elastic, rng));
    let (rotation, angle) = match (transformed, config.rotation) {
        (true, RotationConfig::Z { degrees }) => {
            let a = f64::from(degrees.sample(rng));
            (Rotation::about_z(a), Some(a))
        }
        (true, RotationConfig::Full) => (Rotation::uniform(rng), None),
        _ => (Rotation::IDENTITY, None),
    };
    let alpha = warp.as_ref().map(|w| [w.alpha[2], w.alpha[1], w.alpha[0]]);
    let transform = ObjectTransform {
        window,
        rotation,
        warp,
    };
    let golgi = match (has_golgi, radius) {
        (true, Some(r)) => transform.rasterise(&Ellipsoid {
            centre,
            semi_axes: [f64::from(r); 3],
        }),
        _ => Vec::new(),
    };
    let nucleus = match (axes, nucleus_centre) {
        (Some(a), Some(c)) => transform.rasterise(&Ellipsoid {
            centre: c,
            semi_axes: a.map(f64::from),
        }),
        _ => Vec::new(),
    };
    let offset = match (kind, nucleus_centre) {
        (ObjectKind::Pair, Some(n)) => Some([n[2] - centre[2], n[1] - centre[1], n[0] - centre[0]]),
        _ => None,
    };
    Built {
        record: ObjectRecord {
            kind,
            golgi_radius: radius.filter(|_| has_golgi),
            nucleus_axes: axes,
            offset,
            angle_degrees: angle,
            alpha,
            placed: false,
            attempts: 0,
            window_origin: [0; 3],
            golgi_voxels: 0,
            nucleus_voxels: 0,
            golgi_centroid: None,
            nucleus_centroid: None,
        },
        golgi,
        nucleus,
    }
}

/// The padded canvas: one 0/1 plane stack per channel (golgi, nuclei, pair).
struct Canvas {
    /// (Z, Y + 2m, X + 2m).
    shape: [usize; 3],
    golgi: Vec<u8>,
    nuclei: Vec<u8>,
    pair: Vec<u8>,
}

impl Canvas {
    fn new(shape: [usize; 3]) -> Self {
        let n = shape.iter().product();
        Self {
            shape,
            golgi: vec![0; n],
            nuclei: vec![0; n],
            pair: vec![0; n],
        }
    }

    #[inline]
    fn index(&self, v: &[i32; 3], x0: usize, y0: usize) -> usize {
        (v[2] as usize * self.shape[1] + y0 + v[1] as usize) * self.shape[2] + x0 + v[0] as usize
    }

    fn overlaps(&self, b: &Built, x0: usize, y0: usize) -> bool {
        b.golgi
            .iter()
            .any(|v| self.golgi[self.index(v, x0, y0)] != 0)
            || b.nucleus
                .iter()
                .any(|v| self.nuclei[self.index(v, x0, y0)] != 0)
    }

    fn insert(&mut self, b: &Built, x0: usize, y0: usize) {
        let pair = b.record.kind == ObjectKind::Pair;
        for v in &b.golgi {
            let i = self.index(v, x0, y0);
            self.golgi[i] = 1;
            if pair {
                self.pair[i] = 1;
            }
        }
        for v in &b.nucleus {
            let i = self.index(v, x0, y0);
            self.nuclei[i] = 1;
            if pair {
                self.pair[i] = 1;
            }
        }
    }

    /// The volume `[margin, margin + height) × [margin, margin + width)` of the channels of a
    /// `classes`-class mask.
    fn crop(&self, classes: u8, margin: usize, height: usize, width: usize) -> Volume<u8> {
        let planes: Vec<&[u8]> = match classes {
            1 => vec![&self.nuclei],
            2 => vec![&self.golgi, &self.nuclei],
            _ => vec![&self.golgi, &self.nuclei, &self.pair],
        };
        let depth = self.shape[0];
        let mut data = Vec::with_capacity(planes.len() * depth * height * width);
        for plane in planes {
            for z in 0..depth {
                for y in 0..height {
                    let start = (z * self.shape[1] + y + margin) * self.shape[2] + margin;
                    data.extend_from_slice(&plane[start..start + width]);
                }
            }
        }
        Volume::from_vec([classes as usize, depth, height, width], data)
            .expect("crop size matches the shape")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preset::Preset;
    use crate::synth::config::IntRange;

    fn small(classes: u8) -> MaskConfig {
        MaskConfig {
            pairs: IntRange::new(6, 8),
            ..MaskConfig::preset(Preset::Code, classes)
        }
    }

    #[test]
    fn two_class_channels_are_binary_and_counts_add_up() {
        let out = generate_masks(&small(2), [40, 160, 170], 3).unwrap();
        assert_eq!(out.mask.shape(), [2, 40, 160, 170]);
        assert!(out.mask.data().iter().all(|&v| v <= 1));
        let r = &out.report;
        assert!((6..=8).contains(&r.pairs));
        assert_eq!(r.objects.len(), r.pairs);
        // Same-channel overlap is rejected, so each channel is the disjoint union of objects.
        let golgi: usize = r.objects.iter().map(|o| o.golgi_voxels).sum();
        let nuclei: usize = r.objects.iter().map(|o| o.nucleus_voxels).sum();
        let count = |c: usize| out.mask.channel(c).iter().filter(|&&v| v != 0).count();
        assert_eq!(count(0), golgi);
        assert_eq!(count(1), nuclei);
        assert!(golgi > 0 && nuclei > golgi);
    }

    #[test]
    fn three_class_pair_channel_is_union_of_paired_objects() {
        let out = generate_masks(&small(3), [40, 150, 150], 11).unwrap();
        let m = &out.mask;
        assert_eq!(m.channels(), 3);
        let (g, n, p) = (m.channel(0), m.channel(1), m.channel(2));
        // pair ⊆ golgi ∪ nuclei.
        assert!(
            p.iter()
                .zip(g.iter().zip(n))
                .all(|(&p, (&g, &n))| p <= (g | n))
        );
        // Isolated objects are not in the pair channel: golgi ∪ nuclei has more voxels.
        let union = g.iter().zip(n).filter(|&(&g, &n)| g | n != 0).count();
        let pairs = p.iter().filter(|&&v| v != 0).count();
        let isolated: usize = out
            .report
            .objects
            .iter()
            .filter(|o| o.kind != ObjectKind::Pair)
            .map(|o| o.golgi_voxels + o.nucleus_voxels)
            .sum();
        assert!(isolated > 0);
        assert!(union > pairs);
    }

    #[test]
    fn unplaceable_objects_are_counted_not_looped_on() {
        let c = MaskConfig {
            pairs: IntRange::fixed(30),
            max_attempts: 5,
            ..MaskConfig::preset(Preset::Code, 2)
        };
        let out = generate_masks(&c, [30, 40, 40], 1).unwrap();
        assert!(out.report.unplaced > 0);
        assert_eq!(
            out.report.unplaced,
            out.report.objects.iter().filter(|o| !o.placed).count()
        );
    }

    #[test]
    fn one_class_is_nuclei_only() {
        let out = generate_masks(&small(1), [30, 120, 120], 5).unwrap();
        assert_eq!(out.mask.channels(), 1);
        assert!(out.report.objects.iter().all(|o| o.golgi_radius.is_none()));
        assert!(out.mask.data().contains(&1));
    }

    #[test]
    fn same_seed_same_mask_other_seed_other_mask() {
        let c = small(2);
        let a = generate_masks(&c, [30, 100, 100], 9).unwrap();
        let b = generate_masks(&c, [30, 100, 100], 9).unwrap();
        let d = generate_masks(&c, [30, 100, 100], 10).unwrap();
        assert!(a.mask == b.mask);
        assert!(a.mask != d.mask);
    }

    #[test]
    fn bad_shape_is_an_error() {
        let err = generate_masks(&small(2), [0, 10, 10], 0).unwrap_err();
        assert!(err.to_string().contains("every axis must be ≥ 1"), "{err}");
    }
}
