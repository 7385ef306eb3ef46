//! A sink's `transform` reaches what every sink family writes: a chain built from YAML
//! with every rule, read back from a JSON Lines file (and its durable queue on disk), from
//! a second OTLP receiver the otlp sink forwards the request bytes to, and from the bytes
//! the Kafka and S3 `otlp_proto` encodings send. Each read back field by field; and the
//! filter, which runs first, sees the spans as they were sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use sha2::{Digest, Sha256};
use spansink_config::{ExporterConfig, KafkaEncoding, S3Compression, S3Encoding};
use spansink_exporter::chain::{Admission, Admit, Chain, Refusal, SpanTransform, build_chain};
use spansink_exporter::encoding::read_request;
use spansink_exporter::otlp::fixtures::{attribute, span_id, string, trace_id};
use spansink_exporter::otlp::{Batch, TraceData};
use spansink_exporter::receiver::{ReceiverAccess, ReceiverLimits, serve_grpc};
use spansink_exporter::sinks::kafka::encoding::encode_batch;
use spansink_exporter::sinks::s3::encoding::ObjectFormat;
use spansink_exporter::telemetry::metrics::Metrics;
use tokio_util::sync::CancellationToken;

/// Read by the `hash` rule; set once for this test binary (see `salt`).
const SALT_ENV: &str = "SPANSINK_TEST_TRANSFORM_SALT";
const SALT: &str = "pepper";

/// Every action, on every scope that has attributes.
const RULES: &str = r#"
    transform:
      rules:
        - {action: set, scope: resource, key: deployment.environment, value: production}
        - {action: insert, key: retries, value: 3}
        - {action: update, scope: scope, key: lib.token, value: "-"}
        - {action: delete, keys: [internal.debug]}
        - {action: rename, key: old.key, to: new.key}
        - {action: hash, keys: [enduser.id], salt_env: SPANSINK_TEST_TRANSFORM_SALT}
        - {action: redact, keys: [user.email]}
        - {action: redact, scope: event, patterns: [card_number], name: cards}
        - {action: redact, regex: ["token=[^&]+"], replacement: "token=***"}
        - {action: truncate, key: db.statement, max_bytes: 6}
        - {action: rename, scope: link, key: link.kind, to: link.type}
        - {action: drop_events}
"#;

fn salt() {
    // SAFETY: set before any chain is built, to the one value every test of this binary
    // wants; nothing else in this binary reads the variable.
    unsafe { std::env::set_var(SALT_ENV, SALT) };
}

/// Two spans with personal data in attributes, an event and a link; a resource and a
/// scope with attributes.
fn request() -> ExportTraceServiceRequest {
    let span = |i: usize| Span {
        trace_id: trace_id(1),
        span_id: span_id(i),
        name: format!("checkout-{i}"),
        attributes: vec![
            string("user.email", "jane@example.com"),
            string("http.url", "https://shop/?token=abc&q=1"),
            string("enduser.id", "u-1"),
            string("db.statement", "SELECT * FROM orders"),
            string("internal.debug", "x"),
            attribute("old.key", Value::IntValue(7)),
        ],
        events: vec![Event {
            time_unix_nano: 1,
            name: "exception".into(),
            attributes: vec![string("exception.message", "card 4111 1111 1111 1111")],
            dropped_attributes_count: 0,
        }],
        links: vec![Link {
            trace_id: trace_id(9),
            span_id: span_id(9),
            attributes: vec![string("link.kind", "follows")],
            ..Link::default()
        }],
        // The JSON Lines encoding writes an unset status as one: set, it reads back equal.
        status: Some(Status::default()),
        ..Span::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", "checkout")],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    attributes: vec![string("lib.token", "s3cr3t")],
                    ..InstrumentationScope::default()
                }),
                spans: vec![span(0), span(1)],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn text(attributes: &[KeyValue], key: &str) -> Option<Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

fn s(text: &str) -> Option<Value> {
    Some(Value::StringValue(text.into()))
}

