//! File sink tests on real files in a temporary directory: round trips of every field,
//! rotation, retention, gzip streams, CSV headers, concurrency and error classes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::read::GzDecoder;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use spansink_config::{ByteSize, Compression, FileFormat, FileSinkConfig, RotationConfig};

use super::*;
use crate::encoding::csv::tests::assert_csv_row_matches;
use crate::encoding::{FIELDS, flat_spans, read_request};
use crate::otlp::fixtures::{self, batch_of};

fn config(path: &Path, format: FileFormat, compression: Compression) -> FileSinkConfig {
    FileSinkConfig {
        path: path.display().to_string(),
        format,
        compression,
        rotation: RotationConfig {
            max_size: None,
            max_age: None,
            max_files: 0,
        },
        buffer_size: ByteSize::kib(4),
        fsync: false,
    }
}

/// A small request whose spans are numbered `first..first + n` by their `seq` attribute.
fn numbered(first: usize, n: usize) -> ExportTraceServiceRequest {
    let mut request = fixtures::request(n, 2);
    for (i, span) in request.resource_spans[0].scope_spans[0]
        .spans
        .iter_mut()
        .enumerate()
    {
        span.attributes[0] = fixtures::kv("seq", fixtures::v_int((first + i) as i64));
    }
    request
}

fn seqs(request: &ExportTraceServiceRequest) -> Vec<i64> {
    flat_spans(request)
        .map(|f| match &f.span.attributes[0].value {
            Some(v) => match v.value {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(i)) => i,
                _ => panic!("seq is not an int"),
            },
            None => panic!("no seq"),
        })
        .collect()
}

/// A file's text, gunzipped when its name ends in `.gz` (the stream must be finished).
fn read_text(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        GzDecoder::new(bytes.as_slice())
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text
    } else {
        String::from_utf8(bytes).unwrap()
    }
}

/// Rotated files oldest first, then the active file.
fn all_files(sink_path: &Path, compression: Compression) -> Vec<PathBuf> {
    let layout = FileLayout::new(sink_path, compression).unwrap();
    let mut files = layout.rotated_files().unwrap();
    if layout.active_path().exists() {
        files.push(layout.active_path());
    }
    files
}

#[tokio::test]
async fn jsonl_round_trip_keeps_every_field_of_a_rich_request() {
    for compression in [Compression::None, Compression::Gzip] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dirs/spans.jsonl");
        let sink = FileSink::new("f", &config(&path, FileFormat::Jsonl, compression)).unwrap();
        // Two parts in one batch, and a second batch: all land in order.
        let rich = fixtures::rich_request();
        let first = batch_of(&[&rich, &numbered(0, 3)]);
        let second = batch_of(&[&rich]);
        sink.export(&first).await.unwrap();
        sink.export(&second).await.unwrap();
        sink.shutdown().await.unwrap();

        let files = all_files(&path, compression);
        assert_eq!(files.len(), 1, "{files:?}");
        let text = read_text(&files[0]);
        let mut expected = first.decode().unwrap();
        expected
            .resource_spans
            .extend(second.decode().unwrap().resource_spans);
        assert_eq!(
            read_request(text.lines()).unwrap(),
            expected,
            "{compression:?}"
        );
    }
}

#[tokio::test]
async fn csv_rows_hold_every_field_under_one_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.csv");
    let sink = FileSink::new("f", &config(&path, FileFormat::Csv, Compression::None)).unwrap();
    let rich = fixtures::rich_request();
    let batch = batch_of(&[&rich]);
    sink.export(&batch).await.unwrap();
    sink.export(&batch).await.unwrap();
    sink.shutdown().await.unwrap();

    let text = read_text(&path);
    assert_eq!(text.matches("service_name,trace_id").count(), 1);
    let mut reader = ::csv::Reader::from_reader(text.as_bytes());
    assert_eq!(reader.headers().unwrap(), FIELDS.as_slice());
    let rows: Vec<::csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let spans: Vec<_> = flat_spans(&rich).chain(flat_spans(&rich)).collect();
    assert_eq!(rows.len(), spans.len());
    for (row, flat) in rows.iter().zip(&spans) {
        assert_csv_row_matches(row, flat);
    }
}

