//! `seglab data import`: makes a dataset (a folder with a `dataset.toml`) of a folder of image
//! and mask TIFFs, after checking every file.
//!
//! Two layouts:
//! - **published** ([`super::published`]): `Images/<crop>.tif` and `Masks/<crop>.tif` for the
//!   eight published crop names, RGB stacks (red = Golgi, green = nuclei, blue = pairs in
//!   3-class masks). The dataset gets the channel names, the thesis' annotation hours and the
//!   two published split presets (`thesis`, `paper`).
//! - **folder**: anyone's data: `images/` (or `Images/`) and `masks/` (or `Masks/`), an image
//!   and its mask matched by file name (a mask may add `_mask`, `_masks`, `_label`, `_labels`
//!   or `_gt` to the image's stem); channel names follow the published channel order (1
//!   channel = nuclei; 2 = golgi, nuclei; 3 = golgi, nuclei, pair) unless given.
//!
//! Every image and mask is read once: shapes must agree (Z, Y, X), channel counts must be
//! the same across files, and each problem is one error naming the file. The dataset folder
//! is written atomically ([`crate::atomic::build_folder`]): a failed import writes nothing.
//! The files stay where they are (the `dataset.toml` lists them by relative path) unless
//! `copy` is set. A folder import writes `percentiles = "auto"` under `[preprocess]` (the
//! stretch floors chosen from the data, [`super::auto_floor`]) unless asked not to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::preprocess::Percentiles;
use super::published::{self, ANNOTATION_HOURS_PER_CROP, PAPER_SPLIT, THESIS_SPLIT};
use super::spec::{FileChannels, PreprocessDefaults, relative_path};
use super::splits::{Fold, FoldSpec, NamedSplit};
use super::{DATASET_FILE, DatasetError, DatasetSpec, MASK_CHANNELS, VolumeEntry};
use crate::atomic;
use crate::volume::{AnyVolume, read_tiff};

/// Where the files of an import come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportLayout {
    /// The published dataset's layout and crop names.
    Published,
    /// A folder of images and masks matched by file name.
    Folder,
}

/// What `data import` is asked to do.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub layout: ImportLayout,
    /// The dataset name [default: the destination folder's name].
    pub name: Option<String>,
    /// Names of the image files' channels (folder layout).
    pub image_channels: Option<Vec<String>>,
    /// Names of the mask files' channels (folder layout).
    pub mask_channels: Option<Vec<String>>,
    /// Copy the files into the dataset (`images/`, `masks/`) instead of listing them in place.
    pub copy: bool,
    /// Replace an existing destination folder.
    pub force: bool,
    /// Write `percentiles = "auto"` under `[preprocess]` (folder layout; the published layout
    /// keeps the published stretch of its preset).
    pub auto_percentiles: bool,
}

/// What an import wrote, with what it decided on the user's behalf.
#[derive(Clone, Debug)]
pub struct ImportSummary {
    pub dest: PathBuf,
    pub spec: DatasetSpec,
    /// One line per decision (channel names, dropped channels, annotation hours, splits).
    pub notes: Vec<String>,
}

/// One image file with its mask, as found in the source folder.
struct Pair {
    id: String,
    image: PathBuf,
    mask: Option<PathBuf>,
}

/// What the files say, read once.
struct Scanned {
    id: String,
    image: PathBuf,
    mask: Option<PathBuf>,
    shape: [usize; 3],
    image_channels: usize,
    mask_channels: usize,
    /// Per mask channel: whether any voxel is foreground.
    mask_used: Vec<bool>,
}

