//! Every Prometheus metric the exporter reports, declared once with its help text.
//! Components get a clone of [`Metrics`] (cheap: families are reference-counted) and
//! record through it; nothing else registers metrics.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Which receiver a request came through.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Protocol {
    grpc,
    http,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::grpc => "grpc",
            Self::http => "http",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: Protocol,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub protocol: Protocol,
    /// `malformed`, `too_large`, `decompression`, `queue_full`, `filtered`, `shutting_down`, ...
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolResultLabels {
    pub protocol: Protocol,
    /// `success` or `failure`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcknowledgementLabels {
    /// `receivers.acknowledgements`: `persisted` or `delivered`.
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkReasonLabels {
    pub sink: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    pub sink: String,
    pub fallback: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub sink: String,
    /// `success`, `transient_error`, `permanent_error`, `timeout`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkOperationLabels {
    pub sink: String,
    /// `append`, `fsync`, `commit`, `delete`, `read`.
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransformLabels {
    pub sink: String,
    /// The rule's `name`, or its index in `transform.rules`.
    pub rule: String,
    /// `set`, `insert`, `update`, `delete`, `rename`, `hash`, `redact`, `truncate`,
    /// `drop_events`, `drop_links`.
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

/// Handles to all metric families. Clone freely.
#[derive(Clone)]
pub struct Metrics {
    pub receiver_accepted_spans: Family<ProtocolLabels, Counter>,
    pub receiver_refused_spans: Family<RefusedLabels, Counter>,
    pub receiver_requests: Family<RefusedLabels, Counter>,
    pub receiver_acknowledgement_wait: Family<AcknowledgementLabels, Histogram>,
    pub receiver_tls_reloads: Family<ProtocolResultLabels, Counter>,
    pub receiver_tls_certificate_expiry: Family<ProtocolLabels, Gauge>,
    pub receiver_tls_handshake_failures: Family<RefusedLabels, Counter>,
    pub receiver_auth_file_reloads: Family<ResultLabels, Counter>,

    pub sink_received_spans: Family<SinkLabels, Counter>,
    pub sink_sent_spans: Family<SinkLabels, Counter>,
    pub sink_failed_spans: Family<SinkReasonLabels, Counter>,
    pub sink_retried_spans: Family<SinkLabels, Counter>,
    pub sink_dropped_spans: Family<SinkReasonLabels, Counter>,
    pub sink_fallback_spans: Family<FallbackLabels, Counter>,
    pub sink_export_duration: Family<OutcomeLabels, Histogram>,
    pub sink_batch_spans: Family<SinkLabels, Histogram>,
    pub sink_queue_spans: Family<SinkLabels, Gauge>,
    pub sink_queue_bytes: Family<SinkLabels, Gauge>,
    pub sink_queue_capacity_spans: Family<SinkLabels, Gauge>,
    pub sink_inflight_exports: Family<SinkLabels, Gauge>,
    pub sink_rate_limit_wait_seconds: Family<SinkLabels, Counter<f64>>,
    pub sink_kept_spans: Family<SinkReasonLabels, Counter>,
    pub sink_draining_generations: Family<SinkLabels, Gauge>,

    pub queue_disk_bytes: Family<SinkLabels, Gauge>,
    pub queue_disk_segments: Family<SinkLabels, Gauge>,
    pub queue_fsync_duration: Family<SinkLabels, Histogram>,
    pub queue_replayed_spans: Family<SinkLabels, Counter>,
    pub queue_corrupt_records: Family<SinkLabels, Counter>,
    pub queue_storage_errors: Family<SinkOperationLabels, Counter>,

    pub transform_changes: Family<TransformLabels, Counter>,

    pub kafka_producer_queue_messages: Family<SinkLabels, Gauge>,
    pub kafka_producer_queue_bytes: Family<SinkLabels, Gauge>,
    pub kafka_request_retries: Family<SinkLabels, Counter>,
    pub kafka_transport_errors: Family<SinkLabels, Counter>,
    pub kafka_request_timeouts: Family<SinkLabels, Counter>,
    pub kafka_brokers_up: Family<SinkLabels, Gauge>,

    pub config_reloads: Family<ResultLabels, Counter>,
    pub build_info: Family<BuildLabels, Gauge>,
}

fn export_duration_histogram() -> Histogram {
    // 1 ms .. ~65 s: covers a blackhole call and a slow S3 multipart upload.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 17,
    ))
}

fn fsync_duration_histogram() -> Histogram {
    // 50 us .. ~3.3 s: a tmpfs, a local NVMe, a network volume having a bad day.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 17,
    ))
}

fn batch_size_histogram() -> Histogram {
    // 1 .. 32768 spans.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1.0, 2.0, 16,
    ))
}

