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

/// The problems with the TLS files of the enabled listeners in `receivers`: what would
/// stop the exporter from starting, found without starting it (`validate`). One error
/// per block, even when both listeners share it.
pub fn check_files(receivers: &ReceiversConfig) -> Vec<TlsError> {
    let mut checked: Vec<TlsSettings> = Vec::new();
    let mut errors = Vec::new();
    for (protocol, enabled) in [
        (Protocol::grpc, receivers.grpc.enabled),
        (Protocol::http, receivers.http.enabled),
    ] {
        let Some(settings) = TlsSettings::of(receivers, protocol).filter(|_| enabled) else {
            continue;
        };
        if checked.contains(&settings) {
            continue;
        }
        if let Err(e) = settings.check_files(protocol) {
            errors.push(e);
        }
        checked.push(settings);
    }
    errors
}

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

    /// Whether this block's files can be read and make a server config, as at start.
    pub fn check_files(&self, protocol: Protocol) -> Result<(), TlsError> {
        files::TlsFiles::read(self)?.server_config(self, protocol)?;
        Ok(())
    }

    /// The field path of `field` in this block, e.g. `receivers.tls.cert_file`.
    fn field(&self, field: &str) -> String {
        format!("{}.{field}", self.path)
    }
}
