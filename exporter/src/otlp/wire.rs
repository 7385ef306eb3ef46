//! The one check every request gets on arrival: is it a well-formed `ExportTraceServiceRequest`
//! (everything prost needs to decode it, plus OTLP's id lengths), and how many spans it holds.
//! Not a decoder: one pass over the protobuf wire format, nothing allocated unless it fails.
//!
//! Invariant the rest of the exporter relies on: if [`scan`] accepts bytes, prost decodes them.
//! So the scan mirrors prost's rules exactly (varints, keys, wire types of known fields, UTF-8
//! of strings, its recursion budget for nested and skipped fields) and adds stricter ones of
//! its own (id lengths, how deeply attribute values may nest).

use std::fmt;

/// How deeply attribute values may nest: an attribute's value is level 1, the elements of an
/// array or key-value list at level n are at level n + 1. Deeper values are refused (prost
/// would accept a little more; nobody sends that much on purpose).
pub const MAX_VALUE_DEPTH: u32 = 32;

/// prost's recursion limit (`prost::RECURSION_LIMIT`, not exported), spent the same way prost
/// spends it, so that nesting the scan accepts never makes the later decode fail.
const PROST_RECURSION_LIMIT: u32 = 100;

/// Paths longer than this are shortened in messages (a too-deep value has a long path).
const MAX_PATH_SEGMENTS_SHOWN: usize = 12;

/// What the scan learned about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireSummary {
    pub spans: usize,
}

/// A request body that is not a valid `ExportTraceServiceRequest`. The text names where the
/// problem is, e.g. `resource_spans[0].scope_spans[1].spans[3].trace_id: must be 16 bytes
/// (or empty), got 5`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed OTLP trace request: {0}")]
pub struct WireError(pub String);

impl From<prost::DecodeError> for WireError {
    fn from(e: prost::DecodeError) -> Self {
        WireError(e.to_string())
    }
}

/// Validates `bytes` as an `ExportTraceServiceRequest` and counts its spans.
pub fn scan(bytes: &[u8]) -> Result<WireSummary, WireError> {
    let mut spans = 0;
    scan_request(bytes, &mut spans).map_err(|fault| WireError(fault.to_string()))?;
    Ok(WireSummary { spans })
}

// ---------------------------------------------------------------------------------------------
// The schema: one function per message, each naming its known fields and what they hold.
// Field numbers and types follow opentelemetry-proto (trace, common, resource v1).

fn scan_request(bytes: &[u8], spans: &mut usize) -> Scanned {
    scan_message(
        bytes,
        PROST_RECURSION_LIMIT,
        |field| match field {
            1 => Some(("resource_spans", Kind::Repeated)),
            _ => None,
        },
        |_, body, budget| scan_resource_spans(body, budget, spans),
    )
}

fn scan_resource_spans(bytes: &[u8], budget: u32, spans: &mut usize) -> Scanned {
    scan_message(
        bytes,
        budget,
        |field| match field {
            1 => Some(("resource", Kind::Message)),
            2 => Some(("scope_spans", Kind::Repeated)),
            3 => Some(("schema_url", Kind::Text)),
            _ => None,
        },
        |field, body, budget| match field {
            1 => scan_resource(body, budget),
            _ => scan_scope_spans(body, budget, spans),
        },
    )
}

fn scan_resource(bytes: &[u8], budget: u32) -> Scanned {
    scan_message(
        bytes,
        budget,
        |field| match field {
            1 => Some(("attributes", Kind::Repeated)),
            2 => Some(("dropped_attributes_count", Kind::Varint)),
            3 => Some(("entity_refs", Kind::Repeated)),
            _ => None,
        },
        |field, body, budget| match field {
            1 => scan_key_value(body, budget, 1),
            _ => scan_entity_ref(body, budget),
        },
    )
}

fn scan_entity_ref(bytes: &[u8], budget: u32) -> Scanned {
    scan_message(
        bytes,
        budget,
        |field| match field {
            1 => Some(("schema_url", Kind::Text)),
            2 => Some(("type", Kind::Text)),
            3 => Some(("id_keys", Kind::Text)),
            4 => Some(("description_keys", Kind::Text)),
            _ => None,
        },
        no_nested_messages,
    )
}

