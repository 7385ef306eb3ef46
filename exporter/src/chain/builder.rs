//! The running chain ([`Chain`]): built from the whole config in one place, which also
//! decides the order of the policy layers; started; fed through fan-out; drained. Not the
//! policies themselves: each lives in its own file and knows nothing of the others.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use spansink_config::{ExporterConfig, SinkConfig};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::fallback::Fallback;
use super::fanout::{FanOut, SinkInput};
use super::filter::SpanFilter;
use super::monitor::Monitor;
use super::queue::{self, RETRY_AFTER, SpanQueue};
use super::rate_limit::RateLimit;
use super::retry::Retry;
use super::timeout::Timeout;
use super::worker::Worker;
use super::{Admission, Admit, Refusal};
use crate::otlp::TraceData;
use crate::sinks::{BuildError, SharedSink};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::SinkReasonLabels;

/// How long each sink's `shutdown` (final flush) may take after the drain. Defined in the
/// config crate because the operator adds it to the pods' termination grace period.
const SINK_SHUTDOWN_TIMEOUT: Duration = spansink_config::ShutdownConfig::SINK_SHUTDOWN_TIMEOUT;

/// All sinks of one config generation with their queues, policy stacks and workers.
pub struct Chain {
    fanout: FanOut,
    /// In `config.sinks` (name) order.
    sinks: Vec<SinkRuntime>,
    /// Indexes into `sinks`, level by level: a sink is closed only after every sink that
    /// falls back to it has finished.
    drain_order: Vec<Vec<usize>>,
    started: AtomicBool,
    draining: AtomicBool,
    metrics: Metrics,
}

struct SinkRuntime {
    name: String,
    queue: Arc<dyn SpanQueue>,
    /// The backend wrapped in its policies; `shutdown` passes through to the backend.
    stack: SharedSink,
    sent: Arc<AtomicU64>,
    /// Taken by `start`.
    worker: Mutex<Option<Worker>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// What a drain achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Spans delivered to backends during the drain (fallback sinks included).
    pub delivered_spans: u64,
    /// Spans still pending at the deadline, counted as `dropped{reason="shutdown"}`.
    pub dropped_spans: u64,
    /// Whether the deadline passed before everything was delivered.
    pub timed_out: bool,
}

/// Wraps `backend` in its policies: the one place the layer order is decided. From the
/// worker inwards: (fallback) -> retry -> rate limit -> monitor -> timeout -> backend.
///
/// - fallback outermost, run by the worker with the stack's final result: it acts on the
///   final failure, after retries gave up (or at once for a permanent error, which retry
///   passes straight up), and hands the batch on with its waiting clients' completions;
/// - retry outside the rate limit: every attempt, retries included, takes tokens, so a
///   recovering backend is not hit above its rate;
/// - the rate limit outside the timeout: the timeout bounds the backend call, not the
///   wait for tokens; inside, a batch waiting for tokens longer than the timeout would
///   fail as `timeout` and be retried without ever reaching the backend;
/// - monitor right around the timeout: it measures each attempt as the backend saw it
///   (timeouts included), not token waits or backoff sleeps;
/// - the concurrency limit is in the worker, which takes a slot before forming a batch.
fn policy_stack(
    name: &str,
    config: &SinkConfig,
    backend: SharedSink,
    metrics: &Metrics,
) -> SharedSink {
    let mut stack: SharedSink = Arc::new(Timeout::new(backend, name, config.timeout.get()));
    stack = Arc::new(Monitor::new(stack, name, metrics));
    if let Some(rate) = config.rate_limit.spans_per_second {
        let burst = config.rate_limit.burst.unwrap_or(rate);
        stack = Arc::new(RateLimit::new(stack, name, rate, burst, metrics));
    }
    if config.retry.enabled {
        stack = Arc::new(Retry::new(stack, name, &config.retry, metrics));
    }
    stack
}

