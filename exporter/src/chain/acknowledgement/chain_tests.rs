//! The three acknowledgement modes on a whole chain (fan-out, queues, batcher, workers,
//! retries, fallback) with the in-memory test sinks.

use std::sync::Arc;
use std::time::Duration;

use spansink_config::{
    AcknowledgementMode, BatchConfig, BlackholeSinkConfig, ByteSize, DurableQueueConfig,
    ExporterConfig, FilterConfig, FsyncPolicy, OnFiltered, QueueConfig, RetryConfig, SinkConfig,
    SpanMatch,
};

use crate::chain::test_sinks::{TestSink, build_chain as build, exporter_config, trace_data};
use crate::chain::{Admission, Admit, Chain, Refusal};
use crate::telemetry::Metrics;

fn sink_config() -> SinkConfig {
    SinkConfig {
        blackhole: Some(BlackholeSinkConfig::default()),
        batch: BatchConfig {
            max_spans: 100,
            max_bytes: ByteSize::mib(1),
            flush_interval: spansink_config::Duration::from_millis(100),
        },
        retry: RetryConfig {
            max_attempts: 3,
            initial_backoff: spansink_config::Duration::from_millis(10),
            max_backoff: spansink_config::Duration::from_millis(10),
            ..RetryConfig::default()
        },
        ..SinkConfig::default()
    }
}

fn config(mode: AcknowledgementMode, sinks: Vec<(&str, SinkConfig)>) -> ExporterConfig {
    let mut config = exporter_config(sinks);
    config.receivers.acknowledgements = mode;
    config.receivers.acknowledgement_timeout = spansink_config::Duration::from_secs(5);
    config
}

/// Admits in the background, so a test can look at the sinks before the answer.
fn admit_in_background(
    chain: &Arc<Chain>,
    spans: usize,
) -> tokio::task::JoinHandle<Result<Admission, Refusal>> {
    let chain = chain.clone();
    tokio::spawn(async move { chain.admit(trace_data("svc", spans)).await })
}

fn with_fallback(target: &str) -> SinkConfig {
    SinkConfig {
        fallback: Some(target.into()),
        ..sink_config()
    }
}

fn fallback_only() -> SinkConfig {
    SinkConfig {
        fallback_only: true,
        ..sink_config()
    }
}

fn durable(dir: &std::path::Path, fsync: FsyncPolicy) -> SinkConfig {
    SinkConfig {
        queue: QueueConfig {
            durable: Some(DurableQueueConfig {
                path: Some(dir.display().to_string()),
                max_bytes: ByteSize::mib(64),
                fsync,
                fsync_interval: spansink_config::Duration::from_secs(3600),
            }),
            ..QueueConfig::default()
        },
        ..sink_config()
    }
}

/// `spansink_queue_fsync_duration_seconds_count` of `sink`, from the text exposition.
fn fsync_rounds(registry: &prometheus_client::registry::Registry, sink: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let prefix = format!("spansink_queue_fsync_duration_seconds_count{{sink=\"{sink}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

// ---- received and persisted ---------------------------------------------------------

#[tokio::test]
async fn persisted_answers_only_once_the_durable_queue_has_fsynced() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let m = Metrics::register(&mut registry);
    let sink = Arc::new(TestSink::recording());
    // `fsync: never` for other traffic: only the acknowledgement mode can cause a round.
    let received = build(
        &config(
            AcknowledgementMode::Received,
            vec![("d", durable(&dir.path().join("r"), FsyncPolicy::Never))],
        ),
        &[("d", &sink)],
        &m,
    );
    received.admit(trace_data("svc", 3)).await.unwrap();
    assert_eq!(fsync_rounds(&registry, "d"), 0, "received: no fsync");
    received.drain(Duration::from_secs(5)).await;
    drop(received);

    let persisted = build(
        &config(
            AcknowledgementMode::Persisted,
            vec![("d", durable(&dir.path().join("p"), FsyncPolicy::Never))],
        ),
        &[("d", &sink)],
        &m,
    );
    persisted.admit(trace_data("svc", 3)).await.unwrap();
    assert_eq!(
        fsync_rounds(&registry, "d"),
        1,
        "persisted: the answer came after an fsync round covering the request"
    );
    assert_eq!(
        sink.spans(),
        3,
        "the received chain's drain delivered its request"
    );
}

#[tokio::test(start_paused = true)]
async fn persisted_with_a_memory_queue_answers_as_received() {
    let m = Metrics::for_tests();
    let sink = Arc::new(TestSink::recording());
    let chain = build(
        &config(AcknowledgementMode::Persisted, vec![("s", sink_config())]),
        &[("s", &sink)],
        &m,
    );
    // Not started: nothing is delivered, and the answer does not wait for it.
    let admission = chain.admit(trace_data("svc", 4)).await.unwrap();
    assert_eq!(admission, Admission::default());
    assert_eq!(sink.spans(), 0);
}

// ---- delivered ----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn delivered_answers_once_the_backend_has_the_spans() {
    let m = Metrics::for_tests();
    let sink = Arc::new(TestSink::slow(Duration::from_secs(2)));
    let chain = Arc::new(build(
        &config(AcknowledgementMode::Delivered, vec![("s", sink_config())]),
        &[("s", &sink)],
        &m,
    ));
    chain.start();
    let answer = admit_in_background(&chain, 5);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!answer.is_finished(), "the export is still running");
    assert_eq!(sink.spans(), 0);
    assert_eq!(answer.await.unwrap(), Ok(Admission::default()));
    assert_eq!(sink.spans(), 5, "delivered before the answer");
}

