//! Command-line changes to a sweep spec: `seglab sweep run SPEC --set scale=cpu-small --set
//! train.epochs=2 --dataset DIR`, so that one spec (a published table, say) runs at another
//! scale, budget or on other data without editing it.
//!
//! - `--dataset DIR` replaces the spec's dataset (a path from the current folder);
//! - `--set scale=…` / `--set preset=…` choose the trials' scale or preset, replacing the
//!   spec's and its grid blocks' values;
//! - `--set cv.seeds=[0]` / `--set cv.run_folds=[0]` replace those lists of the `[cv]` table;
//! - `--set <config key>=<value>` fixes a config value of every trial whose model has the key,
//!   after the spec's `[set]` and `[[grid]]` values (so it wins over both); a key that no
//!   model of the sweep has is an error.
//!
//! The first `sweep run` (or `sweep slurm`) with overrides records them in the sweep folder
//! ([`super::paths::SweepPaths::overrides`]); every later command on that folder applies the
//! recorded ones, so a resume, `sweep status` or a Slurm task sees the same trials. Different
//! overrides on a folder that has some, or overrides on a folder whose store was filled
//! without, are errors that point to `--out`: one sweep folder holds one set of trials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ExperimentError;
use super::paths::SweepPaths;
use super::spec::SweepSpec;
use crate::models::ModelScale;
use crate::preset::Preset;

/// The changes given on the command line (or recorded in a sweep folder).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecOverrides {
    /// The dataset folder, as an absolute path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<PathBuf>,
    /// `key = value` pairs, in key order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, Value>,
}

