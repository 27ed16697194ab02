//! Cross-validation splits by volume, never by patch (docs/statistics.md, "Folds, seeds and splits"). A split is a
//! pure function of (volume ids, groups, scheme, seed); it is written once per dataset,
//! scheme and seed as `splits.json`-style file (nnU-Net's `splits_final.json` layout: a list
//! of `{"train": [...], "val": [...]}`, plus our `"test"`) and every fold reads it back. A
//! fold index outside the file is an error, never a fallback.
//!
//! Volumes that share a `group` form one unit: a unit is never split across roles. Schemes
//! ([`SplitScheme`]):
//! - **nested k-fold** (the paper's nested 3-fold): the seed-shuffled units are cut into k
//!   near-equal parts; fold i tests part i, validates on part (i + 1) mod k, trains on the rest.
//!   Across folds every unit is test once and validation once.
//! - **k-fold**: fold i tests part i; the validation set is [`KFOLD_VAL_FRACTION`] of the
//!   remaining units (rounded down, at least one when two or more remain), picked by a seeded
//!   shuffle specific to the fold; the rest train.
//! - **leave-one-out**: k-fold with one unit per part.
//! - **explicit**: folds read from a JSON file in the layout above, validated (unknown ids,
//!   a volume in two roles, a group straddling roles, an empty training set are errors).
//! - **named**: a split preset that the dataset itself declares in `dataset.toml`
//!   (`[splits.<name>]`, e.g. the thesis split that `data import --layout published` writes),
//!   validated like an explicit file ([`named_folds`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::DatasetError;

/// Share of the non-test units that k-fold and leave-one-out validate on.
pub const KFOLD_VAL_FRACTION: f64 = 0.2;

/// How volumes are assigned to folds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitScheme {
    KFold {
        k: usize,
    },
    Nested {
        k: usize,
    },
    LeaveOneOut,
    /// Folds read from a JSON file (nnU-Net `splits_final.json` layout, optional `test`).
    Explicit(PathBuf),
    /// A split preset of the dataset (`[splits.<name>]` in its `dataset.toml`).
    Named(String),
}

impl fmt::Display for SplitScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitScheme::KFold { k } => write!(f, "kfold-{k}"),
            SplitScheme::Nested { k } => write!(f, "nested-{k}"),
            SplitScheme::LeaveOneOut => f.write_str("leave-one-out"),
            SplitScheme::Explicit(p) => write!(f, "explicit:{}", p.display()),
            SplitScheme::Named(name) => write!(f, "split:{name}"),
        }
    }
}

/// One fold: which volumes train, validate (early stopping, model selection) and test.
/// Each list is sorted by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fold {
    pub index: usize,
    pub train: Vec<String>,
    pub val: Vec<String>,
    pub test: Vec<String>,
}

/// One fold as a splits file or a `[[splits.<name>.folds]]` table of `dataset.toml` writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FoldSpec {
    pub train: Vec<String>,
    pub val: Vec<String>,
    #[serde(default)]
    pub test: Vec<String>,
}

impl From<&Fold> for FoldSpec {
    fn from(f: &Fold) -> Self {
        FoldSpec {
            train: f.train.clone(),
            val: f.val.clone(),
            test: f.test.clone(),
        }
    }
}

