//! [`MemoryQueue`]: a sink's queue in memory, lost with the process. Not the disk queue
//! (see `durable`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use spansink_config::{QueueConfig, WhenFull};
use tokio::sync::Notify;

use super::wait_for_room::WaitForRoom;
use super::{Arrival, EntryId, QueueEntry, QueueMetrics, RETRY_AFTER, SpanQueue};
use crate::chain::Refusal;
use crate::chain::acknowledgement::AckRequest;
use crate::otlp::TraceData;
use crate::telemetry::Metrics;

/// A [`SpanQueue`] in memory, bounded by spans and bytes of entries not yet handed out.
/// What the consumer holds is bounded separately (batch size times concurrent exports).
pub struct MemoryQueue {
    sink: String,
    max_spans: usize,
    max_bytes: usize,
    when_full: WhenFull,
    block_timeout: Duration,
    // A std mutex: the critical sections are a few field updates and never await, and
    // it keeps `close`/`pending_spans` synchronous. Waiting is done on the `Notify`s.
    state: Mutex<State>,
    /// Wakes consumers waiting in `pop` (on push and on close).
    entry_added: Notify,
    /// `when_full: block`: woken on pop, eviction and close.
    room: WaitForRoom,
    metrics: QueueMetrics,
}

#[derive(Default)]
struct State {
    entries: VecDeque<QueueEntry>,
    spans: usize,
    bytes: usize,
    /// Handed out, not yet committed: id -> spans.
    unacked: HashMap<EntryId, usize>,
    next_id: EntryId,
    closed: bool,
}

impl State {
    /// Whether a request fits. An empty queue takes anything, so a request larger than
    /// the whole capacity can still get through (alone).
    fn fits(&self, spans: usize, bytes: usize, max_spans: usize, max_bytes: usize) -> bool {
        self.entries.is_empty()
            || (self.spans + spans <= max_spans && self.bytes + bytes <= max_bytes)
    }

    fn insert(&mut self, arrival: Arrival) {
        let Arrival { data, completion } = arrival;
        self.spans += data.span_count();
        self.bytes += data.encoded_len();
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push_back(QueueEntry {
            id,
            data,
            completion,
        });
    }

    fn take_oldest(&mut self) -> Option<QueueEntry> {
        let entry = self.entries.pop_front()?;
        self.spans -= entry.data.span_count();
        self.bytes -= entry.data.encoded_len();
        Some(entry)
    }
}

