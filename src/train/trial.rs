//! One trial end to end (stage2-design.md "Running one trial"): load and split the dataset,
//! preprocess, synthesise masks (CycleGAN), cut patches, train with the epoch driver,
//! predict the test volumes with `infer::predict_volume` and evaluate them.

use super::TrainError;
use super::config::{StopFlag, TrialContext, TrialOutcome, TrialSink};

/// Runs one trial. Rows go to `sink` as they are produced; `stop` is honoured between steps
/// (checkpoint, then [`TrialOutcome::Interrupted`]).
pub fn run_trial(
    ctx: &TrialContext,
    sink: &mut dyn TrialSink,
    stop: &StopFlag,
) -> Result<TrialOutcome, TrainError> {
    let _ = (ctx, sink, stop);
    Err(TrainError::Setting("run_trial: not implemented yet".into()))
}
