//! What a receiver answers: each way an export request can end (taken, partly taken, refused,
//! malformed, too large, ...) mapped once to its gRPC status, HTTP response and metric reason.
//! Not the protocol handling itself (`grpc`, `http`) nor the size limits (`limits`).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::Code;

use super::auth::Unauthenticated;
use crate::chain::{Admission, Refusal};

/// Why a request was not taken. Nothing of it reached the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejection {
    /// Not a valid OTLP request (protobuf or JSON); the message says where.
    #[error("{0}")]
    Malformed(String),
    /// Larger on the wire than `max_request_size`.
    #[error(
        "request body exceeds the {limit}-byte limit (receivers.max_request_size); \
         send smaller batches"
    )]
    TooLarge { limit: usize },
    /// Inflates beyond `max_decompressed_size` (e.g. a gzip bomb); refused once the limit
    /// was reached, not expanded in full.
    #[error(
        "request body inflates beyond the {limit}-byte limit \
         (receivers.max_decompressed_size); send smaller batches"
    )]
    InflatesTooLarge { limit: usize },
    /// The compressed body is corrupt.
    #[error("request body could not be decompressed: {0}")]
    Corrupt(String),
    /// A content type or content encoding this receiver does not speak.
    #[error("{0}")]
    Unsupported(String),
    /// Without valid credentials (`receivers.auth`); refused before the body was read.
    #[error("unauthenticated: {0}; send Authorization: Bearer <token> (receivers.auth)")]
    Unauthenticated(Unauthenticated),
    /// The chain cannot take the request now (the client should retry later), or, with
    /// `acknowledgements: delivered`, a sink did not deliver it (the variant says whether
    /// a retry can help).
    #[error(transparent)]
    Refused(Refusal),
}

