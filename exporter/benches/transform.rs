//! The transform policy's own cost: the three rules of `examples/transform.yaml` applied
//! to fixed requests of 512 spans x 10 attributes (the `bench` command's workload), in
//! nanoseconds per span. Small and fixed so that `valgrind --tool=callgrind` gives stable
//! instruction counts on a loaded machine. Not a test, nor the whole pipeline (the
//! `bench` command measures that): `cargo bench -p spansink-exporter --bench transform`.
//!
//! `TRANSFORM_BENCH_ROUNDS=N` runs N rounds over the requests instead of ~3 s (for
//! callgrind: a few rounds suffice).

use std::time::{Duration, Instant};

use spansink_config::ExporterConfig;
use spansink_exporter::bench::workload::Workload;
use spansink_exporter::chain::SpanTransform;
use spansink_exporter::otlp::TraceData;
use spansink_exporter::telemetry::Metrics;

const REQUESTS: u64 = 8;
const RUN_FOR: Duration = Duration::from_secs(3);

fn main() {
    let config_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/transform.yaml");
    let config = match ExporterConfig::load(std::path::Path::new(config_path)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{config_path}: {e}");
            std::process::exit(1);
        }
    };
    let Some(rules) = config
        .sinks
        .values()
        .find_map(|sink| sink.transform.as_ref())
    else {
        eprintln!("{config_path}: no sink has a transform");
        std::process::exit(1);
    };
    let transform = match SpanTransform::with_env("bench", rules, &Metrics::for_tests(), &|_| {
        Some("bench-salt".to_string())
    }) {
        Ok(transform) => transform,
        Err(e) => {
            eprintln!("{config_path}: {e}");
            std::process::exit(1);
        }
    };
    let workload = Workload {
        spans_per_request: 512,
        attributes_per_span: 10,
    };
    let requests: Vec<TraceData> = (0..REQUESTS)
        .map(|seed| TraceData::from_request(&workload.request(seed)))
        .collect();
    let spans_per_round: u64 = requests.iter().map(|r| r.span_count() as u64).sum();
    let rounds: Option<u64> = std::env::var("TRANSFORM_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok());

    let started = Instant::now();
    let mut done = 0u64;
    let mut bytes_out = 0usize;
    loop {
        for request in &requests {
            match transform.apply(request.clone()) {
                Ok(out) => bytes_out += out.encoded_len(),
                Err(e) => {
                    eprintln!("transform failed: {e}");
                    std::process::exit(1);
                }
            }
        }
        done += 1;
        let finished = match rounds {
            Some(n) => done >= n,
            None => started.elapsed() >= RUN_FOR,
        };
        if finished {
            break;
        }
    }
    let elapsed = started.elapsed();
    let spans = done * spans_per_round;
    println!(
        "transform (3 rules)  {:>8.1} ns/span  {spans} spans, {bytes_out} bytes out, {:.2} s",
        elapsed.as_nanos() as f64 / spans as f64,
        elapsed.as_secs_f64()
    );
}
