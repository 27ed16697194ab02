//! `seglab synth`: synthetic masks, phantom datasets and a preview PNG.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::preset::Preset;
use crate::synth::dataset::{
    write_mask_file, write_masks_like, write_phantom_dataset, write_published_phantom,
};
use crate::synth::preview::preview_path;
use crate::synth::{MaskConfig, PhantomConfig, PhantomPreset, generate_masks};

/// Synthetic masks, phantom datasets and previews.
#[derive(Debug, Args)]
pub struct SynthArgs {
    #[command(subcommand)]
    pub command: SynthCommand,
}

#[derive(Debug, Subcommand)]
pub enum SynthCommand {
    Masks(MasksArgs),
    Phantom(PhantomArgs),
    Preview(PreviewArgs),
}

/// Synthetic nucleus–Golgi masks as the published generator makes them.
///
/// One mask of a given shape (--shape, written to the file --out), or one
/// mask per volume of a real dataset with the same sizes (--like, written to
/// the folder --out with a dataset.toml). Masks are uint8 0/255 TIFFs with
/// channels golgi, nuclei[, pair] (nuclei only for --classes 1).
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct MasksArgs {
    /// Volume shape Z x Y x X, e.g. 56x627x647.
    #[arg(long, value_parser = parse_shape, conflicts_with = "like",
          required_unless_present_any = ["like", "print_config"])]
    pub shape: Option<[usize; 3]>,
    /// A dataset folder (or its dataset.toml): one mask per volume, same sizes.
    #[arg(long, value_name = "DATASET")]
    pub like: Option<PathBuf>,
    /// 1 = nuclei, 2 = golgi + nuclei, 3 = golgi + nuclei + pair.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub classes: u8,
    /// Parameter values: code (the published generator), thesis or paper.
    #[arg(long, default_value = "code")]
    pub preset: Preset,
    /// TOML file overriding preset values (see --print-config for the keys).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Random seed; the same seed gives the same masks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output: a .tif file with --shape, a folder with --like.
    #[arg(long, required_unless_present = "print_config")]
    pub out: Option<PathBuf>,
    /// Replace an existing output folder.
    #[arg(long)]
    pub force: bool,
    /// Also write what was drawn for every object as JSON (with --shape).
    #[arg(long, value_name = "FILE", conflicts_with = "like")]
    pub report: Option<PathBuf>,
    /// Print the resolved configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// A phantom microscopy dataset: images and exact ground-truth masks.
///
/// Presets retina and easy write images/volNN.tif (channels golgi, nuclei),
/// masks/volNN.tif (golgi, nuclei, pair), dataset.toml, phantom.toml and a
/// README that documents the image-formation model.
///
/// Preset published draws the eight published crops (Crop1 … Crop8_BC, their
/// published shapes; --scale shrinks Y and X, the objects keep their size)
/// with objects at the published scale, in the published file layout:
/// Images/<crop>.tif and Masks/<crop>.tif as RGB stacks (red Golgi, green
/// nuclei, blue pairs). Make a dataset of it with
/// `seglab data import OUT --out DEST --layout published`.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PhantomArgs {
    /// retina (about as hard as the real crops), easy (for tests) or published
    /// (retina's image model at the published object scale and crop shapes).
    #[arg(long, default_value = "retina")]
    pub preset: PhantomPreset,
    /// TOML file overriding preset values (see --print-config for the keys).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Number of volumes [default: 8] (not with --preset published: its eight
    /// crops are fixed).
    #[arg(long)]
    pub volumes: Option<usize>,
    /// Volume shape Z x Y x X [default: 48x192x192] (not with --preset
    /// published: use --scale).
    #[arg(long, value_parser = parse_shape)]
    pub shape: Option<[usize; 3]>,
    /// With --preset published: the crops' Y and X extents times this factor,
    /// in (0, 1] (e.g. 0.25 for fast tests).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Random seed; the same seed gives the same dataset.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output dataset folder.
    #[arg(long, required_unless_present = "print_config")]
    pub out: Option<PathBuf>,
    /// Replace an existing output folder.
    #[arg(long)]
    pub force: bool,
    /// Print the resolved configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// A PNG of mid-depth slices of a dataset folder or a TIFF file.
///
/// One row per volume: each image channel in grey, a colour composite, the
/// ground truth and mask outlines on the image (red = Golgi, green = nuclei,
/// blue = pair).
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PreviewArgs {
    /// A dataset folder (with dataset.toml) or a TIFF image or mask.
    pub input: PathBuf,
    /// A mask TIFF to show with the TIFF image INPUT.
    #[arg(long, value_name = "FILE")]
    pub mask: Option<PathBuf>,
    /// The z slice to show (default: the middle one).
    #[arg(long)]
    pub z: Option<usize>,
    /// At most this many volumes of a dataset.
    #[arg(long, default_value_t = 4)]
    pub max_volumes: usize,
    /// Output PNG file.
    #[arg(long)]
    pub out: PathBuf,
}

/// Parses `ZxYxX` (also `Z,Y,X`).
pub fn parse_shape(s: &str) -> Result<[usize; 3], String> {
    let parts: Vec<&str> = s.split(['x', 'X', ',', '×']).map(str::trim).collect();
    let bad = || format!("expected Z x Y x X like 56x627x647, got `{s}`");
    if parts.len() != 3 {
        return Err(bad());
    }
    let mut shape = [0usize; 3];
    for (d, p) in parts.iter().enumerate() {
        shape[d] = p.parse().map_err(|_| bad())?;
        if shape[d] == 0 {
            return Err(format!("every axis must be ≥ 1, got `{s}`"));
        }
    }
    Ok(shape)
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
fn progress_bar(len: usize, what: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len as u64), target);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

