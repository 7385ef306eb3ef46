//! The state of one durable queue directory: its segments, where the oldest unread
//! record is, what is in memory, what is handed out. One [`Store`] per directory per
//! process; during a reload the old and the new chain's queues are two generations of
//! the same store (see `mod.rs`). Not opening or recovery: see `recovery`.
//!
//! Memory stays bounded whatever the backlog: while every unread entry fits in the
//! queue's `max_spans`/`max_bytes`, unread entries are also kept in memory (`hot`) and
//! handed out from there; past that the store forgets them in memory and reads the
//! backlog back from disk, in order, until it has caught up with the writer.
//!
//! Appends are positional writes into the page cache, done inline; fsyncs, which wait
//! for the device, run on the blocking pool and are shared by concurrent pushes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use spansink_config::{FsyncPolicy, WhenFull};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::record::{self, Found, HEADER_LEN};
use super::segment::Segment;
use crate::chain::Refusal;
use crate::chain::acknowledgement::{AckRequest, Completion};
use crate::chain::queue::wait_for_room::WaitForRoom;
use crate::chain::queue::{Arrival, EntryId, QueueEntry, QueueMetrics, RETRY_AFTER, gauge_value};
use crate::otlp::TraceData;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{SinkLabels, SinkOperationLabels};

/// A queue's limits and fsync policy; the newest generation's settings apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub max_disk_bytes: u64,
    /// A segment is closed for appends once it reaches this size.
    pub segment_bytes: u64,
    /// Unread entries also held in memory, at most (the queue's `max_spans`/`max_bytes`).
    pub memory_spans: usize,
    pub memory_bytes: usize,
    pub when_full: WhenFull,
    pub block_timeout: Duration,
    pub fsync: FsyncPolicy,
    pub fsync_interval: Duration,
}

impl Settings {
    /// Segments of a sixteenth of the disk bound, between 256 KiB and 64 MiB: small
    /// enough that committed space is given back steadily, large enough that files
    /// stay few.
    pub fn segment_bytes_for(max_disk_bytes: u64) -> u64 {
        (max_disk_bytes / 16).clamp(256 * 1024, 64 * 1024 * 1024)
    }
}

/// Where a record is: its segment (by first id) and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: EntryId,
    pub offset: u64,
}

/// An unread entry kept in memory.
struct Hot {
    id: EntryId,
    data: TraceData,
    location: Location,
}

/// An entry handed out and not yet committed.
struct InFlight {
    spans: usize,
    bytes: usize,
    location: Location,
    generation: u64,
}

/// An entry a closed generation took and did not finish: handed out again.
struct Redeliver {
    spans: usize,
    bytes: usize,
    location: Location,
}

/// Everything behind the store's lock.
pub struct State {
    pub settings: Settings,
    pub segments: VecDeque<Segment>,
    pub disk_bytes: u64,
    pub next_id: EntryId,
    hot: VecDeque<Hot>,
    hot_spans: usize,
    hot_bytes: usize,
    /// The oldest unread record on disk, while the unread backlog is not all in `hot`.
    pub cursor: Option<Location>,
    redeliver: BTreeMap<EntryId, Redeliver>,
    pub unread_spans: usize,
    pub unread_bytes: usize,
    in_flight: HashMap<EntryId, InFlight>,
    /// Completions of unread entries whose clients wait (`acknowledgements: delivered`),
    /// handed out with the entry: kept apart from `hot` because an entry may be read back
    /// from disk. Entries replayed at start have none.
    completions: HashMap<EntryId, Completion>,
    /// Live generations; `Some(mark)` once closed: it hands out only ids below `mark`.
    generations: HashMap<u64, Option<EntryId>>,
    next_generation: u64,
    /// Appends so far, and how many of them the last fsync round covered.
    appended: u64,
    dir_dirty: bool,
    interval_task: bool,
}

