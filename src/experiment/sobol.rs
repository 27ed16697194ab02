//! The Sobol low-discrepancy sequence in up to [`MAX_DIMENSIONS`] dimensions, 32 bits per
//! coordinate, for quasi-random search plans.
//!
//! Dimension 1 is the van der Corput sequence in base 2; dimensions 2 and up use the primitive
//! polynomials and initial direction numbers of S. Joe and F. Y. Kuo, "Constructing Sobol
//! sequences with better two-dimensional projections", SIAM J. Sci. Comput. 30 (2008)
//! 2635–2654 (their published table `new-joe-kuo-6.21201`, first rows). Point `i` is the XOR
//! of the direction numbers selected by the bits of the Gray code of `i`, so any point is
//! computed directly from its index.
//!
//! Every 1-D projection of the first 2^k points puts exactly one point in each interval
//! [j / 2^k, (j + 1) / 2^k); XOR-ing a fixed mask into a coordinate (a digital shift) keeps
//! that property.

/// Dimensions with direction numbers here.
pub const MAX_DIMENSIONS: usize = 21;

/// Bits per coordinate.
const BITS: usize = 32;

/// Per dimension from the second: (degree s, polynomial coefficients a, initial m_1..m_s).
const JOE_KUO: [(u32, u32, &[u32]); MAX_DIMENSIONS - 1] = [
    (1, 0, &[1]),
    (2, 1, &[1, 3]),
    (3, 1, &[1, 3, 1]),
    (3, 2, &[1, 1, 1]),
    (4, 1, &[1, 1, 3, 3]),
    (4, 4, &[1, 3, 5, 13]),
    (5, 2, &[1, 1, 5, 5, 17]),
    (5, 4, &[1, 1, 5, 5, 5]),
    (5, 7, &[1, 1, 7, 11, 19]),
    (5, 11, &[1, 1, 5, 1, 1]),
    (5, 13, &[1, 1, 1, 3, 11]),
    (5, 14, &[1, 3, 5, 5, 31]),
    (6, 1, &[1, 3, 3, 9, 7, 49]),
    (6, 13, &[1, 1, 1, 15, 21, 21]),
    (6, 16, &[1, 3, 1, 13, 27, 49]),
    (6, 19, &[1, 1, 1, 15, 7, 5]),
    (6, 22, &[1, 3, 1, 15, 13, 25]),
    (6, 25, &[1, 1, 5, 5, 19, 61]),
    (7, 1, &[1, 3, 7, 11, 23, 15, 103]),
    (7, 4, &[1, 3, 7, 13, 13, 15, 69]),
];

/// The direction numbers of a Sobol sequence of some dimensions.
#[derive(Clone, Debug)]
pub struct Sobol {
    /// Per dimension, `BITS` direction numbers (v_1 .. v_32 scaled by 2^32).
    directions: Vec<[u32; BITS]>,
}

impl Sobol {
    /// The sequence in `dims` dimensions (at most [`MAX_DIMENSIONS`]).
    pub fn new(dims: usize) -> Sobol {
        assert!(
            dims <= MAX_DIMENSIONS,
            "Sobol: at most {MAX_DIMENSIONS} dimensions"
        );
        let mut directions = Vec::with_capacity(dims);
        if dims > 0 {
            directions.push(std::array::from_fn(|k| 1u32 << (BITS - 1 - k)));
        }
        for &(s, a, m) in JOE_KUO.iter().take(dims.saturating_sub(1)) {
            directions.push(directions_of(s as usize, a, m));
        }
        Sobol { directions }
    }

    /// Point `index` (0-based) as coordinates in [0, 1).
    pub fn point(&self, index: u64) -> Vec<f64> {
        self.point_shifted(index, &vec![0; self.directions.len()])
    }

    /// Point `index` with coordinate d XOR-ed by `masks[d]` (a digital shift).
    pub fn point_shifted(&self, index: u64, masks: &[u32]) -> Vec<f64> {
        let gray = index ^ (index >> 1);
        self.directions
            .iter()
            .zip(masks)
            .map(|(v, &mask)| {
                let x = (0..BITS)
                    .filter(|&k| gray >> k & 1 == 1)
                    .fold(mask, |x, k| x ^ v[k]);
                f64::from(x) / 4_294_967_296.0
            })
            .collect()
    }
}

/// The 32 direction numbers of the dimension with primitive polynomial (degree `s`,
/// coefficients `a`) and initial numbers `m` (Joe and Kuo's recurrence).
fn directions_of(s: usize, a: u32, m: &[u32]) -> [u32; BITS] {
    let mut v = [0u32; BITS];
    for k in 0..s {
        v[k] = m[k] << (BITS - 1 - k);
    }
    for k in s..BITS {
        let mut x = v[k - s] ^ (v[k - s] >> s);
        for j in 1..s {
            if (a >> (s - 1 - j)) & 1 == 1 {
                x ^= v[k - j];
            }
        }
        v[k] = x;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_points_are_the_published_ones() {
        // The unscrambled Sobol points 0..5 in three dimensions, as Joe and Kuo's generator
        // (and SciPy's `qmc.Sobol(scramble=False)`, which uses their numbers) gives them.
        let expected = [
            [0.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.75, 0.25, 0.25],
            [0.25, 0.75, 0.75],
            [0.375, 0.375, 0.625],
            [0.875, 0.875, 0.125],
        ];
        let s = Sobol::new(3);
        for (i, e) in expected.iter().enumerate() {
            assert_eq!(s.point(i as u64), e.to_vec(), "point {i}");
        }
    }

    #[test]
    fn every_dimension_puts_one_point_per_dyadic_interval() {
        let masks: Vec<u32> = (0..MAX_DIMENSIONS as u32)
            .map(|d| d.wrapping_mul(0x9E37_79B9))
            .collect();
        let s = Sobol::new(MAX_DIMENSIONS);
        for k in [4u32, 7] {
            let n = 1u64 << k;
            let points: Vec<Vec<f64>> = (0..n).map(|i| s.point_shifted(i, &masks)).collect();
            for d in 0..MAX_DIMENSIONS {
                let mut cells: Vec<u64> = points
                    .iter()
                    .map(|p| (p[d] * n as f64).floor() as u64)
                    .collect();
                cells.sort_unstable();
                cells.dedup();
                assert_eq!(cells.len() as u64, n, "dimension {d}, 2^{k} points");
            }
        }
    }

    #[test]
    fn the_first_two_dimensions_form_a_two_dimensional_net() {
        // 64 points, 8 × 8 cells: one point each (the (0, m, 2)-net property of Sobol's
        // first two coordinates).
        let s = Sobol::new(2);
        let mut cells: Vec<(u64, u64)> = (0..64)
            .map(|i| {
                let p = s.point(i);
                ((p[0] * 8.0) as u64, (p[1] * 8.0) as u64)
            })
            .collect();
        cells.sort_unstable();
        cells.dedup();
        assert_eq!(cells.len(), 64);
    }

    #[test]
    fn direction_numbers_are_odd_multiples_below_their_power_of_two() {
        // m_k must be odd and below 2^k, which makes v_k's top set bit bit k.
        for (d, &(s, _, m)) in JOE_KUO.iter().enumerate() {
            assert_eq!(m.len(), s as usize, "dimension {}", d + 2);
            for (k, &mk) in m.iter().enumerate() {
                assert!(
                    mk % 2 == 1 && mk < 1 << (k + 1),
                    "dimension {} m_{}",
                    d + 2,
                    k + 1
                );
            }
        }
    }
}
