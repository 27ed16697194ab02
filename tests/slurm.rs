//! `seglab sweep slurm` (docs/cluster.md). Without a cluster: the manifest holds the trials that are
//! not finished, the scripts carry the array, requeue and signal settings, array tasks run
//! their manifest row, and bad flags are errors that name the flag. With a real single-node
//! Slurm (slurm-wlm and munge from Debian, set up and torn down by this file; run as root with
//! `CI=true` or `SEGLAB_SLURM_TEST=1`): a submitted sweep ends with the store of a local run
//! and a report, and a task sent USR1 requeues itself, resumes and loses or doubles no row.

mod util;
use util::text;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use polars::prelude::*;
use seglab::tracking::{Store, TrialEvent, TrialStatus};

/// A spec of the threshold baseline and/or a tiny U-Net (the settings of tests/sweep.rs;
/// `epochs` 0 = the threshold baseline alone, no training settings) on fold 0 of the phantom.
fn spec(dir: &Path, name: &str, models: &str, epochs: u32) -> PathBuf {
    let mut body = format!(
        "dataset = \"../data\"\nclasses = [\"golgi\", \"nuclei\"]\nscale = \"cpu-small\"\n\
         models = [{models}]\n{}[cv]\nscheme = \"nested\"\nfolds = 3\nrun_folds = [0]\n",
        util::ALLOW_CLIPPING
    );
    if epochs > 0 {
        body.push_str(&format!(
            "[set]\n\"train.epochs\" = {epochs}\n\"data.patches.size\" = 16\n\
             \"data.patches.step\" = 16\n\"infer.window\" = 16\n\"infer.step\" = 12\n\
             \"net.base_filters\" = 2\n"
        ));
    }
    let path = dir.join("experiments").join(format!("{name}.toml"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, body).unwrap();
    path
}

/// Runs `seglab ARGS` in `cwd` with `env` set.
fn seglab_in(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = util::seglab();
    cmd.current_dir(cwd).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("cannot start the seglab binary")
}

fn chosen(store_dir: &Path) -> Vec<(TrialEvent, u32)> {
    let df = Store::open(store_dir).unwrap().chosen_trials().unwrap();
    let n = df.column("attempts").unwrap().u32().unwrap().clone();
    TrialEvent::from_frame(&df)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, e)| (e, n.get(i).unwrap()))
        .collect()
}

