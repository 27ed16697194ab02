//! `seglab runs ls` and `seglab runs compare`: readable tables straight from a sweep's store
//! (the canonical view: one row per trial, its chosen attempt).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use polars::prelude::*;

use crate::experiment::paths::SweepPaths;
use crate::report::plots::sweep::CONTINUOUS_VALUES;
use crate::report::{Aggregation, aggregate};
use crate::tracking::{Store, TrialEvent, TrialStatus};

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub command: RunsCommand,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List the trials of a sweep: status, attempts, times, swept values.
    Ls(LsArgs),
    /// Compare test metrics: mean ± std per model and class (or other keys).
    Compare(CompareArgs),
    /// Merge the store's small part files (of ended attempts) into one per
    /// table, so that large sweeps read fast. Safe while a sweep runs.
    Compact(CompactArgs),
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// The sweep folder (experiments/<name>/) or its store/ folder.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Which trials to show.
#[derive(Debug, Args)]
pub struct TrialFilter {
    /// Keep trials whose column or param KEY equals VALUE (repeatable, all
    /// must match), e.g. --filter model=cyclegan --filter loss.golgi_weight=3.5
    #[arg(long = "filter", value_name = "KEY=VALUE", value_parser = parse_key_value, display_order = 30)]
    pub filters: Vec<(String, String)>,
    /// Keep trials in this status: running, finished, failed, killed or
    /// interrupted.
    #[arg(long, value_name = "STATUS", display_order = 31)]
    pub status: Option<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// The sweep folder (experiments/<name>/) or its store/ folder.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub filter: TrialFilter,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The sweep folder (experiments/<name>/) or its store/ folder; several
    /// sweeps of the same dataset and classes (a baseline and its ablation)
    /// compare side by side, grouped by sweep first.
    #[arg(value_name = "DIR", required = true, num_args = 1..)]
    pub dirs: Vec<PathBuf>,
    /// Test metrics to compare, comma-separated.
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        default_value = "dice",
        display_order = 20
    )]
    pub metric: Vec<String>,
    /// Group rows by these keys, comma-separated: model, class, volume,
    /// fold, seed, preset, scale or a swept param such as loss.golgi_weight.
    #[arg(
        long,
        value_name = "KEYS",
        value_delimiter = ',',
        default_value = "model,class",
        display_order = 21
    )]
    pub by: Vec<String>,
    /// How folds and seeds combine into mean ± std: over-folds (mean of
    /// fold means), over-seeds-folds (mean of trial means) or pooled (all
    /// cases at once, as nnU-Net).
    #[arg(long, default_value = "over-folds", display_order = 22)]
    pub aggregation: Aggregation,
    /// Paired comparisons of every pair of models (or configurations of a
    /// model along a swept key) on the test cases both have: mean
    /// difference, bootstrap 95 % CI, Wilcoxon, permutation and Holm p.
    #[arg(long, display_order = 23)]
    pub paired: bool,
    /// With --paired: print a JSON array, one object per comparison.
    #[arg(long, requires = "paired", display_order = 24)]
    pub json: bool,
    #[command(flatten)]
    pub filter: TrialFilter,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

pub fn run(args: RunsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RunsCommand::Ls(a) => ls(a),
        RunsCommand::Compare(a) => compare(a),
        RunsCommand::Compact(a) => compact(a),
    }
}

fn compact(args: CompactArgs) -> anyhow::Result<ExitCode> {
    let (_, store) = open_sweep(&args.dir)?;
    let report = store
        .compact()
        .with_context(|| format!("compacting {}", store.root().display()))?;
    println!(
        "{}: {} part file(s) -> {} ({} rows in compacted parts)",
        store.root().display(),
        report.parts_before,
        report.parts_after,
        report.rows_compacted
    );
    Ok(ExitCode::SUCCESS)
}

/// Opens the store of a sweep folder (or a store folder given directly).
pub(crate) fn open_sweep(dir: &Path) -> anyhow::Result<(SweepPaths, Store)> {
    let Some((paths, store_dir)) = SweepPaths::of_sweep_or_store(dir) else {
        if !dir.exists() {
            bail!("{}: no such folder", dir.display());
        }
        bail!(
            "{}: not a sweep folder (expected {} holding the sweep's store)",
            dir.display(),
            SweepPaths::new(dir).store().display()
        );
    };
    let store =
        Store::open(&store_dir).with_context(|| format!("opening {}", store_dir.display()))?;
    Ok((paths, store))
}

