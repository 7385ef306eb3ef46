//! When the active file is rotated, what rotated files are called, and which are deleted.
//! Not the writing itself (see `writer`) nor when it happens in a batch (see `mod`).
//!
//! Rotated files are named `<stem>-<UTC yyyymmddThhmmssZ>-<n>.<ext>[.gz]` after the time
//! their file was started, `n` counting from 1 to keep names unique within a second, so
//! names sort in the order the data was written.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use spansink_config::{Compression, RotationConfig};

/// Length of `yyyymmddThhmmssZ`.
const STAMP_LEN: usize = 16;

/// Where the active file and the rotated files live, and how they are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLayout {
    dir: PathBuf,
    active_name: String,
    stem: String,
    /// Everything after the stem of a rotated name: `.jsonl`, `.jsonl.gz`, or `` .
    suffix: String,
}

impl FileLayout {
    /// The layout for the configured `path`. With gzip the active file gets `.gz`
    /// appended unless the path already ends with it.
    pub fn new(path: &Path, compression: Compression) -> Result<Self, String> {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return Err(format!(
                "{} does not end in a UTF-8 file name; give a file path, e.g. ./spans/spans.jsonl",
                path.display()
            ));
        };
        let gzip = compression == Compression::Gzip;
        let base = name.strip_suffix(".gz").filter(|_| gzip).unwrap_or(name);
        let (stem, ext) = match base.rfind('.') {
            Some(dot) if dot > 0 => (&base[..dot], &base[dot..]),
            _ => (base, ""),
        };
        let gz = if gzip { ".gz" } else { "" };
        Ok(Self {
            dir: match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            },
            active_name: format!("{base}{gz}"),
            stem: stem.to_string(),
            suffix: format!("{ext}{gz}"),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn active_path(&self) -> PathBuf {
        self.dir.join(&self.active_name)
    }

    fn rotated_name(&self, stamp: &str, n: u64) -> String {
        format!("{}-{stamp}-{n}{}", self.stem, self.suffix)
    }

    /// The rotated path for a file started at `started`: `n` is one more than the
    /// highest already used with that stamp (not the first gap, which retention may have
    /// opened, so that names keep sorting in rotation order).
    pub fn next_rotated_path(&self, started: SystemTime) -> io::Result<PathBuf> {
        let stamp = utc_stamp(started);
        let last = self
            .rotated_entries()?
            .into_iter()
            .filter(|(s, _, _)| *s == stamp)
            .map(|(_, n, _)| n)
            .max()
            .unwrap_or(0);
        Ok(self.dir.join(self.rotated_name(&stamp, last + 1)))
    }

    /// `(stamp, n)` if `name` is one of this layout's rotated files.
    fn parse_rotated<'n>(&self, name: &'n str) -> Option<(&'n str, u64)> {
        let rest = name
            .strip_prefix(self.stem.as_str())?
            .strip_prefix('-')?
            .strip_suffix(self.suffix.as_str())?;
        let (stamp, n) = rest.split_at_checked(STAMP_LEN)?;
        let n = n.strip_prefix('-')?;
        let stamp_ok = stamp.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
        if !stamp_ok || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((stamp, n.parse().ok()?))
    }

    /// This layout's rotated files, oldest first.
    pub fn rotated_files(&self) -> io::Result<Vec<PathBuf>> {
        Ok(self
            .rotated_entries()?
            .into_iter()
            .map(|(_, _, path)| path)
            .collect())
    }

