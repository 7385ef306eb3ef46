//! The restricted Pod Security Standard checker (`support/pod_security.rs`) tested on its
//! own: a compliant pod passes, and a pod breaking each rule, in each container list, is
//! caught at the right field path, so a check on the chart or reconcile cannot pass vacuously.

#[path = "support/pod_security.rs"]
mod pod_security;

use std::collections::BTreeSet;

use pod_security::{Rule, assert_restricted, violations};
use serde_json::{Value, json};

/// The smallest pod that passes: pod-level non-root and seccomp, a locked-down container.
fn compliant() -> Value {
    json!({
        "metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/app": "runtime/default"}},
        "spec": {
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
                "seLinuxOptions": {"type": "container_t"}
            },
            "containers": [container()],
            "volumes": [
                {"name": "c", "configMap": {"name": "x"}},
                {"name": "d", "emptyDir": {}},
                {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                {"name": "p", "projected": {"sources": []}},
                {"name": "s", "secret": {"secretName": "x"}}
            ]
        }
    })
}

fn container() -> Value {
    json!({
        "name": "app",
        "image": "app:1",
        "ports": [{"containerPort": 8080}],
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
        }
    })
}

/// Sets the JSON pointer `path` (creating objects on the way) to `value`.
fn set(mut pod: Value, path: &str, value: Value) -> Value {
    let mut node = &mut pod;
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let part = part.replace("~1", "/");
        let last = i + 1 == parts.len();
        node = match node {
            Value::Array(items) => &mut items[part.parse::<usize>().unwrap()],
            Value::Object(map) => {
                if last {
                    map.insert(part, value);
                    return pod;
                }
                map.entry(part.clone()).or_insert_with(|| json!({}))
            }
            other => panic!("cannot descend into {other} at {part}"),
        };
    }
    *node = value;
    pod
}

fn remove(mut pod: Value, path: &str) -> Value {
    let (parent, key) = path.rsplit_once('/').unwrap();
    pod.pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key);
    pod
}

