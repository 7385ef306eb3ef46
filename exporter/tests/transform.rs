//! A sink's `transform` reaches what every sink family writes: a chain built from YAML
//! with every rule (`transform_rules::RULES`), read back from a JSON Lines file (and its
//! durable queue on disk), from a second OTLP receiver the otlp sink forwards the request
//! bytes to, and from the bytes the Kafka and S3 `otlp_proto` encodings send. Each read
//! back field by field; and the filter, which runs first, sees the spans as they were sent.
//! The same rules are checked in each real backend by that sink's test binary
//! (`rows_hold_only_transformed_spans` in sink_postgres and sink_clickhouse, and in
//! sink_redis, sink_rabbitmq, sink_kafka, sink_s3, sink_elasticsearch the test named
//! `*_hold_only_transformed_spans*`).

mod transform_rules;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use spansink_config::{ExporterConfig, KafkaEncoding, S3Compression, S3Encoding};
use spansink_exporter::chain::{Admission, Admit, Refusal, SpanTransform};
use spansink_exporter::encoding::read_request;
use spansink_exporter::otlp::fixtures::string;
use spansink_exporter::otlp::{Batch, TraceData};
use spansink_exporter::receiver::{ReceiverAccess, ReceiverLimits, serve_grpc};
use spansink_exporter::sinks::kafka::encoding::encode_batch;
use spansink_exporter::sinks::s3::encoding::ObjectFormat;
use spansink_exporter::telemetry::metrics::Metrics;
use tokio_util::sync::CancellationToken;
use transform_rules::{RULES, assert_transformed, chain, changes, holds_secret, request, s, salt};

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
    assert_transformed(&read_request(text.lines()).unwrap(), 2, "file jsonl");
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
    assert_transformed(&received[0].decode().unwrap(), 2, "otlp passthrough");
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
        assert_transformed(&one, 2, &format!("kafka otlp_proto, request {i}"));
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
        assert_transformed(&one, 2, "s3 otlp_proto");
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
        transform_rules::text(&kept[0].attributes, "user.email"),
        s("***"),
        "{text}"
    );
    // The rules counted only the span the filter kept.
    assert_eq!(changes(&metrics, "local", "6", "redact"), 1);
    assert_eq!(changes(&metrics, "local", "11", "drop_events"), 1);
}
