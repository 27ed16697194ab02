//! TIFF parity with tifffile: every layout tifffile writes is read with identical voxels,
//! shape and spacing; every hyperstack seglab writes is read back right by tifffile (and
//! laid out the way ImageJ reads it); the real embryo volumes match tifffile voxel for voxel.

mod util;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use seglab::volume::{
    AnyVolume, BigTiff, Compression, TiffWriteOptions, Volume, read_tiff, write_tiff_with,
};
use serde_json::{Value, json};

/// The fixtures of `tests/python/tiff_fixtures.py`, generated once per test binary.
fn fixtures() -> Option<&'static Path> {
    static DIR: OnceLock<Option<tempfile::TempDir>> = OnceLock::new();
    DIR.get_or_init(|| {
        let python = util::python()?;
        let dir = util::temp_dir();
        let out = dir.path().to_str().expect("temporary path is UTF-8");
        util::run_python(&python, "tiff_fixtures.py", &[out]);
        Some(dir)
    })
    .as_ref()
    .map(|d| d.path())
}

fn manifest(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest.json");
    serde_json::from_str(&text).expect("manifest is JSON")
}

/// The volume's samples as little-endian bytes, for comparison with a raw file.
fn le_bytes(v: &AnyVolume) -> Vec<u8> {
    match v {
        AnyVolume::U8(v) => v.data().to_vec(),
        AnyVolume::U16(v) => v.data().iter().flat_map(|s| s.to_le_bytes()).collect(),
        AnyVolume::F32(v) => v.data().iter().flat_map(|s| s.to_le_bytes()).collect(),
    }
}

fn spacing_of(v: &Value) -> Option<[f64; 3]> {
    let a = v.as_array()?;
    Some([a[0].as_f64()?, a[1].as_f64()?, a[2].as_f64()?])
}

fn spacing_matches(got: Option<[f64; 3]>, want: Option<[f64; 3]>) -> bool {
    match (got, want) {
        (None, None) => true,
        (Some(g), Some(w)) => g
            .iter()
            .zip(w)
            .all(|(g, w)| (g - w).abs() <= 1e-9 * w.abs().max(g.abs())),
        _ => false,
    }
}

/// Compares what read_tiff makes of `file` with the expected dtype, shape, spacing and raw
/// voxels; returns the differences.
fn compare(
    file: &Path,
    raw: &Path,
    dtype: &str,
    shape: &[usize],
    spacing: Option<[f64; 3]>,
) -> Vec<String> {
    let name = file.display();
    let volume = match read_tiff(file) {
        Ok(v) => v,
        Err(e) => return vec![format!("{name}: read_tiff failed: {e}")],
    };
    let mut problems = Vec::new();
    if volume.dtype().name() != dtype {
        problems.push(format!(
            "{name}: dtype {} instead of {dtype}",
            volume.dtype()
        ));
    }
    if volume.shape().as_slice() != shape {
        problems.push(format!(
            "{name}: shape {:?} instead of {shape:?}",
            volume.shape()
        ));
    }
    if !spacing_matches(volume.spacing(), spacing) {
        problems.push(format!(
            "{name}: spacing {:?} instead of {spacing:?}",
            volume.spacing()
        ));
    }
    let expected = std::fs::read(raw).expect("raw file");
    let got = le_bytes(&volume);
    if got != expected {
        let first = got.iter().zip(&expected).position(|(a, b)| a != b);
        problems.push(format!(
            "{name}: voxels differ ({} vs {} bytes, first difference at byte {first:?})",
            got.len(),
            expected.len()
        ));
    }
    problems
}

