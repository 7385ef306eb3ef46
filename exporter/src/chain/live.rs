//! The chain the receivers admit into ([`LiveChain`]): the current generation, replaced
//! on reload, and the old generations of replaced sinks that are still ending. Not how a
//! config is read or a chain built (`reload`, `assemble`).
//!
//! At a reload, a sink whose settings did not change keeps running as it is, queue
//! included. A replaced sink's old generation ends on its own deadline while the new
//! chain runs:
//! - on a durable directory the new generation shares, it has the hand-over deadline
//!   (`shutdown.drain_timeout`); the new generation starts only once the old one has
//!   ended, and takes over what the old one did not deliver (`kept{reason="reload"}`);
//! - otherwise (a memory queue, a directory the new config no longer uses) it keeps
//!   delivering in the background for as long as its retries could last
//!   ([`SinkRuntime::background_budget`]), and at most [`MAX_DRAINING_GENERATIONS`]
//!   old generations of a sink do: a further reload ends the oldest at once. What a
//!   memory queue still holds then is counted as `dropped{reason="reload"}`.
//!
//! `sink_draining_generations{sink}` shows the old generations still ending.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::builder::{Chain, DrainReport, Replaced};
use super::runtime::{Cause, Deadline, Ended, SinkRuntime};
use super::{Admission, Admit, Refusal};
use crate::otlp::TraceData;
use crate::telemetry::Metrics;

/// Most old generations of one sink still delivering in the background; a reload that
/// replaces the sink once more ends the oldest at once. Each holds at most its queue
/// (and what is in flight), so this bounds the memory a run of reloads can pin.
pub const MAX_DRAINING_GENERATIONS: usize = 2;

/// The chain the receivers admit into, and the old generations still ending.
pub struct LiveChain {
    current: RwLock<Arc<Chain>>,
    /// Serialises reloads and shutdown so two swaps never interleave.
    swap: tokio::sync::Mutex<()>,
    draining: Mutex<Vec<Draining>>,
    metrics: Metrics,
}