/// `(rule, field path reported, pod breaking it)`, at least one per rule.
fn cases() -> Vec<(Rule, &'static str, Value)> {
    let c0 = "/spec/containers/0/securityContext";
    let with_init = set(compliant(), "/spec/initContainers", json!([container()]));
    let with_ephemeral = set(
        compliant(),
        "/spec/ephemeralContainers",
        json!([container()]),
    );
    vec![
        (
            Rule::HostProcess,
            "spec.securityContext.windowsOptions.hostProcess",
            set(
                compliant(),
                "/spec/securityContext/windowsOptions/hostProcess",
                json!(true),
            ),
        ),
        (
            Rule::HostProcess,
            "spec.containers[0].securityContext.windowsOptions.hostProcess",
            set(
                compliant(),
                &format!("{c0}/windowsOptions/hostProcess"),
                json!(true),
            ),
        ),
        (
            Rule::HostNamespaces,
            "spec.hostNetwork",
            set(compliant(), "/spec/hostNetwork", json!(true)),
        ),
        (
            Rule::HostNamespaces,
            "spec.hostPID",
            set(compliant(), "/spec/hostPID", json!(true)),
        ),
        (
            Rule::HostNamespaces,
            "spec.hostIPC",
            set(compliant(), "/spec/hostIPC", json!(true)),
        ),
        (
            Rule::Privileged,
            "spec.containers[0].securityContext.privileged",
            set(compliant(), &format!("{c0}/privileged"), json!(true)),
        ),
        (
            Rule::Privileged,
            "spec.initContainers[0].securityContext.privileged",
            set(
                with_init.clone(),
                "/spec/initContainers/0/securityContext/privileged",
                json!(true),
            ),
        ),
        (
            Rule::Privileged,
            "spec.ephemeralContainers[0].securityContext.privileged",
            set(
                with_ephemeral.clone(),
                "/spec/ephemeralContainers/0/securityContext/privileged",
                json!(true),
            ),
        ),
        (
            Rule::BaselineCapabilities,
            "spec.containers[0].securityContext.capabilities.add[0]",
            set(
                compliant(),
                &format!("{c0}/capabilities/add"),
                json!(["SYS_ADMIN"]),
            ),
        ),
        (
            Rule::HostPathVolumes,
            "spec.volumes[0].hostPath",
            set(
                compliant(),
                "/spec/volumes",
                json!([{"name": "h", "hostPath": {"path": "/"}}]),
            ),
        ),
        (
            Rule::HostPorts,
            "spec.containers[0].ports[0].hostPort",
            set(
                compliant(),
                "/spec/containers/0/ports/0/hostPort",
                json!(8080),
            ),
        ),
        (
            Rule::AppArmor,
            "spec.securityContext.appArmorProfile.type",
            set(
                compliant(),
                "/spec/securityContext/appArmorProfile",
                json!({"type": "Unconfined"}),
            ),
        ),
        (
            Rule::AppArmor,
            "spec.containers[0].securityContext.appArmorProfile.type",
            set(
                compliant(),
                &format!("{c0}/appArmorProfile"),
                json!({"type": "Unconfined"}),
            ),
        ),
        (
            Rule::AppArmor,
            "metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]",
            set(
                compliant(),
                "/metadata/annotations/container.apparmor.security.beta.kubernetes.io~1app",
                json!("unconfined"),
            ),
        ),
        (
            Rule::SeLinux,
            "spec.securityContext.seLinuxOptions.type",
            set(
                compliant(),
                "/spec/securityContext/seLinuxOptions/type",
                json!("spc_t"),
            ),
        ),
        (
            Rule::SeLinux,
            "spec.containers[0].securityContext.seLinuxOptions.user",
            set(
                compliant(),
                &format!("{c0}/seLinuxOptions/user"),
                json!("system_u"),
            ),
        ),
        (
            Rule::SeLinux,
            "spec.securityContext.seLinuxOptions.role",
            set(
                compliant(),
                "/spec/securityContext/seLinuxOptions/role",
                json!("sysadm_r"),
            ),
        ),
        (
            Rule::ProcMount,
            "spec.containers[0].securityContext.procMount",
            set(compliant(), &format!("{c0}/procMount"), json!("Unmasked")),
        ),
        (
            Rule::SeccompNotUnconfined,
            "spec.securityContext.seccompProfile.type",
            set(
                compliant(),
                "/spec/securityContext/seccompProfile/type",
                json!("Unconfined"),
            ),
        ),
        (
            Rule::SeccompNotUnconfined,
            "spec.containers[0].securityContext.seccompProfile.type",
            set(
                compliant(),
                &format!("{c0}/seccompProfile"),
                json!({"type": "Unconfined"}),
            ),
        ),
        (
            Rule::Sysctls,
            "spec.securityContext.sysctls[0].name",
            set(
                compliant(),
                "/spec/securityContext/sysctls",
                json!([{"name": "kernel.msgmax", "value": "1"}]),
            ),
        ),
        (
            Rule::VolumeTypes,
            "spec.volumes[0].nfs",
            set(
                compliant(),
                "/spec/volumes",
                json!([{"name": "n", "nfs": {"server": "x", "path": "/"}}]),
            ),
        ),
        (
            Rule::PrivilegeEscalation,
            "spec.containers[0].securityContext.allowPrivilegeEscalation",
            remove(compliant(), &format!("{c0}/allowPrivilegeEscalation")),
        ),
        (
            Rule::PrivilegeEscalation,
            "spec.initContainers[0].securityContext.allowPrivilegeEscalation",
            set(
                with_init.clone(),
                "/spec/initContainers/0/securityContext/allowPrivilegeEscalation",
                json!(true),
            ),
        ),
        (
            Rule::RunAsNonRoot,
            "spec.containers[0].securityContext.runAsNonRoot",
            remove(compliant(), "/spec/securityContext/runAsNonRoot"),
        ),
        (
            Rule::RunAsNonRoot,
            "spec.containers[0].securityContext.runAsNonRoot",
            set(compliant(), &format!("{c0}/runAsNonRoot"), json!(false)),
        ),
        (
            Rule::RunAsNonRoot,
            "spec.securityContext.runAsNonRoot",
            set(
                compliant(),
                "/spec/securityContext/runAsNonRoot",
                json!(false),
            ),
        ),
        (
            Rule::RunAsNonRootUser,
            "spec.securityContext.runAsUser",
            set(compliant(), "/spec/securityContext/runAsUser", json!(0)),
        ),
        (
            Rule::RunAsNonRootUser,
            "spec.ephemeralContainers[0].securityContext.runAsUser",
            set(
                with_ephemeral.clone(),
                "/spec/ephemeralContainers/0/securityContext/runAsUser",
                json!(0),
            ),
        ),
        (
            Rule::SeccompRequired,
            "spec.containers[0].securityContext.seccompProfile.type",
            remove(compliant(), "/spec/securityContext/seccompProfile"),
        ),
        (
            Rule::SeccompRequired,
            "spec.initContainers[0].securityContext.seccompProfile.type",
            remove(with_init.clone(), "/spec/securityContext/seccompProfile"),
        ),
        (
            Rule::RestrictedCapabilities,
            "spec.containers[0].securityContext.capabilities.drop",
            set(
                compliant(),
                &format!("{c0}/capabilities/drop"),
                json!(["NET_RAW"]),
            ),
        ),
        (
            Rule::RestrictedCapabilities,
            "spec.containers[0].securityContext.capabilities.add[0]",
            set(
                compliant(),
                &format!("{c0}/capabilities/add"),
                json!(["CHOWN"]),
            ),
        ),
        (
            Rule::RestrictedCapabilities,
            "spec.ephemeralContainers[0].securityContext.capabilities.drop",
            remove(
                with_ephemeral.clone(),
                "/spec/ephemeralContainers/0/securityContext/capabilities",
            ),
        ),
        (
            Rule::ReadOnlyRootFilesystem,
            "spec.containers[0].securityContext.readOnlyRootFilesystem",
            remove(compliant(), &format!("{c0}/readOnlyRootFilesystem")),
        ),
        (
            Rule::ReadOnlyRootFilesystem,
            "spec.initContainers[0].securityContext.readOnlyRootFilesystem",
            set(
                with_init,
                "/spec/initContainers/0/securityContext/readOnlyRootFilesystem",
                json!(false),
            ),
        ),
    ]
}

