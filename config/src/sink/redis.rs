//! Settings of the Redis sink (`sinks.<name>.redis`): server, credentials, and the one
//! write mode (`stream` or `trace`). Only the settings; the exporter's `sinks::redis`
//! implements them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Duration;

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
