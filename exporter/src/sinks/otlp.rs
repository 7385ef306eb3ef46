//! The `otlp` sink: forwards batches to another OTLP/gRPC endpoint (a Collector, Jaeger,
//! Tempo) as the bytes they arrived in, without decoding or re-encoding. Not OTLP/HTTP.
//!
//! The connection is made lazily, so the exporter starts while the backend is down; a
//! call to an unreachable backend fails as transient. gRPC status codes are classified
//! as the OTLP specification says: UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED,
//! ABORTED, CANCELLED, OUT_OF_RANGE and DATA_LOSS are retryable, all others permanent.
//! A partial success (some spans rejected by the backend) is not an error: the batch
//! cannot be resent without duplicating the accepted spans. The rejected spans are
//! logged and counted in `spansink_sink_dropped_spans_total{reason="rejected_by_backend"}`
//! (the chain still counts the whole batch as sent, because the call succeeded).

use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use spansink_config::{Compression, OtlpSinkConfig};
use tonic::client::Grpc;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::otlp::Batch;
use crate::otlp::codec::ClientCodec;
use crate::telemetry::metrics::{Metrics, SinkReasonLabels};

use super::{BuildError, BuildSink, Sink, SinkContext, SinkError};

/// The gRPC method every OTLP trace receiver serves.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Reason label for spans a backend rejected in a partial success.
pub const REJECTED_BY_BACKEND: &str = "rejected_by_backend";

/// How long connecting may take before the call fails (as transient) and the retry
/// policy takes over; shorter than the default export timeout so retries get their turn.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Forwards batches over one multiplexed HTTP/2 channel (cloned per call, as tonic
/// intends; concurrent exports share the connection).
pub struct OtlpSink {
    name: String,
    endpoint: String,
    client: Grpc<Channel>,
    headers: MetadataMap,
    metrics: Metrics,
}

impl OtlpSink {
    /// Prepares the channel (no connection yet) and the request headers, expanding
    /// `${env:NAME}` in header values. Must be called inside a tokio runtime.
    pub fn new(name: &str, config: &OtlpSinkConfig, metrics: &Metrics) -> Result<Self, BuildError> {
        Self::with_env(name, config, metrics, |var| std::env::var(var).ok())
    }

    /// [`OtlpSink::new`] with the environment given as a lookup function (for tests).
    pub fn with_env(
        name: &str,
        config: &OtlpSinkConfig,
        metrics: &Metrics,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, BuildError> {
        let build_error = |message: String| BuildError {
            sink: name.to_string(),
            message,
        };
        if config.endpoint.starts_with("https://") {
            return Err(build_error(format!(
                "otlp.endpoint: {:?} needs TLS, which this exporter build does not include; use an http:// endpoint",
                config.endpoint
            )));
        }
        let endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| {
                build_error(format!(
                    "otlp.endpoint: {:?} is not a valid URL ({e}); write e.g. http://otel-collector:4317",
                    config.endpoint
                ))
            })?
            .connect_timeout(CONNECT_TIMEOUT);
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(build_error(
                "otlp: sinks must be built inside the tokio runtime".to_string(),
            ));
        }
        let mut client = Grpc::new(endpoint.connect_lazy());
        if config.compression == Compression::Gzip {
            client = client
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        let mut headers = MetadataMap::new();
        for (key, value) in &config.headers {
            let field = format!("otlp.headers.{key}");
            let value =
                expand_env(value, &env).map_err(|e| build_error(format!("{field}: {e}")))?;
            let key = AsciiMetadataKey::from_bytes(key.as_bytes()).map_err(|_| {
                build_error(format!(
                    "{field}: not a valid gRPC metadata key (lowercase ASCII; binary `-bin` keys are not supported)"
                ))
            })?;
            let value = AsciiMetadataValue::try_from(value.as_str()).map_err(|_| {
                build_error(format!(
                    "{field}: the value holds characters gRPC metadata cannot carry (non-visible ASCII, e.g. a newline)"
                ))
            })?;
            headers.insert(key, value);
        }
        Ok(Self {
            name: name.to_string(),
            endpoint: config.endpoint.clone(),
            client,
            headers,
            metrics: metrics.clone(),
        })
    }

