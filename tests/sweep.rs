//! `seglab sweep`: spec errors, plan expansion with stable trial ids, tiny sweeps on an easy
//! phantom (the threshold baseline and a tiny U-Net), failures recorded while the sweep goes
//! on, and a sweep killed with SIGKILL mid-trial that, re-run, ends with the store of an
//! uninterrupted run.

mod util;
use util::{plan_ids, text};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use polars::prelude::*;
use seglab::tracking::{Store, TrialEvent, TrialStatus};

/// A tiny U-Net that trains in seconds (the settings of tests/train.rs).
const TINY_UNET: &str = r#"
"train.epochs" = EPOCHS
"data.patches.size" = 16
"data.patches.step" = 16
"infer.window" = 16
"infer.step" = 12
"net.base_filters" = 2
"#;

fn spec(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join("experiments").join(format!("{name}.toml"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, body).unwrap();
    path
}

fn head(models: &str) -> String {
    format!(
        "dataset = \"../data\"\nclasses = [\"golgi\", \"nuclei\"]\nscale = \"cpu-small\"\n\
         models = [{models}]\n{}[cv]\nscheme = \"nested\"\nfolds = 3\nrun_folds = [0]\n",
        util::ALLOW_CLIPPING
    )
}

fn sweep(args: &[&str]) -> Output {
    util::run_seglab(&[&["sweep"], args].concat())
}

#[test]
fn spec_errors_exit_2_and_name_file_key_and_nearest_key() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let cases = [
        (
            format!(
                "{}[[grid]]\nmodel = \"cyclegan\"\n\"loss.golgi_wieght\" = [1.0, 2.0]\n",
                head("")
            ),
            vec!["grid[0]", "golgi_wieght", "golgi_weight"],
        ),
        (
            format!("{}seedz = [0]\n", head("\"threshold\"")),
            vec!["unknown key `cv.seedz`", "did you mean `seeds`?"],
        ),
        (
            format!("{}[set]\n\"train.epoch\" = 2\n", head("\"unet3d\"")),
            vec!["set:", "train.epoch", "epochs"],
        ),
        (
            head("\"threshold\"").replace("../data", "../nodata"),
            vec!["dataset:", "nodata"],
        ),
        (
            format!("{}select = \"outer\"\n", head("\"threshold\"")),
            vec!["cv.select", "expected \"none\" or \"inner\", got \"outer\""],
        ),
        (
            format!("{}select_metric = \"dice_mean\"\n", head("\"threshold\"")),
            vec!["cv.select_metric", "only `select = \"inner\"`"],
        ),
        (
            format!(
                "{}select = \"inner\"\n",
                head("\"threshold\"")
                    .replace("\"nested\"", "\"kfold\"")
                    .replace("run_folds = [0]\n", "")
            ),
            vec!["cv.select", "no validation volumes"],
        ),
    ];
    for (i, (body, wanted)) in cases.iter().enumerate() {
        let path = spec(dir.path(), &format!("bad{i}"), body);
        let o = sweep(&["plan", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("bad{i}.toml")), "{err}");
        for w in wanted {
            assert!(err.contains(w), "case {i}: {w:?} missing in {err}");
        }
    }
}

/// The trial ids of `sweep plan`'s table.

