//! Sliding-window geometry, pure: how far a volume is padded and where the windows start
//! (docs/published-code.md §6).
//!
//! Two rules, matching [`PadMode`]:
//! - `HighEnd` (the published rule): along Y and X the padded size is ⌊n/s⌋·s + w — even when
//!   n fits the grid already — and Z is padded to one window (w) when it fits in one, else by
//!   the Y/X rule. All padding goes to the high end. Crop5_BC 647×627×56 → 688×688×64 with
//!   14×14 windows; Crop7_BC 557×491×55 → 592×544×64 with 12×11 windows.
//! - `Symmetric`: the fewest windows of the step grid that cover the axis,
//!   m = ⌈(n − w)/s⌉ + 1 (one when n ≤ w), padded size (m − 1)·s + w, the padding split
//!   between both ends (high end gets the odd voxel).
//!
//! Window origins along each padded axis are 0, s, 2s, … while origin + w ≤ padded size.

use crate::dataset::pad::PadMode;
use crate::dataset::patches::grid_origins;

/// Where the windows of one volume go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowGeometry {
    /// The volume's (Z, Y, X).
    pub volume: [usize; 3],
    /// The padded (Z, Y, X).
    pub padded: [usize; 3],
    /// Low-end padding (where the volume starts inside the padded one).
    pub before: [usize; 3],
    /// Window size (d, h, w).
    pub window: [usize; 3],
    /// Window origins (z, y, x) in padded coordinates, z slowest, x fastest.
    pub origins: Vec<[usize; 3]>,
}

/// The padded length of one axis (index 0 = Z) under `mode`'s rule (see the module doc).
pub fn padded_extent(axis: usize, n: usize, window: usize, step: usize, mode: PadMode) -> usize {
    assert!(n > 0 && window > 0 && step > 0 && step <= window);
    match mode {
        PadMode::HighEnd if axis == 0 && n <= window => window,
        PadMode::HighEnd => n / step * step + window,
        PadMode::Symmetric if n <= window => window,
        PadMode::Symmetric => (n - window).div_ceil(step) * step + window,
    }
}

/// The window geometry for a volume of `volume` = (Z, Y, X).
///
/// # Panics
/// On an empty volume, a zero window or a step of zero or larger than the window (the
/// config's `validate` rejects those first).
pub fn window_geometry(
    volume: [usize; 3],
    window: [usize; 3],
    step: [usize; 3],
    mode: PadMode,
) -> WindowGeometry {
    let padded: [usize; 3] =
        std::array::from_fn(|a| padded_extent(a, volume[a], window[a], step[a], mode));
    let before: [usize; 3] = std::array::from_fn(|a| mode.split(padded[a] - volume[a]).0);
    let axis: [Vec<usize>; 3] =
        std::array::from_fn(|a| grid_origins(padded[a], window[a], step[a]));
    let mut origins = Vec::with_capacity(axis.iter().map(Vec::len).product());
    for &z in &axis[0] {
        for &y in &axis[1] {
            for &x in &axis[2] {
                origins.push([z, y, x]);
            }
        }
    }
    WindowGeometry {
        volume,
        padded,
        before,
        window,
        origins,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_rule_on_the_test_volumes() {
        // §6: Crop5_BC 647 (X) × 627 (Y) × 56 (Z) → 688 × 688 × 64, 14 × 14 windows.
        let g = window_geometry([56, 627, 647], [64; 3], [48; 3], PadMode::HighEnd);
        assert_eq!(g.padded, [64, 688, 688]);
        assert_eq!(g.before, [0, 0, 0]);
        assert_eq!(g.origins.len(), 196);
        // Crop7_BC 557 × 491 × 55 → 592 × 544 × 64, 12 × 11 windows.
        let g = window_geometry([55, 491, 557], [64; 3], [48; 3], PadMode::HighEnd);
        assert_eq!(g.padded, [64, 544, 592]);
        assert_eq!(g.origins.len(), 132);
        assert_eq!(g.origins[1], [0, 0, 48]);
        assert_eq!(*g.origins.last().unwrap(), [0, 480, 528]);
    }

    #[test]
    fn published_rule_pads_even_an_exact_fit() {
        assert_eq!(padded_extent(2, 96, 64, 48, PadMode::HighEnd), 160);
        assert_eq!(padded_extent(2, 40, 64, 48, PadMode::HighEnd), 64);
        // A deep Z falls back to the Y/X rule.
        assert_eq!(padded_extent(0, 100, 64, 48, PadMode::HighEnd), 160);
    }

    #[test]
    fn symmetric_rule_covers_with_the_fewest_windows() {
        for n in 1..300 {
            for (w, s) in [(64, 48), (16, 16), (9, 4), (5, 5)] {
                let p = padded_extent(1, n, w, s, PadMode::Symmetric);
                assert!(p >= n && p >= w);
                let windows = grid_origins(p, w, s).len();
                assert_eq!(
                    (windows - 1) * s + w,
                    p,
                    "grid ends exactly at the padded edge"
                );
                if windows > 1 {
                    // one window fewer would not cover n
                    assert!((windows - 2) * s + w < n, "n={n} w={w} s={s}");
                }
            }
        }
        let g = window_geometry([56, 627, 647], [64; 3], [48; 3], PadMode::Symmetric);
        // (627 − 64) / 48 → 12 steps: 640; (647 − 64) / 48 → 13 steps: 688.
        assert_eq!(g.padded, [64, 640, 688]);
        assert_eq!(g.before, [4, 6, 20]);
    }

    #[test]
    fn every_voxel_is_covered() {
        for mode in [PadMode::HighEnd, PadMode::Symmetric] {
            let g = window_geometry([5, 13, 30], [4, 6, 8], [3, 4, 5], mode);
            let mut hit = vec![false; g.padded.iter().product()];
            for o in &g.origins {
                for z in 0..4 {
                    for y in 0..6 {
                        for x in 0..8 {
                            let (z, y, x) = (o[0] + z, o[1] + y, o[2] + x);
                            hit[(z * g.padded[1] + y) * g.padded[2] + x] = true;
                        }
                    }
                }
            }
            for z in 0..5 {
                for y in 0..13 {
                    for x in 0..30 {
                        let (pz, py, px) = (z + g.before[0], y + g.before[1], x + g.before[2]);
                        assert!(hit[(pz * g.padded[1] + py) * g.padded[2] + px], "{mode:?}");
                    }
                }
            }
        }
    }
}
