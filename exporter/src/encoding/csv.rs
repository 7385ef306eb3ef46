//! Flat spans as CSV rows (RFC 4180 quoting, `\n` line ends) under a header of
//! [`FIELDS`]. Not a CSV reader: any CSV parser reads these files.
//!
//! Scalar columns hold plain text (ids in hex, enums by name, integers in decimal);
//! nested columns (`attributes`, `events`, `links`, `resource_attributes`,
//! `resource_entity_refs`, `scope_attributes`) hold the same JSON as the JSON Lines
//! format, so their values keep their types.

use opentelemetry_proto::tonic::trace::v1::Span;

use super::LineEncoder;
use super::attributes::write_attributes;
use super::attributes::write_attributes_view;
use super::flat::{self, FIELDS, SPAN_KINDS, STATUS_CODES, ScopeGroup, enum_name};
use super::json::{
    write_entity_refs, write_events, write_events_view, write_links, write_links_view,
};
use super::json_text::{write_hex, write_u64};
use crate::otlp::WireError;
use crate::otlp::view::SpanView;

/// Writes CSV rows. As with JSON Lines, the resource and scope columns are rendered once
/// per scope group.
#[derive(Debug, Default)]
pub struct CsvEncoder {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    /// Reused for nested columns, which are rendered as JSON before being quoted.
    json: Vec<u8>,
}

impl CsvEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Renders a nested value as JSON and appends it as one quoted field.
    fn json_field(&mut self, out: &mut Vec<u8>, render: impl FnOnce(&mut Vec<u8>)) {
        self.json.clear();
        render(&mut self.json);
        write_field(out, &self.json);
    }

    /// [`json_field`](Self::json_field) for a rendering that reads the wire and can fail.
    fn try_json_field(
        &mut self,
        out: &mut Vec<u8>,
        render: impl FnOnce(&mut Vec<u8>) -> Result<(), WireError>,
    ) -> Result<(), WireError> {
        self.json.clear();
        render(&mut self.json)?;
        write_field(out, &self.json);
        Ok(())
    }
}

impl LineEncoder for CsvEncoder {
    fn file_header(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(FIELDS.join(",").as_bytes());
        out.push(b'\n');
    }

    fn begin_group(&mut self, group: &ScopeGroup<'_>) {
        let mut prefix = std::mem::take(&mut self.prefix);
        prefix.clear();
        write_field(&mut prefix, group.service_name().as_bytes());
        prefix.push(b',');
        self.prefix = prefix;

        let mut s = std::mem::take(&mut self.suffix);
        s.clear();
        s.push(b',');
        self.json_field(&mut s, |o| write_attributes(o, group.resource_attributes()));
        s.push(b',');
        write_u64(&mut s, group.resource_dropped_attributes_count().into());
        s.push(b',');
        self.json_field(&mut s, |o| {
            write_entity_refs(o, group.resource_entity_refs())
        });
        s.push(b',');
        write_field(&mut s, group.resource_schema_url().as_bytes());
        s.push(b',');
        write_field(&mut s, group.scope_name().as_bytes());
        s.push(b',');
        write_field(&mut s, group.scope_version().as_bytes());
        s.push(b',');
        self.json_field(&mut s, |o| write_attributes(o, group.scope_attributes()));
        s.push(b',');
        write_u64(&mut s, group.scope_dropped_attributes_count().into());
        s.push(b',');
        write_field(&mut s, group.scope_schema_url().as_bytes());
        s.push(b'\n');
        self.suffix = s;
    }

    fn encode_line(&mut self, span: &Span, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
        write_hex(out, &span.trace_id);
        out.push(b',');
        write_hex(out, &span.span_id);
        out.push(b',');
        write_hex(out, &span.parent_span_id);
        out.push(b',');
        write_field(out, span.trace_state.as_bytes());
        out.push(b',');
        write_u64(out, span.flags.into());
        out.push(b',');
        write_field(out, span.name.as_bytes());
        out.push(b',');
        write_enum(out, &SPAN_KINDS, span.kind);
        out.push(b',');
        write_u64(out, span.start_time_unix_nano);
        out.push(b',');
        write_u64(out, span.end_time_unix_nano);
        out.push(b',');
        write_u64(out, flat::duration_ns(span));
        let (code, message) = flat::status(span);
        out.push(b',');
        write_enum(out, &STATUS_CODES, code);
        out.push(b',');
        write_field(out, message.as_bytes());
        out.push(b',');
        self.json_field(out, |o| write_attributes(o, &span.attributes));
        out.push(b',');
        write_u64(out, span.dropped_attributes_count.into());
        out.push(b',');
        self.json_field(out, |o| write_events(o, &span.events));
        out.push(b',');
        write_u64(out, span.dropped_events_count.into());
        out.push(b',');
        self.json_field(out, |o| write_links(o, &span.links));
        out.push(b',');
        write_u64(out, span.dropped_links_count.into());
        out.extend_from_slice(&self.suffix);
    }

