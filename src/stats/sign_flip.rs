//! Paired permutation tests by sign flipping: under the null hypothesis of no difference each
//! paired difference is as likely to have either sign, so the null distribution of a
//! statistic is its value over the 2ⁿ sign patterns (Fisher 1935, The Design of Experiments
//! section 21; Good 2005, Permutation, Parametric and Bootstrap Tests, section 3.1).
//!
//! As `scipy.stats.permutation_test(..., permutation_type="samples")` (scipy 1.17,
//! `scipy/stats/_resampling.py`): all patterns are enumerated when 2ⁿ ≤ the resample budget,
//! otherwise that many random patterns are drawn and the observed one is counted in, p =
//! (k + 1)/(B + 1) (Phipson & Smyth 2010, SAGMB 9(1)). The two-sided p is twice the smaller
//! one-sided p, clipped to 1; values within 100 machine epsilons (relative) of the observed
//! count as equal.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

/// How the null distribution is obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignFlipNull {
    /// All 2ⁿ sign patterns.
    Exact,
    /// `resamples` random patterns from a ChaCha8 stream seeded with `seed`.
    MonteCarlo { resamples: usize, seed: u64 },
}

impl SignFlipNull {
    /// Exact when 2ⁿ ≤ `resamples`, else Monte Carlo with `resamples` draws.
    pub fn for_budget(n: usize, resamples: usize, seed: u64) -> SignFlipNull {
        if n < usize::BITS as usize - 1 && (1usize << n) <= resamples {
            SignFlipNull::Exact
        } else {
            SignFlipNull::MonteCarlo { resamples, seed }
        }
    }
}

/// The two-sided sign-flip p-value of `observed`; `statistic` gets, per pattern, whether each
/// of the `n` differences keeps its sign.
pub fn sign_flip_p(
    n: usize,
    observed: f64,
    null: SignFlipNull,
    mut statistic: impl FnMut(&[bool]) -> f64,
) -> f64 {
    let gamma = (observed * f64::EPSILON * 100.0).abs();
    let mut keep = vec![true; n];
    let (mut less, mut greater, mut draws) = (0usize, 0usize, 0usize);
    let mut count = |value: f64| {
        less += usize::from(value <= observed + gamma);
        greater += usize::from(value >= observed - gamma);
    };
    let adjustment = match null {
        SignFlipNull::Exact => {
            for pattern in 0..(1u64 << n) {
                for (i, k) in keep.iter_mut().enumerate() {
                    *k = pattern >> i & 1 == 0;
                }
                count(statistic(&keep));
                draws += 1;
            }
            0
        }
        SignFlipNull::MonteCarlo { resamples, seed } => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for _ in 0..resamples {
                for k in keep.iter_mut() {
                    *k = rng.random::<bool>();
                }
                count(statistic(&keep));
                draws += 1;
            }
            1
        }
    };
    let p = |k: usize| (k + adjustment) as f64 / (draws + adjustment) as f64;
    (2.0 * p(less).min(p(greater))).min(1.0)
}

/// The result of [`permutation_test_mean`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PermutationTest {
    /// Two-sided p-value of the mean difference.
    pub p_value: f64,
    /// True when all 2ⁿ patterns were enumerated.
    pub exact: bool,
    /// Patterns evaluated (2ⁿ when exact).
    pub resamples: usize,
}

/// The paired permutation test of mean(d) = 0, two-sided (module doc); NaN p for no data.
pub fn permutation_test_mean(d: &[f64], resamples: usize, seed: u64) -> PermutationTest {
    let n = d.len();
    let null = SignFlipNull::for_budget(n, resamples, seed);
    let exact = null == SignFlipNull::Exact;
    let draws = if exact { 1usize << n } else { resamples };
    if n == 0 || d.iter().any(|x| !x.is_finite()) {
        return PermutationTest {
            p_value: f64::NAN,
            exact,
            resamples: draws,
        };
    }
    let mean = |keep: &[bool]| {
        let sum: f64 = d
            .iter()
            .zip(keep)
            .map(|(x, k)| if *k { *x } else { -*x })
            .sum();
        sum / n as f64
    };
    let observed = mean(&vec![true; n]);
    PermutationTest {
        p_value: sign_flip_p(n, observed, null, mean),
        exact,
        resamples: draws,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_enumeration_counts_the_extreme_patterns() {
        // Three positive differences: only "all kept" reaches the observed mean and only
        // "all flipped" its negative, so p = 2 · 1/8.
        let r = permutation_test_mean(&[1.0, 2.0, 3.0], 10_000, 0);
        assert!(r.exact);
        assert_eq!(r.resamples, 8);
        assert!((r.p_value - 0.25).abs() < 1e-15);
    }

    #[test]
    fn monte_carlo_is_seeded_and_adds_the_observed() {
        let d: Vec<f64> = (0..20).map(|i| (i as f64 - 5.0) / 10.0).collect();
        let a = permutation_test_mean(&d, 999, 7);
        let b = permutation_test_mean(&d, 999, 7);
        assert!(!a.exact);
        assert_eq!(a, b);
        // p = (k + 1)/(B + 1) is a multiple of 1/1000 (two-sided: of 2/1000).
        let k = a.p_value * 1000.0 / 2.0;
        assert!((k - k.round()).abs() < 1e-9, "{}", a.p_value);
    }
}
