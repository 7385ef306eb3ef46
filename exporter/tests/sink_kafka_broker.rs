//! Kafka sink tests against a real broker (tansu, `SPANSINK_TANSU`), read back by an
//! independent consumer (confluent-kafka): every field in each encoding, partitioning by
//! trace id, every codec, idempotence, splitting, a broker restart. Fault injection stays
//! on the in-process mock cluster (`sink_kafka`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use spansink_config::{ByteSize, KafkaCompression, KafkaEncoding, KafkaSinkConfig};
use spansink_exporter::otlp::fixtures::{
    batch_of, flatten, interleaved_traces, rich_request, trace_ids,
};
use spansink_exporter::otlp::span_count;
use spansink_exporter::sinks::Sink;
use spansink_exporter::sinks::kafka::KafkaSink;
use spansink_exporter::telemetry::metrics::Metrics;

mod kafka_messages;
mod servers;
use kafka_messages::{EVERY_ENCODING, as_read_back, decode, merged};
use servers::moto::Moto;
use servers::tansu::{ConsumedMessage, Tansu};

const PARTITIONS: u32 = 6;
/// Everything is in the broker before the consumer starts: a short idle ends the read.
const IDLE: Duration = Duration::from_secs(2);

fn sink_config(tansu: &Tansu, topic: &str, encoding: KafkaEncoding) -> KafkaSinkConfig {
    let mut config = KafkaSinkConfig::new(tansu.bootstrap(), topic);
    config.encoding = encoding;
    config.message_timeout = spansink_config::Duration::from_secs(10);
    config
}

/// `request` with every span renamed `tag name`, so batches can be told apart.
fn tagged(tag: &str, mut request: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    for rs in &mut request.resource_spans {
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                span.name = format!("{tag} {}", span.name);
            }
        }
    }
    request
}

/// Asserts that `got` and `want` hold the same spans (every field) as many times each,
/// in any order; on a difference, says how many are missing and extra and shows one.
fn assert_same_spans(mut got: Vec<String>, mut want: Vec<String>, what: &str) {
    got.sort();
    want.sort();
    if got == want {
        return;
    }
    let mut extra = got.clone();
    let mut missing = Vec::new();
    for span in want {
        match extra.iter().position(|s| *s == span) {
            Some(i) => {
                extra.remove(i);
            }
            None => missing.push(span),
        }
    }
    let short = |s: Option<&String>| s.map(|s| s.chars().take(4000).collect::<String>());
    panic!(
        "{what}: {} spans missing, {} extra\nfirst missing: {:?}\nfirst extra: {:?}",
        missing.len(),
        extra.len(),
        short(missing.first()),
        short(extra.first())
    );
}

