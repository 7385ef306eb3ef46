//! Settings of the Elasticsearch / OpenSearch sink (`sinks.<name>.elasticsearch`):
//! endpoints, target index or data stream, auth, bulk sizing. Only the settings; the
//! exporter's `sinks::elasticsearch` implements them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Duration};
use crate::TimeTemplate;
use crate::validate::{BackendAt, ValidateBackend, Validator};

/// An Elasticsearch or OpenSearch cluster written through the `_bulk` API. Each span is
/// one document (the flat span JSON of the file sink plus `@timestamp`) whose `_id` is
/// the hex trace id followed by the hex span id, so a retried batch overwrites instead of
/// duplicating. Credentials come from environment variables (a Secret through
/// `envFrom`), never from this config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSinkConfig {
    /// Base URLs of the cluster's HTTP endpoints, e.g. `https://es-0.es:9200`. Requests
    /// go to the first; on a connection error or timeout the next one is tried (and
    /// stays in use until it fails in turn).
    pub endpoints: Vec<String>,
    /// Index the documents are written to (`index` operations). May contain a UTC date
    /// taken from each span's start time: `%Y` (year), `%m` (month), `%d` (day), `%H`
    /// (hour), `%M`, `%S`, `%j` (day of year), `%F` (`%Y-%m-%d`), `%%`. The span's own
    /// time (not the export time) keeps a retried batch in the same index. Unset, and no
    /// `data_stream`: `spansink-%Y.%m.%d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// Data stream the documents are appended to (`create` operations; the cluster needs
    /// an index template with `data_stream` enabled for this name). A retried document
    /// answers "version conflict", which counts as written. Excludes `index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_stream: Option<String>,
    /// User name for HTTP basic authentication; the password is read from `password_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Name of the environment variable holding the basic-auth password (required with
    /// `username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Name of the environment variable holding an API key, sent as
    /// `Authorization: ApiKey <value>` (the base64 `encoded` form Elasticsearch returns).
    /// Excludes `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Ingest pipeline every document goes through (`?pipeline=`). Unset: the index's
    /// default pipeline, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Request body compression. Default: `gzip`.
    #[serde(default)]
    pub compression: ElasticsearchCompression,
    /// Largest bulk request body (before compression); a larger batch is split into
    /// several bulk requests. A single document larger than this is sent alone.
    /// Default: `5MiB` (Elastic's advice for bulk requests is 5-15MB).
    // Not nullable in the CRD: kube marks int-or-string fields nullable, but `null` here
    // would not deserialize, and one such object would break the operator's watch.
    #[schemars(extend("nullable" = false))]
    #[serde(default = "ElasticsearchSinkConfig::default_max_bulk_bytes")]
    pub max_bulk_bytes: ByteSize,
    /// Longest a single bulk request may take. Default: `10s`.
    #[serde(default = "ElasticsearchSinkConfig::default_request_timeout")]
    pub request_timeout: Duration,
    /// Times the documents the cluster answered with 429 or 5xx are re-sent (alone)
    /// within one export before the export fails transiently. Default: `3`.
    #[serde(default = "ElasticsearchSinkConfig::default_item_retries")]
    pub item_retries: u32,
    /// Wait before the first re-send of failed documents; doubled each round.
    /// Default: `200ms`.
    #[serde(default = "ElasticsearchSinkConfig::default_item_retry_backoff")]
    pub item_retry_backoff: Duration,
    /// PEM file of CA certificates trusted in addition to the system roots (for a
    /// cluster with a private CA). Unset: system roots only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

impl ElasticsearchSinkConfig {
    /// The index used when neither `index` nor `data_stream` is set.
    pub const DEFAULT_INDEX: &'static str = "spansink-%Y.%m.%d";

    fn default_max_bulk_bytes() -> ByteSize {
        ByteSize::mib(5)
    }
    fn default_request_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn default_item_retries() -> u32 {
        3
    }
    fn default_item_retry_backoff() -> Duration {
        Duration::from_millis(200)
    }

    /// A config writing to `endpoint` with every other setting at its default.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoints: vec![endpoint.into()],
            index: None,
            data_stream: None,
            username: None,
            password_env: None,
            api_key_env: None,
            pipeline: None,
            compression: ElasticsearchCompression::default(),
            max_bulk_bytes: Self::default_max_bulk_bytes(),
            request_timeout: Self::default_request_timeout(),
            item_retries: Self::default_item_retries(),
            item_retry_backoff: Self::default_item_retry_backoff(),
            ca_file: None,
        }
    }
}

/// Compression of bulk request bodies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ElasticsearchCompression {
    /// Plain NDJSON.
    None,
    /// `Content-Encoding: gzip` (the cluster must allow compressed requests; Elasticsearch
    /// and OpenSearch do by default).
    #[default]
    Gzip,
}

