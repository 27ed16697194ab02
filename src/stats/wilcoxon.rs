//! The Wilcoxon signed-rank test of paired differences, two-sided, as
//! `scipy.stats.wilcoxon(d)` computes it with its defaults (`zero_method="wilcox"`,
//! `correction=False`, `method="auto"`; scipy 1.17, `scipy/stats/_wilcoxon.py`):
//!
//! - zero differences are dropped before ranking; ties get average ranks;
//! - n ≤ 50 differences with no zeros and no ties: the exact null distribution of W⁺,
//!   p = min(1, 2·min(P(W⁺ ≤ w), P(W⁺ ≥ w)));
//! - n ≤ 13 with zeros or ties: the exact sign-flip permutation distribution of W⁺
//!   ([`super::sign_flip`]);
//! - otherwise the normal approximation with the tie-corrected variance, no continuity
//!   correction.
//!
//! n counts all differences, zeros included, as scipy's rule does (Wilcoxon 1945, Biometrics
//! Bulletin 1(6); Pratt 1959 for the zero and tie conventions).

use super::sign_flip::{SignFlipNull, sign_flip_p};
use super::special::normal_sf;

/// Up to this many differences without ties or zeros, the exact distribution is used.
const EXACT_MAX_N: usize = 50;
/// Up to this many differences with ties or zeros, all 2ⁿ sign flips are enumerated.
const PERMUTATION_MAX_N: usize = 13;

/// How the p-value was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WilcoxonMethod {
    Exact,
    Permutation,
    Normal,
}

impl WilcoxonMethod {
    pub fn name(self) -> &'static str {
        match self {
            WilcoxonMethod::Exact => "exact",
            WilcoxonMethod::Permutation => "exact permutation (ties or zeros)",
            WilcoxonMethod::Normal => "normal approximation",
        }
    }
}

/// The result of [`wilcoxon`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Wilcoxon {
    /// min(W⁺, W⁻), scipy's two-sided statistic.
    pub statistic: f64,
    /// Two-sided p-value (NaN when every difference is zero or there are none).
    pub p_value: f64,
    pub method: WilcoxonMethod,
    /// Differences left after dropping zeros.
    pub n_nonzero: usize,
}

/// Average ranks (1-based) of `values` and the sizes of their tie groups.
pub fn average_ranks(values: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut ties = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Ranks start+1 ..= end share their mean.
        let rank = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        ties.push(end - start);
        start = end;
    }
    (ranks, ties)
}

/// W⁺: the sum of the ranks of |d| over the positive differences, zeros excluded.
fn positive_rank_sum(d: &[f64], ranks: &[f64]) -> f64 {
    d.iter()
        .zip(ranks)
        .filter(|(x, _)| **x > 0.0)
        .map(|(_, r)| r)
        .sum()
}

/// The two-sided Wilcoxon signed-rank test of the differences `d` (module doc).
pub fn wilcoxon(d: &[f64]) -> Wilcoxon {
    let nonzero: Vec<f64> = d.iter().copied().filter(|x| *x != 0.0).collect();
    let n = nonzero.len();
    let abs: Vec<f64> = nonzero.iter().map(|x| x.abs()).collect();
    let (ranks, ties) = average_ranks(&abs);
    let w_plus = positive_rank_sum(&nonzero, &ranks);
    let total = (n * (n + 1)) as f64 / 2.0;
    let statistic = w_plus.min(total - w_plus);
    let has_ties = ties.iter().any(|&t| t > 1);
    let has_zeros = n < d.len();
    let (p_value, method) = if d.iter().any(|x| !x.is_finite()) || n == 0 {
        (f64::NAN, WilcoxonMethod::Normal)
    } else if d.len() <= EXACT_MAX_N && !has_ties && !has_zeros {
        (exact_p(n, w_plus), WilcoxonMethod::Exact)
    } else if d.len() <= PERMUTATION_MAX_N {
        (
            permutation_p(&nonzero, &ranks, w_plus),
            WilcoxonMethod::Permutation,
        )
    } else {
        (normal_p(n, w_plus, &ties), WilcoxonMethod::Normal)
    };
    Wilcoxon {
        statistic,
        p_value,
        method,
        n_nonzero: n,
    }
}

/// Number of subsets of {1, …, n} with each rank sum 0 ..= n(n+1)/2: the exact null
/// distribution of W⁺ times 2ⁿ (exact in f64 for n ≤ 50 since every count is below 2⁵³).
fn rank_sum_counts(n: usize) -> Vec<f64> {
    let max = n * (n + 1) / 2;
    let mut counts = vec![0.0; max + 1];
    counts[0] = 1.0;
    for k in 1..=n {
        for s in (k..=max).rev() {
            counts[s] += counts[s - k];
        }
    }
    counts
}

fn exact_p(n: usize, w_plus: f64) -> f64 {
    let counts = rank_sum_counts(n);
    let total = 2f64.powi(n as i32);
    let w = w_plus.round() as usize;
    let cdf: f64 = counts[..=w].iter().sum::<f64>() / total;
    let sf: f64 = counts[w..].iter().sum::<f64>() / total;
    (2.0 * cdf.min(sf)).min(1.0)
}

/// Every sign pattern of the non-zero differences is equally likely under the null; the
/// zeros of scipy's enumeration flip onto themselves, which scales both counts alike.
fn permutation_p(nonzero: &[f64], ranks: &[f64], w_plus: f64) -> f64 {
    sign_flip_p(ranks.len(), w_plus, SignFlipNull::Exact, |keep| {
        ranks
            .iter()
            .zip(nonzero)
            .zip(keep)
            .filter(|((_, x), keep)| (**x > 0.0) == **keep)
            .map(|((r, _), _)| r)
            .sum()
    })
}

fn normal_p(n: usize, w_plus: f64, ties: &[usize]) -> f64 {
    let nf = n as f64;
    let mean = nf * (nf + 1.0) / 4.0;
    let tie_term: f64 = ties.iter().map(|&t| (t * t * t - t) as f64).sum();
    let se = ((nf * (nf + 1.0) * (2.0 * nf + 1.0) - tie_term / 2.0) / 24.0).sqrt();
    let z = (w_plus - mean) / se;
    (2.0 * normal_sf(z.abs())).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_ranks_share_ties() {
        let (ranks, ties) = average_ranks(&[3.0, 1.0, 3.0, 2.0]);
        assert_eq!(ranks, vec![3.5, 1.0, 3.5, 2.0]);
        assert_eq!(ties, vec![1, 1, 2]);
    }

    #[test]
    fn exact_distribution_sums_to_two_to_the_n() {
        for n in [1, 5, 20] {
            let total: f64 = rank_sum_counts(n).iter().sum();
            assert_eq!(total, 2f64.powi(n as i32));
        }
    }

    #[test]
    fn all_positive_differences_give_the_smallest_exact_p() {
        // W⁺ = n(n+1)/2 is reached by one sign pattern of 2ⁿ: p = 2 / 2ⁿ.
        let r = wilcoxon(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]);
        assert_eq!(r.method, WilcoxonMethod::Exact);
        assert_eq!(r.statistic, 0.0);
        assert!((r.p_value - 2.0 / 64.0).abs() < 1e-15);
    }

    #[test]
    fn all_zero_differences_have_no_p_value() {
        assert!(wilcoxon(&[0.0, 0.0]).p_value.is_nan());
        assert!(wilcoxon(&[]).p_value.is_nan());
    }
}
