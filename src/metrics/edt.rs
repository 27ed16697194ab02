//! Exact Euclidean distance transform with per-axis voxel spacing.
//!
//! [`squared_distance_to_features`] gives, for every voxel, the squared distance in µm² to
//! the nearest feature voxel. It is separable: a two-scan pass along z gives the distance
//! along z, then the lower envelope of parabolas (Felzenszwalb & Huttenlocher, "Distance
//! Transforms of Sampled Functions", Theory of Computing 8, 2012) is taken along y and along
//! x. Each pass is exact, so the result is the exact Euclidean distance for any spacing, the
//! same quantity as `scipy.ndimage.distance_transform_edt(..., sampling=spacing)`.
//! [`distance_transform`] has scipy's interface (distance of every foreground voxel to the
//! nearest background voxel).

use rayon::prelude::*;

use crate::volume::Spacing;

/// Squared distance (µm²) from every voxel to the nearest voxel with `features[i] != 0`;
/// `f64::INFINITY` everywhere when there is no feature voxel.
///
/// # Panics
/// When `features.len()` differs from the product of `shape`.
pub fn squared_distance_to_features(
    features: &[u8],
    shape: [usize; 3],
    spacing: Spacing,
) -> Vec<f64> {
    transform(features, shape, spacing, None)
}

/// Like [`squared_distance_to_features`], but exact only on the rows `(z, y)` with
/// `rows[z·Y + y]` set; other values are unspecified. The last two passes skip the slabs and
/// rows nobody asked for, which is what surface distances need (values at surface voxels
/// only).
pub(crate) fn squared_distance_on_rows(
    features: &[u8],
    shape: [usize; 3],
    spacing: Spacing,
    rows: &[bool],
) -> Vec<f64> {
    assert_eq!(
        rows.len(),
        shape[0] * shape[1],
        "row selection does not match {shape:?}"
    );
    transform(features, shape, spacing, Some(rows))
}

/// Columns transposed together in the y pass (one 128-byte line of f64 per row).
const BLOCK: usize = 16;

fn transform(
    features: &[u8],
    shape: [usize; 3],
    spacing: Spacing,
    rows: Option<&[bool]>,
) -> Vec<f64> {
    let [nz, ny, nx] = shape;
    let slab = ny * nx;
    super::assert_fills(features.len(), shape, "feature mask");
    if features.is_empty() {
        return Vec::new();
    }
    let row_needed = |r: usize| rows.is_none_or(|rows| rows[r]);
    // Pass 1, along z: steps to the nearest feature in the same (y, x) column, slab by slab so
    // that every inner loop runs over contiguous memory. The forward scan starts the steps,
    // the backward scan finishes them and writes squared µm.
    const NONE: u32 = u32::MAX;
    const CHUNK: usize = 4096;
    let mut steps: Vec<u32> = vec![NONE; nz * slab];
    for z in 0..nz {
        let (before, after) = steps.split_at_mut(z * slab);
        let cur = &mut after[..slab];
        let feat = &features[z * slab..(z + 1) * slab];
        if z == 0 {
            cur.par_chunks_mut(CHUNK)
                .zip(feat.par_chunks(CHUNK))
                .for_each(|(c, f)| {
                    for (c, &f) in c.iter_mut().zip(f) {
                        *c = if f != 0 { 0 } else { NONE };
                    }
                });
        } else {
            let prev = &before[(z - 1) * slab..];
            cur.par_chunks_mut(CHUNK)
                .zip(feat.par_chunks(CHUNK))
                .zip(prev.par_chunks(CHUNK))
                .for_each(|((c, f), p)| {
                    for ((c, &f), &p) in c.iter_mut().zip(f).zip(p) {
                        *c = if f != 0 { 0 } else { p.saturating_add(1) };
                    }
                });
        }
    }
    let sz = spacing[0];
    let to_um2 = |s: u32| {
        if s == NONE {
            f64::INFINITY
        } else {
            let v = f64::from(s) * sz;
            v * v
        }
    };
    let mut d: Vec<f64> = vec![0.0; nz * slab];
    for z in (0..nz).rev() {
        let (before, after) = steps.split_at_mut((z + 1) * slab);
        let cur = &mut before[z * slab..];
        let out = &mut d[z * slab..(z + 1) * slab];
        if z + 1 == nz {
            out.par_chunks_mut(CHUNK)
                .zip(cur.par_chunks(CHUNK))
                .for_each(|(o, c)| {
                    for (o, &c) in o.iter_mut().zip(c) {
                        *o = to_um2(c);
                    }
                });
        } else {
            let next = &after[..slab];
            out.par_chunks_mut(CHUNK)
                .zip(cur.par_chunks_mut(CHUNK))
                .zip(next.par_chunks(CHUNK))
                .for_each(|((o, c), n)| {
                    for ((o, c), &n) in o.iter_mut().zip(c.iter_mut()).zip(n) {
                        *c = (*c).min(n.saturating_add(1));
                        *o = to_um2(*c);
                    }
                });
        }
    }
    drop(steps);

    // Pass 2, along y: the columns of each needed z slab, BLOCK columns at a time through a
    // transposed tile so that both the gather and the transform read contiguous memory.
    let sy = spacing[1];
    d.par_chunks_mut(slab).enumerate().for_each_init(
        || (Envelope::new(ny, sy), vec![0.0; BLOCK * ny]),
        |(env, tile), (z, plane)| {
            if !(0..ny).any(|y| row_needed(z * ny + y)) {
                return;
            }
            for x0 in (0..nx).step_by(BLOCK) {
                let b = BLOCK.min(nx - x0);
                for y in 0..ny {
                    for (j, v) in plane[y * nx + x0..y * nx + x0 + b].iter().enumerate() {
                        tile[j * ny + y] = *v;
                    }
                }
                for column in tile.chunks_exact_mut(ny).take(b) {
                    env.transform(column);
                }
                for y in 0..ny {
                    for (j, v) in plane[y * nx + x0..y * nx + x0 + b].iter_mut().enumerate() {
                        *v = tile[j * ny + y];
                    }
                }
            }
        },
    );

    // Pass 3, along x: contiguous rows.
    let sx = spacing[2];
    d.par_chunks_mut(nx).enumerate().for_each_init(
        || Envelope::new(nx, sx),
        |env, (r, row)| {
            if row_needed(r) {
                env.transform(row);
            }
        },
    );
    d
}