#[tokio::test(start_paused = true)]
async fn delivered_waits_for_every_piece_of_a_split_request_and_every_sink() {
    let m = Metrics::for_tests();
    let (fast, slow) = (
        Arc::new(TestSink::recording()),
        Arc::new(TestSink::slow(Duration::from_secs(3))),
    );
    let small_batches = SinkConfig {
        batch: BatchConfig {
            max_spans: 4,
            ..sink_config().batch
        },
        ..sink_config()
    };
    let chain = Arc::new(build(
        &config(
            AcknowledgementMode::Delivered,
            vec![("fast", sink_config()), ("slow", small_batches)],
        ),
        &[("fast", &fast), ("slow", &slow)],
        &m,
    ));
    chain.start();
    let answer = admit_in_background(&chain, 10);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fast.spans(), 10);
    assert!(!answer.is_finished(), "the slow sink has not delivered");
    assert_eq!(answer.await.unwrap(), Ok(Admission::default()));
    assert_eq!(slow.batch_sizes(), [4, 4, 2], "split into three batches");
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_after_retries_answers_retryably() {
    let m = Metrics::for_tests();
    let sink = Arc::new(TestSink::failing_transiently(usize::MAX));
    let chain = Arc::new(build(
        &config(
            AcknowledgementMode::Delivered,
            vec![("main", sink_config())],
        ),
        &[("main", &sink)],
        &m,
    ));
    chain.start();
    let refusal = chain.admit(trace_data("svc", 3)).await.unwrap_err();
    assert_eq!(sink.calls(), 3, "the retries ran first");
    match &refusal {
        Refusal::NotDelivered { sink, message, .. } => {
            assert_eq!(sink, "main");
            assert!(message.contains("test backend is down"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(refusal.retry_after().is_some());
    assert_eq!(refusal.reason(), "not_delivered");
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_answers_the_permanent_error_naming_the_sink() {
    let m = Metrics::for_tests();
    let (good, bad) = (
        Arc::new(TestSink::recording()),
        Arc::new(TestSink::failing_permanently()),
    );
    let chain = Arc::new(build(
        &config(
            AcknowledgementMode::Delivered,
            vec![("good", sink_config()), ("bad", sink_config())],
        ),
        &[("good", &good), ("bad", &bad)],
        &m,
    ));
    chain.start();
    let refusal = chain.admit(trace_data("svc", 3)).await.unwrap_err();
    assert_eq!(
        refusal,
        Refusal::Rejected {
            sink: "bad".into(),
            message: "test backend says no (permanent: not retried)".into()
        }
    );
    assert_eq!(refusal.retry_after(), None);
    assert_eq!(good.spans(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_answers_retryably_and_the_spans_are_still_delivered() {
    let m = Metrics::for_tests();
    let sink = Arc::new(TestSink::slow(Duration::from_secs(20)));
    let mut config = config(AcknowledgementMode::Delivered, vec![("s", sink_config())]);
    config.receivers.acknowledgement_timeout = spansink_config::Duration::from_secs(2);
    let chain = Arc::new(build(&config, &[("s", &sink)], &m));
    chain.start();
    let refusal = chain.admit(trace_data("svc", 6)).await.unwrap_err();
    assert_eq!(
        refusal,
        Refusal::AcknowledgementTimeout {
            timeout: Duration::from_secs(2),
            retry_after: crate::chain::queue::RETRY_AFTER,
        }
    );
    assert_eq!(sink.spans(), 0);
    let report = chain.drain(Duration::from_secs(60)).await;
    assert_eq!(report.delivered_spans, 6, "still queued, still delivered");
}

#[tokio::test(start_paused = true)]
async fn filtered_out_spans_do_not_hold_the_answer() {
    let m = Metrics::for_tests();
    let (all, only_x) = (
        Arc::new(TestSink::recording()),
        // Would hold any answer it had to give for an hour.
        Arc::new(TestSink::slow(Duration::from_secs(3600))),
    );
    let filtered = SinkConfig {
        filter: Some(FilterConfig {
            include: Some(SpanMatch {
                services: vec!["x".into()],
                ..SpanMatch::default()
            }),
            exclude: None,
            on_filtered: OnFiltered::Drop,
        }),
        timeout: spansink_config::Duration::from_secs(7200),
        ..sink_config()
    };
    let chain = Arc::new(build(
        &config(
            AcknowledgementMode::Delivered,
            vec![("all", sink_config()), ("only-x", filtered.clone())],
        ),
        &[("all", &all), ("only-x", &only_x)],
        &m,
    ));
    chain.start();
    chain.admit(trace_data("svc", 4)).await.unwrap();
    assert_eq!(
        all.spans(),
        4,
        "answered once the sink that took them delivered"
    );
    assert_eq!(only_x.calls(), 0);

    // Filtered out by every sink: answered at once, with nothing running at all.
    let nobody = build(
        &config(AcknowledgementMode::Delivered, vec![("only-x", filtered)]),
        &[("only-x", &only_x)],
        &m,
    );
    let admission = nobody.admit(trace_data("svc", 4)).await.unwrap();
    assert_eq!(admission, Admission::default());
}

#[tokio::test(start_paused = true)]
async fn delivery_by_the_fallback_counts_as_delivered() {
    let m = Metrics::for_tests();
    let (main, dlq) = (
        Arc::new(TestSink::failing_permanently()),
        Arc::new(TestSink::slow(Duration::from_secs(1))),
    );
    let chain = Arc::new(build(
        &config(
            AcknowledgementMode::Delivered,
            vec![("main", with_fallback("dlq")), ("dlq", fallback_only())],
        ),
        &[("main", &main), ("dlq", &dlq)],
        &m,
    ));
    chain.start();
    let answer = admit_in_background(&chain, 5);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(main.calls(), 1);
    assert!(!answer.is_finished(), "waits for the fallback's delivery");
    assert_eq!(answer.await.unwrap(), Ok(Admission::default()));
    assert_eq!(dlq.spans(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_failing_fallback_answers_its_own_error() {
    let m = Metrics::for_tests();
    let (main, dlq) = (
        Arc::new(TestSink::failing_transiently(usize::MAX)),
        Arc::new(TestSink::failing_permanently()),
    );
    let chain = Arc::new(build(
        &config(
            AcknowledgementMode::Delivered,
            vec![("main", with_fallback("dlq")), ("dlq", fallback_only())],
        ),
        &[("main", &main), ("dlq", &dlq)],
        &m,
    ));
    chain.start();
    match chain.admit(trace_data("svc", 2)).await.unwrap_err() {
        Refusal::Rejected { sink, .. } => assert_eq!(sink, "dlq"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn delivered_through_a_durable_queue() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::for_tests();
    let sink = Arc::new(TestSink::recording());
    let chain = Arc::new(build(
        &config(
            AcknowledgementMode::Delivered,
            vec![("d", durable(dir.path(), FsyncPolicy::Batch))],
        ),
        &[("d", &sink)],
        &m,
    ));
    chain.start();
    for spans in [2, 3] {
        chain.admit(trace_data("svc", spans)).await.unwrap();
    }
    assert_eq!(sink.spans(), 5);
    chain.drain(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn evicted_spans_answer_retryably_naming_the_sink() {
    let m = Metrics::for_tests();
    let sink = Arc::new(TestSink::recording());
    let dropping = SinkConfig {
        queue: QueueConfig {
            max_spans: 4,
            when_full: spansink_config::WhenFull::DropOldest,
            ..QueueConfig::default()
        },
        ..sink_config()
    };
    // Not started: the first request waits in the queue until the second evicts it.
    let chain = Arc::new(build(
        &config(AcknowledgementMode::Delivered, vec![("s", dropping)]),
        &[("s", &sink)],
        &m,
    ));
    let first = admit_in_background(&chain, 4);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let _second = admit_in_background(&chain, 4);
    match first.await.unwrap().unwrap_err() {
        Refusal::NotDelivered { sink, .. } => assert_eq!(sink, "s"),
        other => panic!("{other:?}"),
    }
}
