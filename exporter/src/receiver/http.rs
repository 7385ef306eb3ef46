//! OTLP/HTTP receiver: `POST /v1/traces` with protobuf or JSON bodies, optionally gzip, zstd
//! or deflate, read within the size limits and answered in the request's format. Not the
//! answers (`answer`).
//!
//! OTLP/JSON is read with opentelemetry-proto's serde support (hex ids, integer enums,
//! 64-bit integers as strings or numbers, unknown fields ignored). Where it is stricter than
//! the protobuf JSON mapping, valid input it refuses is normalised and read again (see
//! [`fill_protobuf_json_defaults`]). Not accepted: `"NaN"`/`"Infinity"` doubles.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;

use super::answer::{self, BodyFormat, Rejection};
use super::auth::Authenticator;
use super::compression::{self, ContentEncoding};
use super::cors::{self, Cors};
use super::limits;
use super::tls::TlsListener;
use super::{Intake, ReceiverLimits};
use crate::chain::Admission;
use crate::otlp::TraceData;

pub(super) const TRACES_PATH: &str = "/v1/traces";

pub(super) async fn serve(
    listener: TlsListener,
    intake: Intake,
    limits: ReceiverLimits,
    auth: Option<Arc<Authenticator>>,
    cors: Option<Cors>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let receiver = Arc::new(HttpReceiver {
        intake,
        limits,
        auth,
    });
    let mut app = Router::new()
        // Other methods get 405 with `Allow: POST` from the method router.
        .route(TRACES_PATH, post(export))
        // Before the handler, so an unauthenticated body is never read.
        .route_layer(middleware::from_fn_with_state(
            receiver.clone(),
            require_credentials,
        ))
        // The body is read by `limits::read_body` against our own limit.
        .layer(DefaultBodyLimit::disable())
        .with_state(receiver);
    if let Some(cors) = cors {
        // Outermost: preflights carry no credentials, and a browser can only read a 401
        // that has CORS headers.
        app = app.layer(middleware::from_fn_with_state(Arc::new(cors), cors::apply));
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Answers 401 (with `WWW-Authenticate`) to a request without valid credentials, from its
/// headers; passes the others on.
async fn require_credentials(
    State(receiver): State<Arc<HttpReceiver>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(auth) = &receiver.auth else {
        return next.run(request).await;
    };
    let Err(unauthenticated) = auth.check(request.headers()) else {
        return next.run(request).await;
    };
    let format = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| BodyFormat::from_content_type(v.to_str().ok()?))
        .unwrap_or(BodyFormat::Json);
    let rejection = Rejection::Unauthenticated(unauthenticated);
    let mut response = receiver
        .intake
        .reject(rejection, None)
        .http_response(format);
    for challenge in auth.challenges() {
        response
            .headers_mut()
            .append(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

async fn export(
    State(receiver): State<Arc<HttpReceiver>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let Some(format) = BodyFormat::from_content_type(&content_type) else {
        let message = format!(
            "Content-Type {content_type:?} is not supported; send {} or {}",
            BodyFormat::PROTOBUF,
            BodyFormat::JSON
        );
        let rejection = receiver
            .intake
            .reject(Rejection::Unsupported(message), None);
        return rejection.http_response(BodyFormat::Json);
    };
    match receiver.receive(&headers, body, format).await {
        Ok(admission) => answer::http_success(&admission, format),
        Err(rejection) => rejection.http_response(format),
    }
}

struct HttpReceiver {
    intake: Intake,
    limits: ReceiverLimits,
    auth: Option<Arc<Authenticator>>,
}

impl HttpReceiver {
    async fn receive(
        &self,
        headers: &HeaderMap,
        body: Body,
        format: BodyFormat,
    ) -> Result<Admission, Rejection> {
        let data = self
            .read(headers, body, format)
            .await
            .map_err(|rejection| self.intake.reject(rejection, None))?;
        self.intake.take(data).await
    }

    async fn read(
        &self,
        headers: &HeaderMap,
        body: Body,
        format: BodyFormat,
    ) -> Result<TraceData, Rejection> {
        let encoding = ContentEncoding::from_http(
            headers.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()),
        )?;
        let limit = match encoding {
            Some(_) => self.limits.max_request_size,
            None => self.limits.wire_limit(),
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(Rejection::TooLarge { limit });
        }
        let sent = limits::read_body(body, limit).await?;
        let plain = match encoding {
            Some(encoding) => {
                compression::decompress(encoding, &sent, self.limits.max_decompressed_size)?
            }
            None => sent,
        };
        match format {
            BodyFormat::Protobuf => {
                TraceData::from_wire(plain).map_err(|e| Rejection::Malformed(e.to_string()))
            }
            BodyFormat::Json => decode_json(&plain),
        }
    }
}

/// OTLP/JSON to [`TraceData`]: deserialized, encoded to protobuf, then given the same scan
/// as a protobuf body (so id lengths and the like are checked the same way).
pub(crate) fn decode_json(body: &[u8]) -> Result<TraceData, Rejection> {
    let request = match serde_json::from_slice::<ExportTraceServiceRequest>(body) {
        Ok(request) => request,
        Err(first) => read_normalised(body).ok_or_else(|| {
            Rejection::Malformed(format!("malformed OTLP/JSON trace request: {first}"))
        })?,
    };
    TraceData::from_wire(Bytes::from(request.encode_to_vec()))
        .map_err(|e| Rejection::Malformed(e.to_string()))
}

/// The slow path for valid protobuf JSON that the serde derive refuses.
fn read_normalised(body: &[u8]) -> Option<ExportTraceServiceRequest> {
    let mut value = serde_json::from_slice::<Value>(body).ok()?;
    fill_protobuf_json_defaults(&mut value, JsonMessage::Other);
    serde_json::from_value(value).ok()
}

/// Which message a JSON object is, as far as [`fill_protobuf_json_defaults`] cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonMessage {
    KeyValue,
    ArrayValue,
    KeyValueList,
    EntityRef,
    Other,
}

/// Integer fields the protobuf JSON mapping lets senders write as strings.
const INTEGER_FIELDS: [&str; 7] = [
    "droppedAttributesCount",
    "droppedEventsCount",
    "droppedLinksCount",
    "flags",
    "kind",
    "code",
    "keyStrindex",
];

/// Protobuf JSON leaves out fields holding their default (an empty list of values, an
/// empty key) and allows integers as strings; opentelemetry-proto's serde derive requires
/// some of those fields and numbers. Puts the defaults back and turns the numbers into
/// numbers, so the derive reads what any protobuf JSON encoder (Collector, Java) writes.
fn fill_protobuf_json_defaults(value: &mut Value, message: JsonMessage) {
    match value {
        Value::Array(items) => {
            for item in items {
                fill_protobuf_json_defaults(item, message);
            }
        }
        Value::Object(fields) => {
            match message {
                JsonMessage::KeyValue => {
                    fields.entry("key").or_insert_with(|| Value::from(""));
                }
                JsonMessage::ArrayValue | JsonMessage::KeyValueList => {
                    fields
                        .entry("values")
                        .or_insert_with(|| Value::Array(vec![]));
                }
                JsonMessage::EntityRef => {
                    for name in ["schemaUrl", "type"] {
                        fields.entry(name).or_insert_with(|| Value::from(""));
                    }
                    for name in ["idKeys", "descriptionKeys"] {
                        fields.entry(name).or_insert_with(|| Value::Array(vec![]));
                    }
                }
                JsonMessage::Other => {}
            }
            for (name, field) in fields.iter_mut() {
                if INTEGER_FIELDS.contains(&name.as_str())
                    && let Value::String(text) = field
                    && let Ok(number) = text.parse::<i64>()
                {
                    *field = Value::from(number);
                }
                let inner = match (message, name.as_str()) {
                    (_, "attributes") | (JsonMessage::KeyValueList, "values") => {
                        JsonMessage::KeyValue
                    }
                    (_, "arrayValue") => JsonMessage::ArrayValue,
                    (_, "kvlistValue") => JsonMessage::KeyValueList,
                    (_, "entityRefs") => JsonMessage::EntityRef,
                    _ => JsonMessage::Other,
                };
                fill_protobuf_json_defaults(field, inner);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
    use opentelemetry_proto::tonic::trace::v1::Span;

    /// The example of the OTLP specification (opentelemetry-proto examples/trace.json).
    const SPEC_EXAMPLE: &str = r#"{
      "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
        "scopeSpans": [{
          "scope": {"name": "my.library", "version": "1.0.0",
                    "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}]},
          "spans": [{
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "EEE19B7EC3C1B174",
            "parentSpanId": "EEE19B7EC3C1B173",
            "name": "I'm a server span",
            "startTimeUnixNano": "1544712660000000000",
            "endTimeUnixNano": "1544712661000000000",
            "kind": 2,
            "attributes": [{"key": "my.span.attr", "value": {"stringValue": "some value"}}]
          }]
        }]
      }]
    }"#;

    fn only_span(json: &str) -> Span {
        let data = decode_json(json.as_bytes()).unwrap();
        let request = data.decode().unwrap();
        request.resource_spans[0].scope_spans[0].spans[0].clone()
    }

    fn with_span(fields: &str) -> String {
        format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{{fields}}}]}}]}}]}}"#)
    }

    fn attribute_value(span: &Span) -> Option<AnyValueKind> {
        span.attributes[0].value.as_ref()?.value.clone()
    }

    #[test]
    fn spec_example_reads_with_the_otlp_json_mapping() {
        let span = only_span(SPEC_EXAMPLE);
        assert_eq!(
            const_hex::encode(&span.trace_id),
            "5b8efff798038103d269b633813fc60c"
        );
        assert_eq!(const_hex::encode(&span.span_id), "eee19b7ec3c1b174");
        assert_eq!(const_hex::encode(&span.parent_span_id), "eee19b7ec3c1b173");
        assert_eq!(span.kind, 2);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(span.attributes[0].key, "my.span.attr");
    }

    #[test]
    fn integers_read_as_strings_or_numbers() {
        let span = only_span(&with_span(
            r#""traceId":"5b8efff798038103d269b633813fc60c","kind":2,
               "startTimeUnixNano":1544712660000000000,"endTimeUnixNano":"1544712661000000000",
               "attributes":[{"key":"a","value":{"intValue":"42"}}]"#,
        ));
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(attribute_value(&span), Some(AnyValueKind::IntValue(42)));
        let span = only_span(&with_span(
            r#""attributes":[{"key":"a","value":{"intValue":-7}}],"droppedAttributesCount":"3","flags":"257""#,
        ));
        assert_eq!(attribute_value(&span), Some(AnyValueKind::IntValue(-7)));
        assert_eq!((span.dropped_attributes_count, span.flags), (3, 257));
    }

    #[test]
    fn every_value_kind_and_nested_message_reads() {
        let span = only_span(&with_span(
            r#""attributes":[
                 {"key":"s","value":{"stringValue":"x"}},
                 {"key":"b","value":{"boolValue":true}},
                 {"key":"d","value":{"doubleValue":1.5}},
                 {"key":"y","value":{"bytesValue":"AJ+Slv8="}},
                 {"key":"a","value":{"arrayValue":{"values":[{"stringValue":"x"},{"intValue":"1"}]}}},
                 {"key":"k","value":{"kvlistValue":{"values":[{"key":"n","value":{"boolValue":false}}]}}}],
               "events":[{"timeUnixNano":"5","name":"e","attributes":[{"key":"ek","value":{"stringValue":"ev"}}]}],
               "links":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","flags":256}],
               "status":{"code":2,"message":"m"},"unknownField":{"ignored":[1,2]}"#,
        ));
        assert_eq!(span.attributes.len(), 6);
        assert_eq!(
            span.attributes[3].value.as_ref().unwrap().value,
            Some(AnyValueKind::BytesValue(vec![0, 159, 146, 150, 255]))
        );
        assert_eq!(span.events[0].time_unix_nano, 5);
        assert_eq!(span.links[0].flags, 256);
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(2));
    }

    #[test]
    fn fields_protobuf_json_leaves_out_are_filled_in() {
        let span = only_span(&with_span(
            r#""attributes":[{"key":"a","value":{"arrayValue":{}}},
                             {"key":"k","value":{"kvlistValue":{}}},
                             {"value":{"kvlistValue":{"values":[{"value":{"stringValue":"no key"}}]}}}]"#,
        ));
        assert_eq!(
            attribute_value(&span),
            Some(AnyValueKind::ArrayValue(Default::default()))
        );
        assert_eq!(span.attributes[2].key, "");
        let request =
            decode_json(br#"{"resourceSpans":[{"resource":{"entityRefs":[{"type":"service"}]}}]}"#)
                .unwrap()
                .decode()
                .unwrap();
        let resource = request.resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(resource.entity_refs[0].r#type, "service");
    }

    #[test]
    fn invalid_json_requests_are_refused_with_the_reason() {
        let refused = |json: &str| match decode_json(json.as_bytes()) {
            Err(Rejection::Malformed(message)) => message,
            other => panic!("{json} gave {other:?}"),
        };
        assert!(refused("{not json").contains("line 1 column 2"));
        assert!(refused(&with_span(r#""traceId":"zz""#)).contains("invalid character"));
        assert_eq!(
            refused(&with_span(r#""traceId":"0102030405""#)),
            "malformed OTLP trace request: resource_spans[0].scope_spans[0].spans[0].trace_id: \
             must be 16 bytes (or empty), got 5"
        );
        // Protobuf JSON's special doubles are not supported by the serde derive.
        assert!(
            refused(&with_span(
                r#""attributes":[{"key":"a","value":{"doubleValue":"NaN"}}]"#
            ))
            .contains("NaN")
        );
    }
}
