//! Sweep specs: the `experiments/*.toml` files a researcher writes (docs/sweeps.md).
//!
//! ```toml
//! name = "paper-2class"          # optional; default: the file name without `.toml`
//! reproduces = "paper-II"        # optional: the published table this sweep reproduces
//! dataset = "../data/phantom"    # relative to the spec file
//! classes = ["golgi", "nuclei"]  # mask channels of the task
//! models = ["unet3d", "threshold"]  # crossed with each [[grid]] block without `model`
//! preset = "code"                # code | thesis | paper (default code)
//! scale = "cpu-small"            # paper | cpu-small (default paper)
//!
//! [cv]
//! scheme = "nested"              # nested | kfold | leave-one-out | explicit
//! folds = 3                      # k (nested, kfold)
//! seeds = [0, 1, 2]              # default [0]
//! run_folds = [0]                # optional: only these fold indices run
//! file = "splits.json"           # explicit scheme only, relative to the spec file
//! # split = "thesis"             # instead of scheme: a split preset of the dataset
//!
//! [set]                          # overrides of every trial (dotted config keys)
//! "train.epochs" = 20
//!
//! [[grid]]                       # each block is its own Cartesian product
//! model = "cyclegan"             # or a list; also classes, preset, scale
//! "loss.golgi_weight" = [1.0, 2.0, 3.5, 5.0]
//!
//! [search]                       # optional: n random or Sobol points per grid cell
//! kind = "sobol"                 # grid (default) | random | sobol
//! n = 16
//! [search.space]
//! "train.optimizer.lr" = { log-uniform = [1e-4, 1e-2] }
//!
//! [prune]                        # optional: successive halving on epoch rungs
//! metric = "dice_mean"
//! min_epochs = 2
//! reduction = 3
//! ```
//!
//! In a `[[grid]]` block every config key lists its candidate values: `[1.0, 2.0]` sweeps two
//! values, a scalar is one value, and a key whose value is itself a list writes each candidate
//! as a list (`"loss.class_weights" = [[6.0, 1.0], [6.63, 1.0]]`). Unquoted dotted keys
//! (`train.epochs = 20`) are TOML sub-tables; they are flattened back into dotted keys.
//!
//! This file only parses and checks the spec's own structure (unknown top-level keys name the
//! nearest valid key); whether a dotted key exists in a model's configuration is checked when
//! the spec is expanded into trials ([`super::trial`]), against the resolved config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ExperimentError;
use super::prune::PruneSpec;
use super::search::SearchSpec;
use crate::dataset::splits::SplitScheme;
use crate::keys::{KeySchema, nearest, parse_toml};
use crate::models::{ModelKind, ModelScale};
use crate::preset::Preset;

/// Keys of a `[[grid]]` block that choose the trial's cell rather than override a config value.
pub const CELL_KEYS: [&str; 4] = ["model", "classes", "preset", "scale"];

/// A parsed and checked sweep spec.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepSpec {
    /// The spec file (as given).
    pub file: PathBuf,
    pub name: String,
    /// The published table the sweep reproduces (an id of `report::published`), whose values
    /// its report prints beside the measured ones.
    pub reproduces: Option<String>,
    /// The dataset folder, resolved against the spec's folder.
    pub dataset: PathBuf,
    pub classes: Vec<String>,
    /// Models crossed with the grid blocks that do not name their own.
    pub models: Vec<ModelKind>,
    pub preset: Preset,
    pub scale: ModelScale,
    pub cv: CvSpec,
    /// Overrides applied to every trial whose config has the key.
    pub set: BTreeMap<String, serde_json::Value>,
    pub grids: Vec<GridBlock>,
    /// Config values fixed from the command line (`sweep run --set key=value`, see
    /// [`super::overrides`]): applied after `set` and the grid, empty in a spec file.
    pub forced: BTreeMap<String, serde_json::Value>,
    /// Models whose trials may keep a stretch that maps annotated objects to 0
    /// (`allow_clipping = ["cyclegan"]`, with a comment in the spec saying why): the
    /// preprocessing check (`super::preflight`) records their figures and does not stop.
    pub allow_clipping: Vec<ModelKind>,
    /// `[search]` of kind random or sobol: the points every grid cell also runs
    /// ([`super::search`]); `None` for a plain grid.
    pub search: Option<SearchSpec>,
    /// `[prune]`: successive halving on epoch rungs ([`super::prune`]).
    pub prune: Option<PruneSpec>,
    /// Free-text `tags` and `notes` of the whole spec ([`Labels`]).
    pub labels: Labels,
}

