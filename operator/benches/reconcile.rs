//! Reconcile throughput against the API double: N SpanSinks applied at once, from nothing
//! to their Deployments and a written status. Prints SpanSinks/s, reconciles/s, the
//! operator's CPU-seconds and its peak memory.
//!
//! The double and the client that creates the SpanSinks (playing kubectl) run in a child
//! process behind a loopback HTTP server, so this process is the operator alone (its
//! watches, caches and client) and its peak RSS is the operator's.
//!
//! `cargo bench -p spansink-operator --bench reconcile [-- 100 1000]`

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, PartialObjectMeta, PostParams};
use kube::runtime::events::Reporter;
use spansink_operator::controller::{self, Context, Scope};
use spansink_operator::crd::SpanSink;
use spansink_operator::fake_apiserver::FakeApiServer;
use spansink_operator::metrics::Metrics;

const ROLE: &str = "SPANSINK_BENCH_ROLE";

fn main() -> anyhow::Result<()> {
    if std::env::var(ROLE).as_deref() == Ok("apiserver") {
        return serve_api_double();
    }
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1000]
    } else {
        sizes
    };
    println!("reconcile benchmark: SpanSinks applied at once, to Deployment + status");
    for n in sizes {
        run(n)?;
    }
    Ok(())
}

/// Child process: the API double on a free loopback port, printed on stdout, and the
/// bench's own client ("kubectl"): on `apply N` it creates N SpanSinks, waits until all
/// have Deployments and a written status, and prints `done`. Stops when stdin closes (the
/// parent exited). Keeping kubectl's objects and connections here leaves the parent's
/// memory to the operator alone.
fn serve_api_double() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        std::io::stdout().flush()?;
        let server = FakeApiServer::default();
        let kubectl = server.client();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let server = server.clone();
            async move { server.handle(req).await }
        });
        let (lines, mut commands) = tokio::sync::mpsc::unbounded_channel::<String>();
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                if lines.send(std::mem::take(&mut line)).is_err() {
                    break;
                }
            }
        });
        let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            while let Some(command) = commands.recv().await {
                let n: usize = command
                    .trim()
                    .strip_prefix("apply ")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let outcome = apply_and_wait(&kubectl, n).await;
                match outcome {
                    Ok(()) => println!("done"),
                    Err(e) => println!("failed: {e:#}"),
                }
                let _ = std::io::stdout().flush();
            }
            let _ = closed.send(());
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stdin_closed.await;
            })
            .await?;
        anyhow::Ok(())
    })
}

/// kubectl's part: N SpanSinks created at once, then polled until every one has its
/// Deployment and a status for generation 1.
async fn apply_and_wait(kubectl: &kube::Client, n: usize) -> anyhow::Result<()> {
    let creates = (0..n).map(|i| {
        let client = kubectl.clone();
        async move {
            let namespace = format!("team-{}", i % 10);
            let api: Api<SpanSink> = Api::namespaced(client, &namespace);
            api.create(&PostParams::default(), &spansink(&format!("sink-{i}")))
                .await
        }
    });
    for created in futures::future::join_all(creates).await {
        created?;
    }
    let deployments: Api<PartialObjectMeta<Deployment>> = Api::all(kubectl.clone());
    let sinks: Api<SpanSink> = Api::all(kubectl.clone());
    let started = Instant::now();
    loop {
        let with_status = sinks
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|s| s.status.as_ref().and_then(|st| st.observed_generation) == Some(1))
            .count();
        let deployed = deployments.list(&ListParams::default()).await?.items.len();
        if with_status == n && deployed == n {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("only {with_status} statuses and {deployed} Deployments after 10 min");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn run(n: usize) -> anyhow::Result<()> {
    let mut child = Command::new(std::env::current_exe()?)
        .env(ROLE, "apiserver")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut answers = BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    );
    let mut port = String::new();
    answers.read_line(&mut port)?;
    let port: u16 = port.trim().parse()?;
    let mut commands = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cpu_before = cpu_seconds();
    let result = runtime.block_on(drive(port, n, &mut commands, &mut answers));
    let cpu = cpu_seconds() - cpu_before;
    drop(runtime);
    drop(commands);
    let _ = child.wait();
    let (elapsed, reconciles, settled_rss) = result?;
    println!(
        "{n:>5} SpanSinks: all reconciled in {:.2} s ({:.0} SpanSinks/s, {:.0} reconciles/s, {reconciles} reconciles), operator CPU {:.2} s, RSS once settled {settled_rss:.1} MiB, peak RSS {:.1} MiB",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        reconciles as f64 / elapsed.as_secs_f64(),
        cpu,
        proc_status_mib("VmHWM:")
    );
    Ok(())
}

async fn drive(
    port: u16,
    n: usize,
    commands: &mut impl Write,
    answers: &mut impl BufRead,
) -> anyhow::Result<(Duration, u64, f64)> {
    let url: http::Uri = format!("http://127.0.0.1:{port}").parse()?;
    let client = kube::Client::try_from(kube::Config::new(url))?;
    let metrics = Metrics::new();
    let reporter = Reporter {
        controller: "spansink-operator".into(),
        instance: Some("bench".into()),
    };
    let ctx: Arc<Context> = Context::new(
        client.clone(),
        reporter,
        "ghcr.io/spansink/spansink-exporter:bench".into(),
        Default::default(),
        metrics.clone(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(controller::run(ctx, Scope::AllNamespaces, async move {
        let _ = stopped.await;
    }));

    let started = Instant::now();
    writeln!(commands, "apply {n}")?;
    commands.flush()?;
    // The child answers when it is done; reading it blocks this thread only, while the
    // controller runs on the runtime's workers.
    let mut answer = String::new();
    tokio::task::block_in_place(|| answers.read_line(&mut answer))?;
    let elapsed = started.elapsed();
    if answer.trim() != "done" {
        anyhow::bail!("the API double's client answered {:?}", answer.trim());
    }
    // The operator at rest with every SpanSink in its caches.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = proc_status_mib("VmRSS:");
    let _ = stop.send(());
    let _ = controller.await;
    Ok((elapsed, metrics.reconciliations(), settled))
}

/// A SpanSink as `kubectl apply` sends it: with the last-applied-configuration annotation,
/// a second copy of the object, which is what a real cluster's SpanSinks carry.
fn spansink(name: &str) -> SpanSink {
    let yaml = format!(
        "apiVersion: spansink.dev/v1alpha1\nkind: SpanSink\nmetadata:\n  name: {name}\nspec:\n  pipeline:\n    sinks:\n      main:\n        file:\n          path: /var/lib/spansink/spans/spans.jsonl\n  podDisruptionBudget:\n    maxUnavailable: 1\n"
    );
    let mut sink: SpanSink = serde_yaml::from_str(&yaml).expect("bench SpanSink parses");
    let applied = serde_json::to_string(&sink).expect("a SpanSink serializes");
    sink.metadata.annotations = Some(
        [(
            "kubectl.kubernetes.io/last-applied-configuration".to_string(),
            applied,
        )]
        .into(),
    );
    sink
}

/// This process's user + system CPU time.
fn cpu_seconds() -> f64 {
    // utime and stime, fields 14 and 15 of /proc/self/stat, in clock ticks (USER_HZ, 100
    // on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .into_iter()
        .flatten()
        .filter_map(|f| f.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// A memory figure of this process from /proc/self/status (`VmHWM:` peak, `VmRSS:` now).
fn proc_status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
