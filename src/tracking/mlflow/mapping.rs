//! How store rows become MLflow entities; shared by the replay ([`super::sync_store`]) and the
//! live mirror ([`super::MlflowMirror`]) so that both write exactly the same runs.
//!
//! One MLflow run per trial *attempt*, nested under one parent run per sweep
//! (`mlflow.parentRunId`, docs/design.md §5). A run is found again by its tags
//! `seglab.sweep`, `seglab.kind` (sweep / trial), `seglab.trial_id` and `seglab.attempt`; the
//! attempt the canonical view counts carries `seglab.chosen = true`. Metric keys:
//!
//! | store rows | MLflow metric key | step |
//! |---|---|---|
//! | `epochs` | `<split>/<metric>` (e.g. `train/loss`, `val/dice_golgi`) | epoch |
//! | `results` | `test/<class>/<metric>/<volume>` | 0 |
//! | `results`, mean over test volumes (NaN left out) | `test/<class>/<metric>` | 0 |
//! | `timings` | `time/<phase>_s` | 0 |
//!
//! Times are derived from the store (never from the clock), so every replay sends the same
//! points: epochs at `started_ms + wall_s`, everything else at `started_ms`.

use std::collections::BTreeMap;

use super::client::{
    MAX_KEY_CHARS, MAX_PARAM_VALUE_CHARS, MAX_TAG_VALUE_CHARS, Metric, Param, RunStatus, Tag,
    truncate_chars,
};
use crate::tracking::{EpochRow, ResultRow, TimingRow, TrialEvent, TrialStatus};

pub const TAG_SWEEP: &str = "seglab.sweep";
pub const TAG_KIND: &str = "seglab.kind";
pub const TAG_TRIAL: &str = "seglab.trial_id";
pub const TAG_ATTEMPT: &str = "seglab.attempt";
pub const TAG_CHOSEN: &str = "seglab.chosen";
/// A digest of everything a replay would send; a run whose digest matches is up to date.
pub const TAG_DIGEST: &str = "seglab.sync_digest";
pub const TAG_PARENT: &str = "mlflow.parentRunId";
pub const KIND_SWEEP: &str = "sweep";
pub const KIND_TRIAL: &str = "trial";

/// Makes a metric, param or tag key acceptable to MLflow: letters, digits and `_ - . / space :`
/// stay, anything else becomes `_`; at most 250 characters (docs/mlflow.md §3).
pub fn sanitize_key(key: &str) -> String {
    let cleaned: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ' ' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    truncate_chars(&cleaned, MAX_KEY_CHARS)
}

/// The filter that finds the runs of a sweep (`'` is refused in sweep names upstream).
pub fn sweep_filter(sweep: &str) -> String {
    format!("tags.`{TAG_SWEEP}` = '{sweep}'")
}

/// The filter that finds the run(s) of one trial attempt.
pub fn attempt_filter(sweep: &str, trial_id: &str, attempt: u32) -> String {
    format!(
        "tags.`{TAG_SWEEP}` = '{sweep}' and tags.`{TAG_KIND}` = '{KIND_TRIAL}' and tags.`{TAG_TRIAL}` = '{trial_id}' and tags.`{TAG_ATTEMPT}` = '{attempt}'"
    )
}

/// The filter that finds the parent run of a sweep.
pub fn parent_filter(sweep: &str) -> String {
    format!("tags.`{TAG_SWEEP}` = '{sweep}' and tags.`{TAG_KIND}` = '{KIND_SWEEP}'")
}

/// The tags a trial-attempt run is created with (what finds it again).
pub fn attempt_identity(ev: &TrialEvent, parent_run_id: &str) -> Vec<Tag> {
    vec![
        Tag::new(TAG_SWEEP, &ev.sweep),
        Tag::new(TAG_KIND, KIND_TRIAL),
        Tag::new(TAG_TRIAL, &ev.trial_id),
        Tag::new(TAG_ATTEMPT, ev.attempt.to_string()),
        Tag::new(TAG_PARENT, parent_run_id),
    ]
}

/// The tags a sweep's parent run is created with.
pub fn sweep_identity(sweep: &str) -> Vec<Tag> {
    vec![Tag::new(TAG_SWEEP, sweep), Tag::new(TAG_KIND, KIND_SWEEP)]
}

