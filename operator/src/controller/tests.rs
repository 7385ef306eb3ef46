//! The real kube Controller driven against the in-process fake API server, through the
//! issue's scenario; every API call it makes is checked against the RBAC table.

use std::collections::BTreeSet;
use std::time::Duration;

use kube::runtime::events::Reporter;
use serde_json::{Value, json};

use super::*;
use crate::fake_apiserver::{FakeApiServer, Kind};
use crate::fixtures::FILE_PIPELINE_BIG_BATCH;
use crate::rbac;
use crate::reconcile::CONFIG_HASH_ANNOTATION;

fn kind(group: &str, version: &str, plural: &str) -> Kind {
    Kind {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
    }
}

fn spansinks() -> Kind {
    kind("spansink.dev", "v1alpha1", "spansinks")
}
fn configmaps() -> Kind {
    kind("", "v1", "configmaps")
}
fn deployments() -> Kind {
    kind("apps", "v1", "deployments")
}
fn services() -> Kind {
    kind("", "v1", "services")
}
fn hpas() -> Kind {
    kind("autoscaling", "v2", "horizontalpodautoscalers")
}
fn events() -> Kind {
    kind("events.k8s.io", "v1", "events")
}

/// Polls `check` until it returns Some, letting the paused clock run between polls.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    for _ in 0..2000 {
        if let Some(v) = check() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn condition(sink: &Value, type_: &str) -> Option<(String, String)> {
    sink["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

fn hash_of(deployment: &Value) -> String {
    deployment["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
        .as_str()
        .unwrap()
        .to_string()
}

/// What the deployment controller and kubelet would report once every pod is up.
fn mark_rolled_out(fake: &FakeApiServer) {
    let mut d = fake.get(&deployments(), "team-a", "traces").unwrap();
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(2);
    d["status"] = json!({"observedGeneration": d["metadata"]["generation"], "replicas": replicas,
        "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas});
    fake.put(&deployments(), d);
}

fn update_spec(fake: &FakeApiServer, change: impl FnOnce(&mut SpanSink)) {
    let stored = fake.get(&spansinks(), "team-a", "traces").unwrap();
    let mut sink: SpanSink = serde_json::from_value(stored.clone()).unwrap();
    change(&mut sink);
    let mut value = serde_json::to_value(&sink).unwrap();
    value["status"] = stored["status"].clone();
    fake.put(&spansinks(), value);
}

fn start(
    fake: &FakeApiServer,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let client = fake.client();
    let reporter = Reporter {
        controller: "spansink-operator".into(),
        instance: Some("test".into()),
    };
    let ctx = Context::new(
        client,
        reporter,
        "spansink:test".into(),
        Default::default(),
        Metrics::new(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = tokio::spawn(run(ctx, Scope::Namespace("team-a".into()), shutdown));
    (task, stop)
}

/// Asks the controller to stop and waits for it.
async fn stop_controller(
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
) {
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
}

fn owned_by(object: &Value, uid: &str) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["uid"] == uid && r["controller"] == true && r["kind"] == "SpanSink")
        })
}

#[tokio::test(start_paused = true)]
async fn controller_loop_follows_the_spansink_through_its_life() {
    let fake = FakeApiServer::default();
    let mut sink = SpanSink::fixture().with_autoscaling(2, 4);
    sink.metadata.uid = None; // the server assigns it
    let created = fake.put(&spansinks(), serde_json::to_value(&sink).unwrap());
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    let (task, stop) = start(&fake);

    // 1. Children appear, each controlled by the SpanSink.
    let deployment = eventually("children", || fake.get(&deployments(), "team-a", "traces")).await;
    let config_map = eventually("configmap", || {
        fake.get(&configmaps(), "team-a", "traces-config")
    })
    .await;
    let service = eventually("service", || fake.get(&services(), "team-a", "traces")).await;
    let headless = eventually("headless service", || {
        fake.get(&services(), "team-a", "traces-headless")
    })
    .await;
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let hpa = eventually("hpa", || fake.get(&hpas(), "team-a", "traces")).await;
    for child in [&deployment, &config_map, &service, &headless, &hpa] {
        assert!(owned_by(child, &uid), "not owned: {child}");
    }
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "the HPA owns replicas"
    );
    let first_hash = hash_of(&deployment);

    // 2. Pods come up: Ready with the hash and the endpoints.
    mark_rolled_out(&fake);
    let status = eventually("Ready=True", || {
        let s = fake.get(&spansinks(), "team-a", "traces")?;
        (condition(&s, "Ready")?.0 == "True").then_some(s)
    })
    .await;
    assert_eq!(status["status"]["configHash"], first_hash);
    assert_eq!(status["status"]["observedGeneration"], 1);
    assert_eq!(
        status["status"]["endpoints"]["grpc"],
        "http://traces.team-a.svc:4317"
    );

    // 3. The pipeline changes: new ConfigMap content, new hash on the pod template.
    update_spec(&fake, |s| {
        s.spec.pipeline = crate::fixtures::pipeline(FILE_PIPELINE_BIG_BATCH)
    });
    let second_hash = eventually("new hash", || {
        let d = fake.get(&deployments(), "team-a", "traces")?;
        let h = hash_of(&d);
        (h != first_hash).then_some(h)
    })
    .await;
    let cm = fake.get(&configmaps(), "team-a", "traces-config").unwrap();
    assert!(
        cm["data"]["config.yaml"]
            .as_str()
            .unwrap()
            .contains("max_spans: 1024")
    );
    eventually("status hash", || {
        let s = fake.get(&spansinks(), "team-a", "traces")?;
        (s["status"]["configHash"] == second_hash.as_str()).then_some(())
    })
    .await;

    // 4. An invalid pipeline: ConfigValid=False naming the field, a Warning, children untouched.
    let before_cm = fake.get(&configmaps(), "team-a", "traces-config").unwrap();
    let before_deploy = fake.get(&deployments(), "team-a", "traces").unwrap();
    update_spec(&fake, |s| {
        s.spec.pipeline = SpanSink::fixture().with_dangling_fallback().spec.pipeline;
    });
    let (_, message) = eventually("ConfigValid=False", || {
        let s = fake.get(&spansinks(), "team-a", "traces")?;
        condition(&s, "ConfigValid").filter(|c| c.0 == "False")
    })
    .await;
    assert!(
        message.contains("spec.pipeline.sinks.main.fallback"),
        "{message}"
    );
    let warning = event_with_reason(&fake, "InvalidPipeline").await;
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["regarding"]["name"], "traces");
    assert_eq!(
        fake.get(&configmaps(), "team-a", "traces-config").unwrap(),
        before_cm
    );
    assert_eq!(
        fake.get(&deployments(), "team-a", "traces").unwrap(),
        before_deploy
    );
    let status = fake.get(&spansinks(), "team-a", "traces").unwrap();
    assert_eq!(
        status["status"]["configHash"], second_hash,
        "the running config is still reported"
    );

    // 5. Fixed pipeline and autoscaling removed: the HPA is deleted, replicas come back.
    update_spec(&fake, |s| {
        s.spec.pipeline = crate::fixtures::pipeline(FILE_PIPELINE_BIG_BATCH);
        s.spec.autoscaling = None;
        s.spec.replicas = Some(2);
    });
    eventually("HPA deleted", || {
        fake.get(&hpas(), "team-a", "traces")
            .is_none()
            .then_some(())
    })
    .await;
    let d = fake.get(&deployments(), "team-a", "traces").unwrap();
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        hash_of(&d),
        second_hash,
        "same pipeline, same hash: no needless rollout"
    );
    eventually("ConfigValid=True again", || {
        let s = fake.get(&spansinks(), "team-a", "traces")?;
        (condition(&s, "ConfigValid")?.0 == "True").then_some(())
    })
    .await;

    // Every call the controller made is covered by the chart's RBAC.
    let mut uncovered: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| {
            !rbac::allowed(
                rbac::WATCHED_NAMESPACE_RULES,
                &c.group,
                &c.resource,
                &c.verb,
            )
        })
        .collect();
    uncovered.dedup();
    assert!(
        uncovered.is_empty(),
        "calls not allowed by rbac.rs: {uncovered:?}"
    );
    assert!(
        fake.calls()
            .iter()
            .all(|c| c.namespace.as_deref() == Some("team-a")),
        "a namespaced controller stays in its namespace"
    );

    stop_controller(task, stop).await;
}

