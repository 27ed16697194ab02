//! The typed rows of the four store tables and their conversion to and from polars frames.
//!
//! The column names and types are the contract written in the module doc of `tracking`; the
//! frame schemas built here ([`Table::schema`]) are the only place that spells them out.

use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::*;

use super::frame::{self, Cols};
use super::{Result, TrackingError};

/// The four tables of a store (docs/store.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Trials,
    Epochs,
    Results,
    Timings,
}

impl Table {
    pub const ALL: [Table; 4] = [Table::Trials, Table::Epochs, Table::Results, Table::Timings];

    /// The folder name of the table inside the store.
    pub fn name(self) -> &'static str {
        match self {
            Table::Trials => "trials",
            Table::Epochs => "epochs",
            Table::Results => "results",
            Table::Timings => "timings",
        }
    }

    /// The fixed columns of the table, in order. `trials` parts may carry extra `param.*`
    /// string columns after these.
    pub fn schema(self) -> Schema {
        use DataType::*;
        let cols: &[(&str, DataType)] = match self {
            Table::Trials => &[
                ("sweep", String),
                ("trial_id", String),
                ("attempt", UInt32),
                ("seq", UInt32),
                ("status", String),
                ("event_ms", Int64),
                ("model", String),
                ("classes", String),
                ("fold", UInt32),
                ("seed", UInt64),
                ("preset", String),
                ("scale", String),
                ("dataset", String),
                ("dataset_fingerprint", String),
                ("config_json", String),
                ("error", String),
                ("started_ms", Int64),
                ("ended_ms", Int64),
                ("git_commit", String),
                ("git_dirty", Boolean),
                ("git_diff_sha256", String),
                ("user", String),
                ("host", String),
                ("device", String),
                ("device_name", String),
                ("compute_path", String),
                ("seglab_version", String),
                ("burn_version", String),
                ("command", String),
                ("split_id", String),
                ("split_json", String),
                ("select_metric", String),
                ("preprocess_check", String),
                ("prune_rung", UInt32),
                ("prune_epoch", UInt32),
                ("prune_value", Float64),
                ("prune_cut", Float64),
                ("threads", UInt32),
                ("tags", String),
                ("notes", String),
            ],
            Table::Epochs => &[
                ("trial_id", String),
                ("attempt", UInt32),
                ("epoch", UInt32),
                ("split", String),
                ("metric", String),
                ("value", Float64),
                ("wall_s", Float64),
            ],
            Table::Results => &[
                ("trial_id", String),
                ("attempt", UInt32),
                ("volume", String),
                ("class", String),
                ("metric", String),
                ("value", Float64),
            ],
            Table::Timings => &[
                ("trial_id", String),
                ("attempt", UInt32),
                ("phase", String),
                ("seconds", Float64),
            ],
        };
        cols.iter()
            .map(|(n, t)| Field::new((*n).into(), t.clone()))
            .collect()
    }
}

display_by_name!(Table);

/// The prefix of the flattened config columns of the `trials` table.
pub const PARAM_PREFIX: &str = "param.";

/// The status of a trial attempt, as recorded by its latest `trials` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrialStatus {
    /// Started and not (yet) ended; also what a hard-killed attempt shows until the runner marks
    /// it `interrupted`.
    Running,
    Finished,
    /// Ended with an error (the `error` column says which); the sweep continues.
    Failed,
    /// Stopped on purpose (a signal, a SLURM time limit).
    Killed,
    /// Found `running` by a later run of the sweep whose process had died.
    Interrupted,
    /// Stopped, checkpointed, by its `train.max_minutes`; a re-run resumes it.
    Timeout,
    /// Stopped, checkpointed, behind its rung's cut (`[prune]`); a re-run leaves it alone
    /// unless pruning is off. The `error` column names the rung, the value and the cut.
    Pruned,
}

impl TrialStatus {
    pub const ALL: [TrialStatus; 7] = [
        TrialStatus::Running,
        TrialStatus::Finished,
        TrialStatus::Failed,
        TrialStatus::Killed,
        TrialStatus::Interrupted,
        TrialStatus::Timeout,
        TrialStatus::Pruned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Running => "running",
            TrialStatus::Finished => "finished",
            TrialStatus::Failed => "failed",
            TrialStatus::Killed => "killed",
            TrialStatus::Interrupted => "interrupted",
            TrialStatus::Timeout => "timeout",
            TrialStatus::Pruned => "pruned",
        }
    }

    /// True once the attempt has ended (anything but `running`).
    pub fn is_terminal(self) -> bool {
        self != TrialStatus::Running
    }
}

