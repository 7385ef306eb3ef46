//! Settings of the PostgreSQL sink (`sinks.<name>.postgres`): server, database, table,
//! pool. Only the settings; the exporter's `sinks::postgres` implements them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Duration;
use crate::validate::{BackendAt, ValidateBackend, Validator};

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

impl ValidateBackend for PostgresSinkConfig {
    fn validate(&self, v: &mut Validator, at: &BackendAt<'_>) {
        let path = at.path.as_str();
        let p = self;
        v.check(
            !p.host.trim().is_empty(),
            format!("{path}.host"),
            "must not be empty (e.g. postgres.db.svc)",
        );
        v.positive(&format!("{path}.port"), p.port == 0);
        v.check(
            !p.database.is_empty(),
            format!("{path}.database"),
            "must not be empty",
        );
        v.check(
            !p.user.is_empty(),
            format!("{path}.user"),
            "must not be empty",
        );
        if let Some(env) = &p.password_env {
            v.env_name(format!("{path}.password_env"), env);
        }
        let parts: Vec<&str> = p.table.split('.').collect();
        let table_ok = parts.len() <= 2
            && parts
                .iter()
                .all(|part| PostgresSinkConfig::is_identifier(part));
        v.check(
            table_ok,
            format!("{path}.table"),
            format!(
                "{:?} must be a table name or schema.table of lowercase letters, digits and '_', not starting with a digit, at most {} bytes each (e.g. tracing.spans)",
                p.table,
                PostgresSinkConfig::MAX_IDENTIFIER_LEN
            ),
        );
        v.at_least(
            format!("{path}.max_connections"),
            u64::from(p.max_connections),
            1,
        );
        v.positive(
            &format!("{path}.connect_timeout"),
            p.connect_timeout.get().is_zero(),
        );
        postgres_tls(v, path, p);
    }
}

/// The TLS files fit the mode: none without TLS, no CA where nothing is verified,
/// a client certificate with its key.
fn postgres_tls(v: &mut Validator, path: &str, p: &PostgresSinkConfig) {
    let files = [
        ("ca_file", &p.ca_file),
        ("cert_file", &p.cert_file),
        ("key_file", &p.key_file),
    ];
    for (field, value) in files {
        let Some(value) = value else { continue };
        if value.trim().is_empty() {
            v.error(format!("{path}.{field}"), "must not be empty when set");
        } else if p.tls == PostgresTlsMode::Disable {
            v.error(
                format!("{path}.{field}"),
                format!(
                    "is set but tls is disable, so it would be ignored; set tls: verify-full \
                     (or require), or remove {field}"
                ),
            );
        }
    }
    if p.tls == PostgresTlsMode::Require && p.ca_file.is_some() {
        v.error(
            format!("{path}.ca_file"),
            "tls: require does not check the server's certificate, so ca_file would be \
             ignored; set tls: verify-full to check it against ca_file",
        );
    }
    match (&p.cert_file, &p.key_file) {
        (Some(_), None) => v.error(
            format!("{path}.key_file"),
            "is required with cert_file (the client certificate's private key); set both or neither",
        ),
        (None, Some(_)) => v.error(
            format!("{path}.cert_file"),
            "is required with key_file (the client certificate); set both or neither",
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::problems_of as errors;
    use crate::ExporterConfig;

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
}