/// Imports `src` into the dataset folder `dest` (module doc). `progress(done, total)` is
/// called once per file pair read.
pub fn import(
    src: &Path,
    dest: &Path,
    options: &ImportOptions,
    progress: &dyn Fn(usize, usize),
) -> Result<ImportSummary, DatasetError> {
    let pairs = match options.layout {
        ImportLayout::Published => published_pairs(src)?,
        ImportLayout::Folder => folder_pairs(src)?,
    };
    let total = pairs.len();
    let mut scanned = Vec::with_capacity(total);
    for (i, p) in pairs.into_iter().enumerate() {
        scanned.push(scan(p)?);
        progress(i + 1, total);
    }
    let mut notes = Vec::new();
    let (image_channels, image_files) = image_channel_names(&scanned, options, &mut notes)?;
    let (mask_channels, mask_files) = mask_channel_names(&scanned, options, &mut notes)?;
    let name = match &options.name {
        Some(n) => n.clone(),
        None => dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "imported".into()),
    };
    let dest_abs = std::path::absolute(dest).map_err(|source| DatasetError::Io {
        path: dest.to_owned(),
        source,
    })?;
    let mut spec = DatasetSpec {
        name,
        description: Some(format!(
            "Imported by `seglab data import --layout {}` from {}",
            layout_name(options.layout),
            src.display()
        )),
        image_channels,
        mask_channels,
        spacing: None,
        annotation_hours_per_volume: None,
        files: FileChannels {
            image_channels: image_files,
            mask_channels: mask_files,
        },
        preprocess: PreprocessDefaults {
            percentiles: (options.auto_percentiles && options.layout == ImportLayout::Folder)
                .then_some(Percentiles::Auto),
        },
        splits: BTreeMap::new(),
        volumes: scanned
            .iter()
            .map(|s| VolumeEntry {
                id: s.id.clone(),
                image: file_entry(&s.image, "images", options.copy, &dest_abs),
                mask: s
                    .mask
                    .as_ref()
                    .map(|m| file_entry(m, "masks", options.copy, &dest_abs)),
                group: None,
                annotation_hours: None,
            })
            .collect(),
    };
    if options.layout == ImportLayout::Published {
        add_published_extras(&mut spec, &scanned, &mut notes);
    }
    spec.validate().map_err(|message| DatasetError::Spec {
        path: dest.join(DATASET_FILE),
        message,
    })?;
    let text = spec.to_toml_string();
    atomic::build_folder(dest, options.force, |tmp| -> Result<(), DatasetError> {
        if options.copy {
            for (s, v) in scanned.iter().zip(&spec.volumes) {
                copy_file(&s.image, &tmp.join(&v.image))?;
                if let (Some(from), Some(to)) = (&s.mask, &v.mask) {
                    copy_file(from, &tmp.join(to))?;
                }
            }
        }
        atomic::write_file(&tmp.join(DATASET_FILE), text.as_bytes())?;
        Ok(())
    })?;
    Ok(ImportSummary {
        dest: dest.to_owned(),
        spec,
        notes,
    })
}

fn layout_name(layout: ImportLayout) -> &'static str {
    match layout {
        ImportLayout::Published => "published",
        ImportLayout::Folder => "folder",
    }
}

impl std::str::FromStr for ImportLayout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "published" => Ok(ImportLayout::Published),
            "folder" => Ok(ImportLayout::Folder),
            _ => Err(format!("expected published or folder, got `{s}`")),
        }
    }
}

fn input_error(path: &Path, message: impl Into<String>) -> DatasetError {
    DatasetError::Volume {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The subfolder of `src` named one of `names` (the first that exists).
fn find_dir(src: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| src.join(n)).find(|p| p.is_dir())
}

/// The TIFF files of a folder, sorted by name: (stem, path).
fn tiff_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, DatasetError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DatasetError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| DatasetError::Io {
                path: dir.to_owned(),
                source,
            })?
            .path();
        let is_tiff = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("tif") || e.eq_ignore_ascii_case("tiff"));
        if is_tiff && path.is_file() {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((stem, path));
        }
    }
    files.sort();
    Ok(files)
}