fn scan_scope_spans(bytes: &[u8], budget: u32, spans: &mut usize) -> Scanned {
    scan_message(
        bytes,
        budget,
        |field| match field {
            1 => Some(("scope", Kind::Message)),
            2 => Some(("spans", Kind::Repeated)),
            3 => Some(("schema_url", Kind::Text)),
            _ => None,
        },
        |field, body, budget| match field {
            1 => scan_scope(body, budget),
            _ => {
                *spans += 1;
                scan_span(body, budget)
            }
        },
    )
}

fn scan_scope(bytes: &[u8], budget: u32) -> Scanned {
    scan_message(
        bytes,
        budget,
        |field| match field {
            1 => Some(("name", Kind::Text)),
            2 => Some(("version", Kind::Text)),
            3 => Some(("attributes", Kind::Repeated)),
            4 => Some(("dropped_attributes_count", Kind::Varint)),
            _ => None,
        },
        |_, body, budget| scan_key_value(body, budget, 1),
    )
}

fn scan_span(bytes: &[u8], budget: u32) -> Scanned {
    scan_message(
        bytes,
        budget,
        |field| match field {
            1 => Some(("trace_id", Kind::Id(16))),
            2 => Some(("span_id", Kind::Id(8))),
            3 => Some(("trace_state", Kind::Text)),
            4 => Some(("parent_span_id", Kind::Id(8))),
            5 => Some(("name", Kind::Text)),
            6 => Some(("kind", Kind::Varint)),
            7 => Some(("start_time_unix_nano", Kind::Fixed64)),
            8 => Some(("end_time_unix_nano", Kind::Fixed64)),
            9 => Some(("attributes", Kind::Repeated)),
            10 => Some(("dropped_attributes_count", Kind::Varint)),
            11 => Some(("events", Kind::Repeated)),
            12 => Some(("dropped_events_count", Kind::Varint)),
            13 => Some(("links", Kind::Repeated)),
            14 => Some(("dropped_links_count", Kind::Varint)),
            15 => Some(("status", Kind::Message)),
            16 => Some(("flags", Kind::Fixed32)),
            _ => None,
        },
        |field, body, budget| match field {
            9 => scan_key_value(body, budget, 1),
            11 => scan_event(body, budget),
            13 => scan_link(body, budget),
            _ => scan_status(body, budget),
        },
    )
}

fn scan_event(bytes: &[u8], budget: u32) -> Scanned {
    scan_message(
        bytes,
        budget,
        |field| match field {
            1 => Some(("time_unix_nano", Kind::Fixed64)),
            2 => Some(("name", Kind::Text)),
            3 => Some(("attributes", Kind::Repeated)),
            4 => Some(("dropped_attributes_count", Kind::Varint)),
            _ => None,
        },
        |_, body, budget| scan_key_value(body, budget, 1),
    )
}

fn scan_link(bytes: &[u8], budget: u32) -> Scanned {
    scan_message(
        bytes,
        budget,
        |field| match field {
            1 => Some(("trace_id", Kind::Id(16))),
            2 => Some(("span_id", Kind::Id(8))),
            3 => Some(("trace_state", Kind::Text)),
            4 => Some(("attributes", Kind::Repeated)),
            5 => Some(("dropped_attributes_count", Kind::Varint)),
            6 => Some(("flags", Kind::Fixed32)),
            _ => None,
        },
        |_, body, budget| scan_key_value(body, budget, 1),
    )
}

fn scan_status(bytes: &[u8], budget: u32) -> Scanned {
    scan_message(
        bytes,
        budget,
        |field| match field {
            2 => Some(("message", Kind::Text)),
            3 => Some(("code", Kind::Varint)),
            _ => None,
        },
        no_nested_messages,
    )
}

/// `level`: how deeply the value of this key-value nests (1 for an attribute).
fn scan_key_value(bytes: &[u8], budget: u32, level: u32) -> Scanned {
    if level > MAX_VALUE_DEPTH {
        return Err(Fault::new(Problem::ValueTooDeep));
    }
    scan_message(
        bytes,
        budget,
        |field| match field {
            1 => Some(("key", Kind::Text)),
            2 => Some(("value", Kind::Message)),
            3 => Some(("key_strindex", Kind::Varint)),
            _ => None,
        },
        |_, body, budget| scan_any_value(body, budget, level),
    )
}

