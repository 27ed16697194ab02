//! Parity of `seglab::stats` with scipy.stats 1.17 on the fixed data of
//! `tests/golden/stats/reference.json` (written by `tests/python/stats_reference.py`):
//! `wilcoxon` (exact, exact permutation with ties and zeros, normal approximation),
//! `permutation_test(permutation_type="samples")`, `bootstrap(method="percentile")` with one
//! sample per fold (scipy resamples each independently: the stratified scheme) and
//! `ttest_rel`. Exact quantities agree to 1e-9; Monte-Carlo ones within five Monte-Carlo
//! standard errors (scipy's reference uses 10^6 resamples, seglab 10^5 for the permutation
//! test and 10^4 for the bootstrap). The corrected resampled t-test is checked against a
//! value computed by hand.

use std::path::Path;

use serde_json::Value;

use seglab::stats::bootstrap::stratified_mean_ci;
use seglab::stats::{
    WilcoxonMethod, corrected_resampled_t_test, paired_t_test, permutation_test_mean, wilcoxon,
};

const EXACT_TOL: f64 = 1e-9;
const REFERENCE_RESAMPLES: f64 = 1e6;

fn reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/stats/reference.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn num(case: &Value, key: &str) -> f64 {
    case[key].as_f64().unwrap()
}

#[test]
fn wilcoxon_matches_scipy_on_every_method() {
    let doc = reference();
    let mut methods = Vec::new();
    for case in doc["wilcoxon"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let r = wilcoxon(&floats(&case["d"]));
        assert!(
            (r.statistic - num(case, "statistic")).abs() < EXACT_TOL,
            "{name}: statistic {} vs scipy {}",
            r.statistic,
            num(case, "statistic")
        );
        assert!(
            (r.p_value - num(case, "p")).abs() < EXACT_TOL,
            "{name}: p {} vs scipy {} ({:?})",
            r.p_value,
            num(case, "p"),
            r.method
        );
        methods.push(r.method);
    }
    // The fixed data reach all three of scipy's methods.
    for m in [
        WilcoxonMethod::Exact,
        WilcoxonMethod::Permutation,
        WilcoxonMethod::Normal,
    ] {
        assert!(methods.contains(&m), "no case uses {m:?}");
    }
}

#[test]
fn permutation_test_matches_scipy_exactly_or_within_monte_carlo_error() {
    let doc = reference();
    let budget = 100_000;
    for case in doc["permutation"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let expected = num(case, "p");
        let r = permutation_test_mean(&floats(&case["d"]), budget, 11);
        assert_eq!(r.exact, case["exact"].as_bool().unwrap(), "{name}");
        let tol = if r.exact {
            EXACT_TOL
        } else {
            // Two-sided p = 2·(one-sided p); each estimate's standard error.
            let one = expected / 2.0;
            let var = |b: f64| 4.0 * one * (1.0 - one) / b;
            5.0 * (var(budget as f64) + var(REFERENCE_RESAMPLES)).sqrt()
        };
        assert!(
            (r.p_value - expected).abs() < tol,
            "{name}: p {} vs scipy {expected} (tolerance {tol})",
            r.p_value
        );
    }
}

#[test]
fn stratified_bootstrap_matches_scipy_within_monte_carlo_error() {
    let doc = reference();
    let resamples = 10_000;
    for case in doc["bootstrap"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let strata: Vec<Vec<f64>> = case["strata"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        let ci = stratified_mean_ci(&strata, 0.95, resamples, 5);
        let se = num(case, "standard_error");
        // Standard error of a 2.5 % quantile of B draws, for a near-normal bootstrap
        // distribution of spread se: √(α(1−α)/B) / φ(z_α) · se.
        let quantile_se = |b: f64| (0.025f64 * 0.975 / b).sqrt() / 0.05844 * se;
        let tol = 5.0
            * (quantile_se(resamples as f64).powi(2) + quantile_se(REFERENCE_RESAMPLES).powi(2))
                .sqrt();
        for (mine, key) in [(ci.low, "low"), (ci.high, "high")] {
            let expected = num(case, key);
            assert!(
                (mine - expected).abs() < tol,
                "{name}: {key} {mine} vs scipy {expected} (tolerance {tol})"
            );
        }
        assert!(
            (ci.standard_error - se).abs() < 0.05 * se,
            "{name}: standard error"
        );
    }
}

#[test]
fn paired_t_test_matches_scipy_ttest_rel() {
    let doc = reference();
    for case in doc["ttest_rel"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let d: Vec<f64> = floats(&case["a"])
            .iter()
            .zip(floats(&case["b"]))
            .map(|(a, b)| a - b)
            .collect();
        let r = paired_t_test(&d);
        assert!(
            (r.statistic - num(case, "statistic")).abs() < EXACT_TOL,
            "{name}"
        );
        assert!((r.p_value - num(case, "p")).abs() < EXACT_TOL, "{name}");
    }
}

#[test]
fn corrected_resampled_t_test_matches_a_hand_computed_value() {
    // Three fold differences 0.02, 0.05, −0.01 with 4 training and 2 test volumes per fold:
    // mean 0.02, s² = (0² + 0.03² + 0.03²)/2 = 0.0009, variance factor 1/3 + 2/4 = 5/6, so
    // t = 0.02 / √(0.00075) = √(8/15). With df = 2 the two-sided p is 1 − t/√(2 + t²) =
    // 1 − √(8/38) = 1 − 2/√19.
    let r = corrected_resampled_t_test(&[0.02, 0.05, -0.01], 4, 2);
    assert!((r.statistic - (8.0f64 / 15.0).sqrt()).abs() < 1e-12);
    assert_eq!(r.df, 2.0);
    assert!((r.p_value - (1.0 - 2.0 / 19f64.sqrt())).abs() < 1e-12);
    // The uncorrected test on the same numbers is more confident (factor 1/3 only).
    assert!(paired_t_test(&[0.02, 0.05, -0.01]).p_value < r.p_value);
}
