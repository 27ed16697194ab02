//! Surface distances between a predicted and a reference mask: the 95th-percentile Hausdorff
//! distance (HD95) and the average symmetric surface distance (ASSD).
//!
//! Definitions (the common ones, e.g. MedPy's `hd95` and `assd`):
//! - the surface of a mask is the mask minus its binary erosion by the 6-connected structuring
//!   element (scipy `generate_binary_structure(3, 1)`); voxels outside the volume count as
//!   background (scipy's default `border_value=0`), so an object touching the border has a
//!   surface on the border face;
//! - the directed distances from A to B are, for every surface voxel of A, the Euclidean
//!   distance in µm to the nearest surface voxel of B (the exact distance transform of B's
//!   surface complement, with the voxel spacing; `edt.rs`);
//! - HD95 is the 95th percentile, with NumPy's default linear interpolation, of the directed
//!   distances of both directions pooled;
//! - ASSD is the mean of the two directed mean distances.
//!
//! When either mask is empty both values are NaN.

use rayon::prelude::*;

use super::edt::squared_distance_on_rows;
use crate::volume::Spacing;

/// HD95 and ASSD of one class, with the number of surface voxels they rest on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SurfaceDistances {
    /// µm; NaN when either mask is empty.
    pub hd95: f64,
    /// µm; NaN when either mask is empty.
    pub assd: f64,
    pub pred_surface_voxels: u64,
    pub ref_surface_voxels: u64,
}

/// The surface (0/1) of `mask`: foreground voxels with at least one face neighbour that is
/// background or outside the volume.
pub fn surface(mask: &[u8], shape: [usize; 3]) -> Vec<u8> {
    let [nz, ny, nx] = shape;
    let slab = ny * nx;
    super::assert_fills(mask.len(), shape, "mask length");
    let mut out = vec![0u8; mask.len()];
    if slab == 0 {
        return out;
    }
    let on = |i: usize| mask[i] != 0;
    out.par_chunks_mut(slab).enumerate().for_each(|(z, plane)| {
        for y in 0..ny {
            for x in 0..nx {
                let i = z * slab + y * nx + x;
                if !on(i) {
                    continue;
                }
                let interior = z > 0
                    && z + 1 < nz
                    && y > 0
                    && y + 1 < ny
                    && x > 0
                    && x + 1 < nx
                    && on(i - slab)
                    && on(i + slab)
                    && on(i - nx)
                    && on(i + nx)
                    && on(i - 1)
                    && on(i + 1);
                plane[y * nx + x] = u8::from(!interior);
            }
        }
    });
    out
}

/// HD95 and ASSD between `pred` and `reference` (Z·Y·X masks, non-zero = foreground).
///
/// The distance transforms run on the bounding box of both masks: every surface voxel lies
/// inside it, and the separable transform restricted to a box that contains all features and
/// all query voxels is exact.
pub fn surface_distances(
    pred: &[u8],
    reference: &[u8],
    shape: [usize; 3],
    spacing: Spacing,
) -> SurfaceDistances {
    super::assert_fills(pred.len(), shape, "prediction length");
    super::assert_fills(reference.len(), shape, "reference length");
    let (bp, br) = (bounding_box(pred, shape), bounding_box(reference, shape));
    let (Some(bp), Some(br)) = (bp, br) else {
        return SurfaceDistances {
            hd95: f64::NAN,
            assd: f64::NAN,
            pred_surface_voxels: bp.map_or(0, |_| surface_count(pred, shape)),
            ref_surface_voxels: br.map_or(0, |_| surface_count(reference, shape)),
        };
    };
    let lo: [usize; 3] = std::array::from_fn(|a| bp.0[a].min(br.0[a]));
    let hi: [usize; 3] = std::array::from_fn(|a| bp.1[a].max(br.1[a]));
    let cshape: [usize; 3] = std::array::from_fn(|a| hi[a] - lo[a]);
    let (sp, sr) = rayon::join(
        || surface(&crop(pred, shape, lo, cshape), cshape),
        || surface(&crop(reference, shape, lo, cshape), cshape),
    );
    let (d_pr, d_rp) = rayon::join(
        || directed(&sp, &sr, cshape, spacing),
        || directed(&sr, &sp, cshape, spacing),
    );
    let assd = 0.5 * (mean(&d_pr) + mean(&d_rp));
    let (n_pr, n_rp) = (d_pr.len() as u64, d_rp.len() as u64);
    let mut pooled = d_pr;
    pooled.extend_from_slice(&d_rp);
    let hd95 = percentile_linear(&mut pooled, 95.0);
    SurfaceDistances {
        hd95,
        assd,
        pred_surface_voxels: n_pr,
        ref_surface_voxels: n_rp,
    }
}

