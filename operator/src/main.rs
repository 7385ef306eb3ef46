//! The `spansink-operator` binary: flags (with environment fallbacks), logging, leader
//! election, the metrics server and one controller per watched scope. No reconcile logic here.

use std::io::IsTerminal;
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use futures::FutureExt;
use kube::Client;
use kube::runtime::events::Reporter;
use spansink_operator::controller::{self, Context, Scope};
use spansink_operator::crd::ImagePullPolicy;
use spansink_operator::leader;
use spansink_operator::metrics::Metrics;
use spansink_operator::metrics_server::{self, Readiness};
use spansink_operator::reconcile::{self, ExporterPodDefaults};

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

    /// Exporter image for SpanSinks that do not set `spec.image`. Default: the exporter
    /// of this operator's version.
    #[arg(long, env = "SPANSINK_EXPORTER_IMAGE", default_value = reconcile::DEFAULT_EXPORTER_IMAGE)]
    exporter_image: String,

    /// Image pull policy (Always, IfNotPresent, Never) for SpanSinks that do not set
    /// `spec.imagePullPolicy`. Unset: Kubernetes' default for the image's tag.
    #[arg(long, env = "SPANSINK_EXPORTER_IMAGE_PULL_POLICY")]
    exporter_image_pull_policy: Option<ImagePullPolicy>,

    /// Image pull Secrets, comma-separated, for SpanSinks that do not set
    /// `spec.imagePullSecrets`; looked up in each SpanSink's namespace.
    #[arg(
        long,
        env = "SPANSINK_EXPORTER_IMAGE_PULL_SECRETS",
        value_delimiter = ',',
        default_value = ""
    )]
    exporter_image_pull_secrets: Vec<String>,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "SPANSINK_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    metrics_address: SocketAddr,

    /// Log line format. Text is coloured only when stdout is a terminal and NO_COLOR is
    /// unset or empty.
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

impl Cli {
    /// The exporter pod defaults the flags ask for; blank secret names (from `a,,b` or an
    /// empty variable) are skipped.
    fn pod_defaults(&self) -> ExporterPodDefaults {
        ExporterPodDefaults {
            image_pull_policy: self.exporter_image_pull_policy,
            image_pull_secrets: self
                .exporter_image_pull_secrets
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        }
    }
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
        cli.pod_defaults(),
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
    // The fmt subscriber writes to stdout: colour is decided for that stream, so a pod's
    // log (a pipe) and `> file` carry no escape codes.
    let ansi = spansink_config::use_colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stdout);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `args` with no `SPANSINK_*` variable in the way: clap reads the environment,
    /// and the test must not depend on the shell it runs in.
    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command()
            .mut_args(|arg| arg.env(None))
            .try_get_matches_from(
                std::iter::once("spansink-operator").chain(args.iter().copied()),
            )?;
        Cli::from_arg_matches(&matches)
    }

    #[test]
    fn flags_have_env_fallbacks_and_sane_defaults() {
        let cli = parse(&["--namespaces", "a,b"]).unwrap();
        assert_eq!(cli.namespaces, ["a", "b"]);
        assert!(cli.leader_election);
        assert_eq!(cli.metrics_address.port(), 8080);
        let cli = parse(&["--leader-election", "false"]).unwrap();
        assert!(!cli.leader_election);
    }

    #[test]
    fn starts_without_exporter_image_flag_using_its_own_version() {
        let cli = parse(&[]).unwrap();
        assert_eq!(
            cli.exporter_image,
            format!(
                "ghcr.io/spansink/spansink-exporter:{}",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(cli.pod_defaults(), ExporterPodDefaults::default());
        let cli = parse(&["--exporter-image", "registry.local/exporter:dev"]).unwrap();
        assert_eq!(cli.exporter_image, "registry.local/exporter:dev");
    }

    #[test]
    fn exporter_pod_defaults_from_flags() {
        let cli = parse(&[
            "--exporter-image-pull-policy",
            "Never",
            "--exporter-image-pull-secrets",
            "regcred, mirror,,",
        ])
        .unwrap();
        assert_eq!(
            cli.pod_defaults(),
            ExporterPodDefaults {
                image_pull_policy: Some(ImagePullPolicy::Never),
                image_pull_secrets: vec!["regcred".into(), "mirror".into()],
            }
        );
        let err = parse(&["--exporter-image-pull-policy", "Sometimes"]).unwrap_err();
        assert!(err.to_string().contains("Sometimes"), "{err}");
    }
}