fn print_toml(value: &impl serde::Serialize) -> anyhow::Result<ExitCode> {
    print!("{}", toml::to_string_pretty(value)?);
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: SynthArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SynthCommand::Masks(a) => masks(a),
        SynthCommand::Phantom(a) => phantom(a),
        SynthCommand::Preview(a) => preview(a),
    }
}

fn masks(a: MasksArgs) -> anyhow::Result<ExitCode> {
    let mut config = MaskConfig::preset(a.preset, a.classes);
    if let Some(file) = &a.config {
        config = config.with_overrides_file(file)?;
    }
    config.validate().with_context(|| match &a.config {
        Some(f) => format!("invalid mask configuration in {}", f.display()),
        None => "invalid mask configuration".into(),
    })?;
    if a.print_config {
        return print_toml(&config);
    }
    let out = a.out.expect("clap requires --out");
    let started = Instant::now();
    if let Some(dataset) = &a.like {
        let bar = progress_bar(0, "synthetic masks");
        let summary = write_masks_like(&config, dataset, a.seed, &out, a.force, &|done, all| {
            bar.set_length(all as u64);
            bar.set_position(done as u64)
        })
        .with_context(|| format!("cannot make synthetic masks like {}", dataset.display()))?;
        bar.finish_and_clear();
        let unplaced: usize = summary.reports.iter().map(|r| r.unplaced).sum();
        let pairs: usize = summary.reports.iter().map(|r| r.pairs).sum();
        eprintln!(
            "wrote {} synthetic masks ({} pairs, {} objects unplaced) to {} in {:.1} s",
            summary.reports.len(),
            pairs,
            unplaced,
            out.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let shape = a.shape.expect("clap requires --shape or --like");
    let generated = generate_masks(&config, shape, a.seed)?;
    write_mask_file(&out, &generated.mask)?;
    let r = &generated.report;
    if let Some(path) = &a.report {
        let json = serde_json::to_string_pretty(r)?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "wrote {} ({}-class, {}x{}x{}, seed {}): {} pairs, {} isolated Golgi, {} isolated \
         nuclei, {} unplaced, in {:.2} s",
        out.display(),
        config.classes,
        shape[0],
        shape[1],
        shape[2],
        a.seed,
        r.pairs,
        r.isolated_golgi,
        r.isolated_nuclei,
        r.unplaced,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn phantom(a: PhantomArgs) -> anyhow::Result<ExitCode> {
    let mut config = PhantomConfig::preset(a.preset);
    let mut preset = Some(a.preset);
    if let Some(file) = &a.config {
        config = config.with_overrides_file(file)?;
        preset = None;
    }
    config.validate().with_context(|| match &a.config {
        Some(f) => format!("invalid phantom configuration in {}", f.display()),
        None => "invalid phantom configuration".into(),
    })?;
    if a.print_config {
        return print_toml(&config);
    }
    let out = a.out.clone().expect("clap requires --out");
    if a.preset == PhantomPreset::Published {
        return published_phantom(&a, &config, &out);
    }
    if a.scale != 1.0 {
        bail!("--scale: only --preset published scales its crops; use --shape");
    }
    let volumes = a.volumes.unwrap_or(8);
    let started = Instant::now();
    let bar = progress_bar(volumes, "phantom volumes");
    let summary = write_phantom_dataset(
        &config,
        preset,
        volumes,
        a.shape.unwrap_or([48, 192, 192]),
        a.seed,
        &out,
        a.force,
        &|done, _| bar.set_position(done as u64),
    )
    .with_context(|| format!("cannot write the phantom dataset {}", out.display()))?;
    bar.finish_and_clear();
    let nuclei: usize = summary.reports.iter().map(|r| r.nuclei).sum();
    eprintln!(
        "wrote {} phantom volumes ({} nuclei) to {} in {:.1} s",
        summary.reports.len(),
        nuclei,
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// `--preset published`: the eight crops in the published layout.
fn published_phantom(
    a: &PhantomArgs,
    config: &PhantomConfig,
    out: &Path,
) -> anyhow::Result<ExitCode> {
    if a.volumes.is_some() || a.shape.is_some() {
        bail!(
            "--preset published draws the eight published crops in their shapes: drop \
             --volumes and --shape (--scale shrinks the crops)"
        );
    }
    let started = Instant::now();
    let bar = progress_bar(crate::dataset::published::CROPS.len(), "phantom crops");
    let summary = write_published_phantom(config, a.scale, a.seed, out, a.force, &|done, _| {
        bar.set_position(done as u64)
    })
    .with_context(|| format!("cannot write the phantom crops {}", out.display()))?;
    bar.finish_and_clear();
    let nuclei: usize = summary.reports.iter().map(|r| r.nuclei).sum();
    eprintln!(
        "wrote {} phantom crops ({} nuclei) in the published layout to {} in {:.1} s\n\
         next: seglab data import {} --out DEST --layout published",
        summary.reports.len(),
        nuclei,
        out.display(),
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn preview(a: PreviewArgs) -> anyhow::Result<ExitCode> {
    preview_path(&a.input, a.mask.as_deref(), a.z, a.max_volumes, &a.out)
        .with_context(|| format!("cannot preview {}", a.input.display()))?;
    eprintln!("wrote {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse() {
        assert_eq!(parse_shape("56x627x647"), Ok([56, 627, 647]));
        assert_eq!(parse_shape("4,5,6"), Ok([4, 5, 6]));
        assert!(parse_shape("56x627").unwrap_err().contains("Z x Y x X"));
        assert!(parse_shape("0x1x1").unwrap_err().contains("≥ 1"));
    }
}
