//! Store fixtures: trial events and rows that look like a small sweep, written through the
//! public `Store` API (until the sweep runner exists, this is how the store tests get data).

use std::collections::BTreeMap;

use seglab::tracking::{EpochRow, ResultRow, Store, TimingRow, TrialEvent, TrialStatus};

pub const SWEEP: &str = "tiny-cv";
pub const T0: i64 = 1_763_770_000_000;

/// A `running` start event of a trial attempt, provenance filled in.
pub fn start_event(trial_id: &str, attempt: u32, model: &str, fold: u32, seed: u64) -> TrialEvent {
    let mut params = BTreeMap::new();
    params.insert("train.epochs".to_string(), "3".to_string());
    if model == "cyclegan" {
        params.insert("loss.golgi_weight".to_string(), "3.5".to_string());
    }
    let started = T0 + 60_000 * i64::from(attempt) + 1000 * i64::from(fold);
    TrialEvent {
        sweep: SWEEP.to_string(),
        trial_id: trial_id.to_string(),
        attempt,
        status: TrialStatus::Running,
        event_ms: started,
        model: model.to_string(),
        classes: vec!["golgi".to_string(), "nuclei".to_string()],
        fold,
        seed,
        preset: "code".to_string(),
        scale: "cpu-small".to_string(),
        dataset: "data/phantom-easy".to_string(),
        dataset_fingerprint: "fp-0123".to_string(),
        config_json: format!(r#"{{"model":"{model}","fold":{fold},"seed":{seed}}}"#),
        error: None,
        started_ms: started,
        ended_ms: None,
        git_commit: "0123456789abcdef0123456789abcdef01234567".to_string(),
        git_dirty: true,
        git_diff_sha256: Some("d1ff".to_string()),
        user: "tester".to_string(),
        host: "node1".to_string(),
        device: "cpu".to_string(),
        device_name: "cpu".to_string(),
        compute_path: "kernels".to_string(),
        seglab_version: "0.1.0".to_string(),
        burn_version: "0.22.1".to_string(),
        command: "seglab sweep run experiments/tiny-cv.toml".to_string(),
        preprocess_check: None,
        params,
        split_id: None,
        split_json: None,
        select_metric: None,
        prune: None,
        threads: None,
        tags: Vec::new(),
        notes: None,
    }
}

/// A deterministic value of a metric: the same for every attempt of a trial, as a seeded CPU
/// run gives the same losses.
pub fn value(trial_id: &str, _attempt: u32, key: &str) -> f64 {
    let h = trial_id.bytes().chain(key.bytes()).fold(7919u64, |h, b| {
        h.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    (h % 1000) as f64 / 1000.0
}

/// Epoch rows of epochs `1..=n` (train loss and val dice per class).
pub fn epoch_rows(
    trial_id: &str,
    attempt: u32,
    epochs: std::ops::RangeInclusive<u32>,
) -> Vec<EpochRow> {
    let mut rows = Vec::new();
    for epoch in epochs {
        for (split, metric) in [
            ("train", "loss"),
            ("val", "dice_golgi"),
            ("val", "dice_nuclei"),
        ] {
            rows.push(EpochRow {
                trial_id: trial_id.to_string(),
                attempt,
                epoch,
                split: split.to_string(),
                metric: metric.to_string(),
                value: value(trial_id, attempt, &format!("{split}{metric}{epoch}")),
                wall_s: 1.5 * f64::from(epoch),
            });
        }
    }
    rows
}

/// Test results: 2 volumes × 2 classes × (dice, precision, recall); the Golgi of `vol02` is
/// empty, so its dice is NaN.
pub fn result_rows(trial_id: &str, attempt: u32) -> Vec<ResultRow> {
    let mut rows = Vec::new();
    for volume in ["vol01", "vol02"] {
        for class in ["golgi", "nuclei"] {
            for metric in ["dice", "precision", "recall"] {
                let v = if volume == "vol02" && class == "golgi" && metric == "dice" {
                    f64::NAN
                } else {
                    value(trial_id, attempt, &format!("{volume}{class}{metric}"))
                };
                rows.push(ResultRow {
                    trial_id: trial_id.to_string(),
                    attempt,
                    volume: volume.to_string(),
                    class: class.to_string(),
                    metric: metric.to_string(),
                    value: v,
                });
            }
        }
    }
    rows
}

pub fn timing_rows(trial_id: &str, attempt: u32) -> Vec<TimingRow> {
    ["preprocess", "train", "predict"]
        .iter()
        .enumerate()
        .map(|(i, phase)| TimingRow {
            trial_id: trial_id.to_string(),
            attempt,
            phase: phase.to_string(),
            seconds: 1.0 + i as f64,
        })
        .collect()
}

/// One attempt written as the runner would: start event, epochs, then (when `finished`)
/// results, timings and the end event; otherwise the attempt ends as `status` after `epochs`
/// epochs (a `running` end means the process was killed hard and wrote nothing more).
pub fn write_attempt(
    store: &Store,
    start: &TrialEvent,
    epochs: u32,
    status: TrialStatus,
) -> TrialEvent {
    store.write_trial_event(start).unwrap();
    store
        .write_epochs(&epoch_rows(&start.trial_id, start.attempt, 1..=epochs))
        .unwrap();
    let end_ms = start.started_ms + 30_000;
    match status {
        TrialStatus::Running => start.clone(),
        TrialStatus::Finished => {
            store
                .write_results(&result_rows(&start.trial_id, start.attempt))
                .unwrap();
            store
                .write_timings(&timing_rows(&start.trial_id, start.attempt))
                .unwrap();
            let end = start.with_status(TrialStatus::Finished, end_ms, None);
            store.write_trial_event(&end).unwrap();
            end
        }
        other => {
            let error =
                (other == TrialStatus::Failed).then(|| "out of memory in epoch 2".to_string());
            let end = start.with_status(other, end_ms, error);
            store.write_trial_event(&end).unwrap();
            end
        }
    }
}

/// The trials of the small sweep: (trial_id, model, fold, seed).
pub const TRIALS: [(&str, &str, u32, u64); 6] = [
    ("unet3d-f0-s0", "unet3d", 0, 0),
    ("unet3d-f1-s0", "unet3d", 1, 0),
    ("vox2vox-f0-s0", "vox2vox", 0, 0),
    ("vox2vox-f1-s0", "vox2vox", 1, 0),
    ("cyclegan-f0-s0", "cyclegan", 0, 0),
    ("cyclegan-f1-s0", "cyclegan", 1, 0),
];

/// A small sweep with history: `unet3d-f1-s0` was killed hard at epoch 2 and re-run (attempt 2,
/// finished); `vox2vox-f1-s0` failed; `cyclegan-f1-s0` was interrupted, then finished on
/// attempt 2; the rest finished on attempt 1. Each finished attempt has 3 epochs.
pub fn small_sweep(store: &Store) {
    for (id, model, fold, seed) in TRIALS {
        let first = start_event(id, 1, model, fold, seed);
        match id {
            "unet3d-f1-s0" => {
                write_attempt(store, &first, 2, TrialStatus::Running);
                write_attempt(
                    store,
                    &start_event(id, 2, model, fold, seed),
                    3,
                    TrialStatus::Finished,
                );
            }
            "vox2vox-f1-s0" => {
                write_attempt(store, &first, 1, TrialStatus::Failed);
            }
            "cyclegan-f1-s0" => {
                write_attempt(store, &first, 1, TrialStatus::Interrupted);
                write_attempt(
                    store,
                    &start_event(id, 2, model, fold, seed),
                    3,
                    TrialStatus::Finished,
                );
            }
            _ => {
                write_attempt(store, &first, 3, TrialStatus::Finished);
            }
        }
    }
}
