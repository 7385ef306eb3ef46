//! End to end with a client nobody on this project wrote: the official OpenTelemetry
//! Python SDK sends spans over OTLP/gRPC and OTLP/HTTP to the real exporter binary, and
//! exactly those spans must appear in the file sink.

use std::collections::BTreeSet;
use std::time::Duration;

use spansink_tests::{Exporter, read_json_lines, wait_for};

const SINKS: &str =
    "  local:\n    file: {path: ./spans/spans.jsonl}\n    batch: {flush_interval: 200ms}\n";

fn send_with_python(
    protocol: &str,
    endpoint: &str,
    count: usize,
    service: &str,
) -> BTreeSet<(String, String, String)> {
    spansink_tests::send_with_python(protocol, endpoint, count, service)
        .iter()
        .map(|s| {
            (
                s["trace_id"].as_str().unwrap().into(),
                s["span_id"].as_str().unwrap().into(),
                s["name"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn spans_in_file(exporter: &Exporter, service: &str) -> BTreeSet<(String, String, String)> {
    read_json_lines(&exporter.path("spans"), "spans")
        .iter()
        .filter(|s| s["service_name"] == service)
        .map(|s| {
            (
                s["trace_id"].as_str().unwrap().into(),
                s["span_id"].as_str().unwrap().into(),
                s["name"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn check_protocol(protocol: &str) {
    let exporter = Exporter::start(SINKS);
    let endpoint = match protocol {
        "grpc" => exporter.grpc_endpoint(),
        _ => exporter.http_traces_url(),
    };
    let service = format!("python-{protocol}");
    let sent = send_with_python(protocol, &endpoint, 50, &service);
    assert_eq!(
        sent.len(),
        100,
        "the client creates a parent and a child per iteration"
    );
    let written = wait_for(Duration::from_secs(15), || {
        let found = spans_in_file(&exporter, &service);
        (found.len() >= sent.len()).then_some(found)
    });
    let written = written.unwrap_or_else(|| {
        panic!(
            "spans did not all arrive: {} of {}\n{}",
            spans_in_file(&exporter, &service).len(),
            sent.len(),
            exporter.log()
        )
    });
    assert_eq!(
        written, sent,
        "the file holds exactly the spans the SDK created"
    );

    // Typed attributes survive: the SDK sent an int, a double, a bool and a string.
    let lines = read_json_lines(&exporter.path("spans"), "spans");
    let parent = lines
        .iter()
        .find(|s| s["name"] == "parent-3")
        .expect("parent-3 written");
    let attrs = &parent["attributes"];
    assert_eq!(attrs["http.status_code"], serde_json::json!(203));
    assert_eq!(attrs["sample.ratio"], serde_json::json!(0.25));
    assert_eq!(attrs["retry"], serde_json::json!(false));
    assert_eq!(attrs["http.route"], serde_json::json!("/orders/{id}"));
    assert_eq!(
        parent["resource_attributes"]["deployment.environment"],
        serde_json::json!("e2e")
    );

    let accepted = format!("spansink_receiver_accepted_spans_total{{protocol=\"{protocol}\"}}");
    assert_eq!(
        exporter.metric(&accepted),
        Some(100.0),
        "metrics count the accepted spans"
    );
}

#[test]
fn python_sdk_over_grpc_lands_in_file_sink() {
    check_protocol("grpc");
}

#[test]
fn python_sdk_over_http_lands_in_file_sink() {
    check_protocol("http");
}
