//! Settings of the Kafka sink (`sinks.<name>.kafka`): brokers, topic, encoding, producer
//! guarantees, security. Only the settings; the exporter's `sinks::kafka` implements them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::units::{ByteSize, Duration};
use crate::validate::{BackendAt, ValidateBackend, Validator};

/// A Kafka topic. Each batch is written as one message per trace (several when a trace
/// exceeds `max_message_bytes`), keyed by the trace id, so a trace stays in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers as `host:port`, e.g. `["kafka-0.kafka:9092", "kafka-1.kafka:9092"]`.
    /// At least one; the rest of the cluster is discovered from them.
    pub brokers: Vec<String>,
    /// Topic the spans are written to. It must exist unless the cluster creates topics
    /// automatically.
    pub topic: String,
    /// Message format. Default: `otlp_proto`.
    #[serde(default)]
    pub encoding: KafkaEncoding,
    /// Compression of produced message batches (done by the producer, undone by the
    /// consumer's client library). Default: `lz4`.
    #[serde(default = "KafkaSinkConfig::default_compression")]
    pub compression: KafkaCompression,
    /// Acknowledgements a write waits for: `all` (every in-sync replica), `1` (the
    /// partition leader), `0` (none: fire and forget, a failed write goes unnoticed).
    /// Default: `all`.
    // Not nullable in the CRD: kube marks int-or-string fields nullable, but `null` here
    // would not deserialize, and one such object would break the operator's watch.
    #[schemars(extend("nullable" = false))]
    #[serde(default)]
    pub acks: KafkaAcks,
    /// Idempotent producer: a message retried by the producer is written once and in
    /// order. Requires `acks: all`. Default: `true`.
    #[serde(default = "crate::default_true")]
    pub idempotence: bool,
    /// Largest message value written, in bytes (before compression). A batch whose
    /// encoding would be larger is split into several messages; a single span larger
    /// than this is never sent: it is dropped (counted in
    /// `spansink_sink_dropped_spans_total` with reason `message_too_large`) when the rest
    /// of its batch is delivered, and a batch of only such spans fails permanently (so
    /// a fallback gets it). Keep it at or below the topic's `max.message.bytes`.
    /// Default: `1MB` (1,000,000 bytes).
    // Not nullable in the CRD: kube marks int-or-string fields nullable, but `null` here
    // would not deserialize, and one such object would break the operator's watch.
    #[schemars(extend("nullable" = false))]
    #[serde(default = "KafkaSinkConfig::default_max_message_bytes")]
    pub max_message_bytes: ByteSize,
    /// How long the producer keeps trying to deliver a message (across reconnects and
    /// its own retries) before the export fails with a transient error. Must be shorter
    /// than the sink's `timeout`, so the producer gives up before the export call is
    /// abandoned. Default: `20s`.
    #[serde(default = "KafkaSinkConfig::default_message_timeout")]
    pub message_timeout: Duration,
    /// How often librdkafka reports its statistics, which become the
    /// `spansink_kafka_*` metrics (producer queue, retries, transport errors, request
    /// timeouts, brokers up). `0s` turns them off; otherwise at least `100ms` (each
    /// report is a JSON document of every broker and partition) and at most `1d`.
    /// Default: `5s`.
    #[serde(default = "KafkaSinkConfig::default_statistics_interval")]
    pub statistics_interval: Duration,
    /// SASL authentication. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSaslConfig>,
    /// TLS to the brokers. Unset: plaintext. `tls: {}` enables TLS with the system's CA
    /// certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTlsConfig>,
    /// Extra librdkafka producer properties passed as they are, e.g.
    /// `{"linger.ms": "20", "client.id": "spansink"}` (see librdkafka's CONFIGURATION.md).
    /// Properties that have a setting above (brokers, compression, acks, idempotence,
    /// timeouts, SASL, TLS) are refused here; credentials are never accepted here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub librdkafka: BTreeMap<String, String>,
}

impl KafkaSinkConfig {
    fn default_compression() -> KafkaCompression {
        KafkaCompression::Lz4
    }
    fn default_max_message_bytes() -> ByteSize {
        ByteSize(1_000_000)
    }
    fn default_message_timeout() -> Duration {
        Duration::from_secs(20)
    }
    fn default_statistics_interval() -> Duration {
        Duration::from_secs(5)
    }

    /// The shortest non-zero `statistics_interval` accepted.
    pub const MIN_STATISTICS_INTERVAL: Duration = Duration::from_millis(100);
    /// librdkafka's ceiling for `statistics.interval.ms` (one day).
    pub const MAX_STATISTICS_INTERVAL: Duration = Duration::from_secs(86_400);