/// What a sweep folder records of the spec that fills it (`sweep.json`, written by `sweep
/// run`), for commands that are given the folder rather than the spec (`seglab report DIR`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, Deserialize)]
pub struct SweepRecord {
    pub name: String,
    /// The spec file, as an absolute path.
    pub spec: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reproduces: Option<String>,
}

impl SweepRecord {
    /// The record of `spec`.
    pub fn of(spec: &SweepSpec) -> Self {
        SweepRecord {
            name: spec.name.clone(),
            spec: std::path::absolute(&spec.file).unwrap_or_else(|_| spec.file.clone()),
            reproduces: spec.reproduces.clone(),
        }
    }

    /// Writes the record into the sweep folder `dir` (atomically).
    pub fn write(&self, dir: &Path) -> Result<(), ExperimentError> {
        let path = super::paths::SweepPaths::new(dir).record();
        let text = serde_json::to_string_pretty(self).expect("a sweep record serialises");
        crate::atomic::write_file(&path, text.as_bytes()).map_err(|e| ExperimentError::Spec {
            path,
            message: e.message,
        })
    }

    /// The record of the sweep folder `dir`, if it has one.
    pub fn read(dir: &Path) -> Result<Option<Self>, ExperimentError> {
        let path = super::paths::SweepPaths::new(dir).record();
        super::read_json_record(&path, |e| ExperimentError::Spec {
            path: path.clone(),
            message: format!("not a sweep record: {e}"),
        })
    }
}

/// The cross-validation part of a spec.
#[derive(Clone, Debug, PartialEq)]
pub struct CvSpec {
    pub scheme: SplitScheme,
    /// Seed of the partition (`cv.split_seed`, default 0): every trial seed sees the same
    /// folds, so fold-level aggregation and paired comparisons compare like with like.
    pub split_seed: u64,
    /// Trial seeds: initialisation and sampling only.
    pub seeds: Vec<u64>,
    /// Nested selection (`cv.select = "inner"`): the validation metric (`cv.select_metric`,
    /// an `epochs` metric of split `val`, default `dice_mean`) that chooses each model's
    /// configuration per outer fold (`report::selection`). None: no selection.
    pub select_metric: Option<String>,
    /// Only these fold indices run (all folds when `None`).
    pub run_folds: Option<Vec<u32>>,
}

/// One `[[grid]]` block: its own Cartesian product.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GridBlock {
    pub models: Option<Vec<ModelKind>>,
    pub classes: Option<Vec<Vec<String>>>,
    pub presets: Option<Vec<Preset>>,
    pub scales: Option<Vec<ModelScale>>,
    /// Dotted config keys and their candidate values, in key order.
    pub axes: Vec<(String, Vec<serde_json::Value>)>,
    /// The block's own `tags` and `notes`, added to the spec's.
    pub labels: Labels,
}

/// Free-text `tags` (short labels such as "baseline") and `notes` of a spec or a grid block.
/// Each trial records the spec's and its block's in the store, the report and MLflow; they
/// are not part of the trial id, so editing them re-runs nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Labels {
    pub tags: Vec<String>,
    pub notes: Option<String>,
}

