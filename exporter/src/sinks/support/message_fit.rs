//! Spans into messages under a size limit, for the sinks that publish messages (kafka,
//! rabbitmq): an OTLP request split in halves until each part fits, or one flat span JSON
//! record per message; and the count of spans too large on their own. Not keys, routing
//! or producing: those are each sink's.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use spansink_config::ByteSize;

use crate::encoding::{JsonLinesEncoder, LineEncoder, scope_groups};
use crate::otlp::span_count;
use crate::sinks::SinkError;
use crate::telemetry::metrics::{Metrics, SinkReasonLabels};

/// How a whole OTLP request is written into one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFormat {
    /// Protobuf, as OTLP receivers read it.
    Proto,
    /// The OTLP JSON mapping (hex ids, camelCase).
    Json,
}

/// Message values that fit, and the spans that could not fit in any message.
#[derive(Debug, Default)]
pub struct Fitted {
    /// Each value with the number of spans it holds.
    pub values: Vec<(Bytes, usize)>,
    /// Spans that alone (with their resource and scope) exceed the limit.
    pub oversized_spans: usize,
}

/// Encodes `request` as one value if it fits in `max` bytes, else splits it in halves
/// until each part fits; a lone span that does not fit is counted in `oversized_spans`.
/// Spans keep their resource and scope and their order.
pub fn fit_request(
    request: ExportTraceServiceRequest,
    format: RequestFormat,
    max: usize,
    out: &mut Fitted,
) -> Result<(), serde_json::Error> {
    let spans = span_count(&request);
    if spans == 0 {
        return Ok(());
    }
    // Protobuf knows its size without encoding; JSON has to be written to be measured.
    let value = match format {
        RequestFormat::Proto if request.encoded_len() > max => None,
        RequestFormat::Proto => Some(request.encode_to_vec()),
        RequestFormat::Json => Some(serde_json::to_vec(&request)?).filter(|v| v.len() <= max),
    };
    match value {
        Some(value) => out.values.push((Bytes::from(value), spans)),
        None if spans == 1 => out.oversized_spans += 1,
        None => {
            let (first, second) = split_in_two(request, spans / 2);
            fit_request(first, format, max, out)?;
            fit_request(second, format, max, out)?;
        }
    }
    Ok(())
}

/// One value per span: its flat JSON record (one file-sink JSON line without the
/// newline), handed to `push` with the span. Returns how many spans were larger than
/// `max` on their own (not pushed).
pub fn flat_span_records(
    request: &ExportTraceServiceRequest,
    max: usize,
    mut push: impl FnMut(&Span, Bytes),
) -> usize {
    let mut oversized = 0;
    let mut encoder = JsonLinesEncoder::new();
    let mut line = Vec::new();
    for group in scope_groups(request) {
        encoder.begin_group(&group);
        for span in group.spans() {
            line.clear();
            encoder.encode_line(span, &mut line);
            line.pop(); // the newline: a message is one record, not a line of a file
            if line.len() > max {
                oversized += 1;
            } else {
                push(span, Bytes::copy_from_slice(&line));
            }
        }
    }
    oversized
}

/// Counts and logs spans that alone exceed `setting` (e.g. `kafka.max_message_bytes`):
/// no retry or fallback could make them fit, so they are dropped, once, when the rest of
/// their batch was delivered (a failing batch is retried or handed on whole).
pub fn count_oversized(
    metrics: &Metrics,
    sink: &str,
    setting: &'static str,
    limit: ByteSize,
    spans: usize,
) {
    if spans == 0 {
        return;
    }
    metrics
        .sink_dropped_spans
        .get_or_create(&SinkReasonLabels {
            sink: sink.to_string(),
            reason: "message_too_large",
        })
        .inc_by(spans as u64);
    tracing::warn!(
        sink = %sink,
        spans,
        limit = %limit,
        setting = %setting,
        "spans larger than the message size limit on their own were dropped"
    );
}

/// The error for a batch none of whose spans fits under `setting` on its own: permanent,
/// as the same batch can never be sent (a fallback gets it whole).
pub fn all_oversized(setting: &'static str, limit: ByteSize) -> SinkError {
    SinkError::permanent(
        "message_too_large",
        format!("every span of the batch exceeds {setting} ({limit}) on its own"),
    )
}

/// The first `n` spans and the rest, each under copies of the wrappers of its spans.
fn split_in_two(
    request: ExportTraceServiceRequest,
    n: usize,
) -> (ExportTraceServiceRequest, ExportTraceServiceRequest) {
    let mut first = ExportTraceServiceRequest::default();
    let mut second = ExportTraceServiceRequest::default();
    let mut room = n;
    for rs in request.resource_spans {
        let mut head = Vec::new();
        let mut tail = Vec::new();
        for mut ss in rs.scope_spans {
            let take = room.min(ss.spans.len());
            room -= take;
            let rest = ss.spans.split_off(take);
            if !rest.is_empty() {
                tail.push(ScopeSpans {
                    scope: ss.scope.clone(),
                    spans: rest,
                    schema_url: ss.schema_url.clone(),
                });
            }
            if !ss.spans.is_empty() {
                head.push(ss);
            }
        }
        if !tail.is_empty() {
            second.resource_spans.push(ResourceSpans {
                resource: rs.resource.clone(),
                scope_spans: tail,
                schema_url: rs.schema_url.clone(),
            });
        }
        if !head.is_empty() {
            first.resource_spans.push(ResourceSpans {
                resource: rs.resource,
                scope_spans: head,
                schema_url: rs.schema_url,
            });
        }
    }
    (first, second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::fixtures::{flatten, interleaved_traces};

    #[test]
    fn halves_keep_every_span_in_order_under_its_wrappers() {
        let request = interleaved_traces(3, 5);
        for n in 0..=span_count(&request) {
            let (first, second) = split_in_two(request.clone(), n);
            assert_eq!(span_count(&first), n);
            let mut joined = first;
            joined.resource_spans.extend(second.resource_spans);
            assert_eq!(flatten(&joined), flatten(&request), "split at {n}");
        }
    }
}
