//! Flat spans as JSON objects (one per line in JSON Lines), written by hand into a reused
//! buffer, and the reader that turns such lines back into OTLP requests (tests, replay).
//! Not the OTLP/JSON protocol mapping (camelCase, receiver side): this is our file layout.
//!
//! A line holds the fields of [`FIELDS`](super::flat::FIELDS) in that order, e.g.
//! `{"service_name":"checkout","trace_id":"4bf9…","span_id":"00f0…","parent_span_id":"",
//! "trace_state":"","flags":1,"name":"GET /cart","kind":"server",
//! "start_time_unix_nano":1700000000000000000,…,"status_code":"error",
//! "status_message":"timeout","attributes":{"http.status_code":504},…}`.
//! Events are `{"time_unix_nano","name","attributes","dropped_attributes_count"}`, links
//! `{"trace_id","span_id","trace_state","flags","attributes","dropped_attributes_count"}`,
//! entity refs `{"type","id_keys","description_keys","schema_url"}`. Nanosecond times are
//! JSON integers beyond 2^53: JavaScript readers need BigInt-aware parsing.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{EntityRef, InstrumentationScope};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny};

use super::LineEncoder;
use super::attributes::{Attributes, write_attributes, write_attributes_view};
use super::flat::{self, FlatSpan, SPAN_KINDS, STATUS_CODES, ScopeGroup, enum_name, enum_value};
use super::json_text::{write_hex_str, write_str, write_str_content, write_u64, write_utf8_str};
use crate::otlp::WireError;
use crate::otlp::view::{EventView, LinkView, Repeated, SpanView};

/// Writes JSON Lines. The resource and scope part of a line is rendered once per scope
/// group and copied into each line, since it is the same for all of the group's spans.
#[derive(Debug, Default)]
pub struct JsonLinesEncoder {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
}

impl JsonLinesEncoder {
    pub fn new() -> Self {
        Self::default()
    }
}

impl LineEncoder for JsonLinesEncoder {
    fn file_header(&self, _out: &mut Vec<u8>) {}

    fn begin_group(&mut self, group: &ScopeGroup<'_>) {
        self.prefix.clear();
        write_group_prefix(&mut self.prefix, group);
        self.suffix.clear();
        write_group_suffix(&mut self.suffix, group);
    }

    fn encode_line(&mut self, span: &Span, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
        write_span_fields(out, span);
        out.extend_from_slice(&self.suffix);
        out.push(b'\n');
    }

    fn encode_view_line(
        &mut self,
        span: &SpanView<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        out.extend_from_slice(&self.prefix);
        write_span_view_fields(out, span)?;
        out.extend_from_slice(&self.suffix);
        out.push(b'\n');
        Ok(())
    }
}

/// Appends one flat span as a JSON object (no newline).
pub fn write_span(out: &mut Vec<u8>, flat: &FlatSpan<'_>) {
    write_group_prefix(out, &flat.group);
    write_span_fields(out, flat.span);
    write_group_suffix(out, &flat.group);
}

fn write_group_prefix(out: &mut Vec<u8>, group: &ScopeGroup<'_>) {
    out.extend_from_slice(b"{\"service_name\":");
    write_str(out, group.service_name());
    out.push(b',');
}

fn write_span_fields(out: &mut Vec<u8>, span: &Span) {
    write_span_fields_with(out, span, &mut Inline);
}

/// How the nested values of a flat span (attribute lists, events, links, entity refs) are
/// written: as JSON (the file sink's lines, [`Inline`]) or as a JSON string holding that
/// JSON text ([`AsJsonString`], for row stores whose text columns cannot take an object).
/// Generic, not dyn: the file sink's hot path stays monomorphised.
pub trait NestedValues {
    fn write(&mut self, out: &mut Vec<u8>, render: impl FnOnce(&mut Vec<u8>));
}

/// Nested values as JSON arrays and objects.
pub struct Inline;

impl NestedValues for Inline {
    #[inline(always)]
    fn write(&mut self, out: &mut Vec<u8>, render: impl FnOnce(&mut Vec<u8>)) {
        render(out);
    }
}

/// Nested values as JSON strings of their JSON text; the scratch buffer is reused.
#[derive(Debug, Default)]
pub struct AsJsonString {
    scratch: Vec<u8>,
}

