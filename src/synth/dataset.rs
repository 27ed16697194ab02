//! Writing generated data to disk: one synthetic mask file, a synthetic-mask set shaped like a
//! real dataset, and a phantom dataset folder with its `dataset.toml` and README.
//!
//! Every output is written under a temporary name and renamed into place, so an interrupted
//! run leaves no partial file or folder behind.

use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::SynthError;
use super::config::MaskConfig;
use super::masks::{MaskReport, generate_masks};
use super::phantom::{PhantomConfig, PhantomPreset, PhantomReport, render_phantom};
use super::rng::volume_seed;
use crate::dataset::{DATASET_FILE, DatasetSpec, VolumeEntry};
use crate::volume::{AnyVolume, Spacing, Volume, read_tiff, write_mask, write_tiff};

/// Manual annotation estimate of the thesis: 28 hours per real crop (thesis §5.4, Table 5.7).
pub const THESIS_ANNOTATION_HOURS_PER_CROP: f64 = 28.0;

/// Mean voxel count of the eight real crops (original-code-behaviour.md §1.1), the size the
/// thesis' 28 hours refer to.
pub const MEAN_CROP_VOXELS: f64 = (505.0 * 618.0 * 56.0
    + 703.0 * 553.0 * 56.0
    + 668.0 * 553.0 * 56.0
    + 818.0 * 257.0 * 56.0
    + 2.0 * 647.0 * 627.0 * 56.0
    + 557.0 * 491.0 * 55.0
    + 586.0 * 519.0 * 61.0)
    / 8.0;

/// The thesis' annotation hours scaled to a volume of `shape` by voxel count.
pub fn annotation_hours(shape: [usize; 3]) -> f64 {
    let v = shape.iter().product::<usize>() as f64;
    let h = THESIS_ANNOTATION_HOURS_PER_CROP * v / MEAN_CROP_VOXELS;
    (h * 100.0).round() / 100.0
}