#[tokio::test]
async fn size_rotation_splits_batches_across_files_in_order() {
    for compression in [Compression::None, Compression::Gzip] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spans.jsonl");
        let mut cfg = config(&path, FileFormat::Jsonl, compression);
        cfg.rotation.max_size = Some(ByteSize(2000));
        let sink = FileSink::new("f", &cfg).unwrap();
        for i in 0..20 {
            sink.export(&batch_of(&[&numbered(i * 10, 10)]))
                .await
                .unwrap();
        }
        sink.shutdown().await.unwrap();

        let files = all_files(&path, compression);
        assert!(files.len() >= 3, "{compression:?}: {files:?}");
        let mut all = Vec::new();
        for file in &files {
            // Every file, rotated or active, is complete on its own (gzip: a finished stream).
            let request = read_request(read_text(file).lines()).unwrap();
            assert!(!request.resource_spans.is_empty(), "{}", file.display());
            all.extend(seqs(&request));
        }
        assert_eq!(all, (0..200).collect::<Vec<_>>(), "{compression:?}");
        // Rotation happens between batches: no file other than the last grows beyond
        // max_size plus one batch.
        for file in &files {
            let name = file.file_name().unwrap().to_str().unwrap();
            let expected_suffix = match compression {
                Compression::None => ".jsonl",
                Compression::Gzip => ".jsonl.gz",
            };
            assert!(name.ends_with(expected_suffix), "{name}");
        }
    }
}

#[tokio::test]
async fn max_files_keeps_only_the_newest_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let mut cfg = config(&path, FileFormat::Jsonl, Compression::None);
    cfg.rotation.max_size = Some(ByteSize(1));
    cfg.rotation.max_files = 2;
    let sink = FileSink::new("f", &cfg).unwrap();
    for i in 0..6 {
        sink.export(&batch_of(&[&numbered(i, 1)])).await.unwrap();
    }
    sink.shutdown().await.unwrap();

    let files = all_files(&path, Compression::None);
    let kept: Vec<Vec<i64>> = files
        .iter()
        .map(|f| seqs(&read_request(read_text(f).lines()).unwrap()))
        .collect();
    // Each batch filled a file: batches 0..=2 were rotated out, 3 and 4 kept, 5 active.
    assert_eq!(kept, vec![vec![3], vec![4], vec![5]]);
}

#[tokio::test(start_paused = true)]
async fn age_rotation_happens_at_the_first_batch_after_max_age() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let mut cfg = config(&path, FileFormat::Jsonl, Compression::None);
    cfg.rotation.max_age = Some(spansink_config::Duration::from_secs(60));
    let sink = FileSink::new("f", &cfg).unwrap();

    sink.export(&batch_of(&[&numbered(0, 1)])).await.unwrap();
    tokio::time::advance(Duration::from_secs(59)).await;
    sink.export(&batch_of(&[&numbered(1, 1)])).await.unwrap();
    assert_eq!(all_files(&path, Compression::None).len(), 1);

    // Idle past max_age: nothing happens until the next batch arrives.
    tokio::time::advance(Duration::from_secs(120)).await;
    assert_eq!(all_files(&path, Compression::None).len(), 1);
    sink.export(&batch_of(&[&numbered(2, 1)])).await.unwrap();
    sink.shutdown().await.unwrap();

    let files = all_files(&path, Compression::None);
    let contents: Vec<Vec<i64>> = files
        .iter()
        .map(|f| seqs(&read_request(read_text(f).lines()).unwrap()))
        .collect();
    assert_eq!(contents, vec![vec![0, 1], vec![2]]);
}

