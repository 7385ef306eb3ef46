//! OTLP trace data as it travels through the exporter: the encoded request bytes of an
//! `ExportTraceServiceRequest`, checked once on arrival ([`wire`]) and then passed along
//! without re-parsing. Not the receivers (see `receiver`) nor span encodings (`encoding`).

pub mod codec;
#[cfg(any(test, feature = "test-support"))]
pub mod fixtures;
pub mod payload;
pub mod view;
pub mod wire;

pub use payload::{Batch, TraceData, span_count};
pub use wire::WireError;
