//! Checkpoint directories: everything a trainer needs to continue exactly where it stopped.
//!
//! ```text
//! <dir>/state.json        CheckpointInfo: model, step counter, seed, model configuration
//! <dir>/<network>.bpk     weights (burnpack), e.g. unet3d.bpk, generator.bpk, g_ab.bpk
//! <dir>/opt_<network>.bpk optimizer state (Adam moments and step counts, burnpack)
//! <dir>/pool_a.bpk, …     CycleGAN image pools
//! ```
//!
//! A checkpoint holds either the full training state ([`Contents::Full`], what a resume
//! needs: `checkpoint_latest`) or the weights only ([`Contents::Weights`], no optimizer state
//! and no image pools: `checkpoint_best`, which prediction and restore-best read). The
//! header's `weights_only` says which.
//!
//! A checkpoint is written into `<dir>.partial` and renamed into place, replacing an older
//! checkpoint only after the new one is complete, so a kill at any moment leaves either the old
//! or the new checkpoint (never half of one). The `state.json` holds the model configuration,
//! so `seglab predict --checkpoint <dir>` can rebuild the network without the trial folder.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::models::ModelKind;

/// The file holding [`CheckpointInfo`].
pub const STATE_FILE: &str = "state.json";
/// Version of the checkpoint layout; bumped when files are renamed or added.
pub const FORMAT_VERSION: u32 = 1;

/// The JSON header of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointInfo {
    pub format: u32,
    pub model: ModelKind,
    /// Optimisation steps taken when the checkpoint was written.
    pub steps: u64,
    /// The trainer's seed (per-step random streams derive from it and `steps`).
    pub seed: u64,
    /// The model configuration (`Unet3dConfig`, `Vox2VoxConfig` or `CycleGanConfig`).
    pub model_config: serde_json::Value,
    /// The training configuration (`*TrainConfig`).
    pub train_config: serde_json::Value,
    /// Shapes `[stored, channels, n, n, n]` of the CycleGAN image pools (A, B); empty for the
    /// other models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pool_shapes: Vec<[usize; 5]>,
    /// True when the checkpoint holds the weights only ([`Contents::Weights`]); absent (false)
    /// in full checkpoints, so those read as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub weights_only: bool,
}

/// What a checkpoint holds (module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contents {
    /// Weights, optimizer state, image pools: everything a resumed fit needs.
    Full,
    /// The networks' weights (and batch-norm statistics) only: enough to predict.
    Weights,
}

impl CheckpointInfo {
    /// The header of a trainer's checkpoint in the current format (no image pools; the
    /// CycleGAN trainer sets `pool_shapes` when it writes its pools).
    pub fn new<M: Serialize, T: Serialize>(
        model: ModelKind,
        steps: u64,
        seed: u64,
        model_config: &M,
        train_config: &T,
    ) -> Self {
        CheckpointInfo {
            format: FORMAT_VERSION,
            model,
            steps,
            seed,
            model_config: serde_json::to_value(model_config).expect("config serialises"),
            train_config: serde_json::to_value(train_config).expect("config serialises"),
            pool_shapes: Vec::new(),
            weights_only: false,
        }
    }
}

/// Reads `<dir>/state.json`.
pub fn read_info(dir: &Path) -> Result<CheckpointInfo, TrainError> {
    let path = dir.join(STATE_FILE);
    let text = fs::read_to_string(&path).map_err(|source| TrainError::Io {
        path: path.clone(),
        source,
    })?;
    let info: CheckpointInfo = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: path.clone(),
        message: format!("not a seglab checkpoint header: {e}"),
    })?;
    if info.format != FORMAT_VERSION {
        return Err(TrainError::Checkpoint {
            path,
            message: format!(
                "checkpoint format {} is not supported (expected {FORMAT_VERSION})",
                info.format
            ),
        });
    }
    Ok(info)
}

