//! OTLP receivers: gRPC (`TraceService/Export`) and HTTP (`POST /v1/traces`, protobuf and
//! JSON), each checking requests against the size limits and the wire format, handing them
//! to the chain through [`Admit`] and answering what the chain said. Not the chain itself.
//!
//! Metrics (`spansink_receiver_*`, label `protocol`): `requests{reason}` counts every export
//! request by outcome: `ok`, `partial` (a filter rejected some spans), `malformed`,
//! `too_large` (over `max_request_size` on the wire), `decompression` (corrupt, or inflating
//! beyond `max_decompressed_size`), `unsupported_media_type`, `unauthenticated`,
//! `queue_full`, `backpressure`,
//! `shutting_down`, `queue_storage`, and with `acknowledgements: delivered`
//! `not_delivered`, `rejected_by_sink`, `acknowledgement_timeout`. `accepted_spans` counts spans taken; `refused_spans{reason}` spans whose
//! count is known when refused (`filtered` for partial success, or the chain's refusal).
//! TLS (`tls`) is done before a connection reaches either receiver.

mod answer;
mod auth;
pub(crate) mod compression;
mod cors;
mod grpc;
mod grpc_connections;
mod http;
mod limits;
#[cfg(test)]
mod test_receivers;
pub mod tls;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spansink_config::{CorsConfig, ReceiversConfig};

use crate::chain::{Admission, Admit};
use crate::otlp::TraceData;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{Protocol, ProtocolLabels, RefusedLabels};

pub(crate) use answer::Rejection;
pub use auth::{AuthError, Authenticator};
// For the fuzz targets (`crate::fuzzing`).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use http::decode_json;
use tls::TlsListener;

/// How large a request may be, as sent and once decompressed, and how long a gRPC
/// connection may stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverLimits {
    /// Largest body as it arrives (compressed if the client compressed it).
    pub max_request_size: usize,
    /// Largest body after decompression.
    pub max_decompressed_size: usize,
    /// Age after which a gRPC connection is sent GOAWAY; `None`: no limit.
    pub grpc_max_connection_age: Option<std::time::Duration>,
    /// How long in-flight requests may take after that GOAWAY.
    pub grpc_max_connection_age_grace: std::time::Duration,
}

impl ReceiverLimits {
    /// The largest message read off the wire: an uncompressed body is also its own
    /// decompressed form, so the smaller of the two limits applies to it.
    fn wire_limit(&self) -> usize {
        self.max_request_size.min(self.max_decompressed_size)
    }
}

impl From<&ReceiversConfig> for ReceiverLimits {
    fn from(config: &ReceiversConfig) -> Self {
        Self {
            max_request_size: config.max_request_size.as_usize(),
            max_decompressed_size: config.max_decompressed_size.as_usize(),
            grpc_max_connection_age: Some(config.grpc_max_connection_age.get())
                .filter(|age| !age.is_zero()),
            grpc_max_connection_age_grace: config.grpc_max_connection_age_grace.get(),
        }
    }
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        Self::from(&ReceiversConfig::default())
    }
}

