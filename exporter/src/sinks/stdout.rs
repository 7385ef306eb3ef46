//! The `stdout` sink, for debugging: one short summary line per span, or the full JSON
//! Lines object. Not for production volumes: standard output is a single, slow stream.

use std::io::Write;

use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use spansink_config::{StdoutFormat, StdoutSinkConfig};

use crate::encoding::json_text::{write_hex, write_str, write_u64};
use crate::encoding::{FlatSpan, JsonLinesEncoder, encode_request, flat_spans};
use crate::otlp::Batch;

use super::support::io_error::io_error;
use super::{BuildSink, Sink, SinkContext, SinkError};
use crate::sinks::BuildError;

/// Prints batches to standard output, each batch under one lock so lines of concurrent
/// exports do not interleave.
pub struct StdoutSink {
    format: StdoutFormat,
}

impl StdoutSink {
    pub fn new(config: &StdoutSinkConfig) -> Self {
        Self {
            format: config.format,
        }
    }
}

#[async_trait]
impl Sink for StdoutSink {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = batch.clone();
        let format = self.format;
        // Decoding and formatting are CPU work and writing to a pipe can block for as
        // long as the reader lags: both stay off the runtime's worker threads.
        tokio::task::spawn_blocking(move || {
            let request = batch
                .decode()
                .map_err(|e| SinkError::permanent("malformed", e.to_string()))?;
            let text = format_request(format, &request);
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&text)
                .and_then(|()| stdout.flush())
                .map_err(|e| io_error("write to standard output", &e))
        })
        .await
        .map_err(|e| SinkError::permanent("internal", format!("stdout writer task failed: {e}")))?
    }
}

/// All lines for a request in `format`.
pub fn format_request(format: StdoutFormat, request: &ExportTraceServiceRequest) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        StdoutFormat::Jsonl => {
            encode_request(&mut JsonLinesEncoder::new(), request, &mut out);
        }
        StdoutFormat::Summary => {
            for span in flat_spans(request) {
                write_summary_line(&mut out, &span);
            }
        }
    }
    out
}

/// Appends `trace_id span_id "service" "name" kind duration status ["message"]` and a
/// newline. Names and messages are JSON-quoted so every span stays on one line.
pub fn write_summary_line(out: &mut Vec<u8>, span: &FlatSpan<'_>) {
    write_hex(out, &span.span.trace_id);
    out.push(b' ');
    write_hex(out, &span.span.span_id);
    out.push(b' ');
    write_str(out, span.service_name());
    out.push(b' ');
    write_str(out, &span.span.name);
    out.push(b' ');
    write_name_or_number(out, span.kind_name(), span.span.kind);
    out.push(b' ');
    write_millis(out, span.duration_ns());
    out.push(b' ');
    write_name_or_number(out, span.status_code_name(), span.status_code());
    if !span.status_message().is_empty() {
        out.push(b' ');
        write_str(out, span.status_message());
    }
    out.push(b'\n');
}

fn write_name_or_number(out: &mut Vec<u8>, name: Option<&str>, value: i32) {
    match name {
        Some(name) => out.extend_from_slice(name.as_bytes()),
        None => out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes()),
    }
}

/// `ns` as milliseconds with three decimals: `2.500ms`.
fn write_millis(out: &mut Vec<u8>, ns: u64) {
    write_u64(out, ns / 1_000_000);
    let micros = (ns % 1_000_000) / 1_000;
    out.push(b'.');
    out.push(b'0' + (micros / 100) as u8);
    out.push(b'0' + (micros / 10 % 10) as u8);
    out.push(b'0' + (micros % 10) as u8);
    out.extend_from_slice(b"ms");
}

#[async_trait]
impl BuildSink for StdoutSink {
    type Config = StdoutSinkConfig;

    async fn build(
        config: &StdoutSinkConfig,
        _context: &SinkContext<'_>,
    ) -> Result<Self, BuildError> {
        Ok(StdoutSink::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::read_request;
    use crate::otlp::{fixtures, span_count};

    #[test]
    fn summary_lines_are_one_per_span_with_quoted_names() {
        let request = fixtures::rich_request();
        let text = String::from_utf8(format_request(StdoutFormat::Summary, &request)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), span_count(&request));
        let first = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            lines[0],
            format!(
                "{} {} \"checkout ✓\" \"GET /cart naïve \\\"quoted\\\", comma\\nnew line\\r\\ttab \\\\ \\u0001 ✓ 🚀\" server 250.000ms error \"timeout naïve \\\"quoted\\\", comma\\nnew line\\r\\ttab \\\\ \\u0001 ✓ 🚀\"",
                const_hex::encode(&first.trace_id),
                const_hex::encode(&first.span_id),
            )
        );
        assert!(
            lines[1].ends_with(" \"client call\" client 250.000ms ok"),
            "{}",
            lines[1]
        );
        // The second resource has no service.name; its first span is of kind unspecified
        // and ends before it starts.
        assert!(
            lines[5].ends_with(" \"\" \"\" unspecified 0.000ms unset"),
            "{}",
            lines[5]
        );
    }

    #[test]
    fn durations_print_as_milliseconds_with_microseconds() {
        let mut out = Vec::new();
        for ns in [0, 999, 1_000, 2_500_000, 61_234_567_891] {
            write_millis(&mut out, ns);
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0.000ms 0.000ms 0.001ms 2.500ms 61234.567ms "
        );
    }

    #[test]
    fn jsonl_format_is_the_file_sink_json() {
        let request = fixtures::rich_request();
        let text = String::from_utf8(format_request(StdoutFormat::Jsonl, &request)).unwrap();
        assert_eq!(read_request(text.lines()).unwrap(), request);
    }
}
