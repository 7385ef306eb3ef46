//! ClickHouse rows in `RowBinary`: the columns of [`schema`](super::schema) in order, each
//! `String` as a LEB128 length and its bytes, each `UInt32`/`UInt64` little-endian. Not
//! the table, nor the compression of the body.
//!
//! Read straight from the request's wire bytes ([`otlp::view`](crate::otlp::view)), with no
//! decode into owned structs. A row holds exactly the values the `JSONEachRow` row of the
//! same span stores (ids in hex, kind and status by name, nested values as the typed JSON
//! text of the file sink), so a table reads the same whichever format wrote it; a test
//! checks that on every fixture.

use crate::encoding::attributes::{write_attributes, write_attributes_view};
use crate::encoding::flat::{SPAN_KINDS, STATUS_CODES, ScopeGroup, enum_name};
use crate::encoding::json::{write_entity_refs, write_events_view, write_links_view};
use crate::encoding::json_text::write_hex;
use crate::otlp::WireError;
use crate::otlp::view::{SpanView, for_each_scope_group};

/// Writes `RowBinary` rows into a caller's buffer, reusing its own scratch buffers.
#[derive(Debug, Default)]
pub struct RowBinaryEncoder {
    /// `service_name`, the first column, once per scope group.
    prefix: Vec<u8>,
    /// The resource and scope columns that end every row of the group.
    suffix: Vec<u8>,
    /// A nested value's JSON text, before its length is known.
    scratch: Vec<u8>,
}

impl RowBinaryEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one row per span of the encoded request `bytes` (checked by `wire::scan`).
    /// Returns the number of rows.
    pub fn encode_wire_request(
        &mut self,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, WireError> {
        let mut rows = 0;
        for_each_scope_group(bytes, |group| {
            self.begin_group(&ScopeGroup::of_view(group));
            for span in group.spans() {
                out.extend_from_slice(&self.prefix);
                self.write_span(&span?, out)?;
                out.extend_from_slice(&self.suffix);
                rows += 1;
            }
            Ok::<(), WireError>(())
        })?;
        Ok(rows)
    }

    fn begin_group(&mut self, group: &ScopeGroup<'_>) {
        self.prefix.clear();
        write_string(&mut self.prefix, group.service_name().as_bytes());
        let suffix = &mut self.suffix;
        let scratch = &mut self.scratch;
        suffix.clear();
        write_json(suffix, scratch, |o| {
            write_attributes(o, group.resource_attributes());
            Ok(())
        })
        .ok();
        write_u32(suffix, group.resource_dropped_attributes_count());
        write_json(suffix, scratch, |o| {
            write_entity_refs(o, group.resource_entity_refs());
            Ok(())
        })
        .ok();
        write_string(suffix, group.resource_schema_url().as_bytes());
        write_string(suffix, group.scope_name().as_bytes());
        write_string(suffix, group.scope_version().as_bytes());
        write_json(suffix, scratch, |o| {
            write_attributes(o, group.scope_attributes());
            Ok(())
        })
        .ok();
        write_u32(suffix, group.scope_dropped_attributes_count());
        write_string(suffix, group.scope_schema_url().as_bytes());
    }

    /// The span's own columns, from `trace_id` to `dropped_links_count`.
    fn write_span(&mut self, span: &SpanView<'_>, out: &mut Vec<u8>) -> Result<(), WireError> {
        write_hex_string(out, span.trace_id);
        write_hex_string(out, span.span_id);
        write_hex_string(out, span.parent_span_id);
        write_string(out, span.trace_state);
        write_u32(out, span.flags);
        write_string(out, span.name);
        write_enum(out, &SPAN_KINDS, span.kind);
        write_u64(out, span.start_time_unix_nano);
        write_u64(out, span.end_time_unix_nano);
        write_u64(out, span.duration_ns());
        let (code, message) = span.status()?;
        write_enum(out, &STATUS_CODES, code);
        write_string(out, message);
        let scratch = &mut self.scratch;
        write_json(out, scratch, |o| {
            write_attributes_view(o, span.attributes.iter())
        })?;
        write_u32(out, span.dropped_attributes_count);
        write_json(out, scratch, |o| write_events_view(o, span.events))?;
        write_u32(out, span.dropped_events_count);
        write_json(out, scratch, |o| write_links_view(o, span.links))?;
        write_u32(out, span.dropped_links_count);
        Ok(())
    }
}

/// A `String` holding the JSON text `write` produces.
fn write_json(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    scratch.clear();
    write(scratch)?;
    write_string(out, scratch);
    Ok(())
}

