//! Fan-out: every admitted request goes to each primary sink, through that sink's filter
//! and transform into its queue; with `receivers.acknowledgements: persisted | delivered` the admission
//! also waits for what the mode promises. Not delivery (the workers) nor the chain's
//! lifecycle (`Chain`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use prometheus_client::metrics::histogram::Histogram;
use spansink_config::{AcknowledgementMode, OnFiltered};
use tokio::time::Instant;

use super::acknowledgement::{AckRequest, Tracker};
use super::filter::{Filtered, SpanFilter};
use super::queue::{RETRY_AFTER, SpanQueue};
use super::transform::SpanTransform;
use super::{Admission, Admit, Refusal};
use crate::otlp::TraceData;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{AcknowledgementLabels, SinkReasonLabels};

/// Where one sink takes spans in: its filter and its transform, if it has them, then its
/// queue (which so holds transformed spans only).
pub struct SinkInput {
    pub sink: String,
    pub filter: Option<SpanFilter>,
    pub transform: Option<Arc<SpanTransform>>,
    pub queue: Arc<dyn SpanQueue>,
}

/// The primary sinks' inputs, and when a client is answered.
pub struct FanOut {
    inputs: Vec<SinkInput>,
    mode: AcknowledgementMode,
    /// How long `delivered` waits for the sinks' commits.
    timeout: Duration,
    /// `receiver_acknowledgement_wait_seconds` of this mode (unused for `received`).
    wait: Histogram,
    metrics: Metrics,
}

/// What one sink made of a request it did not refuse.
struct Taken {
    /// Spans its filter left out with `on_filtered: reject`.
    rejected: usize,
}

impl FanOut {
    /// A fan-out answering as soon as the queues took a request (`received`).
    pub fn new(inputs: Vec<SinkInput>, metrics: &Metrics) -> Self {
        Self {
            inputs,
            mode: AcknowledgementMode::Received,
            timeout: Duration::MAX,
            wait: Histogram::new(std::iter::empty()),
            metrics: metrics.clone(),
        }
    }

    /// Answers as `mode` says (`receivers.acknowledgements`); `delivered` waits at most
    /// `timeout` for the sinks' commits.
    pub fn acknowledging(mut self, mode: AcknowledgementMode, timeout: Duration) -> Self {
        self.mode = mode;
        self.timeout = timeout;
        self.wait = self
            .metrics
            .receiver_acknowledgement_wait
            .get_or_create(&AcknowledgementLabels {
                mode: mode.as_str(),
            })
            .clone();
        self
    }

    /// The mode requests are answered by.
    pub fn acknowledgements(&self) -> AcknowledgementMode {
        self.mode
    }

    /// What sink `sink` is asked for its share of a request.
    fn ack_for(&self, sink: &str, tracker: Option<&Tracker>) -> AckRequest {
        match (self.mode, tracker) {
            (AcknowledgementMode::Persisted, _) => AckRequest::Persisted,
            (AcknowledgementMode::Delivered, Some(tracker)) => {
                AckRequest::Delivered(tracker.completion(sink))
            }
            _ => AckRequest::Received,
        }
    }

    async fn admit_one(
        &self,
        input: &SinkInput,
        data: TraceData,
        tracker: Option<&Tracker>,
    ) -> Result<Taken, Refusal> {
        let (kept, rejected) = match &input.filter {
            None => (Some(data), 0),
            Some(filter) => {
                let spans = data.span_count();
                let (kept, filtered) = match filter.apply(data) {
                    Ok(Filtered { kept, filtered }) => (kept, filtered),
                    Err(e) => {
                        // Unreachable for requests the receiver checked; the sink cannot
                        // tell which spans it should take, so it takes none.
                        tracing::error!(sink = %input.sink, error = %e, "cannot filter a malformed request; not taken by this sink");
                        self.dropped(&input.sink, "malformed", spans);
                        return Ok(Taken { rejected: 0 });
                    }
                };
                let rejected = match filter.on_filtered() {
                    OnFiltered::Reject => filtered,
                    OnFiltered::Drop => {
                        self.dropped(&input.sink, "filtered", filtered);
                        0
                    }
                };
                (kept, rejected)
            }
        };
        // A sink that takes none of the spans does not hold the answer.
        let Some(kept) = kept else {
            return Ok(Taken { rejected });
        };
        let kept = match &input.transform {
            None => kept,
            Some(transform) => {
                let spans = kept.span_count();
                match transform.apply(kept) {
                    Ok(transformed) => transformed,
                    Err(e) => {
                        // Unreachable for requests the receiver checked. Not taken rather
                        // than taken untransformed: it may hold what the rules redact.
                        tracing::error!(sink = %input.sink, error = %e, "cannot transform a malformed request; not taken by this sink");
                        self.dropped(&input.sink, "malformed", spans);
                        return Ok(Taken { rejected });
                    }
                }
            }
        };
        let ack = self.ack_for(&input.sink, tracker);
        input.queue.push_acked(kept, ack).await?;
        Ok(Taken { rejected })
    }

