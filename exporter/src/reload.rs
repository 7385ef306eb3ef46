//! Hot reload: watches the mounted config file (a ConfigMap update is an atomic swap of
//! the `..data` symlink, so polling the content is the reliable signal) and SIGHUP,
//! validates the new config, and swaps the running chain without losing spans: sinks
//! whose settings did not change keep running with their queues; only new and changed
//! ones are built (see `chain::live` for how replaced ones end).
//! Not for receivers or telemetry settings: those need a restart (logged when changed),
//! except the receivers' TLS blocks, which a successful reload hands to the running
//! listeners ([`ServerTls::reconfigure`]): new connections get the new TLS, open ones
//! keep theirs, and no port is closed.
//! A reload still building its chain when shutdown begins is abandoned, not finished:
//! shutdown then drains the chain that is running. One that has swapped chains is done;
//! shutdown finishes the hand-over of the sinks it replaced.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use spansink_config::ExporterConfig;
use tokio_util::sync::CancellationToken;

use crate::chain::{Chain, ChainFactory, LiveChain, assemble};
use crate::receiver::tls::{ServerTls, TlsSettings};
use crate::telemetry::metrics::ResultLabels;
use crate::telemetry::{Health, Metrics, logging};

/// Watches `path` and applies valid changes to `live` until `stop` is cancelled.
pub struct Reloader {
    pub path: PathBuf,
    pub interval: Duration,
    pub live: Arc<LiveChain>,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    /// The config now running; receivers and telemetry keep the values from start,
    /// except the TLS blocks.
    pub running: ExporterConfig,
    /// Builds the chain of a new config.
    pub chains: Arc<dyn ChainFactory>,
    /// The listeners' TLS, switched to a new config's TLS blocks when it is applied.
    pub tls: Vec<Arc<ServerTls>>,
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
    /// the replaced sinks' old generations end in the background, and shutdown finishes
    /// their hand-over.
    async fn apply(&mut self, text: &str, stop: &CancellationToken) {
        let next = match ExporterConfig::from_yaml(text) {
            Ok(c) => c,
            Err(e) => {
                self.count("failure");
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
        // What runs keeps the receivers and telemetry it started with, but for TLS and
        // the acknowledgement settings.
        let next = ExporterConfig {
            receivers: self.running.receivers.with_reloadable_of(&next.receivers),
            telemetry: self.running.telemetry.clone(),
            ..next
        };
        if next.sinks == self.running.sinks
            && next
                .receivers
                .same_acknowledgements(&self.running.receivers)
        {
            self.switch_to(next);
            self.count("success");
            tracing::info!("config reloaded; no sink changed, nothing rebuilt");
            return;
        }
        let previous = self.live.current();
        let rebuilt = Chain::sinks_to_build(Some(&previous), &next);
        // `biased`: a shutdown that has begun wins over a build finishing at the same moment.
        let built = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                self.abandoned("while the new sink chain was being built");
                return;
            }
            built = assemble(self.chains.as_ref(), &next, Some(&previous), &self.metrics) => built,
        };
        let chain = match built {
            // Built, but shutdown began meanwhile: close its new sinks (nothing was
            // admitted into them); the ones it shares with the running chain stay.
            Ok(c) if stop.is_cancelled() => {
                c.discard().await;
                self.abandoned("after the new sink chain was built, before the swap");
                return;
            }
            Ok(c) => Arc::new(c),
            Err(e) => {
                self.count("failure");
                tracing::error!(error = %e, "new config refused: sink chain could not be built; the running config stays in place");
                return;
            }
        };
        tracing::info!(sinks = %logging::list(chain.sink_names()), rebuilt = %logging::list(&rebuilt),
            "config changed: switching to the new sink chain; unchanged sinks keep running");
        self.live
            .replace(chain, next.shutdown.drain_timeout.get())
            .await;
        self.health.set_chain_running(true);
        self.switch_to(next);
        self.count("success");
        tracing::info!("config reloaded");
    }

