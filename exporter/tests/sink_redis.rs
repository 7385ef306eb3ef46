//! Redis sink tests against a real redis-server (one per test, on a free loopback port):
//! stream and trace round trips of every field, trimming, TTLs, appends across batches,
//! a server down at start or killed mid-stream, and permanent refusals.

mod servers;
mod transform_rules;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis::streams::StreamRangeReply;
use spansink_config::{
    BatchConfig, ByteSize, ExporterConfig, FileSinkConfig, RedisSinkConfig, RedisStreamConfig,
    RedisTlsConfig, RedisTraceConfig, RetryConfig, SinkConfig,
};
use spansink_exporter::chain::{Admit, Chain};
use spansink_exporter::encoding::json::{read_request, read_span_line};
use spansink_exporter::otlp::fixtures::{self, batch_of, flatten, interleaved_traces};
use spansink_exporter::otlp::{TraceData, span_count};
use spansink_exporter::sinks::redis::RedisSink;
use spansink_exporter::sinks::redis::encoding::{STREAM_FIELDS, trace_key};
use spansink_exporter::sinks::{SharedSink, Sink};
use spansink_exporter::telemetry::metrics::{Metrics, SinkReasonLabels};

use servers::redis::RedisServer;

const STREAM: &str = "spansink:spans";

fn stream_config(server: &RedisServer) -> RedisSinkConfig {
    let mut config = RedisSinkConfig::stream(server.url());
    config.connect_timeout = spansink_config::Duration::from_secs(2);
    config.response_timeout = spansink_config::Duration::from_secs(5);
    config
}

fn trace_config(server: &RedisServer, ttl: Duration) -> RedisSinkConfig {
    let mut config = RedisSinkConfig::trace(server.url());
    config.trace = Some(RedisTraceConfig {
        key_prefix: "spansink:trace:".into(),
        ttl: spansink_config::Duration::from_millis(ttl.as_millis() as u64),
    });
    config
}

/// Every entry of `key` as (field -> value) maps, oldest first.
async fn stream_entries(server: &RedisServer, key: &str) -> Vec<BTreeMap<String, String>> {
    entries_of(&mut server.connection().await, key).await
}

async fn entries_of(
    connection: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> Vec<BTreeMap<String, String>> {
    let reply: StreamRangeReply = connection.xrange_all(key).await.unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| {
            entry
                .map
                .into_iter()
                .map(|(field, value)| (field, redis::from_redis_value::<String>(value).unwrap()))
                .collect()
        })
        .collect()
}

async fn list(server: &RedisServer, key: &str) -> Vec<String> {
    server.connection().await.lrange(key, 0, -1).await.unwrap()
}

// ---------------------------------------------------------------- round trips

#[tokio::test]
async fn stream_round_trip_keeps_every_field_of_the_rich_request() {
    let server = RedisServer::start();
    let sink = RedisSink::new("spans", &stream_config(&server)).unwrap();
    let request = fixtures::rich_request();
    sink.export(&batch_of(&[&request])).await.unwrap();
    sink.shutdown().await.unwrap();

    let entries = stream_entries(&server, STREAM).await;
    assert_eq!(entries.len(), span_count(&request));
    let expected_flat = spansink_exporter::encoding::flat_spans(&request);
    for (entry, flat) in entries.iter().zip(expected_flat) {
        let fields: BTreeSet<&str> = entry.keys().map(String::as_str).collect();
        assert_eq!(fields, STREAM_FIELDS.into_iter().collect());
        assert_eq!(entry["trace_id"], const_hex::encode(&flat.span.trace_id));
        assert_eq!(entry["span_id"], const_hex::encode(&flat.span.span_id));
        assert_eq!(entry["service_name"], flat.service_name());
        assert_eq!(entry["name"], flat.span.name);
        assert_eq!(&read_span_line(&entry["span"]).unwrap().span, flat.span);
    }
    // Every field of every span, resource and scope, in the order written.
    let read = read_request(entries.iter().map(|e| e["span"].as_str())).unwrap();
    assert_eq!(read, request);
}

