//! `seglab eval` end to end: TIFF masks written by tifffile (ImageJ hyperstacks), JSON and
//! table output, spacing from the files, and input errors with exit code 2.

mod util;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use seglab::metrics::{EvalConfig, evaluate};
use seglab::volume::Volume;

/// Writes `v` as an ImageJ TIFF (0/255) through tests/python/write_mask_tiff.py.
fn write_tiff(
    python: &Path,
    dir: &Path,
    name: &str,
    v: &Volume<u8>,
    spacing: Option<[f64; 3]>,
) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    std::fs::write(&raw, v.data()).unwrap();
    let out = dir.join(format!("{name}.tif"));
    let shape = v.shape().map(|s| s.to_string()).join(",");
    let mut args = vec![
        raw.to_str().unwrap().to_string(),
        shape,
        out.to_str().unwrap().to_string(),
    ];
    if let Some(s) = spacing {
        args.push(s.map(|v| v.to_string()).join(","));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    util::run_python(python, "write_mask_tiff.py", &args);
    out
}

/// A [C, 6, 20, 24] mask with one box per channel.
fn boxes(boxes: &[([usize; 3], [usize; 3])]) -> Volume<u8> {
    let mut v = Volume::zeros([boxes.len(), 6, 20, 24]);
    for (c, (lo, hi)) in boxes.iter().enumerate() {
        for z in lo[0]..hi[0] {
            for y in lo[1]..hi[1] {
                for x in lo[2]..hi[2] {
                    v.set(c, z, y, x, 1);
                }
            }
        }
    }
    v
}

