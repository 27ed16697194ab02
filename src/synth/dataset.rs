//! Writing generated data to disk: one synthetic mask file, a synthetic-mask set shaped like a
//! real dataset, and a phantom dataset folder with its `dataset.toml` and README.
//!
//! Every output is written under a temporary name and renamed into place, so an interrupted
//! run leaves no partial file or folder behind.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::SynthError;
use super::config::MaskConfig;
use super::masks::{MaskReport, generate_masks};
use super::phantom::{PhantomConfig, PhantomPreset, PhantomReport, render_phantom};
use super::rng::volume_seed;
use crate::atomic;
use crate::dataset::published;
use crate::dataset::spec::relative_path;
use crate::dataset::{DATASET_FILE, DatasetSpec, VolumeEntry};
use crate::volume::{
    AnyVolume, Spacing, Volume, read_tiff, write_mask, write_rgb_stack, write_tiff,
};

/// The thesis' annotation hours scaled to a volume of `shape` by voxel count.
pub fn annotation_hours(shape: [usize; 3]) -> f64 {
    let v = shape.iter().product::<usize>() as f64;
    let h = published::ANNOTATION_HOURS_PER_CROP * v / published::mean_crop_voxels();
    (h * 100.0).round() / 100.0
}

/// Writes a text file atomically.
fn write_text(path: &Path, text: &str) -> Result<(), SynthError> {
    Ok(atomic::write_file(path, text.as_bytes())?)
}

fn create_dir(path: &Path) -> Result<(), SynthError> {
    std::fs::create_dir_all(path).map_err(|e| SynthError::io(path, e))
}

/// Writes a 0/1 mask as a uint8 0/255 TIFF, atomically.
pub fn write_mask_file(path: &Path, mask: &Volume<u8>) -> Result<(), SynthError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir(parent)?;
    }
    atomic::write_file_with(path, |tmp| Ok(write_mask(tmp, mask)?))
}