/// What a sink received is `request()` with `RULES` applied, field by field.
fn assert_transformed(got: &ExportTraceServiceRequest, via: &str) {
    assert_eq!(got.resource_spans.len(), 1, "{via}");
    let resource = &got.resource_spans[0];
    let attributes = &resource.resource.as_ref().unwrap().attributes;
    assert_eq!(text(attributes, "service.name"), s("checkout"), "{via}");
    assert_eq!(
        text(attributes, "deployment.environment"),
        s("production"),
        "{via}"
    );
    let scope = &resource.scope_spans[0];
    assert_eq!(
        text(&scope.scope.as_ref().unwrap().attributes, "lib.token"),
        s("-"),
        "{via}"
    );
    assert_eq!(scope.spans.len(), 2, "{via}");
    let hashed = const_hex::encode(Sha256::digest(format!("{SALT}u-1")));
    for (i, span) in scope.spans.iter().enumerate() {
        assert_eq!(span.name, format!("checkout-{i}"), "{via}");
        assert_eq!(span.span_id, span_id(i), "{via}");
        let a = &span.attributes;
        assert_eq!(text(a, "user.email"), s("***"), "{via}");
        assert_eq!(
            text(a, "http.url"),
            s("https://shop/?token=***&q=1"),
            "{via}"
        );
        assert_eq!(text(a, "enduser.id"), s(&hashed), "{via}");
        assert_eq!(text(a, "db.statement"), s("SELECT"), "{via}");
        assert_eq!(text(a, "internal.debug"), None, "{via}");
        assert_eq!(text(a, "old.key"), None, "{via}");
        assert_eq!(text(a, "new.key"), Some(Value::IntValue(7)), "{via}");
        assert_eq!(text(a, "retries"), Some(Value::IntValue(3)), "{via}");
        assert_eq!(a.len(), 6, "{via}: one deleted, one inserted: {a:?}");
        assert!(span.events.is_empty(), "{via}");
        assert_eq!(span.dropped_events_count, 1, "{via}");
        assert_eq!(span.links.len(), 1, "{via}");
        assert_eq!(
            text(&span.links[0].attributes, "link.type"),
            s("follows"),
            "{via}"
        );
    }
}

/// Bytes that must appear nowhere once transformed.
const SECRETS: [&str; 4] = ["jane@example.com", "s3cr3t", "token=abc", "u-1"];

fn holds_secret(bytes: &[u8]) -> Option<&'static str> {
    SECRETS
        .into_iter()
        .find(|secret| bytes.windows(secret.len()).any(|w| w == secret.as_bytes()))
}

fn changes(metrics: &Metrics, sink: &str, rule: &str, action: &'static str) -> u64 {
    metrics
        .transform_changes
        .get_or_create(&spansink_exporter::telemetry::metrics::TransformLabels {
            sink: sink.into(),
            rule: rule.into(),
            action,
        })
        .get()
}

async fn chain(yaml: &str, metrics: &Metrics) -> Chain {
    salt();
    let config = ExporterConfig::from_yaml(yaml)
        .unwrap_or_else(|e| panic!("test config does not load: {e}\n{yaml}"));
    spansink_config::validate(&config).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    build_chain(&config, metrics).await.unwrap()
}

#[tokio::test]
async fn the_file_sink_and_its_durable_queue_hold_only_transformed_spans() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "sinks:\n  local:\n    file: {{path: {}, format: jsonl}}\n    batch: {{flush_interval: 50ms}}\n    queue: {{durable: {{path: {}}}}}\n{RULES}",
        dir.path().join("spans.jsonl").display(),
        dir.path().join("queue").display(),
    );
    let metrics = Metrics::for_tests();
    let chain = chain(&yaml, &metrics).await;
    // Not started: the request waits in the durable queue, on disk, as it will be sent.
    chain
        .admit(TraceData::from_request(&request()))
        .await
        .unwrap();
    let mut on_disk = 0;
    for entry in walk(&dir.path().join("queue")) {
        let bytes = std::fs::read(&entry).unwrap();
        on_disk += bytes.len();
        assert_eq!(
            holds_secret(&bytes),
            None,
            "{} holds a secret",
            entry.display()
        );
    }
    assert!(on_disk > 0, "the durable queue wrote the request");
    chain.start();
    let report = chain.drain(Duration::from_secs(30)).await;
    assert_eq!(report.delivered_spans, 2);
    let text = std::fs::read_to_string(dir.path().join("spans.jsonl")).unwrap();
    assert_eq!(holds_secret(text.as_bytes()), None, "{text}");
    assert_transformed(&read_request(text.lines()).unwrap(), "file jsonl");
    assert_eq!(changes(&metrics, "local", "6", "redact"), 2);
    // drop_events removes the events, so the event rule finds nothing to change.
    assert_eq!(changes(&metrics, "local", "cards", "redact"), 0);
    assert_eq!(changes(&metrics, "local", "11", "drop_events"), 2);
    assert_eq!(changes(&metrics, "local", "0", "set"), 1);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The receiving end of the otlp sink: a second exporter receiver that keeps what it is
/// sent.
#[derive(Default)]
struct Recorded(Mutex<Vec<TraceData>>);

#[async_trait]
impl Admit for Recorded {
    async fn admit(&self, data: TraceData) -> Result<Admission, Refusal> {
        self.0.lock().unwrap().push(data);
        Ok(Admission::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlp_sink_forwards_transformed_bytes_to_the_next_receiver() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let recorded = Arc::new(Recorded::default());
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve_grpc(
        listener,
        recorded.clone(),
        ReceiverLimits::default(),
        ReceiverAccess::default(),
        Metrics::for_tests(),
        stop.clone().cancelled_owned(),
    ));
    // A second sink without a transform gets the request as it was sent.
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "sinks:\n  forward:\n    otlp: {{endpoint: 'http://{address}'}}\n    batch: {{flush_interval: 50ms}}\n{RULES}  raw:\n    file: {{path: {}}}\n    batch: {{flush_interval: 50ms}}\n",
        dir.path().join("raw.jsonl").display()
    );
    let metrics = Metrics::for_tests();
    let chain = chain(&yaml, &metrics).await;
    chain.start();
    chain
        .admit(TraceData::from_request(&request()))
        .await
        .unwrap();
    let report = chain.drain(Duration::from_secs(30)).await;
    assert_eq!(report.delivered_spans, 4, "two sinks, two spans each");
    stop.cancel();
    server.await.unwrap().unwrap();

