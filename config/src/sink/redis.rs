//! Settings of the Redis sink (`sinks.<name>.redis`): server, credentials, and the one
//! write mode (`stream` or `trace`). Only the settings; the exporter's `sinks::redis`
//! implements them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Duration;
use crate::validate::{BackendAt, ValidateBackend, Validator};

/// A Redis server (standalone or a primary behind a Service). Each batch is written in
/// one round trip (a MULTI/EXEC pipeline). Delivery is at least once: a batch whose
/// reply was lost (connection dropped after the server ran it) is written again by the
/// retry, so a consumer may see a span twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// Server as `redis://host:port/db`, e.g. `redis://redis-master.redis:6379/0` (port
    /// default `6379`, database default `0`), or `rediss://host:port/db` for TLS (the
    /// server certificate is checked against the system's CAs, or `tls.ca_file`). No
    /// credentials here: use `username` and `password_env`.
    pub url: String,
    /// ACL user name (Redis 6+), e.g. `spansink`. Unset: the `default` user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Name of the environment variable holding the password (of `username`, or the
    /// `requirepass` password), e.g. `REDIS_PASSWORD`; fill it from a Secret with
    /// `envFrom`. Unset: no AUTH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// TLS settings for a `rediss://` URL. Unset: the system's CA certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RedisTlsConfig>,
    /// Append every span to one stream (XADD). Set exactly one of `stream` and `trace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<RedisStreamConfig>,
    /// Append every span to a list per trace (RPUSH) that expires. Set exactly one of
    /// `stream` and `trace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<RedisTraceConfig>,
    /// Longest wait for a TCP connection (and its AUTH/SELECT handshake). Default: `5s`.
    #[serde(default = "RedisSinkConfig::default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Longest wait for the reply to a batch; a slower server fails the export with a
    /// transient error. Must be shorter than the sink's `timeout`. Default: `10s`.
    #[serde(default = "RedisSinkConfig::default_response_timeout")]
    pub response_timeout: Duration,
}

impl RedisSinkConfig {
    fn default_connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    fn default_response_timeout() -> Duration {
        Duration::from_secs(10)
    }

    /// A config for `url` in `stream` mode with every other setting at its default.
    pub fn stream(url: impl Into<String>) -> Self {
        Self {
            stream: Some(RedisStreamConfig::default()),
            ..Self::bare(url)
        }
    }

    /// A config for `url` in `trace` mode with every other setting at its default.
    pub fn trace(url: impl Into<String>) -> Self {
        Self {
            trace: Some(RedisTraceConfig::default()),
            ..Self::bare(url)
        }
    }

    fn bare(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            username: None,
            password_env: None,
            tls: None,
            stream: None,
            trace: None,
            connect_timeout: Self::default_connect_timeout(),
            response_timeout: Self::default_response_timeout(),
        }
    }
}

/// TLS to the server (`rediss://`). Files are PEM, typically mounted from a Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisTlsConfig {
    /// CA certificate(s) that signed the server's certificate, instead of the system's
    /// CAs, e.g. `/etc/redis-tls/ca.crt`. Unset: the system's CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// Stream mode: one stream entry per span, fields `trace_id`, `span_id`,
/// `service_name`, `name` (for consumers that filter without parsing) and `span` (the
/// span as the same JSON object the file sink writes per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisStreamConfig {
    /// Stream key. Default: `spansink:spans`.
    #[serde(default = "RedisStreamConfig::default_key")]
    pub key: String,
    /// Approximate cap on the stream's length (`XADD key MAXLEN ~ N`): older entries are
    /// trimmed as new ones arrive, so memory stays bounded. Redis trims whole macro
    /// nodes, so the stream may hold somewhat more than this. `0`: never trim.
    /// Default: `1000000`.
    #[serde(default = "RedisStreamConfig::default_maxlen")]
    pub maxlen: u64,
}

