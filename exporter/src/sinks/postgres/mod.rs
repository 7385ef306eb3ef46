//! The PostgreSQL sink: each batch is one transaction (binary COPY into a session staging
//! table, then one `INSERT ... ON CONFLICT DO NOTHING`) on a pooled connection, into a
//! table it creates and migrates on first use. Not batching or retries (the chain's).
//!
//! Why COPY into staging and not COPY into the table: COPY cannot skip rows that exist,
//! and a retried batch (the first attempt committed but its answer was lost) must not
//! duplicate rows. The INSERT from staging keeps COPY's cheap parsing and adds the
//! unique-key check. TLS (`tls: require | verify-full`) is `tls.rs`.

pub mod encoding;
pub mod errors;
pub mod schema;
pub mod tls;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use futures::SinkExt;
use spansink_config::PostgresSinkConfig;
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;

use crate::otlp::Batch;
use crate::sinks::{BuildError, BuildSink, EnvLookup, Sink, SinkContext, SinkError};
use crate::telemetry::logging;
use crate::telemetry::metrics::Metrics;

use errors::{PostgresError, classify, classify_pool};
use schema::Table;
use tls::PostgresTls;

/// COPY data is sent in messages of this size: big enough that per-message overhead
/// vanishes, small enough that the driver's buffer stays small.
const COPY_CHUNK: usize = 256 * 1024;

/// Writes batches as rows of one table.
pub struct PostgresSink {
    name: String,
    pool: Pool,
    table: Table,
    create_table: bool,
    copy_sql: String,
    insert_sql: String,
    /// Set once the table was checked (and created or migrated); cleared when a write
    /// finds the table or a column gone, so the next export checks again.
    schema_ready: AtomicBool,
    /// One migration at a time within this exporter (across replicas: an advisory lock).
    migration: tokio::sync::Mutex<()>,
}

impl PostgresSink {
    /// Builds the connection pool. Nothing connects yet: a server that is down now makes
    /// exports fail (transiently) later, not the build.
    /// `_metrics`: the chain around the sink counts its outcomes (sent, failed by reason,
    /// retried); the sink records nothing of its own.
    pub fn new(
        name: &str,
        config: &PostgresSinkConfig,
        _metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        Self::with_env(name, config, &|var| std::env::var(var).ok())
    }