#[tokio::test]
async fn csv_files_each_start_with_one_header_and_gzip_files_are_whole_streams() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.csv");
    let mut cfg = config(&path, FileFormat::Csv, Compression::Gzip);
    cfg.rotation.max_size = Some(ByteSize(1));
    let sink = FileSink::new("f", &cfg).unwrap();
    for i in 0..3 {
        sink.export(&batch_of(&[&numbered(i * 2, 2)]))
            .await
            .unwrap();
    }
    sink.shutdown().await.unwrap();

    let files = all_files(&path, Compression::Gzip);
    assert_eq!(files.len(), 3);
    let header = FIELDS.join(",");
    for file in files {
        let text = read_text(&file);
        assert!(
            text.starts_with(&format!("{header}\n")),
            "{}",
            file.display()
        );
        assert_eq!(text.matches(&header).count(), 1);
        let rows = ::csv::Reader::from_reader(text.as_bytes())
            .records()
            .count();
        assert_eq!(rows, 2);
    }
}

#[tokio::test]
async fn concurrent_exports_write_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let mut cfg = config(&path, FileFormat::Jsonl, Compression::None);
    cfg.buffer_size = ByteSize::kib(1); // many partial writes per batch
    let sink = Arc::new(FileSink::new("f", &cfg).unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let sink = sink.clone();
            tokio::spawn(async move {
                for b in 0..10 {
                    let first = (t * 10 + b) * 50;
                    sink.export(&batch_of(&[&numbered(first, 50)]))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    sink.shutdown().await.unwrap();

    let request = read_request(read_text(&path).lines()).unwrap();
    let mut all = seqs(&request);
    // Each batch's 50 spans are contiguous.
    for chunk in all.chunks(50) {
        assert_eq!(chunk.last().unwrap() - chunk[0], 49);
        assert_eq!(chunk[0] % 50, 0);
    }
    all.sort();
    assert_eq!(all, (0..4000).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_file_left_by_an_earlier_run_is_rotated_aside_not_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl.gz");
    // An unfinished gzip stream, as a crash would leave it.
    std::fs::write(&path, [0x1f, 0x8b, 0x08, 0x00]).unwrap();
    let sink = FileSink::new("f", &config(&path, FileFormat::Jsonl, Compression::Gzip)).unwrap();
    sink.export(&batch_of(&[&numbered(0, 2)])).await.unwrap();
    sink.shutdown().await.unwrap();

    let files = all_files(&path, Compression::Gzip);
    assert_eq!(files.len(), 2);
    assert_eq!(std::fs::read(&files[0]).unwrap(), [0x1f, 0x8b, 0x08, 0x00]);
    assert_eq!(files[1], path);
    assert_eq!(
        seqs(&read_request(read_text(&path).lines()).unwrap()),
        [0, 1]
    );
}

#[tokio::test]
async fn fsync_mode_writes_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let mut cfg = config(&path, FileFormat::Jsonl, Compression::None);
    cfg.fsync = true;
    cfg.rotation.max_size = Some(ByteSize(1));
    let sink = FileSink::new("f", &cfg).unwrap();
    sink.export(&batch_of(&[&numbered(0, 1)])).await.unwrap();
    sink.export(&batch_of(&[&numbered(1, 1)])).await.unwrap();
    // Flushed to the OS before export returned: readable without shutdown.
    assert_eq!(seqs(&read_request(read_text(&path).lines()).unwrap()), [1]);
    sink.shutdown().await.unwrap();
    assert_eq!(all_files(&path, Compression::None).len(), 2);
}

#[tokio::test]
async fn a_path_that_cannot_be_a_file_is_a_permanent_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    std::fs::create_dir(&path).unwrap();
    let sink = FileSink::new("f", &config(&path, FileFormat::Jsonl, Compression::None)).unwrap();
    let err = sink
        .export(&batch_of(&[&numbered(0, 1)]))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.reason(), "invalid_path");
    assert!(path.is_dir(), "the directory must not be moved aside");
}

#[tokio::test]
async fn an_unusable_directory_is_a_build_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let path = blocker.join("spans.jsonl");
    let err = FileSink::new("dlq", &config(&path, FileFormat::Jsonl, Compression::None))
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.starts_with("sinks.dlq: file.path: cannot create directory"),
        "{text}"
    );
}

#[tokio::test]
async fn empty_batches_create_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let sink = FileSink::new("f", &config(&path, FileFormat::Jsonl, Compression::None)).unwrap();
    sink.export(&Batch::new()).await.unwrap();
    sink.shutdown().await.unwrap();
    assert!(!path.exists());
}
