//! A credential read from a file (a mounted Secret) and read again when the file changes,
//! so a rotated Secret takes effect without a restart. Not how credentials are compared
//! (`auth`), nor where the file comes from (the Pod spec).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::telemetry::Metrics;
use crate::telemetry::metrics::ResultLabels;

/// How often, at most, a request makes the file be checked for a change (one `stat`).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The file's content, trimmed, as last read successfully.
pub(super) struct SecretFile {
    path: PathBuf,
    state: Mutex<State>,
    metrics: Metrics,
}

struct State {
    secret: Vec<u8>,
    stamp: Option<Stamp>,
    checked_at: Instant,
}

/// What tells one version of the file from another. A Secret volume swaps a symlink to a
/// new directory, so the inode changes even if the size and time happen to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        let metadata = std::fs::metadata(path)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(Self {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            inode,
        })
    }
}

/// Why a secret file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read it: {0}")]
    Read(#[from] std::io::Error),
    #[error("it is empty")]
    Empty,
}

impl SecretFile {
    /// Reads `path` now: a missing, unreadable or empty file is an error.
    pub(super) fn open(path: &Path, metrics: &Metrics) -> Result<Self, SecretFileError> {
        let stamp = Stamp::of(path)?;
        let secret = read_secret(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                secret,
                stamp: Some(stamp),
                checked_at: Instant::now(),
            }),
            metrics: metrics.clone(),
        })
    }

    /// Calls `f` with the current secret, re-reading the file first if it changed (checked
    /// at most every [`CHECK_INTERVAL`]). A failed re-read keeps the last secret: a Secret
    /// being updated, or deleted by mistake, must not lock every client out.
    pub(super) fn with_current<T>(&self, f: impl FnOnce(&[u8]) -> T) -> T {
        // A poisoned lock only means a panic elsewhere while holding it; the state is
        // still a whole secret, so keep using it.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked_at.elapsed() >= CHECK_INTERVAL {
            state.checked_at = Instant::now();
            self.reload_if_changed(&mut state);
        }
        f(&state.secret)
    }

    fn reload_if_changed(&self, state: &mut State) {
        // `None` (the file is gone) equals `None` after a failed re-read of a gone file,
        // so a missing file is logged once, not every second.
        let stamp = Stamp::of(&self.path).ok();
        if stamp == state.stamp {
            return;
        }
        let result = match stamp {
            None => Err(SecretFileError::Read(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the file is gone",
            ))),
            Some(_) => read_secret(&self.path),
        };
        let outcome = match result {
            Ok(secret) => {
                state.secret = secret;
                state.stamp = stamp;
                tracing::info!(file = %self.path.display(), "receiver credential file changed; using its new content");
                "success"
            }
            Err(e) => {
                // Remember the failed version, so it is not re-read (and logged) every
                // second; a later change is read again.
                state.stamp = stamp;
                tracing::warn!(
                    file = %self.path.display(),
                    error = %e,
                    "cannot re-read receiver credential file; keeping its last content"
                );
                "failure"
            }
        };
        self.metrics
            .receiver_auth_file_reloads
            .get_or_create(&ResultLabels { result: outcome })
            .inc();
    }
}

fn read_secret(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let content = std::fs::read(path)?;
    let secret = content.trim_ascii();
    match secret.is_empty() {
        true => Err(SecretFileError::Empty),
        false => Ok(secret.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(file: &SecretFile) -> Vec<u8> {
        file.with_current(<[u8]>::to_vec)
    }

    fn force_check(file: &SecretFile) {
        let mut state = file.state.lock().unwrap();
        state.checked_at = Instant::now() - CHECK_INTERVAL;
    }

    fn reloads(metrics: &Metrics, result: &'static str) -> u64 {
        metrics
            .receiver_auth_file_reloads
            .get_or_create(&ResultLabels { result })
            .get()
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_last_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let metrics = Metrics::for_tests();
        let file = SecretFile::open(&path, &metrics).unwrap();
        assert_eq!(current(&file), b"first");

        // Replaced the way a Secret volume does it: a new file renamed over the old.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "  second  ").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(
            current(&file),
            b"first",
            "not checked again within a second"
        );
        force_check(&file);
        assert_eq!(current(&file), b"second");
        assert_eq!(reloads(&metrics, "success"), 1);

        std::fs::write(&next, "\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        force_check(&file);
        assert_eq!(
            current(&file),
            b"second",
            "an empty file keeps the last secret"
        );
        std::fs::remove_file(&path).unwrap();
        force_check(&file);
        assert_eq!(
            current(&file),
            b"second",
            "a deleted file keeps the last secret"
        );
        assert_eq!(reloads(&metrics, "failure"), 2);
        force_check(&file);
        current(&file);
        assert_eq!(
            reloads(&metrics, "failure"),
            2,
            "an unchanged failure is not retried"
        );
    }

    #[test]
    fn a_missing_or_empty_file_cannot_be_opened() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::for_tests();
        let missing = SecretFile::open(&dir.path().join("none"), &metrics);
        assert!(matches!(missing, Err(SecretFileError::Read(_))));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        assert!(matches!(
            SecretFile::open(&empty, &metrics),
            Err(SecretFileError::Empty)
        ));
    }
}