impl Labels {
    /// Reads `tags` (a string or a list of strings: non-empty, no commas, which separate
    /// them in the store) and `notes` (a string).
    fn parse(tags: Option<&toml::Value>, notes: Option<&toml::Value>) -> Result<Labels, String> {
        let tags = match tags {
            None => Vec::new(),
            Some(v) => strings(v, "tags")?,
        };
        for (i, t) in tags.iter().enumerate() {
            if t.trim().is_empty() || t.contains(',') || t.trim() != t {
                return Err(format!(
                    "tags[{i}]: {t:?}: expected a non-empty label without commas or surrounding \
                     spaces"
                ));
            }
        }
        let notes = match notes {
            None => None,
            Some(toml::Value::String(n)) => Some(n.clone()),
            Some(v) => return Err(format!("notes: expected a string, got {v}")),
        };
        Ok(Labels { tags, notes })
    }

    /// These labels followed by `inner`'s (a grid block's): tags once each in order of first
    /// appearance, notes separated by a blank line.
    pub fn with(&self, inner: &Labels) -> Labels {
        let mut tags = self.tags.clone();
        for t in &inner.tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        let notes = match (&self.notes, &inner.notes) {
            (Some(a), Some(b)) => Some(format!("{a}\n\n{b}")),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        Labels { tags, notes }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    reproduces: Option<String>,
    dataset: PathBuf,
    classes: Vec<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    preset: Option<Preset>,
    #[serde(default)]
    scale: Option<ModelScale>,
    cv: RawCv,
    #[serde(default)]
    set: toml::Table,
    #[serde(default)]
    grid: Vec<toml::Table>,
    #[serde(default)]
    allow_clipping: Vec<String>,
    #[serde(default)]
    search: Option<toml::Table>,
    #[serde(default)]
    prune: Option<toml::Table>,
    #[serde(default)]
    tags: Option<toml::Value>,
    #[serde(default)]
    notes: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCv {
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    split: Option<String>,
    #[serde(default)]
    folds: Option<usize>,
    #[serde(default)]
    seeds: Option<Vec<u64>>,
    #[serde(default)]
    split_seed: Option<u64>,
    #[serde(default)]
    select: Option<String>,
    #[serde(default)]
    select_metric: Option<String>,
    #[serde(default)]
    run_folds: Option<Vec<u32>>,
    #[serde(default)]
    file: Option<PathBuf>,
}

const SCHEMES: [&str; 4] = ["nested", "kfold", "leave-one-out", "explicit"];

impl SweepSpec {
    /// Reads and checks a spec file.
    pub fn load(path: &Path) -> Result<SweepSpec, ExperimentError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExperimentError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        SweepSpec::parse(path, &text)
    }

    /// Parses the text of the spec file `path` (relative paths in it are resolved against the
    /// folder of `path`). Errors name the file, the key and what was expected.
    pub fn parse(path: &Path, text: &str) -> Result<SweepSpec, ExperimentError> {
        let fail = |message: String| ExperimentError::Spec {
            path: path.to_path_buf(),
            message,
        };
        let schema = KeySchema::of::<RawSpec>().child("cv", KeySchema::of::<RawCv>());
        let raw: RawSpec = parse_toml(text, &schema).map_err(|e| fail(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        let name = match raw.name {
            Some(n) => n,
            None => path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string(),
        };
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(fail(format!(
                "name {name:?}: expected letters, digits, '_', '-' or '.' (it names the sweep \
                 folder), not starting with '.'"
            )));
        }
        check_classes(&raw.classes).map_err(|m| fail(format!("classes: {m}")))?;
        if let Some(id) = &raw.reproduces {
            let ids = crate::report::published::ids();
            if !ids.contains(&id.as_str()) {
                let hint = nearest(id, &ids)
                    .map(|n| format!(", did you mean {n:?}?"))
                    .unwrap_or_default();
                return Err(fail(format!(
                    "reproduces: {id:?} is not a published table (one of {}){hint}",
                    ids.join(", ")
                )));
            }
        }
        let models = raw
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| m.parse().map_err(|e| fail(format!("models[{i}]: {e}"))))
            .collect::<Result<Vec<ModelKind>, _>>()?;
        let allow_clipping = raw
            .allow_clipping
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.parse()
                    .map_err(|e| fail(format!("allow_clipping[{i}]: {e}")))
            })
            .collect::<Result<Vec<ModelKind>, _>>()?;
        let cv = parse_cv(raw.cv, base).map_err(|m| fail(format!("cv.{m}")))?;
        let set = flatten(&raw.set, "")
            .into_iter()
            .map(|(k, v)| {
                check_config_key(&k).map_err(|m| fail(format!("set: {m}")))?;
                Ok((k, toml_to_json(&v).map_err(|m| fail(format!("set.{m}")))?))
            })
            .collect::<Result<BTreeMap<_, _>, ExperimentError>>()?;
        let search = match &raw.search {
            Some(t) => SearchSpec::parse(t).map_err(fail)?,
            None => None,
        };
        let prune = match &raw.prune {
            Some(t) => Some(PruneSpec::parse(t).map_err(fail)?),
            None => None,
        };
        let labels = Labels::parse(raw.tags.as_ref(), raw.notes.as_ref()).map_err(fail)?;
        let mut grids = Vec::new();
        for (i, table) in raw.grid.iter().enumerate() {
            let block = parse_grid(table).map_err(|m| fail(format!("grid[{i}]: {m}")))?;
            if block.models.is_none() && models.is_empty() {
                return Err(fail(format!(
                    "grid[{i}]: no model: set `model` in the block or `models` at the top"
                )));
            }
            grids.push(block);
        }
        if grids.is_empty() {
            if models.is_empty() {
                return Err(fail(
                    "no trials: list `models = [...]` or add [[grid]] blocks with `model`".into(),
                ));
            }
            grids.push(GridBlock::default());
        }
        Ok(SweepSpec {
            file: path.to_path_buf(),
            name,
            reproduces: raw.reproduces,
            dataset: base.join(&raw.dataset),
            classes: raw.classes,
            models,
            preset: raw.preset.unwrap_or_default(),
            scale: raw.scale.unwrap_or_default(),
            cv,
            set,
            grids,
            forced: BTreeMap::new(),
            allow_clipping,
            search,
            prune,
            labels,
        })
    }