#[tokio::test]
async fn trace_round_trip_keeps_every_field_and_sets_the_ttl() {
    let server = RedisServer::start();
    let ttl = Duration::from_secs(600);
    let sink = RedisSink::new("traces", &trace_config(&server, ttl)).unwrap();
    let request = fixtures::rich_request();
    sink.export(&batch_of(&[&request])).await.unwrap();

    let trace_ids: BTreeSet<Vec<u8>> = fixtures::trace_ids(&request).into_iter().collect();
    let mut connection = server.connection().await;
    let keys: BTreeSet<String> = connection.keys("spansink:trace:*").await.unwrap();
    let expected_keys: BTreeSet<String> = trace_ids
        .iter()
        .map(|id| trace_key("spansink:trace:", id))
        .collect();
    assert_eq!(keys, expected_keys);
    let mut all = Vec::new();
    for id in &trace_ids {
        let key = trace_key("spansink:trace:", id);
        let spans = list(&server, &key).await;
        // The trace's spans, in the order they came in.
        let expected: Vec<_> = spansink_exporter::encoding::flat_spans(&request)
            .filter(|f| &f.span.trace_id == id)
            .map(|f| f.span.clone())
            .collect();
        let read: Vec<_> = spans
            .iter()
            .map(|json| read_span_line(json).unwrap().span)
            .collect();
        assert_eq!(read, expected, "{key}");
        let ttl_ms: i64 = connection.pttl(&key).await.unwrap();
        assert!(
            ttl_ms > 590_000 && ttl_ms <= 600_000,
            "{key}: PTTL {ttl_ms} ms, expected about 600 s"
        );
        all.extend(spans);
    }
    // Every field of every span with its resource and scope.
    let read = read_request(all.iter().map(String::as_str)).unwrap();
    assert_eq!(flatten(&read), flatten(&request));
}

/// Every transform rule, read back from the stream: each entry's span JSON and fields.
#[tokio::test]
async fn stream_entries_hold_only_transformed_spans() {
    let server = RedisServer::start();
    transform_rules::deliver("redis", &stream_config(&server)).await;

    let entries = stream_entries(&server, STREAM).await;
    for (field, value) in entries.iter().flatten() {
        assert_eq!(
            transform_rules::holds_secret(value.as_bytes()),
            None,
            "{field}: {value}"
        );
    }
    let read = read_request(entries.iter().map(|e| e["span"].as_str())).unwrap();
    transform_rules::assert_transformed(&read, 2, "redis stream");
}

#[tokio::test]
async fn the_stream_is_trimmed_to_about_maxlen() {
    let server = RedisServer::start();
    let mut config = stream_config(&server);
    config.stream = Some(RedisStreamConfig {
        key: "trimmed".into(),
        maxlen: 100,
    });
    let sink = RedisSink::new("spans", &config).unwrap();
    let request = fixtures::request(250, 2);
    for _ in 0..4 {
        sink.export(&batch_of(&[&request])).await.unwrap();
    }
    let len: usize = server.connection().await.xlen("trimmed").await.unwrap();
    // `MAXLEN ~` trims whole macro nodes (100 entries each by default): never below
    // the cap, at most one node above it.
    assert!(
        (100..200).contains(&len),
        "XLEN {len} after 1000 entries with MAXLEN ~ 100"
    );
    let entries = stream_entries(&server, "trimmed").await;
    let last_span = fixtures::flatten(&request).len() - 1;
    let expected_last = spansink_exporter::encoding::flat_spans(&request)
        .nth(last_span)
        .unwrap();
    assert_eq!(
        entries.last().unwrap()["span_id"],
        const_hex::encode(&expected_last.span.span_id),
        "the newest entries are kept"
    );
}

