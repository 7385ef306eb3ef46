//! Semantic checks of an [`ExporterConfig`]: the one place that decides whether a config
//! that parsed is usable. Every problem is reported with its field path, all at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;

use crate::policy::{
    BatchConfig, FilterConfig, QueueConfig, RateLimitConfig, RetryConfig, SpanMatch,
};
use crate::sink::{
    ClickHouseSinkConfig, ElasticsearchSinkConfig, FileSinkConfig, KafkaSinkConfig, OtlpSinkConfig,
    PostgresSinkConfig, PostgresTlsMode, RabbitMqSinkConfig, RedisSinkConfig, S3SinkConfig,
    SinkConfig,
};
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
        if let Some(file) = &sink.file {
            self.file(&format!("{path}.file"), file);
        }
        if let Some(otlp) = &sink.otlp {
            self.otlp(&format!("{path}.otlp"), otlp);
        }
        if let Some(kafka) = &sink.kafka {
            self.kafka(&format!("{path}.kafka"), kafka, sink.timeout, path);
        }
        if let Some(s3) = &sink.s3 {
            self.s3(&format!("{path}.s3"), s3);
        }
        if let Some(es) = &sink.elasticsearch {
            self.elasticsearch(&format!("{path}.elasticsearch"), es);
        }
        if let Some(redis) = &sink.redis {
            self.redis(&format!("{path}.redis"), redis, sink.timeout, path);
        }
        if let Some(rabbitmq) = &sink.rabbitmq {
            self.rabbitmq(&format!("{path}.rabbitmq"), rabbitmq, sink.timeout, path);
        }
        if let Some(postgres) = &sink.postgres {
            self.postgres(&format!("{path}.postgres"), postgres);
        }
        if let Some(clickhouse) = &sink.clickhouse {
            self.clickhouse(
                &format!("{path}.clickhouse"),
                clickhouse,
                sink.timeout,
                path,
            );
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
        if o.endpoint.starts_with("https://") {
            // The exporter's gRPC client is built without TLS (lean build); refusing here
            // turns a crash-looping pod into a precise ConfigValid=False.
            self.error(
                format!("{path}.endpoint"),
                format!(
                    "{:?}: TLS to OTLP endpoints is not supported yet; use http:// (e.g. a Collector or mesh sidecar that terminates TLS)",
                    o.endpoint
                ),
            );
        } else if !o.endpoint.starts_with("http://") {
            self.error(
                format!("{path}.endpoint"),
                format!("{:?} must be a URL starting with http://", o.endpoint),
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

    fn env_name(&mut self, path: String, name: &str) {
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

    fn kafka(&mut self, path: &str, k: &KafkaSinkConfig, sink_timeout: Duration, sink_path: &str) {
        if k.brokers.is_empty() {
            self.error(
                format!("{path}.brokers"),
                "at least one broker is required, e.g. [\"kafka:9092\"]",
            );
        }
        for (i, broker) in k.brokers.iter().enumerate() {
            let ok = broker
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            self.check(
                ok,
                format!("{path}.brokers[{i}]"),
                format!("{broker:?} must be host:port, e.g. \"kafka-0.kafka:9092\""),
            );
        }
        // Kafka's own rule for topic names.
        let topic_ok = !k.topic.is_empty()
            && k.topic.len() <= 249
            && k.topic != "."
            && k.topic != ".."
            && k.topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        self.check(
            topic_ok,
            format!("{path}.topic"),
            format!(
                "{:?} is not a Kafka topic name (1-249 of letters, digits, '.', '_', '-')",
                k.topic
            ),
        );
        self.min_size(
            format!("{path}.max_message_bytes"),
            k.max_message_bytes,
            ByteSize::kib(1),
        );
        // librdkafka's ceiling for message.max.bytes, less room for key and headers.
        self.check(
            k.max_message_bytes <= ByteSize(900_000_000),
            format!("{path}.max_message_bytes"),
            format!("must be at most 900MB (got {})", k.max_message_bytes),
        );
        self.positive(
            &format!("{path}.message_timeout"),
            k.message_timeout.get().is_zero(),
        );
        self.check(
            k.message_timeout < sink_timeout,
            format!("{path}.message_timeout"),
            format!(
                "must be shorter than {sink_path}.timeout ({sink_timeout}), so the producer gives up on a message before the export call is abandoned (got {})",
                k.message_timeout
            ),
        );
        k.check_statistics_interval(|field, message| {
            self.error(format!("{path}.{field}"), message)
        });
        if k.idempotence && k.acks != crate::sink::KafkaAcks::All {
            self.error(
                format!("{path}.acks"),
                format!(
                    "idempotence requires acks: all (got {}); set acks: all or idempotence: false",
                    k.acks
                ),
            );
        }
        if let Some(sasl) = &k.sasl {
            self.env_name(format!("{path}.sasl.username_env"), &sasl.username_env);
            self.env_name(format!("{path}.sasl.password_env"), &sasl.password_env);
        }
        if let Some(tls) = &k.tls {
            for (field, value) in [
                ("ca_file", &tls.ca_file),
                ("cert_file", &tls.cert_file),
                ("key_file", &tls.key_file),
            ] {
                if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                    self.error(format!("{path}.tls.{field}"), "must not be empty when set");
                }
            }
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                self.error(
                    format!("{path}.tls"),
                    "cert_file and key_file go together (mutual TLS): set both or neither",
                );
            }
            if let Some(env) = &tls.key_password_env {
                self.env_name(format!("{path}.tls.key_password_env"), env);
            }
        }
        for key in k.librdkafka.keys() {
            if let Some((_, instead)) = KafkaSinkConfig::RESERVED_LIBRDKAFKA_KEYS
                .iter()
                .find(|(reserved, _)| reserved == key)
            {
                self.error(
                    format!("{path}.librdkafka.{key}"),
                    format!("is set by the sink; use {path}.{instead} instead"),
                );
            }
        }
    }

    fn s3(&mut self, path: &str, s: &S3SinkConfig) {
        // S3's bucket naming rules (the part that a config can get wrong).
        let b = &s.bucket;
        let bucket_ok = (3..=63).contains(&b.len())
            && b.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
            && b.starts_with(|c: char| c.is_ascii_alphanumeric())
            && b.ends_with(|c: char| c.is_ascii_alphanumeric());
        self.check(
            bucket_ok,
            format!("{path}.bucket"),
            format!(
                "{b:?} is not a bucket name (3-63 lowercase letters, digits, '.', '-', starting and ending with a letter or digit)"
            ),
        );
        if s.prefix.starts_with('/') {
            self.error(
                format!("{path}.prefix"),
                "must not start with '/' (S3 keys have no leading slash)",
            );
        }
        self.key_template(&format!("{path}.key_template"), &s.key_template);
        if let Some(endpoint) = &s.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            self.error(
                format!("{path}.endpoint"),
                format!("{endpoint:?} must be a URL starting with http:// or https://"),
            );
        }
        if let Some(region) = &s.region {
            self.check(
                !region.trim().is_empty(),
                format!("{path}.region"),
                "must not be empty when set (e.g. eu-west-1)",
            );
        }
        self.min_size(
            format!("{path}.multipart_threshold"),
            s.multipart_threshold,
            ByteSize::kib(1),
        );
        self.min_size(
            format!("{path}.multipart_part_size"),
            s.multipart_part_size,
            S3SinkConfig::MIN_PART_SIZE,
        );
        self.check(
            s.multipart_part_size <= S3SinkConfig::MAX_PART_SIZE,
            format!("{path}.multipart_part_size"),
            format!("must be at most 5GiB (got {})", s.multipart_part_size),
        );
    }

    fn redis(&mut self, path: &str, r: &RedisSinkConfig, sink_timeout: Duration, sink_path: &str) {
        if let Err(problem) = redis_url(&r.url) {
            self.error(format!("{path}.url"), format!("{:?} {problem}", r.url));
        }
        if let Some(user) = &r.username {
            self.check(
                !user.is_empty() && !user.contains(char::is_whitespace),
                format!("{path}.username"),
                "must be an ACL user name without spaces when set (e.g. spansink)",
            );
        }
        if let Some(env) = &r.password_env {
            self.env_name(format!("{path}.password_env"), env);
        }
        if let Some(tls) = &r.tls {
            self.check(
                r.url.starts_with("rediss://"),
                format!("{path}.tls"),
                "applies to rediss:// URLs only; write the url as rediss://host:port/db",
            );
            if tls.ca_file.as_ref().is_some_and(|f| f.trim().is_empty()) {
                self.error(format!("{path}.tls.ca_file"), "must not be empty when set");
            }
        }
        match (&r.stream, &r.trace) {
            (Some(stream), None) => {
                self.check(
                    !stream.key.is_empty(),
                    format!("{path}.stream.key"),
                    "must not be empty (e.g. spansink:spans)",
                );
            }
            (None, Some(trace)) => {
                self.check(
                    trace.ttl.get() >= std::time::Duration::from_secs(1),
                    format!("{path}.trace.ttl"),
                    format!("must be at least 1s (got {})", trace.ttl),
                );
            }
            (None, None) => self.error(
                path,
                "no mode set: set exactly one of stream (XADD to one stream) and trace (a list per trace with a TTL)",
            ),
            (Some(_), Some(_)) => self.error(
                path,
                "exactly one of stream and trace may be set, found both",
            ),
        }
        self.positive(
            &format!("{path}.connect_timeout"),
            r.connect_timeout.get().is_zero(),
        );
        self.positive(
            &format!("{path}.response_timeout"),
            r.response_timeout.get().is_zero(),
        );
        self.check(
            r.response_timeout < sink_timeout,
            format!("{path}.response_timeout"),
            format!(
                "must be shorter than {sink_path}.timeout ({sink_timeout}), so a slow reply fails the export before the call is abandoned (got {})",
                r.response_timeout
            ),
        );
    }

    fn rabbitmq(
        &mut self,
        path: &str,
        r: &RabbitMqSinkConfig,
        sink_timeout: Duration,
        sink_path: &str,
    ) {
        let host_ok = !r.host.trim().is_empty() && !r.host.contains("://") && !r.host.contains('/');
        self.check(
            host_ok,
            format!("{path}.host"),
            format!("{:?} must be a host name or IP address (no scheme or path), e.g. rabbitmq.messaging.svc", r.host),
        );
        if r.port == Some(0) {
            self.error(format!("{path}.port"), "must be 1-65535");
        }
        // AMQP short strings are at most 255 bytes.
        for (field, value) in [
            ("vhost", &r.vhost),
            ("username", &r.username),
            ("exchange", &r.exchange),
            ("routing_key", &r.routing_key),
        ] {
            self.check(
                value.len() <= 255,
                format!("{path}.{field}"),
                format!("must be at most 255 bytes (got {})", value.len()),
            );
        }
        self.check(
            !r.username.is_empty(),
            format!("{path}.username"),
            "must not be empty",
        );
        match &r.password_env {
            Some(name) => self.env_name(format!("{path}.password_env"), name),
            None => self.check(
                r.username == "guest",
                format!("{path}.password_env"),
                format!(
                    "is required for user {:?}: name the environment variable holding the password, e.g. RABBITMQ_PASSWORD",
                    r.username
                ),
            ),
        }
        let exchange_ok = r
            .exchange
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        self.check(
            exchange_ok,
            format!("{path}.exchange"),
            format!(
                "{:?} is not an exchange name (letters, digits, '-', '_', '.', ':')",
                r.exchange
            ),
        );
        if r.exchange.is_empty() && r.routing_key.is_empty() {
            self.error(
                format!("{path}.routing_key"),
                "must name the target queue when exchange is the default exchange (\"\")",
            );
        }
        if r.declare.is_some() {
            self.check(
                !r.exchange.is_empty() && !r.exchange.starts_with("amq."),
                format!("{path}.declare"),
                "the default exchange and amq.* exchanges cannot be declared; unset declare",
            );
        }
        self.min_size(
            format!("{path}.max_message_bytes"),
            r.max_message_bytes,
            ByteSize::kib(1),
        );
        // RabbitMQ refuses larger messages whatever its max_message_size says.
        self.check(
            r.max_message_bytes <= ByteSize::mib(512),
            format!("{path}.max_message_bytes"),
            format!("must be at most 512MiB (got {})", r.max_message_bytes),
        );
        self.positive(
            &format!("{path}.connect_timeout"),
            r.connect_timeout.get().is_zero(),
        );
        self.check(
            r.connect_timeout.get() < sink_timeout.get(),
            format!("{path}.connect_timeout"),
            format!("must be shorter than {sink_path}.timeout ({sink_timeout})"),
        );
        if let Some(tls) = &r.tls {
            self.check(
                tls.cert_file.is_some() == tls.key_file.is_some(),
                format!("{path}.tls"),
                "cert_file and key_file must be set together (mutual TLS) or not at all",
            );
        }
    }

    fn postgres(&mut self, path: &str, p: &PostgresSinkConfig) {
        self.check(
            !p.host.trim().is_empty(),
            format!("{path}.host"),
            "must not be empty (e.g. postgres.db.svc)",
        );
        self.positive(&format!("{path}.port"), p.port == 0);
        self.check(
            !p.database.is_empty(),
            format!("{path}.database"),
            "must not be empty",
        );
        self.check(
            !p.user.is_empty(),
            format!("{path}.user"),
            "must not be empty",
        );
        if let Some(env) = &p.password_env {
            self.env_name(format!("{path}.password_env"), env);
        }
        let parts: Vec<&str> = p.table.split('.').collect();
        let table_ok = parts.len() <= 2
            && parts
                .iter()
                .all(|part| PostgresSinkConfig::is_identifier(part));
        self.check(
            table_ok,
            format!("{path}.table"),
            format!(
                "{:?} must be a table name or schema.table of lowercase letters, digits and '_', not starting with a digit, at most {} bytes each (e.g. tracing.spans)",
                p.table,
                PostgresSinkConfig::MAX_IDENTIFIER_LEN
            ),
        );
        self.at_least(
            format!("{path}.max_connections"),
            u64::from(p.max_connections),
            1,
        );
        self.positive(
            &format!("{path}.connect_timeout"),
            p.connect_timeout.get().is_zero(),
        );
        self.postgres_tls(path, p);
    }

    /// The TLS files fit the mode: none without TLS, no CA where nothing is verified,
    /// a client certificate with its key.
    fn postgres_tls(&mut self, path: &str, p: &PostgresSinkConfig) {
        let files = [
            ("ca_file", &p.ca_file),
            ("cert_file", &p.cert_file),
            ("key_file", &p.key_file),
        ];
        for (field, value) in files {
            let Some(value) = value else { continue };
            if value.trim().is_empty() {
                self.error(format!("{path}.{field}"), "must not be empty when set");
            } else if p.tls == PostgresTlsMode::Disable {
                self.error(
                    format!("{path}.{field}"),
                    format!(
                        "is set but tls is disable, so it would be ignored; set tls: verify-full \
                         (or require), or remove {field}"
                    ),
                );
            }
        }
        if p.tls == PostgresTlsMode::Require && p.ca_file.is_some() {
            self.error(
                format!("{path}.ca_file"),
                "tls: require does not check the server's certificate, so ca_file would be \
                 ignored; set tls: verify-full to check it against ca_file",
            );
        }
        match (&p.cert_file, &p.key_file) {
            (Some(_), None) => self.error(
                format!("{path}.key_file"),
                "is required with cert_file (the client certificate's private key); set both or neither",
            ),
            (None, Some(_)) => self.error(
                format!("{path}.cert_file"),
                "is required with key_file (the client certificate); set both or neither",
            ),
            _ => {}
        }
    }

    fn clickhouse(
        &mut self,
        path: &str,
        c: &ClickHouseSinkConfig,
        sink_timeout: Duration,
        sink_path: &str,
    ) {
        let e = &c.endpoint;
        let scheme_ok = e.starts_with("http://") || e.starts_with("https://");
        let host_ok = e
            .split_once("://")
            .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
        self.check(
            scheme_ok && host_ok && !e.contains('?'),
            format!("{path}.endpoint"),
            format!("{e:?} must be a URL of the HTTP interface, e.g. \"http://clickhouse:8123\""),
        );
        // Plain identifiers only: the names are put into SQL unquoted-safe (backquoted).
        let identifier = |name: &str| {
            !name.is_empty()
                && name.len() <= 200
                && !name.starts_with(|ch: char| ch.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        for (field, name) in [("database", &c.database), ("table", &c.table)] {
            self.check(
                identifier(name),
                format!("{path}.{field}"),
                format!("{name:?} must be a plain identifier (letters, digits, '_', not starting with a digit)"),
            );
        }
        if let Some(user) = &c.username {
            self.check(
                !user.trim().is_empty(),
                format!("{path}.username"),
                "must not be empty when set (unset means the `default` user)",
            );
        }
        if let Some(env) = &c.password_env {
            self.env_name(format!("{path}.password_env"), env);
        }
        if let Some(ttl) = c.ttl {
            self.check(
                ttl.get().as_secs() >= 1,
                format!("{path}.ttl"),
                format!("must be at least 1s (got {ttl})"),
            );
        }
        self.positive(
            &format!("{path}.request_timeout"),
            c.request_timeout.get().is_zero(),
        );
        self.check(
            c.request_timeout < sink_timeout,
            format!("{path}.request_timeout"),
            format!(
                "must be shorter than {sink_path}.timeout ({sink_timeout}), so a request fails before the export call is abandoned (got {})",
                c.request_timeout
            ),
        );
        for key in c.settings.keys() {
            let setting_ok = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if ClickHouseSinkConfig::RESERVED_PARAMETERS.contains(&key.as_str()) {
                self.error(
                    format!("{path}.settings.{key}"),
                    match key.as_str() {
                        "user" | "password" => format!(
                            "credentials are not accepted here; use {path}.username and {path}.password_env"
                        ),
                        _ => "is set by the sink; remove it".to_string(),
                    },
                );
            } else {
                self.check(
                    setting_ok,
                    format!("{path}.settings.{key}"),
                    "is not a ClickHouse setting name (lowercase letters, digits, '_')",
                );
            }
        }
    }

    fn key_template(&mut self, path: &str, template: &str) {
        if template.starts_with('/') {
            self.error(
                path,
                "must not start with '/' (S3 keys have no leading slash)",
            );
        }
        let mut chars = template.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                continue;
            }
            match chars.next() {
                Some(spec) if S3SinkConfig::KEY_TEMPLATE_SPECIFIERS.contains(&spec) => {}
                other => {
                    let found = other.map_or("end of text".to_string(), |c| format!("%{c}"));
                    self.error(
                        path,
                        format!(
                            "{template:?}: unsupported {found}; use %Y, %m, %d, %H, %M, %S, %j, %F or %% (a literal %)"
                        ),
                    );
                    return;
                }
            }
        }
    }
    fn elasticsearch(&mut self, path: &str, es: &ElasticsearchSinkConfig) {
        self.check(
            !es.endpoints.is_empty(),
            format!("{path}.endpoints"),
            "must list at least one URL, e.g. https://elasticsearch:9200",
        );
        for (i, endpoint) in es.endpoints.iter().enumerate() {
            self.check(
                endpoint.starts_with("http://") || endpoint.starts_with("https://"),
                format!("{path}.endpoints[{i}]"),
                format!("{endpoint:?} must be a URL starting with http:// or https://"),
            );
        }
        if es.index.is_some() && es.data_stream.is_some() {
            self.error(
                format!("{path}.data_stream"),
                "set either index or data_stream, not both",
            );
        }
        if let Some(index) = &es.index {
            self.index_name(&format!("{path}.index"), index, true);
        }
        if let Some(stream) = &es.data_stream {
            self.index_name(&format!("{path}.data_stream"), stream, false);
        }
        match (&es.username, &es.password_env, &es.api_key_env) {
            (Some(_), None, _) => self.error(
                format!("{path}.password_env"),
                "must name the environment variable holding the password of username",
            ),
            (None, Some(_), _) => self.error(
                format!("{path}.username"),
                "must be set when password_env is (basic authentication)",
            ),
            (Some(_), _, Some(_)) => self.error(
                format!("{path}.api_key_env"),
                "set either username/password_env or api_key_env, not both",
            ),
            _ => {}
        }
        for (field, value) in [
            ("username", &es.username),
            ("password_env", &es.password_env),
            ("api_key_env", &es.api_key_env),
            ("pipeline", &es.pipeline),
            ("ca_file", &es.ca_file),
        ] {
            if let Some(value) = value {
                self.check(
                    !value.trim().is_empty(),
                    format!("{path}.{field}"),
                    "must not be empty when set",
                );
            }
        }
        self.min_size(
            format!("{path}.max_bulk_bytes"),
            es.max_bulk_bytes,
            ByteSize::kib(1),
        );
        self.positive(
            &format!("{path}.request_timeout"),
            es.request_timeout.get().is_zero(),
        );
    }

    /// Elasticsearch's index naming rules (lowercase, none of `\ / * ? " < > | , #` or
    /// spaces, not starting with `-`, `_` or `+`), applied to the literal text of a
    /// dated template when `dated`.
    fn index_name(&mut self, path: &str, name: &str, dated: bool) {
        let mut literal = String::new();
        let mut chars = name.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            if !dated {
                self.error(
                    path,
                    format!("{name:?}: a data stream name cannot contain '%' (no dates)"),
                );
                return;
            }
            match chars.next() {
                Some('%') => literal.push('%'),
                Some(spec) if ElasticsearchSinkConfig::INDEX_SPECIFIERS.contains(&spec) => {
                    literal.push('0');
                }
                other => {
                    let found = other.map_or("end of text".to_string(), |c| format!("%{c}"));
                    self.error(
                        path,
                        format!(
                            "{name:?}: unsupported {found}; use %Y, %m, %d, %H, %M, %S, %j, %F or %% (a literal %)"
                        ),
                    );
                    return;
                }
            }
        }
        let forbidden =
            |c: char| c.is_uppercase() || c.is_whitespace() || "\\/*?\"<>|,#:".contains(c);
        let ok = !literal.is_empty()
            && literal != "."
            && literal != ".."
            && !literal.starts_with(['-', '_', '+'])
            && !literal.contains(forbidden);
        self.check(
            ok,
            path,
            format!(
                "{name:?} is not an index name (lowercase, no spaces or \\ / * ? \" < > | , # :, not starting with - _ +)"
            ),
        );
    }
}

