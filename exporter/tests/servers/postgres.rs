//! A real PostgreSQL 15 server for the sink tests: a fresh cluster in a temp dir on a free
//! loopback port, run as the `postgres` user, stopped (and killed if need be) on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::{free_port, require_binary, wait_listening};

const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// One PostgreSQL cluster. `init` creates it without starting it (for "server down at
/// start" tests); `start` runs it.
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    running: bool,
    /// Server settings beside the port and socket (`-c ssl=on ...`).
    extra_options: String,
}

impl Postgres {
    /// A new cluster, running.
    pub fn start() -> Self {
        let mut pg = Self::init();
        pg.start_server();
        pg
    }

    /// A new cluster on a reserved port, not running yet.
    pub fn init() -> Self {
        let initdb = require_binary("initdb", &[BIN_DIR], "postgresql");
        let dir = tempfile::Builder::new()
            .prefix("spansink-pg-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        // initdb and the server refuse to run as root; the postgres user owns the dir.
        run(Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.path()));
        let data = dir.path().join("data");
        run(as_postgres(&initdb)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            // Tests need no crash safety of the OS page cache; this saves seconds.
            .arg("--no-sync"));
        Self {
            dir,
            port: free_port(),
            running: false,
            extra_options: String::new(),
        }
    }

    /// A new cluster serving TLS with this certificate and key (PEM files), running.
    /// `client_ca`: verify client certificates against it (for `cert` authentication).
    /// `hba`: the pg_hba.conf lines, replacing initdb's (which trust every connection).
    pub fn start_tls(cert: &Path, key: &Path, client_ca: Option<&Path>, hba: Option<&str>) -> Self {
        let mut pg = Self::init();
        let tls = pg.dir.path().join("tls");
        std::fs::create_dir(&tls).expect("tls dir");
        for (from, to) in [(cert, "server.crt"), (key, "server.key")]
            .into_iter()
            .chain(client_ca.map(|ca| (ca, "ca.crt")))
        {
            std::fs::copy(from, tls.join(to)).expect("copy a TLS file");
        }
        // The server refuses a key that others can read, or that it does not own.
        run(Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(&tls));
        run(Command::new("chmod").arg("600").arg(tls.join("server.key")));
        pg.extra_options = format!(
            " -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
            tls.display()
        );
        if client_ca.is_some() {
            pg.extra_options
                .push_str(&format!(" -c ssl_ca_file={}/ca.crt", tls.display()));
        }
        if let Some(hba) = hba {
            let file = pg.data().join("pg_hba.conf");
            std::fs::write(&file, hba).expect("write pg_hba.conf");
            run(Command::new("chown").arg("postgres:postgres").arg(&file));
        }
        pg.start_server();
        pg
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again, after `stop`) on its port and waits until it accepts
    /// connections.
    pub fn start_server(&mut self) {
        let pg_ctl = require_binary("pg_ctl", &[BIN_DIR], "postgresql");
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=50{}",
            self.port,
            self.dir.path().display(),
            self.extra_options
        );
        let output = as_postgres(&pg_ctl)
            .arg("-D")
            .arg(self.data())
            .arg("-o")
            .arg(options)
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("pg_ctl runs");
        assert!(
            output.status.success(),
            "pg_ctl start failed: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
        self.running = true;
        wait_listening("PostgreSQL", self.port, Duration::from_secs(30));
    }

    /// Stops the server at once, as a crash would (`-m immediate`): open connections
    /// break, committed data stays.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let pg_ctl = require_binary("pg_ctl", &[BIN_DIR], "postgresql");
        let stopped = as_postgres(&pg_ctl)
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !stopped {
            self.kill();
        }
        self.running = false;
    }

    /// Last resort: SIGKILL the postmaster named in its pid file (its children exit when
    /// it is gone).
    fn kill(&self) {
        let pid_file = self.data().join("postmaster.pid");
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.lines().next().map(str::trim).map(str::to_string))
            .filter(|pid| !pid.is_empty())
        {
            let _ = Command::new("kill").args(["-KILL", &pid]).output();
        }
    }

    /// Connection string for `tokio_postgres::connect`.
    pub fn url(&self, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname=postgres",
            self.port
        )
    }

    /// A client connected as `user`, its connection driven in the background.
    pub async fn client(&self, user: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(user), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to PostgreSQL on {}: {e}", self.port));
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn as_postgres(binary: &Path) -> Command {
    let mut command = Command::new("runuser");
    command
        .args(["-u", "postgres", "--"])
        .arg(binary)
        // The postgres user cannot read the test's working directory.
        .current_dir("/tmp");
    command
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} did not run: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
