//! Harness for spansink's end-to-end tests: runs the real `spansink-exporter` binary on
//! free loopback ports with a ConfigMap-style config mount, and reads back what it wrote.
//! Not for unit tests of library code: those live next to the code. `container` drives
//! the images built from the Dockerfile.

pub mod container;
pub mod pki;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; the exporter binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// The exporter binary built by cargo beside this test executable.
pub fn exporter_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/spansink-exporter
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = dir.join(format!("spansink-exporter{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p spansink-exporter` (tests/run-all.sh does)",
        bin.display()
    );
    bin
}

/// The Python interpreter of the test virtualenv (official OpenTelemetry SDK installed).
pub fn python() -> PathBuf {
    let path = std::env::var_os("SPANSINK_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        panic!("SPANSINK_PYTHON is not set: run the suite with `bash tests/run-all.sh`, which creates the virtualenv")
    });
    assert!(
        path.exists(),
        "SPANSINK_PYTHON={} does not exist; run tests/run-all.sh",
        path.display()
    );
    path
}

/// A blocking GET with a 2 s timeout: (status, body), or None if nothing answered.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    })
}

/// The value of one sample in a Prometheus text body, e.g.
/// `spansink_config_reloads_total{result="failure"}`.
pub fn metric_sample(body: &str, sample: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(sample)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// Runs tests/python/send_spans.py (the official OpenTelemetry Python SDK) against
/// `endpoint` over `protocol` (`grpc` or `http`) and returns the spans it says it created
/// (`count` parents, each with a child); panics if any export failed.
pub fn send_with_python(
    protocol: &str,
    endpoint: &str,
    count: usize,
    service: &str,
) -> Vec<serde_json::Value> {
    PythonClient::new(protocol, endpoint)
        .arg("--count", &count.to_string())
        .arg("--service", service)
        .run()
        .unwrap_or_else(|error| panic!("python client failed: {error}"))
}

/// `tests/python/send_spans.py` with its options (TLS files, headers, compression, a
/// sending duration): run to the end, or spawned while the test changes the exporter.
pub struct PythonClient {
    args: Vec<String>,
}

impl PythonClient {
    pub fn new(protocol: &str, endpoint: &str) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/send_spans.py");
        PythonClient {
            args: [script, "--protocol", protocol, "--endpoint", endpoint]
                .map(String::from)
                .to_vec(),
        }
    }

    pub fn arg(mut self, name: &str, value: &str) -> Self {
        self.args.extend([name.to_owned(), value.to_owned()]);
        self
    }

    /// Runs the client: the spans it created, or its exit status and stderr if any export
    /// failed.
    pub fn run(self) -> Result<Vec<serde_json::Value>, String> {
        self.spawn().wait()
    }

    pub fn spawn(self) -> RunningPythonClient {
        let child = Command::new(python())
            .args(&self.args)
            // requests lets these override the session's `verify`, so `--ca-file` would be
            // ignored for OTLP/HTTP on a machine that sets them (requests issue #3829).
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python");
        RunningPythonClient { child: Some(child) }
    }
}

/// A client sending in the background; killed if dropped before [`Self::wait`] (a test
/// that fails midway must not leave it sending).
pub struct RunningPythonClient {
    child: Option<Child>,
}

