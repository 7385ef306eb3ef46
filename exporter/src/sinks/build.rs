//! Turns one sink's config into its backend sink: the `make_sink` the chain builder
//! calls for each named sink. Not the policies around it (the chain builder adds those).

use std::sync::Arc;

use spansink_config::SinkConfig;

use crate::telemetry::metrics::Metrics;

use super::blackhole::BlackholeSink;
use super::file::FileSink;
use super::otlp::OtlpSink;
use super::stdout::StdoutSink;
use super::{BuildError, SharedSink};

/// Builds the backend of sink `name` from whichever one of `file`, `stdout`, `blackhole`,
/// `otlp` is set. Must be called inside the tokio runtime (the OTLP channel spawns its
/// connection task there); creates the file sink's directory.
pub fn build(name: &str, config: &SinkConfig, metrics: &Metrics) -> Result<SharedSink, BuildError> {
    let set = config.backend_names();
    let sink: SharedSink = match (
        set.as_slice(),
        &config.file,
        &config.stdout,
        &config.blackhole,
        &config.otlp,
    ) {
        ([_], Some(file), _, _, _) => Arc::new(FileSink::new(name, file)?),
        ([_], _, Some(stdout), _, _) => Arc::new(StdoutSink::new(stdout)),
        ([_], _, _, Some(_), _) => Arc::new(BlackholeSink),
        ([_], _, _, _, Some(otlp)) => Arc::new(OtlpSink::new(name, otlp, metrics)?),
        _ => {
            return Err(BuildError {
                sink: name.to_string(),
                message: format!(
                    "exactly one backend must be set (file, stdout, blackhole, otlp), found {}",
                    if set.is_empty() {
                        "none".to_string()
                    } else {
                        set.join(", ")
                    }
                ),
            });
        }
    };
    tracing::debug!(sink = %name, backend = %set.join(","), "built sink");
    Ok(sink)
}

#[cfg(test)]
mod tests {
    use spansink_config::{BlackholeSinkConfig, FileSinkConfig, OtlpSinkConfig, StdoutSinkConfig};

    use super::*;
    use crate::encoding::fixtures;
    use crate::otlp::{Batch, TraceData};

    fn file_config(path: &std::path::Path) -> FileSinkConfig {
        serde_yaml::from_str(&format!("path: {}", path.display())).unwrap()
    }

    #[tokio::test]
    async fn each_backend_is_built_from_its_config() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::for_tests();
        let batch: Batch = [TraceData::from_request(&fixtures::load_request(2, 1))]
            .into_iter()
            .collect();

        let path = dir.path().join("out/spans.jsonl");
        let file = SinkConfig {
            file: Some(file_config(&path)),
            ..SinkConfig::default()
        };
        let sink = build("f", &file, &metrics).unwrap();
        sink.export(&batch).await.unwrap();
        sink.shutdown().await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);

        let blackhole = SinkConfig {
            blackhole: Some(BlackholeSinkConfig {}),
            ..SinkConfig::default()
        };
        build("b", &blackhole, &metrics)
            .unwrap()
            .export(&batch)
            .await
            .unwrap();

        let stdout = SinkConfig {
            stdout: Some(StdoutSinkConfig::default()),
            ..SinkConfig::default()
        };
        assert!(build("s", &stdout, &metrics).is_ok());

        let otlp = SinkConfig {
            otlp: Some(OtlpSinkConfig {
                endpoint: "http://127.0.0.1:1".to_string(),
                headers: Default::default(),
                compression: spansink_config::Compression::Gzip,
            }),
            ..SinkConfig::default()
        };
        // Lazy connection: building succeeds with nothing listening.
        assert!(build("o", &otlp, &metrics).is_ok());
    }

    #[tokio::test]
    async fn zero_or_two_backends_are_a_build_error_not_a_panic() {
        let metrics = Metrics::for_tests();
        let err = build("x", &SinkConfig::default(), &metrics).err().unwrap();
        assert_eq!(
            err.to_string(),
            "sinks.x: exactly one backend must be set (file, stdout, blackhole, otlp), found none"
        );
        let two = SinkConfig {
            stdout: Some(StdoutSinkConfig::default()),
            blackhole: Some(BlackholeSinkConfig {}),
            ..SinkConfig::default()
        };
        let err = build("x", &two, &metrics).err().unwrap();
        assert!(
            err.to_string().ends_with("found stdout, blackhole"),
            "{err}"
        );
    }
}
