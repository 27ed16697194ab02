//! Connected components of a 3-D binary mask ([`label`] → [`Labels`]), object sizes, removal
//! of small objects, and the voxel overlap between two labellings.
//!
//! The labelling works on runs: maximal stretches of foreground voxels along x. Runs of
//! neighbouring rows that touch (the rows and the x tolerance depend on the connectivity) are
//! joined with a union–find whose root is always the earliest run, so labels number the
//! objects in raster order (z, then y, then x) of their first voxel, exactly as
//! `scipy.ndimage.label` does. Storing runs instead of a label per voxel keeps memory at a
//! fraction of the mask and makes overlaps between labellings a merge of sorted runs.

use std::collections::HashMap;

use rayon::prelude::*;

use super::conventions::Connectivity;

/// A maximal run `[x0, x1)` of foreground voxels in one row, with its object label (≥ 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub x0: u32,
    pub x1: u32,
    pub label: u32,
}

impl Run {
    pub fn len(&self) -> u64 {
        u64::from(self.x1 - self.x0)
    }

    pub fn is_empty(&self) -> bool {
        self.x1 == self.x0
    }
}

/// The connected components of one mask: objects numbered 1..=n in raster order of their
/// first voxel, stored as runs per row.
#[derive(Clone, Debug, PartialEq)]
pub struct Labels {
    shape: [usize; 3],
    /// Runs of row `r = z·Y + y` are `runs[row_start[r]..row_start[r + 1]]`.
    row_start: Vec<usize>,
    runs: Vec<Run>,
    /// `sizes[k - 1]` = voxels of object `k`.
    sizes: Vec<u64>,
}

impl Labels {
    /// [Z, Y, X].
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Number of objects.
    pub fn count(&self) -> usize {
        self.sizes.len()
    }

    /// Voxels per object: `sizes()[k - 1]` belongs to label `k`.
    pub fn sizes(&self) -> &[u64] {
        &self.sizes
    }

    /// The size of object `label` (≥ 1).
    pub fn size(&self, label: u32) -> u64 {
        self.sizes[label as usize - 1]
    }

    /// The runs of row (z, y), sorted by x.
    pub fn row(&self, z: usize, y: usize) -> &[Run] {
        let r = z * self.shape[1] + y;
        &self.runs[self.row_start[r]..self.row_start[r + 1]]
    }

    /// Every run with its (z, y), in raster order.
    pub fn runs(&self) -> impl Iterator<Item = (usize, usize, &Run)> + '_ {
        let ny = self.shape[1];
        self.row_start
            .windows(2)
            .enumerate()
            .flat_map(move |(r, w)| {
                self.runs[w[0]..w[1]]
                    .iter()
                    .map(move |run| (r / ny, r % ny, run))
            })
    }

    /// A dense label image (Z·Y·X values, 0 = background), as `scipy.ndimage.label` returns.
    pub fn to_label_image(&self) -> Vec<u32> {
        let [_, ny, nx] = self.shape;
        let mut out = vec![0u32; self.shape.iter().product()];
        for (z, y, run) in self.runs() {
            let base = (z * ny + y) * nx;
            out[base + run.x0 as usize..base + run.x1 as usize].fill(run.label);
        }
        out
    }

    /// The binary mask (0/1) of all objects.
    pub fn to_mask(&self) -> Vec<u8> {
        let [_, ny, nx] = self.shape;
        let mut out = vec![0u8; self.shape.iter().product()];
        for (z, y, run) in self.runs() {
            let base = (z * ny + y) * nx;
            out[base + run.x0 as usize..base + run.x1 as usize].fill(1);
        }
        out
    }

    /// The objects with at least `min_size` voxels, renumbered 1..=m in the same (raster)
    /// order. "Removal of objects smaller than N voxels" (Recycle-GAN nuclei paper, N = 50)
    /// is `without_smaller_than(N)`, like scikit-image's `remove_small_objects(min_size=N)`.
    pub fn without_smaller_than(&self, min_size: u64) -> Labels {
        if self.sizes.iter().all(|&s| s >= min_size) {
            return self.clone();
        }
        let mut new_label = vec![0u32; self.sizes.len() + 1];
        let mut sizes = Vec::new();
        for (k, &s) in self.sizes.iter().enumerate() {
            if s >= min_size {
                sizes.push(s);
                new_label[k + 1] = sizes.len() as u32;
            }
        }
        let mut row_start = Vec::with_capacity(self.row_start.len());
        let mut runs = Vec::new();
        row_start.push(0);
        for w in self.row_start.windows(2) {
            for run in &self.runs[w[0]..w[1]] {
                let label = new_label[run.label as usize];
                if label != 0 {
                    runs.push(Run { label, ..*run });
                }
            }
            row_start.push(runs.len());
        }
        Labels {
            shape: self.shape,
            row_start,
            runs,
            sizes,
        }
    }
}

