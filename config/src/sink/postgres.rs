//! Settings of the PostgreSQL sink (`sinks.<name>.postgres`): server, database, table,
//! pool. Only the settings; the exporter's `sinks::postgres` implements them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Duration;

/// A PostgreSQL table. Each batch is written in one transaction (binary COPY into a
/// session staging table, then one `INSERT ... ON CONFLICT (trace_id, span_id) DO
/// NOTHING`), so a retried batch never duplicates rows. The table is created (and
/// missing columns and indexes added) on the first export when `create_table` is on.
/// The password comes from an environment variable (`password_env`, filled from a
/// Kubernetes Secret with `envFrom`), never from this config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// Server host name or IP address, e.g. `postgres.db.svc`.
    pub host: String,
    /// Server TCP port. Default: `5432`.
    #[serde(default = "PostgresSinkConfig::default_port")]
    pub port: u16,
    /// Database to connect to. It must exist.
    pub database: String,
    /// Role (user) to connect as. It needs INSERT on the table and TEMP on the database;
    /// with `create_table` also CREATE on the schema (and CREATE on the database when
    /// the schema is missing), unless the table already exists with every column and
    /// index.
    pub user: String,
    /// Name of the environment variable holding the password, e.g. `PGPASSWORD`. Unset:
    /// no password (trust or peer authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Table the spans are written to, optionally schema-qualified (`tracing.spans`).
    /// Unquoted PostgreSQL identifiers: lowercase letters, digits and `_`, not starting
    /// with a digit, at most 63 bytes each. A missing schema is created with the table
    /// when `create_table` is on. Default: `spans`.
    #[serde(default = "PostgresSinkConfig::default_table")]
    pub table: String,
    /// Create the table (and its schema), its missing columns and its indexes on the
    /// first export. When `false`, a missing schema, table or column fails exports
    /// permanently with a message naming what is missing. Default: `true`.
    #[serde(default = "crate::default_true")]
    pub create_table: bool,
    /// Connections in the sink's pool (exports running at once, each on its own
    /// connection). Default: `4`.
    #[serde(default = "PostgresSinkConfig::default_max_connections")]
    pub max_connections: u32,
    /// Longest a new connection may take to be established (TCP and authentication).
    /// Default: `10s`.
    #[serde(default = "PostgresSinkConfig::default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Transport security, as libpq's `sslmode`: `disable` (plain TCP), `require`
    /// (encrypted, the certificate not checked) or `verify-full` (encrypted, the
    /// certificate checked against `ca_file` and `host`). With `require` or `verify-full`
    /// a server without TLS is refused. Default: `disable`.
    #[serde(default)]
    pub tls: PostgresTlsMode,
    /// CA certificate(s) (PEM) that signed the server's certificate, for `tls:
    /// verify-full`, e.g. `/etc/spansink/postgres/ca.crt` (mounted from a Secret). Unset:
    /// the system's CAs. Read when a connection is opened, so a renewed file is used by
    /// new connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Client certificate chain (PEM), for servers that authenticate clients by
    /// certificate (`hostssl ... cert` in `pg_hba.conf`). Set together with `key_file`;
    /// needs `tls: require` or `verify-full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1, unencrypted) of `cert_file`. Set
    /// together with `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

impl PostgresSinkConfig {
    /// The longest PostgreSQL identifier (NAMEDATALEN - 1), in bytes.
    pub const MAX_IDENTIFIER_LEN: usize = 63;

    fn default_port() -> u16 {
        5432
    }
    fn default_table() -> String {
        "spans".to_string()
    }
    fn default_max_connections() -> u32 {
        4
    }
    fn default_connect_timeout() -> Duration {
        Duration::from_secs(10)
    }

    /// A config for `host:port`, `database` and `user` with every other setting at its
    /// default.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        database: impl Into<String>,
        user: impl Into<String>,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            database: database.into(),
            user: user.into(),
            password_env: None,
            table: Self::default_table(),
            create_table: true,
            max_connections: Self::default_max_connections(),
            connect_timeout: Self::default_connect_timeout(),
            tls: PostgresTlsMode::default(),
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }

    /// `table` split into an optional schema and the table name.
    pub fn schema_and_table(&self) -> (Option<&str>, &str) {
        match self.table.split_once('.') {
            Some((schema, table)) => (Some(schema), table),
            None => (None, self.table.as_str()),
        }
    }

    /// Whether `name` is an unquoted PostgreSQL identifier this sink accepts: lowercase
    /// ASCII letters, digits and `_`, not starting with a digit, 1-63 bytes. Kept narrow
    /// so the name means the same quoted or unquoted and needs no escaping in SQL.
    pub fn is_identifier(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= Self::MAX_IDENTIFIER_LEN
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }
}

/// TLS mode of the PostgreSQL connection, named as libpq's `sslmode` values. No `prefer`:
/// a mode that falls back to plain TCP when TLS fails protects from nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresTlsMode {
    /// Plain TCP (libpq's `sslmode=disable`).
    #[default]
    Disable,
    /// TLS, without checking the server's certificate (libpq's `sslmode=require`): safe
    /// from eavesdroppers, not from someone who can redirect the connection (a man in the
    /// middle). Use `verify-full` where the server's CA is known.
    Require,
    /// TLS, with the server's certificate checked against `ca_file` (or the system's
    /// CAs) and `host` (a DNS name or IP address in the certificate; libpq's
    /// `sslmode=verify-full`).
    VerifyFull,
}

impl PostgresTlsMode {
    /// The value as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Require => "require",
            Self::VerifyFull => "verify-full",
        }
    }
}

impl std::fmt::Display for PostgresTlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
