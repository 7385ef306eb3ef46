//! Bulk API bodies: one action line and one document line per span (NDJSON), kept as
//! separate items so that only the documents the cluster refused are sent again.
//! Not the HTTP exchange (`client`) nor the reading of answers (`bulk`).
//!
//! A document is the flat span JSON of the file sink (`encoding::json::write_span`) with
//! `@timestamp` (the span's start, RFC 3339 with nanoseconds) appended; its `_id` is the
//! hex trace id followed by the hex span id, so writing it twice overwrites.

use std::io::Write;
use std::ops::Range;

use chrono::{DateTime, SecondsFormat, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

use crate::encoding::flat::flat_spans;
use crate::encoding::json::write_span;
use crate::encoding::json_text::{write_hex, write_str};
use spansink_config::TimeTemplate;

/// Where documents go, from the config.
#[derive(Debug, Clone)]
pub enum Target {
    /// `index` operations into this (possibly dated) index.
    Index(TimeTemplate),
    /// `create` operations into this data stream.
    DataStream(String),
}

impl Target {
    /// The bulk operation used for this target.
    pub fn operation(&self) -> &'static str {
        match self {
            Self::Index(_) => "index",
            Self::DataStream(_) => "create",
        }
    }
}

/// The encoded documents of one batch: a buffer of NDJSON and the byte range of each
/// item (action line + document line, both newline-terminated) within it.
#[derive(Debug, Default)]
pub struct BulkItems {
    buffer: Vec<u8>,
    items: Vec<Range<usize>>,
}

impl BulkItems {
    /// Encodes every span of `request` for `target`. `now` dates the index of spans that
    /// have no start time (0), which are rare and otherwise all land in 1970.
    pub fn encode(
        request: &mut ExportTraceServiceRequest,
        target: &Target,
        now: DateTime<Utc>,
    ) -> Self {
        dedupe_keys(request);
        let mut out = Self::default();
        let mut index_cache = IndexCache::default();
        let mut timestamp = String::new();
        for flat in flat_spans(request) {
            let span = flat.span;
            let start = out.buffer.len();
            let time = match span.start_time_unix_nano {
                0 => now,
                nanos => DateTime::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(i64::MAX)),
            };
            out.buffer.extend_from_slice(b"{\"");
            out.buffer.extend_from_slice(target.operation().as_bytes());
            out.buffer.extend_from_slice(b"\":{\"_index\":");
            match target {
                Target::Index(template) => {
                    write_str(&mut out.buffer, index_cache.name(template, time));
                }
                Target::DataStream(name) => write_str(&mut out.buffer, name),
            }
            // A span without ids (malformed, but accepted by the receiver) gets an id
            // from the cluster: an empty `_id` would be refused.
            if !span.trace_id.is_empty() || !span.span_id.is_empty() {
                out.buffer.extend_from_slice(b",\"_id\":\"");
                write_hex(&mut out.buffer, &span.trace_id);
                write_hex(&mut out.buffer, &span.span_id);
                out.buffer.push(b'"');
            }
            out.buffer.extend_from_slice(b"}}\n");

            write_span(&mut out.buffer, &flat);
            // `write_span` ends the object with `}`: reopen it to append `@timestamp`.
            out.buffer.pop();
            timestamp.clear();
            timestamp.push_str(&time.to_rfc3339_opts(SecondsFormat::Nanos, true));
            out.buffer.extend_from_slice(b",\"@timestamp\":");
            write_str(&mut out.buffer, &timestamp);
            out.buffer.extend_from_slice(b"}\n");
            out.items.push(start..out.buffer.len());
        }
        out
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Size of item `i` in bytes (both lines).
    pub fn item_len(&self, i: usize) -> usize {
        self.items[i].len()
    }

    /// The action line of item `i` (without its newline), for logs.
    pub fn action(&self, i: usize) -> &str {
        let item = &self.buffer[self.items[i].clone()];
        let end = item.iter().position(|&b| b == b'\n').unwrap_or(item.len());
        std::str::from_utf8(&item[..end]).unwrap_or("<non-UTF-8 action>")
    }

    /// The request body holding `items` (indexes into this batch), in that order.
    pub fn body(&self, items: &[usize]) -> Vec<u8> {
        let len = items.iter().map(|&i| self.items[i].len()).sum();
        let mut body = Vec::with_capacity(len);
        for &i in items {
            body.extend_from_slice(&self.buffer[self.items[i].clone()]);
        }
        body
    }

