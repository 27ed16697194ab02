//! The Parquet store: round trips, the canonical view over killed and re-run attempts, NaN
//! kept, parallel writers (threads and processes), writers killed mid-write, bad parts, and the
//! `seglab runs` tables.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use polars::prelude::*;
use seglab::report::{Aggregation, aggregate};
use seglab::tracking::{
    Canonical, EpochRow, ResultRow, Store, Table, TimingRow, TrialEvent, TrialStatus,
};
use util::tracking::{
    TRIALS, epoch_rows, result_rows, small_sweep, start_event, timing_rows, write_attempt,
};

fn new_store(dir: &Path) -> Store {
    Store::create(dir.join("store"))
        .unwrap()
        .with_durable(false)
}

/// Rows as comparable strings (NaN compares equal to NaN, the bit pattern of ±inf is kept).
fn epoch_keys(rows: &[EpochRow]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            format!(
                "{} {} {} {} {} {:?} {:?}",
                r.trial_id, r.attempt, r.epoch, r.split, r.metric, r.value, r.wall_s
            )
        })
        .collect()
}

fn result_keys(rows: &[ResultRow], with_attempt: bool) -> BTreeSet<String> {
    rows.iter()
        .map(|r| {
            let a = if with_attempt {
                r.attempt.to_string()
            } else {
                String::new()
            };
            format!(
                "{} {a} {} {} {} {:?}",
                r.trial_id, r.volume, r.class, r.metric, r.value
            )
        })
        .collect()
}

#[test]
fn every_table_round_trips() {
    let dir = util::temp_dir();
    let store = new_store(dir.path());
    let start = start_event("unet3d-f0-s0", 1, "unet3d", 0, 0);
    let end = start.with_status(
        TrialStatus::Failed,
        start.started_ms + 5,
        Some("boom\nline 2".into()),
    );
    store.write_trial_event(&start).unwrap();
    store.write_trial_event(&end).unwrap();
    let mut epochs = epoch_rows("unet3d-f0-s0", 1, 1..=4);
    epochs[0].value = f64::NAN;
    epochs[1].value = f64::INFINITY;
    epochs[2].wall_s = f64::NEG_INFINITY;
    let results = result_rows("unet3d-f0-s0", 1);
    let timings = timing_rows("unet3d-f0-s0", 1);
    store.write_epochs(&epochs).unwrap();
    store.write_results(&results).unwrap();
    store.write_timings(&timings).unwrap();

    let events = TrialEvent::from_frame(&store.read(Table::Trials).unwrap()).unwrap();
    assert_eq!(events, vec![start, end]);
    let back = EpochRow::from_frame(&store.read(Table::Epochs).unwrap()).unwrap();
    assert_eq!(epoch_keys(&back), epoch_keys(&epochs));
    assert!(back[0].value.is_nan() && back[1].value == f64::INFINITY);
    let back = ResultRow::from_frame(&store.read(Table::Results).unwrap()).unwrap();
    assert_eq!(result_keys(&back, true), result_keys(&results, true));
    assert_eq!(back.iter().filter(|r| r.value.is_nan()).count(), 1);
    let back = TimingRow::from_frame(&store.read(Table::Timings).unwrap()).unwrap();
    assert_eq!(back, timings);

    // Column types are the documented ones.
    let trials = store.read(Table::Trials).unwrap();
    for field in Table::Trials.schema().iter_fields() {
        assert_eq!(
            trials.column(field.name()).unwrap().dtype(),
            field.dtype(),
            "{}",
            field.name()
        );
    }
    assert_eq!(
        trials.column("param.train.epochs").unwrap().dtype(),
        &DataType::String
    );
}

#[test]
fn an_empty_store_has_every_column() {
    let dir = util::temp_dir();
    let store = new_store(dir.path());
    for table in Table::ALL {
        let df = store.read(table).unwrap();
        assert_eq!(df.height(), 0);
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let want: Vec<String> = table.schema().iter_names().map(|s| s.to_string()).collect();
        assert_eq!(names, want, "{table}");
    }
    let c = store.canonical().unwrap();
    assert_eq!(
        (c.trials.height(), c.epochs.height(), c.results.height()),
        (0, 0, 0)
    );
    assert!(c.trials.column("attempts").is_ok());
}

