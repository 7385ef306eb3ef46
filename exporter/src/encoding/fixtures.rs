//! Test requests for encodings and sinks: [`rich_request`] exercises every field and value
//! kind; [`load_request`] is the benchmark shape. Not used outside tests.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::attributes::{BYTES_TAG, read_attributes};
use super::flat::{FIELDS, FlatSpan};
use super::json::{read_entity_refs, read_events, read_links};

pub fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
        key_strindex: 0,
    }
}

pub fn v_str(s: &str) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(s.to_string())),
    }
}

pub fn v_int(i: i64) -> AnyValue {
    AnyValue {
        value: Some(Value::IntValue(i)),
    }
}

pub fn v_double(d: f64) -> AnyValue {
    AnyValue {
        value: Some(Value::DoubleValue(d)),
    }
}

pub fn v_bool(b: bool) -> AnyValue {
    AnyValue {
        value: Some(Value::BoolValue(b)),
    }
}

pub fn v_bytes(b: &[u8]) -> AnyValue {
    AnyValue {
        value: Some(Value::BytesValue(b.to_vec())),
    }
}

pub fn v_array(values: Vec<AnyValue>) -> AnyValue {
    AnyValue {
        value: Some(Value::ArrayValue(ArrayValue { values })),
    }
}

pub fn v_kvlist(values: Vec<KeyValue>) -> AnyValue {
    AnyValue {
        value: Some(Value::KvlistValue(KeyValueList { values })),
    }
}

/// Strings that need escaping in JSON and quoting in CSV.
pub const TRICKY: &str = "naïve \"quoted\", comma\nnew line\r\ttab \\ \u{1} ✓ 🚀";

/// One attribute of every value kind, nested ones included.
pub fn every_kind_attributes() -> Vec<KeyValue> {
    vec![
        kv("http.status_code", v_int(504)),
        kv("ratio", v_double(0.1)),
        kv("str", v_str(TRICKY)),
        kv("empty.str", v_str("")),
        kv("int.max", v_int(i64::MAX)),
        kv("int.min", v_int(i64::MIN)),
        kv("double.whole", v_double(3.0)),
        kv("double.big", v_double(1e300)),
        kv("double.tiny", v_double(5e-324)),
        kv("double.inf", v_double(f64::NEG_INFINITY)),
        kv("bool", v_bool(false)),
        kv("bytes", v_bytes(&[0, 1, 2, 0xfe, 0xff])),
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

fn id(seed: u8, len: usize) -> Vec<u8> {
    (0..len as u8)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i))
        .collect()
}

fn span(seed: u8, kind: SpanKind, name: &str) -> Span {
    Span {
        trace_id: id(seed, 16),
        span_id: id(seed.wrapping_add(100), 8),
        trace_state: String::new(),
        parent_span_id: id(seed.wrapping_add(200), 8),
        flags: 0x301,
        name: name.to_string(),
        kind: kind as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(seed) * 1000,
        end_time_unix_nano: 1_700_000_000_250_000_000 + u64::from(seed) * 1000,
        attributes: vec![kv("seq", v_int(seed.into()))],
        dropped_attributes_count: 0,
        events: Vec::new(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status: Some(Status {
            message: String::new(),
            code: 1,
        }),
    }
}

/// A request in which every field of the flat model carries a distinctive value: every
/// span kind, every attribute value kind (nested, bytes, tag-like kvlists), events and
/// links with attributes, dropped counts, status with message, flags, trace state,
/// resources and scopes with attributes and schema URLs, non-ASCII and characters that
/// need escaping or quoting.
pub fn rich_request() -> ExportTraceServiceRequest {
    let first = Span {
        trace_state: "vendor=a,other=\"b\"".to_string(),
        name: format!("GET /cart {TRICKY}"),
        attributes: every_kind_attributes(),
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
                name: String::new(),
                attributes: Vec::new(),
                dropped_attributes_count: 0,
            },
        ],
        dropped_events_count: 4,
        links: vec![
            Link {
                trace_id: id(77, 16),
                span_id: id(78, 8),
                trace_state: "k=v".to_string(),
                attributes: vec![kv("link.kind", v_str("follows")), kv("w", v_double(0.25))],
                dropped_attributes_count: 2,
                flags: 0x101,
            },
            Link {
                trace_id: id(79, 16),
                span_id: id(80, 8),
                trace_state: String::new(),
                attributes: Vec::new(),
                dropped_attributes_count: 0,
                flags: 0,
            },
        ],
        dropped_links_count: 5,
        status: Some(Status {
            message: format!("timeout {TRICKY}"),
            code: 2,
        }),
        ..span(1, SpanKind::Server, "")
    };
    let root = Span {
        parent_span_id: Vec::new(),
        flags: 0,
        end_time_unix_nano: 1_600_000_000_000_000_000, // before the start: duration 0
        status: Some(Status::default()),
        attributes: Vec::new(),
        ..span(6, SpanKind::Unspecified, "")
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
                        id_keys: vec!["service.name".to_string()],
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
                            span(2, SpanKind::Client, "client call"),
                            span(3, SpanKind::Internal, "work"),
                        ],
                        schema_url: "https://opentelemetry.io/schemas/1.24.0".to_string(),
                    },
                    ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "messaging".to_string(),
                            version: String::new(),
                            attributes: Vec::new(),
                            dropped_attributes_count: 0,
                        }),
                        spans: vec![
                            span(4, SpanKind::Producer, "send"),
                            span(5, SpanKind::Consumer, "receive"),
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
                    spans: vec![root],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
        ],
    }
}