/// The published layout: all eight crops, each with its mask, nothing else.
fn published_pairs(src: &Path) -> Result<Vec<Pair>, DatasetError> {
    let images_dir = find_dir(src, &[published::IMAGES_DIR, "images"]).ok_or_else(|| {
        input_error(
            src,
            format!(
                "the published layout has an `{}/` folder of crops; none here (use --layout \
                 folder for other data)",
                published::IMAGES_DIR
            ),
        )
    })?;
    let masks_dir = find_dir(src, &[published::MASKS_DIR, "masks"]).ok_or_else(|| {
        input_error(
            src,
            format!(
                "the published layout has a `{}/` folder of masks; none here",
                published::MASKS_DIR
            ),
        )
    })?;
    let images: BTreeMap<String, PathBuf> = tiff_files(&images_dir)?.into_iter().collect();
    let masks: BTreeMap<String, PathBuf> = tiff_files(&masks_dir)?.into_iter().collect();
    if let Some((stem, path)) = images.iter().find(|(s, _)| published::crop(s).is_none()) {
        return Err(input_error(
            path,
            format!(
                "`{stem}` is not a published crop name (Crop1 … Crop4, Crop5_BC … Crop8_BC); \
                 use --layout folder for other data"
            ),
        ));
    }
    published::CROPS
        .iter()
        .map(|c| {
            let image = images.get(c.name).cloned().ok_or_else(|| {
                input_error(
                    &images_dir,
                    format!(
                        "the published layout has eight crops; {}.tif is missing",
                        c.name
                    ),
                )
            })?;
            let mask = masks.get(c.name).cloned().ok_or_else(|| {
                input_error(
                    &masks_dir,
                    format!("no mask {}.tif for the crop {}", c.name, image.display()),
                )
            })?;
            Ok(Pair {
                id: c.name.to_string(),
                image,
                mask: Some(mask),
            })
        })
        .collect()
}

/// Suffixes a mask's file stem may add to its image's.
const MASK_SUFFIXES: [&str; 5] = ["_mask", "_masks", "_label", "_labels", "_gt"];

/// The folder layout: every image, with the mask of the same stem (or stem + a mask suffix).
fn folder_pairs(src: &Path) -> Result<Vec<Pair>, DatasetError> {
    let images_dir = find_dir(src, &["images", "Images"]).ok_or_else(|| {
        input_error(
            src,
            "expected an `images/` folder of TIFFs (and `masks/` beside it)",
        )
    })?;
    let images = tiff_files(&images_dir)?;
    if images.is_empty() {
        return Err(input_error(&images_dir, "holds no .tif or .tiff files"));
    }
    let masks: BTreeMap<String, PathBuf> = match find_dir(src, &["masks", "Masks"]) {
        Some(dir) => tiff_files(&dir)?.into_iter().collect(),
        None => BTreeMap::new(),
    };
    let mut used = std::collections::HashSet::new();
    let pairs: Vec<Pair> = images
        .into_iter()
        .map(|(stem, image)| {
            let found = std::iter::once(stem.clone())
                .chain(MASK_SUFFIXES.iter().map(|s| format!("{stem}{s}")))
                .find(|k| masks.contains_key(k));
            if let Some(k) = &found {
                used.insert(k.clone());
            }
            Pair {
                mask: found.map(|k| masks[&k].clone()),
                id: stem,
                image,
            }
        })
        .collect();
    if let Some((_, path)) = masks.iter().find(|(k, _)| !used.contains(*k)) {
        return Err(input_error(
            path,
            "matches no image (a mask is named like its image, optionally with _mask, \
             _label or _gt before .tif)",
        ));
    }
    if !masks.is_empty()
        && let Some(p) = pairs.iter().find(|p| p.mask.is_none())
    {
        return Err(input_error(
            &p.image,
            "has no mask in masks/ (every image needs one when masks/ exists)",
        ));
    }
    Ok(pairs)
}

