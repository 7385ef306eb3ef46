//! Structured logs through `tracing`: text for people, JSON for log pipelines. The filter
//! comes from the config's `telemetry.log_level`, overridden by `RUST_LOG`.

use std::io::IsTerminal;

use spansink_config::{LogFormat, use_colour};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, before anything logs; a second call (tests)
/// is a no-op.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour is decided for stderr, the stream written to: a file or a pipe (a log
    // collector, `2> file`) would otherwise get escape codes around every level and field.
    let ansi = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
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

/// A list as one plain log value (`a, b, c`), so that log fields never carry `Debug`
/// quoting and brackets (`["a", "b"]`), which log pipelines then have to unpick.
pub fn list<I>(items: I) -> String
where
    I: IntoIterator,
    I::Item: std::fmt::Display,
{
    let mut out = String::new();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&item.to_string());
    }
    out
}

/// Counts by key as one plain log value (`version_conflict=3, mapper_parsing=1`).
pub fn counts<'a, K, V, I>(pairs: I) -> String
where
    I: IntoIterator<Item = (&'a K, &'a V)>,
    K: std::fmt::Display + ?Sized + 'a,
    V: std::fmt::Display + 'a,
{
    list(pairs.into_iter().map(|(k, v)| format!("{k}={v}")))
}

/// An optional listener address as a plain log value: the address, or `off`.
pub fn address(addr: Option<std::net::SocketAddr>) -> String {
    addr.map_or_else(|| "off".to_string(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn values_are_plain_text() {
        assert_eq!(list(["a", "b"]), "a, b");
        assert_eq!(list(Vec::<String>::new()), "");
        let counts_by_kind = BTreeMap::from([("x", 3), ("y", 1)]);
        assert_eq!(counts(&counts_by_kind), "x=3, y=1");
        assert_eq!(address(None), "off");
        assert_eq!(
            address(Some("127.0.0.1:4317".parse().unwrap())),
            "127.0.0.1:4317"
        );
    }
}
