//! CORS for the OTLP/HTTP receiver (`receivers.http.cors`): answers browser preflights and
//! marks responses to allowed origins readable. Not authentication (non-browser clients
//! ignore CORS), and not the export handling itself (`http`).
//!
//! Written here rather than with tower-http's `CorsLayer`: that answers every preflight
//! 200 and sends the allowed methods and headers to any origin, where OTLP receivers (the
//! Collector's too) answer 204 and send a disallowed origin no allow headers at all.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use spansink_config::CorsConfig;

/// Request headers always allowed: what OTLP/HTTP and browser SDKs send.
const DEFAULT_ALLOWED_HEADERS: [&str; 6] = [
    "content-type",
    "content-encoding",
    "accept",
    "accept-encoding",
    "authorization",
    "x-requested-with",
];

/// `receivers.http.cors`, ready to match origins.
pub(super) struct Cors {
    origins: Vec<OriginPattern>,
    /// Listed in preflight answers, unless `any_header`.
    allowed_headers: HeaderValue,
    any_header: bool,
    max_age: Option<HeaderValue>,
}

/// One entry of `allowed_origins`, lowercased.
#[derive(Debug)]
enum OriginPattern {
    Any,
    Exact(String),
    /// `https://*.example.com`: before and after the `*`.
    Wildcard {
        prefix: String,
        suffix: String,
    },
}

impl OriginPattern {
    fn parse(pattern: &str) -> Self {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.split_once('*') {
            _ if pattern == "*" => Self::Any,
            Some((prefix, suffix)) => Self::Wildcard {
                prefix: prefix.to_string(),
                suffix: suffix.to_string(),
            },
            None => Self::Exact(pattern),
        }
    }

    /// `origin` is lowercased.
    fn matches(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => origin == exact,
            Self::Wildcard { prefix, suffix } => {
                origin.len() > prefix.len() + suffix.len()
                    && origin.starts_with(prefix.as_str())
                    && origin.ends_with(suffix.as_str())
            }
        }
    }
}

impl Cors {
    pub(super) fn new(config: &CorsConfig) -> Self {
        let extra = config
            .allowed_headers
            .iter()
            .filter(|h| h.as_str() != "*")
            .map(|h| h.to_ascii_lowercase());
        let mut names: Vec<String> = DEFAULT_ALLOWED_HEADERS.map(String::from).to_vec();
        for name in extra {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Self {
            origins: config
                .allowed_origins
                .iter()
                .map(|o| OriginPattern::parse(o))
                .collect(),
            // `validate` allows only header-name characters, so the list is a valid value;
            // the defaults alone are the fallback.
            allowed_headers: HeaderValue::from_str(&names.join(", ")).unwrap_or_else(|_| {
                HeaderValue::from_static(
                    "content-type, content-encoding, accept, accept-encoding, authorization, x-requested-with",
                )
            }),
            any_header: config.allowed_headers.iter().any(|h| h == "*"),
            max_age: config
                .max_age
                .map(|age| HeaderValue::from(age.get().as_secs())),
        }
    }

    /// The request's `Origin` if it is allowed.
    fn allowed_origin<'a>(&self, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let lowercase = origin.to_str().ok()?.to_ascii_lowercase();
        self.origins
            .iter()
            .any(|pattern| pattern.matches(&lowercase))
            .then_some(origin)
    }

    /// The answer to a preflight: 204, with the allow headers only for an allowed origin.
    fn preflight(&self, headers: &HeaderMap) -> Response {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let out = response.headers_mut();
        out.insert(
            header::VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers",
            ),
        );
        let Some(origin) = self.allowed_origin(headers) else {
            tracing::debug!(
                origin = %String::from_utf8_lossy(headers.get(header::ORIGIN).map_or(&[][..], |o| o.as_bytes())),
                "CORS preflight from an origin not in receivers.http.cors.allowed_origins"
            );
            return response;
        };
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        let requested = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        let allowed = match requested {
            Some(requested) if self.any_header => requested.clone(),
            _ => self.allowed_headers.clone(),
        };
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed);
        if let Some(max_age) = &self.max_age {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        response
    }
}

