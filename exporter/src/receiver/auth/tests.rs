use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use spansink_config::{BasicAuthConfig, ReceiverAuthConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::codegen::{Service, http};

use super::*;
use crate::otlp::fixtures;
use crate::receiver::ReceiverAccess;
use crate::receiver::test_receivers::TestReceivers;
use crate::telemetry::metrics::Protocol;

const OLD: &str = "old-token-4f1c";
const NEW: &str = "new-token-9a2e";

fn env(name: &str) -> Option<String> {
    match name {
        "OLD_TOKEN" => Some(OLD.into()),
        "NEW_TOKEN" => Some(format!("{NEW}\n")),
        "BASIC_PASSWORD" => Some("s3cret".into()),
        "EMPTY" => Some("  ".into()),
        _ => None,
    }
}

fn config(tokens_env: &[&str]) -> ReceiverAuthConfig {
    ReceiverAuthConfig {
        bearer_tokens_env: tokens_env.iter().map(|s| s.to_string()).collect(),
        bearer_token_files: vec![],
        basic: None,
    }
}

fn authenticator(config: &ReceiverAuthConfig) -> Authenticator {
    Authenticator::with_env(config, &Metrics::for_tests(), &env).unwrap()
}

fn with_authorization(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value.parse().unwrap());
    headers
}

#[test]
fn any_listed_token_is_accepted_and_anything_else_refused() {
    let auth = authenticator(&config(&["OLD_TOKEN", "NEW_TOKEN"]));
    assert_eq!(
        auth.check(&with_authorization(&format!("Bearer {OLD}"))),
        Ok(())
    );
    assert_eq!(
        auth.check(&with_authorization(&format!("bearer  {NEW}"))),
        Ok(())
    );
    let refused = |value: &str| auth.check(&with_authorization(value)).unwrap_err();
    assert_eq!(refused(&format!("Bearer {OLD}x")), Unauthenticated::Invalid);
    assert_eq!(
        refused(&format!("Bearer {}", &OLD[1..])),
        Unauthenticated::Invalid
    );
    assert_eq!(refused("Bearer"), Unauthenticated::Invalid);
    assert_eq!(refused(&format!("Token {OLD}")), Unauthenticated::Scheme);
    assert_eq!(refused("Basic b3RlbDpzM2NyZXQ="), Unauthenticated::Scheme);
    assert_eq!(auth.check(&HeaderMap::new()), Err(Unauthenticated::Missing));
    assert_eq!(
        auth.challenges(),
        vec![HeaderValue::from_static("Bearer realm=\"spansink\"")]
    );
}

#[test]
fn basic_auth_checks_user_and_password() {
    let auth = authenticator(&ReceiverAuthConfig {
        basic: Some(BasicAuthConfig {
            username: "otel".into(),
            password_env: Some("BASIC_PASSWORD".into()),
            password_file: None,
        }),
        ..config(&[])
    });
    let basic = |user_password: &str| format!("Basic {}", BASE64.encode(user_password));
    assert_eq!(
        auth.check(&with_authorization(&basic("otel:s3cret"))),
        Ok(())
    );
    for wrong in [
        "otel:s3cre",
        "other:s3cret",
        "otel:",
        "otels3cret",
        ":s3cret",
    ] {
        assert_eq!(
            auth.check(&with_authorization(&basic(wrong))),
            Err(Unauthenticated::Invalid),
            "{wrong}"
        );
    }
    assert_eq!(
        auth.check(&with_authorization("Basic !!not base64")),
        Err(Unauthenticated::Invalid)
    );
    assert_eq!(
        auth.check(&with_authorization("Bearer s3cret")),
        Err(Unauthenticated::Scheme),
        "no bearer tokens configured"
    );
}

