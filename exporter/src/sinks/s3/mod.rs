//! The S3 sink: each batch becomes one compressed object under a unique, time-partitioned
//! key (multipart above a threshold). Works with any S3-compatible store through
//! `endpoint` + `force_path_style`. Not batching or retries (the chain's).

pub mod client;
pub mod encoding;
pub mod object_key;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use chrono::Utc;
use spansink_config::S3SinkConfig;

use crate::otlp::Batch;
use crate::sinks::{BuildError, BuildSink, Sink, SinkContext, SinkError};
use crate::telemetry::metrics::Metrics;

use encoding::ObjectFormat;
use object_key::ObjectKeys;

/// Region used when neither the config nor the AWS environment names one (S3-compatible
/// stores mostly ignore it, but requests must be signed for some region).
const FALLBACK_REGION: &str = "us-east-1";

/// Writes batches as objects to one bucket.
pub struct S3Sink {
    name: String,
    client: aws_sdk_s3::Client,
    bucket: String,
    keys: ObjectKeys,
    format: ObjectFormat,
    storage_class: Option<&'static str>,
    multipart_threshold: usize,
    part_size: usize,
}

impl S3Sink {
    /// Builds the client with credentials and region from the standard AWS chain
    /// (environment, web identity token / IRSA, profile, container and instance metadata).
    /// Async because the chain is loaded once here; credentials are resolved lazily, so
    /// an unreachable store or missing credentials fail exports (transiently), not the build.
    /// `_metrics`: the chain around the sink counts its outcomes; the S3 sink records
    /// nothing of its own (it is in the signature so every sink is built alike).
    pub async fn new(
        name: &str,
        config: &S3SinkConfig,
        _metrics: &Metrics,
    ) -> Result<Self, BuildError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        Self::from_sdk_config(name, config, &sdk)
    }

    /// Builds the sink on an already loaded AWS config (tests give static credentials).
    pub fn from_sdk_config(
        name: &str,
        config: &S3SinkConfig,
        sdk: &SdkConfig,
    ) -> Result<Self, BuildError> {
        let format = ObjectFormat {
            encoding: config.encoding,
            compression: config.compression,
        };
        let keys = ObjectKeys::new(&config.prefix, &config.key_template, format.extension())
            .map_err(|message| BuildError {
                sink: name.to_string(),
                message,
            })?;
        let mut builder = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(config.force_path_style)
            // Checksums only where S3 requires them: the newer default (CRC on every
            // request) is refused by many S3-compatible stores (GCS, older MinIO).
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // The chain's retry policy decides about whole exports; multipart parts get
            // their own few tries (see `client`).
            .retry_config(RetryConfig::disabled());
        if let Some(region) = &config.region {
            builder = builder.region(Region::new(region.clone()));
        } else if sdk.region().is_none() {
            builder = builder.region(Region::new(FALLBACK_REGION));
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(Self {
            name: name.to_string(),
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            keys,
            format,
            storage_class: config.storage_class.map(|c| c.as_str()),
            multipart_threshold: config.multipart_threshold.as_usize(),
            part_size: config.multipart_part_size.as_usize(),
        })
    }
}

#[async_trait]
impl Sink for S3Sink {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        if batch.span_count() == 0 {
            return Ok(()); // no empty objects
        }
        let format = self.format;
        let owned = batch.clone(); // cheap: the parts are reference-counted bytes
        // Encoding and compression are CPU work; keep them off the async threads.
        let body = tokio::task::spawn_blocking(move || format.encode(&owned))
            .await
            .map_err(|e| SinkError::transient("encoding", format!("encoder task failed: {e}")))?
            .map_err(|e| SinkError::permanent("encoding", e.to_string()))?;
        let key = self.keys.next(Utc::now());
        let size = body.len();
        client::upload(
            &self.client,
            client::Upload {
                bucket: &self.bucket,
                key: &key,
                body,
                content_type: format.content_type(),
                content_encoding: format.content_encoding(),
                storage_class: self.storage_class,
                multipart_threshold: self.multipart_threshold,
                part_size: self.part_size,
            },
        )
        .await
        .inspect_err(|e| {
            tracing::warn!(sink = %self.name, bucket = %self.bucket, key = %key, error = %e, "S3 upload failed");
        })?;
        tracing::debug!(sink = %self.name, bucket = %self.bucket, key = %key, spans = batch.span_count(), bytes = size, "batch written");
        Ok(())
    }
}

#[async_trait]
impl BuildSink for S3Sink {
    type Config = S3SinkConfig;

    async fn build(config: &S3SinkConfig, context: &SinkContext<'_>) -> Result<Self, BuildError> {
        Self::new(context.name, config, context.metrics).await
    }
}
