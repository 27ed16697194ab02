//! `seglab models`: the trainable parameter count of every network at a scale.

use std::process::ExitCode;

use anyhow::Context;
use burn::tensor::Device;
use clap::Args;

use crate::models::{CycleGanConfig, ModelScale, ResidualMode, ScaleSpec, param_counts};

/// Print the trainable parameters of every network (U-Net, Vox2Vox G and D,
/// CycleGAN G and D), counted as Keras' model summary counts them.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Model size: `paper` (published widths) or `cpu-small` (widths ÷ 8).
    #[arg(long, default_value = "paper", value_parser = parse_scale)]
    pub scale: ModelScale,
    /// The task: a number of classes (1, 2 or 3) or class names such as
    /// `golgi,nuclei`. Image channels = classes, as in the published models.
    #[arg(long, default_value = "2", value_parser = parse_classes)]
    pub classes: usize,
    /// Divide every published filter count by N instead of the scale's divisor.
    #[arg(long, value_name = "N")]
    pub width_divisor: Option<usize>,
    /// CycleGAN generator blocks: `concat` (as published) or `add`.
    #[arg(long, default_value = "concat", value_parser = parse_residual)]
    pub cyclegan_residual: ResidualMode,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_scale(s: &str) -> Result<ModelScale, String> {
    s.parse()
}

fn parse_residual(s: &str) -> Result<ResidualMode, String> {
    match s {
        "concat" => Ok(ResidualMode::Concat),
        "add" => Ok(ResidualMode::Add),
        _ => Err(format!("expected `concat` or `add`, got `{s}`")),
    }
}

/// `2` or `golgi,nuclei` → 2. Class names must be `golgi`, `nuclei` or `pair`, each once.
fn parse_classes(s: &str) -> Result<usize, String> {
    if let Ok(n) = s.parse::<usize>() {
        return if (1..=3).contains(&n) {
            Ok(n)
        } else {
            Err(format!("expected 1, 2 or 3 classes, got {n}"))
        };
    }
    let names: Vec<&str> = s.split(',').map(str::trim).collect();
    for (i, n) in names.iter().enumerate() {
        if !["golgi", "nuclei", "pair"].contains(n) {
            return Err(format!(
                "unknown class `{n}`, expected golgi, nuclei or pair"
            ));
        }
        if names[..i].contains(n) {
            return Err(format!("class `{n}` is listed twice"));
        }
    }
    Ok(names.len())
}

pub fn run(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    let mut scale = ScaleSpec::new(args.scale);
    scale.width_divisor = args.width_divisor;
    let cyclegan =
        CycleGanConfig::new(args.classes, args.classes).with_residual_mode(args.cyclegan_residual);
    // Parameters stay lazy: counting allocates nothing, so the CPU device is only a label.
    let counts = param_counts(&scale, args.classes, &cyclegan, &Device::flex())
        .with_context(|| format!("cannot build the networks at scale {}", args.scale))?;
    if args.json {
        println!("{}", serde_json::to_string(&counts)?);
    } else {
        let rows = [
            ("unet3d", counts.unet3d),
            ("vox2vox_generator", counts.vox2vox_generator),
            ("vox2vox_discriminator", counts.vox2vox_discriminator),
            ("cyclegan_generator", counts.cyclegan_generator),
            ("cyclegan_discriminator", counts.cyclegan_discriminator),
        ];
        println!(
            "trainable parameters, scale {} (width ÷ {}), {} classes",
            args.scale,
            scale.width_divisor(),
            args.classes
        );
        for (name, n) in rows {
            println!("  {name:<24}{:>14}", group_thousands(n));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// 22582114 → "22,582,114".
fn group_thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_accept_counts_and_names() {
        assert_eq!(parse_classes("2"), Ok(2));
        assert_eq!(parse_classes("golgi,nuclei,pair"), Ok(3));
        assert_eq!(parse_classes("nuclei"), Ok(1));
        assert!(parse_classes("4").unwrap_err().contains("1, 2 or 3"));
        assert!(
            parse_classes("golgi,cells")
                .unwrap_err()
                .contains("`cells`")
        );
        assert!(parse_classes("golgi,golgi").unwrap_err().contains("twice"));
    }

    #[test]
    fn thousands() {
        assert_eq!(group_thousands(22_582_114), "22,582,114");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
    }
}
