//! Dense-volume filters of the phantom renderer: separable Gaussian blur, block averaging and
//! trilinear upsampling of `f32` volumes in (Z, Y, X) order. Deterministic and parallel over
//! rows (no random numbers here).

use rayon::prelude::*;

/// Normalised Gaussian taps for σ (voxels), truncated at 3σ.
fn kernel(sigma: f64) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as i64;
    let taps: Vec<f64> = (-radius..=radius)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = taps.iter().sum();
    taps.iter().map(|t| (t / sum) as f32).collect()
}

/// Mirror index (`d c b | a b c d | c b a`, the edge sample not repeated) into `0..n`.
#[inline]
fn mirror(i: i64, n: usize) -> usize {
    let n = n as i64;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let mut m = i.rem_euclid(period);
    if m >= n {
        m = period - m;
    }
    m as usize
}

/// Convolves `line` with `taps` (centred) into `out`, mirroring at the ends. `padded` is
/// scratch space.
fn convolve_line(line: &[f32], taps: &[f32], out: &mut [f32], padded: &mut Vec<f32>) {
    let r = taps.len() / 2;
    let n = line.len();
    padded.clear();
    padded.extend((0..n + 2 * r).map(|i| line[mirror(i as i64 - r as i64, n)]));
    for (i, o) in out.iter_mut().enumerate() {
        *o = padded[i..i + taps.len()]
            .iter()
            .zip(taps)
            .map(|(v, t)| v * t)
            .sum();
    }
}

/// Blurs `data` (shape Z, Y, X) in place with a Gaussian of per-axis σ (z, y, x) in voxels;
/// an axis with σ ≤ 0 is left alone. Borders mirror.
pub(crate) fn gaussian_blur(data: &mut [f32], shape: [usize; 3], sigma: [f64; 3]) {
    let [nz, ny, nx] = shape;
    if sigma[2] > 0.0 && nx > 1 {
        let taps = kernel(sigma[2]);
        data.par_chunks_mut(nx * ny).for_each(|plane| {
            let mut padded = Vec::new();
            let mut src = vec![0f32; nx];
            for row in plane.chunks_mut(nx) {
                src.copy_from_slice(row);
                convolve_line(&src, &taps, row, &mut padded);
            }
        });
    }
    if sigma[1] > 0.0 && ny > 1 {
        let taps = kernel(sigma[1]);
        let r = (taps.len() / 2) as i64;
        data.par_chunks_mut(ny * nx).for_each(|plane| {
            let src = plane.to_vec();
            for y in 0..ny {
                let out = &mut plane[y * nx..(y + 1) * nx];
                out.fill(0.0);
                for (k, &t) in taps.iter().enumerate() {
                    let sy = mirror(y as i64 + k as i64 - r, ny);
                    for (o, s) in out.iter_mut().zip(&src[sy * nx..(sy + 1) * nx]) {
                        *o += t * s;
                    }
                }
            }
        });
    }
    if sigma[0] > 0.0 && nz > 1 {
        let taps = kernel(sigma[0]);
        let r = (taps.len() / 2) as i64;
        let plane = ny * nx;
        let src = data.to_vec();
        data.par_chunks_mut(plane).enumerate().for_each(|(z, out)| {
            out.fill(0.0);
            for (k, &t) in taps.iter().enumerate() {
                let sz = mirror(z as i64 + k as i64 - r, nz);
                for (o, s) in out.iter_mut().zip(&src[sz * plane..(sz + 1) * plane]) {
                    *o += t * s;
                }
            }
        });
    }
}

/// Block means over `factor` (z, y, x) voxels (partial blocks at the far edges average what
/// they hold). Returns the coarse volume and its shape.
pub(crate) fn block_mean(
    data: &[f32],
    shape: [usize; 3],
    factor: [usize; 3],
) -> (Vec<f32>, [usize; 3]) {
    let cs: [usize; 3] = std::array::from_fn(|d| shape[d].div_ceil(factor[d]));
    let mut sum = vec![0f32; cs[0] * cs[1] * cs[2]];
    let mut count = vec![0u32; sum.len()];
    for z in 0..shape[0] {
        for y in 0..shape[1] {
            let row = &data[(z * shape[1] + y) * shape[2]..][..shape[2]];
            let base = ((z / factor[0]) * cs[1] + y / factor[1]) * cs[2];
            for (x, v) in row.iter().enumerate() {
                sum[base + x / factor[2]] += v;
                count[base + x / factor[2]] += 1;
            }
        }
    }
    for (s, c) in sum.iter_mut().zip(&count) {
        *s /= (*c).max(1) as f32;
    }
    (sum, cs)
}

