//! Named OTLP requests for tests and the benchmark: [`rich_request`] sets every field and every
//! attribute value kind; [`request`] and [`interleaved_traces`] are requests of a chosen size.
//! Not random data, and not used by the exporter itself.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::{Batch, TraceData};
use crate::encoding::attributes::BYTES_TAG;

/// 2018-12-13T14:51:00Z, the timestamp of the OTLP/JSON examples.
const START_NANOS: u64 = 1_544_712_660_000_000_000;

const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.26.0";

/// Text that needs escaping in JSON and quoting in CSV: non-ASCII, quotes, a comma, line
/// breaks, a tab, a backslash and a control character.
pub const TRICKY: &str = "naïve \"quoted\", comma\nnew line\r\ttab \\ \u{1} ✓ 🚀";

/// A request of one resource and one scope holding `spans` spans of `attributes` attributes
/// each (strings, ints, a double and a bool, like HTTP server spans), with distinct ids.
pub fn request(spans: usize, attributes: usize) -> ExportTraceServiceRequest {
    let spans = (0..spans).map(|i| span(i, attributes)).collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource("checkout")),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                schema_url: SCHEMA_URL.into(),
            }],
            schema_url: SCHEMA_URL.into(),
        }],
    }
}

/// Span number `i` of [`request`].
pub fn span(i: usize, attributes: usize) -> Span {
    let start = START_NANOS + i as u64 * 1_000_000;
    Span {
        trace_id: trace_id(i / 8),
        span_id: span_id(i),
        parent_span_id: match i % 8 {
            0 => vec![],
            _ => span_id(i - i % 8),
        },
        name: format!("GET /api/v1/orders/{{id}} #{i}"),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 3_500_000,
        attributes: (0..attributes).map(|a| http_attribute(i, a)).collect(),
        status: Some(Status {
            code: StatusCode::Ok as i32,
            message: String::new(),
        }),
        flags: 0x101,
        ..Default::default()
    }
}

