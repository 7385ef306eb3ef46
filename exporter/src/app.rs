//! Assembles and runs one exporter: binds the listeners, builds and starts the sink
//! chain, serves telemetry, watches the config, and shuts down in order on SIGTERM.
//! Not the CLI (`main.rs`) and not any data-path logic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use spansink_config::ExporterConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::chain::{Admit, ChainFactory, LiveChain, SinkChains, assemble};
use crate::receiver::tls::{ServerTls, TlsError, TlsListener, TlsSettings};
use crate::receiver::{self, AuthError, Authenticator, ReceiverAccess, ReceiverLimits};
use crate::reload::Reloader;
use crate::sinks::BuildError;
use crate::telemetry::metrics::Protocol;
use crate::telemetry::{self, Health, Metrics, logging};

/// Why the exporter could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {what} {addr}: {source}; is another process using the port?")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot build the sink chain: {0}")]
    Build(#[from] BuildError),
    #[error("cannot serve TLS on the OTLP {protocol} receiver: {source}")]
    Tls {
        protocol: Protocol,
        source: TlsError,
    },
    #[error("cannot start the receivers' authentication: {0}")]
    Auth(#[from] AuthError),
    #[error("{what} server failed: {message}")]
    Server { what: &'static str, message: String },
}

/// Where the config came from: a file (watched for changes) or the embedded default.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    Embedded,
}

/// A started exporter. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub telemetry_addr: SocketAddr,
    pub metrics: Metrics,
    stop_receivers: CancellationToken,
    stop_telemetry: CancellationToken,
    failed: CancellationToken,
    live: Arc<LiveChain>,
    health: Arc<Health>,
    drain_timeout: Duration,
    tasks: Vec<tokio::task::JoinHandle<Result<(), AppError>>>,
    telemetry_task: tokio::task::JoinHandle<Result<(), AppError>>,
}

async fn bind(what: &'static str, addr: &str) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind {
            what,
            addr: addr.to_string(),
            source,
        })
}

/// The TLS `protocol`'s listener serves with at start (plaintext if `receivers` sets
/// none); fails if its files do not load.
fn load_tls(
    receivers: &spansink_config::ReceiversConfig,
    protocol: Protocol,
    metrics: &Metrics,
) -> Result<Arc<ServerTls>, AppError> {
    ServerTls::load(
        protocol,
        TlsSettings::of(receivers, protocol),
        metrics.clone(),
    )
    .map_err(|source| AppError::Tls { protocol, source })
}

fn local_addr(l: &TcpListener) -> Option<SocketAddr> {
    l.local_addr().ok()
}

/// Starts everything `config` describes. `source` decides whether the file is watched.
pub async fn start(
    config: ExporterConfig,
    source: ConfigSource,
    watch_interval: Duration,
) -> Result<Running, AppError> {
    start_with(config, source, watch_interval, Arc::new(SinkChains)).await
}

/// [`start`] with the sink chains (at start and on every reload) built by `chains`.
pub async fn start_with(
    config: ExporterConfig,
    source: ConfigSource,
    watch_interval: Duration,
    chains: Arc<dyn ChainFactory>,
) -> Result<Running, AppError> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let registry = Arc::new(registry);
    let r = &config.receivers;
    let health = Arc::new(Health::new(r.grpc.enabled, r.http.enabled));

    // Bind everything first: a port conflict fails the start before any sink is built.
    let telemetry_listener = bind("telemetry endpoint", &config.telemetry.endpoint).await?;
    let grpc_listener = if r.grpc.enabled {
        Some(bind("OTLP gRPC", &r.grpc.endpoint).await?)
    } else {
        None
    };
    let http_listener = if r.http.enabled {
        Some(bind("OTLP HTTP", &r.http.endpoint).await?)
    } else {
        None
    };

    // TLS files are read before any sink is built too: a listener never starts plaintext
    // because its certificate is missing.
    let grpc_tls = load_tls(r, Protocol::grpc, &metrics)?;
    let http_tls = load_tls(r, Protocol::http, &metrics)?;
    let access = ReceiverAccess {
        auth: match &r.auth {
            Some(auth) => Some(Arc::new(Authenticator::from_config(auth, &metrics)?)),
            None => None,
        },
        cors: r.http.cors.clone(),
    };

    let chain = Arc::new(assemble(chains.as_ref(), &config, None, &metrics).await?);
    chain.start();
    health.set_chain_running(true);
    let live = Arc::new(LiveChain::new(chain));
    let admit: Arc<dyn Admit> = live.clone();

    // Receivers and the reloader stop first; telemetry last, so metrics stay scrapable
    // through the drain. `failed` is cancelled when a server dies, so `main` can exit.
    let stop_receivers = CancellationToken::new();
    let stop_telemetry = CancellationToken::new();
    let failed = CancellationToken::new();
    let telemetry_addr = local_addr(&telemetry_listener).ok_or(AppError::Server {
        what: "telemetry",
        message: "listener has no local address".into(),
    })?;
    let telemetry_task = {
        let stop = stop_telemetry.clone();
        let (registry, health) = (registry.clone(), health.clone());
        tokio::spawn(async move {
            telemetry::server::serve(telemetry_listener, registry, health, async move {
                stop.cancelled().await
            })
            .await
            .map_err(|e| AppError::Server {
                what: "telemetry",
                message: e.to_string(),
            })
        })
    };

    let receivers = ReceiverTasks {
        admit,
        limits: ReceiverLimits::from(r),
        access,
        metrics: metrics.clone(),
        stop: stop_receivers.clone(),
        failed: failed.clone(),
        health: health.clone(),
    };
    let mut tasks = Vec::new();
    let grpc_addr = grpc_listener.as_ref().and_then(local_addr);
    if let Some(listener) = grpc_listener {
        tasks.push(receivers.spawn(Protocol::grpc, listener, grpc_tls.clone()));
    }
    let http_addr = http_listener.as_ref().and_then(local_addr);
    if let Some(listener) = http_listener {
        tasks.push(receivers.spawn(Protocol::http, listener, http_tls.clone()));
    }
    // Every listener's TLS is watched, plaintext ones too: a config reload may turn TLS
    // on, and its files are then polled like the others.
    let tls = vec![grpc_tls, http_tls];
    for served in &tls {
        let (served, stop) = (served.clone(), stop_receivers.clone());
        tasks.push(tokio::spawn(async move {
            served.watch(watch_interval, stop).await;
            Ok(())
        }));
    }

    if let ConfigSource::File(path) = source {
        let reloader = Reloader {
            path,
            interval: watch_interval,
            live: live.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            running: config.clone(),
            chains,
            tls,
        };
        let stop = stop_receivers.clone();
        tasks.push(tokio::spawn(async move {
            reloader.run(stop).await;
            Ok(())
        }));
    }

    tracing::info!(
        grpc = %logging::address(grpc_addr), http = %logging::address(http_addr),
        telemetry = %telemetry_addr, sinks = %logging::list(config.sinks.keys()),
        "spansink exporter started"
    );
    Ok(Running {
        grpc_addr,
        http_addr,
        telemetry_addr,
        metrics,
        stop_receivers,
        stop_telemetry,
        failed,
        live,
        health,
        drain_timeout: config.shutdown.drain_timeout.get(),
        tasks,
        telemetry_task,
    })
}

