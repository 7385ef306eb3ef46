//! A sink's span filter: keeps the spans that match `include` (if set) and not `exclude`,
//! by service name, span name or attribute. Not what happens to the rest (fan-out decides).
//!
//! Only sinks with a filter pay for it: the request is decoded, and re-encoded only when
//! some spans were actually left out.

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::Span;
use spansink_config::{AttributeMatch, FilterConfig, OnFiltered, SpanMatch};

use crate::otlp::{TraceData, WireError};

/// The outcome of filtering one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Filtered {
    /// What the sink takes; `None` when every span was left out.
    pub kept: Option<TraceData>,
    /// How many spans were left out.
    pub filtered: usize,
}

/// One sink's filter, built from its config.
#[derive(Debug, Clone)]
pub struct SpanFilter {
    include: Option<SpanMatch>,
    exclude: Option<SpanMatch>,
    on_filtered: OnFiltered,
}

impl SpanFilter {
    pub fn new(config: &FilterConfig) -> Self {
        Self {
            include: config.include.clone(),
            exclude: config.exclude.clone(),
            on_filtered: config.on_filtered,
        }
    }

    /// Whether spans left out are dropped quietly or reported to the client as rejected.
    pub fn on_filtered(&self) -> OnFiltered {
        self.on_filtered
    }

    /// Splits `data` into what this sink takes and how many spans it leaves out. Resources
    /// and scopes left without spans are removed; when nothing is left out, `data` is
    /// returned as it came (same bytes).
    pub fn apply(&self, data: TraceData) -> Result<Filtered, WireError> {
        let mut request = data.decode()?;
        let mut filtered = 0;
        for resource in &mut request.resource_spans {
            let resource_attributes = resource
                .resource
                .as_ref()
                .map_or(&[][..], |r| r.attributes.as_slice());
            let service = service_name(resource_attributes);
            for scope in &mut resource.scope_spans {
                let before = scope.spans.len();
                scope
                    .spans
                    .retain(|span| self.keeps(service, resource_attributes, span));
                filtered += before - scope.spans.len();
            }
        }
        if filtered == 0 {
            return Ok(Filtered {
                kept: Some(data),
                filtered,
            });
        }
        for resource in &mut request.resource_spans {
            resource.scope_spans.retain(|s| !s.spans.is_empty());
        }
        request.resource_spans.retain(|r| !r.scope_spans.is_empty());
        let kept = (!request.resource_spans.is_empty()).then(|| TraceData::from_request(&request));
        Ok(Filtered { kept, filtered })
    }

    fn keeps(&self, service: Option<&str>, resource: &[KeyValue], span: &Span) -> bool {
        let included = self
            .include
            .as_ref()
            .is_none_or(|m| matches(m, service, resource, span));
        let excluded = self
            .exclude
            .as_ref()
            .is_some_and(|m| matches(m, service, resource, span));
        included && !excluded
    }
}

/// Every non-empty list must match; a list matches when any of its entries does.
fn matches(m: &SpanMatch, service: Option<&str>, resource: &[KeyValue], span: &Span) -> bool {
    let service_ok =
        m.services.is_empty() || service.is_some_and(|s| m.services.iter().any(|x| x == s));
    let name_ok = m.span_names.is_empty() || m.span_names.contains(&span.name);
    let attribute_ok = m.attributes.is_empty()
        || m.attributes
            .iter()
            .any(|a| has_attribute(&span.attributes, a) || has_attribute(resource, a));
    service_ok && name_ok && attribute_ok
}

fn has_attribute(attributes: &[KeyValue], wanted: &AttributeMatch) -> bool {
    attributes
        .iter()
        .filter(|kv| kv.key == wanted.key)
        .any(|kv| match &wanted.value {
            None => true,
            Some(value) => as_text(kv.value.as_ref()).is_some_and(|text| text == *value),
        })
}