/// Trilinear interpolation of a coarse volume whose sample `i` sits at fine coordinate
/// `(i + 0.5)·factor − 0.5` on each axis (block centres), clamped at the borders.
pub(crate) fn upsample(
    coarse: &[f32],
    cshape: [usize; 3],
    shape: [usize; 3],
    factor: [f64; 3],
) -> Vec<f32> {
    let axis = |d: usize| -> Vec<(usize, usize, f32)> {
        (0..shape[d])
            .map(|i| {
                let u = ((i as f64 + 0.5) / factor[d] - 0.5).clamp(0.0, (cshape[d] - 1) as f64);
                let k = (u.floor() as usize).min(cshape[d].saturating_sub(2));
                let f = (u - k as f64).clamp(0.0, 1.0) as f32;
                (k, (k + 1).min(cshape[d] - 1), f)
            })
            .collect()
    };
    let (az, ay, ax) = (axis(0), axis(1), axis(2));
    let at = |z: usize, y: usize, x: usize| coarse[(z * cshape[1] + y) * cshape[2] + x];
    let mut out = vec![0f32; shape.iter().product()];
    out.par_chunks_mut(shape[1] * shape[2])
        .enumerate()
        .for_each(|(z, plane)| {
            let (z0, z1, fz) = az[z];
            for (y, row) in plane.chunks_mut(shape[2]).enumerate() {
                let (y0, y1, fy) = ay[y];
                for (x, o) in row.iter_mut().enumerate() {
                    let (x0, x1, fx) = ax[x];
                    let c00 = at(z0, y0, x0) * (1.0 - fx) + at(z0, y0, x1) * fx;
                    let c01 = at(z0, y1, x0) * (1.0 - fx) + at(z0, y1, x1) * fx;
                    let c10 = at(z1, y0, x0) * (1.0 - fx) + at(z1, y0, x1) * fx;
                    let c11 = at(z1, y1, x0) * (1.0 - fx) + at(z1, y1, x1) * fx;
                    let c0 = c00 * (1.0 - fy) + c01 * fy;
                    let c1 = c10 * (1.0 - fy) + c11 * fy;
                    *o = c0 * (1.0 - fz) + c1 * fz;
                }
            }
        });
    out
}

/// The value of [`upsample`]'s output at voxel (z, y, x), computed alone (for fields needed at
/// a few voxels only).
pub(crate) fn upsample_at(
    coarse: &[f32],
    cshape: [usize; 3],
    factor: [f64; 3],
    p: [usize; 3],
) -> f32 {
    let mut k = [0usize; 3];
    let mut k1 = [0usize; 3];
    let mut f = [0f32; 3];
    for d in 0..3 {
        let u = ((p[d] as f64 + 0.5) / factor[d] - 0.5).clamp(0.0, (cshape[d] - 1) as f64);
        k[d] = (u as usize).min(cshape[d].saturating_sub(2));
        k1[d] = (k[d] + 1).min(cshape[d] - 1);
        f[d] = (u - k[d] as f64).clamp(0.0, 1.0) as f32;
    }
    let at = |z: usize, y: usize, x: usize| coarse[(z * cshape[1] + y) * cshape[2] + x];
    let [fz, fy, fx] = f;
    let row = |z: usize, y: usize| at(z, y, k[2]) * (1.0 - fx) + at(z, y, k1[2]) * fx;
    let plane = |z: usize| row(z, k[1]) * (1.0 - fy) + row(z, k1[1]) * fy;
    plane(k[0]) * (1.0 - fz) + plane(k1[0]) * fz
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_preserves_mass_and_spreads_a_point() {
        let shape = [15, 13, 13];
        let at = |z: usize, y: usize, x: usize| (z * 13 + y) * 13 + x;
        let mut v = vec![0f32; 15 * 13 * 13];
        v[at(7, 6, 6)] = 1000.0;
        gaussian_blur(&mut v, shape, [1.5, 1.0, 1.0]);
        // Away from the borders the normalised kernel keeps the mass.
        let total: f32 = v.iter().sum();
        assert!((total - 1000.0).abs() < 0.5, "{total}");
        let centre = v[at(7, 6, 6)];
        assert!(centre < 1000.0 && centre > 10.0);
        // Wider along z than along x, symmetric.
        assert!(v[at(8, 6, 6)] > v[at(7, 6, 7)]);
        assert!((v[at(8, 6, 6)] - v[at(6, 6, 6)]).abs() < 1e-3);
    }

    #[test]
    fn block_mean_then_upsample_keeps_a_constant() {
        let shape = [5, 7, 9];
        let v = vec![3.0f32; 5 * 7 * 9];
        let (c, cs) = block_mean(&v, shape, [2, 4, 4]);
        assert_eq!(cs, [3, 2, 3]);
        let up = upsample(&c, cs, shape, [2.0, 4.0, 4.0]);
        assert!(up.iter().all(|&x| (x - 3.0).abs() < 1e-6));
    }

    #[test]
    fn point_upsampling_matches_the_full_one() {
        let cshape = [3, 4, 5];
        let coarse: Vec<f32> = (0..60).map(|i| (i * 7 % 13) as f32).collect();
        let shape = [7, 10, 12];
        let factor = [2.5, 3.0, 2.5];
        let full = upsample(&coarse, cshape, shape, factor);
        for z in 0..7 {
            for y in 0..10 {
                for x in 0..12 {
                    let v = upsample_at(&coarse, cshape, factor, [z, y, x]);
                    assert!((v - full[(z * 10 + y) * 12 + x]).abs() < 1e-4);
                }
            }
        }
    }

    #[test]
    fn mirror_indices() {
        assert_eq!(mirror(-1, 5), 1);
        assert_eq!(mirror(5, 5), 3);
        assert_eq!(mirror(2, 5), 2);
        assert_eq!(mirror(-3, 1), 0);
    }
}
