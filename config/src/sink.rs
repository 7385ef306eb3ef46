//! One named sink: the backend it writes to and the policies wrapped around it.
//! Backend settings are listed here as optional fields of which exactly one is set
//! (the Kubernetes "one-of" idiom, which keeps the CRD schema structural).

mod clickhouse;
mod elasticsearch;
mod kafka;
mod postgres;
mod rabbitmq;
mod redis;
mod s3;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::{BatchConfig, FilterConfig, QueueConfig, RateLimitConfig, RetryConfig};
use crate::transform::TransformConfig;
use crate::units::{ByteSize, Duration};

pub use clickhouse::{ClickHouseCompression, ClickHouseSinkConfig};
pub use elasticsearch::{ElasticsearchCompression, ElasticsearchSinkConfig};
pub use kafka::{
    KafkaAcks, KafkaCompression, KafkaEncoding, KafkaSaslConfig, KafkaSinkConfig, KafkaTlsConfig,
    SaslMechanism,
};
pub use postgres::{PostgresSinkConfig, PostgresTlsMode};
pub use rabbitmq::{
    RabbitMqEncoding, RabbitMqExchangeDeclaration, RabbitMqExchangeType, RabbitMqSinkConfig,
    RabbitMqTlsConfig,
};
pub use redis::{RedisSinkConfig, RedisStreamConfig, RedisTlsConfig, RedisTraceConfig};
pub use s3::{S3Compression, S3Encoding, S3SinkConfig, S3StorageClass};

/// A sink: exactly one backend (`file`, `stdout`, `blackhole`, `otlp`, `kafka`, `s3`, ...)
/// plus its policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Write spans to local files (JSON Lines or CSV), with rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSinkConfig>,
    /// Print spans to standard output, for debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<StdoutSinkConfig>,
    /// Accept and discard spans (counted). For benchmarks and for muting a pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blackhole: Option<BlackholeSinkConfig>,
    /// Forward spans to another OTLP/gRPC endpoint (a Collector, Jaeger, Tempo, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpSinkConfig>,
    /// Produce spans to a Kafka topic, keyed by trace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSinkConfig>,
    /// Write each batch as one object to an S3 (or S3-compatible) bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3SinkConfig>,
    /// Index spans as documents into Elasticsearch or OpenSearch through the Bulk API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elasticsearch: Option<ElasticsearchSinkConfig>,
    /// Write spans to Redis: one stream entry per span, or a list per trace with a TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSinkConfig>,
    /// Write spans as rows of a PostgreSQL table (typed columns, JSONB attributes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSinkConfig>,
    /// Insert spans as rows of a ClickHouse table, one INSERT per batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clickhouse: Option<ClickHouseSinkConfig>,
    /// Publish spans to a RabbitMQ exchange, with publisher confirms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq: Option<RabbitMqSinkConfig>,

    /// Bounded queue in front of this sink.
    #[serde(default)]
    pub queue: QueueConfig,
    /// How spans are grouped into export calls.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Longest a single export call may take before it is abandoned (and retried, when
    /// retries remain). Default: `30s`.
    #[serde(default = "SinkConfig::default_timeout")]
    pub timeout: Duration,
    /// Retries of transient failures.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Rate and concurrency limits.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Which spans this sink takes. Unset: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterConfig>,
    /// Attribute rules (set, rename, hash, redact, truncate, ...) applied to the spans
    /// this sink takes, after `filter`. Unset: spans are written as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<TransformConfig>,
    /// Name of another sink that receives the batches this sink could not deliver
    /// (after its retries, or at once for permanent errors), e.g. a file or S3
    /// dead-letter sink. Unset: such batches are counted as failed and logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// When `true`, receivers do not send spans to this sink: it only receives the
    /// batches other sinks hand over through `fallback`. Default: `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fallback_only: bool,
}

impl Default for SinkConfig {
    /// No backend, default policies: the starting point for building a sink in code.
    fn default() -> Self {
        Self {
            file: None,
            stdout: None,
            blackhole: None,
            otlp: None,
            kafka: None,
            s3: None,
            elasticsearch: None,
            redis: None,
            postgres: None,
            clickhouse: None,
            rabbitmq: None,
            queue: QueueConfig::default(),
            batch: BatchConfig::default(),
            timeout: Self::default_timeout(),
            retry: RetryConfig::default(),
            rate_limit: RateLimitConfig::default(),
            filter: None,
            transform: None,
            fallback: None,
            fallback_only: false,
        }
    }
}

impl SinkConfig {
    fn default_timeout() -> Duration {
        Duration::from_secs(30)
    }

