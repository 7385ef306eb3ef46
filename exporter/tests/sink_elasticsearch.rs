//! The Elasticsearch/OpenSearch sink against osmem-server (an in-memory OpenSearch API
//! emulator: round trips, dated indexes, mapping errors, outages) and against an
//! in-process Bulk-API double (exact NDJSON, injected per-item answers, auth, sizes).
//! No real Elasticsearch or OpenSearch can be installed on this machine.

mod servers;
mod transform_rules;

use std::collections::BTreeSet;
use std::time::Duration as StdDuration;

use base64::Engine;
use spansink_config::{
    Duration, ElasticsearchCompression, ElasticsearchSinkConfig, ExporterConfig,
};
use spansink_exporter::chain::{Admit, Chain};
use spansink_exporter::encoding::json::read_request;
use spansink_exporter::otlp::fixtures;
use spansink_exporter::otlp::{Batch, TraceData};
use spansink_exporter::sinks::elasticsearch::ElasticsearchSink;
use spansink_exporter::sinks::elasticsearch::encoding::{dedupe_keys, split_timestamp};
use spansink_exporter::sinks::{Sink, SinkError};
use spansink_exporter::telemetry::metrics::Metrics;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use servers::elasticsearch::{BulkDouble, Osmem};

/// Short item back-off so rounds of re-sends do not slow the tests.
fn config(endpoint: &str) -> ElasticsearchSinkConfig {
    ElasticsearchSinkConfig {
        index: Some("spans".into()),
        item_retry_backoff: Duration::from_millis(10),
        request_timeout: Duration::from_secs(5),
        ..ElasticsearchSinkConfig::new(endpoint)
    }
}

fn sink(config: &ElasticsearchSinkConfig) -> ElasticsearchSink {
    ElasticsearchSink::with_env("es", config, &|_| None).unwrap()
}

fn batch(request: &ExportTraceServiceRequest) -> Batch {
    fixtures::batch_of(&[request])
}

/// The `_id` the sink gives a span: hex trace id, then hex span id.
fn doc_ids(request: &ExportTraceServiceRequest) -> Vec<String> {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| {
            format!(
                "{}{}",
                const_hex::encode(&s.trace_id),
                const_hex::encode(&s.span_id)
            )
        })
        .collect()
}

fn expect_err(result: Result<(), SinkError>) -> SinkError {
    match result {
        Ok(()) => panic!("the export should have failed"),
        Err(e) => e,
    }
}

/// Maps for the attribute-like fields, as a user would put in an index template:
/// OpenSearch's `flat_object` (Elasticsearch: `flattened`) takes any typed value, where
/// dynamic mapping would refuse e.g. an array mixing numbers and strings.
const FLAT_MAPPINGS: &str = r#"{"properties":{
  "attributes":{"type":"flat_object"},"resource_attributes":{"type":"flat_object"},
  "scope_attributes":{"type":"flat_object"},"events":{"type":"flat_object"},
  "links":{"type":"flat_object"},"resource_entity_refs":{"type":"flat_object"}}}"#;

// ---------------------------------------------------------------------------------------
// Against osmem-server

#[tokio::test]
async fn rich_request_round_trips_every_field_through_osmem() {
    let server = Osmem::start();
    server.create_index("spans", FLAT_MAPPINGS).await;
    let original = fixtures::rich_request();
    sink(&config(&server.url()))
        .export(&batch(&original))
        .await
        .unwrap();

    let documents = server.documents("spans").await;
    let mut expected_ids = doc_ids(&original);
    expected_ids.sort();
    assert_eq!(
        documents
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>(),
        expected_ids
    );
    let mut spans = Vec::new();
    for (id, source) in &documents {
        let (json, timestamp) = split_timestamp(source)
            .unwrap_or_else(|| panic!("{id}: no @timestamp at the end of {source}"));
        let record = spansink_exporter::encoding::json::read_span_line(&json).unwrap();
        let start = chrono::DateTime::from_timestamp_nanos(
            i64::try_from(record.span.start_time_unix_nano).unwrap(),
        );
        assert_eq!(
            timestamp,
            start.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        );
        spans.push(json);
    }
    let back = read_request(spans.iter().map(String::as_str)).unwrap();
    // What the sink writes: the request with repeated keys removed (the cluster's JSON
    // parser refuses them), every other field as it was.
    let mut expected = original.clone();
    dedupe_keys(&mut expected);
    assert_eq!(fixtures::flatten(&back), fixtures::flatten(&expected));

    // The same text through the document API.
    let (id, source) = &documents[0];
    assert_eq!(
        server.document("spans", id).await.as_deref(),
        Some(source.as_str())
    );
}

