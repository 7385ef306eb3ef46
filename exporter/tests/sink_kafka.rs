//! Kafka sink tests: the per-trace encoding on its own, then the sink against librdkafka's
//! in-process mock cluster (the real Kafka protocol), read back with a consumer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use spansink_config::{ByteSize, KafkaEncoding, KafkaSaslConfig, KafkaSinkConfig, KafkaTlsConfig};
use spansink_exporter::otlp::fixtures::{
    self, batch_of, flatten, interleaved_traces, rich_span, trace_ids,
};
use spansink_exporter::otlp::span_count;
use spansink_exporter::sinks::Sink;
use spansink_exporter::sinks::kafka::KafkaSink;
use spansink_exporter::sinks::kafka::encoding::encode_batch;
use spansink_exporter::sinks::kafka::producer::client_config;
use spansink_exporter::telemetry::metrics::{Metrics, SinkReasonLabels};

mod kafka_messages;
mod pipeline;
mod transform_rules;
use kafka_messages::{EVERY_ENCODING, decode, merged};
use pipeline::FallbackPipeline;

const TOPIC: &str = "spans";
const PARTITIONS: i32 = 6;

// ---------------------------------------------------------------- encoding, no broker

#[test]
fn one_message_per_trace_keyed_by_hex_trace_id_with_wrappers_kept() {
    let request = interleaved_traces(5, 8);
    let batch = batch_of(&[&request]);
    for encoding in [KafkaEncoding::OtlpProto, KafkaEncoding::OtlpJson] {
        let encoded = encode_batch(&batch, encoding, 1_000_000).unwrap();
        assert_eq!(encoded.messages.len(), 5, "{encoding:?}");
        assert_eq!(encoded.oversized_spans, 0);
        let mut decoded = Vec::new();
        for m in &encoded.messages {
            let r = decode(encoding, &m.value);
            let ids: BTreeSet<_> = trace_ids(&r).into_iter().collect();
            assert_eq!(ids.len(), 1, "a message holds exactly one trace");
            let id = ids.into_iter().next().unwrap();
            assert_eq!(m.key.as_deref(), Some(const_hex::encode(&id).as_str()));
            assert_eq!(m.spans, span_count(&r));
            // Spans of a trace span two services and two scopes in the input.
            assert_eq!(r.resource_spans.len(), 2);
            decoded.push(r);
        }
        assert_eq!(flatten(&merged(decoded)), flatten(&request), "{encoding:?}");
    }
}

