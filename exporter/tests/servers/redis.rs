//! A real redis-server for the Redis sink tests: no persistence, loopback only, a free
//! port and its own temp dir; can be stopped and started again on the same port.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ServerProcess, free_port, require_binary, wait_listening};

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    process: Option<ServerProcess>,
    /// Serves TLS only (on `port`), with a certificate for 127.0.0.1 signed by `ca_file`.
    tls: bool,
}

impl RedisServer {
    /// Starts a server and waits until it accepts connections.
    pub fn start() -> Self {
        let mut server = Self::stopped();
        server.resume();
        server
    }

    /// A server that is not running yet (its port is chosen): for "down at start" tests.
    pub fn stopped() -> Self {
        Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir for redis-server"),
            process: None,
            tls: false,
        }
    }

    /// A server that speaks TLS only, its certificate signed by a fresh test CA
    /// ([`RedisServer::ca_file`]).
    pub fn start_tls() -> Self {
        let mut server = Self::stopped();
        server.tls = true;
        make_certificates(server.dir.path());
        server.resume();
        server
    }

    /// The test CA that signed a TLS server's certificate (PEM).
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// `redis://127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// Starts (again) on the same port; data of a previous run is gone (no persistence).
    pub fn resume(&mut self) {
        let binary = require_binary("redis-server", &[], "redis-server");
        let mut process = ServerProcess::spawn(
            "redis-server",
            Command::new(binary)
                .args(args(self.port, self.dir.path(), self.tls))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_listening("redis-server", self.port, Duration::from_secs(20));
        process.assert_running();
        self.process = Some(process);
    }

    /// Kills the server (SIGKILL): connections drop as in a crash.
    pub fn kill(&mut self) {
        self.process.take();
    }

    /// A client for reading back and for setting up test conditions (plain servers).
    pub async fn connection(&self) -> ::redis::aio::MultiplexedConnection {
        assert!(
            !self.tls,
            "read back from a TLS server through the sink's client"
        );
        ::redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

fn args(port: u16, dir: &Path, tls: bool) -> Vec<String> {
    let file = |name: &str| dir.join(name).display().to_string();
    let listen: Vec<String> = if tls {
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &file("server.crt"),
            "--tls-key-file",
            &file("server.key"),
            "--tls-ca-cert-file",
            &file("ca.crt"),
            "--tls-auth-clients",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    } else {
        vec!["--port".to_string(), port.to_string()]
    };
    let common: Vec<String> = [
        "--bind",
        "127.0.0.1",
        "--dir",
        &dir.display().to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        // Not a daemon: the test owns the process and kills it by PID on drop.
        "--daemonize",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    common.into_iter().chain(listen).collect()
}

/// A test CA and a server certificate for IP 127.0.0.1 signed by it, made with openssl.
fn make_certificates(dir: &Path) {
    let openssl = require_binary("openssl", &[], "openssl");
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=spansink test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}
