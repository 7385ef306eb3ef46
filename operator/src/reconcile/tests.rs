//! Reconcile unit tests: one SpanSink in, explicit assertions on every child out.
//! No cluster, no controller: `desired` is a pure function.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::crd::{EphemeralQueueVolume, QueueVolumeSpec};
use crate::fixtures::FILE_PIPELINE_BIG_BATCH;

#[path = "../../tests/support/pod_security.rs"]
mod pod_security;

fn settings() -> OperatorSettings {
    OperatorSettings {
        exporter_image: "ghcr.io/spansink/exporter:0.1.0".into(),
        service_monitor_available: false,
        pod_defaults: ExporterPodDefaults::default(),
    }
}

fn children(sink: &SpanSink) -> Children {
    children_with(sink, &settings())
}

fn children_with(sink: &SpanSink, settings: &OperatorSettings) -> Children {
    match desired(sink, settings).unwrap() {
        Desired::Children(c) => *c,
        other => panic!("expected children, got {other:?}"),
    }
}

/// The workload of children that should run as a Deployment.
trait WorkloadOf {
    fn deployment(&self) -> &Deployment;
    fn stateful_set(&self) -> &StatefulSet;
}

impl WorkloadOf for Children {
    fn deployment(&self) -> &Deployment {
        self.workload
            .as_deployment()
            .unwrap_or_else(|| panic!("expected a Deployment, got {:?}", self.workload.kind()))
    }
    fn stateful_set(&self) -> &StatefulSet {
        self.workload
            .as_stateful_set()
            .unwrap_or_else(|| panic!("expected a StatefulSet, got {:?}", self.workload.kind()))
    }
}

fn container(d: &Deployment) -> &Container {
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.containers.len(), 1);
    &pod.containers[0]
}

fn hash_annotation(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[CONFIG_HASH_ANNOTATION]
        .clone()
}

#[test]
fn defaults_give_configmap_deployment_service_and_nothing_else() {
    let sink = SpanSink::fixture();
    let c = children(&sink);

    // ConfigMap: the canonical exporter YAML, which the exporter parses back identically.
    assert_eq!(c.config_map.metadata.name.as_deref(), Some("traces-config"));
    assert_eq!(c.config_map.metadata.namespace.as_deref(), Some("team-a"));
    let yaml = &c.config_map.data.as_ref().unwrap()[CONFIG_KEY];
    assert_eq!(yaml, &sink.spec.pipeline.to_yaml());
    assert_eq!(ExporterConfig::from_yaml(yaml).unwrap(), sink.spec.pipeline);
    assert_eq!(c.config_hash, config_hash(yaml));
    assert_eq!(c.config_hash.len(), 64);

    // Deployment
    let d = &c.deployment();
    assert_eq!(d.metadata.name.as_deref(), Some("traces"));
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.selector.match_labels, Some(selector_labels("traces")));
    let template_meta = spec.template.metadata.as_ref().unwrap();
    let labels = template_meta.labels.as_ref().unwrap();
    assert_eq!(labels["app.kubernetes.io/name"], "spansink-exporter");
    assert_eq!(labels["app.kubernetes.io/instance"], "traces");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "spansink-operator");
    let annotations = template_meta.annotations.as_ref().unwrap();
    assert_eq!(annotations[CONFIG_HASH_ANNOTATION], c.config_hash);
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "8888");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    let ct = container(d);
    assert_eq!(ct.image.as_deref(), Some("ghcr.io/spansink/exporter:0.1.0"));
    assert_eq!(
        ct.args.as_deref().unwrap(),
        ["run", "--config", "/etc/spansink/config.yaml"]
    );
    let ports: Vec<(&str, i32)> = ct
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.as_deref().unwrap(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        [("otlp-grpc", 4317), ("otlp-http", 4318), ("metrics", 8888)]
    );
    let live = ct
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(live.path.as_deref(), Some("/healthz"));
    assert_eq!(live.port, IntOrString::String("metrics".into()));
    let ready = ct
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(ready.path.as_deref(), Some("/readyz"));

    let sc = ct.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref().unwrap(),
        ["ALL"]
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let pod = spec.template.spec.as_ref().unwrap();
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    // drain_timeout default 20s + 5s sink shutdown + 10s margin.
    assert_eq!(pod.termination_grace_period_seconds, Some(35));
    // No pull policy or secrets unless asked for: Kubernetes' defaults apply.
    assert_eq!(ct.image_pull_policy, None);
    assert_eq!(pod.image_pull_secrets, None);

    // Volumes: config from the ConfigMap (read-only), writable data and /tmp.
    let volumes = pod.volumes.as_ref().unwrap();
    assert_eq!(
        volumes[0].config_map.as_ref().unwrap().name,
        "traces-config"
    );
    assert!(volumes[1].empty_dir.is_some() && volumes[1].name == "data");
    let mounts: Vec<(&str, &str, Option<bool>)> = ct
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            ("config", "/etc/spansink", Some(true)),
            ("data", "/var/lib/spansink", None),
            ("tmp", "/tmp", None)
        ]
    );
    assert!(ct.env.is_none() && ct.env_from.is_none());

    // Service
    let svc = c.service.spec.as_ref().unwrap();
    assert_eq!(svc.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(svc.selector, Some(selector_labels("traces")));
    let ports: Vec<(&str, i32, IntOrString)> = svc
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p.name.as_deref().unwrap(),
                p.port,
                p.target_port.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("otlp-grpc", 4317, IntOrString::String("otlp-grpc".into())),
            ("otlp-http", 4318, IntOrString::String("otlp-http".into())),
            ("metrics", 8888, IntOrString::String("metrics".into())),
        ]
    );

    // The headless Service: the OTLP ports only, no cluster IP, the same pods.
    assert_eq!(
        c.headless_service.metadata.name.as_deref(),
        Some("traces-headless")
    );
    let headless = c.headless_service.spec.as_ref().unwrap();
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless.selector, Some(selector_labels("traces")));
    let headless_ports: Vec<(&str, i32)> = headless
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.as_deref().unwrap(), p.port))
        .collect();
    assert_eq!(headless_ports, [("otlp-grpc", 4317), ("otlp-http", 4318)]);

    assert!(c.autoscaler.is_none());
    assert!(c.disruption_budget.is_none());
    assert!(c.service_monitor.is_none());
    assert!(c.service_monitor_skipped.is_none());
}

