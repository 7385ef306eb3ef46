//! The Elasticsearch / OpenSearch sink: each batch goes out as one or more `_bulk`
//! requests; documents the cluster refuses with 429/5xx are re-sent alone, a few rounds,
//! and mapping errors are permanent. Not batching or whole-batch retries (the chain's).

pub mod bulk;
pub mod client;
pub mod encoding;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use spansink_config::{ElasticsearchSinkConfig, TimeTemplate};

use crate::otlp::Batch;
use crate::sinks::{BuildError, BuildSink, EnvLookup, Sink, SinkContext, SinkError};
use crate::telemetry::logging;
use crate::telemetry::metrics::Metrics;

use bulk::{ItemError, ItemOutcome, RequestOutcome, classify_request, parse_items};
use client::{Auth, BulkClient, ClientSettings};
use encoding::{BulkItems, Target};

/// Item errors logged one by one per export; the rest are only counted by type.
const LOGGED_ITEM_ERRORS: usize = 3;

/// Longest wait between two rounds of re-sending throttled documents.
const MAX_ITEM_BACKOFF: Duration = Duration::from_secs(5);

/// Writes batches to an Elasticsearch or OpenSearch cluster.
pub struct ElasticsearchSink {
    name: String,
    client: BulkClient,
    target: Target,
    max_bulk_bytes: usize,
    item_retries: u32,
    item_retry_backoff: Duration,
}

impl ElasticsearchSink {
    /// Builds the sink, reading credentials from the process environment. Nothing is
    /// contacted: a cluster that is down fails exports (transiently), not the build.
    /// `_metrics`: the chain counts outcomes; the sink records nothing of its own.
    pub fn new(
        name: &str,
        config: &ElasticsearchSinkConfig,
        _metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        Self::with_env(name, config, &|var| std::env::var(var).ok())
    }

    /// As [`ElasticsearchSink::new`], reading the credential variables through `env`.
    pub fn with_env(
        name: &str,
        config: &ElasticsearchSinkConfig,
        env: EnvLookup<'_>,
    ) -> Result<Self, BuildError> {
        let build_error = |message: String| BuildError {
            sink: name.to_string(),
            message: format!("elasticsearch: {message}"),
        };
        let read = |var: &str, field: &str| {
            env(var).ok_or_else(|| {
                build_error(format!(
                    "environment variable {var} ({field}) is not set; fill it from a Secret with envFrom"
                ))
            })
        };
        let auth = match (&config.username, &config.password_env, &config.api_key_env) {
            (Some(username), Some(var), None) => Auth::Basic {
                username: username.clone(),
                password: read(var, "password_env")?,
            },
            (None, None, Some(var)) => Auth::ApiKey(read(var, "api_key_env")?),
            (None, None, None) => Auth::None,
            _ => {
                return Err(build_error(
                    "set username with password_env, or api_key_env, not both".into(),
                ));
            }
        };
        let target = match (&config.index, &config.data_stream) {
            (None, Some(stream)) => Target::DataStream(stream.clone()),
            (Some(_), Some(_)) => {
                return Err(build_error(
                    "set either index or data_stream, not both".into(),
                ));
            }
            (index, None) => Target::Index(
                TimeTemplate::parse(
                    index
                        .as_deref()
                        .unwrap_or(ElasticsearchSinkConfig::DEFAULT_INDEX),
                )
                .map_err(|e| build_error(format!("index {e}")))?,
            ),
        };
        if config.endpoints.is_empty() {
            return Err(build_error("endpoints must list at least one URL".into()));
        }
        let ca_pem = config
            .ca_file
            .as_ref()
            .map(|path| {
                std::fs::read(path).map_err(|e| build_error(format!("ca_file {path}: {e}")))
            })
            .transpose()?;
        let client = BulkClient::new(ClientSettings {
            endpoints: &config.endpoints,
            auth,
            pipeline: config.pipeline.as_deref(),
            gzip: config.compression == spansink_config::ElasticsearchCompression::Gzip,
            timeout: config.request_timeout.get(),
            ca_pem: ca_pem.as_deref(),
        })
        .map_err(build_error)?;
        Ok(Self {
            name: name.to_string(),
            client,
            target,
            max_bulk_bytes: config.max_bulk_bytes.as_usize().max(1),
            item_retries: config.item_retries,
            item_retry_backoff: config.item_retry_backoff.get(),
        })
    }