display_by_name!(TrialStatus, as_str);

impl std::str::FromStr for TrialStatus {
    type Err = TrackingError;

    fn from_str(s: &str) -> Result<Self> {
        TrialStatus::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| TrackingError::InvalidName {
                what: "trial status",
                value: s.to_string(),
                expected: "one of running, finished, failed, killed, interrupted, timeout, pruned",
            })
    }
}

/// One status event of a trial attempt (a row of `trials`). The runner writes one when an
/// attempt starts (`running`) and one when it ends; every event repeats the attempt's full
/// description, so the latest event alone describes the attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialEvent {
    pub sweep: String,
    pub trial_id: String,
    pub attempt: u32,
    pub status: TrialStatus,
    /// When this event happened (Unix ms).
    pub event_ms: i64,
    pub model: String,
    /// Task classes in mask-channel order (stored comma-joined).
    pub classes: Vec<String>,
    pub fold: u32,
    pub seed: u64,
    pub preset: String,
    pub scale: String,
    pub dataset: String,
    pub dataset_fingerprint: String,
    /// The fully resolved trial config as canonical JSON.
    pub config_json: String,
    pub error: Option<String>,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub git_commit: String,
    pub git_dirty: bool,
    pub git_diff_sha256: Option<String>,
    pub user: String,
    pub host: String,
    /// The `--device` value: `cpu`, `wgpu:N` or `cuda:N` (the backend before the colon).
    pub device: String,
    /// The name the device gives itself (`cpu`, `NVIDIA H100 PCIe`, `llvmpipe (…)`); empty
    /// when the attempt ended before opening it, and in stores written before the column.
    pub device_name: String,
    /// Which implementation computed the layers (`crate::kernels::ComputePath`): `kernels`
    /// (seglab's CPU kernels) or `burn` (burn's operations: every GPU, and the CPU with
    /// `SEGLAB_KERNELS=burn`); empty when the attempt ended before opening its device, and in
    /// stores written before the column.
    pub compute_path: String,
    pub seglab_version: String,
    pub burn_version: String,
    /// The command line that ran the attempt.
    pub command: String,
    /// The preprocessing check of `sweep run` as JSON (`experiment::preflight`): the
    /// resolved preprocessing, per image channel the share of its class's annotated voxels
    /// mapped to 0 and Otsu's Dice, the `auto` floors; `None` when no check ran.
    pub preprocess_check: Option<String>,
    /// Swept and config values by dotted key (stored as `param.<key>` columns).
    pub params: BTreeMap<String, String>,
    /// The fold's partition: the first 12 hex digits of sha256 over `split_json`
    /// (`experiment::trial::split_identity`). Trials with the same split id saw the same
    /// training, validation and test volumes; paired comparisons pair on it. None in stores
    /// written before it was recorded.
    pub split_id: Option<String>,
    /// The fold's volume ids as canonical JSON `{"test": [..], "train": [..], "val": [..]}`.
    pub split_json: Option<String>,
    /// The validation metric of nested selection (`cv.select = "inner"`), None without it.
    pub select_metric: Option<String>,
    /// Where a `pruned` attempt was cut (`[prune]`); None for other statuses and in stores
    /// written before the columns.
    pub prune: Option<PruneCut>,
    /// The threads the attempt computed with (rayon, polars and burn's CPU backend; `--jobs`
    /// splits the cores); None in stores written before the column.
    pub threads: Option<u32>,
    /// Free-text labels of the spec and the trial's grid entry (stored comma-joined); not
    /// part of the trial id.
    pub tags: Vec<String>,
    /// Free-text notes of the spec and the trial's grid entry (blank-line separated).
    pub notes: Option<String>,
}

/// The rung a pruned attempt stopped at and the cut it was behind (columns `prune_rung`,
/// `prune_epoch`, `prune_value`, `prune_cut`).
#[derive(Clone, Debug, PartialEq)]
pub struct PruneCut {
    /// 0 for the first rung.
    pub rung: u32,
    pub epoch: u32,
    /// The trial's value at the rung.
    pub value: f64,
    /// The rung's cut: the value a trial needed to go on.
    pub cut: f64,
}

