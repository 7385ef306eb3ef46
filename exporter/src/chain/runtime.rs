//! One sink of one chain generation ([`SinkRuntime`]): its queue, its policy stack and
//! its worker, and how that generation ends. A reload passes an unchanged runtime on to
//! the next chain as it is (queue, worker and backend keep running); a replaced one ends
//! on its own deadline while the next chain runs. Not the order of the policy layers
//! (`builder`), nor which chain the receivers admit into (`live`).
//!
//! How a runtime ends ([`SinkRuntime::finish`]):
//! 1. once nothing feeds it any more (the chain that owned it let go, and every sink
//!    falling back to it has ended), its queue is closed;
//! 2. its worker delivers what is queued and in flight, until the deadline;
//! 3. at the deadline the worker is stopped and its exports are cancelled and waited for,
//!    so nothing of this generation calls the backend afterwards; what is left is
//!    counted, by the deadline's cause (`reload` or `shutdown`): lost from a memory queue
//!    (`sink_dropped_spans`), kept on disk by a durable one (`sink_kept_spans`);
//! 4. the sink it falls back to is released, and its backend is shut down.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use spansink_config::SinkConfig;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::queue::SpanQueue;
use super::worker::Worker;
use crate::sinks::SharedSink;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::SinkReasonLabels;

/// How long each sink's `shutdown` (final flush) may take after the drain. Defined in the
/// config crate because the operator adds it to the pods' termination grace period.
const SINK_SHUTDOWN_TIMEOUT: Duration = spansink_config::ShutdownConfig::SINK_SHUTDOWN_TIMEOUT;

/// Why a runtime ends: the `reason` label of what its deadline leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A reload replaced it.
    Reload,
    /// The exporter is stopping.
    Shutdown,
}

impl Cause {
    pub fn label(self) -> &'static str {
        match self {
            Self::Reload => "reload",
            Self::Shutdown => "shutdown",
        }
    }
}

/// The last moment a runtime may keep delivering, and why it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub at: Instant,
    pub cause: Cause,
}

/// What ending one runtime came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ended {
    /// Spans delivered while it was ending.
    pub delivered_spans: u64,
    /// Spans of a memory queue still pending at the deadline.
    pub dropped_spans: u64,
    /// Spans left in a durable queue at the deadline.
    pub kept_spans: u64,
    /// Whether the deadline came before everything was delivered.
    pub timed_out: bool,
}

