//! Target `otlp_protobuf`: the wire scan and the zero-copy view against prost.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::encoding::{
    CsvEncoder, JsonLinesEncoder, LineEncoder, encode_request, encode_wire_request,
};
use crate::otlp::{span_count, wire};

/// What the scan accepts, prost decodes, with the span count the scan reported; and the
/// encoders give the same bytes reading through the view as from the decoded request (the
/// invariant every sink that encodes from the view relies on).
pub fn otlp_protobuf(data: &[u8]) {
    let Ok(summary) = wire::scan(data) else {
        return;
    };
    let decoded = match ExportTraceServiceRequest::decode(data) {
        Ok(decoded) => decoded,
        Err(e) => panic!("the scan accepted bytes prost refuses: {e}"),
    };
    assert_eq!(
        summary.spans,
        span_count(&decoded),
        "span count differs from prost's"
    );
    let encoders: [fn() -> Box<dyn LineEncoder>; 2] = [
        || Box::new(JsonLinesEncoder::new()),
        || Box::new(CsvEncoder::new()),
    ];
    for new_encoder in encoders {
        let mut from_decode = Vec::new();
        let spans = encode_request(new_encoder().as_mut(), &decoded, &mut from_decode);
        let mut from_view = Vec::new();
        let view_spans = match encode_wire_request(new_encoder().as_mut(), data, &mut from_view) {
            Ok(spans) => spans,
            Err(e) => panic!("the view refused what the scan accepted: {e}"),
        };
        assert_eq!(view_spans, spans, "the view saw another number of spans");
        assert!(
            from_view == from_decode,
            "view and decode encode differently\nview:   {}\ndecode: {}",
            String::from_utf8_lossy(&from_view),
            String::from_utf8_lossy(&from_decode)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::otlp_protobuf;
    use crate::fuzzing::mutate::for_each_mutation;

    #[test]
    fn mutated_requests_keep_the_invariants() {
        for_each_mutation("otlp_protobuf", 3_000, 0x0715, otlp_protobuf);
    }
}