/// An attribute value as the text a config compares it with: strings as they are,
/// integers and booleans as usual (`200`, `true`), doubles in Rust's shortest form
/// (`1.5`, `200` for 200.0). Arrays, maps and bytes have no text form and never match a
/// value (only presence).
fn as_text(value: Option<&AnyValue>) -> Option<Cow<'_, str>> {
    match value?.value.as_ref()? {
        Value::StringValue(s) => Some(Cow::Borrowed(s)),
        Value::IntValue(i) => Some(Cow::Owned(i.to_string())),
        Value::DoubleValue(d) => Some(Cow::Owned(d.to_string())),
        Value::BoolValue(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

fn service_name(resource: &[KeyValue]) -> Option<&str> {
    resource
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    use super::*;
    use crate::chain::test_sinks::{attribute, resource_spans, string_attribute, trace_data};

    fn filter(include: Option<SpanMatch>, exclude: Option<SpanMatch>) -> SpanFilter {
        SpanFilter::new(&FilterConfig {
            include,
            exclude,
            on_filtered: OnFiltered::Drop,
        })
    }

    fn services(names: &[&str]) -> SpanMatch {
        SpanMatch {
            services: names.iter().map(|s| s.to_string()).collect(),
            ..SpanMatch::default()
        }
    }

    fn attributes(pairs: &[(&str, Option<&str>)]) -> SpanMatch {
        SpanMatch {
            attributes: pairs
                .iter()
                .map(|(k, v)| AttributeMatch {
                    key: k.to_string(),
                    value: v.map(str::to_string),
                })
                .collect(),
            ..SpanMatch::default()
        }
    }

    /// Services a (3 spans) and b (2 spans) in one request.
    fn two_services() -> TraceData {
        TraceData::from_request(&ExportTraceServiceRequest {
            resource_spans: vec![resource_spans("a", 3), resource_spans("b", 2)],
        })
    }

    fn names(data: &TraceData) -> Vec<String> {
        data.decode()
            .unwrap()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect()
    }

    #[test]
    fn include_by_service_keeps_only_that_service() {
        let out = filter(Some(services(&["b"])), None)
            .apply(two_services())
            .unwrap();
        assert_eq!(out.filtered, 3);
        let kept = out.kept.unwrap();
        assert_eq!(kept.span_count(), 2);
        assert_eq!(
            kept.decode().unwrap().resource_spans.len(),
            1,
            "empty resource removed"
        );
    }

    #[test]
    fn exclude_by_span_name_leaves_those_out() {
        let exclude = SpanMatch {
            span_names: vec!["span-0".into(), "span-2".into()],
            ..SpanMatch::default()
        };
        let out = filter(None, Some(exclude)).apply(two_services()).unwrap();
        assert_eq!(out.filtered, 3);
        assert_eq!(names(&out.kept.unwrap()), ["span-1", "span-1"]);
    }

    #[test]
    fn include_and_exclude_combine() {
        let exclude = SpanMatch {
            span_names: vec!["span-1".into()],
            ..SpanMatch::default()
        };
        let out = filter(Some(services(&["a"])), Some(exclude))
            .apply(two_services())
            .unwrap();
        assert_eq!(out.filtered, 3);
        assert_eq!(names(&out.kept.unwrap()), ["span-0", "span-2"]);
    }

    #[test]
    fn nothing_left_out_returns_the_same_bytes_and_all_left_out_returns_none() {
        let data = two_services();
        let out = filter(Some(services(&["a", "b"])), None)
            .apply(data.clone())
            .unwrap();
        assert_eq!(out.filtered, 0);
        assert_eq!(out.kept.unwrap().bytes(), data.bytes());

        let out = filter(Some(services(&["c"])), None).apply(data).unwrap();
        assert_eq!(
            out,
            Filtered {
                kept: None,
                filtered: 5
            }
        );
    }

    #[test]
    fn attributes_match_by_their_text_form_on_span_or_resource() {
        let mut request = ExportTraceServiceRequest {
            resource_spans: vec![resource_spans("a", 5)],
        };
        let resource = &mut request.resource_spans[0];
        resource
            .resource
            .as_mut()
            .unwrap()
            .attributes
            .push(string_attribute("deployment.environment", "prod"));
        let spans = &mut resource.scope_spans[0].spans;
        spans[0]
            .attributes
            .push(attribute("http.status_code", Value::IntValue(500)));
        spans[1]
            .attributes
            .push(attribute("error", Value::BoolValue(true)));
        spans[2]
            .attributes
            .push(attribute("ratio", Value::DoubleValue(1.5)));
        spans[3]
            .attributes
            .push(string_attribute("http.method", "GET"));
        let data = TraceData::from_request(&request);

        let keep = |pairs: &[(&str, Option<&str>)]| {
            let out = filter(Some(attributes(pairs)), None)
                .apply(data.clone())
                .unwrap();
            out.kept.map(|k| names(&k)).unwrap_or_default()
        };
        assert_eq!(keep(&[("http.status_code", Some("500"))]), ["span-0"]);
        assert_eq!(keep(&[("error", Some("true"))]), ["span-1"]);
        assert_eq!(keep(&[("ratio", Some("1.5"))]), ["span-2"]);
        assert_eq!(keep(&[("http.method", None)]), ["span-3"]);
        assert_eq!(
            keep(&[("http.status_code", Some("200"))]),
            Vec::<String>::new()
        );
        assert_eq!(
            keep(&[("error", Some("true")), ("http.method", Some("GET"))]),
            ["span-1", "span-3"],
            "any entry of the list"
        );
        assert_eq!(
            keep(&[("deployment.environment", Some("prod"))]).len(),
            5,
            "resource"
        );
    }

    #[test]
    fn a_request_without_service_name_does_not_match_a_service_list() {
        let mut request = ExportTraceServiceRequest {
            resource_spans: vec![resource_spans("a", 2)],
        };
        request.resource_spans[0].resource = None;
        let out = filter(Some(services(&["a"])), None)
            .apply(TraceData::from_request(&request))
            .unwrap();
        assert_eq!(out.filtered, 2);
        let unfiltered = filter(None, Some(services(&["a"])))
            .apply(trace_data("b", 2))
            .unwrap();
        assert_eq!(unfiltered.filtered, 0);
    }
}
