//! The MLflow mirror of the store: a REST client ([`MlflowClient`], limits and retry rules of
//! docs/design.md §5), the idempotent replay of a store ([`sync_store`], behind
//! `seglab mlflow sync`) and the live mirror a running sweep feeds ([`MlflowMirror`]). Both
//! write the same runs through [`mapping`]: one parent run per sweep, one nested run per trial
//! attempt. Nothing here reads MLflow back into the store: the store is the source of truth.

mod client;
pub mod mapping;
mod mirror;
mod sync;

pub use client::{
    BatchPlan, Body, Experiment, FileInfo, MAX_BATCH_BYTES, MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, MAX_TAGS_PER_BATCH, Method, Metric, MlflowClient,
    Param, RetryPolicy, Run, RunData, RunInfo, RunStatus, Tag, error_code, is_transient_status,
    is_unreachable, params_to_log, plan_batches, same_metric_value,
};
pub use mirror::MlflowMirror;
pub use sync::{SyncFailure, SyncOptions, SyncReport, sync_store};
