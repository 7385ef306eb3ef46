//! tansu, a real Kafka-protocol broker (crates.io `tansu`, built by tests/run-all.sh and
//! named by `SPANSINK_TANSU`), on a free loopback port with its log in a temp dir; and
//! an independent client for it (`kafka_client.py`, PyPI confluent-kafka). Not a mock.
//!
//! Storage is in memory, or on S3 (a moto server) for tests that restart the broker:
//! tansu's memory engine forgets idempotent-producer state across a restart.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;

use super::moto::Moto;
use super::{ServerProcess, free_port, wait_listening};

/// The independent client's script, beside this file.
const CLIENT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/servers/kafka_client.py");

pub struct Tansu {
    dir: tempfile::TempDir,
    pub port: u16,
    storage: Storage,
    process: Option<ServerProcess>,
    launches: usize,
}

enum Storage {
    Memory,
    S3 { endpoint: String, bucket: String },
}

/// One message as the independent consumer read it.
#[derive(Debug, Clone)]
pub struct ConsumedMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub value: Vec<u8>,
}

impl Tansu {
    /// A broker keeping its log in memory.
    pub fn start() -> Self {
        Self::launch_new(Storage::Memory)
    }

    /// A broker keeping its log in `bucket` (created here) on `moto`, so that it survives
    /// a restart of the broker.
    pub fn start_on_s3(moto: &Moto, bucket: &str) -> Self {
        create_bucket(moto.port, bucket);
        Self::launch_new(Storage::S3 {
            endpoint: moto.endpoint.clone(),
            bucket: bucket.to_string(),
        })
    }

    fn launch_new(storage: Storage) -> Self {
        let mut tansu = Self {
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            storage,
            process: None,
            launches: 0,
        };
        tansu.launch();
        tansu
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (SIGKILL: a crash, not a clean shutdown).
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// The broker's log so far (every launch), for assertion messages.
    pub fn log(&self) -> String {
        (1..=self.launches)
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    fn log_path(&self, launch: usize) -> PathBuf {
        self.dir.path().join(format!("tansu-{launch}.log"))
    }

    fn launch(&mut self) {
        let binary = tansu_binary();
        self.launches += 1;
        let log = std::fs::File::create(self.log_path(self.launches)).expect("tansu log file");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut command = Command::new(binary);
        command
            .arg("broker")
            .args(["--cluster-id", "spansink-test"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("tansu log file"))
            .stderr(log);
        match &self.storage {
            Storage::Memory => {
                command.args(["--storage-engine", "memory://tansu/"]);
            }
            Storage::S3 { endpoint, bucket } => {
                command
                    .args(["--storage-engine", &format!("s3://{bucket}/")])
                    .env("AWS_ENDPOINT", endpoint)
                    .env("AWS_ALLOW_HTTP", "true")
                    .env("AWS_ACCESS_KEY_ID", "test")
                    .env("AWS_SECRET_ACCESS_KEY", "test")
                    .env("AWS_REGION", "us-east-1");
            }
        }
        let mut process = ServerProcess::spawn("tansu broker", &mut command);
        wait_listening("tansu broker", self.port, Duration::from_secs(30));
        process.assert_running();
        self.process = Some(process);
    }

    /// Creates `topic` with `partitions` partitions through the independent client.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        self.client(&[
            "create-topic",
            &self.bootstrap(),
            topic,
            &partitions.to_string(),
        ]);
    }

    /// Every message of `topic`, read by the independent consumer from the beginning of
    /// each partition until it has been idle for `idle` (at most 60 s).
    pub fn consume(&self, topic: &str, idle: Duration) -> Vec<ConsumedMessage> {
        let idle = format!("{:.1}", idle.as_secs_f64());
        let out = self.client(&["consume", &self.bootstrap(), topic, &idle, "60"]);
        out.lines().map(parse_consumed).collect()
    }

    fn client(&self, args: &[&str]) -> String {
        let python = std::env::var("SPANSINK_PYTHON").unwrap_or_else(|_| {
            panic!(
                "SPANSINK_PYTHON is not set: point it at the test virtualenv's python with \
                 confluent-kafka installed (tests/run-all.sh creates it)"
            )
        });
        let output = Command::new(&python)
            .arg(CLIENT_SCRIPT)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{python} did not run: {e}"));
        assert!(
            output.status.success(),
            "kafka_client.py {}: {}\n{}\ntansu log:\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        String::from_utf8(output.stdout).expect("kafka_client.py prints UTF-8")
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows what the broker said.
        if std::thread::panicking() {
            eprintln!("tansu log ({}):\n{}", self.dir.path().display(), self.log());
        }
    }
}

/// The tansu binary named by `SPANSINK_TANSU`; unset or missing fails the test.
fn tansu_binary() -> PathBuf {
    let path = std::env::var_os("SPANSINK_TANSU").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "SPANSINK_TANSU is not set: point it at a tansu 0.6.0 binary (tests/run-all.sh builds \
             one: cargo install --locked tansu@0.6.0 --features dynostore)"
        )
    });
    assert!(
        Path::new(&path).is_file(),
        "SPANSINK_TANSU={} does not exist: build it with cargo install --locked tansu@0.6.0 \
         --features dynostore (tests/run-all.sh does)",
        path.display()
    );
    path
}

fn parse_consumed(line: &str) -> ConsumedMessage {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("consumer line {line:?}: {e}"));
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 text"))
            .expect("valid base64")
    };
    ConsumedMessage {
        partition: v["partition"].as_i64().expect("partition") as i32,
        offset: v["offset"].as_i64().expect("offset"),
        key: v["key"].as_str().map(str::to_string),
        headers: v["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .map(|h| (h[0].as_str().expect("header name").to_string(), b64(&h[1])))
            .collect(),
        value: b64(&v["value"]),
    }
}

/// `PUT /bucket` on moto, which needs no request signature (blocking, std only).
fn create_bucket(moto_port: u16, bucket: &str) {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", moto_port)).expect("connect to moto");
    write!(
        stream,
        "PUT /{bucket} HTTP/1.0\r\nHost: 127.0.0.1:{moto_port}\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("send CreateBucket");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("moto answers");
    assert!(
        answer.starts_with("HTTP/1.") && answer.contains(" 200 "),
        "moto refused CreateBucket {bucket}: {answer}"
    );
}
