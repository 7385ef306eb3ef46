//! Zero-copy reading of an encoded `ExportTraceServiceRequest` that [`wire::scan`] accepted:
//! walks resource spans, scope spans and spans, handing out fields as slices of the bytes.
//! Not a validator (that is `wire::scan`) nor a decoder into owned structs.
//!
//! Every field reads as prost would decode it, so encoders fed from a view write the same
//! output as from the decoded request: the last occurrence of a scalar or string wins, a
//! singular message that occurs more than once is the merge of its occurrences (parsed from
//! their concatenation, as protobuf defines merging; only then is anything copied), a oneof
//! takes its last member, unknown fields are skipped. Strings are handed out as bytes: the
//! scan checked they are UTF-8.
//!
//! [`wire::scan`]: super::wire::scan

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::wire::WireError;

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const SGROUP: u8 = 3;
const EGROUP: u8 = 4;
const I32: u8 = 5;

/// prost's recursion limit, for skipping nested groups of unknown fields.
const GROUP_DEPTH_LIMIT: u32 = 100;

/// One field's value as the wire holds it.
#[derive(Debug, Clone, Copy)]
pub enum FieldValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Len(&'a [u8]),
    /// A skipped group (unknown fields only; no OTLP field is a group).
    Group,
}

/// The fields of one message body, in wire order.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

/// Iterates the fields of `body`.
pub fn fields(body: &[u8]) -> Fields<'_> {
    Fields { rest: body }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, FieldValue<'a>), WireError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = read_field(&mut self.rest);
        if field.is_err() {
            // Stop after the first error: the rest cannot be framed.
            self.rest = &[];
        }
        Some(field)
    }
}

// Inlined everywhere: it is the innermost loop of every walk, and inlined the compiler keeps
// the field in registers instead of returning it through memory (measured: ~15% of the
// exporter's CPU time went to the out-of-line call).
#[inline(always)]
fn read_field<'a>(rest: &mut &'a [u8]) -> Result<(u32, FieldValue<'a>), WireError> {
    let key = read_varint(rest)?;
    let wire_type = (key & 7) as u8;
    let field = u32::try_from(key >> 3).map_err(|_| malformed("invalid field key"))?;
    let value = match wire_type {
        VARINT => FieldValue::Varint(read_varint(rest)?),
        I64 => FieldValue::Fixed64(u64::from_le_bytes(take_array(rest)?)),
        LEN => {
            let len = usize::try_from(read_varint(rest)?).map_err(|_| truncated())?;
            if len > rest.len() {
                return Err(truncated());
            }
            let (body, tail) = rest.split_at(len);
            *rest = tail;
            FieldValue::Len(body)
        }
        I32 => FieldValue::Fixed32(u32::from_le_bytes(take_array(rest)?)),
        SGROUP => {
            skip_group(rest, field, GROUP_DEPTH_LIMIT)?;
            FieldValue::Group
        }
        _ => return Err(malformed("unexpected wire type")),
    };
    Ok((field, value))
}

fn skip_group(rest: &mut &[u8], field: u32, depth: u32) -> Result<(), WireError> {
    let depth = depth
        .checked_sub(1)
        .ok_or_else(|| malformed("groups nested too deeply"))?;
    loop {
        let key = read_varint(rest)?;
        let (inner, wire_type) = ((key >> 3) as u32, (key & 7) as u8);
        match wire_type {
            EGROUP if inner == field => return Ok(()),
            EGROUP => return Err(malformed("unmatched end-group tag")),
            SGROUP => skip_group(rest, inner, depth)?,
            VARINT => drop(read_varint(rest)?),
            I64 => drop(take_array::<8>(rest)?),
            I32 => drop(take_array::<4>(rest)?),
            LEN => {
                let len = usize::try_from(read_varint(rest)?).map_err(|_| truncated())?;
                *rest = rest.get(len..).ok_or_else(truncated)?;
            }
            _ => return Err(malformed("unexpected wire type")),
        }
    }
}

#[inline(always)]
fn read_varint(rest: &mut &[u8]) -> Result<u64, WireError> {
    match rest.first() {
        Some(&byte) if byte < 0x80 => {
            *rest = &rest[1..];
            Ok(u64::from(byte))
        }
        _ => read_varint_long(rest),
    }
}

fn read_varint_long(rest: &mut &[u8]) -> Result<u64, WireError> {
    let mut value = 0u64;
    for (i, &byte) in rest.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *rest = &rest[i + 1..];
            return Ok(value);
        }
    }
    Err(malformed("invalid varint"))
}

