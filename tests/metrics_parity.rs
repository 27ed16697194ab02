//! Parity of `seglab::metrics` with SciPy / scikit-image (tests/python/metrics_reference.py):
//! connected components (6, 18, 26), sizes and label images, the Euclidean distance
//! transform with anisotropic spacing, HD95 and ASSD, voxel metrics and object matching, on
//! synthetic masks (random blobs and edge cases) and on the real qcanet-embryo nuclei masks.
//! Counts and labels must agree exactly, real numbers to 1e-6.

mod util;

use std::path::Path;

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;

use seglab::metrics::components::{Labels, label};
use seglab::metrics::edt::distance_transform;
use seglab::metrics::matching::match_objects;
use seglab::metrics::surface::surface_distances;
use seglab::metrics::{Connectivity, Counts, EmptyPolicy, EvalConfig, ObjectMatching, evaluate};
use seglab::volume::Volume;

/// Real numbers (distances, ratios) must agree to this.
const TOL: f64 = 1e-6;

struct Case {
    name: String,
    shape: [usize; 3],
    spacing: [f64; 3],
    pred: Vec<u8>,
    gt: Vec<u8>,
}

fn idx(shape: [usize; 3], z: usize, y: usize, x: usize) -> usize {
    (z * shape[1] + y) * shape[2] + x
}

/// Paints ellipsoids (centre z, y, x and radii in voxels) into a mask.
fn paint(shape: [usize; 3], blobs: &[[f64; 6]]) -> Vec<u8> {
    let mut m = vec![0u8; shape.iter().product()];
    for b in blobs {
        let lo = |a: usize| (b[a] - b[a + 3]).floor().max(0.0) as usize;
        let hi = |a: usize| ((b[a] + b[a + 3]).ceil() as usize + 1).min(shape[a]);
        for z in lo(0)..hi(0) {
            for y in lo(1)..hi(1) {
                for x in lo(2)..hi(2) {
                    let d = [z as f64, y as f64, x as f64];
                    let r: f64 = (0..3).map(|a| ((d[a] - b[a]) / b[a + 3]).powi(2)).sum();
                    if r <= 1.0 {
                        m[idx(shape, z, y, x)] = 1;
                    }
                }
            }
        }
    }
    m
}

/// A reference mask of random blobs and a prediction that jitters, drops and adds blobs and
/// sprinkles single voxels (objects below any size threshold).
fn blob_case(name: &str, shape: [usize; 3], spacing: [f64; 3], n: usize, seed: u64) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let blob = |rng: &mut ChaCha8Rng| -> [f64; 6] {
        let c: [f64; 3] = std::array::from_fn(|a| rng.random_range(0.0..shape[a] as f64));
        let r: [f64; 3] =
            std::array::from_fn(|a| rng.random_range(1.0..(shape[a] as f64 / 4.0).max(1.5)));
        [c[0], c[1], c[2], r[0], r[1], r[2]]
    };
    let reference: Vec<[f64; 6]> = (0..n).map(|_| blob(&mut rng)).collect();
    let mut predicted = Vec::new();
    for b in &reference {
        if rng.random_bool(0.15) {
            continue;
        }
        let mut p = *b;
        for a in 0..3 {
            p[a] += rng.random_range(-1.5..1.5);
            p[a + 3] *= rng.random_range(0.8..1.2);
        }
        predicted.push(p);
    }
    for _ in 0..2 {
        predicted.push(blob(&mut rng));
    }
    let gt = paint(shape, &reference);
    let mut pred = paint(shape, &predicted);
    for v in pred.iter_mut() {
        if rng.random_bool(0.003) {
            *v = 1;
        }
    }
    Case {
        name: name.into(),
        shape,
        spacing,
        pred,
        gt,
    }
}