/// A `String`: LEB128 length, then the bytes.
pub fn write_string(out: &mut Vec<u8>, bytes: &[u8]) {
    write_leb128(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn write_hex_string(out: &mut Vec<u8>, bytes: &[u8]) {
    write_leb128(out, (bytes.len() * 2) as u64);
    write_hex(out, bytes);
}

/// An enum as its name, or its decimal number when outside the enum (as the JSON rows).
fn write_enum(out: &mut Vec<u8>, names: &'static [&'static str], value: i32) {
    match enum_name(names, value) {
        Some(name) => write_string(out, name.as_bytes()),
        None => write_string(out, itoa::Buffer::new().format(value).as_bytes()),
    }
}

fn write_leb128(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn write_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn write_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Reads `RowBinary` rows of the schema's columns back into JSON objects, with the
/// values a `FORMAT JSONEachRow` row of the same span has before ClickHouse reads it
/// (tests, and checking what was sent).
pub fn read_rows(
    mut body: &[u8],
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, String> {
    let columns: Vec<(&str, &str)> = super::schema::stored_columns().collect();
    let mut rows = Vec::new();
    while !body.is_empty() {
        let mut row = serde_json::Map::new();
        for (name, wire_type) in &columns {
            let value = match *wire_type {
                "String" => {
                    let mut length = 0u64;
                    let mut shift = 0;
                    loop {
                        let (&byte, rest) = body
                            .split_first()
                            .ok_or_else(|| format!("{name}: the row ends in a length"))?;
                        body = rest;
                        length |= u64::from(byte & 0x7f) << shift;
                        shift += 7;
                        if byte < 0x80 {
                            break;
                        }
                    }
                    let length = length as usize;
                    if body.len() < length {
                        return Err(format!("{name}: {length} bytes do not fit the row"));
                    }
                    let (text, rest) = body.split_at(length);
                    body = rest;
                    let text =
                        std::str::from_utf8(text).map_err(|_| format!("{name}: not UTF-8"))?;
                    serde_json::Value::String(text.to_string())
                }
                "UInt32" | "UInt64" => {
                    let width = if *wire_type == "UInt32" { 4 } else { 8 };
                    if body.len() < width {
                        return Err(format!("{name}: the row ends in an integer"));
                    }
                    let (bytes, rest) = body.split_at(width);
                    body = rest;
                    let mut le = [0u8; 8];
                    le[..width].copy_from_slice(bytes);
                    serde_json::Value::from(u64::from_le_bytes(le))
                }
                other => return Err(format!("{name}: no reader for {other}")),
            };
            row.insert((*name).to_string(), value);
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::fixtures;
    use crate::sinks::clickhouse::encoding::RowEncoder;
    use prost::Message as _;

    /// The JSON rows of `request`, parsed.
    fn json_rows(
        request: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
    ) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let mut out = Vec::new();
        RowEncoder::new().encode_request(request, &mut out);
        std::str::from_utf8(&out)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn rows_hold_the_values_of_the_json_rows() {
        for request in [
            fixtures::rich_request(),
            fixtures::request(3, 4),
            fixtures::merged([fixtures::rich_request(), fixtures::request(2, 1)]),
        ] {
            let bytes = request.encode_to_vec();
            let mut out = Vec::new();
            let rows = RowBinaryEncoder::new()
                .encode_wire_request(&bytes, &mut out)
                .unwrap();
            let read = read_rows(&out).unwrap();
            assert_eq!(read.len(), rows);
            assert_eq!(read, json_rows(&request));
        }
    }

    #[test]
    fn lengths_past_one_byte_use_more_and_enums_outside_are_numbers() {
        let mut request = fixtures::request(1, 0);
        let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
        span.name = "n".repeat(300);
        span.kind = 9;
        let bytes = request.encode_to_vec();
        let mut out = Vec::new();
        RowBinaryEncoder::new()
            .encode_wire_request(&bytes, &mut out)
            .unwrap();
        let row = &read_rows(&out).unwrap()[0];
        assert_eq!(row["name"].as_str().unwrap().len(), 300);
        assert_eq!(row["kind"], "9");
        let mut leb = Vec::new();
        write_leb128(&mut leb, 300);
        assert_eq!(leb, [0xac, 0x02]);
    }

    #[test]
    fn a_truncated_body_is_an_error_not_a_row() {
        let bytes = fixtures::rich_request().encode_to_vec();
        let mut out = Vec::new();
        RowBinaryEncoder::new()
            .encode_wire_request(&bytes, &mut out)
            .unwrap();
        out.pop();
        assert!(read_rows(&out).is_err());
    }
}