/// An old generation of a sink, ending in the background.
struct Draining {
    runtime: Arc<SinkRuntime>,
    task: JoinHandle<Ended>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A plain list; a panic elsewhere leaves it usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LiveChain {
    pub fn new(chain: Arc<Chain>) -> Self {
        let metrics = chain.metrics().clone();
        Self {
            current: RwLock::new(chain),
            swap: tokio::sync::Mutex::new(()),
            draining: Mutex::new(Vec::new()),
            metrics,
        }
    }

    pub fn current(&self) -> Arc<Chain> {
        // A poisoned lock means a panic while swapping an Arc: the Arc itself is intact.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `next` (built after the current chain, see `Chain::build_next`) the chain
    /// receivers admit into and starts it; the sinks it shares keep running, the ones
    /// it replaces end as the module docs say, `hand_over` being the deadline of those
    /// a new generation waits for. Returns at once: nothing here waits for a backend.
    pub async fn replace(&self, next: Arc<Chain>, hand_over: Duration) {
        let _guard = self.swap.lock().await;
        let previous = {
            let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *current, next.clone())
        };
        let replaced = previous.hand_over(&next);
        next.start();
        let now = Instant::now();
        for old in replaced {
            self.end_in_background(old, now, hand_over);
        }
    }

    fn end_in_background(&self, old: Replaced, now: Instant, hand_over: Duration) {
        let runtime = old.runtime;
        let budget = if old.awaited {
            hand_over
        } else {
            runtime.background_budget(hand_over)
        };
        runtime.end_by(Deadline {
            at: now + budget,
            cause: Cause::Reload,
        });
        runtime.let_go();
        let name = runtime.name().to_string();
        let gauge = self
            .metrics
            .sink_draining_generations
            .get_or_create(&self.metrics.sink(&name))
            .clone();
        gauge.inc();
        tracing::info!(sink = %name, deadline_ms = budget.as_millis() as u64,
            next_waits = old.awaited, "old generation of a replaced sink delivers what it holds");
        let task = tokio::spawn({
            let runtime = runtime.clone();
            async move {
                let ended = runtime.finish().await;
                gauge.dec();
                tracing::info!(sink = %runtime.name(), delivered_spans = ended.delivered_spans,
                    dropped_spans = ended.dropped_spans, kept_spans = ended.kept_spans,
                    timed_out = ended.timed_out, "old generation of a replaced sink ended");
                ended
            }
        });
        let mut draining = locked(&self.draining);
        draining.retain(|d| !d.task.is_finished());
        draining.push(Draining { runtime, task });
        // Those already past their deadline are ending anyway.
        let of_this_sink: Vec<&Draining> = draining
            .iter()
            .filter(|d| d.runtime.name() == name && d.runtime.has_time_left(now))
            .collect();
        let excess = of_this_sink.len().saturating_sub(MAX_DRAINING_GENERATIONS);
        for oldest in &of_this_sink[..excess] {
            tracing::warn!(sink = %name, limit = MAX_DRAINING_GENERATIONS,
                "too many old generations of this sink still delivering; the oldest ends now");
            oldest.runtime.end_by(Deadline {
                at: now,
                cause: Cause::Reload,
            });
        }
    }

    /// Drains everything for shutdown, finishing by `until`: the current chain, and
    /// the old generations still ending (their deadlines are brought forward to
    /// `until`), so a reload's hand-over finishes (each old generation stops and leaves
    /// what it holds to the next) before the exporter exits. A reload swapping chains
    /// is waited for first; it does not wait for any backend.
    pub async fn drain_until(&self, until: Instant) -> DrainReport {
        let _guard = self.swap.lock().await;
        let mut draining = std::mem::take(&mut *locked(&self.draining));
        // Those that ended before shutdown were reported then.
        draining.retain(|d| !d.runtime.has_ended());
        for old in &draining {
            old.runtime.end_by(Deadline {
                at: until,
                cause: Cause::Shutdown,
            });
        }
        let current = self.current();
        let deadline = until.saturating_duration_since(Instant::now());
        let (report, old) = futures::future::join(
            current.drain(deadline),
            futures::future::join_all(draining.into_iter().map(|d| d.task)),
        )
        .await;
        old.into_iter().fold(report, |report, ended| match ended {
            Ok(ended) => report.add(ended),
            Err(e) => {
                tracing::error!(error = %e, "ending an old sink generation failed");
                report
            }
        })
    }
}

#[async_trait]
impl Admit for LiveChain {
    async fn admit(&self, data: TraceData) -> Result<Admission, Refusal> {
        let chain = self.current();
        match chain.admit(data.clone()).await {
            // The chain was swapped out between our read and the push: the new one takes it.
            Err(Refusal::ShuttingDown { .. }) if !Arc::ptr_eq(&chain, &self.current()) => {
                self.current().admit(data).await
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use spansink_config::ExporterConfig;

    use super::*;
    use crate::chain::test_sinks::{Overlap, TestSink, trace_data};
    use crate::sinks::{BuildError, SharedSink};
    use crate::telemetry::metrics::SinkReasonLabels;

    /// A memory-queue sink `name` on a blackhole backend (replaced by a test sink),
    /// retrying every 100 ms for an hour; `extra` is more YAML under it.
    fn sink(name: &str, extra: &str) -> String {
        format!(
            "  {name}:\n    blackhole: {{}}\n    batch: {{max_spans: 100, flush_interval: 100ms}}\n    \
             retry: {{max_attempts: 100000, initial_backoff: 100ms, max_backoff: 100ms, jitter: 0.0, max_elapsed: 1h}}\n    \
             rate_limit: {{max_concurrent_exports: 1}}\n{extra}"
        )
    }

    fn config(sinks: &[String]) -> ExporterConfig {
        ExporterConfig::from_yaml(&format!("sinks:\n{}", sinks.concat())).unwrap()
    }

    /// The chain of `config` after `previous`, with `backends` for the sinks it builds;
    /// fails the test if it asks for a backend it was not given.
    fn next_chain(
        previous: Option<&Chain>,
        config: &ExporterConfig,
        backends: &[(&str, &Arc<TestSink>)],
        m: &Metrics,
    ) -> Arc<Chain> {
        let backends: BTreeMap<String, SharedSink> = backends
            .iter()
            .map(|(n, s)| (n.to_string(), (*s).clone() as SharedSink))
            .collect();
        let chain = Chain::build_next(previous, config, m, &|name, _| {
            backends.get(name).cloned().ok_or_else(|| BuildError {
                sink: name.into(),
                message: "the test gave no backend for it: it should have been kept".into(),
            })
        })
        .unwrap();
        Arc::new(chain)
    }

    fn started(chain: Arc<Chain>) -> LiveChain {
        chain.start();
        LiveChain::new(chain)
    }

    fn counter(m: &Metrics, family: &str, sink: &str, reason: &'static str) -> u64 {
        let labels = SinkReasonLabels {
            sink: sink.into(),
            reason,
        };
        match family {
            "dropped" => m.sink_dropped_spans.get_or_create(&labels).get(),
            "kept" => m.sink_kept_spans.get_or_create(&labels).get(),
            _ => unreachable!("no such family in these tests"),
        }
    }

    fn draining(m: &Metrics, sink: &str) -> i64 {
        m.sink_draining_generations
            .get_or_create(&m.sink(sink))
            .get()
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_unchanged_sink_keeps_its_queue_worker_and_backend_across_a_reload() {
        let m = Metrics::for_tests();
        let a = Arc::new(TestSink::down(Duration::ZERO));
        let live = started(next_chain(
            None,
            &config(&[sink("a", "")]),
            &[("a", &a)],
            &m,
        ));
        live.admit(trace_data("svc", 10)).await.unwrap();
        settle().await;

        let b = Arc::new(TestSink::recording());
        let after = config(&[sink("a", ""), sink("b", "")]);
        assert_eq!(
            Chain::sinks_to_build(Some(&live.current()), &after),
            ["b"],
            "only the new sink is built"
        );
        let next = next_chain(Some(&live.current()), &after, &[("b", &b)], &m);
        live.replace(next, Duration::from_secs(1)).await;
        // Far past the hand-over deadline: the kept sink was never drained or cut.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(a.shutdowns(), 0, "the kept backend keeps running");
        assert_eq!(draining(&m, "a"), 0, "no old generation of a");

        a.bring_up();
        live.admit(trace_data("svc", 5)).await.unwrap();
        settle().await;
        assert_eq!(a.spans(), 15, "each span once: nothing re-queued");
        assert_eq!(b.spans(), 5);
        let report = live
            .drain_until(Instant::now() + Duration::from_secs(5))
            .await;
        assert_eq!(report.dropped_spans, 0);
        assert_eq!(counter(&m, "dropped", "a", "reload"), 0);
        assert_eq!(counter(&m, "dropped", "a", "shutdown"), 0);
        assert_eq!((a.shutdowns(), b.shutdowns()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_memory_sink_keeps_draining_in_the_background_while_the_new_one_runs() {
        let m = Metrics::for_tests();
        let old = Arc::new(TestSink::down(Duration::ZERO));
        let live = started(next_chain(
            None,
            &config(&[sink("a", "")]),
            &[("a", &old)],
            &m,
        ));
        live.admit(trace_data("svc", 10)).await.unwrap();
        settle().await;

        let new = Arc::new(TestSink::recording());
        let changed = config(&[sink("a", "    timeout: 20s\n")]);
        let next = next_chain(Some(&live.current()), &changed, &[("a", &new)], &m);
        live.replace(next, Duration::from_secs(1)).await;
        live.admit(trace_data("svc", 5)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(new.spans(), 5, "the new generation runs at once");
        assert_eq!(old.spans(), 0, "the old backend is still down");
        assert_eq!(
            draining(&m, "a"),
            1,
            "the old generation drains in the background"
        );
        assert_eq!(counter(&m, "dropped", "a", "reload"), 0);

        old.bring_up();
        settle().await;
        assert_eq!(old.spans(), 10, "the old generation delivered what it held");
        assert_eq!(old.shutdowns(), 1, "and ended");
        assert_eq!(draining(&m, "a"), 0);
        assert_eq!(counter(&m, "dropped", "a", "reload"), 0);
        let report = live
            .drain_until(Instant::now() + Duration::from_secs(5))
            .await;
        assert_eq!(report.dropped_spans, 0);
        assert_eq!(new.shutdowns(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn old_generations_in_the_background_are_bounded_in_number_and_time() {
        let m = Metrics::for_tests();
        // Each generation retries for at most 10 minutes (+ its 30 s timeout).
        let retry = "    retry: {max_attempts: 100000, initial_backoff: 100ms, max_backoff: 100ms, jitter: 0.0, max_elapsed: 10m}\n";
        let generation = |timeout: u64| {
            config(&[format!(
                "  a:\n    blackhole: {{}}\n    batch: {{flush_interval: 100ms}}\n    timeout: {timeout}s\n{retry}"
            )])
        };
        let backends: Vec<Arc<TestSink>> = (0..4)
            .map(|_| Arc::new(TestSink::down(Duration::ZERO)))
            .collect();
        let live = started(next_chain(
            None,
            &generation(30),
            &[("a", &backends[0])],
            &m,
        ));
        live.admit(trace_data("svc", 10)).await.unwrap();
        for (i, backend) in backends.iter().enumerate().skip(1) {
            settle().await;
            let next = next_chain(
                Some(&live.current()),
                &generation(30 + i as u64),
                &[("a", backend)],
                &m,
            );
            live.replace(next, Duration::from_secs(1)).await;
            live.admit(trace_data("svc", 10)).await.unwrap();
        }
        backends[3].bring_up();
        settle().await;
        // Three old generations, at most two of them left running: the oldest ended at
        // once and its spans are counted, not silently lost.
        assert_eq!(draining(&m, "a"), MAX_DRAINING_GENERATIONS as i64);
        assert_eq!(backends[0].shutdowns(), 1);
        assert_eq!(counter(&m, "dropped", "a", "reload"), 10);

        // Past their retry budget (10 min + timeout) the others end too, counted.
        tokio::time::sleep(Duration::from_secs(11 * 60)).await;
        assert_eq!(draining(&m, "a"), 0);
        let received = m.sink_received_spans.get_or_create(&m.sink("a")).get();
        let failed = m
            .sink_failed_spans
            .get_or_create(&SinkReasonLabels {
                sink: "a".into(),
                reason: "unavailable",
            })
            .get();
        let reloaded = counter(&m, "dropped", "a", "reload");
        assert_eq!(received, 40);
        assert_eq!(
            backends[3].spans(),
            10,
            "the current generation delivered its own"
        );
        assert_eq!(
            failed + reloaded,
            30,
            "every span of the old generations is accounted for: given up after its retries or counted at the deadline"
        );
        live.drain_until(Instant::now()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_generation_falling_back_to_a_kept_sink_finishes_before_that_sink_closes() {
        let m = Metrics::for_tests();
        // The old primary fails (permanently) only after 3 s; its batch then goes to the
        // dead letter, which the reload kept and shutdown is draining meanwhile.
        let old = Arc::new(TestSink::slow_failing(Duration::from_secs(3)));
        let dlq = Arc::new(TestSink::recording());
        let primary = |extra: &str| sink("main", &format!("    fallback: dlq\n{extra}"));
        let dead_letter = sink("dlq", "    fallback_only: true\n");
        let live = started(next_chain(
            None,
            &config(&[primary(""), dead_letter.clone()]),
            &[("main", &old), ("dlq", &dlq)],
            &m,
        ));
        live.admit(trace_data("svc", 10)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;

        let new = Arc::new(TestSink::recording());
        let changed = config(&[primary("    timeout: 20s\n"), dead_letter]);
        let next = next_chain(Some(&live.current()), &changed, &[("main", &new)], &m);
        live.replace(next, Duration::from_secs(1)).await;
        let report = live
            .drain_until(Instant::now() + Duration::from_secs(10))
            .await;
        assert_eq!(
            dlq.spans(),
            10,
            "the kept dead letter took the old primary's batch"
        );
        assert_eq!(
            counter(&m, "dropped", "main", "fallback_refused"),
            0,
            "the dead letter stayed open for it"
        );
        assert_eq!(report.dropped_spans, 0);
        assert_eq!(dlq.shutdowns(), 1);
    }

    fn durable_sink(dir: &std::path::Path, extra: &str) -> String {
        format!(
            "  a:\n    blackhole: {{}}\n    batch: {{max_spans: 10, flush_interval: 10ms}}\n    \
             retry: {{max_attempts: 100000, initial_backoff: 10ms, max_backoff: 10ms, jitter: 0.0, max_elapsed: 1h}}\n    \
             rate_limit: {{max_concurrent_exports: 1}}\n    \
             queue: {{durable: {{path: '{}', fsync: never}}}}\n{extra}",
            dir.display()
        )
    }

    /// Polls `check` every 10 ms for at most 10 s.
    async fn eventually(what: &str, check: impl Fn() -> bool) {
        for _ in 0..1000 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not within 10 s: {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_changed_durable_sink_starts_after_its_old_generation_and_takes_over_its_spans() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::for_tests();
        let overlap = Arc::new(Overlap::default());
        let old = Arc::new(TestSink::down(Duration::from_millis(5)).sharing(overlap.clone()));
        let live = started(next_chain(
            None,
            &config(&[durable_sink(dir.path(), "")]),
            &[("a", &old)],
            &m,
        ));
        for _ in 0..3 {
            live.admit(trace_data("svc", 10)).await.unwrap();
        }
        eventually("the old backend is being called", || old.calls() > 3).await;

        let new = Arc::new(TestSink::recording().sharing(overlap.clone()));
        let changed = config(&[durable_sink(dir.path(), "    timeout: 20s\n")]);
        let next = next_chain(Some(&live.current()), &changed, &[("a", &new)], &m);
        live.replace(next, Duration::from_millis(300)).await;
        for _ in 0..2 {
            live.admit(trace_data("svc", 10)).await.unwrap();
        }
        eventually("the new generation delivers everything", || {
            new.spans() >= 50
        })
        .await;
        assert_eq!(
            new.spans(),
            50,
            "every span once, the old generation's included"
        );
        assert_eq!(old.spans(), 0);
        assert_eq!(
            overlap.max(),
            1,
            "the two generations never called the backend at the same time"
        );
        assert_eq!(old.shutdowns(), 1);
        assert_eq!(counter(&m, "dropped", "a", "reload"), 0);
        assert!(
            counter(&m, "kept", "a", "reload") >= 30,
            "handed over, counted"
        );
        let report = live
            .drain_until(Instant::now() + Duration::from_secs(5))
            .await;
        assert_eq!((report.dropped_spans, report.kept_spans), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_during_a_hand_over_finishes_it_by_the_drain_deadline_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::for_tests();
        let old = Arc::new(TestSink::down(Duration::from_millis(5)));
        let live = started(next_chain(
            None,
            &config(&[durable_sink(dir.path(), "")]),
            &[("a", &old)],
            &m,
        ));
        for _ in 0..3 {
            live.admit(trace_data("svc", 10)).await.unwrap();
        }
        let new = Arc::new(TestSink::down(Duration::from_millis(5)));
        let changed = config(&[durable_sink(dir.path(), "    timeout: 20s\n")]);
        let next = next_chain(Some(&live.current()), &changed, &[("a", &new)], &m);
        // A hand-over deadline far beyond the shutdown's.
        live.replace(next, Duration::from_secs(3600)).await;
        live.admit(trace_data("svc", 10)).await.unwrap();

        let drained = tokio::time::timeout(
            Duration::from_secs(20),
            live.drain_until(Instant::now() + Duration::from_millis(300)),
        )
        .await
        .expect("shutdown waited for the hand-over's own deadline");
        assert_eq!(
            drained.dropped_spans, 0,
            "nothing of a durable queue is dropped"
        );
        assert_eq!(
            drained.kept_spans, 40,
            "counted once, by the newest generation: {drained:?}"
        );
        assert_eq!((old.shutdowns(), new.shutdowns()), (1, 1));
        assert_eq!(counter(&m, "dropped", "a", "shutdown"), 0);
        drop(live);

        // Everything accepted is on disk for the next start, whole.
        let again =
            crate::chain::queue::open("a", &changed.sinks["a"].queue, &Metrics::for_tests())
                .unwrap();
        assert_eq!(again.pending_spans(), 40);
    }
}
