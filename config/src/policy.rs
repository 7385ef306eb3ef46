//! The policies wrapped around every sink: queue, batch, retry, rate limit, filter.
//! Only their settings live here; the exporter's `chain` module implements them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Duration};

/// The bounded queue between the receivers and a sink. Each sink has its own, so a slow
/// sink never stalls the others beyond its own queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Most spans held waiting for export. Default: `2048`. A single request larger than
    /// the whole queue is still admitted when the queue is empty.
    #[serde(default = "QueueConfig::default_max_spans")]
    pub max_spans: u64,
    /// Most encoded bytes held waiting for export. Default: `64MiB`.
    // Not nullable in the CRD: kube marks int-or-string fields nullable, but `null` here
    // would not deserialize, and one such object would break the operator's watch.
    #[schemars(extend("nullable" = false))]
    #[serde(default = "QueueConfig::default_max_bytes")]
    pub max_bytes: ByteSize,
    /// What happens to a request when the queue is full. Default: `block`.
    #[serde(default)]
    pub when_full: WhenFull,
    /// With `when_full: block`, the longest a request waits for room before the client
    /// is told to retry later. Default: `5s`.
    #[serde(default = "QueueConfig::default_block_timeout")]
    pub block_timeout: Duration,
    /// Keeps the queue on disk, so that spans accepted but not yet delivered survive a
    /// crash, an OOM kill or a restart, and are delivered after it (at least once).
    /// Without it the queue is in memory only. With it, `max_spans` and `max_bytes` bound
    /// what is also held in memory for fast hand-over; the backlog beyond that is read
    /// back from disk, and `durable.max_bytes` bounds the disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable: Option<DurableQueueConfig>,
}

impl QueueConfig {
    fn default_max_spans() -> u64 {
        2048
    }
    fn default_max_bytes() -> ByteSize {
        ByteSize::mib(64)
    }
    fn default_block_timeout() -> Duration {
        Duration::from_secs(5)
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_spans: Self::default_max_spans(),
            max_bytes: Self::default_max_bytes(),
            when_full: WhenFull::default(),
            block_timeout: Self::default_block_timeout(),
            durable: None,
        }
    }
}

/// Where and how a sink's queue is kept on disk: an append-only log of the requests as
/// received, each record checked by a CRC32C, with the delivered entries recorded beside
/// it. One directory per sink; two sinks (or two exporters) never share one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DurableQueueConfig {
    /// The sink's queue directory, created if missing. Default:
    /// `/var/lib/spansink/queue/<sink>` (the operator mounts the SpanSink's
    /// `queueVolume` at `/var/lib/spansink`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Most bytes the queue's files take on disk. When a request does not fit,
    /// `when_full` applies as for a memory queue. Default: `1GiB`.
    #[schemars(extend("nullable" = false))]
    #[serde(default = "DurableQueueConfig::default_max_bytes")]
    pub max_bytes: ByteSize,
    /// When written requests are forced to the storage device. Default: `batch`.
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// With `fsync: interval`, how often. Default: `100ms`.
    #[serde(default = "DurableQueueConfig::default_fsync_interval")]
    pub fsync_interval: Duration,
}

impl DurableQueueConfig {
    /// Where the queue of sink `sink` lives when `path` is not set.
    pub const DEFAULT_ROOT: &'static str = "/var/lib/spansink/queue";

    fn default_max_bytes() -> ByteSize {
        ByteSize::gib(1)
    }
    fn default_fsync_interval() -> Duration {
        Duration::from_millis(100)
    }

    /// The directory of sink `sink`'s queue.
    pub fn directory(&self, sink: &str) -> std::path::PathBuf {
        match &self.path {
            Some(path) => path.into(),
            None => std::path::Path::new(Self::DEFAULT_ROOT).join(sink),
        }
    }
}

impl Default for DurableQueueConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_bytes: Self::default_max_bytes(),
            fsync: FsyncPolicy::default(),
            fsync_interval: Self::default_fsync_interval(),
        }
    }
}

/// When a durable queue forces its writes to the storage device (`fsync`). Writes reach
/// the kernel at once in every mode, so a crash of the exporter alone (kill, OOM) loses
/// nothing; the modes differ on a crash of the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Before a request is acknowledged: concurrent requests share one fsync. Nothing
    /// acknowledged is lost even when the node fails.
    #[default]
    Batch,
    /// Every `fsync_interval`, in the background: a node failure can lose the last
    /// interval's requests.
    Interval,
    /// Never; the kernel writes back when it chooses (typically within 30 s).
    Never,
}

/// Behaviour of a full queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Hold the request until there is room (up to `block_timeout`), then answer the
    /// client with a retryable status (gRPC `UNAVAILABLE`, HTTP 503 + `Retry-After`).
    /// Backpressure: nothing is lost, the client retries.
    #[default]
    Block,
    /// Refuse at once with a retryable status (gRPC `RESOURCE_EXHAUSTED`, HTTP 429 +
    /// `Retry-After`).
    Reject,
    /// Accept the request and drop the oldest queued spans to make room; counted in
    /// `spansink_sink_dropped_spans_total{reason="queue_full"}`.
    DropOldest,
}