#[test]
fn every_child_is_owned_by_the_spansink_and_labelled() {
    let sink = SpanSink::fixture()
        .with_autoscaling(2, 5)
        .with_max_unavailable(1)
        .with_service_monitor();
    let c = children_with(
        &sink,
        &OperatorSettings {
            service_monitor_available: true,
            ..settings()
        },
    );
    let metas = [
        &c.config_map.metadata,
        &c.deployment().metadata,
        &c.service.metadata,
        &c.headless_service.metadata,
        &c.autoscaler.as_ref().unwrap().metadata,
        &c.disruption_budget.as_ref().unwrap().metadata,
        &c.service_monitor.as_ref().unwrap().metadata,
    ];
    for meta in metas {
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1, "{:?}", meta.name);
        let o = &owners[0];
        assert_eq!(o.api_version, "spansink.dev/v1alpha1");
        assert_eq!(o.kind, "SpanSink");
        assert_eq!(o.name, "traces");
        assert_eq!(o.uid, "6b1f6a2e-0000-4000-8000-000000000001");
        assert_eq!(o.controller, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("team-a"));
        assert_eq!(meta.labels.as_ref().unwrap(), &child_labels("traces"));
    }
}

#[test]
fn autoscaling_adds_an_hpa_and_leaves_replicas_to_it() {
    let c = children(&SpanSink::fixture().with_autoscaling(2, 6));
    assert_eq!(c.deployment().spec.as_ref().unwrap().replicas, None);
    let hpa = c.autoscaler.unwrap();
    let spec = hpa.spec.unwrap();
    assert_eq!(spec.scale_target_ref.kind, "Deployment");
    assert_eq!(spec.scale_target_ref.name, "traces");
    assert_eq!(
        spec.scale_target_ref.api_version.as_deref(),
        Some("apps/v1")
    );
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
    let metrics = spec.metrics.unwrap();
    assert_eq!(metrics.len(), 1);
    let cpu = metrics[0].resource.as_ref().unwrap();
    assert_eq!(
        (cpu.name.as_str(), cpu.target.average_utilization),
        ("cpu", Some(80))
    );

    let mut sink = SpanSink::fixture().with_autoscaling(1, 3);
    if let Some(a) = sink.spec.autoscaling.as_mut() {
        a.target_memory_utilization_percentage = Some(70);
    }
    let metrics = children(&sink)
        .autoscaler
        .unwrap()
        .spec
        .unwrap()
        .metrics
        .unwrap();
    let targets: Vec<(&str, Option<i32>)> = metrics
        .iter()
        .map(|m| {
            let r = m.resource.as_ref().unwrap();
            (r.name.as_str(), r.target.average_utilization)
        })
        .collect();
    assert_eq!(
        targets,
        [("memory", Some(70))],
        "no cpu default when memory is set"
    );
}

#[test]
fn fixed_replicas_are_applied() {
    let mut sink = SpanSink::fixture();
    sink.spec.replicas = Some(3);
    let c = children(&sink);
    assert_eq!(c.deployment().spec.as_ref().unwrap().replicas, Some(3));
    assert!(c.autoscaler.is_none());
}