impl State {
    /// The state found on disk at start; `cursor` at the oldest kept segment.
    pub fn recovered(
        settings: Settings,
        segments: VecDeque<Segment>,
        next_id: EntryId,
        unread_spans: usize,
        unread_bytes: usize,
    ) -> Self {
        let cursor = segments.front().map(|s| Location {
            segment: s.first_id,
            offset: 0,
        });
        Self {
            settings,
            disk_bytes: segments.iter().map(|s| s.len).sum(),
            segments,
            next_id,
            hot: VecDeque::new(),
            hot_spans: 0,
            hot_bytes: 0,
            cursor,
            redeliver: BTreeMap::new(),
            unread_spans,
            unread_bytes,
            in_flight: HashMap::new(),
            completions: HashMap::new(),
            generations: HashMap::new(),
            next_generation: 0,
            appended: 0,
            dir_dirty: false,
            interval_task: false,
        }
    }

    fn segment_index(&self, id_or_first: EntryId) -> Option<usize> {
        let after = self.segments.partition_point(|s| s.first_id <= id_or_first);
        after.checked_sub(1)
    }

    fn segment_at(&self, first_id: EntryId) -> Option<usize> {
        self.segment_index(first_id)
            .filter(|&i| self.segments[i].first_id == first_id)
    }

    /// Whether segment `first_id` still holds records nobody has read.
    fn holds_unread(&self, first_id: EntryId) -> bool {
        self.cursor.is_some_and(|c| c.segment <= first_id)
            || self
                .hot
                .front()
                .is_some_and(|h| h.location.segment <= first_id)
    }
}

/// Why an append did not happen.
enum NotAppended {
    Full(Arrival),
    Refused(Refusal),
}

/// What the reader does next.
enum Plan {
    Nothing,
    Taken(Unread),
    Redeliver(EntryId, Location),
    Disk(Location, Arc<File>, u64),
}

/// What a read from disk came to.
enum AfterRead {
    Taken(Unread),
    Skipped,
    /// The record is past the closed generation's mark.
    Mark,
    Failed,
}

/// What the reader found next.
struct Unread {
    id: EntryId,
    data: TraceData,
    location: Location,
}

/// One queue directory's state, shared by the generations of its sink's queue.
pub struct Store {
    pub sink: String,
    pub dir: PathBuf,
    state: Mutex<State>,
    /// Wakes consumers waiting in `pop` (on push, redelivery and close).
    entry_added: Notify,
    /// `when_full: block`: woken when a segment is deleted, and on close.
    room: WaitForRoom,
    /// One reader at a time moves the cursor (pops and `drop_oldest` evictions).
    read_line: tokio::sync::Mutex<()>,
    /// Appends covered by the last fsync round; held while a round runs, so concurrent
    /// pushes wait for it and then find themselves covered.
    synced: tokio::sync::Mutex<u64>,
    pub metrics: QueueMetrics,
    disk: DiskMetrics,
    /// Held for the store's life: the directory's advisory lock.
    _lock: File,
}

/// The durable queue's own series, resolved once.
pub struct DiskMetrics {
    bytes: Gauge,
    segments: Gauge,
    fsync: Histogram,
    pub replayed: Counter,
    pub corrupt: Counter,
    errors: Family<SinkOperationLabels, Counter>,
    sink: String,
}

impl DiskMetrics {
    pub fn new(sink: &str, metrics: &Metrics) -> Self {
        let labels = SinkLabels {
            sink: sink.to_string(),
        };
        Self {
            bytes: metrics.queue_disk_bytes.get_or_create(&labels).clone(),
            segments: metrics.queue_disk_segments.get_or_create(&labels).clone(),
            fsync: metrics.queue_fsync_duration.get_or_create(&labels).clone(),
            replayed: metrics.queue_replayed_spans.get_or_create(&labels).clone(),
            corrupt: metrics.queue_corrupt_records.get_or_create(&labels).clone(),
            errors: metrics.queue_storage_errors.clone(),
            sink: sink.to_string(),
        }
    }

    fn error(&self, operation: &'static str) {
        self.errors
            .get_or_create(&SinkOperationLabels {
                sink: self.sink.clone(),
                operation,
            })
            .inc();
    }

    fn show(&self, state: &State) {
        self.bytes
            .set(i64::try_from(state.disk_bytes).unwrap_or(i64::MAX));
        self.segments.set(gauge_value(state.segments.len()));
    }
}