/// The connected components of `mask` (Z·Y·X values, x fastest; non-zero = foreground).
///
/// # Panics
/// When `mask.len()` differs from the product of `shape` or X exceeds `u32::MAX` (callers
/// pass channels of a checked [`crate::volume::Volume`]).
pub fn label(mask: &[u8], shape: [usize; 3], connectivity: Connectivity) -> Labels {
    let [nz, ny, nx] = shape;
    super::assert_fills(mask.len(), shape, "mask length");
    assert!(u32::try_from(nx).is_ok(), "rows longer than u32::MAX");
    let (row_start, mut runs) = extract_runs(mask, shape);

    // Previous rows that can touch row (z, y): (dz, dy) offsets and the x tolerance of the
    // run overlap test (0: runs must share an x; 1: they may also be diagonal neighbours).
    let neighbours: &[(usize, isize, u32)] = match connectivity {
        Connectivity::Six => &[(0, -1, 0), (1, 0, 0)],
        Connectivity::Eighteen => &[(0, -1, 1), (1, 0, 1), (1, -1, 0), (1, 1, 0)],
        Connectivity::TwentySix => &[(0, -1, 1), (1, 0, 1), (1, -1, 1), (1, 1, 1)],
    };
    let mut parent: Vec<u32> = (0..runs.len() as u32).collect();
    for z in 0..nz {
        for y in 0..ny {
            let r = z * ny + y;
            let cur = row_start[r]..row_start[r + 1];
            if cur.is_empty() {
                continue;
            }
            for &(dz, dy, tol) in neighbours {
                let Some(zz) = z.checked_sub(dz) else {
                    continue;
                };
                let yy = y as isize + dy;
                if yy < 0 || yy >= ny as isize {
                    continue;
                }
                let rr = zz * ny + yy as usize;
                let (mut i, mut j) = (cur.start, row_start[rr]);
                let j_end = row_start[rr + 1];
                while i < cur.end && j < j_end {
                    let (a, b) = (runs[i], runs[j]);
                    if a.x0 < b.x1 + tol && b.x0 < a.x1 + tol {
                        union(&mut parent, i as u32, j as u32);
                    }
                    // Runs of one row are at least one voxel apart and tol ≤ 1, so the run
                    // that ends first cannot touch any later run of the other row.
                    if a.x1 < b.x1 {
                        i += 1;
                    } else {
                        j += 1;
                    }
                }
            }
        }
    }

    // The root of every set is its earliest run, so a run that is its own root opens a new
    // object and every other run's root is already labelled.
    let mut sizes: Vec<u64> = Vec::new();
    for i in 0..runs.len() {
        let root = find(&mut parent, i as u32) as usize;
        let lab = if root == i {
            sizes.push(0);
            sizes.len() as u32
        } else {
            runs[root].label
        };
        runs[i].label = lab;
        sizes[lab as usize - 1] += runs[i].len();
    }
    Labels {
        shape,
        row_start,
        runs,
        sizes,
    }
}

