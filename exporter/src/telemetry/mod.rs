//! The exporter's own observability: Prometheus metrics, health endpoints and logs.
//! Not the spans it exports.

pub mod health;
pub mod logging;
pub mod metrics;
pub mod server;

pub use health::Health;
pub use metrics::Metrics;
