//! The one place that builds the paths of a sweep folder (docs/design.md §1):
//!
//! ```text
//! experiments/<sweep>/
//!   store/                 the Parquet store (tracking::Store)
//!   splits/                computed CV splits, one file per scheme and seed
//!   trials/<trial_id>/     one folder per trial: config.json, checkpoints, log, predictions/,
//!                          figures/
//!   overrides.json         the `--set` / `--dataset` overrides the sweep runs with, if any
//!   sweep.json             the spec that fills the folder (name, path, reproduced table)
//!   slurm/                 `seglab sweep slurm`: manifest.json, array.sbatch, report.sbatch,
//!                          jobs.json (submitted job ids), <array>_<task>.out logs
//! ```
//!
//! A trial's identity is read from its `config.json` or the store, never parsed from these
//! folder names.
//!
//! Reports go to `reports/<sweep>/` ([`report_dir`], laid out by [`ReportPaths`]): `index.md`,
//! `index.html`, `tables/` and `figures/`.

use std::path::{Path, PathBuf};

const STORE_DIR: &str = "store";
const TRIALS_DIR: &str = "trials";
const SPLITS_DIR: &str = "splits";
const PREDICTIONS_DIR: &str = "predictions";
const FIGURES_DIR: &str = "figures";
const CONFIG_FILE: &str = "config.json";
const PREPROCESSING_FILE: &str = "preprocessing.json";
const SLURM_DIR: &str = "slurm";
const OVERRIDES_FILE: &str = "overrides.json";
const RECORD_FILE: &str = "sweep.json";
/// The table folder every store has (`tracking::Table::Trials`): what marks a store folder.
const STORE_TRIALS_TABLE: &str = "trials";
const REPORTS_DIR: &str = "reports";
const TABLES_DIR: &str = "tables";
const INDEX_MD: &str = "index.md";
const INDEX_HTML: &str = "index.html";

/// The folder of one sweep (`experiments/<sweep>/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepPaths {
    root: PathBuf,
}

impl SweepPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SweepPaths { root: root.into() }
    }

    /// The sweep and store folders a user names by `dir`: a sweep folder (holding `store/`),
    /// or a store folder itself (holding the `trials` table), whose parent is then taken as
    /// the sweep folder. `None` when `dir` is neither. The one resolver of every command that
    /// reads a sweep's store.
    pub fn of_sweep_or_store(dir: &Path) -> Option<(SweepPaths, PathBuf)> {
        let as_sweep = SweepPaths::new(dir);
        if as_sweep.store().is_dir() {
            let store = as_sweep.store();
            Some((as_sweep, store))
        } else if dir.join(STORE_TRIALS_TABLE).is_dir() {
            let parent = dir.parent().unwrap_or(Path::new("."));
            Some((SweepPaths::new(parent), dir.to_path_buf()))
        } else {
            None
        }
    }

    /// The sweep folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The command-line overrides of the sweep's spec (`experiment::overrides`).
    pub fn overrides(&self) -> PathBuf {
        self.root.join(OVERRIDES_FILE)
    }

    /// The record of the spec that fills the folder (`experiment::spec::SweepRecord`).
    pub fn record(&self) -> PathBuf {
        self.root.join(RECORD_FILE)
    }

    /// The sweep's Parquet store.
    pub fn store(&self) -> PathBuf {
        self.root.join(STORE_DIR)
    }

    /// The computed cross-validation splits of the sweep (one file per scheme and seed,
    /// `dataset::splits::load_or_create_splits`).
    pub fn splits(&self) -> PathBuf {
        self.root.join(SPLITS_DIR)
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

    /// The SLURM files of the sweep (`seglab sweep slurm`): scripts, manifest, job ids, logs.
    pub fn slurm(&self) -> PathBuf {
        self.root.join(SLURM_DIR)
    }

    /// The trials an array task's index points into (row i = `SLURM_ARRAY_TASK_ID` i).
    pub fn slurm_manifest(&self) -> PathBuf {
        self.slurm().join("manifest.json")
    }

    /// The sbatch script of the job array.
    pub fn slurm_array_script(&self) -> PathBuf {
        self.slurm().join("array.sbatch")
    }

    /// The sbatch script of the report job that runs after the array.
    pub fn slurm_report_script(&self) -> PathBuf {
        self.slurm().join("report.sbatch")
    }

    /// The ids of the submitted array and report jobs (read by `sweep status`).
    pub fn slurm_jobs(&self) -> PathBuf {
        self.slurm().join("jobs.json")
    }

    /// The `--output` pattern of the array tasks (`%A` array job id, `%a` task index).
    pub fn slurm_task_log_pattern(&self) -> PathBuf {
        self.slurm().join("%A_%a.out")
    }

    /// The `--output` pattern of the report job (`%j` its job id).
    pub fn slurm_report_log_pattern(&self) -> PathBuf {
        self.slurm().join("report-%j.out")
    }
}

