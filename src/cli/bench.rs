//! `seglab bench train|predict`: milliseconds per training step and per predicted window of one
//! model on this machine (the library side is `train::bench`).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::backend::{Backend, DeviceSpec};
use crate::models::{ModelKind, ModelScale, ScaleSpec};
use crate::train::bench::{self, BenchPhase, BenchReport, BenchSpec};

/// Time a model: median milliseconds per training step (all optimizer
/// steps of the model) or per predicted batch of windows, after warm-up.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub phase: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time training steps (U-Net: 1 optimizer step; Vox2Vox: G and D;
    /// CycleGAN: both generators and 2 steps of each discriminator).
    Train(BenchOptions),
    /// Time prediction of a batch of windows (inference mode).
    Predict(BenchOptions),
}

#[derive(Debug, Args)]
pub struct BenchOptions {
    /// unet3d, vox2vox or cyclegan.
    #[arg(long, value_parser = parse_model)]
    pub model: ModelKind,
    /// Model size: `cpu-small` (widths ÷ 8, 32³ patches) or `paper`.
    #[arg(long, default_value = "cpu-small", value_parser = parse_scale)]
    pub scale: ModelScale,
    /// Samples per batch [default: training 4 (CycleGAN 2), prediction 1].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Timed repetitions [default: 10 at cpu-small, 3 at paper].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Untimed warm-up repetitions.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Mask channels (= image channels): 1, 2 or 3.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub classes: u8,
    /// `cpu`, `wgpu:N` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_model(s: &str) -> Result<ModelKind, String> {
    match s.parse::<ModelKind>()? {
        ModelKind::Threshold => Err("`threshold` has nothing to time; expected unet3d, \
                                     vox2vox or cyclegan"
            .into()),
        m => Ok(m),
    }
}

fn parse_scale(s: &str) -> Result<ModelScale, String> {
    s.parse()
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let (phase, o) = match args.phase {
        BenchCommand::Train(o) => (BenchPhase::Train, o),
        BenchCommand::Predict(o) => (BenchPhase::Predict, o),
    };
    let device: DeviceSpec = o
        .device
        .parse()
        .map_err(|reason| anyhow::anyhow!("--device `{}`: {reason}", o.device))?;
    let steps = o.steps.unwrap_or(match o.scale {
        ModelScale::CpuSmall => 10,
        ModelScale::Paper => 3,
    });
    let spec = BenchSpec {
        batch: o.batch,
        warmup: o.warmup,
        classes: usize::from(o.classes),
        ..BenchSpec::new(o.model, ScaleSpec::new(o.scale), steps)
    };
    let report = bench::run(&spec, phase, device)
        .with_context(|| format!("cannot benchmark {} at scale {}", o.model, o.scale))?;
    if o.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", describe(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of text: what was timed and the median.
fn describe(r: &BenchReport) -> String {
    let what = match r.phase {
        BenchPhase::Train => "step",
        BenchPhase::Predict => "window batch",
    };
    let on = match r.backend {
        Backend::Cpu => format!("{} threads", r.threads),
        b => format!("{b} {}", r.device),
    };
    format!(
        "{} {} {}: width {}, patch {}³, batch {}, {on}: \
         median {:.1} ms per {what} (min {:.1}, {} runs)",
        r.model,
        match r.phase {
            BenchPhase::Train => "train",
            BenchPhase::Predict => "predict",
        },
        r.scale,
        r.width,
        r.patch,
        r.batch,
        r.median_ms,
        r.min_ms,
        r.samples_ms.len()
    )
}
