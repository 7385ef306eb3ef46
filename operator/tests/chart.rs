//! The Helm chart, linted (strict) and rendered by the real Helm SDK (PyPI `helm-python-sdk`,
//! found through `SPANSINK_PYTHON`); every object parses as its Kubernetes type and RBAC equals rbac.rs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::Deserialize;
use serde_json::{Value, json};
use spansink_operator::rbac::{self, Rule};

#[path = "support/pod_security.rs"]
mod pod_security;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn python() -> String {
    match std::env::var("SPANSINK_PYTHON") {
        Ok(p) if Path::new(&p).exists() => p,
        _ => panic!(
            "SPANSINK_PYTHON must name a Python with the Helm SDK installed, e.g.\n  \
             python3 -m venv ~/.cache/spansink-venv && ~/.cache/spansink-venv/bin/pip install helm-python-sdk\n  \
             export SPANSINK_PYTHON=~/.cache/spansink-venv/bin/python\n\
             (.ci/run does this); the chart tests cannot run without it"
        ),
    }
}

/// Lint + render; `Err` carries Helm's error (e.g. a values.schema.json violation).
fn render(values: Value, namespace: &str) -> Result<(Value, Vec<Value>), String> {
    let out = Command::new(python())
        .arg(repo_root().join("operator/tests/helm_render.py"))
        .arg(repo_root().join("charts/spansink"))
        .arg(values.to_string())
        .arg(namespace)
        .output()
        .expect("cannot start SPANSINK_PYTHON");
    assert!(
        out.status.success(),
        "helm_render.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    if let Some(e) = result.get("error") {
        return Err(e.as_str().unwrap_or_default().to_string());
    }
    let mut objects = Vec::new();
    for (file, text) in result["manifests"].as_object().unwrap() {
        if file.ends_with("NOTES.txt") {
            continue;
        }
        for doc in serde_yaml::Deserializer::from_str(text.as_str().unwrap()) {
            let v = Value::deserialize(doc).unwrap();
            if !v.is_null() {
                objects.push(v);
            }
        }
    }
    Ok((result["lint"].clone(), objects))
}