/// Reads a pair's files and checks that they agree.
fn scan(p: Pair) -> Result<Scanned, DatasetError> {
    let image = read_tiff(&p.image)?;
    let [ci, z, y, x] = image.shape();
    let (mask_channels, mask_used) = match &p.mask {
        Some(path) => {
            let mask = read_tiff(path)?;
            let [cm, mz, my, mx] = mask.shape();
            if [mz, my, mx] != [z, y, x] {
                return Err(input_error(
                    path,
                    format!(
                        "mask shape (Z, Y, X) {mz} × {my} × {mx} differs from its image's \
                         {z} × {y} × {x} ({})",
                        p.image.display()
                    ),
                ));
            }
            (cm, channels_used(&mask))
        }
        None => (0, Vec::new()),
    };
    Ok(Scanned {
        id: p.id,
        image: p.image,
        mask: p.mask,
        shape: [z, y, x],
        image_channels: ci,
        mask_channels,
        mask_used,
    })
}

/// For each channel, whether it holds any non-zero voxel.
fn channels_used(v: &AnyVolume) -> Vec<bool> {
    let b = v.to_binary();
    b.channel_slices()
        .map(|c| c.iter().any(|&v| v != 0))
        .collect()
}

/// The channel count all files share, or an error naming the first file that differs.
fn common_count(
    scanned: &[Scanned],
    what: &str,
    count: impl Fn(&Scanned) -> Option<(usize, &Path)>,
) -> Result<Option<usize>, DatasetError> {
    let mut first: Option<(usize, &Path)> = None;
    for s in scanned {
        let Some((n, path)) = count(s) else { continue };
        match first {
            None => first = Some((n, path)),
            Some((m, first_path)) if m != n => {
                return Err(input_error(
                    path,
                    format!(
                        "has {n} {what} channels where {} has {m}: all files need the same \
                         channels",
                        first_path.display()
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(first.map(|(n, _)| n))
}

/// Default names for `n` channels in the published channel order.
fn default_names(n: usize) -> Vec<String> {
    let names: &[&str] = match n {
        1 => &["nuclei"],
        _ => &MASK_CHANNELS[..n.min(3)],
    };
    names.iter().map(|s| s.to_string()).collect()
}

/// Image channel names and, when not all of the files' channels are used, which ones.
fn image_channel_names(
    scanned: &[Scanned],
    options: &ImportOptions,
    notes: &mut Vec<String>,
) -> Result<(Vec<String>, Option<Vec<usize>>), DatasetError> {
    let n = common_count(scanned, "image", |s| Some((s.image_channels, &s.image)))?
        .expect("at least one image");
    let first = &scanned[0].image;
    if let Some(names) = &options.image_channels {
        if names.len() > n {
            return Err(input_error(
                first,
                format!(
                    "--image-channels names {} channels, the images have {n}",
                    names.len()
                ),
            ));
        }
        let used = (names.len() < n).then(|| (0..names.len()).collect());
        return Ok((names.clone(), used));
    }
    match (options.layout, n) {
        (ImportLayout::Published, n) if n >= 2 => {
            notes.push("image channels: red = golgi, green = nuclei (blue unused)".into());
            Ok((default_names(2), (n > 2).then(|| vec![0, 1])))
        }
        (ImportLayout::Published, _) => Err(input_error(
            first,
            format!(
                "a published crop is an RGB stack (red Golgi, green nuclei); this has {n} channel"
            ),
        )),
        (ImportLayout::Folder, 1 | 2) => {
            let names = default_names(n);
            notes.push(format!(
                "image channels: {} (published order; name them with --image-channels)",
                names.join(", ")
            ));
            Ok((names, None))
        }
        (ImportLayout::Folder, _) => {
            notes.push(format!(
                "image channels: the first two of {n} are golgi, nuclei (published order; name \
                 them with --image-channels)"
            ));
            Ok((default_names(2), Some(vec![0, 1])))
        }
    }
}

/// Mask channel names and, when not all of the files' channels are used, which ones. A third
/// channel that is empty in every mask (the blue channel of 2-class masks) is left out.
fn mask_channel_names(
    scanned: &[Scanned],
    options: &ImportOptions,
    notes: &mut Vec<String>,
) -> Result<(Vec<String>, Option<Vec<usize>>), DatasetError> {
    let Some(n) = common_count(scanned, "mask", |s| {
        s.mask.as_deref().map(|m| (s.mask_channels, m))
    })?
    else {
        notes.push("no masks: unlabelled volumes (a CycleGAN can still train on them)".into());
        return Ok((Vec::new(), None));
    };
    let first = scanned
        .iter()
        .find_map(|s| s.mask.as_deref())
        .expect("a mask");
    let names = match &options.mask_channels {
        Some(names) => {
            if names.len() > n {
                return Err(input_error(
                    first,
                    format!(
                        "--mask-channels names {} channels, the masks have {n}",
                        names.len()
                    ),
                ));
            }
            names.clone()
        }
        None => default_names(n),
    };
    let pair_used = scanned
        .iter()
        .any(|s| s.mask_used.get(2).copied().unwrap_or(false));
    let (names, used) = if options.mask_channels.is_none() && names.len() == 3 && !pair_used {
        notes
            .push("mask channels: golgi, nuclei (the third channel is empty in every mask)".into());
        (names[..2].to_vec(), Some(vec![0, 1]))
    } else {
        notes.push(format!("mask channels: {}", names.join(", ")));
        let used = (names.len() < n).then(|| (0..names.len()).collect());
        (names, used)
    };
    Ok((names, used))
}

/// The thesis' annotation hours (28 h for a crop of the published size, scaled by voxel
/// count for a crop drawn smaller) and the two published split presets.
fn add_published_extras(spec: &mut DatasetSpec, scanned: &[Scanned], notes: &mut Vec<String>) {
    let mut total = 0.0;
    for (v, s) in spec.volumes.iter_mut().zip(scanned) {
        let crop = published::crop(&s.id).expect("published names were checked");
        let ratio =
            s.shape.iter().product::<usize>() as f64 / crop.shape.iter().product::<usize>() as f64;
        let hours = (ANNOTATION_HOURS_PER_CROP * ratio * 100.0).round() / 100.0;
        total += hours;
        v.annotation_hours = Some(hours);
    }
    notes.push(format!(
        "annotation hours: {ANNOTATION_HOURS_PER_CROP} h per published crop (thesis §5.3.4), \
         scaled by voxel count: {total:.2} h in all"
    ));
    let preset = |folds: Vec<Fold>, description: &str| NamedSplit {
        description: Some(description.to_string()),
        folds: folds.iter().map(FoldSpec::from).collect(),
    };
    spec.splits.insert(
        THESIS_SPLIT.into(),
        preset(
            published::thesis_split(),
            "thesis §5.3: train Crop1, Crop2, Crop3, Crop8_BC; validate Crop4, Crop6_BC; test \
             Crop5_BC, Crop7_BC",
        ),
    );
    spec.splits.insert(
        PAPER_SPLIT.into(),
        preset(
            published::paper_split(),
            "EMBC paper §II-C: nested 3-fold (test, validation and training parts rotate) over \
             the eight crops",
        ),
    );
    notes.push(format!(
        "split presets: `{THESIS_SPLIT}` (1 fold) and `{PAPER_SPLIT}` (nested 3-fold); choose one \
         with `cv.split` in a sweep spec"
    ));
}

/// The `dataset.toml` entry of a file: `<subdir>/<name>` when copied, else its path relative
/// to the dataset folder.
fn file_entry(file: &Path, subdir: &str, copy: bool, dest_abs: &Path) -> PathBuf {
    if copy {
        return Path::new(subdir).join(file.file_name().expect("a file"));
    }
    match std::path::absolute(file) {
        Ok(abs) => relative_path(&abs, dest_abs),
        Err(_) => file.to_owned(),
    }
}

fn copy_file(from: &Path, to: &Path) -> Result<(), DatasetError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|source| DatasetError::Io {
            path: parent.to_owned(),
            source,
        })?;
    }
    std::fs::copy(from, to).map_err(|source| DatasetError::Io {
        path: from.to_owned(),
        source,
    })?;
    Ok(())
}