    /// The sweep folder: `<spec folder>/<name>/` unless `out` says otherwise.
    pub fn sweep_dir(&self, out: Option<&Path>) -> PathBuf {
        match out {
            Some(o) => o.to_path_buf(),
            None => self.file.parent().unwrap_or(Path::new("")).join(&self.name),
        }
    }
}

fn check_classes(classes: &[String]) -> Result<(), String> {
    if classes.is_empty() {
        return Err("expected 1 to 3 of \"golgi\", \"nuclei\", \"pair\", got none".into());
    }
    let known = crate::dataset::MASK_CHANNELS;
    for (i, c) in classes.iter().enumerate() {
        if !known.contains(&c.as_str()) {
            let hint = nearest(c, &known)
                .map(|n| format!(", did you mean {n:?}?"))
                .unwrap_or_default();
            return Err(format!(
                "[{i}] {c:?} is not a mask channel (golgi, nuclei, pair){hint}"
            ));
        }
        if classes[..i].contains(c) {
            return Err(format!("[{i}] {c:?} is listed twice"));
        }
    }
    Ok(())
}

fn parse_cv(raw: RawCv, base: &Path) -> Result<CvSpec, String> {
    let need_k = |scheme: &str| {
        raw.folds
            .ok_or_else(|| format!("folds: the {scheme} scheme needs `folds = k`"))
    };
    let scheme_name = match (&raw.scheme, &raw.split) {
        (Some(s), None) => s.as_str(),
        (None, Some(_)) => {
            if raw.folds.is_some() || raw.file.is_some() {
                return Err(
                    "split: a dataset's split preset fixes its folds, remove `folds` and `file`"
                        .into(),
                );
            }
            "split"
        }
        (Some(_), Some(_)) => {
            return Err("split: give either `scheme` or `split` (a dataset's split preset)".into());
        }
        (None, None) => {
            return Err(
                "scheme: expected `scheme = \"nested\"` (or kfold, leave-one-out, explicit) or \
                 `split = \"<name>\"` (a split preset of the dataset)"
                    .into(),
            );
        }
    };
    let scheme = match scheme_name {
        "split" if raw.split.is_some() => {
            SplitScheme::Named(raw.split.clone().expect("checked above"))
        }
        "nested" => SplitScheme::Nested {
            k: need_k("nested")?,
        },
        "kfold" => SplitScheme::KFold {
            k: need_k("kfold")?,
        },
        "leave-one-out" => SplitScheme::LeaveOneOut,
        "explicit" => SplitScheme::Explicit(
            base.join(
                raw.file
                    .as_ref()
                    .ok_or("file: the explicit scheme needs `file = \"splits.json\"`")?,
            ),
        ),
        other => {
            let hint = nearest(other, &SCHEMES)
                .map(|n| format!(", did you mean {n:?}?"))
                .unwrap_or_default();
            return Err(format!(
                "scheme: {other:?} is not one of nested, kfold, leave-one-out, explicit{hint}"
            ));
        }
    };
    if raw.file.is_some() && !matches!(scheme, SplitScheme::Explicit(_)) {
        return Err("file: only the explicit scheme reads a splits file".into());
    }
    if raw.folds.is_some() && matches!(scheme, SplitScheme::LeaveOneOut | SplitScheme::Explicit(_))
    {
        return Err(format!(
            "folds: the {scheme_name} scheme takes its folds from the data, remove `folds`"
        ));
    }
    let seeds = raw.seeds.unwrap_or_else(|| vec![0]);
    if seeds.is_empty() {
        return Err("seeds: expected at least one seed".into());
    }
    if let Some(dup) = first_duplicate(&seeds) {
        return Err(format!("seeds: {dup} is listed twice"));
    }
    if let Some(f) = &raw.run_folds {
        if f.is_empty() {
            return Err("run_folds: expected at least one fold index (or no run_folds)".into());
        }
        if let Some(dup) = first_duplicate(f) {
            return Err(format!("run_folds: {dup} is listed twice"));
        }
        if let SplitScheme::KFold { k } | SplitScheme::Nested { k } = scheme
            && let Some(bad) = f.iter().find(|&&i| i as usize >= k)
        {
            return Err(format!(
                "run_folds: fold {bad} does not exist (folds are 0..{})",
                k.saturating_sub(1)
            ));
        }
    }
    if raw.split_seed.is_some()
        && matches!(scheme, SplitScheme::Explicit(_) | SplitScheme::Named(_))
    {
        return Err(format!(
            "split_seed: the {scheme_name} scheme takes its folds as given, remove `split_seed`"
        ));
    }
    let select_metric = match (raw.select.as_deref(), raw.select_metric) {
        (None | Some("none"), None) => None,
        (None | Some("none"), Some(_)) => {
            return Err("select_metric: only `select = \"inner\"` uses it".into());
        }
        (Some("inner"), metric) => {
            if matches!(scheme, SplitScheme::KFold { .. }) {
                return Err(
                    "select: the kfold scheme has no validation volumes to select on; use \
                     scheme = \"nested\""
                        .into(),
                );
            }
            Some(metric.unwrap_or_else(|| "dice_mean".into()))
        }
        (Some(other), _) => {
            return Err(format!(
                "select: expected \"none\" or \"inner\", got {other:?}"
            ));
        }
    };
    Ok(CvSpec {
        scheme,
        select_metric,
        split_seed: raw.split_seed.unwrap_or(0),
        seeds,
        run_folds: raw.run_folds,
    })
}

