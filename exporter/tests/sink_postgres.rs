//! PostgreSQL sink tests against a real PostgreSQL 15 server (one cluster per test, so
//! tests that stop their server do not disturb the others): every field read back with
//! SQL, idempotent retries, server down at start or mid-stream (with a chain of retry and
//! a file fallback), and permanent errors that are not retried.

mod servers;
mod transform_rules;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use servers::postgres::Postgres;
use spansink_config::{ExporterConfig, PostgresSinkConfig, SinkConfig};
use spansink_exporter::chain::{Admit, Chain};
use spansink_exporter::encoding::attributes::read_attributes;
use spansink_exporter::encoding::flat::flat_spans;
use spansink_exporter::encoding::json::{read_entity_refs, read_events, read_links};
use spansink_exporter::otlp::fixtures::{self, batch_of, kv, v_double, v_str};
use spansink_exporter::otlp::{Batch, TraceData};
use spansink_exporter::sinks::file::FileSink;
use spansink_exporter::sinks::postgres::PostgresSink;
use spansink_exporter::sinks::{BuildError, SharedSink, Sink};
use spansink_exporter::telemetry::metrics::{Metrics, SinkReasonLabels};

fn config(pg: &Postgres, table: &str) -> PostgresSinkConfig {
    PostgresSinkConfig {
        table: table.to_string(),
        connect_timeout: spansink_config::Duration::from_secs(3),
        ..PostgresSinkConfig::new("127.0.0.1", pg.port(), "postgres", "postgres")
    }
}

fn sink(config: &PostgresSinkConfig) -> PostgresSink {
    PostgresSink::new("db", config, &Metrics::for_tests()).unwrap()
}

/// A request of `spans` spans whose ids are unique to `n` (fixtures reuse ids).
fn numbered_request(n: usize, spans: usize) -> ExportTraceServiceRequest {
    let mut request = fixtures::request(spans, 5);
    for (i, span) in request.resource_spans[0].scope_spans[0]
        .spans
        .iter_mut()
        .enumerate()
    {
        span.trace_id = fixtures::trace_id(n);
        span.span_id = fixtures::span_id(n * 10_000 + i);
    }
    request
}

async fn count(pg: &Postgres, table: &str) -> i64 {
    pg.client("postgres")
        .await
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

async fn span_ids(pg: &Postgres, table: &str) -> BTreeSet<Vec<u8>> {
    pg.client("postgres")
        .await
        .query(&format!("SELECT span_id FROM {table}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, Vec<u8>>(0))
        .collect()
}

// ------------------------------------------------------------------ round trip

/// One span as the table holds it: resource, scope and span, rebuilt from a row.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    resource: Resource,
    resource_schema_url: String,
    scope: InstrumentationScope,
    scope_schema_url: String,
    span: Span,
}

/// What jsonb does to an attribute object (see `sinks::postgres::encoding`): keys in its
/// own order and, of duplicate keys, the last one only. Applied to both sides, so the
/// comparison checks every value and type exactly.
fn jsonb_normal(attributes: &[KeyValue]) -> Vec<KeyValue> {
    let mut out: Vec<KeyValue> = Vec::new();
    for kv in attributes {
        // An empty value is stored as `null` and reads back as no value.
        let value = kv
            .value
            .as_ref()
            .and_then(|v| v.value.as_ref())
            .map(|v| AnyValue {
                value: Some(normal_value(v)),
            });
        out.retain(|seen| seen.key != kv.key);
        out.push(KeyValue {
            key: kv.key.clone(),
            value,
            key_strindex: 0,
        });
    }
    out.sort_by(|a, b| (a.key.len(), a.key.as_bytes()).cmp(&(b.key.len(), b.key.as_bytes())));
    out
}

fn normal_value(value: &Value) -> Value {
    match value {
        Value::KvlistValue(list) => {
            Value::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList {
                values: jsonb_normal(&list.values),
            })
        }
        Value::ArrayValue(array) => {
            Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                values: array
                    .values
                    .iter()
                    .map(|v| AnyValue {
                        value: v.value.as_ref().map(normal_value),
                    })
                    .collect(),
            })
        }
        other => other.clone(),
    }
}