impl SpecOverrides {
    /// Parses `--set key=value` arguments (values as JSON where they parse, else strings) and
    /// `--dataset`. A key given twice is an error.
    pub fn parse(set: &[String], dataset: Option<&Path>) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for arg in set {
            let (key, value) =
                crate::train::config::parse_override(arg).map_err(|e| e.to_string())?;
            if map.insert(key.clone(), value).is_some() {
                return Err(format!("--set: `{key}` is given twice"));
            }
        }
        let dataset = dataset
            .map(|d| std::path::absolute(d).map_err(|e| format!("--dataset {}: {e}", d.display())))
            .transpose()?;
        Ok(SpecOverrides { dataset, set: map })
    }

    pub fn is_empty(&self) -> bool {
        self.dataset.is_none() && self.set.is_empty()
    }

    /// One line for logs and reports: `--dataset D --set k=v …`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = &self.dataset {
            parts.push(format!("--dataset {}", d.display()));
        }
        for (k, v) in &self.set {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            parts.push(format!("--set {k}={v}"));
        }
        parts.join(" ")
    }

    /// The spec with these changes (module doc).
    pub fn apply(&self, mut spec: SweepSpec) -> Result<SweepSpec, ExperimentError> {
        let fail = |message: String| ExperimentError::Spec {
            path: spec.file.clone(),
            message: format!("--set {message}"),
        };
        if let Some(d) = &self.dataset {
            spec.dataset = d.clone();
        }
        for (key, value) in &self.set {
            let text = || match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match key.as_str() {
                "scale" => {
                    let scale: ModelScale = text()
                        .parse()
                        .map_err(|e: String| fail(format!("scale: {e}")))?;
                    spec.scale = scale;
                    for g in &mut spec.grids {
                        g.scales = None;
                    }
                }
                "preset" => {
                    let preset: Preset = text()
                        .parse()
                        .map_err(|e: String| fail(format!("preset: {e}")))?;
                    spec.preset = preset;
                    for g in &mut spec.grids {
                        g.presets = None;
                    }
                }
                "cv.seeds" => spec.cv.seeds = index_list(key, value).map_err(fail)?,
                "cv.run_folds" => {
                    let folds = index_list(key, value).map_err(fail)?;
                    spec.cv.run_folds = Some(folds.into_iter().map(|f| f as u32).collect());
                }
                k if k.starts_with("cv.") || !k.contains('.') => {
                    return Err(fail(format!(
                        "{k}: expected scale, preset, cv.seeds, cv.run_folds or a dotted config \
                         key such as train.epochs"
                    )));
                }
                _ => {
                    spec.forced.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(spec)
    }
}

/// A non-empty list of distinct non-negative integers, e.g. `[0, 1]` (or one integer).
fn index_list(key: &str, value: &Value) -> Result<Vec<u64>, String> {
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        v => vec![v],
    };
    let list: Option<Vec<u64>> = items.iter().map(|v| v.as_u64()).collect();
    match list {
        Some(l) if !l.is_empty() => {
            let mut sorted = l.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != l.len() {
                return Err(format!("{key}: a value is listed twice in {value}"));
            }
            Ok(l)
        }
        _ => Err(format!(
            "{key}: expected a list of non-negative integers like [0, 1], got {value}"
        )),
    }
}

/// The overrides a command on the sweep folder `dir` works with: the recorded ones when
/// `given` is empty; `given` when nothing is recorded (recorded now if `record`); an error
/// when both exist and differ, or when `given` would mix trials into a store filled without
/// overrides.
pub fn resolve(
    dir: &Path,
    given: &SpecOverrides,
    record: bool,
) -> Result<SpecOverrides, ExperimentError> {
    let paths = SweepPaths::new(dir);
    let file = paths.overrides();
    let recorded = read(&file)?;
    match recorded {
        Some(r) if given.is_empty() || &r == given => Ok(r),
        Some(r) => Err(ExperimentError::Spec {
            path: file,
            message: format!(
                "the sweep folder was run with `{}`; give the same (or none), or use --out DIR \
                 for a sweep with `{}`",
                r.describe(),
                given.describe()
            ),
        }),
        None if given.is_empty() => Ok(SpecOverrides::default()),
        None => {
            if record {
                if paths.store().join("trials").is_dir() {
                    return Err(ExperimentError::Spec {
                        path: paths.root().to_owned(),
                        message: format!(
                            "this sweep folder holds trials run without overrides; use --out \
                             DIR for a sweep with `{}`",
                            given.describe()
                        ),
                    });
                }
                let text = serde_json::to_string_pretty(given).expect("overrides serialise");
                crate::atomic::write_file(&file, text.as_bytes()).map_err(|e| {
                    ExperimentError::Spec {
                        path: file.clone(),
                        message: e.message,
                    }
                })?;
            }
            Ok(given.clone())
        }
    }
}

fn read(file: &Path) -> Result<Option<SpecOverrides>, ExperimentError> {
    super::read_json_record(file, |e| ExperimentError::Spec {
        path: file.to_owned(),
        message: format!("not a record of --set/--dataset overrides: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_takes_json_values_and_refuses_repeats() {
        let o = SpecOverrides::parse(
            &[
                "train.epochs=2".into(),
                "scale=cpu-small".into(),
                "cv.seeds=[0,1]".into(),
            ],
            None,
        )
        .unwrap();
        assert_eq!(o.set["train.epochs"], serde_json::json!(2));
        assert_eq!(o.set["scale"], serde_json::json!("cpu-small"));
        assert_eq!(o.set["cv.seeds"], serde_json::json!([0, 1]));
        let e = SpecOverrides::parse(&["a.b=1".into(), "a.b=2".into()], None).unwrap_err();
        assert!(e.contains("given twice"), "{e}");
    }

    #[test]
    fn index_lists_are_checked() {
        assert_eq!(
            index_list("cv.seeds", &serde_json::json!(3)).unwrap(),
            vec![3]
        );
        assert!(index_list("cv.seeds", &serde_json::json!([1, 1])).is_err());
        assert!(index_list("cv.seeds", &serde_json::json!(["a"])).is_err());
        assert!(index_list("cv.seeds", &serde_json::json!([])).is_err());
    }

    #[test]
    fn recorded_overrides_are_reused_and_different_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let given = SpecOverrides::parse(&["scale=cpu-small".into()], None).unwrap();
        assert_eq!(resolve(dir.path(), &given, true).unwrap(), given);
        // Later commands without overrides get the recorded ones.
        assert_eq!(
            resolve(dir.path(), &SpecOverrides::default(), false).unwrap(),
            given
        );
        let other = SpecOverrides::parse(&["scale=paper".into()], None).unwrap();
        let e = resolve(dir.path(), &other, true).unwrap_err().to_string();
        assert!(e.contains("was run with `--set scale=cpu-small`"), "{e}");
    }

    #[test]
    fn overrides_on_a_store_filled_without_them_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("store").join("trials")).unwrap();
        let given = SpecOverrides::parse(&["train.epochs=1".into()], None).unwrap();
        let e = resolve(dir.path(), &given, true).unwrap_err().to_string();
        assert!(e.contains("holds trials run without overrides"), "{e}");
        // Read-only commands (plan) may still look.
        assert_eq!(resolve(dir.path(), &given, false).unwrap(), given);
    }
}
