//! Voxel metrics per class: the confusion counts ([`Counts`]) and the ratios derived from them
//! ([`VoxelMetrics`]: Dice, IoU, precision, recall, specificity).
//!
//! Counting is one pass over both channels in parallel chunks with integer accumulators, so
//! the result does not depend on the number of threads. [`dice_per_class`] is the cheap path
//! for validation during training.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::conventions::EmptyPolicy;
use super::nan_serde;

/// Confusion counts of one channel (non-zero = foreground).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    pub tn: u64,
}

impl std::ops::Add for Counts {
    type Output = Counts;

    fn add(self, o: Counts) -> Counts {
        Counts {
            tp: self.tp + o.tp,
            fp: self.fp + o.fp,
            fn_: self.fn_ + o.fn_,
            tn: self.tn + o.tn,
        }
    }
}

/// Voxel metrics of one class. Ratios follow the conventions (`conventions.rs`): NaN for a
/// zero denominator, the `empty` policy when both masks are empty.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct VoxelMetrics {
    #[serde(with = "nan_serde")]
    pub dice: f64,
    #[serde(with = "nan_serde")]
    pub iou: f64,
    #[serde(with = "nan_serde")]
    pub precision: f64,
    #[serde(with = "nan_serde")]
    pub recall: f64,
    #[serde(with = "nan_serde")]
    pub specificity: f64,
    #[serde(flatten)]
    pub counts: Counts,
}

/// `num / den`, NaN when `den == 0`.
pub(crate) fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 { f64::NAN } else { num / den }
}

impl Counts {
    /// Counts `pred` against `reference` (equal lengths).
    ///
    /// # Panics
    /// When the lengths differ (callers pass channels of shape-checked volumes).
    pub fn of(pred: &[u8], reference: &[u8]) -> Counts {
        assert_eq!(pred.len(), reference.len(), "channels of different lengths");
        const CHUNK: usize = 1 << 16;
        pred.par_chunks(CHUNK)
            .zip(reference.par_chunks(CHUNK))
            .map(|(p, r)| {
                // Per-chunk u32 sums vectorise well; a chunk is far below u32::MAX.
                let (mut sp, mut sr, mut tp) = (0u32, 0u32, 0u32);
                for (&a, &b) in p.iter().zip(r) {
                    let (a, b) = (u32::from(a != 0), u32::from(b != 0));
                    sp += a;
                    sr += b;
                    tp += a & b;
                }
                let n = p.len() as u64;
                let (sp, sr, tp) = (u64::from(sp), u64::from(sr), u64::from(tp));
                Counts {
                    tp,
                    fp: sp - tp,
                    fn_: sr - tp,
                    tn: n + tp - sp - sr,
                }
            })
            .reduce(Counts::default, |a, b| a + b)
    }

    /// Dice = (2·TP + s) / (2·TP + FP + FN + s) with smoothing `s`; `empty` when both masks
    /// are empty and `s == 0`.
    pub fn dice(&self, smoothing: f64, empty: EmptyPolicy) -> f64 {
        let num = 2.0 * self.tp as f64 + smoothing;
        let den = (2 * self.tp + self.fp + self.fn_) as f64 + smoothing;
        if den == 0.0 { empty.value() } else { num / den }
    }

    /// The voxel metrics of these counts.
    pub fn metrics(&self, smoothing: f64, empty: EmptyPolicy) -> VoxelMetrics {
        let (tp, fp, fn_, tn) = (
            self.tp as f64,
            self.fp as f64,
            self.fn_ as f64,
            self.tn as f64,
        );
        let both_empty = self.tp + self.fp + self.fn_ == 0;
        let or_empty = |v: f64| if both_empty { empty.value() } else { v };
        VoxelMetrics {
            dice: self.dice(smoothing, empty),
            iou: or_empty(ratio(tp, tp + fp + fn_)),
            precision: or_empty(ratio(tp, tp + fp)),
            recall: or_empty(ratio(tp, tp + fn_)),
            specificity: ratio(tn, tn + fp),
            counts: *self,
        }
    }
}

