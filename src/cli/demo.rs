//! `seglab demo`: the main job in one command — phantom data, the demo sweep, the report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use polars::prelude::{IntoLazy, JoinArgs, JoinType, col, lit};

use crate::dataset::clipping::DEFAULT_MAX_ZEROED;
use crate::experiment::paths::SweepPaths;
use crate::experiment::preflight::Preflight;
use crate::experiment::runner::{RunOptions, run_sweep};
use crate::experiment::spec::SweepSpec;
use crate::experiment::trial::expand;
use crate::report::{self, Aggregation, ReportOptions, aggregate};
use crate::synth::dataset::write_phantom_dataset;
use crate::synth::{PhantomConfig, PhantomPreset};

/// The main job: phantom data → model comparison sweep → report.
///
/// Generates the phantom retina dataset if it is absent, runs experiments/demo.toml (U-Net,
/// Vox2Vox, CycleGAN and the Otsu threshold baseline on Golgi and nuclei, nested 3-fold
/// cross-validation, cpu-small networks; resumable: a second run only re-renders the report),
/// writes reports/demo/ and prints where it is.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The tiny version (experiments/demo-quick.toml, one fold, about two
    /// minutes): checks that the whole pipeline works.
    #[arg(long)]
    pub quick: bool,
    /// Project folder holding experiments/, data/ and reports/.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub root: PathBuf,
    /// Trials run at once (each in its own process). The demo's networks are too small to keep
    /// two cores busy alone, so two trials at once finish the sweep sooner on a 2-core machine.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub jobs: usize,
    /// Device: `cpu`, `wgpu:N` or `cuda:N` (never chosen implicitly).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// One demo variant: its spec (embedded, written to experiments/ when absent) and the size of
/// the phantom dataset it generates.
struct Variant {
    spec_file: &'static str,
    spec_text: &'static str,
    volumes: usize,
    shape: [usize; 3],
}

const FULL: Variant = Variant {
    spec_file: "demo.toml",
    spec_text: include_str!("../../experiments/demo.toml"),
    volumes: 6,
    shape: [32, 128, 128],
};

const QUICK: Variant = Variant {
    spec_file: "demo-quick.toml",
    spec_text: include_str!("../../experiments/demo-quick.toml"),
    volumes: 3,
    shape: [32, 64, 64],
};

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.jobs == 0 {
        anyhow::bail!("--jobs: expected at least 1");
    }
    crate::models::parse_device(&args.device).context("--device")?;
    let variant = if args.quick { QUICK } else { FULL };
    let spec_path = spec_file(&args.root, &variant)?;
    let spec = SweepSpec::load(&spec_path)?;
    ensure_dataset(&spec.dataset, &variant)?;

    let started = std::time::Instant::now();
    let opts = RunOptions {
        sweep_dir: spec.sweep_dir(None),
        jobs: args.jobs,
        retry_failed: false,
        mlflow: Default::default(),
        devices: vec![args.device],
        exe: std::env::current_exe().context("locating the seglab executable")?,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        only: None,
        no_prune: false,
    };
    let check = Preflight::run(
        &expand(&spec)?,
        DEFAULT_MAX_ZEROED,
        false,
        &spec.allow_clipping,
        &spec.file,
    )?;
    if let Some(warning) = check.synthetic_warning() {
        eprintln!("{warning}");
    }
    if let Some(message) = check.stop_message(&spec.dataset) {
        eprintln!("{message}");
        return Ok(ExitCode::from(2));
    }
    std::fs::create_dir_all(&opts.sweep_dir)
        .with_context(|| format!("cannot create {}", opts.sweep_dir.display()))?;
    check.write(&opts.sweep_dir)?;
    let summary = run_sweep(&spec, &opts)?;
    if summary.stopped {
        eprintln!("demo stopped; run the same command again to resume");
        return Ok(ExitCode::from(130));
    }

    let input = report::read_store(&SweepPaths::new(&opts.sweep_dir).store())
        .with_context(|| format!("cannot read the store of {}", opts.sweep_dir.display()))?;
    let out = crate::experiment::paths::report_dir(&args.root, &spec.name);
    let written = report::write_report(&input, &out, &ReportOptions::default())
        .with_context(|| format!("cannot write the report to {}", out.display()))?;
    print_dice(&input)?;
    println!(
        "demo: {} trials ({} finished now, {} earlier, {} failed) in {:.0} s",
        summary.trials,
        summary.finished,
        summary.already_finished,
        summary.failed + summary.skipped_failed,
        started.elapsed().as_secs_f64()
    );
    println!(
        "report: {}",
        crate::experiment::paths::ReportPaths::new(&written.out_dir)
            .index_html()
            .display()
    );
    Ok(if summary.any_failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// experiments/<variant> under `root`, written from the embedded copy when absent (so the
/// demo also runs outside a clone of the repository).
fn spec_file(root: &Path, variant: &Variant) -> anyhow::Result<PathBuf> {
    let path = root.join("experiments").join(variant.spec_file);
    if !path.is_file() {
        let dir = root.join("experiments");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(&path, variant.spec_text)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(path)
}

/// Generates the phantom dataset the spec names unless it already has a dataset.toml.
fn ensure_dataset(dir: &Path, variant: &Variant) -> anyhow::Result<()> {
    if dir.join(crate::dataset::DATASET_FILE).is_file() {
        return Ok(());
    }
    eprintln!(
        "generating the phantom dataset {} ({} volumes of {}x{}x{})",
        dir.display(),
        variant.volumes,
        variant.shape[0],
        variant.shape[1],
        variant.shape[2]
    );
    write_phantom_dataset(
        &PhantomConfig::preset(PhantomPreset::Retina),
        Some(PhantomPreset::Retina),
        variant.volumes,
        variant.shape,
        0,
        dir,
        false,
        &|_, _| {},
    )
    .with_context(|| format!("cannot write the phantom dataset {}", dir.display()))?;
    Ok(())
}

/// Prints mean Dice per model and class (over folds), the demo's headline.
fn print_dice(input: &report::ReportInput) -> anyhow::Result<()> {
    let results = input
        .results
        .clone()
        .lazy()
        .join(
            input
                .trials
                .clone()
                .lazy()
                .select([col("trial_id"), col("model"), col("fold")]),
            [col("trial_id")],
            [col("trial_id")],
            JoinArgs::new(JoinType::Inner),
        )
        .filter(col("metric").eq(lit("dice")))
        .collect()?;
    if results.height() == 0 {
        return Ok(());
    }
    let stats = aggregate(&results, &["model", "class"], Aggregation::OverFolds)?;
    println!(
        "Dice per model and class ({}):",
        Aggregation::OverFolds.describe()
    );
    let model = stats.column("model")?.str()?;
    let class = stats.column("class")?.str()?;
    let mean = stats.column("mean")?.f64()?;
    let n = stats.column("n")?.u32()?;
    for i in 0..stats.height() {
        println!(
            "  {:<10} {:<8} {}  (n = {})",
            model.get(i).unwrap_or("-"),
            class.get(i).unwrap_or("-"),
            mean.get(i)
                .map_or_else(|| "NaN   ".to_string(), |m| format!("{m:.4}")),
            n.get(i).unwrap_or(0)
        );
    }
    Ok(())
}
