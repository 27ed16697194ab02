//! What a report reads: the canonical view of a sweep's store, the dataset description and
//! (optionally) volumes for slice overlays.
//!
//! [`read_store`] is the one place where the report touches the store: it takes the
//! canonical view of `tracking` (chosen attempt = highest finished attempt, else highest
//! attempt; only its rows count); everything downstream takes DataFrames and does not care
//! where they came from.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::ReportError;
use super::aggregate::require_columns;
use crate::dataset::{DATASET_FILE, DatasetSpec};
use crate::experiment::paths::SweepPaths;
use crate::tracking::{Canonical, Store};
use crate::volume::Volume;

/// The canonical view of one sweep's store plus what the report needs besides.
///
/// Frames follow the store schema of `tracking` (column names and types), restricted to the
/// chosen attempt of each trial:
/// - `trials`: one row per trial (the latest event of its chosen attempt): at least
///   `trial_id`, `status`, `model`, `classes`, `fold`, `seed`, optionally `error`, `preset`,
///   `scale`, `dataset` and `param.<key>` columns;
/// - `epochs`: `trial_id`, `epoch`, `split`, `metric`, `value`;
/// - `results`: `trial_id`, `volume`, `class`, `metric`, `value` (one row per case);
/// - `timings`: `trial_id`, `phase`, `seconds`.
#[derive(Clone, Debug)]
pub struct ReportInput {
    /// The sweep's name (the report's title and default folder).
    pub sweep: String,
    pub trials: DataFrame,
    pub epochs: DataFrame,
    pub results: DataFrame,
    pub timings: DataFrame,
    /// The dataset's `dataset.toml`, for annotation hours (timing breakdown); `None` when it
    /// could not be found, which the report states.
    pub dataset: Option<DatasetSpec>,
    /// Test slices to draw as overlays (image, ground truth, predictions).
    pub slices: Vec<SliceSet>,
    /// Problems met while gathering the input, repeated in the report.
    pub warnings: Vec<String>,
}

/// One test volume with its ground truth and the models' predictions, for a slice overlay
/// figure. All volumes share one spatial shape.
#[derive(Clone, Debug)]
pub struct SliceSet {
    /// Names the figure (`slices-<name>`) and its caption, e.g. the volume id.
    pub name: String,
    /// The image, channels as listed in `image_channels` (any intensity range; each channel
    /// is stretched to its 0.5–99.5 percentiles for display).
    pub image: Volume<f32>,
    pub image_channels: Vec<String>,
    /// Ground-truth masks (non-zero = foreground), one channel per class of `classes`.
    pub truth: Volume<u8>,
    pub classes: Vec<String>,
    /// (label, mask) per model, each with the channels of `classes`.
    pub predictions: Vec<(String, Volume<u8>)>,
    /// The z slice to draw; `None` picks the slice with the most ground-truth foreground.
    pub z: Option<usize>,
}

