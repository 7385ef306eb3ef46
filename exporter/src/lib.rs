//! spansink exporter: receives OTLP traces and writes them to backends through a sink
//! chain configured in YAML. `main.rs` is the CLI; everything it runs lives here so tests
//! and benchmarks drive the same code.

pub mod app;
pub mod bench;
pub mod chain;
pub mod encoding;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod otlp;
pub mod receiver;
pub mod reload;
pub mod sinks;
pub mod telemetry;
pub mod tls;
