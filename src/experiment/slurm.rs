//! Sweeps on a SLURM cluster (docs/cluster.md): the scheduler the researchers
//! already have runs the trials, seglab only writes what it needs.
//!
//! [`prepare`] writes into the sweep folder's `slurm/` (see [`SweepPaths::slurm`]):
//!
//! - `manifest.json`: the trials that still have to run ([`super::runner::pending_trials`],
//!   the rule of `sweep run`), row i for array task i. A finished sweep gets no manifest.
//! - `array.sbatch`: a job array `--array=0-N%K --requeue --open-mode=append
//!   --signal=B:USR1@<s>` whose task runs `seglab sweep task SPEC --index
//!   $SLURM_ARRAY_TASK_ID`, i.e. [`super::runner::run_task`], the code path of the local
//!   runner, writing to the same store (parts are per trial and attempt: no locking).
//! - `report.sbatch`: `seglab report` of the sweep, submitted with `--dependency=afterany`.
//!
//! `B:` sends the warning signal to the batch shell only, so the script runs seglab in the
//! background and forwards USR1 to it. seglab checkpoints, records the attempt `interrupted`
//! and asks Slurm to requeue the task ([`requeue_self`]); the restarted task (same job id,
//! `SLURM_RESTART_COUNT` > 0) starts a new attempt that resumes from the checkpoint. The store's
//! canonical view counts one attempt per trial, so nothing is lost or counted twice.
//!
//! [`submit`] runs `sbatch --parsable` for both scripts and records the job ids in
//! `jobs.json`, which `sweep status` reads to show the array's jobs from `squeue`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ExperimentError;
use super::paths::SweepPaths;
use super::runner::pending_trials;
use super::spec::SweepSpec;
use super::trial::{Trial, expand};
use crate::tracking::Store;

/// Warning time before the end of a job when no `--time` is given (the cluster's default
/// limit applies; seglab checkpoints within seconds, this leaves room for a slow filesystem).
pub const DEFAULT_WARNING_S: u64 = 180;

/// Slurm's default `MaxArraySize` is 1001 (largest index 1000).
pub const DEFAULT_MAX_ARRAY_TASKS: usize = 1000;

/// A job time limit (`--time`), in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeLimit(u64);

impl TimeLimit {
    pub fn seconds(self) -> u64 {
        self.0
    }

    /// The value of `#SBATCH --time` (`D-HH:MM:SS`, or `HH:MM:SS` under a day).
    pub fn sbatch_value(self) -> String {
        let (d, rest) = (self.0 / 86_400, self.0 % 86_400);
        let hms = format!(
            "{:02}:{:02}:{:02}",
            rest / 3600,
            rest % 3600 / 60,
            rest % 60
        );
        if d > 0 { format!("{d}-{hms}") } else { hms }
    }

    /// How long before the limit Slurm sends USR1 (`--signal=B:USR1@<s>`): a tenth of the
    /// limit within 1 to 10 minutes, and never more than half of it, so short test jobs still
    /// run before they are warned.
    pub fn warning_seconds(self) -> u64 {
        (self.0 / 10).clamp(60, 600).min(self.0 / 2).max(1)
    }
}

impl FromStr for TimeLimit {
    type Err = String;

    /// Parses `HH:MM:SS` or `D-HH:MM:SS` (minutes and seconds below 60, more than zero).
    fn from_str(s: &str) -> Result<TimeLimit, String> {
        let bad = || format!("expected HH:MM:SS or D-HH:MM:SS (e.g. 04:00:00), got `{s}`");
        let (days, hms) = match s.split_once('-') {
            Some((d, rest)) => (d.parse::<u64>().map_err(|_| bad())?, rest),
            None => (0, s),
        };
        let parts: Vec<&str> = hms.split(':').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty() || p.len() > 3) {
            return Err(bad());
        }
        let n: Vec<u64> = parts
            .iter()
            .map(|p| p.parse::<u64>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        if n[1] >= 60 || n[2] >= 60 {
            return Err(format!("{}: minutes and seconds must be below 60", bad()));
        }
        let total = days * 86_400 + n[0] * 3600 + n[1] * 60 + n[2];
        if total == 0 {
            return Err(format!("{}: the limit must be more than zero", bad()));
        }
        Ok(TimeLimit(total))
    }
}