/// Run name of a trial attempt: readable in the UI, unique within the sweep.
pub fn run_name(ev: &TrialEvent) -> String {
    format!(
        "{} f{} s{} {} a{}",
        ev.model, ev.fold, ev.seed, ev.trial_id, ev.attempt
    )
}

/// Params of a trial attempt: what defines the trial (model, classes, fold, seed, preset, scale,
/// dataset) and every `param.*` key. Values longer than MLflow keeps are cut the same way.
pub fn trial_params(ev: &TrialEvent) -> Vec<Param> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in [
        ("model", ev.model.clone()),
        ("classes", ev.classes.join(",")),
        ("fold", ev.fold.to_string()),
        ("seed", ev.seed.to_string()),
        ("preset", ev.preset.clone()),
        ("scale", ev.scale.clone()),
        ("dataset", ev.dataset.clone()),
    ] {
        map.insert(k.to_string(), v);
    }
    for (k, v) in &ev.params {
        map.entry(sanitize_key(k)).or_insert_with(|| v.clone());
    }
    map.into_iter()
        .map(|(k, v)| Param::new(k, truncate_chars(&v, MAX_PARAM_VALUE_CHARS)))
        .collect()
}

/// Provenance and bookkeeping tags of a trial attempt (docs/design.md §5: git
/// commit, user and source set by the client; the dirty flag and diff hash as own tags).
pub fn trial_tags(ev: &TrialEvent, parent_run_id: &str, chosen: bool) -> Vec<Tag> {
    let mut tags = attempt_identity(ev, parent_run_id);
    tags.extend([
        Tag::new(TAG_CHOSEN, chosen.to_string()),
        Tag::new("mlflow.user", &ev.user),
        Tag::new("mlflow.source.name", &ev.command),
        Tag::new("mlflow.source.type", "LOCAL"),
        Tag::new("mlflow.source.git.commit", &ev.git_commit),
        Tag::new("seglab.git_dirty", ev.git_dirty.to_string()),
        Tag::new("seglab.status", ev.status.as_str()),
        Tag::new("seglab.host", &ev.host),
        Tag::new("seglab.device", &ev.device),
        Tag::new("seglab.device_name", &ev.device_name),
        Tag::new("seglab.version", &ev.seglab_version),
        Tag::new("seglab.burn_version", &ev.burn_version),
        Tag::new("seglab.dataset_fingerprint", &ev.dataset_fingerprint),
        Tag::new("seglab.compute_path", &ev.compute_path),
    ]);
    if let Some(t) = ev.threads {
        tags.push(Tag::new("seglab.threads", t.to_string()));
    }
    if let Some(p) = &ev.prune {
        tags.extend([
            Tag::new("seglab.prune_rung", p.rung.to_string()),
            Tag::new("seglab.prune_epoch", p.epoch.to_string()),
            Tag::new("seglab.prune_value", p.value.to_string()),
            Tag::new("seglab.prune_cut", p.cut.to_string()),
        ]);
    }
    if let Some(d) = &ev.git_diff_sha256 {
        tags.push(Tag::new("seglab.git_diff_sha256", d));
    }
    if let Some(e) = &ev.error {
        tags.push(Tag::new("seglab.error", e));
    }
    tags.extend(preprocess_tags(ev));
    tags.extend(label_tags(ev));
    tags.retain(|t| !t.value.is_empty() || t.key == TAG_PARENT);
    for t in &mut tags {
        t.value = truncate_chars(&t.value, MAX_TAG_VALUE_CHARS);
    }
    tags
}

/// The spec's free-text labels and notes: `seglab.tags` (all labels), one
/// `seglab.tag.<label>` = `true` per label (so `tags.\`seglab.tag.baseline\` = 'true'` finds
/// the runs of a label), and the notes as `mlflow.note.content` (the run's description in
/// MLflow's UI).
fn label_tags(ev: &TrialEvent) -> Vec<Tag> {
    let mut tags = Vec::new();
    if !ev.tags.is_empty() {
        tags.push(Tag::new("seglab.tags", ev.tags.join(", ")));
        for t in &ev.tags {
            tags.push(Tag::new(sanitize_key(&format!("seglab.tag.{t}")), "true"));
        }
    }
    if let Some(n) = &ev.notes {
        tags.push(Tag::new("mlflow.note.content", n));
    }
    tags
}

