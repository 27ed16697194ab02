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
//! percentiles = [[95.0, 99.8], [95.0, 98.0]]   # per image channel, (low, high), or "auto"
//!
//! [splits.thesis]        # optional split presets, chosen by a sweep spec's `cv.split`
//! description = "thesis §5.3"
//! [[splits.thesis.folds]]
//! train = ["vol01", "vol02"]
//! val = ["vol03"]
//! test = ["vol04"]
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

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::DatasetError;
use super::preprocess::Percentiles;
use super::splits::NamedSplit;
use crate::keys::{KeySchema, TomlError, parse_toml};

/// The file name every dataset folder carries.
pub const DATASET_FILE: &str = "dataset.toml";

/// The mask channel names seglab knows, in the project's channel order (docs/design.md §6;
/// docs/published-code.md §1: 0 = Golgi, 1 = Nuclei, 2 = Pair).
pub const MASK_CHANNELS: [&str; 3] = ["golgi", "nuclei", "pair"];

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
    /// Split presets by name (`[splits.<name>]`), validated against the volumes when a sweep
    /// chooses one (`cv.split`, see `dataset::splits::named_folds`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub splits: BTreeMap<String, NamedSplit>,
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
    /// Percentile pairs (low, high) per image channel for the contrast stretch, or `"auto"`
    /// (floors chosen from the data, `dataset::auto_floor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentiles: Option<Percentiles>,
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

impl DatasetSpec {
    /// The key schema of `dataset.toml` (for unknown-key errors with the nearest valid key).
    pub fn key_schema() -> KeySchema {
        KeySchema::of::<DatasetSpec>()
            .child("files", KeySchema::of::<FileChannels>())
            .child("preprocess", KeySchema::of::<PreprocessDefaults>())
            .child("volumes", KeySchema::of::<VolumeEntry>())
    }

    /// Parses the text of a `dataset.toml` (unknown keys, syntax and type errors as one line
    /// with their position). Does not validate values; see [`DatasetSpec::validate`].
    pub fn from_toml_str(text: &str) -> Result<Self, TomlError> {
        parse_toml(text, &Self::key_schema())
    }

    /// Reads and parses the `dataset.toml` at `path`, without validating values or files: the
    /// one reader of the file ([`super::Dataset::open`] validates on top of it).
    pub fn read_file(path: &Path) -> Result<Self, DatasetError> {
        let text = std::fs::read_to_string(path).map_err(|source| DatasetError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|e| DatasetError::Spec {
            path: path.to_owned(),
            message: format!("line {}, column {}: {}", e.line, e.column, e.message),
        })
    }