#[test]
fn pod_disruption_budget_selects_the_exporter_pods() {
    let c = children(&SpanSink::fixture().with_max_unavailable(1));
    let pdb = c.disruption_budget.unwrap().spec.unwrap();
    assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(pdb.min_available, None);
    assert_eq!(
        pdb.selector.unwrap().match_labels,
        Some(selector_labels("traces"))
    );
}

#[test]
fn secrets_reach_the_pod_through_env_from_never_the_configmap() {
    let mut sink = SpanSink::fixture()
        .with_secret_env("otlp-credentials")
        .with_pipeline(
            "sinks:\n  upstream:\n    otlp:\n      endpoint: http://collector:4317\n      headers:\n        authorization: ${env:OTLP_TOKEN}\n",
        );
    sink.spec.env.push(k8s_openapi::api::core::v1::EnvVar {
        name: "RUST_LOG".into(),
        value: Some("debug".into()),
        ..Default::default()
    });
    let c = children(&sink);
    let ct = container(c.deployment());
    let from = ct.env_from.as_ref().unwrap();
    assert_eq!(
        from[0].secret_ref.as_ref().unwrap().name,
        "otlp-credentials"
    );
    assert_eq!(ct.env.as_ref().unwrap()[0].name, "RUST_LOG");
    // The ConfigMap holds the reference, not a value.
    let yaml = &c.config_map.data.unwrap()[CONFIG_KEY];
    assert!(yaml.contains("${env:OTLP_TOKEN}"), "{yaml}");
}

#[test]
fn a_config_change_changes_the_hash_on_the_pod_template() {
    let before = children(&SpanSink::fixture());
    let after = children(&SpanSink::fixture().with_pipeline(FILE_PIPELINE_BIG_BATCH));
    assert_ne!(before.config_hash, after.config_hash);
    assert_eq!(hash_annotation(after.deployment()), after.config_hash);
    assert_ne!(
        hash_annotation(before.deployment()),
        hash_annotation(after.deployment())
    );
    // Unrelated spec changes (replicas) do not change the config hash.
    let mut scaled = SpanSink::fixture();
    scaled.spec.replicas = Some(4);
    assert_eq!(children(&scaled).config_hash, before.config_hash);
}

#[test]
fn invalid_pipeline_produces_no_children_and_names_the_field() {
    let sink = SpanSink::fixture().with_dangling_fallback();
    match desired(&sink, &settings()).unwrap() {
        Desired::InvalidPipeline(errors) => {
            assert_eq!(errors.0.len(), 1, "{errors}");
            assert_eq!(errors.0[0].path, "spec.pipeline.sinks.main.fallback");
            assert!(errors.0[0].message.contains("dead-letter"), "{errors}");
        }
        other => panic!("expected InvalidPipeline, got {other:?}"),
    }
}

#[test]
fn unmanaged_touches_nothing_even_when_invalid() {
    assert!(matches!(
        desired(&SpanSink::fixture().unmanaged(), &settings()).unwrap(),
        Desired::Unmanaged
    ));
    assert!(matches!(
        desired(
            &SpanSink::fixture().with_dangling_fallback().unmanaged(),
            &settings()
        )
        .unwrap(),
        Desired::Unmanaged
    ));
}