    /// A config for `brokers` and `topic` with every other setting at its default.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers: vec![brokers.into()],
            topic: topic.into(),
            encoding: KafkaEncoding::default(),
            compression: Self::default_compression(),
            acks: KafkaAcks::default(),
            idempotence: true,
            max_message_bytes: Self::default_max_message_bytes(),
            message_timeout: Self::default_message_timeout(),
            statistics_interval: Self::default_statistics_interval(),
            sasl: None,
            tls: None,
            librdkafka: BTreeMap::new(),
        }
    }

    /// librdkafka properties that have a typed setting (or carry credentials), with the
    /// setting to use instead. Keys not listed here may be passed through `librdkafka`.
    pub const RESERVED_LIBRDKAFKA_KEYS: &'static [(&'static str, &'static str)] = &[
        ("bootstrap.servers", "brokers"),
        ("metadata.broker.list", "brokers"),
        ("compression.type", "compression"),
        ("compression.codec", "compression"),
        ("acks", "acks"),
        ("request.required.acks", "acks"),
        ("enable.idempotence", "idempotence"),
        ("message.timeout.ms", "message_timeout"),
        ("delivery.timeout.ms", "message_timeout"),
        ("statistics.interval.ms", "statistics_interval"),
        ("security.protocol", "sasl and tls"),
        ("sasl.mechanism", "sasl.mechanism"),
        ("sasl.mechanisms", "sasl.mechanism"),
        ("sasl.username", "sasl.username_env"),
        ("sasl.password", "sasl.password_env"),
        ("ssl.ca.location", "tls.ca_file"),
        ("ssl.certificate.location", "tls.cert_file"),
        ("ssl.key.location", "tls.key_file"),
        ("ssl.key.password", "tls.key_password_env"),
        ("ssl.key.pem", "tls.key_file"),
        ("ssl.certificate.pem", "tls.cert_file"),
        ("ssl.ca.pem", "tls.ca_file"),
        (
            "sasl.oauthbearer.client.secret",
            "a Secret (not supported here)",
        ),
    ];
}

/// Kafka message format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KafkaEncoding {
    /// One OTLP `ExportTraceServiceRequest` per message, protobuf-encoded (what the
    /// OpenTelemetry Collector's Kafka receiver reads with `encoding: otlp_proto`).
    #[default]
    OtlpProto,
    /// The same requests in the OTLP JSON mapping (hex ids, camelCase field names).
    OtlpJson,
    /// One span per message as a flat JSON record: the same typed span record as one
    /// line of the file sink's JSON Lines (resource and scope inlined), keyed by trace id.
    Json,
}

/// Producer-side compression codec. `zstd` needs brokers of Kafka 2.1 or later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KafkaCompression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl KafkaCompression {
    /// The librdkafka `compression.type` value.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// Acknowledgements a produced message waits for. Written `all`, `1` or `0` (the
/// numbers may be given unquoted; `-1` means `all`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KafkaAcks {
    /// Every in-sync replica has the message.
    #[default]
    All,
    /// The partition leader has it.
    Leader,
    /// No acknowledgement.
    None,
}

impl KafkaAcks {
    /// The librdkafka `acks` value.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Leader => "1",
            Self::None => "0",
        }
    }
}

impl fmt::Display for KafkaAcks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_librdkafka())
    }
}

impl Serialize for KafkaAcks {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_librdkafka())
    }
}

impl<'de> Deserialize<'de> for KafkaAcks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // YAML users write `acks: 1` as often as `acks: "1"`; accept both.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Int(n) => n.to_string(),
            Raw::Text(s) => s,
        };
        match text.trim() {
            "all" | "-1" => Ok(Self::All),
            "1" => Ok(Self::Leader),
            "0" => Ok(Self::None),
            other => Err(serde::de::Error::custom(format!(
                "invalid acks {other:?}; write all, 1 or 0"
            ))),
        }
    }
}

impl JsonSchema for KafkaAcks {
    fn schema_name() -> Cow<'static, str> {
        "KafkaAcks".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // Kubernetes' int-or-string idiom keeps the CRD schema structural.
        json_schema!({
            "description": "Acknowledgements: all, 1 or 0 (-1 means all).",
            "x-kubernetes-int-or-string": true,
            "anyOf": [
                // Bounds and a pattern rather than `enum`: the CRD generator hoists these
                // out of the anyOf branches, which must stay type-only to be structural.
                {"type": "integer", "minimum": -1, "maximum": 1},
                {"type": "string", "pattern": "^(all|-1|0|1)$"}
            ]
        })
    }
}