fn assert_lint_clean(lint: &Value) {
    assert_eq!(lint["errors"], json!([]), "{lint}");
    let serious: Vec<&Value> = lint["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64().unwrap_or(0) > 1) // 1 = INFO
        .collect();
    assert!(serious.is_empty(), "helm lint --strict: {serious:?}");
}

/// Parses every object as its k8s-openapi type; returns them by kind.
fn typed(objects: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for o in objects {
        let kind = o["kind"].as_str().unwrap().to_string();
        let parsed = match kind.as_str() {
            "Deployment" => serde_json::from_value::<Deployment>(o.clone()).map(|_| ()),
            "Service" => serde_json::from_value::<Service>(o.clone()).map(|_| ()),
            "ServiceAccount" => serde_json::from_value::<ServiceAccount>(o.clone()).map(|_| ()),
            "ClusterRole" => serde_json::from_value::<ClusterRole>(o.clone()).map(|_| ()),
            "ClusterRoleBinding" => {
                serde_json::from_value::<ClusterRoleBinding>(o.clone()).map(|_| ())
            }
            "Role" => serde_json::from_value::<Role>(o.clone()).map(|_| ()),
            "RoleBinding" => serde_json::from_value::<RoleBinding>(o.clone()).map(|_| ()),
            // Not a k8s-openapi type: check the parts the Prometheus Operator needs.
            "ServiceMonitor" => {
                assert!(
                    o["spec"]["selector"]["matchLabels"].is_object()
                        && o["spec"]["endpoints"][0]["port"] == "metrics"
                );
                Ok(())
            }
            other => panic!("unexpected kind {other} in the chart"),
        };
        parsed.unwrap_or_else(|e| panic!("{kind} does not parse as its Kubernetes type: {e}\n{o}"));
        by_kind.entry(kind).or_default().push(o.clone());
    }
    by_kind
}

fn rules_of(role: &Value) -> Vec<(String, Vec<String>, Vec<String>)> {
    let rules: Vec<PolicyRule> = serde_json::from_value(role["rules"].clone()).unwrap();
    rules
        .into_iter()
        .map(|r| {
            (
                r.api_groups.unwrap().join(","),
                r.resources.unwrap(),
                r.verbs,
            )
        })
        .collect()
}

fn table(rules: &[Rule]) -> Vec<(String, Vec<String>, Vec<String>)> {
    rules
        .iter()
        .map(|r| {
            (
                r.api_group.to_string(),
                r.resources.iter().map(|s| s.to_string()).collect(),
                r.verbs.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn committed_rules_template_equals_generated() {
    let path = repo_root().join("charts/spansink/templates/_rules.tpl");
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == rbac::helm_rules_template(),
        "charts/spansink/templates/_rules.tpl is out of date; regenerate it with\n  \
         cargo run -q -p spansink-operator --bin crdgen -- rbac > charts/spansink/templates/_rules.tpl"
    );
}

#[test]
fn default_values_watch_all_namespaces_with_a_cluster_role() {
    let (lint, objects) = render(json!({}), "spansink-system").unwrap();
    assert_lint_clean(&lint);
    let by_kind = typed(&objects);
    assert_eq!(by_kind["ClusterRole"].len(), 1);
    assert_eq!(
        rules_of(&by_kind["ClusterRole"][0]),
        table(rbac::WATCHED_NAMESPACE_RULES)
    );
    assert_eq!(by_kind["ClusterRoleBinding"].len(), 1);
    // Leader election: a Role in the release namespace only.
    assert_eq!(by_kind["Role"].len(), 1);
    assert_eq!(
        by_kind["Role"][0]["metadata"]["namespace"],
        "spansink-system"
    );
    assert_eq!(
        rules_of(&by_kind["Role"][0]),
        table(rbac::LEADER_ELECTION_RULES)
    );
    assert!(!by_kind.contains_key("ServiceMonitor"));

    let d = &by_kind["Deployment"][0];
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(env["SPANSINK_WATCH_NAMESPACES"]["value"], "");
    assert_eq!(
        env["SPANSINK_EXPORTER_IMAGE"]["value"],
        "ghcr.io/spansink/spansink-exporter:0.1.0"
    );
    assert_eq!(
        env["SPANSINK_EXPORTER_IMAGE_PULL_POLICY"]["value"],
        "IfNotPresent"
    );
    assert!(!env.contains_key("SPANSINK_EXPORTER_IMAGE_PULL_SECRETS"));
    assert_eq!(env["SPANSINK_LEADER_ELECTION"]["value"], "true");
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
}

#[test]
fn watch_namespaces_gives_a_role_per_namespace_and_no_cluster_role() {
    let values =
        json!({"watchNamespaces": ["team-a", "team-b"], "serviceMonitor": {"enabled": true}});
    let (lint, objects) = render(values, "ops").unwrap();
    assert_lint_clean(&lint);
    let by_kind = typed(&objects);
    assert!(!by_kind.contains_key("ClusterRole") && !by_kind.contains_key("ClusterRoleBinding"));
    let mut watched: Vec<&str> = by_kind["Role"]
        .iter()
        .filter(|r| rules_of(r) == table(rbac::WATCHED_NAMESPACE_RULES))
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    watched.sort();
    assert_eq!(watched, ["team-a", "team-b"]);
    assert_eq!(
        by_kind["Role"].len(),
        3,
        "two watched namespaces + leader election"
    );
    for binding in &by_kind["RoleBinding"] {
        assert_eq!(binding["subjects"][0]["namespace"], "ops");
    }
    assert_eq!(by_kind["ServiceMonitor"].len(), 1);
    let c = &by_kind["Deployment"][0]["spec"]["template"]["spec"]["containers"][0];
    let ns_env = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SPANSINK_WATCH_NAMESPACES")
        .unwrap();
    assert_eq!(ns_env["value"], "team-a,team-b");
}

#[test]
fn no_leader_election_means_no_lease_role_and_no_rbac_when_disabled() {
    let (_, objects) = render(json!({"leaderElection": {"enabled": false}}), "ops").unwrap();
    assert!(!typed(&objects).contains_key("Role"));
    let (_, objects) = render(json!({"rbac": {"create": false}}), "ops").unwrap();
    let by_kind = typed(&objects);
    for kind in ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"] {
        assert!(
            !by_kind.contains_key(kind),
            "{kind} rendered with rbac.create=false"
        );
    }
}

#[test]
fn values_schema_refuses_bad_values() {
    for bad in [
        json!({"logFormat": "xml"}),
        json!({"watchNamespaces": ["Not_A_Namespace"]}),
        json!({"replicaCount": 0}),
        json!({"leaderElection": {"enabled": "yes"}}),
        json!({"colour": "red"}),
    ] {
        let result = render(bad.clone(), "ops");
        assert!(result.is_err(), "chart accepted {bad}");
    }
}

fn env_of(deployment: &Value) -> BTreeMap<String, Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

/// `(version, appVersion)` of charts/spansink/Chart.yaml.
fn chart_versions() -> (String, String) {
    let text = std::fs::read_to_string(repo_root().join("charts/spansink/Chart.yaml")).unwrap();
    let chart: Value = serde_yaml::from_str(&text).unwrap();
    (
        chart["version"].as_str().unwrap().to_string(),
        chart["appVersion"].as_str().unwrap().to_string(),
    )
}

#[test]
fn default_image_tags_follow_app_version_and_match_the_release_images() {
    let (version, app_version) = chart_versions();
    // README's build command tags the images with the crate version; the chart must
    // point at exactly those.
    assert_eq!(
        app_version,
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml appVersion"
    );
    assert_eq!(version, env!("CARGO_PKG_VERSION"), "Chart.yaml version");
    let (_, objects) = render(json!({}), "ops").unwrap();
    let d = &typed(&objects)["Deployment"][0];
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("ghcr.io/spansink/spansink-operator:{app_version}")
    );
    assert_eq!(
        env_of(d)["SPANSINK_EXPORTER_IMAGE"]["value"],
        format!("ghcr.io/spansink/spansink-exporter:{app_version}")
    );
    // An explicit tag wins over appVersion.
    let values = json!({"image": {"repository": "r.local/op", "tag": "dev"},
                        "exporter": {"image": {"repository": "r.local/ex", "tag": "dev2"}}});
    let (_, objects) = render(values, "ops").unwrap();
    let d = &typed(&objects)["Deployment"][0];
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "r.local/op:dev"
    );
    assert_eq!(
        env_of(d)["SPANSINK_EXPORTER_IMAGE"]["value"],
        "r.local/ex:dev2"
    );
}

#[test]
fn exporter_pull_policy_and_secrets_reach_the_operator_flags() {
    let values = json!({"exporter": {"image": {"pullPolicy": "Always"},
                                     "imagePullSecrets": [{"name": "regcred"}, {"name": "mirror"}]}});
    let (lint, objects) = render(values, "ops").unwrap();
    assert_lint_clean(&lint);
    let env = env_of(&typed(&objects)["Deployment"][0]);
    assert_eq!(
        env["SPANSINK_EXPORTER_IMAGE_PULL_POLICY"]["value"],
        "Always"
    );
    assert_eq!(
        env["SPANSINK_EXPORTER_IMAGE_PULL_SECRETS"]["value"],
        "regcred,mirror"
    );
    // Empty pull policy: the operator leaves Kubernetes' default.
    let (_, objects) = render(json!({"exporter": {"image": {"pullPolicy": ""}}}), "ops").unwrap();
    assert!(
        !env_of(&typed(&objects)["Deployment"][0])
            .contains_key("SPANSINK_EXPORTER_IMAGE_PULL_POLICY")
    );
    for bad in [
        json!({"exporter": {"image": {"pullPolicy": "Sometimes"}}}),
        json!({"exporter": {"imagePullSecrets": ["regcred"]}}),
        json!({"exporterImage": {"repository": "old/key"}}),
    ] {
        assert!(render(bad.clone(), "ops").is_err(), "chart accepted {bad}");
    }
}

#[test]
fn operator_pod_passes_the_restricted_pod_security_standard() {
    let extra = json!({
        "replicaCount": 2,
        "imagePullSecrets": [{"name": "regcred"}],
        "podAnnotations": {"example.com/team": "platform"},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "nodeSelector": {"pool": "system"},
        "tolerations": [{"key": "system", "operator": "Exists", "effect": "NoSchedule"}],
        "watchNamespaces": ["team-a"],
        "serviceMonitor": {"enabled": true},
        "podSecurityContext": {"fsGroup": 65532},
        "securityContext": {"runAsUser": 65532},
        "exporter": {"imagePullSecrets": [{"name": "regcred"}]}
    });
    for (what, values) in [
        ("default values", json!({})),
        ("values with extra settings", extra),
    ] {
        let (lint, objects) = render(values, "ops").unwrap();
        assert_lint_clean(&lint);
        let by_kind = typed(&objects);
        let d = &by_kind["Deployment"][0];
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
            true
        );
        pod_security::assert_restricted(
            &format!("chart operator Deployment ({what})"),
            &d["spec"]["template"],
        );
    }
}

#[test]
fn values_cannot_loosen_the_restricted_security_contexts() {
    for bad in [
        json!({"securityContext": {"allowPrivilegeEscalation": true}}),
        json!({"securityContext": {"readOnlyRootFilesystem": false}}),
        json!({"securityContext": {"privileged": true}}),
        json!({"securityContext": {"runAsUser": 0}}),
        json!({"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}),
        json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}),
        json!({"podSecurityContext": {"runAsNonRoot": false}}),
        json!({"podSecurityContext": {"seccompProfile": {"type": "Unconfined"}}}),
        // null deletes a default key in Helm.
        json!({"podSecurityContext": {"seccompProfile": null}}),
    ] {
        assert!(render(bad.clone(), "ops").is_err(), "chart accepted {bad}");
    }
}
