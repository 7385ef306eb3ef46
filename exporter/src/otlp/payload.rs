//! [`TraceData`] (one validated request) and [`Batch`] (several, exported together).

use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::wire::{self, WireError};

/// One OTLP `ExportTraceServiceRequest` in protobuf wire form, known to be well formed.
///
/// Kept encoded because most sinks either forward the bytes as they are (otlp, kafka and
/// s3 with `otlp_proto`) or read a few fields; decoding every request into owned structs
/// would cost more than the rest of the pipeline. Cloning is cheap (reference-counted).
#[derive(Clone, Debug, PartialEq)]
pub struct TraceData {
    bytes: Bytes,
    spans: usize,
}

impl TraceData {
    /// Checks `bytes` (one scan, no allocation per span) and keeps them.
    pub fn from_wire(bytes: Bytes) -> Result<Self, WireError> {
        let summary = wire::scan(&bytes)?;
        Ok(Self {
            bytes,
            spans: summary.spans,
        })
    }

    /// Encodes a request built in code (JSON receiver, tests).
    pub fn from_request(request: &ExportTraceServiceRequest) -> Self {
        Self {
            bytes: Bytes::from(request.encode_to_vec()),
            spans: span_count(request),
        }
    }

    /// The same spans in `bytes` rewritten by code that keeps a request well formed (the
    /// transform policy): not scanned again. Debug builds check the promise.
    pub fn rewritten(&self, bytes: Bytes) -> Self {
        debug_assert_eq!(
            wire::scan(&bytes).map(|s| s.spans),
            Ok(self.spans),
            "a rewrite broke the request or changed its span count"
        );
        Self {
            bytes,
            spans: self.spans,
        }
    }

    pub fn span_count(&self) -> usize {
        self.spans
    }

    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Decodes into the opentelemetry-proto types.
    pub fn decode(&self) -> Result<ExportTraceServiceRequest, WireError> {
        ExportTraceServiceRequest::decode(self.bytes.as_ref()).map_err(WireError::from)
    }
}

/// How many spans `request` holds, over all its resources and scopes.
pub fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// Requests grouped for one export call. Holds the parts as they arrived; protobuf's rule
/// that concatenated messages merge (repeated fields append) makes
/// [`Batch::encoded`] a valid `ExportTraceServiceRequest` without re-encoding.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    parts: Vec<TraceData>,
    spans: usize,
    bytes: usize,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, data: TraceData) {
        self.spans += data.spans;
        self.bytes += data.encoded_len();
        self.parts.push(data);
    }

    pub fn span_count(&self) -> usize {
        self.spans
    }

    pub fn encoded_len(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    pub fn parts(&self) -> &[TraceData] {
        &self.parts
    }

    pub fn into_parts(self) -> Vec<TraceData> {
        self.parts
    }

    /// The whole batch as one encoded `ExportTraceServiceRequest`.
    pub fn encoded(&self) -> Bytes {
        match self.parts.as_slice() {
            [one] => one.bytes.clone(),
            parts => {
                let mut out = BytesMut::with_capacity(self.bytes);
                for p in parts {
                    out.extend_from_slice(&p.bytes);
                }
                out.freeze()
            }
        }
    }

    /// The whole batch decoded into one request (resource spans in arrival order).
    pub fn decode(&self) -> Result<ExportTraceServiceRequest, WireError> {
        let mut merged = ExportTraceServiceRequest::default();
        for p in &self.parts {
            merged.resource_spans.extend(p.decode()?.resource_spans);
        }
        Ok(merged)
    }
}

impl FromIterator<TraceData> for Batch {
    fn from_iter<I: IntoIterator<Item = TraceData>>(iter: I) -> Self {
        let mut batch = Batch::new();
        for d in iter {
            batch.push(d);
        }
        batch
    }
}
