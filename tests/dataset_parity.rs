//! Parity of the dataset arithmetic with NumPy and scikit-image: percentiles (linear),
//! the full percentile stretch of docs/published-code.md §1.3, `np.pad(mode="reflect")`
//! (high end and symmetric, pads longer than the axis) and `threshold_otsu`.
//!
//! The test writes its arrays as raw files, `tests/python/dataset_reference.py` computes the
//! reference results, and the comparison is exact (percentiles to 1e-9 relative, uint8 and
//! padded arrays bit for bit, Otsu thresholds exactly).

mod util;

use std::collections::HashMap;
use std::path::Path;

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

use seglab::dataset::pad::reflect_pad;
use seglab::dataset::preprocess::{Arithmetic, PercentileStretch, percentiles};
use seglab::dataset::threshold::otsu_threshold;
use seglab::volume::Volume;

const QS: [f64; 10] = [0.0, 5.0, 25.0, 33.3, 50.0, 95.0, 98.0, 99.8, 99.99, 100.0];

/// An input array: its NumPy dtype, shape and values (as f32, exact for u8/u16).
struct Array {
    dtype: &'static str,
    shape: Vec<usize>,
    values: Vec<f32>,
}

impl Array {
    fn write(&self, path: &Path) {
        let mut bytes = Vec::new();
        for &v in &self.values {
            match self.dtype {
                "uint8" => bytes.push(v as u8),
                "uint16" => bytes.extend((v as u16).to_le_bytes()),
                "float32" => bytes.extend(v.to_le_bytes()),
                other => panic!("unsupported dtype {other}"),
            }
        }
        std::fs::write(path, bytes).unwrap();
    }

    fn arithmetic(&self) -> Arithmetic {
        if self.dtype == "float32" {
            Arithmetic::F32
        } else {
            Arithmetic::F64
        }
    }
}

fn sparse_u8(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            if rng.random_bool(0.9) {
                rng.random_range(0..20u8) as f32
            } else {
                rng.random_range(0..=255u8) as f32
            }
        })
        .collect()
}

fn arrays() -> Vec<(&'static str, Array)> {
    let mut rng = ChaCha8Rng::seed_from_u64(20231);
    let mut out = Vec::new();
    let a = |dtype, shape: Vec<usize>, values: Vec<f32>| Array {
        dtype,
        shape,
        values,
    };
    out.push((
        "u8_sparse",
        a("uint8", vec![200_003], sparse_u8(&mut rng, 200_003)),
    ));
    let u16s = (0..100_001)
        .map(|_| rng.random_range(0..4096u16) as f32)
        .collect();
    out.push(("u16", a("uint16", vec![100_001], u16s)));
    let normal = (0..50_001)
        .map(|_| (rng.random::<f32>() - 0.5) * 37.0 + rng.random::<f32>() * 0.01)
        .collect();
    out.push(("f32_normal", a("float32", vec![50_001], normal)));
    let integral = (0..30_000)
        .map(|_| rng.random_range(0..200u8) as f32)
        .collect();
    out.push(("f32_integral", a("float32", vec![30_000], integral)));
    out.push(("f32_single", a("float32", vec![1], vec![3.5])));
    out.push(("u8_two", a("uint8", vec![2], vec![1.0, 2.0])));
    out.push((
        "u8_seven",
        a("uint8", vec![7], vec![9.0, 1.0, 250.0, 3.0, 3.0, 7.0, 0.0]),
    ));
    out
}

