//! Per-call deadline: an export that takes longer than the sink's `timeout` is abandoned
//! and reported as a transient `timeout` error. Not retries: the retry layer decides.

use std::time::Duration;

use async_trait::async_trait;

use crate::otlp::Batch;
use crate::sinks::{SharedSink, Sink, SinkError};

/// Bounds each call to the inner sink by `limit`.
pub struct Timeout {
    inner: SharedSink,
    sink: String,
    limit: Duration,
}

impl Timeout {
    pub fn new(inner: SharedSink, sink: &str, limit: Duration) -> Self {
        Self {
            inner,
            sink: sink.to_string(),
            limit,
        }
    }
}

#[async_trait]
impl Sink for Timeout {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        match tokio::time::timeout(self.limit, self.inner.export(batch)).await {
            Ok(result) => result,
            // Transient: a slow backend may well answer in time on the next attempt.
            Err(_) => Err(SinkError::transient(
                "timeout",
                format!(
                    "export to sink {:?} did not finish within {:?}; check the backend or raise sinks.{}.timeout",
                    self.sink, self.limit, self.sink
                ),
            )),
        }
    }

    async fn shutdown(&self) -> Result<(), SinkError> {
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::time::Instant;

    use super::*;
    use crate::chain::test_sinks::{TestSink, trace_data};

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_is_cut_at_the_limit_as_a_transient_timeout() {
        let slow = Arc::new(TestSink::slow(Duration::from_secs(60)));
        let timeout = Timeout::new(slow.clone(), "s", Duration::from_secs(2));
        let batch = [trace_data("a", 1)].into_iter().collect();
        let start = Instant::now();
        let err = timeout.export(&batch).await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert!(err.is_transient());
        assert_eq!(err.reason(), "timeout");
        assert!(err.to_string().contains("sinks.s.timeout"), "{err}");
        assert!(slow.batches().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_within_the_limit_passes_its_result_through() {
        let sink = Arc::new(TestSink::slow(Duration::from_secs(1)));
        let timeout = Timeout::new(sink.clone(), "s", Duration::from_secs(2));
        let batch = [trace_data("a", 3)].into_iter().collect();
        timeout.export(&batch).await.unwrap();
        assert_eq!(sink.spans(), 3);

        let failing = Timeout::new(
            Arc::new(TestSink::failing_permanently()),
            "s",
            Duration::from_secs(2),
        );
        assert!(!failing.export(&batch).await.unwrap_err().is_transient());
    }
}
