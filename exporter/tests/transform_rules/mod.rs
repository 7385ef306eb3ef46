//! The transform fixture every sink test shares: `RULES` (every action, on every scope
//! that has attributes), the `request()` they rewrite, and the checks of what a backend
//! gives back (`assert_transformed`, `holds_secret`). Not a test of the rules themselves:
//! those are the unit tests of `chain::transform`.

// Each test binary uses what its backend stores.
#![allow(dead_code)]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use sha2::{Digest, Sha256};
use spansink_config::ExporterConfig;
use spansink_exporter::chain::{Admit, Chain, build_chain};
use spansink_exporter::encoding::flat_spans;
use spansink_exporter::otlp::TraceData;
use spansink_exporter::otlp::fixtures::{attribute, span_id, string, trace_id};
use spansink_exporter::telemetry::metrics::{Metrics, TransformLabels};

/// The sink the rules are appended to in [`sink_yaml`].
pub const SINK: &str = "main";

/// Read by the `hash` rule; set once for each test binary (see `salt`).
const SALT_ENV: &str = "SPANSINK_TEST_TRANSFORM_SALT";
pub const SALT: &str = "pepper";

/// Every action, on every scope that has attributes; indented to sit under a sink.
pub const RULES: &str = r#"
    transform:
      rules:
        - {action: set, scope: resource, key: deployment.environment, value: production}
        - {action: insert, key: retries, value: 3}
        - {action: update, scope: scope, key: lib.token, value: "-"}
        - {action: delete, keys: [internal.debug]}
        - {action: rename, key: old.key, to: new.key}
        - {action: hash, keys: [enduser.id], salt_env: SPANSINK_TEST_TRANSFORM_SALT}
        - {action: redact, keys: [user.email]}
        - {action: redact, scope: event, patterns: [card_number], name: cards}
        - {action: redact, regex: ["token=[^&]+"], replacement: "token=***"}
        - {action: truncate, key: db.statement, max_bytes: 6}
        - {action: rename, scope: link, key: link.kind, to: link.type}
        - {action: drop_events}
"#;

pub fn salt() {
    // SAFETY: set before any chain is built, to the one value every test of a binary
    // wants; nothing else in these binaries reads the variable.
    unsafe { std::env::set_var(SALT_ENV, SALT) };
}

/// Two spans with personal data in attributes, an event and a link; a resource and a
/// scope with attributes.
pub fn request() -> ExportTraceServiceRequest {
    let span = |i: usize| Span {
        trace_id: trace_id(1),
        span_id: span_id(i),
        name: format!("checkout-{i}"),
        attributes: vec![
            string("user.email", "jane@example.com"),
            string("http.url", "https://shop/?token=abc&q=1"),
            string("enduser.id", "u-1"),
            string("db.statement", "SELECT * FROM orders"),
            string("internal.debug", "x"),
            attribute("old.key", Value::IntValue(7)),
        ],
        events: vec![Event {
            time_unix_nano: 1,
            name: "exception".into(),
            attributes: vec![string("exception.message", "card 4111 1111 1111 1111")],
            dropped_attributes_count: 0,
        }],
        links: vec![Link {
            trace_id: trace_id(9),
            span_id: span_id(9),
            attributes: vec![string("link.kind", "follows")],
            ..Link::default()
        }],
        // The JSON Lines encoding writes an unset status as one: set, it reads back equal.
        status: Some(Status::default()),
        ..Span::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", "checkout")],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    attributes: vec![string("lib.token", "s3cr3t")],
                    ..InstrumentationScope::default()
                }),
                spans: vec![span(0), span(1)],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The YAML of an exporter with one sink, [`SINK`]: `backend` as a user writes it under
/// `sinks.<name>:` (e.g. `"redis: {url: 'redis://127.0.0.1:6390'}"`), a short flush
/// interval and `RULES`.
pub fn sink_yaml(backend: &str) -> String {
    let backend: String = backend.lines().map(|l| format!("    {l}\n")).collect();
    format!("sinks:\n  {SINK}:\n{backend}    batch: {{flush_interval: 50ms}}\n{RULES}")
}

/// [`sink_yaml`] of a backend's typed config (as the sink test builds it for its server),
/// under the backend's key (`redis`, `postgres`, ...).
pub fn sink_yaml_of(key: &str, config: &impl serde::Serialize) -> String {
    let body = serde_yaml::to_string(config)
        .unwrap_or_else(|e| panic!("the {key} config does not serialize: {e}"));
    let body: String = body.lines().map(|l| format!("  {l}\n")).collect();
    sink_yaml(&format!("{key}:\n{body}"))
}