fn first_duplicate<T: PartialEq + Copy>(items: &[T]) -> Option<T> {
    items
        .iter()
        .enumerate()
        .find(|(i, x)| items[..*i].contains(x))
        .map(|(_, x)| *x)
}

fn parse_grid(table: &toml::Table) -> Result<GridBlock, String> {
    let mut block = GridBlock {
        labels: Labels::parse(table.get("tags"), table.get("notes"))?,
        ..GridBlock::default()
    };
    for (key, value) in flatten(table, "") {
        match key.as_str() {
            "tags" | "notes" => {}
            "model" => block.models = Some(parsed(&value, "model")?),
            "preset" => block.presets = Some(parsed(&value, "preset")?),
            "scale" => block.scales = Some(parsed(&value, "scale")?),
            "classes" => {
                let lists = match &value {
                    toml::Value::Array(a) if a.iter().all(|v| v.is_array()) && !a.is_empty() => a
                        .iter()
                        .map(|v| strings(v, "classes"))
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => vec![strings(&value, "classes")?],
                };
                for l in &lists {
                    check_classes(l).map_err(|m| format!("classes: {m}"))?;
                }
                block.classes = Some(lists);
            }
            _ => {
                check_config_key(&key)?;
                let candidates = match &value {
                    toml::Value::Array(a) => a.clone(),
                    v => vec![v.clone()],
                };
                if candidates.is_empty() {
                    return Err(format!("{key:?}: an empty list sweeps no value"));
                }
                let values = candidates
                    .iter()
                    .map(toml_to_json)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|m| format!("{key:?}{m}"))?;
                block.axes.push((key, values));
            }
        }
    }
    block.axes.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(block)
}

