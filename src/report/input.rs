//! What a report reads: the canonical view of a sweep's store, the dataset description and
//! (optionally) volumes for slice overlays.
//!
//! [`read_store`] is the one place where the report touches the Parquet files. It is an
//! interim reader that applies the canonical-view rule of `tracking` (chosen attempt =
//! highest finished attempt, else highest attempt; only its rows count) and is to be replaced
//! by `tracking::Store::canonical()` when the store lands; everything downstream takes
//! DataFrames and does not care where they came from.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use polars_io::prelude::{ParquetReader, SerReader};

use super::ReportError;
use super::aggregate::polars_error;
use crate::dataset::{DATASET_FILE, DatasetSpec};
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

/// The tables of a store, in the order of the `tracking` schema.
const TABLES: [&str; 4] = ["trials", "epochs", "results", "timings"];

/// Reads the canonical view of the store in `store_dir` (`experiments/<sweep>/store/`).
///
/// Interim implementation of the canonical-view rule of `tracking` (see the module doc);
/// switch to `tracking::Store::canonical()` when it lands. The dataset description is looked
/// up from the trials' `dataset` column, relative to the current directory and to the
/// project root (the folder holding `experiments/`).
pub fn read_store(store_dir: &Path) -> Result<ReportInput, ReportError> {
    if !store_dir.join("trials").is_dir() {
        return Err(ReportError::Store {
            path: store_dir.to_owned(),
            message: "not a store: no `trials` folder (expected experiments/<sweep>/store/)".into(),
        });
    }
    let mut frames = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        frames.push(read_table(&store_dir.join(table))?);
    }
    let [events, epochs, results, timings]: [DataFrame; 4] =
        frames.try_into().expect("four tables");
    if events.height() == 0 {
        return Err(ReportError::Store {
            path: store_dir.join("trials"),
            message: "no trial rows yet".into(),
        });
    }
    let chosen = chosen_attempts(&events, &store_dir.join("trials"))?;
    let trials = events
        .take(&IdxCa::from_vec("idx".into(), chosen.rows.clone()))
        .map_err(polars_error("trials"))?;
    let keys = chosen.keys;
    let epochs = restrict(epochs, &keys, "epochs", &store_dir.join("epochs"))?;
    let results = restrict(results, &keys, "results", &store_dir.join("results"))?;
    let timings = restrict(timings, &keys, "timings", &store_dir.join("timings"))?;

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
    let dataset = find_dataset(&trials, store_dir, &mut warnings);
    Ok(ReportInput {
        sweep,
        trials,
        epochs,
        results,
        timings,
        dataset,
        slices: Vec::new(),
        warnings,
    })
}

/// Reads `<dir>/dataset.toml`.
///
/// Interim: the dataset module will own loading (with validation); this parses only.
pub fn read_dataset_spec(dir: &Path) -> Result<DatasetSpec, ReportError> {
    let path = dir.join(DATASET_FILE);
    let text = std::fs::read_to_string(&path).map_err(ReportError::io(&path))?;
    toml::from_str(&text).map_err(|e| ReportError::Store {
        path,
        message: e.to_string(),
    })
}

fn find_dataset(
    trials: &DataFrame,
    store_dir: &Path,
    warnings: &mut Vec<String>,
) -> Option<DatasetSpec> {
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
                Ok(spec) => return Some(spec),
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

/// Concatenates the Parquet parts of one table folder, ignoring hidden (temporary) files.
/// Parts may have different column sets (the `param.*` columns of trials); missing columns
/// are filled with nulls.
fn read_table(dir: &Path) -> Result<DataFrame, ReportError> {
    if !dir.is_dir() {
        return Ok(DataFrame::empty());
    }
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(ReportError::io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| !n.starts_with('.') && n.ends_with(".parquet"))
        })
        .collect();
    parts.sort();
    let mut frames = Vec::with_capacity(parts.len());
    for part in &parts {
        let file = File::open(part).map_err(ReportError::io(part))?;
        let df = ParquetReader::new(file)
            .finish()
            .map_err(|e| ReportError::Store {
                path: part.clone(),
                message: e.to_string(),
            })?;
        frames.push(df);
    }
    concat_diagonal(frames).map_err(|e| ReportError::Store {
        path: dir.to_owned(),
        message: e.to_string(),
    })
}

