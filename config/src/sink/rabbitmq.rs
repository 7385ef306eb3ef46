//! Settings of the RabbitMQ sink (`sinks.<name>.rabbitmq`): broker address, exchange,
//! routing key, encoding, message properties. Only the settings; `sinks::rabbitmq` implements them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Duration};

/// A RabbitMQ (AMQP 0-9-1) exchange. Each batch is published as one message (several when
/// it exceeds `max_message_bytes`, or one per span with `encoding: json`) with publisher
/// confirms: a batch counts as delivered only when the broker has confirmed every message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqSinkConfig {
    /// Broker host name or IP address, e.g. `rabbitmq.messaging.svc`.
    pub host: String,
    /// Broker port. Default: `5672`, or `5671` when `tls` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Virtual host. Default: `/`.
    #[serde(default = "RabbitMqSinkConfig::default_vhost")]
    pub vhost: String,
    /// User name. Default: `guest` (RabbitMQ lets `guest` in from loopback only).
    #[serde(default = "RabbitMqSinkConfig::default_username")]
    pub username: String,
    /// Name of the environment variable holding the password, e.g. `RABBITMQ_PASSWORD`
    /// (fill it from a Secret with `envFrom`). Unset: the password is `guest`, which is
    /// only accepted for the `guest` user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// TLS (`amqps`). Unset: plain AMQP. `tls: {}` verifies the broker against the
    /// system's CA certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RabbitMqTlsConfig>,
    /// Exchange messages are published to. The empty string is the default exchange,
    /// which routes by queue name (`routing_key` is then the queue). Unless `declare` is
    /// set, the exchange must exist: a missing one fails exports permanently.
    pub exchange: String,
    /// Routing key of every message. Default: empty.
    #[serde(default)]
    pub routing_key: String,
    /// Declare the exchange when connecting (idempotent when it exists with the same
    /// type and durability). Unset: the exchange is not declared and must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declare: Option<RabbitMqExchangeDeclaration>,
    /// Message format. Default: `otlp_proto`.
    #[serde(default)]
    pub encoding: RabbitMqEncoding,
    /// Persistent messages (`delivery_mode` 2): a durable queue keeps them across broker
    /// restarts. Default: `true`.
    #[serde(default = "crate::default_true")]
    pub persistent: bool,
    /// Publish with the `mandatory` flag: a message no queue is bound to receive is
    /// returned by the broker and the export fails permanently (reason `unroutable`), so
    /// a fallback sink gets the batch. With `false` such messages are silently dropped by
    /// the broker. Default: `true`.
    #[serde(default = "crate::default_true")]
    pub mandatory: bool,
    /// Largest message body published, in bytes. A batch whose encoding would be larger
    /// is split into several messages; a single span larger than this is never sent: it
    /// is dropped (counted in `spansink_sink_dropped_spans_total` with reason
    /// `message_too_large`) when the rest of its batch is delivered, and a batch of only
    /// such spans fails permanently. Keep it below the broker's `max_message_size`
    /// (128MiB by default). Default: `16MiB`.
    // Not nullable in the CRD: kube marks int-or-string fields nullable, but `null` here
    // would not deserialize, and one such object would break the operator's watch.
    #[schemars(extend("nullable" = false))]
    #[serde(default = "RabbitMqSinkConfig::default_max_message_bytes")]
    pub max_message_bytes: ByteSize,
    /// Longest wait for the TCP connection and AMQP handshake. Default: `10s`.
    #[serde(default = "RabbitMqSinkConfig::default_connect_timeout")]
    pub connect_timeout: Duration,
}

impl RabbitMqSinkConfig {
    fn default_vhost() -> String {
        "/".to_string()
    }
    fn default_username() -> String {
        "guest".to_string()
    }
    fn default_max_message_bytes() -> ByteSize {
        ByteSize::mib(16)
    }
    fn default_connect_timeout() -> Duration {
        Duration::from_secs(10)
    }

    /// A config for `host:port` and `exchange` with every other setting at its default.
    pub fn new(host: impl Into<String>, port: u16, exchange: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: Some(port),
            vhost: Self::default_vhost(),
            username: Self::default_username(),
            password_env: None,
            tls: None,
            exchange: exchange.into(),
            routing_key: String::new(),
            declare: None,
            encoding: RabbitMqEncoding::default(),
            persistent: true,
            mandatory: true,
            max_message_bytes: Self::default_max_message_bytes(),
            connect_timeout: Self::default_connect_timeout(),
        }
    }

    /// The port connected to: `port`, else the AMQP (5672) or AMQPS (5671) default.
    pub fn effective_port(&self) -> u16 {
        self.port
            .unwrap_or(if self.tls.is_some() { 5671 } else { 5672 })
    }
}

/// RabbitMQ message format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RabbitMqEncoding {
    /// One OTLP `ExportTraceServiceRequest` per message, protobuf-encoded
    /// (`content_type: application/x-protobuf`).
    #[default]
    OtlpProto,
    /// The same requests in the OTLP JSON mapping (`content_type: application/json`).
    OtlpJson,
    /// One span per message, as the flat JSON object the file sink writes per line
    /// (`content_type: application/json`): for consumers that want one span at a time.
    Json,
}

/// How the exchange is declared when `declare` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqExchangeDeclaration {
    /// Exchange type. Default: `topic`.
    #[serde(default, rename = "type")]
    pub kind: RabbitMqExchangeType,
    /// Survives broker restarts. Default: `true`.
    #[serde(default = "crate::default_true")]
    pub durable: bool,
}

impl Default for RabbitMqExchangeDeclaration {
    /// What `declare: {}` means: a durable topic exchange.
    fn default() -> Self {
        Self {
            kind: RabbitMqExchangeType::default(),
            durable: true,
        }
    }
}

/// AMQP exchange type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RabbitMqExchangeType {
    Direct,
    Fanout,
    #[default]
    Topic,
    Headers,
}

/// TLS to the broker. Files are PEM, typically mounted from a Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqTlsConfig {
    /// CA certificate(s) that signed the broker's certificate. Unset: the system's CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Client certificate chain, for mutual TLS. Set together with `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// Client private key (PKCS#8 PEM, unencrypted), for mutual TLS. Set together with
    /// `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}
