//! Who may send spans to the receivers: bearer tokens and basic-auth credentials, named by
//! the environment variables or files that hold them. Never the secrets themselves (they
//! stay out of ConfigMaps), and not how they are checked (the exporter's receiver).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Client authentication for both OTLP receivers (gRPC and HTTP). A request without valid
/// credentials is refused (HTTP 401 with `WWW-Authenticate`, gRPC `UNAUTHENTICATED`)
/// before its body is read. Clients send `Authorization: Bearer <token>` (or `Basic ...`
/// with `basic`), e.g. `OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token>`.
/// Unset: no authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiverAuthConfig {
    /// Environment variables each holding one accepted bearer token, e.g.
    /// `[SPANSINK_TOKEN]`; fill them from a Secret (`envFrom` / `valueFrom`). Read once at
    /// start; an unset or empty variable stops the start. Any listed token is accepted,
    /// so an old and a new one can be valid together while clients rotate. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bearer_tokens_env: Vec<String>,
    /// Files each holding one accepted bearer token (surrounding whitespace ignored), e.g.
    /// `[/etc/spansink/auth/token]` mounted from a Secret. Re-read when they change (checked
    /// at most once a second), so a rotated Secret is accepted without a restart; a file
    /// that becomes unreadable or empty keeps its last token (logged and counted). A
    /// missing or empty file at start stops the start. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bearer_token_files: Vec<String>,
    /// HTTP basic authentication (`Authorization: Basic base64(username:password)`),
    /// accepted alongside the bearer tokens. Unset: no basic auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuthConfig>,
}

/// One basic-auth user. Set exactly one of `password_env` and `password_file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// User name clients send, e.g. `otel`. Must not contain `:`.
    pub username: String,
    /// Environment variable holding the password, e.g. `SPANSINK_BASIC_PASSWORD`; read
    /// once at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// File holding the password (surrounding whitespace ignored), e.g. mounted from a
    /// Secret at `/etc/spansink/auth/password`; re-read when it changes, like
    /// `bearer_token_files`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
}