#[test]
fn an_unset_or_empty_credential_stops_the_start_naming_it() {
    let error = |config: &ReceiverAuthConfig| {
        Authenticator::with_env(config, &Metrics::for_tests(), &env)
            .err()
            .expect("refused")
            .to_string()
    };
    assert_eq!(
        error(&config(&["SPANSINK_TOKEN"])),
        "receivers.auth.bearer_tokens_env[0]: SPANSINK_TOKEN is not set; fill it from a \
         Secret (envFrom or valueFrom) or remove it"
    );
    assert!(
        error(&config(&["OLD_TOKEN", "EMPTY"]))
            .starts_with("receivers.auth.bearer_tokens_env[1]: EMPTY is empty"),
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("token");
    let message = error(&ReceiverAuthConfig {
        bearer_token_files: vec![missing.display().to_string()],
        ..config(&[])
    });
    assert!(
        message.starts_with(&format!(
            "receivers.auth.bearer_token_files[0]: {}: cannot read it:",
            missing.display()
        )),
        "{message}"
    );
    std::fs::write(&missing, "\n").unwrap();
    let message = error(&ReceiverAuthConfig {
        basic: Some(BasicAuthConfig {
            username: "otel".into(),
            password_env: None,
            password_file: Some(missing.display().to_string()),
        }),
        ..config(&[])
    });
    assert!(
        message.starts_with("receivers.auth.basic.password_file: ")
            && message.contains("it is empty"),
        "{message}"
    );
}

// --- over real sockets ----------------------------------------------------------------

async fn receivers_with(auth: Authenticator) -> TestReceivers {
    TestReceivers::start(ReceiverAccess {
        auth: Some(Arc::new(auth)),
        cors: None,
    })
    .await
}

async fn post(url: &str, authorization: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(fixtures::request(2, 1).encode_to_vec());
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn http_without_a_valid_token_gets_401_with_a_challenge() {
    let receivers = receivers_with(authenticator(&config(&["OLD_TOKEN"]))).await;
    let url = receivers.http_url();

    let response = post(&url, None).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"spansink\""
    );
    let wrong = "Bearer wrong-but-secret-looking";
    let response = post(&url, Some(wrong)).await;
    assert_eq!(response.status(), 401);
    let body = response.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("credentials in the Authorization header are not valid"),
        "{text}"
    );
    assert!(!text.contains("wrong-but-secret-looking"), "{text}");

    let response = post(&url, Some(&format!("Bearer {OLD}"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(receivers.taken(), 1);
    assert_eq!(receivers.requests(Protocol::http, "unauthenticated"), 2);
}

#[tokio::test]
async fn http_401_comes_before_the_body_is_read() {
    let receivers = receivers_with(authenticator(&config(&["OLD_TOKEN"]))).await;
    let mut socket = tokio::net::TcpStream::connect(receivers.http)
        .await
        .unwrap();
    // Declares 1 MB (within the 4 MiB limit) and sends none of it: a receiver that read
    // the body first would wait for it forever.
    let head = "POST /v1/traces HTTP/1.1\r\nhost: spansink\r\n\
                content-type: application/x-protobuf\r\ncontent-length: 1000000\r\n\r\n";
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{answer}"
    );
    assert_eq!(receivers.taken(), 0);
}

#[tokio::test]
async fn grpc_without_a_valid_token_is_unauthenticated() {
    let receivers = receivers_with(authenticator(&config(&["OLD_TOKEN", "NEW_TOKEN"]))).await;
    let mut client = receivers.grpc_client().await;
    let status = client.export(fixtures::request(2, 1)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("no Authorization header"),
        "{status:?}"
    );

    let mut request = tonic::Request::new(fixtures::request(2, 1));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {NEW}").parse().unwrap());
    client.export(request).await.unwrap();
    assert_eq!(receivers.taken(), 1);
    assert_eq!(receivers.requests(Protocol::grpc, "unauthenticated"), 1);
}

#[tokio::test]
async fn grpc_unauthenticated_comes_before_the_message_is_read() {
    let receivers = receivers_with(authenticator(&config(&["OLD_TOKEN"]))).await;
    let mut channel = receivers.channel().await;
    // A message header declaring 1 MB, then nothing, ever.
    let header = Bytes::from_static(&[0, 0, 0x0f, 0x42, 0x40]);
    let body = futures::stream::once(async move {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(header))
    })
    .chain(futures::stream::pending());
    let request = http::Request::builder()
        .method("POST")
        .uri("http://spansink/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", "Bearer nope")
        .body(tonic::body::Body::new(http_body_util::StreamBody::new(
            body,
        )))
        .unwrap();
    futures::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), channel.call(request))
        .await
        .expect("answered without waiting for the message")
        .unwrap();
    let status = tonic::Status::from_header_map(response.headers()).expect("trailers-only");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(receivers.taken(), 0);
}

#[tokio::test]
async fn a_rotated_token_file_is_accepted_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, OLD).unwrap();
    let auth = Authenticator::with_env(
        &ReceiverAuthConfig {
            bearer_token_files: vec![path.display().to_string()],
            ..config(&[])
        },
        &Metrics::for_tests(),
        &env,
    )
    .unwrap();
    let receivers = receivers_with(auth).await;
    let url = receivers.http_url();
    assert_eq!(
        post(&url, Some(&format!("Bearer {OLD}"))).await.status(),
        200
    );

    // As a Secret volume updates: the new content appears by a rename.
    let next = dir.path().join("token.next");
    std::fs::write(&next, format!("{NEW}\n")).unwrap();
    std::fs::rename(&next, &path).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        post(&url, Some(&format!("Bearer {NEW}"))).await.status(),
        200
    );
    assert_eq!(
        post(&url, Some(&format!("Bearer {OLD}"))).await.status(),
        401
    );
    assert_eq!(receivers.taken(), 2);
}