#[test]
fn reads_every_tifffile_layout_with_identical_voxels() {
    let Some(dir) = fixtures() else { return };
    let m = manifest(dir);
    let fixtures = m["fixtures"].as_array().expect("fixtures");
    assert!(fixtures.len() >= 40, "too few fixtures: {}", fixtures.len());
    let mut problems = Vec::new();
    for f in fixtures {
        let shape: Vec<usize> = f["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap() as usize)
            .collect();
        problems.extend(compare(
            &dir.join(f["file"].as_str().unwrap()),
            &dir.join(f["raw"].as_str().unwrap()),
            f["dtype"].as_str().unwrap(),
            &shape,
            spacing_of(&f["spacing"]),
        ));
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn invalid_files_give_one_line_naming_file_and_problem() {
    let Some(dir) = fixtures() else { return };
    let m = manifest(dir);
    for bad in m["bad"].as_array().expect("bad") {
        let path = dir.join(bad["file"].as_str().unwrap());
        let expect = bad["expect"].as_str().unwrap();
        let err = read_tiff(&path).expect_err(&format!("{} must not be read", path.display()));
        let text = err.to_string();
        assert!(
            text.starts_with(&path.display().to_string()),
            "error does not start with the path: {text}"
        );
        assert!(
            text.contains(expect),
            "{}: expected {expect:?} in {text:?}",
            path.display()
        );
        assert!(!text.contains('\n'), "more than one line: {text:?}");
    }
}

/// A deterministic test pattern covering the value range of each type.
fn pattern(shape: [usize; 4], dtype: &str, spacing: Option<[f64; 3]>) -> AnyVolume {
    let n: usize = shape.iter().product();
    let index = |i: usize| i.wrapping_mul(2_654_435_761) ^ (i >> 3);
    let v: AnyVolume = match dtype {
        "uint8" => Volume::from_vec(shape, (0..n).map(|i| index(i) as u8).collect())
            .unwrap()
            .into(),
        "uint16" => Volume::from_vec(shape, (0..n).map(|i| index(i) as u16).collect())
            .unwrap()
            .into(),
        _ => {
            let mut data: Vec<f32> = (0..n)
                .map(|i| (index(i) % 100_003) as f32 * 0.37 - 18_000.0)
                .collect();
            let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e-45];
            for (d, s) in data.iter_mut().zip(special) {
                *d = s;
            }
            Volume::from_vec(shape, data).unwrap().into()
        }
    };
    let mut v = v;
    v.set_spacing(spacing);
    v
}

#[test]
fn written_hyperstacks_read_back_right_in_tifffile_and_seglab() {
    let Some(python) = util::python() else { return };
    let dir = util::temp_dir();
    let shapes: [([usize; 4], Option<[f64; 3]>); 4] = [
        ([2, 5, 17, 23], Some([2.18, 0.1135, 0.1135])),
        ([1, 4, 9, 6], Some([0.5, 0.25, 0.125])),
        ([3, 1, 8, 7], None),
        ([1, 1, 5, 4], None),
    ];
    let compressions = [
        (Compression::None, "none"),
        (Compression::Lzw, "lzw"),
        (Compression::Deflate, "deflate"),
        (Compression::PackBits, "packbits"),
    ];
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for dtype in ["uint8", "uint16", "float32"] {
        for (compression, cname) in compressions {
            for (bigtiff, bname) in [(BigTiff::Auto, "classic"), (BigTiff::Always, "big")] {
                for (k, (shape, spacing)) in shapes.iter().enumerate() {
                    let name = format!("w_{dtype}_{cname}_{bname}_{k}");
                    let volume = pattern(*shape, dtype, *spacing);
                    let file = dir.path().join(format!("{name}.tif"));
                    let raw = dir.path().join(format!("{name}.raw"));
                    let options = TiffWriteOptions {
                        compression,
                        bigtiff,
                    };
                    write_tiff_with(&file, &volume, &options).expect("write_tiff_with");
                    std::fs::write(&raw, le_bytes(&volume)).unwrap();
                    problems.extend(compare(&file, &raw, dtype, shape, *spacing));
                    entries.push(json!({
                        "file": format!("{name}.tif"),
                        "raw": format!("{name}.raw"),
                        "dtype": dtype,
                        "shape": shape,
                        "spacing": spacing,
                        "compression": cname,
                        "bigtiff": bname == "big",
                    }));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "seglab round trip:\n{}",
        problems.join("\n")
    );
    // No temporary files are left next to the written ones.
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let manifest = dir.path().join("written.json");
    std::fs::write(&manifest, serde_json::to_string(&entries).unwrap()).unwrap();
    let out = util::run_python(&python, "tiff_verify.py", &[manifest.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("ok: {} files", entries.len())),
        "{stdout}"
    );
}

#[test]
fn masks_are_written_as_0_and_255() {
    let dir = util::temp_dir();
    let path = dir.path().join("mask.tif");
    let mask = Volume::from_vec([2, 2, 2, 2], (0..16u8).map(|i| i % 3).collect()).unwrap();
    seglab::volume::write_mask(&path, &mask).unwrap();
    let AnyVolume::U8(back) = read_tiff(&path).unwrap() else {
        panic!("masks are uint8");
    };
    let expected: Vec<u8> = mask
        .data()
        .iter()
        .map(|&v| if v != 0 { 255 } else { 0 })
        .collect();
    assert_eq!(back.data(), expected.as_slice());
    assert_eq!(back.shape(), [2, 2, 2, 2]);
}

/// The real embryo volumes: the shape and range the dataset README states, and every voxel
/// equal to what tifffile reads.
#[test]
fn real_embryo_volumes_match_tifffile() {
    let files = [
        "qcanet-embryo/images/embryo-8cell.tif",
        "qcanet-embryo/images/embryo-16cell.tif",
        "qcanet-embryo/masks/embryo-8cell.tif",
        "qcanet-embryo/masks/embryo-16cell.tif",
    ];
    let Some(image) = util::shared_data(files[0]) else {
        return;
    };
    match read_tiff(&image).unwrap() {
        AnyVolume::U16(v) => {
            assert_eq!(v.shape(), [1, 51, 120, 122]);
            assert_eq!(v.data().iter().min(), Some(&92));
            assert_eq!(v.data().iter().max(), Some(&4171));
            assert_eq!(v.spacing, None);
        }
        other => panic!("{} is uint16, read as {}", image.display(), other.dtype()),
    }
    let Some(python) = util::python() else { return };
    let dir = util::temp_dir();
    let mut problems = Vec::new();
    for rel in files {
        let Some(path) = util::shared_data(rel) else {
            return;
        };
        let raw = dir.path().join("reference.raw");
        let out = util::run_python(
            &python,
            "tiff_reference.py",
            &[path.to_str().unwrap(), raw.to_str().unwrap()],
        );
        let reference: Value = serde_json::from_slice(&out.stdout).unwrap();
        let shape: Vec<usize> = reference["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap() as usize)
            .collect();
        problems.extend(compare(
            &path,
            &raw,
            reference["dtype"].as_str().unwrap(),
            &shape,
            None,
        ));
        if rel.contains("masks") {
            let v = read_tiff(&path).unwrap();
            let AnyVolume::U8(m) = v else {
                panic!("masks are uint8")
            };
            assert!(
                m.data().iter().all(|&s| s == 0 || s == 255),
                "{rel} is not 0/255"
            );
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