#[tokio::test]
async fn later_batches_of_a_trace_append_and_renew_the_ttl() {
    let server = RedisServer::start();
    let sink = RedisSink::new("traces", &trace_config(&server, Duration::from_secs(60))).unwrap();
    let first = interleaved_traces(2, 3);
    let second = interleaved_traces(2, 5);
    sink.export(&batch_of(&[&first])).await.unwrap();
    let key = trace_key("spansink:trace:", &fixtures::trace_id(1));
    let mut connection = server.connection().await;
    let before = list(&server, &key).await;
    assert_eq!(before.len(), 3);
    // Age the key, so that a renewed TTL is visible.
    let _: bool = connection.pexpire(&key, 5_000).await.unwrap();

    sink.export(&batch_of(&[&second])).await.unwrap();
    let after = list(&server, &key).await;
    assert_eq!(after.len(), 3 + 5);
    assert_eq!(after[..3], before[..], "earlier spans are kept, in place");
    let ttl_ms: i64 = connection.pttl(&key).await.unwrap();
    assert!(
        ttl_ms > 50_000,
        "TTL renewed by the later batch: {ttl_ms} ms"
    );
}

// ---------------------------------------------------------------- failures

#[tokio::test]
async fn server_down_at_start_fails_transiently_then_delivers_once() {
    let mut server = RedisServer::stopped();
    // Building does not connect.
    let sink = RedisSink::new("spans", &stream_config(&server)).unwrap();
    let request = interleaved_traces(3, 2);
    let batch = batch_of(&[&request]);
    let err = sink.export(&batch).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "connect", "{err}");

    server.resume();
    // What the retry policy does: the same batch again.
    sink.export(&batch).await.unwrap();
    let entries = stream_entries(&server, STREAM).await;
    assert_eq!(entries.len(), span_count(&request), "all spans, once");
}

#[tokio::test]
async fn server_killed_mid_stream_is_transient_and_the_sink_reconnects() {
    let mut server = RedisServer::start();
    let sink = RedisSink::new("spans", &stream_config(&server)).unwrap();
    let request = interleaved_traces(2, 2);
    sink.export(&batch_of(&[&request])).await.unwrap();

    server.kill();
    let err = sink.export(&batch_of(&[&request])).await.unwrap_err();
    assert!(err.is_transient(), "{err}");

    server.resume();
    sink.export(&batch_of(&[&request])).await.unwrap();
    // A fresh server (no persistence): exactly the batch written after the restart.
    assert_eq!(
        stream_entries(&server, STREAM).await.len(),
        span_count(&request)
    );
}

fn chain_config(redis: RedisSinkConfig, dead_letter: &std::path::Path) -> ExporterConfig {
    let batch = BatchConfig {
        max_spans: 64,
        max_bytes: ByteSize::mib(1),
        flush_interval: spansink_config::Duration::from_millis(50),
    };
    let primary = SinkConfig {
        redis: Some(redis),
        batch: batch.clone(),
        timeout: spansink_config::Duration::from_secs(10),
        retry: RetryConfig {
            max_attempts: 3,
            initial_backoff: spansink_config::Duration::from_millis(50),
            max_backoff: spansink_config::Duration::from_millis(200),
            ..RetryConfig::default()
        },
        fallback: Some("dead-letter".into()),
        ..SinkConfig::default()
    };
    let file: FileSinkConfig =
        serde_yaml::from_str(&format!("path: {}", dead_letter.display())).unwrap();
    let fallback = SinkConfig {
        file: Some(file),
        batch,
        fallback_only: true,
        ..SinkConfig::default()
    };
    let yaml = serde_yaml::to_string(&ExporterConfig {
        receivers: Default::default(),
        sinks: [
            ("redis".to_string(), Box::new(primary)),
            ("dead-letter".to_string(), Box::new(fallback)),
        ]
        .into_iter()
        .collect(),
        telemetry: Default::default(),
        shutdown: Default::default(),
    })
    .unwrap();
    // Through the same parsing and validation as a config file.
    ExporterConfig::from_yaml(&yaml).unwrap()
}