/// Non-dotted keys of a grid or `[set]` can only be cell keys; catch typos of those here.
fn check_config_key(key: &str) -> Result<(), String> {
    if key.contains('.') {
        return Ok(());
    }
    let hint = nearest(key, &CELL_KEYS)
        .map(|n| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default();
    Err(format!(
        "unknown key `{key}`: expected model, classes, preset, scale or a dotted config key such \
         as \"train.epochs\"{hint}"
    ))
}

/// The names in `value` (one or a list, see [`strings`]) parsed as `T`; errors name `key`.
fn parsed<T: std::str::FromStr<Err = String>>(
    value: &toml::Value,
    key: &str,
) -> Result<Vec<T>, String> {
    strings(value, key)?
        .iter()
        .map(|s| s.parse::<T>().map_err(|e| format!("{key}: {e}")))
        .collect()
}

/// One string or a list of strings.
fn strings(value: &toml::Value, key: &str) -> Result<Vec<String>, String> {
    let one = |v: &toml::Value| {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{key}: expected a string or a list of strings, got {v}"))
    };
    match value {
        toml::Value::Array(a) if a.is_empty() => Err(format!("{key}: an empty list")),
        toml::Value::Array(a) => a.iter().map(one).collect(),
        v => Ok(vec![one(v)?]),
    }
}

/// Flattens nested tables into dotted keys (`train = { epochs = 2 }` → `train.epochs`).
fn flatten(table: &toml::Table, prefix: &str) -> Vec<(String, toml::Value)> {
    flatten_where(table, prefix, &|_| true)
}

/// Flattens the nested tables that `nested` accepts into dotted keys; any other value (tables
/// `nested` refuses included) ends a key. In the order of the table.
pub(crate) fn flatten_where(
    table: &toml::Table,
    prefix: &str,
    nested: &dyn Fn(&toml::Table) -> bool,
) -> Vec<(String, toml::Value)> {
    let mut out = Vec::new();
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) if nested(t) => out.extend(flatten_where(t, &key, nested)),
            v => out.push((key, v.clone())),
        }
    }
    out
}

/// A TOML value as JSON (the form config overrides take). Datetimes have no JSON form.
pub(crate) fn toml_to_json(value: &toml::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .ok_or_else(|| format!(": {f} is not a finite number"))?,
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => return Err(format!(": datetime {d} is not a config value")),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect::<Result<_, _>>()?),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), toml_to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SweepSpec, String> {
        SweepSpec::parse(Path::new("experiments/cv.toml"), text).map_err(|e| e.to_string())
    }

    const BASE: &str = r#"
