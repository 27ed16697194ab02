//! Reproducing the published tables: the phantom in the published layout (`synth phantom
//! --preset published`), `data import --layout published` and its checks, and every spec of
//! `experiments/thesis/` planned and run end to end at a tiny budget through `--set` and
//! `--dataset`, its report holding the published table beside the measured one.

mod util;
use util::text;

use std::path::{Path, PathBuf};
use std::process::Output;

use seglab::dataset::published::{CROPS, scaled_shape};
use seglab::report::published;

/// The smallest scale at which every crop keeps Y and X ≥ 32 (Crop4: 257 × 0.125 = 32).
const SCALE: &str = "0.125";

fn ok(args: &[&str]) -> Output {
    let o = util::run_seglab(args);
    assert!(
        o.status.success(),
        "seglab {}: {}",
        args.join(" "),
        text(&o)
    );
    o
}

/// The published-layout phantom at [`SCALE`] in `<dir>/raw`, imported to `<dir>/crops`.
fn imported_phantom(dir: &Path) -> (PathBuf, PathBuf) {
    let raw = dir.join("raw");
    let crops = dir.join("crops");
    ok(&[
        "synth",
        "phantom",
        "--preset",
        "published",
        "--scale",
        SCALE,
        "--seed",
        "3",
        "--out",
        raw.to_str().unwrap(),
    ]);
    ok(&[
        "data",
        "import",
        raw.to_str().unwrap(),
        "--out",
        crops.to_str().unwrap(),
        "--layout",
        "published",
    ]);
    (raw, crops)
}

#[test]
fn the_published_layout_imports_and_round_trips() {
    let dir = util::temp_dir();
    let (raw, crops) = imported_phantom(dir.path());
    let scale: f64 = SCALE.parse().unwrap();

    // The phantom's files are RGB stacks named and shaped like the published crops.
    for c in &CROPS {
        let [z, y, x] = scaled_shape(c, scale);
        for folder in ["Images", "Masks"] {
            let file = raw.join(folder).join(format!("{}.tif", c.name));
            let o = ok(&["inspect", "--json", file.to_str().unwrap()]);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(
                v["shape"],
                serde_json::json!([3, z, y, x]),
                "{}",
                file.display()
            );
        }
    }

    // The import lists every crop with the published channels and split presets.
    let o = ok(&["data", "info", crops.to_str().unwrap(), "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        info["image_channels"],
        serde_json::json!(["golgi", "nuclei"])
    );
    assert_eq!(
        info["mask_channels"],
        serde_json::json!(["golgi", "nuclei", "pair"])
    );
    let volumes = info["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 8);
    let mut foreground = [0.0; 3];
    for (v, c) in volumes.iter().zip(&CROPS) {
        let [z, y, x] = scaled_shape(c, scale);
        assert_eq!(v["id"], c.name);
        assert_eq!(v["shape"], serde_json::json!([2, z, y, x]));
        for (i, f) in v["foreground"].as_array().unwrap().iter().enumerate() {
            foreground[i] += f[1].as_f64().unwrap();
        }
        // Every crop holds nuclei; a crop this small may hold no Golgi.
        assert!(v["foreground"][1][1].as_f64().unwrap() > 0.0, "{v}");
    }
    assert!(foreground.iter().all(|&f| f > 0.0), "{foreground:?}");
    let spec = std::fs::read_to_string(crops.join("dataset.toml")).unwrap();
    let spec = seglab::dataset::DatasetSpec::from_toml_str(&spec).unwrap();
    let thesis = &spec.splits["thesis"].folds;
    assert_eq!(thesis.len(), 1);
    assert_eq!(thesis[0].test, ["Crop5_BC", "Crop7_BC"]);
    assert_eq!(spec.splits["paper"].folds.len(), 3);
    // 28 h per published crop, scaled by voxel count (here 1/64 of the published size).
    let hours = spec.volumes[0].annotation_hours.unwrap();
    assert!((hours - 28.0 * scale * scale).abs() < 0.05, "{hours}");
}

#[test]
fn bad_published_input_is_one_error_naming_the_file_and_writes_nothing() {
    let dir = util::temp_dir();
    let (raw, _) = imported_phantom(dir.path());
    let import = |out: &Path| {
        util::run_seglab(&[
            "data",
            "import",
            raw.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--layout",
            "published",
        ])
    };

    // A missing mask.
    let mask = raw.join("Masks").join("Crop3.tif");
    let kept = dir.path().join("Crop3.tif");
    std::fs::rename(&mask, &kept).unwrap();
    let out = dir.path().join("missing");
    let o = import(&out);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no mask Crop3.tif"), "{err}");
    assert!(!out.exists(), "a failed import wrote {}", out.display());

    // A mask of another crop's shape in its place.
    std::fs::copy(raw.join("Masks").join("Crop1.tif"), &mask).unwrap();
    let out = dir.path().join("mismatch");
    let o = import(&out);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Masks/Crop3.tif") && err.contains("differs from its image"),
        "{err}"
    );
    assert!(!out.exists());

    // A file that is not a published crop name.
    std::fs::rename(&kept, &mask).unwrap();
    std::fs::copy(
        raw.join("Images").join("Crop1.tif"),
        raw.join("Images").join("extra.tif"),
    )
    .unwrap();
    let o = import(&dir.path().join("extra"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("`extra` is not a published crop name"));
}

/// The `--set` overrides that shrink every model of a spec to a few seconds of training.
fn tiny(models: &[&str]) -> Vec<String> {
    let mut set = vec![
        "scale=cpu-small",
        "train.epochs=1",
        "train.iterations_per_epoch=2",
        "train.val_batches=1",
        "train.batch=2",
        "infer.step=32",
    ];
    if models.contains(&"unet3d") {
        set.push("net.base_filters=2");
    }
    if models.iter().any(|m| *m == "vox2vox" || *m == "cyclegan") {
        set.extend(["net.generator_filters=2", "net.discriminator_filters=2"]);
    }
    if models.contains(&"vox2vox") {
        set.push("net.bottleneck_blocks=1");
    }
    if models.contains(&"cyclegan") {
        set.push("net.residual_blocks=1");
    }
    set.into_iter().map(String::from).collect()
}

/// The models a spec names (its `models` list and every `model` of its grid blocks).
fn models_of(spec: &str) -> Vec<&'static str> {
    ["unet3d", "vox2vox", "cyclegan", "threshold"]
        .into_iter()
        .filter(|m| spec.contains(&format!("\"{m}\"")))
        .collect()
}

#[test]
fn every_thesis_spec_runs_at_a_tiny_budget_and_reports_its_published_table() {
    let dir = util::temp_dir();
    let (_, crops) = imported_phantom(dir.path());
    let folder = util::repo_root().join("experiments/thesis");
    let mut specs: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    specs.sort();
    assert_eq!(specs.len(), 9, "{specs:?}");
    for spec in &specs {
        let text_of_spec = std::fs::read_to_string(spec).unwrap();
        let reproduces = text_of_spec
            .lines()
            .find_map(|l| l.strip_prefix("reproduces = "))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("{} names no published table", spec.display()));
        let name = spec.file_stem().unwrap().to_str().unwrap();
        let out = dir.path().join("sweeps").join(name);
        let mut args: Vec<String> = vec![
            "sweep".into(),
            "run".into(),
            spec.to_str().unwrap().into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--dataset".into(),
            crops.to_str().unwrap().into(),
        ];
        for s in tiny(&models_of(&text_of_spec)) {
            args.push("--set".into());
            args.push(s);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&args);

        let report = dir.path().join("reports").join(name);
        ok(&[
            "report",
            out.to_str().unwrap(),
            "--out",
            report.to_str().unwrap(),
        ]);
        let table = report
            .join("tables")
            .join(format!("published-{reproduces}.md"));
        let md =
            std::fs::read_to_string(&table).unwrap_or_else(|e| panic!("{}: {e}", table.display()));
        assert!(md.contains("| published |"), "{name}: {md}");
        assert!(md.contains("| measured |"), "{name}: {md}");
        if let Some(t) = published::metric_table(&reproduces) {
            // Every published value is printed, and every row has a measured difference.
            for row in &t.rows {
                let v = row.value("dice", &t.classes[0]).unwrap();
                assert!(
                    md.contains(&format!("{v:.4}")),
                    "{name}: {v} missing in {md}"
                );
            }
            let differences = md
                .lines()
                .filter(|l| l.contains("measured − published"))
                .count();
            assert_eq!(differences, t.rows.len(), "{name}: {md}");
            assert!(
                !md.contains("no trial of the sweep matches"),
                "{name}: {md}"
            );
        } else {
            let t = published::timing_table(&reproduces).unwrap();
            assert!(
                md.contains(&format!("{:.2} h", t.models[0].total_hours)),
                "{name}: {md}"
            );
        }
    }
}