/// The chain the exporter builds from `yaml`, through the same parsing and validation as
/// a config file; not started.
pub async fn chain(yaml: &str, metrics: &Metrics) -> Chain {
    salt();
    let config = ExporterConfig::from_yaml(yaml)
        .unwrap_or_else(|e| panic!("test config does not load: {e}\n{yaml}"));
    spansink_config::validate(&config).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    build_chain(&config, metrics)
        .await
        .unwrap_or_else(|e| panic!("the chain does not build: {e}\n{yaml}"))
}

/// Sends [`request`] through a started chain of one `key` sink with `config` and
/// [`RULES`], and drains it: both spans must be delivered. The chain's metrics, for
/// [`changes`].
pub async fn deliver(key: &str, config: &impl serde::Serialize) -> Metrics {
    let metrics = Metrics::for_tests();
    let yaml = sink_yaml_of(key, config);
    let chain = chain(&yaml, &metrics).await;
    chain.start();
    chain
        .admit(TraceData::from_request(&request()))
        .await
        .unwrap_or_else(|e| panic!("{key}: not admitted: {e}"));
    let report = chain.drain(std::time::Duration::from_secs(30)).await;
    assert_eq!(report.delivered_spans, 2, "{key}: {report:?}");
    metrics
}

/// What `rule` (its name or index) of `sink` counted as changed.
pub fn changes(metrics: &Metrics, sink: &str, rule: &str, action: &'static str) -> u64 {
    metrics
        .transform_changes
        .get_or_create(&TransformLabels {
            sink: sink.into(),
            rule: rule.into(),
            action,
        })
        .get()
}

pub fn text(attributes: &[KeyValue], key: &str) -> Option<Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

pub fn s(text: &str) -> Option<Value> {
    Some(Value::StringValue(text.into()))
}

/// `SHA-256(salt + value)` in hex, as the `hash` rule writes it.
pub fn hashed(value: &str) -> String {
    const_hex::encode(Sha256::digest(format!("{SALT}{value}")))
}

/// What a backend gave back is `spans` spans of `request()` with `RULES` applied, field by
/// field, each with its resource and scope, however the backend groups them.
pub fn assert_transformed(got: &ExportTraceServiceRequest, spans: usize, via: &str) {
    let flat: Vec<_> = flat_spans(got).collect();
    assert_eq!(flat.len(), spans, "{via}: spans read back");
    for (n, flat) in flat.iter().enumerate() {
        let via = format!("{via}, span {n}");
        let resource = flat.group.resource_attributes();
        assert_eq!(text(resource, "service.name"), s("checkout"), "{via}");
        assert_eq!(
            text(resource, "deployment.environment"),
            s("production"),
            "{via}: resource set"
        );
        let scope = flat.group.scope_attributes();
        assert_eq!(text(scope, "lib.token"), s("-"), "{via}: scope update");
        let span = flat.span;
        let i = usize::from(span.span_id.last().copied().unwrap_or(u8::MAX));
        assert_eq!(span.span_id, span_id(i), "{via}");
        assert_eq!(span.name, format!("checkout-{i}"), "{via}");
        let a = &span.attributes;
        assert_eq!(text(a, "user.email"), s("***"), "{via}: redact");
        assert_eq!(
            text(a, "http.url"),
            s("https://shop/?token=***&q=1"),
            "{via}: redact regex"
        );
        assert_eq!(text(a, "enduser.id"), s(&hashed("u-1")), "{via}: hash");
        assert_eq!(text(a, "db.statement"), s("SELECT"), "{via}: truncate");
        assert_eq!(text(a, "internal.debug"), None, "{via}: delete");
        assert_eq!(text(a, "old.key"), None, "{via}: rename");
        assert_eq!(
            text(a, "new.key"),
            Some(Value::IntValue(7)),
            "{via}: rename"
        );
        assert_eq!(
            text(a, "retries"),
            Some(Value::IntValue(3)),
            "{via}: insert"
        );
        assert_eq!(a.len(), 6, "{via}: one deleted, one inserted: {a:?}");
        assert!(span.events.is_empty(), "{via}: drop_events");
        assert_eq!(span.dropped_events_count, 1, "{via}: drop_events");
        assert_eq!(span.links.len(), 1, "{via}");
        assert_eq!(
            text(&span.links[0].attributes, "link.type"),
            s("follows"),
            "{via}: link rename"
        );
        assert_eq!(text(&span.links[0].attributes, "link.kind"), None, "{via}");
    }
}

/// Bytes that must appear nowhere once transformed.
pub const SECRETS: [&str; 4] = ["jane@example.com", "s3cr3t", "token=abc", "u-1"];

/// The first of `SECRETS` found in `bytes`.
pub fn holds_secret(bytes: &[u8]) -> Option<&'static str> {
    SECRETS
        .into_iter()
        .find(|secret| bytes.windows(secret.len()).any(|w| w == secret.as_bytes()))
}
