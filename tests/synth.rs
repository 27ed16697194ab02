//! Synthetic masks and the phantom dataset: statistics of generated masks against the
//! configured distributions, 3-class channel rules, determinism across thread counts, phantom
//! ground truth vs image, the Otsu calibration of the `retina` preset, and the CLI.

mod util;

use seglab::dataset::threshold::otsu_threshold;
use seglab::preset::Preset;
use seglab::synth::{
    FloatRange, IntRange, MaskConfig, ObjectKind, OffsetConfig, PhantomConfig, PhantomPreset,
    RotationConfig, generate_masks, render_phantom,
};
use seglab::volume::{AnyVolume, Volume};

/// Runs `f` on a rayon pool of `threads` threads.
fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// Dice of two binary slices.
fn dice(a: impl Iterator<Item = bool>, b: impl Iterator<Item = bool>) -> f64 {
    let (mut inter, mut sa, mut sb) = (0usize, 0usize, 0usize);
    for (x, y) in a.zip(b) {
        inter += usize::from(x && y);
        sa += usize::from(x);
        sb += usize::from(y);
    }
    2.0 * inter as f64 / (sa + sb).max(1) as f64
}

/// Number of voxels of the digital ellipsoid the generator draws: integer points with
/// Σ((v − c)/a)² ≤ 1 in a window of `size` (x, y, z).
fn digital_ellipsoid(centre: [f64; 3], axes: [f64; 3], size: [usize; 3]) -> usize {
    let mut n = 0;
    for z in 0..size[2] {
        for y in 0..size[1] {
            for x in 0..size[0] {
                let v = [x as f64, y as f64, z as f64];
                let s: f64 = (0..3).map(|d| ((v[d] - centre[d]) / axes[d]).powi(2)).sum();
                n += usize::from(s <= 1.0);
            }
        }
    }
    n
}