/// `seglab eval --pred PRED --gt GT OPTIONS…`.
fn eval(pred: &Path, gt: &Path, options: &[&str]) -> Output {
    let mut args = vec![
        "eval",
        "--pred",
        pred.to_str().unwrap(),
        "--gt",
        gt.to_str().unwrap(),
    ];
    args.extend_from_slice(options);
    util::run_seglab(&args)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn json_output_matches_the_library_and_reads_spacing_from_the_files() {
    let Some(python) = util::python() else {
        return;
    };
    let dir = util::temp_dir();
    let spacing = [2.0, 0.5, 0.25];
    let pred = boxes(&[([1, 2, 3], [4, 10, 12]), ([0, 5, 5], [5, 18, 20])]);
    let gt = boxes(&[([1, 3, 3], [5, 10, 13]), ([0, 4, 5], [6, 18, 22])]);
    let p = write_tiff(&python, dir.path(), "pred", &pred, Some(spacing));
    let g = write_tiff(&python, dir.path(), "gt", &gt, Some(spacing));
    let out = eval(&p, &g, &["--json", "--min-size", "10"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let config = EvalConfig {
        min_object_size: 10,
        ..EvalConfig::default()
    };
    let want = evaluate(
        &pred.clone().with_spacing(Some(spacing)),
        &gt.clone().with_spacing(Some(spacing)),
        &["golgi", "nuclei"],
        &config,
    )
    .unwrap();
    assert_eq!(got, serde_json::to_value(&want).unwrap());
    assert_eq!(got["conventions"]["spacing_source"], "files");
    assert_eq!(
        got["conventions"]["spacing_zyx_um"],
        serde_json::json!(spacing)
    );
    // The documented contract: classes keyed by name with the voxel and object fields.
    for key in [
        "dice",
        "iou",
        "precision",
        "recall",
        "specificity",
        "tp",
        "fp",
        "fn",
        "tn",
        "hd95",
        "assd",
    ] {
        assert!(got["classes"]["nuclei"].get(key).is_some(), "missing {key}");
    }
    for key in ["n_ref", "n_pred", "tp", "precision", "recall", "f1"] {
        assert!(
            got["classes"]["golgi"]["objects"].get(key).is_some(),
            "missing objects.{key}"
        );
    }
}

#[test]
fn classes_can_skip_a_channel_and_must_name_every_channel() {
    let Some(python) = util::python() else {
        return;
    };
    let dir = util::temp_dir();
    // An RGB-like 3-channel mask whose third channel is empty (2-class published data).
    let v = boxes(&[
        ([1, 2, 3], [4, 10, 12]),
        ([0, 5, 5], [5, 18, 20]),
        ([0, 0, 0], [0, 0, 0]),
    ]);
    let p = write_tiff(&python, dir.path(), "p", &v, None);
    let out = eval(&p, &p, &["--classes", "golgi,nuclei,-", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<&String> = got["classes"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["golgi", "nuclei"]);
    assert_eq!(got["classes"]["nuclei"]["dice"], 1.0);
    // No spacing in the files: 1 µm per voxel, with a note.
    assert_eq!(got["conventions"]["spacing_source"], "default");
    assert!(got["conventions"]["spacing_note"].is_string());

    let out = eval(&p, &p, &["--classes", "golgi,nuclei"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("3 channels") && err.contains("p.tif"), "{err}");
}

#[test]
fn a_two_class_prediction_is_scored_against_three_channel_masks_by_class_name() {
    let Some(python) = util::python() else {
        return;
    };
    let dir = util::temp_dir();
    // golgi, nuclei, pair masks (the phantom's layout) and a golgi, nuclei prediction.
    let gt = boxes(&[
        ([1, 3, 3], [5, 10, 13]),
        ([0, 4, 5], [6, 18, 22]),
        ([0, 3, 3], [6, 18, 22]),
    ]);
    let pred = boxes(&[([1, 2, 3], [4, 10, 12]), ([0, 5, 5], [5, 18, 20])]);
    let g = write_tiff(&python, dir.path(), "gt", &gt, None);
    let p = write_tiff(&python, dir.path(), "pred", &pred, None);
    let out = eval(&p, &g, &["--json", "--no-surfaces"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let config = EvalConfig {
        surfaces: false,
        ..EvalConfig::default()
    };
    let first_two = gt.select_channels(&[0, 1]).unwrap();
    let want = evaluate(&pred, &first_two, &["golgi", "nuclei"], &config).unwrap();
    assert_eq!(
        got["classes"],
        serde_json::to_value(&want).unwrap()["classes"]
    );
    // A reference without a class of the prediction: an error naming it and the option.
    let nuclei_only = write_tiff(
        &python,
        dir.path(),
        "n",
        &boxes(&[([0, 4, 5], [6, 18, 22])]),
        None,
    );
    let out = eval(&p, &nuclei_only, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("n.tif") && err.contains("`golgi`") && err.contains("--gt-classes"),
        "{err}"
    );
}

#[test]
fn mismatched_shapes_exit_2_naming_both_files() {
    let Some(python) = util::python() else {
        return;
    };
    let dir = util::temp_dir();
    let a = write_tiff(
        &python,
        dir.path(),
        "a",
        &Volume::zeros([1, 6, 20, 24]),
        None,
    );
    let b = write_tiff(
        &python,
        dir.path(),
        "b",
        &Volume::zeros([1, 6, 20, 23]),
        None,
    );
    let out = eval(&a, &b, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("a.tif") && err.contains("b.tif"), "{err}");
    assert!(
        err.contains("1 × 6 × 20 × 24") && err.contains("1 × 6 × 20 × 23"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn bad_options_are_usage_errors() {
    let out = eval(
        Path::new("a.tif"),
        Path::new("b.tif"),
        &["--spacing", "1,2"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("z,y,x"), "{}", stderr(&out));
    let out = eval(
        Path::new("a.tif"),
        Path::new("b.tif"),
        &["--connectivity", "8"],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = eval(
        Path::new("a.tif"),
        Path::new("b.tif"),
        &["--iou-threshold", "0.2"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("iou_threshold"), "{}", stderr(&out));
    // A missing file is named.
    let out = eval(Path::new("/nonexistent/a.tif"), Path::new("b.tif"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/a.tif"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn table_for_the_real_embryo_masks() {
    let (Some(m8), Some(m16)) = (
        util::shared_data("qcanet-embryo/masks/embryo-8cell.tif"),
        util::shared_data("qcanet-embryo/masks/embryo-16cell.tif"),
    ) else {
        return;
    };
    let out = eval(&m8, &m16, &["--spacing", "2.18,1,1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("nuclei"), "{table}");
    let row = |name: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row {name} in\n{table}"))[name.len()..]
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(row("objects ref"), ["16"]);
    assert_eq!(row("objects pred"), ["8"]);
    assert!(
        table.contains("spacing     2.18 × 1 × 1 µm (z × y × x; given)"),
        "{table}"
    );
    // The two header lines echo the file paths as given, so only the table must fit 79 columns.
    let echoed_paths = |l: &&str| l.starts_with("prediction  ") || l.starts_with("reference   ");
    for line in table.lines().filter(|l| !echoed_paths(l)) {
        assert!(line.chars().count() <= 79, "line over 79 columns: {line}");
    }
}