fn scan_any_value(bytes: &[u8], budget: u32, level: u32) -> Scanned {
    if level > MAX_VALUE_DEPTH {
        return Err(Fault::new(Problem::ValueTooDeep));
    }
    scan_message(
        bytes,
        budget,
        |field| match field {
            1 => Some(("string_value", Kind::Text)),
            2 => Some(("bool_value", Kind::Varint)),
            3 => Some(("int_value", Kind::Varint)),
            4 => Some(("double_value", Kind::Fixed64)),
            5 => Some(("array_value", Kind::Message)),
            6 => Some(("kvlist_value", Kind::Message)),
            7 => Some(("bytes_value", Kind::Bytes)),
            8 => Some(("string_value_strindex", Kind::Varint)),
            _ => None,
        },
        |field, body, budget| match field {
            5 => scan_message(
                body,
                budget,
                |field| (field == 1).then_some(("values", Kind::Repeated)),
                |_, body, budget| scan_any_value(body, budget, level + 1),
            ),
            _ => scan_message(
                body,
                budget,
                |field| (field == 1).then_some(("values", Kind::Repeated)),
                |_, body, budget| scan_key_value(body, budget, level + 1),
            ),
        },
    )
}

fn no_nested_messages(_: u32, _: &[u8], _: u32) -> Scanned {
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The generic part: walking one message's fields.

type Scanned = Result<(), Box<Fault>>;

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const SGROUP: u8 = 3;
const EGROUP: u8 = 4;
const I32: u8 = 5;

/// What a known field holds.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Varint,
    Fixed32,
    Fixed64,
    Bytes,
    /// A `string`: must be UTF-8.
    Text,
    /// An OTLP id: empty or exactly this many bytes.
    Id(usize),
    /// A singular message field.
    Message,
    /// One element of a repeated message field (error paths name its index).
    Repeated,
}

impl Kind {
    fn wire_type(self) -> u8 {
        match self {
            Kind::Varint => VARINT,
            Kind::Fixed32 => I32,
            Kind::Fixed64 => I64,
            Kind::Bytes | Kind::Text | Kind::Id(_) | Kind::Message | Kind::Repeated => LEN,
        }
    }
}