/// How the sbatch scripts are written (the flags of `seglab sweep slurm`).
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    /// The sweep folder (absolute: jobs start elsewhere).
    pub sweep_dir: PathBuf,
    /// The folder the jobs start in (`--chdir`; the report lands in its `reports/<sweep>/`).
    pub workdir: PathBuf,
    /// The seglab executable the jobs run (absolute; normally the running one).
    pub exe: PathBuf,
    pub partition: Option<String>,
    pub time: Option<TimeLimit>,
    /// GPUs per array task (`--gpus`).
    pub gpus: Option<u32>,
    /// Array tasks at once (`%K`).
    pub max_parallel: Option<u32>,
    /// `cpu`, `wgpu:N` or `cuda:N`, passed to the tasks.
    pub device: String,
    /// Put failed trials in the manifest too (as `sweep run --retry-failed`).
    pub retry_failed: bool,
    /// What each array task asks of the cluster besides time and GPUs.
    pub resources: SlurmResources,
}

/// The resource and accounting requests of `sweep slurm` (each an `#SBATCH` line of the same
/// name when given; the cluster's defaults otherwise).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlurmResources {
    /// CPUs per array task (`--cpus-per-task`); seglab's threads follow it.
    pub cpus_per_task: Option<u32>,
    /// Memory per node (`--mem`, e.g. `16G`).
    pub mem: Option<String>,
    /// The account the jobs are charged to (`--account`; both scripts).
    pub account: Option<String>,
    /// Quality of service (`--qos`; both scripts).
    pub qos: Option<String>,
    /// Node features (`--constraint`, e.g. `a100|h100`).
    pub constraint: Option<String>,
    /// GPUs per task (`--gpus-per-task`), the alternative to `--gpus` that some clusters
    /// require.
    pub gpus_per_task: Option<u32>,
}

impl SlurmResources {
    /// Checks the values as sbatch would take them; errors name the flag and what was
    /// expected.
    pub fn check(&self) -> Result<(), String> {
        let name_ok = |v: &str, extra: &str| {
            !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c) || extra.contains(c))
        };
        if self.cpus_per_task == Some(0) {
            return Err("--cpus-per-task: expected at least 1".into());
        }
        if self.gpus_per_task == Some(0) {
            return Err("--gpus-per-task: expected at least 1 (leave it out for CPU)".into());
        }
        if let Some(m) = &self.mem {
            let digits = m.trim_end_matches(['K', 'M', 'G', 'T']);
            let suffix = m.len() - digits.len();
            if digits.is_empty() || suffix > 1 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "--mem: expected a size such as 16G, 8000M or 1T (sbatch's --mem), got `{m}`"
                ));
            }
        }
        for (flag, value) in [("--account", &self.account), ("--qos", &self.qos)] {
            if let Some(v) = value
                && !name_ok(v, "")
            {
                return Err(format!(
                    "{flag}: expected a name as `sacctmgr` lists it (letters, digits, -_.), got `{v}`"
                ));
            }
        }
        if let Some(c) = &self.constraint
            && !name_ok(c, "&|[]*:,()!")
        {
            return Err(format!(
                "--constraint: expected node features such as `a100` or `a100|h100` (no spaces), \
                 got `{c}`"
            ));
        }
        Ok(())
    }
}

/// One row of the manifest: what array task `index` runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRow {
    pub index: usize,
    pub trial_id: String,
    /// For people reading the file: model, fold and seed of the trial.
    pub model: String,
    pub fold: u32,
    pub seed: u64,
}

/// The trials of one submission, in array-index order (`slurm/manifest.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub sweep: String,
    /// The spec the trials were expanded from.
    pub spec: PathBuf,
    pub trials: Vec<ManifestRow>,
}

impl Manifest {
    /// The manifest of `trials` of `spec`, read from `spec_file` (absolute, for the record).
    pub fn new(spec: &SweepSpec, spec_file: &Path, trials: &[&Trial]) -> Manifest {
        Manifest {
            sweep: spec.name.clone(),
            spec: spec_file.to_path_buf(),
            trials: trials
                .iter()
                .enumerate()
                .map(|(index, t)| ManifestRow {
                    index,
                    trial_id: t.trial_id.clone(),
                    model: t.config.model.name().to_string(),
                    fold: t.fold,
                    seed: t.seed,
                })
                .collect(),
        }
    }

