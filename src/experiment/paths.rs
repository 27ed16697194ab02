//! The one place that builds the paths of a sweep folder (style-anchors.md, seglab rule 5):
//!
//! ```text
//! experiments/<sweep>/
//!   store/                 the Parquet store (tracking::Store)
//!   trials/<trial_id>/     one folder per trial: config.json, checkpoints, log, predictions/,
//!                          figures/
//! ```
//!
//! A trial's identity is read from its `config.json` or the store, never parsed from these
//! folder names.

use std::path::{Path, PathBuf};

const STORE_DIR: &str = "store";
const TRIALS_DIR: &str = "trials";
const PREDICTIONS_DIR: &str = "predictions";
const FIGURES_DIR: &str = "figures";
const CONFIG_FILE: &str = "config.json";

/// The folder of one sweep (`experiments/<sweep>/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepPaths {
    root: PathBuf,
}

impl SweepPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SweepPaths { root: root.into() }
    }

    /// The sweep folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The sweep's Parquet store.
    pub fn store(&self) -> PathBuf {
        self.root.join(STORE_DIR)
    }

    /// The folder of one trial.
    pub fn trial(&self, trial_id: &str) -> PathBuf {
        self.root.join(TRIALS_DIR).join(trial_id)
    }

    /// The config a trial was run with, written before its first step.
    pub fn trial_config(&self, trial_id: &str) -> PathBuf {
        self.trial(trial_id).join(CONFIG_FILE)
    }

    /// Predicted masks of a trial's test volumes.
    pub fn trial_predictions(&self, trial_id: &str) -> PathBuf {
        self.trial(trial_id).join(PREDICTIONS_DIR)
    }

    /// Figures made for a trial (learning curves, slices).
    pub fn trial_figures(&self, trial_id: &str) -> PathBuf {
        self.trial(trial_id).join(FIGURES_DIR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_a_sweep_folder() {
        let p = SweepPaths::new("experiments/cv");
        assert_eq!(p.store(), Path::new("experiments/cv/store"));
        assert_eq!(p.trial("ab12"), Path::new("experiments/cv/trials/ab12"));
        assert_eq!(
            p.trial_predictions("ab12"),
            Path::new("experiments/cv/trials/ab12/predictions")
        );
        assert_eq!(
            p.trial_config("ab12"),
            Path::new("experiments/cv/trials/ab12/config.json")
        );
    }
}