/// Walks the fields of one message. `schema` names the known fields; unknown ones are
/// skipped. `nested` scans the body of each message-typed field with the recursion budget
/// left for it. `budget` is prost's: what is left for messages nested in this one.
#[inline(always)]
fn scan_message<'a>(
    bytes: &'a [u8],
    budget: u32,
    schema: impl Fn(u32) -> Option<(&'static str, Kind)>,
    mut nested: impl FnMut(u32, &'a [u8], u32) -> Scanned,
) -> Scanned {
    let mut rest = bytes;
    while !rest.is_empty() {
        let field_start = bytes.len() - rest.len();
        let (field, wire_type) = read_key(&mut rest)?;
        let Some((name, kind)) = schema(field) else {
            skip_field(&mut rest, field, wire_type, budget)
                .map_err(|f| f.at(Segment::Unknown(field)))?;
            continue;
        };
        if wire_type != kind.wire_type() {
            let problem = Problem::WireType {
                expected: kind.wire_type(),
                got: wire_type,
            };
            return Err(Fault::new(problem).at(Segment::Field(name)));
        }
        let checked = match kind {
            Kind::Varint => read_varint(&mut rest).map(drop),
            Kind::Fixed32 => advance(&mut rest, 4),
            Kind::Fixed64 => advance(&mut rest, 8),
            Kind::Bytes => read_len_delimited(&mut rest).map(drop),
            Kind::Text => read_len_delimited(&mut rest).and_then(check_utf8),
            Kind::Id(len) => read_len_delimited(&mut rest).and_then(|id| check_id(id, len)),
            Kind::Message | Kind::Repeated => {
                read_len_delimited(&mut rest).and_then(|body| match budget.checked_sub(1) {
                    Some(inner) => nested(field, body, inner),
                    None => Err(Fault::new(Problem::TooDeep)),
                })
            }
        };
        if let Err(fault) = checked {
            let segment = match kind {
                Kind::Repeated => {
                    Segment::Element(name, count_fields(&bytes[..field_start], field))
                }
                _ => Segment::Field(name),
            };
            return Err(fault.at(segment));
        }
    }
    Ok(())
}

/// Skips an unknown field as prost does (including its recursion budget for groups).
fn skip_field(rest: &mut &[u8], field: u32, wire_type: u8, budget: u32) -> Scanned {
    if budget == 0 {
        return Err(Fault::new(Problem::TooDeep));
    }
    match wire_type {
        VARINT => read_varint(rest).map(drop),
        I64 => advance(rest, 8),
        LEN => read_len_delimited(rest).map(drop),
        I32 => advance(rest, 4),
        SGROUP => loop {
            let (inner, inner_type) = read_key(rest)?;
            if inner_type == EGROUP {
                break match inner == field {
                    true => Ok(()),
                    false => Err(Fault::new(Problem::EndGroup)),
                };
            }
            skip_field(rest, inner, inner_type, budget - 1)?;
        },
        _ => Err(Fault::new(Problem::EndGroup)),
    }
}

/// How many times `field` occurs in `bytes` (already scanned, so valid): an error path's
/// index, computed only when there is an error to report.
#[cold]
fn count_fields(mut bytes: &[u8], field: u32) -> usize {
    let mut count = 0;
    while let Ok((f, wire_type)) = read_key(&mut bytes) {
        count += usize::from(f == field);
        if skip_field(&mut bytes, f, wire_type, PROST_RECURSION_LIMIT).is_err() {
            break;
        }
    }
    count
}

#[inline(always)]
fn read_key(rest: &mut &[u8]) -> Result<(u32, u8), Box<Fault>> {
    let key = read_varint(rest)?;
    let wire_type = (key & 7) as u8;
    let field = key >> 3;
    if key > u64::from(u32::MAX) || wire_type > I32 || field == 0 {
        return Err(Fault::new(Problem::InvalidKey(key)));
    }
    Ok((field as u32, wire_type))
}

#[inline(always)]
fn read_varint(rest: &mut &[u8]) -> Result<u64, Box<Fault>> {
    match rest.first() {
        Some(&byte) if byte < 0x80 => {
            *rest = &rest[1..];
            Ok(u64::from(byte))
        }
        _ => read_varint_long(rest),
    }
}

/// Varints of two bytes or more; at most 10 bytes and no overflow, as prost requires.
fn read_varint_long(rest: &mut &[u8]) -> Result<u64, Box<Fault>> {
    let mut value = 0u64;
    for (i, &byte) in rest.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            if i == 9 && byte > 1 {
                break;
            }
            *rest = &rest[i + 1..];
            return Ok(value);
        }
    }
    match rest.len() < 10 && rest.iter().all(|b| b & 0x80 != 0) {
        true => Err(Fault::new(Problem::Truncated)),
        false => Err(Fault::new(Problem::InvalidVarint)),
    }
}

#[inline(always)]
fn read_len_delimited<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], Box<Fault>> {
    let len = read_varint(rest)?;
    match usize::try_from(len) {
        Ok(len) if len <= rest.len() => {
            let (body, tail) = rest.split_at(len);
            *rest = tail;
            Ok(body)
        }
        _ => Err(Fault::new(Problem::Truncated)),
    }
}

#[inline(always)]
fn advance(rest: &mut &[u8], n: usize) -> Scanned {
    match rest.get(n..) {
        Some(tail) => {
            *rest = tail;
            Ok(())
        }
        None => Err(Fault::new(Problem::Truncated)),
    }
}

#[inline(always)]
fn check_utf8(text: &[u8]) -> Scanned {
    match std::str::from_utf8(text) {
        Ok(_) => Ok(()),
        Err(e) => Err(Fault::new(Problem::InvalidUtf8 {
            at: e.valid_up_to(),
        })),
    }
}

