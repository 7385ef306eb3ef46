//! Harness for the container tests: drives the `docker` CLI against the images that
//! tests/container/build-images.sh builds from the repository's Dockerfile, writes ConfigMap
//! volumes in the kubelet's on-disk layout, and translates a rendered pod template into
//! `docker run` flags (failing on any field it cannot translate, so none is silently ignored).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::free_port;

/// Label on every container the tests start (tests/run-all.sh removes leftovers by it).
pub const TEST_LABEL: &str = "dev.spansink.test";
/// The distroless `nonroot` user the images and the operator's pods run as.
pub const NONROOT: u32 = 65532;

/// Runs `docker ARGS` and returns its output; panics if the CLI cannot be started.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the docker CLI ({e}): install docker.io and run the suite with \
             `bash tests/run-all.sh`, which starts dockerd and builds the images"
            )
        })
}

/// Runs `docker ARGS`, panics unless it exits 0, returns stdout (trimmed).
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The image named by env var `var` (set by tests/run-all.sh), checked to exist in the
/// daemon. Panics with what to do when Docker or the image is missing: never a silent skip.
pub fn image(var: &str) -> String {
    let out = docker(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        out.status.success(),
        "no Docker daemon answers ({}): run the suite with `bash tests/run-all.sh`, which \
         installs docker.io, starts dockerd and builds the images",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let name = std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run the suite with `bash tests/run-all.sh`, which builds the \
             images with tests/container/build-images.sh and exports their names"
        )
    });
    let found = docker(&["image", "inspect", "--format", "{{.Id}}", &name]);
    assert!(
        found.status.success(),
        "{var}={name}: no such image in the Docker daemon; build it with \
         `bash tests/container/build-images.sh`"
    );
    name
}

/// The exporter image built from the Dockerfile (`SPANSINK_TEST_EXPORTER_IMAGE`).
pub fn exporter_image() -> String {
    image("SPANSINK_TEST_EXPORTER_IMAGE")
}

/// The operator image built from the Dockerfile (`SPANSINK_TEST_OPERATOR_IMAGE`).
pub fn operator_image() -> String {
    image("SPANSINK_TEST_OPERATOR_IMAGE")
}

/// `docker image inspect` of `image` as JSON (the first and only element).
pub fn inspect_image(image: &str) -> Value {
    let text = docker_ok(&["image", "inspect", image]);
    let mut all: Vec<Value> = serde_json::from_str(&text).expect("docker image inspect JSON");
    all.remove(0)
}

/// A directory that uid 65532 can write: owned by it when we may chown (root), else
/// world-writable.
pub fn writable_dir(path: &Path) {
    std::fs::create_dir_all(path).expect("create dir");
    if std::os::unix::fs::chown(path, Some(NONROOT), Some(NONROOT)).is_err() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("chmod 777");
    }
}

/// A ConfigMap volume as the kubelet writes it (its AtomicWriter): every version in a
/// `..<timestamp>` directory, `..data` a symlink to the current one, and each key a symlink
/// `key -> ..data/key`. An update writes a new version, points `..data_tmp` at it and renames
/// that over `..data` (atomic), then removes keys that went away and the old version.
pub struct ConfigMapVolume {
    pub dir: PathBuf,
    current: Option<String>,
    keys: Vec<String>,
    mode: u32,
}

static VERSIONS: AtomicU32 = AtomicU32::new(0);

impl ConfigMapVolume {
    /// Writes `data` into a new volume directory `dir` with file mode `mode` (the
    /// ConfigMap volume's defaultMode; Kubernetes' default is 0644).
    pub fn create(dir: &Path, data: &BTreeMap<String, String>, mode: u32) -> Self {
        std::fs::create_dir_all(dir).expect("config volume dir");
        let mut volume = ConfigMapVolume {
            dir: dir.to_path_buf(),
            current: None,
            keys: Vec::new(),
            mode,
        };
        volume.update(data);
        volume
    }

