//! The MLflow mirror against a real MLflow tracking server (the pinned mlflow of the reference
//! Python environment, `SEGLAB_PYTHON`): a live mirror that loses its server mid-sweep, then
//! `seglab mlflow sync` run twice, checked through the REST API (runs/search,
//! metrics/get-history, artifacts/list) so that every trial attempt, param and metric point of
//! the store is in MLflow exactly once. The same server behind a login (`--app-name
//! basic-auth`) and behind TLS with a self-signed certificate checks authentication, CA
//! bundles and the artifact choices.

mod util;

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use seglab::experiment::paths::SweepPaths;
use seglab::tracking::mlflow::{
    Artifacts, Body, Credentials, ENV_CA_BUNDLE, ENV_PASSWORD, ENV_TOKEN, ENV_USERNAME, Method,
    MlflowClient, MlflowMirror, MlflowTarget, RetryPolicy, Secret, SyncOptions, sync_store,
};
use seglab::tracking::{
    EpochRow, ResultRow, Store, Table, TimingRow, TrackingError, TrialEvent, TrialStatus,
};
use serde_json::{Value, json};
use util::tracking::{TRIALS, epoch_rows, result_rows, start_event, timing_rows};

/// What a test server adds to a plain tracking server.
#[derive(Clone, Default)]
struct Setup {
    /// `--app-name basic-auth` with the user `admin` and this password.
    admin_password: Option<String>,
    /// TLS with this (certificate, key) pair of PEM files; the certificate is the CA bundle.
    tls: Option<(PathBuf, PathBuf)>,
}

/// A tracking server on a free loopback port with a sqlite backend and a temporary artifact
/// folder; killed (with its worker processes) when dropped.
struct MlflowServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    setup: Setup,
}

impl MlflowServer {
    fn start(python: &Path, dir: &Path, port: u16) -> MlflowServer {
        Self::start_with(python, dir, port, Setup::default())
    }

