//! The `file` sink: spans as JSON Lines or CSV in a local file that stays open, with
//! buffered writes, optional gzip, size/age rotation and retention. Not a queue: a batch
//! is on disk (flushed to the OS, fsync'ed with `fsync: true`) before `export` returns.
//!
//! Behaviour worth knowing:
//! - The active file is opened at the first batch. A non-empty file already at the path
//!   (left by an earlier run, or cut short by an error) is first rotated aside, so every
//!   file starts fresh: with its CSV header, and as a single gzip stream.
//! - Rotation is checked when a batch arrives, before it is written: a file that has
//!   reached `max_size`, or is older than `max_age`, is finished and renamed first. A
//!   file receiving no traffic therefore stays active (flushed, and readable up to its
//!   last batch even when gzipped) until the next batch or shutdown.
//! - A failed batch is cut off the file again (nothing half-written stays) and the file
//!   is closed; the retry starts a new file.
//! - Lines are encoded straight from each request's wire bytes (`otlp::view`), never
//!   decoded into owned structs: the same bytes as encoding the decoded request, for about
//!   half the CPU.
//! - Blocking file I/O and encoding run on tokio's blocking pool (`spawn_blocking`),
//!   never on the runtime's worker threads, which also drive the receivers: a slow disk
//!   or an fsync then stalls only this sink. `block_in_place` was not used because it
//!   needs the multi-threaded runtime (tests and embedders may use another) and moves
//!   the worker's other tasks around on every batch. The batch is written to completion
//!   even if the export call is abandoned by a timeout: the file lock travels with the
//!   blocking task, so the next batch waits for it and lines never interleave.

mod rotation;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use spansink_config::{Compression, FileSinkConfig};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::encoding::{LineEncoder, ScopeGroup, line_encoder};
use crate::otlp::view::for_each_scope_group;
use crate::otlp::{Batch, WireError};

use super::support::io_error::io_error;
use super::{BuildError, BuildSink, Sink, SinkContext, SinkError};
pub use rotation::FileLayout;
use rotation::RotationPolicy;
use writer::{ActiveFile, sync_dir};

/// Writes batches to a rotating file. Exports are serialised: one batch is written at
/// a time, whole.
pub struct FileSink {
    file: Arc<Mutex<RotatingFile>>,
}

impl FileSink {
    /// Checks the path and creates its directory; the file itself is opened by the
    /// first batch.
    pub fn new(name: &str, config: &FileSinkConfig) -> Result<Self, BuildError> {
        let build_error = |message: String| BuildError {
            sink: name.to_string(),
            message: format!("file.path: {message}"),
        };
        let layout =
            FileLayout::new(Path::new(&config.path), config.compression).map_err(build_error)?;
        std::fs::create_dir_all(layout.dir()).map_err(|e| {
            build_error(format!(
                "cannot create directory {}: {e}; create it or give the exporter write access",
                layout.dir().display()
            ))
        })?;
        let buffer_size = config.buffer_size.as_usize().max(1);
        Ok(Self {
            file: Arc::new(Mutex::new(RotatingFile {
                sink: name.to_string(),
                layout,
                compression: config.compression,
                policy: RotationPolicy::from(&config.rotation),
                fsync: config.fsync,
                encoder: line_encoder(config.format),
                buffer_size,
                buffer: Vec::with_capacity(buffer_size),
                active: None,
            })),
        })
    }

    /// Runs `work` on the file under the lock, on the blocking pool.
    async fn with_file<F>(&self, work: F) -> Result<(), SinkError>
    where
        F: FnOnce(&mut RotatingFile) -> Result<(), SinkError> + Send + 'static,
    {
        let mut file = self.file.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || work(&mut file))
            .await
            .map_err(|e| {
                SinkError::permanent("internal", format!("file writer task failed: {e}"))
            })?
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = batch.clone();
        let now = Instant::now();
        self.with_file(move |file| file.write_batch(&batch, now))
            .await
    }

    async fn shutdown(&self) -> Result<(), SinkError> {
        self.with_file(RotatingFile::close).await
    }
}

/// Why writing a batch failed.
enum WriteError {
    Io(std::io::Error),
    Malformed(WireError),
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        WriteError::Io(e)
    }
}

impl From<WireError> for WriteError {
    fn from(e: WireError) -> Self {
        WriteError::Malformed(e)
    }
}

/// The synchronous core: the active file, its encoder and buffer, and rotation.
struct RotatingFile {
    sink: String,
    layout: FileLayout,
    compression: Compression,
    policy: RotationPolicy,
    fsync: bool,
    encoder: Box<dyn LineEncoder>,
    /// Encoded lines collect here and go to the file each time `buffer_size` is reached.
    buffer: Vec<u8>,
    buffer_size: usize,
    active: Option<ActiveFile>,
}