/// The preprocessing check of `sweep run` (`experiment::preflight`) as tags: the resolved
/// preprocessing (`seglab.preprocessing`, with any `auto` floors) and the whole check as JSON
/// (`seglab.preprocess_check`). None when no check ran.
fn preprocess_tags(ev: &TrialEvent) -> Vec<Tag> {
    let Some(check) = &ev.preprocess_check else {
        return Vec::new();
    };
    let mut tags = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(check)
        && let Some(described) = v["preprocessing"].as_str()
    {
        tags.push(Tag::new("seglab.preprocessing", described));
    }
    tags.push(Tag::new("seglab.preprocess_check", check));
    tags
}

/// Tags of the sweep's parent run, with provenance taken from one of its attempts.
pub fn sweep_tags(sweep: &str, any: Option<&TrialEvent>) -> Vec<Tag> {
    let mut tags = sweep_identity(sweep);
    if let Some(ev) = any {
        tags.extend([
            Tag::new("mlflow.user", &ev.user),
            Tag::new("mlflow.source.type", "LOCAL"),
            Tag::new("mlflow.source.git.commit", &ev.git_commit),
            Tag::new("seglab.git_dirty", ev.git_dirty.to_string()),
            Tag::new("seglab.version", &ev.seglab_version),
        ]);
    }
    tags.retain(|t| !t.value.is_empty());
    tags
}

/// MLflow's status for a store status (`interrupted` counts as killed).
pub fn run_status(s: TrialStatus) -> RunStatus {
    match s {
        TrialStatus::Running => RunStatus::Running,
        TrialStatus::Finished => RunStatus::Finished,
        TrialStatus::Failed => RunStatus::Failed,
        TrialStatus::Killed
        | TrialStatus::Interrupted
        | TrialStatus::Timeout
        | TrialStatus::Pruned => RunStatus::Killed,
    }
}

/// End time of an ended attempt.
pub fn end_time(ev: &TrialEvent) -> Option<i64> {
    ev.status
        .is_terminal()
        .then(|| ev.ended_ms.unwrap_or(ev.event_ms))
}

fn point(key: String, value: f64, timestamp: i64, step: i64) -> Metric {
    Metric {
        key,
        value,
        timestamp,
        step,
    }
}

/// Learning-curve points: `<split>/<metric>` at step = epoch.
pub fn epoch_metrics(rows: &[EpochRow], started_ms: i64) -> Vec<Metric> {
    rows.iter()
        .map(|r| {
            let offset = if r.wall_s.is_finite() && r.wall_s >= 0.0 {
                (r.wall_s * 1000.0).round() as i64
            } else {
                0
            };
            point(
                sanitize_key(&format!("{}/{}", r.split, r.metric)),
                r.value,
                started_ms + offset,
                i64::from(r.epoch),
            )
        })
        .collect()
}

/// One point per test volume, class and metric: `test/<class>/<metric>/<volume>`.
pub fn result_metrics(rows: &[ResultRow], started_ms: i64) -> Vec<Metric> {
    rows.iter()
        .map(|r| {
            point(
                sanitize_key(&format!("test/{}/{}/{}", r.class, r.metric, r.volume)),
                r.value,
                started_ms,
                0,
            )
        })
        .collect()
}

/// Per class and metric, the mean over test volumes with NaN left out (NaN when every volume
/// is NaN): `test/<class>/<metric>`, the number to sort runs by in the UI.
pub fn result_means(rows: &[ResultRow], started_ms: i64) -> Vec<Metric> {
    let mut acc: BTreeMap<(&str, &str), (f64, usize)> = BTreeMap::new();
    for r in rows {
        let e = acc.entry((&r.class, &r.metric)).or_insert((0.0, 0));
        if !r.value.is_nan() {
            e.0 += r.value;
            e.1 += 1;
        }
    }
    acc.into_iter()
        .map(|((class, metric), (sum, n))| {
            let mean = if n == 0 { f64::NAN } else { sum / n as f64 };
            point(
                sanitize_key(&format!("test/{class}/{metric}")),
                mean,
                started_ms,
                0,
            )
        })
        .collect()
}

/// Phase durations: `time/<phase>_s`.
pub fn timing_metrics(rows: &[TimingRow], started_ms: i64) -> Vec<Metric> {
    rows.iter()
        .map(|r| {
            point(
                sanitize_key(&format!("time/{}_s", r.phase)),
                r.seconds,
                started_ms,
                0,
            )
        })
        .collect()
}