    fn start_with(python: &Path, dir: &Path, port: u16, setup: Setup) -> MlflowServer {
        std::fs::create_dir_all(dir.join("artifacts")).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(python);
        cmd.args([
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--workers",
            "1",
        ])
        .args(["--port", &port.to_string()])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .arg("--artifacts-destination")
        .arg(dir.join("artifacts"))
        // No background job runner: a plain tracking server starts faster.
        .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false");
        if let Some(password) = &setup.admin_password {
            let ini = dir.join("basic_auth.ini");
            std::fs::write(
                &ini,
                format!(
                    "[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{}\n\
                     admin_username = admin\nadmin_password = {password}\n\
                     authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n\
                     auth_cache_ttl_seconds = 600\n",
                    dir.join("auth.db").display()
                ),
            )
            .unwrap();
            // The cache above spares each request a password hash (the test's hundreds of
            // requests took minutes without it); the auth app's forms need a fixed CSRF key.
            cmd.args(["--app-name", "basic-auth"])
                .env("MLFLOW_AUTH_CONFIG_PATH", ini)
                .env("MLFLOW_FLASK_SERVER_SECRET_KEY", "seglab-test");
        }
        if let Some((cert, key)) = &setup.tls {
            cmd.arg("--uvicorn-opts").arg(format!(
                "--ssl-certfile {} --ssl-keyfile {}",
                cert.display(),
                key.display()
            ));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("cannot start mlflow server");
        let mut server = MlflowServer {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
            setup,
        };
        server.wait_healthy();
        server
    }

    fn uri(&self) -> String {
        let scheme = if self.setup.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The server with its certificate as the CA bundle, without credentials.
    fn target(&self) -> MlflowTarget {
        MlflowTarget {
            uri: self.uri(),
            ca_bundle: self.setup.tls.as_ref().map(|(cert, _)| cert.clone()),
            credentials: None,
        }
    }

    /// [`MlflowServer::target`] logged in as `admin` with `password`.
    fn login(&self, password: &str) -> MlflowTarget {
        MlflowTarget {
            credentials: Some(Credentials::Basic {
                username: "admin".into(),
                password: Secret::new(password),
            }),
            ..self.target()
        }
    }

    fn wait_healthy(&mut self) {
        // `/health` needs no login.
        let client = MlflowClient::new(self.target(), fast_policy()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            if client.health().is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mlflow server exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("mlflow server not healthy after 300 s:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = -(child.id() as i32);
        // SAFETY: signals the process group this guard created (process_group(0) above).
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: as above; makes sure no worker of the group survives.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = child.wait();
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: 1,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(100),
        timeout: Duration::from_secs(10),
    }
}

/// Writes one attempt to the store and feeds the live mirror, as the sweep runner does.
fn run_attempt(
    store: &Store,
    paths: &SweepPaths,
    mirror: &mut MlflowMirror,
    start: &TrialEvent,
    epochs: u32,
    status: TrialStatus,
) {
    store.write_trial_event(start).unwrap();
    mirror.trial_event(start);
    for epoch in 1..=epochs {
        let rows = epoch_rows(&start.trial_id, start.attempt, epoch..=epoch);
        store.write_epochs(&rows).unwrap();
        mirror.epochs(&rows);
    }
    if status == TrialStatus::Running {
        return; // killed hard: nothing more is written
    }
    if status == TrialStatus::Finished {
        let results = result_rows(&start.trial_id, start.attempt);
        store.write_results(&results).unwrap();
        mirror.results(&results);
        let timings = timing_rows(&start.trial_id, start.attempt);
        store.write_timings(&timings).unwrap();
        mirror.timings(&timings);
        let pred = paths.trial_predictions(&start.trial_id);
        std::fs::create_dir_all(&pred).unwrap();
        std::fs::write(
            pred.join("vol01 pred.tif"),
            format!("mask of {}", start.trial_id),
        )
        .unwrap();
    }
    let error = (status == TrialStatus::Failed).then(|| "out of memory".to_string());
    let end = start.with_status(status, start.started_ms + 30_000, error);
    store.write_trial_event(&end).unwrap();
    mirror.trial_event(&end);
    mirror.trial_files(&start.trial_id, start.attempt);
}

/// The attempts of the test sweep, in run order: (trial, attempt, epochs, final status).
fn plan() -> Vec<(&'static str, u32, u32, TrialStatus)> {
    let mut plan = Vec::new();
    for (id, ..) in TRIALS {
        match id {
            "unet3d-f1-s0" => {
                plan.push((id, 1, 2, TrialStatus::Running));
                plan.push((id, 2, 3, TrialStatus::Finished));
            }
            "vox2vox-f1-s0" => plan.push((id, 1, 1, TrialStatus::Failed)),
            "cyclegan-f1-s0" => {
                plan.push((id, 1, 1, TrialStatus::Interrupted));
                plan.push((id, 2, 3, TrialStatus::Finished));
            }
            _ => plan.push((id, 1, 3, TrialStatus::Finished)),
        }
    }
    plan
}

/// Raw REST calls for the checks (JSON values, not the client's own types).
struct Rest(MlflowClient);

impl Rest {
    fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let bytes = self.0.call(Method::Get, path, query, Body::None).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let bytes = self
            .0
            .call(Method::Post, path, &[], Body::Json(&body))
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn runs(&self, experiment_id: &str) -> Vec<Value> {
        let v = self.post(
            "/api/2.0/mlflow/runs/search",
            json!({"experiment_ids": [experiment_id], "max_results": 1000}),
        );
        v["runs"].as_array().cloned().unwrap_or_default()
    }

    fn history(&self, run_id: &str, key: &str) -> Vec<(i64, f64)> {
        let v = self.get(
            "/api/2.0/mlflow/metrics/get-history",
            &[("run_id", run_id), ("metric_key", key)],
        );
        v["metrics"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|m| {
                let value = match &m["value"] {
                    Value::String(s) if s == "NaN" => f64::NAN,
                    Value::Number(n) => n.as_f64().unwrap(),
                    other => panic!("unexpected metric value {other}"),
                };
                (m["step"].as_i64().unwrap_or(0), value)
            })
            .collect()
    }

    fn artifacts(&self, run_id: &str, path: &str) -> Vec<String> {
        let v = self.get(
            "/api/2.0/mlflow/artifacts/list",
            &[("run_id", run_id), ("path", path)],
        );
        v["files"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_string())
            .collect()
    }
}

fn tags(run: &Value) -> HashMap<String, String> {
    run["data"]["tags"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_string(),
                t["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn params(run: &Value) -> BTreeMap<String, String> {
    run["data"]["params"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_string(),
                t["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Every attempt, param and metric point of the store is in MLflow exactly once.
fn check_mirror(rest: &Rest, store: &Store) {
    check_mirror_of(rest, store, util::tracking::SWEEP, "FAILED", None);
}

/// [`check_mirror`] for the sweep `sweep` whose parent run should have `parent_status`.
/// Predictions are expected as in the fixture, or as found in the trial folders of `sweep_dir`.
fn check_mirror_of(
    rest: &Rest,
    store: &Store,
    sweep: &str,
    parent_status: &str,
    sweep_dir: Option<&Path>,
) {
    let exp = rest.get(
        "/api/2.0/mlflow/experiments/get-by-name",
        &[("experiment_name", sweep)],
    );
    let exp_id = exp["experiment"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let runs = rest.runs(&exp_id);
    let parents: Vec<&Value> = runs
        .iter()
        .filter(|r| tags(r).get("seglab.kind").map(String::as_str) == Some("sweep"))
        .collect();
    assert_eq!(parents.len(), 1, "one parent run per sweep");
    let parent_id = parents[0]["info"]["run_id"].as_str().unwrap();
    // With a failed trial the sweep's run is FAILED; either way it has ended.
    assert_eq!(parents[0]["info"]["status"], parent_status);
    assert!(parents[0]["info"]["end_time"].as_i64().is_some());

    let attempts = TrialEvent::from_frame(&store.attempts().unwrap()).unwrap();
    let chosen: Vec<(String, u32)> = TrialEvent::from_frame(&store.chosen_trials().unwrap())
        .unwrap()
        .into_iter()
        .map(|e| (e.trial_id, e.attempt))
        .collect();
    let children: Vec<&Value> = runs
        .iter()
        .filter(|r| tags(r).get("seglab.kind").map(String::as_str) == Some("trial"))
        .collect();
    assert_eq!(children.len(), attempts.len(), "one run per trial attempt");
    let epochs = EpochRow::from_frame(&store.read(Table::Epochs).unwrap()).unwrap();
    let results = ResultRow::from_frame(&store.read(Table::Results).unwrap()).unwrap();
    let timings = TimingRow::from_frame(&store.read(Table::Timings).unwrap()).unwrap();

    for ev in &attempts {
        let mine: Vec<&&Value> = children
            .iter()
            .filter(|r| {
                let t = tags(r);
                t["seglab.trial_id"] == ev.trial_id && t["seglab.attempt"] == ev.attempt.to_string()
            })
            .collect();
        assert_eq!(mine.len(), 1, "{} a{}", ev.trial_id, ev.attempt);
        let run = mine[0];
        let run_id = run["info"]["run_id"].as_str().unwrap();
        let t = tags(run);
        assert_eq!(t["mlflow.parentRunId"], parent_id);
        let commit = t.get("mlflow.source.git.commit").map_or("", String::as_str);
        assert_eq!(commit, ev.git_commit);
        assert_eq!(t["mlflow.user"], ev.user);
        assert_eq!(t["seglab.git_dirty"], ev.git_dirty.to_string());
        let is_chosen = chosen.contains(&(ev.trial_id.clone(), ev.attempt));
        assert_eq!(
            t["seglab.chosen"],
            is_chosen.to_string(),
            "{} a{}",
            ev.trial_id,
            ev.attempt
        );
        let want_status = match ev.status {
            TrialStatus::Finished => "FINISHED",
            TrialStatus::Failed => "FAILED",
            TrialStatus::Running => "RUNNING",
            TrialStatus::Killed
            | TrialStatus::Interrupted
            | TrialStatus::Timeout
            | TrialStatus::Pruned => "KILLED",
        };
        assert_eq!(
            run["info"]["status"], want_status,
            "{} a{}",
            ev.trial_id, ev.attempt
        );
        assert_eq!(run["info"]["end_time"].as_i64(), ev.ended_ms);

        let mut want_params: BTreeMap<String, String> = [
            ("model", ev.model.clone()),
            ("classes", ev.classes.join(",")),
            ("fold", ev.fold.to_string()),
            ("seed", ev.seed.to_string()),
            ("preset", ev.preset.clone()),
            ("scale", ev.scale.clone()),
            ("dataset", ev.dataset.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        want_params.extend(ev.params.clone());
        assert_eq!(params(run), want_params, "{} a{}", ev.trial_id, ev.attempt);

        // Store rows of this attempt → (key, step, value); each exactly once in MLflow.
        let mut want: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
        let mine_epochs = epochs
            .iter()
            .filter(|r| r.trial_id == ev.trial_id && r.attempt == ev.attempt);
        for r in mine_epochs {
            want.entry(format!("{}/{}", r.split, r.metric))
                .or_default()
                .push((i64::from(r.epoch), r.value));
        }
        let mine_results: Vec<&ResultRow> = results
            .iter()
            .filter(|r| r.trial_id == ev.trial_id && r.attempt == ev.attempt)
            .collect();
        for r in &mine_results {
            want.entry(format!("test/{}/{}/{}", r.class, r.metric, r.volume))
                .or_default()
                .push((0, r.value));
        }
        for r in timings
            .iter()
            .filter(|r| r.trial_id == ev.trial_id && r.attempt == ev.attempt)
        {
            want.entry(format!("time/{}_s", r.phase))
                .or_default()
                .push((0, r.seconds));
        }
        for (key, mut points) in want {
            let mut got = rest.history(run_id, &key);
            got.sort_by_key(|a| a.0);
            points.sort_by_key(|a| a.0);
            assert_eq!(
                got.len(),
                points.len(),
                "{} a{} {key}: {got:?}",
                ev.trial_id,
                ev.attempt
            );
            for (g, w) in got.iter().zip(&points) {
                assert_eq!(g.0, w.0, "{key}");
                assert!(
                    (g.1.is_nan() && w.1.is_nan()) || g.1 == w.1,
                    "{key}: {g:?} vs {w:?}"
                );
            }
        }
        // Per-class means (NaN volumes left out) for runs with results.
        if !mine_results.is_empty() {
            let golgi_dice = rest.history(run_id, "test/golgi/dice");
            assert_eq!(golgi_dice.len(), 1);
            let finite: Vec<f64> = mine_results
                .iter()
                .filter(|r| r.class == "golgi" && r.metric == "dice" && r.value.is_finite())
                .map(|r| r.value)
                .collect();
            let mean = finite.iter().sum::<f64>() / finite.len() as f64;
            assert!(
                (golgi_dice[0].1 - mean).abs() < 1e-9
                    || (golgi_dice[0].1.is_nan() && mean.is_nan()),
                "the mean over volumes, NaN volumes left out: {} vs {mean}",
                golgi_dice[0].1
            );
        }
        // Artifacts: every attempt has its config; the chosen finished ones their predictions.
        assert!(
            rest.artifacts(run_id, "")
                .contains(&"config.json".to_string())
        );
        let preds = rest.artifacts(run_id, "predictions");
        if is_chosen && ev.status == TrialStatus::Finished {
            let want: Vec<String> = match sweep_dir {
                None => vec!["predictions/vol01 pred.tif".to_string()],
                Some(d) => {
                    let dir = SweepPaths::new(d).trial_predictions(&ev.trial_id);
                    let mut names: Vec<String> = std::fs::read_dir(dir)
                        .unwrap()
                        .map(|e| {
                            format!("predictions/{}", e.unwrap().file_name().to_string_lossy())
                        })
                        .collect();
                    names.sort();
                    assert!(!names.is_empty(), "{}: no predictions", ev.trial_id);
                    names
                }
            };
            assert_eq!(preds, want, "{}", ev.trial_id);
        } else {
            assert!(
                preds.is_empty(),
                "{} a{}: {preds:?}",
                ev.trial_id,
                ev.attempt
            );
        }
    }
}

fn sync_cli(dir: &Path, uri: &str) -> (i32, String, String) {
    let out = util::run_seglab(&["mlflow", "sync", dir.to_str().unwrap(), "--uri", uri]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_store_is_mirrored_exactly_once_across_a_server_outage() {
    let Some(python) = util::python() else { return };
    let tmp = util::temp_dir();
    let server_dir = tmp.path().join("mlflow");
    let sweep = SweepPaths::new(tmp.path().join("experiments").join(util::tracking::SWEEP));
    let store = Store::create(sweep.store()).unwrap().with_durable(false);
    let port = free_port();
    let mut server = MlflowServer::start(&python, &server_dir, port);
    let uri = server.uri();

    // Live mirror; the server dies after the third attempt and the sweep carries on.
    let mut mirror = MlflowMirror::new(
        &uri,
        util::tracking::SWEEP,
        util::tracking::SWEEP,
        Some(sweep.clone()),
    )
    .unwrap();
    let rest = Rest(MlflowClient::new(&uri, fast_policy()).unwrap());
    for (i, (id, attempt, epochs, status)) in plan().into_iter().enumerate() {
        if i == 3 {
            // The live mirror has kept up so far: the three attempts are runs with their curves.
            let exp = rest.get(
                "/api/2.0/mlflow/experiments/get-by-name",
                &[("experiment_name", util::tracking::SWEEP)],
            );
            let runs = rest.runs(exp["experiment"]["experiment_id"].as_str().unwrap());
            assert_eq!(runs.len(), 4, "parent + 3 attempts");
            let first = runs
                .iter()
                .find(|r| {
                    tags(r).get("seglab.trial_id").map(String::as_str) == Some("unet3d-f0-s0")
                })
                .unwrap();
            assert_eq!(first["info"]["status"], "FINISHED");
            let id = first["info"]["run_id"].as_str().unwrap();
            assert_eq!(rest.history(id, "train/loss").len(), 3);
            assert_eq!(rest.history(id, "test/golgi/dice").len(), 1);
            server.stop();
        }
        let (_, model, fold, seed) = TRIALS.iter().find(|t| t.0 == id).copied().unwrap();
        run_attempt(
            &store,
            &sweep,
            &mut mirror,
            &start_event(id, attempt, model, fold, seed),
            epochs,
            status,
        );
    }
    mirror.finish_sweep(true, util::tracking::T0 + 3_600_000);
    assert!(mirror.missed() > 0, "the outage went unnoticed");

    // The server comes back on the same database; the replay completes MLflow, twice.
    drop(server);
    let server = MlflowServer::start(&python, &server_dir, port);
    let (code, out, err) = sync_cli(sweep.root(), &uri);
    assert_eq!(code, 0, "{out}\n{err}");
    eprintln!("first sync: {out}");
    // The three attempts mirrored live are found again (only the rest is created).
    assert!(
        out.contains("8 attempt(s)") && out.contains("5 run(s) created, 3 updated"),
        "{out}"
    );
    check_mirror(&rest, &store);
    let (code, out, err) = sync_cli(sweep.root(), &uri);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("0 run(s) created, 0 updated, 8 already up to date; sent 0 metric point(s), 0 param(s), 0 artifact(s)"),
        "{out}"
    );
    check_mirror(&rest, &store);

    // A store that contradicts a logged param: reported, never overwritten, others unaffected.
    let (id, model, fold, seed) = TRIALS[0];
    let mut changed = start_event(id, 1, model, fold, seed).with_status(
        TrialStatus::Finished,
        util::tracking::T0 + 99_000,
        None,
    );
    changed.params.insert("train.epochs".into(), "4".into());
    store.write_trial_event(&changed).unwrap();
    let (code, out, err) = sync_cli(sweep.root(), &uri);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(id) && err.contains("train.epochs") && err.contains("cannot change"),
        "{err}"
    );
    assert!(out.contains("7 already up to date"), "{out}");
    drop(server);
}

#[test]
fn a_mirror_without_server_never_fails_the_sweep() {
    let dir = util::temp_dir();
    let store = Store::create(dir.path().join("store"))
        .unwrap()
        .with_durable(false);
    let port = free_port(); // nothing listens there
    let paths = SweepPaths::new(dir.path());
    let mut mirror = MlflowMirror::with_policy(
        format!("http://127.0.0.1:{port}"),
        "x",
        util::tracking::SWEEP,
        Some(paths.clone()),
        fast_policy(),
    )
    .unwrap();
    for (id, attempt, epochs, status) in plan() {
        let (_, model, fold, seed) = TRIALS.iter().find(|t| t.0 == id).copied().unwrap();
        run_attempt(
            &store,
            &paths,
            &mut mirror,
            &start_event(id, attempt, model, fold, seed),
            epochs,
            status,
        );
    }
    mirror.finish_sweep(false, 0);
    // The first failure pauses the mirror; everything after is counted as skipped.
    assert!(mirror.missed() > 20, "{}", mirror.missed());
    assert_eq!(store.canonical().unwrap().trials.height(), 6);
    // A malformed address is the one error reported up front.
    assert!(MlflowMirror::new("ftp://x", "x", "s", None).is_err());
}

#[test]
fn sync_to_an_unreachable_server_is_an_error_naming_it() {
    let dir = util::temp_dir();
    let store = Store::create(dir.path().join("store"))
        .unwrap()
        .with_durable(false);
    util::tracking::small_sweep(&store);
    let uri = format!("http://127.0.0.1:{}", free_port());
    let client = MlflowClient::new(&uri, fast_policy()).unwrap();
    let err = sync_store(&store, &client, &SyncOptions::default()).unwrap_err();
    assert!(
        matches!(err, TrackingError::MlflowConnection { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&uri), "{err}");
}

/// A real sweep (`seglab sweep run --mlflow-uri`) on an easy phantom: the server is stopped
/// while the sweep runs, the sweep still completes, and after a restart `seglab mlflow sync`
/// (twice) leaves every attempt, param and metric of the store in MLflow exactly once.
#[test]
fn a_sweep_run_with_a_live_mirror_survives_a_server_outage() {
    let Some(python) = util::python() else { return };
    let tmp = util::temp_dir();
    util::easy_phantom(tmp.path());
    let spec = tmp.path().join("mirrored.toml");
    std::fs::write(
        &spec,
        "dataset = \"data\"\nclasses = [\"golgi\", \"nuclei\"]\nscale = \"cpu-small\"\n"
            .to_string()
            + util::ALLOW_CLIPPING
            + "[cv]\nscheme = \"nested\"\nfolds = 3\n\
         [[grid]]\nmodel = \"threshold\"\n\
         [[grid]]\nmodel = \"unet3d\"\n"
            + "\"train.epochs\" = 3\n\"data.patches.size\" = 16\n\"data.patches.step\" = 16\n\
               \"infer.window\" = 16\n\"infer.step\" = 12\n\"net.base_filters\" = 2\n",
    )
    .unwrap();
    let port = free_port();
    let server_dir = tmp.path().join("mlflow");
    let mut server = MlflowServer::start(&python, &server_dir, port);
    let uri = server.uri();
    let sweep_dir = tmp.path().join("mirrored");
    let store_dir = sweep_dir.join("store");
    let child = util::seglab()
        .args(["sweep", "run", spec.to_str().unwrap(), "--jobs", "2"])
        .args(["--mlflow-uri", &uri])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop the server once some trials ended: the later ones run without it.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ended = Store::open(&store_dir)
            .ok()
            .and_then(|s| s.attempts().ok())
            .and_then(|df| TrialEvent::from_frame(&df).ok())
            .map_or(0, |evs| {
                evs.iter().filter(|e| e.status.is_terminal()).count()
            });
        if ended >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no trial ended in time");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(&store_dir).unwrap();
    let chosen = TrialEvent::from_frame(&store.chosen_trials().unwrap()).unwrap();
    assert_eq!(chosen.len(), 6, "threshold and unet3d on 3 folds");
    assert!(chosen.iter().all(|e| e.status == TrialStatus::Finished));

    drop(server);
    let server = MlflowServer::start(&python, &server_dir, port);
    let rest = Rest(MlflowClient::new(&uri, fast_policy()).unwrap());
    for _ in 0..2 {
        let (code, out, err) = sync_cli(&sweep_dir, &uri);
        assert_eq!(code, 0, "{out}\n{err}");
        check_mirror_of(&rest, &store, "mirrored", "FINISHED", Some(&sweep_dir));
    }
    let (_, out, _) = sync_cli(&sweep_dir, &uri);
    assert!(out.contains("0 run(s) created, 0 updated"), "{out}");
    drop(server);
}

/// `seglab mlflow sync` of `dir` with these environment variables (MLflow's credential and
/// CA-bundle variables cleared first) and extra arguments.
fn sync_with(dir: &Path, uri: &str, env: &[(&str, &str)], extra: &[&str]) -> (i32, String, String) {
    let mut cmd = util::seglab();
    cmd.args(["mlflow", "sync", dir.to_str().unwrap(), "--uri", uri])
        .args(extra);
    for var in [ENV_USERNAME, ENV_PASSWORD, ENV_TOKEN, ENV_CA_BUNDLE] {
        cmd.env_remove(var);
    }
    let out = cmd.envs(env.iter().copied()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the attempts of [`plan`] into `store`, fed live to `mirror`.
fn run_plan(store: &Store, sweep: &SweepPaths, mirror: &mut MlflowMirror) {
    for (id, attempt, epochs, status) in plan() {
        let (_, model, fold, seed) = TRIALS.iter().find(|t| t.0 == id).copied().unwrap();
        run_attempt(
            store,
            sweep,
            mirror,
            &start_event(id, attempt, model, fold, seed),
            epochs,
            status,
        );
    }
    mirror.finish_sweep(true, util::tracking::T0 + 3_600_000);
}

/// The files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                todo.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                hits.push(path);
            }
        }
    }
    hits
}

/// (attempts, epoch rows, result rows) of a store: what must survive a refused mirror.
fn store_counts(store: &Store) -> (usize, usize, usize) {
    (
        TrialEvent::from_frame(&store.attempts().unwrap())
            .unwrap()
            .len(),
        store.read(Table::Epochs).unwrap().height(),
        store.read(Table::Results).unwrap().height(),
    )
}

/// A server behind MLflow's basic-auth app: a sweep mirrored live with a wrong password and a
/// sync with it each give one clear error naming the server and the status, without the
/// password anywhere; the store keeps everything, and a sync with the right password then
/// mirrors all of it.
#[test]
fn a_wrong_password_loses_nothing_and_a_later_sync_mirrors_everything() {
    const PASSWORD: &str = "seglab-Admin-pass-1";
    const WRONG: &str = "wrong-Pass-word-42";
    let Some(python) = util::python() else { return };
    let tmp = util::temp_dir();
    let setup = Setup {
        admin_password: Some(PASSWORD.into()),
        tls: None,
    };
    let server = MlflowServer::start_with(&python, &tmp.path().join("mlflow"), free_port(), setup);
    let uri = server.uri();
    let sweep = SweepPaths::new(tmp.path().join("experiments").join(util::tracking::SWEEP));
    let store = Store::create(sweep.store()).unwrap().with_durable(false);

    // The live mirror is refused at its first request and turns itself off; the sweep goes on.
    let mut mirror = MlflowMirror::with_policy(
        server.login(WRONG),
        util::tracking::SWEEP,
        util::tracking::SWEEP,
        Some(sweep.clone()),
        fast_policy(),
    )
    .unwrap();
    run_plan(&store, &sweep, &mut mirror);
    assert!(mirror.missed() > 20, "{}", mirror.missed());
    let counts = store_counts(&store);
    assert_eq!(counts.0, 8, "every attempt is in the store");

    let login = |password: &'static str| [(ENV_USERNAME, "admin"), (ENV_PASSWORD, password)];
    let (code, out, err) = sync_with(sweep.root(), &uri, &login(WRONG), &[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert_eq!(err.matches("HTTP 401").count(), 1, "one error: {err}");
    assert!(
        err.contains(&format!("MLflow server {uri} refused")) && err.contains(ENV_PASSWORD),
        "{err}"
    );
    assert!(!err.contains(WRONG) && !out.contains(WRONG), "{out}\n{err}");
    // Without credentials the error says which variables to set.
    let (code, _, err) = sync_with(sweep.root(), &uri, &[], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("HTTP 401") && err.contains(ENV_TOKEN), "{err}");

    // Nothing reached the server, nothing was lost, no password was written anywhere.
    let admin = MlflowClient::new(server.login(PASSWORD), fast_policy()).unwrap();
    assert!(
        admin
            .experiment_by_name(util::tracking::SWEEP)
            .unwrap()
            .is_none()
    );
    assert_eq!(store_counts(&store), counts);
    for secret in [WRONG, PASSWORD] {
        let hits = files_containing(&tmp.path().join("experiments"), secret);
        assert!(hits.is_empty(), "{secret} in {hits:?}");
    }

    let (code, out, err) = sync_with(sweep.root(), &uri, &login(PASSWORD), &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("8 run(s) created"), "{out}");
    check_mirror(&Rest(admin), &store);
}

/// A server behind TLS with a self-signed certificate: untrusted without its CA bundle (one
/// error, not retried), trusted with it from `MLFLOW_TRACKING_SERVER_CERT_PATH` or
/// `--ca-bundle`, for the live mirror and the sync alike; checkpoints, trial figures and the
/// sweep's report are uploaded to their runs.
#[test]
fn https_with_a_self_signed_certificate_works_with_its_ca_bundle() {
    let Some(python) = util::python() else { return };
    let tmp = util::temp_dir();
    let tls = tmp.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_pem, key_pem) = (tls.join("cert.pem"), tls.join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let setup = Setup {
        admin_password: None,
        tls: Some((cert_pem.clone(), key_pem)),
    };
    let server = MlflowServer::start_with(&python, &tmp.path().join("mlflow"), free_port(), setup);
    let uri = server.uri();
    assert!(uri.starts_with("https://"), "{uri}");

    // Without the bundle the certificate is refused at once: a TLS error, not an outage.
    let started = Instant::now();
    match MlflowClient::new(&uri, RetryPolicy::default()) {
        Ok(client) => {
            let err = client.health().unwrap_err();
            assert!(matches!(err, TrackingError::MlflowTls { .. }), "{err}");
            assert!(err.to_string().contains(ENV_CA_BUNDLE), "{err}");
        }
        // A machine without system certificates refuses to set up TLS without a bundle.
        Err(e) => assert!(e.to_string().contains(ENV_CA_BUNDLE), "{e}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "retried");

    // The sweep's trials have figures and best checkpoints; the live mirror uploads both.
    let sweep = SweepPaths::new(tmp.path().join("experiments").join(util::tracking::SWEEP));
    let store = Store::create(sweep.store()).unwrap().with_durable(false);
    for (id, ..) in TRIALS {
        let trial = sweep.trial_paths(id);
        std::fs::create_dir_all(trial.checkpoint_best()).unwrap();
        std::fs::write(trial.checkpoint_best().join("model.mpk"), id).unwrap();
        std::fs::create_dir_all(sweep.trial_figures(id)).unwrap();
        std::fs::write(sweep.trial_figures(id).join("curve.svg"), "<svg/>").unwrap();
    }
    let mut mirror = MlflowMirror::with_policy(
        server.target(),
        util::tracking::SWEEP,
        util::tracking::SWEEP,
        Some(sweep.clone()),
        fast_policy(),
    )
    .unwrap()
    .with_artifacts(Artifacts::Checkpoints);
    run_plan(&store, &sweep, &mut mirror);
    assert_eq!(mirror.missed(), 0);

    // The sync finds every file of the trials in MLflow and adds the report to the sweep's run
    // (runs the live mirror made count as updated: the sync stamps them).
    let report = tmp.path().join("report");
    std::fs::create_dir_all(report.join("figures")).unwrap();
    std::fs::write(report.join("index.md"), "# report").unwrap();
    std::fs::write(report.join("figures").join("box.svg"), "<svg/>").unwrap();
    let bundle = [(ENV_CA_BUNDLE, cert_pem.to_str().unwrap())];
    let args = [
        "--artifacts",
        "checkpoints",
        "--report",
        report.to_str().unwrap(),
    ];
    let (code, out, err) = sync_with(sweep.root(), &uri, &bundle, &args);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("0 run(s) created, 8 updated"), "{out}");
    let rest = Rest(MlflowClient::new(server.target(), fast_policy()).unwrap());
    check_mirror(&rest, &store);
    check_files(&rest, &store);

    // The flag instead of the variable; nothing left to send.
    let flag = [
        "--ca-bundle",
        cert_pem.to_str().unwrap(),
        "--artifacts",
        "checkpoints",
    ];
    let (code, out, err) = sync_with(sweep.root(), &uri, &[], &[&flag[..], &args[2..]].concat());
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("sent 0 metric point(s), 0 param(s), 0 artifact(s)"),
        "{out}"
    );
}

/// The chosen finished attempts have their best checkpoint and figures; the sweep's run has
/// the report.
fn check_files(rest: &Rest, store: &Store) {
    let chosen = TrialEvent::from_frame(&store.chosen_trials().unwrap()).unwrap();
    let exp = rest.get(
        "/api/2.0/mlflow/experiments/get-by-name",
        &[("experiment_name", util::tracking::SWEEP)],
    );
    let runs = rest.runs(exp["experiment"]["experiment_id"].as_str().unwrap());
    let run_of = |trial: Option<&str>, attempt: Option<String>| {
        runs.iter()
            .find(|r| {
                let t = tags(r);
                t.get("seglab.trial_id").map(String::as_str) == trial
                    && t.get("seglab.attempt") == attempt.as_ref()
            })
            .map(|r| r["info"]["run_id"].as_str().unwrap().to_string())
            .unwrap()
    };
    for ev in chosen.iter().filter(|e| e.status == TrialStatus::Finished) {
        let run = run_of(Some(&ev.trial_id), Some(ev.attempt.to_string()));
        assert_eq!(
            rest.artifacts(&run, "checkpoint_best"),
            ["checkpoint_best/model.mpk"]
        );
        assert_eq!(rest.artifacts(&run, "figures"), ["figures/curve.svg"]);
    }
    let parent = run_of(None, None);
    assert_eq!(
        rest.artifacts(&parent, "report"),
        ["report/figures", "report/index.md"]
    );
    assert_eq!(
        rest.artifacts(&parent, "report/figures"),
        ["report/figures/box.svg"]
    );
}

/// `HTTPS_PROXY` carries the requests to an `https://` server: the proxy is asked to CONNECT to
/// the server's host (which only the proxy would resolve).
#[test]
fn https_requests_go_through_the_proxy_of_https_proxy() {
    use std::io::{BufRead, BufReader};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            let mut line = String::new();
            let _ = BufReader::new(stream).read_line(&mut line);
            let _ = tx.send(line);
        }
    });
    let dir = util::temp_dir();
    let store = Store::create(dir.path().join("store"))
        .unwrap()
        .with_durable(false);
    util::tracking::small_sweep(&store);
    let mut cmd = util::seglab();
    cmd.args(["mlflow", "sync", dir.path().to_str().unwrap()])
        .args(["--uri", "https://mlflow.invalid:5443"])
        .env("HTTPS_PROXY", &proxy)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for var in [
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().unwrap();
    let line = rx.recv_timeout(Duration::from_secs(60));
    // The sync retries an unreachable server for a while; the request line is all this needs.
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("no request reached the proxy");
    assert!(line.starts_with("CONNECT mlflow.invalid:5443 "), "{line:?}");
}
