//! Hands a batch the sink finally failed to deliver to another sink's queue, where that
//! sink's own chain (batching, retries, ...) takes over. Not retries: this sits above them.
//!
//! The result is passed through unchanged: `Err` still means "this sink did not deliver
//! it" (the worker counts `sink_failed_spans`). What became of the spans is counted here:
//! `sink_fallback_spans` for what the fallback's queue took, and
//! `sink_dropped_spans{reason="fallback_refused"}` for what it refused.

use std::sync::Arc;

use async_trait::async_trait;

use super::queue::SpanQueue;
use crate::otlp::Batch;
use crate::sinks::{SharedSink, Sink, SinkError};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{FallbackLabels, SinkReasonLabels};

/// On failure of the inner sink, pushes the batch into `target`'s queue.
pub struct Fallback {
    inner: SharedSink,
    sink: String,
    fallback: String,
    target: Arc<dyn SpanQueue>,
    metrics: Metrics,
}

impl Fallback {
    pub fn new(
        inner: SharedSink,
        sink: &str,
        fallback: &str,
        target: Arc<dyn SpanQueue>,
        metrics: &Metrics,
    ) -> Self {
        Self {
            inner,
            sink: sink.to_string(),
            fallback: fallback.to_string(),
            target,
            metrics: metrics.clone(),
        }
    }

    async fn hand_over(&self, batch: &Batch, error: &SinkError) {
        let (mut handed, mut refused, mut refusal) = (0, 0, None);
        // Part by part, as they arrived: each is a valid request on its own.
        for part in batch.parts() {
            match self.target.push(part.clone()).await {
                Ok(()) => handed += part.span_count(),
                Err(e) => {
                    refused += part.span_count();
                    refusal = Some(e);
                }
            }
        }
        if handed > 0 {
            self.metrics
                .sink_fallback_spans
                .get_or_create(&FallbackLabels {
                    sink: self.sink.clone(),
                    fallback: self.fallback.clone(),
                })
                .inc_by(handed as u64);
        }
        if let Some(refusal) = refusal {
            self.metrics
                .sink_dropped_spans
                .get_or_create(&SinkReasonLabels {
                    sink: self.sink.clone(),
                    reason: "fallback_refused",
                })
                .inc_by(refused as u64);
            tracing::error!(sink = %self.sink, fallback = %self.fallback, spans = refused,
                error = %error, refusal = %refusal,
                "export failed and the fallback sink refused the spans; they are lost");
        }
    }
}

#[async_trait]
impl Sink for Fallback {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        let result = self.inner.export(batch).await;
        if let Err(error) = &result {
            self.hand_over(batch, error).await;
        }
        result
    }

    async fn shutdown(&self) -> Result<(), SinkError> {
        // Only the sink this wraps: the fallback sink is shut down by its own chain.
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use spansink_config::{QueueConfig, RetryConfig, WhenFull};

    use super::*;
    use crate::chain::queue::MemoryQueue;
    use crate::chain::retry::Retry;
    use crate::chain::test_sinks::{TestSink, trace_data};

    fn target(max_spans: u64, m: &Metrics) -> Arc<MemoryQueue> {
        let config = QueueConfig {
            max_spans,
            when_full: WhenFull::Reject,
            ..QueueConfig::default()
        };
        Arc::new(MemoryQueue::new("dlq", &config, m))
    }

    fn handed(m: &Metrics) -> u64 {
        m.sink_fallback_spans
            .get_or_create(&FallbackLabels {
                sink: "main".into(),
                fallback: "dlq".into(),
            })
            .get()
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_goes_to_the_fallback_at_once_without_retries() {
        let m = Metrics::for_tests();
        let primary = Arc::new(TestSink::failing_permanently());
        let retry = Arc::new(Retry::new(
            primary.clone(),
            "main",
            &RetryConfig::default(),
            &m,
        ));
        let dlq = target(100, &m);
        let fallback = Fallback::new(retry, "main", "dlq", dlq.clone(), &m);

        let batch: Batch = [trace_data("a", 3), trace_data("b", 4)]
            .into_iter()
            .collect();
        let err = fallback.export(&batch).await.unwrap_err();
        assert!(!err.is_transient(), "the primary's error is passed through");
        assert_eq!(primary.calls(), 1);
        assert_eq!(handed(&m), 7);
        dlq.close();
        assert_eq!(dlq.pop().await.unwrap().data, batch.parts()[0]);
        assert_eq!(dlq.pop().await.unwrap().data, batch.parts()[1]);
        assert!(dlq.pop().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn only_failed_batches_are_handed_over() {
        let m = Metrics::for_tests();
        let primary = Arc::new(TestSink::failing_transiently(1)); // first call fails
        let dlq = target(100, &m);
        let fallback = Fallback::new(primary.clone(), "main", "dlq", dlq.clone(), &m);
        let failed: Batch = [trace_data("a", 2)].into_iter().collect();
        let delivered: Batch = [trace_data("b", 5)].into_iter().collect();
        assert!(fallback.export(&failed).await.is_err());
        fallback.export(&delivered).await.unwrap();
        assert_eq!(handed(&m), 2);
        assert_eq!(primary.spans(), 5);
        dlq.close();
        assert_eq!(dlq.pop().await.unwrap().data, failed.parts()[0]);
        assert!(dlq.pop().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn what_the_fallback_refuses_is_counted_as_dropped() {
        let m = Metrics::for_tests();
        let dlq = target(5, &m);
        let fallback = Fallback::new(
            Arc::new(TestSink::failing_permanently()),
            "main",
            "dlq",
            dlq,
            &m,
        );
        // 4 fit; then 3 do not (4 + 3 > 5) and are refused.
        let batch: Batch = [trace_data("a", 4), trace_data("b", 3)]
            .into_iter()
            .collect();
        assert!(fallback.export(&batch).await.is_err());
        assert_eq!(handed(&m), 4);
        let dropped = m
            .sink_dropped_spans
            .get_or_create(&SinkReasonLabels {
                sink: "main".into(),
                reason: "fallback_refused",
            })
            .get();
        assert_eq!(dropped, 3);
    }
}