impl NestedValues for AsJsonString {
    fn write(&mut self, out: &mut Vec<u8>, render: impl FnOnce(&mut Vec<u8>)) {
        self.scratch.clear();
        render(&mut self.scratch);
        out.push(b'"');
        // The writers only produce UTF-8 (escaped Rust strings, numbers, base64); the
        // lossy path is never taken, it only avoids a panic path.
        match std::str::from_utf8(&self.scratch) {
            Ok(text) => write_str_content(out, text),
            Err(_) => write_str_content(out, &String::from_utf8_lossy(&self.scratch)),
        }
        out.push(b'"');
    }
}

/// The span's own fields of a flat span (from `trace_id` to `dropped_links_count`), nested
/// values written by `nested`.
pub fn write_span_fields_with(out: &mut Vec<u8>, span: &Span, nested: &mut impl NestedValues) {
    out.extend_from_slice(b"\"trace_id\":");
    write_hex_str(out, &span.trace_id);
    out.extend_from_slice(b",\"span_id\":");
    write_hex_str(out, &span.span_id);
    out.extend_from_slice(b",\"parent_span_id\":");
    write_hex_str(out, &span.parent_span_id);
    out.extend_from_slice(b",\"trace_state\":");
    write_str(out, &span.trace_state);
    out.extend_from_slice(b",\"flags\":");
    write_u64(out, span.flags.into());
    out.extend_from_slice(b",\"name\":");
    write_str(out, &span.name);
    out.extend_from_slice(b",\"kind\":");
    write_enum(out, &SPAN_KINDS, span.kind);
    out.extend_from_slice(b",\"start_time_unix_nano\":");
    write_u64(out, span.start_time_unix_nano);
    out.extend_from_slice(b",\"end_time_unix_nano\":");
    write_u64(out, span.end_time_unix_nano);
    out.extend_from_slice(b",\"duration_ns\":");
    write_u64(out, flat::duration_ns(span));
    let (code, message) = flat::status(span);
    out.extend_from_slice(b",\"status_code\":");
    write_enum(out, &STATUS_CODES, code);
    out.extend_from_slice(b",\"status_message\":");
    write_str(out, message);
    out.extend_from_slice(b",\"attributes\":");
    nested.write(out, |o| write_attributes(o, &span.attributes));
    out.extend_from_slice(b",\"dropped_attributes_count\":");
    write_u64(out, span.dropped_attributes_count.into());
    out.extend_from_slice(b",\"events\":");
    nested.write(out, |o| write_events(o, &span.events));
    out.extend_from_slice(b",\"dropped_events_count\":");
    write_u64(out, span.dropped_events_count.into());
    out.extend_from_slice(b",\"links\":");
    nested.write(out, |o| write_links(o, &span.links));
    out.extend_from_slice(b",\"dropped_links_count\":");
    write_u64(out, span.dropped_links_count.into());
}

/// [`write_span_fields`] for a span read from the wire: the same bytes.
fn write_span_view_fields(out: &mut Vec<u8>, span: &SpanView<'_>) -> Result<(), WireError> {
    out.extend_from_slice(b"\"trace_id\":");
    write_hex_str(out, span.trace_id);
    out.extend_from_slice(b",\"span_id\":");
    write_hex_str(out, span.span_id);
    out.extend_from_slice(b",\"parent_span_id\":");
    write_hex_str(out, span.parent_span_id);
    out.extend_from_slice(b",\"trace_state\":");
    write_utf8_str(out, span.trace_state);
    out.extend_from_slice(b",\"flags\":");
    write_u64(out, span.flags.into());
    out.extend_from_slice(b",\"name\":");
    write_utf8_str(out, span.name);
    out.extend_from_slice(b",\"kind\":");
    write_enum(out, &SPAN_KINDS, span.kind);
    out.extend_from_slice(b",\"start_time_unix_nano\":");
    write_u64(out, span.start_time_unix_nano);
    out.extend_from_slice(b",\"end_time_unix_nano\":");
    write_u64(out, span.end_time_unix_nano);
    out.extend_from_slice(b",\"duration_ns\":");
    write_u64(out, span.duration_ns());
    let (code, message) = span.status()?;
    out.extend_from_slice(b",\"status_code\":");
    write_enum(out, &STATUS_CODES, code);
    out.extend_from_slice(b",\"status_message\":");
    write_utf8_str(out, message);
    out.extend_from_slice(b",\"attributes\":");
    write_attributes_view(out, span.attributes.iter())?;
    out.extend_from_slice(b",\"dropped_attributes_count\":");
    write_u64(out, span.dropped_attributes_count.into());
    out.extend_from_slice(b",\"events\":");
    write_events_view(out, span.events)?;
    out.extend_from_slice(b",\"dropped_events_count\":");
    write_u64(out, span.dropped_events_count.into());
    out.extend_from_slice(b",\"links\":");
    write_links_view(out, span.links)?;
    out.extend_from_slice(b",\"dropped_links_count\":");
    write_u64(out, span.dropped_links_count.into());
    Ok(())
}

