//! The AMQP connection of the RabbitMQ sink: how to open it (address, credentials, TLS,
//! confirm mode, optional exchange declaration) and what its errors mean. Not publishing.

use std::time::Duration;

use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind, ExchangeKind};
use spansink_config::{RabbitMqExchangeType, RabbitMqSinkConfig};

use crate::sinks::SinkError;

use crate::sinks::EnvLookup;

/// Everything needed to (re)connect, resolved once when the sink is built: the password
/// from its environment variable and the TLS files, so a missing one is a build error.
#[derive(Clone)]
pub struct ConnectionSettings {
    uri: AMQPUri,
    tls: OwnedTLSConfig,
    connection_name: String,
    declare: Option<(String, RabbitMqExchangeType, bool)>,
    connect_timeout: Duration,
}

// Hand-written so the password in `uri` never reaches a log line.
impl std::fmt::Debug for ConnectionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSettings")
            .field("address", &self.address())
            .field("user", &self.uri.authority.userinfo.username)
            .finish_non_exhaustive()
    }
}

impl ConnectionSettings {
    /// Resolves `config` for sink `sink_name`; the error says which variable or file is missing.
    pub fn resolve(
        sink_name: &str,
        config: &RabbitMqSinkConfig,
        env: EnvLookup<'_>,
    ) -> Result<Self, String> {
        let password = match &config.password_env {
            Some(name) => env(name).ok_or_else(|| {
                format!(
                    "environment variable {name} (rabbitmq.password_env) is not set; set it, e.g. from a Secret with envFrom"
                )
            })?,
            // RabbitMQ's built-in account; validation requires password_env for any other user.
            None => "guest".to_string(),
        };
        let read = |path: &str, field: &str| {
            std::fs::read(path).map_err(|e| format!("cannot read rabbitmq.tls.{field} {path}: {e}"))
        };
        let mut tls = OwnedTLSConfig::default();
        if let Some(t) = &config.tls {
            crate::tls::install_crypto_provider();
            if let Some(ca) = &t.ca_file {
                let pem = read(ca, "ca_file")?;
                tls.cert_chain = Some(
                    String::from_utf8(pem)
                        .map_err(|_| format!("rabbitmq.tls.ca_file {ca} is not PEM text"))?,
                );
            }
            if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
                tls.identity = Some(OwnedIdentity::PKCS8 {
                    pem: read(cert, "cert_file")?,
                    key: read(key, "key_file")?,
                });
            }
        }
        let uri = AMQPUri {
            scheme: if config.tls.is_some() {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: config.username.clone(),
                    password,
                },
                host: config.host.clone(),
                port: config.effective_port(),
            },
            vhost: config.vhost.clone(),
            query: AMQPQueryString::default(),
        };
        Ok(Self {
            uri,
            tls,
            connection_name: format!("spansink/{sink_name}"),
            declare: config
                .declare
                .as_ref()
                .map(|d| (config.exchange.clone(), d.kind, d.durable)),
            connect_timeout: config.connect_timeout.get(),
        })
    }

    /// `amqp[s]://host:port/vhost`, for logs (no credentials).
    pub fn address(&self) -> String {
        let scheme = match self.uri.scheme {
            AMQPScheme::AMQP => "amqp",
            AMQPScheme::AMQPS => "amqps",
        };
        let a = &self.uri.authority;
        format!("{scheme}://{}:{}/{}", a.host, a.port, self.uri.vhost)
    }

    /// Opens a connection and a channel in confirm mode, declaring the exchange when
    /// configured. Each step's failure is classified; the whole is bounded by
    /// `connect_timeout`.
    pub async fn open(&self) -> Result<Publisher, SinkError> {
        match tokio::time::timeout(self.connect_timeout, self.open_unbounded()).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::transient(
                "connect",
                format!(
                    "no AMQP connection to {} within rabbitmq.connect_timeout ({:?})",
                    self.address(),
                    self.connect_timeout
                ),
            )),
        }
    }

    async fn open_unbounded(&self) -> Result<Publisher, SinkError> {
        let properties = ConnectionProperties::default()
            .with_connection_name(self.connection_name.clone().into());
        let runtime = lapin::runtime::default_runtime().map_err(|e| classify(&e, "connect"))?;
        let connection = Connection::connect_uri_with_config(
            self.uri.clone(),
            properties,
            self.tls.clone(),
            runtime,
        )
        .await
        .map_err(|e| classify(&e, "connect"))?;
        let channel = match self.open_channel(&connection).await {
            Ok(channel) => channel,
            Err(e) => {
                // Not leaking the TCP connection when only the channel failed.
                let _ = connection
                    .close(200, "spansink: channel setup failed".into())
                    .await;
                return Err(e);
            }
        };
        Ok(Publisher {
            connection,
            channel,
        })
    }

    async fn open_channel(&self, connection: &Connection) -> Result<Channel, SinkError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| classify(&e, "channel"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| classify(&e, "confirm_select"))?;
        if let Some((exchange, kind, durable)) = &self.declare {
            let kind = match kind {
                RabbitMqExchangeType::Direct => ExchangeKind::Direct,
                RabbitMqExchangeType::Fanout => ExchangeKind::Fanout,
                RabbitMqExchangeType::Topic => ExchangeKind::Topic,
                RabbitMqExchangeType::Headers => ExchangeKind::Headers,
            };
            let options = ExchangeDeclareOptions {
                durable: *durable,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    kind,
                    options,
                    FieldTable::default(),
                )
                .await
                .map_err(|e| classify(&e, "exchange_declare"))?;
        }
        Ok(channel)
    }
}