/// Every transform rule, read back from the index: each document's `_source` and `_id`,
/// decoded field by field.
#[tokio::test]
async fn documents_hold_only_transformed_spans() {
    let server = Osmem::start();
    server.create_index("spans", FLAT_MAPPINGS).await;
    transform_rules::deliver("elasticsearch", &config(&server.url())).await;

    let documents = server.documents("spans").await;
    let mut spans = Vec::new();
    for (id, source) in &documents {
        assert_eq!(transform_rules::holds_secret(id.as_bytes()), None, "{id}");
        assert_eq!(
            transform_rules::holds_secret(source.as_bytes()),
            None,
            "{source}"
        );
        let (json, _) = split_timestamp(source)
            .unwrap_or_else(|| panic!("{id}: no @timestamp at the end of {source}"));
        spans.push(json);
    }
    let read = read_request(spans.iter().map(String::as_str)).unwrap();
    transform_rules::assert_transformed(&read, 2, "elasticsearch (osmem)");
}

#[tokio::test]
async fn a_retried_batch_overwrites_instead_of_duplicating() {
    let server = Osmem::start();
    let request = fixtures::request(40, 5);
    let sink = sink(&config(&server.url()));
    sink.export(&batch(&request)).await.unwrap();
    sink.export(&batch(&request)).await.unwrap();
    assert_eq!(server.count("spans").await, 40);
}

#[tokio::test]
async fn dated_index_names_come_from_span_start_times() {
    let server = Osmem::start();
    let config = ElasticsearchSinkConfig {
        index: None, // the default, spansink-%Y.%m.%d
        ..config(&server.url())
    };
    // fixtures::request starts its spans on 2018-12-13.
    sink(&config)
        .export(&batch(&fixtures::request(12, 2)))
        .await
        .unwrap();
    assert_eq!(server.count("spansink-2018.12.13").await, 12);
}

#[tokio::test]
async fn mapping_errors_from_the_emulator_are_permanent() {
    let server = Osmem::start();
    // `name` mapped as a number: every span name fails to parse.
    server
        .create_index("spans", r#"{"properties":{"name":{"type":"long"}}}"#)
        .await;
    let err = expect_err(
        sink(&config(&server.url()))
            .export(&batch(&fixtures::request(3, 1)))
            .await,
    );
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "mapping");
    assert!(
        err.to_string().contains("mapper_parsing_exception"),
        "{err}"
    );
}

/// The log lines written while `f` runs on this thread (the tests' runtime is
/// single-threaded, so the sink's own lines land here).
async fn logs_of<T>(f: impl std::future::Future<Output = T>) -> (T, String) {
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = {
        let _default = tracing::subscriber::set_default(subscriber);
        f.await
    };
    let text = String::from_utf8_lossy(&lines.0.lock().unwrap()).into_owned();
    (out, text)
}

#[tokio::test]
async fn cluster_down_at_start_fails_transiently_then_delivers() {
    let port = servers::free_port();
    let sink = sink(&config(&format!("http://127.0.0.1:{port}")));
    let request = fixtures::request(20, 3);
    let (result, logs) = logs_of(sink.export(&batch(&request))).await;
    let err = expect_err(result);
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "connect");
    // Each failed attempt is logged, so an outage shows without debug logs.
    assert!(
        logs.contains("WARN") && logs.contains("Elasticsearch bulk request failed"),
        "{logs}"
    );
    assert!(
        logs.contains("sink=es") && logs.contains("reason=connect"),
        "{logs}"
    );

    let server = Osmem::start_on(port);
    sink.export(&batch(&request)).await.unwrap();
    assert_eq!(server.count("spans").await, 20);
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_over_to_the_next() {
    let server = Osmem::start();
    let dead = format!("http://127.0.0.1:{}", servers::free_port());
    let config = ElasticsearchSinkConfig {
        endpoints: vec![dead, server.url()],
        ..config(&server.url())
    };
    let sink = sink(&config);
    sink.export(&batch(&fixtures::request(5, 1))).await.unwrap();
    // The endpoint that answered stays in use: the next export goes straight to it.
    sink.export(&batch(&fixtures::request(12, 1)))
        .await
        .unwrap();
    assert_eq!(server.count("spans").await, 12);
}

