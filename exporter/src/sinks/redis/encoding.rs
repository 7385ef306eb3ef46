//! Turns a batch into the one Redis pipeline that writes it: XADD per span (stream mode)
//! or RPUSH + PEXPIRE per trace (trace mode). Not the sending (`client.rs`).
//!
//! Every span is the JSON object the file sink writes per line (`encoding::json`, same
//! text without the newline), so one reader (`read_span_line`) reads both. The pipeline
//! is a MULTI/EXEC transaction: a connection lost halfway leaves none of the batch
//! behind (rather than a prefix that the retry would write a second time).

use std::collections::HashMap;
use std::ops::Range;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use redis::Pipeline;
use spansink_config::{RedisStreamConfig, RedisTraceConfig};

use crate::encoding::json_text::write_hex;
use crate::encoding::{JsonLinesEncoder, LineEncoder, scope_groups};

/// Names of the fields of a stream entry, besides `span` (the whole span as JSON): what
/// a consumer can filter on without parsing the JSON.
pub const STREAM_FIELDS: [&str; 5] = ["trace_id", "span_id", "service_name", "name", "span"];

/// A batch as one pipeline, with the numbers the sink logs.
pub struct EncodedBatch {
    pub pipeline: Pipeline,
    pub spans: usize,
    /// Stream entries (stream mode) or trace lists (trace mode) written.
    pub keys_or_entries: usize,
}

/// Every span's JSON object in one buffer, without per-span allocations.
struct SpanTexts {
    text: Vec<u8>,
    encoder: JsonLinesEncoder,
}

impl SpanTexts {
    fn new(capacity: usize) -> Self {
        Self {
            text: Vec::with_capacity(capacity),
            encoder: JsonLinesEncoder::new(),
        }
    }

    /// Appends one span (of the group last begun) and returns where its JSON is.
    fn push(&mut self, span: &opentelemetry_proto::tonic::trace::v1::Span) -> Range<usize> {
        let start = self.text.len();
        self.encoder.encode_line(span, &mut self.text);
        // The line encoder ends each line with '\n'; an entry holds the object alone.
        if self.text.last() == Some(&b'\n') {
            self.text.pop();
        }
        start..self.text.len()
    }
}

/// Stream mode: one `XADD <key> [MAXLEN ~ <maxlen>] * trace_id .. span_id .. service_name
/// .. name .. span <json>` per span, in batch order.
pub fn stream_pipeline(
    request: &ExportTraceServiceRequest,
    config: &RedisStreamConfig,
    encoded_len_hint: usize,
) -> EncodedBatch {
    let mut pipeline = Pipeline::new();
    pipeline.atomic();
    let mut texts = SpanTexts::new(encoded_len_hint * 2);
    let mut hex = Vec::with_capacity(32);
    let mut spans = 0;
    for group in scope_groups(request) {
        texts.encoder.begin_group(&group);
        for span in group.spans() {
            let json = texts.push(span);
            let command = pipeline.cmd("XADD").arg(&config.key);
            if config.maxlen > 0 {
                // `~` lets Redis trim whole macro nodes: O(1) amortised instead of exact.
                command.arg("MAXLEN").arg("~").arg(config.maxlen);
            }
            command.arg("*");
            hex.clear();
            write_hex(&mut hex, &span.trace_id);
            command.arg(STREAM_FIELDS[0]).arg(hex.as_slice());
            hex.clear();
            write_hex(&mut hex, &span.span_id);
            command
                .arg(STREAM_FIELDS[1])
                .arg(hex.as_slice())
                .arg(STREAM_FIELDS[2])
                .arg(group.service_name())
                .arg(STREAM_FIELDS[3])
                .arg(&span.name)
                .arg(STREAM_FIELDS[4])
                .arg(&texts.text[json]);
            // Entry ids are not needed; ignoring replies skips building them (errors are
            // still reported).
            command.ignore();
            spans += 1;
        }
    }
    EncodedBatch {
        pipeline,
        spans,
        keys_or_entries: spans,
    }
}

/// Trace mode: per trace of the batch, `RPUSH <key_prefix><hex trace id> <json>...` with
/// its spans in batch order, then `PEXPIRE <key> <ttl ms>`. RPUSH only appends, so spans
/// that earlier batches wrote for the same trace stay.
pub fn trace_pipeline(
    request: &ExportTraceServiceRequest,
    config: &RedisTraceConfig,
    encoded_len_hint: usize,
) -> EncodedBatch {
    let mut texts = SpanTexts::new(encoded_len_hint * 2);
    // Traces in order of first appearance, each with the places of its spans' JSON.
    let mut traces: Vec<(&[u8], Vec<Range<usize>>)> = Vec::new();
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    for group in scope_groups(request) {
        texts.encoder.begin_group(&group);
        for span in group.spans() {
            let json = texts.push(span);
            let trace = span.trace_id.as_slice();
            let i = *index.entry(trace).or_insert_with(|| {
                traces.push((trace, Vec::new()));
                traces.len() - 1
            });
            traces[i].1.push(json);
        }
    }
    let ttl_ms = u64::try_from(config.ttl.get().as_millis()).unwrap_or(u64::MAX);
    let mut pipeline = Pipeline::new();
    pipeline.atomic();
    let mut key = Vec::with_capacity(config.key_prefix.len() + 32);
    let mut spans = 0;
    for (trace_id, places) in &traces {
        key.clear();
        key.extend_from_slice(config.key_prefix.as_bytes());
        write_hex(&mut key, trace_id);
        let push = pipeline.cmd("RPUSH").arg(key.as_slice());
        for place in places {
            push.arg(&texts.text[place.clone()]);
        }
        push.ignore();
        pipeline
            .cmd("PEXPIRE")
            .arg(key.as_slice())
            .arg(ttl_ms)
            .ignore();
        spans += places.len();
    }
    EncodedBatch {
        pipeline,
        spans,
        keys_or_entries: traces.len(),
    }
}

