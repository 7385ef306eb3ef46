//! The ceiling for the Kafka sink's benchmark figure: the bench's 32 requests (512 spans,
//! 10 attributes) in batches of 2048 spans, encoded once with the sink's encoder, then
//! produced for 10 s by a bare rdkafka `FutureProducer` with the sink's producer settings
//! (8 batches in flight, like 8 concurrent exports). Prints messages/s, spans/s and this
//! process's CPU-s per million spans. Not a test; needs a broker:
//! `SPANSINK_BENCH_KAFKA=127.0.0.1:PORT cargo bench -p spansink-exporter --bench kafka_ceiling`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use spansink_config::{KafkaEncoding, KafkaSinkConfig};
use spansink_exporter::bench::process_stats::cpu_time;
use spansink_exporter::bench::workload::Workload;
use spansink_exporter::otlp::fixtures::batch_of;
use spansink_exporter::sinks::kafka::encoding::{KafkaMessage, encode_batch};
use spansink_exporter::sinks::kafka::producer::client_config;

const RUN_FOR: Duration = Duration::from_secs(10);
const IN_FLIGHT: usize = 8;
const TOPIC: &str = "spans-ceiling";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let broker = std::env::var("SPANSINK_BENCH_KAFKA").unwrap_or_else(|_| {
        panic!("SPANSINK_BENCH_KAFKA is not set: give the broker as host:port (e.g. a tansu started by hand)")
    });
    let config = KafkaSinkConfig::new(broker, TOPIC);
    let producer: Arc<FutureProducer> = Arc::new(
        client_config(&config, &|_| None)
            .expect("producer settings")
            .create()
            .expect("producer"),
    );
    let workload = Workload {
        spans_per_request: 512,
        attributes_per_span: 10,
    };
    let requests: Vec<_> = (0..32).map(|seed| workload.request(seed)).collect();
    let batches: Arc<Vec<Vec<KafkaMessage>>> = Arc::new(
        requests
            .chunks(4)
            .map(|chunk| {
                let refs: Vec<_> = chunk.iter().collect();
                encode_batch(&batch_of(&refs), KafkaEncoding::OtlpProto, 1_000_000)
                    .expect("encode")
                    .messages
            })
            .collect(),
    );

    let (messages, spans) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let cpu_before = cpu_time(std::process::id()).expect("process CPU time");
    let started = Instant::now();
    let workers = (0..IN_FLIGHT).map(|w| {
        let (producer, batches) = (producer.clone(), batches.clone());
        let (messages, spans) = (messages.clone(), spans.clone());
        tokio::spawn(async move {
            let mut i = w;
            while started.elapsed() < RUN_FOR {
                let batch = &batches[i % batches.len()];
                i += 1;
                let deliveries = batch.iter().map(|m| {
                    let mut record = FutureRecord::<str, [u8]>::to(TOPIC).payload(m.value.as_ref());
                    if let Some(key) = &m.key {
                        record = record.key(key.as_str());
                    }
                    producer.send(record, Timeout::After(Duration::from_secs(30)))
                });
                for (delivery, m) in join_all(deliveries).await.into_iter().zip(batch) {
                    delivery.map_err(|(e, _)| e).expect("delivered");
                    messages.fetch_add(1, Ordering::Relaxed);
                    spans.fetch_add(m.spans as u64, Ordering::Relaxed);
                }
            }
        })
    });
    for worker in join_all(workers).await {
        worker.expect("worker");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_time(std::process::id()).expect("process CPU time") - cpu_before;
    producer.flush(Duration::from_secs(10)).expect("flush");
    let (messages, spans) = (
        messages.load(Ordering::Relaxed),
        spans.load(Ordering::Relaxed),
    );
    println!(
        "bare FutureProducer, sink settings: {:.0} messages/s, {:.0} spans/s, {:.3} CPU-s per million spans ({messages} messages, {spans} spans in {elapsed:.1} s)",
        messages as f64 / elapsed,
        spans as f64 / elapsed,
        cpu.as_secs_f64() / (spans as f64 / 1e6),
    );
}
