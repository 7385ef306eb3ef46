//! A batch as PostgreSQL binary COPY data, one row per span in the column order of
//! `schema::COLUMNS`. Not the SQL around it (see `schema`) nor the connection (`mod`).
//!
//! Binary COPY, not text or CSV: no escaping pass on the server, integers and times sent
//! as they are stored. JSON columns hold the file sink's typed JSON
//! (`encoding::attributes`, `encoding::json`) with two rewrites PostgreSQL needs:
//! - `\u0000` (a NUL character) becomes `\ufffd`, and NUL in text columns becomes U+FFFD:
//!   PostgreSQL text and jsonb cannot hold NUL, and refusing the whole batch for it would
//!   lose every other span;
//! - a double written with a positive exponent (`1e300`, ryu's form from 1e16 up) is
//!   written out in full with `.0`: jsonb stores numbers as `numeric`, which prints `1e16`
//!   back as `10000000000000000` (an integer to every reader) but keeps `….0` a double.
//!
//! What jsonb itself normalises (documented, not avoidable with jsonb): object keys come
//! back in jsonb's order (shorter keys first, then bytewise), and of duplicate keys in one
//! object only the last is kept (OTLP requires unique keys anyway).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::encoding::attributes::write_attributes;
use crate::encoding::flat::{self, SPAN_KINDS, STATUS_CODES, ScopeGroup, enum_name, scope_groups};
use crate::encoding::json::{write_entity_refs, write_events, write_links};

use super::schema::COLUMNS;

/// Start of every binary COPY stream: signature, flags, header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// End of the stream: a tuple with -1 fields.
const TRAILER: &[u8] = &(-1_i16).to_be_bytes();
/// jsonb's binary format: a version byte, then the JSON text.
const JSONB_VERSION: u8 = 1;
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01T00:00:00Z).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
/// Fields per row.
const FIELD_COUNT: i16 = COLUMNS.len() as i16;

/// Encodes every span of `request` as one binary COPY stream. Returns the data and the
/// number of rows.
pub fn encode_copy(request: &ExportTraceServiceRequest) -> (Vec<u8>, usize) {
    let mut encoder = CopyEncoder::default();
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(HEADER);
    let mut rows = 0;
    for group in scope_groups(request) {
        encoder.begin_group(&group);
        for span in group.spans() {
            encoder.row(span, &mut out);
            rows += 1;
        }
    }
    out.extend_from_slice(TRAILER);
    (out, rows)
}

/// Reused buffers; the fields shared by a scope group's spans are encoded once.
#[derive(Debug, Default)]
struct CopyEncoder {
    json: Vec<u8>,
    /// The encoded `service_name` field.
    service: Vec<u8>,
    /// The encoded fields from `resource_attributes` to the last column.
    tail: Vec<u8>,
}

impl CopyEncoder {
    fn begin_group(&mut self, group: &ScopeGroup<'_>) {
        self.service.clear();
        text_field(&mut self.service, group.service_name());
        let tail = &mut self.tail;
        tail.clear();
        json_field(tail, &mut self.json, |j| {
            write_attributes(j, group.resource_attributes())
        });
        int8_field(tail, group.resource_dropped_attributes_count().into());
        json_field(tail, &mut self.json, |j| {
            write_entity_refs(j, group.resource_entity_refs())
        });
        text_field(tail, group.resource_schema_url());
        text_field(tail, group.scope_name());
        text_field(tail, group.scope_version());
        json_field(tail, &mut self.json, |j| {
            write_attributes(j, group.scope_attributes())
        });
        int8_field(tail, group.scope_dropped_attributes_count().into());
        text_field(tail, group.scope_schema_url());
    }