impl Metrics {
    /// Creates the families and registers them, with their help text, in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            receiver_accepted_spans: Family::default(),
            receiver_refused_spans: Family::default(),
            receiver_requests: Family::default(),
            receiver_acknowledgement_wait: Family::new_with_constructor(export_duration_histogram),
            receiver_tls_reloads: Family::default(),
            receiver_tls_certificate_expiry: Family::default(),
            receiver_tls_handshake_failures: Family::default(),
            receiver_auth_file_reloads: Family::default(),
            sink_received_spans: Family::default(),
            sink_sent_spans: Family::default(),
            sink_failed_spans: Family::default(),
            sink_retried_spans: Family::default(),
            sink_dropped_spans: Family::default(),
            sink_fallback_spans: Family::default(),
            sink_export_duration: Family::new_with_constructor(export_duration_histogram),
            sink_batch_spans: Family::new_with_constructor(batch_size_histogram),
            sink_queue_spans: Family::default(),
            sink_queue_bytes: Family::default(),
            sink_queue_capacity_spans: Family::default(),
            sink_inflight_exports: Family::default(),
            sink_rate_limit_wait_seconds: Family::default(),
            sink_kept_spans: Family::default(),
            sink_draining_generations: Family::default(),
            queue_disk_bytes: Family::default(),
            queue_disk_segments: Family::default(),
            queue_fsync_duration: Family::new_with_constructor(fsync_duration_histogram),
            queue_replayed_spans: Family::default(),
            queue_corrupt_records: Family::default(),
            queue_storage_errors: Family::default(),
            transform_changes: Family::default(),
            kafka_producer_queue_messages: Family::default(),
            kafka_producer_queue_bytes: Family::default(),
            kafka_request_retries: Family::default(),
            kafka_transport_errors: Family::default(),
            kafka_request_timeouts: Family::default(),
            kafka_brokers_up: Family::default(),
            config_reloads: Family::default(),
            build_info: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("spansink");
        r.register(
            "receiver_accepted_spans",
            "Spans accepted from OTLP clients, by protocol",
            m.receiver_accepted_spans.clone(),
        );
        r.register(
            "receiver_refused_spans",
            "Spans refused to OTLP clients (the client was told), by protocol and reason",
            m.receiver_refused_spans.clone(),
        );
        r.register(
            "receiver_requests",
            "OTLP export requests, by protocol and outcome (`ok`, `partial`, or a refusal reason such as `queue_full`, `not_delivered`, `rejected_by_sink`, `acknowledgement_timeout`)",
            m.receiver_requests.clone(),
        );
        r.register_with_unit(
            "receiver_acknowledgement_wait",
            "Time from a request's arrival at the chain to its answer with `receivers.acknowledgements` persisted or delivered (queue admission, fsync, delivery; timeouts and failures included), by mode",
            Unit::Seconds,
            m.receiver_acknowledgement_wait.clone(),
        );
        r.register(
            "receiver_tls_reloads",
            "Loads of a receiver's TLS certificate, key and client CA files after a change on disk or in the config, by protocol and result (`failure`: the previous certificate is still served)",
            m.receiver_tls_reloads.clone(),
        );
        r.register_with_unit(
            "receiver_tls_certificate_expiry_timestamp",
            "When the certificate a receiver serves expires (its not-after time), as Unix time",
            Unit::Seconds,
            m.receiver_tls_certificate_expiry.clone(),
        );
        r.register(
            "receiver_tls_handshake_failures",
            "TLS handshakes a receiver gave up on, by protocol and reason (`client_certificate`: missing or not signed by client_ca_file, `incompatible`: TLS version, cipher or ALPN, `malformed`: not TLS, e.g. a plaintext client, `timeout`, `connection`: closed or reset)",
            m.receiver_tls_handshake_failures.clone(),
        );
        r.register(
            "receiver_auth_file_reloads",
            "Re-reads of changed receiver credential files (receivers.auth bearer_token_files, basic.password_file), by result (a failure keeps the last credential)",
            m.receiver_auth_file_reloads.clone(),
        );
        r.register(
            "sink_received_spans",
            "Spans admitted into a sink's queue",
            m.sink_received_spans.clone(),
        );
        r.register(
            "sink_sent_spans",
            "Spans a sink delivered to its backend",
            m.sink_sent_spans.clone(),
        );
        r.register(
            "sink_failed_spans",
            "Spans a sink could not deliver after its retries, by the error's reason (`timeout`, `unavailable`, `io`, ...); each is also counted once in spansink_sink_fallback_spans_total (handed to the fallback) or spansink_sink_dropped_spans_total (`no_fallback`, `fallback_refused`)",
            m.sink_failed_spans.clone(),
        );
        r.register(
            "sink_retried_spans",
            "Spans sent again after a transient failure (one count per span per retry)",
            m.sink_retried_spans.clone(),
        );
        r.register(
            "sink_dropped_spans",
            "Spans discarded without delivery, by reason (`queue_full`, `filtered`, `shutdown`, `reload`, `no_fallback`, `fallback_refused`, `malformed`, `message_too_large`, `rejected_by_backend`)",
            m.sink_dropped_spans.clone(),
        );
        r.register(
            "sink_fallback_spans",
            "Spans a sink handed to its fallback sink",
            m.sink_fallback_spans.clone(),
        );
        r.register_with_unit(
            "sink_export_duration",
            "Duration of one export call to the backend (one attempt), by outcome",
            Unit::Seconds,
            m.sink_export_duration.clone(),
        );
        r.register(
            "sink_batch_spans",
            "Spans per exported batch",
            m.sink_batch_spans.clone(),
        );
        r.register(
            "sink_queue_spans",
            "Spans waiting in a sink's queue",
            m.sink_queue_spans.clone(),
        );
        r.register_with_unit(
            "sink_queue",
            "Encoded bytes waiting in a sink's queue",
            Unit::Bytes,
            m.sink_queue_bytes.clone(),
        );
        r.register(
            "sink_queue_capacity_spans",
            "Capacity of a sink's queue in spans",
            m.sink_queue_capacity_spans.clone(),
        );
        r.register(
            "sink_inflight_exports",
            "Export calls in flight for a sink",
            m.sink_inflight_exports.clone(),
        );
        r.register_with_unit(
            "sink_rate_limit_wait",
            "Time export calls spent waiting for the rate limiter",
            Unit::Seconds,
            m.sink_rate_limit_wait_seconds.clone(),
        );
        r.register(
            "sink_kept_spans",
            "Spans left in a sink's durable queue when a generation of the sink stopped at its deadline, by reason (`reload`: delivered by the sink's next generation, `shutdown`: by the next start); not lost",
            m.sink_kept_spans.clone(),
        );
        r.register(
            "sink_draining_generations",
            "Old generations of a sink (replaced by a config reload) still delivering what they hold in the background",
            m.sink_draining_generations.clone(),
        );
        r.register_with_unit(
            "queue_disk",
            "Bytes a sink's durable queue takes on disk (its segment files)",
            Unit::Bytes,
            m.queue_disk_bytes.clone(),
        );
        r.register(
            "queue_disk_segments",
            "Segment files of a sink's durable queue",
            m.queue_disk_segments.clone(),
        );
        r.register_with_unit(
            "queue_fsync_duration",
            "Duration of one fsync round of a sink's durable queue",
            Unit::Seconds,
            m.queue_fsync_duration.clone(),
        );
        r.register(
            "queue_replayed_spans",
            "Spans found undelivered in a sink's durable queue at start, to be delivered again",
            m.queue_replayed_spans.clone(),
        );
        r.register(
            "queue_corrupt_records",
            "Torn or corrupted records found in a sink's durable queue and skipped (their spans are lost)",
            m.queue_corrupt_records.clone(),
        );
        r.register(
            "queue_storage_errors",
            "Failed disk operations of a sink's durable queue, by operation (`append`, `fsync`, `commit`, `delete`, `read`)",
            m.queue_storage_errors.clone(),
        );
        r.register(
            "transform_changes",
            "What a sink's transform rule changed, by rule (its name or index) and action: attributes set, inserted, updated, deleted, renamed, hashed, redacted or truncated, or events or links dropped",
            m.transform_changes.clone(),
        );
        r.register(
            "kafka_producer_queue_messages",
            "Messages in a Kafka sink's librdkafka producer queue, waiting to be sent or acknowledged (from librdkafka's statistics, every kafka.statistics_interval)",
            m.kafka_producer_queue_messages.clone(),
        );
        r.register_with_unit(
            "kafka_producer_queue",
            "Message bytes in a Kafka sink's librdkafka producer queue (from librdkafka's statistics)",
            Unit::Bytes,
            m.kafka_producer_queue_bytes.clone(),
        );
        r.register(
            "kafka_request_retries",
            "Requests librdkafka sent to a broker again, summed over brokers (its txretries); these retries happen inside the producer and are not in spansink_sink_retried_spans_total",
            m.kafka_request_retries.clone(),
        );
        r.register(
            "kafka_transport_errors",
            "Send and receive errors on a Kafka sink's broker connections, summed over brokers (librdkafka's txerrs + rxerrs)",
            m.kafka_transport_errors.clone(),
        );
        r.register(
            "kafka_request_timeouts",
            "Requests to a broker that timed out, summed over brokers (librdkafka's req_timeouts)",
            m.kafka_request_timeouts.clone(),
        );
        r.register(
            "kafka_brokers_up",
            "Cluster brokers a Kafka sink's producer is connected to (state UP in librdkafka's statistics; bootstrap entries not counted)",
            m.kafka_brokers_up.clone(),
        );
        r.register(
            "config_reloads",
            "Config reloads, by result (a refused config leaves the running one in place)",
            m.config_reloads.clone(),
        );
        r.register(
            "build_info",
            "Build information; the value is always 1",
            m.build_info.clone(),
        );
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        m
    }

    /// A fresh registry with all families, for tests and benchmarks.
    pub fn for_tests() -> Self {
        Self::register(&mut Registry::default())
    }

    pub fn sink(&self, sink: &str) -> SinkLabels {
        SinkLabels {
            sink: sink.to_string(),
        }
    }
}
