//! One named sink: the backend it writes to and the policies wrapped around it.
//! Backend settings are listed here as optional fields of which exactly one is set
//! (the Kubernetes "one-of" idiom, which keeps the CRD schema structural).
//!
//! Each backend's settings and their validation live in `sink/<backend>.rs`; the
//! [`backends!`] list below is the one place a backend is registered: it declares the
//! module, the `SinkConfig` field, the [`Backend`] variant and the name, in one line.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::{BatchConfig, FilterConfig, QueueConfig, RateLimitConfig, RetryConfig};
use crate::transform::TransformConfig;
use crate::units::Duration;
use crate::validate::{BackendAt, ValidateBackend, Validator};

/// Declares the backends: for each, its module (`sink/<field>.rs`, whose public items are
/// re-exported), the optional `SinkConfig` field (documented by the doc comment, which
/// becomes the CRD's description), the [`Backend`] variant and its name. A macro because
/// the field list, the enum and the names must agree, and a hand-kept copy drifted.
macro_rules! backends {
    ($( $(#[doc = $doc:literal])* $field:ident: $config:ident => $variant:ident, )+) => {
        $( mod $field; pub use self::$field::*; )+

        /// A sink: exactly one backend (`file`, `stdout`, `blackhole`, `otlp`, `kafka`, `s3`, ...)
        /// plus its policies.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct SinkConfig {
            $(
                $(#[doc = $doc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$config>,
            )+

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
                    $( $field: None, )+
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

        /// The backend of a sink, borrowed from its config: what the exporter's builder
        /// matches on, one arm per backend.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub enum Backend<'a> {
            $( $variant(&'a $config), )+
        }

        impl Backend<'_> {
            /// The backend's field name in `SinkConfig`, e.g. `kafka`.
            pub fn name(&self) -> &'static str {
                match self {
                    $( Backend::$variant(_) => stringify!($field), )+
                }
            }

            pub(crate) fn validate(&self, v: &mut Validator, at: &BackendAt<'_>) {
                match self {
                    $( Backend::$variant(config) => config.validate(v, at), )+
                }
            }
        }

        impl SinkConfig {
            /// The backends that are set, in declaration order (exactly one in a valid
            /// config).
            pub fn backends(&self) -> Vec<Backend<'_>> {
                let mut set = Vec::with_capacity(1);
                $( if let Some(config) = &self.$field { set.push(Backend::$variant(config)); } )+
                set
            }
        }

        /// The backend field names of [`SinkConfig`], in declaration order.
        pub const BACKENDS: &[&str] = &[ $( stringify!($field), )+ ];
    };
}

backends! {
    /// Write spans to local files (JSON Lines or CSV), with rotation.
    file: FileSinkConfig => File,
    /// Print spans to standard output, for debugging.
    stdout: StdoutSinkConfig => Stdout,
    /// Accept and discard spans (counted). For benchmarks and for muting a pipeline.
    blackhole: BlackholeSinkConfig => Blackhole,
    /// Forward spans to another OTLP/gRPC endpoint (a Collector, Jaeger, Tempo, ...).
    otlp: OtlpSinkConfig => Otlp,
    /// Produce spans to a Kafka topic, keyed by trace id.
    kafka: KafkaSinkConfig => Kafka,
    /// Write each batch as one object to an S3 (or S3-compatible) bucket.
    s3: S3SinkConfig => S3,
    /// Index spans as documents into Elasticsearch or OpenSearch through the Bulk API.
    elasticsearch: ElasticsearchSinkConfig => Elasticsearch,
    /// Write spans to Redis: one stream entry per span, or a list per trace with a TTL.
    redis: RedisSinkConfig => Redis,
    /// Write spans as rows of a PostgreSQL table (typed columns, JSONB attributes).
    postgres: PostgresSinkConfig => Postgres,
    /// Insert spans as rows of a ClickHouse table, one INSERT per batch.
    clickhouse: ClickHouseSinkConfig => ClickHouse,
    /// Publish spans to a RabbitMQ exchange, with publisher confirms.
    rabbitmq: RabbitMqSinkConfig => RabbitMq,
}

impl SinkConfig {
    fn default_timeout() -> Duration {
        Duration::from_secs(30)
    }

    /// The backends that are set, by their field name.
    pub fn backend_names(&self) -> Vec<&'static str> {
        self.backends().iter().map(Backend::name).collect()
    }
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
