//! One-to-one matching of predicted objects to reference objects ([`match_objects`]) and the
//! object scores derived from it ([`ObjectMetrics`]).
//!
//! Two rules (`ObjectMatching`):
//! - **IoU**: a pair (P, G) is a candidate when IoU(P, G) ≥ t (t ∈ [0.5, 1], default 0.5).
//!   Objects of one mask are disjoint, so at t ≥ 0.5 an object has two candidates only when it
//!   is exactly the union of two halves, each a whole object of the other mask. With one
//!   connectivity for both masks that cannot happen (the halves would touch and be one
//!   object), so matches are unique. Otherwise neither half has another candidate, and any
//!   greedy assignment still finds the maximum number of matches. Candidates are taken by
//!   decreasing IoU, ties by lower reference label, then lower predicted label; a tie only
//!   decides which half is matched, never how many.
//! - **Overlap50** (Recycle-GAN nuclei paper, object-based evaluation: "a true positive is
//!   obtained if a nucleus has at least 50 % overlap with its matching groundtruth"): a pair
//!   (P, G) is a candidate when at least half of P's voxels lie in G. Candidates are taken by
//!   decreasing overlap in voxels, ties by lower reference label, then lower predicted label,
//!   each object at most once: when a reference nucleus is split into several predicted
//!   objects, the largest part is the true positive and the others are false positives, so
//!   precision and recall count the same true positives.
//!
//! An untaken predicted object is a false positive, an untaken reference object a false
//! negative. Labels number objects in raster order (`components.rs`), so ties are resolved
//! the same way on every run.

use serde::{Deserialize, Serialize};

use super::components::{Labels, overlaps};
use super::conventions::{EmptyPolicy, ObjectMatching};
use super::nan_serde;
use super::voxel::ratio;

/// One matched pair of objects.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectMatch {
    /// Label of the predicted object.
    pub pred: u32,
    /// Label of the reference object.
    pub reference: u32,
    /// Shared voxels.
    pub overlap: u64,
    #[serde(with = "nan_serde")]
    pub iou: f64,
}

/// The result of matching two labellings.
#[derive(Clone, Debug, PartialEq)]
pub struct Matching {
    pub n_pred: usize,
    pub n_ref: usize,
    /// Matched pairs, sorted by reference label.
    pub matches: Vec<ObjectMatch>,
}

/// Matches the objects of `pred` to those of `reference` one-to-one by `rule` (see the module
/// documentation). `iou_threshold` is used by the IoU rule only.
pub fn match_objects(
    pred: &Labels,
    reference: &Labels,
    rule: ObjectMatching,
    iou_threshold: f64,
) -> Matching {
    struct Candidate {
        m: ObjectMatch,
        /// Sort key: IoU as the exact fraction (overlap, union), or the overlap in voxels.
        num: u64,
        den: u64,
    }
    let mut candidates: Vec<Candidate> = overlaps(pred, reference)
        .into_iter()
        .filter_map(|(p, g, inter)| {
            let (sp, sg) = (pred.size(p), reference.size(g));
            let union = sp + sg - inter;
            let m = ObjectMatch {
                pred: p,
                reference: g,
                overlap: inter,
                iou: inter as f64 / union as f64,
            };
            match rule {
                // iou_threshold ∈ [0.5, 1] scales `union` exactly at 0.5 and 1.
                ObjectMatching::Iou => {
                    (inter as f64 >= iou_threshold * union as f64).then_some(Candidate {
                        m,
                        num: inter,
                        den: union,
                    })
                }
                ObjectMatching::Overlap50 => (2 * inter >= sp).then_some(Candidate {
                    m,
                    num: inter,
                    den: 1,
                }),
            }
        })
        .collect();
    // Decreasing num/den (compared exactly by cross-multiplication), then lower labels.
    candidates.sort_by(|a, b| {
        let lhs = u128::from(b.num) * u128::from(a.den);
        let rhs = u128::from(a.num) * u128::from(b.den);
        lhs.cmp(&rhs)
            .then(a.m.reference.cmp(&b.m.reference))
            .then(a.m.pred.cmp(&b.m.pred))
    });
    let mut pred_taken = vec![false; pred.count() + 1];
    let mut ref_taken = vec![false; reference.count() + 1];
    let mut matches = Vec::new();
    for c in candidates {
        let (p, g) = (c.m.pred as usize, c.m.reference as usize);
        if !pred_taken[p] && !ref_taken[g] {
            pred_taken[p] = true;
            ref_taken[g] = true;
            matches.push(c.m);
        }
    }
    matches.sort_by_key(|m| m.reference);
    Matching {
        n_pred: pred.count(),
        n_ref: reference.count(),
        matches,
    }
}

