//! The workers of a sweep: `--jobs N` splits the threads between them (each trial records
//! its threads), and `sweep status` follows the running ones (epoch, score, time left) and
//! estimates the sweep's end from a store state built here.

mod util;
use util::{plan_ids, text};

use std::path::{Path, PathBuf};

use seglab::tracking::{EpochRow, Store, TrialEvent, TrialStatus, now_ms};

fn spec(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join("experiments").join(format!("{name}.toml"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, body).unwrap();
    path
}

fn head(models: &str, folds: &str) -> String {
    format!(
        "dataset = \"../data\"\nclasses = [\"golgi\", \"nuclei\"]\nscale = \"cpu-small\"\n\
         models = [{models}]\n{}[cv]\nscheme = \"nested\"\nfolds = 3\nrun_folds = {folds}\n",
        util::ALLOW_CLIPPING
    )
}

/// The threads each trial's chosen attempt recorded.
fn threads(store: &Path) -> Vec<Option<u32>> {
    let df = Store::open(store).unwrap().chosen_trials().unwrap();
    TrialEvent::from_frame(&df)
        .unwrap()
        .into_iter()
        .map(|e| e.threads)
        .collect()
}

#[test]
fn two_jobs_give_each_worker_half_the_threads() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let path = spec(dir.path(), "t", &head("\"threshold\"", "[0, 1, 2]"));
    let p = path.to_str().unwrap();
    // The sweep's own pool has 4 threads (RAYON_NUM_THREADS, as a user or Slurm sets it).
    let run = |jobs: &str, out: &str| {
        let o = util::seglab()
            .env("RAYON_NUM_THREADS", "4")
            .args(["sweep", "run", p, "--jobs", jobs, "--out", out])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    };
    let two = dir.path().join("two");
    run("2", two.to_str().unwrap());
    assert_eq!(threads(&two.join("store")), [Some(2); 3]);
    let one = dir.path().join("one");
    run("1", one.to_str().unwrap());
    assert_eq!(threads(&one.join("store")), [Some(4); 3]);
}

/// A `running` event of `trial_id` started `ago_s` seconds before now.
fn running(trial_id: &str, started_ms: i64) -> TrialEvent {
    let mut e = util::tracking::start_event(trial_id, 1, "unet3d", 0, 0);
    e.sweep = "s".into();
    e.started_ms = started_ms;
    e.event_ms = started_ms;
    e
}

#[test]
fn status_shows_running_trials_and_estimates_the_end() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let body = format!(
        "{}[set]\n\"train.epochs\" = 10\n[[grid]]\n\"infer.threshold\" = [0.5, 0.6, 0.7, 0.8]\n",
        head("\"unet3d\"", "[0]")
    );
    let path = spec(dir.path(), "s", &body);
    let p = path.to_str().unwrap();
    let ids = plan_ids(&util::run_seglab(&["sweep", "plan", p]));
    assert_eq!(ids.len(), 4);
    let store = Store::create(dir.path().join("experiments/s/store")).unwrap();
    let now = now_ms();
    // A finished in 600 s; B runs, 4 of 10 epochs done in 240 s (dice_mean 0.65 after the
    // 4th) and half of the 5th (its progress.json); C runs since 120 s, no epoch yet; D has
    // not started.
    let a = running(&ids[0], now - 3_600_000);
    store.write_trial_event(&a).unwrap();
    store
        .write_trial_event(&a.with_status(TrialStatus::Finished, a.started_ms + 600_000, None))
        .unwrap();
    store
        .write_trial_event(&running(&ids[1], now - 300_000))
        .unwrap();
    let rows: Vec<EpochRow> = (1..=4)
        .flat_map(|e| {
            let row = |split: &str, metric: &str, value: f64| EpochRow {
                trial_id: ids[1].clone(),
                attempt: 1,
                epoch: e,
                split: split.into(),
                metric: metric.into(),
                value,
                wall_s: 60.0 * f64::from(e),
            };
            [
                row("train", "loss", 1.0 / f64::from(e)),
                row("val", "dice_golgi", 0.5 + 0.05 * f64::from(e) - 0.05),
                row("val", "dice_mean", 0.45 + 0.05 * f64::from(e)),
            ]
        })
        .collect();
    store.write_epochs(&rows).unwrap();
    let b_dir = dir.path().join("experiments/s/trials").join(&ids[1]);
    std::fs::create_dir_all(&b_dir).unwrap();
    std::fs::write(
        b_dir.join("progress.json"),
        r#"{"epoch": 5, "step": 50, "steps": 100, "epochs": 10}"#,
    )
    .unwrap();
    store
        .write_trial_event(&running(&ids[2], now - 120_000))
        .unwrap();

    let o = util::run_seglab(&["sweep", "status", p]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let line = |id: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("{id}:")))
            .unwrap_or_else(|| panic!("no progress line of {id} in\n{out}"))
            .to_string()
    };
    // B: 5.5 epochs left at 60 s each.
    assert_eq!(
        line(&ids[1]).trim(),
        format!(
            "{}: epoch 4/10, step 50/100 of epoch 5, dice_mean 0.6500, ~5m30s left",
            ids[1]
        )
    );
    // C: the finished trial's 600 s less the 120 s it has run.
    let c = line(&ids[2]);
    assert!(c.contains("epoch 0/10") && c.contains("left"), "{c}");
    // The end: D goes to B's worker when it frees (330 s) and takes 600 s.
    let sweep = out
        .lines()
        .find(|l| l.starts_with("sweep: "))
        .unwrap_or_else(|| panic!("no sweep line in\n{out}"));
    assert!(
        sweep.contains("~15m30s left") && sweep.contains("2 running, 1 to run"),
        "{sweep}"
    );
}
