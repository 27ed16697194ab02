//! `dataset.toml`: the description of one dataset folder.
//!
//! ```toml
//! name = "phantom-retina"
//! description = "Phantom retina crops, seed 0"   # optional
//! image_channels = ["golgi", "nuclei"]           # names of the image channels, in file order
//! mask_channels = ["golgi", "nuclei"]            # names of the mask channels, in file order
//! spacing = [0.5, 0.1, 0.1]                      # optional (z, y, x) µm; overrides file metadata
//! annotation_hours_per_volume = 28.0             # optional; manual annotation estimate
//!
//! [files]                 # optional: which 0-based channels of the files hold the named ones
//! image_channels = [0, 1] # default 0..len(image_channels)
//! mask_channels = [0, 1]  # default 0..len(mask_channels)
//!
//! [preprocess]            # optional defaults for this dataset (see `dataset::preprocess`)
//! percentiles = [[95.0, 99.8], [95.0, 98.0]]   # per image channel, (low, high)
//!
//! [[volumes]]
//! id = "vol01"
//! image = "images/vol01.tif"  # relative to the folder of dataset.toml
//! mask = "masks/vol01.tif"    # optional: unlabelled volumes can still train a CycleGAN
//! group = "retina-a"          # optional: volumes of one group never straddle a split
//! annotation_hours = 28.0     # optional per-volume override
//! ```
//!
//! Mask channel names are the task classes of seglab: `golgi`, `nuclei` and `pair`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The file name every dataset folder carries.
pub const DATASET_FILE: &str = "dataset.toml";

/// The parsed contents of a `dataset.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Names of the image channels, in the order of `files.image_channels`.
    pub image_channels: Vec<String>,
    /// Names of the mask channels (`golgi`, `nuclei`, `pair`), in the order of `files.mask_channels`.
    pub mask_channels: Vec<String>,
    /// Voxel spacing (z, y, x) in µm; when absent the spacing of the image files is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spacing: Option<[f64; 3]>,
    /// Estimated hours of manual annotation per volume (for the timing breakdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_hours_per_volume: Option<f64>,
    #[serde(default, skip_serializing_if = "FileChannels::is_default")]
    pub files: FileChannels,
    #[serde(default, skip_serializing_if = "PreprocessDefaults::is_default")]
    pub preprocess: PreprocessDefaults,
    pub volumes: Vec<VolumeEntry>,
}

/// Which 0-based channels of the image and mask files hold the named channels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileChannels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_channels: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_channels: Option<Vec<usize>>,
}

impl FileChannels {
    fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

/// Dataset-specific preprocessing defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessDefaults {
    /// Percentile pairs (low, high) per image channel for the contrast stretch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentiles: Option<Vec<[f64; 2]>>,
}

impl PreprocessDefaults {
    fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

/// One volume of the dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeEntry {
    pub id: String,
    /// Image file, relative to the dataset folder.
    pub image: PathBuf,
    /// Mask file, relative to the dataset folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation_hours: Option<f64>,
}
