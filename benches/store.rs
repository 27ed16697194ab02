//! Store benchmark (DESIGN.md budget: 1 million metric rows written and aggregated in under
//! 2 s): 1,000 finished trials × 1,000 result rows (5 volumes × 2 classes × 100 metrics), one
//! part per trial, then the canonical view and mean ± std per (model, class, metric).
//!
//! Also measured: the same reads after `Store::compact`, and the raw Parquet throughput of
//! big parts. Wall and CPU seconds are printed (the CPU column is what a shared machine does
//! not distort).
//!
//! Figures (2 shared cores, `--profile dev`, not durable, median of 3): total 1.83 s wall /
//! 1.76 s CPU, of which writing 1,000 results parts 0.68 s, 1,000 trials parts 0.47 s, reading
//! 0.47 s and aggregating 0.20 s. Before small parts were plain-encoded (`encode_part` in
//! `src/tracking/store.rs`) the total was 2.83 s, 1.18 s of it writing the one-row trials
//! parts. A third to a half of the write time is the kernel creating files: on an ext4 without
//! a journal (this machine's) a new inode skips, one by one, the inodes deleted in the last
//! minutes, so back-to-back runs slow each other down; with `TMPDIR=/dev/shm` the total is
//! 1.2–1.4 s.

use std::collections::BTreeMap;
use std::time::Instant;

use seglab::report::{Aggregation, aggregate};
use seglab::tracking::{ResultRow, Store, TrialEvent, TrialStatus};

const TRIALS: usize = 1000;
const VOLUMES: usize = 5;
const CLASSES: [&str; 2] = ["golgi", "nuclei"];
const METRICS: usize = 100;
const MODELS: [&str; 3] = ["unet3d", "vox2vox", "cyclegan"];

fn event(i: usize) -> TrialEvent {
    TrialEvent {
        sweep: "bench".into(),
        trial_id: format!("t{i:05}"),
        attempt: 1,
        status: TrialStatus::Finished,
        event_ms: 1_700_000_000_000 + i as i64,
        model: MODELS[i % 3].into(),
        classes: CLASSES.iter().map(|c| c.to_string()).collect(),
        fold: (i % 5) as u32,
        seed: (i / 5) as u64,
        preset: "code".into(),
        scale: "cpu-small".into(),
        dataset: "data/phantom".into(),
        dataset_fingerprint: "fp".into(),
        config_json: "{}".into(),
        error: None,
        started_ms: 1_700_000_000_000,
        ended_ms: Some(1_700_000_100_000),
        git_commit: "abc".into(),
        git_dirty: false,
        git_diff_sha256: None,
        user: "bench".into(),
        host: "node".into(),
        device: "cpu".into(),
        device_name: "cpu".into(),
        compute_path: "kernels".into(),
        seglab_version: "0.1.0".into(),
        burn_version: "0.22.1".into(),
        command: "seglab sweep run".into(),
        preprocess_check: None,
        params: BTreeMap::from([("loss.golgi_weight".into(), format!("{}", i % 4))]),
        split_id: None,
        split_json: None,
        select_metric: None,
        prune: None,
        threads: Some(2),
        tags: Vec::new(),
        notes: None,
    }
}

fn rows(i: usize) -> Vec<ResultRow> {
    let mut out = Vec::with_capacity(VOLUMES * CLASSES.len() * METRICS);
    let mut x = i as u64 * 2_654_435_761 + 1;
    for v in 0..VOLUMES {
        for class in CLASSES {
            for m in 0..METRICS {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let value = if m == 0 && v == 4 {
                    f64::NAN
                } else {
                    (x >> 11) as f64 / (1u64 << 53) as f64
                };
                out.push(ResultRow {
                    trial_id: format!("t{i:05}"),
                    attempt: 1,
                    volume: format!("vol{v:02}"),
                    class: class.into(),
                    metric: format!("m{m:03}"),
                    value,
                });
            }
        }
    }
    out
}

