//! Semantic checks of an [`ExporterConfig`]: the one place that decides whether a config
//! that parsed is usable. Every problem is reported with its field path, all at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;

use crate::policy::{
    BatchConfig, FilterConfig, QueueConfig, RateLimitConfig, RetryConfig, SpanMatch,
};
use crate::sink::SinkConfig;
use crate::units::{ByteSize, Duration};
use crate::{CorsConfig, ExporterConfig, ListenerConfig, ReceiverAuthConfig};

/// Whether `origin` is `*` or `scheme://host[:port]` as browsers send it in `Origin`, with
/// at most a leading `*.` wildcard label in the host; the problem otherwise.
fn check_cors_origin(origin: &str) -> Result<(), &'static str> {
    if origin == "*" {
        return Ok(());
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err("is not an origin: write scheme://host[:port], e.g. https://app.example.com");
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err("has no valid scheme (e.g. https://)");
    }
    if rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err("has a path: an origin is only scheme://host[:port] (no trailing /)");
    }
    // An IPv6 host is bracketed: its colons are not the port's.
    let (host, port) = match rest.rfind(']') {
        Some(end) => (
            &rest[..=end],
            Some(&rest[end + 1..]).filter(|p| !p.is_empty()),
        ),
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    if let Some(port) = port
        && port.trim_start_matches(':').parse::<u16>().is_err()
    {
        return Err("has an invalid port");
    }
    let host = host.strip_prefix("*.").unwrap_or(host);
    if host.is_empty() || host.contains('*') {
        return Err("has no host, or a '*' other than one leading \"*.\" label");
    }
    Ok(())
}

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

/// Collects the problems of one config; the backends' checks (`sink/<backend>.rs`) add
/// theirs through the same helpers.
#[derive(Default)]
pub(crate) struct Validator {
    errors: Vec<ValidationError>,
}

/// Where a backend's settings sit in the config, for its checks' messages.
pub(crate) struct BackendAt<'a> {
    /// The backend's path, e.g. `sinks.main.kafka`.
    pub path: String,
    /// The sink's path, e.g. `sinks.main`.
    pub sink_path: &'a str,
    /// The sink's `timeout`, which backend timeouts must stay below.
    pub sink_timeout: Duration,
}

/// A backend's checks beyond what its types express, next to its config type. Every
/// problem goes to `v` with its field path under `at.path`.
pub(crate) trait ValidateBackend {
    fn validate(&self, _v: &mut Validator, _at: &BackendAt<'_>) {}
}

impl Validator {
    pub(crate) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(crate) fn check(&mut self, ok: bool, path: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.error(path, message);
        }
    }

    pub(crate) fn positive(&mut self, path: &str, is_zero: bool) {
        self.check(!is_zero, path, "must be greater than zero");
    }

    pub(crate) fn at_least(&mut self, path: String, value: u64, min: u64) {
        self.check(
            value >= min,
            path,
            format!("must be >= {min} (got {value})"),
        );
    }

    pub(crate) fn min_size(&mut self, path: String, value: ByteSize, min: ByteSize) {
        self.check(
            value >= min,
            path,
            format!("must be at least {min} (got {value})"),
        );
    }

    pub(crate) fn listen_address(&mut self, path: &str, endpoint: &str) {
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
        if let Some(tls) = &listener.tls {
            self.errors.extend(tls.problems(&format!("{path}.tls")));
        }
    }

    fn receivers(&mut self, config: &ExporterConfig) {
        let r = &config.receivers;
        if let Some(tls) = &r.tls {
            self.errors.extend(tls.problems("receivers.tls"));
        }
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
        self.positive(
            "receivers.acknowledgement_timeout",
            r.acknowledgement_timeout.get().is_zero(),
        );
        let age = r.grpc_max_connection_age.get();
        self.check(
            age.is_zero() || age >= std::time::Duration::from_secs(1),
            "receivers.grpc_max_connection_age",
            format!(
                "must be 0s (no limit) or at least 1s (got {})",
                r.grpc_max_connection_age
            ),
        );
        self.positive(
            "receivers.grpc_max_connection_age_grace",
            r.grpc_max_connection_age_grace.get().is_zero(),
        );
        if r.grpc.cors.is_some() {
            self.error(
                "receivers.grpc.cors",
                "CORS applies to OTLP/HTTP only (browsers do not speak gRPC); move it to receivers.http.cors",
            );
        }
        if let Some(cors) = &r.http.cors {
            self.cors("receivers.http.cors", cors);
        }
        if let Some(auth) = &r.auth {
            self.receiver_auth("receivers.auth", auth);
        }
    }

