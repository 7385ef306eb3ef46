//! RabbitMQ sink tests against a real broker (Debian's rabbitmq-server): messages are read
//! back from a bound queue with lapin and decoded. One broker is shared by the tests that
//! can use their own exchange and queue; the down-at-start and mid-stream tests start
//! (and kill) their own.

mod servers;
mod transform_rules;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use spansink_config::{
    ByteSize, ExporterConfig, RabbitMqEncoding, RabbitMqExchangeDeclaration, RabbitMqSinkConfig,
    RabbitMqTlsConfig,
};
use spansink_exporter::chain::{Admit, Chain};
use spansink_exporter::encoding::read_request;
use spansink_exporter::otlp::fixtures::{
    batch_of, flatten, interleaved_traces, json_representable, merged, rich_request, rich_span,
};
use spansink_exporter::otlp::{TraceData, span_count};
use spansink_exporter::sinks::rabbitmq::RabbitMqSink;
use spansink_exporter::sinks::{SharedSink, Sink, build_all};
use spansink_exporter::telemetry::metrics::{Metrics, SinkReasonLabels};

use servers::rabbitmq::RabbitMq;

const ROUTING_KEY: &str = "spans.test";

/// The broker shared by this binary's tests. A static is never dropped, so the broker is
/// also killed by a watcher process when this test process ends, however it ends.
fn shared_broker() -> &'static RabbitMq {
    static BROKER: OnceLock<RabbitMq> = OnceLock::new();
    BROKER.get_or_init(|| {
        let broker = RabbitMq::start();
        broker.kill_when_process_exits(std::process::id());
        broker
    })
}

fn sink_config(port: u16, exchange: &str, encoding: RabbitMqEncoding) -> RabbitMqSinkConfig {
    let mut config = RabbitMqSinkConfig::new("127.0.0.1", port, exchange);
    config.routing_key = ROUTING_KEY.to_string();
    config.encoding = encoding;
    config.declare = Some(RabbitMqExchangeDeclaration::default());
    config.connect_timeout = spansink_config::Duration::from_secs(5);
    config
}

