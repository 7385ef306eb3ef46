//! Settings of the OTLP sink (`sinks.<name>.otlp`): another OTLP/gRPC endpoint. Only the
//! settings; the exporter's `sinks::otlp` implements them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Compression;
use crate::validate::{BackendAt, ValidateBackend, Validator};

/// Another OTLP/gRPC endpoint. Requests are forwarded as received, without decoding
/// and re-encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpSinkConfig {
    /// URL of the OTLP/gRPC endpoint, e.g. `http://otel-collector:4317`.
    pub endpoint: String,
    /// Extra gRPC metadata sent with every request, e.g. an authorization header.
    /// Values of the form `${env:NAME}` are read from the environment at start, so
    /// tokens can come from a Secret through `envFrom`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request compression. Default: `gzip`.
    #[serde(default = "OtlpSinkConfig::default_compression")]
    pub compression: Compression,
}

impl OtlpSinkConfig {
    fn default_compression() -> Compression {
        Compression::Gzip
    }
}

impl ValidateBackend for OtlpSinkConfig {
    fn validate(&self, v: &mut Validator, at: &BackendAt<'_>) {
        let path = at.path.as_str();
        let o = self;
        if o.endpoint.starts_with("https://") {
            // The exporter's gRPC client is built without TLS (lean build); refusing here
            // turns a crash-looping pod into a precise ConfigValid=False.
            v.error(
                format!("{path}.endpoint"),
                format!(
                    "{:?}: TLS to OTLP endpoints is not supported yet; use http:// (e.g. a Collector or mesh sidecar that terminates TLS)",
                    o.endpoint
                ),
            );
        } else if !o.endpoint.starts_with("http://") {
            v.error(
                format!("{path}.endpoint"),
                format!("{:?} must be a URL starting with http://", o.endpoint),
            );
        }
        for key in o.headers.keys() {
            let ok = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
            v.check(
                ok,
                format!("{path}.headers.{key}"),
                "gRPC metadata keys must be lowercase ASCII letters, digits, '-', '_' or '.'",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::problems_of as errors;

    #[test]
    fn otlp_endpoints_must_be_plain_http() {
        let errs = errors("sinks:\n  a: {otlp: {endpoint: 'https://collector:4317'}}\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("sinks.a.otlp.endpoint: \"https://collector:4317\": TLS to OTLP endpoints is not supported yet"), "{errs:?}");
        let errs = errors("sinks:\n  a: {otlp: {endpoint: 'collector:4317'}}\n");
        assert_eq!(
            errs,
            vec!["sinks.a.otlp.endpoint: \"collector:4317\" must be a URL starting with http://"]
        );
    }
}
