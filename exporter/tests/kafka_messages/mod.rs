//! Reading the Kafka sink's message values back, shared by the mock-cluster tests
//! (`sink_kafka`) and the real-broker tests (`sink_kafka_broker`). Not a consumer.

#![allow(dead_code)]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use spansink_config::KafkaEncoding;
use spansink_exporter::encoding::read_request;

/// Each encoding the sink writes.
pub const EVERY_ENCODING: [KafkaEncoding; 3] = [
    KafkaEncoding::OtlpProto,
    KafkaEncoding::OtlpJson,
    KafkaEncoding::Json,
];

/// One message value as the request it holds.
pub fn decode(encoding: KafkaEncoding, value: &[u8]) -> ExportTraceServiceRequest {
    match encoding {
        KafkaEncoding::OtlpProto => ExportTraceServiceRequest::decode(value).unwrap(),
        KafkaEncoding::OtlpJson => serde_json::from_slice(value).unwrap(),
        KafkaEncoding::Json => read_request([std::str::from_utf8(value).unwrap()]).unwrap(),
    }
}

/// The requests as one, in order.
pub fn merged(
    requests: impl IntoIterator<Item = ExportTraceServiceRequest>,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: requests
            .into_iter()
            .flat_map(|r| r.resource_spans)
            .collect(),
    }
}

/// `request` as `encoding` carries it: opentelemetry-proto's serde (the OTLP JSON
/// mapping) has no infinite doubles, they read back as an attribute without a value.
pub fn as_read_back(
    encoding: KafkaEncoding,
    mut request: ExportTraceServiceRequest,
) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    if encoding != KafkaEncoding::OtlpJson {
        return request;
    }
    for span in request
        .resource_spans
        .iter_mut()
        .flat_map(|rs| rs.scope_spans.iter_mut())
        .flat_map(|ss| ss.spans.iter_mut())
    {
        for kv in &mut span.attributes {
            if let Some(any) = kv.value.as_mut()
                && matches!(any.value, Some(Value::DoubleValue(d)) if d.is_infinite())
            {
                any.value = None;
            }
        }
    }
    request
}