/// The middleware: preflights answered here, other requests passed on and their answer
/// marked for an allowed origin.
pub(super) async fn apply(State(cors): State<Arc<Cors>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let is_preflight = request.method() == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if is_preflight {
        return cors.preflight(headers);
    }
    let origin = cors.allowed_origin(headers).cloned();
    let mut response = next.run(request).await;
    let out = response.headers_mut();
    out.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = origin {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::test_receivers::TestReceivers;
    use crate::receiver::{Authenticator, ReceiverAccess};
    use crate::telemetry::Metrics;
    use prost::Message;
    use spansink_config::ReceiverAuthConfig;

    fn cors_config() -> CorsConfig {
        CorsConfig {
            allowed_origins: vec![
                "https://app.example.com".into(),
                "https://*.example.org".into(),
            ],
            allowed_headers: vec!["X-Tenant".into()],
            max_age: Some(spansink_config::Duration::from_secs(600)),
        }
    }

    async fn receivers(auth: Option<Authenticator>) -> TestReceivers {
        TestReceivers::start(ReceiverAccess {
            auth: auth.map(Arc::new),
            cors: Some(cors_config()),
        })
        .await
    }

    async fn preflight(receivers: &TestReceivers, origin: &str) -> reqwest::Response {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, receivers.http_url())
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-tenant")
            .send()
            .await
            .unwrap()
    }

    fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
        response.headers().get(name).map(|v| v.to_str().unwrap())
    }

    async fn post(
        receivers: &TestReceivers,
        origin: &str,
        authorization: Option<&str>,
    ) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(receivers.http_url())
            .header("origin", origin)
            .header("content-type", "application/x-protobuf")
            .body(crate::otlp::fixtures::request(1, 1).encode_to_vec());
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send().await.unwrap()
    }

    #[tokio::test]
    async fn preflight_from_an_allowed_origin_gets_204_with_the_allow_headers() {
        let receivers = receivers(None).await;
        for origin in ["https://app.example.com", "https://eu.web.example.org"] {
            let response = preflight(&receivers, origin).await;
            assert_eq!(response.status(), 204, "{origin}");
            assert_eq!(
                header(&response, "access-control-allow-origin"),
                Some(origin)
            );
            assert_eq!(
                header(&response, "access-control-allow-methods"),
                Some("POST")
            );
            let allowed = header(&response, "access-control-allow-headers").unwrap();
            assert!(
                allowed.contains("content-type") && allowed.ends_with("x-tenant"),
                "{allowed}"
            );
            assert_eq!(header(&response, "access-control-max-age"), Some("600"));
        }
        assert_eq!(receivers.taken(), 0);
    }

    #[tokio::test]
    async fn a_disallowed_origin_gets_no_allow_headers() {
        let receivers = receivers(None).await;
        for origin in [
            "https://evil.com",
            "https://example.org",
            "http://app.example.com",
        ] {
            let response = preflight(&receivers, origin).await;
            assert_eq!(response.status(), 204, "{origin}");
            let allow: Vec<_> = response
                .headers()
                .keys()
                .filter(|name| name.as_str().starts_with("access-control-"))
                .collect();
            assert!(allow.is_empty(), "{origin}: {allow:?}");
        }
        let response = post(&receivers, "https://evil.com", None).await;
        assert_eq!(response.status(), 200, "CORS is enforced by the browser");
        assert_eq!(header(&response, "access-control-allow-origin"), None);

        let response = post(&receivers, "https://app.example.com", None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(receivers.taken(), 2);
    }

    #[tokio::test]
    async fn with_auth_preflights_need_no_credentials_and_a_401_is_readable() {
        let auth = Authenticator::with_env(
            &ReceiverAuthConfig {
                bearer_tokens_env: vec!["TOKEN".into()],
                bearer_token_files: vec![],
                basic: None,
            },
            &Metrics::for_tests(),
            &|_| Some("t0ken".into()),
        )
        .unwrap();
        let receivers = receivers(Some(auth)).await;
        let response = preflight(&receivers, "https://app.example.com").await;
        assert_eq!(response.status(), 204);
        let response = post(&receivers, "https://app.example.com", None).await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some("https://app.example.com")
        );
        let response = post(&receivers, "https://app.example.com", Some("Bearer t0ken")).await;
        assert_eq!(response.status(), 200);
    }

    #[test]
    fn origins_match_exactly_by_wildcard_subdomain_or_any() {
        let exact = OriginPattern::parse("https://App.example.com");
        assert!(exact.matches("https://app.example.com"));
        assert!(!exact.matches("https://app.example.com:8443"));
        assert!(!exact.matches("http://app.example.com"));
        let wildcard = OriginPattern::parse("https://*.example.com");
        assert!(wildcard.matches("https://a.example.com"));
        assert!(wildcard.matches("https://a.b.example.com"));
        assert!(!wildcard.matches("https://example.com"));
        assert!(!wildcard.matches("https://.example.com"));
        assert!(!wildcard.matches("https://evil-example.com"));
        assert!(!wildcard.matches("https://a.example.com.evil.org"));
        assert!(OriginPattern::parse("*").matches("null"));
    }
}
