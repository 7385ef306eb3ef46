//! Hands a batch the sink finally failed to deliver to another sink's queue, where that
//! sink's own chain (batching, retries, ...) takes over. Not retries: the worker calls it
//! with the outcome of the whole policy stack, after retries gave up (or at once for a
//! permanent error).
//!
//! The failure still counts as the sink's (the worker counts `sink_failed_spans`). What
//! became of the spans is counted here: `sink_fallback_spans` for what the fallback's
//! queue took, and `sink_dropped_spans{reason="fallback_refused"}` for what it refused.
//! With `acknowledgements: delivered` each part goes on with its waiting client's
//! completion, so the client is answered once the fallback sink delivered it.
//! The fallback sink's own transform, if it has one, is applied to what is handed over
//! (that sink's filter is not: it took the batch as a fallback, not from a receiver).

use std::sync::Arc;

use super::acknowledgement::{AckRequest, Completion};
use super::queue::SpanQueue;
use super::transform::SpanTransform;
use crate::otlp::Batch;
use crate::sinks::SinkError;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{FallbackLabels, SinkReasonLabels};

/// Where sink `sink`'s failed batches go: `fallback`'s queue.
pub struct Fallback {
    sink: String,
    fallback: String,
    target: Arc<dyn SpanQueue>,
    /// The fallback sink's transform.
    transform: Option<Arc<SpanTransform>>,
    metrics: Metrics,
}

impl Fallback {
    pub fn new(sink: &str, fallback: &str, target: Arc<dyn SpanQueue>, metrics: &Metrics) -> Self {
        Self {
            sink: sink.to_string(),
            fallback: fallback.to_string(),
            target,
            transform: None,
            metrics: metrics.clone(),
        }
    }

    /// Applies the fallback sink's `transform` to what is handed over.
    pub fn transforming(mut self, transform: Option<Arc<SpanTransform>>) -> Self {
        self.transform = transform;
        self
    }

    /// The fallback sink's name.
    pub fn name(&self) -> &str {
        &self.fallback
    }

