//! The bounded queue in front of each sink ([`SpanQueue`]): in memory ([`MemoryQueue`]),
//! or on disk ([`DurableQueue`]) so that accepted spans survive a crash or a restart.
//! Not batching or delivery: the worker pops, exports and commits.
//!
//! Entries have ids, and the consumer `commit`s an entry only once it was delivered,
//! handed to a fallback or given up, so a durable queue forgets it then, and replays what
//! was never committed after a crash. With `acknowledgements: delivered` an entry also
//! carries its request's [`Completion`] to the consumer; entries replayed at start have
//! none (no client is waiting for them).

pub mod durable;
pub mod memory;
mod wait_for_room;

pub use durable::{DurableQueue, QueueStorageError};
pub use memory::MemoryQueue;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use spansink_config::QueueConfig;

use super::Refusal;
use super::acknowledgement::{AckRequest, Completion};
use crate::otlp::TraceData;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::SinkReasonLabels;

/// How long a refused client is asked to wait. A queue drains in about a batch's export
/// time; one second is long enough not to hammer a full queue and short enough to keep
/// latency low. (OTLP clients add their own backoff on top.)
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Identifies one pushed request within its queue, in push order.
pub type EntryId = u64;

/// One request taken from a queue, to be committed once the consumer is done with it.
#[derive(Debug)]
pub struct QueueEntry {
    pub id: EntryId,
    pub data: TraceData,
    /// The waiting client's share, to resolve once committed (`delivered` mode only).
    pub completion: Option<Completion>,
}

/// A request on its way into a queue, with the completion it carries, if any.
#[derive(Debug)]
pub(crate) struct Arrival {
    pub data: TraceData,
    pub completion: Option<Completion>,
}

/// A sink's queue: bounded, closable, with at-least-once hand-over to its consumer.
///
/// Implementations count `sink_received_spans` for what they admit and keep the
/// `sink_queue_*` gauges current.
#[async_trait]
pub trait SpanQueue: Send + Sync {
    /// Adds a request, or refuses it whole (according to the queue's `when_full`).
    async fn push(&self, data: TraceData) -> Result<(), Refusal> {
        self.push_acked(data, AckRequest::Received).await
    }

    /// Adds a request as `push` does, and does what `ack` asks: fsync it before returning
    /// (`Persisted`, durable queues), or carry its completion to the consumer
    /// (`Delivered`). A refused request's completion is dropped (resolved as lost).
    async fn push_acked(&self, data: TraceData, ack: AckRequest) -> Result<(), Refusal>;

    /// The oldest entry not yet handed out, waiting for one if the queue is empty.
    /// `None` once the queue is closed and nothing is left. Cancel-safe: dropping the
    /// future loses nothing.
    async fn pop(&self) -> Option<QueueEntry>;

    /// The consumer is done with entry `id` (delivered, handed on, or given up). Until
    /// then the entry counts as pending. Entries may be committed in any order.
    async fn commit(&self, id: EntryId);

    /// Refuses further pushes (`Refusal::ShuttingDown`, also for pushes waiting for
    /// room); `pop` still hands out what is left, then returns `None`.
    fn close(&self);

    /// Spans pushed and not yet committed (queued or in the consumer's hands).
    fn pending_spans(&self) -> usize;

    /// The consumer stopped for good (shutdown deadline): forgets every pending entry and
    /// returns how many spans are thereby lost. A durable queue keeps them for the next
    /// start and returns 0.
    fn abandon(&self) -> usize;
}

/// Opens sink `sink`'s queue as its config says: on disk when `durable` is set (replaying
/// what a previous run left undelivered), in memory otherwise.
pub fn open(
    sink: &str,
    config: &QueueConfig,
    metrics: &Metrics,
) -> Result<Arc<dyn SpanQueue>, QueueStorageError> {
    Ok(match &config.durable {
        Some(durable) => Arc::new(DurableQueue::open(sink, config, durable, metrics)?),
        None => Arc::new(MemoryQueue::new(sink, config, metrics)),
    })
}

/// This queue's series, resolved once: pushes are per request and should not look up
/// label sets each time.
pub(crate) struct QueueMetrics {
    spans: Gauge,
    bytes: Gauge,
    received: Counter,
    dropped_oldest: Counter,
}

impl QueueMetrics {
    pub(crate) fn new(sink: &str, capacity_spans: usize, metrics: &Metrics) -> Self {
        let labels = metrics.sink(sink);
        metrics
            .sink_queue_capacity_spans
            .get_or_create(&labels)
            .set(gauge_value(capacity_spans));
        Self {
            spans: metrics.sink_queue_spans.get_or_create(&labels).clone(),
            bytes: metrics.sink_queue_bytes.get_or_create(&labels).clone(),
            received: metrics.sink_received_spans.get_or_create(&labels).clone(),
            dropped_oldest: metrics
                .sink_dropped_spans
                .get_or_create(&SinkReasonLabels {
                    sink: sink.to_string(),
                    reason: "queue_full",
                })
                .clone(),
        }
    }

    /// Gauges move by deltas, not `set`, so two generations of a sink's queue (old one
    /// draining during a reload, new one filling) add up instead of overwriting.
    pub(crate) fn add(&self, spans: usize, bytes: usize) {
        self.spans.inc_by(gauge_value(spans));
        self.bytes.inc_by(gauge_value(bytes));
    }

    pub(crate) fn remove(&self, spans: usize, bytes: usize) {
        self.spans.dec_by(gauge_value(spans));
        self.bytes.dec_by(gauge_value(bytes));
    }

    pub(crate) fn received(&self, spans: usize) {
        self.received.inc_by(spans as u64);
    }

    pub(crate) fn dropped_oldest(&self, spans: usize) {
        self.dropped_oldest.inc_by(spans as u64);
    }
}

pub(crate) fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
