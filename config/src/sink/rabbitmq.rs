//! Settings of the RabbitMQ sink (`sinks.<name>.rabbitmq`): broker address, exchange,
//! routing key, encoding, message properties. Only the settings; `sinks::rabbitmq` implements them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Duration};
use crate::validate::{BackendAt, ValidateBackend, Validator};

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

impl ValidateBackend for RabbitMqSinkConfig {
    fn validate(&self, v: &mut Validator, at: &BackendAt<'_>) {
        let path = at.path.as_str();
        let r = self;
        let sink_timeout = at.sink_timeout;
        let sink_path = at.sink_path;
        let host_ok = !r.host.trim().is_empty() && !r.host.contains("://") && !r.host.contains('/');
        v.check(
            host_ok,
            format!("{path}.host"),
            format!("{:?} must be a host name or IP address (no scheme or path), e.g. rabbitmq.messaging.svc", r.host),
        );
        if r.port == Some(0) {
            v.error(format!("{path}.port"), "must be 1-65535");
        }
        // AMQP short strings are at most 255 bytes.
        for (field, value) in [
            ("vhost", &r.vhost),
            ("username", &r.username),
            ("exchange", &r.exchange),
            ("routing_key", &r.routing_key),
        ] {
            v.check(
                value.len() <= 255,
                format!("{path}.{field}"),
                format!("must be at most 255 bytes (got {})", value.len()),
            );
        }
        v.check(
            !r.username.is_empty(),
            format!("{path}.username"),
            "must not be empty",
        );
        match &r.password_env {
            Some(name) => v.env_name(format!("{path}.password_env"), name),
            None => v.check(
                r.username == "guest",
                format!("{path}.password_env"),
                format!(
                    "is required for user {:?}: name the environment variable holding the password, e.g. RABBITMQ_PASSWORD",
                    r.username
                ),
            ),
        }
        let exchange_ok = r
            .exchange
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        v.check(
            exchange_ok,
            format!("{path}.exchange"),
            format!(
                "{:?} is not an exchange name (letters, digits, '-', '_', '.', ':')",
                r.exchange
            ),
        );
        if r.exchange.is_empty() && r.routing_key.is_empty() {
            v.error(
                format!("{path}.routing_key"),
                "must name the target queue when exchange is the default exchange (\"\")",
            );
        }
        if r.declare.is_some() {
            v.check(
                !r.exchange.is_empty() && !r.exchange.starts_with("amq."),
                format!("{path}.declare"),
                "the default exchange and amq.* exchanges cannot be declared; unset declare",
            );
        }
        v.min_size(
            format!("{path}.max_message_bytes"),
            r.max_message_bytes,
            ByteSize::kib(1),
        );
        // RabbitMQ refuses larger messages whatever its max_message_size says.
        v.check(
            r.max_message_bytes <= ByteSize::mib(512),
            format!("{path}.max_message_bytes"),
            format!("must be at most 512MiB (got {})", r.max_message_bytes),
        );
        v.positive(
            &format!("{path}.connect_timeout"),
            r.connect_timeout.get().is_zero(),
        );
        v.check(
            r.connect_timeout.get() < sink_timeout.get(),
            format!("{path}.connect_timeout"),
            format!("must be shorter than {sink_path}.timeout ({sink_timeout})"),
        );
        if let Some(tls) = &r.tls {
            v.check(
                tls.cert_file.is_some() == tls.key_file.is_some(),
                format!("{path}.tls"),
                "cert_file and key_file must be set together (mutual TLS) or not at all",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::problems_of as errors;

    #[test]
    fn rabbitmq_settings_are_checked_with_their_paths() {
        assert!(
            errors(
                "sinks:\n  events:\n    rabbitmq: {host: rabbitmq.messaging.svc, exchange: spans, declare: {}}\n"
            )
            .is_empty()
        );
        let errs = errors(
            "sinks:\n  events:\n    timeout: 5s\n    rabbitmq:\n      host: 'amqp://rabbit'\n      port: 0\n      username: spansink\n      exchange: 'amq.topic'\n      declare: {type: direct}\n      max_message_bytes: 100\n      connect_timeout: 5s\n      tls: {cert_file: /tls/tls.crt}\n",
        );
        for expected in [
            "sinks.events.rabbitmq.host: \"amqp://rabbit\" must be a host name",
            "sinks.events.rabbitmq.port: must be 1-65535",
            "sinks.events.rabbitmq.password_env: is required for user \"spansink\"",
            "sinks.events.rabbitmq.declare: the default exchange and amq.* exchanges cannot be declared",
            "sinks.events.rabbitmq.max_message_bytes: must be at least 1KiB",
            "sinks.events.rabbitmq.connect_timeout: must be shorter than sinks.events.timeout (5s)",
            "sinks.events.rabbitmq.tls: cert_file and key_file must be set together",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(expected)),
                "missing {expected:?} in {errs:#?}"
            );
        }
        let errs = errors(
            "sinks:\n  events:\n    rabbitmq: {host: rabbit, exchange: 'bad name', password_env: 'my pw'}\n",
        );
        assert!(
            errs.iter().any(|e| e.starts_with(
                "sinks.events.rabbitmq.exchange: \"bad name\" is not an exchange name"
            )),
            "{errs:#?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with(
                "sinks.events.rabbitmq.password_env: \"my pw\" is not an environment variable name"
            )),
            "{errs:#?}"
        );
        let errs = errors("sinks:\n  events:\n    rabbitmq: {host: rabbit, exchange: ''}\n");
        assert!(
            errs.iter()
                .any(|e| e
                    .starts_with("sinks.events.rabbitmq.routing_key: must name the target queue")),
            "{errs:#?}"
        );
    }
}