/// SASL authentication. Credentials are read from environment variables (fill them from
/// a Kubernetes Secret with `envFrom`), never written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`. Default: `SCRAM-SHA-512`.
    #[serde(default)]
    pub mechanism: SaslMechanism,
    /// Name of the environment variable holding the user name, e.g. `KAFKA_USERNAME`.
    pub username_env: String,
    /// Name of the environment variable holding the password, e.g. `KAFKA_PASSWORD`.
    pub password_env: String,
}

/// SASL mechanism. `PLAIN` sends the password in clear text: use it only with `tls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[default]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The librdkafka `sasl.mechanism` value.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// TLS to the brokers. Files are PEM, typically mounted from a Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaTlsConfig {
    /// CA certificate(s) that signed the brokers' certificates. Unset: the system's CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Client certificate, for mutual TLS. Set together with `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// Client private key, for mutual TLS. Set together with `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Name of the environment variable holding the password of an encrypted
    /// `key_file`. Unset: the key is not encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_password_env: Option<String>,
}

impl ValidateBackend for KafkaSinkConfig {
    fn validate(&self, v: &mut Validator, at: &BackendAt<'_>) {
        let path = at.path.as_str();
        let k = self;
        let sink_timeout = at.sink_timeout;
        let sink_path = at.sink_path;
        if k.brokers.is_empty() {
            v.error(
                format!("{path}.brokers"),
                "at least one broker is required, e.g. [\"kafka:9092\"]",
            );
        }
        for (i, broker) in k.brokers.iter().enumerate() {
            let ok = broker
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            v.check(
                ok,
                format!("{path}.brokers[{i}]"),
                format!("{broker:?} must be host:port, e.g. \"kafka-0.kafka:9092\""),
            );
        }
        // Kafka's own rule for topic names.
        let topic_ok = !k.topic.is_empty()
            && k.topic.len() <= 249
            && k.topic != "."
            && k.topic != ".."
            && k.topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        v.check(
            topic_ok,
            format!("{path}.topic"),
            format!(
                "{:?} is not a Kafka topic name (1-249 of letters, digits, '.', '_', '-')",
                k.topic
            ),
        );
        v.min_size(
            format!("{path}.max_message_bytes"),
            k.max_message_bytes,
            ByteSize::kib(1),
        );
        // librdkafka's ceiling for message.max.bytes, less room for key and headers.
        v.check(
            k.max_message_bytes <= ByteSize(900_000_000),
            format!("{path}.max_message_bytes"),
            format!("must be at most 900MB (got {})", k.max_message_bytes),
        );
        v.positive(
            &format!("{path}.message_timeout"),
            k.message_timeout.get().is_zero(),
        );
        v.check(
            k.message_timeout < sink_timeout,
            format!("{path}.message_timeout"),
            format!(
                "must be shorter than {sink_path}.timeout ({sink_timeout}), so the producer gives up on a message before the export call is abandoned (got {})",
                k.message_timeout
            ),
        );
        let interval = k.statistics_interval;
        if !interval.get().is_zero() {
            let min = KafkaSinkConfig::MIN_STATISTICS_INTERVAL;
            let max = KafkaSinkConfig::MAX_STATISTICS_INTERVAL;
            v.check(
                interval >= min,
                format!("{path}.statistics_interval"),
                format!("must be 0s (off) or at least {min} (got {interval})"),
            );
            v.check(
                interval <= max,
                format!("{path}.statistics_interval"),
                format!("must be at most {max} (librdkafka's limit; got {interval})"),
            );
        }
        if k.idempotence && k.acks != crate::sink::KafkaAcks::All {
            v.error(
                format!("{path}.acks"),
                format!(
                    "idempotence requires acks: all (got {}); set acks: all or idempotence: false",
                    k.acks
                ),
            );
        }
        if let Some(sasl) = &k.sasl {
            v.env_name(format!("{path}.sasl.username_env"), &sasl.username_env);
            v.env_name(format!("{path}.sasl.password_env"), &sasl.password_env);
        }
        if let Some(tls) = &k.tls {
            for (field, value) in [
                ("ca_file", &tls.ca_file),
                ("cert_file", &tls.cert_file),
                ("key_file", &tls.key_file),
            ] {
                if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                    v.error(format!("{path}.tls.{field}"), "must not be empty when set");
                }
            }
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                v.error(
                    format!("{path}.tls"),
                    "cert_file and key_file go together (mutual TLS): set both or neither",
                );
            }
            if let Some(env) = &tls.key_password_env {
                v.env_name(format!("{path}.tls.key_password_env"), env);
            }
        }
        for key in k.librdkafka.keys() {
            if let Some((_, instead)) = KafkaSinkConfig::RESERVED_LIBRDKAFKA_KEYS
                .iter()
                .find(|(reserved, _)| reserved == key)
            {
                v.error(
                    format!("{path}.librdkafka.{key}"),
                    format!("is set by the sink; use {path}.{instead} instead"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::problems_of as errors;
    use crate::ExporterConfig;

    #[test]
    fn kafka_settings_are_checked_with_their_paths() {
        let errs = errors(
            "sinks:\n  events:\n    timeout: 10s\n    kafka:\n      brokers: ['kafka', ':9092']\n      topic: 'bad topic'\n      acks: 1\n      max_message_bytes: 512\n      message_timeout: 10s\n      sasl: {mechanism: PLAIN, username_env: KAFKA_USER, password_env: 'my password'}\n      tls: {cert_file: /tls/tls.crt}\n      librdkafka: {linger.ms: '5', sasl.password: secret, compression.type: gzip}\n",
        );
        let expected = [
            "sinks.events.kafka.brokers[0]: \"kafka\" must be host:port",
            "sinks.events.kafka.brokers[1]: \":9092\" must be host:port",
            "sinks.events.kafka.topic: \"bad topic\" is not a Kafka topic name",
            "sinks.events.kafka.max_message_bytes: must be at least 1KiB (got 512)",
            "sinks.events.kafka.message_timeout: must be shorter than sinks.events.timeout (10s)",
            "sinks.events.kafka.acks: idempotence requires acks: all (got 1)",
            "sinks.events.kafka.sasl.password_env: \"my password\" is not an environment variable name",
            "sinks.events.kafka.tls: cert_file and key_file go together",
            "sinks.events.kafka.librdkafka.compression.type: is set by the sink; use sinks.events.kafka.compression instead",
            "sinks.events.kafka.librdkafka.sasl.password: is set by the sink; use sinks.events.kafka.sasl.password_env instead",
        ];
        for prefix in expected {
            assert!(
                errs.iter().any(|e| e.starts_with(prefix)),
                "{prefix}\n{errs:#?}"
            );
        }
        assert_eq!(errs.len(), expected.len(), "{errs:#?}");
    }

    #[test]
    fn kafka_acks_accepts_numbers_and_words() {
        use crate::sink::KafkaAcks;
        for (yaml, acks) in [
            ("all", KafkaAcks::All),
            ("-1", KafkaAcks::All),
            ("1", KafkaAcks::Leader),
            ("'1'", KafkaAcks::Leader),
            ("0", KafkaAcks::None),
        ] {
            let config: ExporterConfig = serde_yaml::from_str(&format!(
                "sinks:\n  a:\n    kafka: {{brokers: ['k:9092'], topic: t, acks: {yaml}, idempotence: false}}\n"
            ))
            .unwrap();
            assert_eq!(
                config.sinks["a"].kafka.as_ref().unwrap().acks,
                acks,
                "{yaml}"
            );
        }
        let bad: Result<ExporterConfig, _> = serde_yaml::from_str(
            "sinks:\n  a:\n    kafka: {brokers: ['k:9092'], topic: t, acks: 2}\n",
        );
        assert!(bad.unwrap_err().to_string().contains("write all, 1 or 0"));
    }

    fn statistics_errors(statistics_interval: &str) -> Vec<String> {
        let yaml = format!(
            "sinks:\n  events:\n    kafka: {{brokers: ['kafka:9092'], topic: spans, statistics_interval: {statistics_interval}}}\n"
        );
        errors(&yaml)
    }

    #[test]
    fn statistics_interval_is_off_or_between_100ms_and_a_day() {
        for ok in ["0s", "100ms", "5s", "1d"] {
            assert_eq!(statistics_errors(ok), Vec::<String>::new(), "{ok}");
        }
        assert_eq!(
            statistics_errors("10ms"),
            [
                "sinks.events.kafka.statistics_interval: must be 0s (off) or at least 100ms (got 10ms)"
            ]
        );
        assert_eq!(
            statistics_errors("2d"),
            [
                "sinks.events.kafka.statistics_interval: must be at most 1day (librdkafka's limit; got 2days)"
            ]
        );
    }

    #[test]
    fn statistics_interval_defaults_to_5s_and_is_not_a_librdkafka_passthrough() {
        let config = super::KafkaSinkConfig::new("kafka:9092", "spans");
        assert_eq!(config.statistics_interval.to_string(), "5s");
        let yaml = "sinks:\n  events:\n    kafka: {brokers: ['kafka:9092'], topic: spans, librdkafka: {statistics.interval.ms: '10'}}\n";
        let config: ExporterConfig = serde_yaml::from_str(yaml).expect("test YAML parses");
        let errors = crate::validate::validate(&config).unwrap_err().to_string();
        assert_eq!(
            errors,
            "sinks.events.kafka.librdkafka.statistics.interval.ms: is set by the sink; use sinks.events.kafka.statistics_interval instead"
        );
    }
}
