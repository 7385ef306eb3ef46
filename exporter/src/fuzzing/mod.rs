//! The properties the fuzz targets in `fuzz/` check, one function per target: each takes
//! arbitrary bytes, must never panic, and panics only when an invariant the rest of the
//! exporter relies on is broken. Kept in the library (not in `fuzz/`) so that they compile
//! with every build and their smoke tests, which feed them mutated seeds, run with the unit
//! tests. Not a fuzzer: `fuzz/` drives these with libFuzzer (see README, "Fuzzing").

mod config;
mod decompression;
mod otlp_json;
mod otlp_protobuf;
mod queue_record;

pub use config::config_yaml;
pub use decompression::decompression;
pub use otlp_json::otlp_json;
pub use otlp_protobuf::otlp_protobuf;
pub use queue_record::queue_record;

#[cfg(test)]
mod mutate;