    /// As [`PostgresSink::new`], reading `password_env` through `env`.
    pub fn with_env(
        name: &str,
        config: &PostgresSinkConfig,
        env: EnvLookup<'_>,
    ) -> Result<Self, BuildError> {
        let build_error = |message: String| BuildError {
            sink: name.to_string(),
            message,
        };
        let tls = PostgresTls::new(config).map_err(|e| build_error(e.to_string()))?;
        let mut pg = tokio_postgres::Config::new();
        pg.host(&config.host)
            .port(config.port)
            .dbname(&config.database)
            .user(&config.user)
            .application_name("spansink")
            .connect_timeout(config.connect_timeout.get())
            // IF NOT EXISTS statements answer with NOTICEs, which the driver would log
            // at info level on every new connection.
            .options("-c client_min_messages=warning")
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            // With TLS, a server that does not offer it is refused (no plain fallback).
            .ssl_mode(if tls.is_some() {
                SslMode::Require
            } else {
                SslMode::Disable
            });
        if let Some(var) = &config.password_env {
            let password = env(var).ok_or_else(|| {
                build_error(format!(
                    "postgres.password_env names {var}, which is not set; fill it from a Secret (envFrom) or remove password_env"
                ))
            })?;
            pg.password(password);
        }
        let manager_config = ManagerConfig {
            // A connection is checked for being closed when taken from the pool; a
            // dead one is replaced. An export cancelled mid-transaction leaves a clean
            // connection: the driver queues the ROLLBACK (and CopyFail) on drop.
            recycling_method: RecyclingMethod::Fast,
        };
        tracing::info!(
            sink = %name,
            host = %config.host,
            tls = %config.tls,
            ca_file = %config.ca_file.as_deref().unwrap_or("none"),
            client_certificate = config.cert_file.is_some(),
            "PostgreSQL sink connection settings"
        );
        let manager = match tls {
            Some(tls) => Manager::from_config(pg, tls, manager_config),
            None => Manager::from_config(pg, NoTls, manager_config),
        };
        let max_connections = usize::try_from(config.max_connections).unwrap_or(usize::MAX);
        let pool = Pool::builder(manager)
            .max_size(max_connections)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(config.connect_timeout.get()))
            .post_create(Hook::async_fn(|client, _| {
                Box::pin(async move {
                    client
                        .batch_execute(&schema::create_staging_sql())
                        .await
                        .map_err(HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| build_error(format!("cannot build the connection pool: {e}")))?;
        let (schema, table) = config.schema_and_table();
        let table = Table::new(schema, table);
        Ok(Self {
            name: name.to_string(),
            pool,
            insert_sql: schema::insert_sql(&table),
            copy_sql: schema::copy_sql(),
            table,
            create_table: config.create_table,
            schema_ready: AtomicBool::new(false),
            migration: tokio::sync::Mutex::new(()),
        })
    }

    /// Checks the table once (creating or migrating it when allowed) before the first
    /// write, and again after a write found it changed.
    async fn ensure_schema(&self, client: &mut Object) -> Result<(), PostgresError> {
        if self.schema_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _one_at_a_time = self.migration.lock().await;
        if self.schema_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let done = schema::migrate(client, &self.table, self.create_table).await?;
        if done.created_schema
            || done.created_table
            || !done.added_columns.is_empty()
            || !done.created_indexes.is_empty()
        {
            tracing::info!(
                sink = %self.name,
                table = %self.table.qualified(),
                created_schema = done.created_schema,
                created_table = done.created_table,
                added_columns = %logging::list(&done.added_columns),
                created_indexes = %logging::list(&done.created_indexes),
                "PostgreSQL table migrated"
            );
        }
        if !done.missing_indexes.is_empty() {
            tracing::warn!(
                sink = %self.name,
                table = %self.table.qualified(),
                missing_indexes = %logging::list(&done.missing_indexes),
                "query indexes are missing and create_table is off; writes work, queries by service and time are slower"
            );
        }
        self.schema_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// One transaction: COPY the rows into staging, move the new ones into the table.
    /// Returns the rows inserted (fewer than sent when some were there already).
    async fn write(&self, client: &mut Object, data: Bytes) -> Result<u64, PostgresError> {
        let tx = client
            .transaction()
            .await
            .map_err(|e| classify("begin a transaction", &e))?;
        let copy = tx
            .prepare_cached(&self.copy_sql)
            .await
            .map_err(|e| classify("prepare the COPY", &e))?;
        let sink = tx
            .copy_in::<_, Bytes>(&copy)
            .await
            .map_err(|e| classify("start the COPY", &e))?;
        let mut sink = std::pin::pin!(sink);
        let mut at = 0;
        while at < data.len() {
            let end = (at + COPY_CHUNK).min(data.len());
            sink.as_mut()
                .feed(data.slice(at..end))
                .await
                .map_err(|e| classify("copy the batch", &e))?;
            at = end;
        }
        sink.as_mut()
            .finish()
            .await
            .map_err(|e| classify("copy the batch", &e))?;
        let insert = tx
            .prepare_cached(&self.insert_sql)
            .await
            .map_err(|e| classify("prepare the INSERT", &e))?;
        let inserted = tx
            .execute(&insert, &[])
            .await
            .map_err(|e| classify("insert the batch", &e))?;
        tx.commit()
            .await
            .map_err(|e| classify("commit the batch", &e))?;
        Ok(inserted)
    }

    async fn try_export(&self, batch: &Batch) -> Result<(), PostgresError> {
        let owned = batch.clone(); // cheap: the parts are reference-counted bytes
        // Decoding and encoding are CPU work; keep them off the async threads.
        let (data, rows) = tokio::task::spawn_blocking(move || {
            owned
                .decode()
                .map(|request| encoding::encode_copy(&request))
        })
        .await
        .map_err(|e| PostgresError::Transient {
            reason: "encoding",
            message: format!("encoder task failed: {e}"),
        })?
        .map_err(|e| PostgresError::Permanent {
            reason: "encoding",
            message: format!("cannot decode the batch: {e}"),
        })?;
        let mut client = self.pool.get().await.map_err(|e| classify_pool(&e))?;
        self.ensure_schema(&mut client).await?;
        let inserted = match self.write(&mut client, Bytes::from(data)).await {
            Ok(inserted) => inserted,
            Err(e) if e.is_undefined_object() && self.create_table => {
                // Dropped or altered under us: check (and re-create) on the next try.
                self.schema_ready.store(false, Ordering::Release);
                return Err(PostgresError::Transient {
                    reason: "schema",
                    message: format!("{e}; the table will be checked again"),
                });
            }
            Err(e) => return Err(e),
        };
        tracing::debug!(
            sink = %self.name,
            spans = rows,
            inserted,
            already_present = (rows as u64).saturating_sub(inserted),
            "batch written"
        );
        Ok(())
    }
}

#[async_trait]
impl Sink for PostgresSink {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        if batch.span_count() == 0 {
            return Ok(());
        }
        self.try_export(batch).await.map_err(|e| {
            tracing::warn!(
                sink = %self.name,
                table = %self.table.qualified(),
                spans = batch.span_count(),
                error = %e,
                "PostgreSQL write failed"
            );
            SinkError::from(e)
        })
    }

    async fn shutdown(&self) -> Result<(), SinkError> {
        // Every export has returned (the chain's contract), so no connection is in use.
        self.pool.close();
        Ok(())
    }
}

#[async_trait]
impl BuildSink for PostgresSink {
    type Config = PostgresSinkConfig;

    async fn build(
        config: &PostgresSinkConfig,
        context: &SinkContext<'_>,
    ) -> Result<Self, BuildError> {
        Self::with_env(context.name, config, context.env)
    }
}