fn write_group_suffix(out: &mut Vec<u8>, group: &ScopeGroup<'_>) {
    write_group_suffix_with(out, group, &mut Inline);
}

/// The resource and scope fields that end a flat span, and the closing brace; nested
/// values written by `nested`.
pub fn write_group_suffix_with(
    out: &mut Vec<u8>,
    group: &ScopeGroup<'_>,
    nested: &mut impl NestedValues,
) {
    out.extend_from_slice(b",\"resource_attributes\":");
    nested.write(out, |o| write_attributes(o, group.resource_attributes()));
    out.extend_from_slice(b",\"resource_dropped_attributes_count\":");
    write_u64(out, group.resource_dropped_attributes_count().into());
    out.extend_from_slice(b",\"resource_entity_refs\":");
    nested.write(out, |o| write_entity_refs(o, group.resource_entity_refs()));
    out.extend_from_slice(b",\"resource_schema_url\":");
    write_str(out, group.resource_schema_url());
    out.extend_from_slice(b",\"scope_name\":");
    write_str(out, group.scope_name());
    out.extend_from_slice(b",\"scope_version\":");
    write_str(out, group.scope_version());
    out.extend_from_slice(b",\"scope_attributes\":");
    nested.write(out, |o| write_attributes(o, group.scope_attributes()));
    out.extend_from_slice(b",\"scope_dropped_attributes_count\":");
    write_u64(out, group.scope_dropped_attributes_count().into());
    out.extend_from_slice(b",\"scope_schema_url\":");
    write_str(out, group.scope_schema_url());
    out.push(b'}');
}

/// An enum as its name, or as its decimal number in a string when outside the enum.
pub fn write_enum(out: &mut Vec<u8>, names: &'static [&'static str], value: i32) {
    match enum_name(names, value) {
        Some(name) => write_str(out, name),
        None => {
            out.push(b'"');
            out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
            out.push(b'"');
        }
    }
}

/// Appends `items` as a JSON array, each written by `write_item`.
fn write_array<T>(out: &mut Vec<u8>, items: &[T], mut write_item: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_item(out, item);
    }
    out.push(b']');
}

/// Appends span events as a JSON array.
pub fn write_events(out: &mut Vec<u8>, events: &[Event]) {
    write_array(out, events, |out, event| {
        out.extend_from_slice(b"{\"time_unix_nano\":");
        write_u64(out, event.time_unix_nano);
        out.extend_from_slice(b",\"name\":");
        write_str(out, &event.name);
        out.extend_from_slice(b",\"attributes\":");
        write_attributes(out, &event.attributes);
        out.extend_from_slice(b",\"dropped_attributes_count\":");
        write_u64(out, event.dropped_attributes_count.into());
        out.push(b'}');
    });
}

/// Appends span links as a JSON array.
pub fn write_links(out: &mut Vec<u8>, links: &[Link]) {
    write_array(out, links, |out, link| {
        out.extend_from_slice(b"{\"trace_id\":");
        write_hex_str(out, &link.trace_id);
        out.extend_from_slice(b",\"span_id\":");
        write_hex_str(out, &link.span_id);
        out.extend_from_slice(b",\"trace_state\":");
        write_str(out, &link.trace_state);
        out.extend_from_slice(b",\"flags\":");
        write_u64(out, link.flags.into());
        out.extend_from_slice(b",\"attributes\":");
        write_attributes(out, &link.attributes);
        out.extend_from_slice(b",\"dropped_attributes_count\":");
        write_u64(out, link.dropped_attributes_count.into());
        out.push(b'}');
    });
}

