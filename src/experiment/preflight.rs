//! The preprocessing check of `sweep plan`, `sweep run` and `sweep slurm`, before any
//! training: each trial's
//! preprocessing (its `auto` floors chosen as the trial chooses them,
//! `train::trial::resolve_preprocessing`) is measured on the dataset's annotated volumes
//! (`dataset::clipping`). Where it maps more than `max_zeroed` of a class's annotated voxels
//! to 0, the sweep stops unless clipping is allowed. A CycleGAN trial on synthetic masks
//! also has their foreground compared with the annotated masks' (`experiment::
//! synthetic_check`; a warning, not a stop). The figures of each trial go to
//! `<sweep>/preflight.json` and from there into the store with the trial's events
//! (`trials.preprocess_check`).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ExperimentError;
use super::synthetic_check::{self, SynthFigure};
use super::trial::Trial;
use crate::dataset::Dataset;
use crate::dataset::auto_floor::AutoFloor;
use crate::dataset::clipping::{ClipFigure, measure_clipping};
use crate::dataset::preprocess::Preprocessor;
use crate::dataset::splits::{SplitScheme, fold_at, make_splits};
use crate::models::ModelKind;
use crate::train::trial::resolve_preprocessing;

/// The file of a sweep folder that holds each trial's check.
pub const PREFLIGHT_FILE: &str = "preflight.json";

/// The check of one trial: its preprocessing and what it does to each class.
#[derive(Clone, Debug, Serialize)]
pub struct TrialCheck {
    /// The spec allows this trial's model to clip (`allow_clipping` in the spec).
    pub clipping_allowed: bool,
    pub preprocessing: String,
    pub figures: Vec<ClipFigure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_floors: Option<Vec<AutoFloor>>,
    /// A CycleGAN on synthetic masks with annotated training volumes: the synthetic against
    /// the annotated foreground of each class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synthetic_masks: Option<Vec<SynthFigure>>,
}

/// The checks of a sweep's trials.
#[derive(Clone, Debug, Serialize)]
pub struct Preflight {
    /// The share of a class's annotated voxels a preprocessing may map to 0.
    pub max_zeroed: f64,
    /// True when the sweep goes on past clipping (`--allow-clipping`).
    pub clipping_allowed: bool,
    /// By trial id.
    pub trials: BTreeMap<String, TrialCheck>,
}

/// One (image channel, class) whose annotated voxels some trials' preprocessing hides.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    pub channel: String,
    pub class: String,
    pub floor: Option<f64>,
    pub zeroed: f64,
    pub trials: usize,
}

impl Preflight {
    /// Checks every trial of `trials` (see the module doc); trials of the models in
    /// `allowed_models` may clip. `spec_file` names errors.
    pub fn run(
        trials: &[Trial],
        max_zeroed: f64,
        clipping_allowed: bool,
        allowed_models: &[ModelKind],
        spec_file: &Path,
    ) -> Result<Preflight, ExperimentError> {
        let fail = |e: &dyn std::fmt::Display| ExperimentError::Spec {
            path: spec_file.to_owned(),
            message: format!("preprocessing check: {e}"),
        };
        let mut by_dataset: BTreeMap<&Path, Vec<&Trial>> = BTreeMap::new();
        for t in trials {
            by_dataset.entry(t.dataset.as_path()).or_default().push(t);
        }
        let mut checks = BTreeMap::new();
        for (dir, trials) in by_dataset {
            let dataset = Dataset::open(dir).map_err(|e| fail(&e))?;
            let found = check_dataset(&dataset, &trials).map_err(|e| fail(&e))?;
            for (t, (id, mut check)) in trials.iter().zip(found) {
                check.clipping_allowed = allowed_models.contains(&t.config.model);
                checks.insert(id, check);
            }
        }
        Ok(Preflight {
            max_zeroed,
            clipping_allowed,
            trials: checks,
        })
    }

