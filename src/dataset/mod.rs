//! Datasets: a folder with a `dataset.toml` ([`DatasetSpec`]) opened as a [`Dataset`], whose
//! volumes load as [`LoadedVolume`]s (image intensities as `f32`, masks as 0/1 `u8`); then
//! preprocessing ([`preprocess`]: percentile stretch and scaling), reflection padding
//! ([`pad`]), patch extraction for training ([`patches`]) and cross-validation splits by
//! volume ([`splits`]). [`threshold`] holds Otsu's threshold; [`auto_floor`] chooses stretch
//! floors from the data (`percentiles = "auto"`) and [`clipping`] measures what a stretch
//! does to the annotated objects.
//!
//! This module does not read TIFF itself (that is `volume::read_tiff`), knows nothing of
//! models or tensors (patch batches are plain vectors), and does not predict whole volumes
//! (that is `infer/`).

pub mod augment;
pub mod auto_floor;
pub mod clipping;
pub mod import;
pub mod pad;
pub mod patches;
pub mod preprocess;
pub mod published;
pub mod spec;
pub mod splits;
pub mod threshold;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use spec::{DATASET_FILE, DatasetSpec, MASK_CHANNELS, VolumeEntry};

use crate::volume::{AnyVolume, DType, Spacing, TiffError, Volume, read_tiff};

