//! Nucleus–Golgi pairing for 3-class masks (golgi, nuclei, pair): detection of pairs and the
//! error of the polarity vector biologists measure (nucleus centroid → Golgi centroid).
//!
//! A pair is a connected component of the pair channel (same connectivity and small-object
//! removal as the other objects). Its nucleus is the nuclei channel inside the component, its
//! Golgi the golgi channel inside it; the synthetic generator draws the pair channel as the
//! union of a paired nucleus and Golgi (docs/published-code.md §2.5). Predicted pairs
//! match reference pairs one-to-one by IoU ≥ the threshold (`matching.rs`), never by the
//! half-overlap rule: a pair is a two-part object, and a rule satisfied by covering half of it
//! would accept a nucleus without its Golgi. For every matched pair whose two vectors are
//! defined (both parts present) and non-zero, the angle between them (degrees) and the
//! absolute difference of their lengths (µm) are the polarity errors; the summary holds their
//! means.

use serde::{Deserialize, Serialize};

use super::components::Labels;
use super::conventions::{EmptyPolicy, ObjectMatching};
use super::matching::{ObjectMetrics, match_objects};
use super::nan_serde;
use crate::volume::Spacing;

/// The geometry of one pair object.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairGeometry {
    pub voxels: u64,
    pub nucleus_voxels: u64,
    pub golgi_voxels: u64,
    /// Centroid (z, y, x) in µm; NaN when the part is empty.
    pub nucleus_centroid_um: [f64; 3],
    pub golgi_centroid_um: [f64; 3],
}

impl PairGeometry {
    /// Golgi centroid − nucleus centroid (z, y, x) in µm; NaN when a part is missing.
    pub fn polarity_um(&self) -> [f64; 3] {
        std::array::from_fn(|a| self.golgi_centroid_um[a] - self.nucleus_centroid_um[a])
    }
}

/// The three channels of one 3-class mask, with the pair channel already labelled.
#[derive(Clone, Copy, Debug)]
pub struct PairInputs<'a> {
    pub golgi: &'a [u8],
    pub nuclei: &'a [u8],
    pub pairs: &'a Labels,
}

/// The geometry of every pair object of `input`, indexed by label − 1.
pub fn pair_geometry(input: &PairInputs<'_>, spacing: Spacing) -> Vec<PairGeometry> {
    let [_, ny, nx] = input.pairs.shape();
    let n = input.pairs.count();
    // Per label: voxel count and index sums (exact integers) of each part.
    let mut nucleus = vec![(0u64, [0u64; 3]); n];
    let mut golgi = vec![(0u64, [0u64; 3]); n];
    for (z, y, run) in input.pairs.runs() {
        let base = (z * ny + y) * nx;
        let k = run.label as usize - 1;
        for x in run.x0 as usize..run.x1 as usize {
            for (mask, acc) in [
                (input.nuclei, &mut nucleus[k]),
                (input.golgi, &mut golgi[k]),
            ] {
                if mask[base + x] != 0 {
                    acc.0 += 1;
                    acc.1[0] += z as u64;
                    acc.1[1] += y as u64;
                    acc.1[2] += x as u64;
                }
            }
        }
    }
    let centroid = |(count, sums): (u64, [u64; 3])| -> [f64; 3] {
        std::array::from_fn(|a| {
            if count == 0 {
                f64::NAN
            } else {
                sums[a] as f64 / count as f64 * spacing[a]
            }
        })
    };
    (0..n)
        .map(|k| PairGeometry {
            voxels: input.pairs.sizes()[k],
            nucleus_voxels: nucleus[k].0,
            golgi_voxels: golgi[k].0,
            nucleus_centroid_um: centroid(nucleus[k]),
            golgi_centroid_um: centroid(golgi[k]),
        })
        .collect()
}

/// One matched pair and its polarity errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairMatch {
    /// Label of the predicted pair (raster order).
    pub pred: u32,
    /// Label of the reference pair.
    pub reference: u32,
    #[serde(with = "nan_serde")]
    pub iou: f64,
    /// Golgi centroid − nucleus centroid (z, y, x) in µm.
    #[serde(with = "nan_serde::array")]
    pub ref_vector_um: [f64; 3],
    #[serde(with = "nan_serde::array")]
    pub pred_vector_um: [f64; 3],
    /// Angle between the two vectors in degrees (0–180); NaN when one is undefined or zero.
    #[serde(with = "nan_serde")]
    pub angle_deg: f64,
    /// |‖pred‖ − ‖ref‖| in µm; NaN when one vector is undefined.
    #[serde(with = "nan_serde")]
    pub length_error_um: f64,
}

