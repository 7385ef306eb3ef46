//! Backends spans are written to, all behind one trait, [`Sink`]. A sink knows its
//! backend: how to encode a batch, how to send it, and whether a failure is worth
//! retrying. It knows nothing of queues, batching, retries or rate limits: the chain
//! (`crate::chain`) wraps those around it.

pub mod blackhole;
pub mod clickhouse;
pub mod elasticsearch;
pub mod file;
pub mod kafka;
pub mod otlp;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;
pub mod s3;
pub mod stdout;
mod support;

use std::sync::Arc;

use async_trait::async_trait;

use crate::otlp::Batch;

pub use blackhole::BlackholeSink;
pub use file::FileSink;
pub use otlp::OtlpSink;
pub use stdout::StdoutSink;
pub use support::build::{BuildSink, EnvLookup, SinkContext, build, build_all};
pub use support::message_fit;

/// A backend writer. Implementations must be cheap to call concurrently (the chain may
/// run several exports at once, up to `rate_limit.max_concurrent_exports`); a backend
/// that needs ordering serialises internally.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Writes one batch. `Ok` means the backend has it (as durably as the sink promises);
    /// an error says whether trying again could help. The batch is borrowed so a retry
    /// can send it again.
    async fn export(&self, batch: &Batch) -> Result<(), SinkError>;

    /// Flushes and releases resources. Called once, after the last `export` returned.
    async fn shutdown(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A sink (or a sink wrapped in policies) shared between tasks.
pub type SharedSink = Arc<dyn Sink>;

/// Why an export failed. The sink decides which kind: it is the one that knows whether
/// its backend's answer can change on a second try.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying: connection refused or reset, timeout, throttling, a 5xx.
    #[error("{message} (transient: will be retried)")]
    Transient {
        /// Short metric label, e.g. `io`, `connect`, `unavailable`, `timeout`.
        reason: &'static str,
        message: String,
    },
    /// Retrying cannot help: schema or authorization rejection, an oversized message.
    #[error("{message} (permanent: not retried)")]
    Permanent {
        reason: &'static str,
        message: String,
    },
}

impl SinkError {
    pub fn transient(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Transient {
            reason,
            message: message.into(),
        }
    }

    pub fn permanent(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Permanent {
            reason,
            message: message.into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// The error that decides an export made of several writes (messages, commands):
    /// the first permanent one if any, since a retry of the batch cannot then fully
    /// succeed, else the first. `None` for no errors.
    pub fn decisive(errors: &[SinkError]) -> Option<&SinkError> {
        errors.iter().find(|e| !e.is_transient()).or(errors.first())
    }

    /// The metric label for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Transient { reason, .. } | Self::Permanent { reason, .. } => reason,
        }
    }
}

/// A sink that could not be built from its config (bad endpoint, unwritable directory).
#[derive(Debug, thiserror::Error)]
#[error("sinks.{sink}: {message}")]
pub struct BuildError {
    pub sink: String,
    pub message: String,
}