#[test]
fn service_monitor_only_when_enabled_and_served() {
    let sink = SpanSink::fixture().with_service_monitor();
    let skipped = children(&sink);
    assert!(skipped.service_monitor.is_none());
    assert!(
        skipped
            .service_monitor_skipped
            .as_deref()
            .unwrap()
            .contains("monitoring.coreos.com/v1")
    );

    let served = OperatorSettings {
        service_monitor_available: true,
        ..settings()
    };
    let c = children_with(&sink, &served);
    assert!(c.service_monitor_skipped.is_none());
    let sm = c.service_monitor.unwrap();
    let types = sm.types.as_ref().unwrap();
    assert_eq!(
        (types.api_version.as_str(), types.kind.as_str()),
        ("monitoring.coreos.com/v1", "ServiceMonitor")
    );
    assert_eq!(
        sm.data["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
        "traces"
    );
    assert_eq!(sm.data["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(sm.data["spec"]["endpoints"][0]["interval"], "15s");

    // Enabled=false: neither a monitor nor a note, whatever the cluster serves.
    let c = children_with(&SpanSink::fixture(), &served);
    assert!(c.service_monitor.is_none() && c.service_monitor_skipped.is_none());
}

#[test]
fn image_overrides_placement_and_pod_metadata_pass_through() {
    let mut sink = SpanSink::fixture();
    sink.spec.image = Some("registry.local/spansink:dev".into());
    sink.spec
        .node_selector
        .insert("pool".into(), "tracing".into());
    sink.spec.service_account_name = Some("exporter".into());
    sink.spec.pod_labels.insert("team".into(), "a".into());
    // A user label may not hijack the selector.
    sink.spec
        .pod_labels
        .insert("app.kubernetes.io/instance".into(), "other".into());
    sink.spec
        .pod_annotations
        .insert(CONFIG_HASH_ANNOTATION.into(), "forged".into());
    sink.spec.service.type_ = crate::crd::ServiceType::LoadBalancer;
    sink.spec
        .service
        .annotations
        .insert("lb.example/internal".into(), "true".into());
    let c = children(&sink);
    let spec = c.deployment().spec.as_ref().unwrap();
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(
        container(c.deployment()).image.as_deref(),
        Some("registry.local/spansink:dev")
    );
    assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "tracing");
    assert_eq!(pod.service_account_name.as_deref(), Some("exporter"));
    let meta = spec.template.metadata.as_ref().unwrap();
    assert_eq!(meta.labels.as_ref().unwrap()["team"], "a");
    assert_eq!(
        meta.labels.as_ref().unwrap()["app.kubernetes.io/instance"],
        "traces"
    );
    assert_eq!(
        meta.annotations.as_ref().unwrap()[CONFIG_HASH_ANNOTATION],
        c.config_hash
    );
    let svc = c.service;
    assert_eq!(svc.spec.unwrap().type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(
        svc.metadata.annotations.unwrap()["lb.example/internal"],
        "true"
    );
}

#[test]
fn ports_follow_the_pipeline_receivers() {
    let sink = SpanSink::fixture().with_pipeline(
        "receivers:\n  grpc:\n    endpoint: 0.0.0.0:14317\n  http:\n    enabled: false\n    endpoint: 0.0.0.0:4318\ntelemetry:\n  endpoint: 0.0.0.0:9090\nsinks:\n  b:\n    blackhole: {}\n",
    );
    let c = children(&sink);
    let ports: Vec<(&str, i32)> = container(c.deployment())
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.as_deref().unwrap(), p.container_port))
        .collect();
    assert_eq!(ports, [("otlp-grpc", 14317), ("metrics", 9090)]);
    let svc_ports: Vec<(String, i32)> = c
        .service
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap(), p.port))
        .collect();
    assert_eq!(
        svc_ports,
        [
            ("otlp-grpc".to_string(), 4317),
            ("metrics".to_string(), 8888)
        ]
    );
    let annotations = c
        .workload
        .as_deployment()
        .cloned()
        .unwrap()
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap();
    assert_eq!(annotations["prometheus.io/port"], "9090");
}

#[test]
fn queue_volume_emptydir_size_and_ephemeral_claim() {
    use crate::crd::{EmptyDirQueueVolume, EphemeralQueueVolume, QueueVolumeSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let data = |sink: &SpanSink| {
        let d = children(sink).deployment().clone();
        d.spec.unwrap().template.spec.unwrap().volumes.unwrap()[1].clone()
    };
    let mut sink = SpanSink::fixture();
    sink.spec.queue_volume = Some(QueueVolumeSpec {
        empty_dir: Some(EmptyDirQueueVolume {
            size_limit: Some(Quantity("2Gi".into())),
            medium: None,
        }),
        ephemeral: None,
        persistent: None,
    });
    assert_eq!(
        data(&sink).empty_dir.unwrap().size_limit,
        Some(Quantity("2Gi".into()))
    );
    sink.spec.queue_volume = Some(QueueVolumeSpec {
        empty_dir: None,
        ephemeral: Some(EphemeralQueueVolume {
            size: Quantity("10Gi".into()),
            storage_class_name: Some("fast".into()),
        }),
        persistent: None,
    });
    let v = data(&sink);
    assert!(v.empty_dir.is_none());
    let claim = v.ephemeral.unwrap().volume_claim_template.unwrap().spec;
    assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim.resources.unwrap().requests.unwrap()["storage"],
        Quantity("10Gi".into())
    );
}

#[test]
fn an_object_without_uid_cannot_own_children() {
    let mut sink = SpanSink::fixture();
    sink.metadata.uid = None;
    assert!(matches!(
        desired(&sink, &settings()),
        Err(Error::MissingObjectKey(_))
    ));
}