#[inline(always)]
fn take_array<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], WireError> {
    match rest.split_first_chunk::<N>() {
        Some((head, tail)) => {
            *rest = tail;
            Ok(*head)
        }
        None => Err(truncated()),
    }
}

#[cold]
fn malformed(what: &str) -> WireError {
    WireError(format!(
        "{what} (the request passed the wire scan; this is a bug)"
    ))
}

#[cold]
fn truncated() -> WireError {
    malformed("a length runs past the end of its message")
}

#[cold]
fn wrong_type(field: &str) -> WireError {
    malformed(&format!("{field} has the wrong wire type"))
}

/// A message body: borrowed, or the concatenation of several occurrences of a singular
/// message field (protobuf's merge), which is the only time a view copies bytes.
pub type Body<'a> = Cow<'a, [u8]>;

/// Adds one occurrence of a singular message field to what was seen so far.
#[inline]
fn merge<'a>(slot: &mut Option<Body<'a>>, body: &'a [u8]) {
    match slot {
        None => *slot = Some(Cow::Borrowed(body)),
        Some(seen) => seen.to_mut().extend_from_slice(body),
    }
}

fn len<'a>(value: FieldValue<'a>, field: &str) -> Result<&'a [u8], WireError> {
    match value {
        FieldValue::Len(body) => Ok(body),
        _ => Err(wrong_type(field)),
    }
}

fn varint(value: FieldValue<'_>, field: &str) -> Result<u64, WireError> {
    match value {
        FieldValue::Varint(v) => Ok(v),
        _ => Err(wrong_type(field)),
    }
}

fn fixed64(value: FieldValue<'_>, field: &str) -> Result<u64, WireError> {
    match value {
        FieldValue::Fixed64(v) => Ok(v),
        _ => Err(wrong_type(field)),
    }
}

fn fixed32(value: FieldValue<'_>, field: &str) -> Result<u32, WireError> {
    match value {
        FieldValue::Fixed32(v) => Ok(v),
        _ => Err(wrong_type(field)),
    }
}

/// The occurrences of one repeated message field inside a message body, in order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Repeated<'a> {
    /// The part of the parent body from the first occurrence to the end of the last.
    span: &'a [u8],
    field: u32,
}

impl<'a> Repeated<'a> {
    pub fn is_empty(&self) -> bool {
        self.span.is_empty()
    }

    /// Each occurrence's body.
    pub fn iter(&self) -> impl Iterator<Item = Result<&'a [u8], WireError>> + use<'a> {
        let field = self.field;
        fields(self.span).filter_map(move |f| match f {
            Ok((n, value)) if n == field => Some(len(value, "repeated field")),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
    }
}

/// Records the positions of a repeated field while walking its parent.
struct RepeatedRange {
    field: u32,
    start: usize,
    end: usize,
}

impl RepeatedRange {
    fn new(field: u32) -> Self {
        Self {
            field,
            start: usize::MAX,
            end: 0,
        }
    }

    #[inline]
    fn saw(&mut self, start: usize, end: usize) {
        if self.start == usize::MAX {
            self.start = start;
        }
        self.end = end;
    }

    fn view<'a>(&self, parent: &'a [u8]) -> Repeated<'a> {
        match self.start {
            usize::MAX => Repeated {
                span: &[],
                field: self.field,
            },
            start => Repeated {
                span: &parent[start..self.end],
                field: self.field,
            },
        }
    }
}

/// Walks `body` calling `on_field(number, value, start, end)` with each field's byte range
/// (key included, so `body[start..end]` is the field as encoded).
#[inline(always)]
pub fn walk<'a>(
    body: &'a [u8],
    mut on_field: impl FnMut(u32, FieldValue<'a>, usize, usize) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut rest = body;
    while !rest.is_empty() {
        let start = body.len() - rest.len();
        let (number, value) = read_field(&mut rest)?;
        on_field(number, value, start, body.len() - rest.len())?;
    }
    Ok(())
}