    fn receiver_auth(&mut self, path: &str, auth: &ReceiverAuthConfig) {
        if auth.bearer_tokens_env.is_empty()
            && auth.bearer_token_files.is_empty()
            && auth.basic.is_none()
        {
            self.error(
                path,
                "set bearer_tokens_env, bearer_token_files or basic (an auth block without \
                 credentials would refuse every request), or remove it",
            );
        }
        for (i, name) in auth.bearer_tokens_env.iter().enumerate() {
            self.env_name(format!("{path}.bearer_tokens_env[{i}]"), name);
        }
        for (i, file) in auth.bearer_token_files.iter().enumerate() {
            self.check(
                !file.trim().is_empty(),
                format!("{path}.bearer_token_files[{i}]"),
                "must be a file path, e.g. /etc/spansink/auth/token",
            );
        }
        if let Some(basic) = &auth.basic {
            let path = format!("{path}.basic");
            self.check(
                !basic.username.is_empty() && !basic.username.contains(':'),
                format!("{path}.username"),
                format!(
                    "{:?} is not a basic-auth user name (not empty, no ':')",
                    basic.username
                ),
            );
            match (&basic.password_env, &basic.password_file) {
                (Some(name), None) => self.env_name(format!("{path}.password_env"), name),
                (None, Some(file)) => self.check(
                    !file.trim().is_empty(),
                    format!("{path}.password_file"),
                    "must be a file path, e.g. /etc/spansink/auth/password",
                ),
                _ => self.error(path, "set exactly one of password_env and password_file"),
            }
        }
    }

    fn cors(&mut self, path: &str, cors: &CorsConfig) {
        if cors.allowed_origins.is_empty() {
            self.error(
                format!("{path}.allowed_origins"),
                "list at least one origin (e.g. https://app.example.com, or \"*\"), or remove cors",
            );
        }
        for (i, origin) in cors.allowed_origins.iter().enumerate() {
            if let Err(problem) = check_cors_origin(origin) {
                self.error(
                    format!("{path}.allowed_origins[{i}]"),
                    format!("{origin:?} {problem}"),
                );
            }
        }
        for (i, name) in cors.allowed_headers.iter().enumerate() {
            let token = name == "*"
                || (!name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)));
            self.check(
                token,
                format!("{path}.allowed_headers[{i}]"),
                format!("{name:?} is not an HTTP header name (e.g. X-Tenant)"),
            );
        }
        if let Some(max_age) = cors.max_age {
            self.check(
                max_age.get().subsec_nanos() == 0,
                format!("{path}.max_age"),
                format!("must be whole seconds (Access-Control-Max-Age), got {max_age}"),
            );
        }
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
        self.shared_queue_directories(config);
    }

    /// Two sinks writing one queue directory would deliver each other's spans.
    fn shared_queue_directories(&mut self, config: &ExporterConfig) {
        let mut owners: BTreeMap<std::path::PathBuf, &str> = BTreeMap::new();
        for (name, sink) in &config.sinks {
            let Some(durable) = &sink.queue.durable else {
                continue;
            };
            match owners.entry(durable.directory(name)) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(name);
                }
                std::collections::btree_map::Entry::Occupied(first) => self.error(
                    format!("sinks.{name}.queue.durable.path"),
                    format!(
                        "{} is already the queue directory of sink {:?}: give each sink its own",
                        first.key().display(),
                        first.get()
                    ),
                ),
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
                format!(
                    "no backend set: set exactly one of {}",
                    crate::BACKENDS.join(", ")
                ),
            ),
            [_] => {}
            many => self.error(
                path,
                format!("exactly one backend may be set, found {}", many.join(", ")),
            ),
        }
        for backend in sink.backends() {
            let at = BackendAt {
                path: format!("{path}.{}", backend.name()),
                sink_path: path,
                sink_timeout: sink.timeout,
            };
            backend.validate(self, &at);
        }
        self.queue(&format!("{path}.queue"), &sink.queue);
        self.batch(&format!("{path}.batch"), &sink.batch, &sink.queue);
        self.positive(&format!("{path}.timeout"), sink.timeout.get().is_zero());
        self.retry(&format!("{path}.retry"), &sink.retry);
        self.rate_limit(&format!("{path}.rate_limit"), &sink.rate_limit, &sink.batch);
        if let Some(filter) = &sink.filter {
            self.filter(&format!("{path}.filter"), filter);
        }
        if let Some(transform) = &sink.transform {
            self.errors
                .extend(transform.problems(&format!("{path}.transform")));
        }
    }

    fn queue(&mut self, path: &str, q: &QueueConfig) {
        self.at_least(format!("{path}.max_spans"), q.max_spans, 1);
        self.min_size(format!("{path}.max_bytes"), q.max_bytes, ByteSize::kib(1));
        self.positive(
            &format!("{path}.block_timeout"),
            q.block_timeout.get().is_zero(),
        );
        if let Some(durable) = &q.durable {
            let path = format!("{path}.durable");
            // Room for several segments (256 KiB at this size): one being written while
            // older ones are delivered and deleted.
            self.min_size(
                format!("{path}.max_bytes"),
                durable.max_bytes,
                ByteSize::mib(1),
            );
            self.positive(
                &format!("{path}.fsync_interval"),
                durable.fsync_interval.get().is_zero(),
            );
            if let Some(dir) = &durable.path {
                self.check(!dir.is_empty(), format!("{path}.path"), "must not be empty");
            }
        }
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

    pub(crate) fn env_name(&mut self, path: String, name: &str) {
        let ok = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        self.check(
            ok,
            path,
            format!(
                "{name:?} is not an environment variable name (letters, digits and '_', e.g. KAFKA_PASSWORD)"
            ),
        );
    }
}

