//! Container tests on real Docker: the exporter and operator images built from the
//! repository's Dockerfile (tests/container/build-images.sh) run the way the operator's pods
//! run them (non-root, read-only root filesystem, no capabilities, no privilege escalation,
//! the config in a ConfigMap-layout volume), fed by the official OpenTelemetry Python SDK.
//! The last test runs the Deployment that reconcile renders, translated to `docker run`.
//! Docker or the images missing fails every test with what to do; nothing is skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use spansink_operator::crd::SpanSink;
use spansink_operator::reconcile::{
    self, CONFIG_DIR, CONFIG_KEY, DATA_DIR, Desired, GRPC_PORT, HTTP_PORT, METRICS_PORT,
    OperatorSettings,
};
use spansink_tests::container::{
    ConfigMapVolume, Container, NONROOT, docker, docker_ok, exporter_image, inspect_image,
    operator_image, pod_to_docker, publish, writable_dir,
};
use spansink_tests::{http_get, metric_sample, read_json_lines, send_with_python, wait_for};

/// The uncompressed size the exporter image must stay within (issue 8).
const EXPORTER_IMAGE_MAX_BYTES: u64 = 40_000_000;

fn port(p: i32) -> u16 {
    u16::try_from(p).expect("port fits u16")
}

/// An exporter config listening on all interfaces inside the container, with `sinks`.
fn config(sinks: &str) -> String {
    format!(
        "receivers:\n  grpc: {{endpoint: '0.0.0.0:{GRPC_PORT}'}}\n  http: {{endpoint: '0.0.0.0:{HTTP_PORT}'}}\n\
         telemetry:\n  endpoint: '0.0.0.0:{METRICS_PORT}'\nshutdown:\n  drain_timeout: 10s\nsinks:\n{sinks}"
    )
}

/// A file sink `name` writing under the data volume.
fn file_sink(name: &str, batch: &str) -> String {
    format!("  {name}:\n    file: {{path: {DATA_DIR}/{name}/spans.jsonl}}\n    batch: {batch}\n")
}

/// The exporter image run as the operator's Deployment runs it, with a config volume the
/// test can update like the kubelet does.
struct Exporter {
    container: Container,
    config: ConfigMapVolume,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Exporter {
    /// Starts the image with its default entrypoint and CMD (checked against the
    /// Deployment's args in `images_are_minimal_nonroot_and_labelled`) and waits for /readyz.
    fn start(config_text: &str) -> Exporter {
        let image = exporter_image();
        let dir = tempfile::tempdir().expect("temp dir");
        let config = ConfigMapVolume::create(
            &dir.path().join("config"),
            &BTreeMap::from([(CONFIG_KEY.to_string(), config_text.to_string())]),
            0o644,
        );
        let data = dir.path().join("data");
        writable_dir(&data);
        let tmp = dir.path().join("tmp");
        writable_dir(&tmp);
        let mut flags: Vec<String> = [
            "--user",
            "65532:65532",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
        ]
        .map(String::from)
        .to_vec();
        for (source, target, ro) in [
            (&config.dir, CONFIG_DIR, ",readonly"),
            (&data, DATA_DIR, ""),
            (&tmp, "/tmp", ""),
        ] {
            flags.push("--mount".into());
            flags.push(format!(
                "type=bind,source={},target={target}{ro}",
                source.display()
            ));
        }
        let mut ports = BTreeMap::new();
        for p in [GRPC_PORT, HTTP_PORT, METRICS_PORT] {
            publish(&mut flags, &mut ports, port(p));
        }
        let container = Container::run("exporter", &flags, ports, &image, &[]);
        let exporter = Exporter {
            container,
            config,
            data,
            _dir: dir,
        };
        let ready = wait_for(Duration::from_secs(30), || {
            exporter.get("/readyz").filter(|(s, _)| *s == 200)
        });
        assert!(
            ready.is_some(),
            "exporter container did not become ready (running: {}); logs:\n{}",
            exporter.container.running(),
            exporter.container.logs()
        );
        exporter
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let p = self.container.host_port(port(METRICS_PORT));
        http_get(&format!("http://127.0.0.1:{p}{path}"))
    }

    fn metric(&self, sample: &str) -> Option<f64> {
        metric_sample(&self.get("/metrics")?.1, sample)
    }

    fn grpc(&self) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.container.host_port(port(GRPC_PORT))
        )
    }

    fn http(&self) -> String {
        format!(
            "http://127.0.0.1:{}/v1/traces",
            self.container.host_port(port(HTTP_PORT))
        )
    }

    /// Every line the file sink `sink` wrote, read from the data volume on the host.
    fn lines(&self, sink: &str) -> Vec<Value> {
        read_json_lines(&self.data.join(sink), "spans")
    }

    /// Waits until sink `sink` holds every span in `sent` (by span id); returns its lines.
    fn wait_spans(&self, sink: &str, sent: &[Value]) -> Vec<Value> {
        wait_for(Duration::from_secs(20), || {
            let lines = self.lines(sink);
            sent.iter()
                .all(|s| lines.iter().any(|l| l["span_id"] == s["span_id"]))
                .then_some(lines)
        })
        .unwrap_or_else(|| {
            panic!(
                "sink {sink} did not get all {} spans ({} lines); logs:\n{}",
                sent.len(),
                self.lines(sink).len(),
                self.container.logs()
            )
        })
    }
}