impl Store {
    pub fn new(
        sink: &str,
        dir: PathBuf,
        state: State,
        lock: File,
        metrics: QueueMetrics,
        disk: DiskMetrics,
    ) -> Self {
        metrics.add(state.unread_spans, state.unread_bytes);
        disk.show(&state);
        Self {
            sink: sink.to_string(),
            dir,
            state: Mutex::new(state),
            entry_added: Notify::new(),
            room: WaitForRoom::new(),
            read_line: tokio::sync::Mutex::new(()),
            synced: tokio::sync::Mutex::new(0),
            metrics,
            disk,
            _lock: lock,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind; keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new generation (a queue handle), with `settings` from now on. Whether the
    /// caller should start the background fsync task.
    pub fn join(&self, settings: Settings) -> (u64, bool) {
        let mut state = self.state();
        let generation = state.next_generation;
        state.next_generation += 1;
        state.generations.insert(generation, None);
        let start_interval = settings.fsync == FsyncPolicy::Interval && !state.interval_task;
        state.interval_task |= start_interval;
        state.settings = settings;
        (generation, start_interval)
    }

    /// A generation's handle was dropped.
    pub fn leave(&self, generation: u64) {
        self.state().generations.remove(&generation);
    }

    fn storage_refusal(&self, operation: &'static str, error: &io::Error) -> Refusal {
        self.disk.error(operation);
        tracing::error!(sink = %self.sink, dir = %self.dir.display(), operation = %operation, error = %error,
            "durable queue cannot write; requests are refused until it can");
        Refusal::Storage {
            sink: self.sink.clone(),
            message: error.to_string(),
            retry_after: RETRY_AFTER,
        }
    }

    // ---- push -------------------------------------------------------------------

    /// Appends `data`; with `AckRequest::Persisted` (or `fsync: batch`) returns only
    /// once it is fsynced.
    pub async fn push(
        &self,
        generation: u64,
        data: TraceData,
        ack: AckRequest,
    ) -> Result<(), Refusal> {
        let (when_full, block_timeout, fsync) = {
            let state = self.state();
            let s = &state.settings;
            (s.when_full, s.block_timeout, s.fsync)
        };
        let sync = fsync == FsyncPolicy::Batch || matches!(ack, AckRequest::Persisted);
        let arrival = Arrival {
            data,
            completion: ack.into_completion(),
        };
        let appended = match when_full {
            WhenFull::Block => {
                self.push_or_wait(generation, arrival, block_timeout)
                    .await?
            }
            WhenFull::Reject => match self.try_append(generation, arrival) {
                Ok(seq) => seq,
                Err(NotAppended::Refused(r)) => return Err(r),
                Err(NotAppended::Full(_)) => return Err(self.queue_full()),
            },
            WhenFull::DropOldest => self.push_dropping_oldest(generation, arrival).await?,
        };
        if sync {
            // The request is in the queue either way; a failed fsync tells the client to
            // retry, which may deliver it twice, never lose it.
            self.sync_through(appended)
                .await
                .map_err(|e| self.storage_refusal("fsync", &e))?;
        }
        Ok(())
    }

    fn queue_full(&self) -> Refusal {
        Refusal::QueueFull {
            sink: self.sink.clone(),
            retry_after: RETRY_AFTER,
        }
    }

    async fn push_or_wait(
        &self,
        generation: u64,
        arrival: Arrival,
        block_timeout: Duration,
    ) -> Result<u64, Refusal> {
        self.room
            .push(&self.sink, block_timeout, arrival, |arrival| {
                match self.try_append(generation, arrival) {
                    Ok(appended) => Ok(Ok(appended)),
                    Err(NotAppended::Full(back)) => Ok(Err(back)),
                    Err(NotAppended::Refused(refusal)) => Err(refusal),
                }
            })
            .await
    }

    async fn push_dropping_oldest(
        &self,
        generation: u64,
        arrival: Arrival,
    ) -> Result<u64, Refusal> {
        let _reading = self.read_line.lock().await;
        let mut arrival = arrival;
        let mut evicted = 0;
        let result = loop {
            match self.try_append(generation, arrival) {
                Ok(seq) => break Ok(seq),
                Err(NotAppended::Refused(r)) => break Err(r),
                Err(NotAppended::Full(back)) => arrival = back,
            }
            match self.next_unread(None).await {
                Some(old) => {
                    evicted += old.data.span_count();
                    self.commit_location(old.id, old.location);
                }
                // Everything left is in flight: nothing to drop to make room.
                None => break Err(self.queue_full()),
            }
        };
        if evicted > 0 {
            self.metrics.dropped_oldest(evicted);
            tracing::debug!(sink = %self.sink, spans = evicted, "queue full: dropped oldest spans");
        }
        result
    }

    /// Appends `arrival` if the disk bound allows; the append's sequence number for fsync.
    fn try_append(&self, generation: u64, arrival: Arrival) -> Result<u64, NotAppended> {
        let (spans, bytes) = (arrival.data.span_count(), arrival.data.encoded_len());
        let record_len = (HEADER_LEN + bytes) as u64;
        let mut state = self.state();
        if state
            .generations
            .get(&generation)
            .is_none_or(Option::is_some)
        {
            return Err(NotAppended::Refused(Refusal::ShuttingDown {
                retry_after: RETRY_AFTER,
            }));
        }
        // An empty queue takes anything, so one request larger than the bound still
        // gets through, alone.
        let empty =
            state.unread_bytes == 0 && state.in_flight.is_empty() && state.redeliver.is_empty();
        if !empty && state.disk_bytes + record_len > state.settings.max_disk_bytes {
            return Err(NotAppended::Full(arrival));
        }
        let Arrival { data, completion } = arrival;
        let segment = self
            .writable_segment(&mut state, record_len)
            .map_err(|e| NotAppended::Refused(self.storage_refusal("append", &e)))?;
        let id = state.next_id;
        let header =
            record::encode_header(id, u32::try_from(spans).unwrap_or(u32::MAX), data.bytes());
        let written = state.segments[segment].append(&header, data.bytes());
        let offset = match written {
            Ok(offset) => offset,
            Err(e) => {
                self.forget_if_empty(&mut state, segment);
                return Err(NotAppended::Refused(self.storage_refusal("append", &e)));
            }
        };
        let location = Location {
            segment: state.segments[segment].first_id,
            offset,
        };
        state.next_id += 1;
        state.disk_bytes += record_len;
        state.appended += 1;
        if let Some(completion) = completion {
            state.completions.insert(id, completion);
        }
        let appended = state.appended;
        let in_memory = state.cursor.is_none()
            && state.hot_spans + spans <= state.settings.memory_spans
            && state.hot_bytes + bytes <= state.settings.memory_bytes;
        if in_memory {
            state.hot_spans += spans;
            state.hot_bytes += bytes;
            state.hot.push_back(Hot { id, data, location });
        } else if state.cursor.is_none() {
            // From here the backlog is read back from disk, starting at its oldest entry.
            state.cursor = Some(state.hot.front().map_or(location, |h| h.location));
            state.hot.clear();
            state.hot_spans = 0;
            state.hot_bytes = 0;
        }
        state.unread_spans += spans;
        state.unread_bytes += bytes;
        self.metrics.add(spans, bytes);
        self.disk.show(&state);
        drop(state);
        self.metrics.received(spans);
        self.entry_added.notify_waiters();
        Ok(appended)
    }

    /// The index of the segment the next record of `record_len` bytes goes to, rolling
    /// to a new one when the last is sealed or would grow past the segment size.
    fn writable_segment(&self, state: &mut State, record_len: u64) -> io::Result<usize> {
        let segment_bytes = state.settings.segment_bytes;
        if let Some(last) = state.segments.back_mut() {
            if !last.sealed && (last.len == 0 || last.len + record_len <= segment_bytes) {
                return Ok(state.segments.len() - 1);
            }
            last.sealed = true;
        }
        let segment = Segment::create(&self.dir, state.next_id)?;
        state.segments.push_back(segment);
        state.dir_dirty = true;
        // The sealed one may be all committed already.
        if state.segments.len() >= 2 {
            self.delete_if_done(state, state.segments.len() - 2);
        }
        Ok(state.segments.len() - 1)
    }

    /// A segment whose only append failed holds nothing: remove it.
    fn forget_if_empty(&self, state: &mut State, index: usize) {
        if state.segments[index].sealed && state.segments[index].records == 0 {
            self.delete_if_done(state, index);
        }
    }

    // ---- pop and commit ---------------------------------------------------------

    /// The oldest entry not yet handed out to generation `generation`, waiting for one.
    pub async fn pop(&self, generation: u64) -> Option<QueueEntry> {
        let _reading = self.read_line.lock().await;
        loop {
            let added = self.entry_added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            let mark = match self.state().generations.get(&generation) {
                Some(mark) => *mark,
                None => return None,
            };
            if let Some(unread) = self.next_unread(mark).await {
                let mut state = self.state();
                let (spans, bytes) = (unread.data.span_count(), unread.data.encoded_len());
                state.in_flight.insert(
                    unread.id,
                    InFlight {
                        spans,
                        bytes,
                        location: unread.location,
                        generation,
                    },
                );
                let completion = state.completions.remove(&unread.id);
                return Some(QueueEntry {
                    id: unread.id,
                    data: unread.data,
                    completion,
                });
            }
            if mark.is_some() {
                return None;
            }
            added.await;
        }
    }

    /// Takes the oldest unread entry below `mark` (any, without one): a redelivery
    /// first, then memory, then disk. `None` when there is none now. The caller holds
    /// the read line. Cancel-safe: state changes only after each read has finished.
    async fn next_unread(&self, mark: Option<EntryId>) -> Option<Unread> {
        loop {
            match self.plan_read(mark) {
                Plan::Nothing => return None,
                Plan::Taken(unread) => return Some(unread),
                Plan::Redeliver(id, location) => {
                    let data = self.read_entry(location).await;
                    if let Some(unread) = self.finish_redelivery(id, location, data) {
                        return Some(unread);
                    }
                }
                Plan::Disk(location, file, end) => {
                    let found = tokio::task::spawn_blocking(move || {
                        record::read_at(file.as_ref(), location.offset, end)
                    })
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e)));
                    match self.after_read(location, found, mark) {
                        AfterRead::Taken(unread) => return Some(unread),
                        AfterRead::Skipped => {}
                        AfterRead::Mark => return None,
                        AfterRead::Failed => tokio::time::sleep(RETRY_AFTER).await,
                    }
                }
            }
        }
    }

    /// What to take next, deciding under the lock; memory entries are taken at once.
    fn plan_read(&self, mark: Option<EntryId>) -> Plan {
        let below = |id: EntryId| mark.is_none_or(|m| id < m);
        let mut state = self.state();
        if let Some((&id, again)) = state.redeliver.first_key_value()
            && below(id)
        {
            return Plan::Redeliver(id, again.location);
        }
        if state.hot.front().is_some_and(|h| below(h.id))
            && let Some(hot) = state.hot.pop_front()
        {
            let (spans, bytes) = (hot.data.span_count(), hot.data.encoded_len());
            state.hot_spans -= spans;
            state.hot_bytes -= bytes;
            self.took(&mut state, spans, bytes);
            return Plan::Taken(Unread {
                id: hot.id,
                data: hot.data,
                location: hot.location,
            });
        }
        loop {
            let Some(location) = state.cursor else {
                self.forget_unreadable(&mut state);
                return Plan::Nothing;
            };
            match state.segment_at(location.segment) {
                Some(i) => {
                    let segment = &state.segments[i];
                    return Plan::Disk(location, segment.file.clone(), segment.len);
                }
                // Its segment is gone (nothing unread was in it): move on.
                None => self.advance(&mut state, location, u64::MAX),
            }
        }
    }

    fn finish_redelivery(
        &self,
        id: EntryId,
        location: Location,
        data: Option<TraceData>,
    ) -> Option<Unread> {
        let mut state = self.state();
        let again = state.redeliver.remove(&id)?;
        self.took(&mut state, again.spans, again.bytes);
        drop(state);
        match data {
            Some(data) => Some(Unread { id, data, location }),
            None => {
                // Unreadable now (counted and logged): forget it.
                self.commit_location(id, location);
                None
            }
        }
    }

    /// Moves the cursor past what was read at `location`, and takes it if it is an
    /// entry to hand out.
    fn after_read(
        &self,
        location: Location,
        found: io::Result<Found>,
        mark: Option<EntryId>,
    ) -> AfterRead {
        let mut state = self.state();
        if state.cursor != Some(location) {
            return AfterRead::Skipped; // moved meanwhile; cannot happen under the read line
        }
        let segment = state.segment_at(location.segment);
        let recovered = segment.is_some_and(|i| state.segments[i].recovered);
        match found {
            Ok(Found::Record {
                header,
                payload,
                next,
            }) => {
                if mark.is_some_and(|m| header.id >= m) {
                    return AfterRead::Mark;
                }
                self.advance(&mut state, location, next);
                let committed_before =
                    segment.is_some_and(|i| state.segments[i].acked.contains(&header.id));
                if committed_before {
                    return AfterRead::Skipped;
                }
                let (spans, bytes) = (header.spans as usize, header.len as usize);
                self.took(&mut state, spans, bytes);
                drop(state);
                match TraceData::from_wire(payload.into()) {
                    Ok(data) => AfterRead::Taken(Unread {
                        id: header.id,
                        data,
                        location,
                    }),
                    Err(e) => {
                        // Sound CRC, unsound request: never deliverable. Count it and
                        // commit it so it is not replayed forever.
                        self.disk.corrupt.inc();
                        tracing::error!(sink = %self.sink, id = header.id, spans, error = %e,
                            "queued request is not a valid OTLP request; skipped");
                        self.commit_location(header.id, location);
                        AfterRead::Skipped
                    }
                }
            }
            Ok(Found::Corrupt { at, resume }) => {
                // Recovered segments were checked at start, and counted there.
                if !recovered {
                    self.disk.corrupt.inc();
                    tracing::error!(sink = %self.sink, segment = location.segment, offset = at,
                        skipped_bytes = resume - at, "corrupt record in the durable queue; skipped");
                }
                self.advance(&mut state, location, resume);
                AfterRead::Skipped
            }
            Ok(Found::End) => {
                let end = segment.map_or(u64::MAX, |i| state.segments[i].len);
                self.advance(&mut state, location, end);
                AfterRead::Skipped
            }
            Err(e) => {
                self.disk.error("read");
                tracing::error!(sink = %self.sink, segment = location.segment, offset = location.offset,
                    error = %e, "cannot read the durable queue; retrying in a second");
                AfterRead::Failed
            }
        }
    }

    /// Once the disk is read to its end, what is still unread is exactly what waits for
    /// redelivery (`hot` is empty while a cursor reads the disk). A record damaged on disk
    /// could not be taken off the unread count when skipped, as its span count may be what
    /// broke: this takes it off, so the queue gauges and capacity do not keep it forever.
    fn forget_unreadable(&self, state: &mut State) {
        let (spans, bytes) = state
            .redeliver
            .values()
            .fold((state.hot_spans, state.hot_bytes), |(s, b), r| {
                (s + r.spans, b + r.bytes)
            });
        let lost_spans = state.unread_spans.saturating_sub(spans);
        let lost_bytes = state.unread_bytes.saturating_sub(bytes);
        if lost_spans > 0 || lost_bytes > 0 {
            self.took(state, lost_spans, lost_bytes);
        }
    }

    /// An unread entry was taken (handed out or dropped).
    fn took(&self, state: &mut State, spans: usize, bytes: usize) {
        state.unread_spans = state.unread_spans.saturating_sub(spans);
        state.unread_bytes = state.unread_bytes.saturating_sub(bytes);
        self.metrics.remove(spans, bytes);
    }

    /// Moves the cursor from `at` to `next` in the same segment, or on to the next
    /// segment when `next` is its end; caught up with the writer, the cursor is done.
    fn advance(&self, state: &mut State, at: Location, next: u64) {
        let index = state.segment_at(at.segment);
        let segment_end = index.map(|i| (state.segments[i].len, state.segments[i].sealed));
        state.cursor = match segment_end {
            Some((len, _)) if next < len => Some(Location {
                segment: at.segment,
                offset: next,
            }),
            Some((_, false)) => None, // the writer's segment: everything is read
            _ => state
                .segments
                .iter()
                .find(|s| s.first_id > at.segment)
                .map(|s| Location {
                    segment: s.first_id,
                    offset: 0,
                }),
        };
        let left_behind = state.cursor.is_none_or(|c| c.segment != at.segment);
        if left_behind && let Some(i) = index {
            self.delete_if_done(state, i);
        }
    }

    /// Reads the entry at `location` again (a redelivery).
    async fn read_entry(&self, location: Location) -> Option<TraceData> {
        let (file, end) = {
            let state = self.state();
            let i = state.segment_at(location.segment)?;
            (state.segments[i].file.clone(), state.segments[i].len)
        };
        let found = tokio::task::spawn_blocking(move || {
            record::read_at(file.as_ref(), location.offset, end)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        let problem = match found {
            Ok(Found::Record { payload, .. }) => match TraceData::from_wire(payload.into()) {
                Ok(data) => return Some(data),
                Err(e) => e.to_string(),
            },
            Ok(Found::Corrupt { .. }) => "record corrupted since it was written".to_string(),
            Ok(Found::End) => "record missing".to_string(),
            Err(e) => e.to_string(),
        };
        self.disk.corrupt.inc();
        tracing::error!(sink = %self.sink, segment = location.segment, offset = location.offset,
            error = %problem, "a request to hand out again cannot be read; skipped");
        None
    }

    pub fn commit(&self, id: EntryId) {
        let Some(in_flight) = self.state().in_flight.remove(&id) else {
            return; // committed twice, or forgotten by abandon: nothing to do
        };
        self.commit_location(id, in_flight.location);
    }

    /// Records entry `id` as done in its segment, and deletes the segment if that was
    /// its last open entry.
    fn commit_location(&self, id: EntryId, location: Location) {
        let mut state = self.state();
        // Evicted or unreadable before it was handed out: dropping its completion tells
        // the waiting client the spans were lost.
        let _dropped = state.completions.remove(&id);
        let Some(index) = state.segment_at(location.segment) else {
            return;
        };
        if let Err(e) = state.segments[index].commit(id) {
            // Not lost: the entry is delivered once more after a restart.
            self.disk.error("commit");
            tracing::warn!(sink = %self.sink, id, error = %e,
                "cannot record a delivered entry; it will be delivered again after a restart");
        }
        self.delete_if_done(&mut state, index);
    }

    fn delete_if_done(&self, state: &mut State, index: usize) {
        let first_id = state.segments[index].first_id;
        if !state.segments[index].fully_committed() || state.holds_unread(first_id) {
            return;
        }
        let Some(segment) = state.segments.remove(index) else {
            return;
        };
        state.disk_bytes -= segment.len;
        if let Err(e) = segment.delete() {
            self.disk.error("delete");
            tracing::warn!(sink = %self.sink, segment = first_id, error = %e,
                "cannot delete a delivered queue segment; it is retried at the next start");
        }
        self.disk.show(state);
        self.room.notify();
    }

    // ---- close, abandon, fsync ----------------------------------------------------

    /// Generation `generation` takes no more pushes, and hands out only what was pushed
    /// before now.
    pub fn close(&self, generation: u64) {
        {
            let mut state = self.state();
            let mark = state.next_id;
            if let Some(slot) = state.generations.get_mut(&generation) {
                slot.get_or_insert(mark);
            }
        }
        self.entry_added.notify_waiters();
        self.room.notify();
    }

    /// Generation `generation` stops for good: what it had in flight is handed out
    /// again (to the next generation, or after a restart). Everything stays on disk.
    pub fn abandon(&self, generation: u64) {
        self.close(generation);
        let mut state = self.state();
        let abandoned: Vec<EntryId> = state
            .in_flight
            .iter()
            .filter(|(_, f)| f.generation == generation)
            .map(|(&id, _)| id)
            .collect();
        for id in abandoned {
            if let Some(f) = state.in_flight.remove(&id) {
                state.unread_spans += f.spans;
                state.unread_bytes += f.bytes;
                self.metrics.add(f.spans, f.bytes);
                state.redeliver.insert(
                    id,
                    Redeliver {
                        spans: f.spans,
                        bytes: f.bytes,
                        location: f.location,
                    },
                );
            }
        }
        drop(state);
        if let Err(e) = self.sync_now() {
            self.disk.error("fsync");
            tracing::error!(sink = %self.sink, error = %e, "cannot fsync the durable queue at shutdown");
        }
        self.entry_added.notify_waiters();
    }

    /// Spans pushed and not yet handed out (tests drain by it instead of by a timeout).
    #[cfg(test)]
    pub fn unread_spans(&self) -> usize {
        self.state().unread_spans
    }

    /// Spans pushed and not yet committed.
    pub fn pending_spans(&self) -> usize {
        let state = self.state();
        state.unread_spans + state.in_flight.values().map(|f| f.spans).sum::<usize>()
    }

    /// Takes the files written since the last round, and how many appends they cover.
    fn take_dirty(&self) -> (u64, Vec<Arc<File>>, bool) {
        let mut state = self.state();
        let files = state
            .segments
            .iter_mut()
            .flat_map(|s| s.take_dirty())
            .collect();
        (state.appended, files, std::mem::take(&mut state.dir_dirty))
    }

    fn sync_files(dir: &std::path::Path, files: &[Arc<File>], dir_dirty: bool) -> io::Result<()> {
        for file in files {
            file.sync_data()?;
        }
        if dir_dirty {
            // New segment files: their directory entries must reach the disk too.
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Makes sure append `appended` is on the device, sharing the fsync with every
    /// append made before the round starts.
    pub async fn sync_through(&self, appended: u64) -> io::Result<()> {
        let mut synced = self.synced.lock().await;
        if *synced >= appended {
            return Ok(());
        }
        let covered = self.sync_round().await?;
        *synced = covered;
        Ok(())
    }

    /// One fsync round over everything written so far (the interval task's tick),
    /// through the same sync point as `sync_through`: a push waiting to be persisted
    /// never mistakes a round still running for one that finished.
    pub async fn sync_all(&self) -> io::Result<()> {
        let mut synced = self.synced.lock().await;
        let covered = self.sync_round().await?;
        *synced = covered;
        Ok(())
    }

    /// One fsync round over everything written so far. Callers hold `synced`.
    async fn sync_round(&self) -> io::Result<u64> {
        let (covered, files, dir_dirty) = self.take_dirty();
        if files.is_empty() && !dir_dirty {
            return Ok(covered);
        }
        let dir = self.dir.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || Self::sync_files(&dir, &files, dir_dirty))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
        self.disk.fsync.observe(started.elapsed().as_secs_f64());
        result.map(|()| covered)
    }

    /// Fsyncs what is written, blocking (shutdown, where waiting is the point).
    fn sync_now(&self) -> io::Result<()> {
        if self.state().settings.fsync == FsyncPolicy::Never {
            return Ok(());
        }
        let (_, files, dir_dirty) = self.take_dirty();
        Self::sync_files(&self.dir, &files, dir_dirty)
    }

    pub fn fsync_interval(&self) -> Option<Duration> {
        let state = self.state();
        (state.settings.fsync == FsyncPolicy::Interval).then_some(state.settings.fsync_interval)
    }

    /// The interval task ended (its policy changed): a later generation may start one.
    pub fn interval_task_ended(&self) {
        self.state().interval_task = false;
    }

    pub fn record_fsync_error(&self, error: &io::Error) {
        self.disk.error("fsync");
        tracing::error!(sink = %self.sink, error = %error, "durable queue fsync failed");
    }
}