/// One column of a frame of `events`: `f` of each event.
fn column<'a, T>(events: &'a [TrialEvent], f: impl Fn(&'a TrialEvent) -> T) -> Vec<T> {
    events.iter().map(f).collect()
}

impl TrialEvent {
    /// The same attempt in a new status at `at_ms`: terminal statuses set `ended_ms`, `error`
    /// is replaced.
    pub fn with_status(&self, status: TrialStatus, at_ms: i64, error: Option<String>) -> Self {
        TrialEvent {
            status,
            event_ms: at_ms,
            ended_ms: if status.is_terminal() {
                Some(at_ms)
            } else {
                None
            },
            error,
            ..self.clone()
        }
    }

    /// The events as a `trials` frame (without `seq`, which the store assigns).
    pub(crate) fn to_frame(events: &[TrialEvent], seq: u32) -> Result<DataFrame> {
        let n = events.len();
        let s = |f: fn(&TrialEvent) -> &str| column(events, f);
        let mut cols = Cols::default();
        cols.push("sweep", s(|e| &e.sweep));
        cols.push("trial_id", s(|e| &e.trial_id));
        cols.push("attempt", column(events, |e| e.attempt));
        cols.push("seq", vec![seq; n]);
        cols.push("status", s(|e| e.status.as_str()));
        cols.push("event_ms", column(events, |e| e.event_ms));
        cols.push("model", s(|e| &e.model));
        cols.push("classes", column(events, |e| e.classes.join(",")));
        cols.push("fold", column(events, |e| e.fold));
        cols.push("seed", column(events, |e| e.seed));
        cols.push("preset", s(|e| &e.preset));
        cols.push("scale", s(|e| &e.scale));
        cols.push("dataset", s(|e| &e.dataset));
        cols.push("dataset_fingerprint", s(|e| &e.dataset_fingerprint));
        cols.push("config_json", s(|e| &e.config_json));
        cols.push("error", column(events, |e| e.error.as_deref()));
        cols.push("started_ms", column(events, |e| e.started_ms));
        cols.push("ended_ms", column(events, |e| e.ended_ms));
        cols.push("git_commit", s(|e| &e.git_commit));
        cols.push("git_dirty", column(events, |e| e.git_dirty));
        cols.push(
            "git_diff_sha256",
            column(events, |e| e.git_diff_sha256.as_deref()),
        );
        cols.push("user", s(|e| &e.user));
        cols.push("host", s(|e| &e.host));
        cols.push("device", s(|e| &e.device));
        cols.push("device_name", s(|e| &e.device_name));
        cols.push("compute_path", s(|e| &e.compute_path));
        cols.push("seglab_version", s(|e| &e.seglab_version));
        cols.push("burn_version", s(|e| &e.burn_version));
        cols.push("command", s(|e| &e.command));
        cols.push("split_id", column(events, |e| e.split_id.as_deref()));
        cols.push("split_json", column(events, |e| e.split_json.as_deref()));
        cols.push(
            "select_metric",
            column(events, |e| e.select_metric.as_deref()),
        );
        cols.push(
            "preprocess_check",
            column(events, |e| e.preprocess_check.as_deref()),
        );
        let prune = |f: fn(&PruneCut) -> u32| {
            events
                .iter()
                .map(|e| e.prune.as_ref().map(f))
                .collect::<Vec<_>>()
        };
        cols.push("prune_rung", prune(|p| p.rung));
        cols.push("prune_epoch", prune(|p| p.epoch));
        let prune_f = |f: fn(&PruneCut) -> f64| {
            events
                .iter()
                .map(|e| e.prune.as_ref().map(f))
                .collect::<Vec<_>>()
        };
        cols.push("prune_value", prune_f(|p| p.value));
        cols.push("prune_cut", prune_f(|p| p.cut));
        cols.push(
            "threads",
            events.iter().map(|e| e.threads).collect::<Vec<_>>(),
        );
        cols.push(
            "tags",
            events
                .iter()
                .map(|e| (!e.tags.is_empty()).then(|| e.tags.join(",")))
                .collect::<Vec<_>>(),
        );
        cols.push(
            "notes",
            events
                .iter()
                .map(|e| e.notes.as_deref())
                .collect::<Vec<_>>(),
        );
        let keys: BTreeSet<&String> = events.iter().flat_map(|e| e.params.keys()).collect();
        for key in keys {
            let values: Vec<Option<&str>> = events
                .iter()
                .map(|e| e.params.get(key).map(String::as_str))
                .collect();
            cols.push(&format!("{PARAM_PREFIX}{key}"), values);
        }
        cols.finish(n)
    }