impl RotatingFile {
    fn write_batch(&mut self, batch: &Batch, now: Instant) -> Result<(), SinkError> {
        if let Some(active) = &self.active
            && self.policy.is_due(active.size(), active.age(now))
        {
            self.rotate()?;
        }
        let (mut active, fresh) = match self.active.take() {
            Some(active) => (active, false),
            None => (self.open(now)?, true),
        };
        match self.write_parts(&mut active, batch, fresh) {
            Ok(()) => {
                self.active = Some(active);
                Ok(())
            }
            Err(e) => {
                let path = active.path().display().to_string();
                active.abandon();
                Err(match e {
                    WriteError::Io(e) => io_error(&format!("write {path}"), &e),
                    WriteError::Malformed(e) => SinkError::permanent("malformed", e.to_string()),
                })
            }
        }
    }

    /// Encodes the batch's requests straight from their wire bytes (no decode into owned
    /// structs) and writes them. A request the view cannot read (impossible after the
    /// receiver's scan) fails the batch like a write error: the file is cut back.
    fn write_parts(
        &mut self,
        active: &mut ActiveFile,
        batch: &Batch,
        fresh: bool,
    ) -> Result<(), WriteError> {
        self.buffer.clear();
        if fresh {
            self.encoder.file_header(&mut self.buffer);
        }
        let buffer_size = self.buffer_size;
        for part in batch.parts() {
            for_each_scope_group(part.bytes(), |group| {
                self.encoder.begin_group(&ScopeGroup::of_view(group));
                for span in group.spans() {
                    self.encoder.encode_view_line(&span?, &mut self.buffer)?;
                    if self.buffer.len() >= buffer_size {
                        active.write_all(&self.buffer)?;
                        self.buffer.clear();
                    }
                }
                Ok::<(), WriteError>(())
            })?;
        }
        active.write_all(&self.buffer)?;
        self.buffer.clear();
        // One oversized span can grow the buffer far beyond its size; give that back.
        if self.buffer.capacity() > 4 * self.buffer_size {
            self.buffer = Vec::with_capacity(self.buffer_size);
        }
        active.commit(self.fsync)?;
        Ok(())
    }

    /// Creates the active file, moving aside a non-empty one already at the path.
    fn open(&mut self, now: Instant) -> Result<ActiveFile, SinkError> {
        let path = self.layout.active_path();
        let dir = self.layout.dir();
        std::fs::create_dir_all(dir)
            .map_err(|e| io_error(&format!("create directory {}", dir.display()), &e))?;
        let leftover = std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() > 0);
        if leftover {
            self.move_aside(&path, SystemTime::now())?;
        }
        let active = ActiveFile::create(&path, self.compression, now, SystemTime::now())
            .map_err(|e| io_error(&format!("create {}", path.display()), &e))?;
        if self.fsync {
            sync_dir(dir)
                .map_err(|e| io_error(&format!("sync directory {}", dir.display()), &e))?;
        }
        tracing::debug!(sink = %self.sink, path = %path.display(), "opened file");
        Ok(active)
    }

    /// Finishes the active file and renames it to its rotated name.
    fn rotate(&mut self) -> Result<(), SinkError> {
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        let path = active.path().to_path_buf();
        let started = active.started();
        // During a config reload two sinks may share a path; if the other one already
        // moved our file aside, it has been rotated and only needs finishing.
        let still_at_path = active.is_at(&path);
        active
            .finish(self.fsync)
            .map_err(|e| io_error(&format!("finish {}", path.display()), &e))?;
        if still_at_path {
            self.move_aside(&path, started)?;
        }
        Ok(())
    }

    /// Renames `path` to a free rotated name for a file started at `started`, then
    /// applies retention.
    fn move_aside(&self, path: &Path, started: SystemTime) -> Result<(), SinkError> {
        let dir = self.layout.dir();
        let target = self
            .layout
            .next_rotated_path(started)
            .map_err(|e| io_error(&format!("list directory {}", dir.display()), &e))?;
        std::fs::rename(path, &target).map_err(|e| {
            io_error(
                &format!("rename {} to {}", path.display(), target.display()),
                &e,
            )
        })?;
        if self.fsync {
            sync_dir(dir)
                .map_err(|e| io_error(&format!("sync directory {}", dir.display()), &e))?;
        }
        tracing::info!(sink = %self.sink, from = %path.display(), to = %target.display(), "rotated file");
        // Retention failing must not fail the batch: the spans are safely written.
        match self.layout.enforce_retention(self.policy.max_files) {
            Ok(deleted) => {
                for old in deleted {
                    tracing::info!(sink = %self.sink, path = %old.display(), "deleted rotated file beyond max_files");
                }
            }
            Err(e) => {
                tracing::warn!(sink = %self.sink, dir = %self.layout.dir().display(), error = %e, "could not apply max_files retention")
            }
        }
        Ok(())
    }

    /// Finishes the active file in place (gzip trailer, flush, fsync).
    fn close(&mut self) -> Result<(), SinkError> {
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        let path = active.path().display().to_string();
        active
            .finish(self.fsync)
            .map_err(|e| io_error(&format!("finish {path}"), &e))
    }
}

#[async_trait]
impl BuildSink for FileSink {
    type Config = FileSinkConfig;

    async fn build(config: &FileSinkConfig, context: &SinkContext<'_>) -> Result<Self, BuildError> {
        FileSink::new(context.name, config)
    }
}

#[cfg(test)]
mod tests;
