//! A real RabbitMQ broker (Debian's rabbitmq-server) on free loopback ports, in a temp
//! directory, stopped by PID (the Erlang VM and its epmd) on drop. Not a mock.
//!
//! Every broker gets its own node name, epmd port and distribution port, so several can
//! run at once (tests in parallel, other helpers' brokers) without sharing an epmd.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::{free_port, require_binary, wait_listening};

const SBIN: &str = "/usr/lib/rabbitmq/bin";

/// A running broker. `guest`/`guest` works (loopback only), vhost `/`.
pub struct RabbitMq {
    pub port: u16,
    /// The AMQPS port, for a broker started with [`RabbitMq::start_with_tls`].
    pub tls_port: Option<u16>,
    epmd_port: u16,
    nodename: String,
    dir: tempfile::TempDir,
    beam_pid: Option<u32>,
}

impl RabbitMq {
    /// Starts a broker on a free port; ready when this returns (~6 s).
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a broker on `port` (e.g. the port of a test that waits for it to come up).
    pub fn start_on(port: u16) -> Self {
        Self::launch(port, false)
    }

    /// Starts a broker that also listens for AMQPS, with a server certificate for
    /// 127.0.0.1 signed by a fresh CA (see [`RabbitMq::ca_file`]).
    pub fn start_with_tls() -> Self {
        Self::launch(free_port(), true)
    }

    /// The PEM file of the CA that signed the AMQPS certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.path("ca.pem")
    }

    fn launch(port: u16, tls: bool) -> Self {
        let server = require_binary("rabbitmq-server", &[SBIN], "rabbitmq-server");
        let dir = tempfile::Builder::new()
            .prefix("spansink-rabbitmq-")
            .tempdir()
            .expect("temp dir");
        let broker = Self {
            port,
            tls_port: tls.then(free_port),
            epmd_port: free_port(),
            nodename: format!("rabbit-{port}@localhost"),
            dir,
            beam_pid: None,
        };
        if let Some(tls_port) = broker.tls_port {
            broker.write_tls_config(tls_port);
        }
        broker.hand_dir_to_rabbitmq_user();
        let dist_port = free_port();
        let status = broker
            .command(&server)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", broker.path("mnesia"))
            .env("RABBITMQ_LOG_BASE", broker.path("log"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                broker.path("enabled_plugins"),
            )
            // `<dir>/rabbitmq.conf` when TLS is on; otherwise no file, and the defaults
            // (guest from loopback) are what the tests use.
            .env("RABBITMQ_CONFIG_FILE", broker.path("rabbitmq"))
            .arg("-detached")
            .status()
            .unwrap_or_else(|e| panic!("rabbitmq-server did not start: {e}"));
        assert!(
            status.success(),
            "rabbitmq-server -detached failed: {status}"
        );
        let mut broker = broker;
        let pid_file = broker.path("pid");
        let waited = broker.ctl(&["wait", "--timeout", "60", &pid_file.display().to_string()]);
        broker.beam_pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok());
        assert!(
            waited.status.success(),
            "RabbitMQ on port {port} did not come up: {}{}\nlogs in {}",
            String::from_utf8_lossy(&waited.stdout),
            String::from_utf8_lossy(&waited.stderr),
            broker.path("log").display()
        );
        wait_listening("RabbitMQ", port, Duration::from_secs(30));
        if let Some(tls_port) = broker.tls_port {
            wait_listening("RabbitMQ AMQPS", tls_port, Duration::from_secs(30));
        }
        broker
    }

    /// A CA and a server certificate for 127.0.0.1 (openssl CLI, EC keys: fast), and a
    /// rabbitmq.conf with an AMQPS listener using them.
    fn write_tls_config(&self, tls_port: u16) {
        let openssl = require_binary("openssl", &[], "openssl");
        let dir = self.dir.path();
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
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=spansink test CA",
        ];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        run(&ca);
        let mut csr = vec!["req", "-subj", "/CN=127.0.0.1"];
        csr.extend(ec);
        csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
        run(&csr);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        for file in ["server.key", "ca.key"] {
            // Readable by the broker's user (the directory is theirs, the files ours).
            std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644))
                .expect("chmod key");
        }
        let d = dir.display();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.ssl.default = 127.0.0.1:{tls_port}\n\
                 ssl_options.cacertfile = {d}/ca.pem\n\
                 ssl_options.certfile = {d}/server.pem\n\
                 ssl_options.keyfile = {d}/server.key\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n"
            ),
        )
        .expect("write rabbitmq.conf");
    }

    /// `rabbitmqctl` against this broker, e.g. `["add_user", "u", "p"]`; panics on failure.
    pub fn rabbitmqctl(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops the broker abruptly (the VM and its epmd are killed), as a crash or a lost
    /// network would look to a client.
    pub fn kill(&mut self) {
        if let Some(pid) = self.beam_pid.take() {
            kill(pid);
        }
        for pid in self.epmd_pids() {
            kill(pid);
        }
    }

    /// Kills this broker and removes its directory when process `pid` (the test binary)
    /// ends, however it ends: for a broker kept in a static, which is never dropped.
    pub fn kill_when_process_exits(&self, pid: u32) {
        let mut victims: Vec<String> = self.epmd_pids().iter().map(u32::to_string).collect();
        victims.extend(self.beam_pid.map(|p| p.to_string()));
        // The temp dir goes too: a static's TempDir is never dropped either.
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; kill -9 {} 2>/dev/null; sleep 1; rm -rf '{}'",
            victims.join(" "),
            self.dir.path().display()
        );
        // Detached from our stdio, so the test harness does not wait on its pipes.
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }

    fn ctl(&self, args: &[&str]) -> Output {
        let ctl = require_binary("rabbitmqctl", &[SBIN], "rabbitmq-server");
        self.command(&ctl)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("rabbitmqctl did not run: {e}"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The broker's environment, run as user `rabbitmq` when we are root (the Erlang
    /// cookie lives in HOME, so rabbitmqctl must share it).
    fn command(&self, program: &Path) -> Command {
        let mut command = if is_root() {
            let mut c = Command::new(require_binary("runuser", &["/usr/sbin"], "util-linux"));
            c.args(["-u", "rabbitmq", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("LANG", "C.UTF-8")
            .env("HOME", self.dir.path())
            .env("RABBITMQ_NODENAME", &self.nodename)
            .env("RABBITMQ_PID_FILE", self.path("pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .current_dir(self.dir.path());
        command
    }

    fn hand_dir_to_rabbitmq_user(&self) {
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        if !is_root() {
            return;
        }
        let id = |flag: &str| -> u32 {
            let out = Command::new("id")
                .args([flag, "rabbitmq"])
                .output()
                .expect("id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("user rabbitmq exists (apt-get install rabbitmq-server creates it)")
        };
        std::os::unix::fs::chown(self.dir.path(), Some(id("-u")), Some(id("-g")))
            .expect("chown temp dir to rabbitmq");
    }

    /// The epmd started for this broker: the one whose environment names our epmd port.
    fn epmd_pids(&self) -> Vec<u32> {
        let marker = format!("ERL_EPMD_PORT={}", self.epmd_port);
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                comm.trim() == "epmd" && env.split(|b| *b == 0).any(|var| var == marker.as_bytes())
            })
            .collect()
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.kill();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

fn kill(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}