    /// Splits `items` into groups whose bodies are at most `max_bytes` each (an item
    /// larger than that forms a group of its own), keeping their order.
    pub fn chunks(&self, items: &[usize], max_bytes: usize) -> Vec<Vec<usize>> {
        let mut chunks = Vec::new();
        let mut current = Vec::new();
        let mut size = 0;
        for &i in items {
            let len = self.items[i].len();
            if !current.is_empty() && size + len > max_bytes {
                chunks.push(std::mem::take(&mut current));
                size = 0;
            }
            current.push(i);
            size += len;
        }
        if !current.is_empty() {
            chunks.push(current);
        }
        chunks
    }
}

/// Splits a document written by [`BulkItems::encode`] (e.g. a `_source` read back) into
/// the flat span JSON, which `encoding::json::read_span_line` reads, and its `@timestamp`.
/// `None` for text that does not end with the `@timestamp` this sink appends.
pub fn split_timestamp(document: &str) -> Option<(String, &str)> {
    const KEY: &str = ",\"@timestamp\":\"";
    let at = document.rfind(KEY)?;
    let timestamp = document[at + KEY.len()..].strip_suffix("\"}")?;
    if timestamp.contains('"') {
        return None;
    }
    Some((format!("{}}}", &document[..at]), timestamp))
}

/// gzip at level 1: bulk bodies are repetitive JSON, so the fastest level already
/// shrinks them several times, and the CPU stays free for encoding.
pub fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    encoder.write_all(body)?;
    encoder.finish()
}

/// The last rendered index name and the second it was rendered for: consecutive spans
/// mostly start within the same second, and rendering allocates.
#[derive(Default)]
struct IndexCache {
    second: Option<i64>,
    name: String,
}

impl IndexCache {
    fn name(&mut self, template: &TimeTemplate, time: DateTime<Utc>) -> &str {
        let second = time.timestamp();
        if self.second != Some(second) {
            self.name = template.render(time);
            self.second = Some(second);
        }
        &self.name
    }
}

/// Removes repeated keys from every attribute list and key-value list of the request,
/// keeping the first (the entry OpenTelemetry's own map lookups return). Elasticsearch
/// and OpenSearch refuse a document with a repeated JSON key (strict duplicate detection),
/// and OTLP requires keys to be unique anyway, so a repeat is a producer bug that must
/// not cost the whole document.
pub fn dedupe_keys(request: &mut ExportTraceServiceRequest) {
    for rs in &mut request.resource_spans {
        if let Some(resource) = &mut rs.resource {
            dedupe(&mut resource.attributes);
        }
        for ss in &mut rs.scope_spans {
            if let Some(scope) = &mut ss.scope {
                dedupe(&mut scope.attributes);
            }
            for span in &mut ss.spans {
                dedupe(&mut span.attributes);
                for event in &mut span.events {
                    dedupe(&mut event.attributes);
                }
                for link in &mut span.links {
                    dedupe(&mut link.attributes);
                }
            }
        }
    }
}

fn dedupe(list: &mut Vec<KeyValue>) {
    // Quadratic but allocation-free: attribute lists are short, and this is the common
    // path (no repeats found, nothing moved).
    let has_repeat = list
        .iter()
        .enumerate()
        .any(|(i, kv)| list[..i].iter().any(|earlier| earlier.key == kv.key));
    if has_repeat {
        let mut seen = std::collections::HashSet::new();
        list.retain(|kv| seen.insert(kv.key.clone()));
    }
    for kv in list {
        dedupe_value(kv.value.as_mut());
    }
}

