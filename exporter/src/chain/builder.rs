//! The running chain ([`Chain`]): built from the whole config in one place, which also
//! decides the order of the policy layers; started; fed through fan-out; drained, or
//! handed over to the next generation at a reload. Not the policies themselves: each
//! lives in its own file and knows nothing of the others; not how one sink's generation
//! ends (`runtime`) nor the swap itself (`live`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use spansink_config::{ExporterConfig, SinkConfig};
use tokio::time::Instant;

use super::fallback::Fallback;
use super::fanout::{FanOut, SinkInput};
use super::filter::SpanFilter;
use super::monitor::Monitor;
use super::queue::{self, RETRY_AFTER};
use super::rate_limit::RateLimit;
use super::retry::Retry;
use super::runtime::{Cause, Deadline, Ended, Parts, SinkRuntime};
use super::timeout::Timeout;
use super::transform::SpanTransform;
use super::worker::Worker;
use super::{Admission, Admit, Refusal};
use crate::otlp::TraceData;
use crate::sinks::{BuildError, SharedSink};
use crate::telemetry::Metrics;

/// Chain ids, for telling which chain owns a runtime; 0 means none.
static NEXT_CHAIN_ID: AtomicU64 = AtomicU64::new(1);

/// All sinks of one config generation with their queues, policy stacks and workers.
/// A sink unchanged by a reload is shared with the previous generation (see
/// [`Chain::build_next`]).
pub struct Chain {
    id: u64,
    fanout: FanOut,
    /// In `config.sinks` (name) order.
    sinks: Vec<Arc<SinkRuntime>>,
    started: AtomicBool,
    /// No more admissions: drained, handed over or discarded.
    draining: AtomicBool,
    /// `drain` or `discard` ran.
    ended: AtomicBool,
    metrics: Metrics,
}

/// What a drain achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Spans delivered to backends during the drain (fallback sinks included).
    pub delivered_spans: u64,
    /// Spans of memory queues still pending at the deadline, counted as
    /// `dropped{reason="shutdown"}`.
    pub dropped_spans: u64,
    /// Spans of durable queues still pending at the deadline: kept on disk for the next
    /// start (`kept{reason="shutdown"}`), not dropped.
    pub kept_spans: u64,
    /// Whether the deadline passed before everything was delivered.
    pub timed_out: bool,
}

impl DrainReport {
    pub(crate) fn add(mut self, ended: Ended) -> Self {
        self.delivered_spans += ended.delivered_spans;
        self.dropped_spans += ended.dropped_spans;
        self.kept_spans += ended.kept_spans;
        self.timed_out |= ended.timed_out;
        self
    }
}

/// A runtime of the previous chain that the next one does not keep; it ends on its own
/// deadline (see `live`).
pub(crate) struct Replaced {
    pub runtime: Arc<SinkRuntime>,
    /// A new generation on the same durable directory starts only once it has ended.
    pub awaited: bool,
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

impl Chain {
    /// How this generation answers requests (`receivers.acknowledgements`).
    pub fn acknowledgements(&self) -> spansink_config::AcknowledgementMode {
        self.fanout.acknowledgements()
    }

    /// Builds queues, policy stacks and workers (not started). `make_sink` builds one
    /// backend sink; injected so tests can pass in-memory sinks and the chain does not
    /// depend on the backends.
    pub fn build(
        config: &ExporterConfig,
        metrics: &Metrics,
        make_sink: &dyn Fn(&str, &SinkConfig) -> Result<SharedSink, BuildError>,
    ) -> Result<Chain, BuildError> {
        Self::build_next(None, config, metrics, make_sink)
    }

    /// The sinks of `config` that `previous` cannot pass on as they run: new ones,
    /// changed ones, and those falling back to one of these (a fallback layer holds its
    /// target's queue). `make_sink` is asked only for these. Without `previous`: all.
    pub fn sinks_to_build(previous: Option<&Chain>, config: &ExporterConfig) -> Vec<String> {
        let kept = previous.map(|p| p.passable(config)).unwrap_or_default();
        config
            .sinks
            .keys()
            .filter(|name| !kept.contains_key(*name))
            .cloned()
            .collect()
    }

