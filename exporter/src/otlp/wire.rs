//! The one check every request gets on arrival: is it a well-formed
//! `ExportTraceServiceRequest`, and how many spans does it hold.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// What the scan learned about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireSummary {
    pub spans: usize,
}

/// A request body that is not a valid `ExportTraceServiceRequest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed OTLP trace request: {0}")]
pub struct WireError(pub String);

impl From<prost::DecodeError> for WireError {
    fn from(e: prost::DecodeError) -> Self {
        WireError(e.to_string())
    }
}

/// Validates `bytes` and counts spans.
pub fn scan(bytes: &[u8]) -> Result<WireSummary, WireError> {
    let request = ExportTraceServiceRequest::decode(bytes)?;
    let spans = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    Ok(WireSummary { spans })
}
