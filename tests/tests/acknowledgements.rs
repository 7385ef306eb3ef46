//! `receivers.acknowledgements: delivered` on the real binary: the OTLP answer comes only
//! once the file sink has written the spans, and a sink's permanent failure reaches the
//! client as an error (gRPC and HTTP).

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use spansink_exporter::bench::workload::Workload;
use spansink_tests::{Exporter, read_json_lines, span_ids};

const DELIVERED: &str = "  acknowledgements: delivered\n  acknowledgement_timeout: 20s\n";
const FILE_SINK: &str = "  main:\n    file: {path: ./out/spans.jsonl}\n    batch: {flush_interval: 200ms}\n    retry: {max_attempts: 2, initial_backoff: 50ms, max_backoff: 50ms}\n";

fn request(seed: u64) -> ExportTraceServiceRequest {
    Workload {
        spans_per_request: 20,
        attributes_per_span: 2,
    }
    .request(seed)
}

fn ids_of(request: &ExportTraceServiceRequest) -> std::collections::BTreeSet<String> {
    spansink_tests::request_span_ids(request).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn export_grpc(endpoint: &str, request: &ExportTraceServiceRequest) -> Result<(), tonic::Status> {
    runtime().block_on(async {
        let mut client = TraceServiceClient::connect(endpoint.to_string())
            .await
            .expect("connect to exporter");
        client.export(request.clone()).await.map(|_| ())
    })
}

/// POSTs `request` as protobuf: (status, body).
fn export_http(url: &str, request: &ExportTraceServiceRequest) -> (u16, String) {
    runtime().block_on(async {
        let response = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("POST /v1/traces");
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    })
}

#[test]
fn delivered_answers_once_the_spans_are_in_the_file() {
    let exporter = Exporter::start_with(|e| e.config_text_with_receivers(DELIVERED, FILE_SINK));
    for (seed, over_grpc) in [(1, true), (2, false), (3, true)] {
        let request = request(seed);
        if over_grpc {
            export_grpc(&exporter.grpc_endpoint(), &request)
                .unwrap_or_else(|s| panic!("export refused: {s:?}\n{}", exporter.log()));
        } else {
            let (status, body) = export_http(&exporter.http_traces_url(), &request);
            assert_eq!(status, 200, "{body}\n{}", exporter.log());
        }
        // Read at once, no waiting: the answer promised the spans are written.
        let written = span_ids(&read_json_lines(&exporter.path("out"), "spans"));
        let expected = ids_of(&request);
        assert!(
            expected.is_subset(&written),
            "request {seed}: {} of {} spans not in the file when the answer came",
            expected.difference(&written).count(),
            expected.len()
        );
    }
    let waits = exporter
        .metric("spansink_receiver_acknowledgement_wait_seconds_count{mode=\"delivered\"}")
        .unwrap_or(0.0);
    assert_eq!(waits, 3.0);
}

#[test]
fn a_permanent_sink_failure_reaches_the_client_as_an_error() {
    let exporter = Exporter::start_with(|e| e.config_text_with_receivers(DELIVERED, FILE_SINK));
    // A directory where the sink's file should be: the write fails for good.
    std::fs::create_dir_all(exporter.path("out/spans.jsonl")).expect("block the file path");

    let status = export_grpc(&exporter.grpc_endpoint(), &request(1))
        .expect_err("the sink cannot write: the export must fail");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("sink \"main\""),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("point the sink at a file path"),
        "the sink's reason is passed on: {}",
        status.message()
    );

    let (code, body) = export_http(&exporter.http_traces_url(), &request(2));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("sink \"main\""), "{body}");

    let refused = exporter
        .metric("spansink_receiver_requests_total{protocol=\"grpc\",reason=\"rejected_by_sink\"}")
        .unwrap_or(0.0);
    assert_eq!(refused, 1.0);
}