    /// Reads a manifest; errors name the file and what is wrong with it.
    pub fn read(path: &Path) -> Result<Manifest, ExperimentError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExperimentError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| slurm_error(path, format!("not a manifest: {e}")))
    }

    /// The trial of array task `index` of sweep `sweep`.
    pub fn trial_id(
        &self,
        path: &Path,
        sweep: &str,
        index: usize,
    ) -> Result<&str, ExperimentError> {
        if self.sweep != sweep {
            return Err(slurm_error(
                path,
                format!(
                    "field `sweep`: expected `{sweep}` (the spec's name), got `{}`",
                    self.sweep
                ),
            ));
        }
        match self.trials.get(index) {
            Some(row) if row.index == index => Ok(&row.trial_id),
            _ => Err(slurm_error(
                path,
                format!(
                    "no row {index}: expected an index below {} (was the manifest rewritten by a \
                     later `seglab sweep slurm`?)",
                    self.trials.len()
                ),
            )),
        }
    }
}

/// The ids of a submission (`slurm/jobs.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmJobs {
    pub array_job_id: String,
    /// None when the report job could not be submitted.
    pub report_job_id: Option<String>,
    pub tasks: usize,
    pub submitted_ms: i64,
}

impl SlurmJobs {
    /// The recorded jobs of a sweep, or None when it was never submitted by seglab.
    pub fn read(paths: &SweepPaths) -> Result<Option<SlurmJobs>, ExperimentError> {
        let path = paths.slurm_jobs();
        super::read_json_record(&path, |e| {
            slurm_error(&path, format!("not a job record: {e}"))
        })
    }
}

/// What [`prepare`] found and wrote.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub trials: usize,
    pub already_finished: usize,
    pub skipped_failed: usize,
    /// Array tasks (manifest rows); 0 = nothing to run, nothing written.
    pub tasks: usize,
    pub manifest: PathBuf,
    pub array_script: PathBuf,
    pub report_script: PathBuf,
    /// Where the report job writes the report.
    pub report_dir: PathBuf,
}

fn slurm_error(path: &Path, message: String) -> ExperimentError {
    ExperimentError::Slurm {
        path: path.to_path_buf(),
        message,
    }
}

/// Writes the manifest of the not-finished trials and the two sbatch scripts (module doc).
/// Writes nothing when every trial is finished (or failed, without `retry_failed`). Refuses
/// while an array submitted earlier for this sweep is still in the queue: its tasks read the
/// manifest by index.
pub fn prepare(spec: &SweepSpec, opts: &SlurmOptions) -> Result<Prepared, ExperimentError> {
    let paths = SweepPaths::new(&opts.sweep_dir);
    let trials = expand(spec)?;
    let store = Store::create(paths.store())?;
    let pending = pending_trials(&trials, &store, opts.retry_failed, false)?;
    let prepared = Prepared {
        trials: trials.len(),
        already_finished: pending.already_finished,
        skipped_failed: pending.skipped_failed,
        tasks: pending.to_run.len(),
        manifest: paths.slurm_manifest(),
        array_script: paths.slurm_array_script(),
        report_script: paths.slurm_report_script(),
        report_dir: super::paths::report_dir(&opts.workdir, &spec.name),
    };
    if prepared.tasks == 0 {
        return Ok(prepared);
    }
    check_no_queued_array(&paths)?;
    let spec_file = absolute(&spec.file)?;
    let manifest = Manifest::new(spec, &spec_file, &pending.to_run);
    let json = serde_json::to_string_pretty(&manifest).expect("a manifest serialises");
    write_atomic(&prepared.manifest, &json, false)?;
    let array = array_script(spec, &spec_file, prepared.tasks, opts)?;
    write_atomic(&prepared.array_script, &array, true)?;
    let report = report_script(spec, &prepared.report_dir, opts)?;
    write_atomic(&prepared.report_script, &report, true)?;
    Ok(prepared)
}