/// A request in which every field carries a distinctive value: every span kind, every
/// attribute value kind (nested, bytes, ±infinity, i64 extremes, tag-like kvlists), events
/// and links with attributes, dropped counts, statuses with messages, flags, trace state,
/// entity refs, resources and scopes with attributes and schema URLs, non-ASCII and
/// characters that need escaping or quoting. Two resources, three scopes, seven spans.
///
/// Everything here survives every span encoding of the exporter, so a round trip compares
/// equal; NaN (never equal to itself) and the profiling-only dictionary indexes are left out.
pub fn rich_request() -> ExportTraceServiceRequest {
    let mut attributes = every_value_kind();
    attributes.push(attribute("double.inf", Value::DoubleValue(f64::INFINITY)));
    attributes.push(attribute(
        "double.neg_inf",
        Value::DoubleValue(f64::NEG_INFINITY),
    ));
    let first = Span {
        trace_state: "vendor=a,other=\"b\",ünï=cödé".to_string(),
        name: format!("GET /cart {TRICKY}"),
        attributes,
        dropped_attributes_count: 3,
        events: vec![
            Event {
                time_unix_nano: 1_700_000_000_100_000_000,
                name: "exception".to_string(),
                attributes: vec![
                    kv("exception.message", v_str(TRICKY)),
                    kv("exception.escaped", v_bool(true)),
                    kv("attempt", v_int(2)),
                ],
                dropped_attributes_count: 1,
            },
            Event {
                time_unix_nano: 1_700_000_000_200_000_000,
                ..Event::default()
            },
        ],
        dropped_events_count: 4,
        links: vec![
            Link {
                trace_id: trace_id(77),
                span_id: span_id(78),
                trace_state: "k=v".to_string(),
                attributes: vec![kv("link.kind", v_str("follows")), kv("w", v_double(0.25))],
                dropped_attributes_count: 2,
                flags: 0x101,
            },
            Link {
                trace_id: trace_id(79),
                span_id: span_id(80),
                ..Link::default()
            },
        ],
        dropped_links_count: 5,
        status: Some(Status {
            message: format!("timeout {TRICKY}"),
            code: StatusCode::Error as i32,
        }),
        ..plain_span(1, SpanKind::Server, "")
    };
    let root = Span {
        parent_span_id: Vec::new(),
        flags: 0,
        end_time_unix_nano: 1_600_000_000_000_000_000, // before the start: duration 0
        status: Some(Status::default()),
        attributes: Vec::new(),
        ..plain_span(6, SpanKind::Unspecified, "")
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", v_str("checkout ✓")),
                        kv("service.instance.id", v_str("pod-1")),
                        kv("host.cpus", v_int(8)),
                        kv("deployment", v_kvlist(vec![kv("env", v_str("prod"))])),
                    ],
                    dropped_attributes_count: 2,
                    entity_refs: vec![EntityRef {
                        schema_url: "https://opentelemetry.io/schemas/1.30.0".to_string(),
                        r#type: "service".to_string(),
                        id_keys: vec!["service.name".to_string(), "service.namespace".into()],
                        description_keys: vec!["service.instance.id".to_string()],
                    }],
                }),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "io.opentelemetry.http".to_string(),
                            version: "1.2.3".to_string(),
                            attributes: vec![kv("scope.attr", v_array(vec![v_int(1)]))],
                            dropped_attributes_count: 1,
                        }),
                        spans: vec![
                            first,
                            plain_span(2, SpanKind::Client, "client call"),
                            plain_span(3, SpanKind::Internal, "work"),
                        ],
                        schema_url: "https://opentelemetry.io/schemas/1.24.0".to_string(),
                    },
                    ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "messaging".to_string(),
                            ..InstrumentationScope::default()
                        }),
                        spans: vec![
                            plain_span(4, SpanKind::Producer, "send"),
                            plain_span(5, SpanKind::Consumer, "receive"),
                        ],
                        schema_url: String::new(),
                    },
                ],
                schema_url: "https://opentelemetry.io/schemas/1.25.0".to_string(),
            },
            ResourceSpans {
                // No service.name: the derived column is empty.
                resource: Some(Resource {
                    attributes: vec![kv("host.name", v_str("node-7"))],
                    dropped_attributes_count: 0,
                    entity_refs: Vec::new(),
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope::default()),
                    spans: vec![root, rich_span(9, 0)],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
        ],
    }
}

/// Span `index` of trace `trace`, every field set: attributes of every value kind, events
/// and links (one of each nearly empty), dropped counts, an error status. Ids differ for each (trace, index).
pub fn rich_span(trace: u8, index: u8) -> Span {
    let start = 1_700_000_000_000_000_000 + u64::from(index) * 1_000;
    let trace_n = usize::from(trace);
    Span {
        trace_id: trace_id(trace_n),
        span_id: span_id(trace_n << 8 | usize::from(index)),
        trace_state: "vendor=ünïcode,rojo=00f067aa0ba902b7".into(),
        parent_span_id: span_id(trace_n << 8 | 0xff),
        flags: 0x301,
        name: format!("GET /items/{trace}/{index} ✓"),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_234_567,
        attributes: every_value_kind(),
        dropped_attributes_count: 2,
        events: vec![
            Event {
                time_unix_nano: start + 10,
                name: "exception".into(),
                attributes: vec![string("exception.message", "boom")],
                dropped_attributes_count: 1,
            },
            Event {
                time_unix_nano: start + 20,
                ..Event::default()
            },
        ],
        dropped_events_count: 3,
        links: vec![
            Link {
                trace_id: trace_id(trace_n + 1000),
                span_id: span_id(trace_n + 1000),
                trace_state: "congo=t61rcWkgMzE".into(),
                attributes: vec![string("link.kind", "follows")],
                dropped_attributes_count: 4,
                flags: 0x100,
            },
            Link {
                trace_id: trace_id(trace_n + 2000),
                span_id: span_id(trace_n + 2000),
                ..Link::default()
            },
        ],
        dropped_links_count: 5,
        status: Some(Status {
            message: "upstream failed".into(),
            code: StatusCode::Error as i32,
        }),
    }
}