    fn record_partial_success(&self, response: &ExportTraceServiceResponse, spans: usize) {
        let Some(partial) = &response.partial_success else {
            return;
        };
        if partial.rejected_spans > 0 {
            tracing::warn!(
                sink = %self.name,
                endpoint = %self.endpoint,
                spans,
                rejected_spans = partial.rejected_spans,
                // Not `message`: that name is the event's own text.
                backend_message = %partial.error_message,
                "backend rejected some spans of a batch; they are dropped (not retried)"
            );
            self.metrics
                .sink_dropped_spans
                .get_or_create(&SinkReasonLabels {
                    sink: self.name.clone(),
                    reason: REJECTED_BY_BACKEND,
                })
                .inc_by(partial.rejected_spans.unsigned_abs());
        } else if !partial.error_message.is_empty() {
            tracing::warn!(
                sink = %self.name,
                endpoint = %self.endpoint,
                backend_message = %partial.error_message,
                "backend accepted the batch with a warning"
            );
        }
    }
}

#[async_trait]
impl Sink for OtlpSink {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut client = self.client.clone();
        client.ready().await.map_err(|e| {
            SinkError::transient(
                "connect",
                format!("otlp endpoint {} is not reachable: {e}", self.endpoint),
            )
        })?;
        let mut request = Request::new(batch.encoded());
        *request.metadata_mut() = self.headers.clone();
        let response = client
            .unary(request, PathAndQuery::from_static(EXPORT_PATH), ClientCodec)
            .await
            .map_err(|status| status_error(&self.endpoint, &status))?;
        self.record_partial_success(response.get_ref(), batch.span_count());
        Ok(())
    }
}

/// A gRPC error status as a sink error, transient exactly for the codes OTLP calls
/// retryable.
pub fn status_error(endpoint: &str, status: &Status) -> SinkError {
    let code = status.code();
    let message = format!(
        "otlp endpoint {endpoint} answered {code:?}: {}",
        status.message()
    );
    // A status built from a transport failure (the connection reset, an h2 protocol
    // error when the backend dies mid-call) carries that error as its source: the
    // backend never answered, so whatever its code, the call is worth another try.
    if std::error::Error::source(status).is_some() {
        return SinkError::transient("transport", message);
    }
    let reason = code_label(code);
    match code {
        Code::Unavailable
        | Code::ResourceExhausted
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Cancelled
        | Code::OutOfRange
        | Code::DataLoss => SinkError::transient(reason, message),
        _ => SinkError::permanent(reason, message),
    }
}