impl Rejection {
    /// The `reason` label of `receiver_requests` and `receiver_refused_spans`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::TooLarge { .. } => "too_large",
            Rejection::InflatesTooLarge { .. } | Rejection::Corrupt(_) => "decompression",
            Rejection::Unsupported(_) => "unsupported_media_type",
            Rejection::Unauthenticated(_) => "unauthenticated",
            Rejection::Refused(refusal) => refusal.reason(),
        }
    }

    /// Whether the exporter lacked room or time for the request (as opposed to the
    /// client sending something wrong, or a sink failing to deliver it, which the sink
    /// logs itself).
    pub(crate) fn is_capacity(&self) -> bool {
        match self {
            Rejection::Refused(refusal) => {
                refusal.is_capacity() || matches!(refusal, Refusal::AcknowledgementTimeout { .. })
            }
            _ => false,
        }
    }

    /// The gRPC status. OTLP: RESOURCE_EXHAUSTED is retryable only when it carries
    /// `RetryInfo`, so a request too large gets it without (never worth retrying as is),
    /// a full queue with it; UNAVAILABLE is always retryable.
    pub(crate) fn grpc_status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            Rejection::Malformed(_) | Rejection::Corrupt(_) => {
                tonic::Status::invalid_argument(message)
            }
            Rejection::TooLarge { .. } | Rejection::InflatesTooLarge { .. } => {
                tonic::Status::resource_exhausted(message)
            }
            Rejection::Unsupported(_) => tonic::Status::unimplemented(message),
            Rejection::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            Rejection::Refused(refusal) => {
                let code = match refusal {
                    Refusal::QueueFull { .. } => Code::ResourceExhausted,
                    // Permanent: the status the receiver uses for requests it refuses
                    // for good.
                    Refusal::Rejected { .. } => Code::InvalidArgument,
                    Refusal::Backpressure { .. }
                    | Refusal::ShuttingDown { .. }
                    | Refusal::Storage { .. }
                    | Refusal::NotDelivered { .. }
                    | Refusal::AcknowledgementTimeout { .. } => Code::Unavailable,
                };
                match refusal.retry_after() {
                    Some(retry_after) => {
                        let details = rpc_status_with_retry_info(code, &message, retry_after);
                        tonic::Status::with_details(code, message, details)
                    }
                    None => tonic::Status::new(code, message),
                }
            }
        }
    }

    /// The HTTP status (OTLP/HTTP retries only 429, 502, 503 and 504).
    pub(crate) fn http_status(&self) -> StatusCode {
        match self {
            Rejection::Malformed(_) | Rejection::Corrupt(_) => StatusCode::BAD_REQUEST,
            Rejection::TooLarge { .. } | Rejection::InflatesTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Rejection::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Rejection::Refused(Refusal::QueueFull { .. }) => StatusCode::TOO_MANY_REQUESTS,
            Rejection::Refused(Refusal::Rejected { .. }) => StatusCode::BAD_REQUEST,
            Rejection::Refused(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The HTTP response: a `google.rpc.Status` body in the request's format, with
    /// `Retry-After` (whole seconds, at least 1) when the client should retry.
    pub(crate) fn http_response(&self, format: BodyFormat) -> Response {
        let code = self.grpc_status().code();
        let body = match format {
            BodyFormat::Protobuf => RpcStatus {
                code: code as i32,
                message: self.to_string(),
                details: vec![],
            }
            .encode_to_vec(),
            BodyFormat::Json => serde_json::json!({
                "code": code as i32,
                "message": self.to_string(),
            })
            .to_string()
            .into_bytes(),
        };
        let mut response = (self.http_status(), format.content_type(), body).into_response();
        if let Rejection::Refused(refusal) = self
            && let Some(retry_after) = refusal.retry_after()
        {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The OTLP response to a request that was taken: `partial_success` when spans were
/// rejected, or to carry a warning; empty otherwise.
pub(crate) fn export_response(admission: &Admission) -> ExportTraceServiceResponse {
    let message = admission.message.clone().unwrap_or_default();
    let partial = admission.rejected_spans > 0 || !message.is_empty();
    ExportTraceServiceResponse {
        partial_success: partial.then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(admission.rejected_spans).unwrap_or(i64::MAX),
            error_message: message,
        }),
    }
}

/// The OTLP/HTTP success response, in the request's format.
pub(crate) fn http_success(admission: &Admission, format: BodyFormat) -> Response {
    let response = export_response(admission);
    let body = match format {
        BodyFormat::Protobuf => response.encode_to_vec(),
        // Written by hand: protobuf JSON writes int64 as a string and leaves an unset
        // message out (the serde derive would write a number and `null`).
        BodyFormat::Json => match response.partial_success {
            Some(partial) => serde_json::json!({
                "partialSuccess": {
                    "rejectedSpans": partial.rejected_spans.to_string(),
                    "errorMessage": partial.error_message,
                }
            }),
            None => serde_json::json!({}),
        }
        .to_string()
        .into_bytes(),
    };
    (StatusCode::OK, format.content_type(), body).into_response()
}

/// The two OTLP/HTTP body encodings; a response uses the request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFormat {
    Protobuf,
    Json,
}

impl BodyFormat {
    pub(crate) const PROTOBUF: &'static str = "application/x-protobuf";
    pub(crate) const JSON: &'static str = "application/json";

    /// From a `Content-Type` value; parameters (`; charset=utf-8`) are ignored.
    pub(crate) fn from_content_type(value: &str) -> Option<Self> {
        let essence = value.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case(Self::PROTOBUF) {
            Some(BodyFormat::Protobuf)
        } else if essence.eq_ignore_ascii_case(Self::JSON) {
            Some(BodyFormat::Json)
        } else {
            None
        }
    }

    fn content_type(self) -> [(header::HeaderName, &'static str); 1] {
        match self {
            BodyFormat::Protobuf => [(header::CONTENT_TYPE, Self::PROTOBUF)],
            BodyFormat::Json => [(header::CONTENT_TYPE, Self::JSON)],
        }
    }
}

/// `google.rpc.Status{code, message, details: [RetryInfo{retry_delay}]}`, encoded: what
/// gRPC carries in `grpc-status-details-bin` and OTLP clients read the retry delay from.
fn rpc_status_with_retry_info(code: Code, message: &str, retry_after: Duration) -> Bytes {
    let retry_info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: i64::try_from(retry_after.as_secs()).unwrap_or(i64::MAX),
            nanos: retry_after.subsec_nanos() as i32,
        }),
    };
    let status = RpcStatus {
        code: code as i32,
        message: message.to_string(),
        details: vec![ProtoAny {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: retry_info.encode_to_vec(),
        }],
    };
    Bytes::from(status.encode_to_vec())
}