fn run_reference(dir: &Path, manifest: &Value) -> HashMap<String, Value> {
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    let python = util::python().expect("checked by the caller");
    util::run_python(&python, "dataset_reference.py", &[dir.to_str().unwrap()]);
    let text = std::fs::read_to_string(dir.join("results.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn assert_close(ours: f64, numpy: f64, what: &str) {
    let tol = 1e-9 * numpy.abs().max(1e-300);
    assert!(
        (ours - numpy).abs() <= tol,
        "{what}: seglab {ours:?} vs NumPy {numpy:?}"
    );
}

#[test]
fn percentiles_match_numpy() {
    if util::python().is_none() {
        return;
    }
    let dir = util::temp_dir();
    let arrays = arrays();
    let mut manifest = Vec::new();
    for (name, a) in &arrays {
        let file = format!("{name}.bin");
        a.write(&dir.path().join(&file));
        manifest.push(json!({"kind": "percentile", "name": name, "file": file,
                             "dtype": a.dtype, "shape": a.shape, "q": QS}));
    }
    let results = run_reference(dir.path(), &Value::from(manifest));
    for (name, a) in &arrays {
        let ours = percentiles(&a.values, &QS, a.arithmetic());
        let numpy = results[*name].as_array().unwrap();
        for ((q, o), n) in QS.iter().zip(ours).zip(numpy) {
            assert_close(o, n.as_f64().unwrap(), &format!("{name} q={q}"));
        }
    }
}

#[test]
fn percentile_stretch_matches_numpy_exactly() {
    if util::python().is_none() {
        return;
    }
    let dir = util::temp_dir();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let shape = [2usize, 6, 37, 41];
    let n = shape[1] * shape[2] * shape[3];
    // uint8 like the published RGB crops: channel 0 sparse, channel 1 almost all zero (the
    // low == high guard); uint16 raw intensities.
    let mut u8_values = sparse_u8(&mut rng, n);
    u8_values.extend((0..n).map(|i| if i % 157 == 0 { (i % 251) as f32 } else { 0.0 }));
    let u16_values: Vec<f32> = (0..2 * n)
        .map(|_| (rng.random::<f32>().powi(4) * 60000.0).floor())
        .collect();
    let cases = [
        (
            "stretch_u8",
            "uint8",
            u8_values,
            [[95.0, 99.8], [95.0, 98.0]],
        ),
        (
            "stretch_u16",
            "uint16",
            u16_values,
            [[5.0, 98.0], [95.0, 98.0]],
        ),
    ];
    let mut manifest = Vec::new();
    for (name, dtype, values, pcts) in &cases {
        let a = Array {
            dtype,
            shape: shape.to_vec(),
            values: values.clone(),
        };
        let file = format!("{name}.bin");
        a.write(&dir.path().join(&file));
        manifest.push(
            json!({"kind": "stretch", "name": name, "file": file, "dtype": dtype,
                             "shape": shape, "percentiles": pcts}),
        );
    }
    let results = run_reference(dir.path(), &Value::from(manifest));
    for (name, _, values, pcts) in &cases {
        let expected = std::fs::read(dir.path().join(format!("{name}.out"))).unwrap();
        let bounds = results[*name].as_array().unwrap();
        for c in 0..2 {
            let stretch = PercentileStretch {
                low_percentile: pcts[c][0],
                high_percentile: pcts[c][1],
                equal_guard: 10.0,
                quantize: true,
            };
            let src = &values[c * n..(c + 1) * n];
            let mut out = vec![0.0f32; n];
            let b = stretch.apply(src, &mut out, Arithmetic::F64).unwrap();
            assert_close(
                b.low,
                bounds[c][0].as_f64().unwrap(),
                &format!("{name}[{c}] low"),
            );
            assert_close(
                b.high,
                bounds[c][1].as_f64().unwrap(),
                &format!("{name}[{c}] high"),
            );
            let ours: Vec<u8> = out.iter().map(|&v| v as u8).collect();
            let want = &expected[c * n..(c + 1) * n];
            let diff = ours.iter().zip(want).filter(|(a, b)| a != b).count();
            assert_eq!(
                diff, 0,
                "{name} channel {c}: {diff} voxels differ from NumPy"
            );
        }
        if *name == "stretch_u8" {
            let b = bounds[1].as_array().unwrap();
            assert_eq!(b[0], b[1], "the guard case has low == high");
        }
    }
}

#[test]
fn reflect_padding_matches_numpy() {
    if util::python().is_none() {
        return;
    }
    let dir = util::temp_dir();
    // (name, shape, low padding, high padding)
    type PadCase<'a> = (&'a str, [usize; 3], [usize; 3], [usize; 3]);
    let cases: [PadCase; 5] = [
        ("high_end", [3, 4, 5], [0, 0, 0], [2, 3, 4]),
        (
            "high_end_longer_than_axis",
            [3, 4, 5],
            [0, 0, 0],
            [5, 9, 13],
        ),
        ("symmetric", [3, 4, 5], [1, 2, 2], [1, 2, 3]),
        (
            "symmetric_longer_than_axis",
            [2, 3, 5],
            [4, 7, 6],
            [5, 8, 11],
        ),
        ("single_sample_axes", [1, 2, 3], [2, 2, 2], [3, 3, 3]),
    ];
    let mut manifest = Vec::new();
    let mut inputs = Vec::new();
    for (i, (name, shape, before, after)) in cases.iter().enumerate() {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|v| (v * 7 + i) as f32 + 0.25).collect();
        let a = Array {
            dtype: "float32",
            shape: shape.to_vec(),
            values: values.clone(),
        };
        let file = format!("{name}.bin");
        a.write(&dir.path().join(&file));
        manifest.push(
            json!({"kind": "pad", "name": name, "file": file, "dtype": "float32",
                             "shape": shape, "before": before, "after": after}),
        );
        inputs.push(values);
    }
    let results = run_reference(dir.path(), &Value::from(manifest));
    for ((name, shape, before, after), values) in cases.iter().zip(inputs) {
        let v = Volume::from_vec([1, shape[0], shape[1], shape[2]], values).unwrap();
        let padded = reflect_pad(&v, *before, *after);
        let numpy_shape: Vec<usize> = results[*name]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(padded.shape()[1..].to_vec(), numpy_shape, "{name}");
        let bytes = std::fs::read(dir.path().join(format!("{name}.out"))).unwrap();
        let expected: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(padded.data(), expected.as_slice(), "{name}");
    }
}