/// An open connection and its confirm-mode channel. Concurrent exports share it: AMQP
/// channels multiplex publishes, and confirms are matched by delivery tag.
pub struct Publisher {
    pub connection: Connection,
    pub channel: Channel,
}

impl Publisher {
    /// Whether both the connection and the channel can still publish. A channel the
    /// broker closed (e.g. after a 404 on publish) or a dropped connection cannot.
    pub fn is_usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Closes the channel and the connection politely; errors only mean it was gone already.
    pub async fn close(&self) {
        if self.channel.status().connected() {
            let _ = self.channel.close(200, "spansink: shutdown".into()).await;
        }
        if self.connection.status().connected() {
            let _ = self
                .connection
                .close(200, "spansink: shutdown".into())
                .await;
        }
    }
}

/// Transient or permanent, decided from lapin's error. `step` names what was attempted
/// (`connect`, `publish`, `confirm`, ...) for the message. AMQP reply codes that a retry
/// cannot change (access refused, not found, a precondition such as an exchange declared
/// with another type, a bad vhost, an oversized message) are permanent; lost connections,
/// closed channels, I/O errors and anything unknown are transient: a wrong "transient"
/// costs bounded retries, a wrong "permanent" sends deliverable data to the fallback.
pub fn classify(error: &lapin::Error, step: &str) -> SinkError {
    let message = format!("RabbitMQ {step}: {error}");
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => {
            let permanent = match amqp.kind() {
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => Some("access_refused"),
                AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => Some("not_found"),
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => Some("precondition"),
                AMQPErrorKind::Soft(AMQPSoftError::CONTENTTOOLARGE) => Some("message_too_large"),
                // A vhost that does not exist, or one the user may not use.
                AMQPErrorKind::Hard(AMQPHardError::INVALIDPATH | AMQPHardError::NOTALLOWED) => {
                    Some("access_refused")
                }
                AMQPErrorKind::Hard(AMQPHardError::NOTIMPLEMENTED) => Some("rejected"),
                _ => None,
            };
            match permanent {
                Some(reason) => SinkError::permanent(reason, message),
                None => SinkError::transient("amqp", message),
            }
        }
        ErrorKind::InvalidProtocolVersion(_) => SinkError::permanent("rejected", message),
        ErrorKind::IOError(_) | ErrorKind::RuntimeShutdownError(_) => {
            SinkError::transient("io", message)
        }
        ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidChannel(_)
        | ErrorKind::MissingHeartbeatError => SinkError::transient("unavailable", message),
        _ => SinkError::transient("amqp", message),
    }
}

