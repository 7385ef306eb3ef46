//! PostgreSQL sink TLS against a real PostgreSQL 15 server with `ssl=on` and certificates
//! made here with openssl: spans written over TLS and read back (`require`, `verify-full`,
//! a client certificate for `cert` authentication), and the refusals: a wrong CA, a host
//! name not in the certificate, a server without TLS.

mod servers;

use std::path::PathBuf;
use std::process::Command;

use servers::postgres::Postgres;
use servers::require_binary;
use spansink_config::{PostgresSinkConfig, PostgresTlsMode};
use spansink_exporter::otlp::fixtures::{self, batch_of};
use spansink_exporter::sinks::Sink;
use spansink_exporter::sinks::postgres::PostgresSink;
use spansink_exporter::telemetry::metrics::Metrics;

/// Test CAs and certificates, in a temp dir: `ca` signs the server's certificate (for
/// DNS name `localhost` only) and the client's (CN `certuser`); `other-ca` signs nothing
/// the server has.
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn make() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let openssl = require_binary("openssl", &[], "openssl");
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        let split =
            |line: String| -> Vec<String> { line.split_whitespace().map(str::to_string).collect() };
        for ca in ["ca", "other-ca"] {
            let args = split(format!(
                "req -x509 {ec} -keyout {ca}.key -out {ca}.crt -days 2 -subj /CN=spansink-{ca}"
            ));
            run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        }
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=DNS:localhost\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("client.ext"),
            "extendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        for (name, subject) in [("server", "/CN=localhost"), ("client", "/CN=certuser")] {
            let args = split(format!(
                "req {ec} -keyout {name}.key -out {name}.csr -subj {subject}"
            ));
            run(&args.iter().map(String::as_str).collect::<Vec<_>>());
            let args = split(format!(
                "x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out {name}.crt -days 2 -extfile {name}.ext"
            ));
            run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        }
        Self { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn string(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }
}

fn tls_server(certs: &Certificates) -> Postgres {
    Postgres::start_tls(
        &certs.path("server.crt"),
        &certs.path("server.key"),
        None,
        None,
    )
}

fn config(pg: &Postgres, host: &str, tls: PostgresTlsMode) -> PostgresSinkConfig {
    PostgresSinkConfig {
        tls,
        connect_timeout: spansink_config::Duration::from_secs(3),
        ..PostgresSinkConfig::new(host, pg.port(), "postgres", "postgres")
    }
}

fn sink(config: &PostgresSinkConfig) -> PostgresSink {
    PostgresSink::new("db", config, &Metrics::for_tests()).unwrap()
}

/// Rows in `spans`, and how many of the server's client backends use TLS right now.
async fn rows_and_tls_backends(pg: &Postgres) -> (i64, i64) {
    let client = pg.client("postgres").await;
    let rows = client
        .query_one("SELECT count(*) FROM spans", &[])
        .await
        .unwrap()
        .get(0);
    let tls = client
        .query_one("SELECT count(*) FROM pg_stat_ssl WHERE ssl", &[])
        .await
        .unwrap()
        .get(0);
    (rows, tls)
}

