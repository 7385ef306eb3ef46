//! The RabbitMQ sink: each batch becomes one or more messages published to an exchange on a
//! confirm-mode channel, all in flight at once, and the batch is Ok only when every one is
//! confirmed. Not batching or retries (the chain's) nor the AMQP protocol (lapin's).

pub mod connection;
pub mod encoding;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::future::join_all;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation};
use spansink_config::RabbitMqSinkConfig;

use crate::otlp::Batch;
use crate::sinks::{BuildError, BuildSink, EnvLookup, Sink, SinkContext, SinkError, message_fit};
use crate::telemetry::metrics::Metrics;

use connection::{ConnectionSettings, Publisher, classify};
use encoding::RabbitMqMessage;

/// How long shutdown and the closing of a broken connection may take: a half-dead
/// connection must not hold up the exporter.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes batches to one RabbitMQ exchange.
pub struct RabbitMqSink {
    name: String,
    config: RabbitMqSinkConfig,
    settings: ConnectionSettings,
    /// The open connection, opened on first use and again after it broke. Building does
    /// not connect, so a broker that is down at start gives transient export errors.
    /// A tokio mutex: concurrent exports that find it broken wait for one reconnect
    /// instead of each opening a connection.
    publisher: tokio::sync::Mutex<Option<Arc<Publisher>>>,
    metrics: Metrics,
}

/// What publishing a batch's messages came to.
struct PublishOutcome {
    confirmed: usize,
    /// Each unconfirmed message's error, already classified.
    failures: Vec<SinkError>,
}

impl RabbitMqSink {
    /// Resolves the credentials and TLS files; does not connect.
    pub fn new(
        name: &str,
        config: &RabbitMqSinkConfig,
        metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        Self::with_env(name, config, metrics, &|var| std::env::var(var).ok())
    }

    /// As [`RabbitMqSink::new`], reading the password variable through `env`.
    pub fn with_env(
        name: &str,
        config: &RabbitMqSinkConfig,
        metrics: &Metrics,
        env: EnvLookup<'_>,
    ) -> Result<Self, BuildError> {
        let settings =
            ConnectionSettings::resolve(name, config, env).map_err(|message| BuildError {
                sink: name.to_string(),
                message,
            })?;
        Ok(Self {
            name: name.to_string(),
            config: config.clone(),
            settings,
            publisher: tokio::sync::Mutex::new(None),
            metrics: metrics.clone(),
        })
    }