/// Every span the SDK created is in `lines` exactly once, with the same fields.
fn assert_same_spans(sent: &[Value], lines: &[Value], service: &str) {
    assert!(!sent.is_empty(), "the client created spans");
    for s in sent {
        let found: Vec<&Value> = lines
            .iter()
            .filter(|l| l["span_id"] == s["span_id"])
            .collect();
        assert_eq!(found.len(), 1, "span {} written once", s["span_id"]);
        let l = found[0];
        for field in [
            "trace_id",
            "parent_span_id",
            "name",
            "kind",
            "status_code",
            "attributes",
        ] {
            assert_eq!(l[field], s[field], "{field} of span {}", s["name"]);
        }
        let events: Vec<&Value> = l["events"]
            .as_array()
            .map(|e| e.iter().map(|e| &e["name"]).collect())
            .unwrap_or_default();
        let sent_events: Vec<&Value> = s["events"].as_array().unwrap().iter().collect();
        assert_eq!(events, sent_events, "events of span {}", s["name"]);
        assert_eq!(l["service_name"], service);
        assert_eq!(l["resource_attributes"]["deployment.environment"], "e2e");
    }
}

fn rendered_file_sink(image: &str) -> Box<reconcile::Children> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/k8s/file-sink.yaml"
    );
    let text = std::fs::read_to_string(path).expect("read examples/k8s/file-sink.yaml");
    let mut sink: SpanSink = serde_yaml::from_str(&text).expect("file-sink.yaml is a SpanSink");
    // What the API server adds when the manifest is applied.
    sink.metadata.namespace = Some("e2e".into());
    sink.metadata.uid = Some("0b6a2c55-0000-4000-8000-000000000008".into());
    let settings = OperatorSettings {
        exporter_image: image.into(),
        service_monitor_available: false,
        pod_defaults: Default::default(),
    };
    match reconcile::desired(&sink, &settings).expect("reconcile file-sink.yaml") {
        Desired::Children(children) => children,
        other => panic!("file-sink.yaml renders no children: {other:?}"),
    }
}