/// The chosen attempt of each trial with its attempt count, filtered.
fn chosen_trials(store: &Store, filter: &TrialFilter) -> anyhow::Result<Vec<(TrialEvent, u32)>> {
    let df = store.chosen_trials()?;
    let events = TrialEvent::from_frame(&df)?;
    let attempts = df.column("attempts")?.u32()?.clone();
    let status = filter
        .status
        .as_deref()
        .map(str::parse::<TrialStatus>)
        .transpose()?;
    let mut out = Vec::new();
    for (i, ev) in events.into_iter().enumerate() {
        if status.is_some_and(|s| s != ev.status) {
            continue;
        }
        let mut keep = true;
        for (k, v) in &filter.filters {
            match trial_value(&ev, k) {
                Some(have) => keep &= have == *v,
                None => bail!(
                    "--filter {k}: no such column or param (known: {})",
                    known_keys(std::slice::from_ref(&ev)).join(", ")
                ),
            }
        }
        if keep {
            out.push((ev, attempts.get(i).unwrap_or(1)));
        }
    }
    Ok(out)
}

/// The value of a trial column or param, as text (`loss.golgi_weight` and
/// `param.loss.golgi_weight` both name a param).
fn trial_value(ev: &TrialEvent, key: &str) -> Option<String> {
    let v = match key {
        "trial_id" => ev.trial_id.clone(),
        "sweep" => ev.sweep.clone(),
        "model" => ev.model.clone(),
        "classes" => ev.classes.join(","),
        "fold" => ev.fold.to_string(),
        "seed" => ev.seed.to_string(),
        "preset" => ev.preset.clone(),
        "scale" => ev.scale.clone(),
        "dataset" => ev.dataset.clone(),
        "status" => ev.status.to_string(),
        "attempt" => ev.attempt.to_string(),
        "host" => ev.host.clone(),
        "device" => ev.device.clone(),
        "git_commit" => ev.git_commit.clone(),
        "tags" => ev.tags.join(","),
        "threads" => ev.threads.map(|t| t.to_string()).unwrap_or_default(),
        _ => {
            let k = key.strip_prefix("param.").unwrap_or(key);
            return ev.params.get(k).cloned();
        }
    };
    Some(v)
}