/// A receiver stopped because its server failed (not because of a bad request: those are
/// answered and counted).
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("OTLP/gRPC receiver failed: {0}")]
    Grpc(#[source] tonic::transport::Error),
    #[error("OTLP/HTTP receiver failed: {0}")]
    Http(#[source] std::io::Error),
}

/// Who may send, and from which web origins: checked on a request's headers, before its
/// body is read. The default lets every client in and sends no CORS headers.
#[derive(Clone, Default)]
pub struct ReceiverAccess {
    /// `receivers.auth`; `None`: no authentication.
    pub auth: Option<Arc<Authenticator>>,
    /// `receivers.http.cors` (OTLP/HTTP only); `None`: no CORS headers.
    pub cors: Option<CorsConfig>,
}

/// Serves OTLP/gRPC on `listener` (a `TcpListener` for plaintext, or a
/// [`TlsListener`]) until `shutdown` completes, then stops accepting connections and
/// returns once in-flight requests are answered.
pub async fn serve_grpc(
    listener: impl Into<TlsListener>,
    admit: Arc<dyn Admit>,
    limits: ReceiverLimits,
    access: ReceiverAccess,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiverError> {
    let intake = Intake::new(admit, metrics, Protocol::grpc);
    grpc::serve(listener.into(), intake, limits, access.auth, shutdown)
        .await
        .map_err(ReceiverError::Grpc)
}

/// Serves OTLP/HTTP on `listener` (a `TcpListener` for plaintext, or a
/// [`TlsListener`]) until `shutdown` completes, then stops accepting connections and
/// returns once in-flight requests are answered.
pub async fn serve_http(
    listener: impl Into<TlsListener>,
    admit: Arc<dyn Admit>,
    limits: ReceiverLimits,
    access: ReceiverAccess,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiverError> {
    let intake = Intake::new(admit, metrics, Protocol::http);
    let cors = access.cors.as_ref().map(cors::Cors::new);
    http::serve(listener.into(), intake, limits, access.auth, cors, shutdown)
        .await
        .map_err(ReceiverError::Http)
}

/// Where requests of one protocol enter the chain: admits them and records every outcome
/// (metrics, logs) in one place for both receivers.
#[derive(Clone)]
struct Intake {
    admit: Arc<dyn Admit>,
    metrics: Metrics,
    protocol: Protocol,
    /// When refusals for lack of capacity were last logged at warn level.
    last_capacity_warning: Arc<Mutex<Option<Instant>>>,
}

/// Capacity refusals come in floods; one warning per this interval, the rest at debug.
const CAPACITY_WARNING_INTERVAL: Duration = Duration::from_secs(10);

impl Intake {
    fn new(admit: Arc<dyn Admit>, metrics: Metrics, protocol: Protocol) -> Self {
        Self {
            admit,
            metrics,
            protocol,
            last_capacity_warning: Arc::new(Mutex::new(None)),
        }
    }

    /// Hands a well-formed request to the chain.
    async fn take(&self, data: TraceData) -> Result<Admission, Rejection> {
        let spans = data.span_count();
        match self.admit.admit(data).await {
            Ok(admission) => {
                self.record_taken(spans, &admission);
                Ok(admission)
            }
            Err(refusal) => Err(self.reject(Rejection::Refused(refusal), Some(spans))),
        }
    }

    fn record_taken(&self, spans: usize, admission: &Admission) {
        let rejected = admission.rejected_spans.min(spans);
        self.metrics
            .receiver_accepted_spans
            .get_or_create(&ProtocolLabels {
                protocol: self.protocol,
            })
            .inc_by((spans - rejected) as u64);
        let outcome = match rejected {
            0 => "ok",
            _ => {
                self.count_refused_spans("filtered", rejected);
                tracing::debug!(
                    protocol = %self.protocol,
                    spans,
                    rejected,
                    // Not `message`: that name is the event's own text.
                    detail = %admission.message.as_deref().unwrap_or("none"),
                    "export request partly accepted"
                );
                "partial"
            }
        };
        self.count_request(outcome);
    }

    /// Records a request that was not taken (`spans` if its span count is known) and
    /// gives the rejection back for answering.
    fn reject(&self, rejection: Rejection, spans: Option<usize>) -> Rejection {
        let reason = rejection.reason();
        self.count_request(reason);
        if let Some(spans) = spans {
            self.count_refused_spans(reason, spans);
        }
        if rejection.is_capacity() && self.capacity_warning_due() {
            tracing::warn!(
                protocol = %self.protocol,
                reason = %reason,
                spans,
                error = %rejection,
                "refusing export requests: the chain is full or too slow to acknowledge \
                 (clients were told to retry; further refusals are logged at debug for {}s)",
                CAPACITY_WARNING_INTERVAL.as_secs()
            );
        } else {
            tracing::debug!(protocol = %self.protocol, reason = %reason, spans, error = %rejection, "export request refused");
        }
        rejection
    }

    fn capacity_warning_due(&self) -> bool {
        let Ok(mut last) = self.last_capacity_warning.lock() else {
            return false;
        };
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < CAPACITY_WARNING_INTERVAL => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    fn count_request(&self, reason: &'static str) {
        self.metrics
            .receiver_requests
            .get_or_create(&RefusedLabels {
                protocol: self.protocol,
                reason,
            })
            .inc();
    }

    fn count_refused_spans(&self, reason: &'static str, spans: usize) {
        self.metrics
            .receiver_refused_spans
            .get_or_create(&RefusedLabels {
                protocol: self.protocol,
                reason,
            })
            .inc_by(spans as u64);
    }
}
