//! The sink chain: everything between a receiver and a backend. Spans admitted by the
//! receivers fan out, through each sink's filter and transform, to its bounded queue; a
//! per-sink worker forms batches and calls the sink through its policy layers (rate
//! limit, timeout, retry, fallback).
//! Each policy is one small type in its own file that wraps a [`SharedSink`] and knows
//! nothing of the others; the order is decided in one place, the chain builder.
//! The chain the receivers admit into is [`LiveChain`]; a reload swaps the generation
//! underneath it, keeping the sinks that did not change.

pub mod acknowledgement;
pub mod assemble;
pub mod batch;
pub mod builder;
pub mod fallback;
pub mod fanout;
pub mod filter;
pub mod live;
pub mod monitor;
pub mod queue;
pub mod rate_limit;
pub mod retry;
pub mod runtime;
#[cfg(test)]
pub(crate) mod test_sinks;
pub mod timeout;
pub mod transform;
pub mod worker;

pub use acknowledgement::{AckRequest, Completion, Tracker, Undelivered};
pub use assemble::{ChainFactory, SinkChains, assemble, build_chain};
pub use batch::{Batcher, ReadyBatch};
pub use builder::{Chain, DrainReport};
pub use fallback::Fallback;
pub use fanout::{FanOut, SinkInput};
pub use filter::{Filtered, SpanFilter};
pub use live::LiveChain;
pub use monitor::Monitor;
pub use queue::{DurableQueue, EntryId, MemoryQueue, QueueEntry, SpanQueue};
pub use rate_limit::RateLimit;
pub use retry::Retry;
pub use timeout::Timeout;
pub use transform::{SpanTransform, TransformError};
pub use worker::Worker;

use std::time::Duration;

use async_trait::async_trait;

use crate::otlp::TraceData;
#[allow(unused_imports)]
use crate::sinks::SharedSink;

/// The receivers' view of the chain: hand over a request, learn whether it was taken.
/// Implemented by the running chain (and swapped underneath on reload); receivers hold an
/// `Arc<dyn Admit>` and never see queues or sinks.
#[async_trait]
pub trait Admit: Send + Sync {
    async fn admit(&self, data: TraceData) -> Result<Admission, Refusal>;
}

/// The request was taken. Some spans may have been refused by a filter configured with
/// `on_filtered: reject`; the client learns it through OTLP `partial_success`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    pub rejected_spans: usize,
    /// Why spans were rejected, for `partial_success.error_message`.
    pub message: Option<String>,
}

/// The request did not succeed. Either it was not taken (nothing of it was kept by the
/// sink that refused it; the client should retry after `retry_after`), or, with
/// `receivers.acknowledgements: delivered`, it was taken but not delivered in time or at
/// all (the variants say whether a retry can help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A queue with `when_full: reject` is full (gRPC RESOURCE_EXHAUSTED, HTTP 429).
    #[error("sink {sink:?} queue is full; retry later")]
    QueueFull { sink: String, retry_after: Duration },
    /// A queue with `when_full: block` stayed full for `block_timeout`
    /// (gRPC UNAVAILABLE, HTTP 503).
    #[error("sink {sink:?} queue stayed full; retry later")]
    Backpressure { sink: String, retry_after: Duration },
    /// The exporter is stopping (gRPC UNAVAILABLE, HTTP 503).
    #[error("exporter is shutting down; retry against another replica")]
    ShuttingDown { retry_after: Duration },
    /// A durable queue could not store the request (a full or failing disk); nothing of
    /// it is counted as accepted (gRPC UNAVAILABLE, HTTP 503).
    #[error("sink {sink:?} queue cannot store the request ({message}); retry later")]
    Storage {
        sink: String,
        message: String,
        retry_after: Duration,
    },
    /// `delivered`: a sink still failed after its retries, or dropped the spans before
    /// delivering them (gRPC UNAVAILABLE, HTTP 503).
    #[error("sink {sink:?} did not deliver the spans: {message}; retry later")]
    NotDelivered {
        sink: String,
        message: String,
        retry_after: Duration,
    },
    /// `delivered`: a sink's backend refused the spans for good (gRPC INVALID_ARGUMENT,
    /// HTTP 400). Sending the same spans again will not help.
    #[error("sink {sink:?} rejected the spans: {message}")]
    Rejected { sink: String, message: String },
    /// `delivered`: not every sink committed within `receivers.acknowledgement_timeout`
    /// (gRPC UNAVAILABLE, HTTP 503). The spans stay queued and are still delivered.
    #[error(
        "spans not delivered by every sink within {} ms (receivers.acknowledgement_timeout); \
         they stay queued and will still be delivered, so a retry may deliver them twice",
        timeout.as_millis()
    )]
    AcknowledgementTimeout {
        timeout: Duration,
        retry_after: Duration,
    },
}

impl Refusal {
    /// How long the client should wait before retrying; `None` when retrying cannot help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::QueueFull { retry_after, .. }
            | Self::Backpressure { retry_after, .. }
            | Self::ShuttingDown { retry_after }
            | Self::Storage { retry_after, .. }
            | Self::NotDelivered { retry_after, .. }
            | Self::AcknowledgementTimeout { retry_after, .. } => Some(*retry_after),
            Self::Rejected { .. } => None,
        }
    }

    /// Whether the exporter lacked room or time to take the request (as opposed to a
    /// sink failing to deliver it).
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            Self::QueueFull { .. }
                | Self::Backpressure { .. }
                | Self::ShuttingDown { .. }
                | Self::Storage { .. }
        )
    }

    /// The refusal a client gets for spans a sink did not deliver.
    pub fn undelivered(undelivered: Undelivered, retry_after: Duration) -> Self {
        match undelivered {
            Undelivered::Permanent { sink, message } => Self::Rejected { sink, message },
            Undelivered::Transient { sink, message } => Self::NotDelivered {
                sink,
                message,
                retry_after,
            },
            Undelivered::Lost { sink } => Self::NotDelivered {
                sink,
                message: "dropped before delivery (evicted from a full queue, refused by the \
                          fallback's queue, or given up at shutdown)"
                    .into(),
                retry_after,
            },
        }
    }

    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::QueueFull { .. } => "queue_full",
            Self::Backpressure { .. } => "backpressure",
            Self::ShuttingDown { .. } => "shutting_down",
            Self::Storage { .. } => "queue_storage",
            Self::NotDelivered { .. } => "not_delivered",
            Self::Rejected { .. } => "rejected_by_sink",
            Self::AcknowledgementTimeout { .. } => "acknowledgement_timeout",
        }
    }
}
