//! The workers of a sweep: `--jobs N` splits the threads between them (each trial records
//! its threads).

mod util;
use util::text;

use std::path::{Path, PathBuf};

use seglab::tracking::{Store, TrialEvent};

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
