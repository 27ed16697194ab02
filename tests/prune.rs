//! Budgets of a sweep: `train.max_minutes` stops a trial as `timeout` and a re-run resumes
//! it; `[prune]` stops a trial behind its rung's cut as `pruned`, a re-run leaves it alone
//! and `--no-prune` runs it to the end.

mod util;
use util::{plan_ids, text};

use std::path::{Path, PathBuf};
use std::process::Output;

use seglab::tracking::{Store, TrialEvent, TrialStatus};

fn spec(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join("experiments").join(format!("{name}.toml"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, body).unwrap();
    path
}

fn sweep(args: &[&str]) -> Output {
    util::run_seglab(&[&["sweep"], args].concat())
}

fn chosen(store_dir: &Path) -> Vec<(TrialEvent, u32)> {
    let df = Store::open(store_dir).unwrap().chosen_trials().unwrap();
    let n = df.column("attempts").unwrap().u32().unwrap().clone();
    TrialEvent::from_frame(&df)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, e)| (e, n.get(i).unwrap()))
        .collect()
}

/// The epochs of `trial_id`'s chosen attempt with a validation row.
fn val_epochs(store_dir: &Path, trial_id: &str) -> Vec<u32> {
    let c = Store::open(store_dir).unwrap().canonical().unwrap();
    let ids = c.epochs.column("trial_id").unwrap().str().unwrap().clone();
    let split = c.epochs.column("split").unwrap().str().unwrap().clone();
    let epoch = c.epochs.column("epoch").unwrap().u32().unwrap().clone();
    let mut out: Vec<u32> = (0..c.epochs.height())
        .filter(|&i| ids.get(i) == Some(trial_id) && split.get(i) == Some("val"))
        .filter_map(|i| epoch.get(i))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// A tiny U-Net sweep on one fold of the easy phantom (the settings of tests/sweep.rs).
fn tiny(epochs: u32, extra_set: &str, tail: &str) -> String {
    format!(
        "dataset = \"../data\"\nclasses = [\"golgi\", \"nuclei\"]\nscale = \"cpu-small\"\n\
         models = [\"unet3d\"]\n{}[cv]\nscheme = \"nested\"\nfolds = 3\nrun_folds = [0]\n\
         [set]\n\"train.epochs\" = {epochs}\n\"data.patches.size\" = 16\n\
         \"data.patches.step\" = 16\n\"infer.window\" = 16\n\"infer.step\" = 12\n\
         \"net.base_filters\" = 2\n{extra_set}{tail}",
        util::ALLOW_CLIPPING
    )
}

#[test]
fn a_timed_out_trial_keeps_its_id_and_a_rerun_resumes_it_to_the_end() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let path = spec(dir.path(), "t", &tiny(3, "", ""));
    let p = path.to_str().unwrap();
    let plain = plan_ids(&sweep(&["plan", p]));
    // A budget of 6 ms: the attempt takes one step, checkpoints and stops.
    std::fs::write(&path, tiny(3, "\"train.max_minutes\" = 0.0001\n", "")).unwrap();
    assert_eq!(
        plan_ids(&sweep(&["plan", p])),
        plain,
        "a budget is not part of the id"
    );
    let o = sweep(&["run", p]);
    assert!(o.status.success(), "{}", text(&o));
    let store = dir.path().join("experiments/t/store");
    let trials = chosen(&store);
    assert_eq!(trials.len(), 1);
    let (e, attempts) = &trials[0];
    assert_eq!(e.status, TrialStatus::Timeout, "{:?}", e.error);
    assert_eq!(*attempts, 1);
    assert!(
        e.error.as_deref().unwrap().contains("train.max_minutes"),
        "{:?}",
        e.error
    );
    let ckpt = dir
        .path()
        .join("experiments/t/trials")
        .join(&e.trial_id)
        .join("checkpoint_latest");
    assert!(ckpt.is_dir(), "no checkpoint at {}", ckpt.display());
    assert!(val_epochs(&store, &e.trial_id).len() < 3);

    // A larger budget: the re-run resumes the same trial and finishes all 3 epochs.
    std::fs::write(&path, tiny(3, "\"train.max_minutes\" = 60\n", "")).unwrap();
    let o = sweep(&["run", p]);
    assert!(o.status.success(), "{}", text(&o));
    let trials = chosen(&store);
    assert_eq!(trials.len(), 1);
    let (e2, attempts) = &trials[0];
    assert_eq!(e2.trial_id, e.trial_id);
    assert_eq!(e2.status, TrialStatus::Finished, "{:?}", e2.error);
    assert_eq!(*attempts, 2);
    assert_eq!(val_epochs(&store, &e.trial_id), [1, 2, 3]);
    let log = std::fs::read_to_string(
        dir.path()
            .join("experiments/t/trials")
            .join(&e.trial_id)
            .join("log.txt"),
    )
    .unwrap();
    assert!(log.contains("resumed from"), "{log}");
}

