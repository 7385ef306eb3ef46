//! A sink's export loop: batches from its queue go through its policy stack, at most
//! `max_concurrent_exports` at once, and each batch's final outcome is counted once here.
//! Not the policies themselves (see the layers) nor their order (see the builder).
//!
//! Outcome accounting, one count per span per sink:
//! - the stack returned `Ok`: `sink_sent_spans`;
//! - it returned `Err`: `sink_failed_spans{reason}`; without a fallback the spans are also
//!   `sink_dropped_spans{reason="no_fallback"}`, with one the fallback layer has counted
//!   them as `sink_fallback_spans` or `sink_dropped_spans{reason="fallback_refused"}`.
//!
//! So `failed = fallback + dropped{no_fallback} + dropped{fallback_refused}`, and every
//! received span ends as sent, fallback or dropped (or is still pending).
//!
//! With `acknowledgements: delivered`, once a batch's entries are committed the worker
//! resolves its waiting clients' completions: delivered, failed with the sink's error, or
//! handed to the fallback with the parts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use spansink_config::BatchConfig;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::batch::{Batcher, ReadyBatch};
use super::fallback::Fallback;
use super::queue::SpanQueue;
use crate::sinks::SharedSink;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::SinkReasonLabels;

/// The per-sink task. Built by the chain builder, run by `Chain::start`.
pub struct Worker {
    batcher: Batcher,
    slots: Arc<Semaphore>,
    exporter: Arc<Exporter>,
}

/// What each export task needs.
struct Exporter {
    sink: String,
    queue: Arc<dyn SpanQueue>,
    stack: SharedSink,
    fallback: Option<Fallback>,
    metrics: Metrics,
    sent: Arc<AtomicU64>,
}

impl Worker {
    /// `stack` is the sink wrapped in its policies; `fallback` takes the batches the
    /// stack finally failed to deliver, if the sink has one.
    pub fn new(
        sink: &str,
        queue: Arc<dyn SpanQueue>,
        batch: &BatchConfig,
        stack: SharedSink,
        max_concurrent_exports: u32,
        fallback: Option<Fallback>,
        metrics: &Metrics,
    ) -> Self {
        let slots = usize::try_from(max_concurrent_exports)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            batcher: Batcher::new(sink, queue.clone(), batch),
            slots: Arc::new(Semaphore::new(slots)),
            exporter: Arc::new(Exporter {
                sink: sink.to_string(),
                queue,
                stack,
                fallback,
                metrics: metrics.clone(),
                sent: Arc::new(AtomicU64::new(0)),
            }),
        }
    }

    /// Spans this worker has delivered so far; readable while it runs.
    pub fn sent_counter(&self) -> Arc<AtomicU64> {
        self.exporter.sent.clone()
    }

    /// Runs until the queue is closed and drained and every export has finished.
    pub async fn run(self) {
        self.run_until(CancellationToken::new()).await
    }

    /// [`Worker::run`], or until `stop` is cancelled: then the exports in flight are
    /// cancelled and waited for, so that when this returns nothing of this worker still
    /// calls the backend (the next generation of a sink on the same durable queue may
    /// start right after). What they held stays uncommitted in the queue.
    pub async fn run_until(mut self, stop: CancellationToken) {
        let mut exports = JoinSet::new();
        loop {
            // Take an export slot before forming the batch: while all slots are busy,
            // spans wait in the (bounded, measured) queue and the next batch is formed
            // from the freshest backlog.
            let slot = tokio::select! {
                biased;
                _ = stop.cancelled() => return exports.shutdown().await,
                slot = self.slots.clone().acquire_owned() => slot,
            };
            let Ok(slot) = slot else {
                break; // the semaphore is never closed
            };
            while let Some(done) = exports.try_join_next() {
                self.exporter.report_panic(done);
            }
            let ready = tokio::select! {
                biased;
                _ = stop.cancelled() => return exports.shutdown().await,
                ready = self.batcher.next() => ready,
            };
            let Some(ready) = ready else {
                break;
            };
            exports.spawn(self.exporter.clone().export(ready, slot));
        }
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return exports.shutdown().await,
                done = exports.join_next() => match done {
                    Some(done) => self.exporter.report_panic(done),
                    None => return,
                },
            }
        }
    }
}