    /// The (channel, class) pairs some trial's preprocessing clips beyond `max_zeroed` (trials
    /// whose model the spec allows to clip left out), the worst figure of each, in channel
    /// order.
    pub fn violations(&self) -> Vec<Violation> {
        let mut worst: BTreeMap<(String, String), Violation> = BTreeMap::new();
        for check in self.trials.values().filter(|c| !c.clipping_allowed) {
            for f in check.figures.iter().filter(|f| f.zeroed > self.max_zeroed) {
                let v = worst
                    .entry((f.channel.clone(), f.class.clone()))
                    .or_insert_with(|| Violation {
                        channel: f.channel.clone(),
                        class: f.class.clone(),
                        floor: f.floor,
                        zeroed: f.zeroed,
                        trials: 0,
                    });
                v.trials += 1;
                if f.zeroed > v.zeroed {
                    (v.zeroed, v.floor) = (f.zeroed, f.floor);
                }
            }
        }
        worst.into_values().collect()
    }

    /// The message that stops the sweep, or `None` when nothing is clipped beyond the limit.
    pub fn stop_message(&self, dataset: &Path) -> Option<String> {
        let violations = self.violations();
        if violations.is_empty() {
            return None;
        }
        let mut s = String::from(
            "preprocessing check: the percentile stretch hides annotated objects before any model sees them:\n",
        );
        for v in &violations {
            let floor = v
                .floor
                .map_or(String::new(), |p| format!(" (floor at percentile {p})"));
            s.push_str(&format!(
                "  image channel {}: {:.1} % of the annotated {} voxels map to 0{floor}, in {} trial(s); at most {:.0} % allowed\n",
                v.channel,
                v.zeroed * 100.0,
                v.class,
                v.trials,
                self.max_zeroed * 100.0
            ));
        }
        s.push_str(&format!(
            "fix: choose the floors from the data, \"data.preprocess.percentiles\" = \"auto\" in the \
             spec's [set] (or percentiles = \"auto\" under [preprocess] in {}), or set a lower \
             floor; `seglab data info {}` compares floors. To run as it is: --allow-clipping \
             (or allow_clipping = [\"<model>\", …] in the spec, with a comment saying why)",
            dataset.join(crate::dataset::DATASET_FILE).display(),
            dataset.display()
        ));
        Some(s)
    }

    /// The synthetic-mask warning (`experiment::synthetic_check`), or `None` when every
    /// checked trial's synthetic foreground is within a factor of
    /// [`synthetic_check::MAX_RATIO`] of the annotated one.
    pub fn synthetic_warning(&self) -> Option<String> {
        let lines: Vec<String> = self
            .trials
            .iter()
            .filter_map(|(id, c)| synthetic_check::warning(id, c.synthetic_masks.as_deref()?))
            .collect();
        (!lines.is_empty()).then(|| {
            format!(
                "synthetic-mask check: the CycleGAN's synthetic masks are far denser or sparser \
                 than the annotated ones:\n{}\nsynth.pairs counts objects per volume (the published 45–69 \
                 are per published crop): scale it with the volumes' Y·X area, or set synth.* \
                 to the data's object sizes (docs/cyclegan.md)",
                lines.join("\n")
            )
        })
    }

