//! Free-text `tags` and `notes` of a spec and its grid blocks: recorded per trial in the store,
//! listed by `runs ls` and the report, never part of a trial id; bad values name the field.

mod util;
use util::{plan_ids, text};

use std::path::{Path, PathBuf};

use seglab::tracking::{Store, TrialEvent};

fn spec(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join("experiments").join(format!("{name}.toml"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, body).unwrap();
    path
}

const HEAD: &str = "dataset = \"../data\"\nclasses = [\"golgi\", \"nuclei\"]\n\
scale = \"cpu-small\"\n";
const CV: &str = "[cv]\nscheme = \"nested\"\nfolds = 3\nrun_folds = [0]\n";

/// Two threshold blocks (the Otsu baseline with two evaluation settings).
fn body(labels: &str, block_labels: &str) -> String {
    format!(
        "{labels}{HEAD}{}{CV}[[grid]]\nmodel = \"threshold\"\n{block_labels}\
         [[grid]]\nmodel = \"threshold\"\n\"eval.dice_smoothing\" = 1.0\n",
        util::ALLOW_CLIPPING
    )
}

#[test]
fn tags_and_notes_reach_the_store_the_listing_and_the_report_but_not_the_ids() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    let plain = spec(dir.path(), "plain", &body("", ""));
    let path = spec(
        dir.path(),
        "labelled",
        &body(
            "tags = [\"baseline\", \"otsu\"]\nnotes = \"after the annotation fix\"\n",
            "tags = [\"smooth-0\", \"baseline\"]\nnotes = \"no smoothing\"\n",
        ),
    );
    let p = path.to_str().unwrap();
    let ids = plan_ids(&util::run_seglab(&["sweep", "plan", p]));
    assert_eq!(ids.len(), 2);
    assert_eq!(
        ids,
        plan_ids(&util::run_seglab(&[
            "sweep",
            "plan",
            plain.to_str().unwrap()
        ])),
        "labels are not part of a trial id"
    );
    let o = util::run_seglab(&["sweep", "run", p]);
    assert!(o.status.success(), "{}", text(&o));
    let sweep_dir = dir.path().join("experiments/labelled");
    let df = Store::open(sweep_dir.join("store"))
        .unwrap()
        .chosen_trials()
        .unwrap();
    let events = TrialEvent::from_frame(&df).unwrap();
    let of = |id: &str| events.iter().find(|e| e.trial_id == id).unwrap().clone();
    // The first block adds its tags after the spec's (each once) and its notes after a blank
    // line; the second has the spec's alone.
    let first = of(&ids[0]);
    assert_eq!(first.tags, ["baseline", "otsu", "smooth-0"]);
    assert_eq!(
        first.notes.as_deref(),
        Some("after the annotation fix\n\nno smoothing")
    );
    let second = of(&ids[1]);
    assert_eq!(second.tags, ["baseline", "otsu"]);
    assert_eq!(second.notes.as_deref(), Some("after the annotation fix"));

    let ls = util::run_seglab(&["runs", "ls", sweep_dir.to_str().unwrap()]);
    assert!(ls.status.success(), "{}", text(&ls));
    let out = String::from_utf8_lossy(&ls.stdout).to_string();
    let row = out.lines().find(|l| l.starts_with(&ids[0])).unwrap();
    assert!(row.contains("baseline, otsu, smooth-0"), "{out}");
    assert!(
        out.contains("notes:") && out.contains("no smoothing"),
        "{out}"
    );
    // `--filter tags=…` selects by the stored (comma-joined) value.
    let ls = util::run_seglab(&[
        "runs",
        "ls",
        sweep_dir.to_str().unwrap(),
        "--filter",
        "tags=baseline,otsu",
    ]);
    let out = String::from_utf8_lossy(&ls.stdout).to_string();
    assert!(out.contains(&ids[1]) && !out.contains(&ids[0]), "{out}");

    let report = dir.path().join("report");
    let o = util::run_seglab(&[
        "report",
        sweep_dir.to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let table = std::fs::read_to_string(report.join("tables/tags-and-notes.md")).unwrap();
    assert!(
        table.contains("baseline, otsu, smooth-0")
            && table.contains("after the annotation fix no smoothing"),
        "{table}"
    );
}

#[test]
fn bad_tags_and_notes_name_the_field() {
    let dir = util::temp_dir();
    util::easy_phantom(dir.path());
    for (labels, block, wanted) in [
        (
            "tags = [\"a,b\"]\n",
            "",
            "tags[0]: \"a,b\": expected a non-empty label",
        ),
        ("tags = 3\n", "", "tags"),
        ("notes = [\"x\"]\n", "", "notes: expected a string"),
        ("", "tags = [\"ok\", \" \"]\n", "grid[0]: tags[1]"),
    ] {
        let path = spec(dir.path(), "bad", &body(labels, block));
        let o = util::run_seglab(&["sweep", "plan", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("bad.toml") && err.contains(wanted),
            "{wanted:?} missing in {err}"
        );
    }
}