impl RunningPythonClient {
    pub fn wait(mut self) -> Result<Vec<serde_json::Value>, String> {
        let child = self.child.take().expect("python client is running");
        let out = child.wait_with_output().expect("wait for python");
        if !out.status.success() {
            return Err(format!(
                "{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(serde_json::from_slice(&out.stdout).expect("client prints JSON"))
    }
}

impl Drop for RunningPythonClient {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running exporter process with its own directory, ports and config mount.
pub struct Exporter {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub grpc_port: u16,
    pub http_port: u16,
    pub telemetry_port: u16,
    generation: u32,
    /// Extra environment of the process (e.g. a bearer token for `bearer_tokens_env`).
    env: Vec<(String, String)>,
}

impl Exporter {
    /// Starts the exporter with `sinks` (the YAML of the `sinks:` map, indented by two
    /// spaces) and waits until `/readyz` answers 200.
    pub fn start(sinks: &str) -> Self {
        Self::start_with(|exporter| exporter.config_text(sinks))
    }

    /// Starts the exporter on the config `config` writes for it (it knows the ports).
    pub fn start_with(config: impl Fn(&Exporter) -> String) -> Self {
        Self::start_with_env(&[], config)
    }

    /// [`Self::start_with`], with these variables in the process environment (kept on
    /// [`Self::restart`]).
    ///
    /// A port found free can be taken by another process (any outgoing connection gets
    /// an ephemeral port from the same range) before the exporter binds it; then the
    /// start is tried again on new ports, with the config written for them.
    pub fn start_with_env(env: &[(&str, &str)], config: impl Fn(&Exporter) -> String) -> Self {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let mut exporter = Exporter {
                child: None,
                dir: tempfile::tempdir().expect("temp dir"),
                grpc_port: free_port(),
                http_port: free_port(),
                telemetry_port: free_port(),
                generation: 0,
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            };
            let text = config(&exporter);
            exporter.write_config(&text);
            match exporter.try_spawn() {
                Ok(()) => return exporter,
                Err(log) if attempt < ATTEMPTS && log.contains("Address already in use") => {
                    eprintln!(
                        "exporter start attempt {attempt}: a port was taken; trying new ports"
                    );
                }
                Err(log) => panic!("exporter did not become ready; log:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Starts the process in this exporter's directory (its log appended to) and waits
    /// until `/readyz` answers 200.
    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("exporter did not become ready; log:\n{log}");
        }
    }

    /// [`Self::spawn`], giving the log back when the process does not become ready.
    fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut child = Command::new(exporter_binary())
            .args([
                "run",
                "--config",
                "config/config.yaml",
                "--watch-interval",
                "200ms",
            ])
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info,spansink_exporter=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn spansink-exporter");
        // Ready, or gone (a bind error ends the process at once: no need to wait it out).
        let ready = wait_for(Duration::from_secs(30), || {
            if self.get("/readyz").is_some_and(|(s, _)| s == 200) {
                return Some(true);
            }
            matches!(child.try_wait(), Ok(Some(_))).then_some(false)
        });
        self.child = Some(child);
        match ready.filter(|ready| *ready) {
            Some(_) => Ok(()),
            None => {
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                Err(self.log())
            }
        }
    }

    /// `kill -9`: no drain, no flush, as an OOM kill or a node crash leaves it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same directory, config and ports.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart: the exporter is still running"
        );
        self.spawn();
    }

    /// A full config with this exporter's ports and the given sinks.
    pub fn config_text(&self, sinks: &str) -> String {
        self.config_text_with_receivers("", sinks)
    }

    /// A full config with this exporter's ports, more `receivers:` settings (YAML lines
    /// indented by two spaces, e.g. `"  acknowledgements: delivered\n"`) and the sinks.
    pub fn config_text_with_receivers(&self, receivers: &str, sinks: &str) -> String {
        self.config_text_with_listeners("", "", receivers, sinks)
    }

    /// [`Self::config_text_with_receivers`], with more settings inside the `grpc:` and
    /// `http:` listener maps (flow-style entries, e.g. `", cors: {allowed_origins: [\"*\"]}"`).
    pub fn config_text_with_listeners(
        &self,
        grpc: &str,
        http: &str,
        receivers: &str,
        sinks: &str,
    ) -> String {
        format!(
            "receivers:\n  grpc: {{endpoint: '127.0.0.1:{}'{grpc}}}\n  http: {{endpoint: '127.0.0.1:{}'{http}}}\n{receivers}telemetry:\n  endpoint: '127.0.0.1:{}'\nshutdown:\n  drain_timeout: 10s\nsinks:\n{sinks}",
            self.grpc_port, self.http_port, self.telemetry_port
        )
    }

    /// Writes the config the way the kubelet updates a ConfigMap volume: a new timestamped
    /// directory, then an atomic rename of the `..data` symlink.
    pub fn write_config(&mut self, text: &str) {
        let mount = self.dir.path().join("config");
        std::fs::create_dir_all(&mount).expect("config dir");
        self.generation += 1;
        let version = format!("..v{}", self.generation);
        std::fs::create_dir_all(mount.join(&version)).expect("version dir");
        std::fs::write(mount.join(&version).join("config.yaml"), text).expect("write config");
        let tmp = mount.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, mount.join("..data")).expect("swap ..data");
        let link = mount.join("config.yaml");
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("..data/config.yaml", &link).expect("symlink config.yaml");
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("exporter.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn http_traces_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.http_port)
    }

    /// GET on the telemetry port: (status, body), or None if it did not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&format!("http://127.0.0.1:{}{path}", self.telemetry_port))
    }

    /// The value of one sample in `/metrics`, e.g. `spansink_sink_sent_spans_total{sink="main"}`.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        metric_sample(&body, sample)
    }

    /// Sends SIGTERM and waits for the exit (at most `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("exporter is running");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = wait_for(timeout, || child.try_wait().ok().flatten());
        match status {
            Some(s) => s,
            None => {
                let _ = child.kill();
                panic!(
                    "exporter did not exit within {timeout:?} after SIGTERM; log:\n{}",
                    self.log()
                );
            }
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every JSON line of every file in `dir` whose name starts with `prefix` (rotated files
/// included; `.gz` files are inflated).
pub fn read_json_lines(dir: &Path, prefix: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let Ok(raw) = std::fs::read(&path) else {
            continue;
        };
        let text = if name.ends_with(".gz") {
            use std::io::Read;
            let mut s = String::new();
            let _ = flate2::read::MultiGzDecoder::new(raw.as_slice()).read_to_string(&mut s);
            s
        } else {
            String::from_utf8_lossy(&raw).into_owned()
        };
        // A line still being written has no newline yet; only complete lines count.
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        out.extend(complete.lines().filter(|l| !l.is_empty()).map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad JSON line {l:?}: {e}", path.display()))
        }));
    }
    out
}

/// Sends each request over OTLP/gRPC (blocking) and returns how many spans the exporter
/// accepted; panics on any refusal, since these tests run well below queue limits.
pub fn send_grpc(
    endpoint: &str,
    requests: &[opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest],
) -> usize {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut client = TraceServiceClient::connect(endpoint.to_string())
            .await
            .expect("connect to exporter");
        let mut accepted = 0;
        for r in requests {
            let resp = client
                .export(r.clone())
                .await
                .unwrap_or_else(|s| panic!("export refused: {s:?}"));
            accepted += span_count(r) - rejected_spans(resp.get_ref()) as usize;
        }
        accepted
    })
}

pub use spansink_exporter::otlp::span_count;

/// Spans an export answer says were rejected (OTLP `partial_success`).
pub fn rejected_spans(
    answer: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
) -> i64 {
    answer
        .partial_success
        .as_ref()
        .map_or(0, |p| p.rejected_spans)
}

/// Span ids (hex) found in JSON lines.
pub fn span_ids(lines: &[serde_json::Value]) -> std::collections::BTreeSet<String> {
    lines
        .iter()
        .filter_map(|l| l["span_id"].as_str().map(str::to_owned))
        .collect()
}

/// The span ids of a request, hex-encoded as the file sink writes them.
pub fn request_span_ids(
    request: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) -> impl Iterator<Item = String> + '_ {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| const_hex::encode(&s.span_id))
}