    /// Pushes the parts of `batch`, which failed with `error`, into the fallback's
    /// queue, each with its completion (`completions` by part index, in order). A part
    /// the queue refuses is lost, and so is its completion (the client hears it).
    pub async fn hand_over(
        &self,
        batch: &Batch,
        completions: Vec<(usize, Completion)>,
        error: &SinkError,
    ) {
        let (mut handed, mut refused, mut refusal) = (0, 0, None);
        let mut completions = completions.into_iter().peekable();
        // Part by part, as they arrived: each is a valid request on its own.
        for (i, part) in batch.parts().iter().enumerate() {
            let ack = match completions.next_if(|(at, _)| *at == i) {
                Some((_, completion)) => {
                    AckRequest::Delivered(completion.handed_to(&self.fallback))
                }
                None => AckRequest::Received,
            };
            let part = match &self.transform {
                None => part.clone(),
                Some(transform) => match transform.apply(part.clone()) {
                    Ok(transformed) => transformed,
                    Err(e) => {
                        // Unreachable for checked requests; not handed over untransformed.
                        tracing::error!(sink = %self.sink, fallback = %self.fallback, error = %e,
                            "cannot transform a malformed batch for the fallback sink; its spans are lost");
                        refused += part.span_count();
                        continue;
                    }
                },
            };
            match self.target.push_acked(part.clone(), ack).await {
                Ok(()) => handed += part.span_count(),
                Err(e) => {
                    refused += part.span_count();
                    refusal = Some(e);
                }
            }
        }
        if handed > 0 {
            self.metrics
                .sink_fallback_spans
                .get_or_create(&FallbackLabels {
                    sink: self.sink.clone(),
                    fallback: self.fallback.clone(),
                })
                .inc_by(handed as u64);
        }
        if refused > 0 {
            self.metrics
                .sink_dropped_spans
                .get_or_create(&SinkReasonLabels {
                    sink: self.sink.clone(),
                    reason: "fallback_refused",
                })
                .inc_by(refused as u64);
        }
        if let Some(refusal) = refusal {
            tracing::error!(sink = %self.sink, fallback = %self.fallback, spans = refused,
                error = %error, refusal = %refusal,
                "export failed and the fallback sink refused the spans; they are lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use spansink_config::{QueueConfig, WhenFull};

    use super::*;
    use crate::chain::acknowledgement::{Tracker, Undelivered};
    use crate::chain::queue::MemoryQueue;
    use crate::chain::test_sinks::trace_data;

    fn target(max_spans: u64, m: &Metrics) -> Arc<MemoryQueue> {
        let config = QueueConfig {
            max_spans,
            when_full: WhenFull::Reject,
            ..QueueConfig::default()
        };
        Arc::new(MemoryQueue::new("dlq", &config, m))
    }

    fn handed(m: &Metrics) -> u64 {
        m.sink_fallback_spans
            .get_or_create(&FallbackLabels {
                sink: "main".into(),
                fallback: "dlq".into(),
            })
            .get()
    }

    fn failure() -> SinkError {
        SinkError::permanent("rejected", "test backend says no")
    }

    #[tokio::test(start_paused = true)]
    async fn every_part_goes_to_the_fallback_queue_in_order() {
        let m = Metrics::for_tests();
        let dlq = target(100, &m);
        let fallback = Fallback::new("main", "dlq", dlq.clone(), &m);
        assert_eq!(fallback.name(), "dlq");
        let batch: Batch = [trace_data("a", 3), trace_data("b", 4)]
            .into_iter()
            .collect();
        fallback.hand_over(&batch, Vec::new(), &failure()).await;
        assert_eq!(handed(&m), 7);
        dlq.close();
        assert_eq!(dlq.pop().await.unwrap().data, batch.parts()[0]);
        assert_eq!(dlq.pop().await.unwrap().data, batch.parts()[1]);
        assert!(dlq.pop().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_fallback_sinks_transform_applies_to_what_it_is_handed() {
        let m = Metrics::for_tests();
        let dlq = target(100, &m);
        let config: spansink_config::TransformConfig = serde_yaml::from_str(
            "rules: [{action: set, scope: resource, key: handed.over, value: true}]",
        )
        .unwrap();
        let transform = SpanTransform::new("dlq", &config, &m).unwrap();
        let fallback =
            Fallback::new("main", "dlq", dlq.clone(), &m).transforming(Some(Arc::new(transform)));
        let batch: Batch = [trace_data("a", 3)].into_iter().collect();
        fallback.hand_over(&batch, Vec::new(), &failure()).await;
        assert_eq!(handed(&m), 3);
        dlq.close();
        let part = dlq.pop().await.unwrap().data.decode().unwrap();
        let resource = part.resource_spans[0].resource.as_ref().unwrap();
        assert!(
            resource.attributes.iter().any(|kv| kv.key == "handed.over"),
            "{resource:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn completions_travel_with_their_parts() {
        let m = Metrics::for_tests();
        let dlq = target(100, &m);
        let fallback = Fallback::new("main", "dlq", dlq.clone(), &m);
        let tracker = Tracker::new();
        let batch: Batch = [trace_data("a", 3), trace_data("b", 4)]
            .into_iter()
            .collect();
        // Only the second part has a waiting client.
        let completions = vec![(1, tracker.completion("main"))];
        fallback.hand_over(&batch, completions, &failure()).await;
        let first = dlq.pop().await.unwrap();
        let second = dlq.pop().await.unwrap();
        assert!(first.completion.is_none());
        assert_eq!(second.data, batch.parts()[1]);
        second.completion.unwrap().delivered();
        assert_eq!(tracker.wait().await, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn what_the_fallback_refuses_is_counted_as_dropped_and_its_client_told() {
        let m = Metrics::for_tests();
        let dlq = target(5, &m);
        let fallback = Fallback::new("main", "dlq", dlq, &m);
        let tracker = Tracker::new();
        // 4 fit; then 3 do not (4 + 3 > 5) and are refused.
        let batch: Batch = [trace_data("a", 4), trace_data("b", 3)]
            .into_iter()
            .collect();
        let completions = vec![(1, tracker.completion("main"))];
        fallback.hand_over(&batch, completions, &failure()).await;
        assert_eq!(handed(&m), 4);
        let dropped = m
            .sink_dropped_spans
            .get_or_create(&SinkReasonLabels {
                sink: "main".into(),
                reason: "fallback_refused",
            })
            .get();
        assert_eq!(dropped, 3);
        assert_eq!(
            tracker.wait().await,
            Err(Undelivered::Lost { sink: "dlq".into() })
        );
    }
}