fn pod_spec(d: &Deployment) -> &k8s_openapi::api::core::v1::PodSpec {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

#[test]
fn grace_period_covers_drain_sink_shutdown_and_margin() {
    let grace = |drain: &str| {
        let sink = SpanSink::fixture().with_pipeline(&format!(
            "shutdown:\n  drain_timeout: {drain}\nsinks:\n  b:\n    blackhole: {{}}\n"
        ));
        pod_spec(children(&sink).deployment()).termination_grace_period_seconds
    };
    // drain + ShutdownConfig::SINK_SHUTDOWN_TIMEOUT (5s) + GRACE_MARGIN (10s).
    assert_eq!(grace("90s"), Some(105));
    assert_eq!(grace("1s"), Some(16));
    // Rounded up: a kubelet that kills half a second early still loses spans.
    assert_eq!(grace("1500ms"), Some(17));
    assert_eq!(
        termination_grace_period_seconds(&SpanSink::fixture().spec.pipeline),
        35
    );
}

#[test]
fn image_pull_policy_and_secrets_from_spec_else_operator_defaults() {
    use crate::crd::ImagePullPolicy;
    let defaults = ExporterPodDefaults {
        image_pull_policy: Some(ImagePullPolicy::IfNotPresent),
        image_pull_secrets: vec!["regcred".into(), "mirror".into()],
    };
    let with_defaults = OperatorSettings {
        pod_defaults: defaults,
        ..settings()
    };
    let render = |sink: &SpanSink| match desired(sink, &with_defaults).unwrap() {
        Desired::Children(c) => c.deployment().clone(),
        other => panic!("expected children, got {other:?}"),
    };
    let secret_names = |d: &Deployment| -> Option<Vec<String>> {
        pod_spec(d)
            .image_pull_secrets
            .as_ref()
            .map(|s| s.iter().map(|r| r.name.clone()).collect())
    };

    // Unset in the SpanSink: the operator's defaults.
    let d = render(&SpanSink::fixture());
    assert_eq!(
        container(&d).image_pull_policy.as_deref(),
        Some("IfNotPresent")
    );
    assert_eq!(
        secret_names(&d),
        Some(vec!["regcred".to_string(), "mirror".to_string()])
    );

    // Set: the SpanSink wins, and an empty list means none.
    let mut sink = SpanSink::fixture();
    sink.spec.image_pull_policy = Some(ImagePullPolicy::Never);
    sink.spec.image_pull_secrets = Some(vec![LocalObjectReference {
        name: "team-a-registry".into(),
    }]);
    let d = render(&sink);
    assert_eq!(container(&d).image_pull_policy.as_deref(), Some("Never"));
    assert_eq!(secret_names(&d), Some(vec!["team-a-registry".to_string()]));
    sink.spec.image_pull_secrets = Some(Vec::new());
    assert_eq!(secret_names(&render(&sink)), None);
}

#[test]
fn image_pull_fields_parse_from_a_manifest() {
    let sink: SpanSink = serde_yaml::from_str(
        "apiVersion: spansink.dev/v1alpha1\nkind: SpanSink\nmetadata: {name: t, namespace: a, uid: u}\nspec:\n  imagePullPolicy: Always\n  imagePullSecrets: [{name: regcred}]\n  pipeline:\n    sinks:\n      b:\n        blackhole: {}\n",
    )
    .unwrap();
    assert_eq!(
        sink.spec.image_pull_policy,
        Some(crate::crd::ImagePullPolicy::Always)
    );
    let d = children(&sink).deployment().clone();
    assert_eq!(container(&d).image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(
        pod_spec(&d).image_pull_secrets.as_ref().unwrap()[0].name,
        "regcred"
    );
}

/// A SpanSink with every pod-shaping field a user can set.
fn with_user_settings() -> SpanSink {
    use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let mut sink = SpanSink::fixture()
        .with_secret_env("otlp-credentials")
        .with_autoscaling(2, 5);
    sink.spec.env.push(EnvVar {
        name: "RUST_LOG".into(),
        value: Some("debug".into()),
        ..EnvVar::default()
    });
    sink.spec
        .pod_annotations
        .insert("example.com/team".into(), "a".into());
    sink.spec.resources = Some(ResourceRequirements {
        requests: Some(BTreeMap::from([("cpu".into(), Quantity("100m".into()))])),
        limits: Some(BTreeMap::from([(
            "memory".into(),
            Quantity("256Mi".into()),
        )])),
        ..ResourceRequirements::default()
    });
    sink.spec.queue_volume = Some(QueueVolumeSpec {
        empty_dir: None,
        ephemeral: Some(EphemeralQueueVolume {
            size: Quantity("5Gi".into()),
            storage_class_name: None,
        }),
        persistent: None,
    });
    sink.spec.service_account_name = Some("exporter".into());
    sink.spec.image_pull_secrets = Some(vec![LocalObjectReference {
        name: "regcred".into(),
    }]);
    sink.spec.image_pull_policy = Some(crate::crd::ImagePullPolicy::Always);
    sink
}

#[test]
fn exporter_pods_pass_the_restricted_pod_security_standard() {
    for (what, sink) in [
        ("default fixture", SpanSink::fixture()),
        (
            "user-set env, envFrom, podAnnotations, resources, ephemeral volume, autoscaling, serviceAccountName",
            with_user_settings(),
        ),
    ] {
        let d = children(&sink).deployment().clone();
        let template = serde_json::to_value(&d.spec.as_ref().unwrap().template).unwrap();
        pod_security::assert_restricted(what, &template);
    }
}

/// The pod the StatefulSet controller creates for `ordinal`: the template plus one
/// `persistentVolumeClaim` volume per claim template, named as the controller names claims.
fn stateful_set_pod(s: &StatefulSet, ordinal: u32) -> serde_json::Value {
    let spec = s.spec.as_ref().unwrap();
    let name = s.metadata.name.as_deref().unwrap();
    let mut pod = serde_json::to_value(&spec.template).unwrap();
    for claim in spec.volume_claim_templates.iter().flatten() {
        let claim_name = claim.metadata.name.as_deref().unwrap();
        pod["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": claim_name,
                "persistentVolumeClaim": {"claimName": format!("{claim_name}-{name}-{ordinal}")}}));
    }
    pod
}