#[cfg(test)]
mod tests {
    use lapin::protocol::AMQPError;
    use spansink_config::{RabbitMqExchangeDeclaration, RabbitMqTlsConfig};

    use super::*;

    fn amqp(kind: AMQPErrorKind) -> lapin::Error {
        ErrorKind::ProtocolError(AMQPError::new(kind, "reply text".into())).into()
    }

    #[test]
    fn reply_codes_that_cannot_change_are_permanent() {
        for (kind, reason) in [
            (
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED),
                "access_refused",
            ),
            (AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND), "not_found"),
            (
                AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED),
                "precondition",
            ),
            (
                AMQPErrorKind::Soft(AMQPSoftError::CONTENTTOOLARGE),
                "message_too_large",
            ),
            (
                AMQPErrorKind::Hard(AMQPHardError::INVALIDPATH),
                "access_refused",
            ),
            (
                AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED),
                "access_refused",
            ),
        ] {
            let e = classify(&amqp(kind.clone()), "publish");
            assert!(!e.is_transient(), "{kind:?}: {e}");
            assert_eq!(e.reason(), reason, "{kind:?}");
            assert!(e.to_string().starts_with("RabbitMQ publish: "), "{e}");
        }
    }

    #[test]
    fn lost_connections_and_broker_trouble_are_transient() {
        for kind in [
            AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED),
            AMQPErrorKind::Hard(AMQPHardError::RESOURCEERROR),
            AMQPErrorKind::Hard(AMQPHardError::INTERNALERROR),
            AMQPErrorKind::Soft(AMQPSoftError::RESOURCELOCKED),
        ] {
            let e = classify(&amqp(kind.clone()), "confirm");
            assert!(e.is_transient(), "{kind:?}: {e}");
        }
        let reset: lapin::Error =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into();
        assert_eq!(classify(&reset, "publish").reason(), "io");
        assert!(classify(&reset, "publish").is_transient());
        let closed: lapin::Error =
            ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed).into();
        assert_eq!(classify(&closed, "publish").reason(), "unavailable");
        let heartbeat: lapin::Error = ErrorKind::MissingHeartbeatError.into();
        assert!(classify(&heartbeat, "publish").is_transient());
    }

    #[test]
    fn settings_resolve_credentials_tls_and_port() {
        let mut config = RabbitMqSinkConfig::new("rabbit", 5672, "spans");
        config.port = None;
        config.username = "spansink".into();
        config.password_env = Some("RABBITMQ_PASSWORD".into());
        config.vhost = "tracing".into();
        config.declare = Some(RabbitMqExchangeDeclaration::default());
        let env = |name: &str| (name == "RABBITMQ_PASSWORD").then(|| "s3cret".to_string());
        let settings = ConnectionSettings::resolve("events", &config, &env).unwrap();
        assert_eq!(settings.address(), "amqp://rabbit:5672/tracing");
        assert_eq!(settings.uri.authority.userinfo.password, "s3cret");
        assert_eq!(settings.connection_name, "spansink/events");
        assert!(!format!("{settings:?}").contains("s3cret"));
        assert_eq!(
            settings.declare,
            Some(("spans".to_string(), RabbitMqExchangeType::Topic, true))
        );

        let no_env = |_: &str| None;
        let err = ConnectionSettings::resolve("events", &config, &no_env).unwrap_err();
        assert!(
            err.starts_with("environment variable RABBITMQ_PASSWORD"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        config.tls = Some(RabbitMqTlsConfig {
            ca_file: Some(ca.display().to_string()),
            ..RabbitMqTlsConfig::default()
        });
        let settings = ConnectionSettings::resolve("events", &config, &env).unwrap();
        assert_eq!(settings.address(), "amqps://rabbit:5671/tracing");
        assert!(settings.tls.cert_chain.is_some());
        config.tls = Some(RabbitMqTlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..RabbitMqTlsConfig::default()
        });
        let err = ConnectionSettings::resolve("events", &config, &env).unwrap_err();
        assert!(
            err.starts_with("cannot read rabbitmq.tls.ca_file /nonexistent/ca.pem"),
            "{err}"
        );
    }
}