#[tokio::test]
async fn server_gone_mid_stream_loses_nothing_with_retry_and_fallback() {
    let server = Osmem::start();
    let dir = tempfile::tempdir().unwrap();
    let dead_letter = dir.path().join("dead-letter.jsonl");
    let yaml = format!(
        r#"
sinks:
  search:
    elasticsearch:
      endpoints: ["{url}"]
      index: spans
      item_retry_backoff: 10ms
      request_timeout: 2s
    batch: {{max_spans: 50, flush_interval: 50ms}}
    retry: {{max_attempts: 3, initial_backoff: 50ms, max_backoff: 100ms}}
    fallback: dead-letter
  dead-letter:
    fallback_only: true
    file: {{path: "{path}"}}
"#,
        url = server.url(),
        path = dead_letter.display()
    );
    let config: ExporterConfig = serde_yaml::from_str(&yaml).unwrap();
    spansink_config::validate(&config).unwrap();
    let metrics = Metrics::for_tests();
    let sinks = spansink_exporter::sinks::build_all(&config, &metrics)
        .await
        .unwrap();
    let chain = Chain::build(&config, &metrics, &|name, _| {
        Ok(sinks.get(name).cloned().unwrap())
    })
    .unwrap();
    chain.start();

    // Before the outage: delivered to the cluster.
    let before = fixtures::request(100, 2);
    chain.admit(TraceData::from_request(&before)).await.unwrap();
    let deadline = std::time::Instant::now() + StdDuration::from_secs(20);
    while server.count("spans").await < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "first spans not indexed"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    let indexed: BTreeSet<String> = server
        .documents("spans")
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();

    // The cluster goes away (osmem keeps nothing on disk, so what it had is counted
    // above); what follows fails transiently, is retried, then goes to the fallback.
    drop(server);
    let after = fixtures::interleaved_traces(6, 10);
    chain.admit(TraceData::from_request(&after)).await.unwrap();
    let report = chain.drain(StdDuration::from_secs(30)).await;
    assert_eq!(report.dropped_spans, 0, "{report:?}");
    // The outage was transient: the chain retried before falling back.
    assert!(
        metrics
            .sink_retried_spans
            .get_or_create(&metrics.sink("search"))
            .get()
            > 0
    );

    let text = std::fs::read_to_string(&dead_letter).unwrap();
    let fallen = read_request(text.lines()).unwrap();
    let mut delivered: BTreeSet<String> = indexed;
    delivered.extend(doc_ids(&fallen));
    let mut all: BTreeSet<String> = doc_ids(&before).into_iter().collect();
    all.extend(doc_ids(&after));
    assert_eq!(
        delivered, all,
        "every span is in the cluster or the dead letter"
    );
    assert!(!doc_ids(&fallen).is_empty());
}

// ---------------------------------------------------------------------------------------
// Against the Bulk-API double

