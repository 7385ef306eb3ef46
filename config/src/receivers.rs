//! Where the exporter listens for OTLP traces, how large a request may be, and when a
//! client is told its request succeeded. Only the listening side: what happens to spans
//! afterwards is the sinks' business.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cors::CorsConfig;
use crate::receiver_auth::ReceiverAuthConfig;
use crate::units::{ByteSize, Duration};

/// The OTLP receivers: gRPC (`TraceService/Export`) and HTTP (`POST /v1/traces`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiversConfig {
    /// OTLP over gRPC. Default: enabled on `0.0.0.0:4317`.
    #[serde(default = "ListenerConfig::default_grpc")]
    pub grpc: ListenerConfig,
    /// OTLP over HTTP (protobuf and JSON bodies). Default: enabled on `0.0.0.0:4318`.
    #[serde(default = "ListenerConfig::default_http")]
    pub http: ListenerConfig,
    /// Largest request body accepted as it arrives on the wire (compressed, if the
    /// client compressed it). Larger requests are refused with gRPC `RESOURCE_EXHAUSTED`
    /// / HTTP 413 and never read into memory. Default: `4MiB` (the gRPC default).
    // Not nullable in the CRD: kube marks int-or-string fields nullable, but `null` here
    // would not deserialize, and one such object would break the operator's watch.
    #[schemars(extend("nullable" = false))]
    #[serde(default = "ReceiversConfig::default_max_request_size")]
    pub max_request_size: ByteSize,
    /// Largest body accepted after decompression. A request that inflates beyond it
    /// (a "gzip bomb") is refused once the limit is reached, not expanded in full.
    /// Default: `16MiB`.
    // Not nullable in the CRD: kube marks int-or-string fields nullable, but `null` here
    // would not deserialize, and one such object would break the operator's watch.
    #[schemars(extend("nullable" = false))]
    #[serde(default = "ReceiversConfig::default_max_decompressed_size")]
    pub max_decompressed_size: ByteSize,
    /// When the OTLP success answer is sent: `received` (every sink's queue took the
    /// request), `persisted` (and every durable queue has it on disk, fsynced) or
    /// `delivered` (every sink committed it to its backend, or to its fallback).
    /// Default: `received`. Applies to requests admitted after a config reload too.
    #[serde(default)]
    pub acknowledgements: AcknowledgementMode,
    /// With `acknowledgements: delivered`, the longest a request waits for the sinks'
    /// commits once their queues took it; then the client is told to retry (gRPC
    /// `UNAVAILABLE`, HTTP 503) while the spans stay queued and are still delivered, so
    /// the retry may deliver them twice. Keep it below the clients' export timeout
    /// (OpenTelemetry SDKs: 10 s) and above the sinks' `batch.flush_interval` plus a
    /// typical export. Default: `8s`.
    #[serde(default = "ReceiversConfig::default_acknowledgement_timeout")]
    pub acknowledgement_timeout: Duration,
    /// Client authentication (bearer tokens, basic auth) for both receivers. Unset: any
    /// client that reaches the ports may send spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ReceiverAuthConfig>,
}

/// When an OTLP client is told its request succeeded. Stronger modes answer later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AcknowledgementMode {
    /// Once every sink's queue took the request. Fastest; spans in a memory queue are
    /// lost if the process dies before delivering them.
    #[default]
    Received,
    /// Once every sink with a durable queue has the request on disk and fsynced
    /// (whatever its `fsync` policy is for other traffic; concurrent requests share one
    /// fsync). A sink with a memory queue answers as for `received`.
    Persisted,
    /// Once every sink the request fans out to has delivered it to its backend, or
    /// handed it to its fallback sink, which delivered it. A delivery failure reaches the
    /// client: retryable after the sink's retries, permanent if the backend refused it.
    /// The answer waits for the slowest sink, up to `acknowledgement_timeout`.
    Delivered,
}

impl AcknowledgementMode {
    /// The name used in the config (and in metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Persisted => "persisted",
            Self::Delivered => "delivered",
        }
    }
}

impl ReceiversConfig {
    fn default_max_request_size() -> ByteSize {
        ByteSize::mib(4)
    }
    fn default_max_decompressed_size() -> ByteSize {
        ByteSize::mib(16)
    }
    fn default_acknowledgement_timeout() -> Duration {
        Duration::from_secs(8)
    }

    /// Whether `other` differs only in what a reload applies at once (the
    /// acknowledgement settings, which belong to each sink-chain generation); the
    /// listeners, limits and authentication need a restart.
    pub fn same_listeners_and_limits(&self, other: &Self) -> bool {
        let listeners = |r: &Self| {
            (
                r.grpc.clone(),
                r.http.clone(),
                r.max_request_size,
                r.max_decompressed_size,
                r.auth.clone(),
            )
        };
        listeners(self) == listeners(other)
    }
}

impl Default for ReceiversConfig {
    fn default() -> Self {
        Self {
            grpc: ListenerConfig::default_grpc(),
            http: ListenerConfig::default_http(),
            max_request_size: Self::default_max_request_size(),
            max_decompressed_size: Self::default_max_decompressed_size(),
            acknowledgements: AcknowledgementMode::default(),
            acknowledgement_timeout: Self::default_acknowledgement_timeout(),
            auth: None,
        }
    }
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Whether this receiver runs. Default: `true`.
    #[serde(default = "crate::default_true")]
    pub enabled: bool,
    /// `host:port` to listen on, e.g. `0.0.0.0:4317`. Port `0` picks a free port
    /// (logged at start; useful in tests).
    pub endpoint: String,
    /// CORS for browser SDKs; OTLP/HTTP only (`receivers.http.cors`). Unset: no CORS
    /// headers, so browsers on other origins cannot send spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsConfig>,
}

impl ListenerConfig {
    pub fn default_grpc() -> Self {
        Self {
            enabled: true,
            endpoint: "0.0.0.0:4317".into(),
            cors: None,
        }
    }
    pub fn default_http() -> Self {
        Self {
            enabled: true,
            endpoint: "0.0.0.0:4318".into(),
            cors: None,
        }
    }
}
