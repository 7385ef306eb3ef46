//! Settings of the ClickHouse sink (`sinks.<name>.clickhouse`): server, table, credentials,
//! table creation and request options. Only the settings; the exporter's `sinks::clickhouse`
//! implements them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Duration;

/// A ClickHouse table, written through the HTTP interface: one
/// `INSERT INTO <database>.<table> FORMAT JSONEachRow` request per batch, one row per span.
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
    /// Compression of the request body. Default: `gzip`.
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
            compression: ClickHouseCompression::default(),
            request_timeout: Self::default_request_timeout(),
            settings: BTreeMap::new(),
        }
    }
}

/// Compression of ClickHouse request bodies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClickHouseCompression {
    /// Plain JSON rows.
    None,
    /// gzip (`Content-Encoding: gzip`, fastest level): JSON rows shrink about tenfold,
    /// every ClickHouse version decodes it.
    #[default]
    Gzip,
}
