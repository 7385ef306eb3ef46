use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spansink_config::{ByteSize, FsyncPolicy, WhenFull};

use super::*;
use crate::chain::test_sinks::{dropped_for_room, trace_data};
use crate::telemetry::metrics::SinkLabels;

fn queue_config(max_spans: u64, when_full: WhenFull) -> QueueConfig {
    QueueConfig {
        max_spans,
        max_bytes: ByteSize::mib(64),
        when_full,
        block_timeout: spansink_config::Duration::from_millis(200),
        durable: None,
    }
}

fn durable(dir: &Path, max_bytes: ByteSize, fsync: FsyncPolicy) -> DurableQueueConfig {
    DurableQueueConfig {
        path: Some(dir.display().to_string()),
        max_bytes,
        fsync,
        fsync_interval: spansink_config::Duration::from_millis(10),
    }
}

/// Sink "s"'s queue in `dir`, with a 1 GiB disk bound and `fsync: batch`.
fn open(dir: &Path, max_spans: u64, m: &Metrics) -> DurableQueue {
    open_with(
        dir,
        ByteSize::gib(1),
        FsyncPolicy::Batch,
        max_spans,
        WhenFull::Block,
        m,
    )
}

fn open_with(
    dir: &Path,
    max_bytes: ByteSize,
    fsync: FsyncPolicy,
    max_spans: u64,
    when_full: WhenFull,
    m: &Metrics,
) -> DurableQueue {
    DurableQueue::open(
        "s",
        &queue_config(max_spans, when_full),
        &durable(dir, max_bytes, fsync),
        m,
    )
    .unwrap()
}

fn labels() -> SinkLabels {
    SinkLabels { sink: "s".into() }
}

/// The service names of what `q` hands out until it has nothing left now.
/// Pops every entry not handed out yet. By the queue's own count, not by a quiet period:
/// a pop that reads from disk can take long on a loaded machine.
async fn drain_now(q: &DurableQueue) -> Vec<(EntryId, String)> {
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    while q.unread_spans() > 0 {
        match tokio::time::timeout(Duration::from_millis(50), q.pop()).await {
            Ok(Some(entry)) => out.push((entry.id, service(&entry.data))),
            Ok(None) => break,
            Err(_) => assert!(
                started.elapsed() < Duration::from_secs(10),
                "{} spans unread, but pop gave nothing for 10 s",
                q.unread_spans()
            ),
        }
    }
    out
}

fn service(data: &TraceData) -> String {
    let request = data.decode().unwrap();
    let resource = request.resource_spans[0].resource.as_ref().unwrap();
    match &resource.attributes[0].value.as_ref().unwrap().value {
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => s.clone(),
        other => panic!("unexpected service attribute {other:?}"),
    }
}

fn names(entries: &[(EntryId, String)]) -> Vec<&str> {
    entries.iter().map(|(_, s)| s.as_str()).collect()
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn what_was_not_committed_is_replayed_after_a_restart_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::for_tests();
    {
        let q = open(dir.path(), 100, &m);
        for name in ["a", "b", "c", "d"] {
            q.push(trace_data(name, 2)).await.unwrap();
        }
        let handed = drain_now(&q).await;
        assert_eq!(names(&handed), ["a", "b", "c", "d"]);
        // Out of order: d and b delivered, a and c still in flight at the "crash".
        q.commit(handed[3].0).await;
        q.commit(handed[1].0).await;
        assert_eq!(q.pending_spans(), 4);
    }
    let m2 = Metrics::for_tests();
    let q = open(dir.path(), 100, &m2);
    assert_eq!(q.pending_spans(), 4);
    assert_eq!(m2.queue_replayed_spans.get_or_create(&labels()).get(), 4);
    assert_eq!(m2.sink_queue_spans.get_or_create(&labels()).get(), 4);
    let replayed = drain_now(&q).await;
    assert_eq!(names(&replayed), ["a", "c"]);
    // New ids never collide with the old ones.
    q.push(trace_data("e", 1)).await.unwrap();
    let e = drain_now(&q).await;
    assert!(e[0].0 > replayed[1].0);
    for (id, _) in replayed.iter().chain(&e) {
        q.commit(*id).await;
    }
    drop(q);
    let q = open(dir.path(), 100, &Metrics::for_tests());
    assert_eq!(q.pending_spans(), 0);
    assert!(drain_now(&q).await.is_empty());
}