    /// Pushes `data` to every sink (see `admit`), each with what the mode asks of it.
    async fn push_everywhere(
        &self,
        data: TraceData,
        tracker: Option<&Tracker>,
    ) -> Result<Admission, Refusal> {
        let results = join_all(
            self.inputs
                .iter()
                .map(|input| self.admit_one(input, data.clone(), tracker)),
        )
        .await;
        let mut admission = Admission::default();
        let mut messages = Vec::new();
        for (input, result) in self.inputs.iter().zip(results) {
            let taken = result?;
            if taken.rejected > 0 {
                admission.rejected_spans = admission.rejected_spans.max(taken.rejected);
                messages.push(format!(
                    "sink {:?} rejected {} spans (filtered out by its config)",
                    input.sink, taken.rejected
                ));
            }
        }
        if !messages.is_empty() {
            admission.message = Some(messages.join("; "));
        }
        Ok(admission)
    }

    /// `delivered`: pushes, then waits until every sink that took spans committed them.
    async fn admit_delivered(&self, data: TraceData) -> Result<Admission, Refusal> {
        let spans = data.span_count();
        let tracker = Tracker::new();
        let admission = self.push_everywhere(data, Some(&tracker)).await?;
        match tokio::time::timeout(self.timeout, tracker.wait()).await {
            Ok(Ok(())) => Ok(admission),
            Ok(Err(undelivered)) => Err(Refusal::undelivered(undelivered, RETRY_AFTER)),
            Err(_) => {
                tracing::debug!(
                    spans,
                    timeout_ms = self.timeout.as_millis() as u64,
                    "acknowledgement timeout: the client is told to retry; the spans stay queued"
                );
                Err(Refusal::AcknowledgementTimeout {
                    timeout: self.timeout,
                    retry_after: RETRY_AFTER,
                })
            }
        }
    }

    fn dropped(&self, sink: &str, reason: &'static str, spans: usize) {
        if spans > 0 {
            self.metrics
                .sink_dropped_spans
                .get_or_create(&SinkReasonLabels {
                    sink: sink.to_string(),
                    reason,
                })
                .inc_by(spans as u64);
        }
    }
}

