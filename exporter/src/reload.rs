//! Hot reload: watches the mounted config file (a ConfigMap update is an atomic swap of
//! the `..data` symlink, so polling the content is the reliable signal) and SIGHUP,
//! validates the new config, and swaps the running chain without losing spans.
//! Not for receivers or telemetry settings: those need a restart (logged when changed).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use spansink_config::ExporterConfig;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::chain::{Admission, Admit, Chain, Refusal};
use crate::telemetry::metrics::ResultLabels;
use crate::telemetry::{Health, Metrics};

/// The chain the receivers admit into: the current generation, replaced on reload.
pub struct LiveChain {
    current: RwLock<Arc<Chain>>,
    /// Serialises reloads and shutdown so two swaps never interleave.
    swap: Mutex<()>,
}

impl LiveChain {
    pub fn new(chain: Arc<Chain>) -> Self {
        Self {
            current: RwLock::new(chain),
            swap: Mutex::new(()),
        }
    }

    pub fn current(&self) -> Arc<Chain> {
        // A poisoned lock means a panic while swapping an Arc: the Arc itself is intact.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `next` the chain receivers admit into, drains the previous one within
    /// `deadline`, then starts `next`. Starting only after the drain keeps two
    /// generations from writing to one backend at once (e.g. the same file); meanwhile
    /// `next` queues what arrives (its queue bounds apply).
    pub async fn replace(&self, next: Arc<Chain>, deadline: Duration) {
        let _guard = self.swap.lock().await;
        let previous = {
            let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *current, next.clone())
        };
        let report = previous.drain(deadline).await;
        tracing::info!(?report, "previous chain drained");
        next.start();
    }

    /// Drains the current chain for shutdown.
    pub async fn drain(&self, deadline: Duration) -> crate::chain::DrainReport {
        let _guard = self.swap.lock().await;
        self.current().drain(deadline).await
    }
}

#[async_trait]
impl Admit for LiveChain {
    async fn admit(&self, data: crate::otlp::TraceData) -> Result<Admission, Refusal> {
        let chain = self.current();
        match chain.admit(data.clone()).await {
            // The chain was swapped out between our read and the push: the new one takes it.
            Err(Refusal::ShuttingDown { .. }) if !Arc::ptr_eq(&chain, &self.current()) => {
                self.current().admit(data).await
            }
            other => other,
        }
    }
}

/// Watches `path` and applies valid changes to `live` until `stop` is cancelled.
pub struct Reloader {
    pub path: PathBuf,
    pub interval: Duration,
    pub live: Arc<LiveChain>,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    /// The config now running; receivers and telemetry keep the values from start.
    pub running: ExporterConfig,
}

impl Reloader {
    pub async fn run(mut self, stop: CancellationToken) {
        let mut last_text = std::fs::read_to_string(&self.path).ok();
        let mut hangup = hangup_signal();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => false,
                _ = recv_hangup(&mut hangup) => true,
            };
            let text = match std::fs::read_to_string(&self.path) {
                Ok(t) => t,
                Err(e) => {
                    // During a ConfigMap swap the file can vanish for an instant; keep running.
                    tracing::debug!(path = %self.path.display(), error = %e, "config file not readable");
                    continue;
                }
            };
            if !forced && last_text.as_deref() == Some(text.as_str()) {
                continue;
            }
            last_text = Some(text.clone());
            self.apply(&text).await;
        }
    }

    async fn apply(&mut self, text: &str) {
        let result = |r: &'static str| ResultLabels { result: r };
        let next = match ExporterConfig::from_yaml(text) {
            Ok(c) => c,
            Err(e) => {
                self.metrics
                    .config_reloads
                    .get_or_create(&result("failure"))
                    .inc();
                tracing::error!(path = %self.path.display(), error = %e, "new config refused; the running config stays in place");
                return;
            }
        };
        if next == self.running {
            return;
        }
        if next.receivers != self.running.receivers || next.telemetry != self.running.telemetry {
            tracing::warn!(
                "receivers/telemetry settings changed: they apply at the next restart; sinks change now"
            );
        }
        let chain = match crate::app::build_chain(&next, &self.metrics).await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                self.metrics
                    .config_reloads
                    .get_or_create(&result("failure"))
                    .inc();
                tracing::error!(error = %e, "new config refused: sink chain could not be built; the running config stays in place");
                return;
            }
        };
        tracing::info!(sinks = ?chain.sink_names(), "config changed: switching to the new sink chain");
        self.live
            .replace(chain, next.shutdown.drain_timeout.get())
            .await;
        self.health.set_chain_running(true);
        self.running = next;
        self.metrics
            .config_reloads
            .get_or_create(&result("success"))
            .inc();
        tracing::info!("config reloaded");
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangup_signal() -> Hangup {
    None
}

#[cfg(unix)]
async fn recv_hangup(h: &mut Hangup) {
    match h {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
async fn recv_hangup(_: &mut Hangup) {
    std::future::pending().await
}