/// Calls `on_group` for every scope group of the request in `bytes`, in order: its resource
/// and scope decoded (small, once per group) and its spans as views.
pub fn for_each_scope_group<'a, E: From<WireError>>(
    bytes: &'a [u8],
    mut on_group: impl FnMut(&GroupView<'_, 'a>) -> Result<(), E>,
) -> Result<(), E> {
    for field in fields(bytes) {
        let (number, value) = field?;
        if number != 1 {
            continue;
        }
        let resource_spans = len(value, "resource_spans")?;
        let mut resource = None;
        let mut schema_url: &[u8] = &[];
        let mut scope_spans = RepeatedRange::new(2);
        walk(resource_spans, |n, v, start, end| {
            match n {
                1 => merge(&mut resource, len(v, "resource")?),
                2 => scope_spans.saw(start, end),
                3 => schema_url = len(v, "schema_url")?,
                _ => {}
            }
            Ok(())
        })?;
        let resource = resource
            .map(|body| Resource::decode(body.as_ref()))
            .transpose()
            .map_err(WireError::from)?;
        let resource_schema_url = utf8(schema_url)?;
        for scope_spans in scope_spans.view(resource_spans).iter() {
            let scope_spans = scope_spans?;
            let mut scope = None;
            let mut schema_url: &[u8] = &[];
            let mut spans = RepeatedRange::new(2);
            walk(scope_spans, |n, v, start, end| {
                match n {
                    1 => merge(&mut scope, len(v, "scope")?),
                    2 => spans.saw(start, end),
                    3 => schema_url = len(v, "schema_url")?,
                    _ => {}
                }
                Ok(())
            })?;
            let scope = scope
                .map(|body| InstrumentationScope::decode(body.as_ref()))
                .transpose()
                .map_err(WireError::from)?;
            on_group(&GroupView {
                resource: resource.as_ref(),
                resource_schema_url,
                scope: scope.as_ref(),
                scope_schema_url: utf8(schema_url)?,
                spans: spans.view(scope_spans),
            })?;
        }
    }
    Ok(())
}

fn utf8(bytes: &[u8]) -> Result<&str, WireError> {
    std::str::from_utf8(bytes).map_err(|_| malformed("a string is not UTF-8"))
}

/// One `ScopeSpans` with its resource: the resource and scope decoded (`'g`, for the
/// group's lifetime), the spans as views of the request bytes (`'a`).
#[derive(Debug)]
pub struct GroupView<'g, 'a> {
    pub resource: Option<&'g Resource>,
    pub resource_schema_url: &'a str,
    pub scope: Option<&'g InstrumentationScope>,
    pub scope_schema_url: &'a str,
    pub spans: Repeated<'a>,
}

impl<'a> GroupView<'_, 'a> {
    /// Each span of the group.
    pub fn spans(&self) -> impl Iterator<Item = Result<SpanView<'a>, WireError>> + use<'a> {
        self.spans.iter().map(|body| body.and_then(SpanView::parse))
    }
}

/// One span's fields. Repeated fields (attributes, events, links) are read when iterated.
#[derive(Debug, Clone, Default)]
pub struct SpanView<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub flags: u32,
    pub name: &'a [u8],
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Repeated<'a>,
    pub dropped_attributes_count: u32,
    pub events: Repeated<'a>,
    pub dropped_events_count: u32,
    pub links: Repeated<'a>,
    pub dropped_links_count: u32,
    pub status: Option<Body<'a>>,
}

impl<'a> SpanView<'a> {
    /// Reads the span's scalar fields and where its repeated fields are.
    pub fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        let mut span = SpanView::default();
        let mut attributes = RepeatedRange::new(9);
        let mut events = RepeatedRange::new(11);
        let mut links = RepeatedRange::new(13);
        walk(body, |n, v, start, end| {
            match n {
                1 => span.trace_id = len(v, "trace_id")?,
                2 => span.span_id = len(v, "span_id")?,
                3 => span.trace_state = len(v, "trace_state")?,
                4 => span.parent_span_id = len(v, "parent_span_id")?,
                5 => span.name = len(v, "name")?,
                6 => span.kind = varint(v, "kind")? as i32,
                7 => span.start_time_unix_nano = fixed64(v, "start_time_unix_nano")?,
                8 => span.end_time_unix_nano = fixed64(v, "end_time_unix_nano")?,
                9 => attributes.saw(start, end),
                10 => span.dropped_attributes_count = varint(v, "dropped_attributes_count")? as u32,
                11 => events.saw(start, end),
                12 => span.dropped_events_count = varint(v, "dropped_events_count")? as u32,
                13 => links.saw(start, end),
                14 => span.dropped_links_count = varint(v, "dropped_links_count")? as u32,
                15 => merge(&mut span.status, len(v, "status")?),
                16 => span.flags = fixed32(v, "flags")?,
                _ => {}
            }
            Ok(())
        })?;
        span.attributes = attributes.view(body);
        span.events = events.view(body);
        span.links = links.view(body);
        Ok(span)
    }

    /// `end - start` in nanoseconds; 0 when the end precedes the start (as `flat::duration_ns`).
    pub fn duration_ns(&self) -> u64 {
        self.end_time_unix_nano
            .saturating_sub(self.start_time_unix_nano)
    }

    /// The status code and message; an absent status reads as unset with no message.
    pub fn status(&self) -> Result<(i32, &[u8]), WireError> {
        let mut code = 0;
        let mut message: &[u8] = &[];
        if let Some(body) = &self.status {
            for field in fields(body) {
                match field? {
                    (2, v) => message = len(v, "status.message")?,
                    (3, v) => code = varint(v, "status.code")? as i32,
                    _ => {}
                }
            }
        }
        Ok((code, message))
    }
}