/// Reads the canonical view of the store in `store_dir` (`experiments/<sweep>/store/`) through
/// [`Store::canonical`] — the one implementation of the chosen-attempt rule. The dataset
/// description is looked up from the trials' `dataset` column, relative to the current
/// directory and to the project root (the folder holding `experiments/`).
pub fn read_store(store_dir: &Path) -> Result<ReportInput, ReportError> {
    let store_error = |e: crate::tracking::TrackingError| ReportError::Store {
        path: store_dir.to_owned(),
        message: e.to_string(),
    };
    let canonical = Store::open(store_dir)
        .and_then(|s| s.canonical())
        .map_err(store_error)?;
    if canonical.trials.height() == 0 {
        return Err(ReportError::Store {
            path: store_dir.join("trials"),
            message: "no trial rows yet".into(),
        });
    }
    let Canonical {
        trials,
        epochs,
        results,
        timings,
    } = canonical;
    let sweep = string_column(&trials, "sweep")
        .ok()
        .and_then(|v| v.into_iter().flatten().next())
        .or_else(|| {
            store_dir
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "sweep".into());
    let mut warnings = Vec::new();
    let found = find_dataset(&trials, store_dir, &mut warnings);
    let mut input = ReportInput {
        sweep,
        trials,
        epochs,
        results,
        timings,
        dataset: found.as_ref().map(|(_, spec)| spec.clone()),
        slices: Vec::new(),
        warnings,
    };
    if let (Some((dir, _)), Some(sweep_dir)) = (found, store_dir.parent()) {
        match slice_set(&input, &SweepPaths::new(sweep_dir), &dir) {
            Ok(Some(set)) => input.slices.push(set),
            Ok(None) => {}
            Err(e) => input.warnings.push(format!("no slice overlay: {e}")),
        }
    }
    Ok(input)
}

/// The slice overlay of a finished sweep: the first test volume (by id) that finished trials
/// predicted, its image and ground truth from the dataset, and per model the prediction of
/// the trial with the lowest seed that tested it (`trials/<id>/predictions/<volume>.tif`).
/// `None` when no finished trial left a prediction file.
fn slice_set(
    input: &ReportInput,
    paths: &SweepPaths,
    dataset_dir: &Path,
) -> Result<Option<SliceSet>, String> {
    let text = |e: PolarsError| e.to_string();
    let ids = string_column(&input.trials, "trial_id").map_err(text)?;
    let status = string_column(&input.trials, "status").map_err(text)?;
    let models = string_column(&input.trials, "model").map_err(text)?;
    let seeds = u64_column(&input.trials, "seed").map_err(text)?;
    let classes = string_column(&input.trials, "classes").map_err(text)?;
    // (model, seed, trial, classes) of finished trials, lowest seed first
    let mut finished: Vec<(String, u64, String, String)> = (0..ids.len())
        .filter(|&i| status[i].as_deref() == Some("finished"))
        .filter_map(|i| {
            Some((
                models[i].clone()?,
                seeds[i].unwrap_or(0),
                ids[i].clone()?,
                classes[i].clone().unwrap_or_default(),
            ))
        })
        .collect();
    finished.sort();
    let tested: Vec<(Option<String>, Option<String>)> = string_column(&input.results, "trial_id")
        .map_err(text)?
        .into_iter()
        .zip(string_column(&input.results, "volume").map_err(text)?)
        .collect();
    let prediction =
        |trial: &str, volume: &str| paths.trial_predictions(trial).join(format!("{volume}.tif"));
    let mut volumes: Vec<&str> = tested
        .iter()
        .filter_map(|(t, v)| {
            let (t, v) = (t.as_deref()?, v.as_deref()?);
            finished.iter().any(|f| f.2 == t).then_some(v)
        })
        .collect();
    volumes.sort();
    volumes.dedup();
    let Some(volume) = volumes
        .into_iter()
        .find(|v| finished.iter().any(|f| prediction(&f.2, v).is_file()))
    else {
        return Ok(None);
    };
    let task: Vec<String> = finished
        .iter()
        .find(|f| prediction(&f.2, volume).is_file())
        .map(|f| f.3.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let dataset = crate::dataset::Dataset::open(dataset_dir).map_err(|e| e.to_string())?;
    let loaded = dataset.load(volume).map_err(|e| e.to_string())?;
    let mask = loaded
        .mask
        .ok_or_else(|| format!("volume {volume} has no ground-truth mask"))?;
    let channels: Vec<usize> = task
        .iter()
        .map(|c| {
            dataset
                .spec()
                .mask_channels
                .iter()
                .position(|m| m == c)
                .ok_or_else(|| format!("the dataset has no mask channel `{c}`"))
        })
        .collect::<Result<_, _>>()?;
    let truth = mask.select_channels(&channels).map_err(|e| e.to_string())?;
    let mut predictions = Vec::new();
    let mut seen = HashSet::new();
    for (model, _, trial, _) in &finished {
        let file = prediction(trial, volume);
        if !seen.contains(model) && file.is_file() {
            let pred = crate::volume::tiff::read_tiff(&file)
                .map_err(|e| e.to_string())?
                .to_binary();
            if pred.shape() == truth.shape() {
                predictions.push((model.clone(), pred));
                seen.insert(model.clone());
            }
        }
    }
    // The tables' model order (U-Net, Vox2Vox, CycleGAN, baseline), not the store's.
    predictions.sort_by_key(|(model, _)| crate::report::prepare::model_rank(model));
    Ok(Some(SliceSet {
        name: volume.to_string(),
        image: loaded.image,
        image_channels: dataset.spec().image_channels.clone(),
        truth,
        classes: task,
        predictions,
        z: None,
    }))
}

/// Reads `<dir>/dataset.toml` (parsing only, no validation of the volumes).
pub fn read_dataset_spec(dir: &Path) -> Result<DatasetSpec, ReportError> {
    DatasetSpec::read_file(&dir.join(DATASET_FILE)).map_err(|e| ReportError::Input(e.to_string()))
}

fn find_dataset(
    trials: &DataFrame,
    store_dir: &Path,
    warnings: &mut Vec<String>,
) -> Option<(PathBuf, DatasetSpec)> {
    let Ok(names) = string_column(trials, "dataset") else {
        warnings.push("the trials table has no `dataset` column: annotation hours unknown".into());
        return None;
    };
    let name = names.into_iter().flatten().next()?;
    // experiments/<sweep>/store → the project root two levels above `experiments/<sweep>`.
    let root = store_dir
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent);
    let mut candidates = vec![PathBuf::from(&name)];
    if let Some(root) = root {
        candidates.push(root.join(&name));
    }
    for dir in &candidates {
        if dir.join(DATASET_FILE).is_file() {
            match read_dataset_spec(dir) {
                Ok(spec) => return Some((dir.clone(), spec)),
                Err(e) => {
                    warnings.push(format!("{e}: annotation hours unknown"));
                    return None;
                }
            }
        }
    }
    warnings.push(format!(
        "dataset `{name}` not found ({DATASET_FILE} looked for in {}): annotation hours unknown",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    None
}

/// Typed reads of the columns of one input table, with errors that name the table: built by
/// [`Columns::require`], which checks every needed column once.
pub(crate) struct Columns<'a> {
    frame: &'a DataFrame,
    what: &'static str,
}

impl<'a> Columns<'a> {
    /// The columns of `frame` (the table `what`), after checking it has every one of `needed`.
    pub fn require(
        frame: &'a DataFrame,
        needed: &[&str],
        what: &'static str,
    ) -> Result<Self, ReportError> {
        require_columns(frame, needed, what)?;
        Ok(Columns { frame, what })
    }

    /// A polars error while reading this table.
    pub fn error(&self, source: PolarsError) -> ReportError {
        ReportError::Polars {
            what: self.what,
            source,
        }
    }

    /// A column as strings (see [`string_column`]).
    pub fn str(&self, name: &str) -> Result<Vec<Option<String>>, ReportError> {
        string_column(self.frame, name).map_err(|e| self.error(e))
    }

    /// A column as strings, all null when the table has no such column (stores written before
    /// it existed).
    pub fn optional_str(&self, name: &str) -> Result<Vec<Option<String>>, ReportError> {
        match self.frame.column(name) {
            Ok(_) => self.str(name),
            Err(_) => Ok(vec![None; self.frame.height()]),
        }
    }

    /// A column as unsigned integers (see [`u64_column`]).
    pub fn u64(&self, name: &str) -> Result<Vec<Option<u64>>, ReportError> {
        u64_column(self.frame, name).map_err(|e| self.error(e))
    }

    /// A column as floats (see [`f64_column`]).
    pub fn f64(&self, name: &str) -> Result<Vec<Option<f64>>, ReportError> {
        f64_column(self.frame, name).map_err(|e| self.error(e))
    }
}

/// A string column as `Option<String>` values (any dtype is cast to string).
pub(crate) fn string_column(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<String>>> {
    let c = df.column(name)?.cast(&DataType::String)?;
    Ok(c.str()?.iter().map(|v| v.map(str::to_owned)).collect())
}

/// An integer column as `Option<u64>` values.
pub(crate) fn u64_column(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<u64>>> {
    let c = df.column(name)?.cast(&DataType::UInt64)?;
    Ok(c.u64()?.iter().collect())
}

/// A float column as `Option<f64>` values.
pub(crate) fn f64_column(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<f64>>> {
    let c = df.column(name)?.cast(&DataType::Float64)?;
    Ok(c.f64()?.iter().collect())
}

/// The distinct values of a string column, in first-seen order.
pub(crate) fn distinct(values: &[Option<String>]) -> Vec<String> {
    let mut seen = HashSet::new();
    values
        .iter()
        .flatten()
        .filter(|v| seen.insert((*v).clone()))
        .cloned()
        .collect()
}

/// Each trial's stored configuration tree, by trial id.
pub(crate) fn trial_configs(input: &ReportInput) -> Result<HashMap<String, Value>, ReportError> {
    if input.trials.column("config_json").is_err() {
        return Ok(HashMap::new());
    }
    let e = super::aggregate::polars_error("trials");
    let ids = string_column(&input.trials, "trial_id").map_err(&e)?;
    let json = string_column(&input.trials, "config_json").map_err(&e)?;
    Ok(ids
        .into_iter()
        .zip(json)
        .filter_map(|(id, j)| Some((id?, serde_json::from_str(&j?).ok()?)))
        .collect())
}

/// Each trial's validation volumes, from its stored `split_json`, by trial id; trials of stores
/// written before the split was recorded are absent.
pub(crate) fn trial_validation_volumes(
    input: &ReportInput,
) -> Result<HashMap<String, Vec<String>>, ReportError> {
    if input.trials.column("split_json").is_err() {
        return Ok(HashMap::new());
    }
    let e = super::aggregate::polars_error("trials");
    let ids = string_column(&input.trials, "trial_id").map_err(&e)?;
    let json = string_column(&input.trials, "split_json").map_err(&e)?;
    Ok(ids
        .into_iter()
        .zip(json)
        .filter_map(|(id, j)| {
            let split: Value = serde_json::from_str(&j?).ok()?;
            let val = split.get("val")?.as_array()?;
            let volumes = val.iter().filter_map(|v| v.as_str().map(str::to_string));
            Some((id?, volumes.collect()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The chosen-attempt rule itself is tested with the store (tests/store.rs).
    #[test]
    fn not_a_store_is_an_error_naming_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let err = read_store(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("not a seglab store"), "{err}");
        assert!(err.contains(&tmp.path().display().to_string()), "{err}");
    }
}