    /// The spec as TOML text (what the phantom generator writes).
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("a dataset spec always serializes to TOML")
    }

    /// Checks the values (not the files): names, channel lists, ids, ranges. The message names
    /// the field and the offending value.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        if self.image_channels.is_empty() {
            return Err("image_channels must name at least one channel".into());
        }
        unique_names(&self.image_channels, "image_channels")?;
        for (i, c) in self.mask_channels.iter().enumerate() {
            if !MASK_CHANNELS.contains(&c.as_str()) {
                return Err(format!(
                    "mask_channels[{i}] = `{c}` is not a mask channel; expected one of: {}",
                    MASK_CHANNELS.join(", ")
                ));
            }
        }
        unique_names(&self.mask_channels, "mask_channels")?;
        if let Some(spacing) = self.spacing
            && spacing.iter().any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(format!(
                "spacing must be three positive numbers (z, y, x) in µm, got {spacing:?}"
            ));
        }
        non_negative(
            self.annotation_hours_per_volume,
            "annotation_hours_per_volume",
        )?;
        check_file_channels(
            self.files.image_channels.as_deref(),
            self.image_channels.len(),
            "files.image_channels",
            "image_channels",
        )?;
        check_file_channels(
            self.files.mask_channels.as_deref(),
            self.mask_channels.len(),
            "files.mask_channels",
            "mask_channels",
        )?;
        if let Some(pairs) = self.preprocess.percentiles.as_ref().and_then(|p| p.pairs()) {
            if pairs.len() != self.image_channels.len() {
                return Err(format!(
                    "preprocess.percentiles has {} pairs for {} image channels",
                    pairs.len(),
                    self.image_channels.len()
                ));
            }
            for (i, &[low, high]) in pairs.iter().enumerate() {
                if !(0.0..=100.0).contains(&low) || !(0.0..=100.0).contains(&high) || low > high {
                    return Err(format!(
                        "preprocess.percentiles[{i}] must satisfy 0 <= low <= high <= 100, \
                         got [{low}, {high}]"
                    ));
                }
            }
        }
        if self.volumes.is_empty() {
            return Err("volumes must list at least one volume ([[volumes]])".into());
        }
        let mut ids = HashSet::new();
        for (i, v) in self.volumes.iter().enumerate() {
            let ok = !v.id.is_empty()
                && !v.id.starts_with('.')
                && v.id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(format!(
                    "volumes[{i}].id = `{}` must be non-empty and use only letters, digits, \
                     `-`, `_` and `.` (ids name output files)",
                    v.id
                ));
            }
            if !ids.insert(v.id.as_str()) {
                return Err(format!("volumes[{i}].id = `{}` is a duplicate id", v.id));
            }
            if v.group.as_deref().is_some_and(|g| g.trim().is_empty()) {
                return Err(format!("volumes[{i}].group must not be empty when given"));
            }
            if v.mask.is_some() && self.mask_channels.is_empty() {
                return Err(format!(
                    "volumes[{i}] (`{}`) has a mask but mask_channels is empty",
                    v.id
                ));
            }
            non_negative(
                v.annotation_hours,
                &format!("volumes[{i}].annotation_hours"),
            )?;
        }
        Ok(())
    }

    /// The 0-based channels of the image files that hold the named image channels.
    pub fn image_file_channels(&self) -> Vec<usize> {
        self.files
            .image_channels
            .clone()
            .unwrap_or_else(|| (0..self.image_channels.len()).collect())
    }

    /// The 0-based channels of the mask files that hold the named mask channels.
    pub fn mask_file_channels(&self) -> Vec<usize> {
        self.files
            .mask_channels
            .clone()
            .unwrap_or_else(|| (0..self.mask_channels.len()).collect())
    }

    /// The estimated manual annotation hours of a volume (its own value, else the dataset's).
    pub fn annotation_hours(&self, volume: &VolumeEntry) -> Option<f64> {
        volume.annotation_hours.or(self.annotation_hours_per_volume)
    }
}

impl VolumeEntry {
    /// The image file, resolved against the dataset folder.
    pub fn image_path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.image)
    }

    /// The mask file, resolved against the dataset folder.
    pub fn mask_path(&self, dir: &Path) -> Option<PathBuf> {
        self.mask.as_ref().map(|m| dir.join(m))
    }
}

/// `target` relative to the folder `base` when both are absolute and share a root.
pub fn relative_path(target: &Path, base: &Path) -> PathBuf {
    let t: Vec<Component> = target.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return target.to_owned();
    }
    let mut rel = PathBuf::new();
    for _ in common..b.len() {
        rel.push("..");
    }
    for c in &t[common..] {
        rel.push(c.as_os_str());
    }
    rel
}

fn unique_names(names: &[String], field: &str) -> Result<(), String> {
    let mut seen = HashSet::new();
    for (i, n) in names.iter().enumerate() {
        if n.trim().is_empty() {
            return Err(format!("{field}[{i}] must not be empty"));
        }
        if !seen.insert(n.as_str()) {
            return Err(format!("{field}[{i}] = `{n}` appears twice"));
        }
    }
    Ok(())
}

fn non_negative(value: Option<f64>, field: &str) -> Result<(), String> {
    match value {
        Some(v) if !(v.is_finite() && v >= 0.0) => {
            Err(format!("{field} must be a non-negative number, got {v}"))
        }
        _ => Ok(()),
    }
}