#[test]
fn parts_with_different_params_stack_with_nulls() {
    let dir = util::temp_dir();
    let store = new_store(dir.path());
    let a = start_event("unet3d-f0-s0", 1, "unet3d", 0, 0);
    let b = start_event("cyclegan-f0-s0", 1, "cyclegan", 0, 0);
    store.write_trial_event(&a).unwrap();
    store.write_trial_event(&b).unwrap();
    let df = store.read(Table::Trials).unwrap();
    let w = df.column("param.loss.golgi_weight").unwrap().str().unwrap();
    let ids = df.column("trial_id").unwrap().str().unwrap();
    let by_id: BTreeMap<&str, Option<&str>> =
        ids.iter().map(Option::unwrap).zip(w.iter()).collect();
    assert_eq!(by_id["cyclegan-f0-s0"], Some("3.5"));
    assert_eq!(by_id["unet3d-f0-s0"], None);
    // And the structs read back without the missing param.
    let events = TrialEvent::from_frame(&df).unwrap();
    let unet = events.iter().find(|e| e.model == "unet3d").unwrap();
    assert_eq!(unet.params, a.params);
}

fn chosen_attempts(c: &Canonical) -> BTreeMap<String, (u32, String, u32)> {
    let t = &c.trials;
    let ids = t.column("trial_id").unwrap().str().unwrap();
    let att = t.column("attempt").unwrap().u32().unwrap();
    let st = t.column("status").unwrap().str().unwrap();
    let n = t.column("attempts").unwrap().u32().unwrap();
    (0..t.height())
        .map(|i| {
            (
                ids.get(i).unwrap().to_string(),
                (
                    att.get(i).unwrap(),
                    st.get(i).unwrap().to_string(),
                    n.get(i).unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn the_canonical_view_keeps_only_chosen_attempts() {
    let dir = util::temp_dir();
    let store = new_store(dir.path());
    small_sweep(&store);
    let c = store.canonical().unwrap();
    let chosen = chosen_attempts(&c);
    let want: BTreeMap<String, (u32, String, u32)> = [
        ("cyclegan-f0-s0", (1, "finished", 1)),
        ("cyclegan-f1-s0", (2, "finished", 2)),
        ("unet3d-f0-s0", (1, "finished", 1)),
        ("unet3d-f1-s0", (2, "finished", 2)),
        ("vox2vox-f0-s0", (1, "finished", 1)),
        ("vox2vox-f1-s0", (1, "failed", 1)),
    ]
    .into_iter()
    .map(|(k, (a, s, n))| (k.to_string(), (a, s.to_string(), n)))
    .collect();
    assert_eq!(chosen, want);
    // Raw tables keep the history: 2 + 1 extra epochs of the killed/interrupted attempts.
    assert_eq!(
        store.read(Table::Epochs).unwrap().height(),
        (5 * 3 + 1 + 2 + 1) * 3
    );
    assert_eq!(c.epochs.height(), (5 * 3 + 1) * 3);
    assert_eq!(c.results.height(), 5 * 12);
    assert_eq!(c.timings.height(), 5 * 3);
    let epochs = EpochRow::from_frame(&c.epochs).unwrap();
    for r in &epochs {
        assert_eq!(r.attempt, chosen[&r.trial_id].0, "{r:?}");
    }
    // The view with trial columns joined on, for tables by model.
    let by_model = c.results_with(&["model", "fold"]).unwrap();
    assert_eq!(by_model.height(), 60);
    assert!(by_model.column("model").unwrap().null_count() == 0);
    assert!(c.results_with(&["no_such_column"]).is_err());
}

#[test]
fn a_killed_and_rerun_sweep_holds_the_rows_of_an_uninterrupted_one() {
    let dir = util::temp_dir();
    let clean = Store::create(dir.path().join("clean"))
        .unwrap()
        .with_durable(false);
    for (id, model, fold, seed) in TRIALS {
        let status = if id == "vox2vox-f1-s0" {
            TrialStatus::Failed
        } else {
            TrialStatus::Finished
        };
        let epochs = if id == "vox2vox-f1-s0" { 1 } else { 3 };
        write_attempt(
            &clean,
            &start_event(id, 1, model, fold, seed),
            epochs,
            status,
        );
    }
    let rerun = Store::create(dir.path().join("rerun"))
        .unwrap()
        .with_durable(false);
    small_sweep(&rerun);
    let (a, b) = (clean.canonical().unwrap(), rerun.canonical().unwrap());
    let strip = |rows: Vec<EpochRow>| -> BTreeSet<String> {
        rows.into_iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {:?}",
                    r.trial_id, r.epoch, r.split, r.metric, r.value
                )
            })
            .collect()
    };
    let ea = EpochRow::from_frame(&a.epochs).unwrap();
    let eb = EpochRow::from_frame(&b.epochs).unwrap();
    assert_eq!(ea.len(), eb.len());
    assert_eq!(strip(ea), strip(eb));
    let ra = ResultRow::from_frame(&a.results).unwrap();
    let rb = ResultRow::from_frame(&b.results).unwrap();
    assert_eq!(ra.len(), rb.len());
    assert_eq!(result_keys(&ra, false), result_keys(&rb, false));
    assert_eq!(a.timings.height(), b.timings.height());
}

#[test]
fn a_finished_attempt_beats_a_later_failed_one() {
    let dir = util::temp_dir();
    let store = new_store(dir.path());
    let s1 = start_event("t1", 1, "unet3d", 0, 0);
    write_attempt(&store, &s1, 3, TrialStatus::Finished);
    write_attempt(
        &store,
        &start_event("t1", 2, "unet3d", 0, 0),
        1,
        TrialStatus::Failed,
    );
    // Only failures: the highest attempt counts.
    write_attempt(
        &store,
        &start_event("t2", 1, "unet3d", 1, 0),
        1,
        TrialStatus::Failed,
    );
    write_attempt(
        &store,
        &start_event("t2", 2, "unet3d", 1, 0),
        1,
        TrialStatus::Killed,
    );
    let chosen = chosen_attempts(&store.canonical().unwrap());
    assert_eq!(chosen["t1"], (1, "finished".to_string(), 2));
    assert_eq!(chosen["t2"], (2, "killed".to_string(), 2));
}

#[test]
fn the_latest_event_is_the_last_written_even_with_a_skewed_clock() {
    let dir = util::temp_dir();
    let store = new_store(dir.path());
    let start = start_event("t1", 1, "unet3d", 0, 0);
    // The end event carries an earlier clock reading than the start (NTP step).
    let end = start.with_status(TrialStatus::Finished, start.event_ms - 10_000, None);
    store.write_trial_event(&start).unwrap();
    store.write_trial_event(&end).unwrap();
    // Several events in one part: the later row wins.
    let s2 = start_event("t2", 1, "unet3d", 1, 0);
    let e2 = s2.with_status(TrialStatus::Killed, s2.event_ms - 1, None);
    store.write_trial_events(&[s2, e2]).unwrap();
    let attempts = TrialEvent::from_frame(&store.attempts().unwrap()).unwrap();
    let status: Vec<(&str, TrialStatus)> = attempts
        .iter()
        .map(|e| (e.trial_id.as_str(), e.status))
        .collect();
    assert_eq!(
        status,
        [("t1", TrialStatus::Finished), ("t2", TrialStatus::Killed)]
    );
}

#[test]
fn nan_is_kept_and_counted_apart_in_summaries() {
    let dir = util::temp_dir();
    let store = new_store(dir.path());
    small_sweep(&store);
    let c = store.canonical().unwrap();
    let rows = c.results_with(&["model", "fold"]).unwrap();
    let s = aggregate(&rows, &["model", "class", "metric"], Aggregation::Pooled).unwrap();
    // unet3d golgi dice: 2 finished trials × 2 volumes, vol02 is NaN in each.
    let mask = s.column("model").unwrap().str().unwrap().equal("unet3d")
        & s.column("class").unwrap().str().unwrap().equal("golgi")
        & s.column("metric").unwrap().str().unwrap().equal("dice");
    let row = s.filter(&mask).unwrap();
    assert_eq!(row.height(), 1);
    assert_eq!(row.column("n").unwrap().u32().unwrap().get(0), Some(2));
    assert_eq!(row.column("n_nan").unwrap().u32().unwrap().get(0), Some(2));
    let vals: Vec<f64> = ResultRow::from_frame(&c.results)
        .unwrap()
        .into_iter()
        .filter(|r| {
            r.trial_id.starts_with("unet3d")
                && r.class == "golgi"
                && r.metric == "dice"
                && !r.value.is_nan()
        })
        .map(|r| r.value)
        .collect();
    assert_eq!(vals.len(), 2);
    let mean = (vals[0] + vals[1]) / 2.0;
    let std = ((vals[0] - mean).powi(2) + (vals[1] - mean).powi(2)).sqrt();
    let got_mean = row.column("mean").unwrap().f64().unwrap().get(0).unwrap();
    let got_std = row.column("std").unwrap().f64().unwrap().get(0).unwrap();
    assert!((got_mean - mean).abs() < 1e-12 && (got_std - std).abs() < 1e-12);
}

#[test]
fn parallel_threads_never_lose_or_overwrite_parts() {
    let dir = util::temp_dir();
    let root = dir.path().join("store");
    let shared = Store::create(&root).unwrap().with_durable(false);
    let per_part = epoch_rows("same-trial", 1, 1..=4);
    std::thread::scope(|scope| {
        for t in 0..6 {
            let (shared, root, rows) = (&shared, &root, &per_part);
            scope.spawn(move || {
                // Half the threads share one Store, half open their own: both collide on names.
                let own = Store::open(root).unwrap().with_durable(false);
                let store = if t % 2 == 0 { shared } else { &own };
                for _ in 0..20 {
                    store.write_epochs(rows).unwrap();
                }
            });
        }
    });
    let parts = shared.parts(Table::Epochs).unwrap();
    assert_eq!(parts.len(), 6 * 20);
    let names: BTreeSet<_> = parts
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 120);
    assert_eq!(
        shared.read(Table::Epochs).unwrap().height(),
        120 * per_part.len()
    );
    assert_no_temp_files(&root);
}

/// A 1,000-trial sweep leaves thousands of parts; reading them once overflowed a thread's
/// stack (parallel reads nested inside each other while waiting for polars' own pool).
#[test]
fn thousands_of_parts_are_all_read() {
    let dir = util::temp_dir();
    let store = new_store(dir.path());
    const PARTS: u32 = 3000;
    for epoch in 1..=PARTS {
        store
            .write_epochs(&epoch_rows("many-parts", 1, epoch..=epoch))
            .unwrap();
    }
    let df = store.read(Table::Epochs).unwrap();
    let per_part = epoch_rows("many-parts", 1, 1..=1).len();
    assert_eq!(df.height(), PARTS as usize * per_part);
    let epochs: Vec<u32> = df
        .column("epoch")
        .unwrap()
        .cast(&DataType::UInt32)
        .unwrap()
        .u32()
        .unwrap()
        .into_no_null_iter()
        .collect();
    let mut sorted = epochs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted.first(), Some(&1));
    assert_eq!(sorted.last(), Some(&PARTS));
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        PARTS as usize,
        "an epoch's part missing or read twice"
    );
}

