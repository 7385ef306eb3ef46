//! End to end, the receivers' security and transport features against the real exporter
//! binary with clients nobody on this project wrote: the official OpenTelemetry Python SDK
//! (TLS, mTLS, bearer tokens, certificate rotation under load) and the `curl` CLI (each
//! `Content-Encoding`, a decompression bomb, CORS preflights). Certificates come from the
//! openssl CLI (`spansink_tests::pki`). Not for the receivers' edge cases: those are the
//! component tests in `exporter/tests/receiver*.rs`.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use spansink_tests::pki::{Ca, SecretVolume, file_serial, served_serial};
use spansink_tests::{Exporter, PythonClient, python, read_json_lines, wait_for};

const SINKS: &str =
    "  local:\n    file: {path: ./spans/spans.jsonl}\n    batch: {flush_interval: 200ms}\n";

/// (trace id, span id) of the spans the Python client says it created.
fn created_ids(spans: &[serde_json::Value]) -> BTreeSet<(String, String)> {
    spans
        .iter()
        .map(|s| {
            (
                s["trace_id"].as_str().unwrap_or_default().to_owned(),
                s["span_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// (trace id, span id) of the spans of `service` in the file sink.
fn written_ids(exporter: &Exporter, service: &str) -> BTreeSet<(String, String)> {
    read_json_lines(&exporter.path("spans"), "spans")
        .iter()
        .filter(|s| s["service_name"] == service)
        .map(|s| {
            (
                s["trace_id"].as_str().unwrap_or_default().to_owned(),
                s["span_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until the file sink holds every span in `sent` for `service`, then checks it holds
/// exactly those.
fn assert_delivered(exporter: &Exporter, service: &str, sent: &BTreeSet<(String, String)>) {
    assert!(!sent.is_empty(), "{service}: the client created no spans");
    let written = wait_for(Duration::from_secs(15), || {
        let found = written_ids(exporter, service);
        (found.len() >= sent.len()).then_some(found)
    })
    .unwrap_or_else(|| {
        panic!(
            "{service}: {} of {} spans arrived; log:\n{}",
            written_ids(exporter, service).len(),
            sent.len(),
            exporter.log()
        )
    });
    assert_eq!(
        &written, sent,
        "{service}: the file holds exactly the spans sent"
    );
}

/// Runs a client that must succeed and returns what it created.
fn must_send(client: PythonClient, what: &str) -> BTreeSet<(String, String)> {
    created_ids(
        &client
            .run()
            .unwrap_or_else(|e| panic!("{what}: the client failed: {e}")),
    )
}

/// Runs a client that must fail (exit non-zero).
fn must_fail(client: PythonClient, what: &str) {
    if let Ok(spans) = client.run() {
        panic!(
            "{what}: the client succeeded, {} spans accepted",
            spans.len()
        );
    }
}

fn metric_or_zero(exporter: &Exporter, sample: &str) -> f64 {
    exporter.metric(sample).unwrap_or(0.0)
}

/// A fresh random value (test tokens), without a dependency on `rand`.
fn random_hex() -> String {
    let a = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let b = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{a:016x}{b:016x}")
}

/// The path of a CLI the tests need; a missing one fails the test naming its package.
fn tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "the `{name}` CLI is needed (Debian package {package}; tests/run-all.sh installs it)"
        )
    })
}

fn yaml_path(p: &Path) -> String {
    p.to_str().expect("test paths are UTF-8").to_owned()
}

/// A CA and a server certificate for 127.0.0.1, in a Secret-shaped volume.
struct Pki {
    _dir: tempfile::TempDir,
    ca: Ca,
    volume: SecretVolume,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ca = Ca::new(dir.path(), "spansink-e2e-ca");
        let server = ca.server("server");
        let volume = SecretVolume::new(&dir.path().join("tls"), &server, &ca.cert);
        Pki {
            _dir: dir,
            ca,
            volume,
        }
    }

    /// `receivers.tls` (both listeners) serving the volume's certificate; `client_ca`
    /// adds mTLS with `client_auth: required`.
    fn receivers_tls(&self, client_ca: bool) -> String {
        let mut text = format!(
            "  tls:\n    cert_file: '{}'\n    key_file: '{}'\n",
            yaml_path(&self.volume.cert()),
            yaml_path(&self.volume.key())
        );
        if client_ca {
            text += &format!(
                "    client_ca_file: '{}'\n    client_auth: required\n",
                yaml_path(&self.volume.ca())
            );
        }
        text
    }

    fn ca_file(&self) -> String {
        yaml_path(&self.ca.cert)
    }
}

fn grpc_tls_endpoint(exporter: &Exporter) -> String {
    format!("https://127.0.0.1:{}", exporter.grpc_port)
}

fn http_tls_url(exporter: &Exporter) -> String {
    format!("https://127.0.0.1:{}/v1/traces", exporter.http_port)
}

/// The SDK also compresses (gzip over gRPC, deflate over HTTP), inside TLS.
#[test]
fn python_sdk_over_tls_delivers_every_span_on_grpc_and_http() {
    let pki = Pki::new();
    let exporter =
        Exporter::start_with(|e| e.config_text_with_receivers(&pki.receivers_tls(false), SINKS));
    let grpc = PythonClient::new("grpc", &grpc_tls_endpoint(&exporter))
        .arg("--ca-file", &pki.ca_file())
        .arg("--count", "20")
        .arg("--compression", "gzip")
        .arg("--service", "tls-grpc")
        .spawn();
    let http = PythonClient::new("http", &http_tls_url(&exporter))
        .arg("--ca-file", &pki.ca_file())
        .arg("--count", "20")
        .arg("--compression", "deflate")
        .arg("--service", "tls-http")
        .spawn();
    let grpc = created_ids(&grpc.wait().expect("gRPC over TLS"));
    let http = created_ids(&http.wait().expect("HTTP over TLS"));
    assert_eq!(grpc.len(), 40, "a parent and a child per iteration");
    assert_delivered(&exporter, "tls-grpc", &grpc);
    assert_delivered(&exporter, "tls-http", &http);

    // A plaintext client on the TLS port is refused, not served.
    must_fail(
        PythonClient::new("http", &exporter.http_traces_url())
            .arg("--count", "1")
            .arg("--service", "plaintext")
            .arg("--timeout", "3"),
        "plaintext HTTP on a TLS port",
    );
    assert!(written_ids(&exporter, "plaintext").is_empty());
}

#[test]
fn mtls_accepts_a_client_certificate_from_the_ca_and_refuses_none() {
    let mut pki = Pki::new();
    let client = pki.ca.client("sdk-client");
    let exporter =
        Exporter::start_with(|e| e.config_text_with_receivers(&pki.receivers_tls(true), SINKS));
    let with_cert = |protocol: &str, endpoint: &str, service: &str| {
        PythonClient::new(protocol, endpoint)
            .arg("--ca-file", &pki.ca_file())
            .arg("--client-cert", &yaml_path(&client.cert))
            .arg("--client-key", &yaml_path(&client.key))
            .arg("--count", "10")
            .arg("--service", service)
            .spawn()
    };
    // gRPC retries UNAVAILABLE until its timeout: keep the refused runs short.
    let without_cert = |protocol: &str, endpoint: &str, service: &str| {
        PythonClient::new(protocol, endpoint)
            .arg("--ca-file", &pki.ca_file())
            .arg("--count", "2")
            .arg("--service", service)
            .arg("--timeout", "3")
            .spawn()
    };
    let (grpc_url, http_url) = (grpc_tls_endpoint(&exporter), http_tls_url(&exporter));
    let runs = [
        with_cert("grpc", &grpc_url, "mtls-grpc"),
        with_cert("http", &http_url, "mtls-http"),
        without_cert("grpc", &grpc_url, "nocert-grpc"),
        without_cert("http", &http_url, "nocert-http"),
    ];
    let [grpc_ok, http_ok, grpc_refused, http_refused] = runs.map(|run| run.wait());
    let grpc_ok = created_ids(&grpc_ok.expect("gRPC with a client certificate"));
    let http_ok = created_ids(&http_ok.expect("HTTP with a client certificate"));
    assert!(
        grpc_refused.is_err(),
        "gRPC without a client certificate must fail"
    );
    assert!(
        http_refused.is_err(),
        "HTTP without a client certificate must fail"
    );
    assert_delivered(&exporter, "mtls-grpc", &grpc_ok);
    assert_delivered(&exporter, "mtls-http", &http_ok);
    for service in ["nocert-grpc", "nocert-http"] {
        assert!(
            written_ids(&exporter, service).is_empty(),
            "{service}: nothing may be written without a client certificate"
        );
    }
    for protocol in ["grpc", "http"] {
        let sample = format!(
            "spansink_receiver_tls_handshake_failures_total{{protocol=\"{protocol}\",reason=\"client_certificate\"}}"
        );
        assert!(
            metric_or_zero(&exporter, &sample) >= 1.0,
            "{sample} counts the refused handshake"
        );
    }
}

#[test]
fn bearer_tokens_from_env_and_file_are_required_on_grpc_and_http() {
    let env_token = format!("env-{}", random_hex());
    let file_token = format!("file-{}", random_hex());
    let wrong_token = format!("wrong-{}", random_hex());
    let exporter = Exporter::start_with_env(&[("SPANSINK_E2E_TOKEN", env_token.as_str())], |e| {
        std::fs::create_dir_all(e.path("auth")).expect("auth dir");
        // Surrounding whitespace is ignored, as a `kubectl create secret` file often has it.
        std::fs::write(e.path("auth/token"), format!("{file_token}\n")).expect("token file");
        e.config_text_with_receivers(
            "  auth:\n    bearer_tokens_env: [SPANSINK_E2E_TOKEN]\n    bearer_token_files: [./auth/token]\n",
            SINKS,
        )
    });
    let client = |protocol: &str, token: Option<&str>, service: &str| {
        let endpoint = match protocol {
            "grpc" => exporter.grpc_endpoint(),
            _ => exporter.http_traces_url(),
        };
        let mut c = PythonClient::new(protocol, &endpoint)
            .arg("--count", "5")
            .arg("--service", service)
            .arg("--timeout", "5");
        if let Some(token) = token {
            c = c.arg("--header", &format!("authorization=Bearer {token}"));
        }
        c.spawn()
    };
    let runs = [
        client("grpc", Some(&env_token), "env-grpc"),
        client("http", Some(&env_token), "env-http"),
        client("grpc", Some(&file_token), "file-grpc"),
        client("http", Some(&file_token), "file-http"),
        client("grpc", Some(&wrong_token), "wrong-grpc"),
        client("http", Some(&wrong_token), "wrong-http"),
        client("grpc", None, "missing-grpc"),
        client("http", None, "missing-http"),
    ];
    let results = runs.map(|run| run.wait());
    let [env_grpc, env_http, file_grpc, file_http, refused @ ..] = results;
    for (service, result) in [
        ("env-grpc", env_grpc),
        ("env-http", env_http),
        ("file-grpc", file_grpc),
        ("file-http", file_http),
    ] {
        let sent =
            created_ids(&result.unwrap_or_else(|e| panic!("{service}: right token refused: {e}")));
        assert_delivered(&exporter, service, &sent);
    }
    for (service, result) in ["wrong-grpc", "wrong-http", "missing-grpc", "missing-http"]
        .into_iter()
        .zip(refused)
    {
        assert!(result.is_err(), "{service}: the client must be refused");
        assert!(
            written_ids(&exporter, service).is_empty(),
            "{service}: nothing may be written without a valid token"
        );
    }
    for protocol in ["grpc", "http"] {
        let sample = format!(
            "spansink_receiver_requests_total{{protocol=\"{protocol}\",reason=\"unauthenticated\"}}"
        );
        // At least the wrong and the missing token's requests.
        assert!(
            metric_or_zero(&exporter, &sample) >= 2.0,
            "{sample} counts the refusals"
        );
    }
    let (_, metrics) = exporter.get("/metrics").expect("/metrics answers");
    let log = exporter.log();
    for token in [&env_token, &file_token, &wrong_token] {
        assert!(
            !log.contains(token.as_str()),
            "a token is in the exporter log"
        );
        assert!(!metrics.contains(token.as_str()), "a token is in /metrics");
    }
}

/// An OTLP/HTTP protobuf body made by opentelemetry-proto's Python package, and its span
/// ids (hex).
fn otlp_body(dir: &Path, name: &str, service: &str) -> (PathBuf, BTreeSet<String>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/otlp_body.py");
    let out = dir.join(name);
    let run = Command::new(python())
        .arg(script)
        .arg("--out")
        .arg(&out)
        .args(["--spans", "5", "--service", service])
        .output()
        .expect("run python");
    assert!(
        run.status.success(),
        "otlp_body.py: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let ids: Vec<String> = serde_json::from_slice(&run.stdout).expect("span ids as JSON");
    (out, ids.into_iter().collect())
}

/// `sh -c script`, which must succeed (compressing files with the CLIs).
fn shell(script: &str) {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct CurlAnswer {
    status: u16,
    /// Header lines, lowercased.
    headers: Vec<String>,
    body: String,
}

impl CurlAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.headers
            .iter()
            .find_map(|h| h.strip_prefix(&prefix).map(str::trim))
    }
}

/// Runs the `curl` CLI with `args` and the URL; the answer's status, headers and body.
fn curl(dir: &Path, args: &[&str], url: &str) -> CurlAnswer {
    let (headers, body) = (dir.join("curl.headers"), dir.join("curl.body"));
    let out = Command::new(tool("curl", "curl"))
        .args(["-sS", "--max-time", "20", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    CurlAnswer {
        status: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("curl prints the status"),
        headers: std::fs::read_to_string(&headers)
            .unwrap_or_default()
            .lines()
            .map(str::to_ascii_lowercase)
            .collect(),
        body: std::fs::read_to_string(&body).unwrap_or_default(),
    }
}

fn post_protobuf(dir: &Path, exporter: &Exporter, file: &Path, encoding: &str) -> CurlAnswer {
    let data = format!("@{}", yaml_path(file));
    curl(
        dir,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/x-protobuf",
            "-H",
            &format!("Content-Encoding: {encoding}"),
            "--data-binary",
            &data,
        ],
        &exporter.http_traces_url(),
    )
}

fn span_ids_written(exporter: &Exporter, service: &str) -> BTreeSet<String> {
    written_ids(exporter, service)
        .into_iter()
        .map(|(_, span)| span)
        .collect()
}

#[test]
fn curl_bodies_in_each_content_encoding_are_delivered() {
    let (gzip, zstd) = (tool("gzip", "gzip"), tool("zstd", "zstd"));
    let work = tempfile::tempdir().expect("temp dir");
    let exporter = Exporter::start(SINKS);
    for encoding in ["gzip", "zstd", "deflate"] {
        let service = format!("curl-{encoding}");
        let (body, ids) = otlp_body(work.path(), &format!("{encoding}.pb"), &service);
        let compressed = work.path().join(format!("{encoding}.pb.z"));
        let (src, dst) = (yaml_path(&body), yaml_path(&compressed));
        match encoding {
            "gzip" => shell(&format!("'{}' -c '{src}' > '{dst}'", gzip.display())),
            "zstd" => shell(&format!("'{}' -q -c '{src}' > '{dst}'", zstd.display())),
            // zlib framing, as HTTP's `deflate` means.
            _ => shell(&format!(
                "'{}' -c 'import sys, zlib; sys.stdout.buffer.write(zlib.compress(open(sys.argv[1], \"rb\").read()))' '{src}' > '{dst}'",
                python().display()
            )),
        }
        let answer = post_protobuf(work.path(), &exporter, &compressed, encoding);
        assert_eq!(answer.status, 200, "{encoding}: {}", answer.body);
        let written = wait_for(Duration::from_secs(10), || {
            let found = span_ids_written(&exporter, &service);
            (found.len() >= ids.len()).then_some(found)
        });
        assert_eq!(
            written.as_ref(),
            Some(&ids),
            "{encoding}: the file holds exactly the posted spans"
        );
    }
}

#[test]
fn curl_zstd_bomb_gets_413_and_unknown_encoding_415() {
    let zstd = tool("zstd", "zstd");
    let work = tempfile::tempdir().expect("temp dir");
    let exporter = Exporter::start(SINKS);

    // 200 MiB of zeros compress to a few KiB; max_decompressed_size (16 MiB) stops it.
    let bomb = work.path().join("bomb.zst");
    shell(&format!(
        "head -c 209715200 /dev/zero | '{}' -q -c > '{}'",
        zstd.display(),
        yaml_path(&bomb)
    ));
    let answer = post_protobuf(work.path(), &exporter, &bomb, "zstd");
    assert_eq!(answer.status, 413, "zstd bomb: {}", answer.body);
    assert!(
        metric_or_zero(
            &exporter,
            "spansink_receiver_requests_total{protocol=\"http\",reason=\"decompression\"}"
        ) >= 1.0,
        "the bomb is counted as a decompression refusal"
    );

    let (body, ids) = otlp_body(work.path(), "plain.pb", "after-bomb");
    let answer = post_protobuf(work.path(), &exporter, &body, "br");
    assert_eq!(answer.status, 415, "unknown encoding: {}", answer.body);
    assert!(
        answer.body.contains("br"),
        "the 415 names the encoding: {}",
        answer.body
    );

    // Still serving: the same body uncompressed is delivered.
    let answer = post_protobuf(work.path(), &exporter, &body, "identity");
    assert_eq!(answer.status, 200, "after the bomb: {}", answer.body);
    let written = wait_for(Duration::from_secs(10), || {
        let found = span_ids_written(&exporter, "after-bomb");
        (found.len() >= ids.len()).then_some(found)
    });
    assert_eq!(written.as_ref(), Some(&ids), "spans after the bomb arrive");
    assert_eq!(exporter.get("/readyz").map(|(s, _)| s), Some(200));
}

#[test]
fn cors_preflight_answers_allowed_origins_only() {
    let work = tempfile::tempdir().expect("temp dir");
    let exporter = Exporter::start_with(|e| {
        e.config_text_with_listeners(
            "",
            ", cors: {allowed_origins: ['https://app.example.com'], allowed_headers: [X-Tenant], max_age: 10m}",
            "",
            SINKS,
        )
    });
    let preflight = |origin: &str| {
        curl(
            work.path(),
            &[
                "-X",
                "OPTIONS",
                "-H",
                &format!("Origin: {origin}"),
                "-H",
                "Access-Control-Request-Method: POST",
                "-H",
                "Access-Control-Request-Headers: content-type, x-tenant",
            ],
            &exporter.http_traces_url(),
        )
    };
    let allowed = preflight("https://app.example.com");
    assert_eq!(allowed.status, 204, "{:?}", allowed.headers);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let methods = allowed
        .header("access-control-allow-methods")
        .unwrap_or_default();
    assert!(methods.contains("post"), "allow-methods: {methods}");
    let headers = allowed
        .header("access-control-allow-headers")
        .unwrap_or_default();
    for h in ["content-type", "content-encoding", "x-tenant"] {
        assert!(headers.contains(h), "allow-headers lacks {h}: {headers}");
    }
    assert_eq!(allowed.header("access-control-max-age"), Some("600"));

    let other = preflight("https://evil.example.org");
    assert_eq!(other.status, 204, "{:?}", other.headers);
    assert_eq!(
        other.header("access-control-allow-origin"),
        None,
        "a disallowed origin gets no allow headers: {:?}",
        other.headers
    );

    // The export itself from the allowed origin carries the allow-origin header.
    let (body, ids) = otlp_body(work.path(), "cors.pb", "cors");
    let data = format!("@{}", yaml_path(&body));
    let answer = curl(
        work.path(),
        &[
            "-X",
            "POST",
            "-H",
            "Origin: https://app.example.com",
            "-H",
            "Content-Type: application/x-protobuf",
            "--data-binary",
            &data,
        ],
        &exporter.http_traces_url(),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let written = wait_for(Duration::from_secs(10), || {
        let found = span_ids_written(&exporter, "cors");
        (found.len() >= ids.len()).then_some(found)
    });
    assert_eq!(written.as_ref(), Some(&ids));
}

#[test]
fn certificate_rotation_while_a_client_keeps_sending_loses_nothing() {
    let mut pki = Pki::new();
    let exporter =
        Exporter::start_with(|e| e.config_text_with_receivers(&pki.receivers_tls(false), SINKS));
    let first = file_serial(&pki.volume.cert());
    assert_eq!(served_serial(exporter.grpc_port).as_deref(), Some(&*first));

    // One exporter in the SDK, so one gRPC connection for the whole run.
    let sender = PythonClient::new("grpc", &grpc_tls_endpoint(&exporter))
        .arg("--ca-file", &pki.ca_file())
        .arg("--seconds", "8")
        .arg("--service", "rotation")
        .spawn();
    std::thread::sleep(Duration::from_secs(3));
    let renewed = pki.ca.server("server-renewed");
    pki.volume.update(&renewed, &pki.ca.cert);
    let second = file_serial(&renewed.cert);
    assert_ne!(first, second);
    // The harness polls at --watch-interval 200ms.
    let served = wait_for(Duration::from_secs(5), || {
        served_serial(exporter.grpc_port).filter(|s| *s == second)
    });
    assert_eq!(
        served.as_deref(),
        Some(&*second),
        "new connections get the renewed certificate; log:\n{}",
        exporter.log()
    );
    assert_eq!(
        served_serial(exporter.http_port).as_deref(),
        Some(&*second),
        "the HTTP listener too"
    );
    let sent = created_ids(
        &sender
            .wait()
            .expect("the client sees no error across the rotation"),
    );
    assert!(sent.len() > 40, "the client kept sending: {}", sent.len());
    assert_delivered(&exporter, "rotation", &sent);
    assert!(
        metric_or_zero(
            &exporter,
            "spansink_receiver_tls_reloads_total{protocol=\"grpc\",result=\"success\"}"
        ) >= 1.0
    );
}

#[test]
fn corrupt_certificate_on_rotation_keeps_the_old_one_served() {
    let mut pki = Pki::new();
    let exporter =
        Exporter::start_with(|e| e.config_text_with_receivers(&pki.receivers_tls(false), SINKS));
    let serial = file_serial(&pki.volume.cert());
    pki.volume.corrupt_certificate(
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    for protocol in ["grpc", "http"] {
        let sample = format!(
            "spansink_receiver_tls_reloads_total{{protocol=\"{protocol}\",result=\"failure\"}}"
        );
        let counted = wait_for(Duration::from_secs(5), || {
            exporter.metric(&sample).filter(|v| *v >= 1.0)
        });
        assert!(
            counted.is_some(),
            "{sample} counts the bad update; log:\n{}",
            exporter.log()
        );
    }
    for port in [exporter.grpc_port, exporter.http_port] {
        assert_eq!(
            served_serial(port).as_deref(),
            Some(&*serial),
            "port {port} still serves the previous certificate"
        );
    }
    // And still takes spans over it.
    let sent = must_send(
        PythonClient::new("grpc", &grpc_tls_endpoint(&exporter))
            .arg("--ca-file", &pki.ca_file())
            .arg("--count", "5")
            .arg("--service", "after-corrupt"),
        "gRPC after a corrupt update",
    );
    assert_delivered(&exporter, "after-corrupt", &sent);
}
