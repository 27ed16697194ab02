//! Where a running fit is inside its epoch, for `seglab sweep status` (docs/sweeps.md): the
//! store holds finished epochs only, so the driver also writes `progress.json` beside
//! `checkpoint_latest` (in the trial folder) after a step, at most every
//! [`WRITE_EVERY`]. The file is for people watching; a failed write is ignored.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The file in a trial folder.
pub const PROGRESS_FILE: &str = "progress.json";

/// The least time between two writes.
pub const WRITE_EVERY: Duration = Duration::from_secs(5);

/// The step a fit is at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepProgress {
    /// The epoch in progress (1-based).
    pub epoch: u32,
    /// Steps taken in it.
    pub step: u64,
    /// Steps of the epoch.
    pub steps: u64,
    /// `train.epochs`.
    pub epochs: u32,
}

/// Writes [`StepProgress`] to the trial folder, throttled.
pub struct ProgressWriter {
    path: PathBuf,
    last: Option<Instant>,
}

impl ProgressWriter {
    /// A writer of the `progress.json` beside the checkpoint folder `checkpoint_latest`.
    pub fn beside(checkpoint_latest: &Path) -> Self {
        ProgressWriter {
            path: checkpoint_latest.with_file_name(PROGRESS_FILE),
            last: None,
        }
    }

    /// Records `p` unless the last write is younger than [`WRITE_EVERY`].
    pub fn step(&mut self, p: &StepProgress) {
        if self.last.is_some_and(|t| t.elapsed() < WRITE_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let json = serde_json::to_string(p).expect("progress serialises");
        let _ = crate::atomic::write_file(&self.path, json.as_bytes());
    }
}

/// The progress recorded in the trial folder `trial_dir`, if any.
pub fn read(trial_dir: &Path) -> Option<StepProgress> {
    let text = std::fs::read_to_string(trial_dir.join(PROGRESS_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_throttled_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ProgressWriter::beside(&dir.path().join("checkpoint_latest"));
        let at = |step| StepProgress {
            epoch: 2,
            step,
            steps: 10,
            epochs: 5,
        };
        w.step(&at(1));
        w.step(&at(2));
        assert_eq!(
            read(dir.path()),
            Some(at(1)),
            "the second write came too soon"
        );
        assert_eq!(read(&dir.path().join("none")), None);
    }
}
