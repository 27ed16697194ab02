//! Reports: a sweep's store turned into the tables and figures of a thesis or paper.
//!
//! [`write_report`] reads a [`ReportInput`] (the canonical view of a sweep's store, see
//! `tracking` for the schema and the canonical-view rule) and writes `index.md`, `index.html`,
//! `tables/<name>.{md,tex,csv}` and `figures/<name>.{png,svg}` into one folder, atomically: the
//! report is built in a hidden temporary folder next to the destination and renamed into
//! place, so a failed report never leaves a half-written folder that looks complete.
//!
//! Principal types: [`Aggregation`] and [`aggregate`] (the one aggregation function behind
//! every table and plot), [`tables::Table`] (one table model rendered as
//! Markdown, LaTeX/booktabs, CSV and HTML), [`timing::TimingTable`] (the thesis' Table 5.7
//! layout), [`ReportOptions`] and [`ReportSummary`].
//!
//! What this module does not do: it computes no metrics (`metrics/` writes per-case rows),
//! never writes to the store, and never averages averages: every number comes from per-case
//! rows through [`aggregate`], with the aggregation stated in the caption
//! (docs/design.md §3). Missing, failed and running trials are listed, not dropped in
//! silence; non-finite metric values are excluded from means and counted.

pub mod aggregate;
mod comparisons;
#[doc(hidden)]
pub mod fixture;
mod html;
mod index;
pub mod input;
mod intervals;
pub mod paired;
pub mod plots;
mod prepare;
pub mod published;
pub mod selection;
pub mod tables;
pub mod timing;

use std::path::{Path, PathBuf};

pub use aggregate::{Aggregation, Distribution, aggregate, distribution};
pub use input::{ReportInput, SliceSet, read_store};

/// Errors of report generation.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{what}: input has no column `{column}` (columns: {})", present.join(", "))]
    MissingColumn {
        what: &'static str,
        column: String,
        present: Vec<String>,
    },
    #[error("{what}: {source}")]
    Polars {
        what: &'static str,
        #[source]
        source: polars::error::PolarsError,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Store { path: PathBuf, message: String },
    #[error("figure {figure}: {message}")]
    Plot { figure: String, message: String },
    #[error("{0}")]
    Input(String),
}

impl ReportError {
    pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> ReportError + '_ {
        move |source| ReportError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// What a report contains and how it aggregates.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// How per-case rows become the mean ± std of the comparison and sweep tables.
    pub aggregation: Aggregation,
    /// Metrics of the tables, in column order (`results.metric` names).
    pub metrics: Vec<String>,
    /// Decimals of metric values (the thesis prints 4).
    pub decimals: usize,
    /// The published table the sweep reproduces (`published::ids`): the report puts its
    /// values beside the measured ones.
    pub reproduces: Option<String>,
    /// Show each mean of the comparison and sweep tables with its 95 % bootstrap confidence
    /// interval (`report::intervals`) instead of ± std.
    pub ci: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            aggregation: Aggregation::OverFolds,
            metrics: vec!["dice".into(), "precision".into(), "recall".into()],
            decimals: 4,
            reproduces: None,
            ci: false,
        }
    }
}

/// What [`write_report`] produced.
#[derive(Clone, Debug)]
pub struct ReportSummary {
    /// The report folder.
    pub out_dir: PathBuf,
    /// Table names; each exists as `tables/<name>.md`, `.tex` and `.csv`.
    pub tables: Vec<String>,
    /// Figure files relative to the report folder (`figures/<name>.png`, `.svg`).
    pub figures: Vec<String>,
    /// Trials whose chosen attempt finished (their rows are in the tables).
    pub finished_trials: usize,
    /// Trials listed as missing: running, failed, killed, interrupted or never started.
    pub missing_trials: usize,
    /// Things the reader should know (requested metrics absent, figures skipped, …).
    pub warnings: Vec<String>,
}

/// Builds the report of `input` and writes it to `out_dir` (replacing an earlier report
/// there only once the new one is complete).
pub fn write_report(
    input: &ReportInput,
    out_dir: &Path,
    options: &ReportOptions,
) -> Result<ReportSummary, ReportError> {
    let staging = staging_dir(out_dir)?;
    let result = index::build_into(input, &staging, options);
    match result {
        Ok(mut summary) => {
            publish(&staging, out_dir)?;
            summary.out_dir = out_dir.to_owned();
            Ok(summary)
        }
        Err(err) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(err)
        }
    }
}

/// The default report folder of a sweep: `reports/<sweep>/` under `root`.
///
/// Interim: run paths are to be built in one place (`experiment/paths.rs`, style anchor 5);
/// this moves there when that module lands.
pub fn default_out_dir(root: &Path, sweep: &str) -> PathBuf {
    root.join("reports").join(sweep)
}

/// A fresh hidden folder next to `out_dir`, on the same filesystem so the final rename is
/// atomic.
fn staging_dir(out_dir: &Path) -> Result<PathBuf, ReportError> {
    let parent = match out_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(ReportError::io(&parent))?;
    let name = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let staging = parent.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    for sub in ["", "tables", "figures"] {
        let dir = staging.join(sub);
        std::fs::create_dir_all(&dir).map_err(ReportError::io(&dir))?;
    }
    Ok(staging)
}

/// Moves the finished `staging` folder to `out_dir`. An existing report is first renamed
/// aside and removed only after the new one is in place.
fn publish(staging: &Path, out_dir: &Path) -> Result<(), ReportError> {
    let old = if out_dir.exists() {
        let mut aside = staging.as_os_str().to_owned();
        aside.push(".old");
        let aside = PathBuf::from(aside);
        std::fs::rename(out_dir, &aside).map_err(ReportError::io(out_dir))?;
        Some(aside)
    } else {
        None
    };
    if let Err(source) = std::fs::rename(staging, out_dir) {
        if let Some(aside) = &old {
            let _ = std::fs::rename(aside, out_dir);
        }
        let _ = std::fs::remove_dir_all(staging);
        return Err(ReportError::Io {
            path: out_dir.to_owned(),
            source,
        });
    }
    if let Some(aside) = old {
        std::fs::remove_dir_all(&aside).map_err(ReportError::io(&aside))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_replaces_an_existing_report_only_when_complete() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("reports/sweep");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("index.md"), "old").unwrap();
        let staging = staging_dir(&out).unwrap();
        std::fs::write(staging.join("index.md"), "new").unwrap();
        publish(&staging, &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("index.md")).unwrap(),
            "new"
        );
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("reports"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("sweep")]);
    }

    #[test]
    fn a_failed_report_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("reports/broken");
        // Results without the columns the report needs: the build fails.
        let mut input = fixture::small_sweep();
        input.results = polars::prelude::DataFrame::empty();
        let err = write_report(&input, &out, &ReportOptions::default()).unwrap_err();
        assert!(err.to_string().contains("results"), "{err}");
        assert!(!out.exists());
        let entries = std::fs::read_dir(tmp.path().join("reports"))
            .unwrap()
            .count();
        assert_eq!(entries, 0, "staging folder was not removed");
    }
}
