//! Tracking: the Parquet store (the embedded, source-of-truth tracker) and its MLflow mirror.
//!
//! # Store layout and schema (the contract between the runner, `runs`, MLflow sync and reports)
//!
//! A sweep's store lives in `experiments/<sweep>/store/`: one folder per table, each holding
//! immutable Parquet part files. A part is written to a hidden temporary name (`.tmp-…`) in the
//! same folder, then renamed, so readers never see a half-written file; readers ignore names
//! starting with `.`. Part names are unique per (trial, attempt, sequence number), so parallel
//! workers (local processes or SLURM tasks on a shared filesystem) never collide and need no lock.
//!
//! | table | one row per | columns |
//! |---|---|---|
//! | `trials` | trial attempt × status event | `sweep` str, `trial_id` str, `attempt` u32, `status` str (running / finished / failed / killed / interrupted), `event_ms` i64, `model` str, `classes` str (comma-joined, e.g. "golgi,nuclei"), `fold` u32, `seed` u64, `preset` str, `scale` str, `dataset` str, `dataset_fingerprint` str, `config_json` str, `error` str?, `started_ms` i64, `ended_ms` i64?, `git_commit` str, `git_dirty` bool, `git_diff_sha256` str?, `host` str, `device` str, `seglab_version` str, `burn_version` str, `command` str, plus one `param.<dotted.key>` str column per swept/config key |
//! | `epochs` | trial × attempt × epoch × split × metric | `trial_id`, `attempt`, `epoch` u32, `split` str (train / val), `metric` str, `value` f64, `wall_s` f64 |
//! | `results` | trial × attempt × test volume × class × metric | `trial_id`, `attempt`, `volume` str, `class` str, `metric` str, `value` f64 |
//! | `timings` | trial × attempt × phase | `trial_id`, `attempt`, `phase` str (synth_masks, preprocess, patches, train, validate, predict, evaluate), `seconds` f64 |
//!
//! Times are Unix milliseconds (UTC). Non-finite values stay NaN.
//!
//! **Canonical view.** The current status of an attempt is its latest `trials` event. For each
//! trial the *chosen attempt* is the highest attempt whose status is `finished`, or else the
//! highest attempt. `epochs`, `results` and `timings` rows count only for the chosen attempt. An
//! attempt that resumes from a checkpoint re-emits the epoch history its checkpoint carries, so
//! the chosen attempt's rows are complete; this is why a killed and re-run sweep holds exactly
//! the rows of an uninterrupted one.
