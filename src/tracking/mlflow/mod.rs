//! The MLflow mirror of the store: a REST client ([`MlflowClient`], limits and retry rules of
//! docs/design.md §5) for the server of a [`MlflowTarget`] (address, CA bundle, credentials),
//! the idempotent replay of a store ([`sync_store`], behind `seglab mlflow sync`) and the live
//! mirror a running sweep feeds ([`MlflowMirror`], set up by [`MirrorOptions`]). Both write the
//! same runs through [`mapping`]: one parent run per sweep, one nested run per trial attempt.
//! Nothing here reads MLflow back into the store: the store is the source of truth.

mod client;
pub mod mapping;
mod mirror;
mod sync;
mod target;

pub use client::{
    BatchPlan, Body, Experiment, FileInfo, MAX_BATCH_BYTES, MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, MAX_TAGS_PER_BATCH, Method, Metric, MlflowClient,
    Param, RetryPolicy, Run, RunData, RunInfo, RunStatus, Tag, error_code, is_settings_error,
    is_transient_status, is_unreachable, params_to_log, plan_batches, same_metric_value,
};
pub use mirror::{MirrorOptions, MlflowMirror};
pub use sync::{Artifacts, SyncFailure, SyncOptions, SyncReport, sync_store};
pub use target::{
    Credentials, ENV_CA_BUNDLE, ENV_PASSWORD, ENV_TOKEN, ENV_USERNAME, MlflowTarget, Secret,
};