#[tokio::test]
async fn segments_roll_over_and_are_deleted_once_committed() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::for_tests();
    // 1 MiB on disk: 256 KiB segments.
    let q = open_with(
        dir.path(),
        ByteSize::mib(1),
        FsyncPolicy::Never,
        100_000,
        WhenFull::Reject,
        &m,
    );
    let request = trace_data("big", 200);
    let per_record = request.encoded_len() + 24;
    let count = (700 * 1024) / per_record;
    for _ in 0..count {
        q.push(request.clone()).await.unwrap();
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 3, "expected rollover, got {files:?}");
    let disk = m.queue_disk_bytes.get_or_create(&labels()).get();
    assert_eq!(disk as usize, count * per_record);
    assert_eq!(
        m.queue_disk_segments.get_or_create(&labels()).get() as usize,
        files.len()
    );

    // The disk bound refuses what does not fit (when_full: reject).
    let mut refused = false;
    for _ in 0..count {
        if q.push(request.clone()).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "1 MiB bound never reached");

    let handed = drain_now(&q).await;
    for (id, _) in &handed {
        q.commit(*id).await;
    }
    // Only the segment being written stays, empty of open entries.
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert!(
        (m.queue_disk_bytes.get_or_create(&labels()).get() as u64)
            <= Settings::segment_bytes_for(ByteSize::mib(1).bytes())
    );
    assert!(q.push(request.clone()).await.is_ok(), "room again");
}

#[tokio::test]
async fn a_backlog_larger_than_memory_is_read_back_from_disk_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::for_tests();
    // Memory holds 10 spans; 50 requests of 3 go mostly to disk only.
    let q = open(dir.path(), 10, &m);
    for i in 0..50 {
        q.push(trace_data(&format!("r{i}"), 3)).await.unwrap();
    }
    let first = drain_now(&q).await;
    let expected: Vec<String> = (0..50).map(|i| format!("r{i}")).collect();
    assert_eq!(names(&first), expected);
    // Caught up: new pushes are handed out from memory again, still in order.
    q.push(trace_data("after", 1)).await.unwrap();
    assert_eq!(names(&drain_now(&q).await), ["after"]);
    assert_eq!(m.sink_queue_spans.get_or_create(&labels()).get(), 0);
}

/// Writes entries a, b, c and returns the segment file and where c starts.
async fn three_entries(dir: &Path) -> (std::path::PathBuf, u64, u64) {
    let q = open(dir, 100, &Metrics::for_tests());
    for name in ["a", "b", "c"] {
        q.push(trace_data(name, 1)).await.unwrap();
    }
    drop(q);
    let segment = dir.join(&segment_files(dir)[0]);
    let len = fs::metadata(&segment).unwrap().len();
    let c_len = (trace_data("c", 1).encoded_len() + 24) as u64;
    (segment, len - c_len, len)
}

#[tokio::test]
async fn a_truncated_last_record_is_skipped_at_every_byte_offset() {
    let template = tempfile::tempdir().unwrap();
    let (segment, c_start, len) = three_entries(template.path()).await;
    let bytes = fs::read(&segment).unwrap();
    let meta = fs::read(template.path().join("queue.meta")).unwrap();
    for cut in c_start..len {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("queue.meta"), &meta).unwrap();
        fs::write(
            dir.path().join(segment.file_name().unwrap()),
            &bytes[..cut as usize],
        )
        .unwrap();
        let m = Metrics::for_tests();
        let q = open(dir.path(), 100, &m);
        let replayed = drain_now(&q).await;
        assert_eq!(names(&replayed), ["a", "b"], "cut at {cut}");
        let corrupt = m.queue_corrupt_records.get_or_create(&labels()).get();
        assert_eq!(corrupt, u64::from(cut > c_start), "cut at {cut}");
        // The queue goes on: a new push is stored and handed out.
        q.push(trace_data("d", 1)).await.unwrap();
        assert_eq!(names(&drain_now(&q).await), ["d"], "cut at {cut}");
    }
}