    /// [`Chain::build`] for the config after `previous`: every sink `previous` can pass
    /// on (unchanged, see [`Chain::sinks_to_build`]) is shared as it runs (queue,
    /// worker, backend), the others are built anew. Nothing changes for `previous` until
    /// [`Chain::hand_over`].
    pub fn build_next(
        previous: Option<&Chain>,
        config: &ExporterConfig,
        metrics: &Metrics,
        make_sink: &dyn Fn(&str, &SinkConfig) -> Result<SharedSink, BuildError>,
    ) -> Result<Chain, BuildError> {
        let id = NEXT_CHAIN_ID.fetch_add(1, Ordering::Relaxed);
        let kept = previous.map(|p| p.passable(config)).unwrap_or_default();
        let names: Vec<&String> = config.sinks.keys().collect();
        let mut fallbacks = Vec::with_capacity(names.len());
        for (name, sink) in &config.sinks {
            fallbacks.push(match &sink.fallback {
                None => None,
                Some(target) => Some(names.iter().position(|n| *n == target).ok_or_else(
                    || BuildError {
                        sink: name.clone(),
                        message: format!(
                            "fallback names sink {target:?}, which does not exist; name one of the configured sinks"
                        ),
                    },
                )?),
            });
        }
        let levels = drain_order(&fallbacks).map_err(|i| BuildError {
            sink: names[i].clone(),
            message: "fallback chain loops back to this sink; a failed batch would bounce forever: break the loop".into(),
        })?;
        // Built anew for every generation, as filters are (salts are read again).
        let transforms = config
            .sinks
            .iter()
            .map(|(name, sink)| {
                sink.transform
                    .as_ref()
                    .map(|t| SpanTransform::new(name, t, metrics).map(Arc::new))
                    .transpose()
                    .map_err(|e| BuildError {
                        sink: name.clone(),
                        message: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Deepest level first: a sink's fallback layer needs its target's queue.
        let mut runtimes: Vec<Option<Arc<SinkRuntime>>> = vec![None; names.len()];
        for &i in levels.iter().rev().flatten() {
            let name = names[i];
            if let Some(runtime) = kept.get(name.as_str()) {
                runtimes[i] = Some(runtime.clone());
                continue;
            }
            let sink = &config.sinks[name];
            let target = match fallbacks[i] {
                None => None,
                Some(t) => Some(runtimes[t].clone().ok_or_else(|| BuildError {
                    sink: name.clone(),
                    message:
                        "internal error: fallback sink built out of order; please report it".into(),
                })?),
            };
            let queue = queue::open(name, &sink.queue, metrics).map_err(|e| BuildError {
                sink: name.clone(),
                message: e.to_string(),
            })?;
            let backend = make_sink(name, sink)?;
            let fallback = target
                .as_ref()
                .zip(sink.fallback.as_deref())
                .zip(fallbacks[i])
                .map(|((t, target_name), at)| {
                    Fallback::new(name, target_name, t.queue().clone(), metrics)
                        .transforming(transforms[at].clone())
                });
            let stack = policy_stack(name, sink, backend, metrics);
            let worker = Worker::new(
                name,
                queue.clone(),
                &sink.batch,
                stack.clone(),
                sink.rate_limit.max_concurrent_exports,
                fallback,
                metrics,
            );
            let parts = Parts {
                queue,
                stack,
                fallback: target,
                worker,
            };
            runtimes[i] = Some(Arc::new(SinkRuntime::new(name, sink, parts, id, metrics)));
        }
        let sinks: Vec<Arc<SinkRuntime>> = runtimes.into_iter().flatten().collect();
        let inputs = config
            .sinks
            .iter()
            .zip(&sinks)
            .zip(transforms)
            .filter(|(((_, sink), _), _)| !sink.fallback_only)
            .map(|(((name, sink), runtime), transform)| SinkInput {
                sink: name.clone(),
                filter: sink.filter.as_ref().map(SpanFilter::new),
                transform,
                queue: runtime.queue().clone(),
            })
            .collect();
        let receivers = &config.receivers;
        Ok(Chain {
            id,
            fanout: FanOut::new(inputs, metrics).acknowledging(
                receivers.acknowledgements,
                receivers.acknowledgement_timeout.get(),
            ),
            sinks,
            started: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            metrics: metrics.clone(),
        })
    }

    /// This chain's runtimes that the chain of `config` can keep as they run: same
    /// settings, and a fallback (if any) that is kept too.
    fn passable(&self, config: &ExporterConfig) -> BTreeMap<String, Arc<SinkRuntime>> {
        let mut kept: BTreeMap<String, Arc<SinkRuntime>> = self
            .owned()
            .filter(|r| config.sinks.get(r.name()).map(|c| &**c) == Some(r.config()))
            .map(|r| (r.name().to_string(), r.clone()))
            .collect();
        loop {
            let orphaned: Vec<String> = kept
                .iter()
                .filter(|(_, r)| {
                    r.config()
                        .fallback
                        .as_ref()
                        .is_some_and(|target| !kept.contains_key(target))
                })
                .map(|(name, _)| name.clone())
                .collect();
            if orphaned.is_empty() {
                return kept;
            }
            for name in orphaned {
                kept.remove(&name);
            }
        }
    }

    fn owned(&self) -> impl Iterator<Item = &Arc<SinkRuntime>> {
        self.sinks.iter().filter(|r| r.owned_by(self.id))
    }

    fn shares(&self, runtime: &Arc<SinkRuntime>) -> bool {
        self.sinks.iter().any(|r| Arc::ptr_eq(r, runtime))
    }

    /// Spawns the workers of the sinks it owns; call it within a tokio runtime. A
    /// reload starts the next chain right after [`Chain::hand_over`]: its new sinks on
    /// a durable directory start only once the old generation on it has ended.
    pub fn start(&self) {
        if self.draining.load(Ordering::Acquire) {
            return;
        }
        for runtime in self.owned() {
            runtime.start();
        }
        self.started.store(true, Ordering::Release);
    }

    /// Receivers admit into `next` now: this chain stops admitting, passes on the
    /// runtimes `next` shares, and returns the others, which `next` does not use and
    /// which must still be ended. A new sink of `next` on the durable directory of a
    /// returned runtime starts only once that runtime has ended.
    pub(crate) fn hand_over(&self, next: &Chain) -> Vec<Replaced> {
        self.draining.store(true, Ordering::Release);
        let mut replaced = Vec::new();
        for runtime in self.owned() {
            if next.shares(runtime) {
                runtime.pass_to(next.id);
            } else {
                replaced.push(Replaced {
                    runtime: runtime.clone(),
                    awaited: false,
                });
            }
        }
        for new in next.owned().filter(|r| !self.shares(r)) {
            let Some(dir) = new.directory() else { continue };
            if let Some(old) = replaced
                .iter_mut()
                .find(|old| old.runtime.directory() == Some(dir))
            {
                new.start_after(old.runtime.clone());
                old.awaited = true;
            }
        }
        replaced
    }

    /// Stops admitting (admit -> `Refusal::ShuttingDown`), delivers what is queued and in
    /// flight within `deadline` (fallback sinks drain after their primaries), then calls
    /// `Sink::shutdown` on every sink. Spans still pending at the deadline are counted:
    /// a memory queue's as `dropped{reason="shutdown"}`, a durable queue's as
    /// `kept{reason="shutdown"}` (on disk for the next start). A chain never started
    /// is started here so that what it queued is delivered. Only the sinks this chain
    /// owns (not those it handed over). A second call returns an empty report.
    pub async fn drain(&self, deadline: Duration) -> DrainReport {
        if self.ended.swap(true, Ordering::AcqRel) {
            return DrainReport::default();
        }
        self.draining.store(true, Ordering::Release);
        let until = Instant::now() + deadline;
        let owned: Vec<Arc<SinkRuntime>> = self.owned().cloned().collect();
        for runtime in &owned {
            runtime.end_by(Deadline {
                at: until,
                cause: Cause::Shutdown,
            });
        }
        for runtime in &owned {
            runtime.let_go();
        }
        join_all(owned.iter().map(|r| r.finish()))
            .await
            .into_iter()
            .fold(DrainReport::default(), DrainReport::add)
    }

    /// Ends a chain that was built and never handed anything (a reload abandoned before
    /// the swap): its own sinks are closed and shut down without running, and the sinks
    /// it would have kept from the running chain are left alone.
    pub async fn discard(&self) {
        if self.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        self.draining.store(true, Ordering::Release);
        let owned: Vec<Arc<SinkRuntime>> = self.owned().cloned().collect();
        join_all(owned.iter().map(|r| r.discard())).await;
    }

    /// Built and started, not draining.
    pub fn is_ready(&self) -> bool {
        self.started.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// Every sink, fallback-only ones included, in name order.
    pub fn sink_names(&self) -> Vec<String> {
        self.sinks.iter().map(|s| s.name().to_string()).collect()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

impl Drop for Chain {
    /// A chain dropped without `drain` (it should not be) still lets its workers deliver
    /// what is queued and end, instead of waiting on open queues forever.
    fn drop(&mut self) {
        for sink in self.owned() {
            sink.queue().close();
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

/// Groups sinks into levels from each sink's fallback index: level 0 is fed by no other
/// sink; a fallback target sits one level below the deepest sink feeding it (so the
/// builder builds targets first, and a target ends after its feeders). `Err(i)` names a
/// sink on a fallback loop.
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

    use spansink_config::{
        BatchConfig, BlackholeSinkConfig, ByteSize, QueueConfig, RateLimitConfig, WhenFull,
    };

    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;

    use super::*;
    use crate::chain::test_sinks::{TestSink, trace_data};
    use crate::telemetry::metrics::{FallbackLabels, SinkReasonLabels};

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

    use crate::chain::test_sinks::{build_chain as build, exporter_config};

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
                kept_spans: 0,
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
                kept_spans: 0,
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
                kept_spans: 0,
                timed_out: true
            }
        );
        assert_eq!(reason(&m.sink_dropped_spans, "s", "shutdown"), 12);
        assert_eq!(m.sink_queue_spans.get_or_create(&m.sink("s")).get(), 0);
        assert_eq!(m.sink_inflight_exports.get_or_create(&m.sink("s")).get(), 0);
        assert_eq!(sink.shutdowns(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_durable_queue_keeps_at_shutdown_what_it_could_not_deliver_and_drops_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::for_tests();
        let sink = Arc::new(TestSink::down(Duration::from_millis(5)));
        let config = SinkConfig {
            queue: QueueConfig {
                durable: Some(spansink_config::DurableQueueConfig {
                    path: Some(dir.path().display().to_string()),
                    fsync: spansink_config::FsyncPolicy::Never,
                    ..Default::default()
                }),
                ..QueueConfig::default()
            },
            batch: BatchConfig {
                max_spans: 10,
                ..sink_config().batch
            },
            retry: spansink_config::RetryConfig {
                initial_backoff: spansink_config::Duration::from_millis(10),
                max_attempts: 100_000,
                ..Default::default()
            },
            ..sink_config()
        };
        let exporter = exporter_config(vec![("s", config)]);
        let chain = build(&exporter, &[("s", &sink)], &m);
        chain.start();
        for _ in 0..3 {
            chain.admit(trace_data("svc", 10)).await.unwrap();
        }
        let report = chain.drain(Duration::from_millis(300)).await;
        assert_eq!(
            report,
            DrainReport {
                delivered_spans: 0,
                dropped_spans: 0,
                kept_spans: 30,
                timed_out: true
            }
        );
        assert_eq!(reason(&m.sink_dropped_spans, "s", "shutdown"), 0);
        assert_eq!(reason(&m.sink_kept_spans, "s", "shutdown"), 30);
        assert_eq!(sink.shutdowns(), 1);
        drop(chain);
        let again = queue::open("s", &exporter.sinks["s"].queue, &Metrics::for_tests()).unwrap();
        assert_eq!(again.pending_spans(), 30, "on disk for the next start");
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
