//! Realistic trace requests for load generation: resource with service attributes,
//! server/client spans with typed attributes (strings, ints, doubles, bools), an event
//! every few spans. Deterministic for a given seed so runs compare.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Shape of the generated requests.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub spans_per_request: usize,
    pub attributes_per_span: usize,
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(opentelemetry_proto::tonic::common::v1::AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

const ROUTES: &[&str] = &[
    "/api/orders/{id}",
    "/api/cart",
    "/api/users/{id}/profile",
    "/healthz",
    "/api/search",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE"];

/// The i-th span attribute: a mix of types as real instrumentation emits them.
fn attribute(rng: &mut StdRng, i: usize) -> KeyValue {
    match i % 5 {
        0 => kv(
            &format!("http.route.{i}"),
            Value::StringValue(ROUTES[rng.random_range(0..ROUTES.len())].into()),
        ),
        1 => kv(
            &format!("http.status_code.{i}"),
            Value::IntValue([200, 201, 404, 500][rng.random_range(0..4)]),
        ),
        2 => kv(
            &format!("http.method.{i}"),
            Value::StringValue(METHODS[rng.random_range(0..METHODS.len())].into()),
        ),
        3 => kv(
            &format!("db.rows.{i}"),
            Value::DoubleValue(rng.random_range(0.0..1000.0)),
        ),
        _ => kv(&format!("cache.hit.{i}"), Value::BoolValue(rng.random())),
    }
}

impl Workload {
    /// One request; different `seed`s give different ids and values.
    pub fn request(&self, seed: u64) -> ExportTraceServiceRequest {
        let mut rng = StdRng::seed_from_u64(seed);
        let start = 1_700_000_000_000_000_000u64 + seed * 1_000_000;
        let mut trace_id = [0u8; 16];
        let mut spans = Vec::with_capacity(self.spans_per_request);
        for n in 0..self.spans_per_request {
            // A new trace every 8 spans, like a request fanning out to a few calls.
            if n % 8 == 0 {
                rng.fill(&mut trace_id);
            }
            let mut span_id = [0u8; 8];
            rng.fill(&mut span_id);
            let begin = start + n as u64 * 1_000;
            spans.push(Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: if n % 8 == 0 {
                    vec![]
                } else {
                    span_id.iter().rev().copied().collect()
                },
                name: format!(
                    "{} {}",
                    METHODS[n % METHODS.len()],
                    ROUTES[n % ROUTES.len()]
                ),
                kind: if n % 8 == 0 { 2 } else { 3 },
                start_time_unix_nano: begin,
                end_time_unix_nano: begin + rng.random_range(10_000..50_000_000),
                attributes: (0..self.attributes_per_span)
                    .map(|i| attribute(&mut rng, i))
                    .collect(),
                events: if n % 4 == 0 {
                    vec![Event {
                        time_unix_nano: begin + 500,
                        name: "cache.miss".into(),
                        attributes: vec![kv("cache.key", Value::StringValue(format!("k{n}")))],
                        dropped_attributes_count: 0,
                    }]
                } else {
                    vec![]
                },
                status: Some(Status {
                    code: if n % 50 == 0 {
                        status::StatusCode::Error as i32
                    } else {
                        status::StatusCode::Ok as i32
                    },
                    message: String::new(),
                }),
                ..Default::default()
            });
        }
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv(
                            "service.name",
                            Value::StringValue(format!("checkout-{}", seed % 4)),
                        ),
                        kv("service.version", Value::StringValue("1.4.2".into())),
                        kv("k8s.namespace.name", Value::StringValue("shop".into())),
                        kv(
                            "k8s.pod.name",
                            Value::StringValue(format!("checkout-7d9f8-{seed:05}")),
                        ),
                    ],
                    dropped_attributes_count: 0,
                    entity_refs: vec![],
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "io.opentelemetry.http".into(),
                        version: "2.1.0".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
            }],
        }
    }
}