    /// The request body of `chunk`, compressed when configured; built off the async
    /// threads (a 5 MiB body takes milliseconds to copy and compress).
    async fn request_body(
        &self,
        items: &Arc<BulkItems>,
        chunk: &[usize],
    ) -> Result<Bytes, SinkError> {
        let (items, chunk, gzip) = (items.clone(), chunk.to_vec(), self.client.gzip());
        tokio::task::spawn_blocking(move || {
            let body = items.body(&chunk);
            if gzip {
                encoding::gzip(&body).map(Bytes::from)
            } else {
                Ok(Bytes::from(body))
            }
        })
        .await
        .map_err(|e| SinkError::transient("encoding", format!("encoder task failed: {e}")))?
        .map_err(|e| SinkError::transient("encoding", format!("cannot compress: {e}")))
    }

    /// One round: sends `pending` in requests of at most `max_bulk_bytes`, sorting each
    /// item into written, to re-send, or failed for good.
    async fn send_round(
        &self,
        items: &Arc<BulkItems>,
        pending: &[usize],
        report: &mut Report,
    ) -> Result<Vec<usize>, SinkError> {
        let create = matches!(self.target, Target::DataStream(_));
        let mut retry = Vec::new();
        let mut queue = items.chunks(pending, self.max_bulk_bytes);
        queue.reverse(); // popped from the back: first chunk first
        while let Some(chunk) = queue.pop() {
            let body = self.request_body(items, &chunk).await?;
            // No endpoint reachable: the whole export fails transiently and the chain
            // retries the batch (documents already written are overwritten by `_id`).
            let answer = self.client.send(body).await?;
            match classify_request(answer.status, &answer.body) {
                RequestOutcome::Items => {
                    let outcomes = parse_items(&answer.body, create, chunk.len())
                        .map_err(|e| SinkError::permanent("protocol", e.to_string()))?;
                    for (&item, outcome) in chunk.iter().zip(outcomes) {
                        match outcome {
                            ItemOutcome::Written => report.written += 1,
                            ItemOutcome::Retry(error) => {
                                report.note_retry(&error);
                                retry.push(item);
                            }
                            ItemOutcome::Fail { reason, error } => {
                                report.failed.push((item, reason, error));
                            }
                        }
                    }
                }
                RequestOutcome::TooLarge if chunk.len() > 1 => {
                    // The cluster's `http.max_content_length` is below `max_bulk_bytes`:
                    // halve the request until it fits.
                    let (first, second) = chunk.split_at(chunk.len() / 2);
                    tracing::debug!(sink = %self.name, items = chunk.len(), "bulk request too large; splitting it");
                    queue.push(second.to_vec());
                    queue.push(first.to_vec());
                }
                RequestOutcome::TooLarge => {
                    let error = ItemError {
                        status: 413,
                        kind: "request_entity_too_large".into(),
                        reason: format!(
                            "a single document of {} bytes exceeds the cluster's http.max_content_length",
                            items.item_len(chunk[0])
                        ),
                    };
                    report.failed.push((chunk[0], "too_large", error));
                }
                RequestOutcome::Retry(error) => {
                    report.request_errors.push(error);
                    retry.extend(chunk);
                }
                RequestOutcome::Fail(error) => return Err(error),
            }
        }
        Ok(retry)
    }

