//! Tracking: the Parquet store (the embedded, source-of-truth tracker) and its MLflow mirror.
//!
//! Principal types: [`Store`] (one sweep's store folder: atomic part writes, table reads, the
//! canonical view), the row structs [`TrialEvent`], [`EpochRow`], [`ResultRow`], [`TimingRow`],
//! [`Canonical`] (the rows that count), and in [`mlflow`] the REST client
//! ([`mlflow::MlflowClient`]), the replay of a store ([`mlflow::sync_store`]) and the live
//! mirror fed by the sweep runner ([`mlflow::MlflowMirror`]). This module does not decide what a
//! trial is or when it runs (that is `experiment`), and it computes no statistics (every mean
//! goes through `report::aggregate`).
//!
//! # Store layout and schema (the contract between the runner, `runs`, MLflow sync and reports)
//!
//! A sweep's store lives in `experiments/<sweep>/store/`: one folder per table, each holding
//! immutable Parquet part files. A part is written to a hidden temporary name (`.tmp-…`) in the
//! same folder, then renamed to its final name, so readers never see a half-written file; readers
//! ignore names starting with `.`. Part names are `<trial_id>-a<attempt>-<seq>.parquet`, unique
//! per (trial, attempt, sequence number); the final name is claimed with a no-replace rename,
//! so parallel workers (threads, local processes or SLURM tasks on a shared filesystem) never
//! collide and need no lock. Temporary files left by a killed writer are removed by the next
//! [`Store::create`]. **No part is written for an attempt after its terminal event** (the runner
//! writes a new attempt instead); [`Store::compact`] relies on this when it merges the parts of
//! ended attempts into one `@compact-….parquet` per table (the parts it replaces are listed in
//! its Parquet metadata, and readers skip them until they are removed).
//!
//! | table | one row per | columns |
//! |---|---|---|
//! | `trials` | trial attempt × status event | `sweep` str, `trial_id` str, `attempt` u32, `seq` u32 (the part's sequence number within its attempt: write order), `status` str (running / finished / failed / killed / interrupted), `event_ms` i64, `model` str, `classes` str (comma-joined, e.g. "golgi,nuclei"), `fold` u32, `seed` u64, `preset` str, `scale` str, `dataset` str, `dataset_fingerprint` str, `config_json` str, `error` str?, `started_ms` i64, `ended_ms` i64?, `git_commit` str, `git_dirty` bool, `git_diff_sha256` str?, `user` str, `host` str, `device` str, `device_name` str (the device's own name), `compute_path` str (`kernels`: seglab's CPU kernels, `burn`: burn's operations; `crate::kernels::ComputePath`; empty in older stores), `seglab_version` str, `burn_version` str, `command` str, `split_id` str? (hash of the fold's volume ids), `split_json` str? (`{"test", "train", "val"}` volume ids), `select_metric` str? (nested selection's validation metric), `preprocess_check` str? (JSON: the preprocessing check of `sweep run`, `experiment::preflight`), `prune_rung` u32?, `prune_epoch` u32?, `prune_value` f64?, `prune_cut` f64? (where a `pruned` attempt stopped: its rung, the rung's epoch, its value and the cut it was behind; null otherwise and in older stores), `threads` u32? (threads the attempt computed with; null in older stores), `tags` str? (the spec's and grid block's free-text labels, comma-joined), `notes` str?, plus one `param.<dotted.key>` str column per swept/config key |
//! | `epochs` | trial × attempt × epoch × split × metric | `trial_id`, `attempt`, `epoch` u32, `split` str (train / val), `metric` str, `value` f64, `wall_s` f64 (training wall-clock seconds of the attempt at the end of the epoch, cumulative; a resumed attempt continues its checkpoint's count) |
//! | `results` | trial × attempt × test volume × class × metric | `trial_id`, `attempt`, `volume` str, `class` str, `metric` str, `value` f64 |
//! | `timings` | trial × attempt × phase | `trial_id`, `attempt`, `phase` str (synth_masks, preprocess, patches, train, validate, predict, evaluate), `seconds` f64 |
//!
//! Times are Unix milliseconds (UTC). Non-finite values stay NaN (or ±inf), never nulls or zeros.
//! Attempts are numbered by the runner (1 for the first run of a trial); the store only requires
//! that a new run of a trial uses a new attempt number.
//!
//! **Canonical view.** The current status of an attempt is its latest `trials` event (the one with
//! the highest `seq`). For each trial the *chosen attempt* is the highest attempt whose status is
//! `finished`, or else the highest attempt. `epochs`, `results` and `timings` rows count only for
//! the chosen attempt. An attempt that resumes from a checkpoint re-emits the epoch history its
//! checkpoint carries, so the chosen attempt's rows are complete; this is why a killed and re-run
//! sweep holds exactly the rows of an uninterrupted one. [`Store::canonical`] implements the rule.

