//! Structured logs through `tracing`: text for people, JSON for log pipelines. The filter
//! comes from the config's `telemetry.log_level`, overridden by `RUST_LOG`.

use spansink_config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, before anything logs; a second call (tests)
/// is a no-op.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // try_init: a subscriber may already be installed (tests run many apps in one process).
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
