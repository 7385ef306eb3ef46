//! The `spansink-operator` binary: flags (with environment fallbacks), logging, leader
//! election, the metrics server and one controller per watched scope. No reconcile logic here.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use futures::FutureExt;
use kube::Client;
use kube::runtime::events::Reporter;
use spansink_operator::controller::{self, Context, Scope};
use spansink_operator::leader;
use spansink_operator::metrics::Metrics;
use spansink_operator::metrics_server::{self, Readiness};

/// Runs SpanSink resources as spansink exporter Deployments.
#[derive(Parser, Debug)]
#[command(name = "spansink-operator", version)]
struct Cli {
    /// Namespaces to watch, comma-separated. Empty: all namespaces (needs the ClusterRole).
    #[arg(
        long,
        env = "SPANSINK_WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    namespaces: Vec<String>,

    /// Exporter image for SpanSinks that do not set `spec.image`.
    #[arg(long, env = "SPANSINK_EXPORTER_IMAGE")]
    exporter_image: String,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "SPANSINK_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    metrics_address: SocketAddr,

    /// Log line format.
    #[arg(long, env = "SPANSINK_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,

    /// Log filter (tracing env-filter syntax); RUST_LOG overrides it.
    #[arg(long, env = "SPANSINK_LOG_LEVEL", default_value = "info")]
    log_level: String,

    /// Elect a leader through a Lease so that only one replica reconciles.
    #[arg(long, env = "SPANSINK_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,

    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "spansink-system")]
    lease_namespace: String,

    /// Identity in the Lease and in Events (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "spansink-operator")]
    identity: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli)?;

    let client = Client::try_default().await.context(
        "cannot configure a Kubernetes client (in-cluster service account or KUBECONFIG)",
    )?;
    client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server")?;

    let metrics = Metrics::new();
    let reporter = Reporter {
        controller: "spansink-operator".into(),
        instance: Some(cli.identity.clone()),
    };
    let ctx = Context::new(
        client.clone(),
        reporter,
        cli.exporter_image.clone(),
        metrics.clone(),
    );
    let readiness = Readiness::default();
    readiness.set_ready();
    let server = tokio::spawn(metrics_server::serve(
        cli.metrics_address,
        ctx.clone(),
        readiness,
    ));

    let scopes: Vec<Scope> = {
        let named: Vec<Scope> = cli
            .namespaces
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .map(|n| Scope::Namespace(n.to_string()))
            .collect();
        if named.is_empty() {
            vec![Scope::AllNamespaces]
        } else {
            named
        }
    };

    let mut leadership = if cli.leader_election {
        Some(leader::acquire(client.clone(), &cli.lease_namespace, &cli.identity).await?)
    } else {
        None
    };
    metrics.set_leader(true);

    let shutdown = shutdown_signal().shared();
    let controllers = futures::future::join_all(
        scopes
            .into_iter()
            .map(|scope| controller::run(ctx.clone(), scope, shutdown.clone())),
    );
    let lost = async {
        match leadership.as_mut() {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        _ = controllers => {
            tracing::info!("controllers stopped");
            Ok(())
        }
        _ = lost => {
            metrics.set_leader(false);
            return Err(anyhow::anyhow!("lost the leader Lease; exiting so that only one replica reconciles"));
        }
        result = server => result
            .context("metrics server task failed")
            .and_then(|r| r.context("metrics server failed")),
    };
    // Released on every exit but a lost Lease, so a standby takes over at once instead of
    // waiting for the Lease to expire.
    if let Some(l) = leadership {
        l.release().await;
    }
    outcome
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown signal received");
}

fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log_level))
        .context("invalid --log-level")?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_have_env_fallbacks_and_sane_defaults() {
        let cli = Cli::try_parse_from([
            "spansink-operator",
            "--exporter-image",
            "x:1",
            "--namespaces",
            "a,b",
        ])
        .unwrap();
        assert_eq!(cli.namespaces, ["a", "b"]);
        assert!(cli.leader_election);
        assert_eq!(cli.metrics_address.port(), 8080);
        let cli = Cli::try_parse_from([
            "spansink-operator",
            "--exporter-image",
            "x:1",
            "--leader-election",
            "false",
        ])
        .unwrap();
        assert!(!cli.leader_election);
        assert!(
            Cli::try_parse_from(["spansink-operator"]).is_err()
                || std::env::var("SPANSINK_EXPORTER_IMAGE").is_ok()
        );
    }
}