/// [`write_events`] for the events of a span read from the wire: the same bytes.
pub fn write_events_view(out: &mut Vec<u8>, events: Repeated<'_>) -> Result<(), WireError> {
    out.push(b'[');
    for (i, body) in events.iter().enumerate() {
        let event = EventView::parse(body?)?;
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"time_unix_nano\":");
        write_u64(out, event.time_unix_nano);
        out.extend_from_slice(b",\"name\":");
        write_utf8_str(out, event.name);
        out.extend_from_slice(b",\"attributes\":");
        write_attributes_view(out, event.attributes.iter())?;
        out.extend_from_slice(b",\"dropped_attributes_count\":");
        write_u64(out, event.dropped_attributes_count.into());
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}

/// [`write_links`] for the links of a span read from the wire: the same bytes.
pub fn write_links_view(out: &mut Vec<u8>, links: Repeated<'_>) -> Result<(), WireError> {
    out.push(b'[');
    for (i, body) in links.iter().enumerate() {
        let link = LinkView::parse(body?)?;
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"trace_id\":");
        write_hex_str(out, link.trace_id);
        out.extend_from_slice(b",\"span_id\":");
        write_hex_str(out, link.span_id);
        out.extend_from_slice(b",\"trace_state\":");
        write_utf8_str(out, link.trace_state);
        out.extend_from_slice(b",\"flags\":");
        write_u64(out, link.flags.into());
        out.extend_from_slice(b",\"attributes\":");
        write_attributes_view(out, link.attributes.iter())?;
        out.extend_from_slice(b",\"dropped_attributes_count\":");
        write_u64(out, link.dropped_attributes_count.into());
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}

/// Appends resource entity references as a JSON array.
pub fn write_entity_refs(out: &mut Vec<u8>, refs: &[EntityRef]) {
    write_array(out, refs, |out, entity| {
        out.extend_from_slice(b"{\"type\":");
        write_str(out, &entity.r#type);
        out.extend_from_slice(b",\"id_keys\":");
        write_str_array(out, &entity.id_keys);
        out.extend_from_slice(b",\"description_keys\":");
        write_str_array(out, &entity.description_keys);
        out.extend_from_slice(b",\"schema_url\":");
        write_str(out, &entity.schema_url);
        out.push(b'}');
    });
}

fn write_str_array(out: &mut Vec<u8>, items: &[String]) {
    write_array(out, items, |out, s| {
        write_str(out, s);
    });
}

/// One line read back: the span with the resource and scope it was written with.
///
/// Absent resource, scope or status are written as their empty values and so read back
/// as present-but-empty (`Some(default)`), which OTLP treats the same.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub resource: Resource,
    pub resource_schema_url: String,
    pub scope: InstrumentationScope,
    pub scope_schema_url: String,
    pub span: Span,
}

/// A line that is not a span written by this module.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: not a spansink JSON span: {source}")]
pub struct ReadError {
    /// 1-based line number.
    pub line: usize,
    pub source: serde_json::Error,
}

/// Parses one line written by [`JsonLinesEncoder`] or [`write_span`].
pub fn read_span_line(line: &str) -> Result<SpanRecord, serde_json::Error> {
    serde_json::from_str::<SpanLine>(line).map(SpanRecord::from)
}

/// Parses JSON Lines back into one request. Consecutive spans with the same resource and
/// scope share a `ResourceSpans` / `ScopeSpans`, as they did when written. Blank lines
/// are skipped.
pub fn read_request<'a>(
    lines: impl IntoIterator<Item = &'a str>,
) -> Result<ExportTraceServiceRequest, ReadError> {
    let mut request = ExportTraceServiceRequest::default();
    for (i, line) in lines.into_iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = read_span_line(line).map_err(|source| ReadError {
            line: i + 1,
            source,
        })?;
        push_record(&mut request, record);
    }
    Ok(request)
}

/// Parses an `events` value (e.g. a CSV column).
pub fn read_events(json: &str) -> Result<Vec<Event>, serde_json::Error> {
    serde_json::from_str::<Vec<EventLine>>(json).map(|v| v.into_iter().map(Event::from).collect())
}

/// Parses a `links` value (e.g. a CSV column).
pub fn read_links(json: &str) -> Result<Vec<Link>, serde_json::Error> {
    serde_json::from_str::<Vec<LinkLine>>(json).map(|v| v.into_iter().map(Link::from).collect())
}

/// Parses a `resource_entity_refs` value (e.g. a CSV column).
pub fn read_entity_refs(json: &str) -> Result<Vec<EntityRef>, serde_json::Error> {
    serde_json::from_str::<Vec<EntityRefLine>>(json)
        .map(|v| v.into_iter().map(EntityRef::from).collect())
}

