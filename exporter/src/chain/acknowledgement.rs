//! End-to-end acknowledgements (`receivers.acknowledgements: persisted | delivered`): what
//! a pusher asks of a queue ([`AckRequest`]), and for `delivered` the per-request
//! [`Tracker`] whose [`Completion`] pieces travel with the request's queue entries and batch
//! parts, through splits and fallbacks, until every sink has committed its share. Not the
//! waiting policy (fan-out decides when to wait and how long) nor the answer (receivers).
//!
//! `received` pays nothing: no tracker, no completions (`None` on every entry), no waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::sinks::SinkError;

/// What a pusher waits for beyond the queue taking its request.
#[derive(Debug, Default)]
pub enum AckRequest {
    /// Nothing more (`acknowledgements: received`, replay, fallback hand-over).
    #[default]
    Received,
    /// A durable queue fsyncs the request before `push` returns, whatever its `fsync`
    /// policy; a memory queue treats it as `Received`.
    Persisted,
    /// The entry carries this completion to the consumer, which resolves it once the
    /// entry is committed.
    Delivered(Completion),
}

impl AckRequest {
    pub fn into_completion(self) -> Option<Completion> {
        match self {
            Self::Delivered(completion) => Some(completion),
            Self::Received | Self::Persisted => None,
        }
    }
}

/// Why a request's spans were not delivered by some sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undelivered {
    /// The backend refused them for good (schema, authorization, size).
    Permanent { sink: String, message: String },
    /// Still failing after the sink's retries.
    Transient { sink: String, message: String },
    /// Dropped before delivery: evicted by `when_full: drop_oldest`, refused by the
    /// fallback's queue, or given up at the shutdown deadline.
    Lost { sink: String },
}

impl Undelivered {
    fn from_error(sink: &str, error: &SinkError) -> Self {
        let sink = sink.to_string();
        let message = error.to_string();
        if error.is_transient() {
            Self::Transient { sink, message }
        } else {
            Self::Permanent { sink, message }
        }
    }

    /// Which failure a request reports when several sinks failed: a permanent one (a retry
    /// cannot fully succeed), then an explicit transient error, then a loss.
    fn rank(&self) -> u8 {
        match self {
            Self::Permanent { .. } => 2,
            Self::Transient { .. } => 1,
            Self::Lost { .. } => 0,
        }
    }
}

/// The shared state of one waiting request.
#[derive(Debug)]
struct Shared {
    /// Completions not yet resolved, plus the admitter's own hold (see `Tracker::new`).
    pending: AtomicUsize,
    failure: Mutex<Option<Undelivered>>,
    done: Mutex<Option<oneshot::Sender<Result<(), Undelivered>>>>,
}

impl Shared {
    fn resolve(&self, failure: Option<Undelivered>) {
        if let Some(failure) = failure {
            let mut slot = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.as_ref().is_none_or(|f| failure.rank() > f.rank()) {
                *slot = Some(failure);
            }
        }
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let failure = self
                .failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let sender = self
                .done
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(sender) = sender {
                // The client may have stopped waiting (timeout): nobody to tell.
                let _ = sender.send(failure.map_or(Ok(()), Err));
            }
        }
    }
}

