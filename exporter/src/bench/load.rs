//! The load generator: `concurrency` clients send pre-encoded requests over OTLP/gRPC or
//! OTLP/HTTP as fast as the exporter answers, for a fixed time. Requests are encoded once
//! up front so the generator's own CPU goes to the network, not to protobuf.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Endpoint;

use crate::otlp::TraceData;
use crate::otlp::codec::ClientCodec;

use super::workload::Workload;

/// Which receiver to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadProtocol {
    Grpc,
    Http,
}

/// Parameters of one load run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub protocol: LoadProtocol,
    /// `http://host:port` of the receiver (gRPC) or its base URL (HTTP, `/v1/traces` appended).
    pub endpoint: String,
    pub concurrency: usize,
    pub duration: Duration,
    pub workload: Workload,
}

/// What a load run achieved.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub accepted_spans: u64,
    pub refused_requests: u64,
    pub failed_requests: u64,
    pub elapsed: Duration,
    pub request_bytes: usize,
}

impl LoadReport {
    pub fn spans_per_second(&self) -> f64 {
        self.accepted_spans as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Default)]
struct Counters {
    accepted_spans: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

/// Distinct requests cycled through by the clients.
const DISTINCT_REQUESTS: u64 = 32;

/// Encodes the requests a run sends (also used for the decode ceiling).
pub fn encoded_requests(workload: Workload) -> Vec<TraceData> {
    (0..DISTINCT_REQUESTS)
        .map(|seed| TraceData::from_request(&workload.request(seed)))
        .collect()
}

/// Runs the load and reports what the exporter accepted.
pub async fn run(spec: &LoadSpec) -> Result<LoadReport, String> {
    let requests = Arc::new(encoded_requests(spec.workload));
    let counters = Arc::new(Counters::default());
    let deadline = Instant::now() + spec.duration;
    let start = Instant::now();
    let mut clients = Vec::new();
    for client in 0..spec.concurrency {
        let (requests, counters, spec) = (requests.clone(), counters.clone(), spec.clone());
        clients.push(tokio::spawn(async move {
            match spec.protocol {
                LoadProtocol::Grpc => {
                    grpc_client(client, &spec, &requests, &counters, deadline).await
                }
                LoadProtocol::Http => {
                    http_client(client, &spec, &requests, &counters, deadline).await
                }
            }
        }));
    }
    for c in clients {
        c.await
            .map_err(|e| format!("load client panicked: {e}"))??;
    }
    Ok(LoadReport {
        accepted_spans: counters.accepted_spans.load(Ordering::Relaxed),
        refused_requests: counters.refused.load(Ordering::Relaxed),
        failed_requests: counters.failed.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
        request_bytes: requests.first().map(TraceData::encoded_len).unwrap_or(0),
    })
}

async fn grpc_client(
    client: usize,
    spec: &LoadSpec,
    requests: &[TraceData],
    counters: &Counters,
    deadline: Instant,
) -> Result<(), String> {
    let channel = Endpoint::from_shared(spec.endpoint.clone())
        .map_err(|e| format!("bad endpoint {}: {e}", spec.endpoint))?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", spec.endpoint))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    let path =
        PathAndQuery::from_static("/opentelemetry.proto.collector.trace.v1.TraceService/Export");
    let mut i = client;
    while Instant::now() < deadline {
        let data = &requests[i % requests.len()];
        i += 1;
        grpc.ready()
            .await
            .map_err(|e| format!("gRPC channel failed: {e}"))?;
        let request = tonic::Request::new(data.bytes().clone());
        match grpc.unary(request, path.clone(), ClientCodec).await {
            Ok(resp) => {
                let rejected = resp
                    .get_ref()
                    .partial_success
                    .as_ref()
                    .map_or(0, |p| p.rejected_spans);
                let accepted = (data.span_count() as u64).saturating_sub(rejected.max(0) as u64);
                counters
                    .accepted_spans
                    .fetch_add(accepted, Ordering::Relaxed);
            }
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                ) =>
            {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(_) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

async fn http_client(
    client: usize,
    spec: &LoadSpec,
    requests: &[TraceData],
    counters: &Counters,
    deadline: Instant,
) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let url = format!("{}/v1/traces", spec.endpoint.trim_end_matches('/'));
    let mut i = client;
    while Instant::now() < deadline {
        let data = &requests[i % requests.len()];
        i += 1;
        let body: Bytes = data.bytes().clone();
        let resp = http
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                counters
                    .accepted_spans
                    .fetch_add(data.span_count() as u64, Ordering::Relaxed);
                // Read the body so the connection is reused.
                let _ = r.bytes().await;
            }
            Ok(r) if r.status().as_u16() == 429 || r.status().as_u16() == 503 => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                let _ = r.bytes().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(r) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                let _ = r.bytes().await;
            }
            Err(_) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}
