//! `seglab data`: look at a dataset folder, or make one of a folder of TIFFs.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::dataset::import::{ImportLayout, ImportOptions};
use crate::dataset::{self, Dataset, VolumeInfo};

/// Look at a dataset folder (a folder with a dataset.toml), or make one.
#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// List the volumes of a dataset: shapes, sample type, channels,
    /// spacing and the foreground fraction of every mask channel.
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
/// nuclei, pair) unless --image-channels / --mask-channels name them.
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
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The dataset folder (holds dataset.toml).
    pub dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
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
    println!("next: seglab data info {}", summary.dest.display());
    Ok(ExitCode::SUCCESS)
}

fn info(args: InfoArgs) -> anyhow::Result<ExitCode> {
    let dataset = Dataset::open(&args.dir)
        .with_context(|| format!("cannot open dataset {}", args.dir.display()))?;
    let volumes = dataset
        .info()
        .with_context(|| format!("cannot read dataset `{}`", dataset.name()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({
            "name": dataset.name(),
            "dir": dataset.dir(),
            "image_channels": dataset.spec().image_channels,
            "mask_channels": dataset.spec().mask_channels,
            "volumes": volumes,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    } else {
        write!(out, "{}", table(&dataset, &volumes))?;
    }
    Ok(ExitCode::SUCCESS)
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
