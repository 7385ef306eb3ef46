//! `spansink-exporter bench`: measures a pipeline end to end. Starts the exporter as a
//! child process on a given config (ports moved to free loopback ones), loads it with
//! the built-in generator, and reports spans/s, exporter CPU seconds per million spans,
//! peak RSS, bytes written to storage per span, the largest durable-queue backlog on disk,
//! and the prost-decode ceiling for the same requests.

pub mod decode_ceiling;
pub mod load;
pub mod process_stats;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spansink_config::ExporterConfig;

use load::{LoadProtocol, LoadReport, LoadSpec};
use workload::Workload;

/// Everything one `bench` run needs.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    pub config: PathBuf,
    pub protocol: LoadProtocol,
    pub concurrency: usize,
    pub duration: Duration,
    pub workload: Workload,
}

/// The figures a run produced.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub load: LoadReport,
    pub delivered_spans: f64,
    pub exporter_cpu: Duration,
    pub peak_rss_bytes: u64,
    /// Bytes the exporter wrote to storage during the run (durable queues, file sinks).
    pub storage_written_bytes: u64,
    /// The largest backlog the durable queues held on disk at once (sampled).
    pub peak_queue_disk_bytes: f64,
    pub decode_spans_per_second: f64,
}

impl BenchReport {
    pub fn spans_per_cpu_second(&self) -> f64 {
        self.load.accepted_spans as f64 / self.exporter_cpu.as_secs_f64().max(1e-9)
    }

    pub fn cpu_seconds_per_million(&self) -> f64 {
        self.exporter_cpu.as_secs_f64() * 1e6 / (self.load.accepted_spans.max(1) as f64)
    }

