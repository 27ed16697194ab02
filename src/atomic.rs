//! Writing files and folders so that nobody ever sees them half-written: everything is built
//! under a temporary name in the target's own folder (so the final rename is atomic on one
//! filesystem) and renamed into place only when complete. An error removes the temporary
//! and leaves the target as it was.
//!
//! - [`write_file`]: a file from bytes; [`write_file_with`]: a file written by a closure that
//!   is given the temporary path (TIFF writers, for example).
//! - [`build_folder`]: a folder built by a closure in a temporary sibling, then renamed; an
//!   existing folder is replaced only with `force`, and only after the new one is complete.
//!   Temporaries of the same folder left by a killed process are removed first, so a run
//!   that is killed and resumed again and again does not fill the disk with checkpoints.
//! - [`remove_folder`]: a folder renamed aside, then removed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file or folder that could not be written; the message says what failed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    pub message: String,
}

impl WriteError {
    fn io(path: &Path, what: &str, e: std::io::Error) -> Self {
        WriteError {
            path: path.to_owned(),
            message: format!("cannot {what}: {e}"),
        }
    }
}

/// A temporary sibling of `path`, unique within this process: `.<name>.<what>-<pid>-<n>`,
/// keeping `path`'s extension (writers may choose a format by it).
fn temporary_sibling(path: &Path, what: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let mut tmp = format!(
        ".{name}.{what}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    if let Some(ext) = path.extension() {
        tmp.push('.');
        tmp.push_str(&ext.to_string_lossy());
    }
    path.with_file_name(tmp)
}

fn create_parent(path: &Path) -> Result<(), WriteError> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => std::fs::create_dir_all(parent)
            .map_err(|e| WriteError::io(parent, "create the folder", e)),
        None => Ok(()),
    }
}

/// Writes `path` through `write`, which is handed a temporary path next to it; renames the
/// temporary to `path` when `write` succeeds, removes it otherwise. Creates missing parent
/// folders.
pub fn write_file_with<E: From<WriteError>>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    create_parent(path)?;
    let tmp = temporary_sibling(path, "tmp");
    let result = write(&tmp).and_then(|()| {
        std::fs::rename(&tmp, path)
            .map_err(|e| WriteError::io(path, "move the finished file into place", e).into())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `path` atomically (see [`write_file_with`]).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_file_with(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| WriteError::io(tmp, "write", e))
    })
}

/// Removes the temporaries of `path` left by processes of this machine that no longer run:
/// siblings named `.<name>.tmp-<pid>-…` or `.<name>.old-<pid>-…`. Where a process's liveness
/// cannot be told (no `/proc`), nothing is removed.
fn remove_stale_temporaries(path: &Path) {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let Some(rest) = rest
            .strip_prefix("tmp-")
            .or_else(|| rest.strip_prefix("old-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let stale = entry.path();
            let _ = if stale.is_dir() {
                std::fs::remove_dir_all(&stale)
            } else {
                std::fs::remove_file(&stale)
            };
        }
    }
}

/// Builds the folder `out` through `build`, which fills a temporary sibling folder, then
/// renames it to `out`. An existing `out` is an error unless `force`, in which case it is
/// replaced only after the new folder is complete. On error the temporary is removed and
/// `out` is untouched.
pub fn build_folder<T, E: From<WriteError>>(
    out: &Path,
    force: bool,
    build: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    if out.exists() && !force {
        return Err(WriteError {
            path: out.to_owned(),
            message: "already exists (use --force to replace it)".into(),
        }
        .into());
    }
    create_parent(out)?;
    remove_stale_temporaries(out);
    let tmp = temporary_sibling(out, "tmp");
    std::fs::create_dir(&tmp).map_err(|e| WriteError::io(&tmp, "create the folder", e))?;
    let value = match build(&tmp) {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let swap = || -> Result<(), WriteError> {
        if out.exists() {
            let old = temporary_sibling(out, "old");
            std::fs::rename(out, &old).map_err(|e| WriteError::io(out, "move aside", e))?;
            std::fs::rename(&tmp, out)
                .map_err(|e| WriteError::io(out, "move the new folder into place", e))?;
            std::fs::remove_dir_all(&old)
                .map_err(|e| WriteError::io(&old, "remove the replaced folder", e))
        } else {
            std::fs::rename(&tmp, out)
                .map_err(|e| WriteError::io(out, "move the new folder into place", e))
        }
    };
    if let Err(e) = swap() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.into());
    }
    Ok(value)
}

/// Removes the folder `path` (nothing when it does not exist): renamed aside first, so a kill
/// during the removal leaves no half-removed folder under its name (the aside copy is a
/// temporary that the next [`build_folder`] of `path` clears).
pub fn remove_folder(path: &Path) -> Result<(), WriteError> {
    if !path.exists() {
        return Ok(());
    }
    let old = temporary_sibling(path, "old");
    std::fs::rename(path, &old).map_err(|e| WriteError::io(path, "move aside", e))?;
    std::fs::remove_dir_all(&old).map_err(|e| WriteError::io(&old, "remove", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_output_folder_is_refused_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("set");
        std::fs::create_dir(&out).unwrap();
        let err = build_folder(&out, false, |_| Ok::<_, WriteError>(())).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        // With force the old folder is replaced only after the new one is built.
        std::fs::write(out.join("old.txt"), "x").unwrap();
        build_folder(&out, true, |tmp| write_file(&tmp.join("new.txt"), b"y")).unwrap();
        assert!(out.join("new.txt").exists() && !out.join("old.txt").exists());
        // A failing build leaves the existing folder untouched and no temporary behind.
        let err = build_folder(&out, true, |_| -> Result<(), WriteError> {
            Err(WriteError {
                path: out.clone(),
                message: "boom".into(),
            })
        });
        assert!(err.is_err());
        assert!(out.join("new.txt").exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn a_failed_file_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("a.txt");
        write_file(&path, b"one").unwrap();
        let r: Result<(), WriteError> = write_file_with(&path, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(WriteError {
                path: tmp.to_owned(),
                message: "failed".into(),
            })
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn temporaries_of_dead_processes_are_removed_before_building() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("checkpoint");
        // No process has pid 4294967295 (above the kernel's pid limit).
        let stale = dir.path().join(".checkpoint.tmp-4294967295-0");
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("weights.bpk"), b"half").unwrap();
        let other = dir.path().join(".other.tmp-4294967295-0");
        std::fs::create_dir(&other).unwrap();
        build_folder(&out, false, |tmp| -> Result<(), WriteError> {
            std::fs::write(tmp.join("a"), b"x").unwrap();
            Ok(())
        })
        .unwrap();
        assert!(!stale.exists());
        assert!(other.exists(), "temporaries of other targets stay");
    }
}
