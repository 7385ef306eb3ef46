//! The canonical flat span: one span with its resource and scope, as a borrowed view over
//! a decoded request (no cloning), plus the field list and enum names every encoding uses.
//! Not an encoding itself: `json`, `csv` (and later SQL rows) render this view.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, EntityRef, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};

use crate::otlp::view::GroupView;

/// The fields of a flat span, in the order every encoding writes them: JSON object keys,
/// CSV header columns, and (later) SQL column names.
///
/// - ids are lowercase hex (`""` when absent);
/// - `kind` is one of [`SPAN_KINDS`], `status_code` one of [`STATUS_CODES`] (a value
///   outside the enum is written as its decimal number in text, e.g. `"7"`);
/// - times are integer nanoseconds since the Unix epoch; `duration_ns` is
///   `end - start` (0 when end precedes start) and `service_name` is the resource's
///   `service.name` string attribute (`""` when absent): both are derived, for queries;
/// - attribute lists keep their value types (see `encoding::attributes`).
pub const FIELDS: [&str; 28] = [
    "service_name",
    "trace_id",
    "span_id",
    "parent_span_id",
    "trace_state",
    "flags",
    "name",
    "kind",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "duration_ns",
    "status_code",
    "status_message",
    "attributes",
    "dropped_attributes_count",
    "events",
    "dropped_events_count",
    "links",
    "dropped_links_count",
    "resource_attributes",
    "resource_dropped_attributes_count",
    "resource_entity_refs",
    "resource_schema_url",
    "scope_name",
    "scope_version",
    "scope_attributes",
    "scope_dropped_attributes_count",
    "scope_schema_url",
];

/// `SpanKind` names, indexed by the enum value. Short lowercase names (`server`, not
/// `SPAN_KIND_SERVER`): they read naturally in queries (`kind = 'server'`) and match
/// the names of the OpenTelemetry API.
pub const SPAN_KINDS: [&str; 6] = [
    "unspecified",
    "internal",
    "server",
    "client",
    "producer",
    "consumer",
];

/// `Status.code` names, indexed by the enum value.
pub const STATUS_CODES: [&str; 3] = ["unset", "ok", "error"];

/// The resource attribute that names the service.
pub const SERVICE_NAME_KEY: &str = "service.name";

/// The name of an enum value, or `None` for a value outside `names`.
pub fn enum_name(names: &'static [&'static str], value: i32) -> Option<&'static str> {
    usize::try_from(value)
        .ok()
        .and_then(|i| names.get(i).copied())
}

/// The enum value of a name from `names`, or of a decimal number (a value outside the
/// enum, as written by the encoders).
pub fn enum_value(names: &[&str], text: &str) -> Option<i32> {
    match names.iter().position(|n| *n == text) {
        Some(i) => i32::try_from(i).ok(),
        None => text.parse().ok(),
    }
}

/// The spans of one `ScopeSpans` with the resource and scope they share. Encoders render
/// the shared part once per group, not once per span.
#[derive(Debug, Clone, Copy)]
pub struct ScopeGroup<'a> {
    resource: Option<&'a Resource>,
    resource_schema_url: &'a str,
    scope: Option<&'a InstrumentationScope>,
    scope_schema_url: &'a str,
    service_name: &'a str,
    spans: &'a [Span],
}

impl<'a> ScopeGroup<'a> {
    /// A group from its parts; `service_name` is derived from the resource's attributes.
    pub fn new(
        resource: Option<&'a Resource>,
        resource_schema_url: &'a str,
        scope: Option<&'a InstrumentationScope>,
        scope_schema_url: &'a str,
        spans: &'a [Span],
    ) -> Self {
        Self {
            resource,
            resource_schema_url,
            scope,
            scope_schema_url,
            service_name: resource.map_or("", |r| service_name(&r.attributes)),
            spans,
        }
    }

    /// The group of a request read through [`crate::otlp::view`]: its spans are read from
    /// the view, so [`spans`](Self::spans) is empty.
    pub fn of_view<'v: 'a>(group: &GroupView<'a, 'v>) -> Self {
        Self::new(
            group.resource,
            group.resource_schema_url,
            group.scope,
            group.scope_schema_url,
            &[],
        )
    }

