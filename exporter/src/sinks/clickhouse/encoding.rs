//! ClickHouse rows: one `JSONEachRow` object per span with the columns of
//! [`FIELDS`](crate::encoding::FIELDS). Not the table (see `schema`) nor the request.
//!
//! Scalars are plain JSON values (ids hex, kind and status by name, times as exact
//! integer nanoseconds). Attribute lists, events, links and entity refs are the typed
//! JSON text of the file sink (`crate::encoding`), put in a JSON *string*: every ClickHouse
//! version reads a string into a `String` column (18.x cannot read an object into one), the
//! text keeps every value's type, and `JSONExtract*` queries it. No column is derived from
//! another here: the table derives `start_time`/`end_time` and the attribute maps itself,
//! so one row fits both the created table and a hand-made table of an older server.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::encoding::attributes::write_attributes;
use crate::encoding::flat::{self, SPAN_KINDS, STATUS_CODES, ScopeGroup, enum_name};
use crate::encoding::json::{write_entity_refs, write_events, write_links};
use crate::encoding::json_text::{write_hex_str, write_str, write_str_content, write_u64};
use crate::encoding::scope_groups;

/// Writes rows into a caller's buffer, reusing its scratch buffers between spans.
#[derive(Debug, Default)]
pub struct RowEncoder {
    /// The resource and scope columns of the current group, rendered once per group.
    group_suffix: Vec<u8>,
    /// JSON text of one nested value before it is written as a JSON string.
    scratch: Vec<u8>,
}

impl RowEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one row per span of `request`, each ended by a newline. Returns the
    /// number of rows.
    pub fn encode_request(
        &mut self,
        request: &ExportTraceServiceRequest,
        out: &mut Vec<u8>,
    ) -> usize {
        let mut rows = 0;
        for group in scope_groups(request) {
            self.begin_group(&group);
            for span in group.spans() {
                self.encode_span(&group, span, out);
                rows += 1;
            }
        }
        rows
    }

    fn begin_group(&mut self, group: &ScopeGroup<'_>) {
        let out = &mut self.group_suffix;
        out.clear();
        out.extend_from_slice(b",\"resource_attributes\":");
        json_string(out, &mut self.scratch, |s| {
            write_attributes(s, group.resource_attributes())
        });
        out.extend_from_slice(b",\"resource_dropped_attributes_count\":");
        write_u64(out, group.resource_dropped_attributes_count().into());
        out.extend_from_slice(b",\"resource_entity_refs\":");
        json_string(out, &mut self.scratch, |s| {
            write_entity_refs(s, group.resource_entity_refs())
        });
        out.extend_from_slice(b",\"resource_schema_url\":");
        write_str(out, group.resource_schema_url());
        out.extend_from_slice(b",\"scope_name\":");
        write_str(out, group.scope_name());
        out.extend_from_slice(b",\"scope_version\":");
        write_str(out, group.scope_version());
        out.extend_from_slice(b",\"scope_attributes\":");
        json_string(out, &mut self.scratch, |s| {
            write_attributes(s, group.scope_attributes())
        });
        out.extend_from_slice(b",\"scope_dropped_attributes_count\":");
        write_u64(out, group.scope_dropped_attributes_count().into());
        out.extend_from_slice(b",\"scope_schema_url\":");
        write_str(out, group.scope_schema_url());
        out.extend_from_slice(b"}\n");
    }

    fn encode_span(&mut self, group: &ScopeGroup<'_>, span: &Span, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"service_name\":");
        write_str(out, group.service_name());
        out.extend_from_slice(b",\"trace_id\":");
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
        attributes_string(out, &mut self.scratch, &span.attributes);
        out.extend_from_slice(b",\"dropped_attributes_count\":");
        write_u64(out, span.dropped_attributes_count.into());
        out.extend_from_slice(b",\"events\":");
        json_string(out, &mut self.scratch, |s| write_events(s, &span.events));
        out.extend_from_slice(b",\"dropped_events_count\":");
        write_u64(out, span.dropped_events_count.into());
        out.extend_from_slice(b",\"links\":");
        json_string(out, &mut self.scratch, |s| write_links(s, &span.links));
        out.extend_from_slice(b",\"dropped_links_count\":");
        write_u64(out, span.dropped_links_count.into());
        out.extend_from_slice(&self.group_suffix);
    }
}