fn synthetic_cases() -> Vec<Case> {
    let mut cases = vec![
        blob_case("blobs_iso", [20, 36, 40], [1.0, 1.0, 1.0], 12, 1),
        blob_case("blobs_aniso", [16, 48, 44], [2.18, 1.0, 1.0], 16, 2),
        blob_case("blobs_odd_spacing", [12, 30, 50], [0.5, 0.3, 0.2], 25, 3),
        blob_case("blobs_large", [24, 64, 64], [1.0, 0.4, 0.4], 30, 4),
    ];
    // Salt noise: many small objects that differ between 6, 18 and 26 neighbours.
    let shape = [10, 12, 14];
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut noise = |p: f64| -> Vec<u8> {
        (0..shape.iter().product::<usize>())
            .map(|_| u8::from(rng.random_bool(p)))
            .collect()
    };
    cases.push(Case {
        name: "noise".into(),
        shape,
        spacing: [1.5, 0.7, 0.9],
        pred: noise(0.3),
        gt: noise(0.25),
    });
    // Edge cases.
    let shape = [5, 6, 7];
    let n: usize = shape.iter().product();
    let blob = paint(shape, &[[2.0, 2.5, 3.0, 2.0, 2.0, 2.5]]);
    let single = |z, y, x| {
        let mut m = vec![0u8; n];
        m[idx(shape, z, y, x)] = 1;
        m
    };
    let edge = |name: &str, pred: Vec<u8>, gt: Vec<u8>| Case {
        name: name.into(),
        shape,
        spacing: [2.0, 1.0, 0.5],
        pred,
        gt,
    };
    cases.push(edge("empty_both", vec![0; n], vec![0; n]));
    cases.push(edge("empty_pred", vec![0; n], blob.clone()));
    cases.push(edge("empty_gt", blob.clone(), vec![0; n]));
    cases.push(edge(
        "single_voxel_corners",
        single(0, 0, 0),
        single(4, 5, 6),
    ));
    cases.push(edge("single_voxel_same", single(2, 3, 4), single(2, 3, 4)));
    // Objects touching the border: a full first z slice, a column along y at the last x, and
    // a blob cut by the x = 0 face; the prediction is the same shifted by one voxel in z.
    let mut border = vec![0u8; n];
    for y in 0..6 {
        for x in 0..7 {
            border[idx(shape, 0, y, x)] = 1;
        }
    }
    for z in 0..5 {
        for y in 0..6 {
            border[idx(shape, z, y, 6)] = 1;
        }
    }
    for (i, v) in paint(shape, &[[3.0, 3.0, 0.0, 1.5, 2.0, 2.0]])
        .iter()
        .enumerate()
    {
        border[i] |= v;
    }
    let mut shifted = vec![0u8; n];
    shifted[shape[1] * shape[2]..].copy_from_slice(&border[..n - shape[1] * shape[2]]);
    cases.push(edge("border", shifted, border));
    // Everything foreground in the reference (no background: SciPy's EDT is not compared).
    cases.push(edge("full_gt", blob, vec![1; n]));
    // Diagonal chains: joined only by 18 (edges) or 26 (corners) connectivity.
    let mut diag = vec![0u8; n];
    for i in 0..5 {
        diag[idx(shape, i, i, i)] = 1; // corner-connected
        diag[idx(shape, i, 5 - i, 0)] = 1; // edge-connected (z, y)
    }
    cases.push(edge("diagonals", diag.clone(), single(0, 0, 0)));
    cases.push(edge("diagonals_gt", single(0, 0, 0), diag));
    cases
}

fn write_raw(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Writes the cases, runs the Python reference and returns its JSON.
fn reference(python: &Path, dir: &Path, cases: &[Case]) -> Value {
    let manifest: Vec<Value> = cases
        .iter()
        .map(|c| {
            write_raw(&dir.join(format!("{}_pred.raw", c.name)), &c.pred);
            write_raw(&dir.join(format!("{}_gt.raw", c.name)), &c.gt);
            serde_json::json!({
                "name": c.name,
                "shape": c.shape,
                "spacing": c.spacing,
                "pred": format!("{}_pred.raw", c.name),
                "gt": format!("{}_gt.raw", c.name),
            })
        })
        .collect();
    std::fs::write(
        dir.join("cases.json"),
        serde_json::to_string(&manifest).unwrap(),
    )
    .unwrap();
    util::run_python(
        python,
        "metrics_reference.py",
        &["reference", dir.to_str().unwrap()],
    );
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// NaN on our side must be null on theirs; numbers must agree to `tol`.
fn assert_close(what: &str, ours: f64, theirs: &Value, tol: f64) {
    match theirs.as_f64() {
        None => assert!(
            ours.is_nan() && theirs.is_null(),
            "{what}: ours {ours}, reference {theirs}"
        ),
        Some(t) => assert!(
            (ours - t).abs() <= tol,
            "{what}: ours {ours}, reference {t}"
        ),
    }
}

fn read_i32(path: &Path) -> Vec<u32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|b| u32::try_from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])).unwrap())
        .collect()
}

fn read_f64(path: &Path) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn conn(k: &str) -> Connectivity {
    k.parse().unwrap()
}

