//! See `spansink_exporter::fuzzing::otlp_protobuf` for what this target checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spansink_exporter::fuzzing::otlp_protobuf(data));
