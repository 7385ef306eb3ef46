//! Turns sink configs into backend sinks: [`build_all`] builds every named sink of a
//! config before the chain builder wraps policies around them. Not the policies.

use std::collections::BTreeMap;
use std::sync::Arc;

use spansink_config::{ExporterConfig, SinkConfig};

use crate::telemetry::metrics::Metrics;

use super::blackhole::BlackholeSink;
use super::clickhouse::ClickHouseSink;
use super::elasticsearch::ElasticsearchSink;
use super::file::FileSink;
use super::kafka::KafkaSink;
use super::otlp::OtlpSink;
use super::postgres::PostgresSink;
use super::rabbitmq::RabbitMqSink;
use super::redis::RedisSink;
use super::s3::S3Sink;
use super::stdout::StdoutSink;
use super::{BuildError, SharedSink};

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

/// Builds the backend of sink `name` from whichever one backend is set. Must be called
/// inside the tokio runtime (the OTLP channel and the Kafka producer start tasks there);
/// async because the S3 sink loads the AWS credential chain; creates the file sink's
/// directory.
pub async fn build(
    name: &str,
    config: &SinkConfig,
    metrics: &Metrics,
) -> Result<SharedSink, BuildError> {
    let set = config.backend_names();
    if set.len() != 1 {
        return Err(BuildError {
            sink: name.to_string(),
            message: format!(
                "exactly one backend must be set ({}), found {}",
                spansink_config::BACKENDS.join(", "),
                if set.is_empty() {
                    "none".to_string()
                } else {
                    set.join(", ")
                }
            ),
        });
    }
    let sink: SharedSink = if let Some(file) = &config.file {
        Arc::new(FileSink::new(name, file)?)
    } else if let Some(stdout) = &config.stdout {
        Arc::new(StdoutSink::new(stdout))
    } else if config.blackhole.is_some() {
        Arc::new(BlackholeSink)
    } else if let Some(otlp) = &config.otlp {
        Arc::new(OtlpSink::new(name, otlp, metrics)?)
    } else if let Some(kafka) = &config.kafka {
        Arc::new(KafkaSink::new(name, kafka, metrics)?)
    } else if let Some(s3) = &config.s3 {
        Arc::new(S3Sink::new(name, s3, metrics).await?)
    } else if let Some(es) = &config.elasticsearch {
        Arc::new(ElasticsearchSink::new(name, es, metrics)?)
    } else if let Some(redis) = &config.redis {
        Arc::new(RedisSink::new(name, redis)?)
    } else if let Some(postgres) = &config.postgres {
        Arc::new(PostgresSink::new(name, postgres, metrics)?)
    } else if let Some(clickhouse) = &config.clickhouse {
        Arc::new(ClickHouseSink::new(name, clickhouse, metrics)?)
    } else if let Some(rabbitmq) = &config.rabbitmq {
        Arc::new(RabbitMqSink::new(name, rabbitmq, metrics)?)
    } else {
        return Err(BuildError {
            sink: name.to_string(),
            message: format!(
                "backend {} is not supported by this exporter build",
                set.join(", ")
            ),
        });
    };
    tracing::debug!(sink = %name, backend = %set.join(","), "built sink");
    Ok(sink)
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
