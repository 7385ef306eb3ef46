//! See `spansink_exporter::fuzzing::decompression` for what this target checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spansink_exporter::fuzzing::decompression(data));
