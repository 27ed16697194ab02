//! `seglab data info` end to end: bad dataset folders give exit code 2 and one error line
//! that names the file and the problem.

mod util;

use std::path::Path;
use std::process::Output;

const GOOD: &str = r#"name = "tiny"
image_channels = ["golgi", "nuclei"]
mask_channels = ["golgi", "nuclei"]

[[volumes]]
id = "v1"
image = "images/v1.tif"
mask = "masks/v1.tif"
"#;

fn write(dir: &Path, rel: &str, contents: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, contents).unwrap();
}

/// Exit code 2, nothing on stdout, exactly one stderr line; returns that line.
fn one_error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    lines[0].to_string()
}

#[test]
fn unknown_key_names_file_key_and_nearest_key() {
    let dir = util::temp_dir();
    write(
        dir.path(),
        "dataset.toml",
        GOOD.replace("mask = ", "masks = ").as_bytes(),
    );
    let out = util::run_seglab(&["data", "info", dir.path().to_str().unwrap()]);
    let line = one_error_line(&out);
    let file = dir.path().join("dataset.toml");
    assert!(line.contains(&file.display().to_string()), "{line}");
    assert!(
        line.ends_with("line 8, column 1: unknown key `volumes[0].masks`, did you mean `mask`?"),
        "{line}"
    );
}

#[test]
fn missing_image_file_is_named() {
    let dir = util::temp_dir();
    write(dir.path(), "dataset.toml", GOOD.as_bytes());
    write(dir.path(), "masks/v1.tif", b"not read");
    let out = util::run_seglab(&["data", "info", dir.path().to_str().unwrap()]);
    let line = one_error_line(&out);
    let image = dir.path().join("images/v1.tif");
    assert!(
        line.ends_with(&format!("image file {} not found", image.display())),
        "{line}"
    );
}

#[test]
fn invalid_values_and_missing_dataset_toml() {
    let dir = util::temp_dir();
    write(
        dir.path(),
        "dataset.toml",
        GOOD.replace(
            "mask_channels = [\"golgi\", \"nuclei\"]",
            "mask_channels = [\"golgi\", \"cells\"]",
        )
        .as_bytes(),
    );
    let out = util::run_seglab(&["data", "info", dir.path().to_str().unwrap()]);
    let line = one_error_line(&out);
    assert!(
        line.contains("mask_channels[1] = `cells` is not a mask channel"),
        "{line}"
    );

    let empty = util::temp_dir();
    let out = util::run_seglab(&["data", "info", empty.path().to_str().unwrap()]);
    let line = one_error_line(&out);
    assert!(
        line.contains(&empty.path().join("dataset.toml").display().to_string()),
        "{line}"
    );
}

#[test]
fn help_lines_fit_79_columns() {
    for args in [&["data", "--help"][..], &["data", "info", "--help"][..]] {
        let out = util::run_seglab(args);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("Usage: seglab data"), "{text}");
        for line in text.lines() {
            assert!(line.chars().count() <= 79, "too long: {line:?}");
        }
    }
}