/// Dice of every channel of `pred` against `reference` (flat C·Z·Y·X arrays of `channels`
/// equal parts): the cheap path for validation during training.
///
/// # Panics
/// When the lengths differ or are not a multiple of `channels`.
pub fn dice_per_class(
    pred: &[u8],
    reference: &[u8],
    channels: usize,
    smoothing: f64,
    empty: EmptyPolicy,
) -> Vec<f64> {
    assert_eq!(pred.len(), reference.len(), "masks of different lengths");
    assert!(
        channels > 0 && pred.len().is_multiple_of(channels),
        "length not a multiple of channels"
    );
    let n = pred.len() / channels;
    (0..channels)
        .map(|c| {
            Counts::of(&pred[c * n..(c + 1) * n], &reference[c * n..(c + 1) * n])
                .dice(smoothing, empty)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_hand() {
        let p = [1, 1, 0, 0, 255, 0];
        let r = [1, 0, 1, 0, 1, 0];
        let c = Counts::of(&p, &r);
        assert_eq!(
            c,
            Counts {
                tp: 2,
                fp: 1,
                fn_: 1,
                tn: 2
            }
        );
        let m = c.metrics(0.0, EmptyPolicy::Nan);
        assert_eq!(m.dice, 4.0 / 6.0);
        assert_eq!(m.iou, 0.5);
        assert_eq!(m.precision, 2.0 / 3.0);
        assert_eq!(m.recall, 2.0 / 3.0);
        assert_eq!(m.specificity, 2.0 / 3.0);
        // The published code's smoothing: (2·2 + 1) / (3 + 3 + 1).
        assert_eq!(c.metrics(1.0, EmptyPolicy::Nan).dice, 5.0 / 7.0);
    }

    #[test]
    fn counts_do_not_depend_on_chunking() {
        let n = 200_003;
        let p: Vec<u8> = (0..n).map(|i| u8::from(i % 3 == 0)).collect();
        let r: Vec<u8> = (0..n).map(|i| u8::from(i % 5 < 2)).collect();
        let c = Counts::of(&p, &r);
        let tp = (0..n).filter(|i| i % 3 == 0 && i % 5 < 2).count() as u64;
        let sp = (0..n).filter(|i| i % 3 == 0).count() as u64;
        let sr = (0..n).filter(|i| i % 5 < 2).count() as u64;
        assert_eq!(c.tp, tp);
        assert_eq!(c.fp, sp - tp);
        assert_eq!(c.fn_, sr - tp);
        assert_eq!(c.tp + c.fp + c.fn_ + c.tn, n as u64);
    }

    #[test]
    fn empty_masks_follow_the_policy() {
        let c = Counts::of(&[0; 8], &[0; 8]);
        let m = c.metrics(0.0, EmptyPolicy::Nan);
        assert!(m.dice.is_nan() && m.iou.is_nan() && m.precision.is_nan() && m.recall.is_nan());
        assert_eq!(m.specificity, 1.0);
        let m = c.metrics(0.0, EmptyPolicy::One);
        assert_eq!((m.dice, m.iou, m.precision, m.recall), (1.0, 1.0, 1.0, 1.0));
        // Smoothing makes the empty Dice 1 whatever the policy (the published code).
        assert_eq!(c.metrics(1.0, EmptyPolicy::Nan).dice, 1.0);
    }

    #[test]
    fn one_sided_empty_masks() {
        // Nothing predicted, one reference voxel: Dice 0, precision undefined, recall 0.
        let m = Counts::of(&[0, 0], &[1, 0]).metrics(0.0, EmptyPolicy::One);
        assert_eq!((m.dice, m.iou, m.recall), (0.0, 0.0, 0.0));
        assert!(m.precision.is_nan());
        // Empty reference, one predicted voxel: recall undefined, precision 0.
        let m = Counts::of(&[1, 0], &[0, 0]).metrics(0.0, EmptyPolicy::One);
        assert_eq!((m.dice, m.precision), (0.0, 0.0));
        assert!(m.recall.is_nan());
        // Everything foreground in the reference: specificity undefined.
        let m = Counts::of(&[1, 1], &[1, 1]).metrics(0.0, EmptyPolicy::Nan);
        assert_eq!(m.dice, 1.0);
        assert!(m.specificity.is_nan());
    }

    #[test]
    fn dice_per_class_splits_channels() {
        let p = [1, 1, 0, 0, /* c1 */ 0, 0, 0, 0];
        let r = [1, 0, 0, 0, /* c1 */ 0, 0, 0, 0];
        let d = dice_per_class(&p, &r, 2, 0.0, EmptyPolicy::Nan);
        assert_eq!(d[0], 2.0 / 3.0);
        assert!(d[1].is_nan());
    }

    #[test]
    fn json_writes_nan_as_null_and_reads_it_back() {
        let m = Counts::of(&[0; 4], &[0; 4]).metrics(0.0, EmptyPolicy::Nan);
        let s = serde_json::to_string(&m).unwrap();
        assert!(
            s.contains(r#""dice":null"#) && s.contains(r#""fn":0"#),
            "{s}"
        );
        let back: VoxelMetrics = serde_json::from_str(&s).unwrap();
        assert!(back.dice.is_nan());
        assert_eq!(back.counts, m.counts);
    }
}
