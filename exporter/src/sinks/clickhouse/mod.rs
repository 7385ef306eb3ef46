//! The ClickHouse sink: each batch becomes one `INSERT ... FORMAT JSONEachRow` over the
//! HTTP interface (one row per span), into a table it creates on first use if asked. Not
//! batching or retries (the chain's).

pub mod client;
pub mod encoding;
pub mod schema;

use std::io::Write as _;

use async_trait::async_trait;
use bytes::Bytes;
use spansink_config::{ClickHouseCompression, ClickHouseSinkConfig};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Mutex;

use crate::otlp::Batch;
use crate::sinks::{BuildError, BuildSink, EnvLookup, Sink, SinkContext, SinkError};
use crate::telemetry::metrics::Metrics;

use client::{Client, ClientOptions};
use encoding::RowEncoder;

/// Inserts batches into one table.
pub struct ClickHouseSink {
    name: String,
    client: Client,
    database: String,
    table: String,
    /// `db`.`table`, quoted, as it goes into the INSERT.
    target: String,
    create_table: bool,
    ttl_seconds: Option<u64>,
    gzip: bool,
    /// Set once the table is known to exist. Created lazily by the first export, since
    /// the server may be down when the exporter starts; a failed attempt is made again
    /// by the next export, and a table dropped later is created again.
    table_ready: AtomicBool,
    /// Held while the table is being created, so concurrent exports create it once.
    creating: Mutex<()>,
}

impl ClickHouseSink {
    /// Builds the client; nothing is sent until the first export, so a server that is
    /// down now fails exports (transiently), not the build.
    /// `_metrics`: the chain around the sink counts its outcomes; the sink records
    /// nothing of its own (it is in the signature so every sink is built alike).
    pub fn new(
        name: &str,
        config: &ClickHouseSinkConfig,
        _metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        Self::with_env(name, config, &|var| std::env::var(var).ok())
    }

