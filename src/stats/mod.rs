//! Statistics for comparing segmentation models on the same test cases, one concept per
//! module: [`wilcoxon`] (signed-rank test), [`sign_flip`] (paired permutation test),
//! [`bootstrap`] (stratified percentile confidence interval), [`holm`] (multiple-comparison
//! adjustment), [`ttest`] (paired and corrected resampled t-tests), [`spearman`] (rank
//! correlation), [`special`] (the normal and t distributions), and [`paired`], which runs them all on one set of paired differences.
//!
//! Every function follows the scipy 1.17 convention it names, and `tests/stats_parity.rs`
//! holds fixed data with scipy's values (`scripts/stats_reference.py` regenerates them).
//! `docs/statistics.md` states what is aggregated over what and what each number means.

pub mod bootstrap;
pub mod holm;
pub mod paired;
pub mod sign_flip;
pub mod spearman;
pub mod special;
pub mod ttest;
pub mod wilcoxon;

pub use bootstrap::{BootstrapCi, stratified_mean_ci};
pub use holm::holm_adjust;
pub use paired::{PairedComparison, PairedSettings, compare_paired};
pub use sign_flip::{PermutationTest, permutation_test_mean};
pub use ttest::{TTest, corrected_resampled_t_test, paired_t_test};
pub use wilcoxon::{Wilcoxon, WilcoxonMethod, wilcoxon};