fn attributes_string(out: &mut Vec<u8>, scratch: &mut Vec<u8>, attributes: &[KeyValue]) {
    json_string(out, scratch, |s| write_attributes(s, attributes));
}

/// Renders JSON text with `write` and appends it as one JSON string.
fn json_string(out: &mut Vec<u8>, scratch: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    scratch.clear();
    write(scratch);
    out.push(b'"');
    // The encoders only write UTF-8 (escaped Rust strings, numbers, base64); the lossy
    // path is never taken, it only avoids a panic path.
    match std::str::from_utf8(scratch) {
        Ok(text) => write_str_content(out, text),
        Err(_) => write_str_content(out, &String::from_utf8_lossy(scratch)),
    }
    out.push(b'"');
}

/// An enum as its name, or as its decimal number in a string when outside the enum (the
/// same text as the file sink, so a `LowCardinality(String)` column takes any value).
fn write_enum(out: &mut Vec<u8>, names: &'static [&'static str], value: i32) {
    match enum_name(names, value) {
        Some(name) => write_str(out, name),
        None => {
            out.push(b'"');
            out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
            out.push(b'"');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{FIELDS, read_request};
    use crate::otlp::fixtures::{self, flatten};

    /// A row turned back into the file sink's line: the nested strings become the JSON
    /// text they hold.
    fn row_to_line(row: &str) -> String {
        let value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(row).unwrap();
        let mut line = String::from("{");
        for (i, field) in FIELDS.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&serde_json::to_string(field).unwrap());
            line.push(':');
            match &value[*field] {
                serde_json::Value::String(s) if is_nested(field) => line.push_str(s),
                other => line.push_str(&serde_json::to_string(other).unwrap()),
            }
        }
        line.push('}');
        line
    }

    fn is_nested(field: &str) -> bool {
        matches!(
            field,
            "attributes"
                | "events"
                | "links"
                | "resource_attributes"
                | "resource_entity_refs"
                | "scope_attributes"
        )
    }

    #[test]
    fn every_field_of_the_rich_request_survives_a_row() {
        let request = fixtures::rich_request();
        let mut out = Vec::new();
        let rows = RowEncoder::new().encode_request(&request, &mut out);
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(rows, 7);
        assert_eq!(text.lines().count(), 7);
        let lines: Vec<String> = text.lines().map(row_to_line).collect();
        let read = read_request(lines.iter().map(String::as_str)).unwrap();
        assert_eq!(flatten(&read), flatten(&request));
    }

    #[test]
    fn rows_have_the_columns_in_order_with_nested_values_as_strings() {
        let request = fixtures::rich_request();
        let mut out = Vec::new();
        RowEncoder::new().encode_request(&request, &mut out);
        let first = std::str::from_utf8(&out).unwrap().lines().next().unwrap();
        let row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(first).unwrap();
        // serde_json's map is sorted; compare the sets, then the order in the text.
        let mut keys: Vec<&str> = row.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut fields = FIELDS.to_vec();
        fields.sort_unstable();
        assert_eq!(keys, fields);
        let mut at = 0;
        for field in FIELDS {
            let found = first[at..].find(&format!("\"{field}\":")).unwrap();
            at += found;
        }
        assert_eq!(row["service_name"], "checkout ✓");
        assert_eq!(row["kind"], "server");
        assert_eq!(row["status_code"], "error");
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(row["start_time_unix_nano"], span.start_time_unix_nano);
        for field in [
            "attributes",
            "events",
            "links",
            "resource_attributes",
            "scope_attributes",
        ] {
            assert!(row[field].is_string(), "{field}: {}", row[field]);
        }
        let attributes: serde_json::Value =
            serde_json::from_str(row["attributes"].as_str().unwrap()).unwrap();
        assert_eq!(attributes["http.status_code"], 504);
        assert_eq!(attributes["int.max"], i64::MAX);
    }

    #[test]
    fn kinds_and_statuses_outside_the_enums_are_their_numbers() {
        let mut request = fixtures::request(1, 0);
        let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
        span.kind = 9;
        span.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
            code: 7,
            message: String::new(),
        });
        let mut out = Vec::new();
        RowEncoder::new().encode_request(&request, &mut out);
        let row: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(row["kind"], "9");
        assert_eq!(row["status_code"], "7");
    }
}
