//! The encoders give the same bytes whether they read a request through the wire view or
//! from its prost decode: on the fixtures, on generated requests, and on wire shapes only
//! hand-made bytes have (unknown fields and groups, repeated singular messages, repeated
//! scalars, several oneof members, fields out of order, empty messages).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::otlp::{fixtures, wire};

/// Both encoders, both ways, on `bytes` (which must pass the scan): the fuzz target's
/// property, which also compares the span counts with prost's.
fn assert_same_output(bytes: &[u8]) {
    wire::scan(bytes).unwrap_or_else(|e| panic!("test bytes must pass the scan: {e}"));
    crate::fuzzing::otlp_protobuf(bytes);
}

#[test]
fn fixtures_encode_identically() {
    for request in [
        fixtures::rich_request(),
        fixtures::interleaved_traces(3, 8),
        fixtures::request(512, 10),
        fixtures::request(0, 0),
        ExportTraceServiceRequest::default(),
    ] {
        assert_same_output(&request.encode_to_vec());
    }
}

#[test]
fn generated_requests_encode_identically() {
    let mut rng = StdRng::seed_from_u64(0x7ea5_0b1e);
    for _ in 0..300 {
        assert_same_output(&random_request(&mut rng).encode_to_vec());
    }
}

#[test]
fn reshaped_wire_bytes_encode_identically() {
    let mut rng = StdRng::seed_from_u64(0x51ce);
    let requests = [fixtures::rich_request(), fixtures::interleaved_traces(2, 4)];
    for round in 0..200 {
        let bytes = if round % 2 == 0 {
            requests[round / 2 % requests.len()].encode_to_vec()
        } else {
            random_request(&mut rng).encode_to_vec()
        };
        let reshaped = reshape(Msg::Request, &bytes, &mut rng);
        assert_same_output(&reshaped);
    }
}

#[test]
fn empty_and_absent_messages_encode_identically() {
    // A request of empty resource spans, empty scope spans, an empty span, an empty
    // attribute, an empty value, empty event and link, an empty status.
    let mut span = len_field(9, &[]);
    span.extend(len_field(9, &len_field(2, &[])));
    span.extend(len_field(11, &[]));
    span.extend(len_field(13, &[]));
    span.extend(len_field(15, &[]));
    let mut scope_spans = len_field(1, &[]);
    scope_spans.extend(len_field(2, &[]));
    scope_spans.extend(len_field(2, &span));
    let mut resource_spans = len_field(1, &[]);
    resource_spans.extend(len_field(2, &[]));
    resource_spans.extend(len_field(2, &scope_spans));
    let mut request = len_field(1, &[]);
    request.extend(len_field(1, &resource_spans));
    assert_same_output(&request);
}

// --- generated requests -----------------------------------------------------------------

fn random_text(rng: &mut StdRng) -> String {
    const WORDS: [&str; 9] = [
        "",
        "GET /",
        "ünïcode ✓",
        "service.name",
        "bytes_base64",
        "double",
        "kvlist",
        "𝄞 clef",
        fixtures::TRICKY,
    ];
    match rng.random_range(0..4) {
        0 => (0..rng.random_range(0..40))
            .map(|_| char::from(rng.random_range(0u8..=0x7f)))
            .collect(),
        _ => WORDS[rng.random_range(0..WORDS.len())].to_string(),
    }
}

fn random_id(rng: &mut StdRng, len: usize) -> Vec<u8> {
    match rng.random_range(0..5) {
        0 => vec![],
        _ => (0..len).map(|_| rng.random()).collect(),
    }
}

fn random_double(rng: &mut StdRng) -> f64 {
    match rng.random_range(0..8) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => -0.0,
        4 => f64::from_bits(rng.random()),
        _ => rng.random::<f64>() * 1e6,
    }
}