/// Checks a `redis[s]://host[:port][/db]` URL; the error says what is wrong and what to write.
fn redis_url(url: &str) -> Result<(), String> {
    const EXAMPLE: &str = "e.g. \"redis://redis-master.redis:6379/0\"";
    let Some(rest) = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
    else {
        return Err(format!(
            "must start with redis:// (or rediss:// for TLS), {EXAMPLE}"
        ));
    };
    if rest.contains('@') {
        return Err(
            "must not contain credentials: set username, and name the environment variable holding the password in password_env".to_string(),
        );
    }
    if rest.contains(['?', '#']) {
        return Err(format!(
            "must be redis://host:port/db without query or fragment, {EXAMPLE}"
        ));
    }
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal, e.g. [::1]:6379.
        Some(v6) => match v6.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => return Err(format!("has an unclosed '[' in its host, {EXAMPLE}")),
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("has no host, {EXAMPLE}"));
    }
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return Err(format!("has an invalid port (1-65535), {EXAMPLE}"));
    }
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err(format!(
            "has an invalid database number {db:?} (0, 1, ...), {EXAMPLE}"
        ));
    }
    Ok(())
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
    fn otlp_endpoints_must_be_plain_http() {
        let errs = errors("sinks:\n  a: {otlp: {endpoint: 'https://collector:4317'}}\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("sinks.a.otlp.endpoint: \"https://collector:4317\": TLS to OTLP endpoints is not supported yet"), "{errs:?}");
        let errs = errors("sinks:\n  a: {otlp: {endpoint: 'collector:4317'}}\n");
        assert_eq!(
            errs,
            vec!["sinks.a.otlp.endpoint: \"collector:4317\" must be a URL starting with http://"]
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

    #[test]
    fn kafka_settings_are_checked_with_their_paths() {
        let errs = errors(
            "sinks:\n  events:\n    timeout: 10s\n    kafka:\n      brokers: ['kafka', ':9092']\n      topic: 'bad topic'\n      acks: 1\n      max_message_bytes: 512\n      message_timeout: 10s\n      sasl: {mechanism: PLAIN, username_env: KAFKA_USER, password_env: 'my password'}\n      tls: {cert_file: /tls/tls.crt}\n      librdkafka: {linger.ms: '5', sasl.password: secret, compression.type: gzip}\n",
        );
        let expected = [
            "sinks.events.kafka.brokers[0]: \"kafka\" must be host:port",
            "sinks.events.kafka.brokers[1]: \":9092\" must be host:port",
            "sinks.events.kafka.topic: \"bad topic\" is not a Kafka topic name",
            "sinks.events.kafka.max_message_bytes: must be at least 1KiB (got 512)",
            "sinks.events.kafka.message_timeout: must be shorter than sinks.events.timeout (10s)",
            "sinks.events.kafka.acks: idempotence requires acks: all (got 1)",
            "sinks.events.kafka.sasl.password_env: \"my password\" is not an environment variable name",
            "sinks.events.kafka.tls: cert_file and key_file go together",
            "sinks.events.kafka.librdkafka.compression.type: is set by the sink; use sinks.events.kafka.compression instead",
            "sinks.events.kafka.librdkafka.sasl.password: is set by the sink; use sinks.events.kafka.sasl.password_env instead",
        ];
        for prefix in expected {
            assert!(
                errs.iter().any(|e| e.starts_with(prefix)),
                "{prefix}\n{errs:#?}"
            );
        }
        assert_eq!(errs.len(), expected.len(), "{errs:#?}");
    }

    #[test]
    fn clickhouse_defaults_pass_and_settings_are_checked_with_their_paths() {
        assert_eq!(
            errors("sinks:\n  ch:\n    clickhouse: {endpoint: 'http://clickhouse:8123'}\n"),
            Vec::<String>::new()
        );
        let errs = errors(
            "sinks:\n  ch:\n    timeout: 10s\n    clickhouse:\n      endpoint: clickhouse:8123\n      database: 'my-db'\n      table: 1spans\n      username: ' '\n      password_env: 'ch password'\n      ttl: 0s\n      request_timeout: 10s\n      settings: {async_insert: '1', password: x, query: y, 'Bad-Name': '1'}\n",
        );
        let expected = [
            "sinks.ch.clickhouse.endpoint: \"clickhouse:8123\" must be a URL",
            "sinks.ch.clickhouse.database: \"my-db\" must be a plain identifier",
            "sinks.ch.clickhouse.table: \"1spans\" must be a plain identifier",
            "sinks.ch.clickhouse.username: must not be empty",
            "sinks.ch.clickhouse.password_env: \"ch password\" is not an environment variable name",
            "sinks.ch.clickhouse.ttl: must be at least 1s",
            "sinks.ch.clickhouse.request_timeout: must be shorter than sinks.ch.timeout (10s)",
            "sinks.ch.clickhouse.settings.password: credentials are not accepted here",
            "sinks.ch.clickhouse.settings.query: is set by the sink",
            "sinks.ch.clickhouse.settings.Bad-Name: is not a ClickHouse setting name",
        ];
        for prefix in expected {
            assert!(
                errs.iter().any(|e| e.starts_with(prefix)),
                "{prefix}\n{errs:#?}"
            );
        }
        assert_eq!(errs.len(), expected.len(), "{errs:#?}");
    }

    #[test]
    fn s3_settings_are_checked_with_their_paths() {
        let errs = errors(
            "sinks:\n  archive:\n    s3:\n      bucket: My_Bucket\n      prefix: /spans/\n      key_template: 'traces/%Y/%q/'\n      endpoint: minio:9000\n      multipart_threshold: 100\n      multipart_part_size: 1MiB\n",
        );
        let expected = [
            "sinks.archive.s3.bucket: \"My_Bucket\" is not a bucket name",
            "sinks.archive.s3.prefix: must not start with '/'",
            "sinks.archive.s3.key_template: \"traces/%Y/%q/\": unsupported %q",
            "sinks.archive.s3.endpoint: \"minio:9000\" must be a URL",
            "sinks.archive.s3.multipart_threshold: must be at least 1KiB",
            "sinks.archive.s3.multipart_part_size: must be at least 5MiB",
        ];
        for prefix in expected {
            assert!(
                errs.iter().any(|e| e.starts_with(prefix)),
                "{prefix}\n{errs:#?}"
            );
        }
        assert_eq!(errs.len(), expected.len(), "{errs:#?}");
        let trailing = errors("sinks:\n  a:\n    s3: {bucket: spans, key_template: 'x/%'}\n");
        assert_eq!(
            trailing,
            vec![
                "sinks.a.s3.key_template: \"x/%\": unsupported end of text; use %Y, %m, %d, %H, %M, %S, %j, %F or %% (a literal %)"
            ]
        );
    }

    #[test]
    fn postgres_defaults_pass_and_settings_are_checked_with_their_paths() {
        assert_eq!(
            errors(
                "sinks:\n  db:\n    postgres: {host: pg.db.svc, database: traces, user: spansink, password_env: PGPASSWORD, table: tracing.spans}\n"
            ),
            Vec::<String>::new()
        );
        let errs = errors(
            "sinks:\n  db:\n    postgres:\n      host: ' '\n      port: 0\n      database: ''\n      user: ''\n      password_env: 'my password'\n      table: 'public.Spans'\n      max_connections: 0\n      connect_timeout: 0s\n",
        );
        let expected = [
            "sinks.db.postgres.host: must not be empty",
            "sinks.db.postgres.port: must be greater than zero",
            "sinks.db.postgres.database: must not be empty",
            "sinks.db.postgres.user: must not be empty",
            "sinks.db.postgres.password_env: \"my password\" is not an environment variable name",
            "sinks.db.postgres.table: \"public.Spans\" must be a table name or schema.table",
            "sinks.db.postgres.max_connections: must be >= 1 (got 0)",
            "sinks.db.postgres.connect_timeout: must be greater than zero",
        ];
        for prefix in expected {
            assert!(
                errs.iter().any(|e| e.starts_with(prefix)),
                "{prefix}\n{errs:#?}"
            );
        }
        assert_eq!(errs.len(), expected.len(), "{errs:#?}");
        for bad in [
            "a.b.c",
            "1spans",
            "spans-x",
            "\"spans\"",
            ".spans",
            "spans.",
        ] {
            let errs = errors(&format!(
                "sinks:\n  db:\n    postgres: {{host: h, database: d, user: u, table: '{bad}'}}\n"
            ));
            assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
        }
        let long = "x".repeat(64);
        let errs = errors(&format!(
            "sinks:\n  db:\n    postgres: {{host: h, database: d, user: u, table: {long}}}\n"
        ));
        assert_eq!(errs.len(), 1, "{errs:?}");
    }

    #[test]
    fn postgres_tls_files_must_fit_the_mode() {
        let pg = |rest: &str| {
            errors(&format!(
                "sinks:\n  db:\n    postgres: {{host: pg.db.svc, database: d, user: u, {rest}}}\n"
            ))
        };
        for ok in [
            "tls: disable",
            "tls: require",
            "tls: require, cert_file: /etc/spansink/pg/tls.crt, key_file: /etc/spansink/pg/tls.key",
            "tls: verify-full",
            "tls: verify-full, ca_file: /etc/spansink/pg/ca.crt",
            "tls: verify-full, ca_file: /c, cert_file: /a, key_file: /b",
        ] {
            assert_eq!(pg(ok), Vec::<String>::new(), "{ok}");
        }
        for (bad, expected) in [
            (
                "ca_file: /etc/spansink/pg/ca.crt",
                "sinks.db.postgres.ca_file: is set but tls is disable, so it would be ignored; set tls: verify-full",
            ),
            (
                "tls: disable, cert_file: /a, key_file: /b",
                "sinks.db.postgres.cert_file: is set but tls is disable",
            ),
            (
                "tls: require, ca_file: /c",
                "sinks.db.postgres.ca_file: tls: require does not check the server's certificate",
            ),
            (
                "tls: verify-full, cert_file: /a",
                "sinks.db.postgres.key_file: is required with cert_file",
            ),
            (
                "tls: verify-full, key_file: /b",
                "sinks.db.postgres.cert_file: is required with key_file",
            ),
            (
                "tls: verify-full, ca_file: ' '",
                "sinks.db.postgres.ca_file: must not be empty when set",
            ),
        ] {
            let errs = pg(bad);
            // One error per file set where none fits (cert_file and key_file: two).
            let files = bad.matches("_file").count();
            let want = if bad.contains("require") || bad.contains("verify-full") {
                1
            } else {
                files
            };
            assert_eq!(errs.len(), want, "{bad}: {errs:#?}");
            assert!(errs[0].starts_with(expected), "{bad}: {errs:#?}");
        }
        // Only libpq's spelling of the modes; no `prefer`.
        for bad in ["verify_full", "prefer"] {
            let yaml = format!(
                "sinks:\n  db:\n    postgres: {{host: h, database: d, user: u, tls: {bad}}}\n"
            );
            let err = serde_yaml::from_str::<ExporterConfig>(&yaml).unwrap_err();
            assert!(
                err.to_string().contains("disable, require, verify-full")
                    || err
                        .to_string()
                        .contains("`disable`, `require`, `verify-full`")
                    || err.to_string().contains("expected one of"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn kafka_acks_accepts_numbers_and_words() {
        use crate::sink::KafkaAcks;
        for (yaml, acks) in [
            ("all", KafkaAcks::All),
            ("-1", KafkaAcks::All),
            ("1", KafkaAcks::Leader),
            ("'1'", KafkaAcks::Leader),
            ("0", KafkaAcks::None),
        ] {
            let config: ExporterConfig = serde_yaml::from_str(&format!(
                "sinks:\n  a:\n    kafka: {{brokers: ['k:9092'], topic: t, acks: {yaml}, idempotence: false}}\n"
            ))
            .unwrap();
            assert_eq!(
                config.sinks["a"].kafka.as_ref().unwrap().acks,
                acks,
                "{yaml}"
            );
        }
        let bad: Result<ExporterConfig, _> = serde_yaml::from_str(
            "sinks:\n  a:\n    kafka: {brokers: ['k:9092'], topic: t, acks: 2}\n",
        );
        assert!(bad.unwrap_err().to_string().contains("write all, 1 or 0"));
    }
    #[test]
    fn elasticsearch_settings_are_checked_with_their_paths() {
        assert_eq!(
            errors(
                "sinks:\n  search:\n    elasticsearch: {endpoints: ['https://es:9200'], index: 'spans-%Y.%m.%d', api_key_env: ES_API_KEY}\n  defaults:\n    elasticsearch: {endpoints: ['http://es:9200'], data_stream: traces-generic-default, username: spansink, password_env: ES_PASSWORD}\n"
            ),
            Vec::<String>::new()
        );
        let errs = errors(
            "sinks:\n  search:\n    elasticsearch:\n      endpoints: ['es:9200']\n      index: 'Spans-%Y.%q'\n      data_stream: 'logs-%Y'\n      username: spansink\n      api_key_env: ES_API_KEY\n      max_bulk_bytes: 100\n      request_timeout: 0s\n  empty:\n    elasticsearch: {endpoints: [], index: '_spans', password_env: P}\n",
        );
        assert_eq!(
            errs,
            [
                "sinks.empty.elasticsearch.endpoints: must list at least one URL, e.g. https://elasticsearch:9200",
                "sinks.empty.elasticsearch.index: \"_spans\" is not an index name (lowercase, no spaces or \\ / * ? \" < > | , # :, not starting with - _ +)",
                "sinks.empty.elasticsearch.username: must be set when password_env is (basic authentication)",
                "sinks.search.elasticsearch.endpoints[0]: \"es:9200\" must be a URL starting with http:// or https://",
                "sinks.search.elasticsearch.data_stream: set either index or data_stream, not both",
                "sinks.search.elasticsearch.index: \"Spans-%Y.%q\": unsupported %q; use %Y, %m, %d, %H, %M, %S, %j, %F or %% (a literal %)",
                "sinks.search.elasticsearch.data_stream: \"logs-%Y\": a data stream name cannot contain '%' (no dates)",
                "sinks.search.elasticsearch.password_env: must name the environment variable holding the password of username",
                "sinks.search.elasticsearch.max_bulk_bytes: must be at least 1KiB (got 100)",
                "sinks.search.elasticsearch.request_timeout: must be greater than zero",
            ]
        );
        let upper = errors(
            "sinks:\n  a:\n    elasticsearch: {endpoints: ['http://es:9200'], index: 'Spans-%Y'}\n",
        );
        assert_eq!(upper.len(), 1, "{upper:?}");
        assert!(
            upper[0].starts_with("sinks.a.elasticsearch.index: \"Spans-%Y\" is not an index name")
        );
    }

    #[test]
    fn redis_defaults_pass() {
        assert_eq!(
            errors(
                "sinks:\n  spans:\n    redis: {url: 'redis://redis:6379/2', stream: {}}\n  traces:\n    redis: {url: 'redis://[::1]', username: spansink, password_env: REDIS_PASSWORD, trace: {ttl: 10m}}\n"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn redis_settings_are_checked_with_their_paths() {
        let errs = errors(
            "sinks:\n  a:\n    timeout: 5s\n    redis:\n      url: 'redis://user:secret@redis:6379'\n      password_env: 'my password'\n      response_timeout: 5s\n      stream: {key: ''}\n  b:\n    redis: {url: 'redis://redis:6380', tls: {ca_file: /tls/ca.crt}, trace: {ttl: 500ms}}\n  c:\n    redis: {url: 'redis://redis:0/x'}\n  d:\n    redis: {url: 'http://redis', stream: {}, trace: {}}\n",
        );
        let expected = [
            "sinks.a.redis.url: \"redis://user:secret@redis:6379\" must not contain credentials",
            "sinks.a.redis.password_env: \"my password\" is not an environment variable name",
            "sinks.a.redis.stream.key: must not be empty",
            "sinks.a.redis.response_timeout: must be shorter than sinks.a.timeout (5s)",
            "sinks.b.redis.tls: applies to rediss:// URLs only",
            "sinks.b.redis.trace.ttl: must be at least 1s (got 500ms)",
            "sinks.c.redis.url: \"redis://redis:0/x\" has an invalid port",
            "sinks.c.redis: no mode set: set exactly one of stream",
            "sinks.d.redis.url: \"http://redis\" must start with redis:// (or rediss:// for TLS)",
            "sinks.d.redis: exactly one of stream and trace may be set, found both",
        ];
        for want in expected {
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "missing {want:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), expected.len(), "{errs:#?}");
        assert!(
            redis_url("redis://h:6379/x")
                .unwrap_err()
                .contains("database number")
        );
        assert!(redis_url("redis://h/3").is_ok());
        assert!(redis_url("rediss://h:6380/0").is_ok());
        assert!(redis_url("redis://[::1:6379").is_err());
    }

    #[test]
    fn rabbitmq_settings_are_checked_with_their_paths() {
        assert!(
            errors(
                "sinks:\n  events:\n    rabbitmq: {host: rabbitmq.messaging.svc, exchange: spans, declare: {}}\n"
            )
            .is_empty()
        );
        let errs = errors(
            "sinks:\n  events:\n    timeout: 5s\n    rabbitmq:\n      host: 'amqp://rabbit'\n      port: 0\n      username: spansink\n      exchange: 'amq.topic'\n      declare: {type: direct}\n      max_message_bytes: 100\n      connect_timeout: 5s\n      tls: {cert_file: /tls/tls.crt}\n",
        );
        for expected in [
            "sinks.events.rabbitmq.host: \"amqp://rabbit\" must be a host name",
            "sinks.events.rabbitmq.port: must be 1-65535",
            "sinks.events.rabbitmq.password_env: is required for user \"spansink\"",
            "sinks.events.rabbitmq.declare: the default exchange and amq.* exchanges cannot be declared",
            "sinks.events.rabbitmq.max_message_bytes: must be at least 1KiB",
            "sinks.events.rabbitmq.connect_timeout: must be shorter than sinks.events.timeout (5s)",
            "sinks.events.rabbitmq.tls: cert_file and key_file must be set together",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(expected)),
                "missing {expected:?} in {errs:#?}"
            );
        }
        let errs = errors(
            "sinks:\n  events:\n    rabbitmq: {host: rabbit, exchange: 'bad name', password_env: 'my pw'}\n",
        );
        assert!(
            errs.iter().any(|e| e.starts_with(
                "sinks.events.rabbitmq.exchange: \"bad name\" is not an exchange name"
            )),
            "{errs:#?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with(
                "sinks.events.rabbitmq.password_env: \"my pw\" is not an environment variable name"
            )),
            "{errs:#?}"
        );
        let errs = errors("sinks:\n  events:\n    rabbitmq: {host: rabbit, exchange: ''}\n");
        assert!(
            errs.iter()
                .any(|e| e
                    .starts_with("sinks.events.rabbitmq.routing_key: must name the target queue")),
            "{errs:#?}"
        );
    }
}