/// Stacks frames whose column sets differ: the union of columns, in first-seen order, with
/// nulls where a frame lacks a column.
pub(crate) fn concat_diagonal(frames: Vec<DataFrame>) -> PolarsResult<DataFrame> {
    let mut columns: Vec<(PlSmallStr, DataType)> = Vec::new();
    for df in &frames {
        for c in df.columns() {
            if !columns.iter().any(|(n, _)| n == c.name()) {
                columns.push((c.name().clone(), c.dtype().clone()));
            }
        }
    }
    let mut out: Option<DataFrame> = None;
    for df in frames {
        let height = df.height();
        let mut cols = Vec::with_capacity(columns.len());
        for (name, dtype) in &columns {
            match df.column(name) {
                Ok(c) => cols.push(c.cast(dtype)?),
                Err(_) => cols.push(Column::full_null(name.clone(), height, dtype)),
            }
        }
        let df = DataFrame::new(height, cols)?;
        out = Some(match out {
            None => df,
            Some(mut acc) => {
                acc.vstack_mut(&df)?;
                acc
            }
        });
    }
    Ok(out.unwrap_or_else(DataFrame::empty))
}

struct Chosen {
    /// Row indices (into the events frame) of each trial's canonical row.
    rows: Vec<IdxSize>,
    /// (trial_id, attempt) of each chosen attempt.
    keys: DataFrame,
}

/// The canonical-view rule of `tracking`: per (trial, attempt) the latest event; per trial
/// the highest finished attempt, or else the highest attempt.
fn chosen_attempts(events: &DataFrame, path: &Path) -> Result<Chosen, ReportError> {
    let store_err = |message: String| ReportError::Store {
        path: path.to_owned(),
        message,
    };
    let ids = string_column(events, "trial_id").map_err(|e| store_err(e.to_string()))?;
    let attempts = u64_column(events, "attempt").map_err(|e| store_err(e.to_string()))?;
    let statuses = string_column(events, "status").map_err(|e| store_err(e.to_string()))?;
    let times = match events.column("event_ms") {
        Ok(_) => u64_column(events, "event_ms").map_err(|e| store_err(e.to_string()))?,
        Err(_) => vec![Some(0); events.height()],
    };
    // latest event per (trial, attempt); later rows win ties
    let mut latest: HashMap<(String, u64), usize> = HashMap::new();
    for i in 0..events.height() {
        let (Some(id), Some(attempt)) = (&ids[i], attempts[i]) else {
            return Err(store_err(format!(
                "row {i}: trial_id and attempt must not be null"
            )));
        };
        let key = (id.clone(), attempt);
        match latest.get(&key) {
            Some(&j) if times[j] > times[i] => {}
            _ => {
                latest.insert(key, i);
            }
        }
    }
    let mut best: HashMap<String, (bool, u64, usize)> = HashMap::new();
    for ((id, attempt), i) in latest {
        let finished = statuses[i].as_deref() == Some("finished");
        let rank = (finished, attempt, i);
        match best.get(&id) {
            Some(&(f, a, _)) if (f, a) > (finished, attempt) => {}
            _ => {
                best.insert(id, rank);
            }
        }
    }
    let mut chosen: Vec<(String, u64, usize)> =
        best.into_iter().map(|(id, (_, a, i))| (id, a, i)).collect();
    chosen.sort_by_key(|c| c.2);
    let rows = chosen.iter().map(|c| c.2 as IdxSize).collect();
    let keys = DataFrame::new(
        chosen.len(),
        vec![
            Column::new(
                "trial_id".into(),
                chosen.iter().map(|c| c.0.clone()).collect::<Vec<_>>(),
            ),
            Column::new(
                "_attempt".into(),
                chosen.iter().map(|c| c.1).collect::<Vec<_>>(),
            ),
        ],
    )
    .map_err(polars_error("trials"))?;
    Ok(Chosen { rows, keys })
}