#[test]
fn plan_expands_every_grid_block_with_stable_ids() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let body = format!(
        "{}seeds = [0, 1]\n[[grid]]\nmodel = \"threshold\"\n[[grid]]\nmodel = \"unet3d\"\n\
         \"train.epochs\" = [1, 2]\n\"loss.smooth_denominator\" = [1.0, 0.5]\n",
        head("").replace("run_folds = [0]\n", "")
    );
    let path = spec(dir.path(), "grid", &body);
    let a = sweep(&["plan", path.to_str().unwrap()]);
    assert!(a.status.success(), "{}", text(&a));
    let ids = plan_ids(&a);
    // (1 threshold + 2 × 2 unet3d) cells × 3 folds × 2 seeds
    assert_eq!(ids.len(), 5 * 3 * 2, "{}", text(&a));
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "trial ids collide");
    // Stable: the same spec gives the same ids, also from another folder.
    let moved = dir.path().join("elsewhere");
    std::fs::create_dir_all(&moved).unwrap();
    let moved_spec = moved.join("grid.toml");
    std::fs::write(&moved_spec, &body).unwrap();
    let b = sweep(&["plan", moved_spec.to_str().unwrap()]);
    assert!(b.status.success(), "{}", text(&b));
    assert_eq!(plan_ids(&b), ids);
    let table = String::from_utf8_lossy(&a.stdout);
    assert!(
        table.contains("train.epochs") && table.contains("loss.smooth_denominator"),
        "{table}"
    );
    assert!(table.contains("30 trial(s)"), "{table}");
}

#[test]
fn seeds_of_one_spec_share_their_folds_volumes() {
    use seglab::dataset::splits::{SplitScheme, make_splits};
    use seglab::experiment::spec::SweepSpec;
    use seglab::experiment::trial::expand;
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let body = format!(
        "{}seeds = [0, 1, 2]\n",
        head("\"threshold\"").replace("run_folds = [0]\n", "")
    );
    let path = spec(dir.path(), "seeds", &body);
    let trials = expand(&SweepSpec::load(&path).unwrap()).unwrap();
    assert_eq!(trials.len(), 9);
    // The split seed, not the trial seed, fixes the partition; these seeds alone would partition
    // differently.
    let dataset = seglab::dataset::Dataset::open(&dir.path().join("data")).unwrap();
    let scheme = SplitScheme::Nested { k: 3 };
    let by_seed: Vec<_> = (0..3)
        .map(|s| make_splits(&dataset.ids(), &dataset.groups(), &scheme, s).unwrap())
        .collect();
    assert!(by_seed.iter().any(|f| *f != by_seed[0]));
    let mut split_ids = Vec::new();
    for fold in 0..3 {
        let same_fold: Vec<_> = trials.iter().filter(|t| t.fold == fold).collect();
        assert_eq!(same_fold.len(), 3);
        for t in &same_fold {
            assert_eq!(t.split_json, same_fold[0].split_json, "seed {}", t.seed);
            assert_eq!(t.split_id, same_fold[0].split_id);
            assert_eq!(t.split_seed, 0);
        }
        split_ids.push(same_fold[0].split_id.clone());
    }
    split_ids.dedup();
    assert_eq!(split_ids.len(), 3, "every fold is its own partition");
}

