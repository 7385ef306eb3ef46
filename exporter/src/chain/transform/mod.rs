//! A sink's transform policy: attribute rules (set, insert, update, delete, rename, hash,
//! redact, truncate) and dropping events and links. Not which spans a sink takes (`filter`).
//!
//! It runs in fan-out, after the sink's filter and before its queue, and rewrites the
//! request bytes themselves (once per sink): the queue (a durable one writes these bytes to
//! disk), the encoders reading the wire view and the sinks forwarding the bytes as they are
//! (otlp; kafka and s3 with `otlp_proto`) all see only transformed, i.e. redacted, spans.
//! A fallback sink's transform is applied to the batches handed to it too. A request no
//! rule changes keeps its bytes.

mod attributes;
mod rewrite;
mod rules;
mod values;

use bytes::Bytes;
use spansink_config::{AttributeScope, TransformConfig};

use crate::otlp::{TraceData, WireError};
use crate::telemetry::Metrics;

use rewrite::Rewrite;
use rules::{Action, CompiledRule};

pub use rules::TransformError;

/// One sink's transform, compiled from its config.
#[derive(Debug)]
pub struct SpanTransform {
    rules: Vec<CompiledRule>,
    /// Indexes into `rules` of the attribute rules of each scope, in order.
    span: Vec<usize>,
    resource: Vec<usize>,
    scope: Vec<usize>,
    event: Vec<usize>,
    link: Vec<usize>,
    /// The first `drop_events` / `drop_links` rule (which counts what is dropped).
    drop_events: Option<usize>,
    drop_links: Option<usize>,
}

impl SpanTransform {
    /// Compiles the transform of sink `sink`, reading `hash` salts from the environment.
    pub fn new(
        sink: &str,
        config: &TransformConfig,
        metrics: &Metrics,
    ) -> Result<Self, TransformError> {
        Self::with_env(sink, config, metrics, &|var| std::env::var(var).ok())
    }

    /// As [`SpanTransform::new`], reading salts through `env`.
    pub fn with_env(
        sink: &str,
        config: &TransformConfig,
        metrics: &Metrics,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, TransformError> {
        let mut transform = Self {
            rules: Vec::with_capacity(config.rules.len()),
            span: Vec::new(),
            resource: Vec::new(),
            scope: Vec::new(),
            event: Vec::new(),
            link: Vec::new(),
            drop_events: None,
            drop_links: None,
        };
        for (i, rule) in config.rules.iter().enumerate() {
            let compiled = CompiledRule::new(sink, i, rule, metrics, env)?;
            match compiled.action {
                Action::DropEvents => {
                    transform.drop_events.get_or_insert(i);
                }
                Action::DropLinks => {
                    transform.drop_links.get_or_insert(i);
                }
                _ => match compiled.scope {
                    AttributeScope::Span => transform.span.push(i),
                    AttributeScope::Resource => transform.resource.push(i),
                    AttributeScope::Scope => transform.scope.push(i),
                    AttributeScope::Event => transform.event.push(i),
                    AttributeScope::Link => transform.link.push(i),
                },
            }
            transform.rules.push(compiled);
        }
        Ok(transform)
    }

    /// `data` with the rules applied, and each rule's changes counted. Fails only on bytes
    /// the receiver's scan would have refused.
    pub fn apply(&self, data: TraceData) -> Result<TraceData, WireError> {
        let mut rewrite = Rewrite::new(self);
        let rewritten = rewrite.request(data.bytes())?;
        for (rule, &n) in self.rules.iter().zip(&rewrite.counts) {
            if n > 0 {
                rule.changes.inc_by(n);
            }
        }
        Ok(match rewritten {
            None => data,
            Some(bytes) => data.rewritten(Bytes::from(bytes)),
        })
    }
}

#[cfg(test)]
mod tests;
