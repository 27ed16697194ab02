//! The trials of a sweep: [`expand`] turns a [`SweepSpec`] into [`Trial`]s, each with its
//! fully resolved [`TrialConfig`] and a content-hash id (docs/design.md §1).
//!
//! Expansion validates everything before the first trial runs: the dataset
//! opens and has the spec's classes, the split scheme fits the volumes, every `[[grid]]` key
//! exists in the config of every model of its block (an unknown key names the nearest valid
//! one), every `[set]` key exists for at least one trial, and every resolved config
//! validates. Errors name the spec file and the block.
//!
//! With a `[search]` ([`super::search`]) each cell of a block's product runs once per drawn
//! point: the point's values override the config after `[set]` and the grid values (and
//! before `--set`), on the trials whose config has the key; a space key no model has is an
//! error. A plain grid has one empty point, so its trials and ids are those of a spec without
//! `[search]`.
//!
//! Trial id = the first 12 hex digits of sha256 over the canonical JSON of
//! `{config, fold, seed, cv, dataset}` (dataset = the dataset fingerprint; cv = the split
//! scheme, with an explicit splits file identified by the hash of its contents rather than its
//! path). Moving the sweep or the dataset keeps the ids; changing a config value, the data or
//! the split changes them.
//!
//! The partition is seeded by `cv.split_seed`, not by the trial seed (the trial seed varies
//! initialisation and sampling only), so all seeds of a spec see the same folds. The cv
//! identity names `split_seed` only where it differs from the trial seed
//! ([`cv_identity_for_seed`]), so that a trial whose seed equals the split seed has the id
//! that stores written without `cv.split_seed` hold for it (docs/sweeps.md). Each trial
//! records its fold as [`split_identity`].

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::ExperimentError;
use super::provenance::{Provenance, hex};
use super::spec::{GridBlock, Labels, SweepSpec};
use crate::dataset::Dataset;
use crate::dataset::splits::{Fold, SplitScheme, make_splits};
use crate::tracking::{TrialEvent, TrialStatus};
use crate::train::TrialConfig;
use crate::train::config::canonical_json;

/// Hex digits of a trial id.
pub const TRIAL_ID_LEN: usize = 12;

/// One trial of a sweep: a resolved config on one fold and seed of one dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    pub sweep: String,
    pub trial_id: String,
    pub config: TrialConfig,
    pub fold: u32,
    pub seed: u64,
    pub scheme: SplitScheme,
    /// Seed of the partition (`cv.split_seed`).
    pub split_seed: u64,
    /// The fold's volume ids as canonical JSON and its hash ([`split_identity`]).
    pub split_json: String,
    pub split_id: String,
    /// `cv.select_metric` when the spec asks for nested selection.
    pub select_metric: Option<String>,
    pub dataset: PathBuf,
    pub dataset_fingerprint: String,
    /// The swept and `[set]` keys of this trial with their values (the `param.*` columns).
    pub params: BTreeMap<String, String>,
    /// The free-text `tags` of the spec and of the trial's grid block (not part of the id).
    pub tags: Vec<String>,
    /// The `notes` of the spec and of the trial's grid block.
    pub notes: Option<String>,
}

