//! In-memory sinks and trace data for the chain's unit tests: a sink that records what it
//! got, fails on cue, or is slow. Not for production use (compiled only in tests).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tokio::time::Instant;

use crate::otlp::{Batch, TraceData};
use crate::sinks::{Sink, SinkError};

/// A request with `spans` spans named `span-0..` from service `service`.
/// `spansink_sink_dropped_spans_total{reason="queue_full"}` of `sink`: spans a
/// `when_full: drop_oldest` queue evicted.
pub fn dropped_for_room(metrics: &crate::telemetry::Metrics, sink: &str) -> u64 {
    metrics
        .sink_dropped_spans
        .get_or_create(&crate::telemetry::metrics::SinkReasonLabels {
            sink: sink.to_string(),
            reason: "queue_full",
        })
        .get()
}

pub fn trace_data(service: &str, spans: usize) -> TraceData {
    TraceData::from_request(&request(service, spans))
}

pub fn request(service: &str, spans: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(service, spans)],
    }
}

pub fn resource_spans(service: &str, spans: usize) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![string_attribute("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: (0..spans).map(|i| span(&format!("span-{i}"))).collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn span(name: &str) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.to_string(),
        ..Default::default()
    }
}

pub fn string_attribute(key: &str, value: &str) -> KeyValue {
    attribute(key, Value::StringValue(value.to_string()))
}

pub fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// What a [`TestSink`] does on each call.
#[derive(Clone)]
enum Script {
    Succeed,
    /// Fail transiently this many times, then succeed.
    FailTransiently(usize),
    FailPermanently,
}

/// Export calls in flight across several sinks (two generations of one backend).
#[derive(Default)]
pub struct Overlap {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Overlap {
    /// The most calls that were in flight at once.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

/// A scripted sink: records the batches it accepted, when calls happened and how many
/// ran at once; optionally slow, or down (every call fails transiently) until brought up.
pub struct TestSink {
    script: Script,
    delay: Duration,
    down: AtomicBool,
    overlap: Option<Arc<Overlap>>,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    batches: Mutex<Vec<Batch>>,
    call_times: Mutex<Vec<Instant>>,
    shutdowns: AtomicUsize,
}

impl TestSink {
    fn new(script: Script, delay: Duration) -> Self {
        Self {
            script,
            delay,
            down: AtomicBool::new(false),
            overlap: None,
            calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            batches: Mutex::new(Vec::new()),
            call_times: Mutex::new(Vec::new()),
            shutdowns: AtomicUsize::new(0),
        }
    }

    pub fn recording() -> Self {
        Self::new(Script::Succeed, Duration::ZERO)
    }

    pub fn failing_transiently(times: usize) -> Self {
        Self::new(Script::FailTransiently(times), Duration::ZERO)
    }

    pub fn failing_permanently() -> Self {
        Self::new(Script::FailPermanently, Duration::ZERO)
    }

    /// Succeeds after `delay` per call.
    pub fn slow(delay: Duration) -> Self {
        Self::new(Script::Succeed, delay)
    }

    /// Fails every call permanently, after `delay`.
    pub fn slow_failing(delay: Duration) -> Self {
        Self::new(Script::FailPermanently, delay)
    }

    /// Fails every call transiently, after `delay`, until [`TestSink::bring_up`].
    pub fn down(delay: Duration) -> Self {
        let sink = Self::new(Script::Succeed, delay);
        sink.down.store(true, Ordering::SeqCst);
        sink
    }

    pub fn bring_up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// Counts its calls in `overlap` too.
    pub fn sharing(mut self, overlap: Arc<Overlap>) -> Self {
        self.overlap = Some(overlap);
        self
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn batches(&self) -> Vec<Batch> {
        self.batches.lock().unwrap().clone()
    }

    /// Span count of every accepted batch, in order.
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.batches().iter().map(Batch::span_count).collect()
    }

    pub fn spans(&self) -> usize {
        self.batch_sizes().iter().sum()
    }

    pub fn call_times(&self) -> Vec<Instant> {
        self.call_times.lock().unwrap().clone()
    }

    pub fn shutdowns(&self) -> usize {
        self.shutdowns.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Sink for TestSink {
    async fn export(&self, batch: &Batch) -> Result<(), SinkError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        self.call_times.lock().unwrap().push(Instant::now());
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _shared = self.overlap.clone().map(OverlapGuard::enter);
        // Counted down even when the call is cancelled midway.
        let _own = Leave(&self.in_flight);
        tokio::time::sleep(self.delay).await;
        if self.down.load(Ordering::SeqCst) {
            return Err(SinkError::transient("unavailable", "test backend is down"));
        }
        match self.script {
            Script::FailTransiently(n) if call < n => {
                Err(SinkError::transient("unavailable", "test backend is down"))
            }
            Script::FailPermanently => {
                Err(SinkError::permanent("rejected", "test backend says no"))
            }
            _ => {
                self.batches.lock().unwrap().push(batch.clone());
                Ok(())
            }
        }
    }

    async fn shutdown(&self) -> Result<(), SinkError> {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// One call in flight in an [`Overlap`], while alive.
struct OverlapGuard(Arc<Overlap>);

impl OverlapGuard {
    fn enter(overlap: Arc<Overlap>) -> Self {
        let now = overlap.now.fetch_add(1, Ordering::SeqCst) + 1;
        overlap.max.fetch_max(now, Ordering::SeqCst);
        Self(overlap)
    }
}

impl Drop for OverlapGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A config of `sinks`, everything else default.
pub fn exporter_config(
    sinks: Vec<(&str, spansink_config::SinkConfig)>,
) -> spansink_config::ExporterConfig {
    spansink_config::ExporterConfig {
        receivers: Default::default(),
        sinks: sinks
            .into_iter()
            .map(|(n, c)| (n.to_string(), Box::new(c)))
            .collect(),
        telemetry: Default::default(),
        shutdown: Default::default(),
    }
}

/// The chain of `config` with each sink's backend taken from `backends` by name.
pub fn build_chain(
    config: &spansink_config::ExporterConfig,
    backends: &[(&str, &Arc<TestSink>)],
    m: &crate::telemetry::Metrics,
) -> crate::chain::Chain {
    let backends: std::collections::BTreeMap<String, crate::sinks::SharedSink> = backends
        .iter()
        .map(|(n, s)| (n.to_string(), (*s).clone() as crate::sinks::SharedSink))
        .collect();
    crate::chain::Chain::build(config, m, &|name, _| {
        backends
            .get(name)
            .cloned()
            .ok_or_else(|| crate::sinks::BuildError {
                sink: name.into(),
                message: "no test backend".into(),
            })
    })
    .unwrap()
}