/// The folds of `scheme` over volumes `ids` (with their split `groups`, same length; `None`
/// = the volume is its own group). Deterministic in (set of ids, groups, scheme, seed): the
/// order in which ids are listed does not matter.
pub fn make_splits(
    ids: &[String],
    groups: &[Option<String>],
    scheme: &SplitScheme,
    seed: u64,
) -> Result<Vec<Fold>, DatasetError> {
    match scheme {
        SplitScheme::Explicit(path) => return read_splits_file(path, ids, groups),
        SplitScheme::Named(name) => {
            return Err(DatasetError::Split(format!(
                "the split `{name}` is a preset of the dataset: read it with `named_folds`"
            )));
        }
        _ => {}
    }
    let units = units(ids, groups)?;
    let n = units.len();
    let k = match scheme {
        SplitScheme::KFold { k } | SplitScheme::Nested { k } => *k,
        SplitScheme::LeaveOneOut => n.max(2),
        SplitScheme::Explicit(_) | SplitScheme::Named(_) => unreachable!("handled above"),
    };
    let min_k = if matches!(scheme, SplitScheme::Nested { .. }) {
        3
    } else {
        2
    };
    if k < min_k {
        return Err(DatasetError::Split(format!(
            "{scheme} needs k >= {min_k} (test, validation and training parts), got k = {k}"
        )));
    }
    if n < k {
        return Err(DatasetError::Split(format!(
            "{scheme} needs at least {k} independent volumes (groups count once), the dataset \
             has {n}"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    // Part i holds units order[bounds[i]..bounds[i + 1]].
    let bounds: Vec<usize> = (0..=k).map(|i| i * (n / k) + i.min(n % k)).collect();
    let part = |i: usize| order[bounds[i]..bounds[i + 1]].to_vec();
    let collect = |us: &[usize]| -> Vec<String> {
        let mut v: Vec<String> = us.iter().flat_map(|&u| units[u].iter().cloned()).collect();
        v.sort();
        v
    };
    let folds = (0..k)
        .map(|i| {
            let test = part(i);
            let (val, train): (Vec<usize>, Vec<usize>) = match scheme {
                SplitScheme::Nested { .. } => {
                    let v = (i + 1) % k;
                    let train = (0..k)
                        .filter(|&j| j != i && j != v)
                        .flat_map(part)
                        .collect();
                    (part(v), train)
                }
                _ => {
                    let mut rest: Vec<usize> = (0..k).filter(|&j| j != i).flat_map(part).collect();
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    rng.set_stream(1 + i as u64);
                    rest.shuffle(&mut rng);
                    let n_val = if rest.len() >= 2 {
                        ((rest.len() as f64 * KFOLD_VAL_FRACTION).floor() as usize).max(1)
                    } else {
                        0
                    };
                    let train = rest.split_off(n_val);
                    (rest, train)
                }
            };
            Fold {
                index: i,
                train: collect(&train),
                val: collect(&val),
                test: collect(&test),
            }
        })
        .collect();
    Ok(folds)
}

/// Groups volumes into split units (sorted member ids), in a canonical order.
fn units(ids: &[String], groups: &[Option<String>]) -> Result<Vec<Vec<String>>, DatasetError> {
    if ids.len() != groups.len() {
        return Err(DatasetError::Split(format!(
            "{} volume ids but {} group entries",
            ids.len(),
            groups.len()
        )));
    }
    let mut seen = BTreeSet::new();
    let mut grouped: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut units = Vec::new();
    for (id, group) in ids.iter().zip(groups) {
        if !seen.insert(id.as_str()) {
            return Err(DatasetError::Split(format!(
                "volume id `{id}` is listed twice"
            )));
        }
        match group {
            Some(g) => grouped.entry(g.as_str()).or_default().push(id.clone()),
            None => units.push(vec![id.clone()]),
        }
    }
    units.extend(grouped.into_values());
    for u in &mut units {
        u.sort();
    }
    units.sort();
    Ok(units)
}

/// The fold with `index`, or an error naming the number of folds (never a fallback).
pub fn fold_at(folds: &[Fold], index: usize) -> Result<&Fold, DatasetError> {
    folds.get(index).ok_or_else(|| {
        DatasetError::Split(format!(
            "fold {index} does not exist: the split has {} folds (0..{})",
            folds.len(),
            folds.len().saturating_sub(1)
        ))
    })
}

/// The file name of a computed split, e.g. `splits_nested-3_seed0.json`.
pub fn splits_file_name(scheme: &SplitScheme, seed: u64) -> String {
    format!("splits_{scheme}_seed{seed}.json")
}

/// The folds of `scheme`, stored in `dir`: an explicit scheme reads its own file; otherwise
/// the split is computed, written to `dir/`[`splits_file_name`] the first time (atomically),
/// and read back on later calls. A stored file that no longer matches the volumes (the
/// dataset changed) is an error naming the file.
pub fn load_or_create_splits(
    dir: &Path,
    ids: &[String],
    groups: &[Option<String>],
    scheme: &SplitScheme,
    seed: u64,
) -> Result<Vec<Fold>, DatasetError> {
    let computed = make_splits(ids, groups, scheme, seed)?;
    if let SplitScheme::Explicit(_) | SplitScheme::Named(_) = scheme {
        return Ok(computed);
    }
    let path = dir.join(splits_file_name(scheme, seed));
    if path.exists() {
        let stored = read_splits_file(&path, ids, groups)?;
        if stored != computed {
            return Err(DatasetError::SplitFile {
                path,
                message: format!(
                    "differs from the {scheme} split (seed {seed}) of the current volumes; \
                     the dataset changed or the file was edited — remove it to recompute, or \
                     use it as an explicit split"
                ),
            });
        }
        return Ok(stored);
    }
    write_splits_file(&path, &computed)?;
    read_splits_file(&path, ids, groups)
}

/// Writes folds in the nnU-Net layout (plus `test`), atomically ([`crate::atomic::write_file`]).
pub fn write_splits_file(path: &Path, folds: &[Fold]) -> Result<(), DatasetError> {
    let entries: Vec<FoldSpec> = folds.iter().map(FoldSpec::from).collect();
    let text = serde_json::to_string_pretty(&entries).expect("folds always serialize");
    Ok(crate::atomic::write_file(path, (text + "\n").as_bytes())?)
}

/// Reads and validates a splits file against the dataset's volumes: every id must exist, no
/// volume may hold two roles in one fold, a group may not straddle roles, and every fold
/// needs a training volume. Volumes a fold does not mention are simply unused by it.
pub fn read_splits_file(
    path: &Path,
    ids: &[String],
    groups: &[Option<String>],
) -> Result<Vec<Fold>, DatasetError> {
    let fail = |message: String| DatasetError::SplitFile {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| DatasetError::Io {
        path: path.to_owned(),
        source,
    })?;
    let entries: Vec<FoldSpec> = serde_json::from_str(&text).map_err(|e| {
        fail(format!(
            "{e} (expected a list of {{\"train\": [...], \"val\": [...], \"test\": [...]}})"
        ))
    })?;
    validate_folds(&entries, ids, groups).map_err(fail)
}

/// The folds of the split preset `name` that a dataset declares (`[splits.<name>]` of
/// `dataset.toml`), validated against its volumes like a splits file; errors name the preset.
pub fn named_folds(
    splits: &BTreeMap<String, NamedSplit>,
    name: &str,
    ids: &[String],
    groups: &[Option<String>],
) -> Result<Vec<Fold>, DatasetError> {
    let Some(split) = splits.get(name) else {
        let known: Vec<&str> = splits.keys().map(String::as_str).collect();
        return Err(DatasetError::Split(format!(
            "the dataset declares no split `{name}` (its splits: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    };
    validate_folds(&split.folds, ids, groups)
        .map_err(|m| DatasetError::Split(format!("splits.{name}: {m}")))
}

/// A split preset of a dataset: a description and fixed folds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedSplit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub folds: Vec<FoldSpec>,
}

/// Checks folds against the dataset's volumes: every id must exist, no volume may hold two
/// roles in one fold, a group may not straddle roles, and every fold needs a training volume.
/// Volumes a fold does not mention are simply unused by it. Lists come back sorted.
fn validate_folds(
    entries: &[FoldSpec],
    ids: &[String],
    groups: &[Option<String>],
) -> Result<Vec<Fold>, String> {
    if entries.is_empty() {
        return Err("holds no folds".into());
    }
    let group_of: HashMap<&str, Option<&str>> = ids
        .iter()
        .zip(groups)
        .map(|(i, g)| (i.as_str(), g.as_deref()))
        .collect();
    let mut folds = Vec::with_capacity(entries.len());
    for (index, e) in entries.iter().enumerate() {
        let mut role_of: HashMap<&str, &str> = HashMap::new();
        let mut group_role: HashMap<&str, &str> = HashMap::new();
        for (role, list) in [("train", &e.train), ("val", &e.val), ("test", &e.test)] {
            for id in list {
                let Some(group) = group_of.get(id.as_str()) else {
                    return Err(format!(
                        "fold {index}: unknown volume `{id}` in {role} (not in the dataset)"
                    ));
                };
                if let Some(prev) = role_of.insert(id, role) {
                    return Err(if prev == role {
                        format!("fold {index}: volume `{id}` is listed twice in {role}")
                    } else {
                        format!("fold {index}: volume `{id}` is in both {prev} and {role}")
                    });
                }
                if let Some(g) = group
                    && let Some(prev) = group_role.insert(g, role)
                    && prev != role
                {
                    return Err(format!(
                        "fold {index}: group `{g}` straddles {prev} and {role} (volume `{id}`)"
                    ));
                }
            }
        }
        if e.train.is_empty() {
            return Err(format!("fold {index}: no training volumes"));
        }
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        folds.push(Fold {
            index,
            train: sorted(&e.train),
            val: sorted(&e.val),
            test: sorted(&e.test),
        });
    }
    Ok(folds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("v{i:02}")).collect()
    }

    #[test]
    fn nested_three_fold_of_three_volumes_is_one_each() {
        let ids = ids(3);
        let folds =
            make_splits(&ids, &[None, None, None], &SplitScheme::Nested { k: 3 }, 0).unwrap();
        assert_eq!(folds.len(), 3);
        for (i, f) in folds.iter().enumerate() {
            assert_eq!((f.train.len(), f.val.len(), f.test.len()), (1, 1, 1));
            // validation of fold i is the test volume of fold i + 1
            assert_eq!(f.val, folds[(i + 1) % 3].test);
        }
    }

    #[test]
    fn kfold_validation_comes_from_the_training_part() {
        let ten = ids(10);
        let folds = make_splits(&ten, &vec![None; 10], &SplitScheme::KFold { k: 5 }, 3).unwrap();
        for f in &folds {
            // 10 units, 5 parts of 2: 8 remain, 20 % of 8 → 1 validation volume.
            assert_eq!((f.test.len(), f.val.len(), f.train.len()), (2, 1, 7));
        }
        let loo = make_splits(&ids(2), &[None, None], &SplitScheme::LeaveOneOut, 0).unwrap();
        assert_eq!(loo.len(), 2);
        assert!(loo.iter().all(|f| f.val.is_empty() && f.train.len() == 1));
    }

    #[test]
    fn too_few_volumes_and_bad_k_are_errors() {
        let e = make_splits(&ids(2), &[None, None], &SplitScheme::Nested { k: 3 }, 0).unwrap_err();
        assert!(
            e.to_string().contains("at least 3 independent volumes"),
            "{e}"
        );
        let groups = vec![Some("a".to_string()); 4];
        let e = make_splits(&ids(4), &groups, &SplitScheme::KFold { k: 2 }, 0).unwrap_err();
        assert!(e.to_string().contains("has 1"), "{e}");
        let e = make_splits(&ids(4), &vec![None; 4], &SplitScheme::Nested { k: 2 }, 0).unwrap_err();
        assert!(e.to_string().contains("k >= 3"), "{e}");
    }

    #[test]
    fn fold_index_out_of_range_is_an_error() {
        let folds = make_splits(&ids(3), &vec![None; 3], &SplitScheme::Nested { k: 3 }, 0).unwrap();
        assert_eq!(fold_at(&folds, 2).unwrap().index, 2);
        let e = fold_at(&folds, 3).unwrap_err().to_string();
        assert_eq!(e, "fold 3 does not exist: the split has 3 folds (0..2)");
    }

    #[test]
    fn splits_file_is_written_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ids(4);
        let groups = vec![None; 4];
        let scheme = SplitScheme::Nested { k: 3 };
        let a = load_or_create_splits(dir.path(), &ids, &groups, &scheme, 1).unwrap();
        let path = dir.path().join("splits_nested-3_seed1.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 3);
        assert!(json[0]["train"].is_array() && json[0]["val"].is_array());
        let b = load_or_create_splits(dir.path(), &ids, &groups, &scheme, 1).unwrap();
        assert_eq!(a, b);
        // The dataset grew: the stored split no longer matches → error, not a silent redo.
        let more = super::tests::ids(5);
        let e = load_or_create_splits(dir.path(), &more, &vec![None; 5], &scheme, 1).unwrap_err();
        assert!(
            e.to_string()
                .contains("splits_nested-3_seed1.json: differs"),
            "{e}"
        );
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn explicit_files_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("splits_final.json");
        let ids = ids(4);
        let groups = vec![None, None, Some("g".to_string()), Some("g".to_string())];
        let check = |text: &str| {
            std::fs::write(&path, text).unwrap();
            make_splits(&ids, &groups, &SplitScheme::Explicit(path.clone()), 0)
        };
        // nnU-Net layout without test is fine.
        let ok = check(r#"[{"train": ["v01", "v00"], "val": ["v02", "v03"]}]"#).unwrap();
        assert_eq!(ok[0].train, vec!["v00", "v01"]);
        assert!(ok[0].test.is_empty());
        let e = check(r#"[{"train": ["v00"], "val": ["v09"]}]"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("fold 0: unknown volume `v09` in val (not in the dataset)"),
            "{e}"
        );
        let e = check(r#"[{"train": ["v00"], "val": ["v01"]}, {"train": ["v00"], "val": [], "test": ["v00"]}]"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("fold 1: volume `v00` is in both train and test"),
            "{e}"
        );
        let e = check(r#"[{"train": ["v02"], "val": ["v03"]}]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("group `g` straddles train and val"), "{e}");
        let e = check(r#"[{"train": [], "val": ["v00"]}]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no training volumes"), "{e}");
        let e = check(r#"[{"train": ["v00"], "vall": []}]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("splits_final.json: unknown field `vall`"), "{e}");
        let folds = check(r#"[{"train": ["v00"], "val": ["v01"]}]"#).unwrap();
        assert!(fold_at(&folds, 1).is_err());
    }

    fn scheme_strategy() -> impl Strategy<Value = SplitScheme> {
        prop_oneof![
            (2usize..6).prop_map(|k| SplitScheme::KFold { k }),
            (3usize..6).prop_map(|k| SplitScheme::Nested { k }),
            Just(SplitScheme::LeaveOneOut),
        ]
    }

    proptest! {
        #[test]
        fn every_volume_is_tested_once_and_roles_never_overlap(
            groups in prop::collection::vec(prop::option::of(0u8..4), 1..14),
            scheme in scheme_strategy(),
            seed in any::<u64>(),
        ) {
            let ids = ids(groups.len());
            let groups: Vec<Option<String>> =
                groups.iter().map(|g| g.map(|g| format!("g{g}"))).collect();
            let Ok(folds) = make_splits(&ids, &groups, &scheme, seed) else {
                // Only too few units (or k too small) may fail.
                let n_units = units(&ids, &groups).unwrap().len();
                let k = match scheme { SplitScheme::KFold { k } | SplitScheme::Nested { k } => k,
                                       _ => n_units };
                prop_assert!(n_units < k || k < 2);
                return Ok(());
            };
            let mut tested: BTreeMap<&str, usize> = BTreeMap::new();
            for f in &folds {
                let mut roles: HashMap<&str, &str> = HashMap::new();
                for (role, list) in [("train", &f.train), ("val", &f.val), ("test", &f.test)] {
                    for id in list {
                        prop_assert!(roles.insert(id, role).is_none(), "{id} twice in fold {}", f.index);
                    }
                }
                prop_assert_eq!(roles.len(), ids.len(), "every volume has a role");
                prop_assert!(!f.train.is_empty());
                for (id, g) in ids.iter().zip(&groups) {
                    if let Some(g) = g {
                        for (other, g2) in ids.iter().zip(&groups) {
                            if g2.as_ref() == Some(g) {
                                prop_assert_eq!(roles[id.as_str()], roles[other.as_str()]);
                            }
                        }
                    }
                }
                for id in &f.test {
                    *tested.entry(id).or_default() += 1;
                }
            }
            prop_assert_eq!(tested.len(), ids.len());
            prop_assert!(tested.values().all(|&c| c == 1));
            // Deterministic, and independent of the listing order.
            prop_assert_eq!(&make_splits(&ids, &groups, &scheme, seed).unwrap(), &folds);
            let mut rev_ids = ids.clone();
            rev_ids.reverse();
            let mut rev_groups = groups.clone();
            rev_groups.reverse();
            prop_assert_eq!(&make_splits(&rev_ids, &rev_groups, &scheme, seed).unwrap(), &folds);
        }
    }
}
