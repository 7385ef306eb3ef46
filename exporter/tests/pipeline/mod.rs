//! A real sink chain around one backend for the sink tests' failure scenarios: the
//! backend under test as the primary sink, with a short retry policy and a file sink as
//! its fallback (dead letter), built exactly as the exporter builds it from YAML.
//! Not for the happy path: those tests call the sink directly.

// Each test binary uses what its scenarios need.
#![allow(dead_code)]

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use spansink_config::ExporterConfig;
use spansink_exporter::chain::{Admit, Chain, DrainReport, build_chain};
use spansink_exporter::encoding::read_request;
use spansink_exporter::otlp::TraceData;
use spansink_exporter::telemetry::metrics::Metrics;

/// The primary sink's name in the pipeline (the `sink` label of its metrics).
pub const PRIMARY: &str = "primary";

/// `primary` (the backend under test; 2 attempts 10 ms apart, then fallback) and
/// `dead-letter` (a JSON Lines file).
pub struct FallbackPipeline {
    chain: Chain,
    dir: tempfile::TempDir,
    pub metrics: Metrics,
}

impl FallbackPipeline {
    /// `backend` is the YAML of the primary sink's backend as a user writes it under
    /// `sinks.<name>:`, e.g. `"redis:\n  url: redis://127.0.0.1:6390\n"`.
    pub async fn start(backend: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend: String = backend.lines().map(|l| format!("    {l}\n")).collect();
        let yaml = format!(
            "sinks:\n  {PRIMARY}:\n{backend}    batch:\n      flush_interval: 50ms\n    \
             retry:\n      max_attempts: 2\n      initial_backoff: 10ms\n      max_backoff: 20ms\n    \
             fallback: dead-letter\n  dead-letter:\n    fallback_only: true\n    file:\n      \
             path: {}\n",
            dir.path().join("dead-letter.jsonl").display()
        );
        let config = ExporterConfig::from_yaml(&yaml)
            .unwrap_or_else(|e| panic!("pipeline config does not load: {e}\n{yaml}"));
        let metrics = Metrics::for_tests();
        let chain = build_chain(&config, &metrics).await.unwrap();
        chain.start();
        Self {
            chain,
            dir,
            metrics,
        }
    }

    /// Hands `request` to the chain, as a receiver does.
    pub async fn admit(&self, request: &ExportTraceServiceRequest) {
        self.chain
            .admit(TraceData::from_request(request))
            .await
            .unwrap_or_else(|refusal| panic!("the chain refused a request: {refusal:?}"));
    }

    /// Delivers everything queued (to the primary or, failing that, the dead letter) and
    /// shuts the sinks down.
    pub async fn drain(&self) -> DrainReport {
        self.chain.drain(Duration::from_secs(120)).await
    }

    /// Everything the dead-letter file received.
    pub fn dead_letter(&self) -> ExportTraceServiceRequest {
        let path = self.dir.path().join("dead-letter.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        read_request(text.lines()).unwrap()
    }
}
