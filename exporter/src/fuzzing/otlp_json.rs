//! Target `otlp_json`: the OTLP/HTTP JSON decoder.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::otlp::TraceData;
use crate::receiver::decode_json;

/// Any body is decoded or refused, never a panic; what is accepted is a request that passed
/// the wire scan (`TraceData` holds only such), and reads back the same after a round trip
/// through the JSON the exporter's OTLP/JSON encoders write.
pub fn otlp_json(data: &[u8]) {
    let Ok(accepted) = decode_json(data) else {
        return;
    };
    let request = match accepted.decode() {
        Ok(request) => request,
        Err(e) => panic!("an accepted JSON request does not decode: {e}"),
    };
    let json = match serde_json::to_vec(&request) {
        Ok(json) => json,
        Err(e) => panic!("an accepted request does not serialize to JSON: {e}"),
    };
    let again = match decode_json(&json) {
        Ok(again) => again,
        Err(e) => panic!(
            "the JSON of an accepted request is refused: {e}\njson: {}",
            String::from_utf8_lossy(&json)
        ),
    };
    assert_same(&accepted, &again, &request);
}

fn assert_same(first: &TraceData, again: &TraceData, request: &ExportTraceServiceRequest) {
    assert!(
        first.bytes() == again.bytes(),
        "a JSON round trip changed the request\nfirst: {request:?}\nagain: {:?}",
        again.decode().ok()
    );
}

#[cfg(test)]
mod tests {
    use super::otlp_json;
    use crate::fuzzing::mutate::for_each_mutation;

    #[test]
    fn mutated_json_keeps_the_invariants() {
        for_each_mutation("otlp_json", 3_000, 0x0150, otlp_json);
    }
}