/// Euclidean distance (µm) of every non-zero voxel of `mask` to the nearest zero voxel, 0 on
/// zero voxels: `scipy.ndimage.distance_transform_edt(mask, sampling=spacing)`. Without any
/// zero voxel every distance is infinite (scipy returns finite but meaningless values then).
pub fn distance_transform(mask: &[u8], shape: [usize; 3], spacing: Spacing) -> Vec<f64> {
    let background: Vec<u8> = mask.par_iter().map(|&v| u8::from(v == 0)).collect();
    let mut d = squared_distance_to_features(&background, shape, spacing);
    d.par_iter_mut().for_each(|v| *v = v.sqrt());
    d
}

/// Work space of the 1-D lower envelope of parabolas along one axis, reused across lines.
struct Envelope {
    /// Voxel spacing along the axis (µm).
    s: f64,
    /// `inv[k] = 1 / (2·s²·k)`: the intersection of two parabolas k samples apart costs a
    /// multiplication instead of a division.
    inv: Vec<f64>,
    /// Positions of the parabolas in the envelope.
    v: Vec<usize>,
    /// Boundaries between them: parabola `v[k]` is lowest on `[z[k], z[k + 1]]`.
    z: Vec<f64>,
    /// The input line.
    f: Vec<f64>,
    /// `f[i] + s²·i²`, the part of parabola i that does not depend on the position.
    h: Vec<f64>,
}

impl Envelope {
    fn new(n: usize, s: f64) -> Self {
        let s2 = s * s;
        Self {
            s,
            inv: (0..n).map(|k| 1.0 / (2.0 * s2 * k as f64)).collect(),
            v: vec![0; n],
            z: vec![0.0; n + 1],
            f: vec![0.0; n],
            h: vec![0.0; n],
        }
    }