#[inline(always)]
fn check_id(id: &[u8], len: usize) -> Scanned {
    match id.is_empty() || id.len() == len {
        true => Ok(()),
        false => Err(Fault::new(Problem::IdLength {
            expected: len,
            got: id.len(),
        })),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors: a problem and where it is, the path filled in while the error travels back up.

#[derive(Debug)]
struct Fault {
    problem: Problem,
    /// Innermost segment first.
    path: Vec<Segment>,
}

#[derive(Debug, Clone, Copy)]
enum Problem {
    Truncated,
    InvalidVarint,
    InvalidKey(u64),
    WireType { expected: u8, got: u8 },
    InvalidUtf8 { at: usize },
    IdLength { expected: usize, got: usize },
    EndGroup,
    TooDeep,
    ValueTooDeep,
}

#[derive(Debug, Clone, Copy)]
enum Segment {
    Field(&'static str),
    Element(&'static str, usize),
    Unknown(u32),
}

impl Fault {
    #[cold]
    #[inline(never)]
    fn new(problem: Problem) -> Box<Fault> {
        Box::new(Fault {
            problem,
            path: Vec::new(),
        })
    }
}

trait WithPath {
    fn at(self, segment: Segment) -> Self;
}

impl WithPath for Box<Fault> {
    #[cold]
    fn at(mut self, segment: Segment) -> Self {
        self.path.push(segment);
        self
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Field(name) => f.write_str(name),
            Segment::Element(name, index) => write!(f, "{name}[{index}]"),
            Segment::Unknown(field) => write!(f, "(unknown field {field})"),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Truncated => f.write_str(
                "a length runs past the end of its message (truncated or corrupt protobuf)",
            ),
            Problem::InvalidVarint => f.write_str("invalid varint (longer than 10 bytes)"),
            Problem::InvalidKey(key) => write!(f, "invalid field key {key}"),
            Problem::WireType { expected, got } => write!(
                f,
                "wire type {} where the field is {}",
                wire_type_name(*got),
                wire_type_name(*expected)
            ),
            Problem::InvalidUtf8 { at } => {
                write!(f, "string is not valid UTF-8 (bad byte at offset {at})")
            }
            Problem::IdLength { expected, got } => {
                write!(f, "must be {expected} bytes (or empty), got {got}")
            }
            Problem::EndGroup => f.write_str("unmatched end-group tag"),
            Problem::TooDeep => write!(
                f,
                "messages nested more than {PROST_RECURSION_LIMIT} levels deep"
            ),
            Problem::ValueTooDeep => write!(
                f,
                "attribute value nested more than {MAX_VALUE_DEPTH} levels deep"
            ),
        }
    }
}

fn wire_type_name(wire_type: u8) -> &'static str {
    match wire_type {
        VARINT => "varint",
        I64 => "64-bit",
        LEN => "length-delimited",
        SGROUP => "start-group",
        EGROUP => "end-group",
        _ => "32-bit",
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outermost_first = self.path.iter().rev();
        let shown = self.path.len().min(MAX_PATH_SEGMENTS_SHOWN);
        let (head, tail) = (shown - shown / 4, shown / 4);
        for (i, segment) in outermost_first.enumerate() {
            if i < head || i >= self.path.len() - tail {
                if i > 0 {
                    f.write_str(".")?;
                }
                write!(f, "{segment}")?;
            } else if i == head {
                write!(f, ".(... {} more)", self.path.len() - head - tail)?;
            }
        }
        match self.path.is_empty() {
            true => write!(f, "{}", self.problem),
            false => write!(f, ": {}", self.problem),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{fixtures, span_count};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message;
    use prost::encoding::{WireType, encode_key, encode_varint};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn prost_spans(bytes: &[u8]) -> Result<usize, prost::DecodeError> {
        Ok(span_count(&ExportTraceServiceRequest::decode(bytes)?))
    }

    /// [`fixtures::rich_request`] plus the shapes only the wire carries: a value-less
    /// `AnyValue`, dictionary indexes, a scope without spans, absent resource and scope.
    fn wire_rich_request() -> ExportTraceServiceRequest {
        let mut request = fixtures::rich_request();
        let mut span = fixtures::rich_span(3, 1);
        span.attributes.push(fixtures::attribute(
            "dictionary.ref",
            Value::StringValueStrindex(7),
        ));
        span.attributes.push(KeyValue {
            key: "unset".into(),
            value: Some(AnyValue { value: None }),
            key_strindex: 3,
        });
        request.resource_spans[0]
            .scope_spans
            .push(ScopeSpans::default());
        request.resource_spans.push(ResourceSpans {
            resource: None,
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans: vec![span],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        });
        request
    }

    /// Scan and prost decode agree on validity and span count.
    fn assert_agrees(bytes: &[u8]) {
        match (scan(bytes), prost_spans(bytes)) {
            (Ok(summary), Ok(spans)) => assert_eq!(summary.spans, spans),
            (Err(_), Err(_)) => {}
            (scanned, decoded) => panic!("scan {scanned:?} but prost {decoded:?} for {bytes:?}"),
        }
    }

    /// What the scan accepts prost decodes; what it refuses prost refuses too, unless one of
    /// the scan's own stricter rules (id lengths, value depth) refused it.
    fn assert_consistent(bytes: &[u8]) {
        match (scan(bytes), prost_spans(bytes)) {
            (Ok(summary), Ok(spans)) => assert_eq!(summary.spans, spans),
            (Ok(_), Err(e)) => panic!("scan accepted what prost refuses ({e}): {bytes:?}"),
            (Err(e), Ok(_)) => assert!(
                e.0.contains("(or empty), got") || e.0.contains("attribute value nested"),
                "scan refused what prost accepts: {e}"
            ),
            (Err(_), Err(_)) => {}
        }
    }

    fn len_field(field: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_key(field, WireType::LengthDelimited, &mut out);
        encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }

    fn varint_field(field: u32, value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_key(field, WireType::Varint, &mut out);
        encode_varint(value, &mut out);
        out
    }

    /// A request holding one span whose encoding is `span`.
    fn request_with_span(span: &[u8]) -> Vec<u8> {
        len_field(1, &len_field(2, &len_field(2, span)))
    }

    fn error_of(bytes: &[u8]) -> String {
        scan(bytes).unwrap_err().0
    }

    // --- generated requests -----------------------------------------------------------------

    fn random_text(rng: &mut StdRng) -> String {
        const WORDS: [&str; 6] = ["", "GET /", "ünïcode ✓", "service.name", "a", "𝄞 clef"];
        match rng.random_range(0..4) {
            0 => (0..rng.random_range(0..40))
                .map(|_| char::from(rng.random_range(b' '..=b'~')))
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

    fn random_value(rng: &mut StdRng, depth: u32) -> AnyValue {
        let kinds = if depth == 0 { 7 } else { 9 };
        let value = match rng.random_range(0..kinds) {
            0 => Some(Value::StringValue(random_text(rng))),
            1 => Some(Value::BoolValue(rng.random())),
            2 => Some(Value::IntValue(rng.random())),
            3 => Some(Value::DoubleValue(rng.random())),
            4 => Some(Value::BytesValue(random_id(rng, 5))),
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
            status: rng.random_bool(0.5).then(|| Status {
                message: random_text(rng),
                code: rng.random_range(0..3),
            }),
        }
    }

    fn random_request(rng: &mut StdRng) -> ExportTraceServiceRequest {
        let resource_spans = (0..rng.random_range(0..4))
            .map(|_| ResourceSpans {
                resource: rng.random_bool(0.8).then(|| Resource {
                    attributes: random_attributes(rng, 3),
                    dropped_attributes_count: rng.random(),
                    entity_refs: vec![],
                }),
                scope_spans: (0..rng.random_range(0..4))
                    .map(|_| ScopeSpans {
                        scope: None,
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

    #[test]
    fn rich_request_is_valid_and_its_spans_counted() {
        let bytes = wire_rich_request().encode_to_vec();
        assert_eq!(scan(&bytes), Ok(WireSummary { spans: 8 }));
        assert_agrees(&bytes);
    }

    #[test]
    fn sized_requests_count_every_span() {
        for (spans, attributes) in [(0, 0), (1, 0), (7, 3), (512, 10)] {
            let bytes = fixtures::request(spans, attributes).encode_to_vec();
            assert_eq!(scan(&bytes), Ok(WireSummary { spans }));
        }
    }

    #[test]
    fn empty_request_and_empty_messages_are_valid() {
        assert_eq!(scan(&[]), Ok(WireSummary { spans: 0 }));
        let empty_span = request_with_span(&[]);
        assert_eq!(scan(&empty_span), Ok(WireSummary { spans: 1 }));
        assert_agrees(&empty_span);
        assert_agrees(&len_field(1, &[]));
    }

    #[test]
    fn generated_requests_agree_with_prost() {
        let mut rng = StdRng::seed_from_u64(0x5ba7_5111);
        for _ in 0..400 {
            let bytes = random_request(&mut rng).encode_to_vec();
            assert!(scan(&bytes).is_ok(), "{}", error_of(&bytes));
            assert_agrees(&bytes);
        }
    }

    #[test]
    fn unknown_fields_of_every_wire_type_are_skipped_at_every_level() {
        let mut unknown = varint_field(99, 300);
        unknown.extend(len_field(100, b"future"));
        encode_key(101, WireType::SixtyFourBit, &mut unknown);
        unknown.extend([1; 8]);
        encode_key(102, WireType::ThirtyTwoBit, &mut unknown);
        unknown.extend([2; 4]);
        encode_key(103, WireType::StartGroup, &mut unknown);
        unknown.extend(varint_field(1, 5));
        encode_key(104, WireType::StartGroup, &mut unknown);
        encode_key(104, WireType::EndGroup, &mut unknown);
        encode_key(103, WireType::EndGroup, &mut unknown);

        let mut attribute = fixtures::string("k", "v").encode_to_vec();
        attribute.extend(&unknown);
        let mut span = fixtures::rich_span(1, 0).encode_to_vec();
        span.extend(len_field(9, &attribute));
        span.extend(&unknown);
        let mut scope_spans = len_field(2, &span);
        scope_spans.extend(&unknown);
        let mut resource_spans = len_field(2, &scope_spans);
        resource_spans.extend(&unknown);
        let mut request = len_field(1, &resource_spans);
        request.extend(&unknown);

        assert_eq!(scan(&request), Ok(WireSummary { spans: 1 }));
        assert_agrees(&request);
    }

    #[test]
    fn every_truncation_of_a_rich_request_agrees_with_prost() {
        let bytes = wire_rich_request().encode_to_vec();
        for end in 0..bytes.len() {
            assert_agrees(&bytes[..end]);
        }
    }

    #[test]
    fn random_byte_flips_never_make_the_scan_accept_what_prost_refuses() {
        let original = wire_rich_request().encode_to_vec();
        let mut rng = StdRng::seed_from_u64(42);
        for _ in 0..30_000 {
            let mut bytes = original.clone();
            for _ in 0..rng.random_range(1..=3) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            assert_consistent(&bytes);
        }
        for _ in 0..5_000 {
            let garbage: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
            assert_consistent(&garbage);
        }
    }

    // --- specific errors ----------------------------------------------------------------------

    fn request_with_bad_span(bad: Span) -> ExportTraceServiceRequest {
        let good = |n| fixtures::span(n, 2);
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![
                    ScopeSpans {
                        spans: vec![good(0)],
                        ..Default::default()
                    },
                    ScopeSpans {
                        spans: vec![good(1), good(2), good(3), bad, good(4)],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn wrong_id_lengths_are_refused_with_their_path() {
        let span = Span {
            trace_id: vec![1; 5],
            ..fixtures::span(9, 1)
        };
        let bytes = request_with_bad_span(span).encode_to_vec();
        assert_eq!(
            scan(&bytes).unwrap_err().to_string(),
            "malformed OTLP trace request: resource_spans[0].scope_spans[1].spans[3].trace_id: \
             must be 16 bytes (or empty), got 5"
        );

        let span = Span {
            parent_span_id: vec![1; 16],
            ..fixtures::span(9, 1)
        };
        let bytes = request_with_bad_span(span).encode_to_vec();
        assert!(
            error_of(&bytes)
                .ends_with("spans[3].parent_span_id: must be 8 bytes (or empty), got 16")
        );

        let mut span = fixtures::rich_span(1, 0);
        span.links[1].span_id = vec![7; 3];
        let bytes = request_with_bad_span(span).encode_to_vec();
        assert!(
            error_of(&bytes)
                .ends_with("spans[3].links[1].span_id: must be 8 bytes (or empty), got 3"),
            "{}",
            error_of(&bytes)
        );
    }

    #[test]
    fn invalid_utf8_is_refused_where_prost_would_fail() {
        let span = Span {
            name: "MARK".into(),
            attributes: vec![
                fixtures::string("ok", "fine"),
                fixtures::string("KEYX", "v"),
            ],
            ..Default::default()
        };
        let mut bytes = request_with_bad_span(span).encode_to_vec();
        let patch = |bytes: &mut Vec<u8>, marker: &[u8]| {
            let at = bytes
                .windows(marker.len())
                .position(|w| w == marker)
                .unwrap();
            bytes[at..at + 2].copy_from_slice(&[0xc3, 0x28]);
        };
        patch(&mut bytes, b"KEYX");
        assert!(prost_spans(&bytes).is_err());
        assert!(error_of(&bytes).ends_with(
            "spans[3].attributes[1].key: string is not valid UTF-8 (bad byte at offset 0)"
        ));
        patch(&mut bytes, b"MARK");
        assert!(
            error_of(&bytes)
                .ends_with("spans[3].name: string is not valid UTF-8 (bad byte at offset 0)")
        );
    }

    /// An attribute whose value is `levels` arrays deep, the innermost holding `innermost`.
    fn nested_arrays(levels: u32, innermost: Value) -> KeyValue {
        let value = (0..levels).fold(innermost, |inner, _| {
            Value::ArrayValue(ArrayValue {
                values: vec![AnyValue { value: Some(inner) }],
            })
        });
        fixtures::attribute("deep", value)
    }

    #[test]
    fn too_deep_values_are_refused_cleanly() {
        let span = |levels| Span {
            attributes: vec![nested_arrays(levels, Value::BoolValue(true))],
            ..fixtures::span(0, 0)
        };
        let deepest = request_with_bad_span(span(MAX_VALUE_DEPTH - 1)).encode_to_vec();
        assert_eq!(scan(&deepest).map(|s| s.spans), Ok(6));
        assert_agrees(&deepest);

        let too_deep = request_with_bad_span(span(MAX_VALUE_DEPTH)).encode_to_vec();
        assert!(prost_spans(&too_deep).is_ok());
        let error = error_of(&too_deep);
        assert!(error.starts_with(
            "resource_spans[0].scope_spans[1].spans[3].attributes[0].value.array_value"
        ));
        assert!(error.contains(".(... "), "{error}");
        assert!(
            error.ends_with(": attribute value nested more than 32 levels deep"),
            "{error}"
        );
        assert!(error.len() < 400, "{error}");
    }

    /// Raw `AnyValue` bytes: `levels` key-value lists deep (the most message nesting per
    /// level), the innermost value being `innermost`.
    fn nested_kvlists(levels: u32, innermost: Vec<u8>) -> Vec<u8> {
        (0..levels).fold(innermost, |inner, _| {
            let mut key_value = len_field(1, b"k");
            key_value.extend(len_field(2, &inner));
            len_field(6, &len_field(1, &key_value))
        })
    }

    #[test]
    fn nesting_at_prost_recursion_limit_never_passes_the_scan_alone() {
        let mut group = Vec::new();
        encode_key(50, WireType::StartGroup, &mut group);
        encode_key(51, WireType::StartGroup, &mut group);
        encode_key(51, WireType::EndGroup, &mut group);
        encode_key(50, WireType::EndGroup, &mut group);
        let innermost = [
            vec![],
            varint_field(9, 1),
            group.clone(),
            len_field(6, &[]),
            len_field(6, &len_field(1, &[])),
            len_field(6, &len_field(1, &group)),
            len_field(6, &varint_field(9, 1)),
            len_field(5, &[]),
            len_field(5, &len_field(1, &[])),
            len_field(5, &len_field(1, &varint_field(9, 1))),
        ];
        for levels in 26..=MAX_VALUE_DEPTH + 1 {
            for inner in &innermost {
                let value = nested_kvlists(levels, inner.clone());
                let mut attribute = len_field(1, b"deep");
                attribute.extend(len_field(2, &value));
                let mut event = len_field(3, &attribute);
                event.extend(varint_field(4, 1));
                assert_consistent(&request_with_span(&len_field(11, &event)));
            }
        }
    }

    #[test]
    fn wire_type_mismatch_names_the_field() {
        let span = varint_field(5, 1);
        assert_eq!(
            error_of(&request_with_span(&span)),
            "resource_spans[0].scope_spans[0].spans[0].name: \
             wire type varint where the field is length-delimited"
        );
    }

    #[test]
    fn malformed_framing_is_refused() {
        let mut overlong = vec![0x10];
        overlong.extend([0xff; 10]);
        overlong.push(0x01);
        assert_eq!(
            error_of(&overlong),
            "(unknown field 2): invalid varint (longer than 10 bytes)"
        );

        let mut bytes = wire_rich_request().encode_to_vec();
        bytes.truncate(bytes.len() - 1);
        assert!(error_of(&bytes).contains("runs past the end"));

        let mut end_group = Vec::new();
        encode_key(7, WireType::EndGroup, &mut end_group);
        assert_eq!(
            error_of(&end_group),
            "(unknown field 7): unmatched end-group tag"
        );
        assert_eq!(error_of(&[0x00]), "invalid field key 0");
        assert_eq!(error_of(&[0x0f]), "invalid field key 15");
    }
}
