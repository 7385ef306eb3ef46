//! [`DurableQueue`]: a sink's queue on disk, so that accepted spans survive a crash, an
//! OOM kill or a restart and are delivered after it, at least once.
//!
//! Layout of a queue directory (one per sink):
//! - `lock`: held (advisory `flock`) while a process uses the directory;
//! - `queue.meta`: the sink the directory belongs to;
//! - `<first id>.seg`: segments, append-only logs of the requests as received, each
//!   record framed with its length and a CRC32C (`record`);
//! - `<first id>.ack`: beside each segment, the ids of its committed entries; a segment
//!   and its ack file are deleted once every entry in it is committed (`segment`).
//!
//! Why not a crate: the segment-log and disk-queue crates we looked at either keep one
//! read cursor (no out-of-order commits, which concurrent exports need), or frame
//! records their own way without a checksum, or hold the backlog's index in memory. The
//! format here is small and fully tested; CRC32C is the `crc32c` crate (hardware
//! accelerated).
//!
//! One directory is one [`Store`](store::Store) per process: when a reload builds a new
//! chain while the old one drains, both chains' queues for the sink are generations of
//! the same store. The old one hands out only what it was given before it closed; what
//! it still had in flight when abandoned is handed out again by the new one.

pub(crate) mod record;
mod recovery;
mod segment;
mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use async_trait::async_trait;
use spansink_config::{DurableQueueConfig, QueueConfig};

use super::{EntryId, QueueEntry, QueueMetrics, SpanQueue};
use crate::chain::Refusal;
use crate::chain::acknowledgement::AckRequest;
use crate::otlp::TraceData;
use crate::telemetry::Metrics;
use store::{DiskMetrics, Settings, Store};

/// A queue directory that cannot be used. The exporter does not start (or the reload is
/// refused) with it, rather than accept spans it cannot keep.
#[derive(Debug, thiserror::Error)]
pub enum QueueStorageError {
    #[error(
        "cannot use queue directory {}: {source}; check that its volume is mounted and writable by the exporter's user",
        path.display()
    )]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "queue directory {} is in use by another exporter process; give each exporter its own volume",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error(
        "queue directory {} holds the queue of sink {owner:?}, not of {sink:?}; give each sink its own directory (queue.durable.path), or move the old one away to discard it",
        path.display()
    )]
    OtherSink {
        path: PathBuf,
        owner: String,
        sink: String,
    },
    #[error("cannot read the queue in {}: {source}", path.display())]
    Recovery {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The stores open in this process, by directory.
static OPEN: Mutex<Vec<(PathBuf, Weak<Store>)>> = Mutex::new(Vec::new());

/// One generation's handle on a sink's durable queue.
pub struct DurableQueue {
    store: Arc<Store>,
    generation: u64,
}

impl DurableQueue {
    /// Opens (or joins, within this process) sink `sink`'s queue directory and replays
    /// what a previous run left undelivered.
    pub fn open(
        sink: &str,
        queue: &QueueConfig,
        durable: &DurableQueueConfig,
        metrics: &Metrics,
    ) -> Result<Self, QueueStorageError> {
        let settings = Settings {
            max_disk_bytes: durable.max_bytes.bytes(),
            segment_bytes: Settings::segment_bytes_for(durable.max_bytes.bytes()),
            memory_spans: usize::try_from(queue.max_spans).unwrap_or(usize::MAX),
            memory_bytes: queue.max_bytes.as_usize(),
            when_full: queue.when_full,
            block_timeout: queue.block_timeout.get(),
            fsync: durable.fsync,
            fsync_interval: durable.fsync_interval.get(),
        };
        let store = shared_store(sink, &durable.directory(sink), &settings, metrics)?;
        let (generation, start_interval) = store.join(settings);
        if start_interval {
            spawn_interval_sync(&store);
        }
        Ok(Self { store, generation })
    }

    /// Spans pushed and not yet handed out.
    #[cfg(test)]
    pub(crate) fn unread_spans(&self) -> usize {
        self.store.unread_spans()
    }
}

fn shared_store(
    sink: &str,
    dir: &Path,
    settings: &Settings,
    metrics: &Metrics,
) -> Result<Arc<Store>, QueueStorageError> {
    let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    open.retain(|(_, store)| store.strong_count() > 0);
    // The same directory named two ways (a symlink, `..`) is still one queue.
    let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if let Some(store) = open
        .iter()
        .find(|(path, _)| *path == key)
        .and_then(|(_, store)| store.upgrade())
    {
        if store.sink != sink {
            return Err(QueueStorageError::OtherSink {
                path: dir.to_path_buf(),
                owner: store.sink.clone(),
                sink: sink.to_string(),
            });
        }
        return Ok(store);
    }
    let recovered = recovery::open(sink, dir, settings.clone())?;
    let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let memory_spans = settings.memory_spans;
    let disk = DiskMetrics::new(sink, metrics);
    let replayed = recovered.state.unread_spans;
    disk.replayed.inc_by(replayed as u64);
    disk.corrupt.inc_by(recovered.corrupt_records);
    if replayed > 0 || recovered.corrupt_records > 0 {
        tracing::info!(sink = %sink, dir = %dir.display(), spans = replayed,
            segments = recovered.state.segments.len(), corrupt_records = recovered.corrupt_records,
            deleted_segments = recovered.segments_deleted,
            "durable queue recovered: undelivered spans will be delivered");
    }
    let store = Arc::new(Store::new(
        sink,
        dir.to_path_buf(),
        recovered.state,
        recovered.lock,
        QueueMetrics::new(sink, memory_spans, metrics),
        disk,
    ));
    open.push((key, Arc::downgrade(&store)));
    Ok(store)
}

/// `fsync: interval`: one round per interval while the store lives and keeps the policy.
fn spawn_interval_sync(store: &Arc<Store>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // Built outside a runtime (a config check): nothing is pushed there either.
        store.interval_task_ended();
        return;
    };
    let weak = Arc::downgrade(store);
    runtime.spawn(async move {
        while let Some(interval) = weak.upgrade().and_then(|s| s.fsync_interval()) {
            tokio::time::sleep(interval).await;
            let Some(store) = weak.upgrade() else { break };
            if let Err(e) = store.sync_all().await {
                store.record_fsync_error(&e);
            }
        }
        if let Some(store) = weak.upgrade() {
            store.interval_task_ended();
        }
    });
}

#[async_trait]
impl SpanQueue for DurableQueue {
    async fn push_acked(&self, data: TraceData, ack: AckRequest) -> Result<(), Refusal> {
        self.store.push(self.generation, data, ack).await
    }

    async fn pop(&self) -> Option<QueueEntry> {
        self.store.pop(self.generation).await
    }

    async fn commit(&self, id: EntryId) {
        self.store.commit(id);
    }

    fn close(&self) {
        self.store.close(self.generation);
    }

    fn pending_spans(&self) -> usize {
        self.store.pending_spans()
    }

    /// Keeps everything on disk: nothing is lost, it is delivered by the next generation
    /// or after the next start.
    fn abandon(&self) -> usize {
        self.store.abandon(self.generation);
        0
    }
}

impl Drop for DurableQueue {
    fn drop(&mut self) {
        self.store.leave(self.generation);
    }
}

#[cfg(test)]
mod tests;