impl SinkRuntime {
    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values are plain options; a panic elsewhere leaves them usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Chain {
    /// Builds queues, policy stacks and workers (not started). `make_sink` builds one
    /// backend sink; injected so tests can pass in-memory sinks and the chain does not
    /// depend on the backends.
    pub fn build(
        config: &ExporterConfig,
        metrics: &Metrics,
        make_sink: &dyn Fn(&str, &SinkConfig) -> Result<SharedSink, BuildError>,
    ) -> Result<Chain, BuildError> {
        let queues: Vec<Arc<dyn SpanQueue>> = config
            .sinks
            .iter()
            .map(|(name, sink)| {
                queue::open(name, &sink.queue, metrics).map_err(|e| BuildError {
                    sink: name.clone(),
                    message: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        let names: Vec<&String> = config.sinks.keys().collect();
        let mut sinks = Vec::with_capacity(queues.len());
        let mut fallbacks = Vec::with_capacity(queues.len());
        for ((name, sink), queue) in config.sinks.iter().zip(&queues) {
            let fallback = match &sink.fallback {
                None => None,
                Some(target) => Some(names.iter().position(|n| *n == target).ok_or_else(
                    || BuildError {
                        sink: name.clone(),
                        message: format!(
                            "fallback names sink {target:?}, which does not exist; name one of the configured sinks"
                        ),
                    },
                )?),
            };
            fallbacks.push(fallback);
            let backend = make_sink(name, sink)?;
            let stack = policy_stack(name, sink, backend, metrics);
            let fallback =
                fallback.map(|i| Fallback::new(name, names[i], queues[i].clone(), metrics));
            let worker = Worker::new(
                name,
                queue.clone(),
                &sink.batch,
                stack.clone(),
                sink.rate_limit.max_concurrent_exports,
                fallback,
                metrics,
            );
            sinks.push(SinkRuntime {
                name: name.clone(),
                queue: queue.clone(),
                stack,
                sent: worker.sent_counter(),
                worker: Mutex::new(Some(worker)),
                task: Mutex::new(None),
            });
        }
        let drain_order = drain_order(&fallbacks).map_err(|i| BuildError {
            sink: names[i].clone(),
            message: "fallback chain loops back to this sink; a failed batch would bounce forever: break the loop".into(),
        })?;
        let inputs = config
            .sinks
            .iter()
            .zip(&queues)
            .filter(|((_, sink), _)| !sink.fallback_only)
            .map(|((name, sink), queue)| SinkInput {
                sink: name.clone(),
                filter: sink.filter.as_ref().map(SpanFilter::new),
                queue: queue.clone(),
            })
            .collect();
        let receivers = &config.receivers;
        Ok(Chain {
            fanout: FanOut::new(inputs, metrics).acknowledging(
                receivers.acknowledgements,
                receivers.acknowledgement_timeout.get(),
            ),
            sinks,
            drain_order,
            started: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            metrics: metrics.clone(),
        })
    }

    /// Spawns the per-sink workers; call it within a tokio runtime. On a config reload the
    /// new chain is started only after the old one drained, so two generations never
    /// write to the same backend at once; until then it queues what it admits.
    pub fn start(&self) {
        if self.draining.load(Ordering::Acquire) {
            return;
        }
        self.spawn_workers();
        self.started.store(true, Ordering::Release);
    }

    fn spawn_workers(&self) {
        for sink in &self.sinks {
            // Hold the worker slot while storing the task, so a concurrent drain sees
            // either no task yet (and spawns it itself) or the task.
            let mut worker = locked(&sink.worker);
            if let Some(worker) = worker.take() {
                *locked(&sink.task) = Some(tokio::spawn(worker.run()));
            }
        }
    }

    /// Stops admitting (admit -> `Refusal::ShuttingDown`), delivers what is queued and in
    /// flight within `deadline` (fallback sinks drain after their primaries), then calls
    /// `Sink::shutdown` on every sink. Spans still pending at the deadline are counted as
    /// `dropped{reason="shutdown"}` and logged. A chain never started is started here so
    /// that what it queued is delivered. A second call returns an empty report.
    pub async fn drain(&self, deadline: Duration) -> DrainReport {
        if self.draining.swap(true, Ordering::AcqRel) {
            return DrainReport::default();
        }
        let until = Instant::now() + deadline;
        let sent_before: Vec<u64> = self.sinks.iter().map(|s| s.sent()).collect();
        self.spawn_workers();
        let finished = self.deliver_in_order(until).await;
        let dropped_spans = self.drop_leftovers(deadline);
        self.shut_down_sinks().await;
        let delivered_spans = self
            .sinks
            .iter()
            .zip(sent_before)
            .map(|(s, before)| s.sent() - before)
            .sum();
        DrainReport {
            delivered_spans,
            dropped_spans,
            timed_out: !finished,
        }
    }

    /// Closes the queues level by level, each once the sinks feeding it have finished, and
    /// waits for the workers until `until`; then aborts the rest. Whether all finished.
    async fn deliver_in_order(&self, until: Instant) -> bool {
        let mut tasks: Vec<Option<JoinHandle<()>>> =
            self.sinks.iter().map(|s| locked(&s.task).take()).collect();
        let finished = tokio::time::timeout_at(until, async {
            for level in &self.drain_order {
                for &i in level {
                    self.sinks[i].queue.close();
                }
                for &i in level {
                    if let Some(task) = tasks[i].as_mut() {
                        if let Err(e) = task.await {
                            tracing::error!(sink = %self.sinks[i].name, error = %e, "sink worker failed");
                        }
                        tasks[i] = None;
                    }
                }
            }
        })
        .await
        .is_ok();
        // Aborting a worker drops its in-flight exports with it.
        for task in tasks.iter().flatten() {
            task.abort();
        }
        for task in tasks.into_iter().flatten() {
            let _ = task.await;
        }
        finished
    }

    /// Counts and logs what no worker will deliver any more; returns the total.
    fn drop_leftovers(&self, deadline: Duration) -> u64 {
        let mut dropped = 0;
        for sink in &self.sinks {
            let lost = sink.queue.abandon() as u64;
            if lost > 0 {
                dropped += lost;
                self.metrics
                    .sink_dropped_spans
                    .get_or_create(&SinkReasonLabels {
                        sink: sink.name.clone(),
                        reason: "shutdown",
                    })
                    .inc_by(lost);
                tracing::error!(sink = %sink.name, spans = lost, deadline_ms = deadline.as_millis() as u64,
                    "drain deadline passed; spans not delivered are dropped");
            }
        }
        dropped
    }

    async fn shut_down_sinks(&self) {
        join_all(self.sinks.iter().map(|sink| async move {
            match tokio::time::timeout(SINK_SHUTDOWN_TIMEOUT, sink.stack.shutdown()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(sink = %sink.name, error = %e, "sink shutdown failed"),
                Err(_) => tracing::error!(sink = %sink.name, timeout_ms = SINK_SHUTDOWN_TIMEOUT.as_millis() as u64,
                    "sink shutdown did not finish in time"),
            }
        }))
        .await;
    }

    /// Built and started, not draining.
    pub fn is_ready(&self) -> bool {
        self.started.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// Every sink, fallback-only ones included, in name order.
    pub fn sink_names(&self) -> Vec<String> {
        self.sinks.iter().map(|s| s.name.clone()).collect()
    }
}

impl Drop for Chain {
    /// A chain dropped without `drain` (it should not be) still lets its workers deliver
    /// what is queued and end, instead of waiting on open queues forever.
    fn drop(&mut self) {
        for sink in &self.sinks {
            sink.queue.close();
        }
    }
}

#[async_trait]
impl Admit for Chain {
    /// Fan-out to every primary sink; see [`FanOut`] for the at-least-once semantics
    /// when some sinks take a request and another refuses it.
    async fn admit(&self, data: TraceData) -> Result<Admission, Refusal> {
        if self.draining.load(Ordering::Acquire) {
            return Err(Refusal::ShuttingDown {
                retry_after: RETRY_AFTER,
            });
        }
        self.fanout.admit(data).await
    }
}

/// Groups sinks into drain levels from each sink's fallback index: level 0 is fed by no
/// other sink; a fallback target sits one level below the deepest sink feeding it.
/// `Err(i)` names a sink on a fallback loop.
fn drain_order(fallbacks: &[Option<usize>]) -> Result<Vec<Vec<usize>>, usize> {
    let mut level = vec![0usize; fallbacks.len()];
    // Longest-path relaxation: settles within n rounds unless there is a loop.
    for _ in 0..=fallbacks.len() {
        let mut changed = false;
        for (from, to) in fallbacks.iter().enumerate() {
            if let Some(to) = *to
                && level[to] <= level[from]
            {
                level[to] = level[from] + 1;
                changed = true;
            }
        }
        if !changed {
            let depth = level.iter().max().map_or(0, |d| d + 1);
            let mut levels = vec![Vec::new(); depth];
            for (sink, l) in level.iter().enumerate() {
                levels[*l].push(sink);
            }
            return Ok(levels);
        }
    }
    // Still rising: the highest sink is on the loop (only the loop lies downstream of it).
    Err((0..level.len()).max_by_key(|&i| level[i]).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use spansink_config::{
        BatchConfig, BlackholeSinkConfig, ByteSize, QueueConfig, RateLimitConfig, WhenFull,
    };

    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;

    use super::*;
    use crate::chain::test_sinks::{TestSink, trace_data};
    use crate::telemetry::metrics::FallbackLabels;

    fn sink_config() -> SinkConfig {
        SinkConfig {
            blackhole: Some(BlackholeSinkConfig::default()),
            batch: BatchConfig {
                max_spans: 100,
                max_bytes: ByteSize::mib(1),
                flush_interval: spansink_config::Duration::from_secs(1),
            },
            ..SinkConfig::default()
        }
    }

    fn exporter_config(sinks: Vec<(&str, SinkConfig)>) -> ExporterConfig {
        ExporterConfig {
            receivers: Default::default(),
            sinks: sinks.into_iter().map(|(n, c)| (n.to_string(), c)).collect(),
            telemetry: Default::default(),
            shutdown: Default::default(),
        }
    }

    fn build(config: &ExporterConfig, backends: &[(&str, &Arc<TestSink>)], m: &Metrics) -> Chain {
        let backends: BTreeMap<String, SharedSink> = backends
            .iter()
            .map(|(n, s)| (n.to_string(), (*s).clone() as SharedSink))
            .collect();
        Chain::build(config, m, &|name, _| {
            backends.get(name).cloned().ok_or_else(|| BuildError {
                sink: name.into(),
                message: "no test backend".into(),
            })
        })
        .unwrap()
    }

    fn reason(family: &Family<SinkReasonLabels, Counter>, sink: &str, reason: &'static str) -> u64 {
        family
            .get_or_create(&SinkReasonLabels {
                sink: sink.into(),
                reason,
            })
            .get()
    }

    #[tokio::test(start_paused = true)]
    async fn fans_out_to_primary_sinks_only_and_names_them_all() {
        let m = Metrics::for_tests();
        let (main, other, dlq) = (
            Arc::new(TestSink::recording()),
            Arc::new(TestSink::recording()),
            Arc::new(TestSink::recording()),
        );
        let config = exporter_config(vec![
            (
                "main",
                SinkConfig {
                    fallback: Some("dlq".into()),
                    ..sink_config()
                },
            ),
            ("other", sink_config()),
            (
                "dlq",
                SinkConfig {
                    fallback_only: true,
                    ..sink_config()
                },
            ),
        ]);
        let chain = build(
            &config,
            &[("main", &main), ("other", &other), ("dlq", &dlq)],
            &m,
        );
        assert_eq!(chain.sink_names(), ["dlq", "main", "other"]);
        assert!(!chain.is_ready());
        chain.start();
        assert!(chain.is_ready());
        chain.admit(trace_data("svc", 5)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!((main.spans(), other.spans(), dlq.spans()), (5, 5, 0));
        assert_eq!(
            m.sink_received_spans.get_or_create(&m.sink("main")).get(),
            5
        );
        assert_eq!(m.sink_sent_spans.get_or_create(&m.sink("other")).get(), 5);
        assert_eq!(m.sink_received_spans.get_or_create(&m.sink("dlq")).get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_batches_reach_the_fallback_sink_which_drains_after_its_primary() {
        let m = Metrics::for_tests();
        let (main, dlq) = (
            Arc::new(TestSink::failing_permanently()),
            Arc::new(TestSink::recording()),
        );
        let config = exporter_config(vec![
            (
                "main",
                SinkConfig {
                    fallback: Some("dlq".into()),
                    ..sink_config()
                },
            ),
            (
                "dlq",
                SinkConfig {
                    fallback_only: true,
                    ..sink_config()
                },
            ),
        ]);
        let chain = build(&config, &[("main", &main), ("dlq", &dlq)], &m);
        chain.start();
        for _ in 0..3 {
            chain.admit(trace_data("svc", 4)).await.unwrap();
        }
        let report = chain.drain(Duration::from_secs(30)).await;
        assert_eq!(
            report,
            DrainReport {
                delivered_spans: 12,
                dropped_spans: 0,
                timed_out: false
            }
        );
        assert_eq!(main.calls(), 1, "one batch, permanent error, no retries");
        assert_eq!(dlq.spans(), 12);
        assert_eq!(reason(&m.sink_failed_spans, "main", "rejected"), 12);
        let handed = m
            .sink_fallback_spans
            .get_or_create(&FallbackLabels {
                sink: "main".into(),
                fallback: "dlq".into(),
            })
            .get();
        assert_eq!(handed, 12);
        assert_eq!(m.sink_sent_spans.get_or_create(&m.sink("dlq")).get(), 12);
        assert_eq!(reason(&m.sink_dropped_spans, "main", "no_fallback"), 0);
        assert_eq!((main.shutdowns(), dlq.shutdowns()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn drain_delivers_everything_queued_at_once_and_refuses_new_spans() {
        let m = Metrics::for_tests();
        let sink = Arc::new(TestSink::recording());
        let chain = build(
            &exporter_config(vec![("s", sink_config())]),
            &[("s", &sink)],
            &m,
        );
        chain.start();
        for _ in 0..3 {
            chain.admit(trace_data("svc", 10)).await.unwrap();
        }
        let start = Instant::now();
        let report = chain.drain(Duration::from_secs(10)).await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "closing flushes without waiting for the interval"
        );
        assert_eq!(
            report,
            DrainReport {
                delivered_spans: 30,
                dropped_spans: 0,
                timed_out: false
            }
        );
        assert_eq!(sink.spans(), 30);
        assert_eq!(sink.shutdowns(), 1);
        assert!(!chain.is_ready());
        let refusal = chain.admit(trace_data("svc", 1)).await.unwrap_err();
        assert_eq!(refusal.reason(), "shutting_down");
        assert_eq!(
            chain.drain(Duration::from_secs(1)).await,
            DrainReport::default()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn drain_counts_what_is_left_at_the_deadline_as_dropped() {
        let m = Metrics::for_tests();
        let sink = Arc::new(TestSink::slow(Duration::from_secs(3600)));
        let config = SinkConfig {
            batch: BatchConfig {
                max_spans: 4,
                ..sink_config().batch
            },
            timeout: spansink_config::Duration::from_secs(7200),
            ..sink_config()
        };
        let chain = build(&exporter_config(vec![("s", config)]), &[("s", &sink)], &m);
        chain.start();
        for _ in 0..3 {
            chain.admit(trace_data("svc", 4)).await.unwrap();
        }
        let start = Instant::now();
        let report = chain.drain(Duration::from_secs(2)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(
            report,
            DrainReport {
                delivered_spans: 0,
                dropped_spans: 12,
                timed_out: true
            }
        );
        assert_eq!(reason(&m.sink_dropped_spans, "s", "shutdown"), 12);
        assert_eq!(m.sink_queue_spans.get_or_create(&m.sink("s")).get(), 0);
        assert_eq!(m.sink_inflight_exports.get_or_create(&m.sink("s")).get(), 0);
        assert_eq!(sink.shutdowns(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_chain_never_started_delivers_what_it_queued_when_drained() {
        let m = Metrics::for_tests();
        let sink = Arc::new(TestSink::recording());
        let chain = build(
            &exporter_config(vec![("s", sink_config())]),
            &[("s", &sink)],
            &m,
        );
        chain.admit(trace_data("svc", 6)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(sink.spans(), 0, "not started: queued only");
        let report = chain.drain(Duration::from_secs(5)).await;
        assert_eq!(report.delivered_spans, 6);
        assert_eq!(sink.spans(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_sink_does_not_stall_another_beyond_its_own_queue() {
        let m = Metrics::for_tests();
        let (fast, slow) = (
            Arc::new(TestSink::recording()),
            Arc::new(TestSink::slow(Duration::from_secs(3600))),
        );
        let slow_config = SinkConfig {
            queue: QueueConfig {
                max_spans: 8,
                when_full: WhenFull::Reject,
                ..QueueConfig::default()
            },
            batch: BatchConfig {
                max_spans: 4,
                ..sink_config().batch
            },
            timeout: spansink_config::Duration::from_secs(7200),
            rate_limit: RateLimitConfig {
                max_concurrent_exports: 1,
                ..RateLimitConfig::default()
            },
            ..sink_config()
        };
        let config = exporter_config(vec![("fast", sink_config()), ("slow", slow_config)]);
        let chain = build(&config, &[("fast", &fast), ("slow", &slow)], &m);
        chain.start();
        let start = Instant::now();
        // The slow sink holds one batch in its export and 8 spans in its queue.
        for _ in 0..3 {
            chain.admit(trace_data("svc", 4)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let refusal = chain.admit(trace_data("svc", 4)).await.unwrap_err();
        assert_eq!(refusal.reason(), "queue_full");
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(3),
            "refused at once, not stalled"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            fast.spans(),
            16,
            "the fast sink got everything, the refused request too"
        );
        assert_eq!(slow.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn token_waits_do_not_count_against_the_export_timeout() {
        let m = Metrics::for_tests();
        let sink = Arc::new(TestSink::slow(Duration::from_millis(500)));
        let config = SinkConfig {
            batch: BatchConfig {
                max_spans: 10,
                ..sink_config().batch
            },
            timeout: spansink_config::Duration::from_millis(600),
            rate_limit: RateLimitConfig {
                spans_per_second: Some(10),
                burst: Some(10),
                max_concurrent_exports: 2,
            },
            ..sink_config()
        };
        let chain = build(&exporter_config(vec![("s", config)]), &[("s", &sink)], &m);
        chain.start();
        chain.admit(trace_data("svc", 10)).await.unwrap();
        chain.admit(trace_data("svc", 10)).await.unwrap();
        // The second batch waits 1 s for tokens, then takes 0.5 s: within its 0.6 s timeout.
        let report = chain.drain(Duration::from_secs(10)).await;
        assert_eq!(report.delivered_spans, 20);
        assert_eq!(sink.calls(), 2, "no timeouts, no retries");
        assert_eq!(m.sink_retried_spans.get_or_create(&m.sink("s")).get(), 0);
    }

    #[test]
    fn build_errors_name_the_sink() {
        let m = Metrics::for_tests();
        let config = exporter_config(vec![(
            "main",
            SinkConfig {
                fallback: Some("nope".into()),
                ..sink_config()
            },
        )]);
        let err = Chain::build(&config, &m, &|_, _| {
            Ok(Arc::new(TestSink::recording()) as SharedSink)
        })
        .err()
        .unwrap();
        assert_eq!(err.sink, "main");
        assert!(err.message.contains("\"nope\""), "{err}");

        let looping = exporter_config(vec![
            (
                "a",
                SinkConfig {
                    fallback: Some("b".into()),
                    ..sink_config()
                },
            ),
            (
                "b",
                SinkConfig {
                    fallback: Some("a".into()),
                    ..sink_config()
                },
            ),
        ]);
        let err = Chain::build(&looping, &m, &|_, _| {
            Ok(Arc::new(TestSink::recording()) as SharedSink)
        })
        .err()
        .unwrap();
        assert!(err.message.contains("loops"), "{err}");

        let failing = exporter_config(vec![("main", sink_config())]);
        let err = Chain::build(&failing, &m, &|name, _| {
            Err(BuildError {
                sink: name.into(),
                message: "bad endpoint".into(),
            })
        })
        .err()
        .unwrap();
        assert_eq!(err.to_string(), "sinks.main: bad endpoint");
    }

    #[test]
    fn drain_levels_put_fallbacks_after_everything_feeding_them() {
        // 0 -> 1 -> 2, 3 -> 2, 4 alone.
        let levels = drain_order(&[Some(1), Some(2), None, Some(2), None]).unwrap();
        assert_eq!(levels, vec![vec![0, 3, 4], vec![1], vec![2]]);
        assert!(drain_order(&[Some(1), Some(0)]).is_err());
        assert!(drain_order(&[Some(0)]).is_err());
    }
}
