//! Checkpoint retention (`train.keep`, docs/sweeps.md): what a finished trial keeps of its
//! two checkpoints. A trial that has not finished keeps both (a timed-out, pruned or
//! interrupted one resumes from `checkpoint_latest`); once it has finished, [`retain`] removes
//! the ones `keep` does not name. `checkpoint_best` holds the weights only (module doc of
//! `train::checkpoint`).

use std::fs;
use std::path::Path;

use super::TrainError;
use super::checkpoint::{self, STATE_FILE};
use super::config::Keep;
use crate::experiment::paths::TrialPaths;

/// Files of a full checkpoint that a weights-only one leaves out: optimizer state and the
/// CycleGAN's image pools.
fn training_state_file(name: &str) -> bool {
    name.starts_with("opt_") || name.starts_with("pool_")
}

/// Applies `keep` to the checkpoints of the finished trial in `paths`. With `best`, a trial
/// without a best checkpoint (no validation, so every epoch was "best") gets one made from its
/// final weights before `checkpoint_latest` goes.
pub fn retain(paths: &TrialPaths, keep: Keep) -> Result<(), TrainError> {
    let (best, latest) = (paths.checkpoint_best(), paths.checkpoint_latest());
    if keep == Keep::Best && !best.exists() && latest.join(STATE_FILE).exists() {
        weights_of(&latest, &best)?;
    }
    if !keep.keeps_last() {
        crate::atomic::remove_folder(&latest)?;
    }
    if !keep.keeps_best() {
        crate::atomic::remove_folder(&best)?;
    }
    Ok(())
}

/// Writes a weights-only copy of the full checkpoint `from` as `to` (atomically).
fn weights_of(from: &Path, to: &Path) -> Result<(), TrainError> {
    let mut info = checkpoint::read_info(from)?;
    info.weights_only = true;
    info.pool_shapes.clear();
    let entries = fs::read_dir(from).map_err(|source| TrainError::Io {
        path: from.to_path_buf(),
        source,
    })?;
    let names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != STATE_FILE && !training_state_file(n))
        .collect();
    crate::atomic::build_folder(to, true, |folder| {
        for name in &names {
            let (src, dst) = (from.join(name), folder.join(name));
            fs::copy(&src, &dst).map_err(|source| TrainError::Io { path: src, source })?;
        }
        let state = folder.join(STATE_FILE);
        let json = serde_json::to_string_pretty(&info).expect("checkpoint header serialises");
        fs::write(&state, json).map_err(|source| TrainError::Io {
            path: state.clone(),
            source,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelKind;
    use crate::train::checkpoint::CheckpointInfo;

    /// A trial folder with a full `checkpoint_latest` and, with `best`, a weights-only
    /// `checkpoint_best`, laid out as the trainers write them.
    fn trial(best: bool) -> (tempfile::TempDir, TrialPaths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = TrialPaths::new(dir.path());
        let write = |folder: &Path, weights_only: bool| {
            fs::create_dir_all(folder).unwrap();
            let mut info = CheckpointInfo::new(ModelKind::Unet3d, 4, 0, &(), &());
            info.weights_only = weights_only;
            fs::write(
                folder.join(STATE_FILE),
                serde_json::to_string(&info).unwrap(),
            )
            .unwrap();
            fs::write(folder.join("unet3d.bpk"), b"weights").unwrap();
            fs::write(folder.join("driver.json"), b"{}").unwrap();
            if !weights_only {
                fs::write(folder.join("opt_unet3d.bpk"), b"moments").unwrap();
            }
        };
        write(&paths.checkpoint_latest(), false);
        if best {
            write(&paths.checkpoint_best(), true);
        }
        (dir, paths)
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(dir)
            .map(|e| {
                e.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    #[test]
    fn each_keep_leaves_only_its_checkpoints() {
        for (keep, expected) in [
            (Keep::BestLast, vec!["checkpoint_best", "checkpoint_latest"]),
            (Keep::Best, vec!["checkpoint_best"]),
            (Keep::Last, vec!["checkpoint_latest"]),
        ] {
            let (_dir, paths) = trial(true);
            retain(&paths, keep).unwrap();
            assert_eq!(files(paths.dir()), expected, "{keep:?}");
        }
        // The latest checkpoint that `last` keeps is the full state.
        let (_dir, paths) = trial(true);
        retain(&paths, Keep::Last).unwrap();
        assert!(paths.checkpoint_latest().join("opt_unet3d.bpk").exists());
    }

    #[test]
    fn keep_best_without_a_best_epoch_keeps_the_final_weights_only() {
        let (_dir, paths) = trial(false);
        retain(&paths, Keep::Best).unwrap();
        assert_eq!(files(paths.dir()), ["checkpoint_best"]);
        let best = paths.checkpoint_best();
        assert_eq!(files(&best), ["driver.json", "state.json", "unet3d.bpk"]);
        let info = checkpoint::read_info(&best).unwrap();
        assert!(info.weights_only);
        assert_eq!(info.steps, 4);
    }
}