#[tokio::test(start_paused = true)]
async fn unmanaged_spansink_children_are_left_alone() {
    let fake = FakeApiServer::default();
    let mut sink = SpanSink::fixture();
    sink.metadata.uid = None;
    fake.put(&spansinks(), serde_json::to_value(&sink).unwrap());
    let (task, stop) = start(&fake);
    let deployment = eventually("deployment", || {
        fake.get(&deployments(), "team-a", "traces")
    })
    .await;

    // Someone edits the Deployment by hand and marks the SpanSink unmanaged.
    update_spec(&fake, |s| {
        s.spec.management_state = crate::crd::ManagementState::Unmanaged
    });
    let mut edited = deployment.clone();
    edited["spec"]["replicas"] = json!(7);
    fake.put(&deployments(), edited);
    eventually("Ready=False Unmanaged", || {
        let s = fake.get(&spansinks(), "team-a", "traces")?;
        condition(&s, "Ready").filter(|c| c.1.contains("unmanaged"))
    })
    .await;
    update_spec(&fake, |s| {
        s.spec.pipeline = crate::fixtures::pipeline(FILE_PIPELINE_BIG_BATCH)
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let d = fake.get(&deployments(), "team-a", "traces").unwrap();
    assert_eq!(d["spec"]["replicas"], 7, "manual edit kept");
    assert_eq!(
        hash_of(&d),
        hash_of(&deployment),
        "config not rolled out while unmanaged"
    );

    stop_controller(task, stop).await;
}

#[tokio::test(start_paused = true)]
async fn service_monitor_follows_discovery_and_the_spec() {
    let monitors = kind("monitoring.coreos.com", "v1", "servicemonitors");
    let fake = FakeApiServer::default();
    let mut sink = SpanSink::fixture().with_service_monitor();
    sink.metadata.uid = None;
    fake.put(&spansinks(), serde_json::to_value(&sink).unwrap());
    let (task, stop) = start(&fake);

    // Not served: the status says why, nothing is created.
    let (_, why) = eventually("ServiceMonitor=False", || {
        let s = fake.get(&spansinks(), "team-a", "traces")?;
        condition(&s, "ServiceMonitor").filter(|c| c.0 == "False")
    })
    .await;
    assert!(why.contains("monitoring.coreos.com/v1"), "{why}");
    assert!(fake.get(&monitors, "team-a", "traces").is_none());
    stop_controller(task, stop).await;

    // Served (a fresh operator, as after installing the Prometheus Operator): created...
    fake.serve_service_monitors();
    let (task, stop) = start(&fake);
    let sm = eventually("ServiceMonitor", || fake.get(&monitors, "team-a", "traces")).await;
    assert_eq!(sm["kind"], "ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    // ...and removed when disabled.
    update_spec(&fake, |s| s.spec.service_monitor.enabled = false);
    eventually("ServiceMonitor deleted", || {
        fake.get(&monitors, "team-a", "traces")
            .is_none()
            .then_some(())
    })
    .await;
    let uncovered: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| {
            !rbac::allowed(
                rbac::WATCHED_NAMESPACE_RULES,
                &c.group,
                &c.resource,
                &c.verb,
            )
        })
        .collect();
    assert!(uncovered.is_empty(), "{uncovered:?}");
    stop_controller(task, stop).await;
}

fn pdbs() -> Kind {
    kind("policy", "v1", "poddisruptionbudgets")
}

/// An object someone else made under a child's name: no owner reference, no operator label.
fn foreign(kind_: &str, api_version: &str, name: &str, spec: Value) -> Value {
    let mut object = json!({"apiVersion": api_version, "kind": kind_,
        "metadata": {"name": name, "namespace": "team-a", "labels": {"app": "theirs"}}});
    for (k, v) in spec.as_object().unwrap() {
        object[k] = v.clone();
    }
    object
}

#[tokio::test(start_paused = true)]
async fn objects_the_spansink_does_not_control_are_never_taken_over() {
    let fake = FakeApiServer::default();
    let theirs = [
        (
            configmaps(),
            foreign(
                "ConfigMap",
                "v1",
                "traces-config",
                json!({"data": {"k": "v"}}),
            ),
        ),
        (
            services(),
            foreign(
                "Service",
                "v1",
                "traces",
                json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "theirs"}}}),
            ),
        ),
        (
            deployments(),
            foreign(
                "Deployment",
                "apps/v1",
                "traces",
                json!({"spec": {"selector": {"matchLabels": {"app": "theirs"}},
                "template": {"metadata": {"labels": {"app": "theirs"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}),
            ),
        ),
        (
            pdbs(),
            foreign(
                "PodDisruptionBudget",
                "policy/v1",
                "traces",
                json!({"spec": {"maxUnavailable": 3}}),
            ),
        ),
    ];
    let before: Vec<Value> = theirs.iter().map(|(k, o)| fake.put(k, o.clone())).collect();
    let mut sink = SpanSink::fixture().with_max_unavailable(1);
    sink.metadata.uid = None;
    fake.put(&spansinks(), serde_json::to_value(&sink).unwrap());
    let (task, stop) = start(&fake);

    let (_, message) = eventually("Ready=False NameConflict", || {
        let s = fake.get(&spansinks(), "team-a", "traces")?;
        let ready = s["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready" && c["reason"] == "NameConflict")?
            .clone();
        Some((
            ready["status"].clone(),
            ready["message"].as_str()?.to_string(),
        ))
    })
    .await;
    for named in [
        "ConfigMap team-a/traces-config",
        "Service team-a/traces",
        "Deployment team-a/traces",
        "PodDisruptionBudget team-a/traces",
    ] {
        assert!(message.contains(named), "{named} not in {message}");
    }
    let warning = event_with_reason(&fake, "NameConflict").await;
    assert_eq!(warning["type"], "Warning");
    // A few retries later, still untouched: same object, same resourceVersion.
    tokio::time::sleep(NAME_CONFLICT_RETRY * 3).await;
    for ((k, _), was) in theirs.iter().zip(&before) {
        let name = was["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            fake.get(k, "team-a", name).as_ref(),
            Some(was),
            "{name} was changed"
        );
    }
    let status = fake.get(&spansinks(), "team-a", "traces").unwrap();
    assert_eq!(condition(&status, "Ready").unwrap().0, "False");

    // The other team removes its objects: the SpanSink's own children follow.
    for ((k, _), was) in theirs.iter().zip(&before) {
        assert!(fake.delete(k, "team-a", was["metadata"]["name"].as_str().unwrap()));
    }
    let uid = status["metadata"]["uid"].as_str().unwrap().to_string();
    // Nothing watches their objects: the conflict retry finds the names free.
    tokio::time::sleep(NAME_CONFLICT_RETRY).await;
    let deployment = eventually("own Deployment", || {
        fake.get(&deployments(), "team-a", "traces")
    })
    .await;
    assert!(owned_by(&deployment, &uid));
    let service = eventually("own Service", || fake.get(&services(), "team-a", "traces")).await;
    let ports: Vec<i64> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [4317, 4318, 8888]);
    mark_rolled_out(&fake);
    eventually("Ready=True", || {
        let s = fake.get(&spansinks(), "team-a", "traces")?;
        (condition(&s, "Ready")?.0 == "True").then_some(())
    })
    .await;

    stop_controller(task, stop).await;
}

#[tokio::test(start_paused = true)]
async fn a_deleted_service_monitor_comes_back_at_once() {
    let monitors = kind("monitoring.coreos.com", "v1", "servicemonitors");
    let fake = FakeApiServer::default();
    fake.serve_service_monitors();
    let mut sink = SpanSink::fixture().with_service_monitor();
    sink.metadata.uid = None;
    fake.put(&spansinks(), serde_json::to_value(&sink).unwrap());
    let (task, stop) = start(&fake);
    let first = eventually("ServiceMonitor", || fake.get(&monitors, "team-a", "traces")).await;
    // Let the first reconciles settle, then delete it: the watch, not the 5-minute resync,
    // brings it back (`eventually` gives up after 20 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(fake.delete(&monitors, "team-a", "traces"));
    let again = eventually("ServiceMonitor recreated", || {
        fake.get(&monitors, "team-a", "traces")
    })
    .await;
    assert_ne!(first["metadata"]["uid"], again["metadata"]["uid"]);
    stop_controller(task, stop).await;
}

#[tokio::test(start_paused = true)]
async fn a_cluster_without_the_prometheus_operator_still_gets_a_status() {
    // Discovery of monitoring.coreos.com/v1 is the real server's plain-text 404 here.
    let fake = FakeApiServer::default();
    let mut sink = SpanSink::fixture();
    sink.metadata.uid = None;
    fake.put(&spansinks(), serde_json::to_value(&sink).unwrap());
    let (task, stop) = start(&fake);
    let status = eventually("status written", || {
        let s = fake.get(&spansinks(), "team-a", "traces")?;
        condition(&s, "Ready").map(|_| s)
    })
    .await;
    assert_eq!(status["status"]["observedGeneration"], 1);
    stop_controller(task, stop).await;
}

fn stateful_sets() -> Kind {
    kind("apps", "v1", "statefulsets")
}

/// What the StatefulSet controller and kubelet would report once every pod is up.
fn mark_stateful_set_rolled_out(fake: &FakeApiServer) {
    let mut s = fake.get(&stateful_sets(), "team-a", "traces").unwrap();
    let replicas = s["spec"]["replicas"].as_i64().unwrap_or(1);
    s["status"] = json!({"observedGeneration": s["metadata"]["generation"], "replicas": replicas,
        "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
        "currentReplicas": replicas, "currentRevision": "traces-1", "updateRevision": "traces-1"});
    fake.put(&stateful_sets(), s);
}

fn claim_size(stateful_set: &Value) -> String {
    stateful_set["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The first event in team-a with `reason`, once there is one.
async fn event_with_reason(fake: &FakeApiServer, reason: &str) -> Value {
    eventually(&format!("{reason} event"), || {
        fake.list(&events(), "team-a")
            .into_iter()
            .find(|e| e["reason"] == reason)
    })
    .await
}

fn ready_reason(fake: &FakeApiServer) -> Option<String> {
    let s = fake.get(&spansinks(), "team-a", "traces")?;
    s["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| c["reason"].as_str().unwrap_or_default().to_string())
}

fn assert_calls_allowed(fake: &FakeApiServer) {
    let mut uncovered: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| {
            !rbac::allowed(
                rbac::WATCHED_NAMESPACE_RULES,
                &c.group,
                &c.resource,
                &c.verb,
            )
        })
        .collect();
    uncovered.dedup();
    assert!(
        uncovered.is_empty(),
        "calls not allowed by rbac.rs: {uncovered:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_persistent_queue_volume_runs_a_stateful_set_that_reports_status_and_rolls() {
    let fake = FakeApiServer::default();
    let mut sink = SpanSink::fixture().with_persistent_queue("10Gi", Some("standard"));
    sink.spec.replicas = Some(2);
    sink.metadata.uid = None;
    let created = fake.put(&spansinks(), serde_json::to_value(&sink).unwrap());
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    let (task, stop) = start(&fake);

    let sts = eventually("StatefulSet", || {
        fake.get(&stateful_sets(), "team-a", "traces")
    })
    .await;
    assert!(owned_by(&sts, &uid), "not owned: {sts}");
    assert_eq!(sts["spec"]["replicas"], 2);
    assert_eq!(sts["spec"]["serviceName"], "traces");
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    assert_eq!(claim_size(&sts), "10Gi");
    assert!(fake.get(&deployments(), "team-a", "traces").is_none());
    eventually("Ready=False before pods", || {
        (ready_reason(&fake)? == "NotAvailable").then_some(())
    })
    .await;
    let status = fake.get(&spansinks(), "team-a", "traces").unwrap();
    let (_, available) = condition(&status, "Available").unwrap();
    assert!(available.contains("0 of 2"), "{available}");

    // Pods up: Ready, counts from the StatefulSet.
    mark_stateful_set_rolled_out(&fake);
    let status = eventually("Ready=True", || {
        let s = fake.get(&spansinks(), "team-a", "traces")?;
        (condition(&s, "Ready")?.0 == "True").then_some(s)
    })
    .await;
    assert_eq!(status["status"]["readyReplicas"], 2);
    assert_eq!(status["status"]["replicas"], 2);
    let first_hash = hash_of(&sts);
    assert_eq!(status["status"]["configHash"], first_hash);

    // A config change rolls the pods: a new hash on the template, accepted by the API
    // server (the claim templates are applied back unchanged).
    update_spec(&fake, |s| {
        s.spec.pipeline = crate::fixtures::pipeline(FILE_PIPELINE_BIG_BATCH)
    });
    let rolled = eventually("new hash on the StatefulSet", || {
        let s = fake.get(&stateful_sets(), "team-a", "traces")?;
        (hash_of(&s) != first_hash).then_some(s)
    })
    .await;
    assert_eq!(claim_size(&rolled), "10Gi");
    eventually("Ready=False while rolling", || {
        (ready_reason(&fake)? == "RollingOut").then_some(())
    })
    .await;
    let mut progressing = fake.get(&stateful_sets(), "team-a", "traces").unwrap();
    progressing["status"]["updateRevision"] = json!("traces-2");
    progressing["status"]["observedGeneration"] = progressing["metadata"]["generation"].clone();
    fake.put(&stateful_sets(), progressing);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ready_reason(&fake).as_deref(),
        Some("RollingOut"),
        "revision not yet current"
    );
    mark_stateful_set_rolled_out(&fake);
    eventually("Ready=True after the rollout", || {
        (ready_reason(&fake)? == "Ready").then_some(())
    })
    .await;
    assert!(
        fake.calls()
            .iter()
            .any(|c| c.resource == "statefulsets" && c.verb == "watch")
    );
    assert_calls_allowed(&fake);
    stop_controller(task, stop).await;
}

#[tokio::test(start_paused = true)]
async fn switching_queue_volume_moves_between_deployment_and_stateful_set() {
    let fake = FakeApiServer::default();
    let mut sink = SpanSink::fixture().with_autoscaling(1, 3);
    sink.metadata.uid = None;
    fake.put(&spansinks(), serde_json::to_value(&sink).unwrap());
    let (task, stop) = start(&fake);
    eventually("Deployment", || {
        fake.get(&deployments(), "team-a", "traces")
    })
    .await;
    mark_rolled_out(&fake);
    eventually("Ready=True", || {
        (ready_reason(&fake)? == "Ready").then_some(())
    })
    .await;

    // emptyDir -> persistent: the StatefulSet comes up beside the Deployment, which serves
    // until the StatefulSet has a ready pod.
    update_spec(&fake, |s| *s = s.clone().with_persistent_queue("1Gi", None));
    eventually("StatefulSet", || {
        fake.get(&stateful_sets(), "team-a", "traces")
    })
    .await;
    let hpa = eventually("HPA retargeted", || {
        let h = fake.get(&hpas(), "team-a", "traces")?;
        (h["spec"]["scaleTargetRef"]["kind"] == "StatefulSet").then_some(h)
    })
    .await;
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "traces");
    let (_, message) = eventually("Progressing names the move", || {
        let s = fake.get(&spansinks(), "team-a", "traces")?;
        condition(&s, "Progressing")
            .filter(|c| c.1.contains("moving from Deployment to StatefulSet"))
    })
    .await;
    assert!(message.contains("deleted once"), "{message}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        fake.get(&deployments(), "team-a", "traces").is_some(),
        "the Deployment serves until the StatefulSet is ready"
    );
    mark_stateful_set_rolled_out(&fake);
    eventually("Deployment deleted", || {
        fake.get(&deployments(), "team-a", "traces")
            .is_none()
            .then_some(())
    })
    .await;
    eventually("Ready=True as a StatefulSet", || {
        (ready_reason(&fake)? == "Ready").then_some(())
    })
    .await;
    assert!(fake.get(&stateful_sets(), "team-a", "traces").is_some());
    let deleted = eventually("Deleted event", || {
        fake.list(&events(), "team-a").into_iter().find(|e| {
            e["reason"] == "Deleted"
                && e["note"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("Deployment traces removed"))
        })
    })
    .await;
    assert_eq!(deleted["type"], "Normal");

    // persistent -> emptyDir: back to a Deployment; the StatefulSet goes once it serves.
    update_spec(&fake, |s| *s = s.clone().with_empty_dir_queue());
    eventually("Deployment again", || {
        fake.get(&deployments(), "team-a", "traces")
    })
    .await;
    mark_rolled_out(&fake);
    eventually("StatefulSet deleted", || {
        fake.get(&stateful_sets(), "team-a", "traces")
            .is_none()
            .then_some(())
    })
    .await;
    eventually("Ready=True as a Deployment", || {
        (ready_reason(&fake)? == "Ready").then_some(())
    })
    .await;
    assert!(fake.get(&deployments(), "team-a", "traces").is_some());
    let hpa = fake.get(&hpas(), "team-a", "traces").unwrap();
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_calls_allowed(&fake);
    stop_controller(task, stop).await;
}

#[tokio::test(start_paused = true)]
async fn a_foreign_stateful_set_is_a_name_conflict_and_left_alone() {
    let fake = FakeApiServer::default();
    let theirs = fake.put(
        &stateful_sets(),
        foreign(
            "StatefulSet",
            "apps/v1",
            "traces",
            json!({"spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "theirs"}},
            "template": {"metadata": {"labels": {"app": "theirs"}}, "spec": {"containers": [{"name": "db", "image": "postgres"}]}}}}),
        ),
    );
    let mut sink = SpanSink::fixture().with_persistent_queue("1Gi", None);
    sink.metadata.uid = None;
    fake.put(&spansinks(), serde_json::to_value(&sink).unwrap());
    let (task, stop) = start(&fake);

    let message = eventually("Ready=False NameConflict", || {
        let s = fake.get(&spansinks(), "team-a", "traces")?;
        let ready = s["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready" && c["reason"] == "NameConflict")?
            .clone();
        Some(ready["message"].as_str()?.to_string())
    })
    .await;
    assert!(message.contains("StatefulSet team-a/traces"), "{message}");
    tokio::time::sleep(NAME_CONFLICT_RETRY * 2).await;
    assert_eq!(
        fake.get(&stateful_sets(), "team-a", "traces").as_ref(),
        Some(&theirs),
        "the foreign StatefulSet was changed"
    );
    assert!(fake.get(&deployments(), "team-a", "traces").is_none());
    stop_controller(task, stop).await;
}

#[tokio::test(start_paused = true)]
async fn a_changed_claim_template_is_refused_while_the_rest_still_applies() {
    let fake = FakeApiServer::default();
    let mut sink = SpanSink::fixture().with_persistent_queue("1Gi", Some("standard"));
    sink.metadata.uid = None;
    fake.put(&spansinks(), serde_json::to_value(&sink).unwrap());
    let (task, stop) = start(&fake);
    let first = eventually("StatefulSet", || {
        fake.get(&stateful_sets(), "team-a", "traces")
    })
    .await;
    mark_stateful_set_rolled_out(&fake);
    eventually("Ready=True", || {
        (ready_reason(&fake)? == "Ready").then_some(())
    })
    .await;

    // A bigger claim and a new pipeline in one edit.
    update_spec(&fake, |s| {
        *s = s
            .clone()
            .with_persistent_queue("5Gi", Some("standard"))
            .with_pipeline(FILE_PIPELINE_BIG_BATCH);
    });
    let message = eventually("Ready=False QueueVolumeChangeRefused", || {
        let s = fake.get(&spansinks(), "team-a", "traces")?;
        s["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready" && c["reason"] == "QueueVolumeChangeRefused")
            .and_then(|c| c["message"].as_str().map(String::from))
    })
    .await;
    assert!(message.contains("size 5Gi"), "{message}");
    assert!(message.contains("has size 1Gi"), "{message}");
    assert!(message.contains("--cascade=orphan"), "{message}");
    let sts = fake.get(&stateful_sets(), "team-a", "traces").unwrap();
    assert_eq!(claim_size(&sts), "1Gi", "the claims are left as they are");
    assert_ne!(
        hash_of(&sts),
        hash_of(&first),
        "the config change is applied"
    );
    assert_eq!(
        sts["metadata"]["uid"], first["metadata"]["uid"],
        "not recreated"
    );
    let warning = event_with_reason(&fake, "QueueVolumeChangeRefused").await;
    assert_eq!(warning["type"], "Warning");
    // No reconcile failed on a 422 from the API server.
    assert!(
        fake.list(&events(), "team-a")
            .iter()
            .all(|e| e["reason"] != "ReconcileFailed"),
        "{:?}",
        fake.list(&events(), "team-a")
    );

    // The documented way out: the user deletes the StatefulSet, orphaning pods and claims;
    // the operator creates it again with the new template.
    assert!(fake.delete(&stateful_sets(), "team-a", "traces"));
    let again = eventually("StatefulSet recreated", || {
        let s = fake.get(&stateful_sets(), "team-a", "traces")?;
        (claim_size(&s) == "5Gi").then_some(s)
    })
    .await;
    assert_ne!(again["metadata"]["uid"], first["metadata"]["uid"]);
    mark_stateful_set_rolled_out(&fake);
    eventually("Ready=True with the new claims", || {
        (ready_reason(&fake)? == "Ready").then_some(())
    })
    .await;
    stop_controller(task, stop).await;
}

#[tokio::test(start_paused = true)]
async fn a_durable_queue_off_the_queue_volume_is_refused_in_the_status() {
    let fake = FakeApiServer::default();
    let mut sink = SpanSink::fixture().with_durable_queue_at("/data/queue");
    sink.metadata.uid = None;
    fake.put(&spansinks(), serde_json::to_value(&sink).unwrap());
    let (task, stop) = start(&fake);
    let (_, message) = eventually("ConfigValid=False", || {
        let s = fake.get(&spansinks(), "team-a", "traces")?;
        condition(&s, "ConfigValid").filter(|c| c.0 == "False")
    })
    .await;
    assert!(
        message.starts_with("spec.pipeline.sinks.main.queue.durable.path: /data/queue is not a directory below /var/lib/spansink"),
        "{message}"
    );
    assert_eq!(ready_reason(&fake).as_deref(), Some("InvalidPipeline"));
    let warning = event_with_reason(&fake, "InvalidPipeline").await;
    assert!(
        warning["note"]
            .as_str()
            .unwrap()
            .contains("sinks.main.queue.durable.path")
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        fake.get(&deployments(), "team-a", "traces").is_none(),
        "nothing rolled out"
    );
    assert!(fake.get(&configmaps(), "team-a", "traces-config").is_none());

    // Moved onto the volume: accepted and rolled out.
    update_spec(&fake, |s| {
        *s = s
            .clone()
            .with_durable_queue_at("/var/lib/spansink/queue/main")
    });
    eventually("Deployment", || {
        fake.get(&deployments(), "team-a", "traces")
    })
    .await;
    stop_controller(task, stop).await;
}

fn secrets() -> Kind {
    kind("", "v1", "secrets")
}

/// A Secret of `team-a` as `kubectl apply` would send it, holding `keys` (value `s3cr3t`).
fn secret(name: &str, keys: &[&str]) -> Value {
    let data: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| (k.to_string(), json!("s3cr3t")))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "team-a"}, "stringData": data})
}

