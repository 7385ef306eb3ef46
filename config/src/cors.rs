//! Cross-origin resource sharing for the OTLP/HTTP receiver, so that browser SDKs on other
//! origins may send spans. Only which origins and headers are allowed, not how preflight
//! requests are answered (the exporter's receiver).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Duration;

/// CORS for browser clients of the OTLP/HTTP receiver. Preflight `OPTIONS` requests from an
/// allowed origin are answered `204` with `Access-Control-Allow-*`; other origins get no
/// allow headers (the browser then blocks the request). CORS is not authentication: any
/// non-browser client ignores it. Unset: no CORS headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to send spans, exactly as browsers send them (scheme, host and a
    /// non-default port, no path), e.g. `https://app.example.com`; `https://*.example.com`
    /// allows every subdomain (not `example.com` itself); `"*"` allows any origin.
    pub allowed_origins: Vec<String>,
    /// Request headers browsers may send besides the ones always allowed (`Content-Type`,
    /// `Content-Encoding`, `Accept`, `Accept-Encoding`, `Authorization`, `X-Requested-With`),
    /// e.g. `[X-Tenant]`; `"*"` allows any. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    /// How long browsers may cache a preflight answer (`Access-Control-Max-Age`), e.g.
    /// `10m`. Unset: the browser's default (5 s in Chrome and Firefox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
}