/// The default report folder of a sweep: `reports/<sweep>/` under `root`.
pub fn report_dir(root: &Path, sweep: &str) -> PathBuf {
    root.join(REPORTS_DIR).join(sweep)
}

/// The files of one report folder (`seglab report`), wherever it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportPaths {
    root: PathBuf,
}

impl ReportPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ReportPaths { root: root.into() }
    }

    /// Every table as `.md`, `.tex` and `.csv`.
    pub fn tables(&self) -> PathBuf {
        self.root.join(TABLES_DIR)
    }

    /// Every figure as `.png` and `.svg`.
    pub fn figures(&self) -> PathBuf {
        self.root.join(FIGURES_DIR)
    }

    /// The report as Markdown.
    pub fn index_md(&self) -> PathBuf {
        self.root.join(INDEX_MD)
    }

    /// The report as one HTML page.
    pub fn index_html(&self) -> PathBuf {
        self.root.join(INDEX_HTML)
    }
}

const CHECKPOINT_LATEST: &str = "checkpoint_latest";
const CHECKPOINT_BEST: &str = "checkpoint_best";
const LOG_FILE: &str = "log.txt";
const SYNTH_MASKS_DIR: &str = "synth_masks";
const PREDICTION_EXT: &str = "tif";

impl SweepPaths {
    /// The paths inside one trial's folder.
    pub fn trial_paths(&self, trial_id: &str) -> TrialPaths {
        TrialPaths::new(self.trial(trial_id))
    }
}

/// The files of one trial folder (docs/design.md §1), wherever the folder lives: a
/// sweep's `trials/<id>/` or the `--out` folder of `seglab train`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrialPaths {
    dir: PathBuf,
}

impl TrialPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        TrialPaths { dir: dir.into() }
    }

    /// The trial folder itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The resolved trial config, written before the first step.
    pub fn config(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }

    /// The checkpoint written every `train.checkpoint_every` epochs and on interruption.
    pub fn checkpoint_latest(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_LATEST)
    }

    /// The checkpoint of the best epoch by the selection criterion.
    pub fn checkpoint_best(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_BEST)
    }

    /// The preprocessing the trial used, with the floors `percentiles = "auto"` chose.
    pub fn preprocessing(&self) -> PathBuf {
        self.dir.join(PREPROCESSING_FILE)
    }

    /// The human-readable log of the trial.
    pub fn log(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// Synthetic masks generated for a CycleGAN trial's training volumes.
    pub fn synth_masks(&self) -> PathBuf {
        self.dir.join(SYNTH_MASKS_DIR)
    }

    /// Predicted masks of the test volumes.
    pub fn predictions(&self) -> PathBuf {
        self.dir.join(PREDICTIONS_DIR)
    }

    /// The predicted mask of test volume `volume`.
    pub fn prediction(&self, volume: &str) -> PathBuf {
        self.predictions()
            .join(format!("{volume}.{PREDICTION_EXT}"))
    }

    /// A file of the trial folder that no other method names (e.g. `epochs.csv` of
    /// `seglab train`).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
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
        assert_eq!(
            p.slurm_manifest(),
            Path::new("experiments/cv/slurm/manifest.json")
        );
        assert_eq!(
            p.slurm_task_log_pattern(),
            Path::new("experiments/cv/slurm/%A_%a.out")
        );
    }
}