/// Object (detection) scores of one class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectMetrics {
    /// Reference objects (after small-object removal).
    pub n_ref: u64,
    /// Predicted objects (after small-object removal).
    pub n_pred: u64,
    /// Matched pairs.
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// TP / n_pred.
    #[serde(with = "nan_serde")]
    pub precision: f64,
    /// TP / n_ref.
    #[serde(with = "nan_serde")]
    pub recall: f64,
    /// 2·TP / (n_ref + n_pred).
    #[serde(with = "nan_serde")]
    pub f1: f64,
    /// n_pred − n_ref (signed: negative when objects are missed or merged).
    pub count_error: i64,
    /// Mean IoU of the matched pairs; NaN without matches.
    #[serde(with = "nan_serde")]
    pub mean_iou: f64,
    /// Objects removed as smaller than `min_object_size`, reference and prediction.
    pub removed_ref: u64,
    pub removed_pred: u64,
}

impl ObjectMetrics {
    /// Scores of `m`; `empty` applies when both object sets are empty.
    pub fn from_matching(m: &Matching, empty: EmptyPolicy, removed: (u64, u64)) -> Self {
        let (n_ref, n_pred, tp) = (m.n_ref as u64, m.n_pred as u64, m.matches.len() as u64);
        let both_empty = n_ref == 0 && n_pred == 0;
        let or_empty = |v: f64| if both_empty { empty.value() } else { v };
        let mean_iou = if m.matches.is_empty() {
            f64::NAN
        } else {
            m.matches.iter().map(|x| x.iou).sum::<f64>() / m.matches.len() as f64
        };
        Self {
            n_ref,
            n_pred,
            tp,
            fp: n_pred - tp,
            fn_: n_ref - tp,
            precision: or_empty(ratio(tp as f64, n_pred as f64)),
            recall: or_empty(ratio(tp as f64, n_ref as f64)),
            f1: or_empty(ratio(2.0 * tp as f64, (n_ref + n_pred) as f64)),
            count_error: n_pred as i64 - n_ref as i64,
            mean_iou,
            removed_ref: removed.0,
            removed_pred: removed.1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::components::label;
    use crate::metrics::conventions::Connectivity;

    fn labels(row: &[u8]) -> Labels {
        label(row, [1, 1, row.len()], Connectivity::Six)
    }

    fn pairs(m: &Matching) -> Vec<(u32, u32)> {
        m.matches.iter().map(|x| (x.pred, x.reference)).collect()
    }

    #[test]
    fn iou_at_exactly_one_half_matches() {
        // Reference: 4 voxels; prediction: 2 of them → IoU 2/4 = 0.5, a match.
        let g = labels(&[1, 1, 1, 1, 0]);
        let p = labels(&[1, 1, 0, 0, 0]);
        let m = match_objects(&p, &g, ObjectMatching::Iou, 0.5);
        assert_eq!(pairs(&m), vec![(1, 1)]);
        assert_eq!(m.matches[0].iou, 0.5);
        // One voxel less overlap: IoU 1/4, no match.
        let p = labels(&[1, 0, 0, 0, 0]);
        assert!(
            match_objects(&p, &g, ObjectMatching::Iou, 0.5)
                .matches
                .is_empty()
        );
        // A stricter threshold rejects the 0.5 match.
        let p = labels(&[1, 1, 0, 0, 0]);
        assert!(
            match_objects(&p, &g, ObjectMatching::Iou, 0.75)
                .matches
                .is_empty()
        );
    }

    #[test]
    fn iou_tie_goes_to_the_lower_reference_label() {
        // Two diagonal voxels: two reference objects under 6-connectivity, one predicted
        // object under 26-connectivity, the only way to get an object that is exactly the
        // union of two halves (with one connectivity for both masks the halves would touch).
        let shape = [1, 2, 2];
        let g = label(&[1, 0, 0, 1], shape, Connectivity::Six);
        let p = label(&[1, 0, 0, 1], shape, Connectivity::TwentySix);
        assert_eq!((g.count(), p.count()), (2, 1));
        // IoU 1/2 with each half: a tie, resolved to reference 1; the count is the same
        // either way.
        let m = match_objects(&p, &g, ObjectMatching::Iou, 0.5);
        assert_eq!(pairs(&m), vec![(1, 1)]);
        assert_eq!((m.n_pred, m.n_ref), (1, 2));
        // Symmetrically, one reference object and two predicted halves: prediction 1 wins.
        let m = match_objects(&g, &p, ObjectMatching::Iou, 0.5);
        assert_eq!(pairs(&m), vec![(1, 1)]);
        // Below the threshold there is nothing to tie: IoU 2/5 with each half.
        let g = labels(&[1, 1, 0, 1, 1]);
        let p = labels(&[1, 1, 1, 1, 1]);
        assert!(
            match_objects(&p, &g, ObjectMatching::Iou, 0.5)
                .matches
                .is_empty()
        );
    }

    #[test]
    fn two_objects_match_separately() {
        let g = labels(&[1, 1, 1, 0, 1, 1, 0]);
        let p = labels(&[0, 1, 1, 1, 1, 1, 1]);
        // p is one object {1..=6}: IoU with {0,1,2} = 2/7, with {4,5} = 2/6: neither ≥ 0.5.
        assert!(
            match_objects(&p, &g, ObjectMatching::Iou, 0.5)
                .matches
                .is_empty()
        );
        let p = labels(&[1, 1, 1, 0, 1, 1, 1]);
        let m = match_objects(&p, &g, ObjectMatching::Iou, 0.5);
        // {0,1,2} ↔ {0,1,2} (IoU 1) and {4,5,6} ↔ {4,5} (IoU 2/3).
        assert_eq!(pairs(&m), vec![(1, 1), (2, 2)]);
        assert_eq!(m.matches[1].iou, 2.0 / 3.0);
    }

    #[test]
    fn overlap50_rule_by_hand() {
        // Reference nucleus {0..=5}; prediction split into {0,1,2} and {4,5}: both lie fully in
        // the nucleus, the larger part is the true positive, the other a false positive.
        let g = labels(&[1, 1, 1, 1, 1, 1, 0, 0]);
        let p = labels(&[1, 1, 1, 0, 1, 1, 0, 0]);
        let m = match_objects(&p, &g, ObjectMatching::Overlap50, 0.5);
        assert_eq!(pairs(&m), vec![(1, 1)]);
        let s = ObjectMetrics::from_matching(&m, EmptyPolicy::Nan, (0, 0));
        assert_eq!((s.tp, s.fp, s.fn_), (1, 1, 0));
        assert_eq!((s.precision, s.recall), (0.5, 1.0));
        // IoU would reject both parts: 3/6 = 0.5 is accepted, 2/6 is not.
        let m = match_objects(&p, &g, ObjectMatching::Iou, 0.5);
        assert_eq!(pairs(&m), vec![(1, 1)]);
        // A prediction with only 2 of its 5 voxels in the nucleus is a false positive.
        let g = labels(&[1, 1, 0, 0, 0, 0, 0, 0]);
        let p = labels(&[1, 1, 1, 1, 1, 0, 0, 0]);
        assert!(
            match_objects(&p, &g, ObjectMatching::Overlap50, 0.5)
                .matches
                .is_empty()
        );
        // Exactly half is enough.
        let p = labels(&[1, 1, 1, 1, 0, 0, 0, 0]);
        assert_eq!(
            match_objects(&p, &g, ObjectMatching::Overlap50, 0.5)
                .matches
                .len(),
            1
        );
    }

    #[test]
    fn object_scores_and_empty_sets() {
        let g = labels(&[1, 0, 1, 0, 1, 0]);
        let p = labels(&[1, 0, 1, 0, 0, 0]);
        let s = ObjectMetrics::from_matching(
            &match_objects(&p, &g, ObjectMatching::Iou, 0.5),
            EmptyPolicy::Nan,
            (0, 0),
        );
        assert_eq!((s.n_ref, s.n_pred, s.tp, s.fp, s.fn_), (3, 2, 2, 0, 1));
        assert_eq!((s.precision, s.recall, s.f1), (1.0, 2.0 / 3.0, 0.8));
        assert_eq!(s.count_error, -1);
        assert_eq!(s.mean_iou, 1.0);
        let e = labels(&[0, 0]);
        let m = match_objects(&e, &e, ObjectMatching::Iou, 0.5);
        let s = ObjectMetrics::from_matching(&m, EmptyPolicy::Nan, (0, 0));
        assert!(s.precision.is_nan() && s.recall.is_nan() && s.f1.is_nan());
        let s = ObjectMetrics::from_matching(&m, EmptyPolicy::One, (0, 0));
        assert_eq!((s.precision, s.recall, s.f1), (1.0, 1.0, 1.0));
        // Only predictions: precision 0, recall undefined, F1 0.
        let m = match_objects(&labels(&[1, 0]), &e, ObjectMatching::Iou, 0.5);
        let s = ObjectMetrics::from_matching(&m, EmptyPolicy::One, (0, 0));
        assert_eq!((s.precision, s.f1), (0.0, 0.0));
        assert!(s.recall.is_nan());
    }
}
