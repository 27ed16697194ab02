//! Where a tracking server is and how to reach it: its address, a CA bundle that vouches for
//! its certificate beside the system's certificates, and credentials. [`MlflowTarget::from_env`]
//! reads MLflow's own variables (docs/mlflow.md), so a server that the MLflow Python client
//! reaches is reached the same way.
//!
//! Credentials stay inside this module's types: their `Debug` hides them, and nothing here puts
//! them into a message, a log line or an address.

use std::path::{Path, PathBuf};

use crate::tracking::{Result, TrackingError};

/// The user of HTTP basic authentication (MLflow's `--app-name basic-auth`).
pub const ENV_USERNAME: &str = "MLFLOW_TRACKING_USERNAME";
/// The password of HTTP basic authentication.
pub const ENV_PASSWORD: &str = "MLFLOW_TRACKING_PASSWORD";
/// A bearer token (servers behind an OAuth proxy, hosted MLflow).
pub const ENV_TOKEN: &str = "MLFLOW_TRACKING_TOKEN";
/// A PEM file of CA certificates trusted beside the system's.
pub const ENV_CA_BUNDLE: &str = "MLFLOW_TRACKING_SERVER_CERT_PATH";

/// A secret string whose `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(hidden)")
    }
}

/// How requests prove who sends them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// HTTP basic authentication.
    Basic { username: String, password: Secret },
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
}

impl Credentials {
    /// What to check when the server refuses these credentials (names variables, not values).
    pub(crate) fn hint(credentials: Option<&Credentials>) -> &'static str {
        match credentials {
            Some(Credentials::Basic { .. }) => {
                "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            }
            Some(Credentials::Bearer(_)) => "check MLFLOW_TRACKING_TOKEN",
            None => {
                "the server wants a login: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN"
            }
        }
    }
}

/// A tracking server and the way to reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MlflowTarget {
    /// `http://host:port` or `https://host:port`, optionally with a path prefix.
    pub uri: String,
    /// PEM certificates trusted beside the system's (a self-signed or in-house CA).
    pub ca_bundle: Option<PathBuf>,
    pub credentials: Option<Credentials>,
}

impl From<&str> for MlflowTarget {
    /// The server at `uri` with the system's certificates and no credentials.
    fn from(uri: &str) -> Self {
        MlflowTarget {
            uri: uri.to_string(),
            ..MlflowTarget::default()
        }
    }
}

impl From<&String> for MlflowTarget {
    fn from(uri: &String) -> Self {
        MlflowTarget::from(uri.as_str())
    }
}

impl From<String> for MlflowTarget {
    fn from(uri: String) -> Self {
        MlflowTarget::from(uri.as_str())
    }
}

impl MlflowTarget {
    /// The server at `uri` as every seglab command reaches it: the CA bundle of `ca_bundle`
    /// (a command-line flag) or else `MLFLOW_TRACKING_SERVER_CERT_PATH`, and the credentials of
    /// MLflow's variables. Basic authentication wins over a token when both are set, as in
    /// MLflow's own client.
    pub fn from_env(uri: &str, ca_bundle: Option<&Path>) -> Result<Self> {
        Self::from_vars(uri, ca_bundle, |name| {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        })
    }

    /// [`MlflowTarget::from_env`] with the variables read through `var`.
    pub fn from_vars(
        uri: &str,
        ca_bundle: Option<&Path>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let credentials = match (var(ENV_USERNAME), var(ENV_PASSWORD), var(ENV_TOKEN)) {
            (Some(username), Some(password), _) => Some(Credentials::Basic {
                username,
                password: Secret::new(password),
            }),
            (Some(_), None, _) => return Err(half_login(ENV_USERNAME, ENV_PASSWORD)),
            (None, Some(_), _) => return Err(half_login(ENV_PASSWORD, ENV_USERNAME)),
            (None, None, Some(token)) => Some(Credentials::Bearer(Secret::new(token))),
            (None, None, None) => None,
        };
        Ok(MlflowTarget {
            uri: uri.to_string(),
            ca_bundle: ca_bundle
                .map(Path::to_path_buf)
                .or_else(|| var(ENV_CA_BUNDLE).map(PathBuf::from)),
            credentials,
        })
    }
}

fn half_login(set: &str, missing: &str) -> TrackingError {
    TrackingError::MlflowCredentials(format!(
        "{set} is set but {missing} is not; set both for basic authentication, or neither"
    ))
}

/// The address without a `user:password@` part, for messages about a refused address.
pub(crate) fn redact_userinfo(uri: &str) -> String {
    match uri.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://…@{}", &rest[at + 1..]),
                None => uri.to_string(),
            }
        }
        None => uri.to_string(),
    }
}