/// User + system CPU seconds of this process so far (the machine may be shared).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(r.ru_utime) + t(r.ru_stime)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let durable = std::env::args().any(|a| a == "--durable");
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = Store::create(dir.path().join("store"))
        .expect("store")
        .with_durable(durable);
    let prepared: Vec<(TrialEvent, Vec<ResultRow>)> =
        (0..TRIALS).map(|i| (event(i), rows(i))).collect();
    let total_rows: usize = prepared.iter().map(|(_, r)| r.len()).sum();

    let (t0, c0) = (Instant::now(), cpu_seconds());
    for (_, r) in &prepared {
        store.write_results(r).expect("write results");
    }
    let write_results = Phase::since(t0, c0);
    let (t0, c0) = (Instant::now(), cpu_seconds());
    for (ev, _) in &prepared {
        store.write_trial_event(ev).expect("write trial");
    }
    let write_trials = Phase::since(t0, c0);
    let (read, summary) = read_and_aggregate(&store, total_rows);
    let (read_parts, aggregate) = read;

    let (t0, c0) = (Instant::now(), cpu_seconds());
    let report = store.compact().expect("compact");
    let compact = Phase::since(t0, c0);
    let ((read_compacted, aggregate_compacted), _) = read_and_aggregate(&store, total_rows);

    // Parquet throughput without the per-part cost: the same rows in 10 parts of 100,000 (each
    // filed under one trial id, as the store files parts by attempt).
    let bulk = Store::create(dir.path().join("bulk"))
        .expect("store")
        .with_durable(durable);
    let (t0, c0) = (Instant::now(), cpu_seconds());
    for chunk in prepared.chunks(TRIALS / 10) {
        let rows: Vec<ResultRow> = chunk
            .iter()
            .flat_map(|(_, r)| {
                r.iter().map(|x| ResultRow {
                    trial_id: chunk[0].0.trial_id.clone(),
                    ..x.clone()
                })
            })
            .collect();
        bulk.write_results(&rows).expect("bulk write");
    }
    let write_bulk = Phase::since(t0, c0);

    let bytes: u64 = std::fs::read_dir(dir.path().join("store/results"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "store benchmark: {TRIALS} trials x {} rows = {total_rows} result rows, {} groups of (model, class, metric); durable = {durable}",
        total_rows / TRIALS,
        summary
    );
    println!("{:<62} {:>8} {:>8}", "", "wall s", "cpu s");
    let per_trial = [&write_results, &write_trials, &read_parts, &aggregate];
    write_results.line("write 1,000 results parts (one per trial, 1,000 rows each)");
    write_trials.line("write 1,000 trials parts (one end event per trial)");
    read_parts.line("read 2,000 parts + canonical view");
    aggregate.line("join model + mean/std/n per (model, class, metric)");
    Phase::sum(&per_trial).line("total, as a sweep writes it (budget 2 s)");
    compact.line(&format!(
        "compact ({} parts -> {})",
        report.parts_before, report.parts_after
    ));
    Phase::sum(&[&read_compacted, &aggregate_compacted])
        .line("read + canonical + aggregate after compaction");
    write_bulk.line("write the 1,000,000 rows in 10 parts of 100,000 (bulk)");
    println!(
        "  results on disk: {:.1} MB (snappy); load average: {}",
        bytes as f64 / 1e6,
        load_average()
    );
}

/// Wall and CPU seconds of one benchmark phase.
struct Phase {
    wall: f64,
    cpu: f64,
}

impl Phase {
    fn since(t0: Instant, c0: f64) -> Phase {
        Phase {
            wall: t0.elapsed().as_secs_f64(),
            cpu: cpu_seconds() - c0,
        }
    }

    fn sum(phases: &[&Phase]) -> Phase {
        Phase {
            wall: phases.iter().map(|p| p.wall).sum(),
            cpu: phases.iter().map(|p| p.cpu).sum(),
        }
    }

    fn line(&self, what: &str) {
        println!("  {what:<60} {:>8.3} {:>8.3}", self.wall, self.cpu);
    }
}

/// Reads the canonical view and aggregates; checks the row and group counts.
fn read_and_aggregate(store: &Store, total_rows: usize) -> ((Phase, Phase), usize) {
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let canonical = store.canonical().expect("canonical view");
    let read = Phase::since(t0, c0);
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let joined = canonical.results_with(&["model", "fold"]).expect("join");
    let summary = aggregate(
        &joined,
        &["model", "class", "metric"],
        Aggregation::OverFolds,
    )
    .expect("summary");
    let aggregate = Phase::since(t0, c0);
    assert_eq!(canonical.results.height(), total_rows);
    assert_eq!(summary.height(), MODELS.len() * CLASSES.len() * METRICS);
    ((read, aggregate), summary.height())
}