/// Lays the fields of `top` over those of `base`, nested objects field by field; other values
/// replace. A checkpoint's stored configuration laid over the current one differs from it only
/// where the checkpoint says otherwise: options added after it was written are not differences.
pub(crate) fn overlay(base: &mut serde_json::Value, top: &serde_json::Value) {
    match (base, top) {
        (serde_json::Value::Object(base), serde_json::Value::Object(top)) => {
            for (key, value) in top {
                match base.get_mut(key) {
                    Some(b) => overlay(b, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, top) => *base = top.clone(),
    }
}

/// Reads the header of the checkpoint in `dir` ([`read_info`]) and checks that it belongs to
/// `model` and a trainer with the model configuration `model_config`.
pub(crate) fn read_compatible<M: Serialize>(
    dir: &Path,
    model: ModelKind,
    model_config: &M,
) -> Result<CheckpointInfo, TrainError> {
    let info = read_info(dir)?;
    let model_config = serde_json::to_value(model_config).expect("config serialises");
    check_compatible(&info, dir, model, &model_config)?;
    Ok(info)
}

/// Checks that the checkpoint in `dir` belongs to `model` and a trainer with these configs.
fn check_compatible(
    info: &CheckpointInfo,
    dir: &Path,
    model: ModelKind,
    model_config: &serde_json::Value,
) -> Result<(), TrainError> {
    let path = dir.join(STATE_FILE);
    if info.model != model {
        return Err(TrainError::Checkpoint {
            path,
            message: format!("checkpoint of a {} model, expected {model}", info.model),
        });
    }
    let mut stored = model_config.clone();
    overlay(&mut stored, &info.model_config);
    if &stored != model_config {
        return Err(TrainError::Checkpoint {
            path,
            message: format!(
                "model configuration differs from the trainer's: checkpoint has {}, trainer has {model_config}",
                info.model_config
            ),
        });
    }
    Ok(())
}

/// Refuses a weights-only checkpoint where a resume needs the full training state.
pub(crate) fn require_full(dir: &Path) -> Result<(), TrainError> {
    if read_info(dir)?.weights_only {
        return Err(TrainError::Checkpoint {
            path: dir.join(STATE_FILE),
            message: "holds weights only (no optimizer state); a fit resumes from a full \
                      checkpoint (checkpoint_latest)"
                .into(),
        });
    }
    Ok(())
}

/// Writes the files of one checkpoint into a folder that [`crate::atomic::build_folder`]
/// stages (see [`super::Trainer::save_checkpoint`]).
pub(crate) struct CheckpointWriter {
    folder: PathBuf,
    contents: Contents,
}

impl CheckpointWriter {
    /// Writes `contents` into `folder`, which exists and is empty.
    pub(crate) fn new(folder: &Path, contents: Contents) -> Self {
        Self {
            folder: folder.to_path_buf(),
            contents,
        }
    }

    /// Whether the checkpoint takes the training state (optimizers, image pools).
    pub(crate) fn full(&self) -> bool {
        self.contents == Contents::Full
    }

    /// Saves the weights (and batch-norm statistics) of `module` as `<name>.bpk`.
    ///
    /// burn keeps a batch norm's latest running-statistics update in a per-thread buffer
    /// until something syncs it, and saving reads the synced value only; `valid()` syncs the
    /// shared statistics as a side effect. Without it a checkpoint taken right after a training
    /// step holds statistics one step old and a resumed run diverges from an uninterrupted one.
    /// (The record of `valid()` itself is not saved: it has dropout switched off.)
    pub(crate) fn module<M: Module>(&self, name: &str, module: &M) -> Result<(), TrainError> {
        let path = self.folder.join(format!("{name}.bpk"));
        drop(module.valid());
        module
            .clone()
            .save_file(&path)
            .map_err(|e| TrainError::Checkpoint {
                path,
                message: e.to_string(),
            })
    }

    /// Saves the state of `optimizer` as `opt_<name>.bpk` (nothing in a weights-only
    /// checkpoint).
    pub(crate) fn optimizer(
        &self,
        name: &str,
        optimizer: &ModuleOptimizer,
    ) -> Result<(), TrainError> {
        if !self.full() {
            return Ok(());
        }
        let path = self.folder.join(format!("opt_{name}.bpk"));
        optimizer.save(&path).map_err(|e| TrainError::Checkpoint {
            path,
            message: e.to_string(),
        })
    }

    /// Writes `state.json`, the last file of a checkpoint.
    pub(crate) fn finish(self, info: &CheckpointInfo) -> Result<(), TrainError> {
        let state = self.folder.join(STATE_FILE);
        let info = CheckpointInfo {
            weights_only: !self.full(),
            ..info.clone()
        };
        let json = serde_json::to_string_pretty(&info).expect("checkpoint header serialises");
        fs::write(&state, json).map_err(|source| TrainError::Io {
            path: state.clone(),
            source,
        })
    }
}

/// Loads `<dir>/<name>.bpk` into `module`.
pub(crate) fn load_module<M: Module>(dir: &Path, name: &str, module: M) -> Result<M, TrainError> {
    let path = dir.join(format!("{name}.bpk"));
    if !path.exists() {
        return Err(TrainError::Checkpoint {
            path,
            message: "missing from the checkpoint".into(),
        });
    }
    module
        .try_load_file(&path)
        .map_err(|e| TrainError::Checkpoint {
            path,
            message: e.to_string(),
        })
}

/// Loads `<dir>/opt_<name>.bpk` into `optimizer`; a weights-only checkpoint (`info`) leaves
/// `optimizer` as it is.
pub(crate) fn load_optimizer(
    dir: &Path,
    info: &CheckpointInfo,
    name: &str,
    optimizer: ModuleOptimizer,
) -> Result<ModuleOptimizer, TrainError> {
    if info.weights_only {
        return Ok(optimizer);
    }
    let path = dir.join(format!("opt_{name}.bpk"));
    if !path.exists() {
        return Err(TrainError::Checkpoint {
            path,
            message: "missing from the checkpoint".into(),
        });
    }
    optimizer.load(&path).map_err(|e| TrainError::Checkpoint {
        path,
        message: e.to_string(),
    })
}