async fn start_chain(config: &ExporterConfig, metrics: &Metrics) -> Chain {
    let mut built: BTreeMap<String, SharedSink> = BTreeMap::new();
    for (name, sink) in &config.sinks {
        built.insert(
            name.clone(),
            spansink_exporter::sinks::build(name, sink, metrics)
                .await
                .unwrap(),
        );
    }
    let chain = Chain::build(config, metrics, &|name, _| {
        Ok(Arc::clone(built.get(name).unwrap()))
    })
    .unwrap();
    chain.start();
    chain
}

fn span_ids(jsons: impl IntoIterator<Item = String>) -> Vec<String> {
    jsons
        .into_iter()
        .map(|json| const_hex::encode(read_span_line(&json).unwrap().span.span_id))
        .collect()
}

/// Waits until the stream holds `n` entries.
async fn wait_for_entries(server: &RedisServer, n: usize) -> Vec<BTreeMap<String, String>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let entries = stream_entries(server, STREAM).await;
        if entries.len() >= n || tokio::time::Instant::now() > deadline {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_with_retry_and_file_fallback_loses_nothing_when_redis_dies() {
    let mut server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let dead_letter = dir.path().join("dead-letter.jsonl");
    let config = chain_config(stream_config(&server), &dead_letter);
    let metrics = Metrics::for_tests();
    let chain = start_chain(&config, &metrics).await;

    // Distinct span ids per phase: fixtures::request numbers its spans from an offset.
    let phase = |offset: usize| {
        let mut r = fixtures::request(40, 2);
        for (i, span) in r.resource_spans[0].scope_spans[0]
            .spans
            .iter_mut()
            .enumerate()
        {
            span.span_id = fixtures::span_id(offset + i);
        }
        r
    };
    let (a, b, c) = (phase(0), phase(1000), phase(2000));
    let mut expected: Vec<String> = Vec::new();
    for r in [&a, &b, &c] {
        for flat in spansink_exporter::encoding::flat_spans(r) {
            expected.push(const_hex::encode(&flat.span.span_id));
        }
    }

    chain.admit(TraceData::from_request(&a)).await.unwrap();
    let delivered_before_kill = wait_for_entries(&server, 40).await;
    assert_eq!(delivered_before_kill.len(), 40);

    server.kill();
    chain.admit(TraceData::from_request(&b)).await.unwrap();
    // Retries fail (transient), then the batch goes to the dead-letter file.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&dead_letter)
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < 40
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "phase b never reached the fallback"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    server.resume();
    chain.admit(TraceData::from_request(&c)).await.unwrap();
    let report = chain.drain(Duration::from_secs(20)).await;
    assert!(!report.timed_out, "{report:?}");
    assert_eq!(report.dropped_spans, 0);

    let in_redis: Vec<String> = delivered_before_kill
        .into_iter()
        .chain(stream_entries(&server, STREAM).await)
        .map(|mut e| e.remove("span").unwrap())
        .collect();
    let in_file: Vec<String> = std::fs::read_to_string(&dead_letter)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let mut got = span_ids(in_redis.into_iter().chain(in_file));
    got.sort();
    let mut want = expected;
    want.sort();
    assert_eq!(
        got, want,
        "every span exactly once in Redis or the dead-letter file"
    );
    let retried = metrics
        .sink_retried_spans
        .get_or_create(&metrics.sink("redis"))
        .get();
    assert!(retried >= 40, "the failed batch was retried: {retried}");
}

#[tokio::test]
async fn a_key_of_another_type_is_permanent_and_not_retried() {
    let server = RedisServer::start();
    let mut connection = server.connection().await;
    let _: () = connection.set(STREAM, "not a stream").await.unwrap();
    let sink = RedisSink::new("spans", &stream_config(&server)).unwrap();
    let err = sink
        .export(&batch_of(&[&interleaved_traces(1, 2)]))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "wrong_type", "{err}");

    // In a chain: one attempt, no retry, the batch goes to the fallback whole.
    let dir = tempfile::tempdir().unwrap();
    let dead_letter = dir.path().join("dead-letter.jsonl");
    let config = chain_config(stream_config(&server), &dead_letter);
    let metrics = Metrics::for_tests();
    let chain = start_chain(&config, &metrics).await;
    let request = interleaved_traces(2, 3);
    chain
        .admit(TraceData::from_request(&request))
        .await
        .unwrap();
    let report = chain.drain(Duration::from_secs(20)).await;
    assert!(!report.timed_out);
    let failed = metrics
        .sink_failed_spans
        .get_or_create(&SinkReasonLabels {
            sink: "redis".into(),
            reason: "wrong_type",
        })
        .get();
    assert_eq!(failed, 6);
    let retried = metrics
        .sink_retried_spans
        .get_or_create(&metrics.sink("redis"))
        .get();
    assert_eq!(retried, 0, "a permanent error is not retried");
    let lines = std::fs::read_to_string(&dead_letter).unwrap();
    assert_eq!(lines.lines().count(), 6);
}