fn push_record(request: &mut ExportTraceServiceRequest, record: SpanRecord) {
    let same_resource = request.resource_spans.last().is_some_and(|rs| {
        rs.resource.as_ref() == Some(&record.resource)
            && rs.schema_url == record.resource_schema_url
    });
    if !same_resource {
        request.resource_spans.push(ResourceSpans {
            resource: Some(record.resource),
            scope_spans: Vec::new(),
            schema_url: record.resource_schema_url,
        });
    }
    let Some(resource_spans) = request.resource_spans.last_mut() else {
        return;
    };
    let same_scope = resource_spans.scope_spans.last().is_some_and(|ss| {
        ss.scope.as_ref() == Some(&record.scope) && ss.schema_url == record.scope_schema_url
    });
    if !same_scope {
        resource_spans.scope_spans.push(ScopeSpans {
            scope: Some(record.scope),
            spans: Vec::new(),
            schema_url: record.scope_schema_url,
        });
    }
    if let Some(scope_spans) = resource_spans.scope_spans.last_mut() {
        scope_spans.spans.push(record.span);
    }
}

/// The line as serde sees it. Every field is required and no other is allowed, so a line
/// from another tool fails loudly instead of reading back as a different span.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SpanLine {
    #[serde(rename = "service_name")]
    _service_name: IgnoredAny,
    trace_id: Hex,
    span_id: Hex,
    parent_span_id: Hex,
    trace_state: String,
    flags: u32,
    name: String,
    kind: SpanKindName,
    start_time_unix_nano: u64,
    end_time_unix_nano: u64,
    #[serde(rename = "duration_ns")]
    _duration_ns: IgnoredAny,
    status_code: StatusCodeName,
    status_message: String,
    attributes: Attributes,
    dropped_attributes_count: u32,
    events: Vec<EventLine>,
    dropped_events_count: u32,
    links: Vec<LinkLine>,
    dropped_links_count: u32,
    resource_attributes: Attributes,
    resource_dropped_attributes_count: u32,
    resource_entity_refs: Vec<EntityRefLine>,
    resource_schema_url: String,
    scope_name: String,
    scope_version: String,
    scope_attributes: Attributes,
    scope_dropped_attributes_count: u32,
    scope_schema_url: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine {
    time_unix_nano: u64,
    name: String,
    attributes: Attributes,
    dropped_attributes_count: u32,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkLine {
    trace_id: Hex,
    span_id: Hex,
    trace_state: String,
    flags: u32,
    attributes: Attributes,
    dropped_attributes_count: u32,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityRefLine {
    r#type: String,
    id_keys: Vec<String>,
    description_keys: Vec<String>,
    schema_url: String,
}

/// Bytes written as lowercase hex.
struct Hex(Vec<u8>);

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        const_hex::decode(text.as_bytes())
            .map(Hex)
            .map_err(|e| de::Error::custom(format!("invalid hex id {text:?}: {e}")))
    }
}

struct SpanKindName(i32);
struct StatusCodeName(i32);

impl<'de> Deserialize<'de> for SpanKindName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_enum(d, &SPAN_KINDS).map(SpanKindName)
    }
}

impl<'de> Deserialize<'de> for StatusCodeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_enum(d, &STATUS_CODES).map(StatusCodeName)
    }
}

fn read_enum<'de, D: Deserializer<'de>>(d: D, names: &[&str]) -> Result<i32, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    enum_value(names, &text).ok_or_else(|| {
        de::Error::custom(format!(
            "unknown value {text:?}; expected one of {names:?} or a number"
        ))
    })
}

impl From<SpanLine> for SpanRecord {
    fn from(l: SpanLine) -> Self {
        SpanRecord {
            resource: Resource {
                attributes: l.resource_attributes.0,
                dropped_attributes_count: l.resource_dropped_attributes_count,
                entity_refs: l
                    .resource_entity_refs
                    .into_iter()
                    .map(EntityRef::from)
                    .collect(),
            },
            resource_schema_url: l.resource_schema_url,
            scope: InstrumentationScope {
                name: l.scope_name,
                version: l.scope_version,
                attributes: l.scope_attributes.0,
                dropped_attributes_count: l.scope_dropped_attributes_count,
            },
            scope_schema_url: l.scope_schema_url,
            span: Span {
                trace_id: l.trace_id.0,
                span_id: l.span_id.0,
                trace_state: l.trace_state,
                parent_span_id: l.parent_span_id.0,
                flags: l.flags,
                name: l.name,
                kind: l.kind.0,
                start_time_unix_nano: l.start_time_unix_nano,
                end_time_unix_nano: l.end_time_unix_nano,
                attributes: l.attributes.0,
                dropped_attributes_count: l.dropped_attributes_count,
                events: l.events.into_iter().map(Event::from).collect(),
                dropped_events_count: l.dropped_events_count,
                links: l.links.into_iter().map(Link::from).collect(),
                dropped_links_count: l.dropped_links_count,
                status: Some(Status {
                    message: l.status_message,
                    code: l.status_code.0,
                }),
            },
        }
    }
}