    /// The open publisher, or a new one when there is none or it broke.
    async fn publisher(&self) -> Result<Arc<Publisher>, SinkError> {
        let mut slot = self.publisher.lock().await;
        if let Some(current) = slot.as_ref() {
            if current.is_usable() {
                return Ok(Arc::clone(current));
            }
            tracing::info!(sink = %self.name, address = %self.settings.address(), "RabbitMQ connection or channel closed; reconnecting");
        }
        if let Some(broken) = slot.take() {
            // The channel may be gone while the connection lives (e.g. after a 404):
            // close what is left in the background.
            tokio::spawn(async move {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, broken.close()).await;
            });
        }
        let fresh = Arc::new(self.settings.open().await?);
        tracing::debug!(sink = %self.name, address = %self.settings.address(), "connected to RabbitMQ");
        *slot = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// Publishes every message without waiting in between (they travel together), then
    /// waits for every confirm.
    async fn publish_all(&self, channel: &Channel, messages: &[RabbitMqMessage]) -> PublishOutcome {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let base = BasicProperties::default()
            .with_content_type(encoding::content_type(self.config.encoding).into())
            .with_delivery_mode(if self.config.persistent { 2 } else { 1 })
            .with_timestamp(timestamp)
            .with_app_id("spansink".into());
        let options = BasicPublishOptions {
            mandatory: self.config.mandatory,
            immediate: false,
        };
        let publishes = messages.iter().map(|message| {
            let mut headers = FieldTable::default();
            headers.insert(
                "spansink_spans".into(),
                AMQPValue::LongLongInt(i64::try_from(message.spans).unwrap_or(i64::MAX)),
            );
            // Names the message in broker and consumer logs. Random, not derived from the
            // body: a retried batch gets new ids (delivery is at least once).
            let properties = base
                .clone()
                .with_message_id(uuid::Uuid::now_v7().to_string().into())
                .with_headers(headers);
            channel.basic_publish(
                self.config.exchange.as_str().into(),
                self.config.routing_key.as_str().into(),
                options,
                &message.body,
                properties,
            )
        });
        let mut failures = Vec::new();
        let mut confirms = Vec::with_capacity(messages.len());
        for published in join_all(publishes).await {
            match published {
                Ok(confirm) => confirms.push(confirm),
                Err(e) => failures.push(classify(&e, "publish")),
            }
        }
        let mut confirmed = 0;
        for confirmation in join_all(confirms).await {
            match confirmation {
                Ok(Confirmation::Ack(None)) => confirmed += 1,
                // Returned (mandatory, no queue bound for the routing key), then acked.
                // Permanent: the broker has said where this message goes (nowhere), and
                // only someone binding a queue changes that; retrying would also
                // re-publish the batch's routable messages. The fallback gets the batch.
                Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))) => {
                    failures.push(SinkError::permanent(
                        "unroutable",
                        format!(
                            "RabbitMQ returned the message: {} {} (no queue is bound to exchange {:?} for routing key {:?}; bind one, or set rabbitmq.mandatory: false to let the broker drop such messages)",
                            returned.reply_code,
                            returned.reply_text,
                            self.config.exchange,
                            self.config.routing_key
                        ),
                    ))
                }
                // The broker could not take the message (e.g. an internal queue error);
                // nothing says the next try fails too.
                Ok(Confirmation::Nack(None)) => failures.push(SinkError::transient(
                    "nack",
                    "RabbitMQ did not accept the message (basic.nack)",
                )),
                Ok(Confirmation::NotRequested) => failures.push(SinkError::transient(
                    "unconfirmed",
                    "RabbitMQ channel is not in confirm mode; reconnecting",
                )),
                Err(e) => failures.push(classify(&e, "confirm")),
            }
        }
        PublishOutcome {
            confirmed,
            failures,
        }
    }

    fn count_oversized(&self, spans: usize) {
        message_fit::count_oversized(
            &self.metrics,
            &self.name,
            "rabbitmq.max_message_bytes",
            self.config.max_message_bytes,
            spans,
        );
    }
}

#[async_trait]
impl Sink for RabbitMqSink {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        let encoded = encoding::encode_batch(
            batch,
            self.config.encoding,
            self.config.max_message_bytes.as_usize(),
        )
        .map_err(|e| SinkError::permanent("encoding", e.to_string()))?;
        if encoded.messages.is_empty() {
            if encoded.oversized_spans > 0 {
                return Err(message_fit::all_oversized(
                    "rabbitmq.max_message_bytes",
                    self.config.max_message_bytes,
                ));
            }
            return Ok(());
        }
        let publisher = self.publisher().await.inspect_err(|e| {
            tracing::warn!(sink = %self.name, address = %self.settings.address(), error = %e, "cannot connect to RabbitMQ");
        })?;
        let outcome = self
            .publish_all(&publisher.channel, &encoded.messages)
            .await;
        if outcome.failures.is_empty() {
            self.count_oversized(encoded.oversized_spans);
            tracing::debug!(sink = %self.name, spans = batch.span_count(), messages = outcome.confirmed, "batch confirmed");
            return Ok(());
        }
        let failed = outcome.failures.len();
        let Some(worst) = SinkError::decisive(&outcome.failures).cloned() else {
            return Ok(());
        };
        tracing::warn!(
            sink = %self.name,
            failed_messages = failed,
            confirmed_messages = outcome.confirmed,
            error = %worst,
            "RabbitMQ did not confirm every message of the batch"
        );
        Err(worst)
    }

    async fn shutdown(&self) -> Result<(), SinkError> {
        let publisher = self.publisher.lock().await.take();
        if let Some(publisher) = publisher
            && tokio::time::timeout(CLOSE_TIMEOUT, publisher.close())
                .await
                .is_err()
        {
            tracing::warn!(sink = %self.name, "RabbitMQ connection did not close within 5s");
        }
        Ok(())
    }
}

#[async_trait]
impl BuildSink for RabbitMqSink {
    type Config = RabbitMqSinkConfig;

    async fn build(
        config: &RabbitMqSinkConfig,
        context: &SinkContext<'_>,
    ) -> Result<Self, BuildError> {
        Self::with_env(context.name, config, context.metrics, context.env)
    }
}
