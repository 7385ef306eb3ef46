//! Which PostgreSQL failures are worth a retry, decided from the SQLSTATE class, and the
//! sink's error type. Not the retrying itself (the chain's `retry` policy does that).

use deadpool_postgres::PoolError;

use crate::sinks::SinkError;

/// A failure of the PostgreSQL sink, already classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostgresError {
    /// The server could not be reached or went away; retrying can help.
    #[error("{message}")]
    Transient {
        reason: &'static str,
        message: String,
    },
    /// The server refused the statement for a reason a retry does not change.
    #[error("{message}")]
    Permanent {
        reason: &'static str,
        message: String,
    },
    /// The table does not fit the sink (missing, lacks a column, a column of another
    /// type, no unique key); the message names what to change.
    #[error("{0}")]
    Schema(String),
}

impl PostgresError {
    /// Whether the table or one of its columns does not exist (SQLSTATE 42P01/42703).
    pub fn is_undefined_object(&self) -> bool {
        matches!(self, Self::Permanent { reason, .. } if *reason == UNDEFINED_OBJECT)
    }
}

impl From<PostgresError> for SinkError {
    fn from(e: PostgresError) -> Self {
        match e {
            PostgresError::Transient { reason, message } => SinkError::transient(reason, message),
            PostgresError::Permanent { reason, message } => SinkError::permanent(reason, message),
            PostgresError::Schema(message) => SinkError::permanent("schema", message),
        }
    }
}

/// Metric reason of a table or column that does not exist (dropped or renamed while the
/// sink ran): the sink re-runs its migration on the next export when it may create them.
const UNDEFINED_OBJECT: &str = "undefined_table";

/// Classifies a driver error that happened while trying to `doing` (e.g. "copy the
/// batch"); the message says what to do about it.
pub fn classify(doing: &str, error: &tokio_postgres::Error) -> PostgresError {
    let Some(db) = error.as_db_error() else {
        // No SQLSTATE: the connection failed or closed, or timed out while connecting.
        // The server never answered this statement, so trying again may work. A TLS
        // failure too: a renewed certificate or CA file is read by the next connection.
        if is_tls_failure(error) {
            return PostgresError::Transient {
                reason: "tls",
                message: format!(
                    "PostgreSQL: cannot {doing}: {}; check the sink's tls, ca_file, cert_file and key_file against the server's certificate and pg_hba.conf",
                    error_chain(error)
                ),
            };
        }
        return PostgresError::Transient {
            reason: "connect",
            message: format!("PostgreSQL: cannot {doing}: {}", error_chain(error)),
        };
    };
    let code = db.code().code();
    let mut message = format!(
        "PostgreSQL: cannot {doing}: {} (SQLSTATE {code})",
        db.message()
    );
    if let Some(detail) = db.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    match sqlstate_class(code) {
        Class::Transient(reason) => PostgresError::Transient { reason, message },
        Class::Permanent(reason, hint) => {
            if !hint.is_empty() {
                message.push_str("; ");
                message.push_str(hint);
            }
            PostgresError::Permanent { reason, message }
        }
    }
}

/// Classifies a failure to get a pooled connection.
pub fn classify_pool(error: &PoolError) -> PostgresError {
    match error {
        PoolError::Backend(e) => classify("connect", e),
        PoolError::PostCreateHook(deadpool_postgres::HookError::Backend(e)) => {
            classify("prepare the session's staging table", e)
        }
        PoolError::PostCreateHook(deadpool_postgres::HookError::Message(m)) => {
            PostgresError::Transient {
                reason: "connect",
                message: format!("PostgreSQL: cannot prepare a new connection: {m}"),
            }
        }
        PoolError::Timeout(kind) => PostgresError::Transient {
            reason: "timeout",
            message: format!(
                "PostgreSQL: no connection within the time allowed ({kind:?}); is the server up and reachable?"
            ),
        },
        PoolError::Closed => PostgresError::Transient {
            reason: "shutdown",
            message: "PostgreSQL connection pool is closed (the sink is shutting down)".into(),
        },
        PoolError::NoRuntimeSpecified => PostgresError::Permanent {
            reason: "internal",
            message:
                "PostgreSQL connection pool has no runtime for its timeouts (a bug in spansink)"
                    .into(),
        },
    }
}

/// Transient (with the metric reason) or permanent (with the reason and what to do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Transient(&'static str),
    Permanent(&'static str, &'static str),
}

