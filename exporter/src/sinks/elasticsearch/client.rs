//! The HTTP side of the sink: one reqwest client, the endpoints with fail-over on
//! connection errors, authentication headers and request compression.
//! Not the meaning of the answers (`bulk`) nor the documents (`encoding`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};

use crate::sinks::SinkError;

use super::bulk::FILTER_PATH;

/// How the client authenticates, with secrets already read from the environment.
#[derive(Clone)]
pub enum Auth {
    None,
    Basic { username: String, password: String },
    ApiKey(String),
}

/// Settings of [`BulkClient::new`].
pub struct ClientSettings<'a> {
    pub endpoints: &'a [String],
    pub auth: Auth,
    pub pipeline: Option<&'a str>,
    pub gzip: bool,
    pub timeout: Duration,
    /// PEM of extra trusted CA certificates.
    pub ca_pem: Option<&'a [u8]>,
}

/// Sends bulk bodies to the first reachable endpoint.
pub struct BulkClient {
    http: reqwest::Client,
    /// `<endpoint>/_bulk?...` per endpoint.
    urls: Vec<String>,
    /// Index into `urls` of the endpoint in use: it stays until it fails to connect.
    current: AtomicUsize,
    authorization: Option<HeaderValue>,
    gzip: bool,
}

/// An answer with a status (any status: the caller classifies it).
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl BulkClient {
    /// Builds the client; nothing is contacted. Fails only for settings that can never
    /// work (an unparsable CA file, a header value that is not valid HTTP).
    pub fn new(settings: ClientSettings<'_>) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)));
        if let Some(pem) = settings.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("ca_file is not a PEM certificate bundle: {e}"))?;
            if certs.is_empty() {
                return Err("ca_file holds no PEM certificate".to_string());
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut query = format!("filter_path={FILTER_PATH}");
        if let Some(pipeline) = settings.pipeline {
            query.push_str("&pipeline=");
            query.push_str(&percent_encode(pipeline));
        }
        let urls = settings
            .endpoints
            .iter()
            .map(|e| format!("{}/_bulk?{query}", e.trim_end_matches('/')))
            .collect();
        let authorization = match settings.auth {
            Auth::None => None,
            Auth::Basic { username, password } => Some(format!(
                "Basic {}",
                BASE64.encode(format!("{username}:{password}"))
            )),
            Auth::ApiKey(key) => Some(format!("ApiKey {}", key.trim())),
        }
        .map(|value| {
            HeaderValue::from_str(&value)
                .map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
                .map_err(|_| {
                    "the credentials contain characters not allowed in an HTTP header (a newline?)"
                        .to_string()
                })
        })
        .transpose()?;
        Ok(Self {
            http,
            urls,
            current: AtomicUsize::new(0),
            authorization,
            gzip: settings.gzip,
        })
    }

    /// Sends one bulk body (already gzip-compressed when the client compresses) to the
    /// endpoint in use; on a connection error or timeout, to the next ones in turn. Fails
    /// transiently when no endpoint answered.
    pub async fn send(&self, body: Bytes) -> Result<Answer, SinkError> {
        let first = self.current.load(Ordering::Relaxed);
        let mut last_error = None;
        for attempt in 0..self.urls.len() {
            let index = (first + attempt) % self.urls.len();
            let url = &self.urls[index];
            let mut request = self
                .http
                .post(url)
                .header(CONTENT_TYPE, "application/x-ndjson")
                .body(body.clone());
            if self.gzip {
                request = request.header(CONTENT_ENCODING, "gzip");
            }
            if let Some(auth) = &self.authorization {
                request = request.header(reqwest::header::AUTHORIZATION, auth.clone());
            }
            let result = async {
                let response = request.send().await?;
                let status = response.status();
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>(Answer { status, body })
            }
            .await;
            match result {
                Ok(answer) => {
                    if index != first {
                        // Others use the endpoint that answered from now on.
                        self.current.store(index, Ordering::Relaxed);
                    }
                    return Ok(answer);
                }
                Err(e) => {
                    let reason = if e.is_timeout() { "timeout" } else { "connect" };
                    tracing::debug!(endpoint = %endpoint(url), error = %error_chain(&e), "bulk request failed; trying the next endpoint");
                    last_error = Some(SinkError::transient(
                        reason,
                        format!("{}: {}", endpoint(url), error_chain(&e)),
                    ));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| SinkError::permanent("config", "no endpoints configured")))
    }

    pub fn gzip(&self) -> bool {
        self.gzip
    }
}

/// The endpoint part of a bulk URL, for messages.
fn endpoint(url: &str) -> &str {
    url.split("/_bulk").next().unwrap_or(url)
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Percent-encodes a query value (pipeline names are usually plain, but may not be).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_names_are_percent_encoded() {
        assert_eq!(percent_encode("spans-v1"), "spans-v1");
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }

    #[test]
    fn bad_credentials_or_ca_are_build_errors() {
        let settings = |auth, ca| ClientSettings {
            endpoints: &[],
            auth,
            pipeline: None,
            gzip: false,
            timeout: Duration::from_secs(1),
            ca_pem: ca,
        };
        assert!(BulkClient::new(settings(Auth::ApiKey("a\nb".into()), None)).is_err());
        assert!(BulkClient::new(settings(Auth::None, Some(b"not a pem"))).is_err());
        assert!(
            BulkClient::new(settings(
                Auth::Basic {
                    username: "u".into(),
                    password: "p".into()
                },
                None
            ))
            .is_ok()
        );
    }

    #[tokio::test]
    async fn unreachable_endpoints_are_transient() {
        let client = BulkClient::new(ClientSettings {
            endpoints: &["http://127.0.0.1:1".into(), "http://127.0.0.1:2/".into()],
            auth: Auth::None,
            pipeline: Some("p"),
            gzip: false,
            timeout: Duration::from_secs(2),
            ca_pem: None,
        })
        .unwrap();
        assert_eq!(
            client.urls[1],
            format!("http://127.0.0.1:2/_bulk?filter_path={FILTER_PATH}&pipeline=p")
        );
        let err = client
            .send(Bytes::from_static(b"{}\n"))
            .await
            .err()
            .unwrap();
        assert!(err.is_transient(), "{err}");
        assert_eq!(err.reason(), "connect");
        assert!(err.to_string().contains("127.0.0.1:2"), "{err}");
    }
}
