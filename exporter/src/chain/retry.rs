//! Retries transient export failures with exponential backoff and jitter, within
//! `max_attempts` and `max_elapsed`. Not the final outcome: once it gives up it returns
//! the last error, and the layers above decide what happens to the batch.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use spansink_config::RetryConfig;
use tokio::time::Instant;

use crate::otlp::Batch;
use crate::sinks::{SharedSink, Sink, SinkError};
use crate::telemetry::Metrics;

/// The wait before retry number `retry` (1 = after the first failed attempt):
/// `initial_backoff * multiplier^(retry-1)`, capped at `max_backoff`, then spread by
/// `jitter * sample` (`sample` in -1..=1) and capped again, so `max_backoff` really is the
/// longest wait. Pure, so the schedule can be tested exactly.
pub fn backoff(config: &RetryConfig, retry: u32, sample: f64) -> Duration {
    let max = config.max_backoff.get();
    let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
    let base = (config.initial_backoff.get().as_secs_f64() * config.multiplier.powi(exponent))
        .min(max.as_secs_f64());
    let spread = config.jitter * sample.clamp(-1.0, 1.0);
    Duration::try_from_secs_f64(base * (1.0 + spread))
        .unwrap_or(max)
        .min(max)
}

/// Where jitter samples (in -1..=1) come from; injected so tests can fix them.
pub type JitterSource = Arc<dyn Fn() -> f64 + Send + Sync>;

fn random_jitter() -> f64 {
    rand::random_range(-1.0..=1.0)
}

/// Calls the inner sink again after transient failures.
pub struct Retry {
    inner: SharedSink,
    sink: String,
    config: RetryConfig,
    jitter: JitterSource,
    metrics: Metrics,
}

impl Retry {
    pub fn new(inner: SharedSink, sink: &str, config: &RetryConfig, metrics: &Metrics) -> Self {
        Self {
            inner,
            sink: sink.to_string(),
            config: config.clone(),
            jitter: Arc::new(random_jitter),
            metrics: metrics.clone(),
        }
    }

    pub fn with_jitter_source(mut self, jitter: JitterSource) -> Self {
        self.jitter = jitter;
        self
    }
}

#[async_trait]
impl Sink for Retry {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        let start = Instant::now();
        let mut attempt: u32 = 1;
        loop {
            let error = match self.inner.export(batch).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if !error.is_transient() || attempt >= self.config.max_attempts {
                return Err(error);
            }
            let wait = backoff(&self.config, attempt, (self.jitter)());
            // Give up when the next attempt would start after `max_elapsed`.
            if start.elapsed() + wait > self.config.max_elapsed.get() {
                return Err(error);
            }
            self.metrics
                .sink_retried_spans
                .get_or_create(&self.metrics.sink(&self.sink))
                .inc_by(batch.span_count() as u64);
            tracing::debug!(sink = %self.sink, spans = batch.span_count(), attempt,
                backoff_ms = wait.as_millis() as u64, error = %error, "export failed; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn shutdown(&self) -> Result<(), SinkError> {
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use spansink_config::Duration as ConfigDuration;

    use super::*;
    use crate::chain::test_sinks::{TestSink, trace_data};

    fn config(max_attempts: u32, jitter: f64) -> RetryConfig {
        RetryConfig {
            enabled: true,
            max_attempts,
            initial_backoff: ConfigDuration::from_secs(1),
            max_backoff: ConfigDuration::from_secs(30),
            multiplier: 2.0,
            jitter,
            max_elapsed: ConfigDuration::from_secs(300),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn retry(sink: Arc<TestSink>, config: &RetryConfig, m: &Metrics) -> Retry {
        Retry::new(sink, "s", config, m).with_jitter_source(Arc::new(|| 0.0))
    }

    fn retried(m: &Metrics) -> u64 {
        m.sink_retried_spans.get_or_create(&m.sink("s")).get()
    }

    #[test]
    fn schedule_without_jitter_doubles_up_to_the_cap() {
        let c = config(10, 0.0);
        let waits: Vec<_> = (1..=7).map(|r| backoff(&c, r, 0.7)).collect();
        assert_eq!(
            waits,
            [
                secs(1),
                secs(2),
                secs(4),
                secs(8),
                secs(16),
                secs(30),
                secs(30)
            ]
        );
        assert_eq!(backoff(&c, u32::MAX, 0.0), secs(30), "no overflow");
    }

    #[test]
    fn jitter_spreads_within_its_fraction_and_never_past_the_cap() {
        let c = config(10, 0.2);
        assert_eq!(backoff(&c, 3, -1.0), Duration::from_millis(3200));
        assert_eq!(backoff(&c, 3, 1.0), Duration::from_millis(4800));
        assert_eq!(backoff(&c, 6, 1.0), secs(30), "cap holds after jitter");
        assert_eq!(backoff(&c, 6, -1.0), secs(24));
        for _ in 0..1000 {
            let wait = backoff(&c, 2, random_jitter());
            assert!(wait >= Duration::from_millis(1600) && wait <= Duration::from_millis(2400));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_on_schedule() {
        let m = Metrics::for_tests();
        let sink = Arc::new(TestSink::failing_transiently(3));
        let batch: Batch = [trace_data("a", 5)].into_iter().collect();
        retry(sink.clone(), &config(10, 0.0), &m)
            .export(&batch)
            .await
            .unwrap();

        let times = sink.call_times();
        let gaps: Vec<_> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps, [secs(1), secs(2), secs(4)]);
        assert_eq!(sink.spans(), 5);
        assert_eq!(retried(&m), 15, "5 spans x 3 retries");
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let m = Metrics::for_tests();
        let sink = Arc::new(TestSink::failing_permanently());
        let batch: Batch = [trace_data("a", 5)].into_iter().collect();
        let err = retry(sink.clone(), &config(10, 0.0), &m)
            .export(&batch)
            .await
            .unwrap_err();
        assert!(!err.is_transient());
        assert_eq!(sink.calls(), 1);
        assert_eq!(retried(&m), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts() {
        let m = Metrics::for_tests();
        let sink = Arc::new(TestSink::failing_transiently(100));
        let batch: Batch = [trace_data("a", 2)].into_iter().collect();
        let start = Instant::now();
        let err = retry(sink.clone(), &config(4, 0.0), &m)
            .export(&batch)
            .await
            .unwrap_err();
        assert!(err.is_transient());
        assert_eq!(sink.calls(), 4);
        assert_eq!(start.elapsed(), secs(1 + 2 + 4));
        assert_eq!(retried(&m), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_when_the_next_attempt_would_pass_max_elapsed() {
        let m = Metrics::for_tests();
        let sink = Arc::new(TestSink::failing_transiently(100));
        let batch: Batch = [trace_data("a", 1)].into_iter().collect();
        let c = RetryConfig {
            max_elapsed: ConfigDuration::from_secs(10),
            ..config(100, 0.0)
        };
        let start = Instant::now();
        retry(sink.clone(), &c, &m)
            .export(&batch)
            .await
            .unwrap_err();
        // Attempts at 0, 1, 3, 7 s; the next would be at 15 s > 10 s.
        assert_eq!(sink.calls(), 4);
        assert_eq!(start.elapsed(), secs(7));
    }
}
