//! Each action on each scope, on real request bytes, read back by prost.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sha2::{Digest, Sha256};

use super::*;
use crate::otlp::fixtures::{self, attribute, string, v_array, v_str};
use crate::telemetry::metrics::TransformLabels;

/// One resource (checkout), one scope (lib), two spans with attributes, an event and a link.
fn request() -> ExportTraceServiceRequest {
    let span = |i: usize| Span {
        trace_id: fixtures::trace_id(1),
        span_id: fixtures::span_id(i),
        name: format!("span-{i}"),
        attributes: vec![
            string("user.email", "jane@example.com"),
            string("http.url", "https://shop/?token=abc&q=1"),
            attribute("http.status_code", Value::IntValue(200)),
            string("enduser.id", "u-1"),
            string("db.statement", "SELECT * FROM orders WHERE id = 1"),
        ],
        events: vec![Event {
            time_unix_nano: 1,
            name: "exception".into(),
            attributes: vec![string(
                "exception.message",
                "card 4111 1111 1111 1111 declined",
            )],
            dropped_attributes_count: 0,
        }],
        dropped_events_count: 2,
        links: vec![Link {
            trace_id: fixtures::trace_id(9),
            span_id: fixtures::span_id(9),
            attributes: vec![string("link.kind", "follows")],
            ..Link::default()
        }],
        ..Span::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", "checkout"),
                    string("host.name", "h1"),
                ],
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

struct Run {
    out: ExportTraceServiceRequest,
    metrics: Metrics,
}

impl Run {
    fn changes(&self, rule: &str, action: &'static str) -> u64 {
        self.metrics
            .transform_changes
            .get_or_create(&TransformLabels {
                sink: "main".into(),
                rule: rule.into(),
                action,
            })
            .get()
    }

    fn resource(&self) -> &[KeyValue] {
        &self.out.resource_spans[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes
    }

    fn scope(&self) -> &[KeyValue] {
        &self.out.resource_spans[0].scope_spans[0]
            .scope
            .as_ref()
            .unwrap()
            .attributes
    }

    fn span(&self, i: usize) -> &Span {
        &self.out.resource_spans[0].scope_spans[0].spans[i]
    }
}

fn transform(rules_yaml: &str) -> (SpanTransform, Metrics) {
    let config: TransformConfig =
        serde_yaml::from_str(&format!("rules:\n{rules_yaml}")).expect("test rules parse");
    let metrics = Metrics::for_tests();
    let env = |var: &str| (var == "SALT").then(|| "pepper".to_string());
    let t = SpanTransform::with_env("main", &config, &metrics, &env).expect("transform builds");
    (t, metrics)
}

fn run(rules_yaml: &str) -> Run {
    let (t, metrics) = transform(rules_yaml);
    let out = t.apply(TraceData::from_request(&request())).unwrap();
    Run {
        out: out.decode().unwrap(),
        metrics,
    }
}

/// `key: text` of string attributes, other values as their Debug form.
fn pairs(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn get<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

#[test]
fn set_insert_update_on_span_resource_and_scope() {
    let r = run(r#"
  - {action: set, scope: resource, key: deployment.environment, value: production}
  - {action: set, scope: resource, key: host.name, value: h2}
  - {action: insert, key: http.status_code, value: 500}
  - {action: insert, key: retries, value: 3}
  - {action: update, scope: scope, key: lib.token, value: "-"}
  - {action: update, key: missing, value: true}
  - {action: set, key: ratio, value: 1.5}
  - {action: set, scope: resource, key: service.name, value: checkout}
"#);
    assert_eq!(
        pairs(r.resource()),
        [
            ("service.name".into(), "checkout".into()),
            ("host.name".into(), "h2".into()),
            ("deployment.environment".into(), "production".into()),
        ]
    );
    assert_eq!(pairs(r.scope()), [("lib.token".into(), "-".into())]);
    for i in 0..2 {
        let span = r.span(i);
        assert_eq!(
            get(&span.attributes, "http.status_code"),
            Some(&Value::IntValue(200))
        );
        assert_eq!(get(&span.attributes, "retries"), Some(&Value::IntValue(3)));
        assert_eq!(
            get(&span.attributes, "ratio"),
            Some(&Value::DoubleValue(1.5))
        );
        assert_eq!(get(&span.attributes, "missing"), None);
        assert_eq!(span.attributes.len(), 7);
        assert_eq!(span.name, format!("span-{i}"), "other fields are kept");
        assert_eq!(span.events.len(), 1);
        assert_eq!(span.links.len(), 1);
    }
    assert_eq!(r.changes("0", "set"), 1);
    assert_eq!(r.changes("1", "set"), 1);
    assert_eq!(r.changes("2", "insert"), 0, "present: not inserted");
    assert_eq!(r.changes("3", "insert"), 2);
    assert_eq!(r.changes("4", "update"), 1);
    assert_eq!(r.changes("5", "update"), 0, "absent: not updated");
    assert_eq!(r.changes("6", "set"), 2);
    assert_eq!(r.changes("7", "set"), 0, "same value: no change");
}

#[test]
fn delete_and_rename_by_key_and_key_regex() {
    let r = run(r#"
  - {action: delete, keys: [http.url], key_regex: ["^db\\."]}
  - {action: rename, key: enduser.id, to: user.email}
  - {action: delete, scope: resource, key: host.name}
  - {action: rename, scope: event, key: exception.message, to: error.text}
  - {action: delete, scope: link, key_regex: [kind]}
"#);
    let span = r.span(0);
    assert_eq!(
        pairs(&span.attributes),
        [
            ("http.status_code".into(), "Some(IntValue(200))".into()),
            ("user.email".into(), "u-1".into()),
        ],
        "the renamed attribute replaces the one that had its new key"
    );
    assert_eq!(
        pairs(r.resource()),
        [("service.name".into(), "checkout".into())]
    );
    assert_eq!(span.events[0].attributes[0].key, "error.text");
    assert!(span.links[0].attributes.is_empty());
    assert_eq!(r.changes("0", "delete"), 4);
    assert_eq!(r.changes("1", "rename"), 2);
    assert_eq!(r.changes("2", "delete"), 1);
    assert_eq!(r.changes("3", "rename"), 2);
    assert_eq!(r.changes("4", "delete"), 2);
}

#[test]
fn hash_uses_the_salt_from_the_environment_and_names_a_missing_one() {
    let r = run(
        "  - {action: hash, keys: [enduser.id, http.status_code], salt_env: SALT, name: pseudonymize}\n",
    );
    let hex = |text: &str| const_hex::encode(Sha256::digest(format!("pepper{text}")));
    let span = r.span(1);
    assert_eq!(
        get(&span.attributes, "enduser.id"),
        Some(&Value::StringValue(hex("u-1")))
    );
    assert_eq!(
        get(&span.attributes, "http.status_code"),
        Some(&Value::StringValue(hex("200")))
    );
    assert_eq!(r.changes("pseudonymize", "hash"), 4);

    let config: TransformConfig = serde_yaml::from_str(
        "rules:\n  - {action: set, key: a, value: b}\n  - {action: hash, key: a, salt_env: NOT_SET_ANYWHERE}\n",
    )
    .unwrap();
    let err = SpanTransform::with_env("main", &config, &Metrics::for_tests(), &|_| None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "transform.rules[1].salt_env: environment variable NOT_SET_ANYWHERE is not set; fill it from a Secret (env valueFrom secretKeyRef, or envFrom)"
    );
    let err = SpanTransform::with_env("main", &config, &Metrics::for_tests(), &|_| {
        Some(String::new())
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(
            "transform.rules[1].salt_env: environment variable NOT_SET_ANYWHERE is empty"
        ),
        "{err}"
    );
}

#[test]
fn redact_whole_values_by_key_and_matches_by_pattern_in_every_scope() {
    let r = run(r#"
  - {action: redact, key_regex: ["(?i)email"]}
  - {action: redact, regex: ["token=[^&]+"], replacement: "token=***"}
  - {action: redact, scope: event, patterns: [card_number]}
  - {action: redact, scope: scope, keys: [lib.token], replacement: "[redacted]"}
"#);
    let span = r.span(0);
    assert_eq!(
        get(&span.attributes, "user.email"),
        Some(&Value::StringValue("***".into()))
    );
    assert_eq!(
        get(&span.attributes, "http.url"),
        Some(&Value::StringValue("https://shop/?token=***&q=1".into()))
    );
    assert_eq!(
        get(&span.events[0].attributes, "exception.message"),
        Some(&Value::StringValue("card *** declined".into()))
    );
    assert_eq!(
        pairs(r.scope()),
        [("lib.token".into(), "[redacted]".into())]
    );
    assert_eq!(r.changes("0", "redact"), 2);
    assert_eq!(r.changes("1", "redact"), 2);
    assert_eq!(r.changes("2", "redact"), 2);
    assert_eq!(r.changes("3", "redact"), 1);
}

#[test]
fn truncate_every_value_or_selected_ones_at_a_character_boundary() {
    let r = run(r#"
  - {action: truncate, key: db.statement, max_bytes: 6}
  - {action: truncate, scope: event, max_bytes: 4}
  - {action: truncate, scope: resource, max_bytes: 3}
"#);
    let span = r.span(0);
    assert_eq!(
        get(&span.attributes, "db.statement"),
        Some(&Value::StringValue("SELECT".into()))
    );
    assert_eq!(
        get(&span.attributes, "user.email"),
        Some(&Value::StringValue("jane@example.com".into()))
    );
    assert_eq!(
        get(&span.events[0].attributes, "exception.message"),
        Some(&Value::StringValue("card".into()))
    );
    assert_eq!(
        pairs(r.resource()),
        [
            ("service.name".into(), "che".into()),
            ("host.name".into(), "h1".into())
        ]
    );
    assert_eq!(r.changes("0", "truncate"), 2);
    assert_eq!(r.changes("1", "truncate"), 2);
    assert_eq!(r.changes("2", "truncate"), 1);
}

#[test]
fn drop_events_and_links_counts_them_in_the_span() {
    let r = run("  - {action: drop_events}\n  - {action: drop_links, name: no-links}\n");
    for i in 0..2 {
        let span = r.span(i);
        assert!(span.events.is_empty() && span.links.is_empty());
        assert_eq!(span.dropped_events_count, 3, "2 sent + 1 dropped");
        assert_eq!(span.dropped_links_count, 1);
        assert_eq!(span.attributes.len(), 5);
    }
    assert_eq!(r.changes("0", "drop_events"), 2);
    assert_eq!(r.changes("no-links", "drop_links"), 2);
}

#[test]
fn rules_see_what_earlier_rules_made_and_an_unchanged_request_keeps_its_bytes() {
    let r = run(r#"
  - {action: rename, key: enduser.id, to: user.id}
  - {action: hash, key: user.id, salt_env: SALT}
  - {action: set, key: user.id.kind, value: hashed}
"#);
    let hex = const_hex::encode(Sha256::digest("pepperu-1"));
    assert_eq!(
        get(&r.span(0).attributes, "user.id"),
        Some(&Value::StringValue(hex))
    );
    assert_eq!(get(&r.span(0).attributes, "enduser.id"), None);

    let (t, metrics) = transform(
        "  - {action: delete, key: absent}\n  - {action: update, scope: resource, key: absent, value: 1}\n",
    );
    let data = TraceData::from_request(&request());
    let out = t.apply(data.clone()).unwrap();
    assert_eq!(
        out.bytes().as_ptr(),
        data.bytes().as_ptr(),
        "not even copied"
    );
    assert_eq!(
        metrics
            .transform_changes
            .get_or_create(&TransformLabels {
                sink: "main".into(),
                rule: "0".into(),
                action: "delete"
            })
            .get(),
        0
    );
}

#[test]
fn fields_the_rules_do_not_know_survive_and_a_missing_resource_is_created() {
    // An unknown field (number 99) inside a span, and a request with no resource at all.
    let mut request = request();
    request.resource_spans[0].resource = None;
    let mut bytes = request.encode_to_vec();
    // Append the unknown field to the first span by re-encoding it by hand.
    let span = request.resource_spans[0].scope_spans[0].spans[0].clone();
    let mut span_bytes = span.encode_to_vec();
    prost::encoding::string::encode(99, &"future field".to_string(), &mut span_bytes);
    let scope_spans = ScopeSpans {
        spans: vec![],
        ..request.resource_spans[0].scope_spans[0].clone()
    };
    let mut scope_bytes = scope_spans.encode_to_vec();
    prost::encoding::bytes::encode(2, &span_bytes, &mut scope_bytes);
    let mut resource_bytes = Vec::new();
    prost::encoding::bytes::encode(2, &scope_bytes, &mut resource_bytes);
    bytes.clear();
    prost::encoding::bytes::encode(1, &resource_bytes, &mut bytes);
    let data = TraceData::from_wire(bytes.into()).unwrap();

    let (t, _) = transform(
        "  - {action: set, scope: resource, key: deployment.environment, value: prod}\n  - {action: delete, key: user.email}\n",
    );
    let out = t.apply(data).unwrap();
    let needle = b"future field";
    assert!(
        out.bytes().windows(needle.len()).any(|w| w == needle),
        "the unknown field is copied"
    );
    let decoded = out.decode().unwrap();
    let resource = decoded.resource_spans[0].resource.as_ref().unwrap();
    assert_eq!(
        pairs(&resource.attributes),
        [("deployment.environment".into(), "prod".into())]
    );
    let span = &decoded.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(get(&span.attributes, "user.email"), None);
    assert_eq!(span.attributes.len(), 4);
}

#[test]
fn nested_values_are_redacted_and_truncated_inside() {
    let mut request = request();
    request.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .push(fixtures::kv(
            "recipients",
            v_array(vec![v_str("a@b.io"), v_str("nobody")]),
        ));
    let (t, _) = transform(
        "  - {action: redact, patterns: [email]}\n  - {action: truncate, key: recipients, max_bytes: 2}\n",
    );
    let out = t
        .apply(TraceData::from_request(&request))
        .unwrap()
        .decode()
        .unwrap();
    let span = &out.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(
        span.attributes.last().unwrap().value,
        Some(v_array(vec![v_str("**"), v_str("no")]))
    );
    assert_eq!(
        get(&span.attributes, "user.email"),
        Some(&Value::StringValue("***".into()))
    );
}

#[test]
fn key_regex_decisions_hold_whatever_order_the_keys_come_in() {
    let mut request = request();
    let spans = &mut request.resource_spans[0].scope_spans[0].spans;
    spans[1].attributes.reverse();
    spans[1].attributes.push(string("db.system", "postgresql"));
    let (t, _) = transform("  - {action: delete, key_regex: [\"^db\\\\.\"]}\n");
    let out = t
        .apply(TraceData::from_request(&request))
        .unwrap()
        .decode()
        .unwrap();
    for span in &out.resource_spans[0].scope_spans[0].spans {
        assert!(
            span.attributes.iter().all(|kv| !kv.key.starts_with("db.")),
            "{span:?}"
        );
        assert_eq!(span.attributes.len(), 4);
    }
}

#[test]
fn spans_growing_or_shrinking_across_a_length_byte_encode_as_prost_does() {
    // Span lengths just under and over 128 bytes (where a length takes a second byte),
    // and a whole request over 16 KiB (a third one): the rewrite is written in place with
    // room for the input's lengths, so these are where it must move bytes.
    let span = |padding: usize| Span {
        trace_id: fixtures::trace_id(1),
        span_id: fixtures::span_id(padding),
        name: "n".repeat(padding),
        attributes: vec![string("drop.me", "x")],
        ..Span::default()
    };
    let mut spans: Vec<Span> = (60..140).map(span).collect();
    spans.extend((0..25).map(|_| span(100)));
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    };
    let input = TraceData::from_request(&request);
    assert!(input.encoded_len() < 16384, "{}", input.encoded_len());
    for rules in [
        "  - {action: set, key: added.attribute, value: some-longer-value}\n",
        "  - {action: delete, key: drop.me}\n",
    ] {
        let (t, _) = transform(rules);
        let out = t.apply(input.clone()).unwrap();
        if rules.contains("set") {
            assert!(out.encoded_len() > 16384, "{}", out.encoded_len());
        }
        let decoded = out.decode().unwrap();
        assert_eq!(
            out.bytes().as_ref(),
            decoded.encode_to_vec().as_slice(),
            "{rules}"
        );
        let spans = &decoded.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 105);
        assert_eq!(spans[0].name, "n".repeat(60));
        assert_eq!(spans[79].name, "n".repeat(139));
    }
}
