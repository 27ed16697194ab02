//! `seglab report` end to end: a store on disk (Parquet parts, as the runner writes them) →
//! the report folder; plus its input errors.

mod util;

use std::fs::File;
use std::path::Path;

use polars::prelude::DataFrame;
use polars_io::prelude::ParquetWriter;
use seglab::report::{ReportOptions, fixture, write_report};

/// Writes the fixture's four tables as Parquet parts of `experiments/<sweep>/store/`, the
/// trials table split in two parts with different `param.*` columns like real workers write.
fn write_store(root: &Path) -> std::path::PathBuf {
    let input = fixture::small_sweep();
    let store = root.join("experiments").join(&input.sweep).join("store");
    let part = |table: &str, name: &str, df: &mut DataFrame| {
        let dir = store.join(table);
        std::fs::create_dir_all(&dir).unwrap();
        ParquetWriter::new(File::create(dir.join(name)).unwrap())
            .finish(df)
            .unwrap();
    };
    // U-Net and Vox2Vox trials (the first 12) carry no Golgi weight column at all
    let trials = input.trials.clone();
    let n = trials.height();
    let mut first = trials.slice(0, 12);
    let mut second = trials.slice(12, n - 12);
    let _ = first.drop_in_place("param.loss.golgi_weight");
    part("trials", "part-0000.parquet", &mut first);
    part("trials", "part-0001.parquet", &mut second);
    part("epochs", "part-0000.parquet", &mut input.epochs.clone());
    part("results", "part-0000.parquet", &mut input.results.clone());
    part("timings", "part-0000.parquet", &mut input.timings.clone());
    // the dataset the trials name, relative to the project root
    let data = root.join("phantom-retina");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("dataset.toml"),
        toml::to_string(input.dataset.as_ref().unwrap()).unwrap(),
    )
    .unwrap();
    store
}