/// The names in `dir`, sorted (none when it does not exist).
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn keep_best_keeps_the_resume_state_until_the_trial_finishes() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let keep = "\"train.keep\" = \"best\"\n";
    let path = spec(
        dir.path(),
        "k",
        &tiny(2, &format!("{keep}\"train.max_minutes\" = 0.0001\n"), ""),
    );
    let p = path.to_str().unwrap();
    let o = sweep(&["run", p]);
    assert!(o.status.success(), "{}", text(&o));
    let store = dir.path().join("experiments/k/store");
    let (e, _) = chosen(&store).remove(0);
    assert_eq!(e.status, TrialStatus::Timeout, "{:?}", e.error);
    let trial = dir.path().join("experiments/k/trials").join(&e.trial_id);
    // Timed out: the full state stays for the resume.
    assert!(
        names(&trial.join("checkpoint_latest")).contains(&"opt_unet3d.bpk".to_string()),
        "{:?}",
        names(&trial.join("checkpoint_latest"))
    );

    std::fs::write(
        &path,
        tiny(2, &format!("{keep}\"train.max_minutes\" = 60\n"), ""),
    )
    .unwrap();
    let o = sweep(&["run", p]);
    assert!(o.status.success(), "{}", text(&o));
    let (e2, attempts) = chosen(&store).remove(0);
    assert_eq!(e2.status, TrialStatus::Finished, "{:?}", e2.error);
    assert_eq!(attempts, 2);
    assert_eq!(val_epochs(&store, &e.trial_id), [1, 2]);
    let log = std::fs::read_to_string(trial.join("log.txt")).unwrap();
    assert!(log.contains("resumed from"), "{log}");
    // Finished: only the best checkpoint, weights only.
    let kept: Vec<String> = names(&trial)
        .into_iter()
        .filter(|n| n.contains("checkpoint"))
        .collect();
    assert_eq!(kept, ["checkpoint_best"]);
    let best = names(&trial.join("checkpoint_best"));
    assert!(best.contains(&"unet3d.bpk".to_string()), "{best:?}");
    assert!(!best.iter().any(|n| n.starts_with("opt_")), "{best:?}");
}

#[test]
fn a_trial_behind_the_cut_is_pruned_never_rerun_and_runs_on_with_no_prune() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    // At threshold 0.9999 the tiny U-Net marks no voxel: validation Dice 0, clearly worse
    // than the same network at 0.5. Rungs at epochs 1 and 2 of 4; with two trials the cut
    // is the better one's value.
    let body = tiny(
        4,
        "",
        "[[grid]]\n\"infer.threshold\" = [0.5, 0.9999]\n\
         [prune]\nmetric = \"dice_mean\"\nmin_epochs = 1\nreduction = 2\n",
    );
    let path = spec(dir.path(), "p", &body);
    let p = path.to_str().unwrap();
    let o = sweep(&["run", p]);
    assert!(o.status.success(), "{}", text(&o));
    let store = dir.path().join("experiments/p/store");
    let trials = chosen(&store);
    assert_eq!(trials.len(), 2, "{}", text(&o));
    // The threshold is an f32: 0.9999 reads back as 0.99989998….
    let (good, bad): (Vec<_>, Vec<_>) = trials
        .iter()
        .cloned()
        .partition(|(e, _)| e.params.get("infer.threshold").map(String::as_str) == Some("0.5"));
    let ((good, _), (bad, bad_attempts)) = (good[0].clone(), bad[0].clone());
    assert_eq!(good.status, TrialStatus::Finished, "{:?}", good.error);
    assert_eq!(bad.status, TrialStatus::Pruned, "{:?}", bad.error);
    assert_eq!(bad_attempts, 1);
    let why = bad.error.clone().unwrap();
    assert!(
        why.contains("rung 0 (epoch 1)") && why.contains("cut"),
        "{why}"
    );
    assert_eq!(
        val_epochs(&store, &bad.trial_id),
        [1],
        "it stopped at the rung"
    );
    assert_eq!(val_epochs(&store, &good.trial_id), [1, 2, 3, 4]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("pruned 1 now"),
        "{}",
        text(&o)
    );

    // A re-run neither re-runs the pruned trial nor counts it as failed.
    let again = sweep(&["run", p]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("pruned 0 now and 1 earlier"),
        "{}",
        text(&again)
    );
    assert!(
        chosen(&store).iter().all(|(_, n)| *n == 1),
        "nothing ran again"
    );
    let st = sweep(&["status", p]);
    assert!(st.status.success(), "{}", text(&st));
    assert!(
        String::from_utf8_lossy(&st.stdout).contains("1 finished, 1 pruned"),
        "{}",
        text(&st)
    );
    // The disk line: the folder's bytes and the checkpoints' share of them.
    let out = String::from_utf8_lossy(&st.stdout).to_string();
    let line = out
        .lines()
        .find(|l| l.starts_with("disk: "))
        .expect("a disk line");
    let mib: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.trim_start_matches('(').parse().ok())
        .collect();
    assert_eq!(mib.len(), 2, "{line}");
    assert!(mib[1] > 0.0 && mib[1] <= mib[0], "{line}");

    // Without pruning the pruned trial resumes at its rung and runs to the end.
    let o = sweep(&["run", p, "--no-prune"]);
    assert!(o.status.success(), "{}", text(&o));
    let after = chosen(&store);
    let (bad2, n) = after
        .iter()
        .find(|(e, _)| e.trial_id == bad.trial_id)
        .unwrap();
    assert_eq!(bad2.status, TrialStatus::Finished, "{:?}", bad2.error);
    assert_eq!(*n, 2);
    assert_eq!(val_epochs(&store, &bad.trial_id), [1, 2, 3, 4]);
}

