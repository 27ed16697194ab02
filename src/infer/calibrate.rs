//! Per-class foreground thresholds chosen on validation volumes (`train.calibrate_threshold`).
//!
//! The published procedure thresholds every class at 0.5 (docs/published-code.md §6
//! step 4). That suits the supervised networks, whose sigmoid is trained against the masks,
//! but not the CycleGAN: its tanh is preceded by a per-window instance norm (§5, §10), so
//! "> 0.5" means "above the window's mean" and every window gets some foreground. Choosing
//! each class's threshold where its Dice on the validation volumes peaks (never on test
//! volumes) recalibrates the output without touching the network. In the demo's fold 0 the
//! CycleGAN's validation nuclei Dice rose from 0.61 at 0.5 to 0.63 at 0.8, and the held-out
//! test volumes followed (0.69 → 0.75).
//!
//! [`ThresholdCounts`] pools, per class, the voxel counts (tp, fp, fn) of `p > t` at every
//! candidate `t` in one pass over each volume.

use super::InferError;
use crate::volume::Volume;

/// The candidate thresholds: 0.05 to 0.95 in steps of 0.05, then 0.97, 0.98 and 0.99 (a
/// CycleGAN's tanh output saturates near 1, where its best nuclei threshold may lie).
pub fn candidate_thresholds() -> Vec<f32> {
    let mut t: Vec<f32> = (1..=19).map(|i| i as f32 / 20.0).collect();
    t.extend([0.97, 0.98, 0.99]);
    t
}

/// Pooled (tp, fp, fn) of every class at every candidate threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdCounts {
    /// Ascending candidate thresholds.
    thresholds: Vec<f32>,
    /// Per class: how many foreground (truth) and background voxels have exactly `k`
    /// candidates strictly below their probability, k = 0..=thresholds.len().
    truth: Vec<Vec<u64>>,
    background: Vec<Vec<u64>>,
}

impl ThresholdCounts {
    /// Empty counts for `classes` classes at `thresholds` (sorted and deduplicated here).
    pub fn new(classes: usize, mut thresholds: Vec<f32>) -> Self {
        thresholds.sort_by(f32::total_cmp);
        thresholds.dedup();
        let bins = thresholds.len() + 1;
        Self {
            thresholds,
            truth: vec![vec![0; bins]; classes],
            background: vec![vec![0; bins]; classes],
        }
    }

    /// The candidate thresholds, ascending.
    pub fn thresholds(&self) -> &[f32] {
        &self.thresholds
    }

    /// Adds one volume: merged `probabilities` [C, Z, Y, X] against its 0/1 `truth`.
    pub fn add(
        &mut self,
        probabilities: &Volume<f32>,
        truth: &Volume<u8>,
    ) -> Result<(), InferError> {
        if probabilities.shape() != truth.shape() || probabilities.channels() != self.truth.len() {
            return Err(InferError::Output(format!(
                "probabilities {:?} against a mask {:?} for {} classes",
                probabilities.shape(),
                truth.shape(),
                self.truth.len()
            )));
        }
        for c in 0..self.truth.len() {
            let (fg, bg) = (&mut self.truth[c], &mut self.background[c]);
            for (&p, &m) in probabilities.channel(c).iter().zip(truth.channel(c)) {
                let below = self.thresholds.partition_point(|&t| t < p);
                if m != 0 {
                    fg[below] += 1;
                } else {
                    bg[below] += 1;
                }
            }
        }
        Ok(())
    }

    /// (tp, fp, fn) of `class` at candidate `k`: a voxel is predicted foreground when more
    /// than `k` candidates lie below its probability, i.e. when `p > thresholds[k]`.
    pub fn counts(&self, class: usize, k: usize) -> [u64; 3] {
        let tp: u64 = self.truth[class][k + 1..].iter().sum();
        let fp: u64 = self.background[class][k + 1..].iter().sum();
        let positives: u64 = self.truth[class].iter().sum();
        [tp, fp, positives - tp]
    }

