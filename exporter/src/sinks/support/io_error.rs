//! Local I/O failures (files, stdout) as [`SinkError`]s: which are worth retrying.
//! Not for network clients: each of those sinks classifies its own backend's answers.

use std::io;

use crate::sinks::SinkError;

/// Classifies `error`, met while doing `action` (e.g. "write /var/spans/spans.jsonl").
///
/// Permanent: the exporter is not allowed to write there, or the path cannot be a file
/// (retrying cannot help until someone changes the setup; the batch goes to the
/// fallback). Transient: everything else, notably a full disk, which frees up.
pub fn io_error(action: &str, error: &io::Error) -> SinkError {
    use io::ErrorKind::*;
    match error.kind() {
        PermissionDenied => SinkError::permanent(
            "permission_denied",
            format!("cannot {action}: {error}; give the exporter write access to that path"),
        ),
        ReadOnlyFilesystem => SinkError::permanent(
            "read_only_filesystem",
            format!("cannot {action}: {error}; mount a writable volume there"),
        ),
        IsADirectory | NotADirectory | InvalidFilename => SinkError::permanent(
            "invalid_path",
            format!("cannot {action}: {error}; point the sink at a file path"),
        ),
        StorageFull | QuotaExceeded => SinkError::transient(
            "disk_full",
            format!("cannot {action}: {error}; free space or enable rotation with max_files"),
        ),
        _ => SinkError::transient("io", format!("cannot {action}: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_problems_are_permanent_and_a_full_disk_is_transient() {
        let e = io_error("write x", &io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(!e.is_transient());
        assert_eq!(e.reason(), "permission_denied");
        let e = io_error("write x", &io::Error::from_raw_os_error(28)); // ENOSPC
        assert!(e.is_transient());
        assert_eq!(e.reason(), "disk_full");
        let e = io_error("write x", &io::Error::other("flaky"));
        assert!(e.is_transient());
        assert_eq!(e.reason(), "io");
    }
}
