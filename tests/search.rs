//! `[search]` in a sweep spec: random and Sobol points per grid cell, planned the same on every
//! run (so a resume runs nothing twice), `--filter` subsets, and the ids of specs without the
//! new keys left as they were.

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

const HEAD: &str = "dataset = \"../data\"\nclasses = [\"golgi\", \"nuclei\"]\nscale = \"cpu-small\"\n\
allow_clipping = [\"threshold\", \"unet3d\", \"vox2vox\", \"cyclegan\"]\n";

/// A grid spec as written before `[search]` existed.
const GRID_SPEC: &str = "[cv]\nscheme = \"nested\"\nfolds = 3\nseeds = [0, 1]\n[set]\n\
\"train.epochs\" = 2\n[[grid]]\nmodel = \"threshold\"\n[[grid]]\nmodel = \"unet3d\"\n\
\"loss.smooth_denominator\" = [1.0, 0.5]\n";

#[test]
fn specs_without_search_keep_their_trial_ids() {
    // The ids `sweep plan` gave this spec on the easy phantom before `[search]`, `[prune]`,
    // `train.max_minutes` and `train.keep` existed: a store filled then resumes unchanged.
    let expected = [
        "8016c86ee079",
        "6e5eb1239918",
        "3a5848e6877f",
        "59360287220c",
        "bac30029b82e",
        "52fa52918e40",
        "793d1dde7ac3",
        "fecf00aba63d",
        "5af8e4be18b3",
        "e2ad8d6b9e47",
        "76a355119970",
        "e746a71216d5",
        "da53900fa8ad",
        "8dd0378ca342",
        "6bb45a07c222",
        "ee77b34d4e41",
        "2b0c4d53a0ed",
        "e5c34b48b3d1",
    ];
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let path = spec(dir.path(), "ids", &format!("{HEAD}{GRID_SPEC}"));
    let o = sweep(&["plan", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(plan_ids(&o), expected, "{}", text(&o));
    // `kind = "grid"` spelled out is the same sweep.
    let grid = spec(
        dir.path(),
        "ids-grid",
        &format!("{HEAD}{GRID_SPEC}[search]\nkind = \"grid\"\n"),
    );
    let o = sweep(&["plan", grid.to_str().unwrap()]);
    assert_eq!(plan_ids(&o), expected, "{}", text(&o));
}

fn search_spec(kind: &str, n: usize, seed: u64) -> String {
    format!(
        "{HEAD}[cv]\nscheme = \"nested\"\nfolds = 3\nrun_folds = [0]\n[set]\n\
         \"train.epochs\" = 1\n\"data.patches.size\" = 16\n\"data.patches.step\" = 16\n\
         \"infer.window\" = 16\n\"infer.step\" = 12\n\"net.base_filters\" = 2\n\
         [[grid]]\nmodel = \"threshold\"\n[[grid]]\nmodel = \"unet3d\"\n\
         \"loss.smooth_denominator\" = [1.0, 0.5]\n\
         [search]\nkind = \"{kind}\"\nn = {n}\nseed = {seed}\n[search.space]\n\
         \"train.optimizer.lr\" = {{ log-uniform = [1e-4, 1e-2] }}\n\
         \"loss.mode\" = {{ choice = [\"global\", \"per-class\"] }}\n"
    )
}

#[test]
fn search_plans_are_deterministic_and_cross_the_grid() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    for kind in ["random", "sobol"] {
        let path = spec(dir.path(), kind, &search_spec(kind, 3, 5));
        let p = path.to_str().unwrap();
        let a = sweep(&["plan", p]);
        assert!(a.status.success(), "{}", text(&a));
        let ids = plan_ids(&a);
        // The threshold baseline has neither space key: its 3 points are one trial. The
        // U-Net: 2 grid values × 3 points.
        assert_eq!(ids.len(), 1 + 2 * 3, "{kind}: {}", text(&a));
        let table = String::from_utf8_lossy(&a.stdout).to_string();
        assert!(table.contains("train.optimizer.lr"), "{table}");
        // The same spec plans the same table.
        let b = sweep(&["plan", p]);
        assert_eq!(a.stdout, b.stdout, "{kind}");
        // Both grid values get the same points: each lr appears twice among the U-Nets.
        let column = table
            .lines()
            .next()
            .and_then(|h| h.split_whitespace().position(|c| c == "train.optimizer.lr"))
            .expect("an lr column");
        let lrs: Vec<&str> = table
            .lines()
            .filter(|l| l.contains("unet3d"))
            .filter_map(|l| l.split_whitespace().nth(column))
            .collect();
        assert_eq!(lrs.len(), 6, "{table}");
        for lr in &lrs {
            let v: f64 = lr.parse().unwrap();
            assert!((1e-4..=1e-2).contains(&v), "{table}");
            assert_eq!(lrs.iter().filter(|x| *x == lr).count(), 2, "{table}");
        }
        // Another seed draws other points; a larger n keeps the first ones.
        std::fs::write(&path, search_spec(kind, 3, 6)).unwrap();
        let other = plan_ids(&sweep(&["plan", p]));
        assert_eq!(other[0], ids[0], "the threshold trial draws nothing");
        assert!(other[1..].iter().all(|id| !ids.contains(id)), "{kind}");
        std::fs::write(&path, search_spec(kind, 5, 5)).unwrap();
        let more = plan_ids(&sweep(&["plan", p]));
        assert_eq!(more.len(), 1 + 2 * 5);
        assert!(ids.iter().all(|id| more.contains(id)), "{kind}");
    }
}

#[test]
fn search_errors_exit_2_and_name_file_key_and_expectation() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let cases = [
        (
            search_spec("random", 2, 0).replace("train.optimizer.lr", "train.optimiser.lr"),
            vec!["search.space", "train.optimiser.lr"],
        ),
        (
            search_spec("random", 2, 0)
                .replace("log-uniform = [1e-4, 1e-2]", "log-uniform = [1e-2]"),
            vec![
                "search.space.\"train.optimizer.lr\"",
                "expected [a, b] with two numbers",
            ],
        ),
        (
            search_spec("random", 2, 0).replace("kind = \"random\"", "kind = \"bayes\""),
            vec!["search.kind", "expected \"grid\", \"random\" or \"sobol\""],
        ),
        (
            search_spec("random", 2, 0).replace("seed = 0", "sede = 0"),
            vec!["search.sede", "did you mean `seed`?"],
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
fn a_filtered_search_sweep_runs_its_subset_and_a_rerun_adds_nothing() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let body = search_spec("sobol", 2, 1).replace("\"loss.smooth_denominator\" = [1.0, 0.5]\n", "");
    let path = spec(dir.path(), "s", &body);
    let p = path.to_str().unwrap();
    let planned = plan_ids(&sweep(&["plan", p]));
    assert_eq!(planned.len(), 3, "threshold + 2 U-Net points");

    let o = sweep(&["run", p, "--filter", "model=unet3d", "--jobs", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let store = dir.path().join("experiments/s/store");
    let ran = chosen(&store);
    assert_eq!(ran.len(), 2, "only the U-Nets ran: {}", text(&o));
    for (e, attempts) in &ran {
        assert_eq!(e.model, "unet3d");
        assert_eq!(e.status, TrialStatus::Finished, "{:?}", e.error);
        assert_eq!(*attempts, 1);
        assert!(
            planned.contains(&e.trial_id),
            "{} not in the plan",
            e.trial_id
        );
        assert!(
            e.params.contains_key("train.optimizer.lr"),
            "{:?}",
            e.params
        );
    }

    // The full run adds the threshold trial only; a third run adds nothing.
    let o = sweep(&["run", p]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("2 finished earlier"),
        "{}",
        text(&o)
    );
    let o = sweep(&["run", p]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("3 finished earlier"),
        "{}",
        text(&o)
    );
    let all = chosen(&store);
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|(_, n)| *n == 1), "no trial ran twice");

    let bad = sweep(&["run", p, "--filter", "modle=unet3d"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("did you mean `model`?"),
        "{}",
        text(&bad)
    );
}
