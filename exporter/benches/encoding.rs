//! Encoding throughput for 512-span requests with 10 attributes per span: prost decode
//! alone (the ceiling), decode + JSON Lines, decode + CSV, the same encoders reading the
//! wire bytes through `otlp::view` (no decode), and the whole file sink export (view
//! encode, write to a temporary file). Prints spans per second of wall time and
//! per process CPU-second. Not a test: `cargo bench -p spansink-exporter --bench encoding`.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use spansink_config::{Compression, FileFormat, FileSinkConfig};
use spansink_exporter::encoding::{
    CsvEncoder, JsonLinesEncoder, encode_request, encode_wire_request,
};
use spansink_exporter::otlp::{Batch, TraceData};
use spansink_exporter::sinks::{FileSink, Sink};

const SPANS: usize = 512;
const ATTRIBUTES: usize = 10;
const RUN_FOR: Duration = Duration::from_secs(3);

fn kv(key: String, value: Value) -> KeyValue {
    KeyValue {
        key,
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

/// Spans like an instrumented HTTP service sends: ids, times, a status, and attributes
/// of the common types.
fn request() -> ExportTraceServiceRequest {
    let spans = (0..SPANS)
        .map(|i| Span {
            trace_id: (0..16).map(|b| (i * 7 + b) as u8).collect(),
            span_id: (0..8).map(|b| (i * 3 + b) as u8).collect(),
            parent_span_id: (0..8).map(|b| (i + b) as u8).collect(),
            name: "GET /api/v1/orders/{id}".to_string(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64 * 1_000,
            end_time_unix_nano: 1_700_000_000_002_500_000 + i as u64 * 1_000,
            flags: 1,
            attributes: (0..ATTRIBUTES)
                .map(|a| match a % 4 {
                    0 => kv(
                        format!("http.route.{a}"),
                        Value::StringValue("/api/v1/orders/{id}".into()),
                    ),
                    1 => kv(
                        format!("http.status_code.{a}"),
                        Value::IntValue(200 + a as i64),
                    ),
                    2 => kv(
                        format!("latency.ratio.{a}"),
                        Value::DoubleValue(0.125 * a as f64),
                    ),
                    _ => kv(format!("cache.hit.{a}"), Value::BoolValue(a % 8 == 3)),
                })
                .collect(),
            status: Some(Status {
                message: String::new(),
                code: 1,
            }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name".into(), Value::StringValue("orders".into())),
                    kv("service.version".into(), Value::StringValue("1.4.2".into())),
                    kv(
                        "host.name".into(),
                        Value::StringValue("orders-7d9f8c-abcde".into()),
                    ),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.http".into(),
                    version: "1.2.3".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// User + system CPU time of the whole process (all threads), from /proc/self/stat
/// (Linux, 100 ticks per second); `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Runs `work` (which handles one request and returns bytes produced) for [`RUN_FOR`].
fn measure(label: &str, mut work: impl FnMut() -> usize) {
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    let mut requests = 0u64;
    let mut bytes = 0usize;
    while start.elapsed() < RUN_FOR {
        bytes += work();
        requests += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let spans = requests as f64 * SPANS as f64;
    let per_cpu = match (cpu_start, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => format!("{:>10.0} spans/CPU-s", spans / (b - a)),
        _ => String::new(),
    };
    println!(
        "{label:<28} {:>10.0} spans/s {per_cpu}  {:>7.1} MB/s out",
        spans / secs,
        bytes as f64 / secs / 1e6
    );
}

fn main() {
    let encoded = request().encode_to_vec();
    println!(
        "request: {SPANS} spans x {ATTRIBUTES} attributes, {} bytes",
        encoded.len()
    );
    measure("prost decode", || {
        let r =
            ExportTraceServiceRequest::decode(encoded.as_slice()).map(|r| r.resource_spans.len());
        std::hint::black_box(r).unwrap_or(0)
    });
    let mut out = Vec::new();
    let mut json = JsonLinesEncoder::new();
    measure("decode + jsonl", || {
        out.clear();
        let r = ExportTraceServiceRequest::decode(encoded.as_slice()).unwrap_or_default();
        encode_request(&mut json, &r, &mut out);
        std::hint::black_box(&out).len()
    });
    let mut csv = CsvEncoder::new();
    measure("decode + csv", || {
        out.clear();
        let r = ExportTraceServiceRequest::decode(encoded.as_slice()).unwrap_or_default();
        encode_request(&mut csv, &r, &mut out);
        std::hint::black_box(&out).len()
    });
    measure("view jsonl (no decode)", || {
        out.clear();
        let spans = encode_wire_request(&mut json, &encoded, &mut out);
        std::hint::black_box(spans).map_or(0, |_| out.len())
    });
    measure("view csv (no decode)", || {
        out.clear();
        let spans = encode_wire_request(&mut csv, &encoded, &mut out);
        std::hint::black_box(spans).map_or(0, |_| out.len())
    });
    let decoded = ExportTraceServiceRequest::decode(encoded.as_slice()).unwrap_or_default();
    measure("jsonl encode only", || {
        out.clear();
        encode_request(&mut json, &decoded, &mut out);
        std::hint::black_box(&out).len()
    });

    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    else {
        eprintln!("cannot start a tokio runtime");
        return;
    };
    let batch: Batch = [TraceData::from_request(&request())].into_iter().collect();
    for (label, format, compression) in [
        (
            "file sink export jsonl",
            FileFormat::Jsonl,
            Compression::None,
        ),
        ("file sink export csv", FileFormat::Csv, Compression::None),
        (
            "file sink export jsonl+gzip",
            FileFormat::Jsonl,
            Compression::Gzip,
        ),
    ] {
        let Ok(dir) = tempfile::tempdir() else {
            eprintln!("cannot create a temporary directory");
            return;
        };
        let config: FileSinkConfig = match serde_yaml::from_str(&format!(
            "path: {}\nrotation: {{max_size: 256MiB, max_files: 1}}",
            dir.path().join("spans.out").display()
        )) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return;
            }
        };
        let config = FileSinkConfig {
            format,
            compression,
            ..config
        };
        let sink = match FileSink::new("bench", &config) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return;
            }
        };
        measure(label, || match runtime.block_on(sink.export(&batch)) {
            Ok(()) => batch.encoded_len(),
            Err(e) => panic!("{e}"),
        });
        let _ = runtime.block_on(sink.shutdown());
    }
}
