//! Span encodings shared by sinks: one canonical flat span model ([`flat`]) rendered as
//! JSON Lines or CSV with typed attribute values. Not I/O: sinks own files and clients.
//!
//! Encoders append to a caller's reused buffer: no per-span allocation, no intermediate
//! JSON tree. They read either a decoded request ([`encode_request`]) or, byte for byte the
//! same output, the request's wire bytes through [`otlp::view`](crate::otlp::view)
//! ([`encode_wire_request`]), which skips the decode into owned structs (the file sink's
//! path: the decode cost more than the encoding).

pub mod attributes;
pub mod csv;
pub mod flat;
pub mod json;
pub mod json_text;
#[cfg(test)]
mod view_equivalence_tests;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use spansink_config::FileFormat;

use crate::otlp::WireError;
use crate::otlp::view::{SpanView, for_each_scope_group};

pub use self::csv::CsvEncoder;
pub use flat::{FIELDS, FlatSpan, ScopeGroup, flat_spans, scope_groups};
pub use json::{JsonLinesEncoder, SpanRecord, read_request, read_span_line};

/// Writes spans one line each in some format. The caller walks the request's scope groups,
/// calls [`begin_group`](LineEncoder::begin_group) once per group (the encoder prepares
/// the resource and scope part there), then [`encode_line`](LineEncoder::encode_line)
/// for each of the group's spans; see [`encode_request`].
pub trait LineEncoder: Send {
    /// What starts every new file (the CSV header); nothing for JSON Lines.
    fn file_header(&self, out: &mut Vec<u8>);
    /// Prepares the columns shared by the spans of `group`.
    fn begin_group(&mut self, group: &ScopeGroup<'_>);
    /// Appends one line, newline included, for `span` of the current group.
    fn encode_line(&mut self, span: &Span, out: &mut Vec<u8>);
    /// [`encode_line`](LineEncoder::encode_line) for a span read from the wire: the same
    /// bytes as for the decoded span. Fails only on bytes `wire::scan` would refuse.
    fn encode_view_line(&mut self, span: &SpanView<'_>, out: &mut Vec<u8>)
    -> Result<(), WireError>;
}

/// The encoder for a file format.
pub fn line_encoder(format: FileFormat) -> Box<dyn LineEncoder> {
    match format {
        FileFormat::Jsonl => Box::new(JsonLinesEncoder::new()),
        FileFormat::Csv => Box::new(CsvEncoder::new()),
    }
}

/// Appends one line per span of the encoded request `bytes` (checked by `wire::scan`; no
/// file header), read through [`view`](crate::otlp::view) without decoding it: the same
/// bytes as [`encode_request`] of the decoded request. Returns the number of spans.
pub fn encode_wire_request(
    encoder: &mut dyn LineEncoder,
    bytes: &[u8],
    out: &mut Vec<u8>,
) -> Result<usize, WireError> {
    let mut spans = 0;
    for_each_scope_group(bytes, |group| {
        encoder.begin_group(&ScopeGroup::of_view(group));
        for span in group.spans() {
            encoder.encode_view_line(&span?, out)?;
            spans += 1;
        }
        Ok::<(), WireError>(())
    })?;
    Ok(spans)
}

/// Appends one line per span of `request` (no file header). Returns the number of spans.
pub fn encode_request(
    encoder: &mut dyn LineEncoder,
    request: &ExportTraceServiceRequest,
    out: &mut Vec<u8>,
) -> usize {
    let mut spans = 0;
    for group in scope_groups(request) {
        encoder.begin_group(&group);
        for span in group.spans() {
            encoder.encode_line(span, out);
        }
        spans += group.spans().len();
    }
    spans
}