#[test]
fn a_persistent_queue_volume_runs_the_exporter_as_a_stateful_set() {
    let sink = SpanSink::fixture().with_persistent_queue("20Gi", Some("fast"));
    let c = children(&sink);
    assert_eq!(c.workload.kind(), WorkloadKind::StatefulSet);
    let s = c.stateful_set();
    assert_eq!(s.metadata.name.as_deref(), Some("traces"));
    assert_eq!(s.metadata.labels.as_ref(), Some(&child_labels("traces")));
    assert_eq!(
        s.metadata.owner_references.as_ref().unwrap()[0].controller,
        Some(true)
    );
    let spec = s.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.selector.match_labels, Some(selector_labels("traces")));
    assert_eq!(
        spec.service_name.as_deref(),
        Some("traces"),
        "the SpanSink's Service"
    );
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    let update = spec.update_strategy.as_ref().unwrap();
    assert_eq!(update.type_.as_deref(), Some("RollingUpdate"));
    let retention = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .unwrap();
    assert_eq!(
        (
            retention.when_deleted.as_deref(),
            retention.when_scaled.as_deref()
        ),
        (Some("Retain"), Some("Retain")),
        "claims hold queued spans: kept by default"
    );
    assert_eq!(spec.min_ready_seconds, None);

    // One claim template named like the pod's data volume, and no such pod volume.
    let claims = spec.volume_claim_templates.as_ref().unwrap();
    assert_eq!(claims.len(), 1);
    let claim = &claims[0];
    assert_eq!(claim.metadata.name.as_deref(), Some(DATA_VOLUME));
    assert_eq!(
        claim.metadata.labels.as_ref(),
        Some(&child_labels("traces"))
    );
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(
        claim_spec.access_modes.as_deref().unwrap(),
        ["ReadWriteOnce"]
    );
    assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"],
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("20Gi".into())
    );
    let pod = spec.template.spec.as_ref().unwrap();
    let volumes: Vec<&str> = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, ["config", "tmp"]);
    let mounts: Vec<(&str, &str)> = pod.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    assert_eq!(
        mounts,
        [
            ("config", "/etc/spansink"),
            ("data", "/var/lib/spansink"),
            ("tmp", "/tmp")
        ]
    );

    // The same pod as the Deployment's, but for the data volume: config hash, probes,
    // security contexts, grace period.
    let as_deployment = children(&SpanSink::fixture());
    let mut deployment_pod = as_deployment
        .deployment()
        .spec
        .as_ref()
        .unwrap()
        .template
        .clone();
    if let Some(volumes) = deployment_pod
        .spec
        .as_mut()
        .and_then(|p| p.volumes.as_mut())
    {
        volumes.retain(|v| v.name != DATA_VOLUME);
    }
    assert_eq!(spec.template, deployment_pod);
    assert_eq!(
        spec.template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION],
        c.config_hash
    );
}

