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

use crate::encoding::json::{AsJsonString, write_group_suffix_with, write_span_fields_with};
use crate::encoding::json_text::write_str;
use crate::encoding::scope_groups;

/// Writes rows into a caller's buffer: the file sink's flat span fields, with the nested
/// values as JSON strings, one row per line.
#[derive(Debug, Default)]
pub struct RowEncoder {
    /// The resource and scope columns of the current group, rendered once per group.
    group_suffix: Vec<u8>,
    nested: AsJsonString,
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
            self.group_suffix.clear();
            write_group_suffix_with(&mut self.group_suffix, &group, &mut self.nested);
            self.group_suffix.push(b'\n');
            for span in group.spans() {
                out.extend_from_slice(b"{\"service_name\":");
                write_str(out, group.service_name());
                out.push(b',');
                write_span_fields_with(out, span, &mut self.nested);
                out.extend_from_slice(&self.group_suffix);
                rows += 1;
            }
        }
        rows
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