#[test]
fn json_is_one_flat_span_record_per_message_keyed_by_its_trace() {
    let request = interleaved_traces(3, 4);
    let batch = batch_of(&[&request]);
    let encoded = encode_batch(&batch, KafkaEncoding::Json, 1_000_000).unwrap();
    assert_eq!(encoded.messages.len(), span_count(&request));
    assert_eq!(encoded.oversized_spans, 0);
    let mut decoded = Vec::new();
    for m in &encoded.messages {
        assert_eq!(m.spans, 1);
        assert!(
            !m.value.ends_with(b"\n"),
            "a message is a record, not a line"
        );
        let r = decode(KafkaEncoding::Json, &m.value);
        let id = trace_ids(&r).into_iter().next().unwrap();
        assert_eq!(m.key.as_deref(), Some(const_hex::encode(&id).as_str()));
        decoded.push(r);
    }
    assert_eq!(flatten(&merged(decoded)), flatten(&request));

    // A span larger than the limit on its own is counted, the others still go.
    let mut huge = rich_span(9, 0);
    huge.name = "x".repeat(40_000);
    let with_huge = ExportTraceServiceRequest {
        resource_spans: vec![opentelemetry_proto::tonic::trace::v1::ResourceSpans {
            resource: None,
            scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
                scope: None,
                spans: vec![huge],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let encoded = encode_batch(
        &batch_of(&[&request, &with_huge]),
        KafkaEncoding::Json,
        16_384,
    )
    .unwrap();
    assert_eq!(encoded.oversized_spans, 1);
    assert_eq!(encoded.messages.len(), span_count(&request));
}

#[test]
fn otlp_json_uses_hex_ids_and_string_int64() {
    let request = interleaved_traces(1, 1);
    let span_id = const_hex::encode(&request.resource_spans[0].scope_spans[0].spans[0].span_id);
    let batch = batch_of(&[&request]);
    let encoded = encode_batch(&batch, KafkaEncoding::OtlpJson, 1_000_000).unwrap();
    let text = String::from_utf8(encoded.messages[0].value.to_vec()).unwrap();
    let hex_trace = const_hex::encode(fixtures::trace_id(1));
    assert!(
        text.contains(&format!("\"traceId\":\"{hex_trace}\"")),
        "{text}"
    );
    assert!(
        text.contains(&format!("\"spanId\":\"{span_id}\"")),
        "{text}"
    );
    assert!(
        text.contains("\"startTimeUnixNano\":\"1700000000000000000\""),
        "{text}"
    );
    assert!(
        text.contains("\"intValue\":\"-9007199254740993\""),
        "{text}"
    );
}

#[test]
fn large_traces_are_split_and_lone_oversized_spans_dropped() {
    let request = interleaved_traces(2, 40);
    // Room for one rich span with its wrappers in either encoding, not for a whole trace.
    let max = 16_384;
    let mut huge = rich_span(9, 0);
    huge.name = "x".repeat(40_000);
    let with_huge = ExportTraceServiceRequest {
        resource_spans: vec![opentelemetry_proto::tonic::trace::v1::ResourceSpans {
            resource: None,
            scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
                scope: None,
                spans: vec![huge],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let batch = batch_of(&[&request, &with_huge]);
    for encoding in [KafkaEncoding::OtlpProto, KafkaEncoding::OtlpJson] {
        let encoded = encode_batch(&batch, encoding, max).unwrap();
        assert_eq!(encoded.oversized_spans, 1, "{encoding:?}");
        assert!(
            encoded.messages.len() > 4,
            "{} messages",
            encoded.messages.len()
        );
        let mut per_key: BTreeMap<String, Vec<ExportTraceServiceRequest>> = BTreeMap::new();
        for m in &encoded.messages {
            assert!(m.value.len() <= max, "{} > {max}", m.value.len());
            per_key
                .entry(m.key.clone().unwrap())
                .or_default()
                .push(decode(encoding, &m.value));
        }
        assert_eq!(per_key.len(), 2);
        let all = merged(per_key.into_values().flatten());
        assert_eq!(flatten(&all), flatten(&request), "{encoding:?}");
    }
}

#[test]
fn producer_properties_follow_the_config() {
    let mut config = KafkaSinkConfig::new("k1:9092", TOPIC);
    config.brokers.push("k2:9093".into());
    config.compression = spansink_config::KafkaCompression::Zstd;
    config.sasl = Some(KafkaSaslConfig {
        mechanism: spansink_config::SaslMechanism::ScramSha256,
        username_env: "KAFKA_USER".into(),
        password_env: "KAFKA_PASSWORD".into(),
    });
    config.tls = Some(KafkaTlsConfig {
        ca_file: Some("/tls/ca.crt".into()),
        ..KafkaTlsConfig::default()
    });
    config.librdkafka.insert("linger.ms".into(), "20".into());
    config
        .librdkafka
        .insert("partitioner".into(), "consistent".into());
    let env = |name: &str| match name {
        "KAFKA_USER" => Some("spansink".to_string()),
        "KAFKA_PASSWORD" => Some("s3cret".to_string()),
        _ => None,
    };
    let c = client_config(&config, &env).unwrap();
    for (key, value) in [
        ("bootstrap.servers", "k1:9092,k2:9093"),
        ("compression.type", "zstd"),
        ("acks", "all"),
        ("enable.idempotence", "true"),
        ("message.timeout.ms", "20000"),
        ("message.max.bytes", "1065536"),
        ("security.protocol", "sasl_ssl"),
        ("sasl.mechanism", "SCRAM-SHA-256"),
        ("sasl.username", "spansink"),
        ("sasl.password", "s3cret"),
        ("ssl.ca.location", "/tls/ca.crt"),
        ("linger.ms", "20"),
        ("partitioner", "consistent"),
    ] {
        assert_eq!(c.get(key), Some(value), "{key}");
    }
    let no_env = |_: &str| None;
    let err = client_config(&config, &no_env).unwrap_err();
    assert!(err.contains("environment variable KAFKA_USER"), "{err}");
    let err = KafkaSink::with_env("events", &config, &Metrics::for_tests(), &no_env)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .starts_with("sinks.events: environment variable KAFKA_USER"),
        "{err}"
    );
}

#[test]
fn librdkafka_errors_are_classified() {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode as C};
    use spansink_exporter::sinks::kafka::producer::classify;
    for code in [
        C::MessageTimedOut,
        C::AllBrokersDown,
        C::QueueFull,
        C::NotLeaderForPartition,
        C::LeaderNotAvailable,
        C::NetworkException,
        C::BrokerTransportFailure,
        C::RequestTimedOut,
        C::NotEnoughReplicas,
    ] {
        let e = classify(&KafkaError::MessageProduction(code));
        assert!(e.is_transient(), "{code:?}: {e}");
    }
    for (code, reason) in [
        (C::TopicAuthorizationFailed, "unauthorized"),
        (C::SaslAuthenticationFailed, "authentication"),
        (C::MessageSizeTooLarge, "message_too_large"),
        (C::InvalidMessage, "invalid_message"),
        (C::UnknownTopic, "unknown_topic"),
        (C::UnknownTopicOrPartition, "unknown_topic"),
    ] {
        let e = classify(&KafkaError::MessageProduction(code));
        assert!(!e.is_transient(), "{code:?}: {e}");
        assert_eq!(e.reason(), reason, "{code:?}");
    }
}

// ---------------------------------------------------------------- against the mock cluster

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 3).unwrap();
    cluster
}

fn sink_config(bootstrap: &str, encoding: KafkaEncoding) -> KafkaSinkConfig {
    let mut config = KafkaSinkConfig::new(bootstrap, TOPIC);
    config.encoding = encoding;
    config.message_timeout = spansink_config::Duration::from_millis(3000);
    config
}

struct Consumed {
    key: String,
    partition: i32,
    value: Vec<u8>,
}

/// Reads messages from the start of the topic until `spans` spans came back (or 30 s).
fn consume(bootstrap: &str, encoding: KafkaEncoding, spans: usize) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-{}", uuid::Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let mut out = Vec::new();
    let mut seen = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen < spans && std::time::Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            let value = message.payload().unwrap().to_vec();
            seen += span_count(&decode(encoding, &value));
            out.push(Consumed {
                key: String::from_utf8(message.key().unwrap().to_vec()).unwrap(),
                partition: message.partition(),
                value,
            });
        }
    }
    assert_eq!(seen, spans, "spans read back from the topic");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_keeps_every_field_and_each_trace_in_one_partition() {
    for encoding in EVERY_ENCODING {
        let cluster = cluster();
        let bootstrap = cluster.bootstrap_servers();
        let sink = KafkaSink::new(
            "events",
            &sink_config(&bootstrap, encoding),
            &Metrics::for_tests(),
        )
        .unwrap();
        let first = interleaved_traces(12, 6);
        let second = interleaved_traces(12, 3); // the same traces again, in a later request
        sink.export(&batch_of(&[&first, &second])).await.unwrap();
        sink.export(&batch_of(&[&first])).await.unwrap();
        sink.shutdown().await.unwrap();

        let total = 2 * span_count(&first) + span_count(&second);
        let consumed = consume(&bootstrap, encoding, total);
        let mut partitions: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
        let mut decoded = Vec::new();
        for c in &consumed {
            let r = decode(encoding, &c.value);
            for id in trace_ids(&r) {
                assert_eq!(c.key, const_hex::encode(&id), "key is the hex trace id");
            }
            partitions
                .entry(c.key.clone())
                .or_default()
                .insert(c.partition);
            decoded.push(r);
        }
        assert_eq!(partitions.len(), 12);
        for (trace, parts) in &partitions {
            assert_eq!(
                parts.len(),
                1,
                "trace {trace} spread over partitions {parts:?}"
            );
        }
        let used: BTreeSet<i32> = partitions.values().flatten().copied().collect();
        assert!(
            used.len() > 1,
            "12 traces should use several of {PARTITIONS} partitions: {used:?}"
        );
        let expected = merged([first.clone(), second, first]);
        assert_eq!(
            flatten(&merged(decoded)),
            flatten(&expected),
            "{encoding:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_batches_are_split_and_lone_oversized_spans_counted() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let mut config = sink_config(&bootstrap, KafkaEncoding::OtlpProto);
    config.max_message_bytes = ByteSize::kib(4);
    let metrics = Metrics::for_tests();
    let sink = KafkaSink::new("events", &config, &metrics).unwrap();
    let request = interleaved_traces(3, 30);
    let mut huge = rich_span(50, 0);
    huge.name = "x".repeat(8_000);
    let mut with_huge = interleaved_traces(0, 0);
    with_huge.resource_spans[0].scope_spans[0].spans.push(huge);
    sink.export(&batch_of(&[&request, &with_huge]))
        .await
        .unwrap();
    let dropped = metrics
        .sink_dropped_spans
        .get_or_create(&SinkReasonLabels {
            sink: "events".into(),
            reason: "message_too_large",
        })
        .get();
    assert_eq!(dropped, 1);

    let consumed = consume(&bootstrap, KafkaEncoding::OtlpProto, span_count(&request));
    assert!(consumed.len() > 6, "{} messages", consumed.len());
    let mut partitions: BTreeMap<&str, BTreeSet<i32>> = BTreeMap::new();
    for c in &consumed {
        assert!(c.value.len() <= 4096);
        partitions.entry(&c.key).or_default().insert(c.partition);
    }
    assert!(partitions.values().all(|p| p.len() == 1), "{partitions:?}");
    let decoded = merged(
        consumed
            .iter()
            .map(|c| decode(KafkaEncoding::OtlpProto, &c.value)),
    );
    assert_eq!(flatten(&decoded), flatten(&request));

    // A batch of nothing but such spans is a permanent failure, so a fallback gets it.
    let mut only_huge = interleaved_traces(0, 0);
    let mut span = rich_span(51, 0);
    span.name = "y".repeat(8_000);
    only_huge.resource_spans[0].scope_spans[0].spans.push(span);
    let err = sink.export(&batch_of(&[&only_huge])).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "message_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_down_at_start_fail_transiently_then_deliver_once_up() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    cluster.broker_down(-1).unwrap();
    let sink = KafkaSink::new(
        "events",
        &sink_config(&bootstrap, KafkaEncoding::OtlpProto),
        &Metrics::for_tests(),
    )
    .unwrap();
    let request = interleaved_traces(4, 2);
    let err = sink.export(&batch_of(&[&request])).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "timeout", "{err}");

    cluster.broker_up(-1).unwrap();
    // What the retry policy does: try the same batch again.
    sink.export(&batch_of(&[&request])).await.unwrap();
    let consumed = consume(&bootstrap, KafkaEncoding::OtlpProto, span_count(&request));
    let decoded = merged(
        consumed
            .iter()
            .map(|c| decode(KafkaEncoding::OtlpProto, &c.value)),
    );
    assert_eq!(flatten(&decoded), flatten(&request));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_errors_mid_stream_are_transient() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let sink = KafkaSink::new(
        "events",
        &sink_config(&bootstrap, KafkaEncoding::OtlpProto),
        &Metrics::for_tests(),
    )
    .unwrap();
    let request = interleaved_traces(3, 2);
    sink.export(&batch_of(&[&request])).await.unwrap();

    // Every produce request now fails with a retriable broker error until the producer
    // gives up on the messages (message_timeout).
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 500],
    );
    let err = sink.export(&batch_of(&[&request])).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "timeout", "{err}");

    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    sink.export(&batch_of(&[&request])).await.unwrap();
    // At least once: the failed export's messages may also have been written.
    let consumed = consume(
        &bootstrap,
        KafkaEncoding::OtlpProto,
        2 * span_count(&request),
    );
    assert!(consumed.len() >= 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_authorization_failure_is_permanent() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let sink = KafkaSink::new(
        "events",
        &sink_config(&bootstrap, KafkaEncoding::OtlpProto),
        &Metrics::for_tests(),
    )
    .unwrap();
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 50],
    );
    let err = sink
        .export(&batch_of(&[&interleaved_traces(2, 2)]))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_codec_is_built_in() {
    use spansink_config::KafkaCompression as K;
    for compression in [K::None, K::Gzip, K::Snappy, K::Lz4, K::Zstd] {
        let cluster = cluster();
        let bootstrap = cluster.bootstrap_servers();
        let mut config = sink_config(&bootstrap, KafkaEncoding::OtlpProto);
        config.compression = compression;
        let sink = KafkaSink::new("events", &config, &Metrics::for_tests()).unwrap();
        let request = interleaved_traces(2, 3);
        sink.export(&batch_of(&[&request])).await.unwrap();
        let consumed = consume(&bootstrap, KafkaEncoding::OtlpProto, span_count(&request));
        let decoded = merged(
            consumed
                .iter()
                .map(|c| decode(KafkaEncoding::OtlpProto, &c.value)),
        );
        assert_eq!(flatten(&decoded), flatten(&request), "{compression:?}");
    }
}