/// How many temporary part files the store's folders hold.
fn temp_files(root: &Path) -> usize {
    Table::ALL
        .iter()
        .flat_map(|t| std::fs::read_dir(root.join(t.name())).unwrap())
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .count()
}

fn assert_no_temp_files(root: &Path) {
    assert_eq!(
        temp_files(root),
        0,
        "temporary files left in {}",
        root.display()
    );
}

const CHILD_STORE: &str = "SEGLAB_TEST_CHILD_STORE";
const CHILD_PARTS: &str = "SEGLAB_TEST_CHILD_PARTS";
const CHILD_ROWS: &str = "SEGLAB_TEST_CHILD_ROWS";

/// Spawns this test binary as a writer process running `child_writer`.
fn spawn_writer(root: &Path, parts: usize, rows: u32) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_writer",
            "--test-threads=1",
            "--quiet",
        ])
        .env(CHILD_STORE, root)
        .env(CHILD_PARTS, parts.to_string())
        .env(CHILD_ROWS, rows.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Not a test of its own: the writer process the multi-process tests spawn (it does nothing
/// when run by hand without their environment).
#[test]
#[ignore = "helper process of the multi-process store tests"]
fn child_writer() {
    let Some(root) = std::env::var_os(CHILD_STORE) else {
        eprintln!("child_writer only runs when spawned by the multi-process store tests");
        return;
    };
    let parts: usize = std::env::var(CHILD_PARTS).unwrap().parse().unwrap();
    let rows: u32 = std::env::var(CHILD_ROWS).unwrap().parse().unwrap();
    let store = Store::open(root).unwrap();
    let batch = epoch_rows("same-trial", 1, 1..=rows);
    for _ in 0..parts {
        store.write_epochs(&batch).unwrap();
    }
}

#[test]
fn parallel_processes_never_lose_or_overwrite_parts() {
    let dir = util::temp_dir();
    let root = dir.path().join("store");
    Store::create(&root).unwrap();
    let children: Vec<_> = (0..3).map(|_| spawn_writer(&root, 15, 5)).collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let store = Store::open(&root).unwrap();
    assert_eq!(store.parts(Table::Epochs).unwrap().len(), 45);
    assert_eq!(store.read(Table::Epochs).unwrap().height(), 45 * 5 * 3);
    assert_no_temp_files(&root);
}

#[test]
fn writers_killed_mid_write_leave_no_visible_half_part() {
    let dir = util::temp_dir();
    let root = dir.path().join("store");
    Store::create(&root).unwrap();
    // Big parts (60,000 rows) so that kills land inside writes: each round waits until the
    // writer has published a part and started the next one, then kills it.
    let rows_per_part = 20_000 * 3;
    let reader = Store::open(&root).unwrap();
    let rounds = 6;
    for round in 0..rounds {
        let before = reader.parts(Table::Epochs).unwrap().len();
        let stale = temp_files(&root);
        let mut child = spawn_writer(&root, 1000, 20_000);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while reader.parts(Table::Epochs).unwrap().len() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer wrote nothing"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        while temp_files(&root) == stale {
            assert!(std::time::Instant::now() < deadline, "the writer stalled");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(3 * round));
        // SIGKILL: no destructor, no cleanup.
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let store = Store::open(&root).unwrap();
    let parts = store.parts(Table::Epochs).unwrap().len();
    // Every visible part is complete and readable.
    let df = store.read(Table::Epochs).unwrap();
    assert_eq!(df.height(), parts * rows_per_part);
    // The next writer run clears whatever the killed writers left behind.
    assert!(parts >= rounds as usize);
    assert!(temp_files(&root) > 0, "no kill landed inside a write");
    Store::create(&root).unwrap();
    assert_no_temp_files(&root);
    assert_eq!(store.parts(Table::Epochs).unwrap().len(), parts);
}

#[test]
fn a_corrupt_part_is_named_in_the_error() {
    let dir = util::temp_dir();
    let store = new_store(dir.path());
    store.write_epochs(&epoch_rows("t1", 1, 1..=2)).unwrap();
    let bad = store.table_dir(Table::Epochs).join("t2-a1-000000.parquet");
    std::fs::write(&bad, b"PAR1 not really parquet").unwrap();
    let err = store.read(Table::Epochs).unwrap_err().to_string();
    assert!(err.contains(&bad.display().to_string()), "{err}");
    // A part with a column of the wrong type is refused with the column named.
    std::fs::remove_file(&bad).unwrap();
    let mut df = df!("trial_id" => ["t3"], "attempt" => [1u32], "value" => ["high"]).unwrap();
    let wrong = store.table_dir(Table::Epochs).join("t3-a1-000000.parquet");
    polars_io::parquet::write::ParquetWriter::new(std::fs::File::create(&wrong).unwrap())
        .finish(&mut df)
        .unwrap();
    let err = store.read(Table::Epochs).unwrap_err().to_string();
    assert!(
        err.contains("t3-a1-000000.parquet") && err.contains("`value`"),
        "{err}"
    );
}

/// Writes the store's first `trials` part again as trial `t0` without the columns `dropped`:
/// a part as a version before those columns wrote it.
fn write_older_part(store: &Store, dropped: &[&str]) {
    let part = store.parts(Table::Trials).unwrap()[0].clone();
    use polars_io::SerReader;
    let mut df = polars_io::parquet::read::ParquetReader::new(std::fs::File::open(&part).unwrap())
        .finish()
        .unwrap();
    for c in dropped {
        df = df.drop(c).unwrap();
    }
    df.with_column(Column::new("trial_id".into(), ["t0"]))
        .unwrap();
    let old = store.table_dir(Table::Trials).join("t0-a1-000000.parquet");
    polars_io::parquet::write::ParquetWriter::new(std::fs::File::create(&old).unwrap())
        .finish(&mut df)
        .unwrap();
}

/// A `trials` part written before the `compute_path` column (here: the column dropped from a
/// part) reads back with an empty compute path beside the parts that have it.
#[test]
fn trials_parts_without_the_compute_path_column_stay_readable() {
    let dir = util::temp_dir();
    let store = new_store(dir.path());
    store
        .write_trial_event(&start_event("t1", 1, "unet3d", 0, 0))
        .unwrap();
    write_older_part(&store, &["compute_path"]);
    let events = TrialEvent::from_frame(&store.read(Table::Trials).unwrap()).unwrap();
    let path = |id: &str| {
        let e = events.iter().find(|e| e.trial_id == id).unwrap();
        e.compute_path.clone()
    };
    assert_eq!((path("t0").as_str(), path("t1").as_str()), ("", "kernels"));
}

/// A `trials` part written before the pruning, thread and label columns reads back with
/// none of them, beside a part that has them all.
#[test]
fn trials_parts_without_the_prune_thread_and_label_columns_stay_readable() {
    let dir = util::temp_dir();
    let store = new_store(dir.path());
    let mut pruned = start_event("t1", 1, "unet3d", 0, 0).with_status(
        TrialStatus::Pruned,
        util::tracking::T0 + 5_000,
        Some("pruned at rung 0 (epoch 2)".into()),
    );
    pruned.prune = Some(seglab::tracking::PruneCut {
        rung: 0,
        epoch: 2,
        value: 0.25,
        cut: 0.5,
    });
    pruned.threads = Some(3);
    pruned.tags = vec!["baseline".into(), "night 1".into()];
    pruned.notes = Some("first try".into());
    store.write_trial_event(&pruned).unwrap();
    write_older_part(
        &store,
        &[
            "prune_rung",
            "prune_epoch",
            "prune_value",
            "prune_cut",
            "threads",
            "tags",
            "notes",
        ],
    );
    let events = TrialEvent::from_frame(&store.read(Table::Trials).unwrap()).unwrap();
    let of = |id: &str| events.iter().find(|e| e.trial_id == id).unwrap().clone();
    let (old, new) = (of("t0"), of("t1"));
    assert_eq!(
        (old.prune, old.threads, old.tags.len(), old.notes),
        (None, None, 0, None)
    );
    assert_eq!(new.prune, pruned.prune);
    assert_eq!(new.threads, Some(3));
    assert_eq!(new.tags, ["baseline", "night 1"]);
    assert_eq!(new.notes.as_deref(), Some("first try"));
}

#[test]
fn bad_names_and_missing_stores_are_refused() {
    let dir = util::temp_dir();
    let store = new_store(dir.path());
    let mut rows = epoch_rows("ok", 1, 1..=1);
    rows[0].trial_id = "../escape".into();
    let err = store.write_epochs(&rows).unwrap_err().to_string();
    assert!(err.contains("../escape"), "{err}");
    let err = Store::open(dir.path().join("nowhere"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nowhere") && err.contains("not a seglab store"),
        "{err}"
    );
}

// ---- the `seglab runs` tables --------------------------------------------------------------

fn sweep_dir() -> tempfile::TempDir {
    let dir = util::temp_dir();
    small_sweep(
        &Store::create(dir.path().join("store"))
            .unwrap()
            .with_durable(false),
    );
    dir
}

fn stdout_of(args: &[&str]) -> (i32, String, String) {
    let out = util::run_seglab(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn runs_ls_lists_the_chosen_attempt_of_each_trial() {
    let dir = sweep_dir();
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = stdout_of(&["runs", "ls", d]);
    assert_eq!(code, 0, "{err}");
    for (id, ..) in TRIALS {
        assert!(out.contains(id), "{id} missing:\n{out}");
    }
    let line = out.lines().find(|l| l.starts_with("unet3d-f1-s0")).unwrap();
    assert!(line.contains("finished") && line.contains("2/2"), "{line}");
    assert!(out.contains("6 trials: 5 finished, 1 failed"), "{out}");
    assert!(
        out.contains("vox2vox-f1-s0 (attempt 1): out of memory in epoch 2"),
        "{out}"
    );
    assert!(
        out.contains("preset=code") && out.contains("train.epochs=3"),
        "{out}"
    );
    // The CycleGAN weight varies (absent elsewhere), so it is a column.
    assert!(
        out.lines().next().unwrap().contains("sweep tiny-cv"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.contains("loss.golgi_weight")),
        "{out}"
    );

    let (code, out, _) = stdout_of(&["runs", "ls", d, "--status", "failed"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("vox2vox-f1-s0") && !out.contains("unet3d-f0-s0"),
        "{out}"
    );
    let (_, out, _) = stdout_of(&[
        "runs",
        "ls",
        &format!("{d}/store"),
        "--filter",
        "model=cyclegan",
        "--filter",
        "fold=1",
    ]);
    assert!(
        out.contains("cyclegan-f1-s0") && !out.contains("cyclegan-f0-s0"),
        "{out}"
    );
    assert!(out.contains("1 trials: 1 finished"), "{out}");

    let (code, _, err) = stdout_of(&["runs", "ls", d, "--filter", "colour=red"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--filter colour") && err.contains("loss.golgi_weight"),
        "{err}"
    );
    let (code, _, err) = stdout_of(&["runs", "ls", d, "--status", "done"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("\"done\"") && err.contains("finished"),
        "{err}"
    );
    let (code, _, err) = stdout_of(&["runs", "ls", &format!("{d}/missing")]);
    assert_eq!(code, 2);
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn runs_compare_prints_mean_std_and_counts_per_model_and_class() {
    let dir = sweep_dir();
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = stdout_of(&["runs", "compare", d]);
    assert_eq!(code, 0, "{err}");
    let row = |model: &str, class: &str| {
        out.lines()
            .find(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 2 && f[0] == model && f[1] == class && f[2] == "dice"
            })
            .unwrap_or_else(|| panic!("no {model} {class} row in\n{out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // Columns end with n (folds), NaN (rows left out), trials.
    // unet3d golgi: 2 finished trials on folds 0 and 1, vol02 NaN in each → 2 folds, 2 NaN.
    let r = row("unet3d", "golgi");
    assert_eq!(&r[r.len() - 3..], ["2", "2", "2"], "{r:?}");
    // vox2vox has one finished trial: one fold, nothing left out.
    let r = row("vox2vox", "nuclei");
    assert_eq!(&r[r.len() - 3..], ["1", "0", "1"], "{r:?}");
    assert!(out.contains("mean ± std over folds"), "{out}");
    let (code, pooled, err) = stdout_of(&["runs", "compare", d, "--aggregation", "pooled"]);
    assert_eq!(code, 0, "{err}");
    assert!(pooled.contains("pooled (as nnU-Net"), "{pooled}");
    // The printed mean is the mean of the fixture values.
    let v: Vec<f64> = ["unet3d-f0-s0", "unet3d-f1-s0"]
        .iter()
        .flat_map(|t| {
            ["vol01", "vol02"].map(|vol| util::tracking::value(t, 0, &format!("{vol}nucleidice")))
        })
        .collect();
    // two folds of two volumes: the mean of fold means is the mean of the four values
    let mean = v.iter().sum::<f64>() / 4.0;
    let r = row("unet3d", "nuclei");
    assert_eq!(r[3], format!("{mean:.4}"), "{r:?}");

    let (code, out, err) = stdout_of(&[
        "runs",
        "compare",
        d,
        "--metric",
        "dice,recall",
        "--by",
        "loss.golgi_weight,class",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("3.5") && l.contains("recall")),
        "{out}"
    );
    let (code, _, err) = stdout_of(&["runs", "compare", d, "--by", "colour"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--by colour") && err.contains("loss.golgi_weight"),
        "{err}"
    );
}

// ---- compaction -----------------------------------------------------------------------------

fn canonical_fingerprint(store: &Store) -> Vec<BTreeSet<String>> {
    let c = store.canonical().unwrap();
    let e = EpochRow::from_frame(&c.epochs).unwrap();
    let r = ResultRow::from_frame(&c.results).unwrap();
    let t = TimingRow::from_frame(&c.timings).unwrap();
    let trials = TrialEvent::from_frame(&c.trials).unwrap();
    vec![
        epoch_keys(&e).into_iter().collect(),
        result_keys(&r, true),
        t.iter().map(|x| format!("{x:?}")).collect(),
        trials.iter().map(|x| format!("{x:?}")).collect(),
    ]
}

#[test]
fn compaction_merges_ended_attempts_and_keeps_every_row() {
    let dir = util::temp_dir();
    let store = new_store(dir.path());
    small_sweep(&store);
    // A running attempt: its parts must stay as they are.
    let running = start_event("unet3d-f2-s0", 1, "unet3d", 2, 0);
    write_attempt(&store, &running, 2, TrialStatus::Running);
    let before = canonical_fingerprint(&store);
    let raw_epochs = store.read(Table::Epochs).unwrap().height();
    let report = store.compact().unwrap();
    assert_eq!(
        (report.parts_before, report.parts_after),
        (35, 8),
        "{report:?}"
    );
    // One compacted part per table, plus the parts of the attempts still `running`: the new
    // one and the hard-killed first attempt of unet3d-f1-s0 (1 event + 1 epochs part each).
    assert_eq!(store.parts(Table::Trials).unwrap().len(), 3);
    assert_eq!(store.parts(Table::Epochs).unwrap().len(), 3);
    assert_eq!(store.parts(Table::Results).unwrap().len(), 1);
    assert_eq!(canonical_fingerprint(&store), before);
    assert_eq!(store.read(Table::Epochs).unwrap().height(), raw_epochs);
    // The running attempt goes on and ends; a second compaction folds it in.
    let end = running.with_status(TrialStatus::Finished, running.started_ms + 9, None);
    store.write_trial_event(&end).unwrap();
    let before = canonical_fingerprint(&store);
    store.compact().unwrap();
    assert_eq!(store.parts(Table::Trials).unwrap().len(), 2);
    assert_eq!(store.parts(Table::Epochs).unwrap().len(), 2);
    assert_eq!(canonical_fingerprint(&store), before);
    // Nothing left to do.
    let again = store.compact().unwrap();
    assert_eq!(again.parts_before, again.parts_after);
}

/// Hard-linked copies of the current parts, to put back with [`restore`] after a compaction
/// removed them: the state a compaction killed between publishing and removing leaves behind.
fn keep_copies(store: &Store, into: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for t in Table::ALL {
        for p in store.parts(t).unwrap() {
            let copy = into.join(format!(
                "{}-{}",
                t.name(),
                p.file_name().unwrap().to_string_lossy()
            ));
            std::fs::hard_link(&p, &copy).unwrap();
            out.push((copy, p));
        }
    }
    out
}

fn restore(copies: &[(PathBuf, PathBuf)]) {
    for (copy, original) in copies {
        if original.exists() {
            std::fs::remove_file(copy).unwrap(); // a part the compaction kept
        } else {
            std::fs::rename(copy, original).unwrap();
        }
    }
}

#[test]
fn an_interrupted_compaction_leaves_a_consistent_store() {
    let dir = util::temp_dir();
    let store = new_store(dir.path());
    small_sweep(&store);
    let before = canonical_fingerprint(&store);
    let stash = dir.path().join("stash");
    std::fs::create_dir(&stash).unwrap();
    let copies = keep_copies(&store, &stash);
    store.compact().unwrap();
    restore(&copies);
    // Old parts are back next to the compacted ones: readers still count each row once. (The
    // second visible epochs part is that of the hard-killed attempt, still `running`.)
    assert_eq!(canonical_fingerprint(&store), before);
    assert_eq!(store.parts(Table::Epochs).unwrap().len(), 2);
    // The next compaction removes them.
    store.compact().unwrap();
    let files = std::fs::read_dir(store.table_dir(Table::Epochs))
        .unwrap()
        .count();
    assert_eq!(files, 2);
    assert_eq!(canonical_fingerprint(&store), before);
}

#[test]
fn readers_see_every_row_exactly_once_while_compactions_run() {
    let dir = util::temp_dir();
    let root = dir.path().join("store");
    let store = Store::create(&root).unwrap().with_durable(false);
    small_sweep(&store);
    let rows = store.read(Table::Epochs).unwrap().height();
    let stash = dir.path().join("stash");
    std::fs::create_dir(&stash).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    /// Stops the reader however the main thread leaves (a failed assertion included).
    struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let store = Store::open(&root).unwrap();
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads < 5 {
                assert_eq!(store.read(Table::Epochs).unwrap().height(), rows);
                reads += 1;
            }
            reads
        });
        let stopper = Stop(&stop);
        for _ in 0..8 {
            // Each round: leftovers of an "interrupted" compaction, then a real one.
            let copies = keep_copies(&store, &stash);
            store.compact().unwrap();
            restore(&copies);
        }
        drop(stopper);
        assert!(reader.join().unwrap() >= 5);
    });
}

#[test]
fn one_compaction_at_a_time() {
    let dir = util::temp_dir();
    let store = new_store(dir.path());
    small_sweep(&store);
    std::fs::write(
        store.root().join(".compact.lock"),
        format!("{} x", std::process::id()),
    )
    .unwrap();
    let err = store.compact().unwrap_err().to_string();
    assert!(err.contains("another compaction"), "{err}");
    // A lock left by a process of this machine that is gone is taken over.
    std::fs::remove_file(store.root().join(".compact.lock")).unwrap();
    store.compact().unwrap();
    assert!(!store.root().join(".compact.lock").exists());
}

#[test]
fn runs_compact_merges_parts_and_keeps_the_tables() {
    let dir = sweep_dir();
    let d = dir.path().to_str().unwrap();
    let (_, before, _) = stdout_of(&["runs", "compare", d]);
    let (code, out, err) = stdout_of(&["runs", "compact", d]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("33 part file(s) -> 6"), "{out}");
    let (_, after, _) = stdout_of(&["runs", "compare", d]);
    assert_eq!(before, after);
}
