//! Where the exporter listens for OTLP traces, with what TLS, how large a request may be,
//! and when a client is told its request succeeded. Only the listening side: what happens
//! to spans afterwards is the sinks' business. The TLS block's own checks live next to it
//! ([`ReceiverTlsConfig::problems`]); whether its files can be read is the exporter's to
//! find out (the operator validating a SpanSink cannot see the pod's files).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cors::CorsConfig;
use crate::receiver_auth::ReceiverAuthConfig;
use crate::units::{ByteSize, Duration};
use crate::validate::ValidationError;

/// The OTLP receivers: gRPC (`TraceService/Export`) and HTTP (`POST /v1/traces`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiversConfig {
    /// TLS for both listeners (a listener's own `tls` replaces it for that listener).
    /// Unset: plaintext. Changes apply on a config reload without a restart: new
    /// connections use the new settings, open ones keep theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ReceiverTlsConfig>,
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
    /// Longest an OTLP/gRPC connection is kept open. Then the server sends GOAWAY: the
    /// client finishes what it has in flight and opens a new connection, through the
    /// Service, so possibly to another replica. gRPC clients otherwise keep one
    /// connection for good, and replicas the autoscaler adds get no traffic from clients
    /// already connected. As the Collector's
    /// `keepalive.server_parameters.max_connection_age`. `0s`: no limit. Default: `5m`.
    #[serde(default = "ReceiversConfig::default_grpc_max_connection_age")]
    pub grpc_max_connection_age: Duration,
    /// How long requests in flight on a connection told to go away may still take
    /// before it is closed. Default: `30s`.
    #[serde(default = "ReceiversConfig::default_grpc_max_connection_age_grace")]
    pub grpc_max_connection_age_grace: Duration,
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
    fn default_grpc_max_connection_age() -> Duration {
        Duration::from_secs(300)
    }
    fn default_grpc_max_connection_age_grace() -> Duration {
        Duration::from_secs(30)
    }

    /// Whether `other` differs only in what a reload applies at once (the
    /// acknowledgement settings, which belong to each sink-chain generation, and the TLS
    /// blocks, swapped into the running listeners); the listeners, limits and
    /// authentication need a restart.
    pub fn same_listeners_and_limits(&self, other: &Self) -> bool {
        let listeners = |r: &Self| {
            (
                r.grpc.without_tls(),
                r.http.without_tls(),
                r.max_request_size,
                r.max_decompressed_size,
                r.auth.clone(),
                r.grpc_max_connection_age,
                r.grpc_max_connection_age_grace,
            )
        };
        listeners(self) == listeners(other)
    }

    /// These settings with what a reload to `other` applies at once: its TLS blocks
    /// (swapped into the running listeners) and its acknowledgement settings (taken by
    /// the next sink-chain generation). Listener, limit and auth changes wait for the
    /// next start.
    pub fn with_reloadable_of(&self, other: &Self) -> Self {
        let mut next = self.clone();
        next.tls = other.tls.clone();
        next.grpc.tls = other.grpc.tls.clone();
        next.http.tls = other.http.tls.clone();
        next.acknowledgements = other.acknowledgements;
        next.acknowledgement_timeout = other.acknowledgement_timeout;
        next
    }

    /// Whether the acknowledgement settings, which each sink-chain generation answers
    /// by, are the same.
    pub fn same_acknowledgements(&self, other: &Self) -> bool {
        (self.acknowledgements, self.acknowledgement_timeout)
            == (other.acknowledgements, other.acknowledgement_timeout)
    }

    /// The TLS settings the listener `receivers.<name>` serves with, and the field path
    /// they come from (for error messages): its own `tls` block, else `receivers.tls`;
    /// `None` means plaintext.
    pub fn tls_of<'a>(
        &'a self,
        name: &str,
        listener: &'a ListenerConfig,
    ) -> Option<(String, &'a ReceiverTlsConfig)> {
        match (&listener.tls, &self.tls) {
            (Some(own), _) => Some((format!("receivers.{name}.tls"), own)),
            (None, Some(shared)) => Some(("receivers.tls".to_string(), shared)),
            (None, None) => None,
        }
    }
}

impl Default for ReceiversConfig {
    fn default() -> Self {
        Self {
            tls: None,
            grpc: ListenerConfig::default_grpc(),
            http: ListenerConfig::default_http(),
            max_request_size: Self::default_max_request_size(),
            max_decompressed_size: Self::default_max_decompressed_size(),
            acknowledgements: AcknowledgementMode::default(),
            acknowledgement_timeout: Self::default_acknowledgement_timeout(),
            auth: None,
            grpc_max_connection_age: Self::default_grpc_max_connection_age(),
            grpc_max_connection_age_grace: Self::default_grpc_max_connection_age_grace(),
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
    /// TLS for this listener only, replacing `receivers.tls` as a whole (no field is
    /// inherited from it). Unset: `receivers.tls`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ReceiverTlsConfig>,
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
            tls: None,
            cors: None,
        }
    }
    pub fn default_http() -> Self {
        Self {
            enabled: true,
            endpoint: "0.0.0.0:4318".into(),
            tls: None,
            cors: None,
        }
    }