impl MemoryQueue {
    pub fn new(sink: &str, config: &QueueConfig, metrics: &Metrics) -> Self {
        let max_spans = usize::try_from(config.max_spans).unwrap_or(usize::MAX);
        Self {
            sink: sink.to_string(),
            max_spans,
            max_bytes: config.max_bytes.as_usize(),
            when_full: config.when_full,
            block_timeout: config.block_timeout.get(),
            state: Mutex::new(State::default()),
            entry_added: Notify::new(),
            room: WaitForRoom::new(),
            metrics: QueueMetrics::new(sink, max_spans, metrics),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind; keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn shutting_down() -> Refusal {
        Refusal::ShuttingDown {
            retry_after: RETRY_AFTER,
        }
    }

    /// Inserts `arrival` if it fits; gives it back otherwise.
    fn try_insert(&self, arrival: Arrival) -> Result<Result<(), Arrival>, Refusal> {
        let (spans, bytes) = (arrival.data.span_count(), arrival.data.encoded_len());
        let mut state = self.state();
        if state.closed {
            return Err(Self::shutting_down());
        }
        if !state.fits(spans, bytes, self.max_spans, self.max_bytes) {
            return Ok(Err(arrival));
        }
        state.insert(arrival);
        self.metrics.add(spans, bytes);
        drop(state);
        self.metrics.received(spans);
        self.entry_added.notify_waiters();
        Ok(Ok(()))
    }

    fn push_or_reject(&self, arrival: Arrival) -> Result<(), Refusal> {
        match self.try_insert(arrival)? {
            Ok(()) => Ok(()),
            Err(_) => Err(Refusal::QueueFull {
                sink: self.sink.clone(),
                retry_after: RETRY_AFTER,
            }),
        }
    }

    fn push_dropping_oldest(&self, arrival: Arrival) -> Result<(), Refusal> {
        let (spans, bytes) = (arrival.data.span_count(), arrival.data.encoded_len());
        let mut state = self.state();
        if state.closed {
            return Err(Self::shutting_down());
        }
        let mut evicted = (0, 0);
        // Their completions are resolved (as lost) once the lock is released.
        let mut dropped = Vec::new();
        while !state.fits(spans, bytes, self.max_spans, self.max_bytes) {
            let Some(old) = state.take_oldest() else {
                break;
            };
            evicted.0 += old.data.span_count();
            evicted.1 += old.data.encoded_len();
            dropped.push(old);
        }
        state.insert(arrival);
        self.metrics.remove(evicted.0, evicted.1);
        self.metrics.add(spans, bytes);
        drop(state);
        drop(dropped);
        if evicted.0 > 0 {
            self.metrics.dropped_oldest(evicted.0);
            tracing::debug!(sink = %self.sink, spans = evicted.0, "queue full: dropped oldest spans");
        }
        self.metrics.received(spans);
        self.entry_added.notify_waiters();
        Ok(())
    }

    async fn push_or_wait(&self, arrival: Arrival) -> Result<(), Refusal> {
        self.room
            .push(&self.sink, self.block_timeout, arrival, |arrival| {
                self.try_insert(arrival)
            })
            .await
    }
}

#[async_trait]
impl SpanQueue for MemoryQueue {
    /// `Persisted` is `Received` here: memory is all there is.
    async fn push_acked(&self, data: TraceData, ack: AckRequest) -> Result<(), Refusal> {
        let arrival = Arrival {
            data,
            completion: ack.into_completion(),
        };
        match self.when_full {
            WhenFull::Block => self.push_or_wait(arrival).await,
            WhenFull::Reject => self.push_or_reject(arrival),
            WhenFull::DropOldest => self.push_dropping_oldest(arrival),
        }
    }

    async fn pop(&self) -> Option<QueueEntry> {
        loop {
            let added = self.entry_added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            {
                let mut state = self.state();
                if let Some(entry) = state.take_oldest() {
                    let (spans, bytes) = (entry.data.span_count(), entry.data.encoded_len());
                    state.unacked.insert(entry.id, spans);
                    self.metrics.remove(spans, bytes);
                    drop(state);
                    self.room.notify();
                    return Some(entry);
                }
                if state.closed {
                    return None;
                }
            }
            added.await;
        }
    }

    async fn commit(&self, id: EntryId) {
        self.state().unacked.remove(&id);
    }

    fn close(&self) {
        self.state().closed = true;
        self.entry_added.notify_waiters();
        self.room.notify();
    }

    fn pending_spans(&self) -> usize {
        let state = self.state();
        state.spans + state.unacked.values().sum::<usize>()
    }

    fn abandon(&self) -> usize {
        let mut state = self.state();
        state.closed = true;
        let lost = state.spans + state.unacked.values().sum::<usize>();
        self.metrics.remove(state.spans, state.bytes);
        // Their completions are resolved (as lost) once the lock is released.
        let entries = std::mem::take(&mut state.entries);
        state.unacked.clear();
        state.spans = 0;
        state.bytes = 0;
        drop(state);
        drop(entries);
        self.entry_added.notify_waiters();
        self.room.notify();
        lost
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus_client::metrics::gauge::Gauge;
    use spansink_config::ByteSize;

    use super::*;
    use tokio::time::Instant;

    use crate::chain::test_sinks::{dropped_for_room, trace_data};

    fn config(max_spans: u64, when_full: WhenFull) -> QueueConfig {
        QueueConfig {
            max_spans,
            max_bytes: ByteSize::mib(64),
            when_full,
            block_timeout: spansink_config::Duration::from_secs(5),
            durable: None,
        }
    }

    fn gauge(
        family: &prometheus_client::metrics::family::Family<
            crate::telemetry::metrics::SinkLabels,
            Gauge,
        >,
        m: &Metrics,
    ) -> i64 {
        family.get_or_create(&m.sink("s")).get()
    }

    #[tokio::test(start_paused = true)]
    async fn hands_out_in_order_with_ids_and_counts_until_commit() {
        let m = Metrics::for_tests();
        let q = MemoryQueue::new("s", &config(100, WhenFull::Block), &m);
        q.push(trace_data("a", 3)).await.unwrap();
        q.push(trace_data("b", 4)).await.unwrap();
        assert_eq!(gauge(&m.sink_queue_spans, &m), 7);
        assert!(gauge(&m.sink_queue_bytes, &m) > 0);
        assert_eq!(gauge(&m.sink_queue_capacity_spans, &m), 100);
        assert_eq!(m.sink_received_spans.get_or_create(&m.sink("s")).get(), 7);

        let first = q.pop().await.unwrap();
        let second = q.pop().await.unwrap();
        assert_eq!(first.data.span_count(), 3);
        assert!(second.id > first.id);
        assert_eq!(gauge(&m.sink_queue_spans, &m), 0);
        assert_eq!(gauge(&m.sink_queue_bytes, &m), 0);
        assert_eq!(q.pending_spans(), 7, "handed out but not committed");
        q.commit(second.id).await;
        q.commit(first.id).await;
        assert_eq!(q.pending_spans(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn block_waits_for_room_then_answers_backpressure() {
        let m = Metrics::for_tests();
        let q = Arc::new(MemoryQueue::new("s", &config(10, WhenFull::Block), &m));
        q.push(trace_data("a", 8)).await.unwrap();

        // Room appears after 2 s: the blocked push goes through.
        let consumer = {
            let q = q.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                q.pop().await
            })
        };
        let start = Instant::now();
        q.push(trace_data("b", 5)).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert!(consumer.await.unwrap().is_some());

        // Nobody pops: refused after block_timeout, and nothing of it was kept.
        let start = Instant::now();
        let refusal = q.push(trace_data("c", 6)).await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(
            refusal,
            Refusal::Backpressure {
                sink: "s".into(),
                retry_after: RETRY_AFTER
            }
        );
        assert_eq!(gauge(&m.sink_queue_spans, &m), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn blocked_pushers_are_served_in_arrival_order() {
        let m = Metrics::for_tests();
        let q = Arc::new(MemoryQueue::new("s", &config(10, WhenFull::Block), &m));
        q.push(trace_data("first", 5)).await.unwrap();
        q.push(trace_data("second", 5)).await.unwrap();
        let big = tokio::spawn({
            let q = q.clone();
            async move { q.push(trace_data("big", 9)).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let small = tokio::spawn({
            let q = q.clone();
            async move { q.push(trace_data("small", 1)).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;

        // Room for the small one only: it must not overtake the big one waiting before it.
        q.pop().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(gauge(&m.sink_queue_spans, &m), 5);

        q.pop().await.unwrap();
        big.await.unwrap().unwrap();
        small.await.unwrap().unwrap();
        assert_eq!(q.pop().await.unwrap().data.span_count(), 9);
        assert_eq!(q.pop().await.unwrap().data.span_count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn reject_refuses_at_once_when_full() {
        let m = Metrics::for_tests();
        let q = MemoryQueue::new("s", &config(10, WhenFull::Reject), &m);
        q.push(trace_data("a", 6)).await.unwrap();
        let start = Instant::now();
        let refusal = q.push(trace_data("b", 5)).await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(refusal.reason(), "queue_full");
        q.push(trace_data("c", 4)).await.unwrap();
        assert_eq!(gauge(&m.sink_queue_spans, &m), 10);
        assert_eq!(m.sink_received_spans.get_or_create(&m.sink("s")).get(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn drop_oldest_evicts_and_counts() {
        let m = Metrics::for_tests();
        let q = MemoryQueue::new("s", &config(10, WhenFull::DropOldest), &m);
        q.push(trace_data("a", 4)).await.unwrap();
        q.push(trace_data("b", 4)).await.unwrap();
        q.push(trace_data("c", 5)).await.unwrap(); // evicts "a" only: 4 + 5 fits
        let dropped = dropped_for_room(&m, "s");
        assert_eq!(dropped, 4);
        assert_eq!(gauge(&m.sink_queue_spans, &m), 9);
        assert_eq!(q.pop().await.unwrap().data.span_count(), 4);
        assert_eq!(q.pop().await.unwrap().data.span_count(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn oversized_request_is_admitted_only_into_an_empty_queue() {
        let m = Metrics::for_tests();
        let q = MemoryQueue::new("s", &config(10, WhenFull::Reject), &m);
        q.push(trace_data("a", 1)).await.unwrap();
        assert!(q.push(trace_data("huge", 25)).await.is_err());
        q.pop().await.unwrap();
        q.push(trace_data("huge", 25)).await.unwrap();
        assert!(q.push(trace_data("b", 1)).await.is_err());

        let bytes = QueueConfig {
            max_bytes: ByteSize(1024),
            ..config(1000, WhenFull::Reject)
        };
        let q = MemoryQueue::new("t", &bytes, &m);
        let big = trace_data("big", 50);
        assert!(big.encoded_len() > 1024);
        q.push(big.clone()).await.unwrap();
        assert!(q.push(trace_data("b", 1)).await.is_err(), "bytes bound too");
    }

    #[tokio::test(start_paused = true)]
    async fn close_refuses_pushes_and_drains_what_is_left() {
        let m = Metrics::for_tests();
        let q = Arc::new(MemoryQueue::new("s", &config(10, WhenFull::Block), &m));
        q.push(trace_data("a", 10)).await.unwrap();
        let blocked = tokio::spawn({
            let q = q.clone();
            async move { q.push(trace_data("b", 1)).await }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        q.close();
        assert_eq!(
            blocked.await.unwrap().unwrap_err().reason(),
            "shutting_down"
        );
        assert_eq!(
            q.push(trace_data("c", 1)).await.unwrap_err().reason(),
            "shutting_down"
        );
        assert_eq!(q.pop().await.unwrap().data.span_count(), 10);
        assert!(q.pop().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn close_wakes_a_waiting_consumer() {
        let m = Metrics::for_tests();
        let q = Arc::new(MemoryQueue::new("s", &config(10, WhenFull::Block), &m));
        let consumer = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        q.close();
        assert!(consumer.await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn abandon_reports_everything_uncommitted_as_lost() {
        let m = Metrics::for_tests();
        let q = MemoryQueue::new("s", &config(100, WhenFull::Block), &m);
        q.push(trace_data("a", 3)).await.unwrap();
        q.push(trace_data("b", 4)).await.unwrap();
        q.push(trace_data("c", 5)).await.unwrap();
        let a = q.pop().await.unwrap();
        q.commit(a.id).await;
        q.pop().await.unwrap(); // "b" in the consumer's hands, never committed
        assert_eq!(q.abandon(), 9);
        assert_eq!(gauge(&m.sink_queue_spans, &m), 0);
        assert_eq!(q.pending_spans(), 0);
        assert!(q.pop().await.is_none());
    }
}