/// Compares every metric of one case with the reference.
fn check_case(dir: &Path, case: &Case, r: &Value) {
    let name = &case.name;
    let (shape, spacing) = (case.shape, case.spacing);

    // Voxel metrics.
    let v = &r["voxel"];
    let counts = Counts::of(&case.pred, &case.gt);
    assert_eq!(
        [counts.tp, counts.fp, counts.fn_, counts.tn],
        ["tp", "fp", "fn", "tn"].map(|k| v[k].as_u64().unwrap()),
        "{name}: confusion counts"
    );
    let m = counts.metrics(0.0, EmptyPolicy::Nan);
    for (k, ours) in [
        ("dice", m.dice),
        ("iou", m.iou),
        ("precision", m.precision),
        ("recall", m.recall),
        ("specificity", m.specificity),
    ] {
        assert_close(&format!("{name}: {k}"), ours, &v[k], TOL);
    }
    assert_close(
        &format!("{name}: smoothed dice"),
        counts.metrics(1.0, EmptyPolicy::Nan).dice,
        &v["dice_smoothed"],
        TOL,
    );

    // Connected components: counts, sizes and the label images themselves.
    let mut labels: Vec<(String, Labels, Labels)> = Vec::new();
    for k in ["6", "18", "26"] {
        let lp = label(&case.pred, shape, conn(k));
        let lg = label(&case.gt, shape, conn(k));
        for (which, l) in [("pred", &lp), ("gt", &lg)] {
            let rr = &r["labels"][k][which];
            assert_eq!(
                l.count() as u64,
                rr["count"].as_u64().unwrap(),
                "{name}: {which} count, {k}-conn"
            );
            let sizes: Vec<u64> = rr["sizes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_u64().unwrap())
                .collect();
            assert_eq!(l.sizes(), &sizes[..], "{name}: {which} sizes, {k}-conn");
            let img = read_i32(&dir.join(format!("{name}_{which}_labels{k}.raw")));
            assert!(
                l.to_label_image() == img,
                "{name}: {which} label image, {k}-conn"
            );
        }
        labels.push((k.to_string(), lp, lg));
    }

    // Distance transform of the reference mask (SciPy's is meaningless without background).
    let has_background = case.gt.contains(&0);
    assert_eq!(
        r["edt"].is_string(),
        has_background,
        "{name}: EDT reference"
    );
    if let Some(file) = r["edt"].as_str() {
        let theirs = read_f64(&dir.join(file));
        let ours = distance_transform(&case.gt, shape, spacing);
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst <= TOL, "{name}: EDT differs by up to {worst}");
    }

    // Surface distances.
    let s = surface_distances(&case.pred, &case.gt, shape, spacing);
    assert_close(&format!("{name}: hd95"), s.hd95, &r["surface"]["hd95"], TOL);
    assert_close(&format!("{name}: assd"), s.assd, &r["surface"]["assd"], TOL);

    // Object matching: the maximum matching of the reference equals our greedy one.
    for (k, lp, lg) in &labels {
        for min in ["1", "50"] {
            let o = &r["objects"][k][min];
            let (fp, fg) = (
                lp.without_smaller_than(min.parse().unwrap()),
                lg.without_smaller_than(min.parse().unwrap()),
            );
            let what = format!("{name}: objects, {k}-conn, min size {min}");
            assert_eq!(
                fp.count() as u64,
                o["n_pred"].as_u64().unwrap(),
                "{what}: n_pred"
            );
            assert_eq!(
                fg.count() as u64,
                o["n_ref"].as_u64().unwrap(),
                "{what}: n_ref"
            );
            let iou = match_objects(&fp, &fg, ObjectMatching::Iou, 0.5);
            let pairs: Vec<[u64; 2]> = iou
                .matches
                .iter()
                .map(|m| [u64::from(m.pred), u64::from(m.reference)])
                .collect();
            let mut pairs = pairs;
            pairs.sort();
            let theirs: Vec<[u64; 2]> = o["iou_pairs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| [p[0].as_u64().unwrap(), p[1].as_u64().unwrap()])
                .collect();
            assert_eq!(pairs, theirs, "{what}: IoU pairs");
            let ov = match_objects(&fp, &fg, ObjectMatching::Overlap50, 0.5);
            assert_eq!(
                ov.matches.len() as u64,
                o["tp_overlap50"].as_u64().unwrap(),
                "{what}: overlap50 TP"
            );
        }
    }

    // The assembled path: `evaluate` on one channel gives the same numbers.
    let vol = |d: &[u8]| Volume::from_vec([1, shape[0], shape[1], shape[2]], d.to_vec()).unwrap();
    let config = EvalConfig {
        spacing: Some(spacing),
        ..EvalConfig::default()
    };
    let e = evaluate(&vol(&case.pred), &vol(&case.gt), &["c"], &config).unwrap();
    let c = &e.classes[0].1;
    assert_close(
        &format!("{name}: evaluate dice"),
        c.voxel.dice,
        &v["dice"],
        TOL,
    );
    assert_close(
        &format!("{name}: evaluate hd95"),
        c.hd95.unwrap(),
        &r["surface"]["hd95"],
        TOL,
    );
    assert_close(
        &format!("{name}: evaluate assd"),
        c.assd.unwrap(),
        &r["surface"]["assd"],
        TOL,
    );
    let o = c.objects.as_ref().unwrap();
    assert_eq!(
        o.tp,
        r["objects"]["26"]["50"]["tp_iou"].as_u64().unwrap(),
        "{name}: evaluate object TP"
    );
}

#[test]
fn synthetic_masks_match_scipy() {
    let Some(python) = util::python() else {
        return;
    };
    let dir = util::temp_dir();
    let cases = synthetic_cases();
    let r = reference(&python, dir.path(), &cases);
    for case in &cases {
        check_case(dir.path(), case, &r[&case.name]);
    }
    // The cases exercise what they are meant to: connectivity changes the noise counts,
    // blobs produce matches and misses, small objects are removed.
    let count = |case: &str, k: &str| r[case]["labels"][k]["pred"]["count"].as_u64().unwrap();
    assert!(
        count("noise", "6") > count("noise", "18") && count("noise", "18") > count("noise", "26")
    );
    assert!(count("diagonals", "6") > count("diagonals", "26"));
    let o = &r["blobs_large"]["objects"]["26"]["1"];
    let (tp, n_ref) = (o["tp_iou"].as_u64().unwrap(), o["n_ref"].as_u64().unwrap());
    assert!(tp > 0 && tp < n_ref, "blobs_large: {tp} of {n_ref} matched");
    let removed = &r["blobs_iso"]["objects"]["26"];
    assert!(removed["50"]["n_pred"].as_u64() < removed["1"]["n_pred"].as_u64());
}

/// Reads a real mask through the reference script (raw uint8 0/1) and its shape.
fn real_mask(python: &Path, tif: &Path, out: &Path) -> ([usize; 3], Vec<u8>) {
    let o = util::run_python(
        python,
        "metrics_reference.py",
        &["convert", tif.to_str().unwrap(), out.to_str().unwrap()],
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let s: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    ([s[0], s[1], s[2]], std::fs::read(out).unwrap())
}

#[test]
fn real_masks_match_scipy() {
    let Some(python) = util::python() else {
        return;
    };
    let (Some(t8), Some(t16)) = (
        util::shared_data("qcanet-embryo/masks/embryo-8cell.tif"),
        util::shared_data("qcanet-embryo/masks/embryo-16cell.tif"),
    ) else {
        return;
    };
    let dir = util::temp_dir();
    let (s8, m8) = real_mask(&python, &t8, &dir.path().join("real8.raw"));
    let (s16, m16) = real_mask(&python, &t16, &dir.path().join("real16.raw"));
    assert_eq!(s8, s16);
    let shape = s8;
    // The README's component counts, under every connectivity.
    for c in Connectivity::ALL {
        assert_eq!(
            label(&m8, shape, c).count(),
            8,
            "8-cell embryo, {c}-connected"
        );
        assert_eq!(
            label(&m16, shape, c).count(),
            16,
            "16-cell embryo, {c}-connected"
        );
    }
    // A shifted copy of the 16-cell mask: a near-perfect prediction.
    let mut shifted = vec![0u8; m16.len()];
    let (dz, dy, dx) = (0isize, 1isize, -1isize);
    for z in 0..shape[0] {
        for y in 0..shape[1] {
            for x in 0..shape[2] {
                let (sz, sy, sx) = (z as isize - dz, y as isize - dy, x as isize - dx);
                if sz >= 0
                    && sy >= 0
                    && sx >= 0
                    && (sz as usize) < shape[0]
                    && (sy as usize) < shape[1]
                    && (sx as usize) < shape[2]
                {
                    shifted[idx(shape, z, y, x)] =
                        m16[idx(shape, sz as usize, sy as usize, sx as usize)];
                }
            }
        }
    }
    let spacing = [2.18, 1.0, 1.0];
    let cases = vec![
        Case {
            name: "real_8_vs_16".into(),
            shape,
            spacing,
            pred: m8.clone(),
            gt: m16.clone(),
        },
        Case {
            name: "real_16_shifted".into(),
            shape,
            spacing,
            pred: shifted,
            gt: m16,
        },
    ];
    let r = reference(&python, dir.path(), &cases);
    for case in &cases {
        check_case(dir.path(), case, &r[&case.name]);
    }
    // The shifted prediction finds every nucleus.
    let o = &r["real_16_shifted"]["objects"]["26"]["50"];
    assert_eq!(o["tp_iou"].as_u64(), Some(16));
}