    /// Reads events back from a `trials` frame (any column order; `param.*` columns become
    /// `params`, nulls are left out).
    pub fn from_frame(df: &DataFrame) -> Result<Vec<TrialEvent>> {
        let r = frame::Reader::new(df);
        let (sweep, trial_id, status, model) = (
            r.str("sweep")?,
            r.str("trial_id")?,
            r.str("status")?,
            r.str("model")?,
        );
        let (attempt, fold, seed) = (r.u32("attempt")?, r.u32("fold")?, r.u64("seed")?);
        let (event_ms, started_ms, ended_ms) =
            (r.i64("event_ms")?, r.i64("started_ms")?, r.i64("ended_ms")?);
        let (classes, preset, scale, dataset, fingerprint, config) = (
            r.str("classes")?,
            r.str("preset")?,
            r.str("scale")?,
            r.str("dataset")?,
            r.str("dataset_fingerprint")?,
            r.str("config_json")?,
        );
        let (error, git_commit, git_dirty, git_diff) = (
            r.str("error")?,
            r.str("git_commit")?,
            r.bool("git_dirty")?,
            r.str("git_diff_sha256")?,
        );
        let preprocess_check = r.str("preprocess_check")?;
        let compute_path = r.str("compute_path")?;
        let (user, host, device, device_name, sv, bv, command) = (
            r.str("user")?,
            r.str("host")?,
            r.str("device")?,
            r.str("device_name")?,
            r.str("seglab_version")?,
            r.str("burn_version")?,
            r.str("command")?,
        );
        let (split_id, split_json) = (r.str("split_id")?, r.str("split_json")?);
        let select_metric = r.str("select_metric")?;
        let (prune_rung, prune_epoch) = (r.u32("prune_rung")?, r.u32("prune_epoch")?);
        let (prune_value, prune_cut) = (r.f64("prune_value")?, r.f64("prune_cut")?);
        let (threads, tags, notes) = (r.u32("threads")?, r.str("tags")?, r.str("notes")?);
        let mut params = Vec::new();
        for name in df.get_column_names() {
            if let Some(key) = name.strip_prefix(PARAM_PREFIX) {
                params.push((key.to_string(), r.str(name)?));
            }
        }
        let own = |v: Option<&str>| v.unwrap_or_default().to_string();
        (0..df.height())
            .map(|i| {
                Ok(TrialEvent {
                    sweep: own(sweep.get(i)),
                    trial_id: own(trial_id.get(i)),
                    attempt: attempt.get(i).unwrap_or_default(),
                    status: status.get(i).unwrap_or_default().parse()?,
                    event_ms: event_ms.get(i).unwrap_or_default(),
                    model: own(model.get(i)),
                    classes: classes
                        .get(i)
                        .unwrap_or_default()
                        .split(',')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect(),
                    fold: fold.get(i).unwrap_or_default(),
                    seed: seed.get(i).unwrap_or_default(),
                    preset: own(preset.get(i)),
                    scale: own(scale.get(i)),
                    dataset: own(dataset.get(i)),
                    dataset_fingerprint: own(fingerprint.get(i)),
                    config_json: own(config.get(i)),
                    error: error.get(i).map(str::to_string),
                    started_ms: started_ms.get(i).unwrap_or_default(),
                    ended_ms: ended_ms.get(i),
                    git_commit: own(git_commit.get(i)),
                    git_dirty: git_dirty.get(i).unwrap_or_default(),
                    git_diff_sha256: git_diff.get(i).map(str::to_string),
                    user: own(user.get(i)),
                    host: own(host.get(i)),
                    device: own(device.get(i)),
                    device_name: own(device_name.get(i)),
                    compute_path: own(compute_path.get(i)),
                    seglab_version: own(sv.get(i)),
                    burn_version: own(bv.get(i)),
                    command: own(command.get(i)),
                    split_id: split_id.get(i).map(str::to_string),
                    split_json: split_json.get(i).map(str::to_string),
                    select_metric: select_metric.get(i).map(str::to_string),
                    preprocess_check: preprocess_check.get(i).map(str::to_string),
                    prune: match (prune_rung.get(i), prune_cut.get(i)) {
                        (Some(rung), Some(cut)) => Some(PruneCut {
                            rung,
                            epoch: prune_epoch.get(i).unwrap_or_default(),
                            value: prune_value.get(i).unwrap_or(f64::NAN),
                            cut,
                        }),
                        _ => None,
                    },
                    threads: threads.get(i),
                    tags: tags
                        .get(i)
                        .unwrap_or_default()
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(str::to_string)
                        .collect(),
                    notes: notes.get(i).map(str::to_string),
                    params: params
                        .iter()
                        .filter_map(|(k, c)| c.get(i).map(|v| (k.clone(), v.to_string())))
                        .collect(),
                })
            })
            .collect()
    }
}

