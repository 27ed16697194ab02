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
    let report = root.path().join("reports/demo-quick");
    for f in ["index.md", "index.html"] {
        assert!(report.join(f).is_file(), "{f} missing");
    }
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