/// Paths of the files in the root filesystem of `image` (from `docker export`).
fn image_files(image: &str) -> Vec<String> {
    let name = format!("spansink-test-files-{}", std::process::id());
    let _ = docker(&["rm", "-f", &name]);
    docker_ok(&["create", "--name", &name, image]);
    let tar = tempfile::NamedTempFile::new().expect("temp file");
    let tar_path = tar.path().to_str().unwrap().to_string();
    let exported = docker(&["export", "-o", &tar_path, &name]);
    let _ = docker(&["rm", "-f", &name]);
    assert!(exported.status.success(), "docker export {image}");
    let out = std::process::Command::new("tar")
        .args(["-tf", &tar_path])
        .output()
        .expect("run tar");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn images_are_minimal_nonroot_and_labelled() {
    let exporter = exporter_image();
    let operator = operator_image();
    let children = rendered_file_sink(&exporter);
    let deployment = rendered_deployment(&children);
    let rendered_args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];

    for (image, binary, title) in [
        (&exporter, "spansink-exporter", "spansink-exporter"),
        (&operator, "spansink-operator", "spansink-operator"),
    ] {
        let info = inspect_image(image);
        let cfg = &info["Config"];
        assert_eq!(cfg["User"], format!("{NONROOT}:{NONROOT}"), "{image} user");
        assert_eq!(
            cfg["Entrypoint"],
            serde_json::json!([format!("/usr/local/bin/{binary}")]),
            "{image} entrypoint is the binary"
        );
        let labels = &cfg["Labels"];
        assert_eq!(
            labels["org.opencontainers.image.version"],
            env!("CARGO_PKG_VERSION"),
            "{image}: the Dockerfile's VERSION default follows the workspace version"
        );
        assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
        assert_eq!(labels["org.opencontainers.image.title"], title);
        assert!(
            labels["org.opencontainers.image.source"]
                .as_str()
                .is_some_and(|s| s.starts_with("https://")),
            "{image} source label: {}",
            labels["org.opencontainers.image.source"]
        );
        assert!(
            labels["org.opencontainers.image.description"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{image} description label"
        );

        // Nothing to run but the binary: no shell, no package manager, no busybox.
        let files = image_files(image);
        assert!(
            files
                .iter()
                .any(|f| f == &format!("usr/local/bin/{binary}")),
            "{image} holds its binary: {files:?}"
        );
        let forbidden: Vec<&String> = files
            .iter()
            .filter(|f| {
                let base = f.trim_end_matches('/').rsplit('/').next().unwrap_or("");
                [
                    "sh", "bash", "dash", "ash", "busybox", "apt", "apt-get", "dpkg",
                ]
                .contains(&base)
            })
            .collect();
        assert!(forbidden.is_empty(), "{image} contains {forbidden:?}");
        assert!(
            files
                .iter()
                .any(|f| f == "etc/ssl/certs/ca-certificates.crt"),
            "{image} has CA certificates"
        );
        let shell = docker(&[
            "run",
            "--rm",
            "--entrypoint",
            "/bin/sh",
            image,
            "-c",
            "true",
        ]);
        assert!(!shell.status.success(), "{image} must not have /bin/sh");
    }

    let info = inspect_image(&exporter);
    assert_eq!(
        &info["Config"]["Cmd"], rendered_args,
        "the exporter image's default CMD is what the operator's Deployment passes"
    );
    for p in [GRPC_PORT, HTTP_PORT, METRICS_PORT] {
        assert!(
            info["Config"]["ExposedPorts"]
                .get(format!("{p}/tcp"))
                .is_some(),
            "exporter image exposes {p}"
        );
    }
    let size = info["Size"].as_u64().expect("image size");
    assert!(
        size <= EXPORTER_IMAGE_MAX_BYTES,
        "exporter image is {size} bytes, over the {EXPORTER_IMAGE_MAX_BYTES} goal"
    );
}

#[test]
fn exporter_image_receives_python_sdk_spans_over_grpc_and_http() {
    let exporter = Exporter::start(&config(&file_sink("a", "{flush_interval: 200ms}")));
    let grpc = send_with_python("grpc", &exporter.grpc(), 25, "container-grpc");
    let http = send_with_python("http", &exporter.http(), 25, "container-http");
    assert_eq!(grpc.len(), 50, "a parent and a child per iteration");

    let mut all = grpc.clone();
    all.extend(http.iter().cloned());
    let lines = exporter.wait_spans("a", &all);
    assert_eq!(lines.len(), all.len(), "no span written twice");
    assert_same_spans(&grpc, &lines, "container-grpc");
    assert_same_spans(&http, &lines, "container-http");
    for protocol in ["grpc", "http"] {
        assert_eq!(
            exporter.metric(&format!(
                "spansink_receiver_accepted_spans_total{{protocol=\"{protocol}\"}}"
            )),
            Some(50.0),
            "accepted {protocol} spans counted"
        );
    }
    // Written by the exporter's user into the volume, as on a pod with fsGroup.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(exporter.data.join("a/spans.jsonl")).expect("span file");
    assert_eq!(meta.uid(), NONROOT, "the file sink ran as uid {NONROOT}");
}

#[test]
fn hot_reload_in_the_container_and_an_invalid_config_is_refused() {
    let sink_a = file_sink("a", "{flush_interval: 200ms}");
    let sink_b = file_sink("b", "{flush_interval: 200ms}");
    let mut exporter = Exporter::start(&config(&sink_a));
    let first = send_with_python("grpc", &exporter.grpc(), 5, "before-reload");
    exporter.wait_spans("a", &first);

    // The kubelet's swap: new version directory, `..data_tmp`, rename over `..data`.
    exporter.config.update(&BTreeMap::from([(
        CONFIG_KEY.to_string(),
        config(&format!("{sink_a}{sink_b}")),
    )]));
    let reloaded = wait_for(Duration::from_secs(20), || {
        exporter
            .metric("spansink_config_reloads_total{result=\"success\"}")
            .filter(|v| *v >= 1.0)
    });
    assert!(
        reloaded.is_some(),
        "the exporter did not reload the swapped config; logs:\n{}",
        exporter.container.logs()
    );
    let second = send_with_python("http", &exporter.http(), 5, "after-reload");
    exporter.wait_spans("b", &second);
    exporter.wait_spans("a", &second);
    assert!(
        exporter
            .lines("b")
            .iter()
            .all(|l| l["service_name"] == "after-reload"),
        "the new sink only gets spans sent after the reload"
    );

    // Invalid: a fallback naming a sink that does not exist.
    let bad = format!(
        "  a:\n    file: {{path: {DATA_DIR}/a/spans.jsonl}}\n    fallback: nowhere\n{sink_b}"
    );
    exporter
        .config
        .update(&BTreeMap::from([(CONFIG_KEY.to_string(), config(&bad))]));
    let refused = wait_for(Duration::from_secs(20), || {
        exporter
            .metric("spansink_config_reloads_total{result=\"failure\"}")
            .filter(|v| *v >= 1.0)
    });
    assert!(
        refused.is_some(),
        "the invalid config was not counted as refused; logs:\n{}",
        exporter.container.logs()
    );
    let logs = exporter.container.logs();
    assert!(
        logs.contains("new config refused") && logs.contains("sinks.a.fallback"),
        "the refusal is logged with the bad field:\n{logs}"
    );
    let third = send_with_python("grpc", &exporter.grpc(), 5, "after-refusal");
    exporter.wait_spans("a", &third);
    exporter.wait_spans("b", &third);
    assert_eq!(
        exporter.metric("spansink_config_reloads_total{result=\"success\"}"),
        Some(1.0),
        "the refused config did not replace the running chain"
    );
    assert_eq!(exporter.container.stop(30), 0, "clean exit");
}

#[test]
fn docker_stop_writes_every_accepted_span_and_exits_zero() {
    // Neither the batch size nor the flush interval is reached: only the drain writes.
    let sinks = format!(
        "  a:\n    file: {{path: {DATA_DIR}/a/spans.jsonl}}\n    queue: {{max_spans: 100000}}\n    batch: {{max_spans: 100000, flush_interval: 1h}}\n"
    );
    let exporter = Exporter::start(&config(&sinks));
    let mut sent = send_with_python("grpc", &exporter.grpc(), 50, "stop-grpc");
    sent.extend(send_with_python("http", &exporter.http(), 50, "stop-http"));
    assert!(
        exporter.lines("a").is_empty(),
        "nothing is written before the stop"
    );
    assert_eq!(
        exporter.metric("spansink_receiver_accepted_spans_total{protocol=\"grpc\"}"),
        Some(100.0)
    );

    let code = exporter.container.stop(30);
    assert_eq!(
        code,
        0,
        "docker stop (SIGTERM) exits 0; logs:\n{}",
        exporter.container.logs()
    );
    assert_eq!(exporter.container.inspect("{{.State.OOMKilled}}"), "false");
    let lines = exporter.lines("a");
    assert_eq!(lines.len(), sent.len(), "every accepted span was written");
    for s in &sent {
        assert!(
            lines.iter().any(|l| l["span_id"] == s["span_id"]),
            "span {} written",
            s["span_id"]
        );
    }
}

#[test]
fn operator_image_shows_help_and_explains_a_missing_cluster() {
    let image = operator_image();
    let exporter = exporter_image();
    // The image's own user (65532), as a pod without runAsUser would run it.
    let restricted = [
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ];
    let mut help = vec!["run", "--rm"];
    help.extend(restricted);
    help.extend([image.as_str(), "--help"]);
    let out = docker(&help);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "--help exits 0: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Usage:") && stdout.contains("--exporter-image"),
        "--help shows the usage:\n{stdout}"
    );

    // No KUBECONFIG, no service account, no KUBERNETES_SERVICE_HOST: nothing to talk to.
    let mut flags: Vec<String> = restricted.map(String::from).to_vec();
    flags.extend(["--env".into(), "RUST_BACKTRACE=1".into()]);
    let args = ["--exporter-image".to_string(), exporter];
    let container = Container::run("operator", &flags, BTreeMap::new(), &image, &args);
    let code = container.wait_exit(Duration::from_secs(60));
    let logs = container.logs();
    assert_ne!(code, 0, "no cluster: a non-zero exit; logs:\n{logs}");
    let lower = logs.to_lowercase();
    assert!(
        lower.contains("kubeconfig") && lower.contains("in-cluster"),
        "the message names the missing kubeconfig / in-cluster config:\n{logs}"
    );
    assert!(!logs.contains("panicked"), "no panic:\n{logs}");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Every JSON line of every `.jsonl` file under `dirs`.
