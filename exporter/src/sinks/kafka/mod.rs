//! The Kafka sink: each batch becomes one message per trace (keyed by trace id, so a
//! trace stays in one partition), all produced at once and acknowledged together.
//! Not batching or retries (the chain's) nor the Kafka protocol (librdkafka's).

pub mod client_context;
pub mod encoding;
pub mod producer;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, Producer};
use spansink_config::KafkaSinkConfig;

use self::client_context::KafkaClientContext;
use crate::otlp::Batch;
use crate::sinks::{BuildError, BuildSink, Sink, SinkContext, SinkError, message_fit};
use crate::telemetry::metrics::Metrics;

/// Writes batches to one Kafka topic.
pub struct KafkaSink {
    name: String,
    config: KafkaSinkConfig,
    client_config: ClientConfig,
    /// Replaced when librdkafka reports a fatal error (an idempotent producer that lost
    /// its sequence state cannot produce again; a new one can).
    producer: RwLock<Arc<SinkProducer>>,
    metrics: Metrics,
}

impl KafkaSink {
    /// Creates the producer. It connects in the background: brokers that are down now
    /// make exports fail (transiently) later, not the build.
    pub fn new(
        name: &str,
        config: &KafkaSinkConfig,
        metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        Self::with_env(name, config, metrics, &|var| std::env::var(var).ok())
    }

    /// As [`KafkaSink::new`], reading the credential variables through `env`.
    pub fn with_env(
        name: &str,
        config: &KafkaSinkConfig,
        metrics: &Metrics,
        env: crate::sinks::EnvLookup<'_>,
    ) -> Result<Self, BuildError> {
        let build_error = |message: String| BuildError {
            sink: name.to_string(),
            message,
        };
        let client_config = producer::client_config(config, env).map_err(build_error)?;
        let producer = create_producer(name, &client_config, metrics).map_err(build_error)?;
        Ok(Self {
            name: name.to_string(),
            config: config.clone(),
            client_config,
            producer: RwLock::new(Arc::new(producer)),
            metrics: metrics.clone(),
        })
    }

    fn producer(&self) -> Arc<SinkProducer> {
        match self.producer.read() {
            Ok(p) => Arc::clone(&p),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Swaps in a new producer when the current one is dead. Returns whether it did.
    fn replace_if_fatal(&self, current: &Arc<SinkProducer>) -> bool {
        let Some((code, reason)) = current.client().fatal_error() else {
            return false;
        };
        tracing::error!(sink = %self.name, %code, %reason, "Kafka producer hit a fatal error; creating a new one");
        match create_producer(&self.name, &self.client_config, &self.metrics) {
            Ok(fresh) => {
                let mut slot = match self.producer.write() {
                    Ok(slot) => slot,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if Arc::ptr_eq(&slot, current) {
                    *slot = Arc::new(fresh);
                }
                true
            }
            Err(message) => {
                tracing::error!(sink = %self.name, error = %message, "cannot create a new Kafka producer");
                false
            }
        }
    }

    fn count_oversized(&self, spans: usize) {
        message_fit::count_oversized(
            &self.metrics,
            &self.name,
            "kafka.max_message_bytes",
            self.config.max_message_bytes,
            spans,
        );
    }
}

/// The sink's producer: its context turns librdkafka's statistics and errors into
/// metrics and warnings.
type SinkProducer = FutureProducer<KafkaClientContext>;

fn create_producer(
    sink: &str,
    config: &ClientConfig,
    metrics: &Metrics,
) -> Result<SinkProducer, String> {
    config
        .create_with_context::<_, SinkProducer>(KafkaClientContext::new(sink, metrics))
        .map_err(|e| format!("cannot create the Kafka producer: {e}"))
}

#[async_trait]
impl Sink for KafkaSink {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        let encoded = encoding::encode_batch(
            batch,
            self.config.encoding,
            self.config.max_message_bytes.as_usize(),
        )
        .map_err(|e| SinkError::permanent("encoding", e.to_string()))?;
        if encoded.messages.is_empty() && encoded.oversized_spans > 0 {
            return Err(message_fit::all_oversized(
                "kafka.max_message_bytes",
                self.config.max_message_bytes,
            ));
        }
        let producer = self.producer();
        let outcome = producer::produce_all(
            &producer,
            &self.config.topic,
            &encoded.messages,
            self.config.message_timeout.get(),
        )
        .await;
        if outcome.failures.is_empty() {
            self.count_oversized(encoded.oversized_spans);
            tracing::debug!(sink = %self.name, spans = batch.span_count(), messages = outcome.delivered, "batch produced");
            return Ok(());
        }
        let failed = outcome.failures.len();
        let Some(worst) = SinkError::decisive(&outcome.failures).cloned() else {
            return Ok(());
        };
        if self.replace_if_fatal(&producer) && !worst.is_transient() {
            // The old producer's errors say nothing about the new one.
            let (SinkError::Transient { message, .. } | SinkError::Permanent { message, .. }) =
                worst;
            return Err(SinkError::transient("fatal", message));
        }
        tracing::warn!(
            sink = %self.name,
            failed_messages = failed,
            delivered_messages = outcome.delivered,
            error = %worst,
            "Kafka did not acknowledge every message of the batch"
        );
        Err(worst)
    }

    async fn shutdown(&self) -> Result<(), SinkError> {
        let producer = self.producer();
        let timeout = self.config.message_timeout.get() + Duration::from_secs(1);
        // flush() blocks its thread until librdkafka's queue is empty.
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        match flushed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(producer::classify(&e)),
            Err(join) => Err(SinkError::transient(
                "shutdown",
                format!("Kafka producer flush did not complete: {join}"),
            )),
        }
    }
}

#[async_trait]
impl BuildSink for KafkaSink {
    type Config = KafkaSinkConfig;

    async fn build(
        config: &KafkaSinkConfig,
        context: &SinkContext<'_>,
    ) -> Result<Self, BuildError> {
        Self::with_env(context.name, config, context.metrics, context.env)
    }
}