/// One span event.
#[derive(Debug, Clone, Default)]
pub struct EventView<'a> {
    pub time_unix_nano: u64,
    pub name: &'a [u8],
    pub attributes: Repeated<'a>,
    pub dropped_attributes_count: u32,
}

impl<'a> EventView<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        let mut event = EventView::default();
        let mut attributes = RepeatedRange::new(3);
        walk(body, |n, v, start, end| {
            match n {
                1 => event.time_unix_nano = fixed64(v, "event.time_unix_nano")?,
                2 => event.name = len(v, "event.name")?,
                3 => attributes.saw(start, end),
                4 => event.dropped_attributes_count = varint(v, "event.dropped")? as u32,
                _ => {}
            }
            Ok(())
        })?;
        event.attributes = attributes.view(body);
        Ok(event)
    }
}

/// One span link.
#[derive(Debug, Clone, Default)]
pub struct LinkView<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a [u8],
    pub attributes: Repeated<'a>,
    pub dropped_attributes_count: u32,
    pub flags: u32,
}

impl<'a> LinkView<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        let mut link = LinkView::default();
        let mut attributes = RepeatedRange::new(4);
        walk(body, |n, v, start, end| {
            match n {
                1 => link.trace_id = len(v, "link.trace_id")?,
                2 => link.span_id = len(v, "link.span_id")?,
                3 => link.trace_state = len(v, "link.trace_state")?,
                4 => attributes.saw(start, end),
                5 => link.dropped_attributes_count = varint(v, "link.dropped")? as u32,
                6 => link.flags = fixed32(v, "link.flags")?,
                _ => {}
            }
            Ok(())
        })?;
        link.attributes = attributes.view(body);
        Ok(link)
    }
}

/// One attribute: its key and its value (`None`: no value field at all).
#[derive(Debug, Clone)]
pub struct KeyValueView<'a> {
    pub key: &'a [u8],
    pub value: Option<Body<'a>>,
}

impl<'a> KeyValueView<'a> {
    #[inline]
    pub fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        let mut key: &[u8] = &[];
        let mut value = None;
        for field in fields(body) {
            match field? {
                (1, v) => key = len(v, "key")?,
                (2, v) => merge(&mut value, len(v, "value")?),
                _ => {}
            }
        }
        Ok(Self { key, value })
    }
}

