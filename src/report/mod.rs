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
pub(crate) use prepare::higher_is_better;

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
    #[error(transparent)]
    Write(#[from] crate::atomic::WriteError),
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
/// there only once the new one is complete; [`crate::atomic::build_folder`]).
pub fn write_report(
    input: &ReportInput,
    out_dir: &Path,
    options: &ReportOptions,
) -> Result<ReportSummary, ReportError> {
    let mut summary = crate::atomic::build_folder(out_dir, true, |staging| {
        let layout = crate::experiment::paths::ReportPaths::new(staging);
        for dir in [layout.tables(), layout.figures()] {
            std::fs::create_dir_all(&dir).map_err(ReportError::io(&dir))?;
        }
        index::build_into(input, staging, options)
    })?;
    summary.out_dir = out_dir.to_owned();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_report_replaces_an_existing_one_only_when_complete() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("reports/sweep");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("old.md"), "old").unwrap();
        write_report(&fixture::small_sweep(), &out, &ReportOptions::default()).unwrap();
        assert!(out.join("index.md").exists());
        assert!(!out.join("old.md").exists());
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
