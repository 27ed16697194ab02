//! Experiments: sweep specs ([`spec::SweepSpec`], the `experiments/*.toml` files), their
//! expansion into trials with content-hash ids ([`trial::Trial`]), the provenance recorded with
//! every trial ([`provenance::Provenance`]) and the local runner behind `seglab sweep`
//! ([`runner`]: one worker process per trial, resumable, the store as the record), the
//! points of a `[search]` ([`search`], quasi-random ones from [`sobol`]), pruning on epoch
//! rungs ([`prune`]), the progress of a running sweep ([`progress`]) and the
//! SLURM backend ([`slurm`]: a job array whose tasks take the runner's trial code path).
//! [`paths::SweepPaths`] is the one builder of sweep and trial paths.
//!
//! This module does not train or evaluate (that is `train::run_trial`), and it writes the store
//! and the MLflow mirror only through `tracking`.

use std::path::{Path, PathBuf};

pub mod filter;
pub mod overrides;
pub mod paths;
pub mod preflight;
pub mod progress;
pub mod provenance;
pub mod prune;
pub mod runner;
pub mod search;
pub mod slurm;
pub mod sobol;
pub mod spec;
pub mod synthetic_check;
pub mod trial;

/// Errors of sweep specs, trial expansion and the runner. Each names the file (or trial) and
/// what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A problem in a sweep spec; the message names the key and what was expected.
    #[error("{}: {message}", path.display())]
    Spec { path: PathBuf, message: String },
    /// Another local runner holds the sweep.
    #[error(
        "{}: the sweep is already being run by process {owner} (pid, host); wait for it or \
         stop it first",
        path.display()
    )]
    Busy { path: PathBuf, owner: String },
    /// `sweep task --trial ID` names no trial of the spec.
    #[error("{}: no trial {trial_id} in this sweep (see `seglab sweep plan`)", spec.display())]
    UnknownTrial { spec: PathBuf, trial_id: String },
    /// A problem with the SLURM files of a sweep (manifest, job record) or with sbatch; the
    /// message names what was expected.
    #[error("{}: {message}", path.display())]
    Slurm { path: PathBuf, message: String },
    #[error(transparent)]
    Tracking(#[from] crate::tracking::TrackingError),
    #[error(transparent)]
    Write(#[from] crate::atomic::WriteError),
}

/// The JSON record at `path` (a file seglab writes into a sweep folder), or None when there is
/// none; `invalid` makes the error of a file that does not parse as one.
pub(crate) fn read_json_record<T: serde::de::DeserializeOwned>(
    path: &Path,
    invalid: impl FnOnce(serde_json::Error) -> ExperimentError,
) -> Result<Option<T>, ExperimentError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| ExperimentError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map(Some).map_err(invalid)
}
