//! The durable queue's promise, on the real binary: `kill -9` the exporter at random
//! moments while a client sends, restart it each time, and check at the end that every
//! span the exporter acknowledged reached the backend. The exporter runs with
//! `receivers.acknowledgements: persisted`: an answer means "fsynced in the queue". Its own test binary: it takes a
//! while (a million spans, a dozen crashes).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use spansink_exporter::bench::workload::Workload;
use spansink_tests::{Exporter, rejected_spans, wait_for};

const SPANS_PER_REQUEST: usize = 500;

/// Every answer in these tests waits for the durable queue's fsync.
const PERSISTED: &str = "  acknowledgements: persisted\n";

fn request(seed: u64) -> ExportTraceServiceRequest {
    Workload {
        spans_per_request: SPANS_PER_REQUEST,
        attributes_per_span: 2,
    }
    .request(seed)
}

fn span_ids_of(request: &ExportTraceServiceRequest) -> Vec<String> {
    spansink_tests::request_span_ids(request).collect()
}

/// A tiny deterministic generator for crash moments (no test depends on the seed).
struct Lcg(u64);

impl Lcg {
    fn next_in(&mut self, low: u64, high: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        low + (self.0 >> 33) % (high - low)
    }
}

/// Sends requests `seeds` with `clients` concurrent clients, retrying each until the
/// exporter acknowledges it (the exporter is killed and restarted meanwhile). Returns the
/// acknowledged seeds.
fn send_through_crashes(endpoint: &str, seeds: std::ops::Range<u64>, clients: u64) -> Vec<u64> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let acked = Arc::new(Mutex::new(Vec::new()));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for client in 0..clients {
            let endpoint = endpoint.to_string();
            let acked = acked.clone();
            let mine: Vec<u64> = seeds.clone().filter(|s| s % clients == client).collect();
            tasks.push(tokio::spawn(async move {
                let mut connection = None;
                for seed in mine {
                    let request = request(seed);
                    let started = Instant::now();
                    loop {
                        assert!(
                            started.elapsed() < Duration::from_secs(120),
                            "request {seed} not acknowledged within 2 minutes of retries"
                        );
                        if connection.is_none() {
                            connection = TraceServiceClient::connect(endpoint.clone()).await.ok();
                        }
                        let Some(client) = connection.as_mut() else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        match client.export(request.clone()).await {
                            Ok(answer) => {
                                let rejected = rejected_spans(answer.get_ref());
                                assert_eq!(rejected, 0, "request {seed}: spans rejected");
                                acked.lock().unwrap().push(seed);
                                break;
                            }
                            Err(_) => {
                                // Refused (retryable), or the process died under us.
                                connection = None;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("client task");
        }
    });
    acked.lock().unwrap().clone()
}

/// Kills and restarts `exporter` `times` times at random moments until `done`.
fn crash_repeatedly(exporter: &mut Exporter, times: usize, done: &AtomicBool) -> usize {
    let mut random = Lcg(0x5eed);
    let mut crashes = 0;
    while crashes < times && !done.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(random.next_in(200, 1200)));
        exporter.kill();
        crashes += 1;
        exporter.restart();
    }
    crashes
}

/// Span ids in the file sink's files: (distinct ids, lines read).
fn delivered(exporter: &Exporter) -> (BTreeSet<String>, usize) {
    let lines = spansink_tests::read_json_lines(&exporter.path("out"), "spans");
    let ids = spansink_tests::span_ids(&lines);
    (ids, lines.len())
}

/// Checks that every acknowledged span arrived; returns the duplicate count.
fn check_nothing_acknowledged_is_lost(exporter: &Exporter, acked: &[u64]) -> usize {
    let expected: BTreeSet<String> = acked
        .iter()
        .flat_map(|&s| span_ids_of(&request(s)))
        .collect();
    let arrived = wait_for(Duration::from_secs(180), || {
        let (ids, lines) = delivered(exporter);
        expected.is_subset(&ids).then_some((ids, lines))
    });
    let Some((ids, lines)) = arrived else {
        let (ids, _) = delivered(exporter);
        let missing = expected.difference(&ids).count();
        panic!(
            "{missing} of {} acknowledged spans never reached the file; log tail:\n{}",
            expected.len(),
            tail(&exporter.log(), 60)
        );
    };
    lines - ids.len()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The durable queue's own `fsync` policy is `interval`: with `persisted` each request is
/// fsynced before its answer anyway.
fn file_sink_with_durable_queue(exporter: &Exporter, extra_receivers: &str) -> String {
    format!(
        "receivers:\n  grpc: {{endpoint: '127.0.0.1:{grpc}'}}\n  http: {{endpoint: '127.0.0.1:{http}'}}\n{extra_receivers}telemetry:\n  endpoint: '127.0.0.1:{telemetry}'\nshutdown:\n  drain_timeout: 10s\nsinks:\n  main:\n    file:\n      path: ./out/spans.jsonl\n      fsync: true\n      rotation: {{max_size: 1GiB, max_files: 1000}}\n    queue:\n      max_spans: 20000\n      durable: {{path: ./queue/main, fsync: interval}}\n    batch: {{max_spans: 5000, flush_interval: 100ms}}\n",
        grpc = exporter.grpc_port,
        http = exporter.http_port,
        telemetry = exporter.telemetry_port,
    )
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_span() {
    let mut exporter = Exporter::start_with(|e| file_sink_with_durable_queue(e, PERSISTED));
    let endpoint = exporter.grpc_endpoint();
    let requests = 1_000_000 / SPANS_PER_REQUEST as u64;
    let done = AtomicBool::new(false);
    let (acked, crashes) = std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            let acked = send_through_crashes(&endpoint, 0..requests, 4);
            done.store(true, Ordering::Release);
            acked
        });
        let crashes = crash_repeatedly(&mut exporter, 12, &done);
        (sender.join().expect("sender"), crashes)
    });
    assert_eq!(
        acked.len() as u64,
        requests,
        "every request is acknowledged in the end"
    );
    assert!(
        crashes >= 10,
        "only {crashes} crashes happened before the client finished"
    );
    let duplicates = check_nothing_acknowledged_is_lost(&exporter, &acked);
    let replayed: f64 = exporter
        .metric("spansink_queue_replayed_spans_total{sink=\"main\"}")
        .unwrap_or(0.0);
    eprintln!(
        "{} spans acknowledged across {crashes} kill -9s; {duplicates} delivered twice (in flight at a crash); last start replayed {replayed}",
        acked.len() * SPANS_PER_REQUEST
    );
}