/// The decision for one SQLSTATE. Borderline cases, and why:
/// - `53` insufficient resources (disk full, out of memory, too many connections):
///   transient. They pass once space or connections are freed; the retry policy bounds
///   the wait and the fallback takes the batch if they do not.
/// - `25006` read-only transaction: transient. It is what a failover looks like from a
///   client still connected to the old primary, now a standby; a new connection reaches
///   the new primary.
/// - `55P03`/`55006` lock not available / object in use: transient (someone else's
///   long DDL or lock on the table).
/// - `57014` query canceled (statement_timeout, pg_cancel_backend): transient.
/// - `57P04` database dropped: permanent. Other `57` (admin/crash shutdown, cannot
///   connect now, idle session timeout): transient.
/// - `28` authorization: permanent. The password is read once at start, so a rotated
///   Secret needs a restart anyway (the operator rolls the pods on Secret changes).
/// - `3D000` unknown database, `3F000` unknown schema, `42` (undefined table or column, insufficient privilege,
///   wrong type), `22` bad data, `23` constraint (a user's CHECK or NOT NULL), `54`
///   program limit: permanent. The same batch fails the same way every time.
/// - `XX` internal error: permanent (a retry of a statement that crashed the backend is
///   more likely to crash it again than to succeed).
/// - Anything else the server refused: permanent; unknown answers are not retried blindly.
pub fn sqlstate_class(code: &str) -> Class {
    match code {
        "40001" | "40P01" => Class::Transient("conflict"),
        "40003" => Class::Transient("unavailable"),
        "25006" => Class::Transient("read_only"),
        "55P03" | "55006" => Class::Transient("conflict"),
        "57014" => Class::Transient("timeout"),
        "57P04" => Class::Permanent("config", "create the database or fix postgres.database"),
        "3D000" => Class::Permanent("config", "create the database or fix postgres.database"),
        "3F000" => Class::Permanent(
            "config",
            "create the schema or fix the schema part of postgres.table",
        ),
        "42501" => Class::Permanent(
            "permission",
            "grant the role INSERT on the table (and TEMP on the database; CREATE on the schema for create_table)",
        ),
        "42P01" | "42703" => Class::Permanent(
            UNDEFINED_OBJECT,
            "the table or one of its columns is missing; the sink re-creates it on the next export when create_table is on",
        ),
        "42P10" => Class::Permanent(
            "schema",
            "the table needs a unique index on (trace_id, span_id)",
        ),
        _ => match code.get(..2).unwrap_or("") {
            "08" => Class::Transient("connect"),
            "53" => Class::Transient("unavailable"),
            "57" => Class::Transient("unavailable"),
            "58" => Class::Transient("io"),
            "28" => Class::Permanent(
                "auth",
                "check postgres.user, the password in postgres.password_env and the server's pg_hba.conf",
            ),
            "42" => Class::Permanent("schema", ""),
            "22" | "23" | "54" => Class::Permanent("data", ""),
            _ => Class::Permanent("rejected", ""),
        },
    }
}

/// An error and its sources in one line (the driver's top-level message says little).
/// Whether the connection failed in its TLS setup or handshake (bad certificate, unknown
/// CA, wrong host name, unreadable file, a server without TLS). tokio-postgres exposes no
/// error kind, only this text of its `Kind::Tls`.
fn is_tls_failure(error: &tokio_postgres::Error) -> bool {
    error
        .to_string()
        .starts_with("error performing TLS handshake")
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut current = error.source();
    while let Some(e) = current {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        for code in [
            "08000", "08001", "08006", "08P01", "57P01", "57P02", "57P03", "53000", "53100",
            "53200", "53300", "40001", "40P01", "25006", "55P03", "57014", "58030",
        ] {
            assert!(
                matches!(sqlstate_class(code), Class::Transient(_)),
                "{code} should be transient"
            );
        }
        for code in [
            "28000", "28P01", "3D000", "3F000", "42501", "42P01", "42703", "42804", "42P10",
            "42601", "22P02", "22021", "23502", "23514", "54000", "57P04", "XX000", "0A000",
        ] {
            assert!(
                matches!(sqlstate_class(code), Class::Permanent(..)),
                "{code} should be permanent"
            );
        }
        assert_eq!(sqlstate_class("40P01"), Class::Transient("conflict"));
        assert!(matches!(
            sqlstate_class("28P01"),
            Class::Permanent("auth", _)
        ));
        assert!(matches!(
            sqlstate_class("42501"),
            Class::Permanent("permission", _)
        ));
    }

    #[test]
    fn schema_errors_are_permanent_sink_errors() {
        let e: SinkError = PostgresError::Schema("table x lacks columns y".into()).into();
        assert!(!e.is_transient());
        assert_eq!(e.reason(), "schema");
        let e: SinkError = PostgresError::Transient {
            reason: "connect",
            message: "refused".into(),
        }
        .into();
        assert!(e.is_transient());
    }
}