/// One per-epoch value of a training curve (a row of `epochs`).
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRow {
    pub trial_id: String,
    pub attempt: u32,
    pub epoch: u32,
    /// `train` or `val`.
    pub split: String,
    /// A loss term or validation metric name, e.g. `loss`, `loss_g`, `dice_golgi`.
    pub metric: String,
    pub value: f64,
    /// Cumulative training wall-clock seconds of the attempt at the end of this epoch.
    pub wall_s: f64,
}

/// One test metric of one test volume and class (a row of `results`).
#[derive(Clone, Debug, PartialEq)]
pub struct ResultRow {
    pub trial_id: String,
    pub attempt: u32,
    pub volume: String,
    pub class: String,
    pub metric: String,
    pub value: f64,
}

/// The wall-clock seconds of one phase of a trial attempt (a row of `timings`).
#[derive(Clone, Debug, PartialEq)]
pub struct TimingRow {
    pub trial_id: String,
    pub attempt: u32,
    pub phase: String,
    pub seconds: f64,
}

/// What the store needs to know about a row to file it into a part.
pub(crate) trait Row: Sized {
    const TABLE: Table;
    fn trial_id(&self) -> &str;
    fn attempt(&self) -> u32;
    fn to_frame(rows: &[Self]) -> Result<DataFrame>;
}

/// A column of a long row and its cell: `str` (String, null reads as ""), `u32` (null reads as
/// 0) or `f64` (null reads as NaN, never as a number).
macro_rules! cell_to_column {
    (str, $v:expr) => {
        $v.as_str()
    };
    ($kind:ident, $v:expr) => {
        $v
    };
}

macro_rules! cell_from_column {
    (str, $v:expr) => {
        $v.unwrap_or_default().to_string()
    };
    (u32, $v:expr) => {
        $v.unwrap_or_default()
    };
    (f64, $v:expr) => {
        $v.unwrap_or(f64::NAN)
    };
}

/// The frame conversions of a long row type: [`Row`] (to a frame, columns in field order) and
/// `from_frame` (any column order). The fields are listed with their column kind.
macro_rules! long_row {
    ($row:ident, $table:expr, [$($field:ident: $kind:ident),* $(,)?]) => {
        impl Row for $row {
            const TABLE: Table = $table;
            fn trial_id(&self) -> &str {
                &self.trial_id
            }
            fn attempt(&self) -> u32 {
                self.attempt
            }
            fn to_frame(rows: &[Self]) -> Result<DataFrame> {
                let mut cols = Cols::default();
                $(cols.push(
                    stringify!($field),
                    rows.iter().map(|r| cell_to_column!($kind, r.$field)).collect::<Vec<_>>(),
                );)*
                cols.finish(rows.len())
            }
        }

        impl $row {
            /// Reads rows back from a frame of the row's table.
            pub fn from_frame(df: &DataFrame) -> Result<Vec<$row>> {
                let r = frame::Reader::new(df);
                $(let $field = r.$kind(stringify!($field))?;)*
                Ok((0..df.height())
                    .map(|i| $row {
                        $($field: cell_from_column!($kind, $field.get(i)),)*
                    })
                    .collect())
            }
        }
    };
}

long_row!(
    EpochRow,
    Table::Epochs,
    [
        trial_id: str,
        attempt: u32,
        epoch: u32,
        split: str,
        metric: str,
        value: f64,
        wall_s: f64,
    ]
);

long_row!(
    ResultRow,
    Table::Results,
    [
        trial_id: str,
        attempt: u32,
        volume: str,
        class: str,
        metric: str,
        value: f64,
    ]
);

long_row!(
    TimingRow,
    Table::Timings,
    [trial_id: str, attempt: u32, phase: str, seconds: f64]
);
