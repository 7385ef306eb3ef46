//! Named OTLP requests for tests and the benchmark: [`rich_request`] sets every field and every
//! attribute value kind; [`request`] is a realistic request of a chosen size. Not random data.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// 2018-12-13T14:51:00Z, the timestamp of the OTLP/JSON examples.
const START_NANOS: u64 = 1_544_712_660_000_000_000;

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
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
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

/// Every field of every message set, every kind of attribute value (nested arrays and
/// key-value lists included), events and links; two resources, three spans.
pub fn rich_request() -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        string("service.name", "checkout"),
                        attribute("host.cores", Value::IntValue(8)),
                    ],
                    dropped_attributes_count: 1,
                    entity_refs: vec![EntityRef {
                        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                        r#type: "service".into(),
                        id_keys: vec!["service.name".into(), "service.namespace".into()],
                        description_keys: vec!["service.version".into()],
                    }],
                }),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(scope()),
                        spans: vec![rich_span(1), rich_span(2)],
                        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                    },
                    ScopeSpans::default(),
                ],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            },
            ResourceSpans {
                resource: Some(resource("payments")),
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: vec![rich_span(3)],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
        ],
    }
}

/// A span with every field set and attributes of every value kind.
pub fn rich_span(n: u8) -> Span {
    Span {
        trace_id: trace_id(usize::from(n)),
        span_id: span_id(usize::from(n)),
        trace_state: "vendor=ünïcode,rojo=00f067aa0ba902b7".into(),
        parent_span_id: span_id(usize::from(n) + 100),
        flags: 0x301,
        name: format!("charge card ✓ {n}"),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: START_NANOS,
        end_time_unix_nano: START_NANOS + 42_000_000,
        attributes: every_value_kind(),
        dropped_attributes_count: 2,
        events: vec![
            Event {
                time_unix_nano: START_NANOS + 1_000,
                name: "exception".into(),
                attributes: vec![
                    string("exception.type", "CardDeclined"),
                    string("exception.message", "insufficient funds"),
                ],
                dropped_attributes_count: 1,
            },
            Event::default(),
        ],
        dropped_events_count: 3,
        links: vec![
            Link {
                trace_id: trace_id(usize::from(n) + 1000),
                span_id: span_id(usize::from(n) + 1000),
                trace_state: "congo=t61rcWkgMzE".into(),
                attributes: vec![attribute("link.weight", Value::DoubleValue(0.5))],
                dropped_attributes_count: 4,
                flags: 0x100,
            },
            Link::default(),
        ],
        dropped_links_count: 5,
        status: Some(Status {
            code: StatusCode::Error as i32,
            message: "card declined".into(),
        }),
    }
}

/// One attribute of each value kind, nested ones included, and an empty value.
pub fn every_value_kind() -> Vec<KeyValue> {
    vec![
        string("http.request.method", "POST"),
        attribute("http.response.status_code", Value::IntValue(402)),
        attribute("retry.ratio", Value::DoubleValue(-1.25e-3)),
        attribute("cache.hit", Value::BoolValue(true)),
        attribute("payload", Value::BytesValue(vec![0, 159, 146, 150, 255])),
        attribute(
            "tags",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    any(Value::StringValue("a".into())),
                    any(Value::IntValue(i64::MIN)),
                    any(Value::ArrayValue(ArrayValue { values: vec![] })),
                ],
            }),
        ),
        attribute(
            "request.headers",
            Value::KvlistValue(KeyValueList {
                values: vec![
                    string("accept", "application/json"),
                    attribute(
                        "nested",
                        Value::KvlistValue(KeyValueList {
                            values: vec![attribute("deep", Value::BoolValue(false))],
                        }),
                    ),
                ],
            }),
        ),
        attribute("dictionary.ref", Value::StringValueStrindex(7)),
        KeyValue {
            key: "unset".into(),
            value: Some(AnyValue { value: None }),
            key_strindex: 0,
        },
    ]
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
    KeyValue {
        key: key.into(),
        value: Some(any(value)),
        key_strindex: 0,
    }
}

fn any(value: Value) -> AnyValue {
    AnyValue { value: Some(value) }
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
