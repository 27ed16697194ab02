//! Merging window predictions into one volume (docs/published-code.md §6 step 5).
//!
//! - `Or` (as coded): threshold every window, then OR them. Kept as the per-voxel maximum of
//!   the window probabilities, which thresholds to exactly the same mask (max > t ⇔ some
//!   window > t) and gives a probability map for free.
//! - `Mean`: the average of the window probabilities covering a voxel.
//! - `Gaussian`: a centre-weighted average; each window weighs its voxels by a separable
//!   Gaussian with σ = window/8 per axis (nnU-Net's choice), so window borders count least.
//!
//! The averages are running ones (m ← m + (p − m)·w/W), so voxels on which every window
//! agrees keep that value exactly. Only the part of each window that lies inside the
//! original (unpadded) volume is merged; the canvas never holds the padding.

use serde::{Deserialize, Serialize};

use super::window::WindowGeometry;
use crate::volume::Volume;

/// σ of the Gaussian merge weights as a fraction of the window size.
pub const GAUSSIAN_SIGMA_SCALE: f64 = 0.125;

/// How overlapping window predictions are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeMode {
    /// Threshold each window, then logical OR (the published code).
    #[default]
    Or,
    /// Average the probabilities.
    Mean,
    /// Centre-weighted average of the probabilities.
    Gaussian,
}

impl MergeMode {
    pub fn name(self) -> &'static str {
        match self {
            MergeMode::Or => "or",
            MergeMode::Mean => "mean",
            MergeMode::Gaussian => "gaussian",
        }
    }
}

/// The Gaussian weights of a window (d·h·w values, x fastest), all > 0, maximum 1.
pub fn gaussian_weights(window: [usize; 3]) -> Vec<f32> {
    let axis = |n: usize| -> Vec<f64> {
        let sigma = n as f64 * GAUSSIAN_SIGMA_SCALE;
        let centre = (n as f64 - 1.0) / 2.0;
        (0..n)
            .map(|i| {
                let d = i as f64 - centre;
                (-d * d / (2.0 * sigma * sigma)).exp()
            })
            .collect()
    };
    let (wz, wy, wx) = (axis(window[0]), axis(window[1]), axis(window[2]));
    let mut out = Vec::with_capacity(window.iter().product());
    for &a in &wz {
        for &b in &wy {
            for &c in &wx {
                // Keep every weight positive in f32 so every voxel gets a defined average.
                out.push(((a * b * c) as f32).max(f32::MIN_POSITIVE));
            }
        }
    }
    out
}

/// Accumulates window predictions into a canvas of the original volume's size.
#[derive(Debug)]
pub struct Merger {
    mode: MergeMode,
    /// Probabilities, (C, Z, Y, X) of the original volume.
    canvas: Volume<f32>,
    /// Sum of merge weights per voxel (Mean, Gaussian).
    weight: Vec<f32>,
    /// Per-window voxel weights (Gaussian).
    window_weights: Vec<f32>,
    /// Scratch: the ratio w/W of one row.
    ratio: Vec<f32>,
    before: [usize; 3],
    window: [usize; 3],
}

impl Merger {
    pub fn new(mode: MergeMode, channels: usize, geometry: &WindowGeometry) -> Self {
        let [z, y, x] = geometry.volume;
        let init = match mode {
            MergeMode::Or => f32::NEG_INFINITY,
            MergeMode::Mean | MergeMode::Gaussian => 0.0,
        };
        Self {
            mode,
            canvas: Volume::filled([channels, z, y, x], init),
            weight: match mode {
                MergeMode::Or => Vec::new(),
                _ => vec![0.0; z * y * x],
            },
            window_weights: match mode {
                MergeMode::Gaussian => gaussian_weights(geometry.window),
                _ => Vec::new(),
            },
            ratio: vec![0.0; geometry.window[2]],
            before: geometry.before,
            window: geometry.window,
        }
    }

