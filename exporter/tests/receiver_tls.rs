//! TLS and mutual TLS on both OTLP receivers of a running exporter, over real loopback
//! sockets with certificates made by the test: tonic and reqwest clients export, plaintext
//! and untrusted clients are refused, and certificate files swapped on disk (the way a
//! Secret volume is updated) or a config reload change what new connections get while
//! open ones keep working.

mod certs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use certs::{Ca, Issued, SecretVolume};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use spansink_config::ExporterConfig;
use spansink_exporter::app::{self, ConfigSource, Running};
use spansink_exporter::otlp::fixtures;
use spansink_exporter::telemetry::metrics::{
    Protocol, ProtocolLabels, ProtocolResultLabels, RefusedLabels,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// How often the test exporter polls its config and TLS files.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);

// --- the exporter under test ----------------------------------------------------------

struct Exporter {
    running: Running,
    config_path: PathBuf,
    grpc: SocketAddr,
    http: SocketAddr,
}

/// An exporter config with `receivers` (YAML lines indented by two spaces, e.g. a `tls`
/// block), the listeners on `grpc` and `http` (an endpoint, possibly followed by lines of
/// the listener's own block) and one blackhole sink.
fn config(receivers: &str, grpc: &str, http: &str) -> String {
    format!(
        "receivers:\n{receivers}  grpc:\n    endpoint: {grpc}\n  http:\n    endpoint: {http}\n\
         telemetry:\n  endpoint: 127.0.0.1:0\nsinks:\n  main:\n    blackhole: {{}}\n"
    )
}

/// A `tls:` block at `indent` serving `volume`'s files, with `extra` lines
/// (`client_auth`, `min_version`).
fn tls_block(indent: &str, volume: &SecretVolume, client_ca: bool, extra: &[&str]) -> String {
    let mut block = format!(
        "{indent}tls:\n{indent}  cert_file: {}\n{indent}  key_file: {}\n",
        volume.cert_file(),
        volume.key_file()
    );
    if client_ca {
        block += &format!("{indent}  client_ca_file: {}\n", volume.ca_file());
    }
    for line in extra {
        block += &format!("{indent}  {line}\n");
    }
    block
}

async fn start_text(dir: &Path, text: &str) -> Result<Exporter, app::AppError> {
    spansink_exporter::tls::install_crypto_provider();
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, text).unwrap();
    let config = ExporterConfig::from_yaml(text).unwrap();
    let running = app::start(
        config,
        ConfigSource::File(config_path.clone()),
        WATCH_INTERVAL,
    )
    .await?;
    Ok(Exporter {
        grpc: running.grpc_addr.unwrap(),
        http: running.http_addr.unwrap(),
        running,
        config_path,
    })
}

/// Starts an exporter whose receivers get `receivers` (see [`config`]).
async fn start(dir: &Path, receivers: &str) -> Exporter {
    start_text(dir, &config(receivers, "127.0.0.1:0", "127.0.0.1:0"))
        .await
        .unwrap()
}

impl Exporter {
    /// Rewrites the config file with `receivers`, keeping the ports.
    fn rewrite(&self, receivers: &str) {
        let text = config(receivers, &self.grpc.to_string(), &self.http.to_string());
        std::fs::write(&self.config_path, text).unwrap();
    }

    fn accepted_spans(&self, protocol: Protocol) -> u64 {
        self.running
            .metrics
            .receiver_accepted_spans
            .get_or_create(&ProtocolLabels { protocol })
            .get()
    }

    fn handshake_failures(&self, protocol: Protocol, reason: &'static str) -> u64 {
        self.running
            .metrics
            .receiver_tls_handshake_failures
            .get_or_create(&RefusedLabels { protocol, reason })
            .get()
    }

    fn tls_reloads(&self, protocol: Protocol, result: &'static str) -> u64 {
        self.running
            .metrics
            .receiver_tls_reloads
            .get_or_create(&ProtocolResultLabels { protocol, result })
            .get()
    }

    fn config_reloads(&self, result: &'static str) -> u64 {
        self.running
            .metrics
            .config_reloads
            .get_or_create(&spansink_exporter::telemetry::metrics::ResultLabels { result })
            .get()
    }