/// Errors when the sweep's recorded array still has jobs in `squeue` (a second array would
/// run the same trials at once, and the first one's tasks would read the new manifest).
fn check_no_queued_array(paths: &SweepPaths) -> Result<(), ExperimentError> {
    let Some(jobs) = SlurmJobs::read(paths)? else {
        return Ok(());
    };
    if let Some(Ok(lines)) = squeue(&[jobs.array_job_id.as_str()])
        && lines.len() > 1
    {
        return Err(slurm_error(
            &paths.slurm_jobs(),
            format!(
                "array job {} of this sweep is still in the queue; wait for it or `scancel {}` \
                 before writing a new manifest",
                jobs.array_job_id, jobs.array_job_id
            ),
        ));
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf, ExperimentError> {
    std::path::absolute(path).map_err(|source| ExperimentError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A path for a shell command line (single-quoted).
fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// A path for an `#SBATCH` line, which sbatch splits at white space and where `%` starts a
/// file-name pattern.
fn directive_path(path: &Path, what: &str) -> Result<String, ExperimentError> {
    let s = path.display().to_string();
    if s.chars().any(|c| c.is_whitespace() || c == '%') {
        return Err(slurm_error(
            path,
            format!("{what}: expected a path without white space or `%` (sbatch cannot take it)"),
        ));
    }
    Ok(s)
}

/// The `#SBATCH` lines shared by both scripts: partition and start folder.
fn common_directives(opts: &SlurmOptions) -> Result<String, ExperimentError> {
    let mut s = String::new();
    writeln!(
        s,
        "#SBATCH --chdir={}",
        directive_path(&opts.workdir, "start folder")?
    )
    .unwrap();
    if let Some(p) = &opts.partition {
        writeln!(s, "#SBATCH --partition={p}").unwrap();
    }
    let r = &opts.resources;
    if let Some(a) = &r.account {
        writeln!(s, "#SBATCH --account={a}").unwrap();
    }
    if let Some(q) = &r.qos {
        writeln!(s, "#SBATCH --qos={q}").unwrap();
    }
    Ok(s)
}

/// The array task's own requests: CPUs, memory, node features, GPUs.
fn task_directives(opts: &SlurmOptions) -> String {
    let mut s = String::new();
    let r = &opts.resources;
    if let Some(c) = r.cpus_per_task {
        writeln!(s, "#SBATCH --cpus-per-task={c}").unwrap();
    }
    if let Some(m) = &r.mem {
        writeln!(s, "#SBATCH --mem={m}").unwrap();
    }
    if let Some(c) = &r.constraint {
        writeln!(s, "#SBATCH --constraint={c}").unwrap();
    }
    if let Some(g) = opts.gpus {
        writeln!(s, "#SBATCH --gpus={g}").unwrap();
    }
    if let Some(g) = r.gpus_per_task {
        writeln!(s, "#SBATCH --gpus-per-task={g}").unwrap();
    }
    s
}

/// The job array script (module doc): task i runs manifest row i.
pub fn array_script(
    spec: &SweepSpec,
    spec_file: &Path,
    tasks: usize,
    opts: &SlurmOptions,
) -> Result<String, ExperimentError> {
    let paths = SweepPaths::new(&opts.sweep_dir);
    let warning = opts
        .time
        .map_or(DEFAULT_WARNING_S, TimeLimit::warning_seconds);
    let throttle = opts
        .max_parallel
        .map(|k| format!("%{k}"))
        .unwrap_or_default();
    let mut s = String::from("#!/bin/bash\n");
    writeln!(
        s,
        "# seglab sweep {}: {tasks} trial(s) as a job array, written by `seglab sweep slurm`.",
        spec.name
    )
    .unwrap();
    writeln!(
        s,
        "# Task i runs row i of {}.",
        paths.slurm_manifest().display()
    )
    .unwrap();
    writeln!(
        s,
        "# On USR1 ({warning} s before the time limit, or `scancel --batch --signal=USR1 JOB`)\n\
         # seglab checkpoints, records the attempt interrupted and requeues the task, which\n\
         # then resumes from the checkpoint."
    )
    .unwrap();
    writeln!(s, "#SBATCH --job-name=seglab-{}", spec.name).unwrap();
    writeln!(s, "#SBATCH --array=0-{}{throttle}", tasks - 1).unwrap();
    s.push_str("#SBATCH --requeue\n#SBATCH --open-mode=append\n");
    writeln!(s, "#SBATCH --signal=B:USR1@{warning}").unwrap();
    directive_path(&opts.sweep_dir, "sweep folder")?;
    let log = paths.slurm_task_log_pattern();
    writeln!(s, "#SBATCH --output={}", log.display()).unwrap();
    s.push_str(&common_directives(opts)?);
    if let Some(t) = opts.time {
        writeln!(s, "#SBATCH --time={}", t.sbatch_value()).unwrap();
    }
    s.push_str(&task_directives(opts));
    if opts.resources.cpus_per_task.is_some() {
        // seglab's threads (rayon: its kernels and burn's CPU backend; polars) match the
        // task's CPUs rather than the node's.
        s.push_str(
            "\nexport RAYON_NUM_THREADS=\"$SLURM_CPUS_PER_TASK\" \
             POLARS_MAX_THREADS=\"$SLURM_CPUS_PER_TASK\"",
        );
    }
    writeln!(
        s,
        r#"
echo "seglab: task ${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}, restart ${{SLURM_RESTART_COUNT:-0}}, on $(hostname) at $(date -Is)"
pid=
# USR1 reaches this shell only (B:); pass it on to seglab.
trap 'echo "seglab: USR1 received, asking the trial to checkpoint"; [ -n "$pid" ] && kill -USR1 "$pid"' USR1
{exe} sweep task {spec} --index "$SLURM_ARRAY_TASK_ID" --out {out} --device {device} &
pid=$!
# A trapped signal ends `wait` early: wait again until seglab itself has exited.
wait "$pid"
rc=$?
while kill -0 "$pid" 2>/dev/null; do
  wait "$pid"
  rc=$?
done
exit "$rc""#,
        exe = sh_quote(&opts.exe),
        spec = sh_quote(spec_file),
        out = sh_quote(&opts.sweep_dir),
        device = opts.device,
    )
    .unwrap();
    Ok(s)
}

/// The report job's script: `seglab report` of the sweep into `report_dir`.
pub fn report_script(
    spec: &SweepSpec,
    report_dir: &Path,
    opts: &SlurmOptions,
) -> Result<String, ExperimentError> {
    let paths = SweepPaths::new(&opts.sweep_dir);
    let mut s = String::from("#!/bin/bash\n");
    writeln!(
        s,
        "# The report of seglab sweep {}, submitted to run after its job array (afterany).",
        spec.name
    )
    .unwrap();
    writeln!(s, "#SBATCH --job-name=seglab-{}-report", spec.name).unwrap();
    directive_path(&opts.sweep_dir, "sweep folder")?;
    let log = paths.slurm_report_log_pattern();
    writeln!(s, "#SBATCH --output={}", log.display()).unwrap();
    s.push_str(&common_directives(opts)?);
    writeln!(
        s,
        "\nset -eu\n{} report {} --out {}",
        sh_quote(&opts.exe),
        sh_quote(&opts.sweep_dir),
        sh_quote(report_dir)
    )
    .unwrap();
    Ok(s)
}

/// Writes `text` to `path` atomically ([`crate::atomic::write_file_with`]); `executable` sets
/// mode 755.
fn write_atomic(path: &Path, text: &str, executable: bool) -> Result<(), ExperimentError> {
    use std::os::unix::fs::OpenOptionsExt;
    crate::atomic::write_file_with(path, |tmp| {
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(if executable { 0o755 } else { 0o644 })
                .open(tmp)?;
            f.write_all(text.as_bytes())
        })();
        written.map_err(|source| ExperimentError::Io {
            path: path.to_path_buf(),
            source,
        })
    })
}

/// Submits the prepared scripts: the array, then the report job after it (`afterany`), and
/// records both ids in `slurm/jobs.json`. When the report job cannot be submitted the array
/// id is still recorded before the error is returned.
pub fn submit(prepared: &Prepared, paths: &SweepPaths) -> Result<SlurmJobs, ExperimentError> {
    let array = sbatch(&[], &prepared.array_script)?;
    let mut jobs = SlurmJobs {
        array_job_id: array,
        report_job_id: None,
        tasks: prepared.tasks,
        submitted_ms: crate::tracking::now_ms(),
    };
    let dependency = format!("--dependency=afterany:{}", jobs.array_job_id);
    let report = sbatch(&[&dependency], &prepared.report_script);
    if let Ok(id) = &report {
        jobs.report_job_id = Some(id.clone());
    }
    let json = serde_json::to_string_pretty(&jobs).expect("job ids serialise");
    write_atomic(&paths.slurm_jobs(), &json, false)?;
    match report {
        Ok(_) => Ok(jobs),
        Err(e) => Err(slurm_error(
            &prepared.report_script,
            format!(
                "array job {} was submitted (recorded), the report job was not: {e}",
                jobs.array_job_id
            ),
        )),
    }
}

/// Runs `sbatch --parsable ARGS SCRIPT` and returns the job id it prints (`id` or
/// `id;cluster`).
fn sbatch(args: &[&str], script: &Path) -> Result<String, ExperimentError> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .arg(script)
        .output()
        .map_err(|e| {
            slurm_error(
                script,
                format!("cannot run sbatch ({e}); is this a SLURM login node with sbatch on PATH?"),
            )
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    if !out.status.success() || id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(slurm_error(
            script,
            format!(
                "sbatch failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                stdout.trim()
            ),
        ));
    }
    Ok(id)
}

/// `squeue` lines (a header, then one line per job or pending array range) of the given job
/// ids; None when squeue is not on PATH. Jobs that left the queue are simply not listed.
pub fn squeue(job_ids: &[&str]) -> Option<Result<Vec<String>, String>> {
    let out = match Command::new("squeue")
        .arg("--jobs")
        .arg(job_ids.join(","))
        .args(["--format", "%.18i %.9T %.10M %.28j %R"])
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(format!("cannot run squeue: {e}"))),
        Ok(out) => out,
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // Ids purged from the controller are an error to squeue, not an empty list.
        if stderr.contains("Invalid job id") {
            return Some(Ok(Vec::new()));
        }
        return Some(Err(format!(
            "squeue failed ({}): {}",
            out.status,
            stderr.trim()
        )));
    }
    Some(Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()))
}

