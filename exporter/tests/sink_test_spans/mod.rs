//! Test spans for the Kafka and S3 sink tests: a rich request (every field set, every
//! attribute value kind) and a flat view to compare what a backend gave back. Test-only.

#![allow(dead_code)] // each test binary uses a different subset

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use spansink_exporter::otlp::{Batch, TraceData};

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

/// One attribute of every `AnyValue` kind, nested ones included.
pub fn every_value_kind() -> Vec<KeyValue> {
    vec![
        kv("str", Value::StringValue("héllo \"world\"\n".into())),
        kv("bool", Value::BoolValue(true)),
        kv("int", Value::IntValue(-9_007_199_254_740_993)),
        kv("double", Value::DoubleValue(3.25)),
        kv("bytes", Value::BytesValue(vec![0, 1, 2, 254, 255])),
        kv(
            "array",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(Value::StringValue("a".into())),
                    },
                    AnyValue {
                        value: Some(Value::IntValue(7)),
                    },
                ],
            }),
        ),
        kv(
            "kvlist",
            Value::KvlistValue(KeyValueList {
                values: vec![
                    kv("inner", Value::BoolValue(false)),
                    kv("deep", Value::DoubleValue(-0.5)),
                ],
            }),
        ),
    ]
}

/// Trace id `n` (16 bytes, never all zero).
pub fn trace_id(n: u8) -> Vec<u8> {
    let mut id = vec![0xab; 16];
    id[0] = n;
    id[15] = n.wrapping_add(1);
    id
}

/// A span of trace `trace` with every field set.
pub fn rich_span(trace: u8, index: u8) -> Span {
    let start = 1_700_000_000_000_000_000 + u64::from(index) * 1_000;
    Span {
        trace_id: trace_id(trace),
        span_id: vec![trace, index, 3, 4, 5, 6, 7, 8],
        trace_state: "vendor=value".into(),
        parent_span_id: vec![trace, 0, 0, 0, 0, 0, 0, 1],
        flags: 0x101,
        name: format!("GET /items/{trace}/{index}"),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_234_567,
        attributes: every_value_kind(),
        dropped_attributes_count: 2,
        events: vec![Event {
            time_unix_nano: start + 10,
            name: "exception".into(),
            attributes: vec![kv("exception.message", Value::StringValue("boom".into()))],
            dropped_attributes_count: 1,
        }],
        dropped_events_count: 3,
        links: vec![Link {
            trace_id: trace_id(trace.wrapping_add(100)),
            span_id: vec![9; 8],
            trace_state: "other=1".into(),
            attributes: vec![kv("link.kind", Value::StringValue("follows".into()))],
            dropped_attributes_count: 4,
            flags: 0x100,
        }],
        dropped_links_count: 5,
        status: Some(Status {
            message: "upstream failed".into(),
            code: StatusCode::Error as i32,
        }),
    }
}

fn resource(service: &str) -> Resource {
    let mut attributes = vec![kv("service.name", Value::StringValue(service.into()))];
    attributes.extend(every_value_kind());
    Resource {
        attributes,
        dropped_attributes_count: 6,
        entity_refs: vec![],
    }
}

fn scope(name: &str) -> InstrumentationScope {
    InstrumentationScope {
        name: name.into(),
        version: "1.2.3".into(),
        attributes: vec![kv("scope.attr", Value::IntValue(42))],
        dropped_attributes_count: 7,
    }
}

/// `traces` traces of `spans_per_trace` spans, spread over two services and two scopes so
/// each trace's spans sit under several resource/scope wrappers, interleaved with others.
pub fn rich_request(traces: u8, spans_per_trace: u8) -> ExportTraceServiceRequest {
    let mut resource_spans = Vec::new();
    for (r, service) in ["checkout", "payments"].into_iter().enumerate() {
        let mut scope_spans = Vec::new();
        for (s, scope_name) in ["http", "db"].into_iter().enumerate() {
            let mut spans = Vec::new();
            for index in 0..spans_per_trace {
                for trace in 0..traces {
                    if usize::from(index) % 4 == r * 2 + s {
                        spans.push(rich_span(trace + 1, index));
                    }
                }
            }
            scope_spans.push(ScopeSpans {
                scope: Some(scope(scope_name)),
                spans,
                schema_url: format!("https://opentelemetry.io/schemas/1.{s}"),
            });
        }
        resource_spans.push(ResourceSpans {
            resource: Some(resource(service)),
            scope_spans,
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        });
    }
    ExportTraceServiceRequest { resource_spans }
}

/// A batch of these requests (one part each), as the chain would hand it to a sink.
pub fn batch_of(requests: &[&ExportTraceServiceRequest]) -> Batch {
    requests
        .iter()
        .map(|r| TraceData::from_request(r))
        .collect()
}

/// Every span with its resource and scope (and their schema URLs), sorted: equal for two
/// requests exactly when they hold the same spans under the same wrappers, however grouped.
pub fn flatten(request: &ExportTraceServiceRequest) -> Vec<String> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                out.push(format!(
                    "{:?} | {} | {:?} | {} | {:?}",
                    rs.resource, rs.schema_url, ss.scope, ss.schema_url, span
                ));
            }
        }
    }
    out.sort();
    out
}

pub fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// Trace ids of every span in the request.
pub fn trace_ids(request: &ExportTraceServiceRequest) -> Vec<Vec<u8>> {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.trace_id.clone())
        .collect()
}