#[tokio::test]
async fn verify_full_writes_over_tls_and_checks_the_ca_and_host_name() {
    let certs = Certificates::make();
    let pg = tls_server(&certs);
    let verified = PostgresSinkConfig {
        ca_file: Some(certs.string("ca.crt")),
        ..config(&pg, "localhost", PostgresTlsMode::VerifyFull)
    };
    let good = sink(&verified);
    good.export(&batch_of(&[&fixtures::request(10, 3)]))
        .await
        .unwrap();
    // Written, and over TLS: the sink's pooled connection is encrypted (the reading
    // client is not).
    assert_eq!(rows_and_tls_backends(&pg).await, (10, 1));

    // A CA that did not sign the server's certificate: refused, saying why.
    let wrong_ca = sink(&PostgresSinkConfig {
        ca_file: Some(certs.string("other-ca.crt")),
        ..verified.clone()
    });
    let err = wrong_ca
        .export(&batch_of(&[&fixtures::request(5, 1)]))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "tls", "{err}");
    assert!(
        err.is_transient(),
        "a renewed CA file is read by the next try: {err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("error performing TLS handshake")
            && message.contains("invalid peer certificate: UnknownIssuer"),
        "{message}"
    );
    assert!(message.contains("ca_file"), "says what to check: {message}");

    // The right CA but a host the certificate does not name (it names localhost only).
    let wrong_host = sink(&PostgresSinkConfig {
        host: "127.0.0.1".into(),
        ..verified.clone()
    });
    let err = wrong_host
        .export(&batch_of(&[&fixtures::request(5, 1)]))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "tls", "{err}");
    assert!(
        err.to_string()
            .contains("certificate not valid for name \"127.0.0.1\""),
        "{err}"
    );
    // Neither wrote anything.
    assert_eq!(rows_and_tls_backends(&pg).await.0, 10);
    for s in [good, wrong_ca, wrong_host] {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn require_encrypts_without_a_ca_and_refuses_a_server_without_tls() {
    let certs = Certificates::make();
    let pg = tls_server(&certs);
    // No CA, and a host not in the certificate: require checks neither (libpq's
    // sslmode=require).
    let require = sink(&config(&pg, "127.0.0.1", PostgresTlsMode::Require));
    require
        .export(&batch_of(&[&fixtures::request(4, 2)]))
        .await
        .unwrap();
    assert_eq!(rows_and_tls_backends(&pg).await, (4, 1));
    require.shutdown().await.unwrap();

    // A server without TLS: refused, never plain text.
    let plain = Postgres::start();
    let err = sink(&config(&plain, "127.0.0.1", PostgresTlsMode::Require))
        .export(&batch_of(&[&fixtures::request(4, 2)]))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "tls", "{err}");
    assert!(
        err.to_string().contains("server does not support TLS"),
        "{err}"
    );
}

#[tokio::test]
async fn a_client_certificate_authenticates_with_pg_hba_cert() {
    let certs = Certificates::make();
    let hba = "local all all trust\n\
               hostssl all certuser 127.0.0.1/32 cert\n\
               host all certuser 127.0.0.1/32 reject\n\
               host all all 127.0.0.1/32 trust\n";
    let pg = Postgres::start_tls(
        &certs.path("server.crt"),
        &certs.path("server.key"),
        Some(&certs.path("ca.crt")),
        Some(hba),
    );
    pg.client("postgres")
        .await
        .batch_execute("CREATE ROLE certuser LOGIN SUPERUSER")
        .await
        .unwrap();
    let with_cert = PostgresSinkConfig {
        user: "certuser".into(),
        ca_file: Some(certs.string("ca.crt")),
        cert_file: Some(certs.string("client.crt")),
        key_file: Some(certs.string("client.key")),
        ..config(&pg, "localhost", PostgresTlsMode::VerifyFull)
    };
    let s = sink(&with_cert);
    s.export(&batch_of(&[&fixtures::request(3, 1)]))
        .await
        .unwrap();
    assert_eq!(rows_and_tls_backends(&pg).await, (3, 1));
    s.shutdown().await.unwrap();

    // Without the certificate the same role is refused by pg_hba.conf: permanent.
    let err = sink(&PostgresSinkConfig {
        cert_file: None,
        key_file: None,
        ..with_cert
    })
    .export(&batch_of(&[&fixtures::request(3, 1)]))
    .await
    .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string()
            .contains("requires a valid client certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn unreadable_tls_files_fail_the_build_naming_the_field() {
    let certs = Certificates::make();
    let pg = tls_server(&certs);
    let missing = PostgresSinkConfig {
        ca_file: Some("/etc/spansink/postgres/ca.crt".into()),
        ..config(&pg, "localhost", PostgresTlsMode::VerifyFull)
    };
    let err = PostgresSink::new("db", &missing, &Metrics::for_tests())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with(
            "sinks.db: postgres.ca_file: cannot read /etc/spansink/postgres/ca.crt: No such file or directory"
        ),
        "{err}"
    );
    // A key that is not the certificate's.
    let mismatched = PostgresSinkConfig {
        ca_file: Some(certs.string("ca.crt")),
        cert_file: Some(certs.string("client.crt")),
        key_file: Some(certs.string("server.key")),
        ..missing
    };
    let err = PostgresSink::new("db", &mismatched, &Metrics::for_tests())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("sinks.db: postgres.cert_file and key_file: "),
        "{err}"
    );
}
