//! A real ClickHouse server (Debian's `clickhouse-server`) in a temp dir, listening on free
//! loopback ports only, stopped by PID; and chdb (embedded current ClickHouse) for DDL checks.
//!
//! The config is written from scratch rather than copied from /etc/clickhouse-server: a
//! minimal file names every path and port, so nothing of the machine's install (9000,
//! 9009, /var/lib/clickhouse) is touched, and the interserver port is not opened at all.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ServerProcess, free_port, require_binary};

/// User with a password (the sink's credentials test).
pub const USER: &str = "spansink";
pub const PASSWORD: &str = "s3cret pw";
/// User whose profile is read-only (the permission test).
pub const READONLY_USER: &str = "reader";

pub struct ClickHouse {
    dir: tempfile::TempDir,
    pub http_port: u16,
    pub tcp_port: u16,
    process: Option<ServerProcess>,
}

impl ClickHouse {
    /// Starts a server on free ports and waits until it answers `/ping`.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a server with its HTTP interface on `http_port`.
    pub fn start_on(http_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self {
            dir,
            http_port,
            tcp_port: free_port(),
            process: None,
        };
        server.write_config();
        server.launch();
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (SIGKILL: a crash, not a clean shutdown).
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.xml")
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
  <logger><level>information</level><log>{d}/server.log</log><errorlog>{d}/server.err.log</errorlog><size>100M</size><count>1</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <timezone>UTC</timezone>
</yandex>
"#,
            http = self.http_port,
            tcp = self.tcp_port,
        );
        let users = format!(
            r#"<?xml version="1.0"?>
<yandex>
  <profiles>
    <default><max_memory_usage>4000000000</max_memory_usage></default>
    <readonly><readonly>1</readonly></readonly>
  </profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default>
    <{USER}><password>{PASSWORD}</password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></{USER}>
    <{READONLY_USER}><password></password><networks><ip>127.0.0.1</ip></networks><profile>readonly</profile><quota>default</quota></{READONLY_USER}>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#
        );
        std::fs::write(self.config_path(), config).expect("write config.xml");
        std::fs::write(self.dir.path().join("users.xml"), users).expect("write users.xml");
    }

    fn launch(&mut self) {
        let binary = require_binary(
            "clickhouse-server",
            &["/usr/sbin", "/usr/bin"],
            "clickhouse-server",
        );
        let mut process = ServerProcess::spawn(
            "clickhouse-server",
            Command::new(binary)
                .arg(format!("--config-file={}", self.config_path().display()))
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let deadline = Instant::now() + Duration::from_secs(90);
        let url = format!("{}/ping", self.endpoint());
        loop {
            process.assert_running();
            if ping(&url) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "clickhouse-server did not answer {url} within 90 s; see {}/server.err.log",
                self.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.process = Some(process);
    }

    /// Runs `sql` as the default user and returns the answer; panics on an error.
    pub async fn query(&self, sql: &str) -> String {
        let response = reqwest::Client::new()
            .post(self.endpoint())
            .body(sql.to_string())
            .send()
            .await
            .expect("ClickHouse answers");
        let status = response.status();
        let text = response.text().await.expect("answer body");
        assert!(status.is_success(), "{sql}\n-> HTTP {status}: {text}");
        text
    }
}

/// `GET /ping` answers `Ok.` once the server serves queries (blocking, std only: it runs
/// before any runtime exists in some tests).
fn ping(url: &str) -> bool {
    use std::io::{Read, Write};
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.ends_with("Ok.\n")
}

/// Runs `script` with the Python of the test virtualenv (`SPANSINK_PYTHON`, which has
/// chdb) in `dir` and returns its standard output; panics with its stderr on failure.
/// The working directory matters: chdb reads a `config.xml` it finds there.
pub fn run_chdb(dir: &Path, script: &str, args: &[&str]) -> String {
    let python = std::env::var("SPANSINK_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SPANSINK_PYTHON is not set: point it at the test virtualenv's python with chdb \
             installed (tests/run-all.sh creates it: pip install chdb)"
        )
    });
    let script_path = dir.join("chdb_check.py");
    std::fs::write(&script_path, script).expect("write script");
    let output = Command::new(&python)
        .arg(&script_path)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{python} did not run: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "chdb script failed ({}): {stderr}\n(is chdb installed? {python} -m pip install chdb)",
        output.status
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}