#[tokio::test]
async fn acl_refusals_and_bad_passwords_are_permanent() {
    let server = RedisServer::start();
    let mut connection = server.connection().await;
    // A user that may do everything but XADD.
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER", "limited", "on", ">s3cret", "~*", "&*", "+@all", "-xadd",
        ])
        .query_async(&mut connection)
        .await
        .unwrap();
    let mut config = stream_config(&server);
    config.username = Some("limited".into());
    config.password_env = Some("REDIS_PASSWORD".into());
    let batch = batch_of(&[&interleaved_traces(1, 2)]);

    let sink = RedisSink::with_env("spans", &config, &|_| Some("s3cret".into())).unwrap();
    let err = sink.export(&batch).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "permission", "{err}");
    assert!(err.to_string().contains("NOPERM"), "{err}");

    let wrong = RedisSink::with_env("spans", &config, &|_| Some("wrong".into())).unwrap();
    let err = wrong.export(&batch).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "auth", "{err}");

    // Trace mode needs RPUSH and PEXPIRE; the same user may run them.
    let mut trace = trace_config(&server, Duration::from_secs(60));
    trace.username = config.username.clone();
    trace.password_env = config.password_env.clone();
    let sink = RedisSink::with_env("traces", &trace, &|_| Some("s3cret".into())).unwrap();
    sink.export(&batch).await.unwrap();

    // README's grants, on a database other than 0: SELECT is refused when the connection
    // is made, and the error says which grant is missing.
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER", "writer", "on", ">s3cret", "~*", "+xadd", "+rpush", "+pexpire", "+multi",
            "+exec",
        ])
        .query_async(&mut connection)
        .await
        .unwrap();
    let mut db1 = RedisSinkConfig::stream(server.url().replace("/0", "/1"));
    db1.connect_timeout = spansink_config::Duration::from_secs(2);
    db1.username = Some("writer".into());
    db1.password_env = Some("REDIS_PASSWORD".into());
    let sink = RedisSink::with_env("spans", &db1, &|_| Some("s3cret".into())).unwrap();
    let err = sink.export(&batch).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "permission", "{err}");
    assert!(err.to_string().contains("+select"), "{err}");
    // With +select the same user writes to database 1.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "writer", "+select"])
        .query_async(&mut connection)
        .await
        .unwrap();
    let sink = RedisSink::with_env("spans", &db1, &|_| Some("s3cret".into())).unwrap();
    sink.export(&batch).await.unwrap();
}