fn write_image_file(path: &Path, image: &AnyVolume) -> Result<(), SynthError> {
    atomic::write_file_with(path, |tmp| Ok(write_tiff(tmp, image)?))
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
/// image.
pub fn read_like(dataset: &Path) -> Result<(DatasetSpec, Vec<LikeVolume>), SynthError> {
    let file = if dataset.is_dir() {
        dataset.join(DATASET_FILE)
    } else {
        dataset.to_owned()
    };
    let spec = DatasetSpec::read_file(&file)?;
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

/// Writes the provenance of a generated folder to `path` (TOML): the command, seglab's
/// version, the seed, how per-volume seeds follow from it, and the generator's settings.
fn write_provenance<C: Serialize>(
    path: &Path,
    generator: &str,
    seed: u64,
    config: &C,
) -> Result<(), SynthError> {
    write_toml(
        path,
        &Provenance {
            generator,
            seglab_version: env!("CARGO_PKG_VERSION"),
            seed,
            volume_seeds: VOLUME_SEEDS,
            config,
        },
    )
}

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
    let reports = atomic::build_folder(out, force, |tmp| -> Result<_, SynthError> {
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
            splits: Default::default(),
            volumes: entries,
        };
        write_toml(&tmp.join(DATASET_FILE), &out_spec)?;
        write_provenance(&tmp.join("synth.toml"), "seglab synth masks", seed, config)?;
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
    let (spec, reports) = atomic::build_folder(out, force, |tmp| -> Result<_, SynthError> {
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
            splits: Default::default(),
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
        write_provenance(
            &tmp.join("phantom.toml"),
            "seglab synth phantom",
            seed,
            config,
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

/// What [`write_published_phantom`] produced.
#[derive(Clone, Debug, Serialize)]
pub struct PublishedPhantomSummary {
    pub out: PathBuf,
    /// (crop name, shape (Z, Y, X)) in the published order.
    pub crops: Vec<(String, [usize; 3])>,
    pub reports: Vec<PhantomReport>,
}

/// Renders the eight published crops (`dataset::published::CROPS`, their Y and X extents
/// times `scale`) into `out` in the published file layout: `Images/<crop>.tif` (RGB pages:
/// red = Golgi, green = nuclei, blue empty) and `Masks/<crop>.tif` (red = Golgi, green =
/// nuclei, blue = pairs for 3-class masks, else empty), plus `phantom.toml` and a README. No
/// `dataset.toml`: `seglab data import OUT --layout published` makes the dataset, as for the
/// published files themselves.
pub fn write_published_phantom(
    config: &PhantomConfig,
    scale: f64,
    seed: u64,
    out: &Path,
    force: bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<PublishedPhantomSummary, SynthError> {
    config.validate()?;
    if !(scale > 0.0 && scale <= 1.0) {
        return Err(SynthError::config(
            "scale",
            format!("must lie within (0, 1], got {scale}"),
        ));
    }
    if config.sample_type != crate::volume::DType::U8 {
        return Err(SynthError::config(
            "sample_type",
            format!(
                "the published layout stores uint8 RGB pages, got {}",
                config.sample_type
            ),
        ));
    }
    let crops: Vec<(String, [usize; 3])> = published::CROPS
        .iter()
        .map(|c| (c.name.to_string(), published::scaled_shape(c, scale)))
        .collect();
    if let Some((name, shape)) = crops.iter().find(|(_, s)| s[1] < 32 || s[2] < 32) {
        return Err(SynthError::config(
            "scale",
            format!(
                "{scale} makes {name} {}×{}×{} voxels; every crop needs Y and X ≥ 32",
                shape[0], shape[1], shape[2]
            ),
        ));
    }
    let reports = atomic::build_folder(out, force, |tmp| -> Result<_, SynthError> {
        create_dir(&tmp.join(published::IMAGES_DIR))?;
        create_dir(&tmp.join(published::MASKS_DIR))?;
        let done = std::sync::atomic::AtomicUsize::new(0);
        let reports = crops
            .par_iter()
            .enumerate()
            .map(|(i, (name, shape))| {
                let p = render_phantom(config, *shape, volume_seed(seed, i))?;
                let file = format!("{name}.tif");
                let AnyVolume::U8(image) = &p.image else {
                    unreachable!("sample_type u8 was checked above")
                };
                let image = rgb(image, 1);
                write_rgb_file(&tmp.join(published::IMAGES_DIR).join(&file), &image)?;
                let mask = rgb(&p.mask, 255);
                write_rgb_file(&tmp.join(published::MASKS_DIR).join(&file), &mask)?;
                let finished = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                progress(finished, crops.len());
                Ok(p.report)
            })
            .collect::<Result<Vec<_>, SynthError>>()?;
        write_provenance(
            &tmp.join("phantom.toml"),
            "seglab synth phantom --preset published",
            seed,
            config,
        )?;
        write_text(
            &tmp.join("README.md"),
            &published_readme(scale, seed, &crops, &reports),
        )?;
        Ok(reports)
    })?;
    Ok(PublishedPhantomSummary {
        out: out.to_owned(),
        crops,
        reports,
    })
}

/// Three RGB channels from the first channels of `v` (values times `factor`), the missing
/// ones empty.
fn rgb(v: &Volume<u8>, factor: u8) -> Volume<u8> {
    let [c, z, y, x] = v.shape();
    let mut out = Volume::<u8>::zeros([3, z, y, x]);
    for ch in 0..c.min(3) {
        for (d, &s) in out.channel_mut(ch).iter_mut().zip(v.channel(ch)) {
            *d = s.saturating_mul(factor);
        }
    }
    out
}

fn write_rgb_file(path: &Path, v: &Volume<u8>) -> Result<(), SynthError> {
    atomic::write_file_with(path, |tmp| Ok(write_rgb_stack(tmp, v)?))
}

fn published_readme(
    scale: f64,
    seed: u64,
    crops: &[(String, [usize; 3])],
    reports: &[PhantomReport],
) -> String {
    let mut s = format!(
        "# Phantom crops in the published layout\n\n\
         Made by `seglab synth phantom --preset published --scale {scale} --seed {seed}`: the \
         eight crops of the published dataset (thesis §4.1), their Y and X extents times \
         {scale}, with objects at the published scale. The full configuration is in \
         `phantom.toml`.\n\n\
         - `Images/<crop>.tif`: one RGB page per z slice, uint8: red = Golgi, green = nuclei, \
         blue empty.\n\
         - `Masks/<crop>.tif`: exact ground truth, 0/255: red = Golgi, green = nuclei, blue = \
         nucleus–Golgi pairs.\n\n\
         Make a dataset of it with `seglab data import <this folder> --out DEST --layout \
         published` (it adds the thesis and paper split presets).\n\n\
         | crop | Z × Y × X | nuclei | with Golgi | Golgi without nucleus | dust blobs |\n\
         |---|---|---|---|---|---|\n"
    );
    for ((name, [z, y, x]), r) in crops.iter().zip(reports) {
        s.push_str(&format!(
            "| {name} | {z} × {y} × {x} | {}\n",
            count_cells(r)
        ));
    }
    with_model_section(s)
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
        s.push_str(&format!("| vol{:02} | {}\n", i + 1, count_cells(r)));
    }
    with_model_section(s)
}

/// The object counts of one phantom volume as the last cells of a README table row: nuclei,
/// nuclei with Golgi, Golgi without nucleus, dust blobs.
fn count_cells(r: &PhantomReport) -> String {
    format!(
        "{} | {} | {} | {} |",
        r.nuclei,
        r.paired,
        r.lone_golgi,
        r.dust.len()
    )
}

/// A phantom README `s` closed by the section on the image-formation model.
fn with_model_section(mut s: String) -> String {
    s.push_str("\n## Image-formation model\n\n");
    s.push_str(include_str!("phantom.md"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_hours_scale_with_voxels() {
        let h = annotation_hours([48, 192, 192]);
        assert!((h - 2.63).abs() < 0.01, "{h}");
    }
}