/// The problems `validate` finds in a YAML config, as `path: message` lines: what the
/// checks' tests (here and in `sink/<backend>.rs`) compare.
#[cfg(test)]
pub(crate) fn problems_of(yaml: &str) -> Vec<String> {
    let config: ExporterConfig = serde_yaml::from_str(yaml).expect("test YAML parses");
    match validate(&config) {
        Ok(()) => vec![],
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use problems_of as errors;

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
    fn grpc_connection_age_is_off_or_at_least_a_second_with_a_grace() {
        let config: ExporterConfig =
            serde_yaml::from_str("sinks:\n  a: {blackhole: {}}\n").unwrap();
        assert_eq!(config.receivers.grpc_max_connection_age.to_string(), "5m");
        assert_eq!(
            config.receivers.grpc_max_connection_age_grace.to_string(),
            "30s"
        );
        for ok in ["0s", "1s", "10m"] {
            assert_eq!(
                errors(&format!(
                    "receivers: {{grpc_max_connection_age: {ok}}}\nsinks:\n  a: {{blackhole: {{}}}}\n"
                )),
                Vec::<String>::new(),
                "{ok}"
            );
        }
        assert_eq!(
            errors(
                "receivers: {grpc_max_connection_age: 500ms, grpc_max_connection_age_grace: 0s}\nsinks:\n  a: {blackhole: {}}\n"
            ),
            vec![
                "receivers.grpc_max_connection_age: must be 0s (no limit) or at least 1s (got 500ms)",
                "receivers.grpc_max_connection_age_grace: must be greater than zero",
            ]
        );
    }

    #[test]
    fn receiver_auth_names_each_bad_credential_source() {
        let ok = "receivers:\n  auth:\n    bearer_tokens_env: [SPANSINK_TOKEN]\n    bearer_token_files: [/etc/spansink/auth/token]\n    basic: {username: otel, password_file: /etc/spansink/auth/password}\nsinks:\n  a: {blackhole: {}}\n";
        assert_eq!(errors(ok), Vec::<String>::new());
        let config: ExporterConfig = serde_yaml::from_str(ok).unwrap();
        let auth = config.receivers.auth.unwrap();
        assert_eq!(auth.bearer_token_files, vec!["/etc/spansink/auth/token"]);
        assert_eq!(auth.basic.unwrap().username, "otel");

        assert_eq!(
            errors("receivers:\n  auth: {}\nsinks:\n  a: {blackhole: {}}\n"),
            vec![
                "receivers.auth: set bearer_tokens_env, bearer_token_files or basic (an auth \
                 block without credentials would refuse every request), or remove it"
            ]
        );
        let errs = errors(
            "receivers:\n  auth:\n    bearer_tokens_env: [OK, 'bad-name']\n    bearer_token_files: ['']\n    basic: {username: 'a:b', password_env: P, password_file: /p}\nsinks:\n  a: {blackhole: {}}\n",
        );
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].starts_with("receivers.auth.bearer_tokens_env[1]: \"bad-name\" is not an environment variable name"), "{errs:?}");
        assert!(
            errs[1].starts_with("receivers.auth.bearer_token_files[0]: must be a file path"),
            "{errs:?}"
        );
        assert!(
            errs[2].starts_with("receivers.auth.basic.username: \"a:b\""),
            "{errs:?}"
        );
        assert_eq!(
            errs[3],
            "receivers.auth.basic: set exactly one of password_env and password_file"
        );
    }

    #[test]
    fn cors_origins_headers_and_max_age_are_checked() {
        let ok = "receivers:\n  http:\n    endpoint: 0.0.0.0:4318\n    cors: {allowed_origins: ['https://app.example.com', 'https://*.example.com', 'http://localhost:3000', 'http://[::1]:8080', '*'], allowed_headers: [X-Tenant], max_age: 10m}\nsinks:\n  a: {blackhole: {}}\n";
        assert_eq!(errors(ok), Vec::<String>::new());
        let config: ExporterConfig = serde_yaml::from_str(ok).unwrap();
        let cors = config.receivers.http.cors.unwrap();
        assert_eq!(cors.max_age, Some(Duration::from_secs(600)));

        let errs = errors(
            "receivers:\n  grpc: {endpoint: '0.0.0.0:4317', cors: {allowed_origins: ['*']}}\n  http:\n    endpoint: 0.0.0.0:4318\n    cors: {allowed_origins: ['app.example.com', 'https://app.example.com/', 'https://a.*.com', 'https://x:99999'], allowed_headers: ['bad header'], max_age: 1500ms}\nsinks:\n  a: {blackhole: {}}\n",
        );
        assert_eq!(errs.len(), 7, "{errs:?}");
        assert!(
            errs[0].starts_with("receivers.grpc.cors: CORS applies to OTLP/HTTP only"),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with(
                "receivers.http.cors.allowed_origins[0]: \"app.example.com\" is not an origin"
            ),
            "{errs:?}"
        );
        assert!(
            errs[2].starts_with(
                "receivers.http.cors.allowed_origins[1]: \"https://app.example.com/\" has a path"
            ),
            "{errs:?}"
        );
        assert!(
            errs[3].contains("allowed_origins[2]") && errs[3].contains("'*'"),
            "{errs:?}"
        );
        assert!(
            errs[4].starts_with(
                "receivers.http.cors.allowed_origins[3]: \"https://x:99999\" has an invalid port"
            ),
            "{errs:?}"
        );
        assert!(
            errs[5].starts_with("receivers.http.cors.allowed_headers[0]: \"bad header\""),
            "{errs:?}"
        );
        assert!(
            errs[6].starts_with("receivers.http.cors.max_age: must be whole seconds"),
            "{errs:?}"
        );
        let errs = errors(
            "receivers:\n  http: {endpoint: '0.0.0.0:4318', cors: {allowed_origins: []}}\nsinks:\n  a: {blackhole: {}}\n",
        );
        assert!(
            errs[0].starts_with("receivers.http.cors.allowed_origins: list at least one origin"),
            "{errs:?}"
        );
    }

    #[test]
    fn backends_are_one_of() {
        let none = errors("sinks:\n  a: {}\n");
        assert_eq!(
            none,
            vec![format!(
                "sinks.a: no backend set: set exactly one of {}",
                crate::BACKENDS.join(", ")
            )]
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

    #[test]
    fn acknowledgement_settings_parse_and_the_timeout_must_be_positive() {
        let config: ExporterConfig = serde_yaml::from_str(
            "receivers:\n  acknowledgements: delivered\n  acknowledgement_timeout: 30s\nsinks:\n  a: {blackhole: {}}\n",
        )
        .unwrap();
        assert_eq!(
            config.receivers.acknowledgements,
            crate::AcknowledgementMode::Delivered
        );
        assert_eq!(
            config.receivers.acknowledgement_timeout,
            Duration::from_secs(30)
        );
        let defaults: ExporterConfig =
            serde_yaml::from_str("sinks:\n  a: {blackhole: {}}\n").unwrap();
        assert_eq!(
            defaults.receivers.acknowledgements,
            crate::AcknowledgementMode::Received
        );
        assert_eq!(
            errors("receivers:\n  acknowledgement_timeout: 0s\nsinks:\n  a: {blackhole: {}}\n"),
            vec!["receivers.acknowledgement_timeout: must be greater than zero"]
        );
        let unknown = ExporterConfig::from_yaml(
            "receivers:\n  acknowledgements: sometimes\nsinks:\n  a: {blackhole: {}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(unknown.contains("receivers.acknowledgements"), "{unknown}");
    }

    #[test]
    fn kafka_and_s3_defaults_pass() {
        assert_eq!(
            errors(
                "sinks:\n  events:\n    kafka: {brokers: ['kafka-0.kafka:9092'], topic: otel.spans}\n    fallback: archive\n  archive:\n    s3: {bucket: my-spans}\n    fallback_only: true\n"
            ),
            Vec::<String>::new()
        );
    }
}
