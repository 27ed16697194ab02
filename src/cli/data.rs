//! `seglab data`: look at a dataset folder, or make one of a folder of TIFFs.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::dataset::auto_floor::{describe_floors, resolve_on};
use crate::dataset::clipping::{ClipFigure, DEFAULT_MAX_ZEROED, measure_clipping};
use crate::dataset::import::{ImportLayout, ImportOptions};
use crate::dataset::preprocess::{Percentiles, PreprocessConfig};
use crate::dataset::{self, Dataset, VolumeInfo};
use crate::preset::Preset;

/// Look at a dataset folder (a folder with a dataset.toml), or make one.
#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// List the volumes of a dataset: shapes, sample type, channels,
    /// spacing and the foreground fraction of every mask channel; then, per
    /// image channel, the share of its class's annotated voxels the
    /// preprocessing maps to 0 and Otsu's Dice on the preprocessed channel,
    /// under the dataset's preprocessing, `auto` floors and a few fixed
    /// floors (will the preprocessing hide the objects?).
    Info(InfoArgs),
    Import(ImportArgs),
}

/// Make a dataset of a folder of image and mask TIFFs.
///
/// Checks every file (each mask matches its image's Z, Y, X; every file has
/// the same channels) and writes DEST/dataset.toml listing the files where
/// they are (or copies them with --copy). Nothing is written if a check
/// fails.
///
/// --layout published: SRC/Images/<crop>.tif and SRC/Masks/<crop>.tif for
/// the eight published crops (Crop1 … Crop8_BC), RGB stacks with red = Golgi,
/// green = nuclei, blue = pairs. Adds the thesis' annotation hours and the
/// split presets `thesis` and `paper` (a sweep spec chooses one with
/// `[cv] split = "thesis"`).
///
/// --layout folder: SRC/images/*.tif and SRC/masks/*.tif matched by name (a
/// mask may add _mask, _label or _gt to its image's name); channels are named
/// in the published order (1 = nuclei; 2 = golgi, nuclei; 3 = golgi,
/// nuclei, pair) unless --image-channels / --mask-channels name them. The
/// dataset gets `percentiles = "auto"` (each channel's stretch floor chosen
/// from the data; the floors it would choose are printed) unless
/// --percentiles preset keeps the preset's.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ImportArgs {
    /// The folder holding the images and masks.
    pub src: PathBuf,
    /// The dataset folder to write.
    #[arg(long, value_name = "DEST")]
    pub out: PathBuf,
    /// published or folder (see above).
    #[arg(long, default_value = "folder")]
    pub layout: ImportLayout,
    /// The dataset's name [default: the name of DEST].
    #[arg(long)]
    pub name: Option<String>,
    /// Names of the image files' channels, comma-separated (folder layout),
    /// e.g. golgi,nuclei.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub image_channels: Option<Vec<String>>,
    /// Names of the mask files' channels, comma-separated (folder layout):
    /// golgi, nuclei, pair.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub mask_channels: Option<Vec<String>>,
    /// Copy the files into DEST/images and DEST/masks.
    #[arg(long)]
    pub copy: bool,
    /// Replace an existing DEST.
    #[arg(long)]
    pub force: bool,
    /// Folder layout: `auto` writes percentiles = "auto" under [preprocess];
    /// `preset` writes none (the preset's stretch, floor at the 95th
    /// percentile for the `code` preset).
    #[arg(long, value_name = "auto|preset", default_value = "auto",
          value_parser = ["auto", "preset"])]
    pub percentiles: String,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The dataset folder (holds dataset.toml).
    pub dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The preset whose percentiles apply where dataset.toml sets none.
    #[arg(long, default_value = "code")]
    pub preset: Preset,
    /// More floors (low percentiles) to compare, comma-separated, e.g. 5,30.
    #[arg(long, value_delimiter = ',', value_name = "FLOORS")]
    pub percentiles: Vec<f64>,
}

/// The fixed floors `data info` always compares: almost none, the median, the published one.
const COMPARED_FLOORS: [f64; 3] = [1.0, 50.0, 95.0];

/// One preprocessing `data info` compares, with its figures.
#[derive(Debug, serde::Serialize)]
struct ClipRow {
    /// `configured`, `auto` or `fixed`.
    kind: &'static str,
    describe: String,
    figures: Vec<ClipFigure>,
}

