//! moto, a real S3-compatible server (PyPI `moto[server]`), run from the test virtualenv
//! on a free loopback port; stopped by PID when dropped.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ServerProcess, free_port, venv_binary, wait_listening};

pub struct Moto {
    _process: ServerProcess,
    pub port: u16,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts on a given port: a test that needs the server "down at start" picks the
    /// port first and starts moto on it later.
    pub fn start_on(port: u16) -> Self {
        let binary = venv_binary("moto_server", "'moto[server]'");
        let process = ServerProcess::spawn(
            "moto_server",
            Command::new(binary)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_listening("moto_server", port, Duration::from_secs(60));
        Self {
            _process: process,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}