/// The HTTP client of one target: rustls with the ring provider, the system's certificates
/// plus the target's CA bundle, proxies from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`, and a
/// time limit per request. A plain `http://` target trusts no certificate at all, so a
/// machine without system certificates can still reach a server on the local network.
pub(crate) fn http_client(
    target: &MlflowTarget,
    timeout: std::time::Duration,
) -> Result<reqwest::blocking::Client> {
    // Fails only when a provider is installed already (by an earlier client): that one is used.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("seglab/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &target.ca_bundle {
        builder = builder.tls_certs_merge(read_ca_bundle(path)?);
    } else if target.uri.trim_start().starts_with("http://") {
        builder = builder.tls_certs_only(Vec::new());
    }
    builder.build().map_err(|e| TrackingError::MlflowUri {
        uri: redact_userinfo(&target.uri),
        message: format!(
            "cannot set up TLS: {}; install the system's CA certificates or give a CA bundle with {ENV_CA_BUNDLE}",
            error_chain(&e)
        ),
    })
}

fn read_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>> {
    let bad = |message: String| TrackingError::MlflowCaBundle {
        path: path.to_path_buf(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(error_chain(&e)))?;
    if certs.is_empty() {
        return Err(bad(
            "no PEM certificate in it (expected -----BEGIN CERTIFICATE----- blocks)".to_string(),
        ));
    }
    Ok(certs)
}

/// An error and its sources as one line, each cause once.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source().or_else(|| inner_of_io(err));
    }
    parts.join(": ")
}

/// The error an `io::Error` wraps: `io::Error::source` skips it and returns its source, so a
/// TLS error inside an I/O error would otherwise never be seen.
fn inner_of_io<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    e.downcast_ref::<std::io::Error>()?
        .get_ref()
        .map(|inner| inner as &(dyn std::error::Error + 'static))
}

/// True when a transport error is a rejected certificate or another TLS failure: retrying does
/// not help, the trust settings must change.
pub(crate) fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        next = err.source().or_else(|| inner_of_io(err));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn credentials_come_from_mlflow_variables() {
        let t = MlflowTarget::from_vars(
            "https://x",
            None,
            vars(&[
                (ENV_USERNAME, "ann"),
                (ENV_PASSWORD, "s3cret"),
                (ENV_TOKEN, "tok"),
                (ENV_CA_BUNDLE, "/etc/ca.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(
            t.credentials,
            Some(Credentials::Basic {
                username: "ann".into(),
                password: Secret::new("s3cret")
            })
        );
        assert_eq!(t.ca_bundle.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert!(!format!("{t:?}").contains("s3cret"), "{t:?}");

        let flag = Path::new("/tmp/flag.pem");
        let t = MlflowTarget::from_vars(
            "https://x",
            Some(flag),
            vars(&[(ENV_TOKEN, "tok"), (ENV_CA_BUNDLE, "/etc/ca.pem")]),
        )
        .unwrap();
        assert_eq!(t.credentials, Some(Credentials::Bearer(Secret::new("tok"))));
        assert_eq!(t.ca_bundle.as_deref(), Some(flag), "the flag wins");
        assert!(!format!("{t:?}").contains("tok\""), "{t:?}");
    }

    #[test]
    fn half_a_login_is_an_error_naming_the_missing_variable() {
        let err = MlflowTarget::from_vars("http://x", None, vars(&[(ENV_PASSWORD, "pw")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(ENV_USERNAME) && !err.contains("pw\""), "{err}");
        let err = MlflowTarget::from_vars("http://x", None, vars(&[(ENV_USERNAME, "u")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(ENV_PASSWORD), "{err}");
    }

    #[test]
    fn passwords_in_addresses_are_redacted() {
        assert_eq!(
            redact_userinfo("https://ann:pw@host:5000/p@th"),
            "https://…@host:5000/p@th"
        );
        assert_eq!(redact_userinfo("http://host:5000"), "http://host:5000");
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("seglab-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("empty.pem");
        std::fs::write(&file, "not a certificate\n").unwrap();
        let target = MlflowTarget {
            uri: "https://x".into(),
            ca_bundle: Some(file.clone()),
            credentials: None,
        };
        let err = http_client(&target, std::time::Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty.pem") && err.contains("no PEM"), "{err}");
        let missing = dir.join("missing.pem");
        let target = MlflowTarget {
            ca_bundle: Some(missing),
            ..target
        };
        let err = http_client(&target, std::time::Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