/// The members of `AnyValue`'s oneof (`Empty`: none set).
#[derive(Debug, Clone)]
pub enum ValueView<'a> {
    Empty,
    String(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// An `ArrayValue` body: its `values` (field 1) are `AnyValue`s.
    Array(Body<'a>),
    /// A `KeyValueList` body: its `values` (field 1) are `KeyValue`s.
    Kvlist(Body<'a>),
    Bytes(&'a [u8]),
    StringIndex(i32),
}

impl<'a> ValueView<'a> {
    /// Reads an `AnyValue` body. The oneof takes its last member; occurrences of the same
    /// message member in a row (no other member in between) merge, as prost does.
    #[inline]
    pub fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        let mut value = ValueView::Empty;
        for field in fields(body) {
            value = match field? {
                (1, v) => ValueView::String(len(v, "string_value")?),
                (2, v) => ValueView::Bool(varint(v, "bool_value")? != 0),
                (3, v) => ValueView::Int(varint(v, "int_value")? as i64),
                (4, v) => ValueView::Double(f64::from_bits(fixed64(v, "double_value")?)),
                (5, v) => {
                    let body = len(v, "array_value")?;
                    match value {
                        ValueView::Array(seen) => ValueView::Array(concat(seen, body)),
                        _ => ValueView::Array(Cow::Borrowed(body)),
                    }
                }
                (6, v) => {
                    let body = len(v, "kvlist_value")?;
                    match value {
                        ValueView::Kvlist(seen) => ValueView::Kvlist(concat(seen, body)),
                        _ => ValueView::Kvlist(Cow::Borrowed(body)),
                    }
                }
                (7, v) => ValueView::Bytes(len(v, "bytes_value")?),
                (8, v) => ValueView::StringIndex(varint(v, "string_value_strindex")? as i32),
                _ => value,
            };
        }
        Ok(value)
    }

    /// The elements of an array body, or the entries of a kvlist body.
    pub fn elements(body: &[u8]) -> impl Iterator<Item = Result<&[u8], WireError>> {
        Repeated {
            span: body,
            field: 1,
        }
        .iter()
    }
}

fn concat<'a>(seen: Body<'a>, more: &'a [u8]) -> Body<'a> {
    let mut owned = seen.into_owned();
    owned.extend_from_slice(more);
    Cow::Owned(owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::fixtures;
    use prost::encoding::{WireType, encode_key, encode_varint};

    fn len_field(field: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_key(field, WireType::LengthDelimited, &mut out);
        encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn spans_read_as_prost_decodes_them() {
        let request = fixtures::rich_request();
        let bytes = request.encode_to_vec();
        let mut decoded = crate::encoding::flat_spans(&request);
        for_each_scope_group(&bytes, |group| {
            for span in group.spans() {
                let view = span?;
                let flat = decoded.next().unwrap();
                let span = flat.span;
                assert_eq!(view.trace_id, span.trace_id.as_slice());
                assert_eq!(view.span_id, span.span_id.as_slice());
                assert_eq!(view.name, span.name.as_bytes());
                assert_eq!(view.kind, span.kind);
                assert_eq!(view.flags, span.flags);
                assert_eq!(view.duration_ns(), flat.duration_ns());
                let (code, message) = view.status()?;
                assert_eq!(
                    (code, message),
                    (flat.status_code(), flat.status_message().as_bytes())
                );
                assert_eq!(view.attributes.iter().count(), span.attributes.len());
                assert_eq!(view.events.iter().count(), span.events.len());
                assert_eq!(view.links.iter().count(), span.links.len());
                assert_eq!(group.resource_schema_url, flat.group.resource_schema_url());
                assert_eq!(
                    group.scope.as_ref().map_or("", |s| &s.name),
                    flat.group.scope_name()
                );
            }
            Ok::<(), WireError>(())
        })
        .unwrap();
        assert!(decoded.next().is_none());
    }

    #[test]
    fn a_singular_message_given_twice_merges_and_a_scalar_given_twice_takes_the_last() {
        // status {message: "a"} then status {code: 2}; name "x" then name "y".
        let mut span = len_field(5, b"x");
        span.extend(len_field(15, &len_field(2, b"a")));
        span.extend(len_field(5, b"y"));
        let mut code = Vec::new();
        encode_key(3, WireType::Varint, &mut code);
        encode_varint(2, &mut code);
        span.extend(len_field(15, &code));
        let view = SpanView::parse(&span).unwrap();
        assert_eq!(view.name, b"y");
        assert_eq!(view.status().unwrap(), (2, b"a".as_slice()));
    }

    #[test]
    fn a_oneof_takes_its_last_member_and_merges_repeated_messages() {
        let array = |element: &[u8]| len_field(5, &len_field(1, element));
        let mut body = array(&len_field(1, b"first"));
        body.extend(array(&len_field(1, b"second")));
        match ValueView::parse(&body).unwrap() {
            ValueView::Array(values) => assert_eq!(ValueView::elements(&values).count(), 2),
            other => panic!("{other:?}"),
        }
        body.extend(len_field(6, &[]));
        body.extend(array(&len_field(1, b"third")));
        match ValueView::parse(&body).unwrap() {
            ValueView::Array(values) => assert_eq!(ValueView::elements(&values).count(), 1),
            other => panic!("{other:?}"),
        }
        body.extend(len_field(1, b"text"));
        assert!(matches!(
            ValueView::parse(&body).unwrap(),
            ValueView::String(b"text")
        ));
    }

    #[test]
    fn truncated_bytes_are_an_error_not_a_panic() {
        let bytes = fixtures::rich_request().encode_to_vec();
        for end in 0..bytes.len() {
            let _ = for_each_scope_group(&bytes[..end], |group| {
                for span in group.spans() {
                    let span = span?;
                    span.status()?;
                    for a in span.attributes.iter() {
                        KeyValueView::parse(a?)?;
                    }
                }
                Ok::<(), WireError>(())
            });
        }
    }
}