dataset = "../data/phantom"
classes = ["golgi", "nuclei"]
[cv]
scheme = "nested"
folds = 3
"#;

    #[test]
    fn a_full_spec_parses() {
        let spec = parse(
            r#"
name = "paper-2class"
dataset = "../data/phantom"
classes = ["golgi", "nuclei"]
preset = "thesis"
scale = "cpu-small"
[cv]
scheme = "nested"
folds = 3
seeds = [0, 1, 2]
run_folds = [0, 2]
[set]
train.epochs = 2
"infer.step" = 16
[[grid]]
model = "unet3d"
[[grid]]
model = ["vox2vox", "cyclegan"]
"loss.class_weights" = [[6.0, 1.0], [6.63, 1.0]]
loss.golgi_weight = [1.0, 3.5]
"#,
        )
        .unwrap();
        assert_eq!(spec.name, "paper-2class");
        assert_eq!(spec.dataset, Path::new("experiments/../data/phantom"));
        assert_eq!(spec.preset, Preset::Thesis);
        assert_eq!(spec.scale, ModelScale::CpuSmall);
        assert_eq!(spec.cv.scheme, SplitScheme::Nested { k: 3 });
        assert_eq!(spec.cv.seeds, [0, 1, 2]);
        assert_eq!(spec.cv.run_folds, Some(vec![0, 2]));
        assert_eq!(spec.set["train.epochs"], serde_json::json!(2));
        assert_eq!(spec.set["infer.step"], serde_json::json!(16));
        assert_eq!(spec.grids.len(), 2);
        assert_eq!(spec.grids[0].models, Some(vec![ModelKind::Unet3d]));
        let g = &spec.grids[1];
        assert_eq!(
            g.models,
            Some(vec![ModelKind::Vox2Vox, ModelKind::CycleGan])
        );
        assert_eq!(
            g.axes,
            vec![
                (
                    "loss.class_weights".to_string(),
                    vec![
                        serde_json::json!([6.0, 1.0]),
                        serde_json::json!([6.63, 1.0])
                    ]
                ),
                (
                    "loss.golgi_weight".to_string(),
                    vec![serde_json::json!(1.0), serde_json::json!(3.5)]
                ),
            ]
        );
        assert_eq!(spec.sweep_dir(None), Path::new("experiments/paper-2class"));
    }

    #[test]
    fn defaults_name_preset_scale_and_seeds() {
        let spec = parse(&format!("models = [\"threshold\"]\n{BASE}")).unwrap();
        assert_eq!(spec.name, "cv");
        assert_eq!(spec.preset, Preset::Code);
        assert_eq!(spec.scale, ModelScale::Paper);
        assert_eq!(spec.cv.seeds, [0]);
        assert_eq!(spec.grids, vec![GridBlock::default()]);
        assert_eq!(spec.models, [ModelKind::Threshold]);
    }

    #[test]
    fn errors_name_file_key_and_nearest_key() {
        let e = parse(&format!("modles = [\"unet3d\"]\n{BASE}")).unwrap_err();
        assert!(e.starts_with("experiments/cv.toml: 1:1"), "{e}");
        assert!(
            e.contains("unknown key `modles`, did you mean `models`?"),
            "{e}"
        );

        let e = parse(&format!("models = [\"unet3d\"]\n{BASE}seedz = [1]\n")).unwrap_err();
        assert!(
            e.contains("unknown key `cv.seedz`, did you mean `seeds`?"),
            "{e}"
        );

        let e = parse(&format!("{BASE}[[grid]]\nmodle = \"unet3d\"\n")).unwrap_err();
        assert!(e.contains("grid[0]: unknown key `modle`"), "{e}");
        assert!(e.contains("did you mean `model`?"), "{e}");

        let e = parse(&format!("{BASE}[[grid]]\nmodel = \"unet\"\n")).unwrap_err();
        assert!(e.contains("grid[0]: model: unknown model `unet`"), "{e}");

        let e = parse(&format!("models = [\"unet3d\"]\n{BASE}").replace("\"nested\"", "\"nestd\""))
            .unwrap_err();
        assert!(e.contains("cv.scheme: \"nestd\""), "{e}");
        assert!(e.contains("did you mean \"nested\"?"), "{e}");

        let e =
            parse(&format!("models = [\"unet3d\"]\n{BASE}").replace("\"nuclei\"", "\"nucleus\""))
                .unwrap_err();
        assert!(e.contains("classes: [1] \"nucleus\""), "{e}");

        let e = parse(BASE).unwrap_err();
        assert!(e.contains("no trials"), "{e}");

        let e = parse(&format!("{BASE}[[grid]]\n\"loss.golgi_weight\" = [1.0]\n")).unwrap_err();
        assert!(e.contains("grid[0]: no model"), "{e}");

        let e = parse(&format!("models = [\"unet3d\"]\n{BASE}run_folds = [3]\n")).unwrap_err();
        assert!(e.contains("cv.run_folds: fold 3 does not exist"), "{e}");

        let e = parse(&format!("models = [\"unet3d\"]\n{BASE}seeds = []\n")).unwrap_err();
        assert!(e.contains("cv.seeds"), "{e}");

        let e = parse(&format!("models = [\"unet3d\"]\nname = \"a/b\"\n{BASE}")).unwrap_err();
        assert!(e.contains("name \"a/b\""), "{e}");
    }

    #[test]
    fn grid_classes_accept_one_list_or_a_list_of_lists() {
        let one = parse(&format!(
            "{BASE}[[grid]]\nmodel = \"unet3d\"\nclasses = [\"nuclei\"]\n"
        ))
        .unwrap();
        assert_eq!(one.grids[0].classes, Some(vec![vec!["nuclei".to_string()]]));
        let two = parse(&format!(
            "{BASE}[[grid]]\nmodel = \"unet3d\"\nclasses = [[\"nuclei\"], [\"golgi\", \"nuclei\", \"pair\"]]\n"
        ))
        .unwrap();
        assert_eq!(two.grids[0].classes.as_ref().unwrap().len(), 2);
    }

    #[test]
    fn explicit_scheme_resolves_its_file() {
        let spec = parse(
            "models = [\"unet3d\"]\ndataset = \"d\"\nclasses = [\"nuclei\"]\n[cv]\nscheme = \"explicit\"\nfile = \"s.json\"\n",
        )
        .unwrap();
        assert_eq!(
            spec.cv.scheme,
            SplitScheme::Explicit(PathBuf::from("experiments/s.json"))
        );
    }

    #[test]
    fn split_presets_and_published_tables_are_checked() {
        let head = "models = [\"unet3d\"]\ndataset = \"d\"\nclasses = [\"nuclei\"]\n";
        let spec = parse(&format!(
            "reproduces = \"thesis-5.3\"\n{head}[cv]\nsplit = \"thesis\"\n"
        ))
        .unwrap();
        assert_eq!(spec.cv.scheme, SplitScheme::Named("thesis".into()));
        assert_eq!(spec.reproduces.as_deref(), Some("thesis-5.3"));
        let e = parse(&format!(
            "reproduces = \"thesis-5.33\"\n{head}[cv]\nsplit = \"thesis\"\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("not a published table") && e.contains("thesis-5.3"),
            "{e}"
        );
        let e = parse(&format!(
            "{head}[cv]\nsplit = \"thesis\"\nscheme = \"nested\"\nfolds = 3\n"
        ))
        .unwrap_err();
        assert!(e.contains("either `scheme` or `split`"), "{e}");
        let e = parse(&format!("{head}[cv]\nsplit = \"thesis\"\nfolds = 3\n")).unwrap_err();
        assert!(e.contains("fixes its folds"), "{e}");
        let e = parse(&format!("{head}[cv]\nseeds = [0]\n")).unwrap_err();
        assert!(e.contains("`split = \"<name>\"`"), "{e}");
    }
}
