//! The ClickHouse sink: each batch becomes one `INSERT` over the HTTP interface (one row
//! per span, `RowBinary` when the table's columns allow it, else `JSONEachRow`; LZ4, gzip
//! or no compression), into a table it creates on first use if asked. Not batching or
//! retries (the chain's).

pub mod client;
pub mod compressed_block;
pub mod encoding;
pub mod row_binary;
pub mod schema;

use std::io::Write as _;

use async_trait::async_trait;
use bytes::Bytes;
use spansink_config::{ClickHouseCompression, ClickHouseFormat, ClickHouseSinkConfig};
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Mutex;

use crate::otlp::Batch;
use crate::sinks::{BuildError, BuildSink, EnvLookup, Sink, SinkContext, SinkError};
use crate::telemetry::metrics::Metrics;

use client::{Client, ClientOptions};
use encoding::RowEncoder;
use row_binary::RowBinaryEncoder;

/// The row format an insert is written in, once chosen for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowFormat {
    JsonEachRow,
    RowBinary,
}

impl RowFormat {
    fn name(self) -> &'static str {
        match self {
            RowFormat::JsonEachRow => "JSONEachRow",
            RowFormat::RowBinary => "RowBinary",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            RowFormat::JsonEachRow => "application/x-ndjson",
            RowFormat::RowBinary => "application/octet-stream",
        }
    }

    /// Held in [`ClickHouseSink::ready`]; 0 is "not ready".
    fn as_u8(self) -> u8 {
        match self {
            RowFormat::JsonEachRow => 1,
            RowFormat::RowBinary => 2,
        }
    }

    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(RowFormat::JsonEachRow),
            2 => Some(RowFormat::RowBinary),
            _ => None,
        }
    }
}

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
    format: ClickHouseFormat,
    compression: ClickHouseCompression,
    /// The row format chosen for the table ([`RowFormat::as_u8`]), once the table is
    /// known to exist (when the sink creates it) and its columns are known (when the
    /// format is `auto` or `row_binary`); 0 until then. Settled lazily by the first
    /// export, since the server may be down when the exporter starts; a failed attempt is
    /// made again by the next export, and a table dropped or changed later is looked at
    /// again.
    ready: AtomicU8,
    /// Held while the table is being prepared, so concurrent exports prepare it once.
    preparing: Mutex<()>,
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
            format: config.format,
            compression: config.compression,
            ready: AtomicU8::new(0),
            preparing: Mutex::new(()),
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

    /// The row format the sink writes the table in, once it has reached the table.
    pub fn chosen_format(&self) -> Option<RowFormat> {
        RowFormat::from_u8(self.ready.load(Ordering::Acquire))
    }

    /// The row format for the table as it is now: creates the table first when the sink
    /// is to, and looks at its columns unless the format is `json_each_row`.
    async fn prepare(&self) -> Result<RowFormat, SinkError> {
        if let Some(format) = RowFormat::from_u8(self.ready.load(Ordering::Acquire)) {
            return Ok(format);
        }
        let _preparing = self.preparing.lock().await;
        if let Some(format) = RowFormat::from_u8(self.ready.load(Ordering::Acquire)) {
            return Ok(format); // another export prepared it while we waited
        }
        let format = self.settle_format().await.inspect_err(|e| {
            tracing::warn!(sink = %self.name, table = %self.target, error = %e, "could not prepare the ClickHouse table");
        })?;
        self.ready.store(format.as_u8(), Ordering::Release);
        Ok(format)
    }

    async fn settle_format(&self) -> Result<RowFormat, SinkError> {
        if self.create_table {
            self.ensure_table().await?;
        }
        if self.format == ClickHouseFormat::JsonEachRow {
            return Ok(RowFormat::JsonEachRow);
        }
        let described = self
            .client
            .execute(&format!(
                "DESCRIBE TABLE {} FORMAT TabSeparated",
                self.target
            ))
            .await?;
        let columns = schema::described_columns(&described);
        let format = match (schema::row_binary_misfit(&columns), self.format) {
            (None, _) => RowFormat::RowBinary,
            (Some(misfit), ClickHouseFormat::RowBinary) => {
                return Err(SinkError::permanent(
                    "schema",
                    format!(
                        "clickhouse.format is row_binary, but {misfit} in {}; set clickhouse.format to auto or json_each_row, or fix the table",
                        self.target
                    ),
                ));
            }
            (Some(misfit), _) => {
                tracing::info!(sink = %self.name, table = %self.target, format = "JSONEachRow", reason = %misfit, "ClickHouse table does not fit RowBinary rows; inserting JSON rows");
                return Ok(RowFormat::JsonEachRow);
            }
        };
        tracing::info!(sink = %self.name, table = %self.target, format = format.name(), "ClickHouse row format chosen");
        Ok(format)
    }

    /// The batch's body, encoded and compressed off the async threads (CPU work).
    async fn encode(&self, batch: &Batch, format: RowFormat) -> Result<(Bytes, usize), SinkError> {
        let owned = batch.clone(); // cheap: the parts are reference-counted bytes
        let compression = self.compression;
        tokio::task::spawn_blocking(move || encode_body(&owned, format, compression))
            .await
            .map_err(|e| SinkError::transient("encoding", format!("encoder task failed: {e}")))?
    }

    async fn insert(&self, format: RowFormat, body: Bytes) -> Result<(), SinkError> {
        self.client
            .insert(
                &self.insert_query(format),
                body,
                format.content_type(),
                self.compression,
            )
            .await
    }

    /// The insert statement for `format`: RowBinary names its columns, so other columns
    /// of a table keep their defaults.
    fn insert_query(&self, format: RowFormat) -> String {
        match format {
            RowFormat::JsonEachRow => format!("INSERT INTO {} FORMAT JSONEachRow", self.target),
            RowFormat::RowBinary => format!(
                "INSERT INTO {} {} FORMAT RowBinary",
                self.target,
                schema::column_list()
            ),
        }
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

/// The request body of a batch: its rows in `format`, compressed as asked.
fn encode_body(
    batch: &Batch,
    format: RowFormat,
    compression: ClickHouseCompression,
) -> Result<(Bytes, usize), SinkError> {
    let mut rows = Vec::with_capacity(batch.encoded_len().saturating_mul(2));
    let count = match format {
        RowFormat::JsonEachRow => {
            let request = batch.decode().map_err(|e| {
                SinkError::permanent("encoding", format!("batch is not valid OTLP: {e}"))
            })?;
            RowEncoder::new().encode_request(&request, &mut rows)
        }
        RowFormat::RowBinary => {
            let mut encoder = RowBinaryEncoder::new();
            let mut count = 0;
            for part in batch.parts() {
                count += encoder
                    .encode_wire_request(part.bytes(), &mut rows)
                    .map_err(|e| {
                        SinkError::permanent("encoding", format!("batch is not valid OTLP: {e}"))
                    })?;
            }
            count
        }
    };
    let body = match compression {
        ClickHouseCompression::None => rows,
        ClickHouseCompression::Lz4 => {
            let mut body = Vec::with_capacity(rows.len() / 3 + 64);
            compressed_block::compress_into(&rows, &mut body);
            body
        }
        ClickHouseCompression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(rows.len() / 8),
                flate2::Compression::fast(),
            );
            encoder
                .write_all(&rows)
                .and_then(|()| encoder.finish())
                .map_err(|e| SinkError::transient("encoding", format!("gzip failed: {e}")))?
        }
    };
    Ok((Bytes::from(body), count))
}