fn random_value(rng: &mut StdRng, depth: u32) -> AnyValue {
    let kinds = if depth == 0 { 7 } else { 9 };
    let value = match rng.random_range(0..kinds) {
        0 => Some(Value::StringValue(random_text(rng))),
        1 => Some(Value::BoolValue(rng.random())),
        2 => Some(Value::IntValue(rng.random())),
        3 => Some(Value::DoubleValue(random_double(rng))),
        4 => {
            let len = rng.random_range(1..9);
            Some(Value::BytesValue(random_id(rng, len)))
        }
        5 => Some(Value::StringValueStrindex(rng.random())),
        6 => None,
        7 => Some(Value::ArrayValue(ArrayValue {
            values: (0..rng.random_range(0..4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        })),
        _ => Some(Value::KvlistValue(KeyValueList {
            values: random_attributes(rng, depth - 1),
        })),
    };
    AnyValue { value }
}

fn random_attributes(rng: &mut StdRng, depth: u32) -> Vec<KeyValue> {
    (0..rng.random_range(0..5))
        .map(|_| KeyValue {
            key: random_text(rng),
            value: rng.random_bool(0.9).then(|| random_value(rng, depth)),
            key_strindex: rng.random_range(0..3),
        })
        .collect()
}

fn random_span(rng: &mut StdRng) -> Span {
    Span {
        trace_id: random_id(rng, 16),
        span_id: random_id(rng, 8),
        trace_state: random_text(rng),
        parent_span_id: random_id(rng, 8),
        flags: rng.random(),
        name: random_text(rng),
        kind: rng.random_range(-1..7),
        start_time_unix_nano: rng.random(),
        end_time_unix_nano: rng.random(),
        attributes: random_attributes(rng, 4),
        dropped_attributes_count: rng.random(),
        events: (0..rng.random_range(0..3))
            .map(|_| Event {
                time_unix_nano: rng.random(),
                name: random_text(rng),
                attributes: random_attributes(rng, 2),
                dropped_attributes_count: rng.random(),
            })
            .collect(),
        dropped_events_count: rng.random(),
        links: (0..rng.random_range(0..3))
            .map(|_| Link {
                trace_id: random_id(rng, 16),
                span_id: random_id(rng, 8),
                trace_state: random_text(rng),
                attributes: random_attributes(rng, 2),
                dropped_attributes_count: rng.random(),
                flags: rng.random(),
            })
            .collect(),
        dropped_links_count: rng.random(),
        status: rng.random_bool(0.7).then(|| Status {
            message: random_text(rng),
            code: rng.random_range(-1..4),
        }),
    }
}

fn random_request(rng: &mut StdRng) -> ExportTraceServiceRequest {
    let resource_spans = (0..rng.random_range(0..4))
        .map(|_| ResourceSpans {
            resource: rng.random_bool(0.8).then(|| Resource {
                attributes: random_attributes(rng, 3),
                dropped_attributes_count: rng.random(),
                entity_refs: (0..rng.random_range(0..3))
                    .map(|_| EntityRef {
                        schema_url: random_text(rng),
                        r#type: random_text(rng),
                        id_keys: (0..rng.random_range(0..3))
                            .map(|_| random_text(rng))
                            .collect(),
                        description_keys: (0..rng.random_range(0..3))
                            .map(|_| random_text(rng))
                            .collect(),
                    })
                    .collect(),
            }),
            scope_spans: (0..rng.random_range(0..4))
                .map(|_| ScopeSpans {
                    scope: rng.random_bool(0.7).then(|| InstrumentationScope {
                        name: random_text(rng),
                        version: random_text(rng),
                        attributes: random_attributes(rng, 2),
                        dropped_attributes_count: rng.random(),
                    }),
                    spans: (0..rng.random_range(0..6))
                        .map(|_| random_span(rng))
                        .collect(),
                    schema_url: random_text(rng),
                })
                .collect(),
            schema_url: random_text(rng),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

// --- reshaping wire bytes without changing what they decode to ------------------------------

/// The messages of the trace request, to know which fields hold which message.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Msg {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    /// `ArrayValue` (of `AnyValue`) or `KeyValueList` (of `KeyValue`): field 1 repeated.
    List(bool),
}

/// The message a field holds and whether it is singular (merges when repeated).
fn child(msg: Msg, field: u32) -> Option<(Msg, bool)> {
    use Msg::*;
    Some(match (msg, field) {
        (Request, 1) => (ResourceSpans, false),
        (ResourceSpans, 1) => (Resource, true),
        (ResourceSpans, 2) => (ScopeSpans, false),
        (Resource, 1) | (Scope, 3) | (Span, 9) | (Event, 3) | (Link, 4) => (KeyValue, false),
        (Resource, 3) => (EntityRef, false),
        (ScopeSpans, 1) => (Scope, true),
        (ScopeSpans, 2) => (Span, false),
        (Span, 11) => (Event, false),
        (Span, 13) => (Link, false),
        (Span, 15) => (Status, true),
        (KeyValue, 2) => (AnyValue, true),
        (AnyValue, 5) => (List(false), true),
        (AnyValue, 6) => (List(true), true),
        (List(false), 1) => (AnyValue, false),
        (List(true), 1) => (KeyValue, false),
        _ => return None,
    })
}

/// One field of a message body: number, wire type, the whole field's bytes, and the body
/// of a length-delimited field.
struct RawField<'a> {
    number: u32,
    wire_type: WireType,
    raw: &'a [u8],
    body: &'a [u8],
}

fn raw_fields(bytes: &[u8]) -> Vec<RawField<'_>> {
    let mut rest = bytes;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let start = bytes.len() - rest.len();
        let (number, wire_type) = decode_key(&mut rest).unwrap();
        let mut body: &[u8] = &[];
        match wire_type {
            WireType::Varint => drop(decode_varint(&mut rest).unwrap()),
            WireType::SixtyFourBit => rest = &rest[8..],
            WireType::ThirtyTwoBit => rest = &rest[4..],
            WireType::LengthDelimited => {
                let len = decode_varint(&mut rest).unwrap() as usize;
                body = &rest[..len];
                rest = &rest[len..];
            }
            WireType::StartGroup => skip_group(&mut rest, number),
            WireType::EndGroup => panic!("unmatched end group in generated bytes"),
        }
        let end = bytes.len() - rest.len();
        out.push(RawField {
            number,
            wire_type,
            raw: &bytes[start..end],
            body,
        });
    }
    out
}

/// Skips to after the end-group tag of `number` (the groups of [`unknown_field`]).
fn skip_group(rest: &mut &[u8], number: u32) {
    loop {
        let (inner, wire_type) = decode_key(rest).unwrap();
        match wire_type {
            WireType::EndGroup if inner == number => return,
            WireType::StartGroup => skip_group(rest, inner),
            WireType::Varint => drop(decode_varint(rest).unwrap()),
            other => panic!("unexpected {other:?} in a generated group"),
        }
    }
}

fn len_field(field: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_key(field, WireType::LengthDelimited, &mut out);
    encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// An unknown field of a random wire type (a nested group included).
fn unknown_field(rng: &mut StdRng) -> Vec<u8> {
    let number = rng.random_range(50..60);
    let mut out = Vec::new();
    match rng.random_range(0..5) {
        0 => {
            encode_key(number, WireType::Varint, &mut out);
            encode_varint(rng.random(), &mut out);
        }
        1 => {
            encode_key(number, WireType::SixtyFourBit, &mut out);
            out.extend(rng.random::<u64>().to_le_bytes());
        }
        2 => {
            encode_key(number, WireType::ThirtyTwoBit, &mut out);
            out.extend(rng.random::<u32>().to_le_bytes());
        }
        3 => out = len_field(number, b"\x08\x01 future"),
        _ => {
            encode_key(number, WireType::StartGroup, &mut out);
            encode_key(1, WireType::Varint, &mut out);
            encode_varint(7, &mut out);
            encode_key(number + 1, WireType::StartGroup, &mut out);
            encode_key(number + 1, WireType::EndGroup, &mut out);
            encode_key(number, WireType::EndGroup, &mut out);
        }
    }
    out
}

/// An earlier occurrence of a scalar or string field that a later one overrides: same wire
/// type, and for ids a valid length.
fn overridden_occurrence(msg: Msg, field: &RawField<'_>, rng: &mut StdRng) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match field.wire_type {
        WireType::Varint => {
            encode_key(field.number, WireType::Varint, &mut out);
            encode_varint(rng.random(), &mut out);
        }
        WireType::SixtyFourBit => {
            encode_key(field.number, WireType::SixtyFourBit, &mut out);
            out.extend(rng.random::<u64>().to_le_bytes());
        }
        WireType::ThirtyTwoBit => {
            encode_key(field.number, WireType::ThirtyTwoBit, &mut out);
            out.extend(rng.random::<u32>().to_le_bytes());
        }
        WireType::LengthDelimited if child(msg, field.number).is_none() => {
            // A string, bytes or id: a replacement of the same length is always valid.
            let junk: Vec<u8> = field.body.iter().map(|_| b'x').collect();
            out = len_field(field.number, &junk);
        }
        _ => return None,
    }
    Some(out)
}

/// An `AnyValue` member to put before the real one.
fn earlier_member(rng: &mut StdRng) -> Vec<u8> {
    let mut int = Vec::new();
    encode_key(3, WireType::Varint, &mut int);
    encode_varint(99, &mut int);
    let array = len_field(5, &len_field(1, &len_field(1, b"earlier element")));
    let kvlist = len_field(6, &len_field(1, &len_field(1, b"earlier.key")));
    let choices = [
        int,
        len_field(1, b"earlier"),
        array,
        kvlist,
        len_field(6, &[]),
    ];
    choices[rng.random_range(0..choices.len())].clone()
}

/// `bytes` (a `msg`) re-encoded so that prost decodes it to the same value: singular
/// messages split into two occurrences, scalars given an earlier overridden value, AnyValue
/// given an earlier other oneof member, unknown fields sprinkled in.
fn reshape(msg: Msg, bytes: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut out = Vec::new();
    for field in raw_fields(bytes) {
        if rng.random_bool(0.05) {
            out.extend(unknown_field(rng));
        }
        match child(msg, field.number) {
            Some((inner, singular)) if field.wire_type == WireType::LengthDelimited => {
                if msg == Msg::AnyValue && rng.random_bool(0.3) {
                    // An earlier member: a scalar is replaced, an array of the same member
                    // merges with the real one.
                    out.extend(earlier_member(rng));
                }
                let body = reshape(inner, field.body, rng);
                let parts = raw_fields(&body);
                if singular && parts.len() >= 2 && rng.random_bool(0.3) {
                    // Protobuf merges repeated occurrences of a singular message.
                    let at = parts[rng.random_range(1..parts.len())].raw.as_ptr() as usize
                        - body.as_ptr() as usize;
                    if msg == Msg::AnyValue && rng.random_bool(0.5) {
                        // Another oneof member in between would reset the merge: only
                        // unknown fields may sit between the two halves.
                        out.extend(len_field(field.number, &body[..at]));
                        out.extend(unknown_field(rng));
                        out.extend(len_field(field.number, &body[at..]));
                    } else {
                        out.extend(len_field(field.number, &body[..at]));
                        out.extend(len_field(field.number, &body[at..]));
                    }
                } else {
                    out.extend(len_field(field.number, &body));
                }
            }
            _ => {
                if msg == Msg::AnyValue && rng.random_bool(0.3) {
                    // An earlier oneof member, replaced by the real one.
                    out.extend(earlier_member(rng));
                } else if msg != Msg::AnyValue
                    && rng.random_bool(0.15)
                    && let Some(earlier) = overridden_occurrence(msg, &field, rng)
                {
                    out.extend(earlier);
                }
                out.extend_from_slice(field.raw);
            }
        }
    }
    if msg == Msg::AnyValue && bytes.is_empty() && rng.random_bool(0.2) {
        // An empty AnyValue stays empty only with unknown fields.
        out.extend(unknown_field(rng));
    }
    out
}
