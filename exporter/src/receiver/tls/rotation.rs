//! Keeps a listener's TLS config current: the certificate, key and client CA files are
//! read again every poll and on a config reload, and a new rustls config replaces the
//! served one when their content (or the TLS block) changed. Handshakes already done keep
//! the config they started with, so open connections are never dropped. A change that
//! does not load leaves the served config in place. Not the handshakes (`listener`).

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use super::TlsSettings;
use super::files::{TlsError, TlsFiles};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{Protocol, ProtocolLabels, ProtocolResultLabels, RefusedLabels};

/// One listener's TLS: the rustls config new connections get (`None`: plaintext) and the
/// settings it is kept current with. Shared by the listener, its poller and the config
/// reloader.
pub struct ServerTls {
    protocol: Protocol,
    metrics: Metrics,
    serving: RwLock<Option<Arc<ServerConfig>>>,
    wanted: Mutex<Wanted>,
}

/// What the served config should be built from, and what the last attempt saw.
struct Wanted {
    settings: Option<TlsSettings>,
    /// The settings and file contents (or the read error) last tried: the same again is
    /// not tried again, so one bad file is logged and counted once, not every poll.
    last_attempt: Option<(Option<TlsSettings>, Result<TlsFiles, String>)>,
}

impl ServerTls {
    /// Loads `settings` for `protocol`'s listener (`None`: plaintext). Fails if the files
    /// do not load: a listener does not start with TLS it cannot serve.
    pub fn load(
        protocol: Protocol,
        settings: Option<TlsSettings>,
        metrics: Metrics,
    ) -> Result<Arc<Self>, TlsError> {
        let tls = Self {
            protocol,
            metrics,
            serving: RwLock::new(None),
            wanted: Mutex::new(Wanted {
                settings: None,
                last_attempt: None,
            }),
        };
        if let Some(s) = &settings {
            let files = TlsFiles::read(s)?;
            let loaded = files.server_config(s, protocol)?;
            tls.serve(Some(loaded.config));
            tls.record_expiry(s, loaded.not_after);
            tracing::info!(
                protocol = %protocol, settings = %s.path,
                cert_file = %s.config.cert_file.as_deref().unwrap_or_default(),
                client_auth = %s.config.effective_client_auth().as_str(),
                not_after = loaded.not_after,
                "receiver serves TLS"
            );
            let mut wanted = tls.lock_wanted();
            wanted.last_attempt = Some((settings.clone(), Ok(files)));
            wanted.settings = settings;
        }
        Ok(Arc::new(tls))
    }

    /// The listener this TLS belongs to.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The config a connection accepted now handshakes with; `None`: plaintext.
    pub fn serving(&self) -> Option<Arc<ServerConfig>> {
        self.serving
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Switches to `settings` (a config reload changed the TLS block; `None`: plaintext
    /// from now on) and loads them at once. If they do not load, the served config stays
    /// and the poller tries again when the files change.
    pub fn reconfigure(&self, settings: Option<TlsSettings>) {
        self.lock_wanted().settings = settings;
        self.refresh();
    }

    /// Polls the files every `interval` until `stop`, serving their new content when it
    /// changed and loads.
    pub async fn watch(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.refresh(),
            }
        }
    }

    /// Reads the wanted settings' files and, if they or the settings differ from the
    /// last attempt, builds and serves a new config (or keeps the old one, counted and
    /// logged, if that fails).
    pub fn refresh(&self) {
        let mut wanted = self.lock_wanted();
        let settings = wanted.settings.clone();
        let files = settings
            .as_ref()
            .map(|s| TlsFiles::read(s).map_err(|e| (e.to_string(), e)));
        let seen = files.as_ref().map(|f| match f {
            Ok(files) => Ok(files.clone()),
            Err((message, _)) => Err(message.clone()),
        });
        let attempt = (settings.clone(), seen.unwrap_or(Err(String::new())));
        if wanted.last_attempt.as_ref() == Some(&attempt) {
            return;
        }
        // The lock stays held to the end: a reload and a poll must not serve out of order.
        wanted.last_attempt = Some(attempt);

        let (settings, files) = match (settings, files) {
            (Some(s), Some(f)) => (s, f),
            _ => return self.serve_plaintext(),
        };
        let loaded = files
            .map_err(|(_, e)| e)
            .and_then(|f| f.server_config(&settings, self.protocol));
        match loaded {
            Ok(loaded) => {
                self.serve(Some(loaded.config));
                self.record_expiry(&settings, loaded.not_after);
                self.count("success");
                tracing::info!(
                    protocol = %self.protocol, settings = %settings.path,
                    cert_file = %settings.config.cert_file.as_deref().unwrap_or_default(),
                    client_auth = %settings.config.effective_client_auth().as_str(),
                    not_after = loaded.not_after,
                    "receiver TLS reloaded: new connections get the new certificate"
                );
            }
            Err(e) => {
                self.count("failure");
                tracing::warn!(
                    protocol = %self.protocol, file = %e.file(), error = %e,
                    "receiver TLS files changed but do not load; the previous certificate is still served"
                );
            }
        }
    }

    fn serve_plaintext(&self) {
        if self.serving().is_none() {
            return;
        }
        self.serve(None);
        self.metrics
            .receiver_tls_certificate_expiry
            .remove(&ProtocolLabels {
                protocol: self.protocol,
            });
        self.count("success");
        tracing::info!(protocol = %self.protocol, "receiver TLS turned off: new connections are plaintext");
    }

    fn serve(&self, config: Option<Arc<ServerConfig>>) {
        *self.serving.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    fn record_expiry(&self, settings: &TlsSettings, not_after: i64) {
        self.metrics
            .receiver_tls_certificate_expiry
            .get_or_create(&ProtocolLabels {
                protocol: self.protocol,
            })
            .set(not_after);
        if not_after < chrono::Utc::now().timestamp() {
            tracing::warn!(
                protocol = %self.protocol,
                cert_file = %settings.config.cert_file.as_deref().unwrap_or_default(),
                not_after,
                "the receiver's TLS certificate has expired: clients will refuse it"
            );
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .receiver_tls_reloads
            .get_or_create(&ProtocolResultLabels {
                protocol: self.protocol,
                result,
            })
            .inc();
    }

    /// Counts a handshake that failed, by `reason`.
    pub(super) fn count_handshake_failure(&self, reason: &'static str) {
        self.metrics
            .receiver_tls_handshake_failures
            .get_or_create(&RefusedLabels {
                protocol: self.protocol,
                reason,
            })
            .inc();
    }

    fn lock_wanted(&self) -> std::sync::MutexGuard<'_, Wanted> {
        self.wanted.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
