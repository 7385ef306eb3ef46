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
        }
    }

    /// `redis://127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts (again) on the same port; data of a previous run is gone (no persistence).
    pub fn resume(&mut self) {
        let binary = require_binary("redis-server", &[], "redis-server");
        let mut process = ServerProcess::spawn(
            "redis-server",
            Command::new(binary)
                .args(args(self.port, self.dir.path()))
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

    /// A client for reading back and for setting up test conditions.
    pub async fn connection(&self) -> ::redis::aio::MultiplexedConnection {
        ::redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

fn args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
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
    .collect()
}
