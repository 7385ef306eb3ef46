//! Reloads and shutdowns while the backend is down, on the real binary: a front exporter
//! forwards OTLP to a back exporter (which writes a file) that is stopped; the front is
//! reloaded and/or stopped; then the backend comes back and every span the front
//! acknowledged must arrive. Its own test binary: each test waits out drain deadlines.

use std::collections::BTreeSet;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use spansink_config::ShutdownConfig;
use spansink_exporter::bench::workload::Workload;
use spansink_tests::{Exporter, read_json_lines, send_grpc, span_ids, wait_for};

/// The front's drain deadline; short, since the backend is down and every drain in
/// these tests runs into it.
const DRAIN_SECONDS: u64 = 3;

/// What the operator gives the pod: drain + the sinks' shutdown + 10 s of margin.
fn grace_period() -> Duration {
    Duration::from_secs(DRAIN_SECONDS)
        + ShutdownConfig::SINK_SHUTDOWN_TIMEOUT
        + Duration::from_secs(10)
}

fn requests(count: u64, first_seed: u64) -> Vec<ExportTraceServiceRequest> {
    let workload = Workload {
        spans_per_request: 50,
        attributes_per_span: 2,
    };
    (first_seed..first_seed + count)
        .map(|seed| workload.request(seed))
        .collect()
}

fn ids_of(requests: &[ExportTraceServiceRequest]) -> BTreeSet<String> {
    requests
        .iter()
        .flat_map(spansink_tests::request_span_ids)
        .collect()
}

/// The back exporter (OTLP in, a JSON Lines file out), started so that its ports are
/// known, then stopped: the front's backend is down.
fn stopped_backend() -> Exporter {
    let mut backend = Exporter::start(
        "  main:\n    file: {path: ./out/spans.jsonl}\n    batch: {flush_interval: 100ms}\n",
    );
    backend.terminate(Duration::from_secs(30));
    backend
}

/// An OTLP sink `name` forwarding to `backend`, retrying for 10 minutes; `durable`
/// keeps its queue on disk. `timeout` is the setting the tests change to reload it.
fn forwarding_sink(name: &str, backend: &str, durable: bool, timeout: &str) -> String {
    let durable = if durable {
        format!(", durable: {{path: ./queue/{name}, fsync: batch}}")
    } else {
        String::new()
    };
    format!(
        "  {name}:\n    otlp: {{endpoint: '{backend}'}}\n    timeout: {timeout}\n    \
         retry: {{max_attempts: 100000, initial_backoff: 50ms, max_backoff: 200ms, max_elapsed: 10m}}\n    \
         queue: {{max_spans: 100000{durable}}}\n    batch: {{max_spans: 500, flush_interval: 100ms}}\n"
    )
}

fn front_config(front: &Exporter, sinks: &str) -> String {
    format!(
        "receivers:\n  grpc: {{endpoint: '127.0.0.1:{}'}}\n  http: {{endpoint: '127.0.0.1:{}'}}\ntelemetry:\n  endpoint: '127.0.0.1:{}'\nshutdown:\n  drain_timeout: {DRAIN_SECONDS}s\nsinks:\n{sinks}",
        front.grpc_port, front.http_port, front.telemetry_port
    )
}

fn reload(front: &mut Exporter, sinks: &str, count: f64) {
    let text = front_config(front, sinks);
    front.write_config(&text);
    let reloaded = wait_for(Duration::from_secs(15), || {
        front
            .metric("spansink_config_reloads_total{result=\"success\"}")
            .filter(|v| *v >= count)
    });
    assert!(
        reloaded.is_some(),
        "reload did not happen; log:\n{}",
        front.log()
    );
}

/// Waits until every span of `expected` is in the backend's file.
fn all_arrive(backend: &Exporter, expected: &BTreeSet<String>, front: &Exporter) {
    let arrived = wait_for(Duration::from_secs(60), || {
        let ids = span_ids(&read_json_lines(&backend.path("out"), "spans"));
        expected.is_subset(&ids).then_some(())
    });
    if arrived.is_none() {
        let ids = span_ids(&read_json_lines(&backend.path("out"), "spans"));
        panic!(
            "{} of {} acknowledged spans never reached the backend; front log:\n{}",
            expected.difference(&ids).count(),
            expected.len(),
            front.log()
        );
    }
}