impl Exporter {
    async fn export(self: Arc<Self>, mut ready: ReadyBatch, _slot: OwnedSemaphorePermit) {
        let spans = ready.batch.span_count();
        let completions = ready.take_completions();
        let labels = self.metrics.sink(&self.sink);
        self.metrics
            .sink_batch_spans
            .get_or_create(&labels)
            .observe(spans as f64);
        let result = {
            let _in_flight = InFlight::enter(
                self.metrics
                    .sink_inflight_exports
                    .get_or_create(&labels)
                    .clone(),
            );
            self.stack.export(&ready.batch).await
        };
        // The waiting clients' completions, unless handed to the fallback with the parts.
        let mut completions = Some(completions);
        match &result {
            Ok(()) => {
                self.sent.fetch_add(spans as u64, Ordering::Relaxed);
                self.metrics
                    .sink_sent_spans
                    .get_or_create(&labels)
                    .inc_by(spans as u64);
            }
            Err(error) => {
                self.count(&self.metrics.sink_failed_spans, error.reason(), spans);
                match &self.fallback {
                    Some(fallback) => {
                        tracing::warn!(sink = %self.sink, spans, fallback = %fallback.name(),
                            error = %error, "export failed; batch offered to the fallback sink");
                        let completions = completions.take().unwrap_or_default();
                        fallback.hand_over(&ready.batch, completions, error).await;
                    }
                    None => {
                        self.count(&self.metrics.sink_dropped_spans, "no_fallback", spans);
                        tracing::warn!(sink = %self.sink, spans, error = %error,
                            "export failed and the sink has no fallback; spans dropped");
                    }
                }
            }
        }
        // Delivered, handed on or given up: the queue may forget these entries now.
        for id in ready.finished_entries() {
            self.queue.commit(id).await;
        }
        // Committed: now the waiting clients may hear how it went.
        for (_, completion) in completions.into_iter().flatten() {
            match &result {
                Ok(()) => completion.delivered(),
                Err(error) => completion.failed(&self.sink, error),
            }
        }
    }

    fn count(
        &self,
        family: &Family<SinkReasonLabels, Counter>,
        reason: &'static str,
        spans: usize,
    ) {
        family
            .get_or_create(&SinkReasonLabels {
                sink: self.sink.clone(),
                reason,
            })
            .inc_by(spans as u64);
    }

    fn report_panic(&self, done: Result<(), tokio::task::JoinError>) {
        if let Err(e) = done {
            // Its entries stay uncommitted and are counted at shutdown.
            tracing::error!(sink = %self.sink, error = %e, "export task panicked; its batch is lost");
        }
    }
}

/// `sink_inflight_exports` up while alive, down when dropped (also when the export is
/// cancelled at the shutdown deadline).
struct InFlight(Gauge);