/// Crash moments while the backend is down: the queue holds everything across restarts,
/// and delivers it once the backend is back.
#[test]
fn a_backend_down_across_restarts_loses_nothing_acknowledged() {
    // The backend: a second exporter, receiving OTLP and writing a file.
    let mut backend = Exporter::start(
        "  main:\n    file: {path: ./out/spans.jsonl}\n    batch: {flush_interval: 100ms}\n",
    );
    let backend_endpoint = backend.grpc_endpoint();
    let mut front = Exporter::start_with(|e| {
        format!(
            "receivers:\n  grpc: {{endpoint: '127.0.0.1:{}'}}\n  http: {{endpoint: '127.0.0.1:{}'}}\n{PERSISTED}telemetry:\n  endpoint: '127.0.0.1:{}'\nshutdown:\n  drain_timeout: 5s\nsinks:\n  main:\n    otlp: {{endpoint: '{backend_endpoint}'}}\n    retry: {{max_attempts: 1000, initial_backoff: 50ms, max_backoff: 200ms, max_elapsed: 10m}}\n    queue:\n      max_spans: 5000\n      durable: {{path: ./queue/main, fsync: batch}}\n    batch: {{max_spans: 2000, flush_interval: 100ms}}\n",
            e.grpc_port, e.http_port, e.telemetry_port
        )
    });
    let endpoint = front.grpc_endpoint();
    let first = send_through_crashes(&endpoint, 0..100, 2);
    // Stopped cleanly: the backend's own (memory) queue is written out first, so what it
    // acknowledged to the front is in its file. Only the front is crashed here.
    backend.terminate(Duration::from_secs(30));
    // Backend down: the front keeps accepting into its durable queue and is killed twice.
    let during = {
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let sender = scope.spawn(|| {
                let acked = send_through_crashes(&endpoint, 100..300, 2);
                done.store(true, Ordering::Release);
                acked
            });
            crash_repeatedly(&mut front, 3, &done);
            sender.join().expect("sender")
        })
    };
    let queued = front
        .metric("spansink_queue_disk_bytes{sink=\"main\"}")
        .unwrap_or(0.0);
    assert!(
        queued > 0.0,
        "the outage left nothing on disk: spans were lost or never queued"
    );
    front.kill();
    front.restart();
    backend.restart();
    let acked: Vec<u64> = first.into_iter().chain(during).collect();
    let duplicates = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_nothing_acknowledged_is_lost(&backend, &acked)
    }))
    .unwrap_or_else(|_| {
        let log = front.log();
        let problems: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .take(30)
            .collect();
        panic!(
            "spans lost; the front exporter's last warnings:\n{}",
            problems.join("\n")
        )
    });
    eprintln!(
        "{} requests acknowledged, backend down across restarts; {duplicates} spans delivered twice",
        acked.len()
    );
}