/// A temporary sibling of `path` (same folder, so the final rename is atomic).
fn temporary_sibling(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    path.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

/// Writes a file through `write` under a temporary name, then renames it to `path`.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), SynthError>,
) -> Result<(), SynthError> {
    // Keep the extension: writers may choose the format by it.
    let tmp = match path.extension() {
        Some(ext) => {
            let mut t = temporary_sibling(path, "tmp").into_os_string();
            t.push(".");
            t.push(ext);
            PathBuf::from(t)
        }
        None => temporary_sibling(path, "tmp"),
    };
    let result =
        write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| SynthError::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes a text file atomically.
fn write_text(path: &Path, text: &str) -> Result<(), SynthError> {
    write_atomically(path, |tmp| {
        std::fs::write(tmp, text).map_err(|e| SynthError::io(tmp, e))
    })
}

/// Builds a folder under a temporary name and renames it to `out`. An existing `out` is an
/// error unless `force`, in which case it is replaced only after the new one is complete.
fn build_folder<T>(
    out: &Path,
    force: bool,
    build: impl FnOnce(&Path) -> Result<T, SynthError>,
) -> Result<T, SynthError> {
    if out.exists() && !force {
        return Err(SynthError::Input {
            path: out.to_owned(),
            message: "already exists (use --force to replace it)".into(),
        });
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| SynthError::io(parent, e))?;
    }
    let tmp = temporary_sibling(out, "tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| SynthError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| SynthError::io(&tmp, e))?;
    let value = match build(&tmp) {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if out.exists() {
        let old = temporary_sibling(out, "old");
        std::fs::rename(out, &old).map_err(|e| SynthError::io(out, e))?;
        std::fs::rename(&tmp, out).map_err(|e| SynthError::io(out, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| SynthError::io(&old, e))?;
    } else {
        std::fs::rename(&tmp, out).map_err(|e| SynthError::io(out, e))?;
    }
    Ok(value)
}

fn create_dir(path: &Path) -> Result<(), SynthError> {
    std::fs::create_dir_all(path).map_err(|e| SynthError::io(path, e))
}

/// Writes a 0/1 mask as a uint8 0/255 TIFF, atomically.
pub fn write_mask_file(path: &Path, mask: &Volume<u8>) -> Result<(), SynthError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir(parent)?;
    }
    write_atomically(path, |tmp| Ok(write_mask(tmp, mask)?))
}

fn write_image_file(path: &Path, image: &AnyVolume) -> Result<(), SynthError> {
    write_atomically(path, |tmp| Ok(write_tiff(tmp, image)?))
}

/// One volume of a real dataset, as far as the generators need it.
#[derive(Clone, Debug, PartialEq)]
pub struct LikeVolume {
    pub id: String,
    /// The image file, as an absolute path.
    pub image: PathBuf,
    /// (Z, Y, X).
    pub shape: [usize; 3],
    pub spacing: Option<Spacing>,
    pub group: Option<String>,
}

/// Reads a dataset's `dataset.toml` (a file or the folder holding it) and the shape of every
/// image. Kept small on purpose: the dataset loader of `dataset/` will replace it.
pub fn read_like(dataset: &Path) -> Result<(DatasetSpec, Vec<LikeVolume>), SynthError> {
    let file = if dataset.is_dir() {
        dataset.join(DATASET_FILE)
    } else {
        dataset.to_owned()
    };
    let text = std::fs::read_to_string(&file).map_err(|e| SynthError::io(&file, e))?;
    let spec: DatasetSpec = toml::from_str(&text).map_err(|e| SynthError::ConfigFile {
        path: file.clone(),
        message: e.to_string(),
    })?;
    let root = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let root = std::path::absolute(&root).map_err(|e| SynthError::io(&root, e))?;
    if spec.volumes.is_empty() {
        return Err(SynthError::Input {
            path: file,
            message: "lists no volumes".into(),
        });
    }
    let volumes = spec
        .volumes
        .iter()
        .map(|v| {
            let image = root.join(&v.image);
            let vol = read_tiff(&image)?;
            let [_, z, y, x] = vol.shape();
            Ok(LikeVolume {
                id: v.id.clone(),
                image,
                shape: [z, y, x],
                spacing: spec.spacing.or(vol.spacing()),
                group: v.group.clone(),
            })
        })
        .collect::<Result<Vec<_>, SynthError>>()?;
    Ok((spec, volumes))
}

/// `target` relative to the folder `base` when both are absolute and share a root.
fn relative_path(target: &Path, base: &Path) -> PathBuf {
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

/// Provenance of a generated folder, written next to its `dataset.toml`.
#[derive(Serialize)]
struct Provenance<'a, C: Serialize> {
    generator: &'a str,
    seglab_version: &'a str,
    seed: u64,
    /// How per-volume seeds are derived.
    volume_seeds: &'a str,
    config: &'a C,
}

const VOLUME_SEEDS: &str = "volume i (0-based) uses seglab::synth::rng::volume_seed(seed, i)";

/// What [`write_masks_like`] produced.
#[derive(Clone, Debug, Serialize)]
pub struct MaskSetSummary {
    pub out: PathBuf,
    pub reports: Vec<MaskReport>,
}

/// Generates one synthetic mask per volume of the real dataset `dataset`, with the same
/// shapes, into the folder `out` (`masks/<id>.tif`, `dataset.toml`, `synth.toml`,
/// `synth-report.json`). `progress(done, total)` is called once per finished volume.
///
/// The `dataset.toml` lists the *real* images next to the synthetic masks: the pairs are
/// unpaired by construction (the masks are random), which is exactly the CycleGAN's training
/// input; its description says so, and no supervised model should be trained on it.
pub fn write_masks_like(
    config: &MaskConfig,
    dataset: &Path,
    seed: u64,
    out: &Path,
    force: bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<MaskSetSummary, SynthError> {
    config.validate()?;
    let (spec, volumes) = read_like(dataset)?;
    let out_abs = std::path::absolute(out).map_err(|e| SynthError::io(out, e))?;
    let reports = build_folder(out, force, |tmp| {
        create_dir(&tmp.join("masks"))?;
        let mut reports = Vec::with_capacity(volumes.len());
        let mut entries = Vec::with_capacity(volumes.len());
        for (i, v) in volumes.iter().enumerate() {
            let generated = generate_masks(config, v.shape, volume_seed(seed, i))?;
            let mask_rel = PathBuf::from("masks").join(format!("{}.tif", v.id));
            let mask = generated.mask.with_spacing(v.spacing);
            write_mask_file(&tmp.join(&mask_rel), &mask)?;
            entries.push(VolumeEntry {
                id: v.id.clone(),
                image: relative_path(&v.image, &out_abs),
                mask: Some(mask_rel),
                group: v.group.clone(),
                annotation_hours: None,
            });
            reports.push(generated.report);
            progress(i + 1, volumes.len());
        }
        let out_spec = DatasetSpec {
            name: format!("{}-synthetic-masks", spec.name),
            description: Some(format!(
                "UNPAIRED: synthetic {}-class masks (seglab synth masks, seed {seed}) shaped like \
                 the volumes of `{}`; the images are the real volumes they mirror, listed for \
                 CycleGAN training. Never use it for supervised training or evaluation.",
                config.classes, spec.name
            )),
            image_channels: spec.image_channels.clone(),
            mask_channels: config
                .channel_names()
                .into_iter()
                .map(String::from)
                .collect(),
            spacing: spec.spacing,
            annotation_hours_per_volume: Some(0.0),
            files: crate::dataset::spec::FileChannels {
                image_channels: spec.files.image_channels.clone(),
                mask_channels: None,
            },
            preprocess: spec.preprocess.clone(),
            volumes: entries,
        };
        write_toml(&tmp.join(DATASET_FILE), &out_spec)?;
        write_toml(
            &tmp.join("synth.toml"),
            &Provenance {
                generator: "seglab synth masks",
                seglab_version: env!("CARGO_PKG_VERSION"),
                seed,
                volume_seeds: VOLUME_SEEDS,
                config,
            },
        )?;
        let json = serde_json::to_string_pretty(&reports).expect("reports serialise");
        write_text(&tmp.join("synth-report.json"), &json)?;
        Ok(reports)
    })?;
    Ok(MaskSetSummary {
        out: out.to_owned(),
        reports,
    })
}

fn write_toml(path: &Path, value: &impl Serialize) -> Result<(), SynthError> {
    let text = toml::to_string_pretty(value).map_err(|e| SynthError::Input {
        path: path.to_owned(),
        message: format!("cannot serialise: {e}"),
    })?;
    write_text(path, &text)
}

/// What [`write_phantom_dataset`] produced.
#[derive(Clone, Debug, Serialize)]
pub struct PhantomSummary {
    pub out: PathBuf,
    pub spec: DatasetSpec,
    pub reports: Vec<PhantomReport>,
}

/// Renders `volumes` phantom volumes of `shape` = (Z, Y, X) into the dataset folder `out`:
/// `images/volNN.tif` (channels golgi, nuclei), `masks/volNN.tif` (golgi, nuclei[, pair]),
/// `dataset.toml`, `phantom.toml` (the full configuration and seed) and a README describing
/// the image-formation model. Annotation hours are the thesis' 28 h per crop scaled by voxel
/// count (see [`annotation_hours`]). Volumes are rendered in parallel; `progress(done, total)` is
/// called once per finished volume.
#[allow(clippy::too_many_arguments)]
pub fn write_phantom_dataset(
    config: &PhantomConfig,
    preset: Option<PhantomPreset>,
    volumes: usize,
    shape: [usize; 3],
    seed: u64,
    out: &Path,
    force: bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<PhantomSummary, SynthError> {
    config.validate()?;
    if volumes == 0 {
        return Err(SynthError::config("volumes", "must be ≥ 1, got 0"));
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .unwrap_or_else(|| "phantom".into());
    let width = volumes.to_string().len().max(2);
    let ids: Vec<String> = (1..=volumes).map(|i| format!("vol{i:0width$}")).collect();
    let hours = annotation_hours(shape);
    let (spec, reports) = build_folder(out, force, |tmp| {
        create_dir(&tmp.join("images"))?;
        create_dir(&tmp.join("masks"))?;
        let done = std::sync::atomic::AtomicUsize::new(0);
        let reports = ids
            .par_iter()
            .enumerate()
            .map(|(i, id)| {
                let p = render_phantom(config, shape, volume_seed(seed, i))?;
                write_image_file(&tmp.join("images").join(format!("{id}.tif")), &p.image)?;
                write_mask_file(&tmp.join("masks").join(format!("{id}.tif")), &p.mask)?;
                let finished = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                progress(finished, volumes);
                Ok(p.report)
            })
            .collect::<Result<Vec<_>, SynthError>>()?;
        let preset_name = preset.map(|p| p.name()).unwrap_or("custom");
        let spec = DatasetSpec {
            name: name.clone(),
            description: Some(format!(
                "Phantom `{preset_name}` volumes (seglab synth phantom, seed {seed}): exact \
                 ground truth, see README.md"
            )),
            image_channels: vec!["golgi".into(), "nuclei".into()],
            mask_channels: config
                .mask_channel_names()
                .into_iter()
                .map(String::from)
                .collect(),
            spacing: None,
            annotation_hours_per_volume: Some(hours),
            files: Default::default(),
            preprocess: Default::default(),
            volumes: ids
                .iter()
                .map(|id| VolumeEntry {
                    id: id.clone(),
                    image: PathBuf::from("images").join(format!("{id}.tif")),
                    mask: Some(PathBuf::from("masks").join(format!("{id}.tif"))),
                    group: None,
                    annotation_hours: None,
                })
                .collect(),
        };
        write_toml(&tmp.join(DATASET_FILE), &spec)?;
        write_toml(
            &tmp.join("phantom.toml"),
            &Provenance {
                generator: "seglab synth phantom",
                seglab_version: env!("CARGO_PKG_VERSION"),
                seed,
                volume_seeds: VOLUME_SEEDS,
                config,
            },
        )?;
        write_text(
            &tmp.join("README.md"),
            &phantom_readme(&name, preset_name, volumes, shape, seed, hours, &reports),
        )?;
        Ok((spec, reports))
    })?;
    Ok(PhantomSummary {
        out: out.to_owned(),
        spec,
        reports,
    })
}

fn phantom_readme(
    name: &str,
    preset: &str,
    volumes: usize,
    shape: [usize; 3],
    seed: u64,
    hours: f64,
    reports: &[PhantomReport],
) -> String {
    let [z, y, x] = shape;
    let mut s = format!(
        "# {name}\n\n\
         A phantom nucleus–Golgi dataset made by `seglab synth phantom --preset {preset} \
         --volumes {volumes} --shape {z}x{y}x{x} --seed {seed}`. The full configuration is in \
         `phantom.toml`; the same command (same seglab version) makes the same files.\n\n\
         - `images/volNN.tif`: channels golgi, nuclei (like the real crops: red = Golgi, green \
         = nuclei).\n\
         - `masks/volNN.tif`: uint8 0/255, channels as listed in `dataset.toml` (golgi, \
         nuclei[, pair]).\n\
         - Annotation hours in `dataset.toml` are the thesis' estimate of 28 h per real crop \
         scaled by voxel count ({hours} h for {z}×{y}×{x} voxels), so that timing reports can \
         compare manual annotation with synthetic masks as the thesis does (Table 5.7). No \
         one annotated these volumes.\n\n\
         | volume | nuclei | with Golgi | Golgi without nucleus | dust blobs |\n\
         |---|---|---|---|---|\n"
    );
    for (i, r) in reports.iter().enumerate() {
        s.push_str(&format!(
            "| vol{:02} | {} | {} | {} | {} |\n",
            i + 1,
            r.nuclei,
            r.paired,
            r.lone_golgi,
            r.dust.len()
        ));
    }
    s.push_str("\n## Image-formation model\n\n");
    s.push_str(include_str!("phantom.md"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_hours_scale_with_voxels() {
        assert!(
            (MEAN_CROP_VOXELS - 18.84e6).abs() < 0.01e6,
            "{MEAN_CROP_VOXELS}"
        );
        let h = annotation_hours([48, 192, 192]);
        assert!((h - 2.63).abs() < 0.01, "{h}");
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

    #[test]
    fn existing_output_folder_is_refused_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("set");
        std::fs::create_dir(&out).unwrap();
        let err = build_folder(&out, false, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        // With force the old folder is replaced only after the new one is built.
        std::fs::write(out.join("old.txt"), "x").unwrap();
        build_folder(&out, true, |tmp| {
            std::fs::write(tmp.join("new.txt"), "y").map_err(|e| SynthError::io(tmp, e))
        })
        .unwrap();
        assert!(out.join("new.txt").exists() && !out.join("old.txt").exists());
        // A failing build leaves the existing folder untouched and no temporary behind.
        let err = build_folder(&out, true, |_| -> Result<(), _> {
            Err(SynthError::config("x", "boom"))
        });
        assert!(err.is_err());
        assert!(out.join("new.txt").exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }
}