    /// The backends that are set, by their field name.
    pub fn backend_names(&self) -> Vec<&'static str> {
        let set = [
            self.file.is_some(),
            self.stdout.is_some(),
            self.blackhole.is_some(),
            self.otlp.is_some(),
            self.kafka.is_some(),
            self.s3.is_some(),
            self.elasticsearch.is_some(),
            self.redis.is_some(),
            self.postgres.is_some(),
            self.clickhouse.is_some(),
            self.rabbitmq.is_some(),
        ];
        BACKENDS
            .iter()
            .zip(set)
            .filter(|(_, on)| *on)
            .map(|(name, _)| *name)
            .collect()
    }
}

/// The backend field names of [`SinkConfig`], in declaration order.
pub const BACKENDS: &[&str] = &[
    "file",
    "stdout",
    "blackhole",
    "otlp",
    "kafka",
    "s3",
    "elasticsearch",
    "redis",
    "postgres",
    "clickhouse",
    "rabbitmq",
];

/// Files of spans on local disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Path of the active file, e.g. `./spans/spans.jsonl`. Relative paths are relative
    /// to the exporter's working directory; missing directories are created. Rotated
    /// files are renamed to `<stem>-<UTC time>-<n>.<ext>` beside it.
    pub path: String,
    /// Line format. Default: `jsonl`.
    #[serde(default)]
    pub format: FileFormat,
    /// Compression of the written files. Default: `none`.
    #[serde(default)]
    pub compression: Compression,
    /// When the active file is closed and a new one started.
    #[serde(default)]
    pub rotation: RotationConfig,
    /// Size of the in-memory write buffer. Default: `256KiB`.
    // Not nullable in the CRD: kube marks int-or-string fields nullable, but `null` here
    // would not deserialize, and one such object would break the operator's watch.
    #[schemars(extend("nullable" = false))]
    #[serde(default = "FileSinkConfig::default_buffer_size")]
    pub buffer_size: ByteSize,
    /// Whether each batch is fsync'ed to disk before it counts as delivered (safer, slower).
    /// Batches are always flushed to the operating system. Default: `false`.
    #[serde(default)]
    pub fsync: bool,
}

impl FileSinkConfig {
    fn default_buffer_size() -> ByteSize {
        ByteSize::kib(256)
    }
}

/// Line format of the file sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// One JSON object per span per line, with typed attribute values.
    #[default]
    Jsonl,
    /// One row per span with a header line; nested values (attributes, events, links,
    /// resource) are JSON text in their column.
    Csv,
}

/// Compression of written data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Plain text.
    #[default]
    None,
    /// gzip: each file is one gzip stream, finished when the file is rotated or the
    /// exporter stops (a crash leaves a truncated but readable prefix).
    Gzip,
}

/// File rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// Rotate when the active file reaches this size (bytes written, after
    /// compression). Default: `100MiB`; `null` turns size rotation off.
    // Serialized even when unset: skipping `null` would read back as the 100MiB default,
    // so a config written by the operator would rotate where its SpanSink said not to.
    #[serde(default = "RotationConfig::default_max_size")]
    pub max_size: Option<ByteSize>,
    /// Rotate when the active file is this old. Unset: no age limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// Rotated files kept beside the active one; the oldest are deleted. `0` keeps all.
    /// Default: `10`.
    #[serde(default = "RotationConfig::default_max_files")]
    pub max_files: u32,
}

impl RotationConfig {
    fn default_max_size() -> Option<ByteSize> {
        Some(ByteSize::mib(100))
    }
    fn default_max_files() -> u32 {
        10
    }
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self {
            max_size: Self::default_max_size(),
            max_age: None,
            max_files: Self::default_max_files(),
        }
    }
}

/// Standard output, for debugging.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// `jsonl`: every span in full; `summary`: one short line per span. Default: `summary`.
    #[serde(default)]
    pub format: StdoutFormat,
}

/// Output of the stdout sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StdoutFormat {
    /// `trace_id span_id service name duration status`, one line per span.
    #[default]
    Summary,
    /// The same JSON object per span as the file sink writes.
    Jsonl,
}

/// Discards everything (after the receiver validated it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlackholeSinkConfig {}

/// Another OTLP/gRPC endpoint. Requests are forwarded as received, without decoding
/// and re-encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpSinkConfig {
    /// URL of the OTLP/gRPC endpoint, e.g. `http://otel-collector:4317`.
    pub endpoint: String,
    /// Extra gRPC metadata sent with every request, e.g. an authorization header.
    /// Values of the form `${env:NAME}` are read from the environment at start, so
    /// tokens can come from a Secret through `envFrom`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request compression. Default: `gzip`.
    #[serde(default = "OtlpSinkConfig::default_compression")]
    pub compression: Compression,
}

impl OtlpSinkConfig {
    fn default_compression() -> Compression {
        Compression::Gzip
    }
}
