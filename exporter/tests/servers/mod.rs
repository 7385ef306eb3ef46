//! Real servers for the sink tests, started on free loopback ports and stopped by PID.
//! One file per server (`postgres.rs`, `redis.rs`, ...); this file holds what they share:
//! port picking, waiting for a listener, and a process guard. Not a mock of anything.

// Each test binary (`sink_postgres`, `sink_redis`, ...) compiles this whole module but
// uses only its own server, so the others would warn as dead code.
#![allow(dead_code)]

pub mod clickhouse;
pub mod elasticsearch;
pub mod moto;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;
pub mod tansu;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`; panics naming
/// `what` after `timeout`.
pub fn wait_listening(what: &str, port: u16, timeout: Duration) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + timeout;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A binary the test needs, looked up on PATH and in the given extra directories; a
/// missing one fails the test with the package that provides it.
pub fn require_binary(name: &str, extra_dirs: &[&str], package: &str) -> PathBuf {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    extra_dirs
        .iter()
        .map(PathBuf::from)
        .chain(path_dirs)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found: install {package} (tests/run-all.sh does: apt-get install {package})"
            )
        })
}

/// A binary from the test virtualenv named by `SPANSINK_VENV` (created by tests/run-all.sh).
pub fn venv_binary(name: &str, package: &str) -> PathBuf {
    let venv = std::env::var("SPANSINK_VENV").unwrap_or_else(|_| {
        panic!(
            "SPANSINK_VENV is not set: point it at a virtualenv with {package} installed; \
             tests/run-all.sh creates it"
        )
    });
    let binary = PathBuf::from(&venv).join("bin").join(name);
    assert!(
        binary.is_file(),
        "{} does not exist: install {package} into SPANSINK_VENV ({venv}/bin/pip install {package})",
        binary.display()
    );
    binary
}

/// A spawned server process, killed and reaped when dropped.
pub struct ServerProcess {
    child: Child,
    what: String,
}

impl ServerProcess {
    pub fn spawn(what: &str, command: &mut Command) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{what} did not start: {e}"));
        Self {
            child,
            what: what.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics if the process already exited (e.g. a port clash), naming the server.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early: {status}", self.what);
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
