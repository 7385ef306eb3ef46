//! The active output file: created, written (optionally through gzip), committed after
//! each batch, finished on rotation or shutdown. Not naming or rotation (see `rotation`)
//! nor encoding: it takes bytes.
//!
//! "Committed" is the length of the file after the last complete batch reached the OS;
//! for gzip that ends on a sync-flush point, so the file up to there is a readable
//! (unfinished) gzip stream. A failed batch is cut off at that length ([`ActiveFile::abandon`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::write::GzEncoder;
use spansink_config::Compression;
use tokio::time::Instant;

/// The file being appended to.
pub struct ActiveFile {
    path: PathBuf,
    out: Output,
    /// A second handle to the same open file, for truncating, syncing and identity
    /// checks while `out` (possibly inside a gzip encoder) owns the first.
    handle: File,
    committed: u64,
    opened_at: Instant,
    started: SystemTime,
}

enum Output {
    Plain(CountingFile),
    // Boxed: the encoder's state (hundreds of bytes with zlib-rs) would size every Output.
    Gzip(Box<GzEncoder<CountingFile>>),
}

/// Counts bytes as they reach the file, so sizes are after compression.
struct CountingFile {
    file: File,
    written: u64,
}

impl Write for CountingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl ActiveFile {
    /// Creates (or empties) `path`. `opened_at` (monotonic) drives age rotation;
    /// `started` (wall clock) names the file when it is rotated.
    pub fn create(
        path: &Path,
        compression: Compression,
        opened_at: Instant,
        started: SystemTime,
    ) -> io::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let handle = file.try_clone()?;
        let counting = CountingFile { file, written: 0 };
        let out = match compression {
            Compression::None => Output::Plain(counting),
            // Fast level: the sink has to keep up with ingest (hundreds of MB/s of JSON);
            // span JSON is repetitive enough that level 1 already shrinks it several-fold.
            Compression::Gzip => Output::Gzip(Box::new(GzEncoder::new(
                counting,
                flate2::Compression::fast(),
            ))),
        };
        Ok(Self {
            path: path.to_path_buf(),
            out,
            handle,
            committed: 0,
            opened_at,
            started,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes on disk after the last commit (after compression).
    pub fn size(&self) -> u64 {
        self.committed
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.opened_at)
    }

    pub fn started(&self) -> SystemTime {
        self.started
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.out {
            Output::Plain(f) => f.write_all(bytes),
            Output::Gzip(gz) => gz.write_all(bytes),
        }
    }

    /// Hands everything written so far to the OS (gzip: ends it with a sync-flush point)
    /// and, with `fsync`, waits until it is on disk.
    pub fn commit(&mut self, fsync: bool) -> io::Result<()> {
        let written = match &mut self.out {
            Output::Plain(f) => {
                f.flush()?;
                f.written
            }
            Output::Gzip(gz) => {
                // flate2's flush is a Z_SYNC_FLUSH: all input so far becomes decodable.
                gz.flush()?;
                gz.get_ref().written
            }
        };
        if fsync {
            self.handle.sync_data()?;
        }
        self.committed = written;
        Ok(())
    }

    /// Ends the file: the gzip trailer, a flush, and with `fsync` a sync to disk.
    pub fn finish(self, fsync: bool) -> io::Result<()> {
        let Self { out, handle, .. } = self;
        match out {
            Output::Plain(mut f) => f.flush()?,
            Output::Gzip(gz) => (*gz).finish()?.flush()?,
        }
        if fsync {
            handle.sync_all()?;
        }
        Ok(())
    }

    /// Drops the file after a failed write, cutting it back to the last commit so it
    /// holds only whole batches (and, for gzip, a readable stream prefix).
    pub fn abandon(self) {
        let Self {
            path,
            out,
            handle,
            committed,
            ..
        } = self;
        // Dropping a gzip encoder writes its pending output and trailer; the truncation
        // below removes them again.
        drop(out);
        if let Err(e) = handle.set_len(committed) {
            tracing::warn!(path = %path.display(), error = %e, "could not cut a failed batch off the file; it may end with a partial line");
        }
    }

    /// Whether `path` still names this open file (another exporter instance, during a
    /// config reload, may have rotated it aside).
    pub fn is_at(&self, path: &Path) -> bool {
        same_file(&self.handle, path)
    }
}

#[cfg(unix)]
fn same_file(handle: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (handle.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_handle: &File, path: &Path) -> bool {
    path.exists()
}

/// Makes a directory's entries (a created or renamed file) durable.
#[cfg(unix)]
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
pub fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;

    use super::*;

    fn create(path: &Path, compression: Compression) -> ActiveFile {
        ActiveFile::create(path, compression, Instant::now(), SystemTime::now()).unwrap()
    }

    /// Reads a gzip stream as far as it goes; an unfinished stream ends in an error
    /// after its data.
    fn gunzip_prefix(bytes: &[u8]) -> (String, bool) {
        let mut text = Vec::new();
        let mut decoder = GzDecoder::new(bytes);
        let complete = decoder.read_to_end(&mut text).is_ok();
        (String::from_utf8(text).unwrap(), complete)
    }

    #[tokio::test]
    async fn committed_gzip_batches_are_readable_before_the_stream_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl.gz");
        let mut f = create(&path, Compression::Gzip);
        f.write_all(b"one\n").unwrap();
        f.commit(false).unwrap();
        f.write_all(b"two\n").unwrap();
        f.commit(true).unwrap();
        assert_eq!(f.size(), std::fs::metadata(&path).unwrap().len());
        let (text, complete) = gunzip_prefix(&std::fs::read(&path).unwrap());
        assert_eq!((text.as_str(), complete), ("one\ntwo\n", false));

        f.finish(true).unwrap();
        let (text, complete) = gunzip_prefix(&std::fs::read(&path).unwrap());
        assert_eq!((text.as_str(), complete), ("one\ntwo\n", true));
    }

    #[tokio::test]
    async fn abandon_cuts_the_file_back_to_the_last_commit() {
        let dir = tempfile::tempdir().unwrap();
        for compression in [Compression::None, Compression::Gzip] {
            let path = dir.path().join(format!("{compression:?}"));
            let mut f = create(&path, compression);
            f.write_all(b"whole batch\n").unwrap();
            f.commit(false).unwrap();
            let committed = f.size();
            f.write_all(b"half a ba").unwrap();
            f.abandon();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len() as u64, committed);
            let text = match compression {
                Compression::None => String::from_utf8(bytes).unwrap(),
                Compression::Gzip => gunzip_prefix(&bytes).0,
            };
            assert_eq!(text, "whole batch\n");
        }
    }

    #[tokio::test]
    async fn identity_follows_the_open_file_not_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let f = create(&path, Compression::None);
        assert!(f.is_at(&path));
        std::fs::rename(&path, dir.path().join("moved.jsonl")).unwrap();
        assert!(!f.is_at(&path));
        let _other = create(&path, Compression::None);
        assert!(!f.is_at(&path));
    }
}