/// What every receiver task shares.
struct ReceiverTasks {
    admit: Arc<dyn Admit>,
    limits: ReceiverLimits,
    access: ReceiverAccess,
    metrics: Metrics,
    stop: CancellationToken,
    failed: CancellationToken,
    health: Arc<Health>,
}

impl ReceiverTasks {
    /// Serves `protocol` on `listener`, with the TLS `tls` serves at each connection,
    /// until `stop`; marks the receiver listening while it runs and cancels `failed` if
    /// it dies.
    fn spawn(
        &self,
        protocol: Protocol,
        listener: TcpListener,
        tls: Arc<ServerTls>,
    ) -> tokio::task::JoinHandle<Result<(), AppError>> {
        let listener = TlsListener::new(listener, Some(tls));
        let (admit, limits, metrics) = (self.admit.clone(), self.limits, self.metrics.clone());
        let access = self.access.clone();
        let (stop, failed, health) = (self.stop.clone(), self.failed.clone(), self.health.clone());
        health.set_listening(protocol, true);
        tokio::spawn(async move {
            let shutdown = async move { stop.cancelled().await };
            let result = match protocol {
                Protocol::grpc => {
                    receiver::serve_grpc(listener, admit, limits, access, metrics, shutdown).await
                }
                Protocol::http => {
                    receiver::serve_http(listener, admit, limits, access, metrics, shutdown).await
                }
            };
            health.set_listening(protocol, false);
            result.map_err(|e| {
                failed.cancel();
                let what = match protocol {
                    Protocol::grpc => "OTLP gRPC",
                    Protocol::http => "OTLP HTTP",
                };
                AppError::Server {
                    what,
                    message: e.to_string(),
                }
            })
        })
    }
}

impl Running {
    /// Resolves when a receiver or the telemetry server died; the exporter should stop.
    pub async fn failed(&self) {
        self.failed.cancelled().await
    }

    /// The chain receivers admit into (for tests and the benchmark).
    pub fn live_chain(&self) -> Arc<LiveChain> {
        self.live.clone()
    }

    /// Stops in the order that loses nothing: refuse new work (not ready, receivers
    /// finish in-flight requests and close), deliver what is queued within the drain
    /// deadline (what a durable queue still holds then stays on disk for the next
    /// start), flush sinks, then stop telemetry last so the final metrics can be scraped
    /// until the end.
    /// The drain deadline counts from the call, so that nothing (a reload's hand-over
    /// still under way, old sink generations still delivering) stretches the shutdown
    /// past the grace period the pod was given for it.
    pub async fn shutdown(self) -> Result<(), AppError> {
        let until = tokio::time::Instant::now() + self.drain_timeout;
        tracing::info!("shutting down: receivers stop accepting, queues drain");
        self.health.set_chain_running(false);
        self.stop_receivers.cancel();
        let mut first_error = None;
        for task in self.tasks {
            match task.await {
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "component failed during shutdown");
                    first_error.get_or_insert(e);
                }
                Ok(Ok(())) => {}
                Err(e) => tracing::error!(error = %e, "component task panicked"),
            }
        }
        let report = self.live.drain_until(until).await;
        tracing::info!(
            delivered_spans = report.delivered_spans,
            dropped_spans = report.dropped_spans,
            kept_spans = report.kept_spans,
            timed_out = report.timed_out,
            "sink chain drained; exiting"
        );
        self.stop_telemetry.cancel();
        let _ = self.telemetry_task.await;
        first_error.map_or(Ok(()), Err)
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when the future is first polled: call it before starting, so a signal that arrives
/// while the exporter starts (right after it logged that it started, say) is a shutdown,
/// not the default action that kills the process.
pub fn termination_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    // ctrl_c installs its handler on first poll; poll it once now.
    let mut interrupt = Box::pin(tokio::signal::ctrl_c());
    let _ = futures::FutureExt::now_or_never(&mut interrupt);
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt => {}
            }
            return;
        }
        let _ = interrupt.await;
    }
}
