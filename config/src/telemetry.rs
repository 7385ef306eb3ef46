//! The exporter's own observability: the metrics/health endpoint and log output.
//! Not the spans it exports: those are configured under `sinks`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Duration;

/// Metrics, health checks and logs of the exporter itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `host:port` serving `/metrics` (OpenMetrics text), `/healthz` and `/readyz`.
    /// Default: `0.0.0.0:8888`.
    #[serde(default = "TelemetryConfig::default_endpoint")]
    pub endpoint: String,
    /// Log line format: `text` for people, `json` for log pipelines. Default: `text`.
    /// Text is coloured only when stderr is a terminal and `NO_COLOR` is unset or empty.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` env-filter syntax, e.g. `info` or
    /// `info,spansink_exporter::chain=debug`. The `RUST_LOG` variable overrides it.
    /// Default: `info`.
    #[serde(default = "TelemetryConfig::default_log_level")]
    pub log_level: String,
}

impl TelemetryConfig {
    fn default_endpoint() -> String {
        "0.0.0.0:8888".into()
    }
    fn default_log_level() -> String {
        "info".into()
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            endpoint: Self::default_endpoint(),
            log_format: LogFormat::default(),
            log_level: Self::default_log_level(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal, and not with `NO_COLOR` non-empty).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// What the exporter does on SIGTERM/SIGINT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long to keep delivering queued spans after receivers stop accepting. What is
    /// still queued at the deadline is logged and counted as dropped (`reason="shutdown"`).
    /// Keep it below the pod's `terminationGracePeriodSeconds`. Default: `20s`.
    #[serde(default = "ShutdownConfig::default_drain_timeout")]
    pub drain_timeout: Duration,
}

impl ShutdownConfig {
    /// How long each sink may take to flush and close after the drain (`Sink::shutdown`,
    /// all sinks at once). Fixed, not configurable; a deployment's grace period must
    /// cover it on top of `drain_timeout`.
    pub const SINK_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

    fn default_drain_timeout() -> Duration {
        Duration::from_secs(20)
    }

    /// The longest the exporter spends in the chain's shutdown after SIGTERM: the drain
    /// deadline, then the sinks' shutdown.
    pub fn max_chain_shutdown(&self) -> std::time::Duration {
        self.drain_timeout
            .get()
            .saturating_add(Self::SINK_SHUTDOWN_TIMEOUT)
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Self::default_drain_timeout(),
        }
    }
}

/// Whether text log lines get ANSI colour: only when the stream they are written to is a
/// terminal, and not when `NO_COLOR` is set to a non-empty value (<https://no-color.org>).
/// A pod's log (a pipe to the container runtime) or a file gets none. Shared by the
/// exporter and the operator.
pub fn use_colour(stream_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stream_is_terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(use_colour(true, None));
        assert!(!use_colour(false, None));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, Some(OsStr::new("1"))));
        // no-color.org: an empty NO_COLOR does not disable colour.
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(false, Some(OsStr::new(""))));
    }
}