mod canonical;
mod frame;
pub mod mlflow;
mod rows;
mod store;

use std::path::PathBuf;

pub use canonical::Canonical;
pub use rows::{EpochRow, PruneCut, ResultRow, Table, TimingRow, TrialEvent, TrialStatus};
pub(crate) use store::hostname;
pub use store::{CompactReport, Store};

/// Errors of the store and the MLflow mirror. Each names the folder, part file or server
/// request it concerns.
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a seglab store (expected the folder of a sweep's store with trials/, epochs/, results/ and timings/)", path.display())]
    NotAStore { path: PathBuf },
    #[error("cannot write part {}: {source}", path.display())]
    WritePart {
        path: PathBuf,
        source: polars::error::PolarsError,
    },
    #[error("cannot read part {}: {message} (a corrupt or foreign file; move it out of the store folder)", path.display())]
    ReadPart { path: PathBuf, message: String },
    #[error("{what} {value:?} is not valid: {expected}")]
    InvalidName {
        what: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{context}: {source}")]
    Polars {
        context: String,
        source: polars::error::PolarsError,
    },
    #[error("{0}")]
    Query(String),
    /// The server answered with an HTTP error (after retries when the status is transient).
    #[error("MLflow {method} {url}: HTTP {status}{}: {message}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    MlflowHttp {
        method: &'static str,
        url: String,
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// The server could not be reached (after retries).
    #[error("MLflow {method} {url}: cannot reach the server: {message}")]
    MlflowConnection {
        method: &'static str,
        url: String,
        message: String,
    },
    /// The server answered 200 with a body this client does not understand.
    #[error("MLflow {method} {url}: unexpected response: {message}")]
    MlflowResponse {
        method: &'static str,
        url: String,
        message: String,
    },
    #[error("MLflow URI {uri:?}: {message}")]
    MlflowUri { uri: String, message: String },
    /// The server refused the credentials (401) or the user's permissions (403). Names the
    /// server, the status and what to check; never a credential.
    #[error("MLflow server {server} refused the request: HTTP {status}: {message} ({hint})")]
    MlflowAuth {
        server: String,
        status: u16,
        message: String,
        hint: String,
    },
    /// The TLS connection failed, most often over an untrusted certificate.
    #[error("MLflow {method} {url}: TLS failed: {message} ({hint})")]
    MlflowTls {
        method: &'static str,
        url: String,
        message: String,
        hint: String,
    },
    /// The CA bundle given for the server cannot be used.
    #[error("MLflow CA bundle {}: {message}", path.display())]
    MlflowCaBundle { path: PathBuf, message: String },
    /// MLflow's credential variables are set inconsistently.
    #[error("MLflow credentials: {0}")]
    MlflowCredentials(String),
    /// MLflow params are immutable; a different value for a logged param is refused before it is
    /// sent (docs/design.md §5).
    #[error(
        "MLflow run {run_id}: param {key:?} is {logged:?} on the server but {wanted:?} in the store; params cannot change"
    )]
    MlflowParamConflict {
        run_id: String,
        key: String,
        logged: String,
        wanted: String,
    },
}

impl TrackingError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrackingError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn polars(context: impl Into<String>, source: polars::error::PolarsError) -> Self {
        TrackingError::Polars {
            context: context.into(),
            source,
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = TrackingError> = std::result::Result<T, E>;

/// The current time in Unix milliseconds (UTC), the unit of every time column of the store.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