fn check_file_channels(
    indices: Option<&[usize]>,
    named: usize,
    field: &str,
    names_field: &str,
) -> Result<(), String> {
    let Some(indices) = indices else {
        return Ok(());
    };
    if indices.len() != named {
        return Err(format!(
            "{field} lists {} channels but {names_field} names {named}",
            indices.len()
        ));
    }
    let mut seen = HashSet::new();
    for (i, c) in indices.iter().enumerate() {
        if !seen.insert(c) {
            return Err(format!("{field}[{i}] = {c} appears twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "phantom"
image_channels = ["golgi", "nuclei"]
mask_channels = ["golgi", "nuclei"]
spacing = [0.5, 0.1, 0.1]
annotation_hours_per_volume = 28.0

[files]
image_channels = [0, 1]

[preprocess]
percentiles = [[95.0, 99.8], [95.0, 98.0]]

[[volumes]]
id = "vol01"
image = "images/vol01.tif"
mask = "masks/vol01.tif"
group = "a"

[[volumes]]
id = "vol02"
image = "images/vol02.tif"
annotation_hours = 3.0
"#;

    #[test]
    fn parses_and_validates_the_documented_example() {
        let spec = DatasetSpec::from_toml_str(GOOD).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.volumes.len(), 2);
        assert_eq!(spec.image_file_channels(), vec![0, 1]);
        assert_eq!(spec.mask_file_channels(), vec![0, 1]);
        assert_eq!(spec.annotation_hours(&spec.volumes[0]), Some(28.0));
        assert_eq!(spec.annotation_hours(&spec.volumes[1]), Some(3.0));
        // Round trip through the writer.
        let again = DatasetSpec::from_toml_str(&spec.to_toml_string()).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn unknown_keys_name_path_and_nearest_key() {
        let text = GOOD.replace("group = \"a\"", "grup = \"a\"");
        let err = DatasetSpec::from_toml_str(&text).unwrap_err();
        assert_eq!(
            err.message,
            "unknown key `volumes[0].grup`, did you mean `group`?"
        );
        let text = GOOD.replace("[preprocess]\npercentiles", "[preprocess]\npercentile");
        let err = DatasetSpec::from_toml_str(&text).unwrap_err();
        assert!(
            err.message
                .contains("`preprocess.percentile`, did you mean `percentiles`"),
            "{err}"
        );
        let text = GOOD.replace("spacing =", "spaceing =");
        let err = DatasetSpec::from_toml_str(&text).unwrap_err();
        assert!(err.message.contains("did you mean `spacing`"), "{err}");
    }

    fn invalid(edit: impl Fn(&mut DatasetSpec)) -> String {
        let mut spec = DatasetSpec::from_toml_str(GOOD).unwrap();
        edit(&mut spec);
        spec.validate().unwrap_err()
    }

    #[test]
    fn validation_names_field_and_value() {
        let e = invalid(|s| s.mask_channels[1] = "nucleus".into());
        assert!(e.contains("mask_channels[1] = `nucleus`"), "{e}");
        assert!(e.contains("golgi, nuclei, pair"), "{e}");
        let e = invalid(|s| s.volumes[1].id = "vol01".into());
        assert_eq!(e, "volumes[1].id = `vol01` is a duplicate id");
        let e = invalid(|s| s.volumes[0].id = "a/b".into());
        assert!(e.starts_with("volumes[0].id = `a/b`"), "{e}");
        let e = invalid(|s| s.files.image_channels = Some(vec![0]));
        assert!(e.contains("files.image_channels lists 1 channels"), "{e}");
        let e = invalid(|s| s.files.image_channels = Some(vec![1, 1]));
        assert!(
            e.contains("files.image_channels[1] = 1 appears twice"),
            "{e}"
        );
        let e = invalid(|s| s.spacing = Some([0.5, 0.0, 0.1]));
        assert!(e.starts_with("spacing must be"), "{e}");
        let e = invalid(|s| s.image_channels[1] = "golgi".into());
        assert!(
            e.contains("image_channels[1] = `golgi` appears twice"),
            "{e}"
        );
        let e =
            invalid(|s| s.preprocess.percentiles = Some(Percentiles::Pairs(vec![[95.0, 99.8]])));
        assert!(e.contains("1 pairs for 2 image channels"), "{e}");
        let e = invalid(|s| s.volumes.clear());
        assert!(e.starts_with("volumes must list"), "{e}");
        let e = invalid(|s| s.volumes[1].annotation_hours = Some(-1.0));
        assert!(e.contains("volumes[1].annotation_hours"), "{e}");
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("/a/b/images/x.tif"), Path::new("/a/c/d")),
            PathBuf::from("../../b/images/x.tif")
        );
        assert_eq!(
            relative_path(Path::new("/a/b/x.tif"), Path::new("/a/b")),
            PathBuf::from("x.tif")
        );
    }
}
