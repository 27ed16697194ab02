//! One paired comparison of a over b: the differences a − b of the cases both have, grouped
//! by fold (the bootstrap's strata), give the mean difference, its bootstrap 95 % interval,
//! the Wilcoxon signed-rank and sign-flip permutation p-values (case level), and, with two or
//! more folds, the corrected resampled t-test of the fold means (fold level).
//!
//! Holm's adjustment needs the whole family and is applied by the caller ([`super::holm`]).

use super::bootstrap::{BootstrapCi, DEFAULT_RESAMPLES, stratified_mean_ci};
use super::sign_flip::{PermutationTest, permutation_test_mean};
use super::ttest::{TTest, corrected_resampled_t_test};
use super::wilcoxon::{Wilcoxon, wilcoxon};

/// Resampling settings of a comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairedSettings {
    /// Bootstrap resamples (≥ 10,000 in reports).
    pub bootstrap_resamples: usize,
    /// Permutation budget: exact enumeration when 2ⁿ ≤ this, else this many random patterns.
    pub permutation_resamples: usize,
    /// Seed of the bootstrap and Monte-Carlo permutation streams.
    pub seed: u64,
    /// Confidence level of the interval.
    pub level: f64,
}

impl Default for PairedSettings {
    fn default() -> Self {
        PairedSettings {
            bootstrap_resamples: DEFAULT_RESAMPLES,
            permutation_resamples: 100_000,
            seed: 0,
            level: 0.95,
        }
    }
}

/// Training and test set sizes (volumes) of a fold, for the corrected t-test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoldSizes {
    pub n_train: usize,
    pub n_test: usize,
}

/// Everything computed for one pair (module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct PairedComparison {
    /// Number of paired cases (finite differences).
    pub n: usize,
    /// Folds the cases come from.
    pub folds: usize,
    pub mean_diff: f64,
    pub ci: BootstrapCi,
    pub wilcoxon: Wilcoxon,
    pub permutation: PermutationTest,
    /// Corrected resampled t-test over the fold means (None below two folds or without
    /// fold sizes).
    pub fold_t_test: Option<TTest>,
}

/// Compares the differences `by_fold[f]` (a − b per case of fold f, all finite).
pub fn compare_paired(
    by_fold: &[Vec<f64>],
    sizes: Option<FoldSizes>,
    settings: &PairedSettings,
) -> PairedComparison {
    let all: Vec<f64> = by_fold.iter().flatten().copied().collect();
    let n = all.len();
    let folds: Vec<&Vec<f64>> = by_fold.iter().filter(|f| !f.is_empty()).collect();
    let mean_diff = if n == 0 {
        f64::NAN
    } else {
        all.iter().sum::<f64>() / n as f64
    };
    let fold_means: Vec<f64> = folds
        .iter()
        .map(|f| f.iter().sum::<f64>() / f.len() as f64)
        .collect();
    let fold_t_test = match sizes {
        Some(s) if fold_means.len() >= 2 => {
            Some(corrected_resampled_t_test(&fold_means, s.n_train, s.n_test))
        }
        _ => None,
    };
    PairedComparison {
        n,
        folds: folds.len(),
        mean_diff,
        ci: stratified_mean_ci(
            by_fold,
            settings.level,
            settings.bootstrap_resamples,
            settings.seed,
        ),
        wilcoxon: wilcoxon(&all),
        permutation: permutation_test_mean(&all, settings.permutation_resamples, settings.seed),
        fold_t_test,
    }
}
