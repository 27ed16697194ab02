//! Provenance recorded on every trial event: which code ran (git commit, dirty flag
//! and a hash of the uncommitted changes, seglab and burn versions), where (host, user,
//! device) and how (the command line). A sweep rerun on changed code is visible in the store,
//! and two runs of the same commit with different local edits can be told apart by
//! `git_diff_sha256`.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

/// The burn version seglab is built against (pinned `=0.22.1` in Cargo.toml; a unit test keeps
/// the two in step).
pub const BURN_VERSION: &str = "0.22.1";

/// What ran a trial attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// `HEAD` of the git work tree holding the spec, or "" outside git.
    pub git_commit: String,
    /// Tracked files differ from `HEAD`, or untracked files exist.
    pub git_dirty: bool,
    /// sha256 of `git diff HEAD` plus the names of untracked files, when dirty.
    pub git_diff_sha256: Option<String>,
    pub seglab_version: String,
    pub burn_version: String,
    pub host: String,
    pub user: String,
    /// The command line, shell-quoted.
    pub command: String,
}

impl Provenance {
    /// Collects the provenance of a run started in the git work tree around `dir` (the spec's
    /// folder: experiments live in the seglab repository). Git problems give empty fields,
    /// never an error: provenance must not stop a sweep.
    pub fn collect(dir: &Path) -> Provenance {
        let git = |args: &[&str]| -> Option<Vec<u8>> {
            let out = Command::new("git")
                .arg("-C")
                .arg(if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                })
                .args(args)
                .output()
                .ok()?;
            out.status.success().then_some(out.stdout)
        };
        let commit = git(&["rev-parse", "HEAD"])
            .map(|o| String::from_utf8_lossy(&o).trim().to_string())
            .unwrap_or_default();
        let (dirty, diff) = if commit.is_empty() {
            (false, None)
        } else {
            let status = git(&["status", "--porcelain"]).unwrap_or_default();
            if status.is_empty() {
                (false, None)
            } else {
                let mut h = Sha256::new();
                h.update(git(&["diff", "HEAD"]).unwrap_or_default());
                h.update(b"\0untracked\0");
                h.update(git(&["ls-files", "--others", "--exclude-standard"]).unwrap_or_default());
                (true, Some(hex(&h.finalize())))
            }
        };
        Provenance {
            git_commit: commit,
            git_dirty: dirty,
            git_diff_sha256: diff,
            seglab_version: env!("CARGO_PKG_VERSION").to_string(),
            burn_version: BURN_VERSION.to_string(),
            host: crate::tracking::hostname(),
            user: user_name(),
            command: command_line(std::env::args()),
        }
    }
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The login name ($USER, $LOGNAME, else the uid).
fn user_name() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(u) = std::env::var(var)
            && !u.is_empty()
        {
            return u;
        }
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    format!("uid{}", unsafe { libc::getuid() })
}

/// Arguments joined into one line a shell would read back the same way.
pub fn command_line(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b));
            if plain {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burn_version_matches_the_lock_file() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
        let expected = format!("name = \"burn\"\nversion = \"{BURN_VERSION}\"");
        assert!(lock.contains(&expected), "Cargo.lock has another burn");
    }

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        let args = [
            "seglab",
            "sweep",
            "run",
            "my spec.toml",
            "--set",
            "a='b'",
            "",
        ];
        assert_eq!(
            command_line(args.map(String::from)),
            r#"seglab sweep run 'my spec.toml' --set 'a='\''b'\''' ''"#
        );
    }

    #[test]
    fn provenance_of_a_git_work_tree_and_outside_git() {
        let dir = tempfile::tempdir().unwrap();
        let outside = Provenance::collect(dir.path());
        assert_eq!(outside.git_commit, "");
        assert!(!outside.git_dirty && outside.git_diff_sha256.is_none());
        assert_eq!(outside.burn_version, BURN_VERSION);
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            assert!(ok, "git {args:?}");
        };
        if Command::new("git").arg("--version").output().is_err() {
            return; // no git on this machine: the outside case above is all there is
        }
        git(&["init", "-q"]);
        std::fs::write(dir.path().join("a.txt"), "one").unwrap();
        git(&["add", "a.txt"]);
        git(&["commit", "-qm", "one"]);
        let clean = Provenance::collect(dir.path());
        assert_eq!(clean.git_commit.len(), 40);
        assert!(!clean.git_dirty && clean.git_diff_sha256.is_none());
        std::fs::write(dir.path().join("a.txt"), "two").unwrap();
        let dirty = Provenance::collect(dir.path());
        assert!(dirty.git_dirty);
        std::fs::write(dir.path().join("a.txt"), "three").unwrap();
        let dirtier = Provenance::collect(dir.path());
        assert_ne!(dirty.git_diff_sha256, dirtier.git_diff_sha256);
        assert_eq!(dirty.git_commit, clean.git_commit);
    }
}