    pub fn spans(&self) -> &'a [Span] {
        self.spans
    }

    pub fn service_name(&self) -> &'a str {
        self.service_name
    }

    pub fn resource_attributes(&self) -> &'a [KeyValue] {
        self.resource.map_or(&[], |r| &r.attributes)
    }

    pub fn resource_dropped_attributes_count(&self) -> u32 {
        self.resource.map_or(0, |r| r.dropped_attributes_count)
    }

    pub fn resource_entity_refs(&self) -> &'a [EntityRef] {
        self.resource.map_or(&[], |r| &r.entity_refs)
    }

    pub fn resource_schema_url(&self) -> &'a str {
        self.resource_schema_url
    }

    pub fn scope_name(&self) -> &'a str {
        self.scope.map_or("", |s| &s.name)
    }

    pub fn scope_version(&self) -> &'a str {
        self.scope.map_or("", |s| &s.version)
    }

    pub fn scope_attributes(&self) -> &'a [KeyValue] {
        self.scope.map_or(&[], |s| &s.attributes)
    }

    pub fn scope_dropped_attributes_count(&self) -> u32 {
        self.scope.map_or(0, |s| s.dropped_attributes_count)
    }

    pub fn scope_schema_url(&self) -> &'a str {
        self.scope_schema_url
    }
}

/// One span with its resource and scope: the unit every row or JSON encoding writes.
/// The span's own fields are read from [`FlatSpan::span`]; derived and enum fields have
/// accessors here so every encoding derives them the same way.
#[derive(Debug, Clone, Copy)]
pub struct FlatSpan<'a> {
    pub group: ScopeGroup<'a>,
    pub span: &'a Span,
}

impl<'a> FlatSpan<'a> {
    /// `end - start` in nanoseconds; 0 when the end precedes the start.
    pub fn duration_ns(&self) -> u64 {
        duration_ns(self.span)
    }

    /// The kind's name, `None` for a value outside the enum.
    pub fn kind_name(&self) -> Option<&'static str> {
        enum_name(&SPAN_KINDS, self.span.kind)
    }

    pub fn status_code(&self) -> i32 {
        status(self.span).0
    }

    /// The status code's name, `None` for a value outside the enum.
    pub fn status_code_name(&self) -> Option<&'static str> {
        enum_name(&STATUS_CODES, self.status_code())
    }

    pub fn status_message(&self) -> &'a str {
        status(self.span).1
    }

    pub fn service_name(&self) -> &'a str {
        self.group.service_name
    }
}

/// `end - start` in nanoseconds; 0 when the end precedes the start. Encoders that get a
/// bare span call this, so every encoding derives the duration the same way.
pub fn duration_ns(span: &Span) -> u64 {
    span.end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano)
}

/// The status code and message; an absent status reads as unset with no message.
pub fn status(span: &Span) -> (i32, &str) {
    span.status
        .as_ref()
        .map_or((0, ""), |s: &Status| (s.code, s.message.as_str()))
}

/// The scope groups of a request, in order.
pub fn scope_groups(request: &ExportTraceServiceRequest) -> impl Iterator<Item = ScopeGroup<'_>> {
    request.resource_spans.iter().flat_map(|rs| {
        let resource = rs.resource.as_ref();
        rs.scope_spans.iter().map(move |ss| {
            ScopeGroup::new(
                resource,
                &rs.schema_url,
                ss.scope.as_ref(),
                &ss.schema_url,
                &ss.spans,
            )
        })
    })
}

/// Every span of a request as a flat span, in order.
pub fn flat_spans(request: &ExportTraceServiceRequest) -> impl Iterator<Item = FlatSpan<'_>> {
    scope_groups(request)
        .flat_map(|group| group.spans.iter().map(move |span| FlatSpan { group, span }))
}

/// The `service.name` string attribute, `""` when absent or not a string.
pub fn service_name(resource_attributes: &[KeyValue]) -> &str {
    resource_attributes
        .iter()
        .find(|kv| kv.key == SERVICE_NAME_KEY)
        .and_then(|kv| match kv.value.as_ref() {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(s)),
            }) => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or("")
}