#[tokio::test]
async fn tls_with_a_private_ca_round_trips_and_an_unknown_ca_is_refused() {
    let server = RedisServer::start_tls();
    assert!(server.url().starts_with("rediss://"));
    let ca_file = server.ca_file();
    let mut config = stream_config(&server);
    config.tls = Some(RedisTlsConfig {
        ca_file: Some(ca_file.display().to_string()),
    });
    let sink = RedisSink::new("spans", &config).unwrap();
    let request = fixtures::rich_request();
    sink.export(&batch_of(&[&request])).await.unwrap();

    let reader = redis::Client::build_with_tls(
        server.url(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&ca_file).unwrap()),
        },
    )
    .unwrap();
    let mut connection = reader.get_multiplexed_async_connection().await.unwrap();
    let entries = entries_of(&mut connection, STREAM).await;
    let read = read_request(entries.iter().map(|e| e["span"].as_str())).unwrap();
    assert_eq!(read, request);

    // The system's CAs do not know the test CA: the handshake fails, nothing is written,
    // and retrying cannot help until the config names the CA.
    let untrusted = RedisSink::new("spans", &stream_config(&server)).unwrap();
    let err = untrusted.export(&batch_of(&[&request])).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "tls", "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert_eq!(
        entries_of(&mut connection, STREAM).await.len(),
        span_count(&request)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_exports_share_one_connection_without_mixing_transactions() {
    let server = RedisServer::start();
    let sink = Arc::new(
        RedisSink::new("traces", &trace_config(&server, Duration::from_secs(60))).unwrap(),
    );
    // Eight batches at once over the one multiplexed connection: each MULTI..EXEC must
    // reach the server whole, or commands of one batch would run inside another's
    // transaction (or outside any).
    let batches: Vec<_> = (0..8u8)
        .map(|i| {
            let mut request = interleaved_traces(4, 4);
            for span in request
                .resource_spans
                .iter_mut()
                .flat_map(|r| &mut r.scope_spans)
                .flat_map(|s| &mut s.spans)
            {
                span.trace_id[0] = i;
            }
            request
        })
        .collect();
    let exports = batches.iter().map(|request| {
        let sink = Arc::clone(&sink);
        let batch = batch_of(&[request]);
        tokio::spawn(async move { sink.export(&batch).await })
    });
    for result in futures::future::join_all(exports).await {
        result.unwrap().unwrap();
    }
    let mut connection = server.connection().await;
    let keys: Vec<String> = connection.keys("spansink:trace:*").await.unwrap();
    assert_eq!(keys.len(), 8 * 4);
    for request in &batches {
        for id in fixtures::trace_ids(request)
            .into_iter()
            .collect::<BTreeSet<_>>()
        {
            let key = trace_key("spansink:trace:", &id);
            let spans = list(&server, &key).await;
            assert_eq!(spans.len(), 4, "{key}");
            let ttl_ms: i64 = connection.pttl(&key).await.unwrap();
            assert!(ttl_ms > 0, "{key} has its TTL");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_started_while_redis_is_down_delivers_once_it_is_up() {
    let mut server = RedisServer::stopped();
    let dir = tempfile::tempdir().unwrap();
    let dead_letter = dir.path().join("dead-letter.jsonl");
    let mut config = chain_config(stream_config(&server), &dead_letter);
    // Retries outlast the outage below, so nothing needs the fallback.
    let retry = &mut config.sinks.get_mut("redis").unwrap().retry;
    retry.max_attempts = 50;
    retry.max_backoff = spansink_config::Duration::from_millis(100);
    let metrics = Metrics::for_tests();
    let chain = start_chain(&config, &metrics).await;
    let request = interleaved_traces(5, 4);
    chain
        .admit(TraceData::from_request(&request))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        metrics
            .sink_retried_spans
            .get_or_create(&metrics.sink("redis"))
            .get()
            > 0,
        "the chain retried while Redis was down"
    );

    server.resume();
    let report = chain.drain(Duration::from_secs(20)).await;
    assert!(!report.timed_out, "{report:?}");
    let entries = stream_entries(&server, STREAM).await;
    assert_eq!(entries.len(), span_count(&request), "every span, once");
    assert!(!dead_letter.exists(), "nothing went to the fallback");
}
