//! ClickHouse sink tests: the HTTP write path against a real server (Debian's
//! clickhouse-server 18.16, one per test on free loopback ports), and the table the sink
//! creates on current servers against chdb (embedded current ClickHouse, from the test
//! virtualenv). Every test reads the rows back and compares every field.

mod servers;
mod transform_rules;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use servers::clickhouse::{self, ClickHouse};
use spansink_config::{
    ClickHouseCompression, ClickHouseFormat, ClickHouseSinkConfig, ExporterConfig,
};
use spansink_exporter::chain::{Admit, Chain};
use spansink_exporter::encoding::{FIELDS, flat_spans, read_request};
use spansink_exporter::otlp::TraceData;
use spansink_exporter::otlp::fixtures::{self, batch_of, flatten};
use spansink_exporter::sinks::clickhouse::encoding::RowEncoder;
use spansink_exporter::sinks::clickhouse::row_binary::RowBinaryEncoder;
use spansink_exporter::sinks::clickhouse::{ClickHouseSink, RowFormat, schema};
use spansink_exporter::sinks::{self, Sink};
use spansink_exporter::telemetry::metrics::{Metrics, SinkReasonLabels};

/// Columns whose values are JSON text held in a string.
const NESTED: [&str; 6] = [
    "attributes",
    "events",
    "links",
    "resource_attributes",
    "resource_entity_refs",
    "scope_attributes",
];
/// 64-bit columns, which ClickHouse may write as quoted strings in JSON.
const WIDE: [&str; 3] = ["start_time_unix_nano", "end_time_unix_nano", "duration_ns"];

fn sink_config(server: &ClickHouse, table: &str) -> ClickHouseSinkConfig {
    let mut config = ClickHouseSinkConfig::new(server.endpoint());
    config.table = table.to_string();
    config.request_timeout = spansink_config::Duration::from_secs(10);
    config
}

fn sink(config: &ClickHouseSinkConfig) -> ClickHouseSink {
    ClickHouseSink::with_env("ch", config, &|var| {
        (var == "CH_PASSWORD").then(|| clickhouse::PASSWORD.to_string())
    })
    .unwrap()
}

/// A row read back, as the file sink's JSON line (nested strings become the JSON text
/// they hold, quoted 64-bit integers become numbers), so the file sink's reader turns it
/// back into a span and every field can be compared.
fn row_to_line(row: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut line = String::from("{");
    for (i, field) in FIELDS.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push_str(&serde_json::to_string(field).unwrap());
        line.push(':');
        let value = row
            .get(*field)
            .unwrap_or_else(|| panic!("column {field} missing in {row:?}"));
        match value {
            serde_json::Value::String(s) if NESTED.contains(field) || WIDE.contains(field) => {
                line.push_str(s)
            }
            other => line.push_str(&serde_json::to_string(other).unwrap()),
        }
    }
    line.push('}');
    line
}

fn parse_rows(text: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn as_u64(value: &serde_json::Value) -> u64 {
    match value {
        serde_json::Value::String(s) => s.parse().unwrap(),
        other => other.as_u64().unwrap(),
    }
}

/// Checks that `rows` hold exactly the spans of `request`, every field, including the
/// derived `service_name` and `duration_ns`.
fn assert_rows_are(
    rows: &[serde_json::Map<String, serde_json::Value>],
    request: &ExportTraceServiceRequest,
) {
    let lines: Vec<String> = rows.iter().map(row_to_line).collect();
    let read = read_request(lines.iter().map(String::as_str)).unwrap();
    assert_eq!(flatten(&read), flatten(request), "every span, every field");
    let expected: BTreeMap<String, (String, u64)> = flat_spans(request)
        .map(|f| {
            (
                const_hex::encode(&f.span.span_id),
                (f.service_name().to_string(), f.duration_ns()),
            )
        })
        .collect();
    let found: BTreeMap<String, (String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["span_id"].as_str().unwrap().to_string(),
                (
                    r["service_name"].as_str().unwrap().to_string(),
                    as_u64(&r["duration_ns"]),
                ),
            )
        })
        .collect();
    assert_eq!(found, expected, "derived service_name and duration_ns");
}

