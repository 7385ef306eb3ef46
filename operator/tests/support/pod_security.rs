//! Test support: checks a pod template (JSON) against every rule of the Kubernetes Pod
//! Security Standards "restricted" profile (latest), baseline rules included, plus a
//! read-only root filesystem. Shared by the chart test and the reconcile unit tests
//! (included with `#[path]`); not an admission controller and not compiled into the operator.
//!
//! Source: <https://kubernetes.io/docs/concepts/security/pod-security-standards/>. Windows
//! pods (`spec.os.name: windows`) get exemptions there; they are not modelled, the
//! operator runs Linux pods only.

use serde_json::Value;

/// One rule of the profile, with the fields it restricts. `C` stands for every container
/// list: `spec.containers[*]`, `spec.initContainers[*]` and `spec.ephemeralContainers[*]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    // ---- baseline ----
    /// `spec.securityContext.windowsOptions.hostProcess`,
    /// `C.securityContext.windowsOptions.hostProcess`: unset or false.
    HostProcess,
    /// `spec.hostNetwork`, `spec.hostPID`, `spec.hostIPC`: unset or false.
    HostNamespaces,
    /// `C.securityContext.privileged`: unset or false.
    Privileged,
    /// `C.securityContext.capabilities.add`: only the baseline set ([`BASELINE_CAPABILITIES`]).
    BaselineCapabilities,
    /// `spec.volumes[*].hostPath`: unset.
    HostPathVolumes,
    /// `C.ports[*].hostPort`: unset or 0.
    HostPorts,
    /// `spec.securityContext.appArmorProfile.type`, `C.securityContext.appArmorProfile.type`:
    /// unset, `RuntimeDefault` or `Localhost`;
    /// `metadata.annotations["container.apparmor.security.beta.kubernetes.io/*"]`: unset,
    /// `runtime/default` or `localhost/*`.
    AppArmor,
    /// `spec.securityContext.seLinuxOptions.type`, `C.securityContext.seLinuxOptions.type`:
    /// unset, empty or one of [`SELINUX_TYPES`]; `.user` and `.role` of both: unset or empty.
    SeLinux,
    /// `C.securityContext.procMount`: unset or `Default`.
    ProcMount,
    /// `spec.securityContext.seccompProfile.type`, `C.securityContext.seccompProfile.type`:
    /// not `Unconfined`.
    SeccompNotUnconfined,
    /// `spec.securityContext.sysctls[*].name`: only [`SAFE_SYSCTLS`].
    Sysctls,
    // ---- restricted ----
    /// Every `spec.volumes[*]` is one of [`RESTRICTED_VOLUME_TYPES`].
    VolumeTypes,
    /// `C.securityContext.allowPrivilegeEscalation`: false (must be set).
    PrivilegeEscalation,
    /// `spec.securityContext.runAsNonRoot` true, or `C.securityContext.runAsNonRoot` true on
    /// every container; no container sets it false.
    RunAsNonRoot,
    /// `spec.securityContext.runAsUser`, `C.securityContext.runAsUser`: unset or not 0.
    RunAsNonRootUser,
    /// `spec.securityContext.seccompProfile.type` `RuntimeDefault` or `Localhost`, or the same
    /// on every container's `C.securityContext.seccompProfile.type`.
    SeccompRequired,
    /// `C.securityContext.capabilities.drop` contains `ALL`; `.add` only `NET_BIND_SERVICE`.
    RestrictedCapabilities,
    // ---- beyond the profile ----
    /// `C.securityContext.readOnlyRootFilesystem`: true (this project's own requirement).
    ReadOnlyRootFilesystem,
}

impl Rule {
    /// Every rule; each must have a violating example in the checker's own tests.
    // Only those tests read it; the other users of this file include it too.
    #[allow(dead_code)]
    pub const ALL: [Rule; 18] = [
        Rule::HostProcess,
        Rule::HostNamespaces,
        Rule::Privileged,
        Rule::BaselineCapabilities,
        Rule::HostPathVolumes,
        Rule::HostPorts,
        Rule::AppArmor,
        Rule::SeLinux,
        Rule::ProcMount,
        Rule::SeccompNotUnconfined,
        Rule::Sysctls,
        Rule::VolumeTypes,
        Rule::PrivilegeEscalation,
        Rule::RunAsNonRoot,
        Rule::RunAsNonRootUser,
        Rule::SeccompRequired,
        Rule::RestrictedCapabilities,
        Rule::ReadOnlyRootFilesystem,
    ];
}