/// Finds the runs of every row, slabs in parallel; labels are filled in later.
fn extract_runs(mask: &[u8], shape: [usize; 3]) -> (Vec<usize>, Vec<Run>) {
    let [_, ny, nx] = shape;
    let slab = ny * nx;
    if slab == 0 {
        return (vec![0; shape[0] * ny + 1], Vec::new());
    }
    let per_slab: Vec<(Vec<usize>, Vec<Run>)> = mask
        .par_chunks(slab)
        .map(|plane| {
            let mut counts = Vec::with_capacity(ny);
            let mut runs = Vec::new();
            for row in plane.chunks_exact(nx) {
                let before = runs.len();
                let mut x = 0;
                while let Some(start) = row[x..].iter().position(|&v| v != 0) {
                    let x0 = x + start;
                    let len = row[x0..].iter().position(|&v| v == 0).unwrap_or(nx - x0);
                    runs.push(Run {
                        x0: x0 as u32,
                        x1: (x0 + len) as u32,
                        label: 0,
                    });
                    x = x0 + len;
                }
                counts.push(runs.len() - before);
            }
            (counts, runs)
        })
        .collect();
    let total: usize = per_slab.iter().map(|(_, r)| r.len()).sum();
    let mut row_start = Vec::with_capacity(shape[0] * ny + 1);
    let mut runs = Vec::with_capacity(total);
    row_start.push(0);
    for (counts, slab_runs) in per_slab {
        for c in counts {
            row_start.push(row_start.last().unwrap() + c);
        }
        runs.extend(slab_runs);
    }
    (row_start, runs)
}

fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let grand = parent[parent[i as usize] as usize];
        parent[i as usize] = grand;
        i = grand;
    }
    i
}

/// Joins the sets of `a` and `b`, keeping the smaller (earlier) root.
fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra < rb {
        parent[rb as usize] = ra;
    } else if rb < ra {
        parent[ra as usize] = rb;
    }
}