#[test]
fn otsu_matches_scikit_image() {
    if util::python().is_none() {
        return;
    }
    let dir = util::temp_dir();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let bimodal = |rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32, spread: f32| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let centre = if i % 3 == 0 { hi } else { lo };
                centre + (rng.random::<f32>() + rng.random::<f32>() - 1.0) * spread
            })
            .collect()
    };
    let u8_values: Vec<f32> = bimodal(&mut rng, 40_000, 40.0, 170.0, 60.0)
        .into_iter()
        .map(|v| v.round().clamp(0.0, 255.0))
        .collect();
    let u16_values: Vec<f32> = bimodal(&mut rng, 40_000, 900.0, 3000.0, 800.0)
        .into_iter()
        .map(|v| v.round().max(0.0))
        .collect();
    let cases = vec![
        ("otsu_u8", "uint8", u8_values),
        ("otsu_u8_sparse", "uint8", sparse_u8(&mut rng, 70_001)),
        ("otsu_u16", "uint16", u16_values),
        (
            "otsu_f32",
            "float32",
            bimodal(&mut rng, 40_000, 0.2, 0.7, 0.3),
        ),
        (
            "otsu_f32_wide",
            "float32",
            bimodal(&mut rng, 9_999, -300.0, 4000.0, 2000.0),
        ),
        (
            "otsu_f32_few",
            "float32",
            vec![0.5, 0.25, 0.75, 0.3, 0.9, 0.1, 0.95],
        ),
    ];
    let mut manifest = Vec::new();
    for (name, dtype, values) in &cases {
        let a = Array {
            dtype,
            shape: vec![values.len()],
            values: values.clone(),
        };
        let file = format!("{name}.bin");
        a.write(&dir.path().join(&file));
        manifest.push(
            json!({"kind": "otsu", "name": name, "file": file, "dtype": dtype,
                             "shape": [values.len()]}),
        );
    }
    let results = run_reference(dir.path(), &Value::from(manifest));
    for (name, _, values) in &cases {
        let ours = otsu_threshold(values).unwrap();
        let skimage = results[*name].as_f64().unwrap();
        assert_eq!(f64::from(ours), skimage, "{name}");
    }
}
