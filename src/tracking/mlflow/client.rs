//! A small blocking REST client for an MLflow tracking server (2.x and 3.x), written against
//! the facts of docs/design.md §5: JSON bodies for POST, query parameters for GET,
//! millisecond times, log-batch limits, non-finite metric values as strings, and retries
//! with backoff only on 408/429/5xx and connection errors.
//!
//! All HTTP of the project goes through [`MlflowClient::call`]: reqwest's blocking client over
//! rustls (`http://` and `https://`, the system's certificates plus a CA bundle, proxies from
//! the environment), with the credentials of the [`MlflowTarget`] on every request.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::target::{self, Credentials, MlflowTarget};
use crate::tracking::{Result, TrackingError};

/// log-batch limits of MLflow (`mlflow/utils/validation.py`, docs/design.md §5).
pub const MAX_METRICS_PER_BATCH: usize = 1000;
pub const MAX_PARAMS_PER_BATCH: usize = 100;
pub const MAX_TAGS_PER_BATCH: usize = 100;
pub const MAX_ENTITIES_PER_BATCH: usize = 1000;
/// The documented request limit is 1 MB; batches stay below it with room for the envelope.
pub const MAX_BATCH_BYTES: usize = 1_000_000 - 4096;
/// Longer param values are truncated by the server (silently, docs/mlflow.md §3); the mirror
/// truncates first so that what it compares is what the server keeps.
pub const MAX_PARAM_VALUE_CHARS: usize = 6000;
pub const MAX_TAG_VALUE_CHARS: usize = 8000;
pub const MAX_KEY_CHARS: usize = 250;

/// How hard to try before giving up on a request.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first try (transient failures only).
    pub max_retries: u32,
    /// The first wait; each retry doubles it (with jitter), capped by `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Time limit of one request, connection included.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// For `seglab mlflow sync`: patient (about half a minute of retries per request).
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(16),
            timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// For the live mirror of a running sweep: a down server costs the sweep seconds, not
    /// minutes (the later sync fills the gap).
    pub fn quick() -> Self {
        RetryPolicy {
            max_retries: 2,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(15),
        }
    }

    fn backoff(&self, retry: u32) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        // Jitter in [0.5, 1.0) so that parallel workers do not retry in lockstep.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        base.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
    }
}

/// HTTP statuses MLflow's own client retries (`_TRANSIENT_FAILURE_RESPONSE_CODES`,
/// docs/mlflow.md §4).
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// One metric point. `value` may be NaN or ±inf: it travels as the strings "NaN", "Infinity",
/// "-Infinity" (a raw NaN token is silently stored as 0.0 by the server,
/// docs/mlflow.md §3) and is read back
/// from a number or such a string.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub key: String,
    #[serde(with = "metric_value")]
    pub value: f64,
    #[serde(deserialize_with = "lenient_i64")]
    pub timestamp: i64,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub step: i64,
}

/// A run parameter (immutable on the server once logged).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Param {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// A run tag (last write wins).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

impl Param {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Param {
            key: key.into(),
            value: value.into(),
        }
    }
}

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Tag {
            key: key.into(),
            value: value.into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Experiment {
    pub experiment_id: String,
    pub name: String,
    #[serde(default)]
    pub artifact_location: String,
    #[serde(default)]
    pub lifecycle_stage: String,
}

/// Run statuses of MLflow (`RunStatus` in service.proto).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Scheduled,
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Scheduled => "SCHEDULED",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment_id: String,
    #[serde(default)]
    pub run_name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub start_time: Option<i64>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub end_time: Option<i64>,
    #[serde(default)]
    pub artifact_uri: String,
    #[serde(default)]
    pub lifecycle_stage: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RunData {
    /// The latest point of each metric key.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    #[serde(default)]
    pub params: Vec<Param>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Run {
    pub info: RunInfo,
    #[serde(default)]
    pub data: RunData,
}

impl Run {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.data
            .tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.data
            .params
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }
}

/// An entry of an artifact listing.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct FileInfo {
    pub path: String,
    #[serde(default)]
    pub is_dir: bool,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub file_size: Option<i64>,
}

/// The request body of one HTTP call.
pub enum Body<'a> {
    None,
    Json(&'a Value),
    Bytes(&'a [u8]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }

    fn as_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
        }
    }
}

/// A connection to one tracking server (`http://` or `https://host:port`, optionally with a
/// path prefix). Its `Debug` shows no credentials.
pub struct MlflowClient {
    base: String,
    http: reqwest::blocking::Client,
    credentials: Option<Credentials>,
    policy: RetryPolicy,
}

impl std::fmt::Debug for MlflowClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlflowClient")
            .field("base", &self.base)
            .field("authenticated", &self.credentials.is_some())
            .field("policy", &self.policy)
            .finish()
    }
}