#[test]
fn overrides_are_recorded_and_reused_by_later_commands() {
    let dir = util::temp_dir();
    let (_, crops) = imported_phantom(dir.path());
    let spec = util::repo_root().join("experiments/thesis/table-5.3.toml");
    let out = dir.path().join("sweep");
    let base = [
        "sweep",
        "plan",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--dataset",
        crops.to_str().unwrap(),
    ];
    let plan = |extra: &[&str]| {
        let o = ok(&[&base[..], extra].concat());
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let id = |plan: &str| {
        plan.lines()
            .nth(2)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    let paper = plan(&[]);
    let small = plan(&["--set", "scale=cpu-small"]);
    assert!(
        paper.contains(" paper ") && small.contains(" cpu-small "),
        "{paper}\n{small}"
    );
    // A config key wins over the spec's grid value: another config, another trial.
    let patience = plan(&["--set", "train.patience=3"]);
    let same = plan(&["--set", "train.patience=20"]);
    assert_ne!(id(&patience), id(&paper), "{patience}");
    assert_eq!(
        id(&same),
        id(&paper),
        "the spec sets train.patience = 20: {same}"
    );

    let mut run: Vec<&str> = vec!["sweep", "run", spec.to_str().unwrap()];
    run.extend([
        "--out",
        out.to_str().unwrap(),
        "--dataset",
        crops.to_str().unwrap(),
    ]);
    let sets = tiny(&["vox2vox"]);
    for s in &sets {
        run.extend(["--set", s]);
    }
    ok(&run);
    // `sweep status` on the folder, without the overrides, sees the same trial.
    let o = ok(&[
        "sweep",
        "status",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let status = String::from_utf8_lossy(&o.stdout);
    assert!(status.contains("1 trial(s): 1 finished"), "{status}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("recorded there"));
    // Other overrides on the same folder are refused.
    let o = util::run_seglab(&[
        "sweep",
        "run",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--set",
        "scale=paper",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("was run with"),
        "{}",
        text(&o)
    );
}
