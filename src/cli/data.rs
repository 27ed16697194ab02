//! `seglab data`: look at a dataset folder.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::dataset::{Dataset, VolumeInfo};

/// Look at a dataset folder (a folder with a dataset.toml).
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
    }
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