/// What one try of a request gave: (status, body, Retry-After), or why it got no answer.
type Attempt = std::result::Result<(u16, Vec<u8>, Option<Duration>), TransportError>;

/// A request that got no HTTP answer.
struct TransportError {
    /// Worth retrying (connection refused or dropped, timeout).
    transient: bool,
    /// The certificate or another part of TLS failed: the trust settings must change.
    tls: bool,
    message: String,
}

/// Bodies of JSON answers (a search over many runs with many metrics) may be large.
const MAX_RESPONSE_BYTES: u64 = 512 * 1024 * 1024;

impl MlflowClient {
    /// A client for the server of `target`: an address alone (`&str`) or with a CA bundle and
    /// credentials ([`MlflowTarget::from_env`]). Only a malformed address, an unreadable CA
    /// bundle or a machine without any trusted certificate is an error; the server is
    /// contacted with the first request.
    pub fn new(target: impl Into<MlflowTarget>, policy: RetryPolicy) -> Result<Self> {
        let target = target.into();
        let base = checked_base(&target.uri)?;
        Ok(MlflowClient {
            base,
            http: target::http_client(&target, policy.timeout)?,
            credentials: target.credentials,
            policy,
        })
    }

    /// The server address this client talks to.
    pub fn uri(&self) -> &str {
        &self.base
    }