/// This process's array task as `JOBID_INDEX`, when it runs as one.
pub fn array_task_id() -> Option<String> {
    let job = std::env::var("SLURM_ARRAY_JOB_ID").ok()?;
    let task = std::env::var("SLURM_ARRAY_TASK_ID").ok()?;
    Some(format!("{job}_{task}"))
}

/// How often Slurm restarted this job (`SLURM_RESTART_COUNT`; 0 outside Slurm).
pub fn restart_count() -> u32 {
    std::env::var("SLURM_RESTART_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Asks Slurm to requeue this array task (`scontrol requeue JOBID_INDEX`): the task restarts
/// from the top of its script with the same job id. Slurm ends this job's processes right
/// away, so call it only after the store has the attempt's terminal event.
pub fn requeue_self(task: &str) -> Result<(), String> {
    let out = Command::new("scontrol")
        .args(["requeue", task])
        .output()
        .map_err(|e| format!("cannot run scontrol: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "scontrol requeue {task} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_limits_parse_and_print_as_sbatch_wants() {
        let t: TimeLimit = "02:00:00".parse().unwrap();
        assert_eq!(t.seconds(), 7200);
        assert_eq!(t.sbatch_value(), "02:00:00");
        assert_eq!(t.warning_seconds(), 600);
        let t: TimeLimit = "1-00:30:05".parse().unwrap();
        assert_eq!(t.seconds(), 86_400 + 1805);
        assert_eq!(t.sbatch_value(), "1-00:30:05");
        // Short limits: warned half-way, not before the job could start.
        assert_eq!(
            "00:02:00".parse::<TimeLimit>().unwrap().warning_seconds(),
            60
        );
        assert_eq!(
            "00:01:00".parse::<TimeLimit>().unwrap().warning_seconds(),
            30
        );
        assert_eq!(
            "00:00:01".parse::<TimeLimit>().unwrap().warning_seconds(),
            1
        );
    }

    #[test]
    fn bad_time_limits_say_what_was_expected() {
        for bad in [
            "2h",
            "120",
            "1:00",
            "00:61:00",
            "00:00:00",
            "x-01:00:00",
            "01::00",
            "",
        ] {
            let err = bad.parse::<TimeLimit>().unwrap_err();
            assert!(
                err.contains("expected HH:MM:SS or D-HH:MM:SS"),
                "{bad}: {err}"
            );
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(sh_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
        assert!(directive_path(Path::new("/a b"), "sweep folder").is_err());
        assert!(directive_path(Path::new("/a%b"), "sweep folder").is_err());
    }
}
