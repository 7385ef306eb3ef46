//! Turns a batch into Kafka messages: one OTLP request per trace, keyed by the trace id,
//! split further when a message would exceed `max_message_bytes`. Not the producing.
//!
//! Why per trace: the message key decides the partition, and only a message whose spans
//! all share one trace id can be keyed so that "a trace stays in one partition" is true.
//! Spans of a trace keep their resource and scope (the wrappers are copied into each
//! trace's request), and keep their order within the trace.

use std::collections::HashMap;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use spansink_config::KafkaEncoding;

use crate::otlp::{Batch, WireError};
use crate::sinks::message_fit::{Fitted, RequestFormat, fit_request, flat_span_records};

/// One Kafka message, ready to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaMessage {
    /// Lowercase hex trace id (32 ASCII characters), the form OTLP JSON and most tools
    /// print. `None` for spans without a valid 16-byte trace id (producer picks a partition).
    pub key: Option<String>,
    pub value: Bytes,
    pub spans: usize,
}

/// The messages of a batch, and the spans that could not fit in any message.
#[derive(Debug, Default)]
pub struct EncodedBatch {
    pub messages: Vec<KafkaMessage>,
    /// Spans that alone, with their resource and scope, exceed `max_message_bytes`.
    pub oversized_spans: usize,
}

/// Why a batch could not be encoded. Both are permanent: the same batch fails again.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Malformed(#[from] WireError),
    #[error("cannot encode spans as OTLP JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Encodes `batch` into messages of at most `max_message_bytes` value bytes.
pub fn encode_batch(
    batch: &Batch,
    encoding: KafkaEncoding,
    max_message_bytes: usize,
) -> Result<EncodedBatch, EncodeError> {
    let mut out = EncodedBatch::default();
    let format = match encoding {
        KafkaEncoding::OtlpProto => RequestFormat::Proto,
        KafkaEncoding::OtlpJson => RequestFormat::Json,
        KafkaEncoding::Json => {
            // One message per span, keyed by its own trace id.
            out.oversized_spans =
                flat_span_records(&batch.decode()?, max_message_bytes, |span, value| {
                    out.messages.push(KafkaMessage {
                        key: hex_key(&span.trace_id),
                        value,
                        spans: 1,
                    })
                });
            return Ok(out);
        }
    };
    let traces = group_by_trace(batch.decode()?);
    // A batch that is one trace and already fits goes out as received, without re-encoding.
    if let ([(key, _)], RequestFormat::Proto) = (traces.as_slice(), format)
        && batch.encoded_len() <= max_message_bytes
    {
        out.messages.push(KafkaMessage {
            key: key.clone(),
            value: batch.encoded(),
            spans: batch.span_count(),
        });
        return Ok(out);
    }
    for (key, request) in traces {
        let mut fitted = Fitted::default();
        fit_request(request, format, max_message_bytes, &mut fitted)?;
        out.oversized_spans += fitted.oversized_spans;
        out.messages.extend(
            fitted
                .values
                .into_iter()
                .map(|(value, spans)| KafkaMessage {
                    key: key.clone(),
                    value,
                    spans,
                }),
        );
    }
    Ok(out)
}

fn hex_key(trace_id: &[u8]) -> Option<String> {
    (trace_id.len() == 16).then(|| const_hex::encode(trace_id))
}

/// One request per trace id, in order of first appearance. Each keeps the resource and
/// scope of its spans; consecutive spans under one scope stay under one wrapper.
fn group_by_trace(
    request: ExportTraceServiceRequest,
) -> Vec<(Option<String>, ExportTraceServiceRequest)> {
    let mut groups: Vec<TraceGroup> = Vec::new();
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut scope_seq = 0usize;
    for (r, resource_spans) in request.resource_spans.into_iter().enumerate() {
        let ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        } = resource_spans;
        for scope_spans in scope_spans {
            scope_seq += 1;
            let ScopeSpans {
                scope,
                spans,
                schema_url: scope_schema_url,
            } = scope_spans;
            for span in spans {
                let g = match index.get(&span.trace_id) {
                    Some(&g) => g,
                    None => {
                        index.insert(span.trace_id.clone(), groups.len());
                        groups.push(TraceGroup::new(hex_key(&span.trace_id)));
                        groups.len() - 1
                    }
                };
                let group = &mut groups[g];
                if group.last_resource != Some(r) {
                    group.request.resource_spans.push(ResourceSpans {
                        resource: resource.clone(),
                        scope_spans: Vec::new(),
                        schema_url: schema_url.clone(),
                    });
                    group.last_resource = Some(r);
                    group.last_scope = None;
                }
                let last = group.request.resource_spans.len() - 1;
                let rs = &mut group.request.resource_spans[last];
                if group.last_scope != Some(scope_seq) {
                    rs.scope_spans.push(ScopeSpans {
                        scope: scope.clone(),
                        spans: Vec::new(),
                        schema_url: scope_schema_url.clone(),
                    });
                    group.last_scope = Some(scope_seq);
                }
                let last = rs.scope_spans.len() - 1;
                rs.scope_spans[last].spans.push(span);
            }
        }
    }
    groups.into_iter().map(|g| (g.key, g.request)).collect()
}

/// The spans of one trace as they are collected.
struct TraceGroup {
    key: Option<String>,
    request: ExportTraceServiceRequest,
    // Which input wrappers the last appended resource/scope came from, so consecutive
    // spans share them instead of each getting its own copy.
    last_resource: Option<usize>,
    last_scope: Option<usize>,
}

impl TraceGroup {
    fn new(key: Option<String>) -> Self {
        Self {
            key,
            request: ExportTraceServiceRequest::default(),
            last_resource: None,
            last_scope: None,
        }
    }
}