/// The benchmark shape: `spans` spans of one service, each with `attributes` typical
/// attributes (strings, ints, a double, a bool).
pub fn load_request(spans: usize, attributes: usize) -> ExportTraceServiceRequest {
    let span_list = (0..spans)
        .map(|i| {
            let seed = (i % 251) as u8;
            let attrs = (0..attributes)
                .map(|a| match a % 4 {
                    0 => kv(&format!("http.route.{a}"), v_str("/api/v1/orders/{id}")),
                    1 => kv(&format!("http.status_code.{a}"), v_int(200 + a as i64)),
                    2 => kv(&format!("latency.ratio.{a}"), v_double(0.125 * a as f64)),
                    _ => kv(&format!("cache.hit.{a}"), v_bool(a % 8 == 3)),
                })
                .collect();
            Span {
                attributes: attrs,
                ..span(seed, SpanKind::Server, "GET /api/v1/orders/{id}")
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", v_str("orders")),
                    kv("service.version", v_str("1.4.2")),
                    kv("host.name", v_str("orders-7d9f8c-abcde")),
                ],
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.http".to_string(),
                    version: "1.2.3".to_string(),
                    attributes: Vec::new(),
                    dropped_attributes_count: 0,
                }),
                spans: span_list,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

pub fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// Checks every column of a CSV row (read by the `csv` crate) against the span it was
/// written from.
pub fn assert_csv_row_matches(row: &::csv::StringRecord, flat: &FlatSpan<'_>) {
    assert_eq!(row.len(), FIELDS.len());
    let col = |name: &str| {
        let i = FIELDS.iter().position(|f| *f == name).unwrap();
        row[i].to_string()
    };
    let span = flat.span;
    let group = &flat.group;
    assert_eq!(col("service_name"), flat.service_name());
    assert_eq!(col("trace_id"), const_hex::encode(&span.trace_id));
    assert_eq!(col("span_id"), const_hex::encode(&span.span_id));
    assert_eq!(
        col("parent_span_id"),
        const_hex::encode(&span.parent_span_id)
    );
    assert_eq!(col("trace_state"), span.trace_state);
    assert_eq!(col("flags"), span.flags.to_string());
    assert_eq!(col("name"), span.name);
    assert_eq!(col("kind"), flat.kind_name().unwrap());
    assert_eq!(
        col("start_time_unix_nano"),
        span.start_time_unix_nano.to_string()
    );
    assert_eq!(
        col("end_time_unix_nano"),
        span.end_time_unix_nano.to_string()
    );
    assert_eq!(col("duration_ns"), flat.duration_ns().to_string());
    assert_eq!(col("status_code"), flat.status_code_name().unwrap());
    assert_eq!(col("status_message"), flat.status_message());
    assert_eq!(
        read_attributes(&col("attributes")).unwrap(),
        span.attributes
    );
    assert_eq!(
        col("dropped_attributes_count"),
        span.dropped_attributes_count.to_string()
    );
    assert_eq!(read_events(&col("events")).unwrap(), span.events);
    assert_eq!(
        col("dropped_events_count"),
        span.dropped_events_count.to_string()
    );
    assert_eq!(read_links(&col("links")).unwrap(), span.links);
    assert_eq!(
        col("dropped_links_count"),
        span.dropped_links_count.to_string()
    );
    assert_eq!(
        read_attributes(&col("resource_attributes")).unwrap(),
        group.resource_attributes()
    );
    assert_eq!(
        col("resource_dropped_attributes_count"),
        group.resource_dropped_attributes_count().to_string()
    );
    assert_eq!(
        read_entity_refs(&col("resource_entity_refs")).unwrap(),
        group.resource_entity_refs()
    );
    assert_eq!(col("resource_schema_url"), group.resource_schema_url());
    assert_eq!(col("scope_name"), group.scope_name());
    assert_eq!(col("scope_version"), group.scope_version());
    assert_eq!(
        read_attributes(&col("scope_attributes")).unwrap(),
        group.scope_attributes()
    );
    assert_eq!(
        col("scope_dropped_attributes_count"),
        group.scope_dropped_attributes_count().to_string()
    );
    assert_eq!(col("scope_schema_url"), group.scope_schema_url());
}
