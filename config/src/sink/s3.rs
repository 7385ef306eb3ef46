//! Settings of the S3 sink (`sinks.<name>.s3`): bucket, object keys, encoding, endpoint.
//! Only the settings; the exporter's `sinks::s3` implements them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::ByteSize;
use crate::TimeTemplate;
use crate::validate::{BackendAt, ValidateBackend, Validator};

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

impl ValidateBackend for S3SinkConfig {
    fn validate(&self, v: &mut Validator, at: &BackendAt<'_>) {
        let path = at.path.as_str();
        let s = self;
        // S3's bucket naming rules (the part that a config can get wrong).
        let b = &s.bucket;
        let bucket_ok = (3..=63).contains(&b.len())
            && b.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
            && b.starts_with(|c: char| c.is_ascii_alphanumeric())
            && b.ends_with(|c: char| c.is_ascii_alphanumeric());
        v.check(
            bucket_ok,
            format!("{path}.bucket"),
            format!(
                "{b:?} is not a bucket name (3-63 lowercase letters, digits, '.', '-', starting and ending with a letter or digit)"
            ),
        );
        if s.prefix.starts_with('/') {
            v.error(
                format!("{path}.prefix"),
                "must not start with '/' (S3 keys have no leading slash)",
            );
        }
        key_template(v, &format!("{path}.key_template"), &s.key_template);
        if let Some(endpoint) = &s.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            v.error(
                format!("{path}.endpoint"),
                format!("{endpoint:?} must be a URL starting with http:// or https://"),
            );
        }
        if let Some(region) = &s.region {
            v.check(
                !region.trim().is_empty(),
                format!("{path}.region"),
                "must not be empty when set (e.g. eu-west-1)",
            );
        }
        v.min_size(
            format!("{path}.multipart_threshold"),
            s.multipart_threshold,
            ByteSize::kib(1),
        );
        v.min_size(
            format!("{path}.multipart_part_size"),
            s.multipart_part_size,
            S3SinkConfig::MIN_PART_SIZE,
        );
        v.check(
            s.multipart_part_size <= S3SinkConfig::MAX_PART_SIZE,
            format!("{path}.multipart_part_size"),
            format!("must be at most 5GiB (got {})", s.multipart_part_size),
        );
    }
}

fn key_template(v: &mut Validator, path: &str, template: &str) {
    if template.starts_with('/') {
        v.error(
            path,
            "must not start with '/' (S3 keys have no leading slash)",
        );
    }
    if let Err(e) = TimeTemplate::parse(template) {
        v.error(path, e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::problems_of as errors;

    #[test]
    fn s3_settings_are_checked_with_their_paths() {
        let errs = errors(
            "sinks:\n  archive:\n    s3:\n      bucket: My_Bucket\n      prefix: /spans/\n      key_template: 'traces/%Y/%q/'\n      endpoint: minio:9000\n      multipart_threshold: 100\n      multipart_part_size: 1MiB\n",
        );
        let expected = [
            "sinks.archive.s3.bucket: \"My_Bucket\" is not a bucket name",
            "sinks.archive.s3.prefix: must not start with '/'",
            "sinks.archive.s3.key_template: \"traces/%Y/%q/\": unsupported %q",
            "sinks.archive.s3.endpoint: \"minio:9000\" must be a URL",
            "sinks.archive.s3.multipart_threshold: must be at least 1KiB",
            "sinks.archive.s3.multipart_part_size: must be at least 5MiB",
        ];
        for prefix in expected {
            assert!(
                errs.iter().any(|e| e.starts_with(prefix)),
                "{prefix}\n{errs:#?}"
            );
        }
        assert_eq!(errs.len(), expected.len(), "{errs:#?}");
        let trailing = errors("sinks:\n  a:\n    s3: {bucket: spans, key_template: 'x/%'}\n");
        assert_eq!(
            trailing,
            vec![
                "sinks.a.s3.key_template: \"x/%\": unsupported end of text; use %Y, %m, %d, %H, %M, %S, %j, %F or %% (a literal %)"
            ]
        );
    }
}
