//! The exporter's `/metrics`, after real traffic through every kind of outcome, passes
//! Prometheus' own linter (`promtool check metrics`): names, types, help, units.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use spansink_exporter::bench::workload::Workload;
use spansink_tests::{Exporter, send_grpc, wait_for};

fn promtool() -> &'static str {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "promtool not found: install Debian's `prometheus` package (tests/run-all.sh does)"
    );
    "promtool"
}

#[test]
fn metrics_pass_promtool_after_traffic() {
    // A filter and a failing sink with a fallback, so dropped/failed/fallback series exist.
    let sinks = "  main:\n    file: {path: ./a/spans.jsonl}\n    batch: {flush_interval: 100ms}\n    filter: {exclude: {span_names: ['GET /healthz']}}\n  broken:\n    otlp: {endpoint: 'http://127.0.0.1:1'}\n    batch: {flush_interval: 100ms}\n    timeout: 500ms\n    retry: {max_attempts: 1}\n    fallback: dead-letter\n  dead-letter:\n    fallback_only: true\n    file: {path: ./dlq/spans.jsonl}\n    batch: {flush_interval: 100ms}\n";
    let exporter = Exporter::start(sinks);
    let w = Workload {
        spans_per_request: 20,
        attributes_per_span: 3,
    };
    let sent = send_grpc(&exporter.grpc_endpoint(), &[w.request(1), w.request(2)]);
    let handed_over = wait_for(Duration::from_secs(15), || {
        exporter
            .metric("spansink_sink_fallback_spans_total{sink=\"broken\",fallback=\"dead-letter\"}")
            .filter(|v| *v >= sent as f64)
    });
    assert!(
        handed_over.is_some(),
        "the broken sink's batches reach the fallback; log:\n{}",
        exporter.log()
    );

    let (status, body) = exporter.get("/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    for family in [
        "spansink_receiver_accepted_spans_total",
        "spansink_sink_sent_spans_total",
        "spansink_sink_failed_spans_total",
        "spansink_sink_dropped_spans_total",
        "spansink_sink_fallback_spans_total",
        "spansink_sink_export_duration_seconds_bucket",
        "spansink_sink_batch_spans_bucket",
        "spansink_sink_queue_spans",
        "spansink_build_info",
    ] {
        assert!(
            body.contains(family),
            "{family} missing from /metrics:\n{body}"
        );
    }
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