    fn certificate_expiry(&self, protocol: Protocol) -> i64 {
        self.running
            .metrics
            .receiver_tls_certificate_expiry
            .get_or_create(&ProtocolLabels { protocol })
            .get()
    }

    fn addr(&self, protocol: Protocol) -> SocketAddr {
        match protocol {
            Protocol::grpc => self.grpc,
            Protocol::http => self.http,
        }
    }
}

/// Waits up to 10 s for `condition`, naming `what` if it never holds.
async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("within 10 s: {what}");
}

// --- clients ----------------------------------------------------------------------------

/// A gRPC channel over TLS trusting `ca`, presenting `identity` if given.
async fn grpc_channel(
    addr: SocketAddr,
    ca: &Ca,
    identity: Option<&Issued>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

/// One export over `channel`.
async fn grpc_export(channel: &Channel) -> Result<(), tonic::Status> {
    TraceServiceClient::new(channel.clone())
        .export(fixtures::request(2, 1))
        .await
        .map(|_| ())
}

/// Connects and exports once; `Err` with the reason if either fails.
async fn grpc_export_over_tls(
    addr: SocketAddr,
    ca: &Ca,
    identity: Option<&Issued>,
) -> Result<(), String> {
    let channel = grpc_channel(addr, ca, identity)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    grpc_export(&channel)
        .await
        .map_err(|e| format!("export: {e}"))
}

/// An HTTP client (one pooled connection per host) trusting only `ca`.
fn http_client(ca: &Ca, identity: Option<&Issued>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10));
    if let Some(id) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(id.bundle().as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// One OTLP/HTTP protobuf export; the status code, or the error.
async fn http_export(client: &reqwest::Client, url: &str) -> Result<u16, String> {
    client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(fixtures::request(2, 1).encode_to_vec())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

fn https_url(addr: SocketAddr) -> String {
    format!("https://{addr}/v1/traces")
}

/// A bare rustls client: `versions` only, trusting `ca`, with `identity` if given.
fn rustls_connector(
    ca: &Ca,
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<&Issued>,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(id.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(id.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Completes a TLS handshake with `addr` trusting `ca` only; the certificate served.
async fn served_certificate(
    addr: SocketAddr,
    ca: &Ca,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<CertificateDer<'static>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = rustls_connector(ca, versions, None)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let (_, session) = stream.get_ref();
    Ok(session.peer_certificates().unwrap()[0].clone().into_owned())
}

fn der(issued: &Issued) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(issued.cert.as_bytes()).unwrap()
}

const ALL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

// --- tests ------------------------------------------------------------------------------

#[tokio::test]
async fn both_receivers_serve_tls_and_refuse_plaintext_clients() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let server = ca.server("exporter", 2040);
    let volume = SecretVolume::new(dir.path(), &server, None);
    let exporter = start(dir.path(), &tls_block("  ", &volume, false, &[])).await;

    grpc_export_over_tls(exporter.grpc, &ca, None)
        .await
        .unwrap();
    let status = http_export(&http_client(&ca, None), &https_url(exporter.http)).await;
    assert_eq!(status, Ok(200));
    assert_eq!(exporter.accepted_spans(Protocol::grpc), 2);
    assert_eq!(exporter.accepted_spans(Protocol::http), 2);
    for protocol in [Protocol::grpc, Protocol::http] {
        assert_eq!(exporter.certificate_expiry(protocol), server.not_after);
    }

    // Plaintext clients on the TLS ports get no answer.
    let plain = Channel::from_shared(format!("http://{}", exporter.grpc))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        grpc_export(&channel)
            .await
            .expect_err("a plaintext gRPC export must fail");
    }
    let plain_http = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", exporter.http))
        .header("content-type", "application/x-protobuf")
        .body(fixtures::request(2, 1).encode_to_vec())
        .send()
        .await;
    assert!(
        plain_http.is_err(),
        "plaintext HTTP answered: {plain_http:?}"
    );
    for protocol in [Protocol::grpc, Protocol::http] {
        eventually(
            "the plaintext handshake is counted as malformed",
            async || exporter.handshake_failures(protocol, "malformed") >= 1,
        )
        .await;
        assert_eq!(exporter.accepted_spans(protocol), 2, "nothing got through");
    }
    exporter.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_listener_tls_block_replaces_the_shared_one() {
    let dir = tempfile::tempdir().unwrap();
    let (shared_ca, own_ca) = (Ca::new("shared CA"), Ca::new("grpc CA"));
    let (shared, own) = (
        shared_ca.server("shared", 2040),
        own_ca.server("grpc", 2041),
    );
    std::fs::create_dir(dir.path().join("shared")).unwrap();
    std::fs::create_dir(dir.path().join("grpc")).unwrap();
    let shared_volume = SecretVolume::new(&dir.path().join("shared"), &shared, None);
    let own_volume = SecretVolume::new(&dir.path().join("grpc"), &own, None);
    let text = config(
        &tls_block("  ", &shared_volume, false, &[]),
        &format!(
            "127.0.0.1:0\n{}",
            tls_block("    ", &own_volume, false, &["min_version: \"1.3\""])
        ),
        "127.0.0.1:0",
    );
    let exporter = start_text(dir.path(), &text).await.unwrap();

    let grpc = served_certificate(exporter.grpc, &own_ca, ALL_VERSIONS).await;
    assert_eq!(grpc.unwrap(), der(&own));
    let http = served_certificate(exporter.http, &shared_ca, ALL_VERSIONS).await;
    assert_eq!(http.unwrap(), der(&shared));
    grpc_export_over_tls(exporter.grpc, &own_ca, None)
        .await
        .unwrap();
    assert_eq!(exporter.certificate_expiry(Protocol::grpc), own.not_after);
    assert_eq!(
        exporter.certificate_expiry(Protocol::http),
        shared.not_after
    );

    // min_version "1.3" on gRPC only: a TLS 1.2-only client is refused there and served
    // by the HTTP listener, which inherits nothing from the gRPC block.
    let tls12 = &[&rustls::version::TLS12];
    served_certificate(exporter.grpc, &own_ca, tls12)
        .await
        .expect_err("a TLS 1.2 client must be refused with min_version 1.3");
    let http12 = served_certificate(exporter.http, &shared_ca, tls12).await;
    assert_eq!(
        http12.unwrap(),
        der(&shared),
        "min_version 1.2 serves TLS 1.2"
    );
    eventually(
        "the TLS 1.2 handshake is counted as incompatible",
        async || exporter.handshake_failures(Protocol::grpc, "incompatible") == 1,
    )
    .await;
    exporter.running.shutdown().await.unwrap();
}

/// gRPC and HTTP exports presenting `identity`, each `Ok` or the reason it failed.
async fn export_both(
    exporter: &Exporter,
    ca: &Ca,
    identity: Option<&Issued>,
) -> [Result<(), String>; 2] {
    let grpc = grpc_export_over_tls(exporter.grpc, ca, identity).await;
    let http = http_export(&http_client(ca, identity), &https_url(exporter.http))
        .await
        .and_then(|status| match status {
            200 => Ok(()),
            other => Err(format!("HTTP {other}")),
        });
    [grpc, http]
}

#[tokio::test]
async fn required_client_auth_accepts_only_certificates_signed_by_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, clients_ca, other_ca) = (Ca::new("server CA"), Ca::new("clients"), Ca::new("other"));
    let volume = SecretVolume::new(dir.path(), &ca.server("exporter", 2040), Some(&clients_ca));
    // client_auth defaults to required with client_ca_file.
    let exporter = start(dir.path(), &tls_block("  ", &volume, true, &[])).await;

    for result in export_both(&exporter, &ca, None).await {
        assert!(
            result.is_err(),
            "a client without a certificate got through"
        );
    }
    let stranger = other_ca.client("stranger");
    for result in export_both(&exporter, &ca, Some(&stranger)).await {
        assert!(result.is_err(), "a certificate of another CA got through");
    }
    for protocol in [Protocol::grpc, Protocol::http] {
        assert_eq!(exporter.accepted_spans(protocol), 0);
        eventually("refused client certificates are counted", async || {
            exporter.handshake_failures(protocol, "client_certificate") >= 2
        })
        .await;
    }
    let trusted = clients_ca.client("checkout");
    for result in export_both(&exporter, &ca, Some(&trusted)).await {
        result.unwrap();
    }
    assert_eq!(exporter.accepted_spans(Protocol::grpc), 2);
    assert_eq!(exporter.accepted_spans(Protocol::http), 2);
    exporter.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn optional_client_auth_accepts_clients_without_a_certificate_but_not_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, clients_ca, other_ca) = (Ca::new("server CA"), Ca::new("clients"), Ca::new("other"));
    let volume = SecretVolume::new(dir.path(), &ca.server("exporter", 2040), Some(&clients_ca));
    let exporter = start(
        dir.path(),
        &tls_block("  ", &volume, true, &["client_auth: optional"]),
    )
    .await;

    for result in export_both(&exporter, &ca, None).await {
        result.unwrap();
    }
    for result in export_both(&exporter, &ca, Some(&clients_ca.client("checkout"))).await {
        result.unwrap();
    }
    for result in export_both(&exporter, &ca, Some(&other_ca.client("stranger"))).await {
        assert!(result.is_err(), "a certificate of another CA got through");
    }
    assert_eq!(exporter.accepted_spans(Protocol::grpc), 4);
    assert_eq!(exporter.accepted_spans(Protocol::http), 4);
    exporter.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stalled_handshake_does_not_hold_up_other_clients() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let volume = SecretVolume::new(dir.path(), &ca.server("exporter", 2040), None);
    let exporter = start(dir.path(), &tls_block("  ", &volume, false, &[])).await;

    // Clients that connect and then send nothing, or half a ClientHello.
    let mut stalled = Vec::new();
    for protocol in [Protocol::grpc, Protocol::http] {
        for _ in 0..4 {
            stalled.push(
                tokio::net::TcpStream::connect(exporter.addr(protocol))
                    .await
                    .unwrap(),
            );
        }
        let mut half = tokio::net::TcpStream::connect(exporter.addr(protocol))
            .await
            .unwrap();
        half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .unwrap();
        stalled.push(half);
    }
    let exports = async {
        grpc_export_over_tls(exporter.grpc, &ca, None)
            .await
            .unwrap();
        let status = http_export(&http_client(&ca, None), &https_url(exporter.http)).await;
        assert_eq!(status, Ok(200));
    };
    tokio::time::timeout(Duration::from_secs(5), exports)
        .await
        .expect("exports waited behind stalled handshakes");
    // The stalled connections are still open: nothing was done to them but waiting.
    let mut buf = [0u8; 1];
    let still_open = tokio::time::timeout(Duration::from_millis(100), stalled[0].read(&mut buf));
    assert!(
        still_open.await.is_err(),
        "a stalled client was cut off early"
    );
    exporter.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn rotated_files_reach_new_connections_and_open_ones_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let (old, new) = (old_ca.server("old", 2040), new_ca.server("new", 2042));
    let mut volume = SecretVolume::new(dir.path(), &old, None);
    let exporter = start(dir.path(), &tls_block("  ", &volume, false, &[])).await;

    // Connections opened before the rotation, trusting only the old CA: if they were
    // dropped, a reconnect would fail against the new certificate.
    let channel = grpc_channel(exporter.grpc, &old_ca, None).await.unwrap();
    grpc_export(&channel).await.unwrap();
    let client = http_client(&old_ca, None);
    assert_eq!(
        http_export(&client, &https_url(exporter.http)).await,
        Ok(200)
    );

    volume.update(&new, None);
    for protocol in [Protocol::grpc, Protocol::http] {
        let addr = exporter.addr(protocol);
        eventually("new connections get the new certificate", async || {
            served_certificate(addr, &new_ca, ALL_VERSIONS)
                .await
                .is_ok_and(|served| served == der(&new))
        })
        .await;
        assert_eq!(exporter.tls_reloads(protocol, "success"), 1);
        assert_eq!(exporter.tls_reloads(protocol, "failure"), 0);
        assert_eq!(exporter.certificate_expiry(protocol), new.not_after);
    }

    for _ in 0..3 {
        grpc_export(&channel)
            .await
            .expect("the open gRPC connection was dropped");
        assert_eq!(
            http_export(&client, &https_url(exporter.http)).await,
            Ok(200)
        );
    }
    grpc_export_over_tls(exporter.grpc, &old_ca, None)
        .await
        .expect_err("a new connection must get the new certificate");
    grpc_export_over_tls(exporter.grpc, &new_ca, None)
        .await
        .unwrap();
    assert_eq!(exporter.accepted_spans(Protocol::grpc), 2 * 5);
    assert_eq!(exporter.accepted_spans(Protocol::http), 2 * 4);
    exporter.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bad_file_on_rotation_keeps_the_old_certificate_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (old, next) = (ca.server("old", 2040), ca.server("next", 2041));
    let mut volume = SecretVolume::new(dir.path(), &old, None);
    let exporter = start(dir.path(), &tls_block("  ", &volume, false, &[])).await;

    // A new certificate with the old key: it does not match.
    let mismatched = Issued {
        key: old.key.clone(),
        ..next.clone()
    };
    volume.update(&mismatched, None);
    for protocol in [Protocol::grpc, Protocol::http] {
        eventually("the failed reload is counted", async || {
            exporter.tls_reloads(protocol, "failure") == 1
        })
        .await;
        let served = served_certificate(exporter.addr(protocol), &ca, ALL_VERSIONS).await;
        assert_eq!(served.unwrap(), der(&old), "the old certificate is served");
        assert_eq!(exporter.certificate_expiry(protocol), old.not_after);
    }
    // Polls that see the same bad files again do not count again.
    tokio::time::sleep(WATCH_INTERVAL * 4).await;
    assert_eq!(exporter.tls_reloads(Protocol::grpc, "failure"), 1);

    let garbage = Issued {
        cert: "not a certificate".into(),
        ..next.clone()
    };
    volume.update(&garbage, None);
    eventually("the second failed reload is counted", async || {
        exporter.tls_reloads(Protocol::http, "failure") == 2
    })
    .await;
    grpc_export_over_tls(exporter.grpc, &ca, None)
        .await
        .unwrap();

    volume.update(&next, None);
    for protocol in [Protocol::grpc, Protocol::http] {
        let addr = exporter.addr(protocol);
        eventually("the fixed files are served", async || {
            served_certificate(addr, &ca, ALL_VERSIONS)
                .await
                .is_ok_and(|served| served == der(&next))
        })
        .await;
        assert_eq!(exporter.tls_reloads(protocol, "success"), 1);
    }
    exporter.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_config_reload_turns_tls_on_and_changes_it_on_the_same_ports() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, clients_ca) = (Ca::new("server CA"), Ca::new("clients"));
    let volume = SecretVolume::new(dir.path(), &ca.server("exporter", 2040), Some(&clients_ca));
    let exporter = start(dir.path(), "").await;
    let plain = reqwest::Client::new();
    let plain_url = format!("http://{}/v1/traces", exporter.http);
    assert_eq!(http_export(&plain, &plain_url).await, Ok(200));

    exporter.rewrite(&tls_block("  ", &volume, false, &[]));
    eventually("the reload applies TLS", async || {
        export_both(&exporter, &ca, None)
            .await
            .iter()
            .all(Result::is_ok)
    })
    .await;
    assert_eq!(exporter.config_reloads("success"), 1);
    assert!(
        http_export(&reqwest::Client::new(), &plain_url)
            .await
            .is_err(),
        "plaintext is refused once TLS is on"
    );

    exporter.rewrite(&tls_block("  ", &volume, true, &["client_auth: required"]));
    eventually("the reload requires client certificates", async || {
        export_both(&exporter, &ca, None)
            .await
            .iter()
            .all(Result::is_err)
    })
    .await;
    for result in export_both(&exporter, &ca, Some(&clients_ca.client("checkout"))).await {
        result.unwrap();
    }
    assert_eq!(exporter.config_reloads("success"), 2);
    exporter.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_start_with_unreadable_tls_files_fails_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let volume = SecretVolume::new(dir.path(), &ca.server("exporter", 2040), None);
    let missing = dir.path().join("missing.key").display().to_string();
    let block = tls_block("  ", &volume, false, &[]).replace(&volume.key_file(), &missing);
    let text = config(&block, "127.0.0.1:0", "127.0.0.1:0");
    let error = start_text(dir.path(), &text)
        .await
        .err()
        .expect("the exporter must not start without its key")
        .to_string();
    assert!(
        error.contains("receivers.tls.key_file") && error.contains(&missing),
        "{error}"
    );
    let config = ExporterConfig::from_yaml(&text).unwrap();
    let problems = spansink_exporter::receiver::tls::check_files(&config.receivers);
    assert_eq!(problems.len(), 1, "one shared block, one problem");
    assert!(problems[0].to_string().contains("receivers.tls.key_file"));
}