    /// Replaces the content with `data`, exactly as the kubelet does on a ConfigMap change.
    pub fn update(&mut self, data: &BTreeMap<String, String>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970");
        // The kubelet names versions `..2006_01_02_15_04_05.<random>`; any `..` name works
        // the same, uniqueness is what matters.
        let version = format!(
            "..{}_{:09}.{}",
            now.as_secs(),
            now.subsec_nanos(),
            VERSIONS.fetch_add(1, Ordering::Relaxed)
        );
        let version_dir = self.dir.join(&version);
        std::fs::create_dir(&version_dir).expect("version dir");
        for (key, value) in data {
            let file = version_dir.join(key);
            std::fs::write(&file, value).expect("write config key");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(self.mode))
                .expect("chmod key");
        }
        std::fs::set_permissions(&version_dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod version dir");
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("rename ..data_tmp over ..data");
        for key in data.keys() {
            let link = self.dir.join(key);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{key}"), &link).expect("symlink key");
            }
        }
        for gone in self.keys.iter().filter(|k| !data.contains_key(*k)) {
            let _ = std::fs::remove_file(self.dir.join(gone));
        }
        if let Some(old) = self.current.replace(version) {
            std::fs::remove_dir_all(self.dir.join(old)).expect("remove old version");
        }
        self.keys = data.keys().cloned().collect();
    }
}

/// A container started by a test; removed (with its anonymous volumes) when dropped.
pub struct Container {
    pub name: String,
    /// container port -> host port on 127.0.0.1.
    pub ports: BTreeMap<u16, u16>,
}

static CONTAINERS: AtomicU32 = AtomicU32::new(0);

/// Adds `-p 127.0.0.1:<free port>:<port>` to `flags` and records the mapping.
pub fn publish(flags: &mut Vec<String>, ports: &mut BTreeMap<u16, u16>, port: u16) {
    let host = free_port();
    flags.push("-p".into());
    flags.push(format!("127.0.0.1:{host}:{port}"));
    ports.insert(port, host);
}

impl Container {
    /// `docker run -d` of `image` with `flags` (before the image) and `args` (after it).
    pub fn run(
        label: &str,
        flags: &[String],
        ports: BTreeMap<u16, u16>,
        image: &str,
        args: &[String],
    ) -> Container {
        let name = format!(
            "spansink-test-{label}-{}-{}",
            std::process::id(),
            CONTAINERS.fetch_add(1, Ordering::Relaxed)
        );
        let mut all: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--label".into(),
            format!("{TEST_LABEL}=1"),
        ];
        all.extend(flags.iter().cloned());
        all.push(image.into());
        all.extend(args.iter().cloned());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let container = Container { name, ports };
        let out = docker(&refs);
        assert!(
            out.status.success(),
            "docker {} failed:\n{}",
            all.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        container
    }

    /// The host port published for container port `port`.
    pub fn host_port(&self, port: u16) -> u16 {
        *self
            .ports
            .get(&port)
            .unwrap_or_else(|| panic!("container port {port} is not published"))
    }

    /// stdout and stderr of the container so far.
    pub fn logs(&self) -> String {
        let out = docker(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// One field of `docker inspect`, e.g. `{{.State.ExitCode}}`.
    pub fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "--format", format, &self.name])
    }

    /// Whether the container is still running.
    pub fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    /// `docker stop -t grace` (SIGTERM, then SIGKILL after `grace` seconds); the exit code.
    pub fn stop(&self, grace: u32) -> i64 {
        docker_ok(&["stop", "-t", &grace.to_string(), &self.name]);
        self.exit_code()
    }

    /// Waits until the container exits (at most `timeout`) and returns its exit code.
    pub fn wait_exit(&self, timeout: Duration) -> i64 {
        let exited = crate::wait_for(timeout, || (!self.running()).then_some(()));
        assert!(
            exited.is_some(),
            "container {} still runs after {timeout:?}; logs:\n{}",
            self.name,
            self.logs()
        );
        self.exit_code()
    }

    fn exit_code(&self) -> i64 {
        self.inspect("{{.State.ExitCode}}")
            .parse()
            .expect("exit code is a number")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.name]);
    }
}

/// An HTTP GET probe of the rendered pod: which probe, path, container port.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    pub kind: String,
    pub path: String,
    pub port: u16,
}