    let received = recorded.0.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(holds_secret(received[0].bytes()), None);
    assert_transformed(&received[0].decode().unwrap(), "otlp passthrough");
    let raw = std::fs::read_to_string(dir.path().join("raw.jsonl")).unwrap();
    assert_eq!(
        read_request(raw.lines()).unwrap(),
        request(),
        "the other sink is untouched"
    );
}

/// Kafka and S3 with `otlp_proto` send the batch's request bytes as they are queued.
#[tokio::test]
async fn kafka_and_s3_protobuf_encodings_carry_the_transformed_request() {
    salt();
    let config =
        ExporterConfig::from_yaml(&format!("sinks:\n  main:\n    blackhole: {{}}\n{RULES}"))
            .unwrap();
    let metrics = Metrics::for_tests();
    let transform = SpanTransform::new(
        "main",
        config.sinks["main"].transform.as_ref().unwrap(),
        &metrics,
    )
    .unwrap();
    let batch: Batch = [request(), request()]
        .iter()
        .map(|r| transform.apply(TraceData::from_request(r)).unwrap())
        .collect();

    let kafka = encode_batch(&batch, KafkaEncoding::OtlpProto, 1 << 20).unwrap();
    assert_eq!(kafka.messages.len(), 1);
    let message = &kafka.messages[0];
    assert_eq!(holds_secret(&message.value), None);
    let decoded = ExportTraceServiceRequest::decode(message.value.as_ref()).unwrap();
    assert_eq!(
        decoded.resource_spans.len(),
        2,
        "both requests of the batch"
    );
    for (i, resource) in decoded.resource_spans.iter().enumerate() {
        let one = ExportTraceServiceRequest {
            resource_spans: vec![resource.clone()],
        };
        assert_transformed(&one, &format!("kafka otlp_proto, request {i}"));
    }

    let object = ObjectFormat {
        encoding: S3Encoding::OtlpProto,
        compression: S3Compression::None,
    }
    .encode(&batch)
    .unwrap();
    assert_eq!(holds_secret(&object), None);
    let decoded = ExportTraceServiceRequest::decode(object.as_ref()).unwrap();
    for resource in &decoded.resource_spans {
        let one = ExportTraceServiceRequest {
            resource_spans: vec![resource.clone()],
        };
        assert_transformed(&one, "s3 otlp_proto");
    }
    assert_eq!(changes(&metrics, "main", "5", "hash"), 4);
}

#[tokio::test]
async fn the_filter_sees_the_spans_as_sent_and_the_transform_only_what_it_kept() {
    // Span 1 belongs to another user; the filter leaves it out by the email the transform
    // then redacts. Were the rules applied first, both emails would read `***` and both
    // spans would pass.
    let mut sent = request();
    let spans = &mut sent.resource_spans[0].scope_spans[0].spans;
    spans[1].attributes[0] = string("user.email", "bob@example.com");
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "sinks:\n  local:\n    file: {{path: {}, format: jsonl}}\n    batch: {{flush_interval: 50ms}}\n    filter: {{exclude: {{attributes: [{{key: user.email, value: bob@example.com}}]}}}}\n{RULES}",
        dir.path().join("spans.jsonl").display(),
    );
    let metrics = Metrics::for_tests();
    let chain = chain(&yaml, &metrics).await;
    chain.start();
    chain.admit(TraceData::from_request(&sent)).await.unwrap();
    let report = chain.drain(Duration::from_secs(30)).await;
    assert_eq!(report.delivered_spans, 1);
    let text = std::fs::read_to_string(dir.path().join("spans.jsonl")).unwrap();
    assert_eq!(holds_secret(text.as_bytes()), None, "{text}");
    assert!(!text.contains("bob@example.com"), "{text}");
    let got = read_request(text.lines()).unwrap();
    let kept = &got.resource_spans[0].scope_spans[0].spans;
    assert_eq!(kept.len(), 1, "{text}");
    assert_eq!(kept[0].name, "checkout-0");
    assert_eq!(
        self::text(&kept[0].attributes, "user.email"),
        s("***"),
        "{text}"
    );
    // The rules counted only the span the filter kept.
    assert_eq!(changes(&metrics, "local", "6", "redact"), 1);
    assert_eq!(changes(&metrics, "local", "11", "drop_events"), 1);
}
