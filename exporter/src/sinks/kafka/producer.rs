//! The Kafka client side of the sink: librdkafka producer settings from the config, the
//! produce-all-then-await-all loop, and which librdkafka errors are worth a retry.
//! Not the encoding of spans (see `encoding`).

use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, ClientContext};
use spansink_config::KafkaSinkConfig;

use super::encoding::KafkaMessage;
use crate::sinks::SinkError;

/// Room in librdkafka's `message.max.bytes` above `max_message_bytes`, for the key,
/// headers and record framing, so a value we accepted is never refused locally.
const FRAMING_ALLOWANCE: u64 = 64 * 1024;

/// How long to wait before trying again when librdkafka's local queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

use crate::sinks::EnvLookup;

/// The librdkafka producer properties for `config`. Credentials are read through `env`;
/// a missing variable is an error naming it.
pub fn client_config(config: &KafkaSinkConfig, env: EnvLookup<'_>) -> Result<ClientConfig, String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", config.brokers.join(","))
        .set("compression.type", config.compression.as_librdkafka())
        .set("acks", config.acks.as_librdkafka())
        .set("enable.idempotence", config.idempotence.to_string())
        .set(
            "message.timeout.ms",
            config.message_timeout.get().as_millis().max(1).to_string(),
        )
        // 0 turns librdkafka's statistics (and so the spansink_kafka_* metrics) off.
        .set(
            "statistics.interval.ms",
            config.statistics_interval.get().as_millis().to_string(),
        )
        .set(
            "message.max.bytes",
            (config.max_message_bytes.bytes() + FRAMING_ALLOWANCE).to_string(),
        )
        // Java clients' partitioner: the same key lands on the same partition whichever
        // client produced it. Overridable through `librdkafka`.
        .set("partitioner", "murmur2_random");
    let security = match (&config.sasl, &config.tls) {
        (None, None) => "plaintext",
        (None, Some(_)) => "ssl",
        (Some(_), None) => "sasl_plaintext",
        (Some(_), Some(_)) => "sasl_ssl",
    };
    c.set("security.protocol", security);
    if let Some(sasl) = &config.sasl {
        let read = |name: &str, what: &str| {
            env(name).ok_or_else(|| {
                format!(
                    "environment variable {name} (kafka.sasl.{what}) is not set; set it, e.g. from a Secret with envFrom"
                )
            })
        };
        c.set("sasl.mechanism", sasl.mechanism.as_librdkafka())
            .set("sasl.username", read(&sasl.username_env, "username_env")?)
            .set("sasl.password", read(&sasl.password_env, "password_env")?);
    }
    if let Some(tls) = &config.tls {
        if let Some(ca) = &tls.ca_file {
            c.set("ssl.ca.location", ca);
        }
        if let Some(cert) = &tls.cert_file {
            c.set("ssl.certificate.location", cert);
        }
        if let Some(key) = &tls.key_file {
            c.set("ssl.key.location", key);
        }
        if let Some(name) = &tls.key_password_env {
            let password = env(name).ok_or_else(|| {
                format!("environment variable {name} (kafka.tls.key_password_env) is not set")
            })?;
            c.set("ssl.key.password", password);
        }
    }
    for (key, value) in &config.librdkafka {
        c.set(key, value);
    }
    Ok(c)
}

/// What producing a batch's messages came to.
pub struct ProduceOutcome {
    pub delivered: usize,
    /// Each failed message's error, already classified.
    pub failures: Vec<SinkError>,
}

/// Hands every message to librdkafka first (they travel in parallel, batched per
/// partition), then waits for every delivery report.
pub async fn produce_all<C: ClientContext + 'static>(
    producer: &FutureProducer<C>,
    topic: &str,
    messages: &[KafkaMessage],
    give_up_after: Duration,
) -> ProduceOutcome {
    let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(messages.len());
    let mut failures = Vec::new();
    for message in messages {
        match enqueue(producer, topic, message, give_up_after).await {
            Ok(delivery) => pending.push(delivery),
            Err(e) => {
                // Messages already handed over will be delivered anyway; wait for them
                // below so the outcome is complete, but enqueue no more.
                failures.push(classify(&e));
                break;
            }
        }
    }
    let mut delivered = 0;
    for report in join_all(pending).await {
        match report {
            Ok(Ok(_)) => delivered += 1,
            Ok(Err((e, _message))) => failures.push(classify(&e)),
            Err(_canceled) => failures.push(SinkError::transient(
                "producer_closed",
                "the Kafka producer was closed before the message was acknowledged",
            )),
        }
    }
    ProduceOutcome {
        delivered,
        failures,
    }
}

async fn enqueue<C: ClientContext + 'static>(
    producer: &FutureProducer<C>,
    topic: &str,
    message: &KafkaMessage,
    give_up_after: Duration,
) -> Result<DeliveryFuture, KafkaError> {
    let deadline = tokio::time::Instant::now() + give_up_after;
    loop {
        let mut record = FutureRecord::<str, [u8]>::to(topic).payload(message.value.as_ref());
        if let Some(key) = &message.key {
            record = record.key(key.as_str());
        }
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            // The local queue drains as deliveries complete: wait, do not fail the batch.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(QUEUE_FULL_PAUSE).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Transient or permanent, decided from librdkafka's error code. Codes not listed as
/// permanent count as transient: a wrong "transient" costs bounded retries, a wrong
/// "permanent" sends good data to the fallback.
pub fn classify(error: &KafkaError) -> SinkError {
    let code = match error {
        KafkaError::MessageProduction(code)
        | KafkaError::Flush(code)
        | KafkaError::Global(code) => *code,
        other => return SinkError::transient("kafka", format!("Kafka producer: {other}")),
    };
    use RDKafkaErrorCode as C;
    let permanent = match code {
        C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed => Some("unauthorized"),
        C::SaslAuthenticationFailed | C::Authentication | C::UnsupportedSASLMechanism => {
            Some("authentication")
        }
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge => {
            Some("message_too_large")
        }
        C::InvalidMessage | C::InvalidRecord => Some("invalid_message"),
        C::UnknownTopic | C::UnknownTopicOrPartition | C::UnknownPartition | C::InvalidTopic => {
            Some("unknown_topic")
        }
        C::InvalidRequiredAcks
        | C::UnsupportedForMessageFormat
        | C::UnsupportedCompressionType
        | C::UnsupportedVersion
        | C::PolicyViolation
        | C::InvalidArgument
        | C::InvalidConfig => Some("rejected"),
        _ => None,
    };
    match permanent {
        Some(reason) => SinkError::permanent(reason, format!("Kafka refused the message: {code}")),
        None => SinkError::transient(transient_reason(code), format!("Kafka: {code}")),
    }
}

fn transient_reason(code: RDKafkaErrorCode) -> &'static str {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut | C::TimedOutQueue => {
            "timeout"
        }
        C::AllBrokersDown | C::BrokerTransportFailure | C::NetworkException | C::Resolve => {
            "unavailable"
        }
        C::QueueFull | C::ThrottlingQuotaExceeded => "throttled",
        C::NotLeaderForPartition
        | C::LeaderNotAvailable
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend => "leader",
        C::Fatal => "fatal",
        _ => "kafka",
    }
}
