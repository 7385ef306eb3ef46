//! The process-wide rustls crypto provider. Clients that build their TLS config from
//! rustls' process default (redis, lapin) need exactly one provider to be chosen; this
//! installs aws-lc-rs, the one every TLS client of the exporter is built with.

/// Installs aws-lc-rs as rustls' process default if none is installed yet. Cheap and
/// idempotent: call it before anything opens a TLS connection.
pub fn install_crypto_provider() {
    // Err means a provider is already installed (by us or a library): that one stays.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_default_provider_is_installed_and_a_second_call_is_harmless() {
        super::install_crypto_provider();
        super::install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
