//! Hot reload: watches the mounted config file (a ConfigMap update is an atomic swap of
//! the `..data` symlink, so polling the content is the reliable signal) and SIGHUP,
//! validates the new config, and swaps the running chain without losing spans.
//! Not for receivers or telemetry settings: those need a restart (logged when changed).
//! A reload in progress when shutdown begins is abandoned, not finished: shutdown then
//! drains the chain that is running.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use spansink_config::ExporterConfig;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::chain::{Admission, Admit, Chain, DrainReport, Refusal};
use crate::sinks::BuildError;
use crate::telemetry::metrics::ResultLabels;
use crate::telemetry::{Health, Metrics, logging};

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
        tracing::info!(
            delivered_spans = report.delivered_spans,
            dropped_spans = report.dropped_spans,
            timed_out = report.timed_out,
            "previous chain drained"
        );
        next.start();
    }

    /// Drains the current chain for shutdown, finishing by `until`. A reload's drain of the
    /// previous chain still under way is waited for first (that chain holds accepted
    /// spans, and two generations must not write to one backend at once); it counts
    /// against the same `until`, so a reload cannot stretch the shutdown past the pod's
    /// grace period.
    pub async fn drain_until(&self, until: tokio::time::Instant) -> DrainReport {
        let _guard = self.swap.lock().await;
        self.current()
            .drain(until.saturating_duration_since(tokio::time::Instant::now()))
            .await
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

/// Builds the sink chain of a config: the real sinks in the exporter, slow or scripted
/// ones in tests.
#[async_trait]
pub trait ChainFactory: Send + Sync {
    /// Builds every sink of `config` and the chain around them (not started). May take
    /// long (a backend that is slow to answer); the caller may drop the future midway.
    async fn build(&self, config: &ExporterConfig, metrics: &Metrics) -> Result<Chain, BuildError>;
}

/// The exporter's sinks, built by [`crate::app::build_chain`].
pub struct SinkChains;

#[async_trait]
impl ChainFactory for SinkChains {
    async fn build(&self, config: &ExporterConfig, metrics: &Metrics) -> Result<Chain, BuildError> {
        crate::app::build_chain(config, metrics).await
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
    /// Builds the chain of a new config.
    pub chains: Arc<dyn ChainFactory>,
}

impl Reloader {
    pub async fn run(mut self, stop: CancellationToken) {
        // Not the file's text now: it may already differ from what `running` was loaded
        // from (a change between start and this task's first poll). The first tick reads
        // it and `apply` compares the parsed config with `running`.
        let mut last_text: Option<String> = None;
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
            self.apply(&text, &stop).await;
        }
    }

    /// Validates, builds and swaps in the config `text`. Shutdown (`stop`) abandons it
    /// while the new chain is being built: the build is dropped (what it built so far is
    /// closed with it) and the running chain stays, for shutdown to drain. Once swapped,
    /// only the previous chain's drain is left, which shutdown waits for anyway.
    async fn apply(&mut self, text: &str, stop: &CancellationToken) {
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
        if !next
            .receivers
            .same_listeners_and_limits(&self.running.receivers)
            || next.telemetry != self.running.telemetry
        {
            tracing::warn!(
                "receivers/telemetry settings changed: they apply at the next restart; sinks and acknowledgements change now"
            );
        }
        // `biased`: a shutdown that has begun wins over a build finishing at the same moment.
        let built = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                self.abandoned("while the new sink chain was being built");
                return;
            }
            built = self.chains.build(&next, &self.metrics) => built,
        };
        let chain = match built {
            // Built, but shutdown began meanwhile: close its sinks (nothing was admitted).
            Ok(c) if stop.is_cancelled() => {
                c.drain(Duration::ZERO).await;
                self.abandoned("after the new sink chain was built, before the swap");
                return;
            }
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
        tracing::info!(sinks = %logging::list(chain.sink_names()), "config changed: switching to the new sink chain");
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

    fn abandoned(&self, when: &str) {
        self.metrics
            .config_reloads
            .get_or_create(&ResultLabels {
                result: "abandoned",
            })
            .inc();
        tracing::warn!(
            path = %self.path.display(),
            when,
            "config reload abandoned: shutting down with the running sink chain"
        );
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Notify;

    use super::*;
    use crate::app::{self, ConfigSource};
    use crate::chain::test_sinks::{TestSink, trace_data};
    use crate::sinks::SharedSink;

    /// The first chain is built on `sink` at once; every later build (a reload) signals
    /// `reload_started` and then never finishes, like a backend that never answers.
    struct StallingReloads {
        sink: Arc<TestSink>,
        builds: AtomicUsize,
        reload_started: Notify,
    }

    #[async_trait]
    impl ChainFactory for StallingReloads {
        async fn build(
            &self,
            config: &ExporterConfig,
            metrics: &Metrics,
        ) -> Result<Chain, BuildError> {
            if self.builds.fetch_add(1, Ordering::SeqCst) > 0 {
                self.reload_started.notify_one();
                std::future::pending::<()>().await;
            }
            let sink: SharedSink = self.sink.clone();
            Chain::build(config, metrics, &|_, _| Ok(sink.clone()))
        }
    }

    fn config(sinks: &str) -> String {
        format!(
            "receivers:\n  grpc:\n    endpoint: 127.0.0.1:0\n  http:\n    endpoint: 127.0.0.1:0\n\
             telemetry:\n  endpoint: 127.0.0.1:0\nshutdown:\n  drain_timeout: 10s\nsinks:\n{sinks}"
        )
    }

    #[tokio::test]
    async fn shutdown_abandons_a_reload_whose_chain_is_still_being_built() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let first = config("  a:\n    blackhole: {}\n");
        std::fs::write(&path, &first).unwrap();
        let chains = Arc::new(StallingReloads {
            sink: Arc::new(TestSink::recording()),
            builds: AtomicUsize::new(0),
            reload_started: Notify::new(),
        });
        let running = app::start_with(
            ExporterConfig::from_yaml(&first).unwrap(),
            ConfigSource::File(path.clone()),
            Duration::from_millis(10),
            chains.clone(),
        )
        .await
        .unwrap();
        let live = running.live_chain();
        live.admit(trace_data("svc", 10)).await.unwrap();

        std::fs::write(
            &path,
            config("  a:\n    blackhole: {}\n  b:\n    blackhole: {}\n"),
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(30), chains.reload_started.notified())
            .await
            .expect("the reloader never started building the new config");
        // Still the first chain: spans admitted during the reload go there.
        live.admit(trace_data("svc", 5)).await.unwrap();

        // Without abandoning, shutdown waits for a build that never ends. The bound is
        // generous; the shutdown itself takes milliseconds.
        let metrics = running.metrics.clone();
        tokio::time::timeout(Duration::from_secs(30), running.shutdown())
            .await
            .expect("shutdown waited for the reload to finish")
            .unwrap();

        assert_eq!(chains.sink.spans(), 15, "every accepted span is delivered");
        assert_eq!(
            chains.sink.shutdowns(),
            1,
            "the running chain's sink is shut down"
        );
        let count = |result| {
            metrics
                .config_reloads
                .get_or_create(&ResultLabels { result })
                .get()
        };
        assert_eq!(count("abandoned"), 1);
        assert_eq!(count("success"), 0);
    }
}