fn normalised(mut s: Stored) -> Stored {
    s.resource.attributes = jsonb_normal(&s.resource.attributes);
    s.scope.attributes = jsonb_normal(&s.scope.attributes);
    s.span.attributes = jsonb_normal(&s.span.attributes);
    for e in &mut s.span.events {
        e.attributes = jsonb_normal(&e.attributes);
    }
    for l in &mut s.span.links {
        l.attributes = jsonb_normal(&l.attributes);
    }
    // An absent status is stored as unset with no message, which OTLP treats the same.
    let (code, message) = s
        .span
        .status
        .as_ref()
        .map_or((0, String::new()), |st| (st.code, st.message.clone()));
    s.span.status = Some(Status { code, message });
    s
}

fn expected(request: &ExportTraceServiceRequest) -> Vec<Stored> {
    let mut out: Vec<Stored> = flat_spans(request)
        .map(|flat| {
            let g = flat.group;
            normalised(Stored {
                resource: Resource {
                    attributes: g.resource_attributes().to_vec(),
                    dropped_attributes_count: g.resource_dropped_attributes_count(),
                    entity_refs: g.resource_entity_refs().to_vec(),
                },
                resource_schema_url: g.resource_schema_url().to_string(),
                scope: InstrumentationScope {
                    name: g.scope_name().to_string(),
                    version: g.scope_version().to_string(),
                    attributes: g.scope_attributes().to_vec(),
                    dropped_attributes_count: g.scope_dropped_attributes_count(),
                },
                scope_schema_url: g.scope_schema_url().to_string(),
                span: flat.span.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.span.span_id.cmp(&b.span.span_id));
    out
}

fn enum_value(names: &[&str], text: &str) -> i32 {
    spansink_exporter::encoding::flat::enum_value(names, text)
        .unwrap_or_else(|| panic!("{text} is not an enum name"))
}

fn u32_of(row: &tokio_postgres::Row, column: &str) -> u32 {
    u32::try_from(row.get::<_, i64>(column)).unwrap()
}

/// Reads every row back into spans, checking the derived columns on the way.
async fn read_back(pg: &Postgres, table: &str) -> Vec<Stored> {
    use spansink_exporter::encoding::flat::{SPAN_KINDS, STATUS_CODES};
    let client = pg.client("postgres").await;
    let rows = client
        .query(
            &format!(
                "SELECT *, attributes::text AS a, events::text AS ev, links::text AS li, \
                 resource_attributes::text AS ra, resource_entity_refs::text AS er, \
                 scope_attributes::text AS sa, \
                 (extract(epoch FROM start_time) * 1000000)::bigint AS start_us, \
                 (extract(epoch FROM end_time) * 1000000)::bigint AS end_us \
                 FROM {table} ORDER BY span_id"
            ),
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            let start: i64 = row.get("start_time_unix_nano");
            let end: i64 = row.get("end_time_unix_nano");
            // timestamptz holds the time to the microsecond; bigint the exact nanos.
            assert_eq!(row.get::<_, i64>("start_us"), start / 1000);
            assert_eq!(row.get::<_, i64>("end_us"), end / 1000);
            assert_eq!(row.get::<_, i64>("duration_ns"), (end - start).max(0));
            let attributes: String = row.get("a");
            let resource_attributes = read_attributes(row.get("ra")).unwrap();
            let service: String = row.get("service_name");
            assert_eq!(
                service,
                spansink_exporter::encoding::flat::service_name(&resource_attributes)
            );
            let parent: Option<Vec<u8>> = row.get("parent_span_id");
            assert_ne!(parent.as_deref(), Some(&[][..]), "roots have NULL parents");
            Stored {
                resource: Resource {
                    attributes: resource_attributes,
                    dropped_attributes_count: u32_of(row, "resource_dropped_attributes_count"),
                    entity_refs: read_entity_refs(row.get("er")).unwrap(),
                },
                resource_schema_url: row.get("resource_schema_url"),
                scope: InstrumentationScope {
                    name: row.get("scope_name"),
                    version: row.get("scope_version"),
                    attributes: read_attributes(row.get("sa")).unwrap(),
                    dropped_attributes_count: u32_of(row, "scope_dropped_attributes_count"),
                },
                scope_schema_url: row.get("scope_schema_url"),
                span: Span {
                    trace_id: row.get("trace_id"),
                    span_id: row.get("span_id"),
                    trace_state: row.get("trace_state"),
                    parent_span_id: parent.unwrap_or_default(),
                    flags: u32_of(row, "flags"),
                    name: row.get("name"),
                    kind: enum_value(&SPAN_KINDS, row.get("kind")),
                    start_time_unix_nano: start as u64,
                    end_time_unix_nano: end as u64,
                    attributes: read_attributes(&attributes)
                        .unwrap_or_else(|e| panic!("{attributes}: {e}")),
                    dropped_attributes_count: u32_of(row, "dropped_attributes_count"),
                    events: read_events(row.get("ev")).unwrap(),
                    dropped_events_count: u32_of(row, "dropped_events_count"),
                    links: read_links(row.get("li")).unwrap(),
                    dropped_links_count: u32_of(row, "dropped_links_count"),
                    status: Some(Status {
                        code: enum_value(&STATUS_CODES, row.get("status_code")),
                        message: row.get("status_message"),
                    }),
                },
            }
        })
        .map(normalised)
        .collect()
}

#[tokio::test]
async fn round_trip_keeps_every_field() {
    let pg = Postgres::start();
    let config = PostgresSinkConfig {
        table: "tracing.spans".into(),
        ..config(&pg, "")
    };
    pg.client("postgres")
        .await
        .batch_execute("CREATE SCHEMA tracing")
        .await
        .unwrap();
    let sink = sink(&config);
    let request = fixtures::rich_request();
    sink.export(&batch_of(&[&request])).await.unwrap();
    let back = read_back(&pg, "tracing.spans").await;
    let want = expected(&request);
    assert_eq!(back.len(), 7);
    for (got, want) in back.iter().zip(&want) {
        assert_eq!(got, want);
    }
    // Columns are typed for queries: a JSONB attribute by path, kinds by name.
    let client = pg.client("postgres").await;
    let row = client
        .query_one(
            "SELECT (attributes->>'http.status_code')::int, kind, status_code \
             FROM tracing.spans WHERE attributes ? 'double.inf'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 504);
    assert_eq!(row.get::<_, String>(1), "server");
    assert_eq!(row.get::<_, String>(2), "error");
    let indexes: Vec<String> = client
        .query(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'tracing' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        indexes,
        [
            "spans_service_start_idx",
            "spans_start_time_brin",
            "spans_trace_span_key"
        ]
    );
    sink.shutdown().await.unwrap();
}

/// Every transform rule, read back with SQL: every column of every row as text, and each
/// row as a span with its resource and scope, field by field.
#[tokio::test]
async fn rows_hold_only_transformed_spans() {
    let pg = Postgres::start();
    transform_rules::deliver("postgres", &config(&pg, "transformed")).await;

    let client = pg.client("postgres").await;
    for row in client
        .query("SELECT t::text AS row FROM transformed t", &[])
        .await
        .unwrap()
    {
        let text: String = row.get("row");
        assert_eq!(
            transform_rules::holds_secret(text.as_bytes()),
            None,
            "{text}"
        );
    }
    let read = ExportTraceServiceRequest {
        resource_spans: read_back(&pg, "transformed")
            .await
            .into_iter()
            .map(|stored| ResourceSpans {
                resource: Some(stored.resource),
                scope_spans: vec![ScopeSpans {
                    scope: Some(stored.scope),
                    spans: vec![stored.span],
                    schema_url: stored.scope_schema_url,
                }],
                schema_url: stored.resource_schema_url,
            })
            .collect(),
    };
    transform_rules::assert_transformed(&read, 2, "postgres");
}

#[tokio::test]
async fn values_postgres_cannot_hold_as_sent_are_adapted_not_refused() {
    let pg = Postgres::start();
    let sink = sink(&config(&pg, "spans"));
    let mut request = fixtures::request(1, 0);
    let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
    span.name = "nul\0name".into();
    span.attributes = vec![
        kv("nul\0key", v_str("nul\0value")),
        kv("whole.big", v_double(1e17)),
        kv("huge", v_double(-1.5e300)),
    ];
    sink.export(&batch_of(&[&request])).await.unwrap();
    let row = pg
        .client("postgres")
        .await
        .query_one("SELECT name, attributes::text FROM spans", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "nul\u{fffd}name");
    let attributes = read_attributes(row.get(1)).unwrap();
    assert_eq!(
        jsonb_normal(&attributes),
        jsonb_normal(&[
            kv("nul\u{fffd}key", v_str("nul\u{fffd}value")),
            kv("whole.big", v_double(1e17)),
            kv("huge", v_double(-1.5e300)),
        ])
    );
}

// ------------------------------------------------------------------ idempotence

#[tokio::test]
async fn a_retried_batch_adds_no_rows() {
    let pg = Postgres::start();
    let sink = sink(&config(&pg, "spans"));
    let first = numbered_request(1, 50);
    let batch = batch_of(&[&first]);
    sink.export(&batch).await.unwrap();
    // The same batch again, as a retry after a lost answer would send it.
    sink.export(&batch).await.unwrap();
    assert_eq!(count(&pg, "spans").await, 50);
    // A batch overlapping the first, with a span twice in itself.
    let second = numbered_request(2, 20);
    let overlapping = batch_of(&[&second, &first, &second]);
    sink.export(&overlapping).await.unwrap();
    assert_eq!(count(&pg, "spans").await, 70);
    // Many exports at once over the pool (4 connections), some of the same spans.
    let sink = Arc::new(sink);
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let sink = sink.clone();
            let request = numbered_request(10 + i % 6, 30);
            tokio::spawn(async move { sink.export(&batch_of(&[&request])).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(count(&pg, "spans").await, 70 + 6 * 30);
}

// ------------------------------------------------------------------ availability

#[tokio::test]
async fn server_down_at_start_fails_transiently_then_delivers_once_up() {
    let mut pg = Postgres::init();
    let sink = sink(&config(&pg, "spans"));
    let batch = batch_of(&[&numbered_request(1, 10)]);
    let err = sink.export(&batch).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "connect", "{err}");
    pg.start_server();
    sink.export(&batch).await.unwrap();
    assert_eq!(count(&pg, "spans").await, 10);
}

#[tokio::test]
async fn a_dropped_table_is_created_again() {
    let pg = Postgres::start();
    let sink = sink(&config(&pg, "spans"));
    sink.export(&batch_of(&[&numbered_request(1, 3)]))
        .await
        .unwrap();
    pg.client("postgres")
        .await
        .batch_execute("DROP TABLE spans")
        .await
        .unwrap();
    let batch = batch_of(&[&numbered_request(2, 4)]);
    let err = sink.export(&batch).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "schema");
    sink.export(&batch).await.unwrap();
    assert_eq!(count(&pg, "spans").await, 4);
}

fn chain_config(pg: &Postgres, dlq: &std::path::Path) -> ExporterConfig {
    ExporterConfig::from_yaml(&format!(
        "sinks:
  db:
    postgres: {{host: 127.0.0.1, port: {port}, database: postgres, user: postgres, connect_timeout: 1s}}
    batch: {{max_spans: 20, flush_interval: 50ms}}
    timeout: 5s
    retry: {{max_attempts: 3, initial_backoff: 50ms, max_backoff: 200ms, max_elapsed: 3s}}
    fallback: dlq
  dlq:
    fallback_only: true
    file: {{path: {dlq}}}
",
        port = pg.port(),
        dlq = dlq.display()
    ))
    .unwrap()
}

fn make_sink(name: &str, config: &SinkConfig) -> Result<SharedSink, BuildError> {
    let metrics = Metrics::for_tests();
    if let Some(pg) = &config.postgres {
        Ok(Arc::new(PostgresSink::new(name, pg, &metrics)?))
    } else if let Some(file) = &config.file {
        Ok(Arc::new(FileSink::new(name, file)?))
    } else {
        Err(BuildError {
            sink: name.into(),
            message: "test chain has postgres and file sinks only".into(),
        })
    }
}

fn file_span_ids(path: &std::path::Path) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let request = spansink_exporter::encoding::read_request(text.lines()).unwrap();
    flat_spans(&request)
        .map(|f| f.span.span_id.clone())
        .collect()
}

#[tokio::test]
async fn server_gone_mid_stream_is_transient_and_a_chain_with_fallback_loses_nothing() {
    let mut pg = Postgres::start();
    // The sink alone: writes, then the server crashes under it.
    let alone = sink(&config(&pg, "spans"));
    alone
        .export(&batch_of(&[&numbered_request(1, 10)]))
        .await
        .unwrap();
    pg.stop();
    let err = alone
        .export(&batch_of(&[&numbered_request(2, 10)]))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    pg.start_server();
    // The pool replaces its dead connections.
    alone
        .export(&batch_of(&[&numbered_request(2, 10)]))
        .await
        .unwrap();
    assert_eq!(count(&pg, "spans").await, 20);

    // In a chain with retries and a file fallback: the server goes away while batches
    // flow; every span ends in the table or the dead-letter file.
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let metrics = Metrics::for_tests();
    let chain = Chain::build(&chain_config(&pg, &dlq), &metrics, &make_sink).unwrap();
    chain.start();
    let mut sent = BTreeSet::new();
    for n in 100..130 {
        let request = numbered_request(n, 10);
        sent.extend(flat_spans(&request).map(|f| f.span.span_id.clone()));
        chain
            .admit(TraceData::from_request(&request))
            .await
            .unwrap();
        if n == 110 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            pg.stop();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = chain.drain(Duration::from_secs(60)).await;
    assert_eq!(report.dropped_spans, 0, "{report:?}");
    pg.start_server();
    let in_table = span_ids(&pg, "spans").await;
    let in_file: BTreeSet<_> = file_span_ids(&dlq).into_iter().collect();
    let delivered: BTreeSet<_> = in_table.union(&in_file).cloned().collect();
    assert!(
        sent.is_subset(&delivered),
        "{} of {} spans lost",
        sent.difference(&delivered).count(),
        sent.len()
    );
    assert!(
        !in_file.is_empty(),
        "batches after the crash went to the fallback"
    );
    let retried = metrics
        .sink_retried_spans
        .get_or_create(&metrics.sink("db"))
        .get();
    assert!(retried > 0, "transient failures were retried");
}

// ------------------------------------------------------------------ permanent errors

#[tokio::test]
async fn a_role_without_insert_privilege_is_permanent_and_not_retried() {
    let pg = Postgres::start();
    // The table exists and is complete (made by a privileged sink), so the limited role
    // needs no DDL; it may only read.
    sink(&config(&pg, "spans"))
        .export(&batch_of(&[&numbered_request(1, 2)]))
        .await
        .unwrap();
    pg.client("postgres")
        .await
        .batch_execute("CREATE ROLE reader LOGIN; GRANT SELECT ON spans TO reader")
        .await
        .unwrap();
    let reader = PostgresSinkConfig {
        user: "reader".into(),
        ..config(&pg, "spans")
    };
    let err = sink(&reader)
        .export(&batch_of(&[&numbered_request(2, 2)]))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "permission", "{err}");
    assert!(err.to_string().contains("42501"), "{err}");

    // In a chain: one attempt, no retry, the batch goes to the fallback at once.
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let mut config = chain_config(&pg, &dlq);
    config
        .sinks
        .get_mut("db")
        .unwrap()
        .postgres
        .as_mut()
        .unwrap()
        .user = "reader".into();
    let metrics = Metrics::for_tests();
    let chain = Chain::build(&config, &metrics, &make_sink).unwrap();
    chain.start();
    chain
        .admit(TraceData::from_request(&numbered_request(3, 5)))
        .await
        .unwrap();
    chain.drain(Duration::from_secs(30)).await;
    assert_eq!(file_span_ids(&dlq).len(), 5);
    assert_eq!(
        metrics
            .sink_retried_spans
            .get_or_create(&metrics.sink("db"))
            .get(),
        0
    );
    assert_eq!(
        metrics
            .sink_failed_spans
            .get_or_create(&SinkReasonLabels {
                sink: "db".into(),
                reason: "permission"
            })
            .get(),
        5
    );
    assert_eq!(count(&pg, "spans").await, 2);
}

#[tokio::test]
async fn an_incompatible_or_missing_table_is_permanent_and_named() {
    let pg = Postgres::start();
    pg.client("postgres")
        .await
        .batch_execute("CREATE TABLE bad (trace_id text, span_id bytea, name int)")
        .await
        .unwrap();
    let batch = batch_of(&[&numbered_request(1, 2)]);
    let err = sink(&config(&pg, "bad")).export(&batch).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "schema");
    let text = err.to_string();
    assert!(
        text.contains("trace_id is text, the sink writes bytea")
            && text.contains("name is integer, the sink writes text"),
        "{text}"
    );

    let no_create = PostgresSinkConfig {
        create_table: false,
        ..config(&pg, "absent")
    };
    let err = sink(&no_create).export(&batch).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string().contains(
            "table \"absent\" does not exist; create it or set postgres.create_table: true"
        ),
        "{err}"
    );

    // An older table (fewer columns) is migrated when allowed, refused when not.
    pg.client("postgres")
        .await
        .batch_execute(
            "CREATE TABLE old (trace_id bytea NOT NULL, span_id bytea NOT NULL, name text); \
             CREATE UNIQUE INDEX ON old (trace_id, span_id); \
             INSERT INTO old VALUES ('\\x01', '\\x02', 'kept')",
        )
        .await
        .unwrap();
    let err = sink(&PostgresSinkConfig {
        create_table: false,
        ..config(&pg, "old")
    })
    .export(&batch)
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("lacks columns parent_span_id, trace_state"),
        "{err}"
    );
    sink(&config(&pg, "old")).export(&batch).await.unwrap();
    assert_eq!(count(&pg, "old").await, 3);
}

