//! Paired t-tests: the ordinary paired t-test (`scipy.stats.ttest_rel`, two-sided) and the
//! corrected resampled t-test for cross-validated fold-level differences (Nadeau & Bengio
//! 2003, Machine Learning 52, 239–281, section 5 "corrected resampled t-test"; Bouckaert & Frank
//! 2004, PAKDD, eq. 2).
//!
//! For k fold-level differences with n_train training and n_test test volumes per fold the
//! corrected statistic is t = mean(d) / √((1/k + n_test/n_train)·s²), s² the sample variance
//! (ddof 1), df = k − 1. The uncorrected test uses 1/k alone and is anti-conservative for
//! cross-validation, whose training sets overlap (Bengio & Grandvalet 2004, JMLR 5).

use super::bootstrap::sample_std;
use super::special::t_two_sided_p;

/// A t statistic with its degrees of freedom and two-sided p-value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TTest {
    pub statistic: f64,
    pub df: f64,
    pub p_value: f64,
}

/// The paired t-test of mean(d) = 0 (as `scipy.stats.ttest_rel(a, b)` with d = a − b).
pub fn paired_t_test(d: &[f64]) -> TTest {
    variance_scaled_t(d, 1.0 / d.len() as f64)
}

/// The corrected resampled t-test of k fold-level differences `d` (module doc).
pub fn corrected_resampled_t_test(d: &[f64], n_train: usize, n_test: usize) -> TTest {
    let ratio = if n_train == 0 {
        f64::NAN
    } else {
        n_test as f64 / n_train as f64
    };
    variance_scaled_t(d, 1.0 / d.len() as f64 + ratio)
}

/// t = mean(d) / √(factor · s²), df = n − 1.
fn variance_scaled_t(d: &[f64], factor: f64) -> TTest {
    let n = d.len();
    let df = n as f64 - 1.0;
    if n < 2 || d.iter().any(|x| !x.is_finite()) {
        return TTest {
            statistic: f64::NAN,
            df,
            p_value: f64::NAN,
        };
    }
    let mean = d.iter().sum::<f64>() / n as f64;
    let s = sample_std(d);
    let statistic = mean / (factor * s * s).sqrt();
    TTest {
        statistic,
        df,
        p_value: t_two_sided_p(statistic, df),
    }
}
