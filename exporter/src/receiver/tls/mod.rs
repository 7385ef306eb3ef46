//! TLS on the OTLP listeners: which settings a listener serves with ([`TlsSettings`]),
//! reading the PEM files into a rustls config (`files`), keeping it current as the files
//! or the config change (`rotation`, [`ServerTls`]), and accepting connections with a
//! handshake per connection in its own task (`listener`, [`TlsListener`]). Both
//! receivers use it the same way. Not the crypto provider (`crate::tls`) nor anything
//! about requests: a connection is fully TLS before a receiver sees it.
//!
//! Metrics (`spansink_receiver_tls_*`, label `protocol`): `reloads{result}`,
//! `certificate_expiry_timestamp_seconds` (the served certificate's not-after time),
//! `handshake_failures{reason}`.

mod files;
mod listener;
mod rotation;

use spansink_config::{ReceiverTlsConfig, ReceiversConfig};

use crate::telemetry::metrics::Protocol;

pub use files::TlsError;
pub use listener::{Connection, TlsListener};
pub use rotation::ServerTls;

/// The TLS block one listener serves with, and the field path it was configured at
/// (`receivers.tls` or `receivers.<listener>.tls`), which errors name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub path: String,
    pub config: ReceiverTlsConfig,
}

impl TlsSettings {
    /// The settings of `protocol`'s listener in `receivers`; `None` means plaintext.
    pub fn of(receivers: &ReceiversConfig, protocol: Protocol) -> Option<Self> {
        let (name, listener) = match protocol {
            Protocol::grpc => ("grpc", &receivers.grpc),
            Protocol::http => ("http", &receivers.http),
        };
        receivers.tls_of(name, listener).map(|(path, config)| Self {
            path,
            config: config.clone(),
        })
    }

    /// The field path of `field` in this block, e.g. `receivers.tls.cert_file`.
    fn field(&self, field: &str) -> String {
        format!("{}.{field}", self.path)
    }
}