    fn encode_view_line(
        &mut self,
        span: &SpanView<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), WireError> {
        out.extend_from_slice(&self.prefix);
        write_hex(out, span.trace_id);
        out.push(b',');
        write_hex(out, span.span_id);
        out.push(b',');
        write_hex(out, span.parent_span_id);
        out.push(b',');
        write_field(out, span.trace_state);
        out.push(b',');
        write_u64(out, span.flags.into());
        out.push(b',');
        write_field(out, span.name);
        out.push(b',');
        write_enum(out, &SPAN_KINDS, span.kind);
        out.push(b',');
        write_u64(out, span.start_time_unix_nano);
        out.push(b',');
        write_u64(out, span.end_time_unix_nano);
        out.push(b',');
        write_u64(out, span.duration_ns());
        let (code, message) = span.status()?;
        out.push(b',');
        write_enum(out, &STATUS_CODES, code);
        out.push(b',');
        write_field(out, message);
        out.push(b',');
        self.try_json_field(out, |o| write_attributes_view(o, span.attributes.iter()))?;
        out.push(b',');
        write_u64(out, span.dropped_attributes_count.into());
        out.push(b',');
        self.try_json_field(out, |o| write_events_view(o, span.events))?;
        out.push(b',');
        write_u64(out, span.dropped_events_count.into());
        out.push(b',');
        self.try_json_field(out, |o| write_links_view(o, span.links))?;
        out.push(b',');
        write_u64(out, span.dropped_links_count.into());
        out.extend_from_slice(&self.suffix);
        Ok(())
    }
}

fn write_enum(out: &mut Vec<u8>, names: &'static [&'static str], value: i32) {
    match enum_name(names, value) {
        Some(name) => out.extend_from_slice(name.as_bytes()),
        None => out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes()),
    }
}

/// Appends one field, quoted (with inner quotes doubled) only when it holds a comma, a
/// quote or a line break.
pub fn write_field(out: &mut Vec<u8>, text: &[u8]) {
    let needs_quotes = text
        .iter()
        .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
    if !needs_quotes {
        out.extend_from_slice(text);
        return;
    }
    out.push(b'"');
    let mut run_start = 0;
    for (i, &b) in text.iter().enumerate() {
        if b == b'"' {
            out.extend_from_slice(&text[run_start..=i]);
            out.push(b'"');
            run_start = i + 1;
        }
    }
    out.extend_from_slice(&text[run_start..]);
    out.push(b'"');
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::encoding::attributes::read_attributes;
    use crate::encoding::encode_request;
    use crate::encoding::flat::{FlatSpan, flat_spans};
    use crate::encoding::json::{read_entity_refs, read_events, read_links};
    use crate::otlp::fixtures;

    /// Checks every column of a CSV row (read by the `csv` crate) against the span it was
    /// written from.
    pub(crate) fn assert_csv_row_matches(row: &::csv::StringRecord, flat: &FlatSpan<'_>) {
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

    fn field(text: &str) -> String {
        let mut out = Vec::new();
        write_field(&mut out, text.as_bytes());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(field("plain é"), "plain é");
        assert_eq!(field(""), "");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("\""), "\"\"\"\"");
        assert_eq!(field("two\nlines\r"), "\"two\nlines\r\"");
    }

    #[test]
    fn rows_parse_with_a_real_csv_reader_into_the_original_values() {
        let request = fixtures::rich_request();
        let mut out = Vec::new();
        let mut encoder = CsvEncoder::new();
        encoder.file_header(&mut out);
        encode_request(&mut encoder, &request, &mut out);

        let mut reader = ::csv::Reader::from_reader(out.as_slice());
        assert_eq!(reader.headers().unwrap(), FIELDS.as_slice());
        let rows: Vec<::csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        let spans: Vec<_> = flat_spans(&request).collect();
        assert_eq!(rows.len(), spans.len());
        for (row, flat) in rows.iter().zip(&spans) {
            assert_csv_row_matches(row, flat);
        }
        // The nested columns are JSON with typed values.
        let attrs = read_attributes(&rows[0][13]).unwrap();
        assert_eq!(attrs, spans[0].span.attributes);
    }
}