    pub fn print(&self, spec: &BenchSpec) {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        println!("pipeline          {}", spec.config.display());
        println!(
            "load              {:?}, {} clients, {} spans/request, {} attributes/span, {} bytes/request, {:.1} s",
            spec.protocol,
            spec.concurrency,
            spec.workload.spans_per_request,
            spec.workload.attributes_per_span,
            self.load.request_bytes,
            self.load.elapsed.as_secs_f64()
        );
        println!(
            "accepted          {} spans = {:.0} spans/s ({} requests refused with retry, {} failed)",
            self.load.accepted_spans,
            self.load.spans_per_second(),
            self.load.refused_requests,
            self.load.failed_requests
        );
        println!(
            "delivered         {:.0} spans (spansink_sink_sent_spans_total)",
            self.delivered_spans
        );
        println!(
            "exporter CPU      {:.2} s = {:.3} CPU-s per million spans = {:.0} spans per CPU-second",
            self.exporter_cpu.as_secs_f64(),
            self.cpu_seconds_per_million(),
            self.spans_per_cpu_second()
        );
        println!("exporter peak RSS {:.1} MiB", mib(self.peak_rss_bytes));
        println!(
            "storage writes    {:.1} MiB = {:.0} bytes per accepted span (/proc write_bytes: durable queues and file sinks)",
            mib(self.storage_written_bytes),
            self.storage_written_bytes as f64 / self.load.accepted_spans.max(1) as f64
        );
        if self.peak_queue_disk_bytes > 0.0 {
            println!(
                "queue backlog     {:.1} MiB at most on disk (spansink_queue_disk_bytes, sampled every {} ms)",
                self.peak_queue_disk_bytes / (1024.0 * 1024.0),
                BACKLOG_SAMPLE_INTERVAL.as_millis()
            );
        }
        println!(
            "decode ceiling    {:.0} spans/s (prost decode of the same requests, one core)",
            self.decode_spans_per_second
        );
        println!(
            "ratio             {:.2}x (exporter spans per CPU-second / decode spans per second)",
            self.spans_per_cpu_second() / self.decode_spans_per_second.max(1e-9)
        );
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// The exporter child process; killed if the bench fails half-way.
struct ExporterChild {
    child: Child,
    telemetry: String,
    log: PathBuf,
}

impl Drop for ExporterChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ExporterChild {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn delivered(&self) -> f64 {
        metric_sum(&self.telemetry, "spansink_sink_sent_spans_total{").await
    }

    fn terminate(&mut self) {
        // SAFETY: kill(2) on our own child's pid; at worst it fails with ESRCH.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// How often the durable queues' backlog on disk is sampled during a run.
const BACKLOG_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// The sum of every series of one metric (`prefix` is its name and the opening brace),
/// 0 when the exporter cannot be read.
async fn metric_sum(telemetry: &str, prefix: &str) -> f64 {
    let text = match reqwest::get(format!("{telemetry}/metrics")).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => return 0.0,
    };
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Samples the durable queues' bytes on disk until `stop` fires; yields the largest seen.
fn sample_queue_backlog(
    telemetry: String,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<f64> {
    tokio::spawn(async move {
        let mut peak = 0.0f64;
        loop {
            peak = peak.max(metric_sum(&telemetry, "spansink_queue_disk_bytes{").await);
            tokio::select! {
                _ = tokio::time::sleep(BACKLOG_SAMPLE_INTERVAL) => {}
                _ = &mut stop => return peak,
            }
        }
    })
}

/// Starts the exporter on `config` with receivers and telemetry moved to free loopback
/// ports, in a scratch directory (relative file paths land there).
fn spawn_exporter(
    config: &Path,
    workdir: &Path,
) -> Result<(ExporterChild, String, String), String> {
    let mut cfg = ExporterConfig::load(config).map_err(|e| e.to_string())?;
    let (grpc, http, telemetry) = (free_port()?, free_port()?, free_port()?);
    cfg.receivers.grpc.endpoint = format!("127.0.0.1:{grpc}");
    cfg.receivers.http.endpoint = format!("127.0.0.1:{http}");
    cfg.telemetry.endpoint = format!("127.0.0.1:{telemetry}");
    let path = workdir.join("bench-config.yaml");
    std::fs::write(&path, cfg.to_yaml()).map_err(|e| format!("{}: {e}", path.display()))?;
    let log = workdir.join("exporter.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let child = Command::new(exe)
        .args(["run", "--config"])
        .arg(&path)
        .current_dir(workdir)
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start exporter: {e}"))?;
    Ok((
        ExporterChild {
            child,
            telemetry: format!("http://127.0.0.1:{telemetry}"),
            log,
        },
        format!("http://127.0.0.1:{grpc}"),
        format!("http://127.0.0.1:{http}"),
    ))
}

/// Runs the whole benchmark.
pub async fn run(spec: &BenchSpec) -> Result<BenchReport, String> {
    let workdir = std::env::temp_dir().join(format!("spansink-bench-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).map_err(|e| format!("{}: {e}", workdir.display()))?;
    let (mut exporter, grpc, http) = spawn_exporter(&spec.config, &workdir)?;

    let ready_by = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = reqwest::get(format!("{}/readyz", exporter.telemetry))
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        if Instant::now() > ready_by || exporter.child.try_wait().ok().flatten().is_some() {
            return Err(format!(
                "exporter did not become ready:\n{}",
                exporter.log_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let pid = exporter.child.id();
    let cpu_before = process_stats::cpu_time(pid)?;
    let written_before = process_stats::storage_write_bytes(pid)?;
    let (stop_sampler, sampler_stopped) = tokio::sync::oneshot::channel();
    let sampler = sample_queue_backlog(exporter.telemetry.clone(), sampler_stopped);
    let load_spec = LoadSpec {
        protocol: spec.protocol,
        endpoint: match spec.protocol {
            LoadProtocol::Grpc => grpc,
            LoadProtocol::Http => http,
        },
        concurrency: spec.concurrency,
        duration: spec.duration,
        workload: spec.workload,
    };
    let load = load::run(&load_spec).await?;

    // Count the CPU the exporter needs to deliver what it accepted, not just to receive it.
    let drained_by = Instant::now() + Duration::from_secs(60);
    let mut delivered = exporter.delivered().await;
    while delivered < load.accepted_spans as f64 && Instant::now() < drained_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
        delivered = exporter.delivered().await;
    }
    let exporter_cpu = process_stats::cpu_time(pid)?.saturating_sub(cpu_before);
    let storage_written_bytes =
        process_stats::storage_write_bytes(pid)?.saturating_sub(written_before);
    let peak_rss_bytes = process_stats::peak_rss(pid)?;
    let _ = stop_sampler.send(());
    let peak_queue_disk_bytes = sampler.await.unwrap_or_default();
    exporter.terminate();
    let _ = std::fs::remove_dir_all(&workdir);

    // Measured after the exporter stopped, so it has a core to itself.
    let requests = load::encoded_requests(spec.workload);
    let decode_spans_per_second =
        decode_ceiling::spans_per_second(&requests, Duration::from_secs(3))?;
    Ok(BenchReport {
        load,
        delivered_spans: delivered,
        exporter_cpu,
        peak_rss_bytes,
        storage_written_bytes,
        peak_queue_disk_bytes,
        decode_spans_per_second,
    })
}