    /// `(stamp, n, path)` of each rotated file, oldest first.
    fn rotated_entries(&self) -> io::Result<Vec<(String, u64, PathBuf)>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some((stamp, n)) = self.parse_rotated(name) {
                found.push((stamp.to_string(), n, entry.path()));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Deletes the oldest rotated files beyond `max_files` (0 keeps all); returns them.
    pub fn enforce_retention(&self, max_files: u32) -> io::Result<Vec<PathBuf>> {
        if max_files == 0 {
            return Ok(Vec::new());
        }
        let mut files = self.rotated_files()?;
        let excess = files.len().saturating_sub(max_files as usize);
        files.truncate(excess);
        for path in &files {
            match fs::remove_file(path) {
                Ok(()) => {}
                // Someone else (another exporter on the same path during a reload) was first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(files)
    }
}

/// When the active file is due for rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    pub max_size: Option<u64>,
    pub max_age: Option<Duration>,
    pub max_files: u32,
}

impl From<&RotationConfig> for RotationPolicy {
    fn from(c: &RotationConfig) -> Self {
        Self {
            max_size: c.max_size.map(|s| s.bytes()),
            max_age: c.max_age.map(|a| a.get()),
            max_files: c.max_files,
        }
    }
}

impl RotationPolicy {
    /// Whether a file of `size` bytes, started `age` ago, should be closed before more is
    /// written to it.
    pub fn is_due(&self, size: u64, age: Duration) -> bool {
        self.max_size.is_some_and(|max| size >= max) || self.max_age.is_some_and(|max| age >= max)
    }
}

/// `t` as `yyyymmddThhmmssZ` in UTC (times before 1970 clamp to the epoch).
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(path: &str, compression: Compression) -> FileLayout {
        FileLayout::new(Path::new(path), compression).unwrap()
    }

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56
        assert_eq!(utc_stamp(t), "20240229T123456Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799); // 2099-12-31 23:59:59
        assert_eq!(utc_stamp(t), "20991231T235959Z");
    }

    #[test]
    fn names_follow_stem_stamp_n_ext_with_gz_when_compressed() {
        let plain = layout("./spans/spans.jsonl", Compression::None);
        assert_eq!(plain.active_path(), Path::new("./spans/spans.jsonl"));
        assert_eq!(
            plain.rotated_name("20240229T123456Z", 3),
            "spans-20240229T123456Z-3.jsonl"
        );
        let gz = layout("/var/spans/out.csv", Compression::Gzip);
        assert_eq!(gz.active_path(), Path::new("/var/spans/out.csv.gz"));
        assert_eq!(
            gz.rotated_name("20240229T123456Z", 1),
            "out-20240229T123456Z-1.csv.gz"
        );
        let already = layout("out.jsonl.gz", Compression::Gzip);
        assert_eq!(already.active_path(), Path::new("./out.jsonl.gz"));
        let bare = layout("spans", Compression::None);
        assert_eq!(
            bare.rotated_name("20240229T123456Z", 1),
            "spans-20240229T123456Z-1"
        );
    }

    #[test]
    fn only_this_layouts_rotated_names_are_recognised() {
        let l = layout("d/spans.jsonl", Compression::None);
        assert_eq!(
            l.parse_rotated("spans-20240229T123456Z-12.jsonl"),
            Some(("20240229T123456Z", 12))
        );
        for other in [
            "spans.jsonl",
            "spans-20240229T123456Z-1.csv",
            "spans-20240229T123456Z-1.jsonl.gz",
            "spans-2024022XT123456Z-1.jsonl",
            "spans-20240229T123456Z-.jsonl",
            "spans-20240229T123456Z-1x.jsonl",
            "other-20240229T123456Z-1.jsonl",
            "spans-extra-20240229T123456Z-1.jsonl",
        ] {
            assert_eq!(l.parse_rotated(other), None, "{other}");
        }
    }

    #[test]
    fn retention_deletes_the_oldest_rotated_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let l = FileLayout::new(&dir.path().join("s.jsonl"), Compression::None).unwrap();
        let names = [
            "s-20240101T000000Z-2.jsonl",
            "s-20240101T000000Z-10.jsonl",
            "s-20231231T235959Z-1.jsonl",
            "s-20240102T000000Z-1.jsonl",
            "s.jsonl",
            "unrelated.txt",
        ];
        for n in names {
            fs::write(dir.path().join(n), b"x").unwrap();
        }
        let deleted = l.enforce_retention(2).unwrap();
        let deleted: Vec<_> = deleted.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(
            deleted,
            ["s-20231231T235959Z-1.jsonl", "s-20240101T000000Z-2.jsonl"]
        );
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "s-20240101T000000Z-10.jsonl",
                "s-20240102T000000Z-1.jsonl",
                "s.jsonl",
                "unrelated.txt"
            ]
        );
        assert!(l.enforce_retention(0).unwrap().is_empty());
    }

    #[test]
    fn next_rotated_path_counts_on_from_the_highest_number_of_its_second() {
        let dir = tempfile::tempdir().unwrap();
        let l = FileLayout::new(&dir.path().join("s.jsonl"), Compression::None).unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(
            l.next_rotated_path(t).unwrap(),
            dir.path().join("s-20240229T123456Z-1.jsonl")
        );
        // 1 was deleted by retention, 2 remains: the next is 3, not 1.
        fs::write(dir.path().join("s-20240229T123456Z-2.jsonl"), b"").unwrap();
        fs::write(dir.path().join("s-20240229T123457Z-9.jsonl"), b"").unwrap();
        assert_eq!(
            l.next_rotated_path(t).unwrap(),
            dir.path().join("s-20240229T123456Z-3.jsonl")
        );
    }

    #[test]
    fn policy_is_due_on_size_or_age() {
        let p = RotationPolicy {
            max_size: Some(100),
            max_age: Some(Duration::from_secs(60)),
            max_files: 0,
        };
        assert!(!p.is_due(99, Duration::from_secs(59)));
        assert!(p.is_due(100, Duration::ZERO));
        assert!(p.is_due(0, Duration::from_secs(60)));
        let never = RotationPolicy {
            max_size: None,
            max_age: None,
            max_files: 0,
        };
        assert!(!never.is_due(u64::MAX, Duration::MAX));
    }
}
