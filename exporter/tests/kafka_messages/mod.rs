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

pub use spansink_exporter::otlp::fixtures::merged;

/// `request` as `encoding` carries it: opentelemetry-proto's serde (the OTLP JSON
/// mapping) has no infinite doubles, they read back as an attribute without a value.
pub fn as_read_back(
    encoding: KafkaEncoding,
    request: ExportTraceServiceRequest,
) -> ExportTraceServiceRequest {
    if encoding != KafkaEncoding::OtlpJson {
        return request;
    }
    spansink_exporter::otlp::fixtures::json_representable(request)
}
