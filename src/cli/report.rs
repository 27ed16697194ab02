//! `seglab report`: the tables and figures of a sweep (see `report/`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use crate::experiment::paths::SweepPaths;
use crate::experiment::spec::{SweepRecord, SweepSpec};
use crate::report::{self, Aggregation, ReportOptions};

/// Write a sweep's report: tables, timing breakdown and figures.
///
/// Writes reports/NAME/ (or --out DIR): per-class tables as Markdown, LaTeX and
/// CSV, the timing breakdown, learning curves, box plots, sweep plots, index.md
/// and index.html. Running or failed sweeps are reported with their missing
/// trials listed.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A sweep spec (experiments/NAME.toml), a sweep folder (experiments/NAME/) or its
    /// store folder.
    #[arg(value_name = "SPEC_OR_DIR")]
    pub spec_or_dir: PathBuf,
    /// Output folder [default: reports/NAME/].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// How folds and seeds become mean ± std: over-folds (the default),
    /// over-seeds-folds or pooled (nnU-Net).
    #[arg(long, value_name = "HOW")]
    pub aggregation: Option<Aggregation>,
    /// Metrics of the tables, comma-separated [default: dice,precision,recall].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub metrics: Option<Vec<String>>,
    /// Put this published table's values beside the measured ones, e.g.
    /// thesis-5.5 [default: the spec's `reproduces`].
    #[arg(long, value_name = "ID")]
    pub reproduces: Option<String>,
    /// Show each mean with its 95 % bootstrap confidence interval (cases
    /// resampled within folds) instead of ± std.
    #[arg(long)]
    pub ci: bool,
}

/// Resolves the store, writes the report, prints where it went.
pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let (store, record) = store_dir(&args.spec_or_dir)?;
    let input = report::read_store(&store)
        .with_context(|| format!("cannot read the store of {}", args.spec_or_dir.display()))?;
    let mut options = ReportOptions {
        ci: args.ci,
        ..ReportOptions::default()
    };
    if let Some(a) = args.aggregation {
        options.aggregation = a;
    }
    if let Some(m) = args.metrics {
        let m: Vec<String> = m.into_iter().filter(|s| !s.trim().is_empty()).collect();
        if m.is_empty() {
            bail!("--metrics: expected a comma-separated list of metric names, got nothing");
        }
        options.metrics = m;
    }
    options.reproduces = args
        .reproduces
        .or_else(|| record.and_then(|r| r.reproduces));
    if let Some(id) = &options.reproduces
        && !report::published::ids().contains(&id.as_str())
    {
        bail!(
            "--reproduces: {id:?} is not a published table (one of {})",
            report::published::ids().join(", ")
        );
    }
    let out = args
        .out
        .unwrap_or_else(|| crate::experiment::paths::report_dir(Path::new("."), &input.sweep));
    let summary = report::write_report(&input, &out, &options)
        .with_context(|| format!("cannot write the report to {}", out.display()))?;
    for w in &summary.warnings {
        tracing::warn!("{w}");
    }
    println!(
        "wrote {}: {} tables, {} figure files; {} trials in the tables, {} missing or \
         incomplete (listed in index.md)",
        summary.out_dir.display(),
        summary.tables.len(),
        summary.figures.len(),
        summary.finished_trials,
        summary.missing_trials
    );
    Ok(ExitCode::SUCCESS)
}

/// The store folder named by SPEC_OR_DIR — a spec's sweep folder (`SweepSpec::sweep_dir`, the
/// folder `sweep run` fills), a sweep folder or a store folder — and the sweep's record of
/// its spec, when there is one.
fn store_dir(arg: &Path) -> anyhow::Result<(PathBuf, Option<SweepRecord>)> {
    if arg.is_file() {
        let spec = SweepSpec::load(arg)?;
        let dir = spec.sweep_dir(None);
        let store = SweepPaths::new(&dir).store();
        if !store.is_dir() {
            bail!(
                "{}: sweep `{}` has no store yet (expected {}; run `seglab sweep run {}` first)",
                arg.display(),
                spec.name,
                store.display(),
                arg.display()
            );
        }
        return Ok((store, Some(SweepRecord::of(&spec))));
    }
    if let Some((sweep, store)) = SweepPaths::of_sweep_or_store(arg) {
        return Ok((store, SweepRecord::read(sweep.root())?));
    }
    bail!(
        "{}: expected a sweep spec (.toml), a sweep folder (with store/) or a store folder \
         (with trials/)",
        arg.display()
    )
}