#[test]
fn report_from_a_store_on_disk_matches_the_library() {
    let tmp = util::temp_dir();
    write_store(tmp.path());
    let out = tmp.path().join("out");
    let sweep_dir = tmp.path().join("experiments/paper-2class");
    let o = util::run_seglab(&[
        "report",
        sweep_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("3 missing or incomplete"), "{stdout}");

    // the same tables as the in-memory report of the same fixture
    let direct = tmp.path().join("direct");
    write_report(&fixture::small_sweep(), &direct, &ReportOptions::default()).unwrap();
    for name in [
        "comparison-2class.tex",
        "timing-2class.csv",
        "missing-trials.md",
    ] {
        let a = std::fs::read_to_string(out.join("tables").join(name)).unwrap();
        let b = std::fs::read_to_string(direct.join("tables").join(name)).unwrap();
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn report_accepts_the_spec_and_the_store_folder() {
    let tmp = util::temp_dir();
    let store = write_store(tmp.path());
    // A spec without `name` names its sweep after its file, as `sweep run` does.
    let spec = tmp.path().join("experiments/paper-2class.toml");
    std::fs::write(
        &spec,
        "dataset = \"../data\"\nclasses = [\"golgi\", \"nuclei\"]\nmodels = [\"unet3d\"]\n\
         [cv]\nscheme = \"nested\"\nfolds = 3\n",
    )
    .unwrap();
    for (arg, out) in [(spec.as_path(), "a"), (store.as_path(), "b")] {
        let out = tmp.path().join(out);
        let o = util::run_seglab(&[
            "report",
            arg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--aggregation",
            "over-seeds-folds",
            "--metrics",
            "dice,recall",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let md = std::fs::read_to_string(out.join("tables/comparison-2class.md")).unwrap();
        assert!(md.contains("mean ± std over seeds × folds"), "{md}");
        assert!(md.contains("Recall") && !md.contains("Precision"), "{md}");
    }
}

#[test]
fn bad_input_exits_2_and_names_the_path() {
    let tmp = util::temp_dir();
    let o = util::run_seglab(&["report", tmp.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&tmp.path().display().to_string()), "{err}");
    assert!(err.contains("expected a sweep spec"), "{err}");

    let o = util::run_seglab(&[
        "report",
        tmp.path().to_str().unwrap(),
        "--aggregation",
        "mean",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("over-folds"), "{err}");
}

#[test]
fn help_lines_fit_79_columns() {
    let o = util::run_seglab(&["report", "--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for line in help.lines() {
        assert!(line.chars().count() <= 79, "too long: {line:?}");
    }
    assert!(help.contains("--aggregation"));
}

/// The `--json` objects of `runs compare --paired`, by (metric, class, a, b).
fn paired_json(sweep_dir: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "runs",
        "compare",
        sweep_dir.to_str().unwrap(),
        "--paired",
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = util::run_seglab(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn paired_comparisons_as_json_pair_the_cases_both_models_have() {
    use std::collections::BTreeMap;
    let tmp = util::temp_dir();
    write_store(tmp.path());
    let sweep_dir = tmp.path().join("experiments/paper-2class");
    let rows = paired_json(
        &sweep_dir,
        &[
            "--filter",
            "classes=golgi,nuclei",
            "--metric",
            "dice,precision",
        ],
    );
    // 4 arms (U-Net, Vox2Vox, CycleGAN at two Golgi weights): 6 pairs × 2 classes × 2 metrics.
    assert_eq!(rows.len(), 24, "{rows:?}");
    let keys = [
        "metric",
        "class",
        "a",
        "b",
        "n",
        "mean_diff",
        "ci_low",
        "ci_high",
        "p_wilcoxon",
        "p_permutation",
        "p_holm",
    ];
    for r in &rows {
        let mut have: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        have.sort();
        let mut want = keys.to_vec();
        want.sort();
        assert_eq!(have, want);
    }
    let row = rows
        .iter()
        .find(|r| {
            r["metric"] == "dice"
                && r["class"] == "nuclei"
                && r["a"] == "unet3d"
                && r["b"] == "vox2vox"
        })
        .expect("U-Net vs Vox2Vox");
    // Recompute from the fixture: finished 2-class trials, cases (fold, seed, volume).
    let input = fixture::small_sweep();
    let t = &input.trials;
    let col = |df: &DataFrame, c: &str| -> Vec<Option<String>> {
        let s = df
            .column(c)
            .unwrap()
            .cast(&polars::prelude::DataType::String)
            .unwrap();
        s.str()
            .unwrap()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()
    };
    let (ids, model, status, classes, fold, seed) = (
        col(t, "trial_id"),
        col(t, "model"),
        col(t, "status"),
        col(t, "classes"),
        col(t, "fold"),
        col(t, "seed"),
    );
    let mut case_of = BTreeMap::new();
    for i in 0..t.height() {
        if status[i].as_deref() == Some("finished") && classes[i].as_deref() == Some("golgi,nuclei")
        {
            case_of.insert(
                ids[i].clone().unwrap(),
                (model[i].clone().unwrap(), fold[i].clone(), seed[i].clone()),
            );
        }
    }
    let r = &input.results;
    let (rid, vol, class, metric) = (
        col(r, "trial_id"),
        col(r, "volume"),
        col(r, "class"),
        col(r, "metric"),
    );
    let value: Vec<f64> = r
        .column("value")
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    type Case = (Option<String>, Option<String>, Option<String>);
    let mut by_model: BTreeMap<String, BTreeMap<Case, f64>> = BTreeMap::new();
    for i in 0..r.height() {
        let Some((m, f, s)) = rid[i].as_ref().and_then(|id| case_of.get(id)) else {
            continue;
        };
        if class[i].as_deref() == Some("nuclei") && metric[i].as_deref() == Some("dice") {
            by_model
                .entry(m.clone())
                .or_default()
                .insert((f.clone(), s.clone(), vol[i].clone()), value[i]);
        }
    }
    let diffs: Vec<f64> = by_model["unet3d"]
        .iter()
        .filter_map(|(k, a)| by_model["vox2vox"].get(k).map(|b| a - b))
        .collect();
    // Vox2Vox fold 2 seed 1 failed: its two test volumes have no pair.
    assert_eq!(diffs.len(), 10);
    assert_eq!(row["n"], 10);
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    assert!(
        (row["mean_diff"].as_f64().unwrap() - mean).abs() < 1e-12,
        "{row}"
    );
    let (lo, hi) = (
        row["ci_low"].as_f64().unwrap(),
        row["ci_high"].as_f64().unwrap(),
    );
    assert!(lo <= mean && mean <= hi && lo < hi, "{row}");
    let p = row["p_wilcoxon"].as_f64().unwrap();
    assert!((p - seglab::stats::wilcoxon(&diffs).p_value).abs() < 1e-12);
    // Holm never lowers a p-value; 6 comparisons per metric and class.
    // A pair whose differences are all zero has no Wilcoxon p (null) and no adjusted one.
    for r in &rows {
        match (r["p_holm"].as_f64(), r["p_wilcoxon"].as_f64()) {
            (Some(holm), Some(raw)) => assert!(holm >= raw - 1e-15, "{r}"),
            (holm, raw) => assert!(holm.is_none() && raw.is_none(), "{r}"),
        }
    }
    // The terminal table states the paired unit and n.
    let o = util::run_seglab(&["runs", "compare", sweep_dir.to_str().unwrap(), "--paired"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("paired unit: test case (split, seed, volume)"),
        "{text}"
    );
    assert!(
        text.contains("unet3d classes=golgi,nuclei,pair"),
        "the 3-class U-Net is its own arm: {text}"
    );
}
