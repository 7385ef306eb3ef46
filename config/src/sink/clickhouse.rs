//! Settings of the ClickHouse sink (`sinks.<name>.clickhouse`): server, table, credentials,
//! table creation and request options. Only the settings; the exporter's `sinks::clickhouse`
//! implements them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Duration;
use crate::validate::{BackendAt, ValidateBackend, Validator};

/// A ClickHouse table, written through the HTTP interface: one `INSERT` request per batch,
/// one row per span, as `RowBinary` where the table's columns allow it and `JSONEachRow`
/// otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseSinkConfig {
    /// URL of the HTTP interface, e.g. `http://clickhouse:8123` or
    /// `https://abc.eu-west-1.aws.clickhouse.cloud:8443`.
    pub endpoint: String,
    /// Database of the table. Created (`CREATE DATABASE IF NOT EXISTS`) with the table
    /// when `create_table` is on. Default: `default`.
    #[serde(default = "ClickHouseSinkConfig::default_database")]
    pub database: String,
    /// Table the spans are inserted into. Default: `spans`.
    #[serde(default = "ClickHouseSinkConfig::default_table")]
    pub table: String,
    /// ClickHouse user. Unset: the server's `default` user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Name of the environment variable holding the user's password (fill it from a
    /// Secret with `envFrom`). Unset: no password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Create the database and table (MergeTree, partitioned by day, ordered by service,
    /// span name and time; needs ClickHouse 22.3 or later) before the first insert if they
    /// do not exist. Turn off to write into a table you created yourself: it needs the
    /// columns of the row format (see the README), or the setting
    /// `input_format_skip_unknown_fields: "1"` for a subset. Default: `true`.
    #[serde(default = "crate::default_true")]
    pub create_table: bool,
    /// How long rows are kept (a `TTL` clause on the span's start time) in a table this
    /// sink creates, e.g. `30d`. Unset: kept forever. Only used when the table is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Row format of the inserts. Default: `auto`.
    #[serde(default)]
    pub format: ClickHouseFormat,
    /// Compression of the request body. Default: `lz4`.
    #[serde(default)]
    pub compression: ClickHouseCompression,
    /// Longest one HTTP request may take before the export fails with a transient error.
    /// Must be shorter than the sink's `timeout`. Default: `20s`.
    #[serde(default = "ClickHouseSinkConfig::default_request_timeout")]
    pub request_timeout: Duration,
    /// Extra ClickHouse settings sent with every insert as URL parameters, e.g.
    /// `{"async_insert": "1", "wait_for_async_insert": "1"}` or
    /// `{"input_format_skip_unknown_fields": "1"}`. Credentials are never accepted here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
}

impl ClickHouseSinkConfig {
    /// URL parameters of the HTTP interface that are not settings, or that the sink sets
    /// itself: refused in `settings`.
    pub const RESERVED_PARAMETERS: &'static [&'static str] = &[
        "query",
        "database",
        "user",
        "password",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "default_format",
        "compress",
        "decompress",
        "enable_http_compression",
    ];

    fn default_database() -> String {
        "default".to_string()
    }
    fn default_table() -> String {
        "spans".to_string()
    }
    fn default_request_timeout() -> Duration {
        Duration::from_secs(20)
    }

    /// A config for `endpoint` with every other setting at its default.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            database: Self::default_database(),
            table: Self::default_table(),
            username: None,
            password_env: None,
            create_table: true,
            ttl: None,
            format: ClickHouseFormat::default(),
            compression: ClickHouseCompression::default(),
            request_timeout: Self::default_request_timeout(),
            settings: BTreeMap::new(),
        }
    }
}

/// Row format of ClickHouse inserts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClickHouseFormat {
    /// `row_binary` when the table has every column of the row format in its binary type
    /// (a table this sink creates always has), else `json_each_row`. Decided when the
    /// sink first reaches the table and again after the table is created anew; the
    /// choice is logged.
    #[default]
    Auto,
    /// `RowBinary`: the cheapest rows to write and to parse. Needs every column of the
    /// row format with its exact type (`String` or `LowCardinality(String)`, `UInt32`,
    /// `UInt64`); a table without them fails the export with the column named.
    RowBinary,
    /// `JSONEachRow`: ClickHouse converts each value to its column's type, so a table
    /// made by hand with other types (`DateTime64`, `Enum8`, ...) or fewer columns (with
    /// the setting `input_format_skip_unknown_fields: "1"`) still takes the rows.
    JsonEachRow,
}

/// Compression of ClickHouse request bodies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClickHouseCompression {
    /// Uncompressed rows.
    None,
    /// gzip (`Content-Encoding: gzip`, fastest level): rows shrink about tenfold, at
    /// several times LZ4's CPU cost; for proxies that pass only standard HTTP encodings.
    Gzip,
    /// ClickHouse's own LZ4 blocks (`decompress=1`), as its native clients send: a
    /// fraction of gzip's CPU, read by every ClickHouse version.
    #[default]
    Lz4,
}

impl ValidateBackend for ClickHouseSinkConfig {
    fn validate(&self, v: &mut Validator, at: &BackendAt<'_>) {
        let path = at.path.as_str();
        let c = self;
        let sink_timeout = at.sink_timeout;
        let sink_path = at.sink_path;
        let e = &c.endpoint;
        let scheme_ok = e.starts_with("http://") || e.starts_with("https://");
        let host_ok = e
            .split_once("://")
            .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
        v.check(
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
            v.check(
                identifier(name),
                format!("{path}.{field}"),
                format!("{name:?} must be a plain identifier (letters, digits, '_', not starting with a digit)"),
            );
        }
        if let Some(user) = &c.username {
            v.check(
                !user.trim().is_empty(),
                format!("{path}.username"),
                "must not be empty when set (unset means the `default` user)",
            );
        }
        if let Some(env) = &c.password_env {
            v.env_name(format!("{path}.password_env"), env);
        }
        if let Some(ttl) = c.ttl {
            v.check(
                ttl.get().as_secs() >= 1,
                format!("{path}.ttl"),
                format!("must be at least 1s (got {ttl})"),
            );
        }
        v.positive(
            &format!("{path}.request_timeout"),
            c.request_timeout.get().is_zero(),
        );
        v.check(
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
                v.error(
                    format!("{path}.settings.{key}"),
                    match key.as_str() {
                        "user" | "password" => format!(
                            "credentials are not accepted here; use {path}.username and {path}.password_env"
                        ),
                        _ => "is set by the sink; remove it".to_string(),
                    },
                );
            } else {
                v.check(
                    setting_ok,
                    format!("{path}.settings.{key}"),
                    "is not a ClickHouse setting name (lowercase letters, digits, '_')",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::problems_of as errors;

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
}