impl RedisStreamConfig {
    fn default_key() -> String {
        "spansink:spans".to_string()
    }
    fn default_maxlen() -> u64 {
        1_000_000
    }
}

impl Default for RedisStreamConfig {
    fn default() -> Self {
        Self {
            key: Self::default_key(),
            maxlen: Self::default_maxlen(),
        }
    }
}

/// Trace mode: key `<key_prefix><hex trace id>` is a list of the trace's spans (each the
/// JSON object the file sink writes per line), appended in arrival order; spans of
/// later batches are appended, never overwrite earlier ones. Every write sets the
/// key's time to live again, so a trace expires `ttl` after its last span arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisTraceConfig {
    /// Prefix of the per-trace keys. Default: `spansink:trace:`.
    #[serde(default = "RedisTraceConfig::default_key_prefix")]
    pub key_prefix: String,
    /// Time to live of a trace's list after its last write, at least `1s`. Default: `1h`.
    #[serde(default = "RedisTraceConfig::default_ttl")]
    pub ttl: Duration,
}

impl RedisTraceConfig {
    fn default_key_prefix() -> String {
        "spansink:trace:".to_string()
    }
    fn default_ttl() -> Duration {
        Duration::from_secs(3600)
    }
}

impl Default for RedisTraceConfig {
    fn default() -> Self {
        Self {
            key_prefix: Self::default_key_prefix(),
            ttl: Self::default_ttl(),
        }
    }
}

impl ValidateBackend for RedisSinkConfig {
    fn validate(&self, v: &mut Validator, at: &BackendAt<'_>) {
        let path = at.path.as_str();
        let r = self;
        let sink_timeout = at.sink_timeout;
        let sink_path = at.sink_path;
        if let Err(problem) = redis_url(&r.url) {
            v.error(format!("{path}.url"), format!("{:?} {problem}", r.url));
        }
        if let Some(user) = &r.username {
            v.check(
                !user.is_empty() && !user.contains(char::is_whitespace),
                format!("{path}.username"),
                "must be an ACL user name without spaces when set (e.g. spansink)",
            );
        }
        if let Some(env) = &r.password_env {
            v.env_name(format!("{path}.password_env"), env);
        }
        if let Some(tls) = &r.tls {
            v.check(
                r.url.starts_with("rediss://"),
                format!("{path}.tls"),
                "applies to rediss:// URLs only; write the url as rediss://host:port/db",
            );
            if tls.ca_file.as_ref().is_some_and(|f| f.trim().is_empty()) {
                v.error(format!("{path}.tls.ca_file"), "must not be empty when set");
            }
        }
        match (&r.stream, &r.trace) {
            (Some(stream), None) => {
                v.check(
                    !stream.key.is_empty(),
                    format!("{path}.stream.key"),
                    "must not be empty (e.g. spansink:spans)",
                );
            }
            (None, Some(trace)) => {
                v.check(
                    trace.ttl.get() >= std::time::Duration::from_secs(1),
                    format!("{path}.trace.ttl"),
                    format!("must be at least 1s (got {})", trace.ttl),
                );
            }
            (None, None) => v.error(
                path,
                "no mode set: set exactly one of stream (XADD to one stream) and trace (a list per trace with a TTL)",
            ),
            (Some(_), Some(_)) => v.error(
                path,
                "exactly one of stream and trace may be set, found both",
            ),
        }
        v.positive(
            &format!("{path}.connect_timeout"),
            r.connect_timeout.get().is_zero(),
        );
        v.positive(
            &format!("{path}.response_timeout"),
            r.response_timeout.get().is_zero(),
        );
        v.check(
            r.response_timeout < sink_timeout,
            format!("{path}.response_timeout"),
            format!(
                "must be shorter than {sink_path}.timeout ({sink_timeout}), so a slow reply fails the export before the call is abandoned (got {})",
                r.response_timeout
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
    use crate::validate::problems_of as errors;

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
}