/// Pair detection and polarity scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairingMetrics {
    /// Detection of pairs: n_ref, n_pred, tp, precision, recall, f1, … of the pair objects.
    #[serde(flatten)]
    pub detection: ObjectMetrics,
    /// Matched pairs with an angle error (both vectors defined and non-zero).
    pub n_polarity: u64,
    /// Mean angle error over those pairs, degrees; NaN when there are none.
    #[serde(with = "nan_serde")]
    pub polarity_angle_deg: f64,
    /// Mean absolute length error over those pairs, µm; NaN when there are none.
    #[serde(with = "nan_serde")]
    pub polarity_length_um: f64,
    /// Every matched pair, by reference label.
    pub matches: Vec<PairMatch>,
}

/// The angle between two vectors in degrees (atan2 form: accurate near 0° and 180°).
fn angle_deg(a: [f64; 3], b: [f64; 3]) -> f64 {
    let cross = [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ];
    let dot = a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    norm(cross).atan2(dot).to_degrees()
}

fn norm(v: [f64; 3]) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

/// Matches predicted pairs to reference pairs and measures their polarity errors.
/// `removed` is the number of pair objects dropped as small (reference, prediction).
pub fn evaluate_pairing(
    pred: &PairInputs<'_>,
    reference: &PairInputs<'_>,
    spacing: Spacing,
    iou_threshold: f64,
    empty: EmptyPolicy,
    removed: (u64, u64),
) -> PairingMetrics {
    let matching = match_objects(
        pred.pairs,
        reference.pairs,
        ObjectMatching::Iou,
        iou_threshold,
    );
    let (gp, gr) = (
        pair_geometry(pred, spacing),
        pair_geometry(reference, spacing),
    );
    let matches: Vec<PairMatch> = matching
        .matches
        .iter()
        .map(|m| {
            let vp = gp[m.pred as usize - 1].polarity_um();
            let vr = gr[m.reference as usize - 1].polarity_um();
            let (lp, lr) = (norm(vp), norm(vr));
            let angle = if lp > 0.0 && lr > 0.0 {
                angle_deg(vp, vr)
            } else {
                f64::NAN
            };
            PairMatch {
                pred: m.pred,
                reference: m.reference,
                iou: m.iou,
                ref_vector_um: vr,
                pred_vector_um: vp,
                angle_deg: angle,
                length_error_um: (lp - lr).abs(),
            }
        })
        .collect();
    let scored: Vec<&PairMatch> = matches.iter().filter(|m| m.angle_deg.is_finite()).collect();
    let mean = |f: fn(&PairMatch) -> f64| {
        if scored.is_empty() {
            f64::NAN
        } else {
            scored.iter().map(|m| f(m)).sum::<f64>() / scored.len() as f64
        }
    };
    PairingMetrics {
        detection: ObjectMetrics::from_matching(&matching, empty, removed),
        n_polarity: scored.len() as u64,
        polarity_angle_deg: mean(|m| m.angle_deg),
        polarity_length_um: mean(|m| m.length_error_um),
        matches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::components::label;
    use crate::metrics::conventions::Connectivity;

    /// A 1 × 3 × 8 volume with one pair spanning rows 0–1 and a nucleus at `n`, Golgi at `g`.
    fn volume(pair: &[[usize; 2]], n: &[[usize; 2]], g: &[[usize; 2]]) -> [Vec<u8>; 3] {
        let mk = |vox: &[[usize; 2]]| {
            let mut m = vec![0u8; 24];
            for &[y, x] in vox {
                m[y * 8 + x] = 1;
            }
            m
        };
        [mk(g), mk(n), mk(pair)]
    }

    #[test]
    fn geometry_and_polarity_by_hand() {
        // Pair: row 0, x 0..6. Nucleus x 0..2 (centroid x 0.5), Golgi x 4..6 (centroid 4.5).
        let pair: Vec<[usize; 2]> = (0..6).map(|x| [0, x]).collect();
        let [g, n, p] = volume(&pair, &[[0, 0], [0, 1]], &[[0, 4], [0, 5]]);
        let l = label(&p, [1, 3, 8], Connectivity::TwentySix);
        let input = PairInputs {
            golgi: &g,
            nuclei: &n,
            pairs: &l,
        };
        let geo = pair_geometry(&input, [1.0, 2.0, 0.5]);
        assert_eq!(geo.len(), 1);
        assert_eq!(
            (geo[0].voxels, geo[0].nucleus_voxels, geo[0].golgi_voxels),
            (6, 2, 2)
        );
        assert_eq!(geo[0].nucleus_centroid_um, [0.0, 0.0, 0.25]);
        assert_eq!(geo[0].polarity_um(), [0.0, 0.0, 2.0]);
    }

    #[test]
    fn matched_pair_errors() {
        let shape = [1, 3, 8];
        // Reference: Golgi right of the nucleus (vector +x, 4 voxels).
        let pair: Vec<[usize; 2]> = (0..6).map(|x| [0, x]).collect();
        let [g, n, p] = volume(&pair, &[[0, 0]], &[[0, 4]]);
        let lr = label(&p, shape, Connectivity::TwentySix);
        // Prediction: same pair extent plus row 1 below x 0..2; Golgi at (1, 0): vector from
        // (0, 0) to (1, 0) is +y, 1 voxel: a right angle and a length error of 3.
        let mut pair_p = pair.clone();
        pair_p.push([1, 0]);
        let [gp, np, pp] = volume(&pair_p, &[[0, 0]], &[[1, 0]]);
        let lp = label(&pp, shape, Connectivity::TwentySix);
        let m = evaluate_pairing(
            &PairInputs {
                golgi: &gp,
                nuclei: &np,
                pairs: &lp,
            },
            &PairInputs {
                golgi: &g,
                nuclei: &n,
                pairs: &lr,
            },
            [1.0; 3],
            0.5,
            EmptyPolicy::Nan,
            (0, 0),
        );
        assert_eq!((m.detection.tp, m.detection.f1), (1, 1.0));
        assert_eq!(m.n_polarity, 1);
        assert!((m.polarity_angle_deg - 90.0).abs() < 1e-12);
        assert_eq!(m.polarity_length_um, 3.0);
        assert_eq!(m.matches[0].ref_vector_um, [0.0, 0.0, 4.0]);
    }

    #[test]
    fn missing_golgi_leaves_the_angle_undefined() {
        let shape = [1, 3, 8];
        let pair: Vec<[usize; 2]> = (0..4).map(|x| [2, x]).collect();
        let [g, n, p] = volume(&pair, &[[2, 0]], &[[2, 3]]);
        let [g0, n0, _] = volume(&[], &[[2, 0]], &[]);
        let l = label(&p, shape, Connectivity::TwentySix);
        let m = evaluate_pairing(
            &PairInputs {
                golgi: &g0,
                nuclei: &n0,
                pairs: &l,
            },
            &PairInputs {
                golgi: &g,
                nuclei: &n,
                pairs: &l,
            },
            [1.0; 3],
            0.5,
            EmptyPolicy::Nan,
            (0, 0),
        );
        assert_eq!(m.detection.tp, 1);
        assert_eq!(m.n_polarity, 0);
        assert!(m.polarity_angle_deg.is_nan() && m.polarity_length_um.is_nan());
        assert!(m.matches[0].pred_vector_um[0].is_nan());
        let json = serde_json::to_string(&m).unwrap();
        assert!(
            json.contains(r#""pred_vector_um":[null,null,null]"#),
            "{json}"
        );
        let back: PairingMetrics = serde_json::from_str(&json).unwrap();
        assert!(back.matches[0].pred_vector_um[2].is_nan());
    }

    #[test]
    fn angles() {
        assert!((angle_deg([1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]) - 180.0).abs() < 1e-12);
        assert!((angle_deg([1.0, 1.0, 0.0], [1.0, 0.0, 0.0]) - 45.0).abs() < 1e-12);
        assert_eq!(angle_deg([0.0, 0.0, 2.0], [0.0, 0.0, 5.0]), 0.0);
    }
}
