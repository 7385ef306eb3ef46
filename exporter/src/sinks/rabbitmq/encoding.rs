//! Turns a batch into RabbitMQ message bodies: one OTLP request per message (split in
//! halves while too large), or one flat JSON span per message. Not the publishing.
//!
//! Unlike Kafka there is no partition key to keep a trace together, so an OTLP message
//! holds the whole batch when it fits: fewer, larger messages are what a broker with
//! per-message costs (routing, confirms, queue index) handles fastest.

use bytes::Bytes;
use spansink_config::RabbitMqEncoding;

use crate::otlp::{Batch, WireError};
use crate::sinks::message_fit::{Fitted, RequestFormat, fit_request, flat_span_records};

/// One message body, ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct RabbitMqMessage {
    pub body: Bytes,
    pub spans: usize,
}

/// The messages of a batch, and the spans that could not fit in any message.
#[derive(Debug, Default)]
pub struct EncodedBatch {
    pub messages: Vec<RabbitMqMessage>,
    /// Spans that alone (with their resource and scope) exceed `max_message_bytes`.
    pub oversized_spans: usize,
}

/// Why a batch could not be encoded. Both are permanent: the same batch fails again.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Malformed(#[from] WireError),
    #[error("cannot encode spans as OTLP JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The `content_type` property of messages in `encoding`.
pub fn content_type(encoding: RabbitMqEncoding) -> &'static str {
    match encoding {
        RabbitMqEncoding::OtlpProto => "application/x-protobuf",
        RabbitMqEncoding::OtlpJson | RabbitMqEncoding::Json => "application/json",
    }
}

