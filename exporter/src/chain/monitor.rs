//! Measures every export attempt: `sink_export_duration_seconds{sink,outcome}`. Not the
//! final outcome of a batch (sent, failed, dropped): the worker counts that once.

use async_trait::async_trait;
use tokio::time::Instant;

use crate::otlp::Batch;
use crate::sinks::{SharedSink, Sink, SinkError};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::OutcomeLabels;

/// Records the duration and outcome of each call to the inner sink.
pub struct Monitor {
    inner: SharedSink,
    sink: String,
    metrics: Metrics,
}

impl Monitor {
    pub fn new(inner: SharedSink, sink: &str, metrics: &Metrics) -> Self {
        Self {
            inner,
            sink: sink.to_string(),
            metrics: metrics.clone(),
        }
    }
}

/// The `outcome` label of one attempt.
pub fn outcome(result: &Result<(), SinkError>) -> &'static str {
    match result {
        Ok(()) => "success",
        Err(e) if e.reason() == "timeout" => "timeout",
        Err(e) if e.is_transient() => "transient_error",
        Err(_) => "permanent_error",
    }
}

#[async_trait]
impl Sink for Monitor {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        let start = Instant::now();
        let result = self.inner.export(batch).await;
        self.metrics
            .sink_export_duration
            .get_or_create(&OutcomeLabels {
                sink: self.sink.clone(),
                outcome: outcome(&result),
            })
            .observe(start.elapsed().as_secs_f64());
        result
    }

    async fn shutdown(&self) -> Result<(), SinkError> {
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::chain::test_sinks::{TestSink, trace_data};

    #[tokio::test(start_paused = true)]
    async fn records_each_attempt_by_outcome() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let batch: Batch = [trace_data("a", 1)].into_iter().collect();
        let ok = Monitor::new(
            Arc::new(TestSink::slow(Duration::from_secs(3))),
            "s",
            &metrics,
        );
        ok.export(&batch).await.unwrap();
        let bad = Monitor::new(Arc::new(TestSink::failing_permanently()), "s", &metrics);
        bad.export(&batch).await.unwrap_err();

        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"spansink_sink_export_duration_seconds_sum{sink="s",outcome="success"} 3.0"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"spansink_sink_export_duration_seconds_count{sink="s",outcome="permanent_error"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn timeouts_have_their_own_outcome() {
        assert_eq!(
            outcome(&Err(SinkError::transient("timeout", "slow"))),
            "timeout"
        );
        assert_eq!(
            outcome(&Err(SinkError::transient("io", "reset"))),
            "transient_error"
        );
    }
}
