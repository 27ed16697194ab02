//! `seglab inspect` end to end: the JSON contract against tifffile + NumPy statistics, the
//! human table, and bad input (exit code 2, one stderr line naming the file and the problem,
//! never a panic).

mod util;

use std::path::Path;
use std::process::Output;

use seglab::volume::{AnyVolume, Volume, write_tiff};
use serde_json::Value;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `seglab inspect FILE` and checks it fails the way bad input must: exit code 2, no
/// panic, exactly one stderr line that names the file and contains `problem`.
fn assert_rejected(file: &Path, problem: &str) {
    let out = util::run_seglab(&["inspect", file.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}: {err}", file.display());
    assert!(
        !err.contains("panicked"),
        "panic on {}: {err}",
        file.display()
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {err:?}");
    assert!(
        lines[0].contains(&file.display().to_string()),
        "file not named: {err}"
    );
    assert!(
        lines[0].contains(problem),
        "expected {problem:?} in {err:?}"
    );
    assert!(out.stdout.is_empty(), "output on stdout for bad input");
}

/// `inspect --json` on `file` against tifffile + NumPy (`tests/python/tiff_reference.py`).
fn assert_json_matches_numpy(python: &Path, file: &Path) {
    let dir = util::temp_dir();
    let raw = dir.path().join("ref.raw");
    let out = util::run_python(
        python,
        "tiff_reference.py",
        &[file.to_str().unwrap(), raw.to_str().unwrap()],
    );
    let reference: Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = util::run_seglab(&["inspect", "--json", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    let name = file.display();
    assert_eq!(got["file"], file.to_str().unwrap());
    assert_eq!(got["shape"], reference["shape"], "{name}");
    assert_eq!(got["dtype"], reference["dtype"], "{name}");
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(
        keys(&got),
        ["channels", "dtype", "file", "shape", "spacing"],
        "{name}"
    );
    let (got_ch, ref_ch) = (
        got["channels"].as_array().unwrap(),
        reference["channels"].as_array().unwrap(),
    );
    assert_eq!(got_ch.len(), ref_ch.len(), "{name}");
    let integer = reference["dtype"].as_str().unwrap().starts_with("uint");
    for (c, (g, r)) in got_ch.iter().zip(ref_ch).enumerate() {
        assert_eq!(keys(g), ["max", "mean", "min", "sum"], "{name} channel {c}");
        if integer {
            // Exact integers, printed as integers.
            for key in ["min", "max", "sum"] {
                assert!(g[key].is_u64(), "{name} channel {c}: {key} is {}", g[key]);
                assert_eq!(g[key], r[key], "{name} channel {c}: {key}");
            }
        } else {
            for key in ["min", "max"] {
                assert_eq!(
                    g[key].as_f64(),
                    r[key].as_f64(),
                    "{name} channel {c}: {key}"
                );
            }
        }
        for key in ["mean", "sum"] {
            match (g[key].as_f64(), r[key].as_f64()) {
                (Some(a), Some(b)) => assert!(
                    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()),
                    "{name} channel {c}: {key} {a} vs {b}"
                ),
                (a, b) => assert_eq!(a, b, "{name} channel {c}: {key} (null = NaN or inf)"),
            }
        }
    }
}

#[test]
fn json_matches_numpy_on_real_data() {
    let Some(image) = util::shared_data("qcanet-embryo/images/embryo-8cell.tif") else {
        return;
    };
    let out = util::run_seglab(&["inspect", "--json", image.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The README of the dataset: 51 × 120 × 122 uint16 from 92 to 4171.
    assert_eq!(got["shape"], serde_json::json!([1, 51, 120, 122]));
    assert_eq!(got["dtype"], "uint16");
    assert_eq!(got["spacing"], Value::Null);
    assert_eq!(got["channels"][0]["min"], 92);
    assert_eq!(got["channels"][0]["max"], 4171);
    let Some(python) = util::python() else { return };
    assert_json_matches_numpy(&python, &image);
    if let Some(mask) = util::shared_data("qcanet-embryo/masks/embryo-16cell.tif") {
        assert_json_matches_numpy(&python, &mask);
    }
}

#[test]
fn json_matches_numpy_on_float_data_with_nan() {
    let Some(python) = util::python() else { return };
    let dir = util::temp_dir();
    let n = 2 * 3 * 7 * 5;
    let mut data: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1013) as f32 * 0.731 - 200.0)
        .collect();
    data[3] = f32::NAN; // channel 0: NaN → sum and mean null, min/max ignore it
    data[n - 1] = 1e30; // channel 1: a large value among small ones
    let volume = Volume::from_vec([2, 3, 7, 5], data).unwrap();
    let file = dir.path().join("float.tif");
    write_tiff(&file, &AnyVolume::F32(volume)).unwrap();
    assert_json_matches_numpy(&python, &file);
    let out = util::run_seglab(&["inspect", "--json", file.to_str().unwrap()]);
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["channels"][0]["sum"], Value::Null);
    assert!(got["channels"][0]["min"].is_f64());
}

#[test]
fn table_shows_shape_dtype_spacing_and_channels() {
    let dir = util::temp_dir();
    let file = dir.path().join("two.tif");
    let volume = Volume::from_vec([2, 2, 2, 2], (0..16u16).collect())
        .unwrap()
        .with_spacing(Some([2.0, 0.5, 0.25]));
    write_tiff(&file, &volume.into()).unwrap();
    let out = util::run_seglab(&["inspect", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("2 × 2 × 2 × 2 (C × Z × Y × X)"), "{text}");
    assert!(text.contains("uint16"), "{text}");
    assert!(text.contains("z 2 µm, y 0.5 µm, x 0.25 µm"), "{text}");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("channel"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[1], ["0", "0", "7", "3.5000", "28"]);
    assert_eq!(rows[2], ["1", "8", "15", "11.5000", "92"]);
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let dir = util::temp_dir();
    let missing = dir.path().join("missing.tif");
    assert_rejected(&missing, "cannot open");

    let text = dir.path().join("notes.tif");
    std::fs::write(&text, "this is not an image\n").unwrap();
    assert_rejected(&text, "not a TIFF file");

    let empty = dir.path().join("empty.tif");
    std::fs::write(&empty, b"").unwrap();
    assert_rejected(&empty, "empty");

    // A valid stack cut short in its pixel data, and one cut inside its directories.
    let good = dir.path().join("good.tif");
    let volume = Volume::from_vec([2, 4, 16, 16], (0..2048u16).collect()).unwrap();
    write_tiff(&good, &volume.into()).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.tif");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    assert_rejected(&cut, "truncated");
    let cut_end = dir.path().join("cut-end.tif");
    std::fs::write(&cut_end, &bytes[..bytes.len() - 20]).unwrap();
    assert_rejected(&cut_end, "truncated");
}

#[test]
fn bad_tifffile_layouts_exit_2_with_one_line() {
    let Some(python) = util::python() else { return };
    let dir = util::temp_dir();
    util::run_python(&python, "tiff_fixtures.py", &[dir.path().to_str().unwrap()]);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("manifest.json")).unwrap())
            .unwrap();
    let bad = manifest["bad"].as_array().unwrap();
    assert!(bad.len() >= 5);
    for b in bad {
        assert_rejected(
            &dir.path().join(b["file"].as_str().unwrap()),
            b["expect"].as_str().unwrap(),
        );
    }
}

#[test]
fn help_fits_in_79_columns() {
    let out = util::run_seglab(&["inspect", "--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("--json"), "{text}");
    for line in text.lines() {
        assert!(line.chars().count() <= 79, "help line too long: {line:?}");
    }
}