fn manifest_ids(sweep_dir: &Path) -> Vec<String> {
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sweep_dir.join("slurm/manifest.json")).unwrap(),
    )
    .unwrap();
    m["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["trial_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn slurm_scripts_cover_the_unfinished_trials_and_tasks_run_their_manifest_row() {
    let dir = util::temp_dir();
    let root = dir.path();
    util::easy_phantom(root);
    let path = spec(root, "cluster", "\"threshold\", \"unet3d\"", 1);
    let p = path.to_str().unwrap();
    let o = seglab_in(
        root,
        &[],
        &[
            "sweep",
            "slurm",
            p,
            "--time",
            "00:10:00",
            "--max-parallel",
            "2",
            "--partition",
            "debug",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let sweep_dir = root.join("experiments/cluster");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("2 of 2 trial(s) to run"), "{out}");
    assert!(out.contains("sbatch --parsable"), "{out}");

    let array = std::fs::read_to_string(sweep_dir.join("slurm/array.sbatch")).unwrap();
    let exe = env!("CARGO_BIN_EXE_seglab");
    for wanted in [
        "#SBATCH --array=0-1%2\n".to_string(),
        "#SBATCH --requeue\n".into(),
        "#SBATCH --open-mode=append\n".into(),
        // a tenth of 10 minutes
        "#SBATCH --signal=B:USR1@60\n".into(),
        "#SBATCH --time=00:10:00\n".into(),
        "#SBATCH --partition=debug\n".into(),
        format!("#SBATCH --output={}/slurm/%A_%a.out\n", sweep_dir.display()),
        format!("#SBATCH --chdir={}\n", root.display()),
        format!(
            "'{exe}' sweep task '{}' --index \"$SLURM_ARRAY_TASK_ID\"",
            path.display()
        ),
        "trap '".into(),
        "kill -USR1 \"$pid\"".into(),
    ] {
        assert!(array.contains(&wanted), "{wanted:?} missing in\n{array}");
    }
    let report = std::fs::read_to_string(sweep_dir.join("slurm/report.sbatch")).unwrap();
    assert!(
        report.contains(&format!(
            "'{exe}' report '{}' --out '{}'",
            sweep_dir.display(),
            root.join("reports/cluster").display()
        )),
        "{report}"
    );

    // Task 0 (the threshold baseline) runs as an array task would, outside Slurm.
    let ids = manifest_ids(&sweep_dir);
    assert_eq!(ids.len(), 2);
    let t0 = seglab_in(root, &[], &["sweep", "task", p, "--index", "0"]);
    assert!(t0.status.success(), "{}", text(&t0));
    let store = sweep_dir.join("store");
    let done = chosen(&store);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0.trial_id, ids[0]);
    assert_eq!(done[0].0.status, TrialStatus::Finished);

    // The next manifest holds only the trial that is not finished.
    let again = seglab_in(root, &[], &["sweep", "slurm", p]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("1 of 2 trial(s) to run"),
        "{}",
        text(&again)
    );
    assert_eq!(manifest_ids(&sweep_dir), vec![ids[1].clone()]);
    let array = std::fs::read_to_string(sweep_dir.join("slurm/array.sbatch")).unwrap();
    assert!(array.contains("#SBATCH --array=0-0\n"), "{array}");
    // No --time: the warning leaves the default margin.
    assert!(array.contains("#SBATCH --signal=B:USR1@180\n"), "{array}");
    let t1 = seglab_in(root, &[], &["sweep", "task", p, "--index", "0"]);
    assert!(t1.status.success(), "{}", text(&t1));
    // A task run again after its trial finished writes no attempt.
    let t1 = seglab_in(root, &[], &["sweep", "task", p, "--index", "0"]);
    assert!(t1.status.success(), "{}", text(&t1));
    let done = chosen(&store);
    assert_eq!(done.len(), 2);
    assert!(
        done.iter()
            .all(|(e, n)| e.status == TrialStatus::Finished && *n == 1),
        "{done:?}"
    );

    // A finished sweep is not resubmitted: nothing is written.
    std::fs::remove_dir_all(sweep_dir.join("slurm")).unwrap();
    let none = seglab_in(root, &[], &["sweep", "slurm", p, "--submit"]);
    assert!(none.status.success(), "{}", text(&none));
    assert!(
        String::from_utf8_lossy(&none.stdout).contains("nothing to run"),
        "{}",
        text(&none)
    );
    assert!(!sweep_dir.join("slurm").exists());
}

#[test]
fn slurm_flag_errors_name_the_flag_and_what_was_expected() {
    let dir = util::temp_dir();
    let root = dir.path();
    util::easy_phantom(root);
    let path = spec(root, "flags", "\"threshold\"", 0);
    let p = path.to_str().unwrap();
    let cases: [(&[&str], &[&str]); 6] = [
        (&["--time", "2h"], &["--time", "HH:MM:SS", "`2h`"]),
        (&["--time", "00:75:00"], &["--time", "below 60"]),
        (&["--max-parallel", "0"], &["--max-parallel", "at least 1"]),
        (&["--gpus", "0"], &["--gpus", "at least 1"]),
        (&["--partition", "a b"], &["--partition", "`a b`"]),
        (&["--device", "gpu"], &["--device", "cuda:N"]),
    ];
    for (flags, wanted) in cases {
        let o = seglab_in(root, &[], &[&["sweep", "slurm", p], flags].concat());
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        for w in wanted {
            assert!(err.contains(w), "{flags:?}: {w:?} missing in {err}");
        }
    }
    assert!(!root.join("experiments/flags/slurm").exists());

    // An index beyond the manifest names the manifest and its size.
    let o = seglab_in(root, &[], &["sweep", "slurm", p]);
    assert!(o.status.success(), "{}", text(&o));
    let o = seglab_in(root, &[], &["sweep", "task", p, "--index", "5"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("manifest.json") && err.contains("no row 5") && err.contains("below 1"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// A real single-node Slurm.

/// Daemons this test started, stopped by pid when dropped (also when a test panics); jobs it
/// submitted are cancelled first, since their processes outlive slurmd.
struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    daemons: Vec<(&'static str, Child)>,
    jobs: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.jobs.is_empty() {
            let _ = self.command("scancel").args(&self.jobs).output();
            let t = Instant::now();
            // Slurm ends the jobs' processes (SIGKILL after KillWait) before it drops them.
            while t.elapsed() < Duration::from_secs(30) && self.any_job_active() {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        for (name, child) in self.daemons.iter_mut().rev() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: a signal to a daemon this test started (its pid, not a name).
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Ok(None) = child.try_wait() {
                eprintln!("{name} did not stop on SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Cluster {
    /// A Slurm client command that talks to this cluster.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    fn env(&self) -> [(&'static str, &str); 1] {
        [("SLURM_CONF", self.conf.to_str().unwrap())]
    }

    /// `scontrol show job -o ID` as key=value pairs of its first record.
    fn job(&self, id: &str) -> BTreeMap<String, String> {
        let o = self
            .command("scontrol")
            .args(["show", "job", "-o", id])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&o.stdout);
        line.lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn job_state(&self, id: &str) -> String {
        self.job(id).remove("JobState").unwrap_or_default()
    }

    fn any_job_active(&self) -> bool {
        let o = self
            .command("squeue")
            .args(["-h", "-o", "%i"])
            .output()
            .unwrap();
        !String::from_utf8_lossy(&o.stdout).trim().is_empty()
    }

    /// The daemons' logs, for failure messages.
    fn logs(&self) -> String {
        let mut s = String::new();
        for name in ["slurmctld.log", "slurmd.log"] {
            let log = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            s.push_str(&format!("--- {name} (last lines)\n"));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed: {}", text(&o));
    o
}

/// Installs slurm-wlm and munge from the distribution when a program is missing.
fn install_slurm() {
    let programs = ["slurmctld", "slurmd", "sbatch", "munged"];
    if programs.iter().all(|p| on_path(p)) {
        return;
    }
    let install = || {
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "--no-install-recommends",
                "slurm-wlm",
                "munge",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .expect("cannot run apt-get (is this a Debian machine?)")
    };
    let mut o = install();
    if !o.status.success() {
        let update = Command::new("apt-get")
            .arg("update")
            .output()
            .expect("cannot run apt-get update");
        assert!(
            update.status.success(),
            "apt-get update failed (needed to install slurm-wlm and munge): {}",
            text(&update)
        );
        o = install();
    }
    assert!(
        o.status.success(),
        "apt-get install slurm-wlm munge failed: {}",
        text(&o)
    );
    for p in programs {
        assert!(
            on_path(p),
            "{p} not on PATH after installing slurm-wlm and munge"
        );
    }
}

/// The uid and gid of a system user.
fn user_ids(name: &str) -> (u32, u32) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: getpwnam reads the password database; the pointer is checked before use and
    // the fields are copied out at once.
    unsafe {
        let pw = libc::getpwnam(c.as_ptr());
        assert!(
            !pw.is_null(),
            "no user {name} (the munge package creates it)"
        );
        ((*pw).pw_uid, (*pw).pw_gid)
    }
}

fn munge_works() -> bool {
    let Ok(cred) = Command::new("munge").arg("-n").output() else {
        return false;
    };
    cred.status.success()
        && Command::new("unmunge")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&cred.stdout)?;
                c.wait()
            })
            .is_ok_and(|s| s.success())
}

/// Starts `program ARGS` in the foreground as a child (its pid is the daemon's), logging to
/// `log`.
fn spawn_daemon(program: &str, args: &[&str], log: &Path, user: Option<(u32, u32)>) -> Child {
    use std::os::unix::process::CommandExt;
    let f = std::fs::File::create(log).unwrap();
    let mut c = Command::new(program);
    c.args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f);
    if let Some((uid, gid)) = user {
        c.uid(uid).gid(gid);
    }
    c.spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while !cond() {
        if t.elapsed() > limit {
            eprintln!("timed out after {limit:?} waiting for {what}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    true
}

/// Sets up the cluster, or returns None after saying why it is skipped (outside CI only).
fn cluster() -> Option<Cluster> {
    let opted_in = std::env::var("SEGLAB_SLURM_TEST").is_ok_and(|v| v == "1");
    if !util::in_ci() && !opted_in {
        eprintln!(
            "SKIPPED: the Slurm test runs with CI=true or SEGLAB_SLURM_TEST=1 (as root: it \
             installs slurm-wlm and munge and starts their daemons)"
        );
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        util::skip_or_fail("the Slurm test must run as root (it installs and starts Slurm)");
        return None;
    }
    install_slurm();
    let dir = util::temp_dir();
    let d = dir.path();
    let mut daemons = Vec::new();
    if !munge_works() {
        let munge = user_ids("munge");
        if !Path::new("/etc/munge/munge.key").exists() {
            run(Command::new("mungekey").args(["--create", "--force"]));
            run(Command::new("chown").args(["munge:munge", "/etc/munge/munge.key"]));
        }
        std::fs::create_dir_all("/run/munge").unwrap();
        run(Command::new("chown").args(["munge:munge", "/run/munge"]));
        daemons.push((
            "munged",
            spawn_daemon(
                "munged",
                &["--foreground"],
                &d.join("munged.log"),
                Some(munge),
            ),
        ));
        assert!(
            wait_until("munged", Duration::from_secs(20), munge_works),
            "munged did not start: {}",
            std::fs::read_to_string(d.join("munged.log")).unwrap_or_default()
        );
    }
    let host = String::from_utf8(run(Command::new("hostname").arg("-s")).stdout).unwrap();
    let host = host.trim();
    let node = String::from_utf8(run(Command::new("slurmd").arg("-C")).stdout).unwrap();
    let node_line = node
        .lines()
        .find(|l| l.starts_with("NodeName="))
        .unwrap_or_else(|| panic!("slurmd -C printed no NodeName line: {node}"));
    let field = |key: &str| {
        node_line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in `{node_line}`"))
            .to_string()
    };
    let (cpus, memory) = (field("CPUs="), field("RealMemory="));
    for sub in ["state", "spool"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let conf = d.join("slurm.conf");
    let p = |name: &str| d.join(name).display().to_string();
    std::fs::write(
        &conf,
        format!(
            "ClusterName=seglabtest\nSlurmctldHost={host}\nSlurmctldPort=16817\n\
             SlurmdPort=16818\nSlurmUser=root\nAuthType=auth/munge\n\
             StateSaveLocation={}\nSlurmdSpoolDir={}\nSlurmctldPidFile={}\nSlurmdPidFile={}\n\
             SlurmctldLogFile={}\nSlurmdLogFile={}\nProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\nSelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n\
             SchedulerType=sched/backfill\nAccountingStorageType=accounting_storage/none\n\
             JobAcctGatherType=jobacct_gather/none\nJobCompType=jobcomp/none\nJobRequeue=1\n\
             MpiDefault=none\nReturnToService=2\nMinJobAge=600\nKillWait=5\n\
             NodeName={host} CPUs={cpus} RealMemory={memory} State=UNKNOWN\n\
             PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
            p("state"),
            p("spool"),
            p("slurmctld.pid"),
            p("slurmd.pid"),
            p("slurmctld.log"),
            p("slurmd.log"),
        ),
    )
    .unwrap();
    let c = conf.to_str().unwrap();
    daemons.push((
        "slurmctld",
        spawn_daemon(
            "slurmctld",
            &["-D", "-i", "-f", c],
            &d.join("slurmctld.out"),
            None,
        ),
    ));
    daemons.push((
        "slurmd",
        spawn_daemon("slurmd", &["-D", "-f", c], &d.join("slurmd.out"), None),
    ));
    let cluster = Cluster {
        conf: conf.clone(),
        dir,
        daemons,
        jobs: Vec::new(),
    };
    let idle = wait_until("an idle node", Duration::from_secs(60), || {
        cluster
            .command("sinfo")
            .args(["-h", "-o", "%t"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
    });
    assert!(idle, "Slurm did not come up:\n{}", cluster.logs());
    Some(cluster)
}

/// `sweep slurm SPEC --submit` in `root`; returns (array id, report id) and remembers them
/// for the cleanup.
fn submit(cluster: &mut Cluster, root: &Path, spec: &Path, extra: &[&str]) -> (String, String) {
    let args = [
        &["sweep", "slurm", spec.to_str().unwrap(), "--submit"],
        extra,
    ]
    .concat();
    let o = seglab_in(root, &cluster.env(), &args);
    assert!(o.status.success(), "{}\n{}", text(&o), cluster.logs());
    let sweep_dir = spec.with_extension("");
    let jobs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep_dir.join("slurm/jobs.json")).unwrap())
            .unwrap();
    let array = jobs["array_job_id"].as_str().unwrap().to_string();
    let report = jobs["report_job_id"].as_str().unwrap().to_string();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("array job {array}"))
            && out.contains(&format!("report job {report}")),
        "{out}"
    );
    cluster.jobs.push(array.clone());
    cluster.jobs.push(report.clone());
    (array, report)
}

/// Waits until job `id` ended and returns its final state.
fn wait_for_end(cluster: &Cluster, id: &str, limit: Duration) -> String {
    let mut state = String::new();
    let ended = wait_until(&format!("job {id}"), limit, || {
        state = cluster.job_state(id);
        [
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
        ]
        .contains(&state.as_str())
    });
    assert!(ended, "job {id} still {state}:\n{}", cluster.logs());
    state
}

/// The rows of the store's canonical view that do not depend on time or attempt numbers,
/// values rounded to 6 significant digits: (trials, epochs, results, timing phases).
fn canonical_content(store_dir: &Path) -> Vec<String> {
    let c = Store::open(store_dir).unwrap().canonical().unwrap();
    let rows = |df: &DataFrame, cols: &[&str]| -> Vec<String> {
        let df = df.select(cols.iter().copied()).unwrap();
        let mut out: Vec<String> = (0..df.height())
            .map(|i| {
                df.get_row(i)
                    .unwrap()
                    .0
                    .iter()
                    .map(|v| match v {
                        AnyValue::Float64(x) => format!("{x:.6e}"),
                        v => v.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        out.sort();
        out
    };
    let mut all = rows(
        &c.trials,
        &["trial_id", "status", "model", "fold", "seed", "config_json"],
    );
    all.extend(rows(
        &c.epochs,
        &["trial_id", "epoch", "split", "metric", "value"],
    ));
    all.extend(rows(
        &c.results,
        &["trial_id", "volume", "class", "metric", "value"],
    ));
    all.extend(rows(&c.timings, &["trial_id", "phase"]));
    all
}

fn has_parts(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
    })
}

#[test]
fn a_sweep_runs_as_a_slurm_array_and_a_warned_task_requeues_and_resumes() {
    let Some(mut cluster) = cluster() else {
        return;
    };
    let started = Instant::now();
    let dir = util::temp_dir();
    let root = dir.path();
    util::easy_phantom(root);

    // 1. A submitted sweep ends with the store of a local run, and the report job runs.
    let path = spec(root, "cluster", "\"threshold\", \"unet3d\"", 2);
    let (array, report) = submit(&mut cluster, root, &path, &["--max-parallel", "2"]);
    let local = root.join("local");
    let o = seglab_in(
        root,
        &[],
        &[
            "sweep",
            "run",
            path.to_str().unwrap(),
            "--out",
            local.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        wait_for_end(&cluster, &report, Duration::from_secs(240)),
        "COMPLETED"
    );
    for task in ["0", "1"] {
        let id = format!("{array}_{task}");
        assert_eq!(cluster.job_state(&id), "COMPLETED", "{id}");
    }
    let sweep_dir = root.join("experiments/cluster");
    assert_eq!(
        canonical_content(&sweep_dir.join("store")),
        canonical_content(&local.join("store"))
    );
    assert!(
        chosen(&sweep_dir.join("store"))
            .iter()
            .all(|(_, n)| *n == 1)
    );
    assert!(root.join("reports/cluster/index.md").is_file());
    assert!(sweep_dir.join(format!("slurm/{array}_0.out")).is_file());
    let st = seglab_in(
        root,
        &cluster.env(),
        &["sweep", "status", path.to_str().unwrap()],
    );
    assert!(st.status.success(), "{}", text(&st));
    let st = String::from_utf8_lossy(&st.stdout);
    assert!(st.contains("2 trial(s): 2 finished"), "{st}");
    assert!(
        st.contains(&format!("SLURM: array job {array} (2 task(s))")),
        "{st}"
    );
    eprintln!("array scenario: {:?}", started.elapsed());

    // 2. USR1 to a running task (what Slurm sends before a time limit): it checkpoints,
    // records the attempt interrupted, requeues itself and the restart resumes.
    // Long enough (random patches, seconds per attempt) that the task cannot finish between
    // its first epoch reaching the store and the signal: an 8-epoch trial of 16³ grid patches
    // ran in 0.3 s, and the signal then found a finished task.
    let path = spec(root, "requeue", "\"unet3d\"", 20);
    let mut body = std::fs::read_to_string(&path).unwrap();
    body.push_str("\"data.patches.sampling\" = \"random\"\n\"data.patches.count\" = 512\n\"train.patience\" = 0\n");
    std::fs::write(&path, body).unwrap();
    let (array, report) = submit(&mut cluster, root, &path, &[]);
    let task = format!("{array}_0");
    // While the array is queued, a second manifest would pull the rug from under its tasks.
    let again = seglab_in(
        root,
        &cluster.env(),
        &["sweep", "slurm", path.to_str().unwrap()],
    );
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains(&format!("array job {array}")) && err.contains("still in the queue"),
        "{err}"
    );
    let st = seglab_in(
        root,
        &cluster.env(),
        &["sweep", "status", path.to_str().unwrap()],
    );
    let st = String::from_utf8_lossy(&st.stdout);
    assert!(
        st.contains("PENDING") || st.contains("RUNNING"),
        "squeue lines expected: {st}"
    );
    let sweep_dir = root.join("experiments/requeue");
    let store = sweep_dir.join("store");
    assert!(
        wait_until("a first epoch", Duration::from_secs(120), || has_parts(
            &store.join("epochs")
        )),
        "{}",
        cluster.logs()
    );
    run(cluster
        .command("scancel")
        .args(["--batch", "--signal=USR1", &task]));
    let interrupted = || {
        let all =
            TrialEvent::from_frame(&Store::open(&store).unwrap().attempts().unwrap()).unwrap();
        all.iter()
            .any(|e| e.attempt == 1 && e.status == TrialStatus::Interrupted)
    };
    assert!(
        wait_until(
            "the interrupted attempt",
            Duration::from_secs(60),
            interrupted
        ),
        "{}",
        cluster.logs()
    );
    assert!(
        wait_until("the requeue", Duration::from_secs(30), || {
            cluster.job(&task).get("Restarts").is_some_and(|r| r == "1")
        }),
        "{:?}\n{}",
        cluster.job(&task),
        cluster.logs()
    );
    // A requeued job waits ~2 minutes (BeginTime) before it may start again; let it start now.
    let update = cluster
        .command("scontrol")
        .args(["update", &format!("JobId={task}"), "StartTime=now"])
        .output()
        .unwrap();
    assert!(
        update.status.success() || cluster.job_state(&task) != "PENDING",
        "{}",
        text(&update)
    );
    assert_eq!(
        wait_for_end(&cluster, &report, Duration::from_secs(300)),
        "COMPLETED"
    );
    let job = cluster.job(&task);
    assert_eq!(
        job.get("JobState").map(String::as_str),
        Some("COMPLETED"),
        "{job:?}"
    );
    assert_eq!(
        job.get("Restarts").map(String::as_str),
        Some("1"),
        "{job:?}"
    );

    let trials = chosen(&store);
    assert_eq!(trials.len(), 1);
    let (e, attempts) = &trials[0];
    assert_eq!(e.status, TrialStatus::Finished, "{:?}", e.error);
    assert_eq!(*attempts, 2, "the interrupted attempt and the resumed one");
    let log = std::fs::read_to_string(sweep_dir.join(format!("slurm/{array}_0.out"))).unwrap();
    assert!(
        log.contains("restart 0") && log.contains("restart 1"),
        "{log}"
    );
    assert!(log.contains("USR1 received"), "{log}");
    let trial_log =
        std::fs::read_to_string(sweep_dir.join("trials").join(&e.trial_id).join("log.txt"))
            .unwrap();
    assert!(trial_log.contains("resumed from"), "{trial_log}");

    // Nothing lost or doubled: attempt 1 wrote epochs, the canonical view holds every epoch
    // of attempt 2 exactly once, and one result row per (volume, class, metric).
    let raw = Store::open(&store).unwrap();
    let raw_epochs = raw.read(seglab::tracking::Table::Epochs).unwrap();
    let first = raw_epochs
        .column("attempt")
        .unwrap()
        .u32()
        .unwrap()
        .iter()
        .filter(|a| *a == Some(1))
        .count();
    assert!(first > 0, "attempt 1 wrote epochs before USR1");
    let c = raw.canonical().unwrap();
    let keys = |df: &DataFrame, cols: &[&str]| -> Vec<String> {
        let df = df.select(cols.iter().copied()).unwrap();
        (0..df.height())
            .map(|i| format!("{:?}", df.get_row(i).unwrap().0))
            .collect()
    };
    let attempts_seen: BTreeSet<String> = keys(&c.epochs, &["attempt"]).into_iter().collect();
    assert_eq!(attempts_seen.len(), 1, "{attempts_seen:?}");
    let epoch_keys = keys(&c.epochs, &["epoch", "split", "metric"]);
    let unique: BTreeSet<&String> = epoch_keys.iter().collect();
    assert_eq!(unique.len(), epoch_keys.len(), "duplicated epoch rows");
    let epochs: BTreeSet<u32> = c
        .epochs
        .column("epoch")
        .unwrap()
        .u32()
        .unwrap()
        .iter()
        .flatten()
        .collect();
    let last = epochs.last().copied().unwrap_or(0);
    assert!(last >= 2, "{epochs:?}");
    assert_eq!(
        epochs,
        (1..=last).collect::<BTreeSet<u32>>(),
        "every epoch once"
    );
    let result_keys = keys(&c.results, &["volume", "class", "metric"]);
    let unique: BTreeSet<&String> = result_keys.iter().collect();
    assert!(!result_keys.is_empty());
    assert_eq!(unique.len(), result_keys.len(), "duplicated result rows");
    eprintln!("Slurm test: {:?}", started.elapsed());
}

#[test]
fn slurm_resource_flags_are_written_into_the_scripts() {
    let dir = util::temp_dir();
    let root = dir.path();
    util::easy_phantom(root);
    let path = spec(root, "resources", "\"threshold\"", 0);
    let p = path.to_str().unwrap();
    let o = seglab_in(
        root,
        &[],
        &[
            "sweep",
            "slurm",
            p,
            "--cpus-per-task",
            "8",
            "--mem",
            "16G",
            "--account",
            "lab-42",
            "--qos",
            "long",
            "--constraint",
            "a100|h100",
            "--gpus-per-task",
            "1",
            // This build may lack the cuda feature, which `--device cuda:0` needs.
            "--device",
            "cpu",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let slurm = root.join("experiments/resources/slurm");
    let array = std::fs::read_to_string(slurm.join("array.sbatch")).unwrap();
    for wanted in [
        "#SBATCH --cpus-per-task=8\n",
        "#SBATCH --mem=16G\n",
        "#SBATCH --account=lab-42\n",
        "#SBATCH --qos=long\n",
        "#SBATCH --constraint=a100|h100\n",
        "#SBATCH --gpus-per-task=1\n",
        // seglab's threads follow the task's CPUs.
        "export RAYON_NUM_THREADS=\"$SLURM_CPUS_PER_TASK\" POLARS_MAX_THREADS=\"$SLURM_CPUS_PER_TASK\"",
    ] {
        assert!(array.contains(wanted), "{wanted:?} missing in\n{array}");
    }
    assert!(!array.contains("#SBATCH --gpus="), "{array}");
    // The report job is charged to the same account and QoS and asks for nothing else.
    let report = std::fs::read_to_string(slurm.join("report.sbatch")).unwrap();
    assert!(
        report.contains("#SBATCH --account=lab-42\n") && report.contains("#SBATCH --qos=long\n"),
        "{report}"
    );
    for absent in ["--cpus-per-task", "--mem", "--constraint", "--gpus"] {
        assert!(!report.contains(absent), "{absent} in\n{report}");
    }

    // Bad values name the flag and what was expected; nothing is written.
    std::fs::remove_dir_all(&slurm).unwrap();
    let cases: [(&[&str], &[&str]); 7] = [
        (
            &["--cpus-per-task", "0"],
            &["--cpus-per-task", "at least 1"],
        ),
        (
            &["--gpus-per-task", "0"],
            &["--gpus-per-task", "at least 1"],
        ),
        (&["--mem", "16 GB"], &["--mem", "16G", "`16 GB`"]),
        (&["--mem", "lots"], &["--mem", "`lots`"]),
        (&["--account", "a b"], &["--account", "`a b`"]),
        (&["--qos", ""], &["--qos"]),
        (
            &["--constraint", "a100 h100"],
            &["--constraint", "no spaces"],
        ),
    ];
    for (flags, wanted) in cases {
        let o = seglab_in(root, &[], &[&["sweep", "slurm", p], flags].concat());
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        for w in wanted {
            assert!(err.contains(w), "{flags:?}: {w:?} missing in {err}");
        }
    }
    // --gpus and --gpus-per-task are one request or the other.
    let o = seglab_in(
        root,
        &[],
        &["sweep", "slurm", p, "--gpus", "1", "--gpus-per-task", "1"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!slurm.exists());
}
