//! The spansink exporter's configuration model: receivers, telemetry and named sinks
//! with their policy chains. The exporter parses it from YAML; the operator embeds the
//! same type as `SpanSink.spec.pipeline`, so both check a config in exactly one way
//! ([`validate`]). Nothing here does I/O beyond reading a file in [`ExporterConfig::load`].

mod cors;
mod policy;
mod receiver_auth;
mod receivers;
mod sink;
mod telemetry;
mod time_template;
mod transform;
mod units;
pub mod validate;

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use cors::CorsConfig;
pub use policy::{
    AttributeMatch, BatchConfig, DurableQueueConfig, FilterConfig, FsyncPolicy, OnFiltered,
    QueueConfig, RateLimitConfig, RetryConfig, SpanMatch, WhenFull,
};
pub use receiver_auth::{BasicAuthConfig, ReceiverAuthConfig};
pub use receivers::{
    AcknowledgementMode, ClientAuth, ListenerConfig, ReceiverTlsConfig, ReceiversConfig, TlsVersion,
};
// Every backend's settings, through `sink`'s one list of backends (no list to keep here).
pub use sink::*;
pub use telemetry::{LogFormat, ShutdownConfig, TelemetryConfig, use_colour};
pub use time_template::{TimeTemplate, TimeTemplateError};
pub use transform::{
    AttributeScope, AttributeValue, DEFAULT_REPLACEMENT, RedactionPattern, RegexField,
    TransformAction, TransformConfig, TransformRule, compile_regex,
};
pub use units::{ByteSize, Duration};
pub use validate::{ValidationError, ValidationErrors, validate};

/// The whole configuration of one exporter: where it listens, where spans go, and how
/// it reports on itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExporterConfig {
    /// OTLP receivers (gRPC and HTTP) and request limits.
    #[serde(default)]
    pub receivers: ReceiversConfig,
    /// Named sinks. Every span accepted by a receiver goes to every sink (fan-out)
    /// except those marked `fallback_only`. Names are lowercase letters, digits and `-`
    /// (they appear in metric labels and log lines).
    // Boxed: a B-tree node holds room for 11 values inline, and a SinkConfig (every
    // backend's config side by side) is ~2 KB, so an unboxed map costs ~22 KB even for one
    // sink. The operator caches one config per SpanSink; boxing keeps 1,000 of them small.
    pub sinks: BTreeMap<String, Box<SinkConfig>>,
    /// Metrics/health endpoint and logs.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Behaviour on SIGTERM/SIGINT.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The text is not YAML of the right shape (unknown field, wrong type, bad unit).
    #[error("config is not valid: {0}")]
    Parse(String),
    /// The shape is right but the values do not make sense together.
    #[error("config is not valid:\n{0}")]
    Invalid(#[from] ValidationErrors),
}

impl ExporterConfig {
    /// Parses and validates YAML text: the one way every caller reads a config.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        // serde_path_to_error gives the full path of the failing field (serde_yaml alone
        // stops at its parent), so the message says exactly which line of YAML to fix.
        let de = serde_yaml::Deserializer::from_str(text);
        let config: ExporterConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde_yaml names the path itself for some errors (a missing field): once is
            // enough.
            ConfigError::Parse(if path == "." || inner.starts_with(&format!("{path}: ")) {
                inner
            } else {
                format!("{path}: {inner}")
            })
        })?;
        validate(&config)?;
        Ok(config)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// The config as YAML, in the canonical form (defaults filled in), as the operator
    /// renders it into a ConfigMap.
    pub fn to_yaml(&self) -> String {
        // Serializing plain data structs with string keys cannot fail.
        serde_yaml::to_string(self).unwrap_or_default()
    }

    /// The sinks that receive spans from the receivers (all but `fallback_only` ones).
    pub fn primary_sinks(&self) -> impl Iterator<Item = (&String, &SinkConfig)> {
        self.sinks
            .iter()
            .filter(|(_, s)| !s.fallback_only)
            .map(|(name, sink)| (name, &**sink))
    }
}

pub(crate) fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "sinks:\n  main:\n    file:\n      path: ./spans/spans.jsonl\n";

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = ExporterConfig::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.receivers.grpc.endpoint, "0.0.0.0:4317");
        assert_eq!(c.receivers.http.endpoint, "0.0.0.0:4318");
        assert_eq!(c.telemetry.endpoint, "0.0.0.0:8888");
        let s = &c.sinks["main"];
        assert_eq!(s.queue.max_spans, 2048);
        assert_eq!(s.batch.max_spans, 512);
        assert_eq!(s.batch.flush_interval, Duration::from_secs(5));
        assert_eq!(s.timeout, Duration::from_secs(30));
        assert_eq!(s.file.as_ref().unwrap().format, FileFormat::Jsonl);
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_path() {
        let err = ExporterConfig::from_yaml(
            "sinks:\n  main:\n    file:\n      path: x\n      colour: red\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("colour"), "{err}");
        assert!(err.contains("sinks.main.file"), "{err}");
    }

    #[test]
    fn a_missing_field_names_its_path_once() {
        let err = ExporterConfig::from_yaml(
            "receivers:\n  http: {enabled: false}\nsinks:\n  main: {blackhole: {}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("config is not valid: receivers.http: missing field `endpoint`"),
            "{err}"
        );
        assert_eq!(err.matches("receivers.http").count(), 1, "{err}");
    }

    #[test]
    fn bad_units_name_the_field() {
        let err = ExporterConfig::from_yaml(
            "sinks:\n  main:\n    blackhole: {}\n    batch:\n      flush_interval: soon\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sinks.main.batch.flush_interval"), "{err}");
        assert!(err.contains("\"soon\""), "{err}");
    }

    #[test]
    fn canonical_yaml_round_trips() {
        let c = ExporterConfig::from_yaml(MINIMAL).unwrap();
        let again = ExporterConfig::from_yaml(&c.to_yaml()).unwrap();
        assert_eq!(c, again);
        assert_eq!(c.to_yaml(), again.to_yaml());
    }

    /// Found by the config fuzz target: a `null` rotation size was written without its
    /// key and read back as the 100MiB default.
    #[test]
    fn size_rotation_turned_off_survives_a_round_trip() {
        let c = ExporterConfig::from_yaml(
            "sinks:\n  main:\n    file:\n      path: x\n      rotation:\n        max_size: null\n",
        )
        .unwrap();
        let rotation = |c: &ExporterConfig| c.sinks["main"].file.as_ref().unwrap().rotation.clone();
        assert_eq!(rotation(&c).max_size, None);
        let again = ExporterConfig::from_yaml(&c.to_yaml()).unwrap();
        assert_eq!(rotation(&again), rotation(&c));
    }
}
