//! See `spansink_exporter::fuzzing::queue_record` for what this target checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spansink_exporter::fuzzing::queue_record(data));