fn ready(fake: &FakeApiServer) -> Option<(String, String, String)> {
    let s = fake.get(&spansinks(), "team-a", "traces")?;
    let (status, message) = condition(&s, "Ready")?;
    Some((status, ready_reason(fake)?, message))
}

#[tokio::test(start_paused = true)]
async fn a_missing_secret_or_key_is_named_in_the_status_until_it_is_created() {
    let fake = FakeApiServer::default();
    let mut sink = SpanSink::fixture().with_secret_mounts();
    sink.metadata.uid = None;
    fake.put(&spansinks(), serde_json::to_value(&sink).unwrap());
    fake.put(
        &secrets(),
        secret("receiver-tls", &["tls.crt", "tls.key", "ca.crt"]),
    );
    let (task, stop) = start(&fake);

    // The children are applied all the same (the pods wait for the Secret); the status
    // says which Secret, where it is mounted, and what to do.
    let deployment = eventually("Deployment", || {
        fake.get(&deployments(), "team-a", "traces")
    })
    .await;
    assert_eq!(
        deployment["spec"]["template"]["spec"]["volumes"][3]["secret"]["secretName"],
        "postgres-ca"
    );
    mark_rolled_out(&fake);
    let (status, _, message) = eventually("Ready=False SecretMissing", || {
        ready(&fake).filter(|r| r.1 == "SecretMissing")
    })
    .await;
    assert_eq!(status, "False");
    assert_eq!(
        message,
        "Secret team-a/postgres-ca (spec.secretMounts[1], mounted at /etc/spansink/postgres) \
         does not exist: new exporter pods cannot start until it does; create it, or set optional: true"
    );
    let warning = event_with_reason(&fake, "SecretMissing").await;
    assert!(
        warning["note"]
            .as_str()
            .unwrap()
            .contains("team-a/postgres-ca")
    );

    // Created without the key `items` names: found on the next look (Secrets are not
    // watched), and the key is named.
    fake.put(&secrets(), secret("postgres-ca", &["tls.crt"]));
    tokio::time::sleep(SECRET_MISSING_RETRY + Duration::from_secs(1)).await;
    let (_, _, message) = eventually("Ready=False SecretKeyMissing", || {
        ready(&fake).filter(|r| r.1 == "SecretKeyMissing")
    })
    .await;
    assert!(
        message.starts_with(
            "Secret team-a/postgres-ca has no key ca.crt (spec.secretMounts[1].items[0].key)"
        ),
        "{message}"
    );

    // With the key: Ready.
    fake.put(&secrets(), secret("postgres-ca", &["ca.crt"]));
    tokio::time::sleep(SECRET_MISSING_RETRY + Duration::from_secs(1)).await;
    eventually("Ready=True", || ready(&fake).filter(|r| r.0 == "True")).await;

    // Names only: no Secret value in the status or the events.
    let everything = format!(
        "{} {:?}",
        fake.get(&spansinks(), "team-a", "traces").unwrap(),
        fake.list(&events(), "team-a")
    );
    assert!(!everything.contains("s3cr3t") && !everything.contains("czNjcjN0"));
    // Secrets are only ever read one by one.
    let secret_verbs: BTreeSet<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.resource == "secrets")
        .map(|c| c.verb)
        .collect();
    assert_eq!(secret_verbs, BTreeSet::from(["get".to_string()]));
    assert_calls_allowed(&fake);
    stop_controller(task, stop).await;
}