#[test]
fn stateful_set_follows_replicas_autoscaling_retention_and_config() {
    use crate::crd::ClaimRetention;
    let mut sink = SpanSink::fixture().with_persistent_queue("1Gi", None);
    sink.spec.replicas = Some(3);
    if let Some(v) = sink
        .spec
        .queue_volume
        .as_mut()
        .and_then(|v| v.persistent.as_mut())
    {
        v.retention_policy.when_scaled = ClaimRetention::Delete;
    }
    let c = children(&sink);
    let spec = c.stateful_set().spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let claim = &spec.volume_claim_templates.unwrap()[0];
    assert_eq!(claim.spec.as_ref().unwrap().storage_class_name, None);
    let retention = spec.persistent_volume_claim_retention_policy.unwrap();
    assert_eq!(
        (
            retention.when_deleted.as_deref(),
            retention.when_scaled.as_deref()
        ),
        (Some("Retain"), Some("Delete"))
    );

    // The HPA scales the StatefulSet and owns its replica count.
    let auto = children(&sink.clone().with_autoscaling(2, 6));
    assert_eq!(auto.stateful_set().spec.as_ref().unwrap().replicas, None);
    let target = auto.autoscaler.unwrap().spec.unwrap().scale_target_ref;
    assert_eq!(
        (
            target.api_version.as_deref(),
            target.kind.as_str(),
            target.name.as_str()
        ),
        (Some("apps/v1"), "StatefulSet", "traces")
    );

    // A config change rolls the StatefulSet's pods through the same annotation.
    let changed = children(&sink.clone().with_pipeline(FILE_PIPELINE_BIG_BATCH));
    let hash = |c: &Children| {
        c.stateful_set()
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    assert_ne!(hash(&changed), hash(&c));
    assert_eq!(hash(&changed), changed.config_hash);

    // The PDB selects the pods whatever runs them.
    let pdb = children(&sink.with_max_unavailable(1))
        .disruption_budget
        .unwrap();
    assert_eq!(
        pdb.spec.unwrap().selector.unwrap().match_labels,
        Some(selector_labels("traces"))
    );
}

#[test]
fn stateful_set_pods_pass_the_restricted_pod_security_standard() {
    let sink = with_user_settings().with_persistent_queue("5Gi", Some("standard"));
    for (what, sink) in [
        (
            "StatefulSet pod, fixture",
            SpanSink::fixture().with_persistent_queue("1Gi", None),
        ),
        ("StatefulSet pod, user-set fields and autoscaling", sink),
    ] {
        let c = children(&sink);
        let pod = stateful_set_pod(c.stateful_set(), 0);
        assert_eq!(
            pod["spec"]["volumes"][2]["persistentVolumeClaim"]["claimName"],
            "data-traces-0"
        );
        pod_security::assert_restricted(what, &pod);
    }
}

#[test]
fn a_durable_queue_off_the_queue_volume_is_refused_naming_sink_and_field() {
    let sink = SpanSink::fixture().with_durable_queue_at("/data/queue");
    match desired(&sink, &settings()).unwrap() {
        Desired::InvalidPipeline(errors) => {
            assert_eq!(errors.0.len(), 1, "{errors}");
            assert_eq!(
                errors.0[0].path,
                "spec.pipeline.sinks.main.queue.durable.path"
            );
            assert!(errors.0[0].message.contains("/data/queue"), "{errors}");
            assert!(
                errors.0[0].message.contains("/var/lib/spansink"),
                "{errors}"
            );
        }
        other => panic!("expected InvalidPipeline, got {other:?}"),
    }
    // Below the mount point: fine, on every kind of queue volume.
    for sink in [
        SpanSink::fixture().with_durable_queue_at("/var/lib/spansink/queue/main"),
        SpanSink::fixture()
            .with_durable_queue_at("/var/lib/spansink/q")
            .with_persistent_queue("1Gi", None),
    ] {
        assert!(matches!(
            desired(&sink, &settings()).unwrap(),
            Desired::Children(_)
        ));
    }
}

#[test]
fn live_claim_templates_are_kept_and_a_changed_one_is_reported() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaimStatus;
    let render = |size: &str, class: Option<&str>| {
        children(&SpanSink::fixture().with_persistent_queue(size, class))
            .stateful_set()
            .clone()
    };
    // As the API server stores the first apply: quantity canonicalised, fields defaulted.
    let mut live = render("1024Mi", Some("standard"));
    {
        let claim = &mut live
            .spec
            .as_mut()
            .unwrap()
            .volume_claim_templates
            .as_mut()
            .unwrap()[0];
        let spec = claim.spec.as_mut().unwrap();
        spec.volume_mode = Some("Filesystem".into());
        spec.resources
            .as_mut()
            .unwrap()
            .requests
            .as_mut()
            .unwrap()
            .insert(
                "storage".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()),
            );
        claim.status = Some(PersistentVolumeClaimStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
    }
    let live_claim = |s: &StatefulSet| {
        s.spec
            .as_ref()
            .unwrap()
            .volume_claim_templates
            .clone()
            .unwrap()
    };

    // Same size, other spelling: no change; the live claim is applied back without the
    // server's own fields.
    let mut same = render("1024Mi", Some("standard"));
    assert_eq!(keep_live_claims(&mut same, &live), None);
    let kept = &live_claim(&same)[0];
    assert!(kept.status.is_none());
    let kept_spec = kept.spec.as_ref().unwrap();
    assert_eq!(kept_spec.volume_mode, None);
    assert_eq!(
        kept_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "1Gi"
    );
    assert_eq!(kept.metadata.labels.as_ref(), Some(&child_labels("traces")));

    // Bigger, or another class: reported, and the live template still applied.
    for (size, class, asked) in [
        (
            "2Gi",
            Some("standard"),
            "size 2Gi, storageClassName \"standard\"",
        ),
        ("1Gi", Some("fast"), "size 1Gi, storageClassName \"fast\""),
        ("1Gi", None, "size 1Gi, the default StorageClass"),
    ] {
        let mut changed = render(size, class);
        let change = keep_live_claims(&mut changed, &live).expect("a change");
        assert_eq!(change.desired, asked);
        assert_eq!(change.live, "size 1Gi, storageClassName \"standard\"");
        let message = change.message();
        assert!(message.contains("StatefulSet traces"), "{message}");
        assert!(message.contains("--cascade=orphan"), "{message}");
        assert_eq!(
            live_claim(&changed)[0]
                .spec
                .as_ref()
                .unwrap()
                .storage_class_name
                .as_deref(),
            Some("standard")
        );
    }
}

