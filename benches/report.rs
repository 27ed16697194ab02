//! Report generation time: a 1,000-trial sweep (2- and 3-class, 12 configurations, 5 folds,
//! 2 test volumes per trial, 50 epochs of 2–4 curves) from frames to a finished report
//! folder. Budget (DESIGN.md): under 10 s.
//!
//! Run: `cargo bench --bench report` (release build).

use std::time::Instant;

use seglab::report::{ReportOptions, fixture, write_report};

fn main() {
    for trials in [100usize, 1000] {
        let t0 = Instant::now();
        let input = fixture::large_sweep(trials);
        let built = t0.elapsed();
        let rows = (
            input.results.height(),
            input.epochs.height(),
            input.timings.height(),
        );
        let dir = tempfile::tempdir().expect("temporary folder");
        let out = dir.path().join("report");
        let t1 = Instant::now();
        let summary = write_report(&input, &out, &ReportOptions::default()).expect("report");
        let elapsed = t1.elapsed();
        println!(
            "report over {trials} trials ({} result rows, {} epoch rows, {} timing rows): \
             {:.2} s ({} tables, {} figure files; fixture built in {:.2} s){}",
            rows.0,
            rows.1,
            rows.2,
            elapsed.as_secs_f64(),
            summary.tables.len(),
            summary.figures.len(),
            built.as_secs_f64(),
            if trials == 1000 {
                if elapsed.as_secs_f64() < 10.0 {
                    " — within the 10 s budget"
                } else {
                    " — OVER the 10 s budget"
                }
            } else {
                ""
            }
        );
    }
}