/// The store's canonical view without anything that depends on time or attempt numbers:
/// (trials, epochs, results, timing phases), rows sorted.
fn canonical_content(store_dir: &Path) -> Vec<String> {
    let c = Store::open(store_dir).unwrap().canonical().unwrap();
    let rows = |df: &DataFrame, cols: &[&str]| -> Vec<String> {
        let df = df.select(cols.iter().copied()).unwrap();
        let mut out: Vec<String> = (0..df.height())
            .map(|i| {
                df.get_row(i)
                    .unwrap()
                    .0
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        out.sort();
        out
    };
    let mut all = Vec::new();
    all.extend(rows(
        &c.trials,
        &[
            "trial_id",
            "status",
            "model",
            "fold",
            "seed",
            "config_json",
            "dataset_fingerprint",
        ],
    ));
    all.extend(rows(
        &c.epochs,
        &["trial_id", "epoch", "split", "metric", "value"],
    ));
    all.extend(rows(
        &c.results,
        &["trial_id", "volume", "class", "metric", "value"],
    ));
    all.extend(rows(&c.timings, &["trial_id", "phase"]));
    all
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

#[test]
fn tiny_sweep_runs_skips_finished_trials_and_reports_status() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let body = format!(
        "{}[set]\n{}",
        head("\"threshold\", \"unet3d\""),
        TINY_UNET.replace("EPOCHS", "2")
    );
    let path = spec(dir.path(), "tiny", &body);
    let p = path.to_str().unwrap();
    let o = sweep(&["run", p, "--jobs", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let sweep_dir = dir.path().join("experiments/tiny");
    let store = sweep_dir.join("store");
    let trials = chosen(&store);
    assert_eq!(trials.len(), 2);
    for (e, attempts) in &trials {
        assert_eq!(e.status, TrialStatus::Finished, "{:?}", e.error);
        assert_eq!(*attempts, 1);
        assert_eq!(e.burn_version, "0.22.1");
        assert_eq!((e.device.as_str(), e.device_name.as_str()), ("cpu", "cpu"));
        assert!(e.command.contains("sweep task"), "{}", e.command);
        assert!(!e.host.is_empty() && !e.user.is_empty());
        assert!(
            sweep_dir
                .join("trials")
                .join(&e.trial_id)
                .join("log.txt")
                .exists()
        );
    }
    let unet = trials.iter().find(|(e, _)| e.model == "unet3d").unwrap();
    assert_eq!(
        unet.0.params.get("train.epochs").map(String::as_str),
        Some("2")
    );
    let c = Store::open(&store).unwrap().canonical().unwrap();
    assert!(c.epochs.height() > 0);
    let metrics = c.results.column("metric").unwrap().str().unwrap().clone();
    assert!(metrics.iter().any(|m| m == Some("dice")));
    let before = canonical_content(&store);

    // Re-running skips both trials and writes no new attempt.
    let again = sweep(&["run", p]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("2 finished earlier"),
        "{}",
        text(&again)
    );
    assert!(chosen(&store).iter().all(|(_, n)| *n == 1));
    assert_eq!(canonical_content(&store), before);

    let st = sweep(&["status", p]);
    assert!(st.status.success(), "{}", text(&st));
    assert!(String::from_utf8_lossy(&st.stdout).contains("2 trial(s): 2 finished"));
}

/// Pids of `seglab sweep task` workers whose command line mentions `needle`.
fn worker_pids(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("sweep task") && cmd.contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// Waits until `cond` holds (panics after a minute).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has_parts(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
    })
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: sending a signal to a process this test started.
    unsafe {
        libc::kill(pid, sig);
    }
}

#[test]
fn a_dead_worker_is_recorded_failed_and_retried_on_request() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let body = format!(
        "{}[set]\n{}",
        head("\"unet3d\""),
        TINY_UNET.replace("EPOCHS", "2")
    );
    let path = spec(dir.path(), "dies", &body);
    let p = path.to_str().unwrap().to_string();
    let child = util::seglab().args(["sweep", "run", &p]).spawn().unwrap();
    let store = dir.path().join("experiments/dies/store");
    wait_for("the worker's start event", || {
        has_parts(&store.join("trials")) && !worker_pids(&p).is_empty()
    });
    for pid in worker_pids(&p) {
        kill(pid, libc::SIGKILL);
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let (e, _) = &chosen(&store)[0];
    assert_eq!(e.status, TrialStatus::Failed);
    let err = e.error.as_deref().unwrap_or_default();
    assert!(err.contains("signal 9"), "{err}");

    // Failed trials stay failed without --retry-failed, and run again with it.
    let again = sweep(&["run", &p]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert_eq!(chosen(&store)[0].1, 1);
    let retry = sweep(&["run", &p, "--retry-failed"]);
    assert!(retry.status.success(), "{}", text(&retry));
    let (e, attempts) = &chosen(&store)[0];
    assert_eq!(e.status, TrialStatus::Finished);
    assert_eq!(*attempts, 2);
}

#[test]
fn a_sweep_killed_mid_trial_resumes_to_the_store_of_an_uninterrupted_run() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let body = format!(
        "{}[set]\n{}",
        head("\"threshold\", \"unet3d\""),
        TINY_UNET.replace("EPOCHS", "4")
    );
    let path = spec(dir.path(), "resume", &body);
    let p = path.to_str().unwrap().to_string();
    let clean_dir = dir.path().join("clean");
    let o = sweep(&["run", &p, "--out", clean_dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    let killed_dir = dir.path().join("killed");
    let store = killed_dir.join("store");
    {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(env!("CARGO_BIN_EXE_seglab"))
            .args(["sweep", "run", &p, "--out", killed_dir.to_str().unwrap()])
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for("a U-Net epoch", || has_parts(&store.join("epochs")));
        let pgid = child.id() as i32;
        kill(-pgid, libc::SIGKILL);
        child.wait().unwrap();
    }
    let o = sweep(&["run", &p, "--out", killed_dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let unet = chosen(&store)
        .into_iter()
        .find(|(e, _)| e.model == "unet3d")
        .unwrap();
    assert_eq!(unet.0.status, TrialStatus::Finished);
    assert_eq!(unet.1, 2, "the killed attempt and the resumed one");
    let all = TrialEvent::from_frame(&Store::open(&store).unwrap().attempts().unwrap()).unwrap();
    assert!(
        all.iter()
            .any(|e| e.attempt == 1 && e.status == TrialStatus::Interrupted && e.model == "unet3d"),
        "{all:?}"
    );
    assert_eq!(
        canonical_content(&store),
        canonical_content(&clean_dir.join("store"))
    );
}

#[test]
fn ctrl_c_checkpoints_marks_killed_and_a_rerun_resumes() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let body = format!(
        "{}[set]\n{}",
        head("\"unet3d\""),
        TINY_UNET.replace("EPOCHS", "6")
    );
    let path = spec(dir.path(), "stopped", &body);
    let p = path.to_str().unwrap().to_string();
    let child = util::seglab()
        .args(["sweep", "run", &p])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let store = dir.path().join("experiments/stopped/store");
    wait_for("a U-Net epoch", || has_parts(&store.join("epochs")));
    // SIGINT to the runner alone: it forwards SIGTERM to its workers.
    kill(child.id() as i32, libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("run the same command again"));
    let (e, _) = &chosen(&store)[0];
    assert_eq!(e.status, TrialStatus::Killed, "{:?}", e.error);
    let trial = dir
        .path()
        .join("experiments/stopped/trials")
        .join(&e.trial_id);
    assert!(trial.join("checkpoint_latest").is_dir());

    let again = sweep(&["run", &p]);
    assert!(again.status.success(), "{}", text(&again));
    let (e, attempts) = &chosen(&store)[0];
    assert_eq!(e.status, TrialStatus::Finished);
    assert_eq!(*attempts, 2);
    assert!(
        std::fs::read_to_string(trial.join("log.txt"))
            .unwrap()
            .contains("resuming"),
        "the second attempt resumed from the checkpoint"
    );
}

#[test]
fn the_example_specs_of_the_repository_plan() {
    let dir = util::temp_dir();
    let data = util::easy_phantom(dir.path());
    let moved = dir.path().join("phantom-retina");
    std::fs::rename(&data, &moved).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::rename(&moved, data.join("phantom-retina")).unwrap();
    // Every spec of experiments/ on the phantom dataset expands; (name, trials) checked.
    let expected = [
        // threshold + 3 models, each in its own grid block, × 3 folds
        ("demo", 12),
        // 4 models × 3 folds × 1 seed
        ("paper-2class", 12),
        // 3 learned models (no threshold baseline for the pair class) × 3 folds
        ("paper-3class", 9),
        // 5 Golgi weights × 3 folds
        ("golgi-weight", 15),
        // 4 class weightings × 3 folds
        ("dice-beta", 12),
    ];
    for (name, trials) in expected {
        let example =
            std::fs::read_to_string(util::repo_root().join(format!("experiments/{name}.toml")))
                .unwrap();
        let path = spec(dir.path(), name, &example);
        let o = sweep(&["plan", path.to_str().unwrap()]);
        assert!(o.status.success(), "{name}: {}", text(&o));
        assert_eq!(plan_ids(&o).len(), trials, "{name}");
    }
}

/// Replaces the mask file of `volume` in the dataset at `data` by uniform 0/255 noise.
fn noise_mask(data: &Path, volume: &str) {
    use rand::{RngExt, SeedableRng};
    use seglab::volume::tiff::{read_tiff, write_tiff};
    use seglab::volume::{AnyVolume, Volume};
    let ds = seglab::dataset::Dataset::open(data).unwrap();
    let entry = ds.volumes().iter().find(|v| v.id == volume).unwrap();
    let path = data.join(entry.mask.as_ref().unwrap());
    let AnyVolume::U8(mask) = read_tiff(&path).unwrap() else {
        panic!("{}: not uint8", path.display())
    };
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(99);
    let noise: Vec<u8> = (0..mask.data().len())
        .map(|_| if rng.random::<bool>() { 255 } else { 0 })
        .collect();
    let noisy = Volume::from_vec(mask.shape(), noise).unwrap();
    write_tiff(&path, &AnyVolume::U8(noisy)).unwrap();
}

/// Copies a folder tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn nested_selection_never_reads_a_test_volume() {
    use seglab::report::read_store;
    use seglab::report::selection::{nested_selection, selected_test_scores};
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    // The same data with fold 0's test volume's masks replaced by noise.
    let split = seglab::dataset::splits::make_splits(
        &seglab::dataset::Dataset::open(&dir.path().join("data"))
            .unwrap()
            .ids(),
        &[None, None, None],
        &seglab::dataset::splits::SplitScheme::Nested { k: 3 },
        0,
    )
    .unwrap();
    let test_volume = &split[0].test[0];
    copy_tree(&dir.path().join("data"), &dir.path().join("noisy"));
    noise_mask(&dir.path().join("noisy"), test_volume);
    let body = |data: &str| {
        format!(
            "{}select = \"inner\"\n[set]\n{}[[grid]]\nmodel = \"unet3d\"\n\"train.epochs\" = [1, 2]\n",
            head("").replace("../data", data),
            TINY_UNET.replace("\"train.epochs\" = EPOCHS\n", "")
        )
    };
    let mut runs = Vec::new();
    for (name, data) in [("clean", "../data"), ("noisy", "../noisy")] {
        let path = spec(dir.path(), name, &body(data));
        let o = sweep(&["run", path.to_str().unwrap(), "--jobs", "2"]);
        assert!(o.status.success(), "{}", text(&o));
        let input = read_store(&dir.path().join("experiments").join(name).join("store")).unwrap();
        let choices = nested_selection(&input.trials, &input.epochs, "dice_mean").unwrap();
        let tests = selected_test_scores(&choices, &input.trials, &input.results, "dice").unwrap();
        runs.push((choices, tests));
    }
    let (clean, noisy) = (&runs[0], &runs[1]);
    assert_eq!(clean.0.len(), 1, "one model, one outer fold: {:?}", clean.0);
    assert_eq!(clean.0[0].candidates.len(), 2);
    // Same choice and the same inner-validation scores, to the bit.
    assert_eq!(clean.0, noisy.0);
    // The noise reached the test scores of the chosen configuration.
    assert_ne!(
        clean.1, noisy.1,
        "test scores should change with noisy test masks"
    );
    // The report shows the choice per outer fold with its test scores.
    let out = dir.path().join("report");
    let spec_path = dir.path().join("experiments/clean.toml");
    let o = util::run_seglab(&[
        "report",
        spec_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let md = std::fs::read_to_string(out.join("tables/nested-2class.md")).unwrap();
    let chosen = super_label(&clean.0[0].chosen);
    assert!(
        md.contains("Chosen configuration") && md.contains(&chosen),
        "{chosen}\n{md}"
    );
}

/// The report's label of an arm `unet3d train.epochs=2`: `U-Net (train.epochs=2)`.
fn super_label(arm: &str) -> String {
    arm.replacen("unet3d ", "U-Net (", 1) + ")"
}