#[test]
fn tls_and_scram_are_built_in() {
    // librdkafka refuses security.protocol=sasl_ssl and SCRAM at creation when it was
    // built without OpenSSL; creation does not connect.
    let mut config = KafkaSinkConfig::new("127.0.0.1:1", TOPIC);
    config.sasl = Some(KafkaSaslConfig {
        mechanism: spansink_config::SaslMechanism::ScramSha512,
        username_env: "U".into(),
        password_env: "P".into(),
    });
    config.tls = Some(KafkaTlsConfig::default());
    let env = |_: &str| Some("x".to_string());
    let built = KafkaSink::with_env("events", &config, &Metrics::for_tests(), &env);
    assert!(built.is_ok(), "{:?}", built.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_that_does_not_exist_is_permanent() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    // As a broker with auto.create.topics.enable=false answers.
    cluster
        .topic_error(
            "missing",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        )
        .unwrap();
    let mut config = sink_config(&bootstrap, KafkaEncoding::OtlpProto);
    config.topic = "missing".into();
    config
        .librdkafka
        .insert("allow.auto.create.topics".into(), "false".into());
    // How long librdkafka waits for a topic to appear before failing its messages.
    config
        .librdkafka
        .insert("topic.metadata.propagation.max.ms".into(), "500".into());
    let sink = KafkaSink::new("events", &config, &Metrics::for_tests()).unwrap();
    let err = sink
        .export(&batch_of(&[&interleaved_traces(1, 1)]))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "unknown_topic", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_gone_mid_stream_hand_the_batch_to_the_fallback_and_lose_nothing() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let pipeline = FallbackPipeline::start(&format!(
        "kafka:\n  brokers: [\"{bootstrap}\"]\n  topic: {TOPIC}\n  message_timeout: 1s\n"
    ))
    .await;
    let before = interleaved_traces(3, 2);
    pipeline.admit(&before).await;
    let consumed = consume(&bootstrap, KafkaEncoding::OtlpProto, span_count(&before));
    let delivered = merged(
        consumed
            .iter()
            .map(|c| decode(KafkaEncoding::OtlpProto, &c.value)),
    );
    assert_eq!(flatten(&delivered), flatten(&before));

    cluster.broker_down(-1).unwrap();
    let after = interleaved_traces(4, 3);
    pipeline.admit(&after).await;
    let report = pipeline.drain().await;
    assert!(!report.timed_out, "{report:?}");
    assert_eq!(report.dropped_spans, 0);
    assert_eq!(
        flatten(&pipeline.dead_letter()),
        flatten(&after),
        "what Kafka could not take is in the dead letter, every field"
    );
}

/// Every transform rule, read back from the topic in each encoding: the message values and
/// keys, decoded field by field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_hold_only_transformed_spans_in_each_encoding() {
    for encoding in EVERY_ENCODING {
        let cluster = cluster();
        let bootstrap = cluster.bootstrap_servers();
        transform_rules::deliver("kafka", &sink_config(&bootstrap, encoding)).await;

        let consumed = consume(&bootstrap, encoding, 2);
        for c in &consumed {
            assert_eq!(
                transform_rules::holds_secret(&c.value),
                None,
                "{encoding:?}"
            );
            assert_eq!(transform_rules::holds_secret(c.key.as_bytes()), None);
        }
        let read = merged(consumed.iter().map(|c| decode(encoding, &c.value)));
        transform_rules::assert_transformed(&read, 2, &format!("kafka {encoding:?}"));
    }
}