    /// Logs refused documents: the first few with their action line, then counts by type.
    fn log_failed(&self, items: &BulkItems, failed: &[(usize, &'static str, ItemError)]) {
        for (item, reason, error) in failed.iter().take(LOGGED_ITEM_ERRORS) {
            tracing::warn!(sink = %self.name, action = %items.action(*item), status = error.status, error_type = %error.kind, reason = %reason, error = %error.reason, "document refused");
        }
        if failed.len() > LOGGED_ITEM_ERRORS {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for (_, _, error) in failed {
                *counts.entry(error.kind.as_str()).or_default() += 1;
            }
            tracing::warn!(sink = %self.name, refused = failed.len(), by_type = %logging::counts(&counts), "documents refused");
        }
    }
}

/// What happened to the documents of one export.
#[derive(Default)]
struct Report {
    written: usize,
    /// Refused for good: item, metric reason, error.
    failed: Vec<(usize, &'static str, ItemError)>,
    /// Item errors worth a retry, counted by type (for the final message).
    retried: BTreeMap<String, usize>,
    last_retry: Option<ItemError>,
    /// Whole-request answers worth a retry (429/5xx).
    request_errors: Vec<SinkError>,
}

impl Report {
    fn note_retry(&mut self, error: &ItemError) {
        *self.retried.entry(error.kind.clone()).or_default() += 1;
        self.last_retry = Some(error.clone());
    }
}

#[async_trait]
impl Sink for ElasticsearchSink {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        if batch.span_count() == 0 {
            return Ok(());
        }
        let (owned, target) = (batch.clone(), self.target.clone());
        // Decoding and JSON encoding are CPU work; keep them off the async threads.
        let items = tokio::task::spawn_blocking(move || {
            owned
                .decode()
                .map(|mut request| BulkItems::encode(&mut request, &target, Utc::now()))
        })
        .await
        .map_err(|e| SinkError::transient("encoding", format!("encoder task failed: {e}")))?
        .map_err(|e| SinkError::permanent("encoding", e.to_string()))?;
        let items = Arc::new(items);
        let total = items.len();

        let mut report = Report::default();
        let mut pending: Vec<usize> = (0..total).collect();
        let mut backoff = self.item_retry_backoff;
        for round in 0..=self.item_retries {
            if round > 0 {
                tracing::debug!(sink = %self.name, round, documents = pending.len(), retryable = %logging::counts(&report.retried), "re-sending documents the cluster could not take");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ITEM_BACKOFF);
            }
            pending = match self.send_round(&items, &pending, &mut report).await {
                Ok(pending) => pending,
                Err(error) => {
                    // As every other sink does for a failed attempt: an outage shows in
                    // the log, not only in the retry policy's debug lines.
                    tracing::warn!(sink = %self.name, documents = total, written = report.written, reason = %error.reason(), error = %error, "Elasticsearch bulk request failed");
                    return Err(error);
                }
            };
            if pending.is_empty() {
                break;
            }
        }
        if !report.failed.is_empty() {
            self.log_failed(&items, &report.failed);
        }

        if !pending.is_empty() {
            let cause = match (&report.last_retry, report.request_errors.last()) {
                (_, Some(request_error)) => request_error.to_string(),
                (Some(item), None) => format!("{} {}: {}", item.status, item.kind, item.reason),
                (None, None) => String::new(),
            };
            let reason = match (report.request_errors.last(), &report.last_retry) {
                (Some(error), _) => error.reason(),
                (None, Some(item)) if item.status == 429 => "throttled",
                (None, _) => "unavailable",
            };
            tracing::warn!(sink = %self.name, documents = total, written = report.written, still_refused = pending.len(), retryable = %logging::counts(&report.retried), "documents still refused after {} re-sends", self.item_retries);
            return Err(SinkError::transient(
                reason,
                format!(
                    "{} of {total} documents still refused after {} re-sends (last: {cause}); {} written",
                    pending.len(),
                    self.item_retries,
                    report.written
                ),
            ));
        }
        if let Some((_, reason, first)) = report.failed.first() {
            return Err(SinkError::permanent(
                reason,
                format!(
                    "{} of {total} documents refused (first: {} {}: {}); {} written",
                    report.failed.len(),
                    first.status,
                    first.kind,
                    first.reason,
                    report.written
                ),
            ));
        }
        tracing::debug!(sink = %self.name, spans = total, "batch indexed");
        Ok(())
    }
}

#[async_trait]
impl BuildSink for ElasticsearchSink {
    type Config = ElasticsearchSinkConfig;

    async fn build(
        config: &ElasticsearchSinkConfig,
        context: &SinkContext<'_>,
    ) -> Result<Self, BuildError> {
        Self::with_env(context.name, config, context.env)
    }
}