    fn without_tls(&self) -> Self {
        Self {
            tls: None,
            ..self.clone()
        }
    }
}

/// TLS on an OTLP listener: the server's certificate and key, the oldest TLS version
/// accepted and, for mutual TLS, the CAs client certificates must be signed by. Files
/// are PEM (typically a mounted Secret, e.g. from cert-manager) and are read again when
/// their content changes, without a restart: new connections get the new certificate,
/// open ones are kept. A file that does not load then keeps the previous certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiverTlsConfig {
    /// The server's certificate chain, leaf first, e.g. `/etc/spansink/tls/tls.crt`.
    /// Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// The private key of `cert_file` (PKCS#8, PKCS#1 or SEC1 PEM), e.g.
    /// `/etc/spansink/tls/tls.key`. Required with `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// CA certificate(s) that sign the clients' certificates (mutual TLS), e.g.
    /// `/etc/spansink/tls/ca.crt`. Unset: clients are not asked for a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
    /// Whether a client must present a certificate signed by `client_ca_file`:
    /// `required` (connections without one are refused), `optional` (connections
    /// without one are accepted; a certificate that is sent must verify) or `none`.
    /// Default: `required` when `client_ca_file` is set, else `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuth>,
    /// The oldest TLS version accepted: `"1.2"` or `"1.3"` (quote it in YAML).
    /// Default: `"1.2"`.
    #[serde(default)]
    pub min_version: TlsVersion,
}

/// Whether an OTLP client must present a TLS client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Clients are not asked for a certificate.
    None,
    /// Clients may present a certificate; one that is sent must be signed by
    /// `client_ca_file`.
    Optional,
    /// Clients must present a certificate signed by `client_ca_file`.
    Required,
}

impl ClientAuth {
    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsVersion {
    /// TLS 1.2 (and 1.3).
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}

impl ReceiverTlsConfig {
    /// The client-certificate policy in effect, with the default filled in.
    pub fn effective_client_auth(&self) -> ClientAuth {
        match (self.client_auth, &self.client_ca_file) {
            (Some(auth), _) => auth,
            (None, Some(_)) => ClientAuth::Required,
            (None, None) => ClientAuth::None,
        }
    }

