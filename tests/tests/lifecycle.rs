//! The exporter's life cycle, on the real binary: hot reload through a ConfigMap-style
//! symlink swap (no span lost; an invalid config refused), drain on SIGTERM, and the
//! `validate` command.

use std::process::Command;
use std::time::Duration;

use spansink_exporter::bench::workload::Workload;
use spansink_tests::{
    Exporter, exporter_binary, read_json_lines, send_grpc, span_count, span_ids, wait_for,
};

fn requests(
    count: u64,
    spans: usize,
    first_seed: u64,
) -> Vec<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest> {
    let w = Workload {
        spans_per_request: spans,
        attributes_per_span: 4,
    };
    (first_seed..first_seed + count)
        .map(|s| w.request(s))
        .collect()
}

const SINK_A: &str =
    "  a:\n    file: {path: ./a/spans.jsonl}\n    batch: {flush_interval: 100ms}\n";
const SINK_B: &str =
    "  b:\n    file: {path: ./b/spans.jsonl}\n    batch: {flush_interval: 100ms}\n";

#[test]
fn reload_swaps_the_chain_without_losing_spans() {
    let mut exporter = Exporter::start(SINK_A);
    let before = requests(20, 50, 0);
    let after = requests(20, 50, 1000);
    let sent_before = send_grpc(&exporter.grpc_endpoint(), &before);

    exporter.write_config(&exporter.config_text(&format!("{SINK_A}{SINK_B}")));
    let reloaded = wait_for(Duration::from_secs(10), || {
        exporter
            .metric("spansink_config_reloads_total{result=\"success\"}")
            .filter(|v| *v >= 1.0)
    });
    assert!(
        reloaded.is_some(),
        "reload did not happen; log:\n{}",
        exporter.log()
    );
    let sent_after = send_grpc(&exporter.grpc_endpoint(), &after);

    let total = sent_before + sent_after;
    let in_a = wait_for(Duration::from_secs(15), || {
        let ids = span_ids(&read_json_lines(&exporter.path("a"), "spans"));
        (ids.len() >= total).then_some(ids)
    })
    .unwrap_or_else(|| {
        panic!(
            "sink a lost spans across the reload; log:\n{}",
            exporter.log()
        )
    });
    assert_eq!(
        in_a.len(),
        total,
        "every span sent before and after the reload is in sink a, once"
    );
    assert_eq!(
        read_json_lines(&exporter.path("a"), "spans").len(),
        total,
        "no duplicates in sink a"
    );

    let in_b = wait_for(Duration::from_secs(15), || {
        let ids = span_ids(&read_json_lines(&exporter.path("b"), "spans"));
        (ids.len() >= sent_after).then_some(ids)
    })
    .unwrap_or_else(|| {
        panic!(
            "new sink b did not get the spans sent after the reload; log:\n{}",
            exporter.log()
        )
    });
    let after_ids: std::collections::BTreeSet<String> = after
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| const_hex_encode(&s.span_id))
        .collect();
    assert!(
        after_ids.is_subset(&in_b),
        "sink b holds every span sent after the reload"
    );
    assert_eq!(exporter.terminate(Duration::from_secs(20)).code(), Some(0));
}

fn const_hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn an_invalid_new_config_is_refused_and_the_old_one_keeps_running() {
    let mut exporter = Exporter::start(SINK_A);
    let bad =
        exporter.config_text("  a:\n    file: {path: ./a/spans.jsonl}\n    fallback: nowhere\n");
    exporter.write_config(&bad);
    let refused = wait_for(Duration::from_secs(10), || {
        exporter
            .metric("spansink_config_reloads_total{result=\"failure\"}")
            .filter(|v| *v >= 1.0)
    });
    assert!(
        refused.is_some(),
        "invalid config was not refused; log:\n{}",
        exporter.log()
    );
    assert!(
        exporter.log().contains("sinks.a.fallback"),
        "the log names the bad field:\n{}",
        exporter.log()
    );

    let sent = send_grpc(&exporter.grpc_endpoint(), &requests(5, 20, 7));
    let written = wait_for(Duration::from_secs(10), || {
        let n = read_json_lines(&exporter.path("a"), "spans").len();
        (n >= sent).then_some(n)
    });
    assert_eq!(
        written,
        Some(sent),
        "the old chain still delivers; log:\n{}",
        exporter.log()
    );
    assert_eq!(
        exporter.metric("spansink_config_reloads_total{result=\"success\"}"),
        None
    );
    assert_eq!(exporter.terminate(Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn sigterm_delivers_everything_queued_then_exits_zero() {
    // A batch that never fills and never times out: only the shutdown drain writes it.
    let sinks = "  a:\n    file: {path: ./a/spans.jsonl}\n    queue: {max_spans: 100000}\n    batch: {max_spans: 100000, flush_interval: 1h}\n";
    let mut exporter = Exporter::start(sinks);
    let reqs = requests(10, 100, 42);
    let sent = send_grpc(&exporter.grpc_endpoint(), &reqs);
    assert_eq!(sent, reqs.iter().map(span_count).sum::<usize>());
    assert!(
        read_json_lines(&exporter.path("a"), "spans").is_empty(),
        "nothing is flushed before shutdown"
    );

    let status = exporter.terminate(Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(0),
        "clean exit; log:\n{}",
        exporter.log()
    );
    let written = read_json_lines(&exporter.path("a"), "spans");
    assert_eq!(
        written.len(),
        sent,
        "every accepted span was written on shutdown; log:\n{}",
        exporter.log()
    );
}

#[test]
fn validate_reports_every_problem_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "sinks:\n  main:\n    blackhole: {}\n    retry: {max_attempts: 0}\n    fallback: missing\n",
    )
    .unwrap();
    let out = Command::new(exporter_binary())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sinks.main.retry.max_attempts: must be >= 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sinks.main.fallback: names sink \"missing\""),
        "{stderr}"
    );

    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart.yaml");
    let out = Command::new(exporter_binary())
        .args(["validate", "--config", good])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
