//! TLS of the PostgreSQL connection (`tls: require | verify-full`, `ca_file`, `cert_file`,
//! `key_file`): the rustls client config, built from the files again for every new
//! connection, so a Secret renewed on disk reaches new connections without a restart.
//! Not the pool or the statements (`mod.rs`); not the receiver's TLS.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use spansink_config::{PostgresSinkConfig, PostgresTlsMode};
use tokio_postgres::Socket;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Why the TLS files cannot be used; each names the config field and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsFilesError {
    #[error(
        "postgres.{field}: cannot read {path}: {source}; mount the file (a SpanSink's secretMounts) or fix the path"
    )]
    Read {
        field: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("postgres.{field}: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { field: &'static str, path: String },
    #[error("postgres.{field}: {path} is not valid PEM: {message}")]
    Pem {
        field: &'static str,
        path: String,
        message: String,
    },
    #[error(
        "postgres.ca_file: {path}: {message}; give the CA certificate(s) that signed the server's"
    )]
    BadCa { path: String, message: String },
    #[error(
        "postgres.key_file: {path} holds no private key (PEM PKCS#8, PKCS#1 or SEC1, unencrypted)"
    )]
    NoKey { path: String },
    #[error("postgres.cert_file and key_file: {message}; give the certificate and its own key")]
    ClientCert { message: String },
    #[error(
        "postgres.tls: verify-full without ca_file checks the server against the system's CAs, and none could be loaded ({message}); set ca_file"
    )]
    NoSystemRoots { message: String },
}

/// The TLS connector of a sink with `tls: require` or `verify-full`: it reads the files
/// for each new connection (cheap next to a TLS handshake, and connections are pooled).
#[derive(Clone)]
pub struct PostgresTls {
    settings: Arc<Settings>,
}

struct Settings {
    /// `verify-full`; otherwise `require`.
    verify_full: bool,
    ca_file: Option<String>,
    client: Option<(String, String)>,
    /// The system's CAs, for `verify-full` without `ca_file`: loaded once, at build (they
    /// come with the image, not from a Secret).
    system_roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl PostgresTls {
    /// The connector for `config`, or `None` for `tls: disable`. The files are read once
    /// now, so a wrong path fails the sink's build and not only its exports.
    pub fn new(config: &PostgresSinkConfig) -> Result<Option<Self>, TlsFilesError> {
        if config.tls == PostgresTlsMode::Disable {
            return Ok(None);
        }
        let system_roots = match (config.tls, &config.ca_file) {
            (PostgresTlsMode::VerifyFull, None) => Some(Arc::new(system_roots()?)),
            _ => None,
        };
        let tls = Self {
            settings: Arc::new(Settings {
                verify_full: config.tls == PostgresTlsMode::VerifyFull,
                ca_file: config.ca_file.clone(),
                client: config.cert_file.clone().zip(config.key_file.clone()),
                system_roots,
                // The workspace's one provider, named here rather than taken from the
                // process default, so this does not depend on start-up order.
                provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            }),
        };
        tls.client_config()?;
        Ok(Some(tls))
    }

    /// A rustls client config from the files as they are now.
    fn client_config(&self) -> Result<ClientConfig, TlsFilesError> {
        let s = &self.settings;
        let builder = ClientConfig::builder_with_provider(s.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsFilesError::ClientCert {
                message: format!("no TLS version in common with the crypto provider: {e}"),
            })?;
        let builder = if s.verify_full {
            {
                let roots = match (&s.ca_file, &s.system_roots) {
                    (Some(path), _) => Arc::new(ca_roots(path)?),
                    (None, Some(roots)) => roots.clone(),
                    (None, None) => Arc::new(system_roots()?),
                };
                // Chain and host name (DNS name or IP address), as libpq's verify-full.
                builder.with_root_certificates(roots)
            }
        } else {
            // Encrypted, the certificate taken as it comes: libpq's sslmode=require.
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                    algorithms: s.provider.signature_verification_algorithms,
                }))
        };
        match &s.client {
            None => Ok(builder.with_no_client_auth()),
            Some((cert_file, key_file)) => {
                let chain = certificates("cert_file", cert_file)?;
                let key = private_key(key_file)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsFilesError::ClientCert {
                        message: e.to_string(),
                    })
            }
        }
    }
}

impl MakeTlsConnect<Socket> for PostgresTls {
    type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
    type Error = TlsFilesError;

    fn make_tls_connect(&mut self, host: &str) -> Result<Self::TlsConnect, TlsFilesError> {
        let mut connect = MakeRustlsConnect::new(self.client_config()?);
        // The host as configured is the name checked against the certificate.
        match <MakeRustlsConnect as MakeTlsConnect<Socket>>::make_tls_connect(&mut connect, host) {
            Ok(connect) => Ok(connect),
            Err(never) => match never {},
        }
    }
}

fn read(field: &'static str, path: &str) -> Result<Vec<u8>, TlsFilesError> {
    std::fs::read(Path::new(path)).map_err(|source| TlsFilesError::Read {
        field,
        path: path.to_string(),
        source,
    })
}

/// Every certificate of a PEM file; at least one.
fn certificates(
    field: &'static str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsFilesError> {
    let pem = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsFilesError::Pem {
            field,
            path: path.to_string(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsFilesError::NoCertificate {
            field,
            path: path.to_string(),
        });
    }
    Ok(certs)
}

fn ca_roots(path: &str) -> Result<RootCertStore, TlsFilesError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("ca_file", path)? {
        roots.add(cert).map_err(|e| TlsFilesError::BadCa {
            path: path.to_string(),
            message: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn private_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsFilesError> {
    let pem = read("key_file", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsFilesError::NoKey {
            path: path.to_string(),
        },
        e => TlsFilesError::Pem {
            field: "key_file",
            path: path.to_string(),
            message: e.to_string(),
        },
    })
}

fn system_roots() -> Result<RootCertStore, TlsFilesError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let message = found
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(TlsFilesError::NoSystemRoots {
            message: if message.is_empty() {
                "the system's CA store is empty".into()
            } else {
                message
            },
        });
    }
    Ok(roots)
}

/// `tls: require`: any certificate is accepted, as by libpq's `sslmode=require`. The
/// handshake signatures are still checked against the certificate's key, so the session
/// keys are the holder's of that (unverified) certificate.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml_tls: &str) -> PostgresSinkConfig {
        serde_yaml::from_str(&format!(
            "{{host: 127.0.0.1, database: d, user: u, {yaml_tls}}}"
        ))
        .unwrap()
    }

    #[test]
    fn disable_needs_no_connector_and_require_needs_no_files() {
        assert!(PostgresTls::new(&config("tls: disable")).unwrap().is_none());
        assert!(PostgresTls::new(&config("tls: require")).unwrap().is_some());
    }

    #[test]
    fn unreadable_or_empty_files_are_refused_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no PEM here\n").unwrap();
        let empty = empty.display().to_string();
        for (tls, expected) in [
            (
                "tls: verify-full, ca_file: /nonexistent/ca.crt".to_string(),
                "postgres.ca_file: cannot read /nonexistent/ca.crt: No such file",
            ),
            (
                format!("tls: verify-full, ca_file: {empty}"),
                "postgres.ca_file: ",
            ),
            (
                format!("tls: require, cert_file: {empty}, key_file: {empty}"),
                "postgres.cert_file: ",
            ),
        ] {
            let err = PostgresTls::new(&config(&tls)).err().unwrap().to_string();
            assert!(err.starts_with(expected), "{tls}: {err}");
        }
    }
}