#[tokio::test]
async fn bulk_requests_are_ndjson_as_the_api_documents() {
    let double = BulkDouble::start().await;
    let request = fixtures::rich_request();
    for compression in [
        ElasticsearchCompression::Gzip,
        ElasticsearchCompression::None,
    ] {
        let config = ElasticsearchSinkConfig {
            compression,
            pipeline: Some("spans v1".into()),
            username: Some("spansink".into()),
            password_env: Some("ES_PASSWORD".into()),
            ..config(&double.url())
        };
        let sink = ElasticsearchSink::with_env("es", &config, &|var| {
            (var == "ES_PASSWORD").then(|| "s3cret".to_string())
        })
        .unwrap();
        sink.export(&batch(&request)).await.unwrap();
    }
    assert_eq!(double.violations(), Vec::<String>::new());
    let requests = double.requests();
    assert_eq!(requests.len(), 2);
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("spansink:s3cret")
    );
    for (request_seen, gzip) in requests.iter().zip([true, false]) {
        assert_eq!(request_seen.content_type, "application/x-ndjson");
        assert_eq!(request_seen.gzip, gzip);
        assert_eq!(request_seen.authorization.as_deref(), Some(basic.as_str()));
        assert!(
            request_seen.query.contains("pipeline=spans%20v1")
                && request_seen.query.contains("filter_path="),
            "{}",
            request_seen.query
        );
        assert_eq!(request_seen.ids, doc_ids(&request));
        assert!(request_seen.operations.iter().all(|op| op == "index"));
    }
    assert!(requests[0].wire_bytes < requests[0].ndjson_bytes / 2);
    let docs = double.documents();
    assert_eq!(docs.len(), 7);
    assert!(docs.keys().all(|(index, _)| index == "spans"));
}

#[tokio::test]
async fn only_throttled_items_are_sent_again() {
    let double = BulkDouble::start().await;
    let request = fixtures::request(30, 2);
    let ids = doc_ids(&request);
    double.fail_item(&ids[3], 429, "es_rejected_execution_exception", 1);
    double.fail_item(&ids[17], 429, "es_rejected_execution_exception", 2);
    double.fail_item(&ids[29], 503, "unavailable_shards_exception", 1);
    sink(&config(&double.url()))
        .export(&batch(&request))
        .await
        .unwrap();
    let requests = double.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].ids, ids);
    assert_eq!(
        requests[1].ids,
        [ids[3].clone(), ids[17].clone(), ids[29].clone()]
    );
    assert_eq!(requests[2].ids, [ids[17].clone()]);
    assert_eq!(double.documents().len(), 30);
    assert_eq!(double.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn items_throttled_in_every_round_make_the_export_transient() {
    let double = BulkDouble::start().await;
    let request = fixtures::request(10, 1);
    let ids = doc_ids(&request);
    double.fail_item(&ids[5], 429, "es_rejected_execution_exception", 100);
    let config = ElasticsearchSinkConfig {
        item_retries: 2,
        ..config(&double.url())
    };
    let err = expect_err(sink(&config).export(&batch(&request)).await);
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "throttled");
    assert!(err.to_string().contains("1 of 10 documents"), "{err}");
    let requests = double.requests();
    assert_eq!(requests.len(), 3, "first send + 2 re-sends");
    assert!(requests[1..].iter().all(|r| r.ids == [ids[5].clone()]));
    assert_eq!(double.documents().len(), 9);
}

#[tokio::test]
async fn mapping_errors_are_permanent_and_not_sent_again() {
    let double = BulkDouble::start().await;
    let request = fixtures::request(10, 1);
    let ids = doc_ids(&request);
    double.fail_item(&ids[2], 400, "mapper_parsing_exception", 100);
    double.fail_item(&ids[7], 429, "es_rejected_execution_exception", 1);
    let err = expect_err(sink(&config(&double.url())).export(&batch(&request)).await);
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "mapping");
    assert!(
        err.to_string().contains("1 of 10 documents refused"),
        "{err}"
    );
    let requests = double.requests();
    // The throttled one is re-sent, the mapping failure is not.
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].ids, [ids[7].clone()]);
    assert_eq!(double.documents().len(), 9);
}

#[tokio::test]
async fn data_streams_use_create_and_a_retry_counts_conflicts_as_written() {
    let double = BulkDouble::start().await;
    let config = ElasticsearchSinkConfig {
        index: None,
        data_stream: Some("traces-spansink-default".into()),
        ..config(&double.url())
    };
    let sink = sink(&config);
    let request = fixtures::request(8, 1);
    sink.export(&batch(&request)).await.unwrap();
    // The same batch again (as after a timeout): every item answers 409.
    sink.export(&batch(&request)).await.unwrap();
    let requests = double.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests
            .iter()
            .all(|r| r.operations.iter().all(|op| op == "create"))
    );
    let docs = double.documents();
    assert_eq!(docs.len(), 8);
    for ((index, _), source) in &docs {
        assert_eq!(index, "traces-spansink-default");
        let value: serde_json::Value = serde_json::from_str(source).unwrap();
        assert!(
            value["@timestamp"]
                .as_str()
                .unwrap()
                .starts_with("2018-12-13T")
        );
    }
}

