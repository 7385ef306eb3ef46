//! The exporter's own observability: Prometheus metrics, health endpoints and logs.

pub mod metrics;

pub use metrics::Metrics;