/// One request's acknowledgement in `delivered` mode: hands out a completion per sink that
/// takes spans of it, and resolves once all of them are resolved.
#[derive(Debug)]
pub struct Tracker {
    shared: Arc<Shared>,
    done: oneshot::Receiver<Result<(), Undelivered>>,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracker {
    pub fn new() -> Self {
        let (sender, done) = oneshot::channel();
        Self {
            shared: Arc::new(Shared {
                // The admitter's hold: completions resolved while others are still being
                // handed out cannot finish the request early.
                pending: AtomicUsize::new(1),
                failure: Mutex::new(None),
                done: Mutex::new(Some(sender)),
            }),
            done,
        }
    }

    /// A completion for sink `sink`'s share of the request.
    pub fn completion(&self, sink: &str) -> Completion {
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        Completion {
            shared: Some(self.shared.clone()),
            sink: sink.to_string(),
        }
    }

    /// Releases the admitter's hold and waits until every completion is resolved: at once
    /// when none was handed out (every sink filtered the request out).
    pub async fn wait(self) -> Result<(), Undelivered> {
        self.shared.resolve(None);
        // The sender lives in `shared`, which this tracker holds: it is never dropped
        // unsent while we wait.
        self.done.await.unwrap_or(Ok(()))
    }
}

/// One sink's share of a waiting request (or a piece of it, after a split). Resolved
/// exactly once: by `delivered`, `failed`, or, if dropped unresolved, as lost.
#[derive(Debug)]
pub struct Completion {
    /// `None` once resolved.
    shared: Option<Arc<Shared>>,
    /// The sink holding it, named in the client's error if it is lost.
    sink: String,
}

impl Completion {
    /// Committed: delivered to the backend (or by the fallback sink).
    pub fn delivered(mut self) {
        if let Some(shared) = self.shared.take() {
            shared.resolve(None);
        }
    }

    /// Sink `sink` gave up on the spans with `error` (after its retries).
    pub fn failed(mut self, sink: &str, error: &SinkError) {
        if let Some(shared) = self.shared.take() {
            shared.resolve(Some(Undelivered::from_error(sink, error)));
        }
    }

    /// Splits into `pieces` completions (at least one), each resolved on its own; the
    /// request waits for all of them.
    pub fn split(mut self, pieces: usize) -> Vec<Completion> {
        let Some(shared) = self.shared.take() else {
            return Vec::new();
        };
        let pieces = pieces.max(1);
        // This one becomes the first piece; the others are added to the count.
        shared.pending.fetch_add(pieces - 1, Ordering::AcqRel);
        (0..pieces)
            .map(|_| Completion {
                shared: Some(shared.clone()),
                sink: self.sink.clone(),
            })
            .collect()
    }

    /// Handed to sink `sink` (a fallback): a loss from now on is that sink's.
    pub fn handed_to(mut self, sink: &str) -> Self {
        self.sink = sink.to_string();
        self
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.resolve(Some(Undelivered::Lost {
                sink: std::mem::take(&mut self.sink),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_without_completions_is_acknowledged_at_once() {
        assert_eq!(Tracker::new().wait().await, Ok(()));
    }

    #[tokio::test]
    async fn resolves_only_once_every_piece_of_every_sink_is_resolved() {
        let tracker = Tracker::new();
        let a = tracker.completion("a");
        let b = tracker.completion("b");
        a.delivered();
        let mut pieces = b.split(3);
        let last = pieces.pop().unwrap();
        for piece in pieces {
            piece.delivered();
        }
        let mut wait = tokio::spawn(tracker.wait());
        tokio::task::yield_now().await;
        assert!(
            futures::poll!(&mut wait).is_pending(),
            "one piece is still out"
        );
        last.delivered();
        assert_eq!(wait.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_permanent_failure_wins_over_transient_ones_and_losses() {
        let tracker = Tracker::new();
        let (a, b, c) = (
            tracker.completion("a"),
            tracker.completion("b"),
            tracker.completion("c"),
        );
        drop(a);
        b.failed("b", &SinkError::transient("io", "down"));
        c.failed("c", &SinkError::permanent("rejected", "bad schema"));
        match tracker.wait().await {
            Err(Undelivered::Permanent { sink, message }) => {
                assert_eq!(sink, "c");
                assert!(message.contains("bad schema"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_dropped_completion_is_a_loss_naming_the_sink_that_held_it() {
        let tracker = Tracker::new();
        let handed = tracker.completion("main").handed_to("dlq");
        drop(handed);
        assert_eq!(
            tracker.wait().await,
            Err(Undelivered::Lost { sink: "dlq".into() })
        );
    }
}

#[cfg(test)]
mod chain_tests;