#[tokio::test]
async fn flipped_bits_lose_only_the_damaged_record() {
    let template = tempfile::tempdir().unwrap();
    let (segment, c_start, _) = three_entries(template.path()).await;
    let b_start = c_start - (trace_data("b", 1).encoded_len() + 24) as u64;
    let original = fs::read(&segment).unwrap();
    // A bit in b's header, and one in its payload.
    for at in [b_start + 6, b_start + 30] {
        let file = fs::OpenOptions::new().write(true).open(&segment).unwrap();
        let mut byte = [original[at as usize]];
        byte[0] ^= 0x04;
        file.write_all_at(&byte, at).unwrap();
        let m = Metrics::for_tests();
        let q = open(template.path(), 100, &m);
        assert_eq!(names(&drain_now(&q).await), ["a", "c"], "flip at {at}");
        assert_eq!(m.queue_corrupt_records.get_or_create(&labels()).get(), 1);
        drop(q);
        fs::write(&segment, &original).unwrap();
    }
}

#[tokio::test]
async fn a_record_damaged_while_queued_is_skipped_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::for_tests();
    // Memory holds nothing past the first entry: b and c are read back from disk.
    let q = open(dir.path(), 1, &m);
    for name in ["a", "b", "c"] {
        q.push(trace_data(name, 1)).await.unwrap();
    }
    let segment = dir.path().join(&segment_files(dir.path())[0]);
    let b_start = (trace_data("a", 1).encoded_len() + 24) as u64;
    let file = fs::OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(b"XXXX", b_start + 40).unwrap();
    assert_eq!(names(&drain_now(&q).await), ["a", "c"]);
    assert_eq!(m.queue_corrupt_records.get_or_create(&labels()).get(), 1);
    // The damaged record no longer counts as queued: only a and c, handed out, do.
    assert_eq!(q.unread_spans(), 0);
    assert_eq!(q.pending_spans(), 2);
}

#[tokio::test]
async fn another_sinks_directory_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = open(dir.path(), 100, &Metrics::for_tests());
        q.push(trace_data("a", 1)).await.unwrap();
    }
    let error = DurableQueue::open(
        "other",
        &queue_config(100, WhenFull::Block),
        &durable(dir.path(), ByteSize::gib(1), FsyncPolicy::Batch),
        &Metrics::for_tests(),
    )
    .err()
    .expect("another sink's queue must be refused");
    let message = error.to_string();
    assert!(
        message.contains("\"s\"") && message.contains("\"other\""),
        "{message}"
    );
    // Still there for its own sink.
    let q = open(dir.path(), 100, &Metrics::for_tests());
    assert_eq!(names(&drain_now(&q).await), ["a"]);
}

#[tokio::test]
async fn a_directory_locked_by_another_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Another process's lock: a separate open file description holding the flock.
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.path().join("lock"))
        .unwrap();
    lock.lock().unwrap();
    let error = DurableQueue::open(
        "s",
        &queue_config(100, WhenFull::Block),
        &durable(dir.path(), ByteSize::gib(1), FsyncPolicy::Batch),
        &Metrics::for_tests(),
    )
    .err()
    .expect("a locked directory must be refused");
    assert!(matches!(error, QueueStorageError::Locked { .. }), "{error}");
}

#[tokio::test]
async fn an_unwritable_directory_is_a_clear_error() {
    let error = DurableQueue::open(
        "s",
        &queue_config(100, WhenFull::Block),
        &durable(
            Path::new("/proc/spansink-queue"),
            ByteSize::gib(1),
            FsyncPolicy::Batch,
        ),
        &Metrics::for_tests(),
    )
    .err()
    .expect("an unusable directory must be refused");
    let message = error.to_string();
    assert!(
        message.contains("/proc/spansink-queue") && message.contains("writable"),
        "{message}"
    );
}