fn dedupe_value(value: Option<&mut AnyValue>) {
    match value.and_then(|v| v.value.as_mut()) {
        Some(Value::KvlistValue(kvlist)) => dedupe(&mut kvlist.values),
        Some(Value::ArrayValue(array)) => {
            for item in &mut array.values {
                dedupe_value(Some(item));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::json::{read_request, read_span_line};
    use crate::otlp::fixtures::{self, kv, v_int, v_kvlist};

    fn index(template: &str) -> Target {
        Target::Index(TimeTemplate::parse(template).unwrap())
    }

    fn lines(items: &BulkItems, which: &[usize]) -> Vec<String> {
        String::from_utf8(items.body(which))
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn each_span_is_an_action_line_and_its_document() {
        let mut request = fixtures::request(3, 2);
        let items = BulkItems::encode(&mut request, &index("spans-%Y.%m.%d"), Utc::now());
        assert_eq!(items.len(), 3);
        let all = lines(&items, &[0, 1, 2]);
        assert_eq!(all.len(), 6);
        let span = &request.resource_spans[0].scope_spans[0].spans[1];
        let id = format!(
            "{}{}",
            const_hex::encode(&span.trace_id),
            const_hex::encode(&span.span_id)
        );
        assert_eq!(
            all[2],
            format!(r#"{{"index":{{"_index":"spans-2018.12.13","_id":"{id}"}}}}"#)
        );
        assert_eq!(items.action(1), all[2]);
        let doc: serde_json::Value = serde_json::from_str(&all[3]).unwrap();
        assert_eq!(doc["@timestamp"], "2018-12-13T14:51:00.001000000Z");
        assert_eq!(doc["name"], span.name.as_str());
        // The document is the file sink's JSON plus `@timestamp`: it reads back as the
        // same span.
        let (json, timestamp) = split_timestamp(&all[3]).unwrap();
        assert_eq!(timestamp, "2018-12-13T14:51:00.001000000Z");
        let record = read_span_line(&json).unwrap();
        assert_eq!(format!("{:?}", record.span), format!("{span:?}"));
        assert!(items.body(&[2]).ends_with(b"\n"));
        assert_eq!(items.body(&[2]).len(), items.item_len(2));
    }

    #[test]
    fn rich_documents_read_back_as_the_request_without_repeated_keys() {
        let original = fixtures::rich_request();
        let mut request = original.clone();
        let items = BulkItems::encode(&mut request, &index("s"), Utc::now());
        let body = String::from_utf8(items.body(&(0..items.len()).collect::<Vec<_>>())).unwrap();
        let docs: Vec<String> = body
            .lines()
            .skip(1)
            .step_by(2)
            .map(|doc| split_timestamp(doc).unwrap().0)
            .collect();
        let back = read_request(docs.iter().map(String::as_str)).unwrap();
        // `request` is the original with repeated keys removed (what was encoded).
        assert_eq!(fixtures::flatten(&back), fixtures::flatten(&request));
        assert_ne!(fixtures::flatten(&back), fixtures::flatten(&original));
        assert!(split_timestamp("{\"a\":1}").is_none());
    }

    #[test]
    fn data_streams_get_create_operations() {
        let mut request = fixtures::request(1, 0);
        let items = BulkItems::encode(
            &mut request,
            &Target::DataStream("traces-spansink-default".into()),
            Utc::now(),
        );
        assert!(
            items
                .action(0)
                .starts_with(r#"{"create":{"_index":"traces-spansink-default","_id":""#),
            "{}",
            items.action(0)
        );
    }

    #[test]
    fn spans_without_start_or_ids_are_still_documents() {
        let mut request = fixtures::request(1, 0);
        let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
        span.start_time_unix_nano = 0;
        span.trace_id.clear();
        span.span_id.clear();
        let now = DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
            .unwrap()
            .to_utc();
        let items = BulkItems::encode(&mut request, &index("s-%F"), now);
        assert_eq!(items.action(0), r#"{"index":{"_index":"s-2030-01-02"}}"#);
    }

    #[test]
    fn chunks_respect_the_byte_limit_and_keep_oversized_items_alone() {
        let mut request = fixtures::request(10, 3);
        let items = BulkItems::encode(&mut request, &index("s"), Utc::now());
        let all: Vec<usize> = (0..10).collect();
        let one = items.item_len(0);
        let chunks = items.chunks(&all, one * 3 + one / 2);
        assert!(chunks.len() >= 3, "{chunks:?}");
        assert_eq!(chunks.concat(), all);
        for chunk in &chunks {
            assert!(items.body(chunk).len() <= one * 3 + one / 2 || chunk.len() == 1);
        }
        let tiny = items.chunks(&all, 10);
        assert_eq!(tiny.len(), 10);
        assert_eq!(items.chunks(&[], 10), Vec::<Vec<usize>>::new());
    }

    #[test]
    fn repeated_keys_keep_the_first_everywhere() {
        let mut request = fixtures::rich_request();
        let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
        span.attributes.push(kv("http.status_code", v_int(1)));
        span.events[0].attributes.push(kv(
            "nested",
            v_kvlist(vec![kv("a", v_int(1)), kv("a", v_int(2))]),
        ));
        let items = BulkItems::encode(&mut request, &index("s"), Utc::now());
        let body = String::from_utf8(items.body(&(0..items.len()).collect::<Vec<_>>())).unwrap();
        // serde_json refuses nothing, so count keys in the text of each document.
        for doc in body.lines().skip(1).step_by(2) {
            assert_eq!(
                doc.matches("\"dup\":").count(),
                doc.matches("\"dup\":1").count()
            );
            assert!(!doc.contains("\"dup\":2"), "{doc}");
            assert!(!doc.contains("\"a\":2"), "{doc}");
        }
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        let codes: Vec<_> = span
            .attributes
            .iter()
            .filter(|kv| kv.key == "http.status_code")
            .collect();
        assert_eq!(codes.len(), 1);
        assert_eq!(codes[0].value, Some(v_int(504)));
    }

    #[test]
    fn gzip_round_trips() {
        let body = b"{\"index\":{}}\n{}\n".repeat(100);
        let packed = gzip(&body).unwrap();
        assert!(packed.len() < body.len());
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&packed[..]), &mut plain)
            .unwrap();
        assert_eq!(plain, body);
    }
}