pub fn run(args: DataArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        DataCommand::Info(a) => info(a),
        DataCommand::Import(a) => import(a),
    }
}

fn import(a: ImportArgs) -> anyhow::Result<ExitCode> {
    let options = ImportOptions {
        layout: a.layout,
        name: a.name,
        image_channels: a.image_channels,
        mask_channels: a.mask_channels,
        copy: a.copy,
        force: a.force,
        auto_percentiles: a.percentiles == "auto",
    };
    let started = std::time::Instant::now();
    let tty = std::io::stderr().is_terminal();
    let summary = dataset::import::import(&a.src, &a.out, &options, &|done, total| {
        if tty {
            eprint!("\rchecked {done}/{total} volumes");
        }
    })
    .with_context(|| format!("cannot import {}", a.src.display()));
    if tty {
        eprintln!();
    }
    let summary = summary?;
    println!(
        "wrote {} ({} volumes) in {:.1} s",
        summary.dest.join(dataset::DATASET_FILE).display(),
        summary.spec.volumes.len(),
        started.elapsed().as_secs_f64()
    );
    for note in &summary.notes {
        println!("- {note}");
    }
    if summary.spec.preprocess.percentiles == Some(Percentiles::Auto) {
        print_auto_floors(&summary.dest)?;
    }
    println!("next: seglab data info {}", summary.dest.display());
    Ok(ExitCode::SUCCESS)
}

/// What `percentiles = "auto"` chooses on the whole imported dataset (each trial chooses
/// again from its own training volumes).
fn print_auto_floors(dest: &std::path::Path) -> anyhow::Result<()> {
    let dataset = Dataset::open(dest)?;
    let config = PreprocessConfig::default();
    let (pre, floors) = resolve_on(&dataset, &config, Preset::Code, &dataset.ids(), true)?;
    println!(
        "- preprocessing: percentiles = \"auto\" (each trial chooses its floors from its \
         training volumes; on all volumes: {})",
        pre.describe()
    );
    if let Some(floors) = floors {
        for line in describe_floors(&floors) {
            println!("  {line}");
        }
    }
    Ok(())
}