/// A 1 MiB tmpfs, unmounted when dropped: a disk that really fills up.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("the full-disk test runs `mount`; it is part of util-linux");
        assert!(
            status.success(),
            "the full-disk test mounts a 1 MiB tmpfs and needs root (CAP_SYS_ADMIN); mount exited {status}"
        );
        Self(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_retryably_and_keeps_what_was_accepted() {
    let disk = SmallDisk::mount();
    let dir = disk.0.path().join("queue");
    let m = Metrics::for_tests();
    // The configured bound is far above the device: the device fills first.
    let q = open_with(
        &dir,
        ByteSize::gib(1),
        FsyncPolicy::Batch,
        1_000_000,
        WhenFull::Reject,
        &m,
    );
    let request = trace_data("fill", 100);
    let mut accepted = 0;
    let refusal = loop {
        match q.push(request.clone()).await {
            Ok(()) => accepted += 1,
            Err(refusal) => break refusal,
        }
        assert!(accepted < 10_000, "a 1 MiB disk never filled");
    };
    assert!(matches!(refusal, Refusal::Storage { .. }), "{refusal}");
    assert_eq!(refusal.reason(), "queue_storage");
    assert!(refusal.to_string().contains("No space left"), "{refusal}");
    assert!(
        m.queue_storage_errors
            .get_or_create(&crate::telemetry::metrics::SinkOperationLabels {
                sink: "s".into(),
                operation: "append"
            })
            .get()
            >= 1
    );
    assert_eq!(
        m.sink_received_spans.get_or_create(&labels()).get(),
        accepted * 100,
        "a refused request is not counted as received"
    );
    drop(q);
    // Everything accepted is still there, whole.
    let q = open_with(
        &dir,
        ByteSize::gib(1),
        FsyncPolicy::Batch,
        1_000_000,
        WhenFull::Reject,
        &Metrics::for_tests(),
    );
    let replayed = drain_now(&q).await;
    assert_eq!(replayed.len() as u64, accepted);
    for (id, _) in &replayed {
        q.commit(*id).await;
    }
    // Space given back: accepted again.
    q.push(request).await.unwrap();
}

#[tokio::test]
async fn a_reload_hands_the_queue_over_and_what_was_in_flight_is_delivered_again() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::for_tests();
    let old = open(dir.path(), 100, &m);
    for name in ["a", "b", "c"] {
        old.push(trace_data(name, 1)).await.unwrap();
    }
    let a = old.pop().await.unwrap(); // in the old chain's hands, never finished
    // The new generation opens the same directory while the old one drains.
    let new = open(dir.path(), 100, &m);
    old.close();
    new.push(trace_data("d", 1)).await.unwrap();
    assert!(old.push(trace_data("late", 1)).await.is_err());
    // The old one delivers what it was given before it closed, not the new one's.
    let drained = drain_now(&old).await;
    assert_eq!(names(&drained), ["b", "c"]);
    for (id, _) in &drained {
        old.commit(*id).await;
    }
    assert!(old.pop().await.is_none());
    assert_eq!(old.abandon(), 0, "a durable queue loses nothing");
    drop(old);
    let rest = drain_now(&new).await;
    assert_eq!(names(&rest), ["a", "d"]);
    assert_eq!(rest[0].0, a.id);
}

#[tokio::test]
async fn drop_oldest_evicts_from_disk_to_make_room() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::for_tests();
    let q = open_with(
        dir.path(),
        ByteSize::mib(1),
        FsyncPolicy::Never,
        10,
        WhenFull::DropOldest,
        &m,
    );
    let request = trace_data("big", 200);
    let fits = (1024 * 1024) / (request.encoded_len() + 24);
    for _ in 0..fits * 2 {
        q.push(request.clone()).await.unwrap();
    }
    let dropped = dropped_for_room(&m, "s");
    assert!(dropped > 0, "nothing was evicted");
    assert!(m.queue_disk_bytes.get_or_create(&labels()).get() <= 1024 * 1024);
    let left = drain_now(&q).await.len() as u64;
    assert_eq!(left * 200 + dropped, (fits as u64) * 2 * 200);
}

#[tokio::test]
async fn block_waits_for_disk_room_then_answers_backpressure() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::for_tests();
    let q = open_full_with_block_timeout(dir.path(), Duration::from_millis(200), &m).await;
    let refusal = q.push(trace_data("big", 200)).await.unwrap_err();
    assert_eq!(refusal.reason(), "backpressure");
}

#[tokio::test]
async fn a_blocked_push_goes_through_once_delivery_frees_disk_room() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::for_tests();
    // A deadline far past what draining takes, however loaded the machine is.
    let q = Arc::new(open_full_with_block_timeout(dir.path(), Duration::from_secs(120), &m).await);
    let waiting = tokio::spawn({
        let q = q.clone();
        async move { q.push(trace_data("big", 200)).await }
    });
    // Delivering frees whole segments: the blocked push goes through.
    for (id, _) in drain_now(&q).await {
        q.commit(id).await;
    }
    waiting.await.unwrap().unwrap();
}

