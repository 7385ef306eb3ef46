//! Paces exports to `spans_per_second` with a token bucket of `burst` spans: a batch
//! waits until its spans' tokens are there. Not the concurrency limit (the worker's).

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::otlp::Batch;
use crate::sinks::{SharedSink, Sink, SinkError};
use crate::telemetry::Metrics;

/// Token bucket in front of the inner sink.
pub struct RateLimit {
    inner: SharedSink,
    sink: String,
    /// Tokens (spans) added per second.
    rate: f64,
    /// Bucket size: the most spans that can go at once after a quiet period.
    burst: f64,
    // A tokio mutex held while waiting: exports get their tokens in arrival order, and a
    // big batch is not starved by small ones taking tokens as they trickle in.
    bucket: Mutex<Bucket>,
    metrics: Metrics,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: f64, burst: f64) {
        let now = Instant::now();
        let earned = (now - self.updated).as_secs_f64() * rate;
        self.tokens = (self.tokens + earned).min(burst);
        self.updated = now;
    }
}

impl RateLimit {
    /// Starts with a full bucket. Zero values (rejected by config validation) are raised to 1.
    pub fn new(
        inner: SharedSink,
        sink: &str,
        spans_per_second: u64,
        burst: u64,
        metrics: &Metrics,
    ) -> Self {
        let burst = burst.max(1) as f64;
        Self {
            inner,
            sink: sink.to_string(),
            rate: spans_per_second.max(1) as f64,
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                updated: Instant::now(),
            }),
            metrics: metrics.clone(),
        }
    }

    /// Waits for `spans` tokens and takes them. A batch larger than the bucket asks for a
    /// full bucket, or it could never go.
    async fn acquire(&self, spans: usize) {
        let start = Instant::now();
        let need = (spans as f64).min(self.burst);
        let mut bucket = self.bucket.lock().await;
        bucket.refill(self.rate, self.burst);
        if bucket.tokens < need {
            let wait = Duration::from_secs_f64((need - bucket.tokens) / self.rate);
            tokio::time::sleep(wait).await;
            bucket.refill(self.rate, self.burst);
        }
        // Float rounding may leave a hair below zero; the next refill repays it.
        bucket.tokens -= need;
        drop(bucket);
        let waited = start.elapsed();
        if !waited.is_zero() {
            self.metrics
                .sink_rate_limit_wait_seconds
                .get_or_create(&self.metrics.sink(&self.sink))
                .inc_by(waited.as_secs_f64());
        }
    }
}

#[async_trait]
impl Sink for RateLimit {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        self.acquire(batch.span_count()).await;
        self.inner.export(batch).await
    }

    async fn shutdown(&self) -> Result<(), SinkError> {
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::chain::test_sinks::{TestSink, trace_data};

    fn batch(spans: usize) -> Batch {
        [trace_data("a", spans)].into_iter().collect()
    }

    #[tokio::test(start_paused = true)]
    async fn paces_batches_to_the_rate_after_the_burst() {
        let m = Metrics::for_tests();
        let sink = Arc::new(TestSink::recording());
        let limit = RateLimit::new(sink.clone(), "s", 1000, 512, &m);
        let start = Instant::now();
        for _ in 0..5 {
            limit.export(&batch(512)).await.unwrap();
        }
        // The first batch empties the full bucket; each next one waits 512 / 1000 s.
        let offsets: Vec<_> = sink.call_times().iter().map(|t| *t - start).collect();
        let expected: Vec<_> = (0..5).map(|i| Duration::from_millis(512 * i)).collect();
        assert_eq!(offsets, expected);
        let waited = m
            .sink_rate_limit_wait_seconds
            .get_or_create(&m.sink("s"))
            .get();
        assert!((waited - 2.048).abs() < 1e-6, "{waited}");
    }

    #[tokio::test(start_paused = true)]
    async fn small_batches_use_the_burst_then_the_rate() {
        let sink = Arc::new(TestSink::recording());
        let limit = RateLimit::new(sink.clone(), "s", 100, 200, &Metrics::for_tests());
        let start = Instant::now();
        for _ in 0..4 {
            limit.export(&batch(100)).await.unwrap(); // 2 from the burst, 2 at 1 s each
        }
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        tokio::time::sleep(Duration::from_secs(60)).await; // refills only up to the burst
        let again = Instant::now();
        for _ in 0..3 {
            limit.export(&batch(100)).await.unwrap();
        }
        assert_eq!(again.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_larger_than_the_burst_waits_for_a_full_bucket_only() {
        let sink = Arc::new(TestSink::recording());
        let limit = RateLimit::new(sink.clone(), "s", 100, 50, &Metrics::for_tests());
        let start = Instant::now();
        limit.export(&batch(500)).await.unwrap();
        limit.export(&batch(500)).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        assert_eq!(sink.spans(), 1000);
    }
}