/// Keeps the first point of each (key, step): the store holds one value per (key, step) of an
/// attempt, and MLflow metrics only append, so a point is sent at most once.
pub fn dedup_points(points: Vec<Metric>) -> Vec<Metric> {
    let mut seen = std::collections::HashSet::new();
    let before = points.len();
    let out: Vec<Metric> = points
        .into_iter()
        .filter(|m| seen.insert((m.key.clone(), m.step)))
        .collect();
    if out.len() < before {
        tracing::warn!(
            "{} metric point(s) share a key and step with another after key cleaning; the first is kept",
            before - out.len()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_cleaned_for_mlflow() {
        assert_eq!(
            sanitize_key("test/golgi/dice/vol 01"),
            "test/golgi/dice/vol 01"
        );
        assert_eq!(sanitize_key("a!b(c)ü"), "a_b_c__");
        assert_eq!(sanitize_key(&"k".repeat(300)).len(), 250);
    }

    fn event(check: Option<&str>) -> TrialEvent {
        TrialEvent {
            sweep: "s".into(),
            trial_id: "0123456789ab".into(),
            attempt: 1,
            status: TrialStatus::Running,
            event_ms: 0,
            model: "threshold".into(),
            classes: vec!["nuclei".into()],
            fold: 0,
            seed: 0,
            preset: "code".into(),
            scale: "cpu-small".into(),
            dataset: "data".into(),
            dataset_fingerprint: "f".into(),
            config_json: "{}".into(),
            error: None,
            started_ms: 0,
            ended_ms: None,
            git_commit: "c".into(),
            git_dirty: false,
            git_diff_sha256: None,
            user: "u".into(),
            host: "h".into(),
            device: "cpu".into(),
            device_name: "cpu".into(),
            compute_path: "kernels".into(),
            seglab_version: "v".into(),
            burn_version: "b".into(),
            command: "seglab sweep run".into(),
            preprocess_check: check.map(str::to_string),
            params: Default::default(),
            split_id: None,
            split_json: None,
            select_metric: None,
            prune: None,
            threads: Some(2),
            tags: vec!["baseline".into(), "lr sweep".into()],
            notes: Some("first night".into()),
        }
    }

    #[test]
    fn labels_notes_and_threads_become_tags() {
        let tags = trial_tags(&event(None), "p", true);
        let value = |key: &str| tags.iter().find(|t| t.key == key).map(|t| t.value.clone());
        assert_eq!(value("seglab.tags").as_deref(), Some("baseline, lr sweep"));
        assert_eq!(value("seglab.tag.baseline").as_deref(), Some("true"));
        assert_eq!(value("seglab.tag.lr sweep").as_deref(), Some("true"));
        assert_eq!(value("mlflow.note.content").as_deref(), Some("first night"));
        assert_eq!(value("seglab.threads").as_deref(), Some("2"));
        assert_eq!(value("seglab.compute_path").as_deref(), Some("kernels"));
    }

    #[test]
    fn the_preprocessing_check_becomes_tags() {
        let value =
            |tags: &[Tag], key: &str| tags.iter().find(|t| t.key == key).map(|t| t.value.clone());
        let none = trial_tags(&event(None), "p", true);
        assert_eq!(value(&none, "seglab.preprocess_check"), None);
        let check = r#"{"preprocessing":"percentile-stretch(nuclei 21–98 (auto floors), guard 10, uint8) → scale(unit)","figures":[]}"#;
        let tags = trial_tags(&event(Some(check)), "p", true);
        assert_eq!(
            value(&tags, "seglab.preprocessing").as_deref(),
            Some("percentile-stretch(nuclei 21–98 (auto floors), guard 10, uint8) → scale(unit)")
        );
        assert_eq!(
            value(&tags, "seglab.preprocess_check").as_deref(),
            Some(check)
        );
    }

    #[test]
    fn class_means_leave_nan_out() {
        let row = |v: &str, value: f64| ResultRow {
            trial_id: "t".into(),
            attempt: 1,
            volume: v.into(),
            class: "golgi".into(),
            metric: "dice".into(),
            value,
        };
        let means = result_means(&[row("a", 0.5), row("b", f64::NAN), row("c", 0.7)], 10);
        assert_eq!(means.len(), 1);
        assert_eq!(means[0].key, "test/golgi/dice");
        assert!((means[0].value - 0.6).abs() < 1e-12);
        let all_nan = result_means(&[row("a", f64::NAN)], 10);
        assert!(all_nan[0].value.is_nan());
    }
}