async fn select_all(
    server: &ClickHouse,
    table: &str,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    parse_rows(
        &server
            .query(&format!(
                "SELECT * FROM default.{table} ORDER BY span_id FORMAT JSONEachRow"
            ))
            .await,
    )
}

/// Rows of `table`; 0 while it does not exist yet.
async fn count(server: &ClickHouse, table: &str) -> u64 {
    server
        .query(&format!(
            "SELECT sum(rows) FROM system.parts WHERE database = 'default' AND table = '{table}' AND active"
        ))
        .await
        .trim()
        .parse()
        .unwrap()
}

/// `n` spans whose ids are unique to request `k`.
fn numbered_request(k: usize, n: usize) -> ExportTraceServiceRequest {
    let mut request = fixtures::request(n, 4);
    for (i, span) in request.resource_spans[0].scope_spans[0]
        .spans
        .iter_mut()
        .enumerate()
    {
        span.span_id = fixtures::span_id(k * 10_000 + i);
        span.trace_id = fixtures::trace_id(k);
    }
    request
}

fn span_ids(request: &ExportTraceServiceRequest) -> Vec<String> {
    flat_spans(request)
        .map(|f| const_hex::encode(&f.span.span_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rich_request_round_trips_every_field_through_the_table_the_sink_creates() {
    let server = ClickHouse::start();
    let mut config = sink_config(&server, "spans");
    config.username = Some(clickhouse::USER.into());
    config.password_env = Some("CH_PASSWORD".into());
    let sink = sink(&config);
    let request = fixtures::rich_request();
    sink.export(&batch_of(&[&request])).await.unwrap();

    // 18.16 is older than 22.3: the plain layout, with start/end derived as DateTime.
    let ddl = server.query("SHOW CREATE TABLE default.spans").await;
    assert!(ddl.contains("MergeTree"), "{ddl}");
    assert!(
        ddl.contains("MATERIALIZED toDateTime(intDiv(start_time_unix_nano"),
        "{ddl}"
    );
    let rows = select_all(&server, "spans").await;
    assert_eq!(rows.len(), 7);
    assert_rows_are(&rows, &request);

    let times = parse_rows(
        &server
            .query("SELECT span_id, start_time_unix_nano, toUnixTimestamp(start_time) AS s FROM default.spans FORMAT JSONEachRow")
            .await,
    );
    for row in times {
        assert_eq!(
            as_u64(&row["s"]),
            as_u64(&row["start_time_unix_nano"]) / 1_000_000_000
        );
    }

    // A second batch uses the existing table (no second CREATE needed, none fails).
    sink.export(&batch_of(&[&numbered_request(1, 5)]))
        .await
        .unwrap();
    assert_eq!(count(&server, "spans").await, 12);

    // Dropped behind the sink's back: created again, and the batch still goes in.
    server.query("DROP TABLE default.spans").await;
    sink.export(&batch_of(&[&numbered_request(2, 3)]))
        .await
        .unwrap();
    assert_eq!(count(&server, "spans").await, 3);
}

/// Each row format with each compression, into the table the sink creates: every field
/// read back, and the format the sink says it chose is the one asked for (auto picks
/// RowBinary for its own table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_and_compression_round_trips_every_field() {
    let server = ClickHouse::start();
    let request = fixtures::rich_request();
    let formats = [
        (ClickHouseFormat::Auto, RowFormat::RowBinary),
        (ClickHouseFormat::RowBinary, RowFormat::RowBinary),
        (ClickHouseFormat::JsonEachRow, RowFormat::JsonEachRow),
    ];
    for (format, chosen) in formats {
        for compression in [
            ClickHouseCompression::Lz4,
            ClickHouseCompression::Gzip,
            ClickHouseCompression::None,
        ] {
            let table = format!("{format:?}_{compression:?}").to_lowercase();
            let mut config = sink_config(&server, &table);
            config.format = format;
            config.compression = compression;
            let sink = sink(&config);
            // Two batches: the second reuses the prepared table and format.
            sink.export(&batch_of(&[&request])).await.unwrap();
            assert_eq!(sink.chosen_format(), Some(chosen), "{table}");
            let rows = select_all(&server, &table).await;
            assert_eq!(rows.len(), 7, "{table}");
            assert_rows_are(&rows, &request);
            sink.export(&batch_of(&[&numbered_request(1, 600)]))
                .await
                .unwrap();
            assert_eq!(count(&server, &table).await, 607, "{table}");
        }
    }
}

/// A hand-made table whose columns do not all have the rows' binary types: `auto`
/// writes JSON rows into it (ClickHouse converts them), `row_binary` refuses with the
/// column named, sends nothing, and takes RowBinary once the table is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_writes_json_into_a_table_row_binary_does_not_fit_and_row_binary_names_the_column() {
    let server = ClickHouse::start();
    let ddl =
        schema::plain_table("default", "wide", None).replace("`flags` UInt32", "`flags` UInt64");
    assert!(ddl.contains("`flags` UInt64"), "{ddl}");
    server.query(&ddl).await;
    let request = fixtures::rich_request();

    let mut config = sink_config(&server, "wide");
    config.create_table = false;
    let auto = sink(&config);
    auto.export(&batch_of(&[&request])).await.unwrap();
    assert_eq!(auto.chosen_format(), Some(RowFormat::JsonEachRow));
    let mut rows = select_all(&server, "wide").await;
    for row in &mut rows {
        // A UInt64 column reads back as a quoted JSON string.
        row["flags"] = as_u64(&row["flags"]).into();
    }
    assert_rows_are(&rows, &request);

    config.format = ClickHouseFormat::RowBinary;
    let strict = sink(&config);
    let err = strict
        .export(&batch_of(&[&numbered_request(2, 3)]))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "schema");
    assert!(
        err.to_string()
            .contains("column flags is UInt64; RowBinary rows carry it as UInt32"),
        "{err}"
    );
    assert_eq!(strict.chosen_format(), None);
    assert_eq!(count(&server, "wide").await, 7, "nothing half-written");

    // Fixed by hand: the next export looks again and takes RowBinary.
    server
        .query("ALTER TABLE default.wide MODIFY COLUMN flags UInt32")
        .await;
    strict
        .export(&batch_of(&[&numbered_request(2, 3)]))
        .await
        .unwrap();
    assert_eq!(strict.chosen_format(), Some(RowFormat::RowBinary));
    assert_eq!(count(&server, "wide").await, 10);
}