/// How queued spans are grouped into export calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// A batch is sent once it holds this many spans. Default: `512`.
    #[serde(default = "BatchConfig::default_max_spans")]
    pub max_spans: u64,
    /// A batch is sent before it would exceed this many encoded bytes. Default: `8MiB`.
    // Not nullable in the CRD: kube marks int-or-string fields nullable, but `null` here
    // would not deserialize, and one such object would break the operator's watch.
    #[schemars(extend("nullable" = false))]
    #[serde(default = "BatchConfig::default_max_bytes")]
    pub max_bytes: ByteSize,
    /// A batch that is not full is sent this long after its first span arrived.
    /// Default: `5s`.
    #[serde(default = "BatchConfig::default_flush_interval")]
    pub flush_interval: Duration,
}

impl BatchConfig {
    fn default_max_spans() -> u64 {
        512
    }
    fn default_max_bytes() -> ByteSize {
        ByteSize::mib(8)
    }
    fn default_flush_interval() -> Duration {
        Duration::from_secs(5)
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_spans: Self::default_max_spans(),
            max_bytes: Self::default_max_bytes(),
            flush_interval: Self::default_flush_interval(),
        }
    }
}

/// Retries of failed export calls. Only errors the sink classifies as transient
/// (connection refused, timeout, throttling) are retried; permanent ones (schema
/// rejection, authorization) go straight to the fallback or are counted as failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Whether failed exports are retried at all. Default: `true`.
    #[serde(default = "crate::default_true")]
    pub enabled: bool,
    /// Most attempts per batch, the first one included (`1` = no retry). Default: `10`.
    #[serde(default = "RetryConfig::default_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry. Default: `1s`.
    #[serde(default = "RetryConfig::default_initial_backoff")]
    pub initial_backoff: Duration,
    /// Longest wait between two attempts. Default: `30s`.
    #[serde(default = "RetryConfig::default_max_backoff")]
    pub max_backoff: Duration,
    /// Factor applied to the wait after each retry. Default: `2.0`.
    #[serde(default = "RetryConfig::default_multiplier")]
    pub multiplier: f64,
    /// Random spread of each wait, as a fraction of it (`0.2` = ±20%), so that many
    /// exporters do not retry in lockstep. Default: `0.2`.
    #[serde(default = "RetryConfig::default_jitter")]
    pub jitter: f64,
    /// Give up on a batch this long after its first attempt started, whatever
    /// `max_attempts` says. Default: `5m`.
    #[serde(default = "RetryConfig::default_max_elapsed")]
    pub max_elapsed: Duration,
}

impl RetryConfig {
    fn default_max_attempts() -> u32 {
        10
    }
    fn default_initial_backoff() -> Duration {
        Duration::from_secs(1)
    }
    fn default_max_backoff() -> Duration {
        Duration::from_secs(30)
    }
    fn default_multiplier() -> f64 {
        2.0
    }
    fn default_jitter() -> f64 {
        0.2
    }
    fn default_max_elapsed() -> Duration {
        Duration::from_secs(300)
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_attempts: Self::default_max_attempts(),
            initial_backoff: Self::default_initial_backoff(),
            max_backoff: Self::default_max_backoff(),
            multiplier: Self::default_multiplier(),
            jitter: Self::default_jitter(),
            max_elapsed: Self::default_max_elapsed(),
        }
    }
}

/// Limits on how fast a sink is written to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained rate in spans per second (token bucket). Unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans_per_second: Option<u64>,
    /// Spans that may be sent at once above the sustained rate (the bucket's size).
    /// Default: one second's worth (`spans_per_second`). Must be at least the batch's
    /// `max_spans`, or a full batch could never be sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Most export calls in flight at once for this sink. Default: `4`.
    #[serde(default = "RateLimitConfig::default_max_concurrent_exports")]
    pub max_concurrent_exports: u32,
}

impl RateLimitConfig {
    fn default_max_concurrent_exports() -> u32 {
        4
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            spans_per_second: None,
            burst: None,
            max_concurrent_exports: Self::default_max_concurrent_exports(),
        }
    }
}

/// Which spans a sink takes. A span is kept when it matches `include` (or `include` is
/// unset) and does not match `exclude`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Keep only spans matching this. Unset: keep all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<SpanMatch>,
    /// Leave out spans matching this. Unset: leave out none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<SpanMatch>,
    /// What the client is told about spans this filter leaves out. Default: `drop`.
    #[serde(default)]
    pub on_filtered: OnFiltered,
}

/// A span matches when every list that is set matches (lists that are empty are ignored);
/// a list matches when any of its entries does. Comparisons are exact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpanMatch {
    /// Resource attribute `service.name` is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// Span name is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub span_names: Vec<String>,
    /// Span (or resource) attribute equals one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeMatch>,
}

/// One attribute condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatch {
    /// Attribute key, e.g. `http.route`.
    pub key: String,
    /// Value to compare with, written as text (`"200"`, `"true"`, `"GET"`). Unset: the
    /// attribute only has to be present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// What happens to spans a filter leaves out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFiltered {
    /// Accept and discard them; counted in `spansink_sink_dropped_spans_total{reason="filtered"}`.
    #[default]
    Drop,
    /// Report them to the client as rejected in the OTLP `partial_success` answer.
    Reject,
}
