//! The batcher: takes requests from a sink's queue and groups them into [`Batch`]es of at
//! most `max_spans`/`max_bytes`, sending a partial one `flush_interval` after its first
//! span. Not export, retries or commits: the worker does those with what this hands out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use spansink_config::BatchConfig;
use tokio::time::Instant;

use super::acknowledgement::Completion;
use super::queue::{EntryId, QueueEntry, SpanQueue};
use crate::otlp::{Batch, TraceData, WireError};

/// A batch plus the queue entries it completes once it is done with.
#[derive(Debug)]
pub struct ReadyBatch {
    pub batch: Batch,
    acks: Vec<Ack>,
    /// Completions of waiting clients, by the index of their part in `batch` (in part
    /// order; empty unless `acknowledgements: delivered`).
    completions: Vec<(usize, Completion)>,
}

impl ReadyBatch {
    /// The waiting clients' completions, by part index, for the worker to resolve once
    /// the batch's entries are committed (or to hand to the fallback with the parts).
    pub fn take_completions(&mut self) -> Vec<(usize, Completion)> {
        std::mem::take(&mut self.completions)
    }

    /// The ids of the queue entries that are now fully done and can be committed: every
    /// whole entry in this batch, and a split entry once its last piece is done.
    pub fn finished_entries(self) -> Vec<EntryId> {
        self.acks
            .into_iter()
            .filter_map(|ack| match ack {
                Ack::Whole(id) => Some(id),
                Ack::Piece(split) => {
                    (split.pieces_left.fetch_sub(1, Ordering::AcqRel) == 1).then_some(split.id)
                }
            })
            .collect()
    }
}

/// Which queue entry a part of a batch came from.
#[derive(Debug)]
enum Ack {
    Whole(EntryId),
    /// One piece of an entry split across batches (which may finish in any order).
    Piece(Arc<SplitEntry>),
}

#[derive(Debug)]
struct SplitEntry {
    id: EntryId,
    pieces_left: AtomicUsize,
}

/// Taken from the queue, not yet in a batch.
struct Part {
    data: TraceData,
    ack: Ack,
    completion: Option<Completion>,
}

/// Forms batches from one queue. Owned by the sink's worker.
pub struct Batcher {
    sink: String,
    queue: Arc<dyn SpanQueue>,
    max_spans: usize,
    max_bytes: usize,
    flush_interval: Duration,
    /// The request that did not fit into the previous batch, or the remaining pieces of
    /// a split one.
    ready: VecDeque<Part>,
}

impl Batcher {
    pub fn new(sink: &str, queue: Arc<dyn SpanQueue>, config: &BatchConfig) -> Self {
        Self {
            sink: sink.to_string(),
            queue,
            // Zero limits would never fill a batch; config validation rejects them anyway.
            max_spans: usize::try_from(config.max_spans)
                .unwrap_or(usize::MAX)
                .max(1),
            max_bytes: config.max_bytes.as_usize().max(1),
            flush_interval: config.flush_interval.get(),
            ready: VecDeque::new(),
        }
    }

    /// The next batch: sent when full (by spans or bytes), `flush_interval` after its
    /// first part arrived, or at once when the queue is closed. `None` when the queue is
    /// closed and drained. A request that is alone larger than `max_bytes` forms a batch
    /// by itself (bytes cannot be split without re-encoding spans one by one).
    pub async fn next(&mut self) -> Option<ReadyBatch> {
        let mut out = ReadyBatch {
            batch: Batch::new(),
            acks: Vec::new(),
            completions: Vec::new(),
        };
        let mut flush_at = None;
        loop {
            while let Some(part) = self.ready.pop_front() {
                if !out.batch.is_empty() && !self.fits(&out.batch, &part.data) {
                    self.ready.push_front(part);
                    return Some(out);
                }
                if let Some(completion) = part.completion {
                    out.completions.push((out.batch.parts().len(), completion));
                }
                out.batch.push(part.data);
                out.acks.push(part.ack);
                flush_at.get_or_insert_with(|| Instant::now() + self.flush_interval);
                if out.batch.span_count() >= self.max_spans
                    || out.batch.encoded_len() >= self.max_bytes
                {
                    return Some(out);
                }
            }
            let popped = match flush_at {
                None => self.queue.pop().await,
                Some(at) => match tokio::time::timeout_at(at, self.queue.pop()).await {
                    Ok(popped) => popped,
                    Err(_) => return Some(out),
                },
            };
            match popped {
                Some(entry) => self.accept(entry),
                None if out.batch.is_empty() => return None,
                None => return Some(out),
            }
        }
    }

    fn fits(&self, batch: &Batch, data: &TraceData) -> bool {
        batch.span_count() + data.span_count() <= self.max_spans
            && batch.encoded_len() + data.encoded_len() <= self.max_bytes
    }