/// The pod template's Secret volumes and the container's mounts of them, as JSON.
fn secret_volumes_and_mounts(
    template: &serde_json::Value,
) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let spec = &template["spec"];
    let volumes = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v.get("secret").is_some())
        .cloned()
        .collect();
    let mounts = spec["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"].as_str().unwrap().starts_with("secret-"))
        .cloned()
        .collect();
    (volumes, mounts)
}

#[test]
fn secret_mounts_become_read_only_secret_volumes_on_both_workload_kinds() {
    let sink = SpanSink::fixture().with_secret_mounts();
    let deployment = children(&sink).deployment().clone();
    let stateful = children(&sink.clone().with_persistent_queue("1Gi", None))
        .stateful_set()
        .clone();
    for template in [
        serde_json::to_value(&deployment.spec.as_ref().unwrap().template).unwrap(),
        serde_json::to_value(&stateful.spec.as_ref().unwrap().template).unwrap(),
    ] {
        let (volumes, mounts) = secret_volumes_and_mounts(&template);
        assert_eq!(
            volumes,
            [
                serde_json::json!({"name": "secret-0", "secret": {"secretName": "receiver-tls", "defaultMode": 0o440}}),
                serde_json::json!({"name": "secret-1", "secret": {"secretName": "postgres-ca", "defaultMode": 0o440,
                    "items": [{"key": "ca.crt", "path": "root.crt"}]}}),
            ]
        );
        assert_eq!(
            mounts,
            [
                serde_json::json!({"name": "secret-0", "mountPath": "/etc/spansink/tls", "readOnly": true}),
                serde_json::json!({"name": "secret-1", "mountPath": "/etc/spansink/postgres", "readOnly": true}),
            ]
        );
        // The config stays mounted where the exporter reads it.
        assert_eq!(
            template["spec"]["containers"][0]["volumeMounts"][0],
            serde_json::json!({"name": "config", "mountPath": "/etc/spansink", "readOnly": true})
        );
    }
}

#[test]
fn secret_mounts_do_not_touch_the_config_hash() {
    // Secret contents never reach the template: a Secret update must not roll the pods
    // (the kubelet updates the files), and the config hash covers the config only.
    let plain = children(&SpanSink::fixture());
    let mounted = children(&SpanSink::fixture().with_secret_mounts());
    assert_eq!(plain.config_hash, mounted.config_hash);
    assert_eq!(
        hash_annotation(plain.deployment()),
        hash_annotation(mounted.deployment())
    );
}

#[test]
fn pods_with_secret_mounts_pass_the_restricted_pod_security_standard() {
    for (what, sink) in [
        (
            "Deployment pod with secretMounts",
            SpanSink::fixture().with_secret_mounts(),
        ),
        (
            "StatefulSet pod with secretMounts",
            with_user_settings()
                .with_secret_mounts()
                .with_persistent_queue("1Gi", None),
        ),
    ] {
        let c = children(&sink);
        let pod = match c.workload.kind() {
            WorkloadKind::Deployment => {
                serde_json::to_value(&c.deployment().spec.as_ref().unwrap().template).unwrap()
            }
            WorkloadKind::StatefulSet => stateful_set_pod(c.stateful_set(), 0),
        };
        assert_eq!(secret_volumes_and_mounts(&pod).0.len(), 2, "{what}");
        pod_security::assert_restricted(what, &pod);
    }
}

#[test]
fn a_bad_secret_mount_is_refused_naming_its_field_from_the_spansink_root() {
    let sink = SpanSink::fixture()
        .with_secret_mount("receiver-tls", "/etc/spansink/tls")
        .with_secret_mount("Bad_Name", "/var/lib/spansink/tls");
    match desired(&sink, &settings()).unwrap() {
        Desired::InvalidPipeline(errors) => {
            let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(
                paths,
                [
                    "spec.secretMounts[1].secretName",
                    "spec.secretMounts[1].mountPath"
                ],
                "{errors}"
            );
            assert!(
                errors.0[1].message.contains("/var/lib/spansink"),
                "{errors}"
            );
        }
        other => panic!("expected InvalidPipeline, got {other:?}"),
    }
}
