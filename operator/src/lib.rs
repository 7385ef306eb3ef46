//! The spansink operator: the SpanSink resource, the pure reconcile from it to children,
//! and the controller that applies them. The binary (`main.rs`) only parses flags and starts it.
pub mod controller;
pub mod crd;
pub mod crd_yaml;
pub mod delivery;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod metrics_server;
pub mod progress;
pub mod quantity;
pub mod rbac;
pub mod reconcile;
pub mod status;

#[doc(hidden)]
pub mod fake_apiserver;
#[cfg(test)]
mod fixtures;