/// One sink of one generation. Shared (`Arc`) by every chain generation that keeps it.
pub struct SinkRuntime {
    name: String,
    /// What it was built from: a reload keeps the runtime while this is unchanged.
    config: SinkConfig,
    queue: Arc<dyn SpanQueue>,
    /// The durable queue's directory, resolved; every generation of the sink on it
    /// shares one store.
    directory: Option<PathBuf>,
    /// The backend wrapped in its policies; `shutdown` passes through to the backend.
    stack: SharedSink,
    /// The runtime whose queue the stack's fallback layer pushes into.
    fallback: Option<Arc<SinkRuntime>>,
    /// Whether this runtime's hold on `fallback` was given back.
    fallback_released: AtomicBool,
    sent: Arc<AtomicU64>,
    /// Taken by `start`.
    worker: Mutex<Option<Worker>>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// An older generation on the same durable directory: this worker starts only once
    /// it has ended, so two generations never run the backend on one queue at once.
    predecessor: Mutex<Option<Arc<SinkRuntime>>>,
    /// A newer generation on the same durable directory waits for this one.
    awaited: AtomicBool,
    /// Stops the worker at the deadline.
    stop: CancellationToken,
    /// The chain that owns it (chain ids start at 1); 0 once let go.
    owner: AtomicU64,
    /// 1 while a chain owns it, plus one per runtime falling back to it that has not
    /// ended. The queue is closed when it reaches 0.
    holds: AtomicUsize,
    released: Notify,
    deadline: watch::Sender<Option<Deadline>>,
    ending: AtomicBool,
    /// Cancelled once it has ended: worker stopped, queue settled, backend shut down.
    ended: CancellationToken,
    metrics: Metrics,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values are plain options; a panic elsewhere leaves them usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A durable queue's directory as the queue registry keys it (one store per directory).
fn resolved(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// What the chain builder puts together for one runtime.
pub struct Parts {
    pub queue: Arc<dyn SpanQueue>,
    /// The backend wrapped in its policies.
    pub stack: SharedSink,
    /// The runtime whose queue the stack's fallback layer pushes into.
    pub fallback: Option<Arc<SinkRuntime>>,
    pub worker: Worker,
}

impl SinkRuntime {
    /// A runtime owned by chain `owner`, not started. Takes a hold on its fallback,
    /// given back when this one has ended (or is dropped).
    pub fn new(
        name: &str,
        config: &SinkConfig,
        parts: Parts,
        owner: u64,
        metrics: &Metrics,
    ) -> Self {
        let Parts {
            queue,
            stack,
            fallback,
            worker,
        } = parts;
        if let Some(target) = &fallback {
            target.holds.fetch_add(1, Ordering::AcqRel);
        }
        let directory = config
            .queue
            .durable
            .as_ref()
            .map(|d| resolved(&d.directory(name)));
        Self {
            name: name.to_string(),
            config: config.clone(),
            queue,
            directory,
            stack,
            fallback,
            fallback_released: AtomicBool::new(false),
            sent: worker.sent_counter(),
            worker: Mutex::new(Some(worker)),
            task: Mutex::new(None),
            predecessor: Mutex::new(None),
            awaited: AtomicBool::new(false),
            stop: CancellationToken::new(),
            owner: AtomicU64::new(owner),
            holds: AtomicUsize::new(1),
            released: Notify::new(),
            deadline: watch::Sender::new(None),
            ending: AtomicBool::new(false),
            ended: CancellationToken::new(),
            metrics: metrics.clone(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &SinkConfig {
        &self.config
    }

    pub fn queue(&self) -> &Arc<dyn SpanQueue> {
        &self.queue
    }

    pub fn directory(&self) -> Option<&Path> {
        self.directory.as_deref()
    }

    /// Spans this runtime's worker has delivered so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn owned_by(&self, chain: u64) -> bool {
        self.owner.load(Ordering::Acquire) == chain
    }

    /// A reload passes it on to chain `chain` as it is.
    pub fn pass_to(&self, chain: u64) {
        self.owner.store(chain, Ordering::Release);
    }

    pub fn has_ended(&self) -> bool {
        self.ended.is_cancelled()
    }

    /// Resolves once it has ended.
    pub async fn wait_ended(&self) {
        self.ended.cancelled().await
    }

    /// This worker is to start only once `older` has ended.
    pub fn start_after(&self, older: Arc<SinkRuntime>) {
        older.awaited.store(true, Ordering::Release);
        *locked(&self.predecessor) = Some(older);
    }

    /// Spawns the worker (once; within a tokio runtime), after the predecessor if any.
    pub fn start(&self) {
        // Hold the worker slot while storing the task, so a concurrent `finish` sees
        // either no task yet (and spawns it itself) or the task.
        let mut slot = locked(&self.worker);
        let Some(worker) = slot.take() else {
            return;
        };
        let predecessor = locked(&self.predecessor).take();
        let stop = self.stop.clone();
        let name = self.name.clone();
        *locked(&self.task) = Some(tokio::spawn(async move {
            if let Some(older) = predecessor {
                tracing::info!(sink = %name,
                    "waiting for the previous generation to stop before using the durable queue");
                tokio::select! {
                    _ = older.wait_ended() => {}
                    _ = stop.cancelled() => return,
                }
            }
            worker.run_until(stop).await
        }));
    }

    /// Ends it by `deadline` at the latest: an earlier deadline replaces a later one,
    /// never the other way round.
    pub fn end_by(&self, deadline: Deadline) {
        self.deadline.send_if_modified(|current| match current {
            Some(now) if now.at <= deadline.at => false,
            _ => {
                *current = Some(deadline);
                true
            }
        });
    }

    fn deadline(&self) -> Option<Deadline> {
        *self.deadline.borrow()
    }

    /// Not ended, and its deadline (if any) is after `now`.
    pub fn has_time_left(&self, now: Instant) -> bool {
        !self.has_ended() && self.deadline().is_none_or(|d| d.at > now)
    }

    /// The owning chain lets go of it (once); it ends when nothing else feeds it.
    pub fn let_go(&self) {
        if self.owner.swap(0, Ordering::AcqRel) != 0 {
            self.release();
        }
    }

    fn release(&self) {
        let before = self
            .holds
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| h.checked_sub(1));
        if before == Ok(1) {
            self.released.notify_waiters();
        }
    }

    fn release_fallback(&self) {
        if let Some(target) = &self.fallback
            && !self.fallback_released.swap(true, Ordering::AcqRel)
        {
            target.release();
        }
    }

    /// Ends it as the module docs describe; set a deadline first ([`Self::end_by`]). A
    /// second call waits for the first and reports nothing.
    pub async fn finish(&self) -> Ended {
        if self.ending.swap(true, Ordering::AcqRel) {
            self.wait_ended().await;
            return Ended::default();
        }
        let sent_before = self.sent();
        self.wait_until_unfed().await;
        self.queue.close();
        // Never started (a reload came before it ran): it delivers what it queued.
        self.start();
        let finished = self.deliver_until_deadline().await;
        let (dropped_spans, kept_spans) = self.settle(finished);
        self.release_fallback();
        self.shut_down_backend().await;
        self.ended.cancel();
        Ended {
            delivered_spans: self.sent() - sent_before,
            dropped_spans,
            kept_spans,
            timed_out: !finished,
        }
    }

    /// Ends a runtime that never ran and was never admitted into (a reload abandoned
    /// after its chain was built): its queue is closed as it is and its backend shut
    /// down, without starting the worker.
    pub async fn discard(&self) {
        if self.ending.swap(true, Ordering::AcqRel) {
            return self.wait_ended().await;
        }
        self.owner.store(0, Ordering::Release);
        let lost = self.queue.abandon();
        if lost > 0 {
            tracing::error!(sink = %self.name, spans = lost, "discarded sink generation held spans; they are dropped");
            self.count_dropped(Cause::Reload, lost as u64);
        }
        self.release_fallback();
        self.shut_down_backend().await;
        self.ended.cancel();
    }

    /// Waits until nothing feeds the queue any more. A shutdown deadline also ends the
    /// wait: it bounds everything, a sink still falling back to this one included.
    async fn wait_until_unfed(&self) {
        let mut deadline = self.deadline.subscribe();
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.holds.load(Ordering::Acquire) == 0 {
                return;
            }
            let shutdown_at = deadline
                .borrow_and_update()
                .filter(|d| d.cause == Cause::Shutdown)
                .map(|d| d.at);
            tokio::select! {
                _ = released => {}
                _ = sleep_until(shutdown_at) => {
                    tracing::warn!(sink = %self.name, "shutdown deadline passed while other sinks still fall back to this one; closing its queue");
                    return;
                }
                Ok(()) = deadline.changed() => {}
            }
        }
    }

    /// Waits for the worker until the deadline (which may move earlier meanwhile);
    /// stops it there. Whether it finished on its own.
    async fn deliver_until_deadline(&self) -> bool {
        let Some(mut task) = locked(&self.task).take() else {
            return true;
        };
        let mut deadline = self.deadline.subscribe();
        let finished = loop {
            let at = deadline.borrow_and_update().map(|d| d.at);
            tokio::select! {
                biased;
                joined = &mut task => {
                    self.report_worker(joined);
                    break true;
                }
                _ = sleep_until(at) => break false,
                Ok(()) = deadline.changed() => {}
            }
        };
        if !finished {
            // The worker cancels its exports and waits for them before it returns.
            self.stop.cancel();
            let joined = task.await;
            self.report_worker(joined);
        }
        finished
    }

    fn report_worker(&self, joined: Result<(), tokio::task::JoinError>) {
        if let Err(e) = joined {
            tracing::error!(sink = %self.name, error = %e, "sink worker failed");
        }
    }

    /// Counts and logs what the worker left behind: (dropped, kept).
    fn settle(&self, finished: bool) -> (u64, u64) {
        let cause = self.deadline().map_or(Cause::Shutdown, |d| d.cause);
        // A durable queue's pending count covers its whole directory, later generations
        // included: it is only this generation's leftovers when it was cut short.
        let pending = self.queue.pending_spans() as u64;
        let lost = self.queue.abandon() as u64;
        // Cut by a shutdown that also ends the newer generation on the same directory:
        // that one counts what the directory keeps, once.
        let left_to_successor = cause == Cause::Shutdown && self.awaited.load(Ordering::Acquire);
        let kept = if finished || left_to_successor {
            0
        } else {
            pending.saturating_sub(lost)
        };
        if lost > 0 {
            self.count_dropped(cause, lost);
            tracing::error!(sink = %self.name, spans = lost, cause = %cause.label(),
                "deadline passed; spans not delivered are dropped");
        }
        if kept > 0 {
            self.metrics
                .sink_kept_spans
                .get_or_create(&SinkReasonLabels {
                    sink: self.name.clone(),
                    reason: cause.label(),
                })
                .inc_by(kept);
            let dir = self
                .directory
                .as_deref()
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            let next = match cause {
                Cause::Reload => "the sink's next generation",
                Cause::Shutdown => "the next start",
            };
            tracing::warn!(sink = %self.name, spans = kept, cause = %cause.label(),
                dir = %dir, delivered_by = %next,
                "deadline passed; spans not delivered stay in the durable queue");
        }
        (lost, kept)
    }

    fn count_dropped(&self, cause: Cause, spans: u64) {
        self.metrics
            .sink_dropped_spans
            .get_or_create(&SinkReasonLabels {
                sink: self.name.clone(),
                reason: cause.label(),
            })
            .inc_by(spans);
    }

    async fn shut_down_backend(&self) {
        match tokio::time::timeout(SINK_SHUTDOWN_TIMEOUT, self.stack.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(sink = %self.name, error = %e, "sink shutdown failed"),
            Err(_) => tracing::error!(sink = %self.name,
                timeout_ms = SINK_SHUTDOWN_TIMEOUT.as_millis() as u64,
                "sink shutdown did not finish in time"),
        }
    }

    /// How long a generation replaced by a reload may keep delivering in the
    /// background when no newer one waits for it: as long as its retries would have
    /// kept a batch (`retry.max_elapsed` plus one export `timeout`), and at least
    /// `hand_over`.
    pub fn background_budget(&self, hand_over: Duration) -> Duration {
        let timeout = self.config.timeout.get();
        let per_batch = if self.config.retry.enabled {
            self.config.retry.max_elapsed.get().saturating_add(timeout)
        } else {
            timeout
        };
        per_batch.max(hand_over)
    }
}

impl Drop for SinkRuntime {
    /// A runtime dropped without ending (a build that failed midway) no longer feeds
    /// its fallback.
    fn drop(&mut self) {
        self.release_fallback();
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
