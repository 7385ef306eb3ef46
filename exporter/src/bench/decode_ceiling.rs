//! The physical ceiling the benchmark compares against: how many spans per second one
//! core can merely decode (prost, into the opentelemetry-proto structs) from the same
//! request bytes the load generator sends.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::otlp::TraceData;

/// Decodes `requests` round-robin on the calling thread for about `duration`; returns
/// spans decoded per second.
pub fn spans_per_second(requests: &[TraceData], duration: Duration) -> Result<f64, String> {
    if requests.is_empty() {
        return Err("no requests to decode".into());
    }
    let start = Instant::now();
    let mut spans = 0u64;
    let mut i = 0;
    while start.elapsed() < duration {
        let data = &requests[i % requests.len()];
        i += 1;
        let decoded =
            ExportTraceServiceRequest::decode(data.bytes().as_ref()).map_err(|e| e.to_string())?;
        spans += std::hint::black_box(decoded)
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum::<u64>();
    }
    Ok(spans as f64 / start.elapsed().as_secs_f64())
}