/// A pod template translated into `docker run`: flags, image, args, and what the test
/// needs to look at afterwards.
pub struct PodRun {
    pub flags: Vec<String>,
    pub image: String,
    pub args: Vec<String>,
    /// container port -> host port.
    pub ports: BTreeMap<u16, u16>,
    /// containerPorts by name (probes and tests resolve named ports through it).
    pub named_ports: BTreeMap<String, u16>,
    pub probes: Vec<HttpProbe>,
    /// Host directories of the writable volumes (emptyDir, ephemeral), by mount path.
    pub writable_mounts: BTreeMap<String, PathBuf>,
    /// The ConfigMap volumes as written on the host, by volume name.
    pub config_volumes: BTreeMap<String, ConfigMapVolume>,
}

fn fail(path: &str, what: &str) -> ! {
    panic!(
        "cannot translate {path} of the rendered pod to docker run ({what}); add its \
         translation to tests/src/container.rs so no pod-spec field is silently ignored"
    )
}

fn obj<'a>(v: &'a Value, path: &str) -> &'a serde_json::Map<String, Value> {
    v.as_object()
        .unwrap_or_else(|| fail(path, "expected an object"))
}

fn str_of<'a>(v: &'a Value, path: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| fail(path, "expected a string"))
}

fn int_of(v: &Value, path: &str) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| fail(path, "expected an integer"))
}

fn bool_of(v: &Value, path: &str) -> bool {
    v.as_bool()
        .unwrap_or_else(|| fail(path, "expected a boolean"))
}

/// Bytes of a Kubernetes memory quantity (`512Mi`, `1G`, `1048576`).
pub fn memory_bytes(q: &str) -> u64 {
    const UNITS: [(&str, u64); 10] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("", 1),
    ];
    for (suffix, factor) in UNITS {
        if let Some(n) = q.strip_suffix(suffix)
            && let Ok(n) = n.parse::<u64>()
        {
            return n * factor;
        }
    }
    fail("a memory quantity", &format!("unsupported quantity {q:?}"))
}

/// Millicores of a Kubernetes CPU quantity (`100m`, `2`, `0.5`).
pub fn cpu_millis(q: &str) -> u64 {
    if let Some(m) = q.strip_suffix('m') {
        return m
            .parse()
            .unwrap_or_else(|_| fail("a cpu quantity", &format!("{q:?}")));
    }
    let cores: f64 = q
        .parse()
        .unwrap_or_else(|_| fail("a cpu quantity", &format!("{q:?}")));
    (cores * 1000.0).round() as u64
}

/// The security settings that apply to the container: pod-level values, overridden by the
/// container's own (the Kubernetes rule for the fields both levels have).
#[derive(Default)]
struct Security {
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    run_as_non_root: Option<bool>,
    seccomp: Option<String>,
}

impl Security {
    /// Reads the fields both levels share; returns the other keys of the object.
    fn merge<'a>(
        &mut self,
        sc: &'a serde_json::Map<String, Value>,
        path: &str,
    ) -> Vec<(&'a String, &'a Value)> {
        let mut rest = Vec::new();
        for (key, value) in sc {
            let p = format!("{path}.{key}");
            match key.as_str() {
                "runAsUser" => self.run_as_user = Some(int_of(value, &p)),
                "runAsGroup" => self.run_as_group = Some(int_of(value, &p)),
                "runAsNonRoot" => self.run_as_non_root = Some(bool_of(value, &p)),
                "seccompProfile" => {
                    let profile = obj(value, &p);
                    for k in profile.keys() {
                        if k != "type" {
                            fail(&format!("{p}.{k}"), "only seccompProfile.type is handled");
                        }
                    }
                    self.seccomp = Some(str_of(&profile["type"], &format!("{p}.type")).into());
                }
                _ => rest.push((key, value)),
            }
        }
        rest
    }
}