    fn row(&mut self, span: &Span, out: &mut Vec<u8>) {
        out.extend_from_slice(&FIELD_COUNT.to_be_bytes());
        bytes_field(out, &span.trace_id);
        bytes_field(out, &span.span_id);
        if span.parent_span_id.is_empty() {
            null_field(out);
        } else {
            bytes_field(out, &span.parent_span_id);
        }
        text_field(out, &span.trace_state);
        int8_field(out, span.flags.into());
        text_field(out, &span.name);
        enum_field(out, &SPAN_KINDS, span.kind);
        timestamptz_field(out, span.start_time_unix_nano);
        timestamptz_field(out, span.end_time_unix_nano);
        int8_field(out, nanos(span.start_time_unix_nano));
        int8_field(out, nanos(span.end_time_unix_nano));
        int8_field(out, nanos(flat::duration_ns(span)));
        let (code, message) = flat::status(span);
        enum_field(out, &STATUS_CODES, code);
        text_field(out, message);
        out.extend_from_slice(&self.service);
        json_field(out, &mut self.json, |j| {
            write_attributes(j, &span.attributes)
        });
        int8_field(out, span.dropped_attributes_count.into());
        json_field(out, &mut self.json, |j| write_events(j, &span.events));
        int8_field(out, span.dropped_events_count.into());
        json_field(out, &mut self.json, |j| write_links(j, &span.links));
        int8_field(out, span.dropped_links_count.into());
        out.extend_from_slice(&self.tail);
    }
}

/// Nanoseconds as `bigint`. Times after 2262-04-11T23:47:16Z exceed it and are stored as
/// `i64::MAX` (the `timestamptz` column still holds them to the microsecond).
fn nanos(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn field_len(out: &mut Vec<u8>, len: usize) {
    // A field is at most 1 GB in PostgreSQL; a longer one is refused by the server.
    out.extend_from_slice(&i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes());
}

fn null_field(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1_i32).to_be_bytes());
}

fn bytes_field(out: &mut Vec<u8>, bytes: &[u8]) {
    field_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn int8_field(out: &mut Vec<u8>, value: i64) {
    field_len(out, 8);
    out.extend_from_slice(&value.to_be_bytes());
}

fn timestamptz_field(out: &mut Vec<u8>, unix_nanos: u64) {
    // u64 nanoseconds / 1000 always fits i64; truncation towards the past, like the
    // database's own conversion of a finer time.
    let micros = i64::try_from(unix_nanos / 1000).unwrap_or(i64::MAX);
    int8_field(out, micros - PG_EPOCH_UNIX_MICROS);
}

/// Text without NUL characters (see the module docs).
fn text_field(out: &mut Vec<u8>, text: &str) {
    if !text.as_bytes().contains(&0) {
        bytes_field(out, text.as_bytes());
        return;
    }
    let replaced = text.replace('\0', "\u{fffd}");
    bytes_field(out, replaced.as_bytes());
}

/// An enum as its name (`server`, `error`) or, outside the enum, its decimal number, as
/// in the file sink.
fn enum_field(out: &mut Vec<u8>, names: &'static [&'static str], value: i32) {
    match enum_name(names, value) {
        Some(name) => bytes_field(out, name.as_bytes()),
        None => bytes_field(out, itoa::Buffer::new().format(value).as_bytes()),
    }
}

/// A jsonb field whose JSON text `write` produces (into the reused `scratch`).
fn json_field(out: &mut Vec<u8>, scratch: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    scratch.clear();
    write(scratch);
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(JSONB_VERSION);
    append_jsonb_text(out, scratch);
    let len = out.len() - len_at - 4;
    let len = i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes();
    out[len_at..len_at + 4].copy_from_slice(&len);
}

/// Appends JSON text with the two rewrites of the module docs. Text that needs neither
/// (nearly all) is copied as it is after one scan.
pub fn append_jsonb_text(out: &mut Vec<u8>, json: &[u8]) {
    if !needs_rewrite(json) {
        out.extend_from_slice(json);
        return;
    }
    let mut i = 0;
    let mut in_string = false;
    while i < json.len() {
        let b = json[i];
        if in_string {
            match b {
                b'\\' if json[i..].starts_with(b"\\u0000") => {
                    out.extend_from_slice(b"\\ufffd");
                    i += 6;
                }
                b'\\' => {
                    // An escape is two bytes (or `\uXXXX`, whose rest is plain hex).
                    let end = (i + 2).min(json.len());
                    out.extend_from_slice(&json[i..end]);
                    i = end;
                }
                b'"' => {
                    in_string = false;
                    out.push(b);
                    i += 1;
                }
                _ => {
                    out.push(b);
                    i += 1;
                }
            }
        } else if b == b'-' || b.is_ascii_digit() {
            let len = json[i..]
                .iter()
                .position(|c| !(c.is_ascii_digit() || b"+-.eE".contains(c)))
                .unwrap_or(json.len() - i);
            append_number(out, &json[i..i + len]);
            i += len;
        } else {
            in_string = b == b'"';
            out.push(b);
            i += 1;
        }
    }
}

