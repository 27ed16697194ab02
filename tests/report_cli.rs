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