#[tokio::test]
async fn create_table_creates_a_missing_schema_or_says_which_grant_is_missing() {
    let pg = Postgres::start();
    let batch = batch_of(&[&numbered_request(1, 3)]);
    // examples/postgres.yaml's table on a fresh database: schema and table are created.
    sink(&PostgresSinkConfig {
        table: "tracing.spans".into(),
        ..config(&pg, "")
    })
    .export(&batch)
    .await
    .unwrap();
    assert_eq!(count(&pg, "tracing.spans").await, 3);

    // Without create_table, a missing schema is named as such.
    let err = sink(&PostgresSinkConfig {
        table: "absent.spans".into(),
        create_table: false,
        ..config(&pg, "")
    })
    .export(&batch)
    .await
    .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string().contains(
            "schema \"absent\" (and table \"absent\".\"spans\") does not exist; create it or set postgres.create_table: true"
        ),
        "{err}"
    );

    // A role that may not create schemas gets the statement and the grant to make.
    pg.client("postgres")
        .await
        .batch_execute("CREATE ROLE writer LOGIN")
        .await
        .unwrap();
    let err = sink(&PostgresSinkConfig {
        table: "other.spans".into(),
        user: "writer".into(),
        ..config(&pg, "")
    })
    .export(&batch)
    .await
    .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "schema", "{err}");
    assert!(
        err.to_string().contains(
            "schema \"other\" does not exist and this role may not create it; create it (CREATE SCHEMA \"other\") or grant the role CREATE on the database"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_wrong_password_or_database_is_permanent() {
    let pg = Postgres::start();
    let missing_db = PostgresSinkConfig {
        database: "nope".into(),
        ..config(&pg, "spans")
    };
    let err = sink(&missing_db)
        .export(&batch_of(&[&numbered_request(1, 1)]))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "config", "{err}");
    // A password variable that is not set fails the build, naming it.
    let with_password = PostgresSinkConfig {
        password_env: Some("SPANSINK_TEST_UNSET_PG_PASSWORD".into()),
        ..config(&pg, "spans")
    };
    let err = PostgresSink::with_env("db", &with_password, &|_| None)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("SPANSINK_TEST_UNSET_PG_PASSWORD"),
        "{err}"
    );
}