/// Whether `json` may hold `\u0000` or a number with a positive exponent (a digit, `e`,
/// a digit). Strings that merely look like these make the slow path run, harmlessly.
fn needs_rewrite(json: &[u8]) -> bool {
    json.windows(3)
        .any(|w| w[0].is_ascii_digit() && (w[1] == b'e' || w[1] == b'E') && w[2].is_ascii_digit())
        || json.windows(6).any(|w| w == b"\\u0000")
}

/// A number, with a positive exponent written out: `1.5e20` -> `150000000000000000000.0`.
fn append_number(out: &mut Vec<u8>, number: &[u8]) {
    let Some(e_at) = number.iter().position(|c| *c == b'e' || *c == b'E') else {
        out.extend_from_slice(number);
        return;
    };
    let exponent = std::str::from_utf8(&number[e_at + 1..])
        .ok()
        .and_then(|t| t.parse::<i32>().ok());
    let exponent = match exponent {
        Some(e) if e > 0 && e <= 400 => e as usize,
        _ => {
            out.extend_from_slice(number); // negative exponents keep a `.` in numeric
            return;
        }
    };
    let mantissa = &number[..e_at];
    let (sign, mantissa) = match mantissa.split_first() {
        Some((b'-', rest)) => (&b"-"[..], rest),
        _ => (&b""[..], mantissa),
    };
    let (int_part, frac_part) = match mantissa.iter().position(|c| *c == b'.') {
        Some(dot) => (&mantissa[..dot], &mantissa[dot + 1..]),
        None => (mantissa, &b""[..]),
    };
    out.extend_from_slice(sign);
    out.extend_from_slice(int_part);
    if exponent >= frac_part.len() {
        out.extend_from_slice(frac_part);
        out.resize(out.len() + exponent - frac_part.len(), b'0');
        out.extend_from_slice(b".0");
    } else {
        out.extend_from_slice(&frac_part[..exponent]);
        out.push(b'.');
        out.extend_from_slice(&frac_part[exponent..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::attributes::read_attributes;
    use crate::otlp::fixtures::{self, kv, v_array, v_double, v_kvlist, v_str};

    fn jsonb_text(json: &str) -> String {
        let mut out = Vec::new();
        append_jsonb_text(&mut out, json.as_bytes());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plain_json_is_copied_as_it_is() {
        for json in [
            r#"{"a":1.5,"b":"x e1","c":[1e-7,-2.0]}"#,
            r#"{"k":"\\u0000 is an escaped backslash"}"#,
            "{}",
        ] {
            assert_eq!(jsonb_text(json), json);
        }
    }

    #[test]
    fn nul_escapes_are_replaced_and_only_they() {
        assert_eq!(
            jsonb_text(r#"{"a\u0000":"x\u0000y","b":"\\u0000","c":"\u0001"}"#),
            r#"{"a\ufffd":"x\ufffdy","b":"\\u0000","c":"\u0001"}"#
        );
    }

    #[test]
    fn positive_exponents_are_written_out_as_doubles() {
        assert_eq!(
            jsonb_text(r#"{"a":1e16,"b":-1.5e20,"c":[1.2345e2,"1e5"],"d":2.5e-8}"#),
            r#"{"a":10000000000000000.0,"b":-150000000000000000000.0,"c":[123.45,"1e5"],"d":2.5e-8}"#
        );
        let big = jsonb_text("[1e300]");
        assert_eq!(big.len(), 1 + 1 + 300 + 2 + 1);
        // The rewritten text reads back as the same doubles.
        let attributes = vec![
            kv("big", v_double(1e300)),
            kv("whole", v_double(1e17)),
            kv("neg", v_double(-1.2345e25)),
            kv(
                "nested",
                v_array(vec![v_kvlist(vec![kv("x", v_double(6.02e23))])]),
            ),
            kv("s", v_str("1e16")),
        ];
        let mut json = Vec::new();
        write_attributes(&mut json, &attributes);
        let mut rewritten = Vec::new();
        append_jsonb_text(&mut rewritten, &json);
        let text = String::from_utf8(rewritten).unwrap();
        assert!(text.contains(r#""whole":100000000000000000.0"#), "{text}");
        assert_eq!(read_attributes(&text).unwrap(), attributes);
    }

    /// Walks a binary COPY stream back into rows of optional fields.
    fn parse_copy(data: &[u8]) -> Vec<Vec<Option<Vec<u8>>>> {
        assert!(data.starts_with(HEADER));
        let mut at = HEADER.len();
        let mut rows = Vec::new();
        loop {
            let count = i16::from_be_bytes([data[at], data[at + 1]]);
            at += 2;
            if count == -1 {
                break;
            }
            let mut row = Vec::new();
            for _ in 0..count {
                let len = i32::from_be_bytes(data[at..at + 4].try_into().unwrap());
                at += 4;
                if len < 0 {
                    row.push(None);
                } else {
                    let len = len as usize;
                    row.push(Some(data[at..at + len].to_vec()));
                    at += len;
                }
            }
            rows.push(row);
        }
        assert_eq!(at, data.len(), "nothing after the trailer");
        rows
    }

    fn column(name: &str) -> usize {
        COLUMNS.iter().position(|c| c.name == name).unwrap()
    }

    #[test]
    fn rows_carry_every_column_in_order() {
        let request = fixtures::rich_request();
        let (data, rows) = encode_copy(&request);
        assert_eq!(rows, 7);
        let parsed = parse_copy(&data);
        assert_eq!(parsed.len(), 7);
        let spans: Vec<_> = flat::flat_spans(&request).collect();
        for (row, flat) in parsed.iter().zip(&spans) {
            assert_eq!(row.len(), COLUMNS.len());
            let span = flat.span;
            let text = |name: &str| String::from_utf8(row[column(name)].clone().unwrap()).unwrap();
            let int8 = |name: &str| {
                i64::from_be_bytes(row[column(name)].clone().unwrap().try_into().unwrap())
            };
            let jsonb = |name: &str| {
                let v = row[column(name)].clone().unwrap();
                assert_eq!(v[0], JSONB_VERSION);
                String::from_utf8(v[1..].to_vec()).unwrap()
            };
            assert_eq!(row[column("trace_id")].as_deref(), Some(&span.trace_id[..]));
            assert_eq!(row[column("span_id")].as_deref(), Some(&span.span_id[..]));
            if span.parent_span_id.is_empty() {
                assert_eq!(row[column("parent_span_id")], None);
            } else {
                assert_eq!(
                    row[column("parent_span_id")].as_deref(),
                    Some(&span.parent_span_id[..])
                );
            }
            assert_eq!(text("name"), span.name);
            assert_eq!(text("kind"), flat.kind_name().unwrap());
            assert_eq!(text("status_code"), flat.status_code_name().unwrap());
            assert_eq!(text("service_name"), flat.service_name());
            assert_eq!(int8("flags"), i64::from(span.flags));
            assert_eq!(
                int8("start_time_unix_nano") as u64,
                span.start_time_unix_nano
            );
            assert_eq!(int8("duration_ns") as u64, flat.duration_ns());
            assert_eq!(
                int8("start_time"),
                (span.start_time_unix_nano / 1000) as i64 - PG_EPOCH_UNIX_MICROS
            );
            assert_eq!(
                read_attributes(&jsonb("attributes")).unwrap(),
                span.attributes
            );
            assert_eq!(
                read_attributes(&jsonb("scope_attributes")).unwrap(),
                flat.group.scope_attributes()
            );
            assert_eq!(text("scope_schema_url"), flat.group.scope_schema_url());
        }
    }

    #[test]
    fn nul_in_text_and_odd_enums_and_far_future_times() {
        let mut request = fixtures::request(1, 0);
        let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
        span.name = "a\0b".into();
        span.kind = 42;
        span.start_time_unix_nano = u64::MAX;
        span.end_time_unix_nano = u64::MAX;
        let parsed = parse_copy(&encode_copy(&request).0);
        let row = &parsed[0];
        assert_eq!(
            row[column("name")].as_deref(),
            Some("a\u{fffd}b".as_bytes())
        );
        assert_eq!(row[column("kind")].as_deref(), Some(&b"42"[..]));
        assert_eq!(
            row[column("start_time_unix_nano")].as_deref(),
            Some(&i64::MAX.to_be_bytes()[..])
        );
    }
}
