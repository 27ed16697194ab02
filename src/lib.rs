//! seglab: a research harness for 3D fluorescence-microscopy segmentation of nuclei, Golgi and
//! nucleus–Golgi pairs.
//!
//! The crate follows the pipeline of one trial (see the README and
//! docs/design.md): [`volume`] (arrays and TIFF) → [`dataset`] (dataset.toml, preprocessing, patches,
//! splits) → [`models`] + [`train`] (burn networks and the training driver) → [`infer`]
//! (sliding-window prediction) → [`metrics`] → [`tracking`] (the Parquet store, MLflow mirror)
//! → [`report`]. [`backend`] names the burn device every step runs on. [`synth`] makes
//! synthetic masks and phantom datasets; [`experiment`] expands sweep specs into trials and
//! runs them. [`cli`] is the command line on top.

/// `Display` for a type with a fixed name per value (presets, model kinds, policies,
/// statuses): it writes `self.name()` (or the method given), the word the type is parsed from.
macro_rules! display_by_name {
    ($t:ty) => {
        display_by_name!($t, name);
    };
    ($t:ty, $method:ident) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.$method())
            }
        }
    };
}

pub mod atomic;
pub mod backend;
pub mod cli;
pub mod dataset;
pub mod experiment;
pub mod infer;
pub mod kernels;
pub mod keys;
pub mod metrics;
pub mod models;
pub mod preset;
pub mod report;
pub mod stats;
pub mod synth;
pub mod tracking;
pub mod train;
pub mod volume;