    /// Writes `<sweep_dir>/preflight.json` (atomic).
    pub fn write(&self, sweep_dir: &Path) -> Result<(), ExperimentError> {
        let path = sweep_dir.join(PREFLIGHT_FILE);
        let text = serde_json::to_string_pretty(self).expect("the check serializes to JSON");
        crate::atomic::write_file(&path, text.as_bytes()).map_err(|e| ExperimentError::Io {
            path,
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// The stored check of trial `trial_id` as compact JSON (with the limit and whether
    /// clipping was allowed), or `None` when the sweep folder holds none.
    pub fn stored(sweep_dir: &Path, trial_id: &str) -> Option<String> {
        let text = std::fs::read_to_string(sweep_dir.join(PREFLIGHT_FILE)).ok()?;
        let doc: StoredPreflight = serde_json::from_str(&text).ok()?;
        let check = doc.trials.get(trial_id)?;
        let record = serde_json::json!({
            "max_zeroed": doc.max_zeroed,
            "clipping_allowed": doc.clipping_allowed || check["clipping_allowed"] == true,
            "preprocessing": check["preprocessing"],
            "figures": check["figures"],
            "auto_floors": check.get("auto_floors"),
            "synthetic_masks": check.get("synthetic_masks"),
        });
        Some(record.to_string())
    }
}

/// `preflight.json` as read back.
#[derive(Deserialize)]
struct StoredPreflight {
    max_zeroed: f64,
    clipping_allowed: bool,
    trials: BTreeMap<String, serde_json::Value>,
}

/// The checks of `trials` on one dataset: each distinct preprocessing is measured once; a
/// trial's figures are those of its classes.
fn check_dataset(
    dataset: &Dataset,
    trials: &[&Trial],
) -> Result<Vec<(String, TrialCheck)>, Box<dyn std::error::Error>> {
    let mut distinct: Vec<Preprocessor> = Vec::new();
    let mut chosen: Vec<(usize, Option<Vec<AutoFloor>>)> = Vec::new();
    let mut folds_by_seed = BTreeMap::new();
    let mut synthetic: Vec<Option<Vec<SynthFigure>>> = Vec::new();
    // Measured once per (mask settings, classes, training volumes), with the first such
    // trial's seed: the seeds of a sweep draw other masks of the same density.
    let mut measured: BTreeMap<String, Option<Vec<SynthFigure>>> = BTreeMap::new();
    for t in trials {
        let auto = t.config.preprocess.is_auto(&dataset.spec().preprocess);
        let synth = synthetic_check::synthetic_settings(&t.config);
        let fold = if auto || synth.is_some() {
            let folds = match folds_by_seed.entry(t.split_seed) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(match &t.scheme {
                    SplitScheme::Named(name) => dataset.named_folds(name)?,
                    scheme => make_splits(&dataset.ids(), &dataset.groups(), scheme, t.split_seed)?,
                }),
            };
            Some(fold_at(folds, t.fold as usize)?)
        } else {
            None
        };
        synthetic.push(match (synth, fold) {
            (Some(synth), Some(fold)) => {
                let key = serde_json::json!([synth, t.config.classes, fold.train]).to_string();
                match measured.entry(key) {
                    Entry::Occupied(e) => e.get().clone(),
                    Entry::Vacant(e) => e
                        .insert(synthetic_check::measure(
                            dataset,
                            synth,
                            &t.config.classes,
                            &fold.train,
                            t.seed,
                        )?)
                        .clone(),
                }
            }
            _ => None,
        });
        let (pre, floors) = if let (true, Some(fold)) = (auto, fold) {
            resolve_preprocessing(dataset, &t.config, fold)?
        } else {
            let spec = dataset.spec();
            let pre = t.config.preprocess.resolve(
                t.config.preset,
                &spec.image_channels,
                &spec.preprocess,
            )?;
            (pre, None)
        };
        let index = match distinct.iter().position(|p| *p == pre) {
            Some(i) => i,
            None => {
                distinct.push(pre);
                distinct.len() - 1
            }
        };
        chosen.push((index, floors));
    }
    let figures = measure_clipping(dataset, &distinct)?;
    Ok(trials
        .iter()
        .zip(chosen)
        .zip(synthetic)
        .map(|((t, (i, floors)), synthetic_masks)| {
            (
                t.trial_id.clone(),
                TrialCheck {
                    clipping_allowed: false,
                    preprocessing: distinct[i].describe(),
                    figures: figures[i]
                        .iter()
                        .filter(|f| t.config.classes.contains(&f.class))
                        .cloned()
                        .collect(),
                    auto_floors: floors,
                    synthetic_masks,
                },
            )
        })
        .collect())
}