#[tokio::test]
async fn the_standard_builder_makes_a_postgres_sink_without_a_server() {
    let yaml = "sinks:\n  db:\n    postgres: {host: 127.0.0.1, port: 1, database: d, user: u}\n";
    let config = ExporterConfig::from_yaml(yaml).unwrap();
    let sinks = spansink_exporter::sinks::build_all(&config, &Metrics::for_tests())
        .await
        .unwrap();
    let err = sinks["db"]
        .export(&batch_of(&[&numbered_request(1, 1)]))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    let empty = Batch::new();
    sinks["db"].export(&empty).await.unwrap();
}

// ------------------------------------------------------------------ throughput (manual)

/// Sink write rate of distinct rows (the exporter's `bench` cycles 32 requests, so after
/// the first 16,384 spans it measures the duplicate-skipping path). Prints spans/s and
/// asserts nothing about speed. Run by hand against a server of your choice:
/// `SPANSINK_PG_BENCH_PORT=5432 cargo test --release -p spansink-exporter --test
/// sink_postgres -- --ignored --nocapture write_rate_of_distinct_rows`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "manual benchmark; needs SPANSINK_PG_BENCH_PORT"]
async fn write_rate_of_distinct_rows() {
    use spansink_exporter::bench::workload::Workload;
    let port: u16 = std::env::var("SPANSINK_PG_BENCH_PORT")
        .expect("SPANSINK_PG_BENCH_PORT")
        .parse()
        .unwrap();
    let batches: u64 = std::env::var("SPANSINK_PG_BENCH_BATCHES")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(400);
    let config = PostgresSinkConfig {
        table: "bench_spans".into(),
        max_connections: 8,
        ..PostgresSinkConfig::new("127.0.0.1", port, "postgres", "postgres")
    };
    let sink = Arc::new(sink(&config));
    let workload = Workload {
        spans_per_request: 512,
        attributes_per_span: 10,
    };
    // Encode first, so only the sink is timed.
    let prepared: Vec<Batch> = (0..batches)
        .map(|seed| batch_of(&[&workload.request(1_000_000 + seed)]))
        .collect();
    sink.export(&prepared[0]).await.unwrap(); // creates the table
    let queue = Arc::new(std::sync::Mutex::new(prepared.into_iter().skip(1)));
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (sink, queue) = (sink.clone(), queue.clone());
            tokio::spawn(async move {
                let mut spans = 0;
                loop {
                    let next = queue.lock().unwrap().next();
                    let Some(batch) = next else { break spans };
                    sink.export(&batch).await.unwrap();
                    spans += batch.span_count();
                }
            })
        })
        .collect();
    let mut spans = 0;
    for w in workers {
        spans += w.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "postgres sink: {spans} distinct spans in {elapsed:.2}s = {:.0} spans/s (8 concurrent exports of 512 spans)",
        spans as f64 / elapsed
    );
}