#[tokio::test(start_paused = true)]
async fn an_optional_secret_mount_needs_no_secret_and_a_bad_one_is_an_invalid_spec() {
    let fake = FakeApiServer::default();
    let mut sink = SpanSink::fixture().with_secret_mount("later", "/etc/spansink/later");
    sink.spec.secret_mounts[0].optional = true;
    sink.metadata.uid = None;
    fake.put(&spansinks(), serde_json::to_value(&sink).unwrap());
    let (task, stop) = start(&fake);
    eventually("Deployment", || {
        fake.get(&deployments(), "team-a", "traces")
    })
    .await;
    mark_rolled_out(&fake);
    eventually("Ready=True", || ready(&fake).filter(|r| r.0 == "True")).await;
    assert!(
        fake.calls().iter().all(|c| c.resource != "secrets"),
        "an optional Secret is not looked up"
    );

    update_spec(&fake, |s| {
        s.spec.secret_mounts[0].mount_path = "/etc/spansink/config.yaml".into();
    });
    let (_, message) = eventually("ConfigValid=False", || {
        let s = fake.get(&spansinks(), "team-a", "traces")?;
        condition(&s, "ConfigValid").filter(|c| c.0 == "False")
    })
    .await;
    assert!(
        message.starts_with("spec.secretMounts[0].mountPath: /etc/spansink/config.yaml would hide"),
        "{message}"
    );
    assert_eq!(ready_reason(&fake).as_deref(), Some("InvalidSpec"));
    event_with_reason(&fake, "InvalidSpec").await;
    stop_controller(task, stop).await;
}