/// The number of shared voxels of every pair of overlapping objects, as
/// `(label in a, label in b, voxels)` sorted by label in `a`, then in `b`.
///
/// # Panics
/// When the two labellings have different shapes.
pub fn overlaps(a: &Labels, b: &Labels) -> Vec<(u32, u32, u64)> {
    assert_eq!(
        a.shape, b.shape,
        "overlaps of labellings of different shapes"
    );
    let mut counts: HashMap<(u32, u32), u64> = HashMap::new();
    for r in 0..a.row_start.len() - 1 {
        let ra = &a.runs[a.row_start[r]..a.row_start[r + 1]];
        let rb = &b.runs[b.row_start[r]..b.row_start[r + 1]];
        let (mut i, mut j) = (0, 0);
        while i < ra.len() && j < rb.len() {
            let lo = ra[i].x0.max(rb[j].x0);
            let hi = ra[i].x1.min(rb[j].x1);
            if lo < hi {
                *counts.entry((ra[i].label, rb[j].label)).or_insert(0) += u64::from(hi - lo);
            }
            if ra[i].x1 < rb[j].x1 {
                i += 1;
            } else {
                j += 1;
            }
        }
    }
    let mut out: Vec<(u32, u32, u64)> = counts.into_iter().map(|((p, q), n)| (p, q, n)).collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_from(shape: [usize; 3], voxels: &[[usize; 3]]) -> Vec<u8> {
        let mut m = vec![0u8; shape.iter().product()];
        for &[z, y, x] in voxels {
            m[(z * shape[1] + y) * shape[2] + x] = 1;
        }
        m
    }

    fn count(shape: [usize; 3], voxels: &[[usize; 3]], c: Connectivity) -> usize {
        label(&mask_from(shape, voxels), shape, c).count()
    }

    #[test]
    fn empty_and_single_voxel() {
        let s = [3, 4, 5];
        let l = label(&[0; 60], s, Connectivity::TwentySix);
        assert_eq!(l.count(), 0);
        assert!(l.to_label_image().iter().all(|&v| v == 0));
        let l = label(&mask_from(s, &[[2, 3, 4]]), s, Connectivity::Six);
        assert_eq!(l.sizes(), &[1]);
        assert_eq!(l.to_label_image()[59], 1);
    }

    #[test]
    fn connectivity_on_diagonal_neighbours() {
        let s = [2, 2, 2];
        // Edge neighbours: (0,0,0)-(0,1,1) share an edge.
        let edge = [[0, 0, 0], [0, 1, 1]];
        assert_eq!(count(s, &edge, Connectivity::Six), 2);
        assert_eq!(count(s, &edge, Connectivity::Eighteen), 1);
        assert_eq!(count(s, &edge, Connectivity::TwentySix), 1);
        // Edge neighbours across z and y, and across z and x.
        assert_eq!(count(s, &[[0, 0, 0], [1, 1, 0]], Connectivity::Six), 2);
        assert_eq!(count(s, &[[0, 0, 0], [1, 1, 0]], Connectivity::Eighteen), 1);
        assert_eq!(count(s, &[[0, 0, 1], [1, 0, 0]], Connectivity::Eighteen), 1);
        // Corner neighbours: only 26-connectivity joins them, in both diagonal directions.
        for corner in [
            [[0, 0, 0], [1, 1, 1]],
            [[0, 1, 0], [1, 0, 1]],
            [[0, 1, 1], [1, 0, 0]],
        ] {
            assert_eq!(count(s, &corner, Connectivity::Six), 2);
            assert_eq!(count(s, &corner, Connectivity::Eighteen), 2);
            assert_eq!(count(s, &corner, Connectivity::TwentySix), 1);
        }
        // Face neighbours join under every connectivity.
        for c in Connectivity::ALL {
            assert_eq!(count(s, &[[0, 0, 0], [1, 0, 0]], c), 1);
        }
        // Two voxels one apart never touch.
        assert_eq!(
            count([1, 1, 3], &[[0, 0, 0], [0, 0, 2]], Connectivity::TwentySix),
            2
        );
    }

    #[test]
    fn labels_follow_raster_order_of_first_voxel() {
        // A U shape whose arms start before the later blob; the arms join at the bottom row.
        let s = [1, 3, 5];
        let m = mask_from(
            s,
            &[
                [0, 0, 0],
                [0, 0, 4],
                [0, 1, 0],
                [0, 1, 4],
                [0, 2, 0],
                [0, 2, 1],
                [0, 2, 2],
                [0, 2, 3],
                [0, 2, 4],
                [0, 0, 2],
            ],
        );
        let l = label(&m, s, Connectivity::Six);
        assert_eq!(l.count(), 2);
        let img = l.to_label_image();
        assert_eq!(img[0], 1); // the U starts at (0, 0, 0)
        assert_eq!(img[4], 1); // its right arm, joined only through the last row
        assert_eq!(img[2], 2); // the lone voxel at x = 2 comes second
        assert_eq!(l.sizes(), &[9, 1]);
    }

    #[test]
    fn objects_touching_the_border_and_spanning_all_slices() {
        let s = [4, 3, 3];
        let m = vec![1u8; 36];
        let l = label(&m, s, Connectivity::Six);
        assert_eq!(l.count(), 1);
        assert_eq!(l.sizes(), &[36]);
        assert_eq!(l.to_mask(), m);
    }

    #[test]
    fn small_objects_are_removed_and_the_rest_renumbered() {
        let s = [1, 1, 10];
        let m = mask_from(
            s,
            &[
                [0, 0, 0],
                [0, 0, 2],
                [0, 0, 3],
                [0, 0, 5],
                [0, 0, 6],
                [0, 0, 7],
            ],
        );
        let l = label(&m, s, Connectivity::TwentySix);
        assert_eq!(l.sizes(), &[1, 2, 3]);
        let f = l.without_smaller_than(2);
        assert_eq!(f.sizes(), &[2, 3]);
        assert_eq!(f.to_label_image(), vec![0, 0, 1, 1, 0, 2, 2, 2, 0, 0]);
        assert_eq!(l.without_smaller_than(4).count(), 0);
        assert_eq!(l.without_smaller_than(1), l);
    }

    #[test]
    fn overlaps_count_shared_voxels() {
        let s = [1, 2, 6];
        let a = label(&[1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 1, 1], s, Connectivity::Six);
        let b = label(&[0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1], s, Connectivity::Six);
        // a: {0,1,2} = 1, {4,5,10,11} = 2; b: {1,2,3,4} = 1, {11} = 2.
        assert_eq!(overlaps(&a, &b), vec![(1, 1, 2), (2, 1, 1), (2, 2, 1)]);
    }
}