/// Encodes `batch` into message bodies of at most `max_message_bytes` bytes.
pub fn encode_batch(
    batch: &Batch,
    encoding: RabbitMqEncoding,
    max_message_bytes: usize,
) -> Result<EncodedBatch, EncodeError> {
    let mut out = EncodedBatch::default();
    // A batch that already fits goes out as received, without decoding and re-encoding.
    if encoding == RabbitMqEncoding::OtlpProto && batch.encoded_len() <= max_message_bytes {
        if batch.span_count() > 0 {
            out.messages.push(RabbitMqMessage {
                body: batch.encoded(),
                spans: batch.span_count(),
            });
        }
        return Ok(out);
    }
    let request = batch.decode()?;
    let format = match encoding {
        RabbitMqEncoding::OtlpProto => RequestFormat::Proto,
        RabbitMqEncoding::OtlpJson => RequestFormat::Json,
        RabbitMqEncoding::Json => {
            out.oversized_spans = flat_span_records(&request, max_message_bytes, |_, body| {
                out.messages.push(RabbitMqMessage { body, spans: 1 })
            });
            return Ok(out);
        }
    };
    let mut fitted = Fitted::default();
    fit_request(request, format, max_message_bytes, &mut fitted)?;
    out.oversized_spans = fitted.oversized_spans;
    out.messages.extend(
        fitted
            .values
            .into_iter()
            .map(|(body, spans)| RabbitMqMessage { body, spans }),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    use super::*;
    use crate::encoding::JsonLinesEncoder;
    use crate::encoding::json::read_request;
    use crate::otlp::fixtures::{batch_of, flatten, interleaved_traces, rich_request, rich_span};
    use crate::otlp::span_count;

    fn decode(encoding: RabbitMqEncoding, body: &[u8]) -> ExportTraceServiceRequest {
        match encoding {
            RabbitMqEncoding::OtlpProto => ExportTraceServiceRequest::decode(body).unwrap(),
            RabbitMqEncoding::OtlpJson => serde_json::from_slice(body).unwrap(),
            RabbitMqEncoding::Json => read_request([std::str::from_utf8(body).unwrap()]).unwrap(),
        }
    }

    fn merged(requests: Vec<ExportTraceServiceRequest>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: requests
                .into_iter()
                .flat_map(|r| r.resource_spans)
                .collect(),
        }
    }

    /// `request` as the OTLP JSON mapping can carry it: that mapping (as implemented by
    /// opentelemetry-proto's serde) has no infinite doubles, they read back as no value.
    pub(crate) fn json_representable(
        mut request: ExportTraceServiceRequest,
    ) -> ExportTraceServiceRequest {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        for rs in &mut request.resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    for kv in &mut span.attributes {
                        if let Some(any) = kv.value.as_mut()
                            && matches!(any.value, Some(Value::DoubleValue(d)) if d.is_infinite())
                        {
                            any.value = None;
                        }
                    }
                }
            }
        }
        request
    }

    #[test]
    fn a_batch_that_fits_is_one_message_and_proto_is_passed_through() {
        let request = rich_request();
        let batch = batch_of(&[&request]);
        let encoded = encode_batch(&batch, RabbitMqEncoding::OtlpProto, 1 << 20).unwrap();
        assert_eq!(encoded.messages.len(), 1);
        assert_eq!(encoded.messages[0].body, batch.encoded());
        assert_eq!(encoded.messages[0].spans, span_count(&request));

        let encoded = encode_batch(&batch, RabbitMqEncoding::OtlpJson, 1 << 20).unwrap();
        assert_eq!(encoded.messages.len(), 1);
        let back = decode(RabbitMqEncoding::OtlpJson, &encoded.messages[0].body);
        assert_eq!(back, json_representable(request));
    }

    #[test]
    fn json_is_one_file_sink_line_per_message() {
        let request = rich_request();
        let batch = batch_of(&[&request]);
        let encoded = encode_batch(&batch, RabbitMqEncoding::Json, 1 << 20).unwrap();
        assert_eq!(encoded.messages.len(), span_count(&request));
        let mut expected = Vec::new();
        let mut encoder = JsonLinesEncoder::new();
        crate::encoding::encode_request(&mut encoder, &request, &mut expected);
        let lines: Vec<&[u8]> = expected
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        for (message, line) in encoded.messages.iter().zip(lines) {
            assert_eq!(message.spans, 1);
            assert_eq!(&message.body[..], line, "same text as the file sink");
        }
        let back: Vec<_> = encoded
            .messages
            .iter()
            .map(|m| decode(RabbitMqEncoding::Json, &m.body))
            .collect();
        assert_eq!(flatten(&merged(back)), flatten(&request));
    }

    #[test]
    fn large_batches_are_split_and_lone_oversized_spans_counted() {
        let request = interleaved_traces(3, 40);
        let mut huge = rich_span(9, 0);
        huge.name = "x".repeat(40_000);
        let mut with_huge = interleaved_traces(0, 0);
        with_huge.resource_spans[0].scope_spans[0].spans.push(huge);
        let batch = batch_of(&[&request, &with_huge]);
        let max = 16_384;
        for encoding in [
            RabbitMqEncoding::OtlpProto,
            RabbitMqEncoding::OtlpJson,
            RabbitMqEncoding::Json,
        ] {
            let encoded = encode_batch(&batch, encoding, max).unwrap();
            assert_eq!(encoded.oversized_spans, 1, "{encoding:?}");
            assert!(encoded.messages.len() > 2, "{encoding:?}");
            let mut back = Vec::new();
            for m in &encoded.messages {
                assert!(
                    m.body.len() <= max,
                    "{encoding:?}: {} > {max}",
                    m.body.len()
                );
                let r = decode(encoding, &m.body);
                assert_eq!(m.spans, span_count(&r));
                back.push(r);
            }
            assert_eq!(flatten(&merged(back)), flatten(&request), "{encoding:?}");
        }
    }

    #[test]
    fn content_types_name_the_encoding() {
        assert_eq!(
            content_type(RabbitMqEncoding::OtlpProto),
            "application/x-protobuf"
        );
        assert_eq!(content_type(RabbitMqEncoding::OtlpJson), "application/json");
        assert_eq!(content_type(RabbitMqEncoding::Json), "application/json");
    }
}