/// Translates `template` (a PodTemplateSpec as JSON) and the ConfigMaps it may mount into
/// `docker run` flags. Host directories for the volumes are made under `host_dir`.
/// Exactly one container and no init containers are supported; any field that has no
/// translation here fails the test with its path.
pub fn pod_to_docker(template: &Value, config_maps: &[Value], host_dir: &Path) -> PodRun {
    let mut run = PodRun {
        flags: Vec::new(),
        image: String::new(),
        args: Vec::new(),
        ports: BTreeMap::new(),
        named_ports: BTreeMap::new(),
        probes: Vec::new(),
        writable_mounts: BTreeMap::new(),
        config_volumes: BTreeMap::new(),
    };

    for (key, value) in obj(template, "template") {
        match key.as_str() {
            // Pod metadata has no runtime effect inside the container; kept as docker labels.
            "metadata" => {
                for (mk, mv) in obj(value, "template.metadata") {
                    match mk.as_str() {
                        "labels" | "annotations" => {
                            for (k, v) in obj(mv, &format!("template.metadata.{mk}")) {
                                run.flags.push("--label".into());
                                run.flags.push(format!(
                                    "{k}={}",
                                    str_of(v, &format!("template.metadata.{mk}.{k}"))
                                ));
                            }
                        }
                        other => fail(&format!("template.metadata.{other}"), "unknown field"),
                    }
                }
            }
            "spec" => {}
            other => fail(&format!("template.{other}"), "unknown field"),
        }
    }
    let spec = obj(&template["spec"], "template.spec");

    // Volumes first: mounts refer to them by name.
    enum Source {
        Host(PathBuf, bool),
        Tmpfs,
    }
    let mut volumes: BTreeMap<String, Source> = BTreeMap::new();
    let mut security = Security::default();
    let mut fs_group = None;
    if let Some(sc) = spec.get("securityContext") {
        for (key, value) in security.merge(obj(sc, "spec.securityContext"), "spec.securityContext")
        {
            let p = format!("spec.securityContext.{key}");
            match key.as_str() {
                // The kubelet gives volumes this group and adds it to the process's groups.
                "fsGroup" => fs_group = Some(int_of(value, &p)),
                "supplementalGroups" => {
                    for g in value
                        .as_array()
                        .unwrap_or_else(|| fail(&p, "expected a list"))
                    {
                        run.flags.push("--group-add".into());
                        run.flags.push(int_of(g, &p).to_string());
                    }
                }
                other => fail(&format!("spec.securityContext.{other}"), "unknown field"),
            }
        }
    }
    if let Some(g) = fs_group {
        run.flags.push("--group-add".into());
        run.flags.push(g.to_string());
    }

    for (i, volume) in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("spec.volumes[{i}]");
        let v = obj(volume, &path);
        let name = str_of(&v["name"], &format!("{path}.name")).to_string();
        let mut source = None;
        for (key, value) in v {
            let p = format!("{path}.{key}");
            match key.as_str() {
                "name" => {}
                "configMap" => {
                    let mut mode = 0o644;
                    let mut cm_name = None;
                    for (ck, cv) in obj(value, &p) {
                        match ck.as_str() {
                            "name" => cm_name = Some(str_of(cv, &format!("{p}.name")).to_string()),
                            "defaultMode" => mode = int_of(cv, &format!("{p}.defaultMode")) as u32,
                            other => fail(
                                &format!("{p}.{other}"),
                                "unsupported ConfigMap volume field",
                            ),
                        }
                    }
                    let cm_name = cm_name.unwrap_or_else(|| fail(&p, "no ConfigMap name"));
                    let cm = config_maps
                        .iter()
                        .find(|c| c["metadata"]["name"] == cm_name.as_str())
                        .unwrap_or_else(|| {
                            fail(&p, &format!("ConfigMap {cm_name} was not rendered"))
                        });
                    let data: BTreeMap<String, String> = cm["data"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), str_of(v, "ConfigMap data").to_string()))
                        .collect();
                    if cm.get("binaryData").is_some() {
                        fail(&format!("ConfigMap {cm_name}.binaryData"), "not handled");
                    }
                    let dir = host_dir.join(format!("volume-{name}"));
                    run.config_volumes
                        .insert(name.clone(), ConfigMapVolume::create(&dir, &data, mode));
                    // The kubelet mounts ConfigMap volumes read-only whatever the mount says.
                    source = Some(Source::Host(dir, true));
                }
                "emptyDir" | "ephemeral" => {
                    let mut memory = false;
                    for (ek, ev) in obj(value, &p) {
                        match (key.as_str(), ek.as_str()) {
                            // Enforced by eviction, not by the container runtime.
                            ("emptyDir", "sizeLimit") => {}
                            ("emptyDir", "medium") => match str_of(ev, &p) {
                                "" => {}
                                "Memory" => memory = true,
                                other => fail(&format!("{p}.medium"), &format!("medium {other}")),
                            },
                            // A fresh per-pod PVC: on a container it is an empty directory;
                            // the claim's size and class only pick the storage.
                            ("ephemeral", "volumeClaimTemplate") => {}
                            (_, other) => fail(&format!("{p}.{other}"), "unknown field"),
                        }
                    }
                    if memory {
                        source = Some(Source::Tmpfs);
                    } else {
                        let dir = host_dir.join(format!("volume-{name}"));
                        std::fs::create_dir_all(&dir).expect("volume dir");
                        // The kubelet creates emptyDirs 0777; with fsGroup, group-owned setgid.
                        let mut mode = 0o777;
                        if let Some(g) = fs_group {
                            std::os::unix::fs::chown(&dir, None, Some(g as u32))
                                .expect("chown volume to fsGroup (run the tests as root)");
                            mode |= 0o2000;
                        }
                        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                            .expect("chmod volume");
                        source = Some(Source::Host(dir, false));
                    }
                }
                other => fail(&p, &format!("volume type {other}")),
            }
        }
        volumes.insert(
            name,
            source.unwrap_or_else(|| fail(&path, "volume without a source")),
        );
    }

    for (key, value) in spec {
        let p = format!("spec.{key}");
        match key.as_str() {
            "containers" | "volumes" | "securityContext" => {}
            // Scheduling and pull settings: no effect on a container that runs on this host
            // from a local image.
            "nodeSelector"
            | "tolerations"
            | "affinity"
            | "topologySpreadConstraints"
            | "priorityClassName"
            | "schedulerName"
            | "imagePullSecrets" => {}
            // The API credentials of the pod; the exporter does not call the API server.
            "serviceAccountName" | "serviceAccount" | "automountServiceAccountToken" => {}
            "terminationGracePeriodSeconds" => {
                run.flags.push("--stop-timeout".into());
                run.flags.push(int_of(value, &p).to_string());
            }
            "restartPolicy" => {
                if str_of(value, &p) != "Always" {
                    fail(&p, "only Always (what a Deployment allows) is handled");
                }
            }
            "hostNetwork" | "hostPID" | "hostIPC" => {
                if bool_of(value, &p) {
                    fail(&p, "host namespaces are not translated");
                }
            }
            other => fail(&format!("spec.{other}"), "unknown field"),
        }
    }

    let containers = spec
        .get("containers")
        .and_then(Value::as_array)
        .unwrap_or_else(|| fail("spec.containers", "expected a list"));
    if containers.len() != 1 {
        fail("spec.containers", "exactly one container is handled");
    }
    let c = obj(&containers[0], "spec.containers[0]");
    let cp = |k: &str| format!("spec.containers[0].{k}");

    // Ports first: probes may name them.
    for (i, port) in c
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = cp(&format!("ports[{i}]"));
        let mut number = None;
        for (k, v) in obj(port, &p) {
            match k.as_str() {
                "containerPort" => number = Some(int_of(v, &p) as u16),
                "name" => {}
                "protocol" => {
                    if str_of(v, &p) != "TCP" {
                        fail(&format!("{p}.protocol"), "only TCP");
                    }
                }
                other => fail(&format!("{p}.{other}"), "not translated (host ports)"),
            }
        }
        let number = number.unwrap_or_else(|| fail(&p, "no containerPort"));
        if let Some(name) = port.get("name") {
            run.named_ports.insert(str_of(name, &p).into(), number);
        }
        publish(&mut run.flags, &mut run.ports, number);
    }
    let resolve = |port: &Value, path: &str| -> u16 {
        match port {
            Value::Number(n) => n.as_u64().unwrap_or_else(|| fail(path, "bad port")) as u16,
            Value::String(name) => *run
                .named_ports
                .get(name)
                .unwrap_or_else(|| fail(path, &format!("no containerPort named {name:?}"))),
            _ => fail(path, "bad port"),
        }
    };

    let mut command: Option<Vec<String>> = None;
    let mut args: Option<Vec<String>> = None;
    let mut probes = Vec::new();
    let strings = |v: &Value, p: &str| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| fail(p, "expected a list"))
            .iter()
            .map(|s| str_of(s, p).to_string())
            .collect()
    };
    for (key, value) in c {
        let p = cp(key.as_str());
        match key.as_str() {
            "name" => {
                run.flags.push("--hostname".into());
                run.flags.push(str_of(value, &p).into());
            }
            "image" => run.image = str_of(value, &p).into(),
            // The image is local; a pull policy only decides when the kubelet pulls.
            "imagePullPolicy" => {}
            "command" => command = Some(strings(value, &p)),
            "args" => args = Some(strings(value, &p)),
            "workingDir" => {
                run.flags.push("--workdir".into());
                run.flags.push(str_of(value, &p).into());
            }
            // Read by the kubelet after the container exits; no effect on the process.
            "terminationMessagePath" | "terminationMessagePolicy" => {}
            "ports" => {}
            "env" => {
                for (i, e) in value
                    .as_array()
                    .unwrap_or_else(|| fail(&p, "expected a list"))
                    .iter()
                    .enumerate()
                {
                    let ep = format!("{p}[{i}]");
                    let e = obj(e, &ep);
                    for k in e.keys() {
                        if k != "name" && k != "value" {
                            fail(&format!("{ep}.{k}"), "only literal values are translated");
                        }
                    }
                    let name = str_of(&e["name"], &ep);
                    let val = e.get("value").map_or("", |v| str_of(v, &ep));
                    run.flags.push("--env".into());
                    run.flags.push(format!("{name}={val}"));
                }
            }
            "envFrom" => fail(&p, "needs the Secrets/ConfigMaps it names"),
            "resources" => {
                for (rk, rv) in obj(value, &p) {
                    for (name, q) in obj(rv, &format!("{p}.{rk}")) {
                        let qp = format!("{p}.{rk}.{name}");
                        let q = str_of(q, &qp);
                        match (rk.as_str(), name.as_str()) {
                            ("limits", "memory") => {
                                run.flags.push("--memory".into());
                                run.flags.push(memory_bytes(q).to_string());
                            }
                            ("limits", "cpu") => {
                                run.flags.push("--cpus".into());
                                run.flags
                                    .push(format!("{:.3}", cpu_millis(q) as f64 / 1000.0));
                            }
                            // The kubelet turns CPU requests into cgroup shares.
                            ("requests", "cpu") => {
                                run.flags.push("--cpu-shares".into());
                                run.flags
                                    .push((cpu_millis(q) * 1024 / 1000).max(2).to_string());
                            }
                            // Scheduling only (no memory.min without the MemoryQoS gate).
                            ("requests", "memory") => {}
                            _ => fail(&qp, "resource not translated"),
                        }
                    }
                }
            }
            "livenessProbe" | "readinessProbe" | "startupProbe" => {
                let mut probe = None;
                for (pk, pv) in obj(value, &p) {
                    let pp = format!("{p}.{pk}");
                    match pk.as_str() {
                        "httpGet" => {
                            let mut path = "/".to_string();
                            let mut port = None;
                            for (hk, hv) in obj(pv, &pp) {
                                match hk.as_str() {
                                    "path" => path = str_of(hv, &pp).into(),
                                    "port" => port = Some(resolve(hv, &format!("{pp}.port"))),
                                    "scheme" => {
                                        if str_of(hv, &pp) != "HTTP" {
                                            fail(&format!("{pp}.scheme"), "only HTTP");
                                        }
                                    }
                                    other => fail(&format!("{pp}.{other}"), "not translated"),
                                }
                            }
                            probe = Some(HttpProbe {
                                kind: key.clone(),
                                path,
                                port: port.unwrap_or_else(|| fail(&pp, "no port")),
                            });
                        }
                        // Timing: how often and how patiently the kubelet asks.
                        "periodSeconds"
                        | "failureThreshold"
                        | "successThreshold"
                        | "timeoutSeconds"
                        | "initialDelaySeconds"
                        | "terminationGracePeriodSeconds" => {}
                        other => fail(&pp, &format!("probe handler {other}")),
                    }
                }
                probes.push(probe.unwrap_or_else(|| fail(&p, "no httpGet")));
            }
            "securityContext" => {
                for (sk, sv) in security.merge(obj(value, &p), &p) {
                    let sp = format!("{p}.{sk}");
                    match sk.as_str() {
                        "readOnlyRootFilesystem" => {
                            if bool_of(sv, &sp) {
                                run.flags.push("--read-only".into());
                            }
                        }
                        "allowPrivilegeEscalation" => {
                            if !bool_of(sv, &sp) {
                                run.flags.push("--security-opt".into());
                                run.flags.push("no-new-privileges".into());
                            }
                        }
                        "privileged" => {
                            if bool_of(sv, &sp) {
                                run.flags.push("--privileged".into());
                            }
                        }
                        "capabilities" => {
                            for (ck, cv) in obj(sv, &sp) {
                                let flag = match ck.as_str() {
                                    "drop" => "--cap-drop",
                                    "add" => "--cap-add",
                                    other => fail(&format!("{sp}.{other}"), "unknown field"),
                                };
                                for cap in strings(cv, &format!("{sp}.{ck}")) {
                                    run.flags.push(flag.into());
                                    run.flags.push(cap);
                                }
                            }
                        }
                        other => fail(&format!("{p}.{other}"), "unknown field"),
                    }
                }
            }
            "volumeMounts" => {
                for (i, m) in value
                    .as_array()
                    .unwrap_or_else(|| fail(&p, "expected a list"))
                    .iter()
                    .enumerate()
                {
                    let mp = format!("{p}[{i}]");
                    let mut read_only = false;
                    for (mk, mv) in obj(m, &mp) {
                        match mk.as_str() {
                            "name" | "mountPath" => {}
                            "readOnly" => read_only = bool_of(mv, &mp),
                            other => fail(&format!("{mp}.{other}"), "not translated"),
                        }
                    }
                    let name = str_of(&m["name"], &mp);
                    let target = str_of(&m["mountPath"], &mp);
                    match volumes
                        .get(name)
                        .unwrap_or_else(|| fail(&mp, &format!("no volume named {name}")))
                    {
                        Source::Host(dir, always_ro) => {
                            let ro = read_only || *always_ro;
                            run.flags.push("--mount".into());
                            run.flags.push(format!(
                                "type=bind,source={},target={target}{}",
                                dir.display(),
                                if ro { ",readonly" } else { "" }
                            ));
                            if !ro {
                                run.writable_mounts.insert(target.into(), dir.clone());
                            }
                        }
                        Source::Tmpfs => {
                            run.flags.push("--mount".into());
                            run.flags.push(format!("type=tmpfs,target={target}"));
                        }
                    }
                }
            }
            "stdin" | "tty" => {
                if bool_of(value, &p) {
                    fail(&p, "interactive containers are not translated");
                }
            }
            other => fail(&cp(other), "unknown field"),
        }
    }

    // User: what the kubelet would run; runAsNonRoot is checked as the kubelet checks it.
    let image_user = inspect_image(&run.image)["Config"]["User"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let uid = security
        .run_as_user
        .or_else(|| image_user.split(':').next()?.parse().ok());
    if security.run_as_non_root == Some(true) && uid.is_none_or(|u| u == 0) {
        panic!(
            "runAsNonRoot is set but the container would run as {uid:?} (image user \
             {image_user:?}): the kubelet refuses to start it"
        );
    }
    match (security.run_as_user, security.run_as_group) {
        (Some(u), Some(g)) => run.flags.extend(["--user".into(), format!("{u}:{g}")]),
        (Some(u), None) => run.flags.extend(["--user".into(), u.to_string()]),
        (None, Some(g)) => fail(
            "securityContext.runAsGroup",
            &format!("runAsGroup {g} without runAsUser"),
        ),
        (None, None) => {}
    }
    match security.seccomp.as_deref() {
        // Docker applies its default profile unless told otherwise: the runtime default.
        None | Some("RuntimeDefault") => {}
        Some("Unconfined") => run
            .flags
            .extend(["--security-opt".into(), "seccomp=unconfined".into()]),
        Some(other) => fail("securityContext.seccompProfile.type", other),
    }

    // command replaces the image's ENTRYPOINT (docker takes its first word), args its CMD.
    match command {
        Some(cmd) => {
            let (first, rest) = cmd
                .split_first()
                .unwrap_or_else(|| fail(&cp("command"), "empty"));
            run.flags.push("--entrypoint".into());
            run.flags.push(first.clone());
            run.args.extend(rest.iter().cloned());
            run.args.extend(args.unwrap_or_default());
        }
        None => {
            if let Some(a) = args {
                if a.is_empty() {
                    fail(&cp("args"), "an empty list cannot be passed to docker run");
                }
                run.args = a;
            }
        }
    }
    run.probes = probes;
    if run.image.is_empty() {
        fail(&cp("image"), "missing");
    }
    run
}