/// Checks what every message must hold (a key that is the hex trace id of each of its
/// spans, no headers) and returns the messages decoded, with the partitions of each trace.
fn read_back(
    encoding: KafkaEncoding,
    consumed: &[ConsumedMessage],
) -> (
    Vec<ExportTraceServiceRequest>,
    BTreeMap<String, BTreeSet<i32>>,
) {
    let mut partitions: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    let mut decoded = Vec::new();
    for c in consumed {
        let r = decode(encoding, &c.value);
        let key = c.key.clone().expect("every message has a key");
        for id in trace_ids(&r) {
            assert_eq!(key, const_hex::encode(&id), "key is the hex trace id");
        }
        assert!(c.headers.is_empty(), "no headers: {:?}", c.headers);
        partitions.entry(key).or_default().insert(c.partition);
        decoded.push(r);
    }
    (decoded, partitions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_in_each_encoding_and_each_trace_in_one_partition() {
    let tansu = Tansu::start();
    for encoding in EVERY_ENCODING {
        let topic = format!("spans-{encoding:?}").to_lowercase();
        tansu.create_topic(&topic, PARTITIONS);
        let sink = KafkaSink::new(
            "events",
            &sink_config(&tansu, &topic, encoding),
            &Metrics::for_tests(),
        )
        .unwrap();
        let rich = rich_request();
        let traces = interleaved_traces(24, 4);
        sink.export(&batch_of(&[&rich, &traces])).await.unwrap();
        sink.export(&batch_of(&[&traces])).await.unwrap();
        sink.shutdown().await.unwrap();

        let consumed = tansu.consume(&topic, IDLE);
        let (decoded, partitions) = read_back(encoding, &consumed);
        let expected = as_read_back(
            encoding,
            merged([rich.clone(), traces.clone(), traces.clone()]),
        );
        // Messages of different partitions come back in no particular order.
        assert_same_spans(
            flatten(&merged(decoded)),
            flatten(&expected),
            &format!("{encoding:?}: every field of every span"),
        );
        for (trace, parts) in &partitions {
            assert_eq!(
                parts.len(),
                1,
                "{encoding:?}: trace {trace} in partitions {parts:?}"
            );
        }
        let used: BTreeSet<i32> = partitions.values().flatten().copied().collect();
        assert!(
            used.len() > 1,
            "{encoding:?}: 24+ traces used only partitions {used:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_codec_is_read_back_by_another_client() {
    let tansu = Tansu::start();
    for compression in [
        KafkaCompression::None,
        KafkaCompression::Gzip,
        KafkaCompression::Snappy,
        KafkaCompression::Lz4,
        KafkaCompression::Zstd,
    ] {
        let topic = format!("spans-{}", compression.as_librdkafka());
        tansu.create_topic(&topic, 2);
        let mut config = sink_config(&tansu, &topic, KafkaEncoding::OtlpProto);
        config.compression = compression;
        let sink = KafkaSink::new("events", &config, &Metrics::for_tests()).unwrap();
        let request = interleaved_traces(4, 8);
        sink.export(&batch_of(&[&request])).await.unwrap();
        sink.shutdown().await.unwrap();
        let (decoded, _) = read_back(KafkaEncoding::OtlpProto, &tansu.consume(&topic, IDLE));
        assert_same_spans(
            flatten(&merged(decoded)),
            flatten(&request),
            &format!("{compression:?}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_writes_each_message_once() {
    let tansu = Tansu::start();
    let topic = "spans-idempotent";
    tansu.create_topic(topic, PARTITIONS);
    let config = sink_config(&tansu, topic, KafkaEncoding::OtlpProto);
    assert!(config.idempotence, "the default");
    let sink =
        std::sync::Arc::new(KafkaSink::new("events", &config, &Metrics::for_tests()).unwrap());
    let mut want = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let request = tagged(&format!("batch {i}"), interleaved_traces(8, 4));
        want.extend(flatten(&request));
        let sink = sink.clone();
        // Concurrent exports: many requests in flight per partition, as the sequence
        // numbers of an idempotent producer must order them.
        tasks.push(tokio::spawn(async move {
            sink.export(&batch_of(&[&request])).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    sink.shutdown().await.unwrap();
    let consumed = tansu.consume(topic, IDLE);
    let (decoded, _) = read_back(KafkaEncoding::OtlpProto, &consumed);
    assert_same_spans(
        flatten(&merged(decoded)),
        want,
        "no span twice, none missing",
    );
    let offsets: BTreeSet<(i32, i64)> = consumed.iter().map(|c| (c.partition, c.offset)).collect();
    assert_eq!(offsets.len(), consumed.len(), "each offset read once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_max_message_bytes_arrives_as_several_messages_under_it() {
    let tansu = Tansu::start();
    let topic = "spans-split";
    tansu.create_topic(topic, PARTITIONS);
    let mut config = sink_config(&tansu, topic, KafkaEncoding::OtlpProto);
    config.max_message_bytes = ByteSize::kib(4);
    let sink = KafkaSink::new("events", &config, &Metrics::for_tests()).unwrap();
    let request = interleaved_traces(3, 40);
    let batch = batch_of(&[&request]);
    assert!(
        batch.encoded_len() > 3 * 4096,
        "the batch is several limits large"
    );
    sink.export(&batch).await.unwrap();
    sink.shutdown().await.unwrap();

    let consumed = tansu.consume(topic, IDLE);
    assert!(
        consumed.len() > 3,
        "{} messages for 3 traces",
        consumed.len()
    );
    for c in &consumed {
        assert!(
            c.value.len() <= 4096,
            "a message of {} bytes",
            c.value.len()
        );
    }
    let (decoded, partitions) = read_back(KafkaEncoding::OtlpProto, &consumed);
    assert!(partitions.values().all(|p| p.len() == 1), "{partitions:?}");
    assert_same_spans(
        flatten(&merged(decoded)),
        flatten(&request),
        "nothing lost, nothing twice",
    );
}

/// The broker is killed and started again on its S3 log while batches are exported.
/// Exports that fail are retried (as the retry policy does); spans of a batch exported
/// once are written exactly once (the idempotent producer), spans of a retried batch at
/// least once, and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing_and_duplicates_only_retried_batches() {
    let moto = Moto::start();
    let mut tansu = Tansu::start_on_s3(&moto, "tansu-log");
    let topic = "spans-restart";
    tansu.create_topic(topic, 3);
    let mut config = sink_config(&tansu, topic, KafkaEncoding::OtlpProto);
    // Reconnect soon after the broker is back (librdkafka's default backs off to 10 s).
    config
        .librdkafka
        .insert("reconnect.backoff.max.ms".into(), "500".into());
    let sink =
        std::sync::Arc::new(KafkaSink::new("events", &config, &Metrics::for_tests()).unwrap());

    const BATCHES: usize = 30;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let exporter = {
        let sink = sink.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut batches = Vec::new();
            for i in 0..BATCHES {
                let request = tagged(&format!("batch {i}"), interleaved_traces(4, 3));
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    match sink.export(&batch_of(&[&request])).await {
                        Ok(()) => break,
                        Err(e) if e.is_transient() && attempts < 5 => {
                            tokio::time::sleep(Duration::from_millis(200)).await
                        }
                        Err(e) => panic!("batch {i} failed {attempts} times: {e}"),
                    }
                }
                batches.push((flatten(&request), attempts));
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            batches
        })
    };
    // A few batches in: the first writes to S3 storage are slow.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while done.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "3 batches within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::block_in_place(|| tansu.restart());
    let done_at_restart = done.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..BATCHES).contains(&done_at_restart),
        "the restart came mid-stream ({done_at_restart} of {BATCHES} batches done)"
    );
    let batches = exporter.await.unwrap();
    sink.shutdown().await.unwrap();

    let (decoded, _) = read_back(KafkaEncoding::OtlpProto, &tansu.consume(topic, IDLE));
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for span in flatten(&merged(decoded)) {
        *counts.entry(span).or_default() += 1;
    }
    let mut retried = 0;
    for (i, (spans, attempts)) in batches.iter().enumerate() {
        if *attempts > 1 {
            retried += 1;
        }
        for span in spans {
            let n = counts.remove(span).unwrap_or(0);
            assert!(
                n >= 1,
                "batch {i}: a span was lost\ntansu log:\n{}",
                tansu.log()
            );
            if *attempts == 1 {
                assert_eq!(n, 1, "batch {i} (exported once): a span written {n} times");
            }
        }
    }
    assert!(
        counts.is_empty(),
        "spans nobody sent: {:?}",
        counts.keys().take(3).collect::<Vec<_>>()
    );
    eprintln!("{retried} of {BATCHES} batches needed a retry across the restart");
    let total: usize = batches.iter().map(|(s, _)| s.len()).sum();
    assert_eq!(total, BATCHES * span_count(&interleaved_traces(4, 3)));
}