    /// Queues an entry's data as parts, split when it alone exceeds `max_spans`.
    fn accept(&mut self, entry: QueueEntry) {
        if entry.data.span_count() <= self.max_spans {
            self.ready.push_back(Part {
                data: entry.data,
                ack: Ack::Whole(entry.id),
                completion: entry.completion,
            });
            return;
        }
        match split(&entry.data, self.max_spans) {
            Ok(pieces) => {
                let shared = Arc::new(SplitEntry {
                    id: entry.id,
                    pieces_left: AtomicUsize::new(pieces.len()),
                });
                // Each piece resolves its own share of the waiting client's completion.
                let mut completions = entry
                    .completion
                    .map(|c| c.split(pieces.len()))
                    .unwrap_or_default()
                    .into_iter();
                self.ready.extend(pieces.into_iter().map(|data| Part {
                    data,
                    ack: Ack::Piece(shared.clone()),
                    completion: completions.next(),
                }));
            }
            Err(e) => {
                // Unreachable for data that passed the receiver's check; sending it whole
                // is still better than losing it.
                tracing::warn!(sink = %self.sink, spans = entry.data.span_count(), error = %e,
                    "cannot split an oversized request; sending it as one batch");
                self.ready.push_back(Part {
                    data: entry.data,
                    ack: Ack::Whole(entry.id),
                    completion: entry.completion,
                });
            }
        }
    }
}

/// Splits a request into requests of at most `max_spans` spans each, spans in their
/// original order. Every piece repeats the resource and scope (attributes, schema URLs,
/// dropped counts) of the spans it carries, so each span reads exactly as before;
/// resources or scopes without spans are left out.
///
/// This decodes and re-encodes, which the rest of the path avoids: it is only used for
/// the rare request larger than a whole batch.
pub fn split(data: &TraceData, max_spans: usize) -> Result<Vec<TraceData>, WireError> {
    let request = data.decode()?;
    let mut splitter = Splitter {
        max_spans: max_spans.max(1),
        ..Splitter::default()
    };
    for mut resource in request.resource_spans {
        for mut scope in std::mem::take(&mut resource.scope_spans) {
            for span in std::mem::take(&mut scope.spans) {
                if splitter.count == splitter.max_spans {
                    splitter.close_scope(&scope);
                    splitter.close_resource(&resource);
                    splitter.close_piece();
                }
                splitter.spans.push(span);
                splitter.count += 1;
            }
            splitter.close_scope(&scope);
        }
        splitter.close_resource(&resource);
    }
    splitter.close_piece();
    Ok(splitter.pieces)
}

/// The piece being filled by [`split`]: open spans go into a copy of their scope, open
/// scopes into a copy of their resource, when either ends or the piece is full.
#[derive(Default)]
struct Splitter {
    max_spans: usize,
    pieces: Vec<TraceData>,
    resources: Vec<ResourceSpans>,
    scopes: Vec<ScopeSpans>,
    spans: Vec<Span>,
    count: usize,
}

impl Splitter {
    /// `scope` has had its spans taken out: it is the wrapper to repeat.
    fn close_scope(&mut self, scope: &ScopeSpans) {
        if !self.spans.is_empty() {
            self.scopes.push(ScopeSpans {
                spans: std::mem::take(&mut self.spans),
                ..scope.clone()
            });
        }
    }

    fn close_resource(&mut self, resource: &ResourceSpans) {
        if !self.scopes.is_empty() {
            self.resources.push(ResourceSpans {
                scope_spans: std::mem::take(&mut self.scopes),
                ..resource.clone()
            });
        }
    }

