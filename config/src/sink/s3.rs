//! Settings of the S3 sink (`sinks.<name>.s3`): bucket, object keys, encoding, endpoint.
//! Only the settings; the exporter's `sinks::s3` implements them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::ByteSize;

/// An S3 bucket (or any S3-compatible store: MinIO, Google Cloud Storage's XML API, ...).
/// Each batch becomes one object at `<prefix><key_template expanded><UUIDv7>.<ext>`, so
/// no two batches ever share a key. Credentials come from the standard AWS chain
/// (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, web identity / IRSA, profile, instance
/// metadata), never from this config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3SinkConfig {
    /// Bucket name. It must exist; the sink does not create it.
    pub bucket: String,
    /// Text put before every key, e.g. `prod/`. Default: empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Time partition of the key, expanded in UTC when the batch is written. Accepts
    /// `%Y` (year), `%m` (month 01-12), `%d` (day 01-31), `%H` (hour 00-23), `%M`
    /// (minute), `%S` (second), `%j` (day of year), `%F` (`%Y-%m-%d`) and `%%`.
    /// A unique UUIDv7 and the extension follow it. Default:
    /// `traces/year=%Y/month=%m/day=%d/hour=%H/`.
    #[serde(default = "S3SinkConfig::default_key_template")]
    pub key_template: String,
    /// Object format. Default: `otlp_proto`.
    #[serde(default)]
    pub encoding: S3Encoding,
    /// Object compression; also sets `Content-Encoding` and the key's extension
    /// (`.gz`, `.zst`). Default: `gzip`.
    #[serde(default)]
    pub compression: S3Compression,
    /// AWS region, e.g. `eu-west-1`. Unset: from `AWS_REGION` or the AWS profile, else
    /// `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Custom endpoint URL for S3-compatible stores, e.g. `http://minio.storage:9000` or
    /// `https://storage.googleapis.com`. Unset: AWS S3 of the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Address buckets as `<endpoint>/<bucket>` instead of `<bucket>.<endpoint>`
    /// (needed by MinIO and most self-hosted stores). Default: `false`.
    #[serde(default)]
    pub force_path_style: bool,
    /// Objects larger than this (after compression) are uploaded in parts (multipart
    /// upload) instead of one request. Default: `16MiB`.
    // Not nullable in the CRD: kube marks int-or-string fields nullable, but `null` here
    // would not deserialize, and one such object would break the operator's watch.
    #[schemars(extend("nullable" = false))]
    #[serde(default = "S3SinkConfig::default_multipart_threshold")]
    pub multipart_threshold: ByteSize,
    /// Size of each part of a multipart upload (the last part may be smaller). S3 requires
    /// at least `5MiB`. Default: `8MiB`.
    // Not nullable in the CRD: kube marks int-or-string fields nullable, but `null` here
    // would not deserialize, and one such object would break the operator's watch.
    #[schemars(extend("nullable" = false))]
    #[serde(default = "S3SinkConfig::default_multipart_part_size")]
    pub multipart_part_size: ByteSize,
    /// Storage class of written objects. Unset: the bucket's default (`STANDARD` on AWS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<S3StorageClass>,
}

impl S3SinkConfig {
    /// The default `key_template`.
    pub const DEFAULT_KEY_TEMPLATE: &'static str = "traces/year=%Y/month=%m/day=%d/hour=%H/";
    /// Time specifiers `key_template` accepts (after `%`).
    pub const KEY_TEMPLATE_SPECIFIERS: &'static [char] =
        &['Y', 'm', 'd', 'H', 'M', 'S', 'j', 'F', '%'];
    /// S3's smallest part of a multipart upload (all but the last).
    pub const MIN_PART_SIZE: ByteSize = ByteSize::mib(5);
    /// S3's largest part.
    pub const MAX_PART_SIZE: ByteSize = ByteSize(5 * ByteSize::GIB);

    fn default_key_template() -> String {
        Self::DEFAULT_KEY_TEMPLATE.to_string()
    }
    fn default_multipart_threshold() -> ByteSize {
        ByteSize::mib(16)
    }
    fn default_multipart_part_size() -> ByteSize {
        ByteSize::mib(8)
    }

    /// A config for `bucket` with every other setting at its default.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: String::new(),
            key_template: Self::default_key_template(),
            encoding: S3Encoding::default(),
            compression: S3Compression::default(),
            region: None,
            endpoint: None,
            force_path_style: false,
            multipart_threshold: Self::default_multipart_threshold(),
            multipart_part_size: Self::default_multipart_part_size(),
            storage_class: None,
        }
    }
}

/// S3 object format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum S3Encoding {
    /// The batch as one OTLP `ExportTraceServiceRequest`, protobuf-encoded (`.binpb`).
    #[default]
    OtlpProto,
    /// The batch as one OTLP `ExportTraceServiceRequest` in the OTLP JSON mapping
    /// (`.json`).
    OtlpJson,
    /// JSON Lines, one flat span per line (`.jsonl`): the same typed span records as the
    /// file sink, ready for Athena, BigQuery or `jq` without an OTLP decoder.
    Jsonl,
}

/// S3 object compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum S3Compression {
    None,
    #[default]
    Gzip,
    Zstd,
}

/// S3 storage classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum S3StorageClass {
    Standard,
    StandardIa,
    OnezoneIa,
    IntelligentTiering,
    ReducedRedundancy,
    GlacierIr,
    Glacier,
    DeepArchive,
}

impl S3StorageClass {
    /// The `x-amz-storage-class` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "STANDARD",
            Self::StandardIa => "STANDARD_IA",
            Self::OnezoneIa => "ONEZONE_IA",
            Self::IntelligentTiering => "INTELLIGENT_TIERING",
            Self::ReducedRedundancy => "REDUCED_REDUNDANCY",
            Self::GlacierIr => "GLACIER_IR",
            Self::Glacier => "GLACIER",
            Self::DeepArchive => "DEEP_ARCHIVE",
        }
    }
}
