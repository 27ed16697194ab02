//! (under construction)
//! Experiments: sweep specs, trial expansion and config hashes, the local and SLURM runners,
//! provenance. [`paths::SweepPaths`] is the one builder of sweep and trial paths.

pub mod paths;