impl ValidateBackend for ElasticsearchSinkConfig {
    fn validate(&self, v: &mut Validator, at: &BackendAt<'_>) {
        let path = at.path.as_str();
        let es = self;
        v.check(
            !es.endpoints.is_empty(),
            format!("{path}.endpoints"),
            "must list at least one URL, e.g. https://elasticsearch:9200",
        );
        for (i, endpoint) in es.endpoints.iter().enumerate() {
            v.check(
                endpoint.starts_with("http://") || endpoint.starts_with("https://"),
                format!("{path}.endpoints[{i}]"),
                format!("{endpoint:?} must be a URL starting with http:// or https://"),
            );
        }
        if es.index.is_some() && es.data_stream.is_some() {
            v.error(
                format!("{path}.data_stream"),
                "set either index or data_stream, not both",
            );
        }
        if let Some(index) = &es.index {
            index_name(v, &format!("{path}.index"), index, true);
        }
        if let Some(stream) = &es.data_stream {
            index_name(v, &format!("{path}.data_stream"), stream, false);
        }
        match (&es.username, &es.password_env, &es.api_key_env) {
            (Some(_), None, _) => v.error(
                format!("{path}.password_env"),
                "must name the environment variable holding the password of username",
            ),
            (None, Some(_), _) => v.error(
                format!("{path}.username"),
                "must be set when password_env is (basic authentication)",
            ),
            (Some(_), _, Some(_)) => v.error(
                format!("{path}.api_key_env"),
                "set either username/password_env or api_key_env, not both",
            ),
            _ => {}
        }
        for (field, value) in [
            ("username", &es.username),
            ("password_env", &es.password_env),
            ("api_key_env", &es.api_key_env),
            ("pipeline", &es.pipeline),
            ("ca_file", &es.ca_file),
        ] {
            if let Some(value) = value {
                v.check(
                    !value.trim().is_empty(),
                    format!("{path}.{field}"),
                    "must not be empty when set",
                );
            }
        }
        v.min_size(
            format!("{path}.max_bulk_bytes"),
            es.max_bulk_bytes,
            ByteSize::kib(1),
        );
        v.positive(
            &format!("{path}.request_timeout"),
            es.request_timeout.get().is_zero(),
        );
    }
}

/// Elasticsearch's index naming rules (lowercase, none of `\ / * ? " < > | , #` or
/// spaces, not starting with `-`, `_` or `+`), applied to the literal text of a
/// dated template when `dated`.
fn index_name(v: &mut Validator, path: &str, name: &str, dated: bool) {
    let literal = if !dated {
        if name.contains('%') {
            v.error(
                path,
                format!("{name:?}: a data stream name cannot contain '%' (no dates)"),
            );
            return;
        }
        name.to_string()
    } else {
        match TimeTemplate::parse(name) {
            Ok(template) => template.sample(),
            Err(e) => {
                v.error(path, e.to_string());
                return;
            }
        }
    };
    let forbidden =
        |c: char| c.is_uppercase() || c.is_whitespace() || "\\/*?\"<>|,#:".contains(c);
    let ok = !literal.is_empty()
        && literal != "."
        && literal != ".."
        && !literal.starts_with(['-', '_', '+'])
        && !literal.contains(forbidden);
    v.check(
        ok,
        path,
        format!(
            "{name:?} is not an index name (lowercase, no spaces or \\ / * ? \" < > | , # :, not starting with - _ +)"
        ),
    );
}

#[cfg(test)]
mod tests {
    use crate::validate::problems_of as errors;

    #[test]
    fn elasticsearch_settings_are_checked_with_their_paths() {
        assert_eq!(
            errors(
                "sinks:\n  search:\n    elasticsearch: {endpoints: ['https://es:9200'], index: 'spans-%Y.%m.%d', api_key_env: ES_API_KEY}\n  defaults:\n    elasticsearch: {endpoints: ['http://es:9200'], data_stream: traces-generic-default, username: spansink, password_env: ES_PASSWORD}\n"
            ),
            Vec::<String>::new()
        );
        let errs = errors(
            "sinks:\n  search:\n    elasticsearch:\n      endpoints: ['es:9200']\n      index: 'Spans-%Y.%q'\n      data_stream: 'logs-%Y'\n      username: spansink\n      api_key_env: ES_API_KEY\n      max_bulk_bytes: 100\n      request_timeout: 0s\n  empty:\n    elasticsearch: {endpoints: [], index: '_spans', password_env: P}\n",
        );
        assert_eq!(
            errs,
            [
                "sinks.empty.elasticsearch.endpoints: must list at least one URL, e.g. https://elasticsearch:9200",
                "sinks.empty.elasticsearch.index: \"_spans\" is not an index name (lowercase, no spaces or \\ / * ? \" < > | , # :, not starting with - _ +)",
                "sinks.empty.elasticsearch.username: must be set when password_env is (basic authentication)",
                "sinks.search.elasticsearch.endpoints[0]: \"es:9200\" must be a URL starting with http:// or https://",
                "sinks.search.elasticsearch.data_stream: set either index or data_stream, not both",
                "sinks.search.elasticsearch.index: \"Spans-%Y.%q\": unsupported %q; use %Y, %m, %d, %H, %M, %S, %j, %F or %% (a literal %)",
                "sinks.search.elasticsearch.data_stream: \"logs-%Y\": a data stream name cannot contain '%' (no dates)",
                "sinks.search.elasticsearch.password_env: must name the environment variable holding the password of username",
                "sinks.search.elasticsearch.max_bulk_bytes: must be at least 1KiB (got 100)",
                "sinks.search.elasticsearch.request_timeout: must be greater than zero",
            ]
        );
        let upper = errors(
            "sinks:\n  a:\n    elasticsearch: {endpoints: ['http://es:9200'], index: 'Spans-%Y'}\n",
        );
        assert_eq!(upper.len(), 1, "{upper:?}");
        assert!(
            upper[0].starts_with("sinks.a.elasticsearch.index: \"Spans-%Y\" is not an index name")
        );
    }
}