impl InFlight {
    fn enter(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use spansink_config::{ByteSize, QueueConfig, WhenFull};
    use tokio::time::Instant;

    use super::*;
    use crate::chain::queue::MemoryQueue;
    use crate::chain::test_sinks::{TestSink, trace_data};

    fn queue(m: &Metrics) -> Arc<MemoryQueue> {
        let config = QueueConfig {
            max_spans: 10_000,
            when_full: WhenFull::Reject,
            ..QueueConfig::default()
        };
        Arc::new(MemoryQueue::new("s", &config, m))
    }

    fn batches_of(spans: u64) -> BatchConfig {
        BatchConfig {
            max_spans: spans,
            max_bytes: ByteSize::mib(8),
            flush_interval: spansink_config::Duration::from_secs(5),
        }
    }

    fn counter(family: &Family<SinkReasonLabels, Counter>, reason: &'static str) -> u64 {
        family
            .get_or_create(&SinkReasonLabels {
                sink: "s".into(),
                reason,
            })
            .get()
    }

    #[tokio::test(start_paused = true)]
    async fn exports_at_most_the_configured_number_at_once() {
        let m = Metrics::for_tests();
        let q = queue(&m);
        let sink = Arc::new(TestSink::slow(Duration::from_secs(1)));
        for _ in 0..6 {
            q.push(trace_data("a", 10)).await.unwrap();
        }
        q.close();
        let worker = Worker::new("s", q.clone(), &batches_of(10), sink.clone(), 2, None, &m);
        let inflight = m.sink_inflight_exports.get_or_create(&m.sink("s")).clone();
        let run = tokio::spawn(worker.run());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(inflight.get(), 2);
        let start = Instant::now();
        run.await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(2500),
            "6 batches, 2 at a time, 1 s each"
        );
        assert_eq!(sink.max_in_flight(), 2);
        assert_eq!(sink.batch_sizes(), [10; 6]);
        assert_eq!(inflight.get(), 0);
        assert_eq!(m.sink_sent_spans.get_or_create(&m.sink("s")).get(), 60);
        assert_eq!(q.pending_spans(), 0, "every entry committed");
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_cancels_the_exports_in_flight_and_waits_for_them() {
        let m = Metrics::for_tests();
        let q = queue(&m);
        for _ in 0..3 {
            q.push(trace_data("a", 10)).await.unwrap();
        }
        let sink = Arc::new(TestSink::slow(Duration::from_secs(3600)));
        let worker = Worker::new("s", q.clone(), &batches_of(10), sink.clone(), 2, None, &m);
        let stop = CancellationToken::new();
        let run = tokio::spawn(worker.run_until(stop.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(sink.in_flight(), 2);
        stop.cancel();
        run.await.unwrap();
        assert_eq!(sink.in_flight(), 0, "no call of this worker outlives it");
        assert_eq!(m.sink_inflight_exports.get_or_create(&m.sink("s")).get(), 0);
        assert_eq!(q.pending_spans(), 30, "nothing was committed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_without_fallback_is_failed_and_dropped_once() {
        let m = Metrics::for_tests();
        let q = queue(&m);
        q.push(trace_data("a", 7)).await.unwrap();
        q.close();
        let sink = Arc::new(TestSink::failing_permanently());
        let worker = Worker::new("s", q.clone(), &batches_of(100), sink, 1, None, &m);
        worker.run().await;
        assert_eq!(counter(&m.sink_failed_spans, "rejected"), 7);
        assert_eq!(counter(&m.sink_dropped_spans, "no_fallback"), 7);
        assert_eq!(m.sink_sent_spans.get_or_create(&m.sink("s")).get(), 0);
        assert_eq!(q.pending_spans(), 0, "given up is committed too");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_with_fallback_is_failed_but_not_dropped_here() {
        let m = Metrics::for_tests();
        let q = queue(&m);
        q.push(trace_data("a", 7)).await.unwrap();
        q.close();
        let sink = Arc::new(TestSink::failing_permanently());
        let dlq = queue(&m);
        let fallback = Fallback::new("s", "dlq", dlq.clone(), &m);
        let worker = Worker::new(
            "s",
            q.clone(),
            &batches_of(100),
            sink,
            1,
            Some(fallback),
            &m,
        );
        worker.run().await;
        assert_eq!(counter(&m.sink_failed_spans, "rejected"), 7);
        assert_eq!(counter(&m.sink_dropped_spans, "no_fallback"), 0);
        assert_eq!(dlq.pending_spans(), 7, "handed to the fallback's queue");
        assert_eq!(q.pending_spans(), 0, "and committed here");
    }

    #[tokio::test(start_paused = true)]
    async fn completions_are_resolved_after_the_commit_with_the_outcome() {
        use crate::chain::acknowledgement::{AckRequest, Tracker, Undelivered};

        let m = Metrics::for_tests();
        let q = queue(&m);
        let (ok, failing) = (Tracker::new(), Tracker::new());
        q.push_acked(
            trace_data("a", 2),
            AckRequest::Delivered(ok.completion("s")),
        )
        .await
        .unwrap();
        q.close();
        Worker::new(
            "s",
            q.clone(),
            &batches_of(100),
            Arc::new(TestSink::recording()),
            1,
            None,
            &m,
        )
        .run()
        .await;
        assert_eq!(ok.wait().await, Ok(()));

        let q = queue(&m);
        q.push_acked(
            trace_data("a", 2),
            AckRequest::Delivered(failing.completion("s")),
        )
        .await
        .unwrap();
        q.close();
        Worker::new(
            "s",
            q.clone(),
            &batches_of(100),
            Arc::new(TestSink::failing_permanently()),
            1,
            None,
            &m,
        )
        .run()
        .await;
        match failing.wait().await {
            Err(Undelivered::Permanent { sink, .. }) => assert_eq!(sink, "s"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn records_batch_sizes_and_delivered_spans() {
        let mut registry = prometheus_client::registry::Registry::default();
        let m = Metrics::register(&mut registry);
        let q = queue(&m);
        for n in [3, 4, 5] {
            q.push(trace_data("a", n)).await.unwrap();
        }
        q.close();
        let worker = Worker::new(
            "s",
            q,
            &batches_of(8),
            Arc::new(TestSink::recording()),
            1,
            None,
            &m,
        );
        let sent = worker.sent_counter();
        worker.run().await;
        assert_eq!(sent.load(Ordering::Relaxed), 12);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"spansink_sink_batch_spans_sum{sink="s"} 12.0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"spansink_sink_batch_spans_count{sink="s"} 2"#),
            "{text}"
        );
    }
}