    /// What is wrong with this block, found at `path` (e.g. `receivers.tls`), each
    /// problem naming its field. Files are not opened here.
    pub fn problems(&self, path: &str) -> Vec<ValidationError> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| {
            problems.push(ValidationError {
                path: format!("{path}.{field}"),
                message,
            })
        };
        for (field, value) in [
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("client_ca_file", &self.client_ca_file),
        ] {
            if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                problem(field, "must not be empty when set".into());
            }
        }
        match (&self.cert_file, &self.key_file) {
            (None, _) => problem(
                "cert_file",
                "required: the PEM file with the server's certificate chain (and key_file \
                 with its private key)"
                    .into(),
            ),
            (Some(_), None) => problem(
                "key_file",
                "required with cert_file: the PEM file with the certificate's private key".into(),
            ),
            (Some(_), Some(_)) => {}
        }
        match (self.effective_client_auth(), &self.client_ca_file) {
            (auth @ (ClientAuth::Required | ClientAuth::Optional), None) => problem(
                "client_auth",
                format!(
                    "{} needs client_ca_file: the CA certificate(s) client certificates are \
                     checked against",
                    auth.as_str()
                ),
            ),
            (ClientAuth::None, Some(_)) => problem(
                "client_auth",
                "none, but client_ca_file is set: use required or optional to check client \
                 certificates, or remove client_ca_file"
                    .into(),
            ),
            _ => {}
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use crate::{ExporterConfig, ReceiverTlsConfig, TlsVersion};

    const SINKS: &str = "sinks:\n  main:\n    blackhole: {}\n";

    fn load(receivers: &str) -> Result<ExporterConfig, String> {
        ExporterConfig::from_yaml(&format!("receivers:\n{receivers}{SINKS}"))
            .map_err(|e| e.to_string())
    }

    fn errors(receivers: &str) -> String {
        load(receivers).expect_err("config should be refused")
    }

    #[test]
    fn a_full_tls_block_loads_and_a_listener_override_wins() {
        let c = load(
            "  tls:\n    cert_file: /tls/tls.crt\n    key_file: /tls/tls.key\n    \
             client_ca_file: /tls/ca.crt\n    min_version: 1.3\n  \
             grpc: {endpoint: '0.0.0.0:4317', tls: {cert_file: /g.crt, key_file: /g.key}}\n",
        )
        .unwrap();
        let shared = c.receivers.tls.as_ref().unwrap();
        assert_eq!(shared.min_version, TlsVersion::V1_3);
        assert_eq!(shared.effective_client_auth(), crate::ClientAuth::Required);
        let (path, grpc) = c.receivers.tls_of("grpc", &c.receivers.grpc).unwrap();
        assert_eq!(path, "receivers.grpc.tls");
        assert_eq!(grpc.cert_file.as_deref(), Some("/g.crt"));
        assert_eq!(grpc.min_version, TlsVersion::V1_2, "nothing is inherited");
        assert_eq!(grpc.effective_client_auth(), crate::ClientAuth::None);
        let (path, http) = c.receivers.tls_of("http", &c.receivers.http).unwrap();
        assert_eq!(path, "receivers.tls");
        assert_eq!(http, shared);
        assert_eq!(ExporterConfig::from_yaml(&c.to_yaml()).unwrap(), c);
    }

    #[test]
    fn no_tls_block_means_plaintext() {
        let c = load("  grpc: {endpoint: '0.0.0.0:4317'}\n").unwrap();
        assert!(c.receivers.tls_of("grpc", &c.receivers.grpc).is_none());
        assert!(!c.to_yaml().contains("tls"), "{}", c.to_yaml());
    }

    #[test]
    fn tls_problems_name_their_field() {
        let e = errors("  tls: {cert_file: /tls/tls.crt}\n");
        assert!(
            e.contains("receivers.tls.key_file: required with cert_file"),
            "{e}"
        );
        let e = errors("  tls: {key_file: /tls/tls.key}\n");
        assert!(e.contains("receivers.tls.cert_file: required"), "{e}");
        let e = errors("  tls: {cert_file: /c, key_file: /k, client_auth: required}\n");
        assert!(
            e.contains("receivers.tls.client_auth: required needs client_ca_file"),
            "{e}"
        );
        let e = errors("  tls: {cert_file: /c, key_file: /k, client_auth: optional}\n");
        assert!(
            e.contains("receivers.tls.client_auth: optional needs client_ca_file"),
            "{e}"
        );
        let e = errors(
            "  tls: {cert_file: /c, key_file: /k, client_ca_file: /ca, client_auth: none}\n",
        );
        assert!(
            e.contains("receivers.tls.client_auth: none, but client_ca_file is set"),
            "{e}"
        );
        let e = errors("  http: {endpoint: '0.0.0.0:4318', tls: {cert_file: '', key_file: /k}}\n");
        assert!(
            e.contains("receivers.http.tls.cert_file: must not be empty"),
            "{e}"
        );
        let e = errors("  tls: {cert_file: /c, key_file: /k, min_version: '1.1'}\n");
        assert!(e.contains("receivers.tls.min_version"), "{e}");
        assert!(e.contains("1.2") && e.contains("1.3"), "{e}");
        let e = errors("  tls: {cert_file: /c, key_file: /k, ca_file: /ca}\n");
        assert!(e.contains("receivers.tls") && e.contains("ca_file"), "{e}");
    }

    #[test]
    fn optional_client_auth_with_a_ca_is_valid() {
        let c = load(
            "  tls: {cert_file: /c, key_file: /k, client_ca_file: /ca, client_auth: optional}\n",
        )
        .unwrap();
        let tls: &ReceiverTlsConfig = c.receivers.tls.as_ref().unwrap();
        assert_eq!(tls.effective_client_auth(), crate::ClientAuth::Optional);
    }

    #[test]
    fn a_tls_change_keeps_the_listeners_and_limits() {
        let plain = load("").unwrap().receivers;
        let tls = load("  tls: {cert_file: /c, key_file: /k}\n")
            .unwrap()
            .receivers;
        assert!(plain.same_listeners_and_limits(&tls));
        let moved =
            load("  tls: {cert_file: /c, key_file: /k}\n  grpc: {endpoint: '0.0.0.0:5317'}\n")
                .unwrap()
                .receivers;
        assert!(!plain.same_listeners_and_limits(&moved));
        let next = plain.with_reloadable_of(&moved);
        assert_eq!(next.tls, moved.tls);
        assert_eq!(next.grpc.endpoint, "0.0.0.0:4317", "the listener stays");
        let delivered = load("  acknowledgements: delivered\n  acknowledgement_timeout: 3s\n")
            .unwrap()
            .receivers;
        assert!(plain.same_listeners_and_limits(&delivered));
        assert!(!plain.same_acknowledgements(&delivered));
        let next = plain.with_reloadable_of(&delivered);
        assert!(next.same_acknowledgements(&delivered), "taken at once");
    }
}