impl Trial {
    /// The trial's event for `attempt` in `status`, with provenance, started at `started_ms`.
    pub fn event(
        &self,
        attempt: u32,
        status: TrialStatus,
        started_ms: i64,
        device: &str,
        prov: &Provenance,
    ) -> TrialEvent {
        let now = crate::tracking::now_ms();
        TrialEvent {
            sweep: self.sweep.clone(),
            trial_id: self.trial_id.clone(),
            attempt,
            status,
            event_ms: now,
            model: self.config.model.name().to_string(),
            classes: self.config.classes.clone(),
            fold: self.fold,
            seed: self.seed,
            preset: self.config.preset.name().to_string(),
            scale: self.config.scale.name().to_string(),
            dataset: self.dataset.display().to_string(),
            dataset_fingerprint: self.dataset_fingerprint.clone(),
            config_json: self.config.canonical_json(),
            error: None,
            started_ms,
            ended_ms: status.is_terminal().then_some(now),
            git_commit: prov.git_commit.clone(),
            git_dirty: prov.git_dirty,
            git_diff_sha256: prov.git_diff_sha256.clone(),
            user: prov.user.clone(),
            host: prov.host.clone(),
            device: device.to_string(),
            device_name: String::new(),
            compute_path: String::new(),
            seglab_version: prov.seglab_version.clone(),
            burn_version: prov.burn_version.clone(),
            command: prov.command.clone(),
            preprocess_check: None,
            params: self.params.clone(),
            split_id: Some(self.split_id.clone()),
            split_json: Some(self.split_json.clone()),
            select_metric: self.select_metric.clone(),
            prune: None,
            threads: None,
            tags: self.tags.clone(),
            notes: self.notes.clone(),
        }
    }
}

/// The trial id of (config, fold, seed, cv identity, dataset fingerprint).
pub fn trial_id(
    config: &TrialConfig,
    fold: u32,
    seed: u64,
    cv: &Value,
    fingerprint: &str,
) -> String {
    let doc = json!({
        "config": config.identity_value(),
        "fold": fold,
        "seed": seed,
        "cv": cv,
        "dataset": fingerprint,
    });
    let digest = Sha256::digest(canonical_json(&doc).as_bytes());
    hex(&digest)[..TRIAL_ID_LEN].to_string()
}

/// The canonical JSON `{"test": [..], "train": [..], "val": [..]}` of a fold's volume ids
/// (each list sorted) and its id: the first 12 hex digits of its sha256.
pub fn split_identity(fold: &Fold) -> (String, String) {
    let sorted = |ids: &[String]| {
        let mut v = ids.to_vec();
        v.sort();
        v
    };
    let doc = json!({
        "test": sorted(&fold.test),
        "train": sorted(&fold.train),
        "val": sorted(&fold.val),
    });
    let text = canonical_json(&doc);
    let id = hex(&Sha256::digest(text.as_bytes()))[..TRIAL_ID_LEN].to_string();
    (text, id)
}

/// The cv identity of a trial with seed `seed` (module doc): `split_seed` joins it only when
/// the scheme shuffles and the split seed differs from the trial seed.
pub fn cv_identity_for_seed(cv: &Value, scheme: &SplitScheme, split_seed: u64, seed: u64) -> Value {
    let shuffles = matches!(
        scheme,
        SplitScheme::KFold { .. } | SplitScheme::Nested { .. } | SplitScheme::LeaveOneOut
    );
    let mut cv = cv.clone();
    if shuffles && split_seed != seed {
        cv["split_seed"] = json!(split_seed);
    }
    cv
}

/// What identifies a split scheme in trial ids: its name and k, or the contents of an explicit
/// splits file.
fn cv_identity(scheme: &SplitScheme) -> Result<Value, ExperimentError> {
    Ok(match scheme {
        SplitScheme::KFold { k } => json!({"scheme": "kfold", "k": k}),
        SplitScheme::Nested { k } => json!({"scheme": "nested", "k": k}),
        SplitScheme::LeaveOneOut => json!({"scheme": "leave-one-out"}),
        SplitScheme::Explicit(path) => {
            let bytes = std::fs::read(path).map_err(|source| ExperimentError::Io {
                path: path.clone(),
                source,
            })?;
            json!({"scheme": "explicit", "file_sha256": hex(&Sha256::digest(&bytes))})
        }
        // The folds themselves are part of dataset.toml, hence of the dataset fingerprint.
        SplitScheme::Named(name) => json!({"scheme": "split", "name": name}),
    })
}

/// True when the dotted `key` names a node of the config tree.
fn has_key(tree: &Value, key: &str) -> bool {
    let mut node = tree;
    for part in key.split('.') {
        match node.get(part) {
            Some(child) => node = child,
            None => return false,
        }
    }
    true
}