    /// Merges the prediction `p` ([C, d, h, w]) of the window at padded `origin`.
    pub fn add(&mut self, origin: [usize; 3], p: &Volume<f32>) {
        let [c, d, h, w] = p.shape();
        assert_eq!([d, h, w], self.window, "window prediction shape");
        assert_eq!(c, self.canvas.channels(), "window prediction channels");
        let [_, vz, vy, vx] = self.canvas.shape();
        // The window's overlap with the original volume, in window coordinates.
        let range = |a: usize, n: usize| {
            let lo = self.before[a].saturating_sub(origin[a]);
            let hi = (self.before[a] + n)
                .saturating_sub(origin[a])
                .min(self.window[a]);
            lo..hi.max(lo)
        };
        let (rz, ry, rx) = (range(0, vz), range(1, vy), range(2, vx));
        if rx.is_empty() {
            return;
        }
        let to_volume = |a: usize, i: usize| origin[a] + i - self.before[a];
        let x0 = to_volume(2, rx.start);
        let len = rx.len();
        for wz in rz {
            let z = to_volume(0, wz);
            for wy in ry.clone() {
                let y = to_volume(1, wy);
                match self.mode {
                    MergeMode::Or => {
                        for ch in 0..c {
                            let src = &p.data()[p.index(ch, wz, wy, rx.start)..][..len];
                            let i = self.canvas.index(ch, z, y, x0);
                            let dst = &mut self.canvas.data_mut()[i..i + len];
                            for (d, &s) in dst.iter_mut().zip(src) {
                                *d = d.max(s);
                            }
                        }
                    }
                    MergeMode::Mean | MergeMode::Gaussian => {
                        let wi = (z * vy + y) * vx + x0;
                        let acc = &mut self.weight[wi..wi + len];
                        let ratio = &mut self.ratio[..len];
                        if self.mode == MergeMode::Mean {
                            for (r, a) in ratio.iter_mut().zip(acc.iter_mut()) {
                                *a += 1.0;
                                *r = 1.0 / *a;
                            }
                        } else {
                            let row = (wz * h + wy) * w + rx.start;
                            let ww = &self.window_weights[row..row + len];
                            for ((r, a), &g) in ratio.iter_mut().zip(acc.iter_mut()).zip(ww) {
                                *a += g;
                                *r = g / *a;
                            }
                        }
                        for ch in 0..c {
                            let src = &p.data()[p.index(ch, wz, wy, rx.start)..][..len];
                            let i = self.canvas.index(ch, z, y, x0);
                            let dst = &mut self.canvas.data_mut()[i..i + len];
                            for ((m, &s), &r) in dst.iter_mut().zip(src).zip(ratio.iter()) {
                                *m += (s - *m) * r;
                            }
                        }
                    }
                }
            }
        }
    }

    /// The merged probabilities and their mask (`p > threshold`).
    pub fn finish(self, threshold: f32) -> (Volume<f32>, Volume<u8>) {
        let mask = self.canvas.map(|p| u8::from(p > threshold));
        (self.canvas, mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1-D in X: a volume 6 wide, windows of 4 at 0, 2 and 4 (padded to 8).
    fn line_geometry() -> WindowGeometry {
        WindowGeometry {
            volume: [1, 1, 6],
            padded: [1, 1, 8],
            before: [0; 3],
            window: [1, 1, 4],
            origins: vec![[0, 0, 0], [0, 0, 2], [0, 0, 4]],
        }
    }

    #[test]
    fn gaussian_weights_peak_in_the_centre_and_stay_positive() {
        let g = gaussian_weights([4, 5, 6]);
        assert_eq!(g.len(), 120);
        assert!(g.iter().all(|&v| v > 0.0 && v <= 1.0));
        let at = |z: usize, y: usize, x: usize| g[(z * 5 + y) * 6 + x];
        assert!(at(2, 2, 3) > at(0, 0, 0));
        assert_eq!(at(1, 2, 2), at(2, 2, 3), "symmetric about the centre");
    }

    fn constant_window(c: usize, w: [usize; 3], v: f32) -> Volume<f32> {
        Volume::filled([c, w[0], w[1], w[2]], v)
    }

    #[test]
    fn or_is_the_maximum_and_mean_averages_overlaps() {
        let g = line_geometry();
        let values = [0.2, 0.6, 0.4];
        for (mode, want) in [
            (MergeMode::Or, [0.2, 0.2, 0.6, 0.6, 0.6, 0.6]),
            (MergeMode::Mean, [0.2, 0.2, 0.4, 0.4, 0.5, 0.5]),
        ] {
            let mut m = Merger::new(mode, 1, &g);
            for (o, &v) in g.origins.iter().zip(&values) {
                m.add(*o, &constant_window(1, g.window, v));
            }
            let (p, mask) = m.finish(0.45);
            for (a, b) in p.data().iter().zip(want) {
                assert!((a - b).abs() < 1e-6, "{mode:?}: {:?}", p.data());
            }
            assert_eq!(mask.data(), &want.map(|v| u8::from(v > 0.45)), "{mode:?}");
        }
    }

    #[test]
    fn gaussian_favours_the_window_whose_centre_is_closer() {
        let g = line_geometry();
        let mut m = Merger::new(MergeMode::Gaussian, 1, &g);
        m.add([0, 0, 0], &constant_window(1, g.window, 0.0));
        m.add([0, 0, 2], &constant_window(1, g.window, 1.0));
        let (p, _) = m.finish(0.5);
        // x = 2 is 0.5 from the centre of window 0 and 1.5 from that of window 1; x = 3 the
        // other way round. Voxels seen by one window keep its value.
        let d = p.data();
        assert!(d[2] < 0.5 && d[3] > 0.5, "{d:?}");
        assert!((d[2] + d[3] - 1.0).abs() < 1e-6, "{d:?}");
        assert_eq!((d[0], d[1], d[4], d[5]), (0.0, 0.0, 1.0, 1.0));
    }
}