impl From<EventLine> for Event {
    fn from(e: EventLine) -> Self {
        Event {
            time_unix_nano: e.time_unix_nano,
            name: e.name,
            attributes: e.attributes.0,
            dropped_attributes_count: e.dropped_attributes_count,
        }
    }
}

impl From<LinkLine> for Link {
    fn from(k: LinkLine) -> Self {
        Link {
            trace_id: k.trace_id.0,
            span_id: k.span_id.0,
            trace_state: k.trace_state,
            attributes: k.attributes.0,
            dropped_attributes_count: k.dropped_attributes_count,
            flags: k.flags,
        }
    }
}

impl From<EntityRefLine> for EntityRef {
    fn from(e: EntityRefLine) -> Self {
        EntityRef {
            schema_url: e.schema_url,
            r#type: e.r#type,
            id_keys: e.id_keys,
            description_keys: e.description_keys,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::encode_request;
    use crate::encoding::flat::{FIELDS, flat_spans};
    use crate::otlp::{fixtures, span_count};

    fn jsonl(request: &ExportTraceServiceRequest) -> String {
        let mut out = Vec::new();
        encode_request(&mut JsonLinesEncoder::new(), request, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rich_request_round_trips_identically() {
        let request = fixtures::rich_request();
        let text = jsonl(&request);
        assert_eq!(text.lines().count(), span_count(&request));
        assert_eq!(read_request(text.lines()).unwrap(), request);
    }

    #[test]
    fn keys_follow_the_canonical_field_order() {
        let text = jsonl(&fixtures::rich_request());
        for line in text.lines() {
            let object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(line).unwrap();
            // serde_json's map is sorted unless preserve_order; compare as sets, then order
            // by position in the text.
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort_by_key(|k| line.find(&format!("\"{k}\":")).unwrap());
            assert_eq!(keys, FIELDS.to_vec());
        }
    }

    #[test]
    fn cached_group_output_equals_the_uncached_writer() {
        let request = fixtures::rich_request();
        let mut expected = Vec::new();
        for flat in flat_spans(&request) {
            write_span(&mut expected, &flat);
            expected.push(b'\n');
        }
        assert_eq!(jsonl(&request).into_bytes(), expected);
    }

    #[test]
    fn fields_are_natural_to_query() {
        let request = fixtures::rich_request();
        let text = jsonl(&request);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(first["trace_id"], const_hex::encode(&span.trace_id));
        assert_eq!(first["kind"], "server");
        assert_eq!(first["status_code"], "error");
        assert_eq!(first["service_name"], "checkout ✓");
        assert_eq!(
            first["duration_ns"],
            span.end_time_unix_nano - span.start_time_unix_nano
        );
        assert!(first["start_time_unix_nano"].is_u64());
        assert_eq!(first["attributes"]["http.status_code"], 504);
        assert!(first["attributes"]["ratio"].is_f64());
    }

    #[test]
    fn enum_values_outside_the_enum_survive_as_numbers_in_text() {
        let mut request = fixtures::rich_request();
        let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
        span.kind = 42;
        span.status = Some(Status {
            message: String::new(),
            code: -1,
        });
        let text = jsonl(&request);
        assert!(text.contains("\"kind\":\"42\""), "{text}");
        assert_eq!(read_request(text.lines()).unwrap(), request);
    }

    #[test]
    fn foreign_lines_are_refused_with_their_line_number() {
        let err = read_request(["", "{\"trace_id\":\"00\"}"]).unwrap_err();
        assert_eq!(err.line, 2);
        let mut line = jsonl(&fixtures::rich_request())
            .lines()
            .next()
            .unwrap()
            .to_string();
        line.insert_str(1, "\"extra\":1,");
        assert!(read_span_line(&line).is_err());
    }
}