/// A `when_full: block` queue with a 1 MiB disk limit, filled until a push waits.
async fn open_full_with_block_timeout(dir: &Path, block: Duration, m: &Metrics) -> DurableQueue {
    let config = QueueConfig {
        block_timeout: spansink_config::Duration::from_millis(block.as_millis() as u64),
        ..queue_config(10, WhenFull::Block)
    };
    let q = DurableQueue::open(
        "s",
        &config,
        &durable(dir, ByteSize::mib(1), FsyncPolicy::Never),
        m,
    )
    .unwrap();
    let request = trace_data("big", 200);
    // A push still waiting after 500 ms has found the queue full (it is cancelled here).
    while tokio::time::timeout(Duration::from_millis(500), q.push(request.clone()))
        .await
        .is_ok_and(|pushed| pushed.is_ok())
    {}
    q
}

/// `spansink_queue_fsync_duration_seconds_count` of sink "s", from the text exposition.
fn fsync_rounds(registry: &prometheus_client::registry::Registry) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("spansink_queue_fsync_duration_seconds_count{sink=\"s\"} "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_share_fsync_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let m = Metrics::register(&mut registry);
    let q = Arc::new(open(dir.path(), 100_000, &m));
    let pushes: Vec<_> = (0..64)
        .map(|i| {
            let q = q.clone();
            tokio::spawn(async move { q.push(trace_data(&format!("p{i}"), 1)).await })
        })
        .collect();
    for push in pushes {
        push.await.unwrap().unwrap();
    }
    let rounds = fsync_rounds(&registry);
    assert!((1..=64).contains(&rounds), "{rounds} fsync rounds");
    assert_eq!(drain_now(&q).await.len(), 64);
}

#[tokio::test]
async fn fsync_interval_syncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let m = Metrics::register(&mut registry);
    let q = open_with(
        dir.path(),
        ByteSize::gib(1),
        FsyncPolicy::Interval,
        100,
        WhenFull::Block,
        &m,
    );
    q.push(trace_data("a", 1)).await.unwrap();
    for _ in 0..100 {
        if fsync_rounds(&registry) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no background fsync within a second (interval 10 ms)");
}

#[tokio::test]
async fn a_persisted_push_is_fsynced_before_it_returns_whatever_the_policy() {
    for fsync in [FsyncPolicy::Never, FsyncPolicy::Interval] {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let m = Metrics::register(&mut registry);
        let mut config = durable(dir.path(), ByteSize::gib(1), fsync);
        // The interval task must not be the one that syncs.
        config.fsync_interval = spansink_config::Duration::from_secs(3600);
        let q = DurableQueue::open("s", &queue_config(100, WhenFull::Block), &config, &m).unwrap();
        q.push(trace_data("plain", 1)).await.unwrap();
        assert_eq!(
            fsync_rounds(&registry),
            0,
            "{fsync:?}: no fsync for a plain push"
        );
        q.push_acked(trace_data("persisted", 1), AckRequest::Persisted)
            .await
            .unwrap();
        assert_eq!(
            fsync_rounds(&registry),
            1,
            "{fsync:?}: one round, before the answer"
        );
    }
}

#[tokio::test]
async fn completions_are_handed_out_with_their_entries_even_from_disk() {
    use crate::chain::acknowledgement::Tracker;

    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::for_tests();
    // Memory holds 1 span: the second and third entries are read back from disk.
    let q = open(dir.path(), 1, &m);
    let tracker = Tracker::new();
    q.push(trace_data("replayed-like", 1)).await.unwrap();
    q.push_acked(
        trace_data("waiting", 1),
        AckRequest::Delivered(tracker.completion("s")),
    )
    .await
    .unwrap();
    q.push(trace_data("plain", 1)).await.unwrap();
    let entries: Vec<_> = [q.pop().await, q.pop().await, q.pop().await]
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let carried: Vec<bool> = entries.iter().map(|e| e.completion.is_some()).collect();
    assert_eq!(carried, [false, true, false]);
    for entry in entries {
        q.commit(entry.id).await;
        if let Some(completion) = entry.completion {
            completion.delivered();
        }
    }
    assert_eq!(tracker.wait().await, Ok(()));
}
