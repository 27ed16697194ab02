//! Geometry of the synthetic objects: rotations, the elastic displacement field and the
//! inverse mapping that rasterises a warped, rotated shape (docs/published-code.md
//! §2.2–2.3).
//!
//! Vectors here are (x, y, z) in voxel units of an object's window, the axis order of the
//! published code; callers convert to seglab's (z, y, x) when they write voxels.

use rand::RngExt;
use rand_distr::{Distribution, Normal};

use super::config::ElasticConfig;

pub(crate) type Vec3 = [f64; 3];

/// A 3×3 rotation matrix acting on (x, y, z) column vectors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rotation(pub [[f64; 3]; 3]);

impl Rotation {
    pub const IDENTITY: Rotation = Rotation([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);

    /// Rotation by `degrees` in the X–Y plane (about Z).
    pub fn about_z(degrees: f64) -> Self {
        let (s, c) = degrees.to_radians().sin_cos();
        Rotation([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    }

    /// A uniformly distributed rotation (Shoemake's random unit quaternion).
    pub fn uniform(rng: &mut impl rand::Rng) -> Self {
        let (u1, u2, u3): (f64, f64, f64) = (rng.random(), rng.random(), rng.random());
        let tau = std::f64::consts::TAU;
        let (a, b) = ((1.0 - u1).sqrt(), u1.sqrt());
        let (x, y, z, w) = (
            a * (tau * u2).sin(),
            a * (tau * u2).cos(),
            b * (tau * u3).sin(),
            b * (tau * u3).cos(),
        );
        Rotation([
            [
                1.0 - 2.0 * (y * y + z * z),
                2.0 * (x * y - z * w),
                2.0 * (x * z + y * w),
            ],
            [
                2.0 * (x * y + z * w),
                1.0 - 2.0 * (x * x + z * z),
                2.0 * (y * z - x * w),
            ],
            [
                2.0 * (x * z - y * w),
                2.0 * (y * z + x * w),
                1.0 - 2.0 * (x * x + y * y),
            ],
        ])
    }

    /// Rotation whose columns are the given orthonormal axes.
    pub fn from_axes(a: Vec3, b: Vec3, c: Vec3) -> Self {
        Rotation([[a[0], b[0], c[0]], [a[1], b[1], c[1]], [a[2], b[2], c[2]]])
    }

    pub fn transpose(&self) -> Self {
        let m = &self.0;
        Rotation([
            [m[0][0], m[1][0], m[2][0]],
            [m[0][1], m[1][1], m[2][1]],
            [m[0][2], m[1][2], m[2][2]],
        ])
    }

    #[inline]
    pub fn apply(&self, v: Vec3) -> Vec3 {
        let m = &self.0;
        [
            m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
            m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
            m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
        ]
    }
}

/// Python's `round` (half to even) of `n/2`, used by the warp's re-centring.
fn round_half_even_half(n: usize) -> f64 {
    if n.is_multiple_of(2) {
        (n / 2) as f64
    } else {
        let lo = n / 2; // n/2 = lo + 0.5
        (if lo.is_multiple_of(2) { lo } else { lo + 1 }) as f64
    }
}

/// The elastic displacement field of one object (§2.2), stored on a coarse grid and
/// interpolated trilinearly.
///
/// The reference draws uniform noise in [−1, 1) on every voxel of the window, filters it with a
/// Gaussian of σ = 0.75 × window size per axis (constant-zero border), normalises it by its
/// maximum magnitude and scales it by α ~ U(σ/8, σ/2); the sampling coordinates are then
/// re-centred (mean displacement removed, plus `round(n/2) − (n−1)/2`). Because σ is of the
/// order of the window, the filtered field is a global blur: its value at a point barely
/// depends on where inside a small block the noise sits. We therefore (1) sum the noise per
/// block of `grid_step`³ voxels — a sum of k uniforms on [−1, 1) has variance k/3 and is
/// drawn as a normal with that variance —, (2) filter the block sums with the same Gaussian
/// at the grid nodes and (3) interpolate trilinearly between nodes. The normalisation and the
/// mean are taken over the interpolated field, exactly (trilinear interpolation never exceeds
/// its node values, and its voxel mean is a weighted sum of the nodes).
#[derive(Clone, Debug)]
pub(crate) struct WarpField {
    /// Window size (x, y, z).
    size: [usize; 3],
    /// Node count per axis.
    nodes: [usize; 3],
    /// Node spacing per axis in voxels.
    step: Vec3,
    /// Displacement component d at node (kx, ky, kz), x fastest; the re-centring is included.
    values: [Vec<f64>; 3],
    /// Amplitude α per axis.
    pub alpha: Vec3,
}

impl WarpField {
    pub fn random(size: [usize; 3], cfg: &ElasticConfig, rng: &mut impl rand::Rng) -> Self {
        let step = cfg.grid_step.max(1) as usize;
        let sigma: Vec3 = std::array::from_fn(|d| cfg.sigma_factor * size[d] as f64);
        // One alpha per axis, drawn in axis order as the reference does.
        let alpha: Vec3 = std::array::from_fn(|d| {
            let (lo, hi) = (cfg.alpha_min * sigma[d], cfg.alpha_max * sigma[d]);
            if hi > lo {
                rng.random_range(lo..hi)
            } else {
                lo
            }
        });

        // Blocks along each axis: (centre, voxel count).
        let blocks: [Vec<(f64, usize)>; 3] = std::array::from_fn(|d| {
            (0..size[d])
                .step_by(step)
                .map(|start| {
                    let end = (start + step).min(size[d]);
                    ((start + end - 1) as f64 / 2.0, end - start)
                })
                .collect()
        });
        let nodes: [usize; 3] = std::array::from_fn(|d| {
            if size[d] <= 1 {
                1
            } else {
                (size[d] - 1).div_ceil(step) + 1
            }
        });
        let node_step: Vec3 = std::array::from_fn(|d| {
            if nodes[d] > 1 {
                (size[d] - 1) as f64 / (nodes[d] - 1) as f64
            } else {
                1.0
            }
        });
        // Gaussian weights node × block per axis, truncated at 4σ like scipy.
        let weights: [Vec<f64>; 3] = std::array::from_fn(|d| {
            let radius = (4.0 * sigma[d] + 0.5).floor();
            let mut w = Vec::with_capacity(nodes[d] * blocks[d].len());
            for k in 0..nodes[d] {
                let t = k as f64 * node_step[d];
                for &(c, _) in &blocks[d] {
                    let dist = t - c;
                    w.push(if dist.abs() <= radius {
                        (-dist * dist / (2.0 * sigma[d] * sigma[d])).exp()
                    } else {
                        0.0
                    });
                }
            }
            w
        });
        let nb = [blocks[0].len(), blocks[1].len(), blocks[2].len()];
        // Interpolation weight sums per node and axis: Σ over voxels of the hat function.
        let hat_sums: [Vec<f64>; 3] = std::array::from_fn(|d| {
            let mut s = vec![0.0; nodes[d]];
            for i in 0..size[d] {
                let (k, f) = locate(i as f64, node_step[d], nodes[d]);
                s[k] += 1.0 - f;
                if f > 0.0 {
                    s[k + 1] += f;
                }
            }
            s
        });
        let voxels = (size[0] * size[1] * size[2]) as f64;

        let values = std::array::from_fn(|d| {
            // Block sums of uniform noise on [−1, 1): variance count/3.
            let mut noise = Vec::with_capacity(nb[0] * nb[1] * nb[2]);
            for bz in 0..nb[2] {
                for by in 0..nb[1] {
                    for bx in 0..nb[0] {
                        let count = blocks[0][bx].1 * blocks[1][by].1 * blocks[2][bz].1;
                        let normal = Normal::new(0.0, (count as f64 / 3.0).sqrt())
                            .expect("finite standard deviation");
                        noise.push(normal.sample(rng));
                    }
                }
            }
            let field = separable_apply(&noise, nb, nodes, &weights);
            let max = field.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 { alpha[d] / max } else { 0.0 };
            let mut mean = 0.0;
            for kz in 0..nodes[2] {
                for ky in 0..nodes[1] {
                    for kx in 0..nodes[0] {
                        let i = (kz * nodes[1] + ky) * nodes[0] + kx;
                        mean += field[i] * hat_sums[0][kx] * hat_sums[1][ky] * hat_sums[2][kz];
                    }
                }
            }
            let mean = mean * scale / voxels;
            let shift = round_half_even_half(size[d]) - (size[d] as f64 - 1.0) / 2.0;
            field.iter().map(|v| v * scale - mean + shift).collect()
        });
        Self {
            size,
            nodes,
            step: node_step,
            values,
            alpha,
        }
    }

    /// Displacement at the continuous window point `p` (clamped to the window).
    #[inline]
    pub fn displacement(&self, p: Vec3) -> Vec3 {
        let [nx, ny, _] = self.nodes;
        let mut k = [0usize; 3];
        let mut f = [0f64; 3];
        let mut k1 = [0usize; 3];
        for d in 0..3 {
            let t = p[d].clamp(0.0, (self.size[d] - 1) as f64);
            (k[d], f[d]) = locate(t, self.step[d], self.nodes[d]);
            k1[d] = (k[d] + 1).min(self.nodes[d] - 1);
        }
        let (i00, i01) = ((k[2] * ny + k[1]) * nx, (k[2] * ny + k1[1]) * nx);
        let (i10, i11) = ((k1[2] * ny + k[1]) * nx, (k1[2] * ny + k1[1]) * nx);
        let [fx, fy, fz] = f;
        let (gx, gy, gz) = (1.0 - fx, 1.0 - fy, 1.0 - fz);
        let mut out = [0.0; 3];
        for (o, v) in out.iter_mut().zip(&self.values) {
            let lerp = |row: usize| gx * v[row + k[0]] + fx * v[row + k1[0]];
            let lo = gy * lerp(i00) + fy * lerp(i01);
            let hi = gy * lerp(i10) + fy * lerp(i11);
            *o = gz * lo + fz * hi;
        }
        out
    }

    /// The box of window points `q` whose warped position `q + D(q)` can fall inside
    /// `[lo, hi]`: the union of the coarse cells whose corner images' bounding box meets it
    /// (inside a cell the map is trilinear, so its image lies in the hull of the corners').
    pub fn preimage_box(&self, lo: Vec3, hi: Vec3) -> Option<(Vec3, Vec3)> {
        let [nx, ny, nz] = self.nodes;
        let node = |k: usize, d: usize| k as f64 * self.step[d];
        let mut out: Option<(Vec3, Vec3)> = None;
        let cells = |n: usize| if n > 1 { n - 1 } else { 1 };
        for cz in 0..cells(nz) {
            for cy in 0..cells(ny) {
                for cx in 0..cells(nx) {
                    let mut ilo = [f64::INFINITY; 3];
                    let mut ihi = [f64::NEG_INFINITY; 3];
                    for corner in 0..8 {
                        let k = [
                            (cx + (corner & 1)).min(nx - 1),
                            (cy + ((corner >> 1) & 1)).min(ny - 1),
                            (cz + ((corner >> 2) & 1)).min(nz - 1),
                        ];
                        let i = (k[2] * ny + k[1]) * nx + k[0];
                        for d in 0..3 {
                            let s = node(k[d], d) + self.values[d][i];
                            ilo[d] = ilo[d].min(s);
                            ihi[d] = ihi[d].max(s);
                        }
                    }
                    if (0..3).all(|d| ihi[d] >= lo[d] && ilo[d] <= hi[d]) {
                        let clo = [node(cx, 0), node(cy, 1), node(cz, 2)];
                        let chi = [
                            node((cx + 1).min(nx - 1), 0),
                            node((cy + 1).min(ny - 1), 1),
                            node((cz + 1).min(nz - 1), 2),
                        ];
                        out = Some(match out {
                            None => (clo, chi),
                            Some((a, b)) => (
                                std::array::from_fn(|d| a[d].min(clo[d])),
                                std::array::from_fn(|d| b[d].max(chi[d])),
                            ),
                        });
                    }
                }
            }
        }
        out
    }
}

/// Cell index and fraction of the continuous node coordinate `t / step`.
#[inline]
fn locate(t: f64, step: f64, nodes: usize) -> (usize, f64) {
    if nodes <= 1 {
        return (0, 0.0);
    }
    // t ≥ 0, so truncation is floor (and avoids a libm call).
    let u = t / step;
    let k = (u as usize).min(nodes - 2);
    (k, (u - k as f64).clamp(0.0, 1.0))
}

/// Applies per-axis weight matrices (out × in, row-major) to a 3-D array (x fastest).
fn separable_apply(
    input: &[f64],
    nin: [usize; 3],
    nout: [usize; 3],
    weights: &[Vec<f64>; 3],
) -> Vec<f64> {
    // Along x.
    let mut a = vec![0.0; nout[0] * nin[1] * nin[2]];
    for z in 0..nin[2] {
        for y in 0..nin[1] {
            let row = &input[(z * nin[1] + y) * nin[0]..][..nin[0]];
            for k in 0..nout[0] {
                let w = &weights[0][k * nin[0]..][..nin[0]];
                a[(z * nin[1] + y) * nout[0] + k] = row.iter().zip(w).map(|(v, w)| v * w).sum();
            }
        }
    }
    // Along y.
    let mut b = vec![0.0; nout[0] * nout[1] * nin[2]];
    for z in 0..nin[2] {
        for k in 0..nout[1] {
            for j in 0..nin[1] {
                let w = weights[1][k * nin[1] + j];
                if w == 0.0 {
                    continue;
                }
                for x in 0..nout[0] {
                    b[(z * nout[1] + k) * nout[0] + x] += w * a[(z * nin[1] + j) * nout[0] + x];
                }
            }
        }
    }
    // Along z.
    let plane = nout[0] * nout[1];
    let mut c = vec![0.0; plane * nout[2]];
    for k in 0..nout[2] {
        for j in 0..nin[2] {
            let w = weights[2][k * nin[2] + j];
            if w == 0.0 {
                continue;
            }
            for i in 0..plane {
                c[k * plane + i] += w * b[j * plane + i];
            }
        }
    }
    c
}

/// A solid in window coordinates that can say whether an integer voxel belongs to it.
pub(crate) trait Solid: Sync {
    /// Whether the voxel with integer coordinates `v` (x, y, z) is inside.
    fn contains(&self, v: [i64; 3]) -> bool;
    /// An inclusive bounding box (x, y, z) of the solid.
    fn bounds(&self) -> (Vec3, Vec3);
    /// The parameters t for which the point `a + t·b` may round to an inside voxel (a
    /// superset), or `None` when the line misses the solid. Lets rasterisation skip the empty
    /// part of each row.
    fn line_interval(&self, a: Vec3, b: Vec3) -> Option<(f64, f64)>;
}

/// A digital axis-aligned ellipsoid (a sphere when all semi-axes are equal): a voxel is inside
/// when its squared normalised distance from the centre is ≤ 1 (§2.1).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ellipsoid {
    pub centre: Vec3,
    pub semi_axes: Vec3,
}

impl Solid for Ellipsoid {
    #[inline]
    fn contains(&self, v: [i64; 3]) -> bool {
        let s: f64 = (v.iter().zip(&self.centre).zip(&self.semi_axes))
            .map(|((&v, c), a)| {
                let t = (v as f64 - c) / a;
                t * t
            })
            .sum();
        s <= 1.0
    }

    fn bounds(&self) -> (Vec3, Vec3) {
        (
            std::array::from_fn(|d| self.centre[d] - self.semi_axes[d]),
            std::array::from_fn(|d| self.centre[d] + self.semi_axes[d]),
        )
    }

    fn line_interval(&self, a: Vec3, b: Vec3) -> Option<(f64, f64)> {
        // Rounding moves a point by at most √3/2 < 1 voxel: grow the semi-axes by 1 and
        // solve Σ((a + t·b − c)/(r + 1))² ≤ 1 for t.
        let (mut qa, mut qb, mut qc) = (0.0, 0.0, -1.0);
        for d in 0..3 {
            let r = self.semi_axes[d] + 1.0;
            let (u, w) = ((a[d] - self.centre[d]) / r, b[d] / r);
            qa += w * w;
            qb += 2.0 * u * w;
            qc += u * u;
        }
        if qa < 1e-12 {
            return (qc <= 0.0).then_some((f64::NEG_INFINITY, f64::INFINITY));
        }
        let disc = qb * qb - 4.0 * qa * qc;
        if disc < 0.0 {
            return None;
        }
        let root = disc.sqrt();
        Some(((-qb - root) / (2.0 * qa), (-qb + root) / (2.0 * qa)))
    }
}

/// The transform from an object's template to its window: elastic warp, then rotation about
/// the window centre. Rasterised by inverse mapping: an output voxel p is inside when the
/// template voxel nearest to `q + D(q)`, with `q = R⁻¹(p − c) + c`, is inside the solid
/// (nearest-neighbour resampling of labels, as the reference's warp; the reference rotates
/// with a cubic spline and rounds, which differs from this only on boundary voxels). Along
/// each output row the displacement is interpolated linearly between exact values every 8
/// voxels (the field's σ is ~100 voxels, so the difference is far below a voxel).
pub(crate) struct ObjectTransform {
    /// Window size (x, y, z).
    pub window: [usize; 3],
    pub rotation: Rotation,
    pub warp: Option<WarpField>,
}

impl ObjectTransform {
    fn centre(&self) -> Vec3 {
        std::array::from_fn(|d| (self.window[d] as f64 - 1.0) / 2.0)
    }

    /// Voxels (x, y, z) of the window that the transformed `solid` covers, in x-fastest order.
    pub fn rasterise(&self, solid: &impl Solid) -> Vec<[i32; 3]> {
        let c = self.centre();
        let n: Vec3 = std::array::from_fn(|d| self.window[d] as f64);
        let (mut lo, mut hi) = solid.bounds();
        // Nearest-neighbour rounding can pick a template voxel up to half a voxel away.
        for d in 0..3 {
            lo[d] = (lo[d] - 0.5).max(-0.5);
            hi[d] = (hi[d] + 0.5).min(n[d] - 0.5);
        }
        let (qlo, qhi) = match &self.warp {
            None => (lo, hi),
            Some(w) => match w.preimage_box(lo, hi) {
                Some(b) => b,
                None => return Vec::new(),
            },
        };
        // Forward-rotate the corners of the q box to bound p.
        let mut plo = [f64::INFINITY; 3];
        let mut phi = [f64::NEG_INFINITY; 3];
        for corner in 0..8 {
            let q = [
                if corner & 1 == 0 { qlo[0] } else { qhi[0] },
                if corner & 2 == 0 { qlo[1] } else { qhi[1] },
                if corner & 4 == 0 { qlo[2] } else { qhi[2] },
            ];
            let r = self.rotation.apply([q[0] - c[0], q[1] - c[1], q[2] - c[2]]);
            for d in 0..3 {
                plo[d] = plo[d].min(r[d] + c[d]);
                phi[d] = phi[d].max(r[d] + c[d]);
            }
        }
        let range = |d: usize| {
            let a = (plo[d].floor() as i64 - 1).max(0);
            let b = (phi[d].ceil() as i64 + 1).min(self.window[d] as i64 - 1);
            a..=b
        };
        let inv = self.rotation.transpose();
        // Along an output row q(x) is linear in x; the displacement is smooth enough (σ ≈ the
        // window size) to be evaluated at anchors every ROW_STEP voxels and interpolated
        // linearly in between. Anchors sit at absolute x, so a voxel's value does not depend
        // on the bounding box. Within a segment between anchors the sampled point is then
        // s(x) = A + x·B, and only the x where it can fall inside the solid are visited.
        const ROW_STEP: usize = 8;
        let step: Vec3 = [inv.0[0][0], inv.0[1][0], inv.0[2][0]];
        let (xr, yr, zr) = (range(0), range(1), range(2));
        if xr.is_empty() || yr.is_empty() || zr.is_empty() {
            return Vec::new();
        }
        let (x_lo, x_hi) = (*xr.start() as usize, *xr.end() as usize);
        let (k_lo, k_hi) = (x_lo / ROW_STEP, x_hi.div_ceil(ROW_STEP));
        let mut anchors: Vec<Vec3> = vec![[0.0; 3]; k_hi - k_lo + 1];
        let window: [i64; 3] = self.window.map(|w| w as i64);
        let mut out = Vec::new();
        for z in zr {
            for y in yr.clone() {
                // q(x) = base + x·step.
                let r0 = inv.apply([-c[0], y as f64 - c[1], z as f64 - c[2]]);
                let base: Vec3 = std::array::from_fn(|d| r0[d] + c[d]);
                if let Some(w) = &self.warp {
                    for (i, a) in anchors.iter_mut().enumerate() {
                        let x = ((k_lo + i) * ROW_STEP) as f64;
                        *a = w.displacement(std::array::from_fn(|d| base[d] + x * step[d]));
                    }
                }
                for k in k_lo..k_hi.max(k_lo + 1) {
                    let seg_lo = (k * ROW_STEP).max(x_lo);
                    let seg_hi = ((k + 1) * ROW_STEP - 1).min(x_hi);
                    if seg_lo > seg_hi {
                        continue;
                    }
                    let (a0, a1) = (
                        anchors[k - k_lo],
                        anchors[(k + 1 - k_lo).min(anchors.len() - 1)],
                    );
                    let origin = (k * ROW_STEP) as f64;
                    let slope: Vec3 = std::array::from_fn(|d| (a1[d] - a0[d]) / ROW_STEP as f64);
                    let a: Vec3 = std::array::from_fn(|d| base[d] + a0[d] - origin * slope[d]);
                    let b: Vec3 = std::array::from_fn(|d| step[d] + slope[d]);
                    let Some((t0, t1)) = solid.line_interval(a, b) else {
                        continue;
                    };
                    let from = (t0.ceil().max(seg_lo as f64)) as usize;
                    let to = t1.floor().min(seg_hi as f64);
                    if to < from as f64 {
                        continue;
                    }
                    for x in from..=to as usize {
                        let xf = x as f64;
                        // Outside the window the rotation reads zeros.
                        let q: Vec3 = std::array::from_fn(|d| base[d] + xf * step[d]);
                        if (0..3).any(|d| q[d] < -0.5 || q[d] >= n[d] - 0.5) {
                            continue;
                        }
                        let mut v = [0i64; 3];
                        let mut inside_window = true;
                        for d in 0..3 {
                            let t = a[d] + xf * b[d] + 0.5;
                            // floor for t ≥ 0; negative t is outside anyway.
                            v[d] = t as i64;
                            inside_window &= t >= 0.0 && v[d] < window[d];
                        }
                        if inside_window && solid.contains(v) {
                            out.push([x as i32, y as i32, z as i32]);
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::rng::stream;

    fn elastic() -> ElasticConfig {
        ElasticConfig {
            enabled: true,
            sigma_factor: 0.75,
            alpha_min: 0.125,
            alpha_max: 0.5,
            grid_step: 8,
        }
    }

    #[test]
    fn rotations_are_orthonormal() {
        let mut rng = stream(1, &[0]);
        for r in [Rotation::about_z(37.0), Rotation::uniform(&mut rng)] {
            let rt = r.transpose();
            for (i, e) in [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
                .into_iter()
                .enumerate()
            {
                let back = rt.apply(r.apply(e));
                for (d, b) in back.iter().enumerate() {
                    let want = if d == i { 1.0 } else { 0.0 };
                    assert!((b - want).abs() < 1e-12);
                }
            }
        }
        let v = Rotation::about_z(90.0).apply([1.0, 0.0, 0.0]);
        assert!((v[0]).abs() < 1e-12 && (v[1] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn warp_is_mean_free_up_to_the_shift_and_bounded_by_alpha() {
        let size = [128, 128, 56];
        for seed in 0..5 {
            let w = WarpField::random(size, &elastic(), &mut stream(seed, &[1]));
            for (d, &n) in size.iter().enumerate() {
                let sigma = 0.75 * n as f64;
                assert!(w.alpha[d] >= sigma / 8.0 && w.alpha[d] < sigma / 2.0);
            }
            // Voxel mean of the displacement = the constant re-centring shift (0.5 here).
            let mut sum = [0.0; 3];
            let mut max = [0.0f64; 3];
            for z in 0..56 {
                for y in 0..128 {
                    for x in 0..128 {
                        let dv = w.displacement([x as f64, y as f64, z as f64]);
                        for d in 0..3 {
                            sum[d] += dv[d];
                            max[d] = max[d].max((dv[d] - 0.5).abs());
                        }
                    }
                }
            }
            for d in 0..3 {
                let mean = sum[d] / (128.0 * 128.0 * 56.0);
                assert!((mean - 0.5).abs() < 1e-6, "axis {d}: mean {mean}");
                // |D − mean D| ≤ 2α; a field that is a global blur varies far less.
                assert!(max[d] <= 2.0 * w.alpha[d] + 1e-9);
            }
        }
    }

    #[test]
    fn identity_transform_rasterises_the_digital_ellipsoid() {
        let t = ObjectTransform {
            window: [32, 32, 20],
            rotation: Rotation::IDENTITY,
            warp: None,
        };
        let e = Ellipsoid {
            centre: [15.5, 15.5, 9.5],
            semi_axes: [9.0, 5.0, 4.0],
        };
        let vox = t.rasterise(&e);
        let mut brute = 0;
        for z in 0..20 {
            for y in 0..32 {
                for x in 0..32 {
                    brute += usize::from(e.contains([x, y, z]));
                }
            }
        }
        assert_eq!(vox.len(), brute);
        let volume = 4.0 / 3.0 * std::f64::consts::PI * 9.0 * 5.0 * 4.0;
        assert!((vox.len() as f64 / volume - 1.0).abs() < 0.1);
    }

    #[test]
    fn warped_raster_agrees_with_brute_force_over_the_window() {
        let window = [64, 64, 30];
        let warp = WarpField::random(window, &elastic(), &mut stream(3, &[2]));
        let t = ObjectTransform {
            window,
            rotation: Rotation::about_z(33.0),
            warp: Some(warp),
        };
        let e = Ellipsoid {
            centre: [33.0, 30.0, 15.0],
            semi_axes: [14.0, 6.0, 5.0],
        };
        let fast = t.rasterise(&e);
        // Brute force: a bounding box covering the whole window.
        let full = ObjectTransform {
            window,
            rotation: t.rotation,
            warp: t.warp.clone(),
        };
        let all = {
            struct Everything<'a>(&'a Ellipsoid);
            impl Solid for Everything<'_> {
                fn contains(&self, v: [i64; 3]) -> bool {
                    self.0.contains(v)
                }
                fn bounds(&self) -> (Vec3, Vec3) {
                    ([0.0; 3], [63.0, 63.0, 29.0])
                }
                fn line_interval(&self, _: Vec3, _: Vec3) -> Option<(f64, f64)> {
                    Some((f64::NEG_INFINITY, f64::INFINITY))
                }
            }
            full.rasterise(&Everything(&e))
        };
        assert!(!fast.is_empty());
        assert_eq!(fast, all);
    }
}
