//! Where the exporter listens for OTLP traces and how large a request may be.
//! Only the listening side: what happens to spans afterwards is the sinks' business.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::ByteSize;

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
}

impl ReceiversConfig {
    fn default_max_request_size() -> ByteSize {
        ByteSize::mib(4)
    }
    fn default_max_decompressed_size() -> ByteSize {
        ByteSize::mib(16)
    }
}

impl Default for ReceiversConfig {
    fn default() -> Self {
        Self {
            grpc: ListenerConfig::default_grpc(),
            http: ListenerConfig::default_http(),
            max_request_size: Self::default_max_request_size(),
            max_decompressed_size: Self::default_max_decompressed_size(),
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
}

impl ListenerConfig {
    pub fn default_grpc() -> Self {
        Self {
            enabled: true,
            endpoint: "0.0.0.0:4317".into(),
        }
    }
    pub fn default_http() -> Self {
        Self {
            enabled: true,
            endpoint: "0.0.0.0:4318".into(),
        }
    }
}