/// Distances (µm) from every voxel of surface `from` to the nearest voxel of surface `to`, in
/// raster order of `from`.
pub fn directed_distances(from: &[u8], to: &[u8], shape: [usize; 3], spacing: Spacing) -> Vec<f64> {
    directed(from, to, shape, spacing)
}

fn directed(from: &[u8], to: &[u8], shape: [usize; 3], spacing: Spacing) -> Vec<f64> {
    // Only the rows holding `from` voxels need exact distances.
    let rows: Vec<bool> = from
        .par_chunks(shape[2].max(1))
        .map(|row| row.iter().any(|&v| v != 0))
        .collect();
    let d2 = squared_distance_on_rows(to, shape, spacing, &rows);
    from.iter()
        .zip(&d2)
        .filter(|(f, _)| **f != 0)
        .map(|(_, d)| d.sqrt())
        .collect()
}

fn surface_count(mask: &[u8], shape: [usize; 3]) -> u64 {
    surface(mask, shape).iter().map(|&v| u64::from(v)).sum()
}

/// Arithmetic mean in index order (deterministic); NaN for no values.
fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        f64::NAN
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// The `q`-th percentile (0–100) with linear interpolation between closest ranks, NumPy's
/// default (`np.percentile(values, q)`): position h = (n − 1)·q/100 in the sorted values.
/// Reorders `values`; NaN for an empty slice.
pub fn percentile_linear(values: &mut [f64], q: f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let h = (q / 100.0) * (n - 1) as f64;
    let lo = (h.floor() as usize).min(n - 1);
    let t = h - lo as f64;
    let (_, &mut a, upper) = values.select_nth_unstable_by(lo, f64::total_cmp);
    if lo + 1 >= n || t == 0.0 {
        return a;
    }
    let b = upper.iter().copied().fold(f64::INFINITY, f64::min);
    // NumPy's _lerp: exact at both ends, interpolating from the nearer one.
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

/// The half-open bounding box `([z0, y0, x0], [z1, y1, x1])` of the non-zero voxels.
fn bounding_box(mask: &[u8], shape: [usize; 3]) -> Option<([usize; 3], [usize; 3])> {
    let [_, ny, nx] = shape;
    let slab = ny * nx;
    if slab == 0 {
        return None;
    }
    mask.par_chunks(slab)
        .enumerate()
        .filter_map(|(z, plane)| {
            let mut lo = [z, usize::MAX, usize::MAX];
            let mut hi = [z + 1, 0, 0];
            for (y, row) in plane.chunks_exact(nx).enumerate() {
                if let Some(x0) = row.iter().position(|&v| v != 0) {
                    let x1 = nx - row.iter().rev().position(|&v| v != 0).unwrap();
                    lo[1] = lo[1].min(y);
                    hi[1] = y + 1;
                    lo[2] = lo[2].min(x0);
                    hi[2] = hi[2].max(x1);
                }
            }
            (lo[1] != usize::MAX).then_some((lo, hi))
        })
        .reduce_with(|a, b| {
            (
                std::array::from_fn(|i| a.0[i].min(b.0[i])),
                std::array::from_fn(|i| a.1[i].max(b.1[i])),
            )
        })
}

/// Copies the box at `origin` of size `size` out of a Z·Y·X array.
fn crop(mask: &[u8], shape: [usize; 3], origin: [usize; 3], size: [usize; 3]) -> Vec<u8> {
    let [_, ny, nx] = shape;
    let mut out = Vec::with_capacity(size.iter().product());
    for z in origin[0]..origin[0] + size[0] {
        for y in origin[1]..origin[1] + size[1] {
            let start = (z * ny + y) * nx + origin[2];
            out.extend_from_slice(&mask[start..start + size[2]]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cube(shape: [usize; 3], lo: [usize; 3], hi: [usize; 3]) -> Vec<u8> {
        let mut m = vec![0u8; shape.iter().product()];
        for z in lo[0]..hi[0] {
            for y in lo[1]..hi[1] {
                for x in lo[2]..hi[2] {
                    m[(z * shape[1] + y) * shape[2] + x] = 1;
                }
            }
        }
        m
    }

    #[test]
    fn surface_of_a_cube_is_its_shell_and_includes_the_border() {
        let s = [5, 5, 5];
        let m = cube(s, [1, 1, 1], [4, 4, 4]);
        assert_eq!(surface_count(&m, s), 26); // 27 minus the centre
        // Touching the volume border: the whole 3 × 3 × 3 volume is one object, and only its
        // centre has six foreground neighbours.
        let full = vec![1u8; 27];
        assert_eq!(surface_count(&full, [3, 3, 3]), 26);
        // A single voxel is its own surface.
        assert_eq!(surface_count(&cube(s, [2, 2, 2], [3, 3, 3]), s), 1);
    }

    #[test]
    fn identical_masks_have_zero_distance() {
        let s = [6, 7, 8];
        let m = cube(s, [1, 2, 3], [5, 6, 7]);
        let d = surface_distances(&m, &m, s, [2.0, 1.0, 0.5]);
        assert_eq!(d.hd95, 0.0);
        assert_eq!(d.assd, 0.0);
    }

    #[test]
    fn single_voxels_with_anisotropic_spacing() {
        let s = [4, 4, 4];
        let a = cube(s, [0, 0, 0], [1, 1, 1]);
        let b = cube(s, [3, 0, 2], [4, 1, 3]);
        // Distance sqrt((3·2)² + (2·0.5)²) = sqrt(37) in both directions.
        let d = surface_distances(&a, &b, s, [2.0, 1.0, 0.5]);
        assert!((d.hd95 - 37f64.sqrt()).abs() < 1e-12);
        assert!((d.assd - 37f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn shifted_slab_by_hand() {
        // Reference: the plane x = 0 of a 1 × 2 × 4 volume; prediction: x = 0..2.
        // Prediction surface: every voxel (one slice thick), distances 0, 1, 0, 1.
        // Reference surface: 2 voxels, distances 0, 0. Pooled and sorted: 0 0 0 0 1 1.
        let s = [1, 2, 4];
        let r = vec![1, 0, 0, 0, 1, 0, 0, 0];
        let p = vec![1, 1, 0, 0, 1, 1, 0, 0];
        let d = surface_distances(&p, &r, s, [1.0; 3]);
        // h = 0.95 · 5 = 4.75 → between sorted[4] = 1 and sorted[5] = 1.
        assert_eq!(d.hd95, 1.0);
        assert_eq!(d.assd, 0.5 * (0.5 + 0.0));
        assert_eq!((d.pred_surface_voxels, d.ref_surface_voxels), (4, 2));
    }

    #[test]
    fn empty_masks_give_nan() {
        let s = [2, 2, 2];
        let e = vec![0u8; 8];
        let one = cube(s, [0, 0, 0], [1, 1, 1]);
        for (p, r) in [(&e, &e), (&e, &one), (&one, &e)] {
            let d = surface_distances(p, r, s, [1.0; 3]);
            assert!(d.hd95.is_nan() && d.assd.is_nan());
        }
        assert_eq!(
            surface_distances(&one, &e, s, [1.0; 3]).pred_surface_voxels,
            1
        );
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        // np.percentile([1, 2, 3, 4], 95) = 3.85; np.percentile([5], 95) = 5.
        assert!((percentile_linear(&mut [4.0, 1.0, 3.0, 2.0], 95.0) - 3.85).abs() < 1e-12);
        assert_eq!(percentile_linear(&mut [5.0], 95.0), 5.0);
        assert_eq!(percentile_linear(&mut [0.0, 10.0], 50.0), 5.0);
        assert_eq!(percentile_linear(&mut [3.0, 1.0, 2.0], 100.0), 3.0);
        assert!(percentile_linear(&mut [], 95.0).is_nan());
    }
}