/// The key of a trace's list, as `trace_pipeline` names it.
pub fn trace_key(key_prefix: &str, trace_id: &[u8]) -> String {
    format!("{key_prefix}{}", const_hex::encode(trace_id))
}

#[cfg(test)]
mod tests {
    use redis::{Arg, Cmd};

    use super::*;
    use crate::encoding::json::read_span_line;
    use crate::encoding::{encode_request, flat_spans};
    use crate::otlp::fixtures::{self, interleaved_traces};

    fn args(cmd: &Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                Arg::Simple(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
                _ => "<cursor>".into(),
            })
            .collect()
    }

    fn commands(p: &Pipeline) -> Vec<Vec<String>> {
        p.cmd_iter().map(args).collect()
    }

    #[test]
    fn stream_entries_carry_ids_service_name_and_the_file_sinks_json() {
        let request = fixtures::rich_request();
        let config = RedisStreamConfig {
            key: "s".into(),
            maxlen: 1000,
        };
        let encoded = stream_pipeline(&request, &config, 0);
        assert!(encoded.pipeline.is_transaction());
        let mut file_lines = Vec::new();
        encode_request(&mut JsonLinesEncoder::new(), &request, &mut file_lines);
        let file_lines = String::from_utf8(file_lines).unwrap();
        let cmds = commands(&encoded.pipeline);
        assert_eq!(cmds.len(), flat_spans(&request).count());
        assert_eq!(encoded.spans, cmds.len());
        for ((cmd, flat), line) in cmds
            .iter()
            .zip(flat_spans(&request))
            .zip(file_lines.lines())
        {
            assert_eq!(cmd[..6], ["XADD", "s", "MAXLEN", "~", "1000", "*"]);
            let fields: Vec<&str> = cmd[6..].iter().step_by(2).map(String::as_str).collect();
            assert_eq!(fields, STREAM_FIELDS);
            assert_eq!(cmd[7], const_hex::encode(&flat.span.trace_id));
            assert_eq!(cmd[9], const_hex::encode(&flat.span.span_id));
            assert_eq!(cmd[11], flat.service_name());
            assert_eq!(cmd[13], flat.span.name);
            assert_eq!(cmd[15], line, "the same text as the file sink's line");
            assert_eq!(&read_span_line(&cmd[15]).unwrap().span, flat.span);
        }
    }

    #[test]
    fn maxlen_zero_means_no_trimming_argument() {
        let config = RedisStreamConfig {
            key: "s".into(),
            maxlen: 0,
        };
        let encoded = stream_pipeline(&interleaved_traces(1, 1), &config, 0);
        assert_eq!(commands(&encoded.pipeline)[0][..3], ["XADD", "s", "*"]);
    }

    #[test]
    fn trace_mode_pushes_each_traces_spans_in_order_then_sets_the_ttl() {
        let request = interleaved_traces(3, 4);
        let config = RedisTraceConfig {
            key_prefix: "t:".into(),
            ttl: spansink_config::Duration::from_secs(90),
        };
        let encoded = trace_pipeline(&request, &config, 0);
        assert_eq!((encoded.spans, encoded.keys_or_entries), (12, 3));
        let cmds = commands(&encoded.pipeline);
        assert_eq!(cmds.len(), 6);
        let mut expected: Vec<(String, Vec<&opentelemetry_proto::tonic::trace::v1::Span>)> =
            Vec::new();
        for flat in flat_spans(&request) {
            let key = trace_key("t:", &flat.span.trace_id);
            match expected.iter_mut().find(|(k, _)| *k == key) {
                Some((_, spans)) => spans.push(flat.span),
                None => expected.push((key, vec![flat.span])),
            }
        }
        for (pair, (key, spans)) in cmds.chunks(2).zip(&expected) {
            assert_eq!(pair[0][..2], ["RPUSH".to_string(), key.clone()]);
            let read: Vec<_> = pair[0][2..]
                .iter()
                .map(|json| read_span_line(json).unwrap().span)
                .collect();
            assert_eq!(read.iter().collect::<Vec<_>>(), *spans);
            assert_eq!(pair[1], ["PEXPIRE", key, "90000"]);
        }
    }
}
