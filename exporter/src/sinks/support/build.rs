//! Turns sink configs into backend sinks: [`build_all`] builds every named sink of a
//! config before the chain builder wraps policies around them. Every backend is built
//! the same way, through [`BuildSink`], from its settings and a [`SinkContext`]; the one
//! `match` in [`build`] is where a backend is registered. Not the policies.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use spansink_config::{Backend, ExporterConfig, SinkConfig};

use crate::sinks::{self, BuildError, SharedSink, Sink};
use crate::telemetry::metrics::Metrics;

/// Reads an environment variable a config names (`password_env`, `${env:NAME}`);
/// tests pass their own.
pub type EnvLookup<'a> = &'a (dyn Fn(&str) -> Option<String> + Sync);

/// What every sink is built from besides its own settings.
pub struct SinkContext<'a> {
    /// The sink's name (`sinks.<name>`): its log field and metric label.
    pub name: &'a str,
    /// Where the sink records what it measures itself (the chain counts its outcomes).
    pub metrics: &'a Metrics,
    /// Where credentials named by the config are read from.
    pub env: EnvLookup<'a>,
}

impl SinkContext<'_> {
    /// A build error of this sink.
    pub fn error(&self, message: impl Into<String>) -> BuildError {
        BuildError {
            sink: self.name.to_string(),
            message: message.into(),
        }
    }
}

/// The one constructor signature of every backend sink. Building must not connect:
/// a backend that is down at start fails exports (transiently), not the build. Async
/// because some clients load their settings asynchronously (the AWS credential chain).
#[async_trait]
pub trait BuildSink: Sink + Sized + 'static {
    /// The backend's settings (`sinks.<name>.<backend>`).
    type Config: Sync;

    async fn build(config: &Self::Config, context: &SinkContext<'_>) -> Result<Self, BuildError>;
}

/// Builds every sink of `config`, by name: what `Chain::build` is given as `make_sink`.
pub async fn build_all(
    config: &ExporterConfig,
    metrics: &Metrics,
) -> Result<BTreeMap<String, SharedSink>, BuildError> {
    let mut sinks = BTreeMap::new();
    for (name, sink) in &config.sinks {
        sinks.insert(name.clone(), build(name, sink, metrics).await?);
    }
    Ok(sinks)
}

/// Builds the backend of sink `name` from whichever one backend is set, reading the
/// credential variables from the process environment. Must be called inside the tokio
/// runtime (the OTLP channel and the Kafka producer start tasks there); creates the file
/// sink's directory.
pub async fn build(
    name: &str,
    config: &SinkConfig,
    metrics: &Metrics,
) -> Result<SharedSink, BuildError> {
    let context = SinkContext {
        name,
        metrics,
        env: &|var| std::env::var(var).ok(),
    };
    let backend = match config.backends().as_slice() {
        [backend] => *backend,
        set => {
            let names: Vec<&str> = set.iter().map(Backend::name).collect();
            return Err(context.error(format!(
                "exactly one backend must be set ({}), found {}",
                spansink_config::BACKENDS.join(", "),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        }
    };
    let sink = match backend {
        Backend::File(c) => shared::<sinks::file::FileSink>(c, &context).await,
        Backend::Stdout(c) => shared::<sinks::stdout::StdoutSink>(c, &context).await,
        Backend::Blackhole(c) => shared::<sinks::blackhole::BlackholeSink>(c, &context).await,
        Backend::Otlp(c) => shared::<sinks::otlp::OtlpSink>(c, &context).await,
        Backend::Kafka(c) => shared::<sinks::kafka::KafkaSink>(c, &context).await,
        Backend::S3(c) => shared::<sinks::s3::S3Sink>(c, &context).await,
        Backend::Elasticsearch(c) => {
            shared::<sinks::elasticsearch::ElasticsearchSink>(c, &context).await
        }
        Backend::Redis(c) => shared::<sinks::redis::RedisSink>(c, &context).await,
        Backend::Postgres(c) => shared::<sinks::postgres::PostgresSink>(c, &context).await,
        Backend::ClickHouse(c) => shared::<sinks::clickhouse::ClickHouseSink>(c, &context).await,
        Backend::RabbitMq(c) => shared::<sinks::rabbitmq::RabbitMqSink>(c, &context).await,
    }?;
    tracing::debug!(sink = %name, backend = %backend.name(), "built sink");
    Ok(sink)
}

async fn shared<S: BuildSink>(
    config: &S::Config,
    context: &SinkContext<'_>,
) -> Result<SharedSink, BuildError> {
    Ok(Arc::new(S::build(config, context).await?))
}

#[cfg(test)]
mod tests {
    use spansink_config::{BlackholeSinkConfig, FileSinkConfig, OtlpSinkConfig, StdoutSinkConfig};

    use super::*;
    use crate::otlp::fixtures;
    use crate::otlp::{Batch, TraceData};

    fn file_config(path: &std::path::Path) -> FileSinkConfig {
        serde_yaml::from_str(&format!("path: {}", path.display())).unwrap()
    }

    #[tokio::test]
    async fn each_backend_is_built_from_its_config() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::for_tests();
        let batch: Batch = [TraceData::from_request(&fixtures::request(2, 1))]
            .into_iter()
            .collect();

        let path = dir.path().join("out/spans.jsonl");
        let file = SinkConfig {
            file: Some(file_config(&path)),
            ..SinkConfig::default()
        };
        let sink = build("f", &file, &metrics).await.unwrap();
        sink.export(&batch).await.unwrap();
        sink.shutdown().await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);

        let blackhole = SinkConfig {
            blackhole: Some(BlackholeSinkConfig {}),
            ..SinkConfig::default()
        };
        build("b", &blackhole, &metrics)
            .await
            .unwrap()
            .export(&batch)
            .await
            .unwrap();

        let stdout = SinkConfig {
            stdout: Some(StdoutSinkConfig::default()),
            ..SinkConfig::default()
        };
        assert!(build("s", &stdout, &metrics).await.is_ok());

        let otlp = SinkConfig {
            otlp: Some(OtlpSinkConfig {
                endpoint: "http://127.0.0.1:1".to_string(),
                headers: Default::default(),
                compression: spansink_config::Compression::Gzip,
            }),
            ..SinkConfig::default()
        };
        // Lazy connection: building succeeds with nothing listening.
        assert!(build("o", &otlp, &metrics).await.is_ok());
    }

    #[tokio::test]
    async fn zero_or_two_backends_are_a_build_error_not_a_panic() {
        let metrics = Metrics::for_tests();
        let err = build("x", &SinkConfig::default(), &metrics)
            .await
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "sinks.x: exactly one backend must be set ({}), found none",
                spansink_config::BACKENDS.join(", ")
            )
        );
        let two = SinkConfig {
            stdout: Some(StdoutSinkConfig::default()),
            blackhole: Some(BlackholeSinkConfig {}),
            ..SinkConfig::default()
        };
        let err = build("x", &two, &metrics).await.err().unwrap();
        assert!(
            err.to_string().ends_with("found stdout, blackhole"),
            "{err}"
        );
    }
}