/// `traces` traces of `spans_per_trace` [`rich_span`]s, spread over two services and two
/// scopes so each trace's spans sit under several resource/scope wrappers, interleaved
/// with other traces' spans.
pub fn interleaved_traces(traces: u8, spans_per_trace: u8) -> ExportTraceServiceRequest {
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
                scope: Some(InstrumentationScope {
                    name: scope_name.into(),
                    version: "1.2.3".into(),
                    attributes: vec![attribute("scope.attr", Value::IntValue(42))],
                    dropped_attributes_count: 7,
                }),
                spans,
                schema_url: format!("https://opentelemetry.io/schemas/1.{s}"),
            });
        }
        let mut attributes = vec![string("service.name", service)];
        attributes.extend(every_value_kind());
        resource_spans.push(ResourceSpans {
            resource: Some(Resource {
                attributes,
                dropped_attributes_count: 6,
                entity_refs: vec![],
            }),
            scope_spans,
            schema_url: SCHEMA_URL.into(),
        });
    }
    ExportTraceServiceRequest { resource_spans }
}

/// One attribute of every value kind with finite numbers: nested arrays and key-value
/// lists, bytes, i64 extremes and an int no f64 holds, doubles at the edges of their range, a kvlist that looks
/// like an encoding's tag, duplicate keys and empty values.
pub fn every_value_kind() -> Vec<KeyValue> {
    vec![
        kv("http.status_code", v_int(504)),
        kv("ratio", v_double(0.1)),
        kv("str", v_str(TRICKY)),
        kv("empty.str", v_str("")),
        kv("int.max", v_int(i64::MAX)),
        kv("int.min", v_int(i64::MIN)),
        kv("int.beyond_f64", v_int(-9_007_199_254_740_993)),
        kv("double.whole", v_double(3.0)),
        kv("double.negative", v_double(-1.25e-3)),
        kv("double.big", v_double(1e300)),
        kv("double.tiny", v_double(5e-324)),
        kv("bool", v_bool(false)),
        kv("bytes", v_bytes(&[0, 1, 2, 0x9f, 0xfe, 0xff])),
        kv("bytes.empty", v_bytes(&[])),
        kv(
            "array",
            v_array(vec![
                v_int(1),
                v_double(1.5),
                v_str("x"),
                v_bool(true),
                v_bytes(b"ab"),
                v_array(vec![v_array(vec![v_int(2)]), v_array(vec![])]),
                v_kvlist(vec![kv("in.array", v_str("y"))]),
            ]),
        ),
        kv(
            "kvlist",
            v_kvlist(vec![
                kv("nested", v_kvlist(vec![kv("deep", v_int(-7))])),
                kv("list", v_array(vec![v_str("a"), v_str("b")])),
                kv("dup", v_int(1)),
                kv("dup", v_int(2)),
            ]),
        ),
        kv(
            "kvlist.tag_like",
            v_kvlist(vec![kv(BYTES_TAG, v_str("AA=="))]),
        ),
        kv("kvlist.empty", v_kvlist(vec![])),
        kv("array.empty", v_array(vec![])),
    ]
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

/// Trace ids of every span in the request, in order.
pub fn trace_ids(request: &ExportTraceServiceRequest) -> Vec<Vec<u8>> {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.trace_id.clone())
        .collect()
}

/// A 16-byte trace id derived from `n` (never all zeros).
pub fn trace_id(n: usize) -> Vec<u8> {
    let mut id = [0x5b_u8; 16];
    id[8..].copy_from_slice(&(n as u64).to_be_bytes());
    id.to_vec()
}

/// An 8-byte span id derived from `n` (never all zeros).
pub fn span_id(n: usize) -> Vec<u8> {
    (n as u64 | 1 << 63).to_be_bytes().to_vec()
}

