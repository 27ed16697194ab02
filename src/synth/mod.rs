//! Synthetic data: the synthetic nucleus–Golgi masks the self-supervised CycleGAN learns from,
//! and a phantom microscopy renderer that makes image/ground-truth pairs with exact labels.
//!
//! Principal types: [`MaskConfig`] and [`generate_masks`] (docs/published-code.md §2: Golgi
//! spheres and nucleus ellipsoids, elastic warp, rotation, overlap rejection; 1-, 2- and
//! 3-class), [`PhantomConfig`] and [`render_phantom`] (a documented image-formation model whose
//! objects are deliberately drawn from a different distribution than the synthetic masks),
//! [`dataset`] (writing mask sets and phantom datasets with their `dataset.toml`) and
//! [`preview`] (a PNG of mid-depth slices). Every generator is a pure function of its config
//! and a seed: random streams are ChaCha8 streams derived from (seed, volume, object), so the
//! output is identical whatever the number of threads.
//!
//! This module does not read real datasets beyond their shapes, does no preprocessing and
//! computes no evaluation metrics (see `dataset/` and `metrics/`).

pub mod config;
pub mod dataset;
mod filter;
mod geometry;
pub mod masks;
pub mod phantom;
pub mod preview;
pub(crate) mod rng;

pub use config::{
    AxesRange, ElasticConfig, FloatRange, IntRange, MaskConfig, OffsetConfig, OverlapRule,
    RotationConfig,
};
pub use masks::{MaskReport, ObjectKind, ObjectRecord, SynthMasks, generate_masks};
pub use phantom::{Phantom, PhantomConfig, PhantomPreset, render_phantom};

use std::path::PathBuf;

/// Errors of the synthetic-data generators and writers.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// An invalid configuration value; `field` is the dotted path of the offending field.
    #[error("{field} {message}")]
    Config { field: String, message: String },
    /// A configuration file that cannot be parsed.
    #[error("{}: {message}", path.display())]
    ConfigFile { path: PathBuf, message: String },
    /// A volume shape the generator cannot work with.
    #[error("shape {shape:?} (Z x Y x X): {message}")]
    Shape { shape: [usize; 3], message: String },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tiff(#[from] crate::volume::TiffError),
    #[error(transparent)]
    Write(#[from] crate::atomic::WriteError),
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    /// A dataset folder or file that is not what the command expects.
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    /// Drawing or encoding the preview PNG failed.
    #[error("{}: cannot draw the preview: {message}", path.display())]
    Preview { path: PathBuf, message: String },
}

impl SynthError {
    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        SynthError::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SynthError::Io {
            path: path.into(),
            source,
        }
    }
}
