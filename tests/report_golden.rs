//! Golden tests: the report of a fixed small store (`seglab::report::fixture::small_sweep`)
//! must render its tables exactly as the files under `tests/golden/report/`.
//!
//! After an intended change, regenerate with `SEGLAB_BLESS=1 cargo test --test report_golden`
//! and review the diff of the golden files like code.

mod util;

use std::path::{Path, PathBuf};

use seglab::report::{self, Aggregation, ReportOptions, fixture};

fn golden_dir() -> PathBuf {
    util::repo_root().join("tests/golden/report")
}

/// Compares `actual` with the golden file `name` (or writes it when blessing).
fn check(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var("SEGLAB_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (bless with SEGLAB_BLESS=1)", path.display()));
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the rendered table at line {}:\nexpected: {:?}\nactual:   {:?}\n\
             (full output:\n{actual})",
            path.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

fn write(out: &Path, options: &ReportOptions) -> report::ReportSummary {
    report::write_report(&fixture::small_sweep(), out, options).expect("report")
}

fn read(out: &Path, rel: &str) -> String {
    std::fs::read_to_string(out.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn tables_match_the_golden_files() {
    let tmp = util::temp_dir();
    let out = tmp.path().join("reports/paper-2class");
    let summary = write(&out, &ReportOptions::default());
    let expected_tables = [
        "comparison-2class",
        "sweep-2class",
        "per-seed-2class",
        "per-fold-2class",
        "comparisons-2class",
        "comparison-3class",
        "per-seed-3class",
        "per-fold-3class",
        "timing-2class",
        "timing-3class",
        "missing-trials",
    ];
    assert_eq!(summary.tables, expected_tables);
    for name in ["comparison-2class", "comparisons-2class", "timing-2class"] {
        for ext in ["md", "tex", "csv"] {
            let file = format!("{name}.{ext}");
            check(&file, &read(&out, &format!("tables/{file}")));
        }
    }
    for name in [
        "sweep-2class",
        "per-seed-2class",
        "per-fold-2class",
        "comparison-3class",
        "missing-trials",
    ] {
        let file = format!("{name}.md");
        check(&file, &read(&out, &format!("tables/{file}")));
    }
}

#[test]
fn pooled_aggregation_is_stated_and_changes_the_numbers() {
    let tmp = util::temp_dir();
    let folds = tmp.path().join("folds");
    let pooled = tmp.path().join("pooled");
    write(&folds, &ReportOptions::default());
    let options = ReportOptions {
        aggregation: Aggregation::Pooled,
        metrics: vec!["dice".into()],
        ..ReportOptions::default()
    };
    write(&pooled, &options);
    let a = read(&folds, "tables/comparison-2class.md");
    let b = read(&pooled, "tables/comparison-2class.md");
    assert!(a.contains("mean ± std over folds"), "{a}");
    assert!(b.contains("pooled (as nnU-Net"), "{b}");
    assert!(!b.contains("Precision"), "only the requested metric: {b}");
    check("comparison-2class-pooled.md", &b);
}

#[test]
fn nan_values_are_excluded_and_counted_never_zeroed() {
    let tmp = util::temp_dir();
    let out = tmp.path().join("r");
    write(&out, &ReportOptions::default());
    let md = read(&out, "tables/comparison-2class.md");
    // CycleGAN (golgi_weight = 1.0) has one NaN Golgi precision (an empty prediction).
    let row = md
        .lines()
        .find(|l| l.starts_with("| CycleGAN (golgi_weight = 1.0)"))
        .expect("row");
    assert!(row.contains("(1 NaN)"), "{row}");
    assert!(md.contains("excluded from the means"), "{md}");
    let csv = read(&out, "tables/comparison-2class.csv");
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = header
        .iter()
        .position(|h| *h == "precision_golgi_n_nan")
        .unwrap();
    let line = csv
        .lines()
        .find(|l| l.starts_with("CycleGAN (golgi_weight = 1.0)"))
        .unwrap();
    assert_eq!(line.split(',').nth(col), Some("1"), "{line}");
}

#[test]
fn missing_trials_are_listed_not_dropped() {
    let tmp = util::temp_dir();
    let out = tmp.path().join("r");
    let summary = write(&out, &ReportOptions::default());
    assert_eq!(summary.missing_trials, 3);
    let md = read(&out, "tables/missing-trials.md");
    assert!(
        md.contains("| Vox2Vox | 2 | 1 | c1f2s1 | failed | out of memory"),
        "{md}"
    );
    assert!(
        md.contains("| CycleGAN (golgi_weight = 3.5) | 2 | 1 | c3f2s1 | running"),
        "{md}"
    );
    assert!(md.contains("| U-Net | 2 | 1 | – | not in store"), "{md}");
    // The failed trial's partial result row does not enter the tables: Vox2Vox has 5 trials.
    let cmp = read(&out, "tables/comparison-2class.md");
    let row = cmp.lines().find(|l| l.starts_with("| Vox2Vox |")).unwrap();
    assert!(row.contains("| 3 | 5 |"), "{row}");
    let index = read(&out, "index.md");
    assert!(
        index.contains("3 trial(s) are missing or incomplete"),
        "{index}"
    );
}

#[test]
fn index_files_reference_every_table_and_figure() {
    let tmp = util::temp_dir();
    let out = tmp.path().join("r");
    let summary = write(&out, &ReportOptions::default());
    let md = read(&out, "index.md");
    let html = read(&out, "index.html");
    for t in &summary.tables {
        assert!(
            md.contains(&format!("tables/{t}.tex")),
            "{t} not in index.md"
        );
        assert!(
            html.contains(&format!("id=\"tab-{t}\"")),
            "{t} not in index.html"
        );
        for ext in ["md", "tex", "csv"] {
            assert!(out.join(format!("tables/{t}.{ext}")).is_file());
        }
    }
    for f in &summary.figures {
        assert!(out.join(f).is_file(), "{f}");
        if f.ends_with(".png") {
            assert!(md.contains(f.as_str()), "{f} not in index.md");
            assert!(
                html.contains(&format!("src=\"{f}\"")),
                "{f} not in index.html"
            );
        }
    }
    // every figure has a numbered caption in index.md
    let figures = summary
        .figures
        .iter()
        .filter(|f| f.ends_with(".png"))
        .count();
    assert!(figures >= 8, "{:?}", summary.figures);
    for n in 1..=figures {
        assert!(md.contains(&format!("*Figure {n}.*")), "caption {n}");
    }
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
}

#[test]
fn confidence_intervals_replace_the_std_when_asked() {
    let tmp = util::temp_dir();
    let out = tmp.path().join("ci");
    let options = ReportOptions {
        ci: true,
        metrics: vec!["dice".into()],
        ..ReportOptions::default()
    };
    write(&out, &options);
    let md = read(&out, "tables/comparison-2class.md");
    assert!(md.contains("With a 95 % CI: mean [low, high]"), "{md}");
    check("comparison-2class-ci.md", &md);
    // Every interval holds its mean, in the CSV as well.
    let csv = read(&out, "tables/comparison-2class.csv");
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (mean, low, high) = (
        col("dice_nuclei_mean"),
        col("dice_nuclei_ci_low"),
        col("dice_nuclei_ci_high"),
    );
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let v = |i: usize| f[i].parse::<f64>().unwrap();
        assert!(
            v(low) <= v(mean) + 1e-12 && v(mean) <= v(high) + 1e-12,
            "{line}"
        );
        assert!(v(low) < v(high), "{line}");
    }
}
