//! Shared helpers of the integration tests: the reference Python, the shared real data, the
//! seglab binary and fresh temporary directories.
//!
//! Tests that need something outside the repository (the Python reference environment, the
//! real data under `../shared/data/`) skip with a message on a developer machine and fail in CI
//! (`CI=true`), so a missing dependency can never hide a failure there.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod blobs;
pub mod tracking;

/// True when running under CI (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips the current test with `reason` outside CI; panics with it in CI.
pub fn skip_or_fail(reason: &str) {
    if in_ci() {
        panic!("required test input missing in CI: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// The Python interpreter of the reference environment (`SEGLAB_PYTHON`, set by `scripts/test`).
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("SEGLAB_PYTHON") {
        Some(p) if Path::new(&p).exists() => Some(PathBuf::from(p)),
        _ => {
            skip_or_fail("SEGLAB_PYTHON is not set (run the tests through scripts/test)");
            None
        }
    }
}

/// Runs a Python script of `tests/python/` with the reference interpreter; panics with its
/// stderr when it fails.
pub fn run_python(python: &Path, script: &str, args: &[&str]) -> Output {
    let path = repo_root().join("tests/python").join(script);
    let out = Command::new(python)
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared data folder (`SEGLAB_SHARED_DATA`, default `../shared/data` next to the repository).
pub fn shared_data_root() -> PathBuf {
    std::env::var_os("SEGLAB_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"))
}

/// A path under the shared data folder, or `None` (after skip_or_fail) when it is absent.
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let p = shared_data_root().join(rel);
    if p.exists() {
        Some(p)
    } else {
        skip_or_fail(&format!("shared data {} not found", p.display()));
        None
    }
}

/// The seglab binary built for these tests.
pub fn seglab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_seglab"))
}

/// Runs seglab with `args` and returns its output (whatever the exit status).
pub fn run_seglab(args: &[&str]) -> Output {
    seglab()
        .args(args)
        .output()
        .expect("cannot start the seglab binary")
}

/// A fresh temporary directory, removed when the guard drops.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("seglab-test-")
        .tempdir()
        .expect("cannot create a temporary directory")
}

/// A spec line that lets every model keep a stretch that clips annotated objects. The easy
/// phantom's nuclei fill about 8 % of a volume and the published 95th-percentile floor maps
/// about 45 % of their voxels to 0, so the preprocessing check of `sweep run` stops specs at
/// the defaults; tests of the runner's mechanics take this line (top level, before `[cv]`).
pub const ALLOW_CLIPPING: &str =
    "allow_clipping = [\"threshold\", \"unet3d\", \"vox2vox\", \"cyclegan\"]\n";

/// A 3-volume easy phantom (16 × 48 × 48) in `<dir>/data`, made by the CLI as a user would;
/// returns that folder. The small dataset of the sweep, Slurm and MLflow tests.
pub fn easy_phantom(dir: &Path) -> PathBuf {
    easy_phantom_as(dir, "data", 0)
}

/// [`easy_phantom`] drawn with `seed` into `<dir>/<name>` (other data of the same shape).
pub fn easy_phantom_as(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let out = dir.join(name);
    let seed = seed.to_string();
    let o = run_seglab(&[
        "synth",
        "phantom",
        "--preset",
        "easy",
        "--volumes",
        "3",
        "--shape",
        "16x48x48",
        "--seed",
        &seed,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "seglab synth phantom: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// A command's exit status, stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The trial ids of `sweep plan`'s table, in order.
pub fn plan_ids(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.len() == 12 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .collect()
}