    /// One request with the retry rules; returns the body of a 2xx answer. Transient failures
    /// (408, 429, 500, 502, 503, 504, connection errors, timeouts) are retried with exponential
    /// backoff, honouring `Retry-After`; other statuses fail at once.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Vec<u8>> {
        let url = format!("{}{}", self.base, path);
        let mut retry = 0;
        loop {
            let wait = match self.once(method, &url, query, &body) {
                Ok((status, bytes, _)) if (200..300).contains(&status) => return Ok(bytes),
                Ok((status @ (401 | 403), bytes, _)) => {
                    return Err(self.auth_error(method, path, status, &bytes));
                }
                Ok((status, bytes, retry_after)) => {
                    if !is_transient_status(status) || retry >= self.policy.max_retries {
                        return Err(http_error(method, &url, status, &bytes));
                    }
                    tracing::debug!("MLflow {} {url}: HTTP {status}, retrying", method.as_str());
                    retry_after.map_or_else(
                        || self.policy.backoff(retry),
                        |s| s.min(self.policy.max_backoff),
                    )
                }
                Err(e) if e.tls => return Err(tls_error(method, url, e.message)),
                Err(e) => {
                    if !e.transient || retry >= self.policy.max_retries {
                        return Err(TrackingError::MlflowConnection {
                            method: method.as_str(),
                            url,
                            message: e.message,
                        });
                    }
                    tracing::debug!("MLflow {} {url}: {}, retrying", method.as_str(), e.message);
                    self.policy.backoff(retry)
                }
            };
            std::thread::sleep(wait);
            retry += 1;
        }
    }

    /// One try of a request, with the client's credentials.
    fn once(&self, method: Method, url: &str, query: &[(&str, &str)], body: &Body<'_>) -> Attempt {
        let url = if query.is_empty() {
            reqwest::Url::parse(url)
        } else {
            reqwest::Url::parse_with_params(url, query)
        }
        .map_err(|e| TransportError {
            transient: false,
            tls: false,
            message: format!("not a valid URL: {e}"),
        })?;
        let mut req = self.http.request(method.as_reqwest(), url);
        req = match body {
            Body::Json(v) => req.json(v),
            Body::Bytes(b) => req
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(b.to_vec()),
            Body::None => req,
        };
        req = match &self.credentials {
            Some(Credentials::Basic { username, password }) => {
                req.basic_auth(username, Some(password.expose()))
            }
            Some(Credentials::Bearer(token)) => req.bearer_auth(token.expose()),
            None => req,
        };
        let resp = req.send().map_err(transport_error)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Ok((status, read_limited(resp)?, retry_after))
    }

    /// The one error of refused credentials (401) or permissions (403): names the server, the
    /// status and what to check, never a credential.
    fn auth_error(&self, method: Method, path: &str, status: u16, body: &[u8]) -> TrackingError {
        let hint = if status == 401 {
            Credentials::hint(self.credentials.as_ref()).to_string()
        } else {
            format!(
                "the user may not {} {path}; ask the server's administrator for permission",
                method.as_str()
            )
        };
        TrackingError::MlflowAuth {
            server: self.base.clone(),
            status,
            message: server_message(body),
            hint,
        }
    }

    fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value> {
        let bytes = self.call(method, path, query, body.map_or(Body::None, Body::Json))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_slice(&bytes).map_err(|e| TrackingError::MlflowResponse {
            method: method.as_str(),
            url: format!("{}{path}", self.base),
            message: format!("not JSON ({e}): {}", snippet(&bytes)),
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, path: &str, v: Value) -> Result<T> {
        serde_json::from_value(v).map_err(|e| TrackingError::MlflowResponse {
            method: "decode",
            url: format!("{}{path}", self.base),
            message: e.to_string(),
        })
    }

    /// `GET /health`: Ok when the server answers.
    pub fn health(&self) -> Result<()> {
        self.call(Method::Get, "/health", &[], Body::None)
            .map(|_| ())
    }

    /// The experiment called `name`, or None (404 `RESOURCE_DOES_NOT_EXIST`).
    pub fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>> {
        let path = "/api/2.0/mlflow/experiments/get-by-name";
        match self.json(Method::Get, path, &[("experiment_name", name)], None) {
            Ok(mut v) => Ok(Some(self.decode(path, v["experiment"].take())?)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates an experiment; an existing name gives an error with code
    /// `RESOURCE_ALREADY_EXISTS`.
    pub fn create_experiment(&self, name: &str) -> Result<String> {
        let path = "/api/2.0/mlflow/experiments/create";
        let v = self.json(Method::Post, path, &[], Some(&json!({ "name": name })))?;
        id_field(&v, "experiment_id").ok_or_else(|| self.unexpected(path, &v))
    }

    /// Get-or-create, safe against parallel workers (docs/design.md §5): look up, create
    /// when absent, and look up again when another worker created it in between.
    pub fn get_or_create_experiment(&self, name: &str) -> Result<Experiment> {
        let exp = match self.experiment_by_name(name)? {
            Some(e) => e,
            None => match self.create_experiment(name) {
                Ok(_) => self.experiment_by_name(name)?,
                Err(e) if error_code(&e) == Some("RESOURCE_ALREADY_EXISTS") => {
                    self.experiment_by_name(name)?
                }
                Err(e) => return Err(e),
            }
            .ok_or_else(|| TrackingError::MlflowResponse {
                method: "GET",
                url: format!("{}/api/2.0/mlflow/experiments/get-by-name", self.base),
                message: format!("experiment {name:?} not found right after creating it"),
            })?,
        };
        if exp.lifecycle_stage == "deleted" {
            return Err(TrackingError::Query(format!(
                "MLflow experiment {name:?} on {} is deleted; restore it or choose another name",
                self.base
            )));
        }
        Ok(exp)
    }

    /// Creates a run (status RUNNING) with initial tags.
    pub fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time: i64,
        tags: &[Tag],
    ) -> Result<Run> {
        let path = "/api/2.0/mlflow/runs/create";
        let body = json!({
            "experiment_id": experiment_id,
            "run_name": run_name,
            "start_time": start_time,
            "tags": tags,
        });
        let mut v = self.json(Method::Post, path, &[], Some(&body))?;
        self.decode(path, v["run"].take())
    }

    pub fn get_run(&self, run_id: &str) -> Result<Run> {
        let path = "/api/2.0/mlflow/runs/get";
        let mut v = self.json(Method::Get, path, &[("run_id", run_id)], None)?;
        self.decode(path, v["run"].take())
    }

    /// Every active run of the experiments matching `filter` (all pages).
    pub fn search_runs(&self, experiment_ids: &[&str], filter: &str) -> Result<Vec<Run>> {
        let path = "/api/2.0/mlflow/runs/search";
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = json!({
                "experiment_ids": experiment_ids,
                "filter": filter,
                "run_view_type": "ACTIVE_ONLY",
                "max_results": 1000,
            });
            if let Some(t) = &token {
                body["page_token"] = json!(t);
            }
            let mut v = self.json(Method::Post, path, &[], Some(&body))?;
            let runs: Vec<Run> = match v.get_mut("runs") {
                Some(r) => self.decode(path, r.take())?,
                None => Vec::new(),
            };
            out.extend(runs);
            token = next_token(&v);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Logs metrics, params and tags in as many log-batch requests as the limits require;
    /// returns the number of requests sent. Params must not differ from logged ones (see
    /// [`params_to_log`]).
    pub fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[Param],
        tags: &[Tag],
    ) -> Result<usize> {
        let path = "/api/2.0/mlflow/runs/log-batch";
        let batches = plan_batches(metrics, params, tags);
        for b in &batches {
            let body = json!({
                "run_id": run_id,
                "metrics": &metrics[b.metrics.clone()],
                "params": &params[b.params.clone()],
                "tags": &tags[b.tags.clone()],
            });
            self.json(Method::Post, path, &[], Some(&body))?;
        }
        Ok(batches.len())
    }

    /// Sets the status (and end time of a finished, failed or killed run).
    pub fn update_run(&self, run_id: &str, status: RunStatus, end_time: Option<i64>) -> Result<()> {
        let path = "/api/2.0/mlflow/runs/update";
        let mut body = json!({ "run_id": run_id, "status": status.as_str() });
        if let Some(t) = end_time {
            body["end_time"] = json!(t);
        }
        self.json(Method::Post, path, &[], Some(&body)).map(|_| ())
    }

    pub fn set_tag(&self, run_id: &str, key: &str, value: &str) -> Result<()> {
        let path = "/api/2.0/mlflow/runs/set-tag";
        let body = json!({ "run_id": run_id, "key": key, "value": value });
        self.json(Method::Post, path, &[], Some(&body)).map(|_| ())
    }

    /// Marks a run deleted (used to drop the loser of a creation race).
    pub fn delete_run(&self, run_id: &str) -> Result<()> {
        let path = "/api/2.0/mlflow/runs/delete";
        self.json(Method::Post, path, &[], Some(&json!({ "run_id": run_id })))
            .map(|_| ())
    }

    /// Every point of one metric of a run (all pages).
    pub fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>> {
        let path = "/api/2.0/mlflow/metrics/get-history";
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("run_id", run_id),
                ("metric_key", key),
                ("max_results", "25000"),
            ];
            if let Some(t) = &token {
                query.push(("page_token", t));
            }
            let mut v = self.json(Method::Get, path, &query, None)?;
            if let Some(m) = v.get_mut("metrics") {
                out.extend(self.decode::<Vec<Metric>>(path, m.take())?);
            }
            token = next_token(&v);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// The direct entries of a run's artifact folder `path` ("" for the root).
    pub fn list_artifacts(&self, run_id: &str, path: &str) -> Result<Vec<FileInfo>> {
        let api = "/api/2.0/mlflow/artifacts/list";
        let mut query = vec![("run_id", run_id)];
        if !path.is_empty() {
            query.push(("path", path));
        }
        let mut v = self.json(Method::Get, api, &query, None)?;
        match v.get_mut("files") {
            Some(f) => self.decode(api, f.take()),
            None => Ok(Vec::new()),
        }
    }

    /// Every file under a run's artifact folder `path`, recursively.
    pub fn list_artifacts_recursive(&self, run_id: &str, path: &str) -> Result<Vec<FileInfo>> {
        let mut out = Vec::new();
        let mut todo = vec![path.to_string()];
        while let Some(dir) = todo.pop() {
            for f in self.list_artifacts(run_id, &dir)? {
                if f.is_dir {
                    todo.push(f.path);
                } else {
                    out.push(f);
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Uploads one artifact through the server's artifact proxy
    /// (`PUT /api/2.0/mlflow-artifacts/artifacts/<exp>/<run>/artifacts/<rel_path>`,
    /// docs/mlflow.md §2).
    /// Needs a server that serves artifacts (`mlflow-artifacts:/` run artifact URIs).
    pub fn upload_artifact(&self, run: &RunInfo, rel_path: &str, bytes: &[u8]) -> Result<()> {
        let root = run
            .artifact_uri
            .strip_prefix("mlflow-artifacts:")
            .ok_or_else(|| TrackingError::Query(format!(
                "MLflow run {} stores artifacts at {:?}, which this client cannot write; start the server with artifact proxying (the default, --serve-artifacts)",
                run.run_id, run.artifact_uri
            )))?
            .trim_start_matches('/');
        let path = format!(
            "/api/2.0/mlflow-artifacts/artifacts/{}/{}",
            encode_path(root),
            encode_path(rel_path.trim_start_matches('/'))
        );
        self.call(Method::Put, &path, &[], Body::Bytes(bytes))
            .map(|_| ())
    }

    fn unexpected(&self, path: &str, v: &Value) -> TrackingError {
        TrackingError::MlflowResponse {
            method: "POST",
            url: format!("{}{path}", self.base),
            message: format!("unexpected answer {v}"),
        }
    }
}

/// The params of `wanted` not yet logged on the run; a param logged with another value is an
/// error (MLflow params are immutable, docs/mlflow.md §3), so nothing is ever re-logged
/// differently.
pub fn params_to_log(run_id: &str, logged: &[Param], wanted: &[Param]) -> Result<Vec<Param>> {
    let mut out = Vec::new();
    for p in wanted {
        match logged.iter().find(|l| l.key == p.key) {
            None => out.push(p.clone()),
            Some(l) if l.value == p.value => {}
            Some(l) => {
                return Err(TrackingError::MlflowParamConflict {
                    run_id: run_id.to_string(),
                    key: p.key.clone(),
                    logged: l.value.clone(),
                    wanted: p.value.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// The entity ranges of one log-batch request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchPlan {
    pub metrics: std::ops::Range<usize>,
    pub params: std::ops::Range<usize>,
    pub tags: std::ops::Range<usize>,
}

/// Splits entities into requests within the limits (≤ 1000 metrics, ≤ 100 params, ≤ 100 tags,
/// ≤ 1000 entities, < 1 MB of JSON), keeping the order within each kind. Params and tags go
/// first, so a run is described before its metrics arrive.
pub fn plan_batches(metrics: &[Metric], params: &[Param], tags: &[Tag]) -> Vec<BatchPlan> {
    let size = |v: &dyn erased::Json| v.json_len() + 1;
    let mut plans = Vec::new();
    let (mut m, mut p, mut t) = (0, 0, 0);
    while m < metrics.len() || p < params.len() || t < tags.len() {
        let (m0, p0, t0) = (m, p, t);
        let mut bytes = 0usize;
        let full = |n: usize, bytes: usize, extra: usize| {
            n >= MAX_ENTITIES_PER_BATCH || bytes + extra > MAX_BATCH_BYTES
        };
        while p < params.len() && p - p0 < MAX_PARAMS_PER_BATCH {
            let s = size(&params[p]);
            if full((p - p0) + (t - t0) + (m - m0), bytes, s) && p > p0 {
                break;
            }
            bytes += s;
            p += 1;
        }
        while t < tags.len() && t - t0 < MAX_TAGS_PER_BATCH {
            let s = size(&tags[t]);
            if full((p - p0) + (t - t0) + (m - m0), bytes, s) && (p > p0 || t > t0) {
                break;
            }
            bytes += s;
            t += 1;
        }
        while m < metrics.len() && m - m0 < MAX_METRICS_PER_BATCH {
            let s = size(&metrics[m]);
            if full((p - p0) + (t - t0) + (m - m0), bytes, s) && (p > p0 || t > t0 || m > m0) {
                break;
            }
            bytes += s;
            m += 1;
        }
        plans.push(BatchPlan {
            metrics: m0..m,
            params: p0..p,
            tags: t0..t,
        });
    }
    plans
}

mod erased {
    /// The JSON length of an entity as it is sent.
    pub trait Json {
        fn json_len(&self) -> usize;
    }
    impl<T: serde::Serialize> Json for T {
        fn json_len(&self) -> usize {
            serde_json::to_vec(self).map_or(0, |v| v.len())
        }
    }
}

/// The MLflow error code of an HTTP error (`RESOURCE_ALREADY_EXISTS`, …).
pub fn error_code(e: &TrackingError) -> Option<&str> {
    match e {
        TrackingError::MlflowHttp { code, .. } => code.as_deref(),
        _ => None,
    }
}

/// True for errors that only a change of settings fixes: refused credentials or permissions,
/// an untrusted certificate. Retrying later does not help, so the mirror stops trying.
pub fn is_settings_error(e: &TrackingError) -> bool {
    matches!(
        e,
        TrackingError::MlflowAuth { .. } | TrackingError::MlflowTls { .. }
    )
}

/// True for errors that mean "the server is unreachable" (after retries), as opposed to a
/// refused request.
pub fn is_unreachable(e: &TrackingError) -> bool {
    match e {
        TrackingError::MlflowConnection { .. } => true,
        TrackingError::MlflowHttp { status, .. } => is_transient_status(*status),
        _ => false,
    }
}

fn is_not_found(e: &TrackingError) -> bool {
    matches!(e, TrackingError::MlflowHttp { status: 404, code: Some(c), .. } if c == "RESOURCE_DOES_NOT_EXIST")
}

fn http_error(method: Method, url: &str, status: u16, body: &[u8]) -> TrackingError {
    // MLflow errors are {"error_code": …, "message": …}; proxies and unknown routes answer
    // HTML, which is reported as a snippet (docs/mlflow.md §4).
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|v| v["error_code"].as_str())
        .map(str::to_string);
    TrackingError::MlflowHttp {
        method: method.as_str(),
        url: url.to_string(),
        status,
        code,
        message: server_message(body),
    }
}

/// The `message` of an MLflow error body, or a snippet of any other body.
fn server_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| snippet(body))
}

fn tls_error(method: Method, url: String, message: String) -> TrackingError {
    TrackingError::MlflowTls {
        method: method.as_str(),
        url,
        message,
        hint: format!(
            "if the server's certificate comes from a private CA, give that CA's PEM file with {} or the command's CA-bundle flag",
            target::ENV_CA_BUNDLE
        ),
    }
}

/// The checked base address of `uri`: http(s), a host, no credentials inside it.
fn checked_base(uri: &str) -> Result<String> {
    let base = uri.trim().trim_end_matches('/').to_string();
    let bad = |message: &str| TrackingError::MlflowUri {
        uri: target::redact_userinfo(uri),
        message: message.to_string(),
    };
    let Some(rest) = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))
    else {
        return Err(bad(
            "expected an http://host:port or https://host:port address",
        ));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("the address has no host"));
    }
    let parsed = reqwest::Url::parse(&base).map_err(|e| bad(&e.to_string()))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "credentials inside the address are not accepted; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead",
        ));
    }
    Ok(base)
}

/// The body of an answer, refused beyond [`MAX_RESPONSE_BYTES`].
fn read_limited(resp: reqwest::blocking::Response) -> std::result::Result<Vec<u8>, TransportError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    resp.take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| TransportError {
            transient: true,
            tls: false,
            message: format!("reading the answer: {}", target::error_chain(&e)),
        })?;
    if bytes.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(TransportError {
            transient: false,
            tls: false,
            message: format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"),
        });
    }
    Ok(bytes)
}