// The four well-known messages needed, declared here rather than pulling in tonic-types and
// prost-types for them. Field numbers as in google/rpc/status.proto, google/rpc/
// error_details.proto, google/protobuf/any.proto and duration.proto.

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue_full(retry_after: Duration) -> Rejection {
        Rejection::Refused(Refusal::QueueFull {
            sink: "main".into(),
            retry_after,
        })
    }

    #[test]
    fn refusals_carry_retry_info_and_other_rejections_do_not() {
        let status = queue_full(Duration::from_millis(1500)).grpc_status();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = RpcStatus::decode(status.details()).unwrap();
        assert_eq!(details.code, Code::ResourceExhausted as i32);
        assert_eq!(details.details.len(), 1);
        assert_eq!(
            details.details[0].type_url,
            "type.googleapis.com/google.rpc.RetryInfo"
        );
        let retry = RetryInfo::decode(details.details[0].value.as_slice()).unwrap();
        assert_eq!(
            retry.retry_delay,
            Some(ProtoDuration {
                seconds: 1,
                nanos: 500_000_000
            })
        );

        let shutting_down = Rejection::Refused(Refusal::ShuttingDown {
            retry_after: Duration::from_secs(2),
        });
        assert_eq!(shutting_down.grpc_status().code(), Code::Unavailable);
        assert_eq!(shutting_down.http_status(), StatusCode::SERVICE_UNAVAILABLE);

        let too_large = Rejection::TooLarge { limit: 10 }.grpc_status();
        assert_eq!(too_large.code(), Code::ResourceExhausted);
        assert!(too_large.details().is_empty());
    }

    #[test]
    fn delivery_failures_answer_retryable_or_permanent() {
        let not_delivered = Rejection::Refused(Refusal::NotDelivered {
            sink: "main".into(),
            message: "connection refused".into(),
            retry_after: Duration::from_secs(1),
        });
        assert_eq!(not_delivered.grpc_status().code(), Code::Unavailable);
        assert!(!not_delivered.grpc_status().details().is_empty());
        assert_eq!(not_delivered.http_status(), StatusCode::SERVICE_UNAVAILABLE);

        let timeout = Rejection::Refused(Refusal::AcknowledgementTimeout {
            timeout: Duration::from_secs(8),
            retry_after: Duration::from_secs(1),
        });
        assert_eq!(timeout.grpc_status().code(), Code::Unavailable);
        assert_eq!(timeout.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(timeout.to_string().contains("8000 ms"), "{timeout}");
        assert!(timeout.is_capacity());

        let rejected = Rejection::Refused(Refusal::Rejected {
            sink: "main".into(),
            message: "schema mismatch".into(),
        });
        let status = rejected.grpc_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.details().is_empty(),
            "no RetryInfo: retrying cannot help"
        );
        assert!(
            status.message().contains("\"main\""),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("schema mismatch"),
            "{}",
            status.message()
        );
        let response = rejected.http_response(BodyFormat::Json);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        assert!(!rejected.is_capacity());
    }

    #[test]
    fn retry_after_header_rounds_up_to_whole_seconds() {
        let response = queue_full(Duration::from_millis(1200)).http_response(BodyFormat::Json);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let response = queue_full(Duration::ZERO).http_response(BodyFormat::Json);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn content_types_are_matched_by_essence() {
        let of = BodyFormat::from_content_type;
        assert_eq!(of("application/x-protobuf"), Some(BodyFormat::Protobuf));
        assert_eq!(
            of("Application/JSON; charset=utf-8"),
            Some(BodyFormat::Json)
        );
        assert_eq!(of("text/plain"), None);
        assert_eq!(of(""), None);
    }

    #[test]
    fn partial_success_only_when_something_to_say() {
        assert_eq!(export_response(&Admission::default()).partial_success, None);
        let partial = export_response(&Admission {
            rejected_spans: 3,
            message: Some("filtered".into()),
        });
        assert_eq!(
            partial.partial_success,
            Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "filtered".into()
            })
        );
    }
}