/// The value of a swept key as it lands in a `param.*` column.
fn param_text(config: &TrialConfig, key: &str) -> String {
    let tree = config.to_value();
    let mut node = &tree;
    for part in key.split('.') {
        node = &node[part];
    }
    match node {
        Value::String(s) => s.clone(),
        other => canonical_json(other),
    }
}

/// All combinations of the axes' values (the Cartesian product), in axis order.
fn product(axes: &[(String, Vec<Value>)]) -> Vec<Vec<(String, Value)>> {
    let mut out: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for (key, values) in axes {
        out = out
            .into_iter()
            .flat_map(|combo| {
                values.iter().map(move |v| {
                    let mut c = combo.clone();
                    c.push((key.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    out
}

/// Expands a spec into its trials (see the module doc), validating all of them. Duplicate
/// trials (two blocks giving the same config) are kept once, in first-appearance order.
pub fn expand(spec: &SweepSpec) -> Result<Vec<Trial>, ExperimentError> {
    let folds = SweepFolds::of(spec)?;
    // The points of `[search]`; one empty point for a plain grid, which keeps its ids.
    let draws = spec
        .search
        .as_ref()
        .map_or_else(|| vec![Vec::new()], |s| s.draws());
    let mut used = KeysUsed::default();
    let mut trials = TrialList::default();
    for (gi, block) in spec.grids.iter().enumerate() {
        let bfail = |m: String| spec_error(spec, format!("grid[{gi}]: {m}"));
        let models = block.models.clone().unwrap_or_else(|| spec.models.clone());
        let classes = block
            .classes
            .clone()
            .unwrap_or_else(|| vec![spec.classes.clone()]);
        let presets = block.presets.clone().unwrap_or_else(|| vec![spec.preset]);
        let scales = block.scales.clone().unwrap_or_else(|| vec![spec.scale]);
        let labels = spec.labels.with(&block.labels);
        for model in &models {
            for cls in &classes {
                folds.check_classes(spec, cls)?;
                for &preset in &presets {
                    for &scale in &scales {
                        let base = TrialConfig::resolve(*model, cls, preset, scale)
                            .map_err(|e| bfail(format!("{}: {e}", model.name())))?;
                        let cell = CellOverrides::of(spec, block, &base, &draws, &mut used)
                            .map_err(bfail)?;
                        for (all, combo) in cell.combinations(&block.axes) {
                            let config = base.apply_overrides(&all).map_err(|e| {
                                let what = combo
                                    .iter()
                                    .map(|(k, v)| format!("{k} = {v}"))
                                    .collect::<Vec<_>>()
                                    .join(", ");
                                bfail(format!("{} with {what}: {e}", model.name()))
                            })?;
                            let params: BTreeMap<String, String> = all
                                .iter()
                                .map(|(k, _)| (k.clone(), param_text(&config, k)))
                                .collect();
                            let cell = TrialCell {
                                config: &config,
                                params: &params,
                                labels: &labels,
                            };
                            folds.add_trials(spec, &cell, &mut trials);
                        }
                    }
                }
            }
        }
    }
    used.check(spec)?;
    Ok(trials.trials)
}

/// One configuration of a grid cell with what its trials record besides it.
struct TrialCell<'a> {
    config: &'a TrialConfig,
    params: &'a BTreeMap<String, String>,
    labels: &'a Labels,
}

/// A spec error of `spec` with `message`.
fn spec_error(spec: &SweepSpec, message: String) -> ExperimentError {
    ExperimentError::Spec {
        path: spec.file.clone(),
        message,
    }
}

/// The folds a sweep runs and what identifies them: the phase of [`expand`] that reads the
/// dataset and partitions its volumes.
struct SweepFolds {
    fingerprint: String,
    /// `(split_json, split_id)` of every fold of the partition ([`split_identity`]).
    splits: Vec<(String, String)>,
    /// The folds that run: `cv.run_folds`, else all.
    run: Vec<u32>,
    /// The split scheme's identity ([`cv_identity`]).
    cv: Value,
    mask_channels: Vec<String>,
}

impl SweepFolds {
    fn of(spec: &SweepSpec) -> Result<Self, ExperimentError> {
        let fail = |message: String| spec_error(spec, message);
        let dataset = Dataset::open(&spec.dataset).map_err(|e| fail(format!("dataset: {e}")))?;
        let fingerprint = dataset
            .fingerprint()
            .map_err(|e| fail(format!("dataset: {e}")))?;
        let partition = match &spec.cv.scheme {
            SplitScheme::Named(name) => dataset.named_folds(name),
            scheme => make_splits(
                &dataset.ids(),
                &dataset.groups(),
                scheme,
                spec.cv.split_seed,
            ),
        }
        .map_err(|e| fail(format!("cv: {e}")))?;
        let splits: Vec<(String, String)> = partition.iter().map(split_identity).collect();
        let folds = partition.len() as u32;
        let run: Vec<u32> = match &spec.cv.run_folds {
            Some(list) => {
                if let Some(bad) = list.iter().find(|&&f| f >= folds) {
                    return Err(fail(format!(
                        "cv.run_folds: fold {bad} does not exist ({} has folds 0..{})",
                        spec.cv.scheme,
                        folds - 1
                    )));
                }
                list.clone()
            }
            None => (0..folds).collect(),
        };
        Ok(SweepFolds {
            fingerprint,
            splits,
            run,
            cv: cv_identity(&spec.cv.scheme)?,
            mask_channels: dataset.spec().mask_channels.clone(),
        })
    }

    /// Refuses task classes the dataset has no mask channel for.
    fn check_classes(&self, spec: &SweepSpec, classes: &[String]) -> Result<(), ExperimentError> {
        match classes.iter().find(|c| !self.mask_channels.contains(c)) {
            Some(c) => Err(spec_error(
                spec,
                format!(
                    "classes: the dataset {} has no mask channel {c:?} (it has {})",
                    spec.dataset.display(),
                    self.mask_channels.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// The trials of `cell`, one per seed and fold, each added unless its id is there.
    fn add_trials(&self, spec: &SweepSpec, cell: &TrialCell, trials: &mut TrialList) {
        let config = cell.config;
        let split_seed = spec.cv.split_seed;
        for &seed in &spec.cv.seeds {
            for &fold in &self.run {
                let cv = cv_identity_for_seed(&self.cv, &spec.cv.scheme, split_seed, seed);
                let id = trial_id(config, fold, seed, &cv, &self.fingerprint);
                let (split_json, split_id) = self.splits[fold as usize].clone();
                if !trials.seen.insert(id.clone()) {
                    continue;
                }
                trials.trials.push(Trial {
                    sweep: spec.name.clone(),
                    trial_id: id,
                    config: config.clone(),
                    fold,
                    seed,
                    scheme: spec.cv.scheme.clone(),
                    split_seed,
                    split_json,
                    split_id,
                    select_metric: spec.cv.select_metric.clone(),
                    dataset: spec.dataset.clone(),
                    dataset_fingerprint: self.fingerprint.clone(),
                    params: cell.params.clone(),
                    tags: cell.labels.tags.clone(),
                    notes: cell.labels.notes.clone(),
                });
            }
        }
    }
}

/// The trials of an expansion in first-appearance order, and their ids.
#[derive(Default)]
struct TrialList {
    trials: Vec<Trial>,
    seen: HashSet<String>,
}

/// Which `[set]`, `--set` and `[search]` keys some model of the sweep has, so that
/// [`KeysUsed::check`] can refuse one that applies nowhere.
#[derive(Default)]
struct KeysUsed<'a> {
    set: HashSet<&'a str>,
    forced: HashSet<&'a str>,
    space: HashSet<String>,
    /// The first `[set]` key a config refused, with the config's reason.
    set_error: Option<String>,
}

impl KeysUsed<'_> {
    fn check(&self, spec: &SweepSpec) -> Result<(), ExperimentError> {
        let fail = |message: String| spec_error(spec, message);
        if let Some(unused) = spec
            .forced
            .keys()
            .find(|k| !self.forced.contains(k.as_str()))
        {
            return Err(fail(format!(
                "--set {unused}: no model of the sweep has this config key (see `seglab train \
                 --print-config`)"
            )));
        }
        if let Some(search) = &spec.search
            && let Some((unused, _)) = search.space.iter().find(|(k, _)| !self.space.contains(k))
        {
            return Err(fail(format!(
                "search.space: `{unused}` is a config key of none of the sweep's models (see \
                 `seglab train --print-config`)"
            )));
        }
        if let Some(unused) = spec.set.keys().find(|k| !self.set.contains(k.as_str())) {
            return Err(fail(self.set_error.clone().unwrap_or_else(|| {
                format!("set: `{unused}` applies to none of the sweep's models")
            })));
        }
        Ok(())
    }
}

/// Config values by dotted key, in the order they apply.
type Overrides = Vec<(String, Value)>;

/// The overrides of one (model, classes, preset, scale) cell of a grid block that its config
/// has: the `[set]` values, the `--set` values and each search draw's values.
struct CellOverrides {
    set: Overrides,
    forced: Overrides,
    drawn: Vec<Overrides>,
}

impl CellOverrides {
    /// The overrides of the cell whose resolved config is `base`, recording the keys it uses.
    /// Errors (as the message) when a key of the block's axes is not in `base`.
    fn of<'a>(
        spec: &'a SweepSpec,
        block: &GridBlock,
        base: &TrialConfig,
        draws: &[Vec<(String, Value)>],
        used: &mut KeysUsed<'a>,
    ) -> Result<Self, String> {
        let tree = base.to_value();
        let mut set: Vec<(String, Value)> = Vec::new();
        for (k, v) in &spec.set {
            if has_key(&tree, k) {
                used.set.insert(k);
                set.push((k.clone(), v.clone()));
            } else if used.set_error.is_none() {
                used.set_error = base
                    .apply_overrides(&[(k.clone(), v.clone())])
                    .err()
                    .map(|e| format!("set: {e}"));
            }
        }
        for (k, _) in &block.axes {
            if !has_key(&tree, k) {
                let e = base
                    .apply_overrides(&[(k.clone(), Value::Null)])
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| format!("unknown config key `{k}`"));
                return Err(format!("{e} (in the config of {})", base.model.name()));
            }
        }
        let mut forced: Vec<(String, Value)> = Vec::new();
        for (k, v) in &spec.forced {
            if has_key(&tree, k) {
                used.forced.insert(k);
                forced.push((k.clone(), v.clone()));
            }
        }
        let drawn = draws
            .iter()
            .map(|d| {
                d.iter()
                    .filter(|(k, _)| has_key(&tree, k))
                    .inspect(|(k, _)| {
                        used.space.insert(k.clone());
                    })
                    .cloned()
                    .collect()
            })
            .collect();
        Ok(CellOverrides { set, forced, drawn })
    }

    /// Every combination of the block's axes with every search draw: the overrides of one
    /// configuration in the order they apply (`[set]`, the combination, `--set`), and the
    /// combination alone (which names the configuration in errors).
    fn combinations(
        &self,
        axes: &[(String, Vec<Value>)],
    ) -> impl Iterator<Item = (Overrides, Overrides)> {
        product(axes).into_iter().flat_map(move |combo| {
            self.drawn.iter().map(move |d| {
                let mut c = combo.clone();
                c.extend(d.iter().cloned());
                let mut all = self.set.clone();
                all.extend(c.iter().cloned());
                all.extend(self.forced.iter().cloned());
                (all, c)
            })
        })
    }
}

/// The short description of a trial's cell for tables: model, classes and swept values.
pub fn describe(trial: &Trial) -> String {
    let mut s = format!(
        "{} {}",
        trial.config.model.name(),
        trial.config.classes.join(",")
    );
    for (k, v) in &trial.params {
        s.push_str(&format!(" {k}={v}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ModelKind, ModelScale};
    use crate::preset::Preset;

    #[test]
    fn products_cover_every_combination_in_order() {
        let axes = vec![
            ("a".to_string(), vec![json!(1), json!(2)]),
            ("b".to_string(), vec![json!("x"), json!("y"), json!("z")]),
        ];
        let p = product(&axes);
        assert_eq!(p.len(), 6);
        assert_eq!(p[0], vec![("a".into(), json!(1)), ("b".into(), json!("x"))]);
        assert_eq!(p[5], vec![("a".into(), json!(2)), ("b".into(), json!("z"))]);
        assert_eq!(product(&[]), vec![Vec::<(String, Value)>::new()]);
    }

    #[test]
    fn trial_ids_depend_on_every_part_and_nothing_else() {
        let c = TrialConfig::resolve(
            ModelKind::Threshold,
            &["nuclei"],
            Preset::Code,
            ModelScale::CpuSmall,
        )
        .unwrap();
        let cv = json!({"scheme": "nested", "k": 3});
        let id = trial_id(&c, 0, 0, &cv, "abc");
        assert_eq!(id.len(), TRIAL_ID_LEN);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, trial_id(&c.clone(), 0, 0, &cv, "abc"));
        let others = [
            trial_id(&c, 1, 0, &cv, "abc"),
            trial_id(&c, 0, 1, &cv, "abc"),
            trial_id(&c, 0, 0, &json!({"scheme": "kfold", "k": 3}), "abc"),
            trial_id(&c, 0, 0, &cv, "abd"),
        ];
        for o in others {
            assert_ne!(o, id);
        }
        let u = TrialConfig::resolve(
            ModelKind::Unet3d,
            &["nuclei"],
            Preset::Code,
            ModelScale::CpuSmall,
        )
        .unwrap();
        let u2 = u
            .apply_overrides(&[("train.epochs".into(), json!(3))])
            .unwrap();
        assert_ne!(
            trial_id(&u, 0, 0, &cv, "abc"),
            trial_id(&u2, 0, 0, &cv, "abc")
        );
    }

    #[test]
    fn split_seed_enters_the_id_only_where_behaviour_changed() {
        let cv = json!({"scheme": "nested", "k": 3});
        let nested = SplitScheme::Nested { k: 3 };
        // Seed equal to the split seed: split as before the split seed existed, same id.
        assert_eq!(cv_identity_for_seed(&cv, &nested, 0, 0), cv);
        assert_eq!(cv_identity_for_seed(&cv, &nested, 4, 4), cv);
        // Otherwise the partition differs from the one the trial seed alone gives.
        let moved = cv_identity_for_seed(&cv, &nested, 0, 1);
        assert_eq!(moved["split_seed"], json!(0));
        // Fixed partitions never depended on the seed.
        let named = SplitScheme::Named("thesis".into());
        let fixed = json!({"scheme": "split", "name": "thesis"});
        assert_eq!(cv_identity_for_seed(&fixed, &named, 0, 1), fixed);
    }

    #[test]
    fn split_identity_is_the_hash_of_the_sorted_volume_ids() {
        let fold = |test: &[&str]| Fold {
            index: 0,
            train: vec!["b".into(), "a".into()],
            val: vec!["c".into()],
            test: test.iter().map(|s| s.to_string()).collect(),
        };
        let (json_text, id) = split_identity(&fold(&["d"]));
        assert_eq!(json_text, r#"{"test":["d"],"train":["a","b"],"val":["c"]}"#);
        assert_eq!(id.len(), TRIAL_ID_LEN);
        assert_ne!(split_identity(&fold(&["e"])).1, id);
    }

    #[test]
    fn dotted_keys_are_found_in_the_tree() {
        let tree = json!({"loss": {"golgi_weight": 1.0, "class_weights": null}});
        assert!(has_key(&tree, "loss.golgi_weight"));
        assert!(has_key(&tree, "loss.class_weights"));
        assert!(!has_key(&tree, "loss.golgi_wieght"));
        assert!(!has_key(&tree, "train.epochs"));
    }
}