#[test]
fn a_compliant_pod_passes_in_every_container_list() {
    assert_restricted("compliant pod", &compliant());
    let mut pod = set(compliant(), "/spec/initContainers", json!([container()]));
    pod = set(pod, "/spec/ephemeralContainers", json!([container()]));
    assert_restricted("compliant pod with init and ephemeral containers", &pod);
    // Container-level settings instead of pod-level ones are as good.
    let mut pod = remove(compliant(), "/spec/securityContext/runAsNonRoot");
    pod = remove(pod, "/spec/securityContext/seccompProfile");
    pod = set(
        pod,
        "/spec/containers/0/securityContext/runAsNonRoot",
        json!(true),
    );
    pod = set(
        pod,
        "/spec/containers/0/securityContext/seccompProfile",
        json!({"type": "Localhost", "localhostProfile": "p.json"}),
    );
    assert_restricted("container-level non-root and seccomp", &pod);
}

#[test]
fn each_rule_is_caught_at_its_field() {
    for (rule, path, pod) in cases() {
        let found = violations(&pod);
        assert!(
            found.iter().any(|v| v.rule == rule && v.path == path),
            "{rule:?} at {path} not reported; got {found:?}"
        );
    }
}

#[test]
fn every_rule_has_a_violating_case() {
    let covered: BTreeSet<Rule> = cases().into_iter().map(|(rule, _, _)| rule).collect();
    let all: BTreeSet<Rule> = Rule::ALL.into_iter().collect();
    assert_eq!(covered, all, "rules without a violating pod in cases()");
}

#[test]
fn a_bare_pod_breaks_the_restricted_rules() {
    // What `kubectl run` gives: admitted by baseline, refused by restricted.
    let pod = json!({"spec": {"containers": [{"name": "app", "image": "app:1"}]}});
    let rules: BTreeSet<Rule> = violations(&pod).into_iter().map(|v| v.rule).collect();
    assert_eq!(
        rules,
        BTreeSet::from([
            Rule::PrivilegeEscalation,
            Rule::RunAsNonRoot,
            Rule::SeccompRequired,
            Rule::RestrictedCapabilities,
            Rule::ReadOnlyRootFilesystem,
        ])
    );
}