/// The metric label of a gRPC code: its name in snake case.
fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Replaces each `${env:NAME}` in `value` with the variable's value.
pub fn expand_env(value: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    const OPEN: &str = "${env:";
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find('}') else {
            return Err(format!(
                "unterminated {OPEN}...}} reference; write ${{env:NAME}}"
            ));
        };
        let name = &after[..end];
        let valid_name =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return Err(format!(
                "{name:?} is not an environment variable name (letters, digits, '_')"
            ));
        }
        match env(name) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(format!(
                    "environment variable {name} is not set; set it (e.g. from a Secret via envFrom) or remove the header"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[async_trait]
impl BuildSink for OtlpSink {
    type Config = OtlpSinkConfig;

    async fn build(config: &OtlpSinkConfig, context: &SinkContext<'_>) -> Result<Self, BuildError> {
        Self::with_env(context.name, config, context.metrics, context.env)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceRequest,
    };
    use tonic::Response;
    use tonic::transport::server::TcpIncoming;

    use super::*;
    use crate::otlp::TraceData;
    use crate::otlp::fixtures;
    use crate::telemetry::metrics::SinkReasonLabels;

    /// What the test backend answers.
    #[derive(Clone, Copy)]
    enum Answer {
        Accept,
        RejectSome(i64),
        Fail(Code),
    }

    /// A request as the backend saw it, with its `authorization` header.
    type Received = (ExportTraceServiceRequest, Option<String>);

    /// A real OTLP/gRPC backend that records what it receives.
    #[derive(Clone)]
    struct Backend {
        answer: Answer,
        received: Arc<Mutex<Vec<Received>>>,
    }

    #[tonic::async_trait]
    impl TraceService for Backend {
        async fn export(
            &self,
            request: Request<ExportTraceServiceRequest>,
        ) -> Result<Response<ExportTraceServiceResponse>, Status> {
            let auth = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            self.received
                .lock()
                .unwrap()
                .push((request.into_inner(), auth));
            match self.answer {
                Answer::Accept => Ok(Response::new(ExportTraceServiceResponse::default())),
                Answer::RejectSome(n) => Ok(Response::new(ExportTraceServiceResponse {
                    partial_success: Some(ExportTracePartialSuccess {
                        rejected_spans: n,
                        error_message: "spans too old".to_string(),
                    }),
                })),
                Answer::Fail(code) => Err(Status::new(code, "backend says no")),
            }
        }
    }

    async fn start_backend(answer: Answer, accept_gzip: bool) -> (SocketAddr, Backend) {
        let backend = Backend {
            answer,
            received: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut service = TraceServiceServer::new(backend.clone());
        if accept_gzip {
            service = service.accept_compressed(CompressionEncoding::Gzip);
        }
        tokio::spawn(
            tonic::transport::Server::builder()
                .serve_with_incoming(service, TcpIncoming::from(listener)),
        );
        (addr, backend)
    }

    fn config(endpoint: String, compression: Compression) -> OtlpSinkConfig {
        OtlpSinkConfig {
            endpoint,
            headers: BTreeMap::new(),
            compression,
        }
    }

    fn sink(config: &OtlpSinkConfig, metrics: &Metrics) -> OtlpSink {
        OtlpSink::with_env("fwd", config, metrics, |name| {
            (name == "TOKEN").then(|| "s3cret".to_string())
        })
        .unwrap()
    }

    fn batch() -> Batch {
        [
            TraceData::from_request(&fixtures::rich_request()),
            TraceData::from_request(&fixtures::request(3, 2)),
        ]
        .into_iter()
        .collect()
    }

    #[tokio::test]
    async fn forwards_the_batch_as_one_identical_request_with_headers() {
        for compression in [Compression::Gzip, Compression::None] {
            let (addr, backend) = start_backend(Answer::Accept, true).await;
            let mut cfg = config(format!("http://{addr}"), compression);
            cfg.headers.insert(
                "authorization".to_string(),
                "Bearer ${env:TOKEN}".to_string(),
            );
            let batch = batch();
            sink(&cfg, &Metrics::for_tests())
                .export(&batch)
                .await
                .unwrap();

            let received = backend.received.lock().unwrap();
            assert_eq!(received.len(), 1);
            assert_eq!(received[0].0, batch.decode().unwrap());
            assert_eq!(received[0].1.as_deref(), Some("Bearer s3cret"));
        }
    }

    #[tokio::test]
    async fn gzip_is_really_sent_when_configured() {
        // A backend that does not accept gzip refuses the compressed request.
        let (addr, _) = start_backend(Answer::Accept, false).await;
        let gzip = sink(
            &config(format!("http://{addr}"), Compression::Gzip),
            &Metrics::for_tests(),
        );
        let err = gzip.export(&batch()).await.unwrap_err();
        assert_eq!(err.reason(), "unimplemented", "{err}");
        let plain = sink(
            &config(format!("http://{addr}"), Compression::None),
            &Metrics::for_tests(),
        );
        plain.export(&batch()).await.unwrap();
    }

    #[tokio::test]
    async fn a_backend_that_is_down_is_a_transient_error_and_building_still_works() {
        // Bind and drop to get a local port with nothing listening.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let sink = sink(
            &config(format!("http://{addr}"), Compression::Gzip),
            &Metrics::for_tests(),
        );
        let err = sink.export(&batch()).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
    }

    #[tokio::test]
    async fn backend_codes_are_split_into_transient_and_permanent() {
        for (code, transient) in [
            (Code::InvalidArgument, false),
            (Code::Unauthenticated, false),
            (Code::Unavailable, true),
            (Code::ResourceExhausted, true),
        ] {
            let (addr, _) = start_backend(Answer::Fail(code), true).await;
            let sink = sink(
                &config(format!("http://{addr}"), Compression::Gzip),
                &Metrics::for_tests(),
            );
            let err = sink.export(&batch()).await.unwrap_err();
            assert_eq!(err.is_transient(), transient, "{code:?}: {err}");
            assert_eq!(err.reason(), code_label(code));
        }
    }

    #[test]
    fn a_transport_failure_is_transient_whatever_its_code() {
        // What tonic makes of an h2 protocol error when the backend dies mid-call.
        let transport = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let mut status = Status::internal("h2 protocol error: http2 error");
        status.set_source(std::sync::Arc::new(transport));
        let err = status_error("e", &status);
        assert!(err.is_transient(), "{err}");
        assert_eq!(err.reason(), "transport");
        // The same code answered by the backend itself stays permanent.
        assert!(!status_error("e", &Status::internal("bad")).is_transient());
    }

    #[test]
    fn every_retryable_otlp_code_is_transient() {
        let transient: Vec<Code> = (0..=16)
            .map(Code::from_i32)
            .filter(|c| status_error("e", &Status::new(*c, "")).is_transient())
            .collect();
        assert_eq!(
            transient,
            [
                Code::Cancelled,
                Code::DeadlineExceeded,
                Code::ResourceExhausted,
                Code::Aborted,
                Code::OutOfRange,
                Code::Unavailable,
                Code::DataLoss
            ]
        );
    }

    #[tokio::test]
    async fn partially_rejected_spans_succeed_and_are_counted_as_dropped() {
        let (addr, _) = start_backend(Answer::RejectSome(2), true).await;
        let metrics = Metrics::for_tests();
        let sink = sink(
            &config(format!("http://{addr}"), Compression::Gzip),
            &metrics,
        );
        sink.export(&batch()).await.unwrap();
        sink.export(&batch()).await.unwrap();
        let dropped = metrics
            .sink_dropped_spans
            .get_or_create(&SinkReasonLabels {
                sink: "fwd".to_string(),
                reason: REJECTED_BY_BACKEND,
            })
            .get();
        assert_eq!(dropped, 4);
    }

    #[tokio::test]
    async fn header_problems_are_build_errors_naming_the_field() {
        let metrics = Metrics::for_tests();
        let mut cfg = config("http://127.0.0.1:4317".to_string(), Compression::Gzip);
        cfg.headers
            .insert("x-api-key".to_string(), "${env:MISSING}".to_string());
        let err = OtlpSink::with_env("fwd", &cfg, &metrics, |_| None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with(
                "sinks.fwd: otlp.headers.x-api-key: environment variable MISSING is not set"
            ),
            "{err}"
        );

        cfg.headers
            .insert("x-api-key".to_string(), "line\nbreak".to_string());
        let err = OtlpSink::with_env("fwd", &cfg, &metrics, |_| None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("otlp.headers.x-api-key"), "{err}");

        let tls = config("https://collector:4317".to_string(), Compression::Gzip);
        let err = OtlpSink::with_env("fwd", &tls, &metrics, |_| None)
            .err()
            .unwrap();
        assert!(err.message.contains("TLS"), "{err}");
    }

    #[test]
    fn env_references_expand_anywhere_in_a_value() {
        let env = |name: &str| match name {
            "A" => Some("1".to_string()),
            "B_2" => Some("two".to_string()),
            _ => None,
        };
        assert_eq!(expand_env("plain", env).unwrap(), "plain");
        assert_eq!(expand_env("${env:A}", env).unwrap(), "1");
        assert_eq!(
            expand_env("x ${env:A}-${env:B_2} y", env).unwrap(),
            "x 1-two y"
        );
        assert_eq!(
            expand_env("$notref {env:A}", env).unwrap(),
            "$notref {env:A}"
        );
        assert!(
            expand_env("${env:C}", env)
                .unwrap_err()
                .contains("C is not set")
        );
        assert!(
            expand_env("${env:A", env)
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(expand_env("${env:}", env).is_err());
        assert!(expand_env("${env:A B}", env).is_err());
    }
}