/// The server's own compressed blocks (`compress=1` on an answer) read back through the
/// sink's block reader, checksums and all: the same framing and CityHash the sink sends
/// (the inserts above are checked by the server the other way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_compressed_blocks_have_the_framing_and_checksums_the_sink_writes() {
    use spansink_exporter::sinks::clickhouse::compressed_block;
    let server = ClickHouse::start();
    let sql = "SELECT number, toString(number * 7919) FROM system.numbers LIMIT 300000 FORMAT TabSeparated";
    let plain = server.query(sql).await;
    let packed = reqwest::Client::new()
        .post(format!(
            "{}/?compress=1",
            server.endpoint().trim_end_matches('/')
        ))
        .body(sql)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        packed.len() < plain.len(),
        "{} of {}",
        packed.len(),
        plain.len()
    );
    let unpacked = compressed_block::decompress(&packed).unwrap();
    assert_eq!(String::from_utf8(unpacked).unwrap(), plain);
}

/// Every transform rule, read back from the table: every column of every row, decoded
/// field by field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_hold_only_transformed_spans() {
    let server = ClickHouse::start();
    transform_rules::deliver("clickhouse", &sink_config(&server, "transformed")).await;

    let text = server
        .query("SELECT * FROM default.transformed ORDER BY span_id FORMAT JSONEachRow")
        .await;
    assert_eq!(
        transform_rules::holds_secret(text.as_bytes()),
        None,
        "{text}"
    );
    let lines: Vec<String> = parse_rows(&text).iter().map(row_to_line).collect();
    let read = read_request(lines.iter().map(String::as_str)).unwrap();
    transform_rules::assert_transformed(&read, 2, "clickhouse");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_table_gets_its_columns_with_create_table_off_uncompressed() {
    let server = ClickHouse::start();
    // A hand-made table of an older server: a subset of the columns, exact nanoseconds
    // as UInt64 and a DateTime for seconds; the rest of each row is skipped by setting.
    server
        .query(
            "CREATE TABLE default.mine (service_name String, trace_id String, span_id String, \
             name String, kind String, start_time_unix_nano UInt64, duration_ns UInt64, \
             status_code String, attributes String, \
             start_time DateTime MATERIALIZED toDateTime(intDiv(start_time_unix_nano, 1000000000))) \
             ENGINE = MergeTree PARTITION BY toDate(start_time) ORDER BY (service_name, name, start_time)",
        )
        .await;
    let mut config = sink_config(&server, "mine");
    config.create_table = false;
    config.compression = ClickHouseCompression::None;
    config.settings = [(
        "input_format_skip_unknown_fields".to_string(),
        "1".to_string(),
    )]
    .into();
    let request = fixtures::rich_request();
    let sink = sink(&config);
    sink.export(&batch_of(&[&request])).await.unwrap();
    // A subset of the columns: auto cannot write RowBinary into it.
    assert_eq!(sink.chosen_format(), Some(RowFormat::JsonEachRow));

    let rows = select_all(&server, "mine").await;
    let mut expected_rows = Vec::new();
    RowEncoder::new().encode_request(&request, &mut expected_rows);
    let mut expected = parse_rows(std::str::from_utf8(&expected_rows).unwrap());
    expected.sort_by(|a, b| a["span_id"].as_str().cmp(&b["span_id"].as_str()));
    assert_eq!(rows.len(), expected.len());
    for (row, want) in rows.iter().zip(&expected) {
        assert_eq!(row.len(), 9, "{row:?}");
        for (column, value) in row {
            if WIDE.contains(&column.as_str()) {
                assert_eq!(as_u64(value), as_u64(&want[column]), "{column}");
            } else {
                assert_eq!(value, &want[column], "{column}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_table_and_rows_work_on_current_clickhouse() {
    let dir = tempfile::tempdir().unwrap();
    let request = fixtures::rich_request();
    let mut rows = Vec::new();
    RowEncoder::new().encode_request(&request, &mut rows);
    // A span of now, so the table with a TTL keeps exactly it.
    let mut fresh = numbered_request(3, 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    fresh.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano = now;
    fresh.resource_spans[0].scope_spans[0].spans[0].end_time_unix_nano = now + 5;
    let mut fresh_rows = Vec::new();
    RowEncoder::new().encode_request(&request, &mut fresh_rows);
    RowEncoder::new().encode_request(&fresh, &mut fresh_rows);
    let mut binary_rows = Vec::new();
    RowBinaryEncoder::new()
        .encode_wire_request(&prost::Message::encode_to_vec(&request), &mut binary_rows)
        .unwrap();
    let binary_path = dir.path().join("rows.bin");
    std::fs::write(&binary_path, binary_rows).unwrap();
    let structure: Vec<String> = schema::stored_columns()
        .map(|(name, wire_type)| format!("{name} {wire_type}"))
        .collect();
    let structure = structure.join(", ");

    let steps = serde_json::json!([
        [schema::create_database("otel"), null],
        [schema::modern_table("otel", "spans", None), null],
        [
            "INSERT INTO otel.spans FORMAT JSONEachRow",
            String::from_utf8(rows.clone()).unwrap()
        ],
        // The same batch again, as a retry after a lost answer: not stored twice.
        [
            "INSERT INTO otel.spans FORMAT JSONEachRow",
            String::from_utf8(rows).unwrap()
        ],
        [
            "SELECT *, start_time, end_time, attributes_map, resource_attributes_map FROM otel.spans ORDER BY span_id FORMAT JSONEachRow",
            null
        ],
        [schema::modern_table("otel", "expiring", Some(86_400)), null],
        [
            "INSERT INTO otel.expiring FORMAT JSONEachRow",
            String::from_utf8(fresh_rows).unwrap()
        ],
        // Expired rows go at merges; force one instead of waiting for the background.
        ["OPTIMIZE TABLE otel.expiring FINAL", null],
        ["SELECT span_id FROM otel.expiring FORMAT JSONEachRow", null],
        // RowBinary rows, as the sink sends them, into the current table.
        [schema::modern_table("otel", "binary", None), null],
        [
            format!(
                "INSERT INTO otel.binary {} SELECT * FROM file('{}', RowBinary, '{structure}')",
                schema::column_list(),
                binary_path.display()
            ),
            null
        ],
        ["DESCRIBE TABLE otel.binary FORMAT TabSeparated", null],
        [
            "SELECT * FROM otel.binary ORDER BY span_id FORMAT JSONEachRow",
            null
        ],
    ]);
    std::fs::write(dir.path().join("steps.json"), steps.to_string()).unwrap();
    let output = clickhouse::run_chdb(dir.path(), CHDB_SCRIPT, &["steps.json"]);
    let answers: Vec<String> = serde_json::from_str(&output).unwrap();
    assert_eq!(answers.len(), 13, "{output}");

    let rows = parse_rows(&answers[4]);
    assert_eq!(rows.len(), 7, "a retried identical insert is deduplicated");
    let stored: Vec<_> = rows
        .iter()
        .map(|r| {
            r.iter()
                .filter(|(k, _)| FIELDS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .collect();
    assert_rows_are(&stored, &request);

    let spans: BTreeMap<String, _> = flat_spans(&request)
        .map(|f| (const_hex::encode(&f.span.span_id), f))
        .collect();
    for row in &rows {
        let flat = spans[row["span_id"].as_str().unwrap()];
        // Nanosecond DateTime64 derived on the server from the exact integers.
        for (column, nanos) in [
            ("start_time", flat.span.start_time_unix_nano),
            ("end_time", flat.span.end_time_unix_nano),
        ] {
            let expected = chrono::DateTime::from_timestamp_nanos(nanos as i64)
                .format("%Y-%m-%d %H:%M:%S%.9f")
                .to_string();
            assert_eq!(row[column], expected.as_str(), "{column}");
        }
        // The maps hold every key; strings as they are, other values as JSON text.
        let map = row["attributes_map"].as_object().unwrap();
        let keys: BTreeSet<&str> = flat
            .span
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        assert_eq!(
            map.keys().map(String::as_str).collect::<BTreeSet<_>>(),
            keys
        );
        if keys.contains("str") {
            assert_eq!(map["str"], fixtures::TRICKY);
            assert_eq!(map["http.status_code"], "504");
            assert_eq!(map["int.min"], "-9223372036854775808");
            assert_eq!(map["bool"], "false");
            assert_eq!(map["empty.str"], "");
        }
        let resource = row["resource_attributes_map"].as_object().unwrap();
        assert_eq!(
            resource
                .get("service.name")
                .and_then(|v| v.as_str())
                .unwrap_or(""),
            flat.service_name()
        );
    }

    // With a one-day TTL only the span of today is kept; the 2018-2023 ones expire.
    let kept = parse_rows(&answers[8]);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["span_id"], span_ids(&fresh)[0].as_str());

    // The current table takes RowBinary (LowCardinality strings included) and gives
    // back every field.
    let described = schema::described_columns(&answers[11]);
    assert_eq!(
        schema::row_binary_misfit(&described),
        None,
        "{}",
        answers[11]
    );
    let binary: Vec<_> = parse_rows(&answers[12])
        .into_iter()
        .map(|r| {
            r.into_iter()
                .filter(|(k, _)| FIELDS.contains(&k.as_str()))
                .collect()
        })
        .collect();
    assert_rows_are(&binary, &request);
}

/// Runs the statements of a JSON file (`[[sql, data or null], ...]`) in one chdb
/// session and prints the answers as a JSON array of strings.
const CHDB_SCRIPT: &str = r#"
import json, sys, tempfile
from chdb import session
steps = json.load(open(sys.argv[1]))
s = session.Session(tempfile.mkdtemp(dir="."))
answers = []
for sql, data in steps:
    query = sql if data is None else sql + "\n" + data
    answers.append(str(s.query(query)).strip("\n"))
json.dump(answers, sys.stdout)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_start_is_transient_and_delivery_follows_once_it_is_up() {
    let port = servers::free_port();
    let mut config = ClickHouseSinkConfig::new(format!("http://127.0.0.1:{port}"));
    config.table = "late".into();
    let sink = sink(&config);
    let request = numbered_request(1, 20);
    let batch = batch_of(&[&request]);
    let err = sink.export(&batch).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "connect", "{err}");

    let server = ClickHouse::start_on(port);
    // What the retry policy does: the same batch again; the table is created now.
    sink.export(&batch).await.unwrap();
    assert_eq!(count(&server, "late").await, 20);
    assert_rows_are(&select_all(&server, "late").await, &request);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_stream_is_transient_and_the_chain_loses_nothing() {
    let mut server = ClickHouse::start();
    let fallback = server.dir().join("dead-letter/spans.jsonl");
    let yaml = format!(
        "sinks:\n\
         \x20 ch:\n\
         \x20   clickhouse: {{endpoint: '{}', table: streamed, request_timeout: 2s}}\n\
         \x20   batch: {{max_spans: 50, flush_interval: 50ms}}\n\
         \x20   timeout: 5s\n\
         \x20   retry: {{max_attempts: 3, initial_backoff: 50ms, max_backoff: 200ms, max_elapsed: 3s}}\n\
         \x20   fallback: dlq\n\
         \x20 dlq:\n\
         \x20   file: {{path: '{}'}}\n\
         \x20   fallback_only: true\n",
        server.endpoint(),
        fallback.display()
    );
    let config = ExporterConfig::from_yaml(&yaml).unwrap();
    let metrics = Metrics::for_tests();
    let built = sinks::build_all(&config, &metrics).await.unwrap();
    let chain = Chain::build(&config, &metrics, &|name, _| Ok(built[name].clone())).unwrap();
    chain.start();

    let mut sent = BTreeSet::new();
    for k in 0..10 {
        let request = numbered_request(k, 20);
        sent.extend(span_ids(&request));
        chain
            .admit(TraceData::from_request(&request))
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&server, "streamed").await < 200 {
        assert!(Instant::now() < deadline, "first half not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    server.kill();
    // Directly: a sink facing the dead server fails transiently.
    let direct = sink(&sink_config(&server, "streamed"));
    let err = direct
        .export(&batch_of(&[&numbered_request(99, 1)]))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");

    for k in 10..20 {
        let request = numbered_request(k, 20);
        sent.extend(span_ids(&request));
        chain
            .admit(TraceData::from_request(&request))
            .await
            .unwrap();
    }
    let report = chain.drain(Duration::from_secs(60)).await;
    assert!(!report.timed_out, "{report:?}");
    assert_eq!(report.dropped_spans, 0, "{report:?}");

    server.restart();
    let mut found: BTreeSet<String> = select_all(&server, "streamed")
        .await
        .iter()
        .map(|r| r["span_id"].as_str().unwrap().to_string())
        .collect();
    let in_table = found.len();
    let text = std::fs::read_to_string(&fallback).unwrap();
    let dead = read_request(text.lines()).unwrap();
    found.extend(span_ids(&dead));
    assert_eq!(sent.len(), 400);
    assert_eq!(
        found, sent,
        "every span is in ClickHouse or in the fallback file"
    );
    assert!(
        in_table >= 200 && !span_ids(&dead).is_empty(),
        "{in_table} in the table"
    );
    let retried = metrics
        .sink_retried_spans
        .get_or_create(&metrics.sink("ch"))
        .get();
    assert!(retried > 0, "the outage was retried before the fallback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_classified_and_not_retried() {
    let server = ClickHouse::start();
    let batch = batch_of(&[&fixtures::rich_request()]);

    // No table, and the sink may not create one.
    let mut config = sink_config(&server, "absent");
    config.create_table = false;
    let err = sink(&config).export(&batch).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "no_table", "{err}");
    assert!(err.to_string().contains("code 60"), "{err}");

    // A column type the rows do not fit.
    server
        .query("CREATE TABLE default.wrong (span_id String, name UInt8) ENGINE = MergeTree ORDER BY span_id")
        .await;
    let mut config = sink_config(&server, "wrong");
    config.create_table = false;
    config.settings = [(
        "input_format_skip_unknown_fields".to_string(),
        "1".to_string(),
    )]
    .into();
    let err = sink(&config).export(&batch).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "rejected", "{err}");

    // Wrong password; a read-only user.
    let mut config = sink_config(&server, "spans");
    config.username = Some(clickhouse::USER.into());
    config.password_env = Some("WRONG".into());
    let wrong = ClickHouseSink::with_env("ch", &config, &|_| Some("nope".into())).unwrap();
    let err = wrong.export(&batch).await.unwrap_err();
    assert_eq!((err.is_transient(), err.reason()), (false, "auth"), "{err}");
    let mut config = sink_config(&server, "spans");
    config.username = Some(clickhouse::READONLY_USER.into());
    let err = sink(&config).export(&batch).await.unwrap_err();
    assert_eq!((err.is_transient(), err.reason()), (false, "auth"), "{err}");

    // 18.16 has no table TTL: refused with what to do.
    let mut config = sink_config(&server, "ttl");
    config.ttl = Some(spansink_config::Duration::from_secs(86_400));
    let err = sink(&config).export(&batch).await.unwrap_err();
    assert_eq!(
        (err.is_transient(), err.reason()),
        (false, "schema"),
        "{err}"
    );
    assert!(err.to_string().contains("unset clickhouse.ttl"), "{err}");

    // In a chain with retries and a fallback: one attempt, then the fallback.
    let fallback = server.dir().join("dlq.jsonl");
    let yaml = format!(
        "sinks:\n\
         \x20 ch:\n\
         \x20   clickhouse: {{endpoint: '{}', table: absent, create_table: false}}\n\
         \x20   batch: {{max_spans: 100, flush_interval: 50ms}}\n\
         \x20   retry: {{max_attempts: 5, initial_backoff: 10ms}}\n\
         \x20   fallback: dlq\n\
         \x20 dlq:\n\
         \x20   file: {{path: '{}'}}\n\
         \x20   fallback_only: true\n",
        server.endpoint(),
        fallback.display()
    );
    let config = ExporterConfig::from_yaml(&yaml).unwrap();
    let metrics = Metrics::for_tests();
    let built = sinks::build_all(&config, &metrics).await.unwrap();
    let chain = Chain::build(&config, &metrics, &|name, _| Ok(built[name].clone())).unwrap();
    chain.start();
    chain
        .admit(TraceData::from_request(&fixtures::rich_request()))
        .await
        .unwrap();
    let report = chain.drain(Duration::from_secs(30)).await;
    assert_eq!(report.dropped_spans, 0, "{report:?}");
    let retried = metrics
        .sink_retried_spans
        .get_or_create(&metrics.sink("ch"))
        .get();
    assert_eq!(retried, 0, "a permanent error is not retried");
    let failed = metrics
        .sink_failed_spans
        .get_or_create(&SinkReasonLabels {
            sink: "ch".into(),
            reason: "no_table",
        })
        .get();
    assert_eq!(failed, 7);
    let text = std::fs::read_to_string(&fallback).unwrap();
    assert_eq!(
        flatten(&read_request(text.lines()).unwrap()),
        flatten(&fixtures::rich_request())
    );
}
