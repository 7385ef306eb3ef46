//! `spansink-exporter`: the command line. `run` starts the exporter, `validate` checks a
//! config exactly as `run` would load it, `bench` measures throughput.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use spansink_config::ExporterConfig;
use spansink_exporter::app::{self, ConfigSource};
use spansink_exporter::bench::BenchSpec;
use spansink_exporter::bench::load::LoadProtocol;
use spansink_exporter::bench::workload::Workload;
use spansink_exporter::telemetry::logging;

/// The config used when `run` gets no `--config`: the quickstart (file sink, no
/// external service), so a fresh checkout runs with one command.
const EMBEDDED_CONFIG: &str = include_str!("../../examples/quickstart.yaml");

#[derive(Parser)]
#[command(
    name = "spansink-exporter",
    version,
    about = "Receives OTLP traces and writes them to backends through a configurable sink chain"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the exporter.
    Run {
        /// Config file (YAML). Without it, the embedded quickstart config is used.
        #[arg(long, short, env = "SPANSINK_CONFIG")]
        config: Option<PathBuf>,
        /// How often the config file and the receivers' TLS files are checked for changes
        /// (SIGHUP checks the config at once).
        #[arg(long, env = "SPANSINK_WATCH_INTERVAL", default_value = "2s", value_parser = parse_duration)]
        watch_interval: Duration,
    },
    /// Check a config file exactly as `run` would load it; print every problem with its
    /// field path and exit non-zero if there is any.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Benchmark a pipeline: start the exporter on CONFIG (ports moved to free loopback
    /// ones), load it, print spans/s, exporter CPU per million spans, peak RSS and the
    /// prost-decode ceiling for the same requests.
    Bench {
        #[arg(long, short, default_value = "examples/blackhole.yaml")]
        config: PathBuf,
        #[arg(long, value_enum, default_value = "grpc")]
        protocol: LoadProtocol,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value_t = 512)]
        spans_per_request: usize,
        #[arg(long, default_value_t = 10)]
        attributes: usize,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<spansink_config::Duration>().map(|d| d.get())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS crypto provider for the whole process, before any sink connects.
    spansink_exporter::tls::install_crypto_provider();
    match cli.command {
        Command::Validate { config } => validate(&config),
        Command::Run {
            config,
            watch_interval,
        } => run(config, watch_interval),
        Command::Bench {
            config,
            protocol,
            concurrency,
            spans_per_request,
            attributes,
            duration,
        } => {
            let spec = BenchSpec {
                config,
                protocol,
                concurrency,
                duration,
                workload: Workload {
                    spans_per_request,
                    attributes_per_span: attributes,
                },
            };
            bench(&spec)
        }
    }
}

fn bench(spec: &BenchSpec) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(spansink_exporter::bench::run(spec)) {
        Ok(report) => {
            report.print(spec);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The multi-threaded runtime every command runs on; `None` (after telling why) if the
/// system refuses one.
fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .inspect_err(|e| eprintln!("cannot start the async runtime: {e}"))
        .ok()
}

fn validate(path: &std::path::Path) -> ExitCode {
    match ExporterConfig::load(path) {
        Ok(config) => {
            // The files the config names are read here too: `run` would refuse to start
            // without them. (The operator's validation cannot see the pod's files.)
            let tls_errors = spansink_exporter::receiver::tls::check_files(&config.receivers);
            if !tls_errors.is_empty() {
                for e in &tls_errors {
                    eprintln!("{}: {e}", path.display());
                }
                return ExitCode::FAILURE;
            }
            let names: Vec<_> = config.sinks.keys().map(String::as_str).collect();
            println!(
                "{}: valid ({} sink(s): {})",
                path.display(),
                names.len(),
                names.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn run(path: Option<PathBuf>, watch_interval: Duration) -> ExitCode {
    let (config, source) = match &path {
        Some(p) => (ExporterConfig::load(p), ConfigSource::File(p.clone())),
        None => (
            ExporterConfig::from_yaml(EMBEDDED_CONFIG),
            ConfigSource::Embedded,
        ),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    logging::init(config.telemetry.log_format, &config.telemetry.log_level);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result: anyhow::Result<()> = runtime.block_on(async move {
        let terminated = app::termination_signal();
        let running = app::start(config, source, watch_interval).await?;
        tokio::select! {
            _ = terminated => {}
            _ = running.failed() => tracing::error!("a server failed; shutting down"),
        }
        running.shutdown().await?;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exporter stopped with an error");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