fn fully_inside(origin: [i64; 3], window: i64, shape: [usize; 3]) -> bool {
    origin[1] >= 0
        && origin[2] >= 0
        && origin[1] + window <= shape[1] as i64
        && origin[2] + window <= shape[2] as i64
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[test]
fn two_class_counts_and_shape_parameters_follow_the_code_distributions() {
    let config = MaskConfig::preset(Preset::Code, 2);
    // A thin volume keeps objects cheap; the distributions do not depend on depth.
    let shape = [16, 500, 500];
    let mut pairs = Vec::new();
    let (mut radii, mut ax, mut ay, mut az) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut angles = Vec::new();
    for seed in 0..16 {
        let out = generate_masks(&config, shape, seed).unwrap();
        let r = &out.report;
        assert!((45..=69).contains(&r.pairs), "pairs {}", r.pairs);
        assert_eq!(r.unplaced, 0, "seed {seed}");
        pairs.push(r.pairs as f64);
        for o in &r.objects {
            assert_eq!(o.kind, ObjectKind::Pair);
            radii.push(f64::from(o.golgi_radius.unwrap()));
            let [a, b, c] = o.nucleus_axes.unwrap();
            ax.push(f64::from(a));
            ay.push(f64::from(b));
            az.push(f64::from(c));
            angles.push(o.angle_degrees.unwrap());
            // pos ~ U(0.45, 0.55) rounded to 2 decimals, on every axis at once.
            let [oz, oy, ox] = o.offset.unwrap();
            let pos = 0.5 + ox / 127.0;
            assert!((0.45..=0.55).contains(&pos), "pos {pos}");
            assert!(
                ((pos * 100.0).round() - pos * 100.0).abs() < 1e-6,
                "pos {pos}"
            );
            assert!((oy - ox).abs() < 1e-9);
            assert!((oz - (pos - 0.5) * 15.0).abs() < 1e-9);
        }
    }
    // Uniform 45..=69: mean 57, sd 7.2 → sd of a 16-volume mean 1.8.
    assert!(
        (mean(&pairs) - 57.0).abs() < 6.0,
        "mean pairs {}",
        mean(&pairs)
    );
    let check = |name: &str, xs: &[f64], lo: f64, hi: f64| {
        let min = xs.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!((min, max), (lo, hi), "{name} range");
        // Uniform over n integers: the mean of ~900 draws is within 0.1·(hi − lo) of the middle.
        let m = mean(xs);
        assert!(
            (m - (lo + hi) / 2.0).abs() < 0.1 * (hi - lo),
            "{name} mean {m}"
        );
    };
    check("golgi radius", &radii, 5.0, 8.0);
    check("nucleus a", &ax, 17.0, 29.0);
    check("nucleus b", &ay, 8.0, 12.0);
    check("nucleus c", &az, 8.0, 12.0);
    check("angle", &angles, 0.0, 179.0);
}

#[test]
fn unwarped_objects_are_exactly_the_configured_digital_shapes() {
    let config = MaskConfig {
        pairs: IntRange::new(12, 12),
        elastic: seglab::synth::ElasticConfig {
            enabled: false,
            ..MaskConfig::default().elastic
        },
        rotation: RotationConfig::None,
        ..MaskConfig::preset(Preset::Code, 2)
    };
    let shape = [30, 400, 400];
    let mut checked = 0;
    for seed in 0..3 {
        let out = generate_masks(&config, shape, seed).unwrap();
        for o in out.report.objects.iter().filter(|o| o.placed) {
            if !fully_inside(o.window_origin, 128, shape) {
                continue;
            }
            let r = f64::from(o.golgi_radius.unwrap());
            let centre = [63.5, 63.5, 14.5];
            assert_eq!(
                o.golgi_voxels,
                digital_ellipsoid(centre, [r; 3], [128, 128, 30]),
                "golgi r = {r}"
            );
            let [a, b, c] = o.nucleus_axes.unwrap().map(f64::from);
            let [oz, oy, ox] = o.offset.unwrap();
            let nc = [63.5 + ox, 63.5 + oy, 14.5 + oz];
            assert_eq!(
                o.nucleus_voxels,
                digital_ellipsoid(nc, [a, b, c], [128, 128, 30]),
                "nucleus {a}×{b}×{c}"
            );
            // Without warp or rotation the centroids are offset by exactly `offset`.
            let (g, n) = (o.golgi_centroid.unwrap(), o.nucleus_centroid.unwrap());
            for (d, off) in [oz, oy, ox].iter().enumerate() {
                assert!(
                    (n[d] - g[d] - off).abs() < 0.5,
                    "axis {d}: {g:?} {n:?} {off}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} objects fully inside");
}

#[test]
fn warped_pairs_keep_their_size_and_offset_roughly() {
    let config = MaskConfig {
        pairs: IntRange::new(20, 20),
        ..MaskConfig::preset(Preset::Code, 2)
    };
    let shape = [56, 420, 420];
    let (mut ratios_g, mut ratios_n, mut offset_err) = (Vec::new(), Vec::new(), Vec::new());
    for seed in 0..3 {
        let out = generate_masks(&config, shape, seed).unwrap();
        for o in out.report.objects.iter().filter(|o| o.placed) {
            if !fully_inside(o.window_origin, 128, shape) {
                continue;
            }
            let r = f64::from(o.golgi_radius.unwrap());
            ratios_g.push(o.golgi_voxels as f64 / (4.0 / 3.0 * std::f64::consts::PI * r.powi(3)));
            let [a, b, c] = o.nucleus_axes.unwrap().map(f64::from);
            ratios_n.push(o.nucleus_voxels as f64 / (4.0 / 3.0 * std::f64::consts::PI * a * b * c));
            let (g, n) = (o.golgi_centroid.unwrap(), o.nucleus_centroid.unwrap());
            let measured = (0..3).map(|d| (n[d] - g[d]).powi(2)).sum::<f64>().sqrt();
            let off = o.offset.unwrap();
            let drawn = off.iter().map(|v| v * v).sum::<f64>().sqrt();
            offset_err.push((measured - drawn).abs());
        }
    }
    assert!(ratios_g.len() >= 10);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // The warp stretches and squeezes (by up to ~1/3 across an object) but keeps volume on
    // average; rotation keeps it exactly.
    let (mg, mn) = (median(&mut ratios_g), median(&mut ratios_n));
    assert!((0.8..1.25).contains(&mg), "golgi volume ratio {mg}");
    assert!((0.8..1.25).contains(&mn), "nucleus volume ratio {mn}");
    assert!(
        ratios_g
            .iter()
            .chain(&ratios_n)
            .all(|r| (0.3..3.0).contains(r))
    );
    // Rotation keeps the nucleus–Golgi distance; the smooth warp changes it by a few voxels.
    let e = median(&mut offset_err);
    assert!(e < 3.0, "median offset error {e}");
}

#[test]
fn three_class_channel_rules() {
    let config = MaskConfig {
        pairs: IntRange::new(25, 30),
        ..MaskConfig::preset(Preset::Code, 3)
    };
    let shape = [40, 360, 360];
    for seed in 0..3 {
        let out = generate_masks(&config, shape, seed).unwrap();
        let (m, r) = (&out.mask, &out.report);
        assert_eq!(m.channels(), 3);
        assert!((2..=5).contains(&r.isolated_golgi));
        assert!((1..=3).contains(&r.isolated_nuclei));
        let (g, n, p) = (m.channel(0), m.channel(1), m.channel(2));
        // The pair channel lies within golgi ∪ nuclei and holds every paired voxel.
        assert!(
            p.iter()
                .zip(g.iter().zip(n))
                .all(|(&p, (&g, &n))| p <= (g | n))
        );
        let outside_pairs = g
            .iter()
            .zip(n)
            .zip(p)
            .filter(|&((&g, &n), &p)| (g | n) == 1 && p == 0)
            .count();
        let isolated: usize = r
            .objects
            .iter()
            .filter(|o| o.kind != ObjectKind::Pair)
            .map(|o| o.golgi_voxels + o.nucleus_voxels)
            .sum();
        assert!(
            outside_pairs > 0,
            "isolated objects must be outside the pair channel"
        );
        assert!(outside_pairs <= isolated);
        // Isolated objects are neither warped nor rotated: exact digital shapes.
        for o in r
            .objects
            .iter()
            .filter(|o| o.kind != ObjectKind::Pair && o.placed)
        {
            assert!(o.alpha.is_none() && o.angle_degrees.is_none());
            if o.kind == ObjectKind::IsolatedGolgi && fully_inside(o.window_origin, 128, shape) {
                let rad = f64::from(o.golgi_radius.unwrap());
                assert_eq!(
                    o.golgi_voxels,
                    digital_ellipsoid([63.5, 63.5, 19.5], [rad; 3], [128, 128, 40])
                );
            }
        }
    }
    // Without isolated objects the pair channel is exactly golgi ∪ nuclei.
    let none = MaskConfig {
        isolated_golgi: IntRange::fixed(0),
        isolated_nuclei: IntRange::fixed(0),
        ..config
    };
    let m = generate_masks(&none, shape, 4).unwrap().mask;
    let (g, n, p) = (m.channel(0), m.channel(1), m.channel(2));
    assert!(
        p.iter()
            .zip(g.iter().zip(n))
            .all(|(&p, (&g, &n))| p == (g | n))
    );
}

#[test]
fn thesis_preset_uses_the_stated_intervals() {
    let c = MaskConfig::preset(Preset::Thesis, 2);
    let out = generate_masks(&c, [24, 500, 500], 1).unwrap();
    assert!((40..=90).contains(&out.report.pairs));
    for o in &out.report.objects {
        assert!((5..=9).contains(&o.golgi_radius.unwrap()));
        let [a, b, cc] = o.nucleus_axes.unwrap();
        assert!((17..=30).contains(&a) && (8..=13).contains(&b) && (8..=13).contains(&cc));
        let [_, _, ox] = o.offset.unwrap();
        assert!((-6.0..=6.0).contains(&ox));
        assert!(o.angle_degrees.unwrap() <= 180.0);
    }
    assert!(
        matches!(c.offset, OffsetConfig::Voxels { distance } if distance == FloatRange::new(-6.0, 6.0))
    );
}

#[test]
fn masks_are_identical_for_one_and_two_threads() {
    for (classes, rotation) in [
        (
            2,
            RotationConfig::Z {
                degrees: IntRange::new(0, 179),
            },
        ),
        (3, RotationConfig::Full),
    ] {
        let config = MaskConfig {
            pairs: IntRange::new(20, 30),
            rotation,
            ..MaskConfig::preset(Preset::Code, classes)
        };
        let a = with_threads(1, || generate_masks(&config, [32, 300, 280], 42).unwrap());
        let b = with_threads(2, || generate_masks(&config, [32, 300, 280], 42).unwrap());
        assert!(a.mask == b.mask, "{classes}-class masks differ");
        assert_eq!(a.report, b.report);
    }
}

#[test]
fn full_rotation_tilts_nuclei_out_of_the_xy_plane() {
    // With rotation about Z only, a nucleus never reaches beyond its semi-axis c in z; full 3-D
    // rotation lets the long axis tilt, so nuclei span more slices. One nucleus per volume, so
    // the occupied slices are that nucleus' z extent.
    let base = MaskConfig {
        pairs: IntRange::new(1, 1),
        elastic: seglab::synth::ElasticConfig {
            enabled: false,
            ..MaskConfig::default().elastic
        },
        ..MaskConfig::preset(Preset::Code, 1)
    };
    let depth_span = |m: &Volume<u8>| {
        let plane = m.spatial()[1] * m.spatial()[2];
        (0..m.spatial()[0])
            .filter(|&z| m.channel(0)[z * plane..(z + 1) * plane].contains(&1))
            .count()
    };
    let full_config = MaskConfig {
        rotation: RotationConfig::Full,
        ..base.clone()
    };
    let (mut z_only, mut full) = (Vec::new(), Vec::new());
    for seed in 0..6 {
        z_only.push(depth_span(
            &generate_masks(&base, [64, 160, 160], seed).unwrap().mask,
        ));
        full.push(depth_span(
            &generate_masks(&full_config, [64, 160, 160], seed)
                .unwrap()
                .mask,
        ));
    }
    assert!(z_only.iter().all(|&s| s > 0 && s <= 25), "{z_only:?}");
    assert!(
        full.iter().max() > z_only.iter().max(),
        "full {full:?} vs about z {z_only:?}"
    );
}

fn image_channel(image: &AnyVolume, c: usize) -> Vec<f32> {
    image.to_f32().channel(c).to_vec()
}

#[test]
fn phantom_ground_truth_agrees_with_the_image() {
    let config = PhantomConfig::preset(PhantomPreset::Retina);
    let p = render_phantom(&config, [32, 128, 128], 5).unwrap();
    assert_eq!(p.image.shape(), [2, 32, 128, 128]);
    assert!(matches!(p.image, AnyVolume::U8(_)));
    assert_eq!(p.mask.shape(), [3, 32, 128, 128]);
    assert!(p.report.nuclei > 0 && !p.report.dust.is_empty());
    // Objects are brighter than background on average, in both channels.
    for (c, name) in [(0, "golgi"), (1, "nuclei")] {
        let img = image_channel(&p.image, c);
        let m = p.mask.channel(c);
        let (mut inside, mut ni, mut outside, mut no) = (0.0, 0, 0.0, 0);
        for (&v, &k) in img.iter().zip(m) {
            if k != 0 {
                inside += f64::from(v);
                ni += 1;
            } else {
                outside += f64::from(v);
                no += 1;
            }
        }
        let (inside, outside) = (inside / ni as f64, outside / no as f64);
        assert!(inside > 1.5 * outside, "{name}: {inside} vs {outside}");
    }
    // Dust is bright in the Golgi image but absent from the Golgi mask.
    let golgi_img = image_channel(&p.image, 0);
    let [nz, ny, nx] = [32usize, 128, 128];
    let mut background: Vec<f32> = golgi_img
        .iter()
        .zip(p.mask.channel(0))
        .filter(|&(_, &m)| m == 0)
        .map(|(&v, _)| v)
        .collect();
    background.sort_by(f32::total_cmp);
    let median_bg = background[background.len() / 2];
    let mut bright = 0;
    for &(c, r) in &p.report.dust {
        let mut peak = 0f32;
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let d2 = (z as f64 - c[0]).powi(2)
                        + (y as f64 - c[1]).powi(2)
                        + (x as f64 - c[2]).powi(2);
                    if d2 <= (r + 1.0) * (r + 1.0) {
                        let i = (z * ny + y) * nx + x;
                        assert_eq!(
                            p.mask.channel(0)[i],
                            0,
                            "dust at {c:?} is in the Golgi mask"
                        );
                        peak = peak.max(golgi_img[i]);
                    }
                }
            }
        }
        bright += usize::from(peak > 3.0 * median_bg);
    }
    assert!(
        bright * 2 > p.report.dust.len(),
        "{bright} of {} dust blobs stand out",
        p.report.dust.len()
    );
    // The pair channel is the paired nuclei and their Golgi: inside golgi ∪ nuclei.
    let (g, n, pr) = (p.mask.channel(0), p.mask.channel(1), p.mask.channel(2));
    assert!(
        pr.iter()
            .zip(g.iter().zip(n))
            .all(|(&p, (&g, &n))| p <= (g | n))
    );
    // Golgi never lies inside a nucleus.
    assert!(g.iter().zip(n).all(|(&g, &n)| g & n == 0));
}

/// Otsu Dice per channel (golgi, nuclei) of a phantom volume.
fn otsu_dice(p: &seglab::synth::Phantom) -> [f64; 2] {
    std::array::from_fn(|c| {
        let img = image_channel(&p.image, c);
        let t = otsu_threshold(&img).unwrap();
        dice(
            img.iter().map(|&v| v > t),
            p.mask.channel(c).iter().map(|&m| m != 0),
        )
    })
}

#[test]
fn retina_preset_is_calibrated_to_real_data_difficulty() {
    // docs/design.md §6: a per-channel Otsu threshold should score a Dice of roughly 0.55–0.75 on
    // nuclei and 0.3–0.5 on Golgi. One volume varies a lot (Golgi 0.40–0.62), so the mean is
    // taken over six.
    let config = PhantomConfig::preset(PhantomPreset::Retina);
    let mut golgi = Vec::new();
    let mut nuclei = Vec::new();
    for seed in 0..6 {
        let p = render_phantom(&config, [48, 192, 192], seed).unwrap();
        let [g, n] = otsu_dice(&p);
        golgi.push(g);
        nuclei.push(n);
    }
    let (g, n) = (mean(&golgi), mean(&nuclei));
    assert!((0.55..=0.75).contains(&n), "nuclei Otsu Dice {nuclei:?}");
    assert!((0.30..=0.50).contains(&g), "golgi Otsu Dice {golgi:?}");
}

#[test]
fn easy_preset_is_nearly_separable_by_a_threshold() {
    let p = render_phantom(
        &PhantomConfig::preset(PhantomPreset::Easy),
        [32, 128, 128],
        3,
    )
    .unwrap();
    let [g, n] = otsu_dice(&p);
    assert!(n > 0.85, "nuclei {n}");
    assert!(g > 0.7, "golgi {g}");
}

#[test]
fn phantom_is_identical_for_one_and_two_threads() {
    let config = PhantomConfig::preset(PhantomPreset::Retina);
    let a = with_threads(1, || render_phantom(&config, [24, 96, 100], 8).unwrap());
    let b = with_threads(2, || render_phantom(&config, [24, 96, 100], 8).unwrap());
    assert!(a.image == b.image);
    assert!(a.mask == b.mask);
    assert_eq!(a.report, b.report);
    let c = render_phantom(&config, [24, 96, 100], 9).unwrap();
    assert!(a.image != c.image);
}

#[test]
fn phantom_u16_output() {
    let config = PhantomConfig {
        sample_type: seglab::volume::DType::U16,
        ..PhantomConfig::preset(PhantomPreset::Easy)
    };
    let p = render_phantom(&config, [8, 48, 48], 1).unwrap();
    assert!(matches!(p.image, AnyVolume::U16(_)));
}

// ---------------------------------------------------------------------------------------------
// Command line.

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn cli_print_config_round_trips_and_bad_values_name_the_field() {
    let out = util::run_seglab(&[
        "synth",
        "masks",
        "--classes",
        "3",
        "--preset",
        "thesis",
        "--print-config",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed: MaskConfig = toml::from_str(&text).unwrap();
    assert_eq!(parsed, MaskConfig::preset(Preset::Thesis, 3));

    let dir = util::temp_dir();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "golgi_radius = { min = 9, max = 5 }\n").unwrap();
    let out = util::run_seglab(&[
        "synth",
        "masks",
        "--shape",
        "8x32x32",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.path().join("m.tif").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("golgi_radius.min must be ≤ max, got 9 > 5"),
        "{err}"
    );
    assert!(err.contains("bad.toml"), "{err}");
    assert!(!dir.path().join("m.tif").exists());

    std::fs::write(&cfg, "pairz = 3\n").unwrap();
    let out = util::run_seglab(&[
        "synth",
        "phantom",
        "--config",
        cfg.to_str().unwrap(),
        "--print-config",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("pairz"), "{}", stderr(&out));

    let out = util::run_seglab(&["synth", "masks", "--shape", "8x32", "--out", "x.tif"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Z x Y x X"), "{}", stderr(&out));
}

#[test]
fn cli_help_lines_fit_79_columns() {
    for args in [
        vec!["synth", "--help"],
        vec!["synth", "masks", "--help"],
        vec!["synth", "phantom", "--help"],
        vec!["synth", "preview", "--help"],
    ] {
        let out = util::seglab()
            .args(&args)
            .env("COLUMNS", "79")
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        for line in text.lines() {
            assert!(line.chars().count() <= 79, "{args:?}: `{line}`");
        }
    }
}

#[test]
fn cli_masks_phantom_and_preview_end_to_end() {
    let dir = util::temp_dir();
    let d = dir.path();
    let path = |p: &str| d.join(p).to_str().unwrap().to_owned();

    // One mask file.
    let out = util::run_seglab(&[
        "synth",
        "masks",
        "--shape",
        "20x96x96",
        "--classes",
        "3",
        "--seed",
        "7",
        "--out",
        &path("m.tif"),
        "--report",
        &path("m.json"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mask = seglab::volume::read_tiff(&d.join("m.tif")).unwrap();
    assert_eq!(mask.shape(), [3, 20, 96, 96]);
    let expected = generate_masks(&MaskConfig::preset(Preset::Code, 3), [20, 96, 96], 7).unwrap();
    assert!(
        mask.to_binary() == expected.mask,
        "file differs from the library's mask"
    );
    assert!(d.join("m.json").exists());

    // A phantom dataset, then masks like it.
    let out = util::run_seglab(&[
        "synth",
        "phantom",
        "--preset",
        "easy",
        "--volumes",
        "2",
        "--shape",
        "12x64x64",
        "--seed",
        "1",
        "--out",
        &path("ph"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let spec: seglab::dataset::DatasetSpec =
        toml::from_str(&std::fs::read_to_string(d.join("ph/dataset.toml")).unwrap()).unwrap();
    assert_eq!(spec.volumes.len(), 2);
    assert_eq!(spec.image_channels, ["golgi", "nuclei"]);
    assert_eq!(spec.mask_channels, ["golgi", "nuclei", "pair"]);
    let readme = std::fs::read_to_string(d.join("ph/README.md")).unwrap();
    assert!(readme.contains("Image-formation model") && readme.contains("28 h"));
    for v in &spec.volumes {
        let img = seglab::volume::read_tiff(&d.join("ph").join(&v.image)).unwrap();
        assert_eq!(img.shape(), [2, 12, 64, 64]);
        let m = seglab::volume::read_tiff(&d.join("ph").join(v.mask.as_ref().unwrap())).unwrap();
        assert_eq!(m.shape(), [3, 12, 64, 64]);
    }
    // Refuses to overwrite without --force.
    let again = util::run_seglab(&[
        "synth",
        "phantom",
        "--preset",
        "easy",
        "--volumes",
        "1",
        "--shape",
        "8x32x32",
        "--out",
        &path("ph"),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));

    let out = util::run_seglab(&[
        "synth",
        "masks",
        "--like",
        &path("ph"),
        "--out",
        &path("sm"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sm: seglab::dataset::DatasetSpec =
        toml::from_str(&std::fs::read_to_string(d.join("sm/dataset.toml")).unwrap()).unwrap();
    assert_eq!(sm.mask_channels, ["golgi", "nuclei"]);
    for (v, real) in sm.volumes.iter().zip(&spec.volumes) {
        let m = seglab::volume::read_tiff(&d.join("sm").join(v.mask.as_ref().unwrap())).unwrap();
        assert_eq!(m.shape(), [2, 12, 64, 64]);
        // The image entry points back at the real volume.
        assert_eq!(
            std::fs::canonicalize(d.join("sm").join(&v.image)).unwrap(),
            std::fs::canonicalize(d.join("ph").join(&real.image)).unwrap()
        );
    }

    // Previews of a dataset folder and of a single mask file.
    for (input, png) in [(path("ph"), path("ph.png")), (path("m.tif"), path("m.png"))] {
        let out = util::run_seglab(&["synth", "preview", &input, "--out", &png]);
        assert!(out.status.success(), "{}", stderr(&out));
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