pub fn string(key: &str, value: &str) -> KeyValue {
    attribute(key, Value::StringValue(value.into()))
}

pub fn attribute(key: &str, value: Value) -> KeyValue {
    kv(key, any(value))
}

pub fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        key_strindex: 0,
    }
}

pub fn any(value: Value) -> AnyValue {
    AnyValue { value: Some(value) }
}

pub fn v_str(s: &str) -> AnyValue {
    any(Value::StringValue(s.into()))
}

pub fn v_int(i: i64) -> AnyValue {
    any(Value::IntValue(i))
}

pub fn v_double(d: f64) -> AnyValue {
    any(Value::DoubleValue(d))
}

pub fn v_bool(b: bool) -> AnyValue {
    any(Value::BoolValue(b))
}

pub fn v_bytes(b: &[u8]) -> AnyValue {
    any(Value::BytesValue(b.to_vec()))
}

pub fn v_array(values: Vec<AnyValue>) -> AnyValue {
    any(Value::ArrayValue(ArrayValue { values }))
}

pub fn v_kvlist(values: Vec<KeyValue>) -> AnyValue {
    any(Value::KvlistValue(KeyValueList { values }))
}

/// Span `seed` of [`rich_request`]: a `seq` attribute, a parent, an OK status.
fn plain_span(seed: u8, kind: SpanKind, name: &str) -> Span {
    let n = usize::from(seed);
    Span {
        trace_id: trace_id(n),
        span_id: span_id(n + 100),
        parent_span_id: span_id(n + 200),
        flags: 0x301,
        name: name.to_string(),
        kind: kind as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(seed) * 1000,
        end_time_unix_nano: 1_700_000_000_250_000_000 + u64::from(seed) * 1000,
        attributes: vec![kv("seq", v_int(seed.into()))],
        status: Some(Status {
            message: String::new(),
            code: StatusCode::Ok as i32,
        }),
        ..Span::default()
    }
}

fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            string("service.name", service),
            string("service.version", "1.4.2"),
            string("deployment.environment.name", "production"),
            string("k8s.pod.name", &format!("{service}-7d9f8b6c5-x2kqz")),
        ],
        dropped_attributes_count: 0,
        entity_refs: vec![],
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "io.opentelemetry.http".into(),
        version: "2.1.0".into(),
        attributes: vec![string("library.language", "rust")],
        dropped_attributes_count: 0,
    }
}

/// Attribute `a` of span `i`: the shapes of HTTP server span attributes.
fn http_attribute(i: usize, a: usize) -> KeyValue {
    match a % 5 {
        0 => string("http.request.method", "GET"),
        1 => string("url.path", &format!("/api/v1/orders/{}", 100_000 + i)),
        2 => attribute(
            "http.response.status_code",
            Value::IntValue(200 + (i % 3) as i64),
        ),
        3 => attribute(
            "server.duration_ms",
            Value::DoubleValue(3.5 + (i % 10) as f64),
        ),
        _ => attribute(
            &format!("app.flag.{a}"),
            Value::BoolValue(i.is_multiple_of(2)),
        ),
    }
}

/// The requests as one, in order: what a reader that collects several messages compares.
pub fn merged(
    requests: impl IntoIterator<Item = ExportTraceServiceRequest>,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: requests
            .into_iter()
            .flat_map(|r| r.resource_spans)
            .collect(),
    }
}

/// `request` as the OTLP JSON mapping carries it: opentelemetry-proto's serde has no
/// infinite doubles, they read back as an attribute without a value.
pub fn json_representable(mut request: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    for span in request
        .resource_spans
        .iter_mut()
        .flat_map(|rs| rs.scope_spans.iter_mut())
        .flat_map(|ss| ss.spans.iter_mut())
    {
        for kv in &mut span.attributes {
            if let Some(any) = kv.value.as_mut()
                && matches!(any.value, Some(Value::DoubleValue(d)) if d.is_infinite())
            {
                any.value = None;
            }
        }
    }
    request
}