#[test]
fn pruning_with_two_workers_records_the_cut_and_never_reruns_or_fails() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    // At thresholds 0.9999 and 0.99999 the tiny U-Net marks no voxel; at 0.5 it marks some. The good trial runs first, alone; the two bad ones then run side
    // by side, each judged at rung 0 against the good one's value (and each other's).
    let body = tiny(
        4,
        "",
        "[[grid]]\n\"infer.threshold\" = [0.5, 0.9999, 0.99999]\n\
         [prune]\nmetric = \"dice_mean\"\nmin_epochs = 1\nreduction = 2\n",
    );
    let path = spec(dir.path(), "j", &body);
    let p = path.to_str().unwrap();
    let o = sweep(&["run", p, "--filter", "infer.threshold=0.5"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = sweep(&["run", p, "--jobs", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let store = dir.path().join("experiments/j/store");
    let trials = chosen(&store);
    assert_eq!(trials.len(), 3);
    let good = trials
        .iter()
        .find(|(e, _)| e.params.get("infer.threshold").map(String::as_str) == Some("0.5"))
        .map(|(e, _)| e.clone())
        .unwrap();
    assert_eq!(good.status, TrialStatus::Finished, "{:?}", good.error);
    assert!(good.prune.is_none());
    // The good trial's value at rung 0: its best validation dice_mean up to epoch 1.
    let c = Store::open(&store).unwrap().canonical().unwrap();
    let (ids, epoch, metric, value) = (
        c.epochs.column("trial_id").unwrap().str().unwrap().clone(),
        c.epochs.column("epoch").unwrap().u32().unwrap().clone(),
        c.epochs.column("metric").unwrap().str().unwrap().clone(),
        c.epochs.column("value").unwrap().f64().unwrap().clone(),
    );
    let good_at_rung = (0..c.epochs.height())
        .find(|&i| {
            ids.get(i) == Some(good.trial_id.as_str())
                && epoch.get(i) == Some(1)
                && metric.get(i) == Some("dice_mean")
        })
        .and_then(|i| value.get(i))
        .expect("the good trial's dice_mean at epoch 1");
    for (e, attempts) in trials.iter().filter(|(e, _)| e.trial_id != good.trial_id) {
        assert_eq!(e.status, TrialStatus::Pruned, "{:?}", e.error);
        assert_eq!(*attempts, 1);
        let cut = e.prune.clone().expect("a pruned trial records its cut");
        assert_eq!((cut.rung, cut.epoch), (0, 1));
        assert!(cut.value < cut.cut, "{cut:?}");
        assert!(good_at_rung > 0.0);
        assert!(
            (cut.cut - good_at_rung).abs() < 1e-12,
            "{cut:?} {good_at_rung}"
        );
        assert_eq!(val_epochs(&store, &e.trial_id), [1]);
    }

    // A re-run with two workers runs nothing and counts nothing as failed.
    let again = sweep(&["run", p, "--jobs", "2"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("pruned 0 now and 2 earlier"),
        "{}",
        text(&again)
    );
    assert!(
        chosen(&store).iter().all(|(_, n)| *n == 1),
        "nothing ran again"
    );

    // `runs ls` shows where each pruned trial stopped.
    let ls = util::run_seglab(&[
        "runs",
        "ls",
        dir.path().join("experiments/j").to_str().unwrap(),
    ]);
    assert!(ls.status.success(), "{}", text(&ls));
    let out = String::from_utf8_lossy(&ls.stdout).to_string();
    let header = out.lines().find(|l| l.starts_with("trial ")).unwrap();
    assert!(
        header.contains("rung") && header.contains("value") && header.contains("cut"),
        "{out}"
    );
    let cut_text = format!("{good_at_rung:.4}");
    for (e, _) in trials.iter().filter(|(e, _)| e.trial_id != good.trial_id) {
        let row = out
            .lines()
            .find(|l| l.starts_with(&e.trial_id))
            .unwrap_or_else(|| panic!("no row of {} in\n{out}", e.trial_id));
        assert!(
            row.contains("0 (epoch 1)") && row.contains(&cut_text),
            "{row}\n{out}"
        );
    }
}