// ---------------------------------------------------------------- librdkafka's statistics and errors

/// Every log line of this test binary, as JSON: librdkafka calls the sink's context on
/// its own threads, so only a global subscriber sees what it logs.
fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOGS: std::sync::OnceLock<&'static std::sync::Mutex<Vec<u8>>> =
        std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static std::sync::Mutex<Vec<u8>> =
            Box::leak(Box::new(std::sync::Mutex::new(Vec::new())));
        struct Capture(&'static std::sync::Mutex<Vec<u8>>);
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter("spansink_exporter=info")
            .with_writer(move || Capture(logs))
            .init();
        logs
    })
}

/// The captured log lines of `sink` whose message starts with `message`.
fn log_lines(sink: &str, message: &str) -> Vec<serde_json::Value> {
    let logs = captured_logs().lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| {
            line["sink"] == sink
                && line["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
        })
        .collect()
}

/// Polls `condition` every 50 ms for up to `timeout`; panics with `what` otherwise.
async fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_shows_in_statistics_metrics_and_warnings() {
    captured_logs();
    const SINK: &str = "stats-watch";
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let mut config = sink_config(&bootstrap, KafkaEncoding::OtlpProto);
    config.statistics_interval = spansink_config::Duration::from_millis(100);
    // Reconnect within a second of the brokers' return (librdkafka's default backs off to 10 s).
    config
        .librdkafka
        .insert("reconnect.backoff.max.ms".into(), "1000".into());
    let metrics = Metrics::for_tests();
    let sink = KafkaSink::new(SINK, &config, &metrics).unwrap();
    let labels = metrics.sink(SINK);
    let up = || metrics.kafka_brokers_up.get_or_create(&labels).get();
    let retries = || metrics.kafka_request_retries.get_or_create(&labels).get();
    let transport_errors = || metrics.kafka_transport_errors.get_or_create(&labels).get();
    let queued = || {
        metrics
            .kafka_producer_queue_messages
            .get_or_create(&labels)
            .get()
    };

    let request = interleaved_traces(6, 2);
    sink.export(&batch_of(&[&request])).await.unwrap();
    eventually(
        "brokers up after a delivery",
        Duration::from_secs(10),
        || up() > 0,
    )
    .await;
    assert_eq!((retries(), transport_errors()), (0, 0), "a healthy cluster");

    cluster.broker_down(-1).unwrap();
    // The export waits inside librdkafka (reconnecting, retrying) until message_timeout.
    let during = batch_of(&[&request]);
    let failed = sink.export(&during);
    let watch = async {
        eventually(
            "no broker up during the outage",
            Duration::from_secs(10),
            || up() == 0,
        )
        .await;
        eventually(
            "messages waiting in the producer queue",
            Duration::from_secs(10),
            || queued() > 0,
        )
        .await;
    };
    let (err, ()) = tokio::join!(failed, watch);
    let err = err.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        retries() + transport_errors() > 0,
        "the outage is counted: retries {}, transport errors {}",
        retries(),
        transport_errors()
    );
    let warnings = log_lines(SINK, "Kafka client error");
    assert!(!warnings.is_empty(), "a warning names the outage");
    let w = &warnings[0];
    assert_eq!(w["level"], "WARN");
    assert!(w["code"].is_string() && w["reason"].is_string(), "{w}");
    assert!(!log_lines(SINK, "Kafka producer is connected to no broker").is_empty());

    cluster.broker_up(-1).unwrap();
    eventually("brokers up again", Duration::from_secs(15), || up() > 0).await;
    eventually("the reconnection logged", Duration::from_secs(5), || {
        !log_lines(SINK, "Kafka producer is connected to brokers again").is_empty()
    })
    .await;
    sink.export(&batch_of(&[&request])).await.unwrap();
    eventually("an empty producer queue", Duration::from_secs(5), || {
        queued() == 0
    })
    .await;
}