fn transport_error(e: reqwest::Error) -> TransportError {
    let tls = target::is_tls_error(&e);
    let transient = !tls && (e.is_connect() || e.is_timeout() || e.is_request() || e.is_body());
    // The URL is in the error this becomes; reqwest's own copy would repeat it.
    let e = e.without_url();
    TransportError {
        transient,
        tls,
        message: target::error_chain(&e),
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None if text.is_empty() => "(empty body)".to_string(),
        None => text,
    }
}

fn id_field(v: &Value, key: &str) -> Option<String> {
    match &v[key] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn next_token(v: &Value) -> Option<String> {
    v.get("next_page_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// Percent-encodes a relative path for a URL, keeping `/` between segments.
pub(crate) fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Cuts `s` to at most `max` characters (on a character boundary).
pub(crate) fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// True when two metric values are the same point as MLflow stores them: NaN equals NaN, and
/// ±inf come back as ±f64::MAX (docs/mlflow.md §3).
pub fn same_metric_value(a: f64, b: f64) -> bool {
    let norm = |v: f64| {
        if v.is_infinite() {
            v.signum() * f64::MAX
        } else {
            v
        }
    };
    (a.is_nan() && b.is_nan()) || norm(a) == norm(b)
}

mod metric_value {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("Infinity")
        } else {
            s.serialize_str("-Infinity")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(f64),
        Str(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(v) => Ok(v),
            NumOrStr::Str(s) => match s.as_str() {
                "NaN" | "nan" => Ok(f64::NAN),
                "Infinity" | "inf" => Ok(f64::INFINITY),
                "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
                other => other.parse().map_err(serde::de::Error::custom),
            },
        }
    }
}

/// proto-JSON may write int64 as a string; accept both.
fn lenient_i64<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    lenient_opt_i64(d).map(Option::unwrap_or_default)
}

fn lenient_opt_i64<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("not an integer: {n}"))),
        Some(Value::String(s)) => s.parse().map(Some).map_err(serde::de::Error::custom),
        Some(other) => Err(serde::de::Error::custom(format!("not an integer: {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// What the mock server does with one incoming request.
    enum Reply {
        Status(u16, &'static str, &'static [(&'static str, &'static str)]),
        /// Closes the connection without answering.
        Hangup,
    }

    /// ("METHOD path", body, Authorization header) of each request the mock received.
    type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

    /// A loopback HTTP server answering requests with the scripted replies in order (then 200
    /// `{}`), one connection per request; records each request.
    fn mock(replies: Vec<Reply>) -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            let mut replies = replies.into_iter();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let mut len = 0usize;
                let mut auth = None;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if lower.starts_with("authorization:") {
                        auth = Some(h["authorization:".len()..].trim().to_string());
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let target: Vec<&str> = line.split_whitespace().take(2).collect();
                log.lock().unwrap().push((
                    target.join(" "),
                    String::from_utf8_lossy(&body).into_owned(),
                    auth,
                ));
                match replies.next() {
                    Some(Reply::Hangup) => drop(stream),
                    Some(Reply::Status(code, body, headers)) => {
                        respond(&mut stream, code, body, headers)
                    }
                    None => respond(&mut stream, 200, "{}", &[]),
                }
            }
        });
        (url, seen)
    }

    fn respond(stream: &mut std::net::TcpStream, code: u16, body: &str, headers: &[(&str, &str)]) {
        let mut head = format!(
            "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let _ = stream.write_all(format!("{head}\r\n{body}").as_bytes());
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            timeout: Duration::from_secs(5),
        }
    }

    fn metric(i: usize) -> Metric {
        Metric {
            key: format!("m{}", i % 7),
            value: i as f64,
            timestamp: 1_700_000_000_000,
            step: i as i64,
        }
    }

    #[test]
    fn log_batch_of_1001_metrics_takes_two_requests() {
        let (url, seen) = mock(vec![]);
        let client = MlflowClient::new(&url, fast()).unwrap();
        let metrics: Vec<Metric> = (0..1001).map(metric).collect();
        assert_eq!(client.log_batch("r1", &metrics, &[], &[]).unwrap(), 2);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        let counts: Vec<usize> = seen
            .iter()
            .map(|(target, body, _)| {
                assert_eq!(target, "POST /api/2.0/mlflow/runs/log-batch");
                let v: Value = serde_json::from_str(body).unwrap();
                v["metrics"].as_array().unwrap().len()
            })
            .collect();
        assert_eq!(counts, [1000, 1]);
    }

    #[test]
    fn batches_respect_every_limit() {
        let params: Vec<Param> = (0..250).map(|i| Param::new(format!("p{i}"), "v")).collect();
        let tags: Vec<Tag> = (0..101).map(|i| Tag::new(format!("t{i}"), "v")).collect();
        let metrics: Vec<Metric> = (0..2500).map(metric).collect();
        let plans = plan_batches(&metrics, &params, &tags);
        let mut seen = (0, 0, 0);
        for p in &plans {
            assert!(p.params.len() <= MAX_PARAMS_PER_BATCH);
            assert!(p.tags.len() <= MAX_TAGS_PER_BATCH);
            assert!(p.metrics.len() <= MAX_METRICS_PER_BATCH);
            assert!(p.params.len() + p.tags.len() + p.metrics.len() <= MAX_ENTITIES_PER_BATCH);
            assert_eq!(p.params.start, seen.0);
            assert_eq!(p.tags.start, seen.1);
            assert_eq!(p.metrics.start, seen.2);
            seen = (p.params.end, p.tags.end, p.metrics.end);
        }
        assert_eq!(seen, (250, 101, 2500));
        // Big values: the 1 MB budget splits before the count limits do.
        let big: Vec<Tag> = (0..100)
            .map(|i| Tag::new(format!("t{i}"), "x".repeat(MAX_TAG_VALUE_CHARS)))
            .collect();
        let long: Vec<Param> = (0..100)
            .map(|i| Param::new(format!("p{i}"), "y".repeat(MAX_PARAM_VALUE_CHARS)))
            .collect();
        let plans = plan_batches(&[], &long, &big);
        assert!(plans.len() >= 2, "{plans:?}");
        for p in &plans {
            let bytes: usize = long[p.params.clone()]
                .iter()
                .map(|x| serde_json::to_vec(x).unwrap().len() + 1)
                .chain(
                    big[p.tags.clone()]
                        .iter()
                        .map(|x| serde_json::to_vec(x).unwrap().len() + 1),
                )
                .sum();
            assert!(bytes <= MAX_BATCH_BYTES);
        }
        assert!(plan_batches(&[], &[], &[]).is_empty());
    }

    #[test]
    fn transient_statuses_are_retried_until_success() {
        let (url, seen) = mock(vec![
            Reply::Status(503, "busy", &[]),
            Reply::Status(429, "{}", &[("Retry-After", "0")]),
            Reply::Status(502, "<html>bad gateway</html>", &[]),
            Reply::Status(200, "{\"experiment_id\": \"7\"}", &[]),
        ]);
        let client = MlflowClient::new(&url, fast()).unwrap();
        assert_eq!(client.create_experiment("x").unwrap(), "7");
        assert_eq!(seen.lock().unwrap().len(), 4);
    }

    #[test]
    fn client_errors_are_not_retried_and_keep_the_error_code() {
        let (url, seen) = mock(vec![Reply::Status(
            400,
            r#"{"error_code": "RESOURCE_ALREADY_EXISTS", "message": "Experiment 'x' already exists."}"#,
            &[],
        )]);
        let client = MlflowClient::new(&url, fast()).unwrap();
        let err = client.create_experiment("x").unwrap_err();
        assert_eq!(error_code(&err), Some("RESOURCE_ALREADY_EXISTS"));
        assert!(!is_unreachable(&err));
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn an_html_404_is_reported_without_retry() {
        let (url, seen) = mock(vec![Reply::Status(
            404,
            "<!doctype html><p>Not Found</p>",
            &[],
        )]);
        let client = MlflowClient::new(&url, fast()).unwrap();
        let err = client.get_run("abc").unwrap_err();
        assert!(err.to_string().contains("HTTP 404"), "{err}");
        assert!(err.to_string().contains("Not Found"), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn persistent_server_errors_give_up_after_the_retries() {
        let replies = (0..10).map(|_| Reply::Status(500, "{}", &[])).collect();
        let (url, seen) = mock(replies);
        let client = MlflowClient::new(&url, fast()).unwrap();
        let err = client.set_tag("r", "k", "v").unwrap_err();
        assert!(is_unreachable(&err), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 1 + fast().max_retries as usize);
    }

    #[test]
    fn dropped_connections_are_retried() {
        let (url, seen) = mock(vec![Reply::Hangup, Reply::Hangup]);
        let client = MlflowClient::new(&url, fast()).unwrap();
        client.set_tag("r", "k", "v").unwrap();
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[test]
    fn a_closed_port_is_a_connection_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = MlflowClient::new(format!("http://127.0.0.1:{port}"), fast()).unwrap();
        let err = client.health().unwrap_err();
        assert!(
            matches!(err, TrackingError::MlflowConnection { .. }),
            "{err}"
        );
        assert!(is_unreachable(&err));
    }

    #[test]
    fn non_finite_values_travel_as_strings_and_come_back() {
        let points = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.25];
        let json: Vec<String> = points
            .iter()
            .map(|&v| {
                let m = Metric {
                    key: "k".into(),
                    value: v,
                    timestamp: 1,
                    step: 2,
                };
                serde_json::to_string(&m).unwrap()
            })
            .collect();
        assert!(json[0].contains(r#""value":"NaN""#), "{}", json[0]);
        assert!(json[1].contains(r#""value":"Infinity""#));
        assert!(json[2].contains(r#""value":"-Infinity""#));
        assert!(json[3].contains(r#""value":0.25"#));
        for (s, v) in json.iter().zip(points) {
            let back: Metric = serde_json::from_str(s).unwrap();
            assert!(same_metric_value(back.value, v));
        }
        let stored: Metric =
            serde_json::from_str(r#"{"key":"k","value":1.7976931348623157e308,"timestamp":"5"}"#)
                .unwrap();
        assert!(same_metric_value(stored.value, f64::INFINITY));
        assert_eq!((stored.timestamp, stored.step), (5, 0));
    }

    #[test]
    fn params_are_never_relogged_with_another_value() {
        let logged = [Param::new("lr", "0.001"), Param::new("model", "unet3d")];
        let wanted = [Param::new("lr", "0.001"), Param::new("fold", "0")];
        assert_eq!(
            params_to_log("r", &logged, &wanted).unwrap(),
            [Param::new("fold", "0")]
        );
        let err = params_to_log("r", &logged, &[Param::new("lr", "0.01")]).unwrap_err();
        assert!(matches!(err, TrackingError::MlflowParamConflict { .. }));
    }

    #[test]
    fn uris_must_be_http_or_https_without_credentials() {
        assert!(MlflowClient::new("localhost:5000", fast()).is_err());
        assert!(MlflowClient::new("http://", fast()).is_err());
        let err = MlflowClient::new("https://ann:hunter2@x:5000", fast()).unwrap_err();
        assert!(
            err.to_string().contains("MLFLOW_TRACKING_USERNAME")
                && !err.to_string().contains("hunter2"),
            "{err}"
        );
        let c = MlflowClient::new("http://127.0.0.1:5000/", fast()).unwrap();
        assert_eq!(c.uri(), "http://127.0.0.1:5000");
        let c = MlflowClient::new("https://mlflow.example.org/prefix/", fast()).unwrap();
        assert_eq!(c.uri(), "https://mlflow.example.org/prefix");
    }

    fn with_credentials(url: &str, credentials: Credentials) -> MlflowClient {
        let target = MlflowTarget {
            uri: url.to_string(),
            ca_bundle: None,
            credentials: Some(credentials),
        };
        MlflowClient::new(target, fast()).unwrap()
    }

    #[test]
    fn every_request_carries_the_credentials() {
        let (url, seen) = mock(vec![]);
        let basic = Credentials::Basic {
            username: "ann".into(),
            password: target::Secret::new("hunter2"),
        };
        with_credentials(&url, basic).health().unwrap();
        with_credentials(&url, Credentials::Bearer(target::Secret::new("tok-1")))
            .set_tag("r", "k", "v")
            .unwrap();
        let seen = seen.lock().unwrap();
        // "ann:hunter2" in base64.
        assert_eq!(seen[0].2.as_deref(), Some("Basic YW5uOmh1bnRlcjI="));
        assert_eq!(seen[1].2.as_deref(), Some("Bearer tok-1"));
    }

    #[test]
    fn refused_credentials_are_one_error_without_the_password() {
        let (url, seen) = mock(vec![Reply::Status(401, "You are not authenticated.", &[])]);
        let basic = Credentials::Basic {
            username: "ann".into(),
            password: target::Secret::new("hunter2"),
        };
        let client = with_credentials(&url, basic);
        let err = client.create_experiment("x").unwrap_err();
        let text = err.to_string();
        assert!(is_settings_error(&err) && !is_unreachable(&err), "{text}");
        assert!(text.contains(&url) && text.contains("HTTP 401"), "{text}");
        assert!(text.contains("MLFLOW_TRACKING_PASSWORD"), "{text}");
        assert!(!text.contains("hunter2") && !format!("{client:?}").contains("hunter2"));
        assert_eq!(seen.lock().unwrap().len(), 1, "not retried");
    }

    #[test]
    fn artifact_paths_are_percent_encoded() {
        assert_eq!(
            encode_path("predictions/vol 01 ü.tif"),
            "predictions/vol%2001%20%C3%BC.tif"
        );
        assert_eq!(truncate_chars("äbc", 2), "äb");
    }
}