/// Keeps the rows of the chosen attempts only.
fn restrict(
    df: DataFrame,
    keys: &DataFrame,
    table: &'static str,
    path: &Path,
) -> Result<DataFrame, ReportError> {
    if df.height() == 0 {
        return Ok(df);
    }
    if df.column("attempt").is_err() || df.column("trial_id").is_err() {
        return Err(ReportError::Store {
            path: path.to_owned(),
            message: format!("table {table} needs `trial_id` and `attempt` columns"),
        });
    }
    df.lazy()
        .with_column(col("attempt").cast(DataType::UInt64).alias("_attempt"))
        .join(
            keys.clone().lazy(),
            [col("trial_id"), col("_attempt")],
            [col("trial_id"), col("_attempt")],
            JoinArgs::new(JoinType::Inner),
        )
        .drop(cols(["_attempt"]))
        .collect()
        .map_err(polars_error(table))
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

#[cfg(test)]
mod tests {
    use super::*;
    use polars_io::prelude::ParquetWriter;

    fn write_part(dir: &Path, name: &str, df: &mut DataFrame) {
        std::fs::create_dir_all(dir).unwrap();
        let f = File::create(dir.join(name)).unwrap();
        ParquetWriter::new(f).finish(df).unwrap();
    }

    #[test]
    fn canonical_view_prefers_the_highest_finished_attempt() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("experiments/s/store");
        // t1: attempt 0 finished, attempt 1 failed → attempt 0 counts.
        // t2: attempt 0 killed, attempt 1 running → attempt 1 (highest) counts.
        let trials = df!(
            "sweep" => ["s"; 5],
            "trial_id" => ["t1", "t1", "t1", "t2", "t2"],
            "attempt" => [0u32, 0, 1, 0, 1],
            "status" => ["running", "finished", "failed", "killed", "running"],
            "event_ms" => [1i64, 2, 3, 1, 2],
            "model" => ["unet3d"; 5],
            "classes" => ["golgi,nuclei"; 5],
            "fold" => [0u32, 0, 0, 1, 1],
            "seed" => [0u64; 5],
        )
        .unwrap();
        write_part(&store.join("trials"), "a.parquet", &mut trials.slice(0, 3));
        write_part(&store.join("trials"), "b.parquet", &mut trials.slice(3, 2));
        let mut results = df!(
            "trial_id" => ["t1", "t1", "t2"],
            "attempt" => [0u32, 1, 1],
            "volume" => ["v1"; 3],
            "class" => ["golgi"; 3],
            "metric" => ["dice"; 3],
            "value" => [0.5, 0.9, 0.7],
        )
        .unwrap();
        write_part(&store.join("results"), "r.parquet", &mut results);
        // a hidden temporary part must be ignored
        write_part(&store.join("results"), ".tmp-r.parquet", &mut results);

        let input = read_store(&store).unwrap();
        assert_eq!(input.sweep, "s");
        let mut rows: Vec<(String, String)> = string_column(&input.trials, "trial_id")
            .unwrap()
            .into_iter()
            .zip(string_column(&input.trials, "status").unwrap())
            .map(|(a, b)| (a.unwrap(), b.unwrap()))
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            vec![
                ("t1".into(), "finished".into()),
                ("t2".into(), "running".into())
            ]
        );
        let mut values: Vec<f64> = f64_column(&input.results, "value")
            .unwrap()
            .into_iter()
            .flatten()
            .collect();
        values.sort_by(f64::total_cmp);
        assert_eq!(values, vec![0.5, 0.7]);
        assert!(input.dataset.is_none());
        assert!(input.warnings.iter().any(|w| w.contains("dataset")));
    }

    #[test]
    fn not_a_store_is_an_error_naming_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let err = read_store(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("not a store"), "{err}");
        assert!(err.contains(&tmp.path().display().to_string()), "{err}");
    }

    #[test]
    fn diagonal_concat_fills_missing_columns_with_null() {
        let a = df!("x" => [1i64], "param.a" => ["1"]).unwrap();
        let b = df!("x" => [2i64], "param.b" => ["2"]).unwrap();
        let c = concat_diagonal(vec![a, b]).unwrap();
        assert_eq!(c.shape(), (2, 3));
        assert_eq!(
            string_column(&c, "param.b").unwrap(),
            vec![None, Some("2".into())]
        );
    }
}