    /// Dice of `class` at candidate `k` (1 when neither prediction nor truth has a voxel).
    pub fn dice(&self, class: usize, k: usize) -> f64 {
        dice_of(self.counts(class, k))
    }

    /// The candidate with the highest Dice for `class` and that Dice; ties go to the
    /// candidate nearest `prefer` (the configured threshold), then to the lower one.
    pub fn best(&self, class: usize, prefer: f32) -> (f32, f64) {
        let mut best: Option<(usize, f64)> = None;
        for k in 0..self.thresholds.len() {
            let d = self.dice(class, k);
            let better = match best {
                None => true,
                Some((b, bd)) => {
                    d > bd
                        || (d == bd
                            && (self.thresholds[k] - prefer).abs()
                                < (self.thresholds[b] - prefer).abs())
                }
            };
            if better {
                best = Some((k, d));
            }
        }
        let (k, d) = best.expect("at least one candidate threshold");
        (self.thresholds[k], d)
    }
}

/// Dice of (tp, fp, fn); 1 when all are zero (nothing to find, nothing found).
pub fn dice_of([tp, fp, fn_]: [u64; 3]) -> f64 {
    let den = 2 * tp + fp + fn_;
    if den == 0 {
        1.0
    } else {
        2.0 * tp as f64 / den as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(channels: usize, values: Vec<f32>) -> Volume<f32> {
        let n = values.len() / channels;
        Volume::from_vec([channels, 1, 1, n], values).unwrap()
    }

    fn mask(channels: usize, values: Vec<u8>) -> Volume<u8> {
        let n = values.len() / channels;
        Volume::from_vec([channels, 1, 1, n], values).unwrap()
    }

    #[test]
    fn counts_equal_thresholding_every_voxel() {
        let p = vec![0.0, 0.05, 0.3, 0.5, 0.51, 0.97, 0.99, 1.0, 0.2, 0.7];
        let m = vec![0, 1, 0, 1, 1, 0, 1, 1, 1, 0];
        let mut counts = ThresholdCounts::new(1, candidate_thresholds());
        counts
            .add(&volume(1, p.clone()), &mask(1, m.clone()))
            .unwrap();
        for (k, &t) in counts.thresholds().iter().enumerate() {
            let mut want = [0u64; 3];
            for (&pv, &mv) in p.iter().zip(&m) {
                match (pv > t, mv != 0) {
                    (true, true) => want[0] += 1,
                    (true, false) => want[1] += 1,
                    (false, true) => want[2] += 1,
                    _ => {}
                }
            }
            assert_eq!(counts.counts(0, k), want, "threshold {t}");
        }
    }

    #[test]
    fn the_best_threshold_separates_the_classes_and_ties_go_to_the_preferred_one() {
        // Class 0: foreground at 0.8, background at 0.6 → every threshold in [0.6, 0.8)
        // is perfect; the one nearest 0.5 wins. Class 1: foreground 0.3, background 0.1.
        let p = vec![0.8, 0.8, 0.6, 0.6, 0.3, 0.1, 0.1, 0.3];
        let m = vec![1, 1, 0, 0, 1, 0, 0, 1];
        let mut counts = ThresholdCounts::new(2, candidate_thresholds());
        counts.add(&volume(2, p), &mask(2, m)).unwrap();
        let (t0, d0) = counts.best(0, 0.5);
        assert!((t0 - 0.6).abs() < 1e-6 && d0 == 1.0, "{t0} {d0}");
        let (t1, d1) = counts.best(1, 0.5);
        assert!((t1 - 0.25).abs() < 1e-6 && d1 == 1.0, "{t1} {d1}");
        let at_half = counts.thresholds().iter().position(|&t| t == 0.5).unwrap();
        assert!(counts.dice(1, at_half) < 1.0);
    }

    #[test]
    fn a_mismatched_mask_is_an_error() {
        let mut counts = ThresholdCounts::new(2, candidate_thresholds());
        let e = counts
            .add(&volume(2, vec![0.5; 4]), &mask(1, vec![0; 4]))
            .unwrap_err();
        assert!(e.to_string().contains("against a mask [1, 1, 1, 4]"), "{e}");
    }
}
