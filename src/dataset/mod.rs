//! Datasets: `dataset.toml` ([`spec::DatasetSpec`]), loading image/mask pairs, preprocessing,
//! padding, patch extraction and cross-validation splits by volume.

pub mod spec;

pub use spec::{DATASET_FILE, DatasetSpec, VolumeEntry};
pub mod threshold;