/// The log without terminal colour codes (`\x1b[..m`), so fields read `name=value`.
fn plain_log(front: &Exporter) -> String {
    let log = front.log();
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn dropped(front: &Exporter, sink: &str, reason: &str) -> f64 {
    front
        .metric(&format!(
            "spansink_sink_dropped_spans_total{{sink=\"{sink}\",reason=\"{reason}\"}}"
        ))
        .unwrap_or(0.0)
}

/// A reload replaces the front's sink while its backend is down, and the hand-over
/// deadline passes; the backend comes back; nothing acknowledged is missing.
fn a_reload_while_the_backend_is_down_drops_nothing(durable: bool) -> Exporter {
    let mut backend = stopped_backend();
    let endpoint = backend.grpc_endpoint();
    let mut front = Exporter::start_with(|front| {
        front_config(front, &forwarding_sink("main", &endpoint, durable, "10s"))
    });
    let before = requests(20, 0);
    let after = requests(20, 1000);
    assert_eq!(send_grpc(&front.grpc_endpoint(), &before), 1000);

    reload(
        &mut front,
        &forwarding_sink("main", &endpoint, durable, "11s"),
        1.0,
    );
    assert_eq!(send_grpc(&front.grpc_endpoint(), &after), 1000);
    // Past the hand-over deadline, the backend still down.
    std::thread::sleep(Duration::from_secs(DRAIN_SECONDS + 1));
    if !durable {
        assert_eq!(
            front.metric("spansink_sink_draining_generations{sink=\"main\"}"),
            Some(1.0),
            "the old generation keeps delivering in the background"
        );
    }

    backend.restart();
    let expected: BTreeSet<String> = ids_of(&before).union(&ids_of(&after)).cloned().collect();
    all_arrive(&backend, &expected, &front);
    for reason in ["reload", "shutdown", "no_fallback"] {
        assert_eq!(dropped(&front, "main", reason), 0.0, "dropped ({reason})");
    }
    front
}

#[test]
fn a_reload_while_the_backend_is_down_drops_nothing_from_a_memory_queue() {
    let mut front = a_reload_while_the_backend_is_down_drops_nothing(false);
    // The old generation delivered in the background, then ended.
    let ended = wait_for(Duration::from_secs(15), || {
        front
            .metric("spansink_sink_draining_generations{sink=\"main\"}")
            .filter(|v| *v == 0.0)
    });
    assert!(
        ended.is_some(),
        "the old generation never ended; log:\n{}",
        front.log()
    );
    assert!(plain_log(&front).contains("old generation of a replaced sink ended"));
    assert_eq!(front.terminate(grace_period()).code(), Some(0));
}

#[test]
fn a_reload_while_the_backend_is_down_drops_nothing_from_a_durable_queue() {
    let mut front = a_reload_while_the_backend_is_down_drops_nothing(true);
    let kept = front
        .metric("spansink_sink_kept_spans_total{sink=\"main\",reason=\"reload\"}")
        .unwrap_or(0.0);
    assert!(
        kept > 0.0,
        "the old generation, cut at the hand-over deadline, left its spans to the new one; log:\n{}",
        front.log()
    );
    assert_eq!(front.terminate(grace_period()).code(), Some(0));
}

#[test]
fn sigterm_in_the_middle_of_a_reload_exits_within_the_grace_period() {
    let mut backend = stopped_backend();
    let endpoint = backend.grpc_endpoint();
    let sinks = |timeout: &str| {
        format!(
            "{}{}",
            forwarding_sink("memory", &endpoint, false, timeout),
            forwarding_sink("disk", &endpoint, true, timeout)
        )
    };
    let mut front = Exporter::start_with(|front| front_config(front, &sinks("10s")));
    let sent = requests(20, 0);
    assert_eq!(send_grpc(&front.grpc_endpoint(), &sent), 1000);

    // Both sinks replaced: the old generations now deliver (into a dead backend) while
    // the new ones take over; SIGTERM lands in that hand-over.
    reload(&mut front, &sinks("11s"), 1.0);
    let status = front.terminate(grace_period());
    assert_eq!(status.code(), Some(0), "log:\n{}", front.log());
    let log = plain_log(&front);
    assert!(log.contains("sink chain drained; exiting"), "{log}");

    // What the durable sink held was handed over whole: after a restart with the
    // backend up, all of it arrives.
    backend.restart();
    front.restart();
    all_arrive(&backend, &ids_of(&sent), &front);
    assert_eq!(front.terminate(grace_period()).code(), Some(0));
}

#[test]
fn sigterm_with_a_durable_queue_and_the_backend_down_keeps_everything_for_the_next_start() {
    let mut backend = stopped_backend();
    let endpoint = backend.grpc_endpoint();
    let mut front = Exporter::start_with(|front| {
        front_config(front, &forwarding_sink("main", &endpoint, true, "10s"))
    });
    let sent = requests(20, 0);
    assert_eq!(send_grpc(&front.grpc_endpoint(), &sent), 1000);

    // Stop accepting, try until the drain deadline, keep the rest on disk.
    let status = front.terminate(grace_period());
    assert_eq!(status.code(), Some(0), "log:\n{}", front.log());
    let log = plain_log(&front);
    let last = log
        .lines()
        .rfind(|l| l.contains("sink chain drained; exiting"))
        .unwrap_or_else(|| panic!("no drain report in the log:\n{log}"));
    assert!(last.contains("dropped_spans=0"), "{last}");
    assert!(last.contains("kept_spans=1000"), "{last}");
    assert!(
        !log.contains("spans not delivered are dropped"),
        "nothing is counted as dropped:\n{log}"
    );

    backend.restart();
    front.restart();
    all_arrive(&backend, &ids_of(&sent), &front);
    let replayed = front
        .metric("spansink_queue_replayed_spans_total{sink=\"main\"}")
        .unwrap_or(0.0);
    assert_eq!(replayed, 1000.0, "the restart found everything on disk");
    assert_eq!(dropped(&front, "main", "shutdown"), 0.0);
    assert_eq!(front.terminate(grace_period()).code(), Some(0));
}