#[async_trait]
impl Sink for ClickHouseSink {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        if batch.span_count() == 0 {
            return Ok(());
        }
        let mut format = self.prepare().await?;
        let (mut body, mut rows) = self.encode(batch, format).await?;
        let mut result = self.insert(format, body.clone()).await;
        // The table was dropped since it was prepared (by hand, by a cleanup job), or
        // changed so the chosen format no longer fits: look at it again (creating it when
        // the sink is to) and insert once more, rather than send the batch to the fallback.
        let retry_reason = match &result {
            Err(e) if self.create_table && e.reason() == "no_table" => Some(e.to_string()),
            Err(e)
                if self.format == ClickHouseFormat::Auto
                    && format == RowFormat::RowBinary
                    && e.reason() == "schema" =>
            {
                Some(e.to_string())
            }
            _ => None,
        };
        if let Some(error) = retry_reason {
            tracing::warn!(sink = %self.name, table = %self.target, error = %error, "ClickHouse table is gone or changed; preparing it again");
            self.ready.store(0, Ordering::Release);
            let again = self.prepare().await?;
            if again != format {
                format = again;
                (body, rows) = self.encode(batch, format).await?;
            }
            result = self.insert(format, body).await;
        }
        result.inspect_err(|e| {
            tracing::warn!(sink = %self.name, table = %self.target, spans = rows, format = format.name(), error = %e, "ClickHouse insert failed");
        })?;
        tracing::debug!(sink = %self.name, table = %self.target, spans = rows, format = format.name(), "batch inserted");
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
    fn compressed_bodies_hold_the_same_rows_in_either_format() {
        let batch = fixtures::batch_of(&[&fixtures::rich_request(), &fixtures::request(3, 2)]);
        for format in [RowFormat::JsonEachRow, RowFormat::RowBinary] {
            let (plain, rows) = encode_body(&batch, format, ClickHouseCompression::None).unwrap();
            assert_eq!(rows, 10);
            let (gzip, gzip_rows) =
                encode_body(&batch, format, ClickHouseCompression::Gzip).unwrap();
            let mut unpacked = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gzip[..]), &mut unpacked)
                .unwrap();
            assert_eq!((unpacked, gzip_rows), (plain.to_vec(), 10));
            let (lz4, lz4_rows) = encode_body(&batch, format, ClickHouseCompression::Lz4).unwrap();
            let unpacked = compressed_block::decompress(&lz4).unwrap();
            assert_eq!((unpacked, lz4_rows), (plain.to_vec(), 10));
            assert!(lz4.len() < plain.len());
        }
        assert_eq!(sql_string("it's"), "'it\\'s'");
    }
}