/// Everything that can go wrong in `dataset/`. Messages name the file (or the config field)
/// and the problem on one line.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A problem in a `dataset.toml` (syntax, unknown key, invalid value, missing file).
    #[error("{}: {message}", path.display())]
    Spec { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tiff(#[from] TiffError),
    /// An image or mask file whose shape or channels disagree with the dataset.
    #[error("{}: {message}", path.display())]
    Volume { path: PathBuf, message: String },
    #[error("no volume `{id}` in dataset `{dataset}`")]
    UnknownVolume { dataset: String, id: String },
    /// An invalid setting; the message names the field and the value.
    #[error("{0}")]
    Config(String),
    /// A split that cannot be made or an invalid splits file.
    #[error("{0}")]
    Split(String),
    #[error("{}: {message}", path.display())]
    SplitFile { path: PathBuf, message: String },
    #[error(transparent)]
    Write(#[from] crate::atomic::WriteError),
}

/// An opened, validated dataset folder.
#[derive(Debug)]
pub struct Dataset {
    dir: PathBuf,
    spec: DatasetSpec,
    fingerprint: OnceLock<String>,
}

/// One volume as loaded: the named image channels (raw intensities), the binarised mask
/// channels in `mask_channels` order, and the voxel spacing.
#[derive(Clone, Debug)]
pub struct LoadedVolume {
    pub id: String,
    /// Image channels in `image_channels` order, raw intensities as `f32`.
    pub image: Volume<f32>,
    /// 0/1 masks in `mask_channels` order; `None` for unlabelled volumes.
    pub mask: Option<Volume<u8>>,
    /// (z, y, x) µm: dataset.toml's `spacing`, else the image file's.
    pub spacing: Option<Spacing>,
    /// The sample type of the image file (it decides NumPy's percentile arithmetic).
    pub dtype: DType,
}

/// What `seglab data info` shows for one volume.
#[derive(Clone, Debug, Serialize)]
pub struct VolumeInfo {
    pub id: String,
    /// [C, Z, Y, X] of the named image channels.
    pub shape: [usize; 4],
    pub dtype: DType,
    pub channels: Vec<String>,
    pub spacing: Option<Spacing>,
    pub group: Option<String>,
    /// Foreground fraction of each mask channel, in `mask_channels` order; empty when the
    /// volume has no mask.
    pub foreground: Vec<(String, f64)>,
}

impl Dataset {
    /// Opens `dir/dataset.toml`: parses it (unknown keys name the nearest valid key),
    /// validates its values and checks that every listed file exists.
    pub fn open(dir: &Path) -> Result<Self, DatasetError> {
        let spec = DatasetSpec::read_file(&dir.join(DATASET_FILE))?;
        Self::from_spec(dir, spec)
    }

    /// A dataset from an in-memory spec whose files live under `dir` (validated like `open`).
    pub fn from_spec(dir: &Path, spec: DatasetSpec) -> Result<Self, DatasetError> {
        let path = dir.join(DATASET_FILE);
        let fail = |message: String| DatasetError::Spec {
            path: path.clone(),
            message,
        };
        spec.validate().map_err(fail)?;
        for (i, v) in spec.volumes.iter().enumerate() {
            let image = v.image_path(dir);
            if !image.is_file() {
                return Err(fail(format!(
                    "volumes[{i}] (`{}`): image file {} not found",
                    v.id,
                    image.display()
                )));
            }
            if let Some(mask) = v.mask_path(dir)
                && !mask.is_file()
            {
                return Err(fail(format!(
                    "volumes[{i}] (`{}`): mask file {} not found",
                    v.id,
                    mask.display()
                )));
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            spec,
            fingerprint: OnceLock::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn spec(&self) -> &DatasetSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The volumes in dataset.toml order.
    pub fn volumes(&self) -> &[VolumeEntry] {
        &self.spec.volumes
    }

    /// Volume ids in dataset.toml order.
    pub fn ids(&self) -> Vec<String> {
        self.spec.volumes.iter().map(|v| v.id.clone()).collect()
    }

    /// The split group of each volume (same order as [`Dataset::ids`]).
    pub fn groups(&self) -> Vec<Option<String>> {
        self.spec.volumes.iter().map(|v| v.group.clone()).collect()
    }

    /// The folds of the split preset `name` that this dataset declares (`[splits.<name>]`),
    /// validated against its volumes; errors name `dataset.toml`.
    pub fn named_folds(&self, name: &str) -> Result<Vec<splits::Fold>, DatasetError> {
        splits::named_folds(&self.spec.splits, name, &self.ids(), &self.groups()).map_err(|e| {
            DatasetError::Spec {
                path: self.dir.join(DATASET_FILE),
                message: e.to_string(),
            }
        })
    }

    pub fn volume(&self, id: &str) -> Result<&VolumeEntry, DatasetError> {
        self.spec
            .volumes
            .iter()
            .find(|v| v.id == id)
            .ok_or_else(|| DatasetError::UnknownVolume {
                dataset: self.spec.name.clone(),
                id: id.to_owned(),
            })
    }

    /// Reads volume `id`: its image and mask files, the named channels, checks that the mask
    /// matches the image's Z/Y/X and that both hold the declared channels.
    pub fn load(&self, id: &str) -> Result<LoadedVolume, DatasetError> {
        let entry = self.volume(id)?;
        let image_path = entry.image_path(&self.dir);
        let image = read_tiff(&image_path)?;
        let mask = match entry.mask_path(&self.dir) {
            Some(p) => Some((read_tiff(&p)?, p)),
            None => None,
        };
        assemble(
            &self.spec,
            entry,
            (image, &image_path),
            mask.as_ref().map(|(v, p)| (v, p.as_path())),
        )
    }

    /// Loads every volume and summarises it (what `seglab data info` prints).
    pub fn info(&self) -> Result<Vec<VolumeInfo>, DatasetError> {
        self.spec
            .volumes
            .iter()
            .map(|entry| {
                let v = self.load(&entry.id)?;
                let foreground = match &v.mask {
                    Some(mask) => self
                        .spec
                        .mask_channels
                        .iter()
                        .zip(mask.channel_slices())
                        .map(|(name, values)| {
                            let fg = values.iter().filter(|&&x| x != 0).count();
                            (name.clone(), fg as f64 / values.len().max(1) as f64)
                        })
                        .collect(),
                    None => Vec::new(),
                };
                Ok(VolumeInfo {
                    id: v.id,
                    shape: v.image.shape(),
                    dtype: v.dtype,
                    channels: self.spec.image_channels.clone(),
                    spacing: v.spacing,
                    group: entry.group.clone(),
                    foreground,
                })
            })
            .collect()
    }

    /// A stable short hash (16 hex digits) of the spec and the contents of every image and
    /// mask file; trial ids depend on it, so editing a file or the spec changes it. Computed
    /// once per `Dataset` (it reads every file).
    pub fn fingerprint(&self) -> Result<String, DatasetError> {
        if let Some(f) = self.fingerprint.get() {
            return Ok(f.clone());
        }
        let mut hasher = Sha256::new();
        let spec_json =
            serde_json::to_string(&self.spec).expect("a dataset spec always serializes");
        hasher.update(b"seglab-dataset-v1\0");
        hasher.update(spec_json.as_bytes());
        for v in &self.spec.volumes {
            hasher.update(b"\0volume\0");
            hasher.update(v.id.as_bytes());
            hash_file(&mut hasher, &v.image_path(&self.dir))?;
            if let Some(mask) = v.mask_path(&self.dir) {
                hasher.update(b"\0mask\0");
                hash_file(&mut hasher, &mask)?;
            }
        }
        let digest = hasher.finalize();
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(self.fingerprint.get_or_init(|| hex).clone())
    }
}

fn hash_file(hasher: &mut Sha256, path: &Path) -> Result<(), DatasetError> {
    let io = |source| DatasetError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    hasher.update(total.to_le_bytes());
    Ok(())
}

/// Builds a [`LoadedVolume`] from the decoded files of one volume: selects the named
/// channels, binarises the mask, checks shapes and channel counts, and settles the spacing.
/// Pure (no I/O), so the checks are testable on volumes built in memory.
pub fn assemble(
    spec: &DatasetSpec,
    entry: &VolumeEntry,
    image: (AnyVolume, &Path),
    mask: Option<(&AnyVolume, &Path)>,
) -> Result<LoadedVolume, DatasetError> {
    let (image, image_path) = image;
    let dtype = image.dtype();
    let image_channels = spec.image_file_channels();
    check_channels(
        image.shape()[0],
        &image_channels,
        spec.files.image_channels.is_some(),
        &spec.image_channels,
        "image",
        image_path,
    )?;
    let file_spacing = image.spacing();
    let image_f32 = match &image {
        AnyVolume::U8(v) => v.select_channels(&image_channels).map(|v| v.map(f32::from)),
        AnyVolume::U16(v) => v.select_channels(&image_channels).map(|v| v.map(f32::from)),
        AnyVolume::F32(v) => v.select_channels(&image_channels),
    }
    .map_err(|e| DatasetError::Volume {
        path: image_path.to_owned(),
        message: e.to_string(),
    })?;
    let spacing = spec.spacing.or(file_spacing);
    let mask = match mask {
        None => None,
        Some((mask, mask_path)) => {
            let [_, mz, my, mx] = mask.shape();
            let [iz, iy, ix] = image_f32.spatial();
            if [mz, my, mx] != [iz, iy, ix] {
                return Err(DatasetError::Volume {
                    path: mask_path.to_owned(),
                    message: format!(
                        "mask of volume `{}` is {mz}×{my}×{mx} (Z×Y×X) but its image {} is \
                         {iz}×{iy}×{ix}",
                        entry.id,
                        image_path.display()
                    ),
                });
            }
            let mask_channels = spec.mask_file_channels();
            check_channels(
                mask.shape()[0],
                &mask_channels,
                spec.files.mask_channels.is_some(),
                &spec.mask_channels,
                "mask",
                mask_path,
            )?;
            let binary = mask
                .to_binary()
                .select_channels(&mask_channels)
                .map_err(|e| DatasetError::Volume {
                    path: mask_path.to_owned(),
                    message: e.to_string(),
                })?;
            Some(binary.with_spacing(spacing))
        }
    };
    Ok(LoadedVolume {
        id: entry.id.clone(),
        image: image_f32.with_spacing(spacing),
        mask,
        spacing,
        dtype,
    })
}

/// The file must hold the declared channels: exactly as many as named when no explicit
/// `files.*_channels` list is given, else enough for the highest listed index.
fn check_channels(
    file_channels: usize,
    indices: &[usize],
    explicit: bool,
    names: &[String],
    what: &str,
    path: &Path,
) -> Result<(), DatasetError> {
    let message = if explicit {
        indices.iter().find(|&&c| c >= file_channels).map(|c| {
            format!(
                "{what} file has {file_channels} channel(s) but files.{what}_channels \
                     asks for channel {c}"
            )
        })
    } else if file_channels != names.len() {
        Some(format!(
            "{what} file has {file_channels} channel(s) but dataset.toml declares {} \
             {what} channel(s) ({}); list the file channels to use in files.{what}_channels",
            names.len(),
            names.join(", ")
        ))
    } else {
        None
    };
    match message {
        Some(message) => Err(DatasetError::Volume {
            path: path.to_owned(),
            message,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(files_image: Option<Vec<usize>>) -> DatasetSpec {
        let mut s = DatasetSpec::from_toml_str(
            r#"
name = "t"
image_channels = ["golgi", "nuclei"]
mask_channels = ["golgi", "nuclei"]
[[volumes]]
id = "v1"
image = "i.tif"
mask = "m.tif"
"#,
        )
        .unwrap();
        s.files.image_channels = files_image;
        s
    }

    fn image(c: usize, z: usize, y: usize, x: usize) -> AnyVolume {
        let n = c * z * y * x;
        AnyVolume::U16(
            Volume::from_vec([c, z, y, x], (0..n).map(|i| i as u16).collect())
                .unwrap()
                .with_spacing(Some([2.0, 0.5, 0.5])),
        )
    }

    fn mask(c: usize, z: usize, y: usize, x: usize) -> AnyVolume {
        let n = c * z * y * x;
        AnyVolume::U8(
            Volume::from_vec(
                [c, z, y, x],
                (0..n).map(|i| (i % 3 == 0) as u8 * 255).collect(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn assemble_selects_channels_binarises_and_keeps_spacing() {
        let s = spec(Some(vec![2, 0]));
        let img = image(3, 2, 3, 4);
        let m = mask(2, 2, 3, 4);
        let v = assemble(
            &s,
            &s.volumes[0],
            (img, Path::new("i.tif")),
            Some((&m, Path::new("m.tif"))),
        )
        .unwrap();
        assert_eq!(v.image.shape(), [2, 2, 3, 4]);
        assert_eq!(v.image.get(0, 0, 0, 0), 48.0); // file channel 2 comes first
        assert_eq!(v.image.get(1, 0, 0, 1), 1.0);
        assert_eq!(v.dtype, DType::U16);
        assert_eq!(v.spacing, Some([2.0, 0.5, 0.5]));
        let mask = v.mask.unwrap();
        assert_eq!(mask.data()[..4], [1, 0, 0, 1]);
        assert_eq!(mask.spacing, Some([2.0, 0.5, 0.5]));
    }

    #[test]
    fn dataset_spacing_overrides_the_file() {
        let mut s = spec(None);
        s.spacing = Some([1.0, 0.2, 0.2]);
        let v = assemble(&s, &s.volumes[0], (image(2, 1, 2, 2), Path::new("i")), None).unwrap();
        assert_eq!(v.spacing, Some([1.0, 0.2, 0.2]));
        assert_eq!(v.image.spacing, Some([1.0, 0.2, 0.2]));
        assert!(v.mask.is_none());
    }

    /// The error message of assembling the first volume of `s` from `image` and `mask`.
    fn assemble_error(
        s: &DatasetSpec,
        image: (AnyVolume, &Path),
        mask: Option<(&AnyVolume, &Path)>,
    ) -> String {
        assemble(s, &s.volumes[0], image, mask)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn mask_shape_mismatch_names_the_mask_file_and_both_shapes() {
        let s = spec(None);
        let m = mask(2, 2, 3, 5);
        let err = assemble_error(
            &s,
            (image(2, 2, 3, 4), Path::new("data/i.tif")),
            Some((&m, Path::new("data/m.tif"))),
        );
        assert_eq!(
            err,
            "data/m.tif: mask of volume `v1` is 2×3×5 (Z×Y×X) but its image data/i.tif is 2×3×4"
        );
    }

    #[test]
    fn channel_count_mismatches_are_errors() {
        let s = spec(None);
        let err = assemble_error(&s, (image(3, 1, 2, 2), Path::new("i.tif")), None);
        assert!(
            err.starts_with("i.tif: image file has 3 channel(s) but dataset.toml declares 2"),
            "{err}"
        );
        let s = spec(Some(vec![0, 3]));
        let err = assemble_error(&s, (image(3, 1, 2, 2), Path::new("i.tif")), None);
        assert!(err.contains("asks for channel 3"), "{err}");
        let s = spec(None);
        let m = mask(3, 1, 2, 2);
        let err = assemble_error(
            &s,
            (image(2, 1, 2, 2), Path::new("i.tif")),
            Some((&m, Path::new("m.tif"))),
        );
        assert!(
            err.starts_with("m.tif: mask file has 3 channel(s)"),
            "{err}"
        );
    }

    #[test]
    fn open_reports_missing_files_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let toml = "name = \"t\"\nimage_channels = [\"nuclei\"]\nmask_channels = [\"nuclei\"]\n\
                    [[volumes]]\nid = \"v1\"\nimage = \"i.tif\"\nmask = \"m.tif\"\n";
        std::fs::write(dir.path().join(DATASET_FILE), toml).unwrap();
        let err = Dataset::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("dataset.toml: volumes[0] (`v1`): image file "),
            "{err}"
        );
        assert!(err.ends_with("i.tif not found"), "{err}");
        std::fs::write(
            dir.path().join(DATASET_FILE),
            toml.replace("mask =", "msk ="),
        )
        .unwrap();
        let err = Dataset::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("dataset.toml: line 7, column 1: unknown key `volumes[0].msk`"),
            "{err}"
        );
        assert!(err.ends_with("did you mean `mask`?"), "{err}");
    }

    #[test]
    fn fingerprint_follows_spec_and_file_contents() {
        let dir = tempfile::tempdir().unwrap();
        let toml = "name = \"t\"\nimage_channels = [\"nuclei\"]\nmask_channels = []\n\
                    [[volumes]]\nid = \"v1\"\nimage = \"i.tif\"\n";
        std::fs::write(dir.path().join(DATASET_FILE), toml).unwrap();
        std::fs::write(dir.path().join("i.tif"), b"abc").unwrap();
        let a = Dataset::open(dir.path()).unwrap().fingerprint().unwrap();
        assert_eq!(a.len(), 16);
        assert_eq!(a, Dataset::open(dir.path()).unwrap().fingerprint().unwrap());
        std::fs::write(dir.path().join("i.tif"), b"abd").unwrap();
        let b = Dataset::open(dir.path()).unwrap().fingerprint().unwrap();
        assert_ne!(a, b);
        std::fs::write(
            dir.path().join(DATASET_FILE),
            toml.replace("\"t\"", "\"u\""),
        )
        .unwrap();
        let c = Dataset::open(dir.path()).unwrap().fingerprint().unwrap();
        assert_ne!(b, c);
    }
}