fn jsonl_under<'a>(dirs: impl Iterator<Item = &'a PathBuf>) -> Vec<Value> {
    let mut lines = Vec::new();
    for file in dirs.flat_map(|d| files_under(d)) {
        if let (Some(parent), Some(name)) = (file.parent(), file.file_name())
            && file.extension().is_some_and(|e| e == "jsonl")
        {
            lines.extend(read_json_lines(parent, &name.to_string_lossy()));
        }
    }
    lines
}

#[test]
fn the_rendered_deployment_runs_in_docker_and_its_probes_answer() {
    let image = exporter_image();
    let children = rendered_file_sink(&image);
    let deployment = rendered_deployment(&children);
    let config_map = serde_json::to_value(&children.config_map).unwrap();
    let template = &deployment["spec"]["template"];
    let dir = tempfile::tempdir().expect("temp dir");
    let run = pod_to_docker(template, &[config_map], dir.path());
    assert_eq!(run.image, image, "the Deployment runs the operator's image");
    assert!(!run.probes.is_empty(), "the Deployment has probes");

    let container = Container::run(
        "deployment",
        &run.flags,
        run.ports.clone(),
        &run.image,
        &run.args,
    );
    for probe in &run.probes {
        let url = format!(
            "http://127.0.0.1:{}{}",
            container.host_port(probe.port),
            probe.path
        );
        let answered = wait_for(Duration::from_secs(30), || {
            http_get(&url).filter(|(s, _)| *s == 200)
        });
        assert!(
            answered.is_some(),
            "{} {url} (container port {}) did not answer 200 (running: {}, flags {:?}); logs:\n{}",
            probe.kind,
            probe.port,
            container.running(),
            run.flags,
            container.logs()
        );
    }

    // The pod's data path works too: spans sent to its gRPC port land in a writable volume.
    let grpc = run
        .named_ports
        .iter()
        .find(|(name, _)| name.contains("grpc"))
        .map(|(_, p)| *p)
        .expect("a gRPC containerPort");
    let sent = send_with_python(
        "grpc",
        &format!("http://127.0.0.1:{}", container.host_port(grpc)),
        10,
        "rendered-deployment",
    );
    let written = wait_for(Duration::from_secs(30), || {
        let lines = jsonl_under(run.writable_mounts.values());
        sent.iter()
            .all(|s| lines.iter().any(|l| l["span_id"] == s["span_id"]))
            .then_some(())
    });
    assert!(
        written.is_some(),
        "spans sent to the rendered pod were not written to its data volume; logs:\n{}",
        container.logs()
    );
    let grace = template["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .map_or(30, |g| g as u32);
    assert_eq!(container.stop(grace), 0, "the rendered pod stops cleanly");
}

/// A change to a rendered pod template.
type Mutation = fn(&mut Value);

#[test]
fn the_pod_translation_refuses_fields_it_cannot_translate() {
    // No Docker needed: the translation fails before it looks at the image.
    let children = rendered_file_sink("spansink-test/not-used:0");
    let deployment = rendered_deployment(&children);
    let config_map = serde_json::to_value(&children.config_map).unwrap();
    let cases: [(&str, Mutation); 4] = [
        ("spec.hostAliases", |t| {
            t["spec"]["hostAliases"] = serde_json::json!([{"ip": "10.0.0.1"}])
        }),
        ("spec.containers[0].lifecycle", |t| {
            t["spec"]["containers"][0]["lifecycle"] = serde_json::json!({"preStop": {}})
        }),
        ("spec.containers[0].envFrom", |t| {
            t["spec"]["containers"][0]["envFrom"] =
                serde_json::json!([{"secretRef": {"name": "creds"}}])
        }),
        (
            "spec.volumes[1].hostPath",
            |t| {
                t["spec"]["volumes"][1] =
                    serde_json::json!({"name": "data", "hostPath": {"path": "/"}})
            },
        ),
    ];
    for (field, mutate) in cases {
        let mut template = deployment["spec"]["template"].clone();
        mutate(&mut template);
        let dir = tempfile::tempdir().expect("temp dir");
        let cms = [config_map.clone()];
        let result = std::panic::catch_unwind(|| pod_to_docker(&template, &cms, dir.path()));
        let message = match result {
            Ok(_) => panic!("{field} was translated silently"),
            Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
        };
        assert!(
            message.contains(field),
            "the failure names {field}: {message}"
        );
    }
}

/// The Deployment reconcile renders, as JSON (the examples use an emptyDir queue volume).
fn rendered_deployment(children: &spansink_operator::reconcile::Children) -> serde_json::Value {
    match &children.workload {
        spansink_operator::reconcile::Workload::Deployment(d) => serde_json::to_value(d).unwrap(),
        other => panic!(
            "expected a Deployment, reconcile rendered a {}",
            other.kind().as_str()
        ),
    }
}