/// Capabilities the baseline profile lets a container add.
pub const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// SELinux types the baseline profile allows (besides unset/empty).
pub const SELINUX_TYPES: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// The "safe" sysctls of the baseline profile.
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Volume sources the restricted profile allows.
pub const RESTRICTED_VOLUME_TYPES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// One broken rule, at the field path that breaks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    pub path: String,
}

struct Found(Vec<Violation>);

impl Found {
    fn add(&mut self, rule: Rule, path: impl Into<String>) {
        self.0.push(Violation {
            rule,
            path: path.into(),
        });
    }
}

fn is_true(v: &Value) -> bool {
    v.as_bool() == Some(true)
}

/// Every violation in `template`, a pod template `{"metadata": .., "spec": ..}` (a Deployment's
/// `spec.template`) or a Pod. Empty when the pod is admitted under `restricted`.
pub fn violations(template: &Value) -> Vec<Violation> {
    let mut found = Found(Vec::new());
    let spec = &template["spec"];
    let psc = &spec["securityContext"];

    // Pod level.
    if is_true(&psc["windowsOptions"]["hostProcess"]) {
        found.add(
            Rule::HostProcess,
            "spec.securityContext.windowsOptions.hostProcess",
        );
    }
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if is_true(&spec[field]) {
            found.add(Rule::HostNamespaces, format!("spec.{field}"));
        }
    }
    for (i, volume) in array(&spec["volumes"]).iter().enumerate() {
        let Some(fields) = volume.as_object() else {
            continue;
        };
        if fields.contains_key("hostPath") {
            found.add(Rule::HostPathVolumes, format!("spec.volumes[{i}].hostPath"));
        }
        for source in fields.keys().filter(|k| k.as_str() != "name") {
            if !RESTRICTED_VOLUME_TYPES.contains(&source.as_str()) {
                found.add(Rule::VolumeTypes, format!("spec.volumes[{i}].{source}"));
            }
        }
    }
    if let Some(annotations) = template["metadata"]["annotations"].as_object() {
        for (key, value) in annotations {
            if key.starts_with("container.apparmor.security.beta.kubernetes.io/") {
                let v = value.as_str().unwrap_or_default();
                if v != "runtime/default" && !v.starts_with("localhost/") {
                    found.add(Rule::AppArmor, format!("metadata.annotations[{key}]"));
                }
            }
        }
    }
    for (i, sysctl) in array(&psc["sysctls"]).iter().enumerate() {
        let name = sysctl["name"].as_str().unwrap_or_default();
        if !SAFE_SYSCTLS.contains(&name) {
            found.add(
                Rule::Sysctls,
                format!("spec.securityContext.sysctls[{i}].name"),
            );
        }
    }
    check_shared(&mut found, psc, "spec.securityContext");
    let pod_non_root = is_true(&psc["runAsNonRoot"]);
    let pod_seccomp = seccomp_confined(&psc["seccompProfile"]["type"]);
    if psc["runAsNonRoot"].as_bool() == Some(false) {
        found.add(Rule::RunAsNonRoot, "spec.securityContext.runAsNonRoot");
    }

    // Container level, every list.
    for list in CONTAINER_LISTS {
        for (i, container) in array(&spec[list]).iter().enumerate() {
            let at = format!("spec.{list}[{i}]");
            let sc = &container["securityContext"];
            let sc_at = format!("{at}.securityContext");
            check_shared(&mut found, sc, &sc_at);
            if is_true(&sc["windowsOptions"]["hostProcess"]) {
                found.add(
                    Rule::HostProcess,
                    format!("{sc_at}.windowsOptions.hostProcess"),
                );
            }
            if is_true(&sc["privileged"]) {
                found.add(Rule::Privileged, format!("{sc_at}.privileged"));
            }
            let added = array(&sc["capabilities"]["add"]);
            for (j, cap) in added.iter().enumerate() {
                let cap = cap.as_str().unwrap_or_default();
                if !BASELINE_CAPABILITIES.contains(&cap) {
                    found.add(
                        Rule::BaselineCapabilities,
                        format!("{sc_at}.capabilities.add[{j}]"),
                    );
                }
                if cap != "NET_BIND_SERVICE" {
                    found.add(
                        Rule::RestrictedCapabilities,
                        format!("{sc_at}.capabilities.add[{j}]"),
                    );
                }
            }
            if !array(&sc["capabilities"]["drop"])
                .iter()
                .any(|c| c.as_str() == Some("ALL"))
            {
                found.add(
                    Rule::RestrictedCapabilities,
                    format!("{sc_at}.capabilities.drop"),
                );
            }
            for (j, port) in array(&container["ports"]).iter().enumerate() {
                if port["hostPort"].as_i64().is_some_and(|p| p != 0) {
                    found.add(Rule::HostPorts, format!("{at}.ports[{j}].hostPort"));
                }
            }
            match sc["procMount"].as_str() {
                None | Some("Default") => {}
                Some(_) => found.add(Rule::ProcMount, format!("{sc_at}.procMount")),
            }
            if sc["allowPrivilegeEscalation"].as_bool() != Some(false) {
                found.add(
                    Rule::PrivilegeEscalation,
                    format!("{sc_at}.allowPrivilegeEscalation"),
                );
            }
            match sc["runAsNonRoot"].as_bool() {
                Some(true) => {}
                Some(false) => found.add(Rule::RunAsNonRoot, format!("{sc_at}.runAsNonRoot")),
                None if pod_non_root => {}
                None => found.add(Rule::RunAsNonRoot, format!("{sc_at}.runAsNonRoot")),
            }
            let own_seccomp = &sc["seccompProfile"]["type"];
            if !(seccomp_confined(own_seccomp) || own_seccomp.is_null() && pod_seccomp) {
                found.add(
                    Rule::SeccompRequired,
                    format!("{sc_at}.seccompProfile.type"),
                );
            }
            if !is_true(&sc["readOnlyRootFilesystem"]) {
                found.add(
                    Rule::ReadOnlyRootFilesystem,
                    format!("{sc_at}.readOnlyRootFilesystem"),
                );
            }
        }
    }
    found.0
}