    /// Records `next` as running and, if its TLS blocks differ, hands them to the
    /// listeners. Only for a reload that is applied: a refused one changes no TLS either.
    fn switch_to(&mut self, next: ExporterConfig) {
        if next.receivers != self.running.receivers {
            for tls in &self.tls {
                tls.reconfigure(TlsSettings::of(&next.receivers, tls.protocol()));
            }
        }
        self.running = next;
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
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
            when = %when,
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
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use tokio::sync::Notify;

    use super::*;
    use crate::app::{self, ConfigSource};
    use crate::chain::Admit;
    use crate::chain::test_sinks::{TestSink, trace_data};
    use crate::sinks::{BuildError, SharedSink};

    /// The first chain is built on `sink` at once; every later build (a reload) signals
    /// `reload_started` and then never finishes, like a backend that never answers.
    struct StallingReloads {
        sink: Arc<TestSink>,
        builds: AtomicUsize,
        reload_started: Notify,
    }

    #[async_trait]
    impl ChainFactory for StallingReloads {
        async fn backends(
            &self,
            _config: &ExporterConfig,
            names: &[String],
            _metrics: &Metrics,
        ) -> Result<BTreeMap<String, SharedSink>, BuildError> {
            if self.builds.fetch_add(1, Ordering::SeqCst) > 0 {
                self.reload_started.notify_one();
                std::future::pending::<()>().await;
            }
            let sink: SharedSink = self.sink.clone();
            Ok(names.iter().map(|n| (n.clone(), sink.clone())).collect())
        }
    }

    fn config(sinks: &str) -> String {
        format!(
            "receivers:\n  grpc:\n    endpoint: 127.0.0.1:0\n  http:\n    endpoint: 127.0.0.1:0\n\
             telemetry:\n  endpoint: 127.0.0.1:0\nshutdown:\n  drain_timeout: 10s\nsinks:\n{sinks}"
        )
    }

    /// Writes `first` to `path` and starts the exporter on it, watching the file every
    /// 10 ms.
    async fn start_watching(
        path: &std::path::Path,
        first: &str,
        chains: Arc<dyn ChainFactory>,
    ) -> app::Running {
        std::fs::write(path, first).unwrap();
        app::start_with(
            ExporterConfig::from_yaml(first).unwrap(),
            ConfigSource::File(path.to_path_buf()),
            Duration::from_millis(10),
            chains,
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn shutdown_abandons_a_reload_whose_chain_is_still_being_built() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let first = config("  a:\n    blackhole: {}\n");
        let chains = Arc::new(StallingReloads {
            sink: Arc::new(TestSink::recording()),
            builds: AtomicUsize::new(0),
            reload_started: Notify::new(),
        });
        let running = start_watching(&path, &first, chains.clone()).await;
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

    /// Backends by sink name (recording test sinks, made on demand); remembers which
    /// sinks each build asked for, and runs `on_first_build` during the first one.
    #[derive(Default)]
    struct RecordingBackends {
        sinks: std::sync::Mutex<BTreeMap<String, Arc<TestSink>>>,
        asked: std::sync::Mutex<Vec<Vec<String>>>,
        on_first_build: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl RecordingBackends {
        fn sink(&self, name: &str) -> Arc<TestSink> {
            self.sinks
                .lock()
                .unwrap()
                .entry(name.to_string())
                .or_insert_with(|| Arc::new(TestSink::recording()))
                .clone()
        }

        fn asked(&self) -> Vec<Vec<String>> {
            self.asked.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl ChainFactory for RecordingBackends {
        async fn backends(
            &self,
            _config: &ExporterConfig,
            names: &[String],
            _metrics: &Metrics,
        ) -> Result<BTreeMap<String, SharedSink>, BuildError> {
            self.asked.lock().unwrap().push(names.to_vec());
            if let Some(hook) = self.on_first_build.lock().unwrap().take() {
                hook();
            }
            Ok(names
                .iter()
                .map(|n| (n.clone(), self.sink(n) as SharedSink))
                .collect())
        }
    }

    async fn reloads(metrics: &Metrics, result: &'static str, at_least: u64) {
        for _ in 0..3000 {
            if metrics
                .config_reloads
                .get_or_create(&ResultLabels { result })
                .get()
                >= at_least
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {at_least} reload(s) with result {result} within 30 s");
    }

    #[tokio::test]
    async fn an_edit_made_while_the_exporter_starts_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let first = config("  a:\n    blackhole: {}\n");
        // The edit lands while the first chain is built: after the file was loaded,
        // before the reloader ever read it.
        let edited = config("  a:\n    blackhole: {}\n  b:\n    blackhole: {}\n");
        let backends = Arc::new(RecordingBackends::default());
        *backends.on_first_build.lock().unwrap() = Some(Box::new({
            let path = path.clone();
            move || std::fs::write(&path, edited).unwrap()
        }));
        let running = start_watching(&path, &first, backends.clone()).await;
        reloads(&running.metrics, "success", 1).await;
        assert_eq!(backends.asked(), [vec!["a"], vec!["b"]]);
        running
            .live_chain()
            .admit(trace_data("svc", 3))
            .await
            .unwrap();
        running.shutdown().await.unwrap();
        assert_eq!(backends.sink("b").spans(), 3, "the edited config runs");
        assert_eq!(backends.sink("a").spans(), 3);
    }

    #[tokio::test]
    async fn a_change_to_receivers_or_telemetry_alone_rebuilds_no_sink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let first = config("  a:\n    blackhole: {}\n");
        let backends = Arc::new(RecordingBackends::default());
        let running = start_watching(&path, &first, backends.clone()).await;
        let live = running.live_chain();
        let chain = live.current();
        std::fs::write(
            &path,
            first
                .replace("telemetry:\n", "telemetry:\n  log_level: debug\n")
                .replace("receivers:\n", "receivers:\n  max_request_size: 1MiB\n"),
        )
        .unwrap();
        reloads(&running.metrics, "success", 1).await;
        assert_eq!(backends.asked(), [vec!["a"]], "no sink was built again");
        assert!(Arc::ptr_eq(&chain, &live.current()), "the chain runs on");
        assert_eq!(backends.sink("a").shutdowns(), 0);

        // Adding a sink builds that one only.
        std::fs::write(
            &path,
            config("  a:\n    blackhole: {}\n  b:\n    blackhole: {}\n"),
        )
        .unwrap();
        reloads(&running.metrics, "success", 2).await;
        assert_eq!(backends.asked(), [vec!["a"], vec!["b"]]);
        assert_eq!(backends.sink("a").shutdowns(), 0, "a was kept, not drained");
        live.admit(trace_data("svc", 4)).await.unwrap();
        running.shutdown().await.unwrap();
        assert_eq!(
            (backends.sink("a").spans(), backends.sink("b").spans()),
            (4, 4)
        );
        assert_eq!(backends.sink("a").shutdowns(), 1);
    }

    #[tokio::test]
    async fn a_change_of_acknowledgements_alone_starts_a_chain_generation_with_the_same_sinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let first = config("  a:\n    blackhole: {}\n");
        let backends = Arc::new(RecordingBackends::default());
        let running = start_watching(&path, &first, backends.clone()).await;
        let live = running.live_chain();
        let chain = live.current();
        std::fs::write(
            &path,
            first.replace(
                "receivers:\n",
                "receivers:\n  acknowledgements: delivered\n",
            ),
        )
        .unwrap();
        reloads(&running.metrics, "success", 1).await;
        assert!(!Arc::ptr_eq(&chain, &live.current()), "a new generation");
        let nothing: Vec<&str> = Vec::new();
        assert_eq!(
            backends.asked(),
            [vec!["a"], nothing],
            "no sink was built again"
        );
        assert_eq!(
            live.current().acknowledgements(),
            spansink_config::AcknowledgementMode::Delivered
        );
        live.admit(trace_data("svc", 2)).await.unwrap();
        running.shutdown().await.unwrap();
        assert_eq!(backends.sink("a").spans(), 2);
    }
}
