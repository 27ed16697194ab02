//! `seglab runs compare` across sweeps (a baseline and its ablation, side by side; sweeps of
//! other data or classes refused) and with a continuous key drawn by a `[search]` (one row of
//! range, points and rank correlation instead of one row per drawn value). The trials are the
//! threshold baseline, which runs in a second.

mod util;
use util::text;

use std::path::{Path, PathBuf};

fn spec(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join("experiments").join(format!("{name}.toml"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, body).unwrap();
    path
}

fn head(dataset: &str, classes: &str) -> String {
    format!(
        "dataset = \"{dataset}\"\nclasses = [{classes}]\nscale = \"cpu-small\"\n\
         models = [\"threshold\"]\n{}[cv]\nscheme = \"nested\"\nfolds = 3\n",
        util::ALLOW_CLIPPING
    )
}

/// Runs the sweep of `spec` to the end; returns its folder.
fn run(spec: &Path) -> PathBuf {
    let o = util::run_seglab(&["sweep", "run", spec.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    spec.with_extension("")
}

fn compare(dirs: &[&Path], extra: &[&str]) -> std::process::Output {
    let mut args = vec!["runs", "compare"];
    args.extend(dirs.iter().map(|d| d.to_str().unwrap()));
    args.extend(extra);
    util::run_seglab(&args)
}

#[test]
fn a_baseline_and_its_ablation_compare_side_by_side() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let two = "\"golgi\", \"nuclei\"";
    let base = run(&spec(dir.path(), "base", &head("../data", two)));
    let ablation = run(&spec(
        dir.path(),
        "ablation",
        &format!(
            "{}[set]\n\"eval.dice_smoothing\" = 1.0\n",
            head("../data", two)
        ),
    ));
    let o = compare(&[&base, &ablation], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let header = out
        .lines()
        .find(|l| l.trim_start().starts_with("sweep") && l.contains("mean ± std"))
        .unwrap_or_else(|| panic!("no table in\n{out}"));
    assert!(header.trim_start().starts_with("sweep"), "{header}");
    // Per sweep and class one row over the 3 folds' test volumes: the sweeps share trial ids
    // (same configurations) and still keep their own rows.
    for sweep in ["base", "ablation"] {
        let rows: Vec<&str> = out
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("{sweep} ")))
            .collect();
        assert_eq!(rows.len(), 2, "{sweep}: {rows:?}\n{out}");
        for r in rows {
            let cells: Vec<&str> = r.split_whitespace().collect();
            // …, n, NaN, trials
            assert_eq!(cells[cells.len() - 1], "3", "{r}");
        }
    }

    // Paired: the two sweeps are two arms, compared on the test volumes both have.
    let o = compare(&[&base, &ablation], &["--paired", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.len(), 2, "one comparison per class: {rows:?}");
    for r in &rows {
        // Each arm names its sweep (the ablation also its changed key).
        let arms = [r["a"].as_str().unwrap(), r["b"].as_str().unwrap()];
        for sweep in ["sweep=base", "sweep=ablation"] {
            assert!(arms.iter().any(|a| a.contains(sweep)), "{sweep}: {r}");
        }
        assert_eq!(r["n"], 3, "the 3 folds' test volumes: {r}");
    }

    // Other classes, other data: refused with both sweeps named.
    let nuclei = run(&spec(dir.path(), "nuclei", &head("../data", "\"nuclei\"")));
    let o = compare(&[&base, &nuclei], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        err.contains("task classes")
            && err.contains(nuclei.to_str().unwrap())
            && err.contains(base.to_str().unwrap()),
        "{err}"
    );
    util::easy_phantom_as(dir.path(), "other", 7);
    let elsewhere = run(&spec(dir.path(), "elsewhere", &head("../other", two)));
    let o = compare(&[&base, &elsewhere], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        err.contains("other data") && err.contains("fingerprint"),
        "{err}"
    );
}

#[test]
fn a_continuous_key_compares_as_a_scatter_summary() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let body = format!(
        "{}[search]\nkind = \"sobol\"\nn = 8\n[search.space]\n\
         \"eval.dice_smoothing\" = {{ uniform = [0.0, 50.0] }}\n",
        head("../data", "\"golgi\", \"nuclei\"")
            .replace("folds = 3\n", "folds = 3\nrun_folds = [0]\n")
    );
    let sweep = run(&spec(dir.path(), "drawn", &body));
    let o = compare(&[&sweep], &["--by", "model,class,eval.dice_smoothing"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.contains("a continuous key"), "{out}");
    let header = out
        .lines()
        .find(|l| l.contains("Spearman ρ"))
        .unwrap_or_else(|| panic!("no scatter summary in\n{out}"));
    assert!(
        header.contains("dice_smoothing range") && header.contains("points"),
        "{header}"
    );
    // One row per class (not one per drawn value), each over the 8 points.
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("threshold"))
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    for r in rows {
        assert!(r.split_whitespace().any(|c| c == "8"), "{r}");
    }
}