/// Rules with the same shape at pod and container level: AppArmor, SELinux, seccomp not
/// Unconfined, runAsUser not 0.
fn check_shared(found: &mut Found, sc: &Value, at: &str) {
    match sc["appArmorProfile"]["type"].as_str() {
        None | Some("RuntimeDefault") | Some("Localhost") => {}
        Some(_) => found.add(Rule::AppArmor, format!("{at}.appArmorProfile.type")),
    }
    let selinux = &sc["seLinuxOptions"];
    match selinux["type"].as_str() {
        None | Some("") => {}
        Some(t) if SELINUX_TYPES.contains(&t) => {}
        Some(_) => found.add(Rule::SeLinux, format!("{at}.seLinuxOptions.type")),
    }
    for field in ["user", "role"] {
        if selinux[field].as_str().is_some_and(|v| !v.is_empty()) {
            found.add(Rule::SeLinux, format!("{at}.seLinuxOptions.{field}"));
        }
    }
    if sc["seccompProfile"]["type"].as_str() == Some("Unconfined") {
        found.add(
            Rule::SeccompNotUnconfined,
            format!("{at}.seccompProfile.type"),
        );
    }
    if sc["runAsUser"].as_i64() == Some(0) {
        found.add(Rule::RunAsNonRootUser, format!("{at}.runAsUser"));
    }
}

fn seccomp_confined(kind: &Value) -> bool {
    matches!(kind.as_str(), Some("RuntimeDefault") | Some("Localhost"))
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Panics with every violation, naming `what` (e.g. `chart operator Deployment`).
pub fn assert_restricted(what: &str, template: &Value) {
    let found = violations(template);
    assert!(
        found.is_empty(),
        "{what} breaks the restricted Pod Security Standard:\n{}\n{template:#}",
        found
            .iter()
            .map(|v| format!("  {:?} at {}", v.rule, v.path))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
