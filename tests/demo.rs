//! `seglab demo --quick` end to end: phantom data → the four-model sweep → the report, then a
//! second run that finds everything in the store.

mod util;

#[test]
fn quick_demo_runs_end_to_end_and_resumes_from_the_store() {
    let root = util::temp_dir();
    let r = root.path().to_str().unwrap();
    let first = util::run_seglab(&["demo", "--quick", "--root", r]);
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // every model has a nuclei Dice line, and the report exists
    for model in ["threshold", "unet3d", "vox2vox", "cyclegan"] {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().take(2).eq([model, "nuclei"])),
            "no nuclei Dice of {model} in\n{out}"
        );
    }
    // A log of the run (stderr is a pipe here) has one line per ended trial with what it
    // was, its scores, its time and how far the sweep got.
    let err = String::from_utf8_lossy(&first.stderr);
    let ended: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(" finished in "))
        .collect();
    assert_eq!(ended.len(), 4, "{err}");
    for (i, line) in ended.iter().enumerate() {
        let model = ["threshold", "unet3d", "vox2vox", "cyclegan"]
            .into_iter()
            .find(|m| line.contains(&format!(": {m} golgi,nuclei")));
        assert!(model.is_some(), "{line}");
        assert!(
            line.contains(" fold ") && line.contains(" seed 0 "),
            "{line}"
        );
        // A class whose every test volume is empty in both mask and prediction has no Dice.
        let dice =
            |c: &str| line.contains(&format!(" {c} 0.")) || line.contains(&format!(" {c} –"));
        assert!(
            line.contains("· dice golgi ") && dice("golgi") && dice("nuclei"),
            "{line}"
        );
        let left = format!("· {} left ·", 3 - i);
        assert!(line.contains(&left), "{line}");
        assert!(line.ends_with(" elapsed"), "{line}");
        // Only the keys the sweep varies, not the whole configuration.
        assert!(!line.contains("train.val_volumes"), "{line}");
    }
    let report = root.path().join("reports/demo-quick");
    for f in [
        "index.md",
        "index.html",
        "tables/comparisons-2class.md",
        "tables/comparisons-2class.tex",
        "tables/comparisons-2class.csv",
        "figures/forest-2class-dice.png",
        "figures/forest-2class-dice.svg",
    ] {
        assert!(report.join(f).is_file(), "{f} missing");
    }
    // Four models: six pairs per class, each with its paired unit and n.
    let comparisons = std::fs::read_to_string(report.join("tables/comparisons-2class.md")).unwrap();
    assert!(comparisons.contains("Paired unit: test case (split, seed, volume)"));
    assert!(
        comparisons.contains("| Dice | Nuclei | U-Net | Vox2Vox |"),
        "{comparisons}"
    );
    assert!(
        root.path()
            .join("data/phantom-quick/dataset.toml")
            .is_file()
    );

    let second = util::run_seglab(&["demo", "--quick", "--root", r]);
    let out2 = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{out2}");
    assert!(
        out2.contains("(0 finished now, 4 earlier, 0 failed)"),
        "{out2}"
    );
}