    fn close_piece(&mut self) {
        if !self.resources.is_empty() {
            self.pieces
                .push(TraceData::from_request(&ExportTraceServiceRequest {
                    resource_spans: std::mem::take(&mut self.resources),
                }));
        }
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use spansink_config::{ByteSize, QueueConfig, WhenFull};

    use super::*;
    use crate::chain::queue::MemoryQueue;
    use crate::chain::test_sinks::{request, resource_spans, trace_data};
    use crate::telemetry::Metrics;

    fn batcher(
        max_spans: u64,
        max_bytes: ByteSize,
        flush: Duration,
    ) -> (Arc<MemoryQueue>, Batcher) {
        let queue = Arc::new(MemoryQueue::new(
            "s",
            &QueueConfig {
                max_spans: 10_000,
                when_full: WhenFull::Reject,
                ..QueueConfig::default()
            },
            &Metrics::for_tests(),
        ));
        let config = BatchConfig {
            max_spans,
            max_bytes,
            flush_interval: spansink_config::Duration(flush),
        };
        (queue.clone(), Batcher::new("s", queue, &config))
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_by_count() {
        let (q, mut b) = batcher(10, ByteSize::mib(1), Duration::from_secs(5));
        for _ in 0..5 {
            q.push(trace_data("a", 4)).await.unwrap();
        }
        let start = Instant::now();
        // 4 + 4 fits, a third 4 would not: two parts per batch, no waiting.
        assert_eq!(b.next().await.unwrap().batch.span_count(), 8);
        assert_eq!(b.next().await.unwrap().batch.span_count(), 8);
        assert_eq!(start.elapsed(), Duration::ZERO);

        q.push(trace_data("a", 6)).await.unwrap();
        let exact = b.next().await.unwrap(); // 4 left over + 6 = 10: full, sent at once
        assert_eq!(exact.batch.span_count(), 10);
        assert_eq!(exact.batch.parts().len(), 2);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_by_bytes() {
        let one = trace_data("a", 10);
        let max = ByteSize(one.encoded_len() as u64 * 3);
        let (q, mut b) = batcher(1000, max, Duration::from_secs(5));
        for _ in 0..4 {
            q.push(one.clone()).await.unwrap();
        }
        let first = b.next().await.unwrap();
        assert_eq!(first.batch.parts().len(), 3);
        assert_eq!(first.batch.encoded_len(), max.as_usize());
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_a_partial_batch_after_the_interval_from_its_first_span() {
        let (q, mut b) = batcher(100, ByteSize::mib(1), Duration::from_secs(5));
        let start = Instant::now();
        let pusher = tokio::spawn({
            let q = q.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                q.push(trace_data("a", 3)).await.unwrap();
                tokio::time::sleep(Duration::from_secs(2)).await;
                q.push(trace_data("a", 2)).await.unwrap();
                tokio::time::sleep(Duration::from_secs(10)).await;
                q.push(trace_data("a", 1)).await.unwrap();
            }
        });
        let first = b.next().await.unwrap();
        assert_eq!(first.batch.span_count(), 5);
        assert_eq!(start.elapsed(), Duration::from_secs(6), "1 s arrival + 5 s");
        let second = b.next().await.unwrap();
        assert_eq!(second.batch.span_count(), 1);
        assert_eq!(start.elapsed(), Duration::from_secs(18));
        pusher.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn close_flushes_what_it_has_then_ends() {
        let (q, mut b) = batcher(100, ByteSize::mib(1), Duration::from_secs(5));
        q.push(trace_data("a", 3)).await.unwrap();
        let closer = tokio::spawn({
            let q = q.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                q.close();
            }
        });
        let start = Instant::now();
        assert_eq!(b.next().await.unwrap().batch.span_count(), 3);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert!(b.next().await.is_none());
        closer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_oversized_request_is_split_and_committed_after_its_last_piece() {
        let (q, mut b) = batcher(4, ByteSize::mib(1), Duration::from_secs(5));
        q.push(trace_data("a", 10)).await.unwrap();
        q.close();
        let mut batches = Vec::new();
        while let Some(batch) = b.next().await {
            batches.push(batch);
        }
        let sizes: Vec<_> = batches.iter().map(|b| b.batch.span_count()).collect();
        assert_eq!(sizes, [4, 4, 2]);
        // Finished out of order: the entry is done only with the last of its pieces.
        let last = batches.pop().unwrap();
        assert!(last.finished_entries().is_empty());
        assert!(batches.pop().unwrap().finished_entries().is_empty());
        assert_eq!(batches.pop().unwrap().finished_entries().len(), 1);
    }

    #[test]
    fn split_keeps_order_resources_and_scopes() {
        let mut req = request("svc-a", 3);
        req.resource_spans.push(resource_spans("svc-b", 4));
        req.resource_spans.push(ResourceSpans::default()); // no spans: left out
        let original = TraceData::from_request(&req);

        let pieces = split(&original, 2).unwrap();
        assert_eq!(
            pieces.iter().map(TraceData::span_count).collect::<Vec<_>>(),
            [2, 2, 2, 1]
        );
        // Piece 2 straddles both resources: spans 2 of a, 0 of b.
        let straddling = pieces[1].decode().unwrap();
        assert_eq!(straddling.resource_spans.len(), 2);
        assert_eq!(
            straddling.resource_spans[0].resource,
            req.resource_spans[0].resource
        );
        assert_eq!(
            straddling.resource_spans[1].resource,
            req.resource_spans[1].resource
        );

        // Put back together, the pieces are the original spans in order.
        let rejoined: Batch = pieces.into_iter().collect();
        let names: Vec<_> = rejoined
            .decode()
            .unwrap()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(
            names,
            [
                "span-0", "span-1", "span-2", "span-0", "span-1", "span-2", "span-3"
            ]
        );
    }
}
