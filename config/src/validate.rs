//! Semantic checks of an [`ExporterConfig`]: the one place that decides whether a config
//! that parsed is usable. Every problem is reported with its field path, all at once.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;

use crate::policy::{
    BatchConfig, FilterConfig, QueueConfig, RateLimitConfig, RetryConfig, SpanMatch,
};
use crate::sink::{FileSinkConfig, OtlpSinkConfig, SinkConfig};
use crate::units::ByteSize;
use crate::{ExporterConfig, ListenerConfig};

/// One problem, e.g. `sinks.kafka-main.retry.max_attempts: must be >= 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Dotted path of the offending field, from the config's root.
    pub path: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Checks everything that the types alone cannot express. `Ok` means the exporter will
/// start with this config (barring I/O such as a port already taken).
pub fn validate(config: &ExporterConfig) -> Result<(), ValidationErrors> {
    let mut v = Validator::default();
    v.receivers(config);
    v.listen_address("telemetry.endpoint", &config.telemetry.endpoint);
    v.positive(
        "shutdown.drain_timeout",
        config.shutdown.drain_timeout.get().is_zero(),
    );
    v.sinks(config);
    if v.errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(v.errors))
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<ValidationError>,
}

impl Validator {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn check(&mut self, ok: bool, path: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.error(path, message);
        }
    }

    fn positive(&mut self, path: &str, is_zero: bool) {
        self.check(!is_zero, path, "must be greater than zero");
    }

    fn at_least(&mut self, path: String, value: u64, min: u64) {
        self.check(
            value >= min,
            path,
            format!("must be >= {min} (got {value})"),
        );
    }

    fn min_size(&mut self, path: String, value: ByteSize, min: ByteSize) {
        self.check(
            value >= min,
            path,
            format!("must be at least {min} (got {value})"),
        );
    }

    fn listen_address(&mut self, path: &str, endpoint: &str) {
        if endpoint.parse::<SocketAddr>().is_err() {
            self.error(
                path,
                format!("{endpoint:?} is not an IP:port listen address (e.g. \"0.0.0.0:4317\")"),
            );
        }
    }

    fn listener(&mut self, path: &str, listener: &ListenerConfig) {
        if listener.enabled {
            self.listen_address(&format!("{path}.endpoint"), &listener.endpoint);
        }
    }

    fn receivers(&mut self, config: &ExporterConfig) {
        let r = &config.receivers;
        self.listener("receivers.grpc", &r.grpc);
        self.listener("receivers.http", &r.http);
        self.check(
            r.grpc.enabled || r.http.enabled,
            "receivers",
            "at least one of receivers.grpc and receivers.http must be enabled",
        );
        self.min_size(
            "receivers.max_request_size".into(),
            r.max_request_size,
            ByteSize::kib(1),
        );
        self.check(
            r.max_decompressed_size >= r.max_request_size,
            "receivers.max_decompressed_size",
            format!(
                "must be >= receivers.max_request_size ({} < {})",
                r.max_decompressed_size, r.max_request_size
            ),
        );
    }

    fn sinks(&mut self, config: &ExporterConfig) {
        if config.sinks.is_empty() {
            self.error("sinks", "at least one sink is required");
            return;
        }
        if config.primary_sinks().next().is_none() {
            self.error(
                "sinks",
                "every sink is fallback_only: no sink would receive spans from the receivers",
            );
        }
        let referenced: BTreeSet<&str> = config
            .sinks
            .values()
            .filter_map(|s| s.fallback.as_deref())
            .collect();
        for (name, sink) in &config.sinks {
            let path = format!("sinks.{name}");
            self.sink_name(&path, name);
            self.sink(&path, sink);
            if let Some(target) = &sink.fallback {
                match config.sinks.get(target) {
                    None => self.error(
                        format!("{path}.fallback"),
                        format!(
                            "names sink {target:?}, which does not exist (sinks: {})",
                            config.sinks.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ),
                    Some(_) if target == name => self.error(
                        format!("{path}.fallback"),
                        "a sink cannot be its own fallback",
                    ),
                    Some(_) => self.fallback_cycle(config, name, &path),
                }
            }
            if sink.fallback_only && !referenced.contains(name.as_str()) {
                self.error(
                    format!("{path}.fallback_only"),
                    "this sink is fallback_only but no sink names it as fallback: it would never receive spans",
                );
            }
        }
    }

    /// Follows `fallback` links from `start`; a loop back to `start` would bounce a
    /// failed batch between sinks forever.
    fn fallback_cycle(&mut self, config: &ExporterConfig, start: &str, path: &str) {
        let mut seen = vec![start];
        let mut current = start;
        while let Some(next) = config
            .sinks
            .get(current)
            .and_then(|s| s.fallback.as_deref())
        {
            if next == start {
                seen.push(next);
                self.error(
                    format!("{path}.fallback"),
                    format!("fallback chain loops: {}", seen.join(" -> ")),
                );
                return;
            }
            if seen.contains(&next) || !config.sinks.contains_key(next) {
                return; // a loop not through `start` is reported from its own members
            }
            seen.push(next);
            current = next;
        }
    }

    fn sink_name(&mut self, path: &str, name: &str) {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        self.check(
            ok,
            path,
            format!("sink name {name:?} must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'"),
        );
    }

    fn sink(&mut self, path: &str, sink: &SinkConfig) {
        match sink.backend_names().as_slice() {
            [] => self.error(
                path,
                "no backend set: set exactly one of file, stdout, blackhole, otlp".to_string(),
            ),
            [_] => {}
            many => self.error(
                path,
                format!("exactly one backend may be set, found {}", many.join(", ")),
            ),
        }
        if let Some(file) = &sink.file {
            self.file(&format!("{path}.file"), file);
        }
        if let Some(otlp) = &sink.otlp {
            self.otlp(&format!("{path}.otlp"), otlp);
        }
        self.queue(&format!("{path}.queue"), &sink.queue);
        self.batch(&format!("{path}.batch"), &sink.batch, &sink.queue);
        self.positive(&format!("{path}.timeout"), sink.timeout.get().is_zero());
        self.retry(&format!("{path}.retry"), &sink.retry);
        self.rate_limit(&format!("{path}.rate_limit"), &sink.rate_limit, &sink.batch);
        if let Some(filter) = &sink.filter {
            self.filter(&format!("{path}.filter"), filter);
        }
    }

    fn queue(&mut self, path: &str, q: &QueueConfig) {
        self.at_least(format!("{path}.max_spans"), q.max_spans, 1);
        self.min_size(format!("{path}.max_bytes"), q.max_bytes, ByteSize::kib(1));
        self.positive(
            &format!("{path}.block_timeout"),
            q.block_timeout.get().is_zero(),
        );
    }

    fn batch(&mut self, path: &str, b: &BatchConfig, q: &QueueConfig) {
        self.at_least(format!("{path}.max_spans"), b.max_spans, 1);
        self.check(
            b.max_spans <= q.max_spans,
            format!("{path}.max_spans"),
            format!(
                "must be <= queue.max_spans ({}), or a batch could never fill",
                q.max_spans
            ),
        );
        self.min_size(format!("{path}.max_bytes"), b.max_bytes, ByteSize::kib(1));
        self.positive(
            &format!("{path}.flush_interval"),
            b.flush_interval.get().is_zero(),
        );
    }

    fn retry(&mut self, path: &str, r: &RetryConfig) {
        self.at_least(format!("{path}.max_attempts"), u64::from(r.max_attempts), 1);
        self.positive(
            &format!("{path}.initial_backoff"),
            r.initial_backoff.get().is_zero(),
        );
        self.check(
            r.max_backoff >= r.initial_backoff,
            format!("{path}.max_backoff"),
            format!("must be >= initial_backoff ({})", r.initial_backoff),
        );
        self.check(
            r.multiplier.is_finite() && r.multiplier >= 1.0,
            format!("{path}.multiplier"),
            format!("must be >= 1.0 (got {})", r.multiplier),
        );
        self.check(
            (0.0..=1.0).contains(&r.jitter),
            format!("{path}.jitter"),
            format!("must be between 0.0 and 1.0 (got {})", r.jitter),
        );
        self.positive(
            &format!("{path}.max_elapsed"),
            r.max_elapsed.get().is_zero(),
        );
    }

    fn rate_limit(&mut self, path: &str, r: &RateLimitConfig, b: &BatchConfig) {
        self.at_least(
            format!("{path}.max_concurrent_exports"),
            u64::from(r.max_concurrent_exports),
            1,
        );
        match (r.spans_per_second, r.burst) {
            (None, Some(_)) => self.error(
                format!("{path}.burst"),
                "is set but spans_per_second is not",
            ),
            (Some(rate), burst) => {
                self.at_least(format!("{path}.spans_per_second"), rate, 1);
                let burst = burst.unwrap_or(rate);
                self.check(
                    burst >= b.max_spans,
                    format!("{path}.burst"),
                    format!(
                        "must be >= batch.max_spans ({}), or a full batch could never be sent (burst is {burst})",
                        b.max_spans
                    ),
                );
            }
            (None, None) => {}
        }
    }

    fn filter(&mut self, path: &str, f: &FilterConfig) {
        if f.include.is_none() && f.exclude.is_none() {
            self.error(
                path,
                "set include, exclude or both (an empty filter does nothing)",
            );
        }
        for (field, m) in [("include", &f.include), ("exclude", &f.exclude)] {
            if let Some(m) = m {
                self.span_match(&format!("{path}.{field}"), m);
            }
        }
    }

    fn span_match(&mut self, path: &str, m: &SpanMatch) {
        if m.services.is_empty() && m.span_names.is_empty() && m.attributes.is_empty() {
            self.error(path, "set at least one of services, span_names, attributes");
        }
        for (i, a) in m.attributes.iter().enumerate() {
            self.check(
                !a.key.is_empty(),
                format!("{path}.attributes[{i}].key"),
                "must not be empty",
            );
        }
    }

    fn file(&mut self, path: &str, f: &FileSinkConfig) {
        if f.path.trim().is_empty() {
            self.error(format!("{path}.path"), "must not be empty");
        } else if f.path.ends_with('/') {
            self.error(
                format!("{path}.path"),
                "names a directory; give a file name, e.g. ./spans/spans.jsonl",
            );
        }
        if let Some(size) = f.rotation.max_size {
            self.min_size(format!("{path}.rotation.max_size"), size, ByteSize::kib(1));
        }
        if let Some(age) = f.rotation.max_age {
            self.positive(&format!("{path}.rotation.max_age"), age.get().is_zero());
        }
        self.min_size(
            format!("{path}.buffer_size"),
            f.buffer_size,
            ByteSize::kib(1),
        );
    }

    fn otlp(&mut self, path: &str, o: &OtlpSinkConfig) {
        if !(o.endpoint.starts_with("http://") || o.endpoint.starts_with("https://")) {
            self.error(
                format!("{path}.endpoint"),
                format!(
                    "{:?} must be a URL starting with http:// or https://",
                    o.endpoint
                ),
            );
        }
        for key in o.headers.keys() {
            let ok = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
            self.check(
                ok,
                format!("{path}.headers.{key}"),
                "gRPC metadata keys must be lowercase ASCII letters, digits, '-', '_' or '.'",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        let config: ExporterConfig = serde_yaml::from_str(yaml).expect("test YAML parses");
        match validate(&config) {
            Ok(()) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_sensible_config_passes() {
        assert_eq!(
            errors(
                "sinks:\n  main:\n    otlp: {endpoint: 'http://collector:4317'}\n    fallback: dlq\n  dlq:\n    file: {path: /var/spans/dlq.jsonl}\n    fallback_only: true\n"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let errs = errors(
            "sinks:\n  kafka-main:\n    blackhole: {}\n    retry: {max_attempts: 0, jitter: 2.0}\n    fallback: nowhere\n    batch: {max_spans: 4096}\n",
        );
        assert!(
            errs.contains(&"sinks.kafka-main.retry.max_attempts: must be >= 1 (got 0)".to_string()),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("sinks.kafka-main.retry.jitter:")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("sinks.kafka-main.fallback: names sink \"nowhere\"")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e
                    .starts_with("sinks.kafka-main.batch.max_spans: must be <= queue.max_spans")),
            "{errs:?}"
        );
        assert_eq!(errs.len(), 4, "{errs:?}");
    }

    #[test]
    fn backends_are_one_of() {
        let none = errors("sinks:\n  a: {}\n");
        assert_eq!(
            none,
            vec!["sinks.a: no backend set: set exactly one of file, stdout, blackhole, otlp"]
        );
        let two = errors("sinks:\n  a:\n    blackhole: {}\n    stdout: {}\n");
        assert_eq!(
            two,
            vec!["sinks.a: exactly one backend may be set, found stdout, blackhole"]
        );
    }

    #[test]
    fn fallback_loops_and_orphans_are_refused() {
        let errs = errors(
            "sinks:\n  a: {blackhole: {}, fallback: b}\n  b: {blackhole: {}, fallback: a}\n",
        );
        assert!(
            errs.contains(&"sinks.a.fallback: fallback chain loops: a -> b -> a".to_string()),
            "{errs:?}"
        );
        let orphan =
            errors("sinks:\n  a: {blackhole: {}}\n  b: {blackhole: {}, fallback_only: true}\n");
        assert!(
            orphan[0].starts_with("sinks.b.fallback_only:"),
            "{orphan:?}"
        );
        let self_ref = errors("sinks:\n  a: {blackhole: {}, fallback: a}\n");
        assert_eq!(
            self_ref,
            vec!["sinks.a.fallback: a sink cannot be its own fallback"]
        );
    }

    #[test]
    fn names_addresses_and_limits_are_checked() {
        let errs = errors(
            "receivers:\n  grpc: {endpoint: 'localhost:4317'}\n  max_request_size: 8MiB\n  max_decompressed_size: 1MiB\nsinks:\n  Main_Sink: {blackhole: {}, rate_limit: {spans_per_second: 100}}\n",
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("receivers.grpc.endpoint:")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("receivers.max_decompressed_size:")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("sinks.Main_Sink: sink name")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e
                .starts_with("sinks.Main_Sink.rate_limit.burst: must be >= batch.max_spans (512)")),
            "{errs:?}"
        );
    }
}