fn info(args: InfoArgs) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dir)
        .with_context(|| format!("cannot open dataset {}", args.dir.display()))?;
    let volumes = dataset
        .info()
        .with_context(|| format!("cannot read dataset `{}`", dataset.name()))?;
    for floor in &args.percentiles {
        if !(0.0..=100.0).contains(floor) {
            anyhow::bail!("--percentiles: expected floors between 0 and 100, got {floor}");
        }
    }
    let clipping = clip_rows(&dataset, args.preset, &args.percentiles)
        .with_context(|| format!("cannot measure the preprocessing of `{}`", dataset.name()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({
            "name": dataset.name(),
            "dir": dataset.dir(),
            "image_channels": dataset.spec().image_channels,
            "mask_channels": dataset.spec().mask_channels,
            "volumes": volumes,
            "clipping": clipping,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    } else {
        write!(out, "{}", table(&dataset, &volumes))?;
        if clipping.is_empty() {
            writeln!(
                out,
                "\nno annotated volumes: what the stretch does to the objects needs masks"
            )?;
        }
        write!(out, "{}", clip_table(&clipping))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The dataset's preprocessing, `auto` (unless that is the dataset's), and fixed floors (the
/// compared ones and `extra`, each with the configured ceilings), measured over the
/// annotated volumes. Empty when no volume has a mask or the stretch is off.
fn clip_rows(dataset: &Dataset, preset: Preset, extra: &[f64]) -> anyhow::Result<Vec<ClipRow>> {
    let spec = dataset.spec();
    let annotated: Vec<String> = spec
        .volumes
        .iter()
        .filter(|v| v.mask.is_some())
        .map(|v| v.id.clone())
        .collect();
    if annotated.is_empty() {
        return Ok(Vec::new());
    }
    let configured = PreprocessConfig::default();
    let (pre, _) = resolve_on(dataset, &configured, preset, &annotated, true)?;
    let Some(pairs) = pre.pairs() else {
        return Ok(Vec::new());
    };
    let mut variants = vec![("configured", pre)];
    if !configured.is_auto(&spec.preprocess) {
        let auto = PreprocessConfig {
            percentiles: Some(Percentiles::Auto),
            ..configured.clone()
        };
        variants.push((
            "auto",
            resolve_on(dataset, &auto, preset, &annotated, true)?.0,
        ));
    }
    let mut floors: Vec<f64> = COMPARED_FLOORS.iter().chain(extra).copied().collect();
    floors.sort_by(f64::total_cmp);
    floors.dedup();
    for floor in floors {
        let fixed: Vec<[f64; 2]> = pairs
            .iter()
            .map(|&[_, high]| [floor.min(high), high])
            .collect();
        let config = configured.with_pairs(fixed);
        variants.push((
            "fixed",
            config.resolve(preset, &spec.image_channels, &spec.preprocess)?,
        ));
    }
    let pres: Vec<_> = variants.iter().map(|(_, p)| p.clone()).collect();
    let figures = measure_clipping(dataset, &pres)?;
    Ok(variants
        .into_iter()
        .zip(figures)
        .map(|((kind, pre), figures)| ClipRow {
            kind,
            describe: pre.describe(),
            figures,
        })
        .collect())
}

/// The clipping screen: one line per preprocessing and image channel.
fn clip_table(rows: &[ClipRow]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let volumes = first.figures.first().map_or(0, |f| f.volumes);
    let mut s = format!(
        "\npreprocessing: {}\n\
         will it hide the objects? share of each class's annotated voxels mapped to 0, and \
         Otsu's Dice on the preprocessed channel ({volumes} annotated volume(s)):\n",
        first.describe
    );
    let headers: Vec<String> = ["channel", "class", "floor", "zeroed", "Otsu Dice", ""]
        .map(String::from)
        .to_vec();
    let mut cells = Vec::new();
    for row in rows {
        for f in &row.figures {
            let floor = f.floor.map_or("-".into(), |p| format!("{p}"));
            let floor = match row.kind {
                "fixed" => floor,
                kind => format!("{floor} ({kind})"),
            };
            let note = if f.zeroed > DEFAULT_MAX_ZEROED {
                format!("hides {:.0} % of {}", f.zeroed * 100.0, f.class)
            } else {
                String::new()
            };
            cells.push(vec![
                f.channel.clone(),
                f.class.clone(),
                floor,
                format!("{:.1} %", f.zeroed * 100.0),
                format!("{:.3}", f.otsu_dice),
                note,
            ]);
        }
    }
    let table = super::runs::render_table(&headers, &cells, &[false, false, false, true, true]);
    for line in table.lines() {
        s.push_str(line.trim_end());
        s.push('\n');
    }
    if rows[0]
        .figures
        .iter()
        .any(|f| f.zeroed > DEFAULT_MAX_ZEROED)
    {
        s.push_str(
            "the configured floor maps more than 10 % of a class's annotated voxels to 0: \
             set `percentiles = \"auto\"` under [preprocess] in dataset.toml (or a floor \
             that keeps them)\n",
        );
    }
    s
}

/// The human-readable listing: a header line, then one aligned row per volume.
fn table(dataset: &Dataset, volumes: &[VolumeInfo]) -> String {
    let spec = dataset.spec();
    let mut header = vec![
        "id".to_string(),
        "shape (CxZxYxX)".into(),
        "dtype".into(),
        "spacing (z,y,x µm)".into(),
        "group".into(),
    ];
    header.extend(spec.mask_channels.iter().map(|c| format!("fg {c}")));
    let mut rows = vec![header];
    for v in volumes {
        let [c, z, y, x] = v.shape;
        let mut row = vec![
            v.id.clone(),
            format!("{c}x{z}x{y}x{x}"),
            v.dtype.name().to_string(),
            v.spacing
                .map_or("-".into(), |s| format!("{}, {}, {}", s[0], s[1], s[2])),
            v.group.clone().unwrap_or_else(|| "-".into()),
        ];
        if v.foreground.is_empty() {
            row.extend(spec.mask_channels.iter().map(|_| "no mask".to_string()));
        } else {
            row.extend(
                v.foreground
                    .iter()
                    .map(|(_, f)| format!("{:.4} %", f * 100.0)),
            );
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = format!(
        "dataset {} ({} volumes, image channels: {})\n",
        spec.name,
        volumes.len(),
        spec.image_channels.join(", ")
    );
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        s.push_str(cells.join("  ").trim_end());
        s.push('\n');
    }
    s
}