async fn connect(port: u16) -> Connection {
    Connection::connect(
        &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap()
}

/// A test consumer: a queue bound to `exchange` (declared as the sink declares it) for
/// the test routing key.
struct Reader {
    _connection: Connection,
    channel: Channel,
    queue: String,
}

impl Reader {
    async fn bound(port: u16, exchange: &str, queue: &str, arguments: FieldTable) -> Self {
        let connection = connect(port).await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_declare(queue.into(), QueueDeclareOptions::default(), arguments)
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                ROUTING_KEY.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self {
            _connection: connection,
            channel,
            queue: queue.to_string(),
        }
    }

    /// Takes messages until they hold `spans` spans (or 20 s pass: then it fails).
    async fn take(
        &self,
        encoding: RabbitMqEncoding,
        spans: usize,
    ) -> Vec<(Vec<u8>, BasicProperties)> {
        let mut out = Vec::new();
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen < spans && Instant::now() < deadline {
            let got = self
                .channel
                .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap();
            match got {
                Some(message) => {
                    let d = message.delivery;
                    seen += span_count(&decode(encoding, &d.data));
                    out.push((d.data, d.properties));
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        assert_eq!(seen, spans, "spans read back from queue {}", self.queue);
        out
    }

    async fn message_count(&self) -> u32 {
        self.channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
    }
}

fn decode(encoding: RabbitMqEncoding, body: &[u8]) -> ExportTraceServiceRequest {
    match encoding {
        RabbitMqEncoding::OtlpProto => ExportTraceServiceRequest::decode(body).unwrap(),
        RabbitMqEncoding::OtlpJson => serde_json::from_slice(body).unwrap(),
        RabbitMqEncoding::Json => read_request([std::str::from_utf8(body).unwrap()]).unwrap(),
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7())
}

// ---------------------------------------------------------------- shared broker

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_keeps_every_field_in_each_encoding_with_message_properties() {
    let broker = shared_broker();
    for encoding in [
        RabbitMqEncoding::OtlpProto,
        RabbitMqEncoding::OtlpJson,
        RabbitMqEncoding::Json,
    ] {
        let exchange = unique("round-trip");
        let reader =
            Reader::bound(broker.port, &exchange, &unique("q"), FieldTable::default()).await;
        let sink = RabbitMqSink::new(
            "events",
            &sink_config(broker.port, &exchange, encoding),
            &Metrics::for_tests(),
        )
        .unwrap();
        let rich = rich_request();
        let batch = batch_of(&[&rich, &interleaved_traces(2, 2)]);
        sink.export(&batch).await.unwrap();
        sink.shutdown().await.unwrap();

        let expected = batch.decode().unwrap();
        let messages = reader.take(encoding, span_count(&expected)).await;
        let decoded = merged(messages.iter().map(|(body, _)| decode(encoding, body)));
        match encoding {
            // Byte for byte what was received: every field, in order.
            RabbitMqEncoding::OtlpProto => {
                assert_eq!(messages.len(), 1);
                assert_eq!(messages[0].0, batch.encoded().to_vec());
                assert!(decoded == expected, "OTLP protobuf differs");
            }
            RabbitMqEncoding::OtlpJson => {
                assert_eq!(messages.len(), 1);
                assert!(decoded == json_representable(expected), "OTLP JSON differs");
            }
            // One span per message, in order; read back as the file sink's lines are.
            RabbitMqEncoding::Json => {
                assert_eq!(messages.len(), span_count(&expected));
                let lines: Vec<String> = messages
                    .iter()
                    .map(|(body, _)| String::from_utf8(body.clone()).unwrap())
                    .collect();
                // The rich request's spans alone read back exactly; the whole batch
                // holds the same spans under the same wrappers (empty scopes, which
                // have no span to travel with, excepted).
                let rich_lines = lines[..span_count(&rich)].iter().map(String::as_str);
                assert!(
                    read_request(rich_lines).unwrap() == rich,
                    "rich request differs"
                );
                let all = read_request(lines.iter().map(String::as_str)).unwrap();
                assert_eq!(flatten(&all), flatten(&expected));
            }
        }
        let content_type = match encoding {
            RabbitMqEncoding::OtlpProto => "application/x-protobuf",
            _ => "application/json",
        };
        let mut ids = std::collections::BTreeSet::new();
        for (body, p) in &messages {
            assert_eq!(
                p.content_type().as_ref().map(|s| s.as_str()),
                Some(content_type)
            );
            assert_eq!(*p.delivery_mode(), Some(2), "persistent");
            assert_eq!(p.app_id().as_ref().map(|s| s.as_str()), Some("spansink"));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let ts = p.timestamp().unwrap();
            assert!(ts <= now && ts + 120 > now, "timestamp {ts}");
            ids.insert(p.message_id().as_ref().unwrap().to_string());
            let spans = p
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("spansink_spans").cloned());
            assert_eq!(
                spans,
                Some(AMQPValue::LongLongInt(
                    span_count(&decode(encoding, body)) as i64
                ))
            );
        }
        assert_eq!(ids.len(), messages.len(), "message ids are unique");
    }
}

/// Every transform rule, read back from a bound queue in each encoding: the message
/// bodies, decoded field by field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_hold_only_transformed_spans_in_each_encoding() {
    let broker = shared_broker();
    for encoding in [
        RabbitMqEncoding::OtlpProto,
        RabbitMqEncoding::OtlpJson,
        RabbitMqEncoding::Json,
    ] {
        let exchange = unique("transform");
        let reader =
            Reader::bound(broker.port, &exchange, &unique("q"), FieldTable::default()).await;
        transform_rules::deliver("rabbitmq", &sink_config(broker.port, &exchange, encoding)).await;

        let messages = reader.take(encoding, 2).await;
        for (body, _) in &messages {
            assert_eq!(transform_rules::holds_secret(body), None, "{encoding:?}");
        }
        let read = merged(messages.iter().map(|(body, _)| decode(encoding, body)));
        transform_rules::assert_transformed(&read, 2, &format!("rabbitmq {encoding:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_are_split_and_lone_oversized_spans_counted() {
    let broker = shared_broker();
    let exchange = unique("split");
    let reader = Reader::bound(broker.port, &exchange, &unique("q"), FieldTable::default()).await;
    let mut config = sink_config(broker.port, &exchange, RabbitMqEncoding::OtlpProto);
    config.max_message_bytes = ByteSize::kib(4);
    let metrics = Metrics::for_tests();
    let sink = RabbitMqSink::new("events", &config, &metrics).unwrap();
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
    let messages = reader
        .take(RabbitMqEncoding::OtlpProto, span_count(&request))
        .await;
    assert!(messages.len() > 3, "{} messages", messages.len());
    assert!(messages.iter().all(|(body, _)| body.len() <= 4096));
    let decoded = merged(
        messages
            .iter()
            .map(|(b, _)| decode(RabbitMqEncoding::OtlpProto, b)),
    );
    assert_eq!(flatten(&decoded), flatten(&request));

    // Nothing but such spans: permanent, so a fallback gets the batch.
    let err = sink.export(&batch_of(&[&with_huge])).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "message_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_ok_only_when_the_broker_confirmed_every_message() {
    let broker = shared_broker();
    let exchange = unique("confirms");
    // A queue that takes one message and refuses more: the broker nacks the others.
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let reader = Reader::bound(broker.port, &exchange, &unique("q"), arguments).await;
    let sink = RabbitMqSink::new(
        "events",
        &sink_config(broker.port, &exchange, RabbitMqEncoding::Json),
        &Metrics::for_tests(),
    )
    .unwrap();
    let three = interleaved_traces(3, 1);
    let err = sink.export(&batch_of(&[&three])).await.unwrap_err();
    assert!(err.is_transient(), "a nack is worth retrying: {err}");
    assert_eq!(err.reason(), "nack", "{err}");
    assert_eq!(reader.message_count().await, 1);

    // Room again: the retry of the same batch is confirmed, and Ok means the broker
    // already holds the messages.
    reader
        .channel
        .queue_purge(reader.queue.as_str().into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    let one = interleaved_traces(1, 1);
    sink.export(&batch_of(&[&one])).await.unwrap();
    assert_eq!(reader.message_count().await, 1);
    let messages = reader.take(RabbitMqEncoding::Json, 1).await;
    assert_eq!(
        flatten(&decode(RabbitMqEncoding::Json, &messages[0].0)),
        flatten(&one)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_messages_are_permanent_when_mandatory() {
    let broker = shared_broker();
    let exchange = unique("nobody-bound");
    let mut config = sink_config(broker.port, &exchange, RabbitMqEncoding::OtlpProto);
    let sink = RabbitMqSink::new("events", &config, &Metrics::for_tests()).unwrap();
    let batch = batch_of(&[&interleaved_traces(2, 2)]);
    let err = sink.export(&batch).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "unroutable", "{err}");
    assert!(err.to_string().contains("312 NO_ROUTE"), "{err}");
    // The sink keeps working after a return (the channel stays open).
    sink.export(&batch).await.unwrap_err();

    // Without `mandatory` the broker drops them and confirms: the user chose that.
    config.mandatory = false;
    let sink = RabbitMqSink::new("events", &config, &Metrics::for_tests()).unwrap();
    sink.export(&batch).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_exchange_is_permanent_and_the_sink_recovers_once_it_exists() {
    let broker = shared_broker();
    let exchange = unique("missing");
    let mut config = sink_config(broker.port, &exchange, RabbitMqEncoding::OtlpProto);
    config.declare = None; // the default: the exchange must exist
    let sink = RabbitMqSink::new("events", &config, &Metrics::for_tests()).unwrap();
    let request = interleaved_traces(2, 2);
    let batch = batch_of(&[&request]);
    for _ in 0..2 {
        let err = sink.export(&batch).await.unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert_eq!(err.reason(), "not_found", "{err}");
        assert!(err.to_string().contains("NOT_FOUND"), "{err}");
    }
    // The broker closed the channel; once the exchange exists the next export opens a
    // new one: no stuck state.
    let reader = Reader::bound(broker.port, &exchange, &unique("q"), FieldTable::default()).await;
    sink.export(&batch).await.unwrap();
    let messages = reader
        .take(RabbitMqEncoding::OtlpProto, span_count(&request))
        .await;
    assert_eq!(decode(RabbitMqEncoding::OtlpProto, &messages[0].0), request);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_write_permission_is_permanent() {
    let broker = shared_broker();
    let exchange = unique("guarded");
    let _reader = Reader::bound(broker.port, &exchange, &unique("q"), FieldTable::default()).await;
    let user = unique("reader");
    broker.rabbitmqctl(&["add_user", &user, "pw-of-reader"]);
    // May configure and read everything, write nothing.
    broker.rabbitmqctl(&["set_permissions", "-p", "/", &user, ".*", "^$", ".*"]);
    let mut config = sink_config(broker.port, &exchange, RabbitMqEncoding::OtlpProto);
    config.declare = None;
    config.username = user.clone();
    config.password_env = Some("READER_PASSWORD".into());
    let env = |name: &str| (name == "READER_PASSWORD").then(|| "pw-of-reader".to_string());
    let sink = RabbitMqSink::with_env("events", &config, &Metrics::for_tests(), &env).unwrap();
    let err = sink
        .export(&batch_of(&[&interleaved_traces(1, 1)]))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "access_refused", "{err}");

    // A wrong password is refused at login, permanently too.
    let wrong = |name: &str| (name == "READER_PASSWORD").then(|| "not-it".to_string());
    let sink = RabbitMqSink::with_env("events", &config, &Metrics::for_tests(), &wrong).unwrap();
    let err = sink
        .export(&batch_of(&[&interleaved_traces(1, 1)]))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "access_refused", "{err}");
}

// ---------------------------------------------------------------- dedicated brokers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_at_start_fails_transiently_then_delivers_once_up() {
    let port = servers::free_port();
    let exchange = "spans";
    let sink = RabbitMqSink::new(
        "events",
        &sink_config(port, exchange, RabbitMqEncoding::OtlpProto),
        &Metrics::for_tests(),
    )
    .expect("building does not need the broker");
    let request = interleaved_traces(4, 2);
    let batch = batch_of(&[&request]);
    let err = sink.export(&batch).await.unwrap_err();
    assert!(err.is_transient(), "{err}");

    let broker = RabbitMq::start_on(port);
    let reader = Reader::bound(broker.port, exchange, "spans-q", FieldTable::default()).await;
    // What the retry policy does: the same batch again.
    sink.export(&batch).await.unwrap();
    let messages = reader
        .take(RabbitMqEncoding::OtlpProto, span_count(&request))
        .await;
    assert_eq!(messages.len(), 1, "delivered once");
    assert_eq!(decode(RabbitMqEncoding::OtlpProto, &messages[0].0), request);
    assert_eq!(reader.message_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_lost_mid_stream_is_transient_and_the_connection_comes_back() {
    let mut broker = RabbitMq::start();
    let port = broker.port;
    let exchange = "spans";
    let sink = RabbitMqSink::new(
        "events",
        &sink_config(port, exchange, RabbitMqEncoding::OtlpProto),
        &Metrics::for_tests(),
    )
    .unwrap();
    let reader = Reader::bound(port, exchange, "spans-q", FieldTable::default()).await;
    let request = interleaved_traces(2, 2);
    let batch = batch_of(&[&request]);
    sink.export(&batch).await.unwrap();
    reader
        .take(RabbitMqEncoding::OtlpProto, span_count(&request))
        .await;
    drop(reader);

    broker.kill();
    for _ in 0..2 {
        let err = sink.export(&batch).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
    }

    let broker = RabbitMq::start_on(port);
    let reader = Reader::bound(broker.port, exchange, "spans-q", FieldTable::default()).await;
    sink.export(&batch).await.unwrap();
    let messages = reader
        .take(RabbitMqEncoding::OtlpProto, span_count(&request))
        .await;
    assert_eq!(decode(RabbitMqEncoding::OtlpProto, &messages[0].0), request);
    sink.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_chain_with_retry_and_a_file_fallback_nothing_is_lost_when_the_broker_dies() {
    let mut broker = RabbitMq::start();
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let config = ExporterConfig::from_yaml(&format!(
        r#"
sinks:
  rabbit:
    rabbitmq: {{host: 127.0.0.1, port: {port}, exchange: spans, routing_key: {ROUTING_KEY}, declare: {{}}, connect_timeout: 2s}}
    batch: {{max_spans: 8, flush_interval: 50ms}}
    retry: {{max_attempts: 3, initial_backoff: 100ms, max_backoff: 200ms}}
    timeout: 5s
    fallback: dlq
  dlq:
    fallback_only: true
    file: {{path: {dlq}}}
"#,
        port = broker.port,
        dlq = dlq.display()
    ))
    .unwrap();
    let metrics = Metrics::for_tests();
    let sinks: BTreeMap<String, SharedSink> = build_all(&config, &metrics).await.unwrap();
    let chain = Chain::build(&config, &metrics, &|name, _| Ok(sinks[name].clone())).unwrap();
    let reader = Reader::bound(broker.port, "spans", "spans-q", FieldTable::default()).await;
    chain.start();

    let before = interleaved_traces(4, 4);
    chain.admit(TraceData::from_request(&before)).await.unwrap();
    let delivered = reader
        .take(RabbitMqEncoding::OtlpProto, span_count(&before))
        .await;
    drop(reader);

    broker.kill();
    let after: Vec<ExportTraceServiceRequest> = (0..3)
        .map(|i| shifted(interleaved_traces(3, 3), 100 + i))
        .collect();
    for request in &after {
        chain.admit(TraceData::from_request(request)).await.unwrap();
    }
    let report = chain.drain(Duration::from_secs(30)).await;
    assert!(!report.timed_out, "{report:?}");
    assert_eq!(report.dropped_spans, 0);

    let in_broker = merged(
        delivered
            .iter()
            .map(|(b, _)| decode(RabbitMqEncoding::OtlpProto, b)),
    );
    let text = std::fs::read_to_string(&dlq).unwrap();
    let in_file = read_request(text.lines()).unwrap();
    let mut got = flatten(&in_broker);
    got.extend(flatten(&in_file));
    got.sort();
    let mut expected = flatten(&before);
    for request in &after {
        expected.extend(flatten(request));
    }
    expected.sort();
    assert_eq!(
        got, expected,
        "every span is in the broker or in the fallback file"
    );
    let retried = metrics
        .sink_retried_spans
        .get_or_create(&metrics.sink("rabbit"))
        .get();
    assert!(
        retried > 0,
        "transient failures were retried before the fallback"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_a_private_ca_delivers_and_an_unknown_ca_is_refused() {
    let broker = RabbitMq::start_with_tls();
    let tls_port = broker.tls_port.unwrap();
    let reader = Reader::bound(broker.port, "spans", "spans-q", FieldTable::default()).await;
    let mut config = sink_config(tls_port, "spans", RabbitMqEncoding::OtlpProto);
    config.tls = Some(RabbitMqTlsConfig {
        ca_file: Some(broker.ca_file().display().to_string()),
        ..RabbitMqTlsConfig::default()
    });
    let sink = RabbitMqSink::new("events", &config, &Metrics::for_tests()).unwrap();
    let request = interleaved_traces(3, 2);
    sink.export(&batch_of(&[&request])).await.unwrap();
    let messages = reader
        .take(RabbitMqEncoding::OtlpProto, span_count(&request))
        .await;
    assert_eq!(decode(RabbitMqEncoding::OtlpProto, &messages[0].0), request);

    // The system's CAs do not know the test CA: the handshake fails, nothing is sent.
    config.tls = Some(RabbitMqTlsConfig::default());
    let sink = RabbitMqSink::new("events", &config, &Metrics::for_tests()).unwrap();
    let err = sink.export(&batch_of(&[&request])).await.unwrap_err();
    assert!(err.to_string().contains("RabbitMQ connect"), "{err}");
    assert_eq!(reader.message_count().await, 0);
}

/// `request` with every trace id moved by `by`, so several copies are distinguishable.
fn shifted(mut request: ExportTraceServiceRequest, by: u8) -> ExportTraceServiceRequest {
    for span in request
        .resource_spans
        .iter_mut()
        .flat_map(|rs| rs.scope_spans.iter_mut())
        .flat_map(|ss| ss.spans.iter_mut())
    {
        span.trace_id[0] = span.trace_id[0].wrapping_add(by);
    }
    request
}