/// The trial columns and params `--filter` accepts.
fn known_keys(events: &[TrialEvent]) -> Vec<String> {
    let mut keys: Vec<String> = [
        "model",
        "classes",
        "fold",
        "seed",
        "preset",
        "scale",
        "dataset",
        "status",
        "attempt",
        "host",
        "device",
        "git_commit",
        "trial_id",
        "tags",
        "threads",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    keys.extend(param_keys(events));
    keys
}

/// Every param key of the trials, sorted.
fn param_keys(events: &[TrialEvent]) -> Vec<String> {
    let mut params: Vec<String> = events
        .iter()
        .flat_map(|e| e.params.keys().cloned())
        .collect();
    params.sort();
    params.dedup();
    params
}

fn ls(args: LsArgs) -> anyhow::Result<ExitCode> {
    let (paths, store) = open_sweep(&args.dir)?;
    let trials = chosen_trials(&store, &args.filter)?;
    if trials.is_empty() {
        println!("no trials in {} match", paths.root().display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut trials = trials;
    trials.sort_by(|a, b| {
        (&a.0.model, a.0.fold, a.0.seed, &a.0.trial_id).cmp(&(
            &b.0.model,
            b.0.fold,
            b.0.seed,
            &b.0.trial_id,
        ))
    });
    let events: Vec<TrialEvent> = trials.iter().map(|(e, _)| e.clone()).collect();
    // Values shared by every listed trial go above the table; varying ones become columns.
    let mut candidates: Vec<String> = ["classes", "preset", "scale", "dataset"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    candidates.extend(param_keys(&events));
    let (mut same, mut varying) = (Vec::new(), Vec::new());
    for key in candidates {
        let values: Vec<Option<String>> = events.iter().map(|e| trial_value(e, &key)).collect();
        if values.iter().all(|v| *v == values[0]) {
            if let Some(v) = &values[0] {
                same.push(format!("{key}={v}"));
            }
        } else {
            varying.push(key);
        }
    }
    let mut headers: Vec<String> = [
        "trial",
        "model",
        "fold",
        "seed",
        "status",
        "attempt",
        "started (UTC)",
        "took",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    headers.extend(varying.iter().cloned());
    let extra = LsExtras::of(&events);
    headers.extend(extra.headers());
    let mut rows = Vec::new();
    for (ev, attempts) in &trials {
        let mut row = vec![
            ev.trial_id.clone(),
            ev.model.clone(),
            ev.fold.to_string(),
            ev.seed.to_string(),
            ev.status.to_string(),
            format!("{}/{}", ev.attempt, attempts),
            format_utc(ev.started_ms),
            ev.ended_ms
                .map(|e| format_duration(e - ev.started_ms))
                .unwrap_or_else(|| "-".into()),
        ];
        row.extend(
            varying
                .iter()
                .map(|k| trial_value(ev, k).unwrap_or_else(|| "-".into())),
        );
        row.extend(extra.cells(ev));
        rows.push(row);
    }
    let numeric: Vec<bool> = headers
        .iter()
        .map(|h| {
            matches!(
                h.as_str(),
                "fold" | "seed" | "attempt" | "took" | "rung" | "value" | "cut"
            )
        })
        .collect();
    println!("sweep {} ({})", events[0].sweep, paths.root().display());
    if !same.is_empty() {
        println!("all listed trials: {}", same.join(", "));
    }
    print!("{}", render_table(&headers, &rows, &numeric));
    let mut counts: BTreeMap<TrialStatus, usize> = BTreeMap::new();
    for (ev, _) in &trials {
        *counts.entry(ev.status).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    println!("{} trials: {}", trials.len(), parts.join(", "));
    print_notes(&events);
    let errors: Vec<&TrialEvent> = events.iter().filter(|e| e.error.is_some()).collect();
    if !errors.is_empty() {
        println!("\nerrors:");
        for e in errors {
            println!(
                "  {} (attempt {}): {}",
                e.trial_id,
                e.attempt,
                e.error.as_deref().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The columns `runs ls` adds when some listed trial has them: where pruned trials stopped
/// (`rung` as `k (epoch e)`, their `value` and the rung's `cut`) and the `tags`.
struct LsExtras {
    pruned: bool,
    tags: bool,
}

impl LsExtras {
    fn of(events: &[TrialEvent]) -> Self {
        LsExtras {
            pruned: events.iter().any(|e| e.prune.is_some()),
            tags: events.iter().any(|e| !e.tags.is_empty()),
        }
    }

    fn headers(&self) -> Vec<String> {
        let mut h = Vec::new();
        if self.pruned {
            h.extend(["rung", "value", "cut"].map(String::from));
        }
        if self.tags {
            h.push("tags".into());
        }
        h
    }

    fn cells(&self, ev: &TrialEvent) -> Vec<String> {
        let mut c = Vec::new();
        if self.pruned {
            match &ev.prune {
                Some(p) => c.extend([
                    format!("{} (epoch {})", p.rung, p.epoch),
                    format!("{:.4}", p.value),
                    format!("{:.4}", p.cut),
                ]),
                None => c.extend(["-", "-", "-"].map(String::from)),
            }
        }
        if self.tags {
            c.push(if ev.tags.is_empty() {
                "-".into()
            } else {
                ev.tags.join(", ")
            });
        }
        c
    }
}

/// Each distinct `notes` text of the listed trials once, with how many trials carry it.
fn print_notes(events: &[TrialEvent]) {
    let mut notes: Vec<(&str, usize)> = Vec::new();
    for n in events.iter().filter_map(|e| e.notes.as_deref()) {
        match notes.iter_mut().find(|(t, _)| *t == n) {
            Some((_, count)) => *count += 1,
            None => notes.push((n, 1)),
        }
    }
    if notes.is_empty() {
        return;
    }
    println!("\nnotes:");
    for (text, count) in notes {
        println!("  ({count} trial(s)) {}", text.replace('\n', "\n    "));
    }
}

/// One sweep of `runs compare`: its folder, its chosen trials (filtered) and its canonical
/// view.
struct ComparedSweep {
    paths: SweepPaths,
    trials: Vec<(TrialEvent, u32)>,
    canonical: crate::tracking::Canonical,
}

/// Opens the sweeps of `dirs` and checks that they can be compared: the same dataset
/// (content fingerprint) and the same task classes.
fn compared_sweeps(dirs: &[PathBuf], filter: &TrialFilter) -> anyhow::Result<Vec<ComparedSweep>> {
    let mut out: Vec<ComparedSweep> = Vec::new();
    for dir in dirs {
        let (paths, store) = open_sweep(dir)?;
        let trials = chosen_trials(&store, filter)?;
        let canonical = store.canonical()?;
        out.push(ComparedSweep {
            paths,
            trials,
            canonical,
        });
    }
    let identity = |s: &ComparedSweep| -> (BTreeSet<String>, BTreeSet<String>) {
        s.trials
            .iter()
            .map(|(e, _)| (e.dataset_fingerprint.clone(), e.classes.join(",")))
            .unzip()
    };
    if let Some((first, rest)) = out.split_first() {
        let (data0, classes0) = identity(first);
        for other in rest {
            let (data, classes) = identity(other);
            let (a, b) = (first.paths.root().display(), other.paths.root().display());
            if data != data0 {
                bail!(
                    "runs compare: {b} ran on other data than {a} (dataset fingerprints {} vs \
                     {}); compare sweeps of the same dataset",
                    join_set(&data),
                    join_set(&data0)
                );
            }
            if classes != classes0 {
                bail!(
                    "runs compare: {b} has task classes {} where {a} has {}; compare sweeps of \
                     the same classes",
                    join_set(&classes),
                    join_set(&classes0)
                );
            }
        }
    }
    Ok(out)
}

fn join_set(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "(none)".into()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

/// `trials` with a null text column for each of `names` it lacks (a param only another
/// compared sweep has).
fn with_missing_columns(trials: &DataFrame, names: &[String]) -> anyhow::Result<DataFrame> {
    let mut df = trials.clone();
    for name in names {
        if df.column(name).is_err() {
            df.with_column(Column::full_null(
                name.as_str().into(),
                df.height(),
                &DataType::String,
            ))?;
        }
    }
    Ok(df)
}

fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let mut filter_status = args.filter.status.clone();
    if filter_status.is_none() {
        filter_status = Some(TrialStatus::Finished.to_string());
    }
    let filter = TrialFilter {
        filters: args.filter.filters.clone(),
        status: filter_status,
    };
    let sweeps = compared_sweeps(&args.dirs, &filter)?;
    if args.paired {
        if let [one] = sweeps.as_slice() {
            return compare_paired(&args, &one.trials, &one.canonical);
        }
        let (trials, canonical) = merged_for_pairing(&sweeps)?;
        return compare_paired(&args, &trials, &canonical);
    }
    let mut trial_cols: Vec<String> = Vec::new();
    for s in &sweeps {
        for c in s.canonical.trials.get_column_names() {
            if !trial_cols.iter().any(|t| t == c.as_str()) {
                trial_cols.push(c.to_string());
            }
        }
    }
    let mut by_keys: Vec<String> = args.by.iter().map(|k| k.trim().to_string()).collect();
    if sweeps.len() > 1 && !by_keys.iter().any(|k| k == "sweep") {
        by_keys.insert(0, "sweep".into());
    }
    let result_cols = ["volume", "class", "metric"];
    // Resolve --by keys to result columns or trial columns (a bare param name is fine).
    let mut by_cols: Vec<String> = Vec::new();
    let mut join_cols: Vec<String> = Vec::new();
    for key in &by_keys {
        let key = key.as_str();
        let col = if result_cols.contains(&key) {
            key.to_string()
        } else if trial_cols.iter().any(|c| c == key) && !key.starts_with("__") {
            join_cols.push(key.to_string());
            key.to_string()
        } else if trial_cols.iter().any(|c| *c == format!("param.{key}")) {
            join_cols.push(format!("param.{key}"));
            format!("param.{key}")
        } else {
            let params: Vec<&str> = trial_cols
                .iter()
                .filter_map(|c| c.strip_prefix("param."))
                .collect();
            bail!(
                "--by {key}: unknown key (use volume, class, model, fold, seed, preset, scale, classes, dataset, sweep{}{})",
                if params.is_empty() {
                    ""
                } else {
                    " or a param: "
                },
                params.join(", ")
            );
        };
        if key != "metric" {
            by_cols.push(col);
        }
    }
    if !join_cols.iter().any(|c| c == "fold") {
        join_cols.push("fold".into());
    }
    let join_refs: Vec<&str> = join_cols.iter().map(String::as_str).collect();
    let metrics: HashSet<&str> = args.metric.iter().map(|m| m.trim()).collect();
    let mut parts: Vec<DataFrame> = Vec::new();
    for s in &sweeps {
        let mut canonical = s.canonical.clone();
        canonical.trials = with_missing_columns(&canonical.trials, &join_cols)?;
        let results = canonical.results_with(&join_refs)?;
        let ids: HashSet<&str> = s.trials.iter().map(|(e, _)| e.trial_id.as_str()).collect();
        let keep: BooleanChunked = results
            .column("trial_id")?
            .str()?
            .iter()
            .zip(results.column("metric")?.str()?.iter())
            .map(|pair| match pair {
                (Some(t), Some(m)) => ids.contains(t) && metrics.contains(m),
                _ => false,
            })
            .collect();
        parts.push(results.filter(&keep)?);
    }
    // Every part has the same columns: the results' and the joined trial columns.
    let mut parts = parts.into_iter();
    let mut rows = parts.next().expect("at least one sweep");
    for part in parts {
        rows.vstack_mut_owned(part)?;
    }
    let trials: Vec<&(TrialEvent, u32)> = sweeps.iter().flat_map(|s| &s.trials).collect();
    let places: Vec<String> = sweeps
        .iter()
        .map(|s| s.paths.root().display().to_string())
        .collect();
    let places = places.join(", ");
    if rows.height() == 0 {
        println!(
            "no results for metric(s) {} among the {} matching trial(s) in {places}",
            args.metric.join(", "),
            trials.len(),
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(key) = continuous_key(&rows, &by_cols)? {
        println!(
            "{places}: test metrics of {} trial(s) against {} (a continuous key)",
            trials.len(),
            key.strip_prefix("param.").unwrap_or(&key)
        );
        return compare_continuous(&args, &rows, &by_cols, &key);
    }
    let mut group: Vec<&str> = by_cols.iter().map(String::as_str).collect();
    group.push("metric");
    let summary = aggregate(&rows, &group, args.aggregation)?;
    println!("{}", args.aggregation.describe());
    let mut headers: Vec<String> = by_cols
        .iter()
        .map(|c| c.strip_prefix("param.").unwrap_or(c).to_string())
        .collect();
    headers.extend(["metric", "mean ± std", "n", "NaN", "trials"].map(String::from));
    let mut table = Vec::new();
    for i in 0..summary.height() {
        let mut row = Vec::new();
        for c in &group {
            row.push(cell_text(summary.column(c)?.get(i)?));
        }
        let mean = summary.column("mean")?.f64()?.get(i);
        let std = summary.column("std")?.f64()?.get(i);
        row.push(match (mean, std) {
            (None, _) => "NaN".into(),
            (Some(m), Some(s)) => format!("{m:.4} ± {s:.4}"),
            (Some(m), None) => format!("{m:.4}"),
        });
        row.push(summary.column("n")?.u32()?.get(i).unwrap_or(0).to_string());
        for stat in ["n_nan", "n_trials"] {
            row.push(summary.column(stat)?.u32()?.get(i).unwrap_or(0).to_string());
        }
        table.push(row);
    }
    let numeric: Vec<bool> = headers
        .iter()
        .map(|h| {
            matches!(
                h.as_str(),
                "mean ± std" | "n" | "NaN" | "trials" | "fold" | "seed"
            )
        })
        .collect();
    println!(
        "{places}: test metrics of {} {} trial(s), pooled over every (trial, test volume) row; NaN rows are left out of mean ± std (sample std) and counted",
        trials.len(),
        filter.status.as_deref().unwrap_or("")
    );
    print!("{}", render_table(&headers, &table, &numeric));
    Ok(ExitCode::SUCCESS)
}

/// The first `--by` param whose values in `rows` are numbers, at least
/// [`CONTINUOUS_VALUES`] of them (a key drawn by a random or Sobol `[search]`).
fn continuous_key(rows: &DataFrame, by_cols: &[String]) -> anyhow::Result<Option<String>> {
    for c in by_cols.iter().filter(|c| c.starts_with("param.")) {
        let values: BTreeSet<&str> = rows.column(c)?.str()?.iter().flatten().collect();
        if values.len() >= CONTINUOUS_VALUES && values.iter().all(|v| v.parse::<f64>().is_ok()) {
            return Ok(Some(c.clone()));
        }
    }
    Ok(None)
}

/// The values of the other `--by` keys and the metric, with the points of that group.
type ScatterGroup = (Vec<String>, Vec<(f64, f64)>);

/// `runs compare` with a continuous `key`: instead of one row per value (one per drawn
/// point), one row per group of the other keys with the points' range, their count,
/// Spearman's ρ between the key and the score (each point's mean), and the best point.
fn compare_continuous(
    args: &CompareArgs,
    rows: &DataFrame,
    by_cols: &[String],
    key: &str,
) -> anyhow::Result<ExitCode> {
    let mut group: Vec<&str> = by_cols
        .iter()
        .map(String::as_str)
        .filter(|c| *c != key)
        .collect();
    group.push("metric");
    let mut per_point = group.clone();
    per_point.insert(per_point.len() - 1, key);
    let points = aggregate(rows, &per_point, args.aggregation)?;
    // (the other keys' values, then the metric) → the points (key value, mean).
    let mut groups: Vec<ScatterGroup> = Vec::new();
    for i in 0..points.height() {
        let g: Vec<String> = group
            .iter()
            .map(|c| Ok(cell_text(points.column(c)?.get(i)?)))
            .collect::<anyhow::Result<_>>()?;
        let x = cell_text(points.column(key)?.get(i)?).parse::<f64>();
        let (Ok(x), Some(mean)) = (x, points.column("mean")?.f64()?.get(i)) else {
            continue;
        };
        match groups.iter_mut().find(|(k, _)| *k == g) {
            Some((_, p)) => p.push((x, mean)),
            None => groups.push((g, vec![(x, mean)])),
        }
    }
    let name = key.strip_prefix("param.").unwrap_or(key);
    let mut headers: Vec<String> = group
        .iter()
        .map(|c| c.strip_prefix("param.").unwrap_or(c).to_string())
        .collect();
    headers.extend([
        format!("{name} range"),
        "points".into(),
        "Spearman ρ".into(),
        format!("best {name}"),
        "best mean".into(),
    ]);
    let mut table = Vec::new();
    for (g, pts) in &groups {
        let metric = g.last().map(String::as_str).unwrap_or_default();
        let higher = crate::report::higher_is_better(metric);
        let (xs, ys): (Vec<f64>, Vec<f64>) = pts.iter().copied().unzip();
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let best = pts
            .iter()
            .filter(|p| p.1.is_finite())
            .max_by(|a, b| {
                if higher {
                    a.1.total_cmp(&b.1)
                } else {
                    b.1.total_cmp(&a.1)
                }
            })
            .copied();
        let rho = crate::stats::spearman::spearman(&xs, &ys);
        let mut row = g.clone();
        row.push(format!("{} – {}", style_number(lo), style_number(hi)));
        row.push(pts.len().to_string());
        row.push(if rho.is_nan() {
            "–".into()
        } else {
            format!("{rho:+.3}")
        });
        match best {
            Some((x, y)) => row.extend([style_number(x), format!("{y:.4}")]),
            None => row.extend(["–".to_string(), "–".to_string()]),
        }
        table.push(row);
    }
    let numeric: Vec<bool> = headers
        .iter()
        .enumerate()
        .map(|(i, _)| i >= group.len())
        .collect();
    println!(
        "each point: one value of {name} with its mean over the rows ({}); ρ: Spearman's rank \
         correlation of {name} and that mean",
        args.aggregation.describe()
    );
    print!("{}", render_table(&headers, &table, &numeric));
    Ok(ExitCode::SUCCESS)
}

/// A key value as written in specs: up to 6 significant digits, no trailing zeros.
fn style_number(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let s = format!("{v:.5e}");
    s.parse::<f64>().map_or(s, |x| {
        let t = format!("{x}");
        if t.len() > 12 { format!("{x:.4e}") } else { t }
    })
}

/// Several sweeps as one for `--paired`: each trial id becomes `<sweep>/<id>` (sweeps that
/// share configurations share ids) and each trial gets the key `sweep`, so the arms are told
/// apart (`unet3d sweep=ablation`) and pair on the test cases both sweeps have (same dataset
/// and partition: the same split ids).
fn merged_for_pairing(
    sweeps: &[ComparedSweep],
) -> anyhow::Result<(Vec<(TrialEvent, u32)>, crate::tracking::Canonical)> {
    let mut trials = Vec::new();
    let (mut trial_frames, mut result_frames) = (Vec::new(), Vec::new());
    for s in sweeps {
        let name = s
            .paths
            .root()
            .file_name()
            .map_or_else(|| "sweep".into(), |n| n.to_string_lossy().into_owned());
        let renamed = |df: &DataFrame| -> anyhow::Result<DataFrame> {
            let ids: StringChunked = df
                .column("trial_id")?
                .str()?
                .iter()
                .map(|v| v.map(|v| format!("{name}/{v}")))
                .collect();
            let mut df = df.clone();
            df.with_column(ids.with_name("trial_id".into()).into_column())?;
            Ok(df)
        };
        let mut t = renamed(&s.canonical.trials)?;
        t.with_column(Column::new(
            "param.sweep".into(),
            vec![name.clone(); t.height()],
        ))?;
        trial_frames.push(t);
        result_frames.push(renamed(&s.canonical.results)?);
        trials.extend(s.trials.iter().map(|(e, n)| {
            let mut e = e.clone();
            e.trial_id = format!("{name}/{}", e.trial_id);
            (e, *n)
        }));
    }
    let mut canonical = sweeps[0].canonical.clone();
    canonical.trials = stack_aligned(trial_frames)?;
    canonical.results = stack_aligned(result_frames)?;
    Ok((trials, canonical))
}

/// Stacks frames whose columns differ only by text columns some lack (params of one sweep):
/// those become nulls, in the order of first appearance.
fn stack_aligned(frames: Vec<DataFrame>) -> anyhow::Result<DataFrame> {
    let mut names: Vec<String> = Vec::new();
    for df in &frames {
        for c in df.get_column_names() {
            if !names.iter().any(|n| n == c.as_str()) {
                names.push(c.to_string());
            }
        }
    }
    let mut out: Option<DataFrame> = None;
    for df in frames {
        let df = with_missing_columns(&df, &names)?.select(names.iter().map(String::as_str))?;
        match out.as_mut() {
            None => out = Some(df),
            Some(o) => {
                o.vstack_mut_owned(df)?;
            }
        }
    }
    out.ok_or_else(|| anyhow::anyhow!("no sweep to compare"))
}

/// `runs compare --paired`: the comparisons of `report::paired` for the chosen trials.
fn compare_paired(
    args: &CompareArgs,
    trials: &[(TrialEvent, u32)],
    canonical: &crate::tracking::Canonical,
) -> anyhow::Result<ExitCode> {
    use crate::report::paired::{CASE_UNIT, paired_comparisons};
    let ids: HashSet<&str> = trials.iter().map(|(e, _)| e.trial_id.as_str()).collect();
    let keep: BooleanChunked = canonical
        .trials
        .column("trial_id")?
        .str()?
        .iter()
        .map(|t| t.is_some_and(|t| ids.contains(t)))
        .collect();
    let chosen = canonical.trials.filter(&keep)?;
    let metrics: Vec<String> = args.metric.iter().map(|m| m.trim().to_string()).collect();
    let settings = crate::stats::PairedSettings::default();
    let rows = paired_comparisons(&chosen, &canonical.results, &metrics, &settings)?;
    if args.json {
        let array: Vec<serde_json::Value> = rows.iter().map(|r| r.to_json()).collect();
        println!("{}", serde_json::to_string_pretty(&array)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "paired unit: {CASE_UNIT}; n = cases both arms have with finite values (dropped: cases \
         with a non-finite value). mean diff = mean(a − b); 95 % CI: percentile bootstrap, {} \
         resamples of cases within folds (seed {}); p Wilcoxon: two-sided signed-rank (method \
         as scipy's default); p perm: two-sided sign-flip permutation test of the mean (exact \
         up to {} patterns); p Holm: Wilcoxon p, Holm-adjusted over the comparisons of one \
         metric and class; t corr: corrected resampled t-test of the fold means (Nadeau & \
         Bengio 2003), one value per fold, df = folds − 1.",
        settings.bootstrap_resamples, settings.seed, settings.permutation_resamples
    );
    if rows.is_empty() {
        println!(
            "no pair of arms shares a test case among {} trial(s)",
            trials.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let headers: Vec<String> = [
        "metric",
        "class",
        "a",
        "b",
        "n",
        "dropped",
        "folds",
        "mean diff",
        "95% CI",
        "p Wilcoxon",
        "p perm",
        "p Holm",
        "p t corr",
    ]
    .map(String::from)
    .to_vec();
    let table: Vec<Vec<String>> = rows.iter().map(paired_cells).collect();
    let numeric: Vec<bool> = (0..headers.len()).map(|i| i >= 4).collect();
    print!("{}", render_table(&headers, &table, &numeric));
    Ok(ExitCode::SUCCESS)
}

fn paired_cells(r: &crate::report::paired::ComparisonRow) -> Vec<String> {
    let p = |v: f64| {
        if v.is_nan() {
            "–".to_string()
        } else if v < 1e-4 {
            format!("{v:.1e}")
        } else {
            format!("{v:.4}")
        }
    };
    vec![
        r.metric.clone(),
        r.class.clone(),
        r.a.clone(),
        r.b.clone(),
        r.n.to_string(),
        r.n_dropped.to_string(),
        r.folds.to_string(),
        if r.n == 0 {
            "–".into()
        } else {
            format!("{:+.4}", r.mean_diff)
        },
        if r.ci_low.is_finite() && r.ci_high.is_finite() {
            format!("[{:+.4}, {:+.4}]", r.ci_low, r.ci_high)
        } else {
            "–".into()
        },
        p(r.p_wilcoxon),
        p(r.p_permutation),
        p(r.p_holm),
        r.fold_t_test.map_or("–".into(), |t| p(t.p_value)),
    ]
}

fn cell_text(v: AnyValue<'_>) -> String {
    match v {
        AnyValue::Null => "-".into(),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// Renders an aligned plain-text table (numbers right-aligned), never truncating a cell.
pub(crate) fn render_table(headers: &[String], rows: &[Vec<String>], right: &[bool]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w - width(cell);
            if i > 0 {
                out.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&line(&rule));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of Unix milliseconds.
pub(crate) fn format_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A short duration: `45s`, `12m05s`, `3h07m`.
pub(crate) fn format_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_and_durations() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_763_774_096_000), "2025-11-22 01:14:56");
        assert_eq!(format_duration(59_999), "59s");
        assert_eq!(format_duration(725_000), "12m05s");
        assert_eq!(format_duration(11_220_000), "3h07m");
    }

    #[test]
    fn tables_align_without_truncating() {
        let t = render_table(
            &["a".into(), "n".into()],
            &[
                vec!["long value".into(), "1".into()],
                vec!["x".into(), "100".into()],
            ],
            &[false, true],
        );
        assert_eq!(
            t,
            "a             n\n----------  ---\nlong value    1\nx           100\n"
        );
    }

    #[test]
    fn filters_parse_as_key_value() {
        assert_eq!(
            parse_key_value("loss.golgi_weight=3.5").unwrap(),
            ("loss.golgi_weight".into(), "3.5".into())
        );
        assert!(parse_key_value("model").is_err());
        assert!(parse_key_value("=x").is_err());
    }
}