    /// Replaces `line[i]` by `min_j line[j] + (s·(i − j))²` (infinite samples are not
    /// features; an all-infinite line stays infinite).
    fn transform(&mut self, line: &mut [f64]) {
        let n = line.len();
        let Some(first) = line.iter().position(|v| v.is_finite()) else {
            return;
        };
        let (s, s2) = (self.s, self.s * self.s);
        let (f, h) = (&mut self.f[..n], &mut self.h[..n]);
        f.copy_from_slice(line);
        for (i, (h, f)) in h.iter_mut().zip(f.iter()).enumerate() {
            *h = f + s2 * (i * i) as f64;
        }
        let (v, z, inv) = (&mut self.v, &mut self.z, &self.inv);
        let mut k = 0;
        v[0] = first;
        z[0] = f64::NEG_INFINITY;
        z[1] = f64::INFINITY;
        for q in first + 1..n {
            if !f[q].is_finite() {
                continue;
            }
            loop {
                let p = v[k];
                // Where the parabolas of q and p cross, in index units.
                let cross = (h[q] - h[p]) * inv[q - p];
                if cross <= z[k] && k > 0 {
                    k -= 1;
                } else {
                    k += 1;
                    v[k] = q;
                    z[k] = cross;
                    z[k + 1] = f64::INFINITY;
                    break;
                }
            }
        }
        let mut k = 0;
        for (q, out) in line.iter_mut().enumerate() {
            while z[k + 1] < q as f64 {
                k += 1;
            }
            let dq = s * (q as f64 - v[k] as f64);
            *out = dq * dq + f[v[k]];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: minimum over all feature voxels.
    fn brute(features: &[u8], shape: [usize; 3], sp: Spacing) -> Vec<f64> {
        let [nz, ny, nx] = shape;
        let feats: Vec<[usize; 3]> = (0..features.len())
            .filter(|&i| features[i] != 0)
            .map(|i| [i / (ny * nx), (i / nx) % ny, i % nx])
            .collect();
        let mut out = Vec::new();
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let best = feats
                        .iter()
                        .map(|f| {
                            let d = [
                                (z as f64 - f[0] as f64) * sp[0],
                                (y as f64 - f[1] as f64) * sp[1],
                                (x as f64 - f[2] as f64) * sp[2],
                            ];
                            d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
                        })
                        .fold(f64::INFINITY, f64::min);
                    out.push(best);
                }
            }
        }
        out
    }

    #[test]
    fn single_feature_with_anisotropic_spacing() {
        let shape = [3, 4, 5];
        let mut f = vec![0u8; 60];
        f[0] = 1; // (0, 0, 0)
        let d = squared_distance_to_features(&f, shape, [2.0, 0.5, 1.0]);
        // (2, 3, 4): (2·2)² + (3·0.5)² + (4·1)² = 16 + 2.25 + 16
        assert_eq!(d[59], 34.25);
        assert_eq!(d[0], 0.0);
        // (1, 0, 0): one z step of 2 µm.
        assert_eq!(d[20], 4.0);
    }

    #[test]
    fn selected_rows_are_exact() {
        let shape = [5, 6, 37]; // more columns than one block, not a multiple of it
        let n: usize = shape.iter().product();
        let f: Vec<u8> = (0..n).map(|i| u8::from(i % 29 == 3)).collect();
        let full = squared_distance_to_features(&f, shape, [1.5, 0.5, 1.0]);
        let rows: Vec<bool> = (0..30).map(|r| r % 7 == 2).collect();
        let part = squared_distance_on_rows(&f, shape, [1.5, 0.5, 1.0], &rows);
        for (r, _) in rows.iter().enumerate().filter(|(_, k)| **k) {
            assert_eq!(full[r * 37..(r + 1) * 37], part[r * 37..(r + 1) * 37]);
        }
    }

    #[test]
    fn no_feature_gives_infinity() {
        let d = squared_distance_to_features(&[0; 8], [2, 2, 2], [1.0; 3]);
        assert!(d.iter().all(|v| v.is_infinite()));
    }

    #[test]
    fn matches_brute_force_on_random_features() {
        let shape = [7, 9, 11];
        let n: usize = shape.iter().product();
        let mut state = 12345u64;
        for density in [2u64, 10, 50] {
            let f: Vec<u8> = (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    u8::from((state >> 33) % 100 < density)
                })
                .collect();
            for sp in [[1.0, 1.0, 1.0], [2.18, 1.0, 1.0], [0.3, 0.7, 0.11]] {
                let got = squared_distance_to_features(&f, shape, sp);
                let want = brute(&f, shape, sp);
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-9 * w.max(1.0), "{g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn distance_transform_is_distance_to_background() {
        // A 1 × 1 × 5 row 0 1 1 1 1: distances 0 1 2 3 4 (µm at 0.5 µm per voxel: halves);
        // the right border is not background.
        let d = distance_transform(&[0, 1, 1, 1, 1], [1, 1, 5], [1.0, 1.0, 0.5]);
        assert_eq!(d, vec![0.0, 0.5, 1.0, 1.5, 2.0]);
    }
}