#[tokio::test]
async fn unauthorized_is_permanent_and_api_keys_are_sent() {
    let double = BulkDouble::start().await;
    double.require_authorization("ApiKey right-key");
    let config = ElasticsearchSinkConfig {
        api_key_env: Some("ES_API_KEY".into()),
        ..config(&double.url())
    };
    let wrong = ElasticsearchSink::with_env("es", &config, &|_| Some("wrong-key".into())).unwrap();
    let err = expect_err(wrong.export(&batch(&fixtures::request(3, 1))).await);
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "auth");
    assert_eq!(double.requests().len(), 1, "a 401 is not re-sent");

    let right = ElasticsearchSink::with_env("es", &config, &|_| Some("right-key".into())).unwrap();
    right
        .export(&batch(&fixtures::request(3, 1)))
        .await
        .unwrap();
    assert_eq!(double.documents().len(), 3);
}

#[tokio::test]
async fn large_batches_are_split_by_max_bulk_bytes() {
    let double = BulkDouble::start().await;
    let config = ElasticsearchSinkConfig {
        max_bulk_bytes: spansink_config::ByteSize::kib(8),
        ..config(&double.url())
    };
    let request = fixtures::request(60, 8);
    sink(&config).export(&batch(&request)).await.unwrap();
    let requests = double.requests();
    assert!(requests.len() >= 3, "{} requests", requests.len());
    assert!(requests.iter().all(|r| r.ndjson_bytes <= 8 * 1024));
    let sent: Vec<String> = requests.iter().flat_map(|r| r.ids.clone()).collect();
    assert_eq!(sent, doc_ids(&request), "every span once, in order");
    assert_eq!(double.documents().len(), 60);
}

#[tokio::test]
async fn a_request_the_cluster_finds_too_large_is_halved() {
    let double = BulkDouble::start().await;
    double.max_content_length(6000);
    let request = fixtures::request(20, 4);
    sink(&config(&double.url()))
        .export(&batch(&request))
        .await
        .unwrap();
    assert_eq!(double.documents().len(), 20);
    let requests = double.requests();
    assert!(requests[0].ndjson_bytes > 6000);
    assert!(requests.len() > 3, "{} requests", requests.len());

    // A single document above the limit cannot be split: permanent.
    let double = BulkDouble::start().await;
    double.max_content_length(100);
    let err = expect_err(
        sink(&config(&double.url()))
            .export(&batch(&fixtures::request(2, 1)))
            .await,
    );
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "too_large");
}

#[tokio::test]
async fn whole_request_errors_are_retried_in_rounds_then_transient() {
    let double = BulkDouble::start().await;
    double.answer_requests(&[503, 429]);
    let request = fixtures::request(5, 1);
    sink(&config(&double.url()))
        .export(&batch(&request))
        .await
        .unwrap();
    assert_eq!(double.requests().len(), 3);
    assert_eq!(double.documents().len(), 5);

    let double = BulkDouble::start().await;
    double.always_answer(503);
    let err = expect_err(sink(&config(&double.url())).export(&batch(&request)).await);
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "unavailable");
    assert_eq!(double.requests().len(), 4, "first send + 3 re-sends");
}

#[tokio::test]
async fn building_needs_the_credential_variables_but_not_the_cluster() {
    let config = ElasticsearchSinkConfig {
        username: Some("spansink".into()),
        password_env: Some("ES_PASSWORD_UNSET".into()),
        ..config("http://127.0.0.1:1")
    };
    let err = ElasticsearchSink::with_env("es", &config, &|_| None)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("ES_PASSWORD_UNSET (password_env) is not set"),
        "{err}"
    );
    // Nothing listens there, and building still works.
    assert!(ElasticsearchSink::with_env("es", &config, &|_| Some("x".into())).is_ok());
}
