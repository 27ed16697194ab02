//! `seglab data info` and `seglab data import --layout folder` end to end: bad dataset folders
//! give exit code 2 and one error line that names the file and the problem; a folder of real
//! images and masks imports into a dataset that `data info` reads back.

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
    for args in [
        &["data", "--help"][..],
        &["data", "info", "--help"][..],
        &["data", "import", "--help"][..],
    ] {
        let out = util::run_seglab(args);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("Usage: seglab data"), "{text}");
        for line in text.lines() {
            assert!(line.chars().count() <= 79, "too long: {line:?}");
        }
    }
}

#[test]
fn a_folder_of_real_tiffs_imports_and_reads_back() {
    let Some(src) = util::shared_data("qcanet-embryo") else {
        return;
    };
    let dir = util::temp_dir();
    let out = dir.path().join("embryo");
    let o = util::run_seglab(&[
        "data",
        "import",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--layout",
        "folder",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let printed = String::from_utf8_lossy(&o.stdout);
    assert!(printed.contains("image channels: nuclei"), "{printed}");
    // The import chooses the stretch floors from the data and says which.
    assert!(printed.contains("percentiles = \"auto\""), "{printed}");
    assert!(printed.contains("nuclei: floor at percentile"), "{printed}");
    let toml = std::fs::read_to_string(out.join("dataset.toml")).unwrap();
    assert!(
        toml.contains("[preprocess]\npercentiles = \"auto\""),
        "{toml}"
    );
    let o = util::run_seglab(&["data", "info", out.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["mask_channels"], serde_json::json!(["nuclei"]));
    let configured = &info["clipping"][0];
    assert_eq!(configured["kind"], "configured", "{configured}");
    assert!(
        configured["describe"]
            .as_str()
            .unwrap()
            .contains("auto floors"),
        "{configured}"
    );
    assert!(
        configured["figures"][0]["zeroed"].as_f64().unwrap() <= 0.05,
        "{configured}"
    );
    let ids: Vec<&str> = info["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["embryo-16cell", "embryo-8cell"]);
    for v in info["volumes"].as_array().unwrap() {
        assert_eq!(v["shape"], serde_json::json!([1, 51, 120, 122]));
    }
    // The files stay where they are; the dataset lists them relative to itself.
    assert!(!out.join("images").exists());
    // Importing again without --force is refused and leaves the dataset alone.
    let again = util::run_seglab(&[
        "data",
        "import",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let line = one_error_line(&again);
    assert!(line.contains("already exists"), "{line}");
    // Told to keep the preset's stretch, the import writes no percentiles.
    let preset = dir.path().join("embryo-preset");
    let o = util::run_seglab(&[
        "data",
        "import",
        src.to_str().unwrap(),
        "--out",
        preset.to_str().unwrap(),
        "--percentiles",
        "preset",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let toml = std::fs::read_to_string(preset.join("dataset.toml")).unwrap();
    assert!(!toml.contains("percentiles"), "{toml}");
}

#[test]
fn a_folder_with_an_unmatched_mask_is_refused() {
    let dir = util::temp_dir();
    let src = dir.path().join("src");
    // Only the file names matter before any file is read.
    write(&src, "images/a.tif", b"");
    write(&src, "masks/a.tif", b"");
    write(&src, "masks/b_mask.tif", b"");
    let out = dir.path().join("out");
    let o = util::run_seglab(&[
        "data",
        "import",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let line = one_error_line(&o);
    assert!(line.contains("b_mask.tif: matches no image"), "{line}");
    assert!(!out.exists());
}
