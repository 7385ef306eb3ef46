//! Reads one listener's certificate, key and client CA files and builds the rustls server
//! config they describe (aws-lc-rs, the process's one provider). Not when to read them
//! again (`rotation`).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use spansink_config::{ClientAuth, TlsVersion};

use super::TlsSettings;
use crate::telemetry::metrics::Protocol;

/// A listener's TLS files could not be used. Every variant names the config field and
/// the file, so the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{field}: not set")]
    Missing { field: String },
    #[error(
        "{field}: cannot read {file}: {source}; mount the certificate Secret there or fix the path"
    )]
    Read {
        field: String,
        file: String,
        source: std::io::Error,
    },
    #[error("{field}: {file} is not valid PEM: {message}")]
    Pem {
        field: String,
        file: String,
        message: String,
    },
    #[error("{field}: {file} holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)")]
    NoCertificate { field: String, file: String },
    #[error(
        "{field}: {file} holds no private key (expected a PEM PKCS#8, PKCS#1 or SEC1 key block)"
    )]
    NoKey { field: String, file: String },
    #[error("{field}: {file} cannot be used as the key of cert_file: {message}")]
    Key {
        field: String,
        file: String,
        message: String,
    },
    #[error("{field}: {file} holds a certificate that cannot be parsed: {message}")]
    Certificate {
        field: String,
        file: String,
        message: String,
    },
    #[error("{field}: not supported by the TLS library: {message}")]
    Unsupported { field: String, message: String },
    #[error("{field}: {file} cannot be used to check client certificates: {message}")]
    ClientCa {
        field: String,
        file: String,
        message: String,
    },
}

impl TlsError {
    /// The file the error is about (empty if no file was named).
    pub fn file(&self) -> &str {
        match self {
            Self::Missing { .. } | Self::Unsupported { .. } => "",
            Self::Read { file, .. }
            | Self::Pem { file, .. }
            | Self::NoCertificate { file, .. }
            | Self::NoKey { file, .. }
            | Self::Key { file, .. }
            | Self::Certificate { file, .. }
            | Self::ClientCa { file, .. } => file,
        }
    }
}

/// The contents of one TLS block's files, read at one moment. Compared with the next
/// read to tell whether anything changed: a Secret volume update swaps a `..data`
/// symlink and cert-manager may rewrite a file with the same mtime, so the content is
/// the reliable signal. No `Debug`: it holds the private key.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct TlsFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// A server config ready to accept handshakes, and when its certificate expires.
pub(super) struct LoadedTls {
    pub config: Arc<ServerConfig>,
    /// The leaf certificate's not-after time, in Unix seconds.
    pub not_after: i64,
}

/// One file named by a TLS block: the field that names it and its path.
struct NamedFile<'a> {
    field: String,
    file: &'a str,
}

impl NamedFile<'_> {
    fn read(&self) -> Result<Vec<u8>, TlsError> {
        std::fs::read(self.file).map_err(|source| TlsError::Read {
            field: self.field.clone(),
            file: self.file.to_string(),
            source,
        })
    }

    fn pem_error(&self, error: rustls::pki_types::pem::Error) -> TlsError {
        TlsError::Pem {
            field: self.field.clone(),
            file: self.file.to_string(),
            message: error.to_string(),
        }
    }

    fn certificates(&self, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certificates = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.pem_error(e))?;
        if certificates.is_empty() {
            return Err(TlsError::NoCertificate {
                field: self.field.clone(),
                file: self.file.to_string(),
            });
        }
        Ok(certificates)
    }
}

fn named<'a>(
    settings: &TlsSettings,
    field: &str,
    file: Option<&'a String>,
) -> Result<NamedFile<'a>, TlsError> {
    let field = settings.field(field);
    match file {
        Some(file) => Ok(NamedFile { field, file }),
        None => Err(TlsError::Missing { field }),
    }
}

impl TlsFiles {
    /// Reads the files `settings` names.
    pub(super) fn read(settings: &TlsSettings) -> Result<Self, TlsError> {
        let c = &settings.config;
        let cert = named(settings, "cert_file", c.cert_file.as_ref())?.read()?;
        let key = named(settings, "key_file", c.key_file.as_ref())?.read()?;
        let client_ca = match &c.client_ca_file {
            Some(file) => Some(named(settings, "client_ca_file", Some(file))?.read()?),
            None => None,
        };
        Ok(Self {
            cert,
            key,
            client_ca,
        })
    }

    /// Builds the server config for `protocol`'s listener from these contents.
    pub(super) fn server_config(
        &self,
        settings: &TlsSettings,
        protocol: Protocol,
    ) -> Result<LoadedTls, TlsError> {
        let c = &settings.config;
        let cert_file = named(settings, "cert_file", c.cert_file.as_ref())?;
        let key_file = named(settings, "key_file", c.key_file.as_ref())?;
        let chain = cert_file.certificates(&self.cert)?;
        let not_after = not_after(&cert_file, &chain[0])?;
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
                field: key_file.field.clone(),
                file: key_file.file.to_string(),
            },
            other => key_file.pem_error(other),
        })?;

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&SupportedProtocolVersion] = match c.min_version {
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
        };
        // Cannot fail with aws-lc-rs, which has suites for both versions; named anyway.
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Unsupported {
                field: settings.field("min_version"),
                message: e.to_string(),
            })?;
        let builder = match (c.effective_client_auth(), &self.client_ca) {
            (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
            (auth, Some(pem)) => {
                let ca_file = named(settings, "client_ca_file", c.client_ca_file.as_ref())?;
                builder.with_client_cert_verifier(client_verifier(&ca_file, pem, auth, provider)?)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Key {
                field: key_file.field.clone(),
                file: key_file.file.to_string(),
                message: e.to_string(),
            })?;
        config.alpn_protocols = vec![alpn(protocol).to_vec()];
        Ok(LoadedTls {
            config: Arc::new(config),
            not_after,
        })
    }
}

/// The application protocol each listener speaks: gRPC needs HTTP/2 (and its clients
/// check the server chose `h2`); the HTTP receiver serves HTTP/1.1.
fn alpn(protocol: Protocol) -> &'static [u8] {
    match protocol {
        Protocol::grpc => b"h2",
        Protocol::http => b"http/1.1",
    }
}

fn client_verifier(
    ca_file: &NamedFile<'_>,
    pem: &[u8],
    auth: ClientAuth,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let error = |message: String| TlsError::ClientCa {
        field: ca_file.field.clone(),
        file: ca_file.file.to_string(),
        message,
    };
    let mut roots = RootCertStore::empty();
    for certificate in ca_file.certificates(pem)? {
        roots.add(certificate).map_err(|e| error(e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let verifier = match auth {
        ClientAuth::Optional => verifier.allow_unauthenticated(),
        ClientAuth::Required | ClientAuth::None => verifier,
    };
    verifier.build().map_err(|e| error(e.to_string()))
}

fn not_after(cert_file: &NamedFile<'_>, leaf: &CertificateDer<'_>) -> Result<i64, TlsError> {
    let (_, certificate) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| TlsError::Certificate {
            field: cert_file.field.clone(),
            file: cert_file.file.to_string(),
            message: e.to_string(),
        })?;
    Ok(certificate.validity().not_after.timestamp())
}