    /// As [`ClickHouseSink::new`], reading the password variable through `env`.
    pub fn with_env(
        name: &str,
        config: &ClickHouseSinkConfig,
        env: EnvLookup<'_>,
    ) -> Result<Self, BuildError> {
        let build_error = |message: String| BuildError {
            sink: name.to_string(),
            message: format!("clickhouse: {message}"),
        };
        for (field, value) in [("database", &config.database), ("table", &config.table)] {
            if !is_identifier(value) {
                return Err(build_error(format!(
                    "{field} {value:?} must be a plain identifier (letters, digits, '_')"
                )));
            }
        }
        let password = match &config.password_env {
            None => None,
            Some(var) => Some(env(var).ok_or_else(|| {
                build_error(format!(
                    "environment variable {var} (clickhouse.password_env) is not set; set it, e.g. from a Secret with envFrom"
                ))
            })?),
        };
        let client = Client::new(ClientOptions {
            endpoint: &config.endpoint,
            username: config.username.as_deref(),
            password,
            request_timeout: config.request_timeout.get(),
            settings: config
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
        .map_err(build_error)?;
        Ok(Self {
            name: name.to_string(),
            client,
            target: schema::qualified_name(&config.database, &config.table),
            database: config.database.clone(),
            table: config.table.clone(),
            create_table: config.create_table,
            ttl_seconds: config.ttl.map(|t| t.get().as_secs()),
            gzip: config.compression == ClickHouseCompression::Gzip,
            table_ready: AtomicBool::new(false),
            creating: Mutex::new(()),
        })
    }

    /// Creates the database and table unless they exist; the plain table on servers
    /// older than [`schema::MODERN_SINCE`]. Existence is checked first so a user allowed
    /// to insert but not to create can still use a prepared table.
    async fn ensure_table(&self) -> Result<(), SinkError> {
        let exists = self
            .client
            .execute(&format!(
                "SELECT count() FROM system.tables WHERE database = {} AND name = {}",
                sql_string(&self.database),
                sql_string(&self.table)
            ))
            .await?;
        if exists.trim() == "1" {
            return Ok(());
        }
        let version_text = self.client.execute("SELECT version()").await?;
        let version = schema::parse_version(&version_text);
        // An unparsable version is a build we do not know: assume a current one.
        let modern = version.is_none_or(|v| v >= schema::MODERN_SINCE);
        if self.ttl_seconds.is_some() && version.is_some_and(|v| v < schema::TTL_SINCE) {
            return Err(SinkError::permanent(
                "schema",
                format!(
                    "ClickHouse {} has no table TTL (19.6+): unset clickhouse.ttl or create {} yourself",
                    version_text.trim(),
                    self.target
                ),
            ));
        }
        let ddl = if modern {
            schema::modern_table(&self.database, &self.table, self.ttl_seconds)
        } else {
            schema::plain_table(&self.database, &self.table, self.ttl_seconds)
        };
        self.client
            .execute(&schema::create_database(&self.database))
            .await?;
        self.client.execute(&ddl).await?;
        tracing::info!(
            sink = %self.name,
            table = %self.target,
            server = %version_text.trim(),
            layout = %if modern { "current" } else { "plain (server older than 22.3)" },
            "created ClickHouse table"
        );
        Ok(())
    }

    /// Makes sure the table exists when the sink is to create it.
    async fn ready_table(&self) -> Result<(), SinkError> {
        if !self.create_table || self.table_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _creating = self.creating.lock().await;
        if self.table_ready.load(Ordering::Acquire) {
            return Ok(()); // another export created it while we waited
        }
        self.ensure_table().await.inspect_err(|e| {
            tracing::warn!(sink = %self.name, table = %self.target, error = %e, "could not create the ClickHouse table");
        })?;
        self.table_ready.store(true, Ordering::Release);
        Ok(())
    }
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A SQL string literal.
fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The request body of a batch: its rows, gzip-compressed when asked.
fn encode_body(batch: &Batch, gzip: bool) -> Result<(Bytes, usize), SinkError> {
    let request = batch
        .decode()
        .map_err(|e| SinkError::permanent("encoding", format!("batch is not valid OTLP: {e}")))?;
    let mut rows = Vec::with_capacity(batch.encoded_len().saturating_mul(2));
    let count = RowEncoder::new().encode_request(&request, &mut rows);
    if !gzip {
        return Ok((Bytes::from(rows), count));
    }
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(rows.len() / 8),
        flate2::Compression::fast(),
    );
    encoder
        .write_all(&rows)
        .and_then(|()| encoder.finish())
        .map(|body| (Bytes::from(body), count))
        .map_err(|e| SinkError::transient("encoding", format!("gzip failed: {e}")))
}

#[async_trait]
impl Sink for ClickHouseSink {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        if batch.span_count() == 0 {
            return Ok(());
        }
        self.ready_table().await?;
        let owned = batch.clone(); // cheap: the parts are reference-counted bytes
        let gzip = self.gzip;
        // Encoding and compression are CPU work; keep them off the async threads.
        let (body, rows) = tokio::task::spawn_blocking(move || encode_body(&owned, gzip))
            .await
            .map_err(|e| SinkError::transient("encoding", format!("encoder task failed: {e}")))??;
        let bytes = body.len();
        let mut result = self.client.insert(&self.target, body.clone(), gzip).await;
        if self.create_table && matches!(&result, Err(e) if e.reason() == "no_table") {
            // Dropped since we created it (or by a cleanup job): create it again and
            // insert once more, rather than sending the batch to the fallback.
            tracing::warn!(sink = %self.name, table = %self.target, "ClickHouse table is gone; creating it again");
            self.table_ready.store(false, Ordering::Release);
            self.ready_table().await?;
            result = self.client.insert(&self.target, body, gzip).await;
        }
        result.inspect_err(|e| {
            tracing::warn!(sink = %self.name, table = %self.target, spans = rows, error = %e, "ClickHouse insert failed");
        })?;
        tracing::debug!(sink = %self.name, table = %self.target, spans = rows, bytes, "batch inserted");
        Ok(())
    }
}

#[async_trait]
impl BuildSink for ClickHouseSink {
    type Config = ClickHouseSinkConfig;

    async fn build(
        config: &ClickHouseSinkConfig,
        context: &SinkContext<'_>,
    ) -> Result<Self, BuildError> {
        Self::with_env(context.name, config, context.env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::fixtures;

    #[test]
    fn a_missing_password_variable_fails_the_build_with_its_name() {
        let mut config = ClickHouseSinkConfig::new("http://127.0.0.1:8123");
        config.password_env = Some("CH_PASSWORD".into());
        let err = ClickHouseSink::with_env("ch", &config, &|_| None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("CH_PASSWORD"), "{err}");
        assert!(ClickHouseSink::with_env("ch", &config, &|_| Some("pw".into())).is_ok());
        config.table = "bad-name".into();
        assert!(ClickHouseSink::with_env("ch", &config, &|_| Some("pw".into())).is_err());
    }

    #[test]
    fn gzip_bodies_hold_the_same_rows() {
        let batch = fixtures::batch_of(&[&fixtures::rich_request()]);
        let (plain, rows) = encode_body(&batch, false).unwrap();
        let (packed, rows_again) = encode_body(&batch, true).unwrap();
        assert_eq!((rows, rows_again), (7, 7));
        let mut unpacked = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&packed[..]),
            &mut unpacked,
        )
        .unwrap();
        assert_eq!(unpacked, plain.to_vec());
        assert_eq!(sql_string("it's"), "'it\\'s'");
    }
}
