//! `seglab inspect FILE [--json]`: shape, sample type, spacing and per-channel statistics of
//! a TIFF volume, as a table or as JSON.
//!
//! The JSON form is a contract other tools rely on:
//! `{"file": .., "shape": [C, Z, Y, X], "dtype": "uint16", "spacing": [z, y, x] or null,
//!   "channels": [{"min": .., "max": .., "mean": .., "sum": ..}, ...]}`; integer data gives
//! exact integer sums, NaN and infinite float results are `null`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::volume::stats::{ChannelStats, Scalar, channel_stats};
use crate::volume::{AnyVolume, read_tiff};

/// Show shape, sample type, spacing and per-channel statistics of a TIFF.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The TIFF file (z-stack, ImageJ hyperstack, RGB or planar stack).
    pub file: PathBuf,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The JSON document of `inspect --json`.
#[derive(Debug, Serialize)]
pub struct InspectReport {
    pub file: String,
    pub shape: [usize; 4],
    pub dtype: &'static str,
    pub spacing: Option<[f64; 3]>,
    pub channels: Vec<ChannelStats>,
}

impl InspectReport {
    pub fn new(file: String, volume: &AnyVolume) -> Self {
        InspectReport {
            file,
            shape: volume.shape(),
            dtype: volume.dtype().name(),
            spacing: volume.spacing(),
            channels: channel_stats(volume),
        }
    }
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let volume = read_tiff(&args.file)?;
    let report = InspectReport::new(args.file.display().to_string(), &volume);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn scalar(v: Option<Scalar>) -> String {
    match v {
        None => "-".to_owned(),
        Some(Scalar::Int(i)) => i.to_string(),
        Some(Scalar::Float(f)) => float(f),
    }
}

fn float(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        format!("{f}")
    } else if (1e-3..1e7).contains(&f.abs()) {
        format!("{f:.4}")
    } else {
        format!("{f:.6e}")
    }
}

/// The human-readable form: a header, then one row per channel.
fn table(r: &InspectReport) -> String {
    let [c, z, y, x] = r.shape;
    let spacing = match r.spacing {
        Some([sz, sy, sx]) => format!("z {sz} µm, y {sy} µm, x {sx} µm"),
        None => "unknown".to_owned(),
    };
    let mut out = format!(
        "file     {}\nshape    {c} × {z} × {y} × {x} (C × Z × Y × X)\ndtype    {}\n\
         spacing  {spacing}\n\n",
        r.file, r.dtype
    );
    let head = ["channel", "min", "max", "mean", "sum", "NaN"];
    let with_nan = r.channels.iter().any(|s| s.nan_count > 0);
    let columns = if with_nan { 6 } else { 5 };
    let rows: Vec<Vec<String>> = r
        .channels
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vec![
                i.to_string(),
                scalar(s.min),
                scalar(s.max),
                float(s.mean),
                scalar(Some(s.sum)),
                s.nan_count.to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..columns)
        .map(|col| {
            rows.iter()
                .map(|row| row[col].chars().count())
                .chain([head[col].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let cells: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:>w$}"))
            .collect();
        cells.join("  ") + "\n"
    };
    out += &line(head[..columns].to_vec());
    for row in &rows {
        out += &line(row[..columns].iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Volume;

    #[test]
    fn table_lists_every_channel() {
        let v = Volume::from_vec([2, 1, 1, 2], vec![0u16, 4, 7, 9]).unwrap();
        let v = AnyVolume::from(v.with_spacing(Some([2.0, 0.5, 0.5])));
        let text = table(&InspectReport::new("a.tif".into(), &v));
        assert!(text.contains("2 × 1 × 1 × 2 (C × Z × Y × X)"), "{text}");
        assert!(text.contains("uint16"), "{text}");
        assert!(text.contains("z 2 µm, y 0.5 µm, x 0.5 µm"), "{text}");
        let rows: Vec<&str> = text.lines().skip(5).collect();
        assert_eq!(
            rows[0].split_whitespace().collect::<Vec<_>>(),
            ["channel", "min", "max", "mean", "sum"]
        );
        assert_eq!(
            rows[1].split_whitespace().collect::<Vec<_>>(),
            ["0", "0", "4", "2.0000", "4"]
        );
        assert_eq!(
            rows[2].split_whitespace().collect::<Vec<_>>(),
            ["1", "7", "9", "8.0000", "16"]
        );
    }

    #[test]
    fn table_shows_nan_counts_only_when_there_are_some() {
        let v = Volume::from_vec([1, 1, 1, 2], vec![f32::NAN, 1.5]).unwrap();
        let text = table(&InspectReport::new("a.tif".into(), &v.into()));
        assert!(text.contains("NaN"), "{text}");
        assert!(text.contains("spacing  unknown"), "{text}");
    }

    #[test]
    fn json_follows_the_contract() {
        let v = Volume::from_vec([1, 1, 1, 2], vec![3u8, 4]).unwrap();
        let json = serde_json::to_string(&InspectReport::new("m.tif".into(), &v.into())).unwrap();
        assert_eq!(
            json,
            r#"{"file":"m.tif","shape":[1,1,1,2],"dtype":"uint8","spacing":null,"channels":[{"min":3,"max":4,"mean":3.5,"sum":7}]}"#
        );
    }
}