#[async_trait]
impl Admit for FanOut {
    /// Pushes the request into every primary sink's queue, all at once (so blocking
    /// queues wait in parallel, not one after the other), then waits for what
    /// `receivers.acknowledgements` promises: nothing more (`received`), the durable
    /// queues' fsync (`persisted`), or every sink's commit (`delivered`, within the
    /// timeout). A sink whose filter leaves out all of the request's spans is not waited
    /// for.
    ///
    /// If any sink refuses, the refusal is returned even though other sinks may have
    /// taken the request: the client retries and those sinks get it again. Delivery is
    /// at-least-once per sink; duplicates are the price of never losing a span silently.
    ///
    /// When filters reject spans, `rejected_spans` is the largest count among the sinks
    /// (each sink decides on its own; the client learns at least that many spans were
    /// not taken everywhere), and the message names every sink that rejected.
    async fn admit(&self, data: TraceData) -> Result<Admission, Refusal> {
        if self.mode == AcknowledgementMode::Received {
            return self.push_everywhere(data, None).await;
        }
        let started = Instant::now();
        let answer = match self.mode {
            AcknowledgementMode::Delivered => self.admit_delivered(data).await,
            _ => self.push_everywhere(data, None).await,
        };
        self.wait.observe(started.elapsed().as_secs_f64());
        answer
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use spansink_config::{FilterConfig, QueueConfig, SpanMatch, WhenFull};

    use super::*;
    use crate::chain::queue::MemoryQueue;
    use crate::chain::test_sinks::{resource_spans, trace_data};

    fn queue(sink: &str, max_spans: u64, m: &Metrics) -> Arc<MemoryQueue> {
        let config = QueueConfig {
            max_spans,
            when_full: WhenFull::Reject,
            ..QueueConfig::default()
        };
        Arc::new(MemoryQueue::new(sink, &config, m))
    }

    fn only_service(service: &str, on_filtered: OnFiltered) -> SpanFilter {
        SpanFilter::new(&FilterConfig {
            include: Some(SpanMatch {
                services: vec![service.to_string()],
                ..SpanMatch::default()
            }),
            exclude: None,
            on_filtered,
        })
    }

    fn input(sink: &str, filter: Option<SpanFilter>, queue: &Arc<MemoryQueue>) -> SinkInput {
        SinkInput {
            sink: sink.into(),
            filter,
            transform: None,
            queue: queue.clone(),
        }
    }

    /// Service x with 3 spans, service y with 2.
    fn mixed() -> TraceData {
        TraceData::from_request(&ExportTraceServiceRequest {
            resource_spans: vec![resource_spans("x", 3), resource_spans("y", 2)],
        })
    }

    fn dropped(m: &Metrics, sink: &str, reason: &'static str) -> u64 {
        m.sink_dropped_spans
            .get_or_create(&SinkReasonLabels {
                sink: sink.into(),
                reason,
            })
            .get()
    }

    #[tokio::test(start_paused = true)]
    async fn every_sink_gets_the_request_and_counts_it() {
        let m = Metrics::for_tests();
        let (a, b) = (queue("a", 100, &m), queue("b", 100, &m));
        let fanout = FanOut::new(vec![input("a", None, &a), input("b", None, &b)], &m);
        let admission = fanout.admit(trace_data("svc", 4)).await.unwrap();
        assert_eq!(admission, Admission::default());
        for (name, q) in [("a", &a), ("b", &b)] {
            assert_eq!(q.pending_spans(), 4);
            assert_eq!(m.sink_received_spans.get_or_create(&m.sink(name)).get(), 4);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_refusal_refuses_the_request_though_others_took_it() {
        let m = Metrics::for_tests();
        let (a, b) = (queue("a", 100, &m), queue("b", 5, &m));
        let fanout = FanOut::new(vec![input("a", None, &a), input("b", None, &b)], &m);
        fanout.admit(trace_data("svc", 4)).await.unwrap();
        let refusal = fanout.admit(trace_data("svc", 4)).await.unwrap_err();
        assert_eq!(refusal.reason(), "queue_full");
        assert_eq!(a.pending_spans(), 8, "at-least-once: a keeps its copy");
        assert_eq!(b.pending_spans(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropping_filter_counts_what_it_left_out() {
        let m = Metrics::for_tests();
        let (a, b) = (queue("a", 100, &m), queue("b", 100, &m));
        let fanout = FanOut::new(
            vec![
                input("a", Some(only_service("x", OnFiltered::Drop)), &a),
                input("b", None, &b),
            ],
            &m,
        );
        let admission = fanout.admit(mixed()).await.unwrap();
        assert_eq!(admission, Admission::default());
        assert_eq!(a.pending_spans(), 3);
        assert_eq!(b.pending_spans(), 5, "the unfiltered sink gets everything");
        assert_eq!(dropped(&m, "a", "filtered"), 2);
        assert_eq!(m.sink_received_spans.get_or_create(&m.sink("a")).get(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejecting_filter_reports_a_partial_admission_naming_the_sink() {
        let m = Metrics::for_tests();
        let a = queue("a", 100, &m);
        let fanout = FanOut::new(
            vec![input("a", Some(only_service("x", OnFiltered::Reject)), &a)],
            &m,
        );
        let admission = fanout.admit(mixed()).await.unwrap();
        assert_eq!(admission.rejected_spans, 2);
        assert!(admission.message.unwrap().contains("sink \"a\""));
        assert_eq!(a.pending_spans(), 3);
        assert_eq!(dropped(&m, "a", "filtered"), 0);

        // Everything filtered: nothing queued, all rejected.
        let admission = fanout.admit(trace_data("y", 4)).await.unwrap();
        assert_eq!(admission.rejected_spans, 4);
        assert_eq!(a.pending_spans(), 3);
    }
}
