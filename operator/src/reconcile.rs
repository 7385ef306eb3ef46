//! The pure half of reconciliation: from a SpanSink and the operator's settings to the exact
//! children it should have. No I/O here; the controller applies what this returns.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EphemeralVolumeSource, HTTPGetAction, LocalObjectReference, PersistentVolumeClaimSpec,
    PersistentVolumeClaimTemplate, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use spansink_config::{ExporterConfig, ValidationErrors};

use crate::crd::{ImagePullPolicy, ManagementState, QueueVolumeSpec, SpanSink};
use crate::error::{Error, Result};

mod secret_mounts;
mod stateful_set;
mod volume_paths;
mod workload;

pub use secret_mounts::{FoundSecret, SECRET_FILE_MODE, SecretProblem, secret_problems};
pub use stateful_set::{ClaimChange, DATA_VOLUME, keep_live_claims};
pub use workload::{Rollout, Workload, WorkloadKind};

/// Pod-template annotation holding the config hash: a new hash rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "spansink.dev/config-hash";
/// Key of the exporter config inside the ConfigMap.
pub const CONFIG_KEY: &str = "config.yaml";
/// Where the ConfigMap is mounted in the exporter container.
pub const CONFIG_DIR: &str = "/etc/spansink";
/// Where the queue volume is mounted: the durable queues and file sinks write below it.
pub const DATA_DIR: &str = "/var/lib/spansink";
/// Name of the exporter container.
pub const CONTAINER_NAME: &str = "exporter";
/// Service ports: fixed, whatever ports the pipeline's receivers listen on in the pod.
pub const GRPC_PORT: i32 = 4317;
/// OTLP/HTTP service port.
pub const HTTP_PORT: i32 = 4318;
/// Metrics/health service port.
pub const METRICS_PORT: i32 = 8888;
/// UID/GID the exporter runs as (the distroless `nonroot` user).
pub const RUN_AS: i64 = 65532;
/// The exporter image of this operator's own version: the default of `--exporter-image`,
/// so an operator always deploys the exporter it was released (and tested) with.
pub const DEFAULT_EXPORTER_IMAGE: &str = concat!(
    "ghcr.io/spansink/spansink-exporter:",
    env!("CARGO_PKG_VERSION")
);
/// Added to the exporter's own shutdown bound in `terminationGracePeriodSeconds`: the
/// receivers finishing in-flight requests, process exit, and the kubelet's signal delivery.
pub const GRACE_MARGIN: Duration = Duration::from_secs(10);

/// The ServiceMonitor kind (Prometheus Operator), which may or may not be installed.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

/// What the reconcile needs to know beyond the SpanSink itself.
#[derive(Debug, Clone)]
pub struct OperatorSettings {
    /// Exporter image used when `spec.image` is unset.
    pub exporter_image: String,
    /// Whether the cluster serves `monitoring.coreos.com/v1` ServiceMonitor (discovery).
    pub service_monitor_available: bool,
    /// Defaults for exporter pods where the SpanSink leaves a field unset.
    pub pod_defaults: ExporterPodDefaults,
}

/// Every child a managed, valid SpanSink should have. `None` children must not exist.
#[derive(Debug, Clone)]
pub struct Children {
    /// The rendered exporter config.
    pub config_map: ConfigMap,
    /// The exporter pods: a Deployment, or a StatefulSet with a persistent queue volume.
    pub workload: Workload,
    /// OTLP and metrics ports in front of the pods.
    pub service: Service,
    /// `<name>-headless`: the pods' own addresses in DNS, for clients that balance
    /// themselves (`dns:///<name>-headless.<namespace>.svc:4317` with gRPC's
    /// `round_robin`), since a ClusterIP sends every request of a long-lived gRPC
    /// connection to one pod.
    pub headless_service: Service,
    /// Present when `spec.autoscaling` is set.
    pub autoscaler: Option<HorizontalPodAutoscaler>,
    /// Present when `spec.podDisruptionBudget` is set.
    pub disruption_budget: Option<PodDisruptionBudget>,
    /// Present when enabled and the ServiceMonitor kind is served.
    pub service_monitor: Option<DynamicObject>,
    /// SHA-256 (hex) of the rendered config, also on the pod template.
    pub config_hash: String,
    /// Why a requested ServiceMonitor is not among the children.
    pub service_monitor_skipped: Option<String>,
}

/// What reconciling a SpanSink amounts to.
#[derive(Debug, Clone)]
pub enum Desired {
    /// Make the cluster hold exactly these children.
    Children(Box<Children>),
    /// The spec fails validation ([`validate`]), in its pipeline or in the operator's own
    /// fields (`secretMounts`): report it and leave every child as it is.
    InvalidPipeline(ValidationErrors),
    /// `managementState: unmanaged`: leave every child as it is.
    Unmanaged,
}

/// The operator's defaults for exporter pods, used where a SpanSink leaves the field unset
/// (flags `--exporter-image-pull-policy`, `--exporter-image-pull-secrets`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExporterPodDefaults {
    /// Pull policy; `None`: Kubernetes' default for the image's tag.
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// Names of image pull Secrets, looked up in each SpanSink's namespace.
    pub image_pull_secrets: Vec<String>,
}

/// The children a SpanSink should have, or why none should be touched.
pub fn desired(sink: &SpanSink, settings: &OperatorSettings) -> Result<Desired> {
    if sink.spec.management_state == ManagementState::Unmanaged {
        return Ok(Desired::Unmanaged);
    }
    if let Err(errors) = validate(sink) {
        return Ok(Desired::InvalidPipeline(errors));
    }
    let owner = sink
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey("uid"))?;
    let namespace = sink
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let cx = Context {
        sink,
        settings,
        pod_defaults: &settings.pod_defaults,
        owner,
        namespace,
        name: sink.name_any(),
    };

    let config_yaml = sink.spec.pipeline.to_yaml();
    let config_hash = config_hash(&config_yaml);
    let wants_monitor = sink.spec.service_monitor.enabled;
    let service_monitor_skipped = (wants_monitor && !settings.service_monitor_available).then(|| {
        "spec.serviceMonitor.enabled is true but this cluster does not serve monitoring.coreos.com/v1 \
         ServiceMonitor; install the Prometheus Operator CRDs, or scrape the pods through their \
         prometheus.io annotations"
            .to_string()
    });
    Ok(Desired::Children(Box::new(Children {
        config_map: cx.config_map(config_yaml),
        workload: cx.workload(&config_hash),
        service: cx.service(),
        headless_service: cx.headless_service(),
        autoscaler: cx.autoscaler(),
        disruption_budget: cx.disruption_budget(),
        service_monitor: (wants_monitor && settings.service_monitor_available)
            .then(|| cx.service_monitor()),
        config_hash,
        service_monitor_skipped,
    })))
}

/// The exporter's own validation of the pipeline, plus what the operator's pods add: every
/// durable queue must lie on the queue volume, and `spec.secretMounts` must be mountable.
/// Paths are from the SpanSink's root (`spec.pipeline.sinks.main.fallback`,
/// `spec.secretMounts[1].mountPath`).
pub fn validate(sink: &SpanSink) -> std::result::Result<(), ValidationErrors> {
    let mut errors = match spansink_config::validate(&sink.spec.pipeline) {
        Ok(()) => Vec::new(),
        Err(ValidationErrors(errors)) => errors,
    };
    errors.extend(volume_paths::durable_queues_off_the_volume(
        &sink.spec.pipeline,
    ));
    for error in &mut errors {
        error.path.insert_str(0, "spec.pipeline.");
    }
    errors.extend(secret_mounts::validate(&sink.spec.secret_mounts));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// SHA-256 of the rendered config, lowercase hex.
pub fn config_hash(config_yaml: &str) -> String {
    const_hex::encode(Sha256::digest(config_yaml.as_bytes()))
}

/// Name of the ConfigMap of a SpanSink.
pub fn config_map_name(sink_name: &str) -> String {
    format!("{sink_name}-config")
}

/// Labels that select a SpanSink's pods (and nothing else).
pub fn selector_labels(sink_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "spansink-exporter".into()),
        ("app.kubernetes.io/instance".into(), sink_name.into()),
    ])
}

/// Labels on every child: the selector plus the standard descriptive ones.
pub fn child_labels(sink_name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(sink_name);
    labels.insert("app.kubernetes.io/component".into(), "exporter".into());
    labels.insert("app.kubernetes.io/part-of".into(), "spansink".into());
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "spansink-operator".into(),
    );
    labels
}

/// The selector as the string form the scale subresource and HPAs read.
pub fn selector_string(sink_name: &str) -> String {
    selector_labels(sink_name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The name of a SpanSink's headless Service.
pub fn headless_service_name(sink_name: &str) -> String {
    format!("{sink_name}-headless")
}

/// The in-cluster DNS name of a SpanSink's Service.
pub fn service_host(sink_name: &str, namespace: &str) -> String {
    format!("{sink_name}.{namespace}.svc")
}

struct Context<'a> {
    sink: &'a SpanSink,
    settings: &'a OperatorSettings,
    pod_defaults: &'a ExporterPodDefaults,
    owner: OwnerReference,
    namespace: String,
    name: String,
}

impl Context<'_> {
    fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(child_labels(&self.name)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    fn selector(&self) -> LabelSelector {
        LabelSelector {
            match_labels: Some(selector_labels(&self.name)),
            ..LabelSelector::default()
        }
    }

    fn pipeline(&self) -> &ExporterConfig {
        &self.sink.spec.pipeline
    }

    fn config_map(&self, config_yaml: String) -> ConfigMap {
        ConfigMap {
            metadata: self.meta(config_map_name(&self.name)),
            data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), config_yaml)])),
            ..ConfigMap::default()
        }
    }

    /// Container ports follow the pipeline (a receiver may listen elsewhere or be off).
    fn container_ports(&self) -> Vec<ContainerPort> {
        let r = &self.pipeline().receivers;
        let mut ports = Vec::new();
        if r.grpc.enabled {
            ports.push(port("otlp-grpc", listen_port(&r.grpc.endpoint, GRPC_PORT)));
        }
        if r.http.enabled {
            ports.push(port("otlp-http", listen_port(&r.http.endpoint, HTTP_PORT)));
        }
        ports.push(port(
            "metrics",
            listen_port(&self.pipeline().telemetry.endpoint, METRICS_PORT),
        ));
        ports
    }

    /// The Deployment, or the StatefulSet when the queue volume is persistent.
    fn workload(&self, config_hash: &str) -> Workload {
        let template = self.pod_template(config_hash);
        match self.sink.spec.persistent_queue_volume() {
            Some(volume) => Workload::StatefulSet(self.stateful_set(template, volume)),
            None => Workload::Deployment(self.deployment(template)),
        }
    }

    /// The exporter pod: the same for both workload kinds.
    fn pod_template(&self, config_hash: &str) -> PodTemplateSpec {
        let spec = &self.sink.spec;
        let metrics_port = listen_port(&self.pipeline().telemetry.endpoint, METRICS_PORT);

        let mut pod_labels = spec.pod_labels.clone();
        pod_labels.extend(child_labels(&self.name));
        let mut pod_annotations = spec.pod_annotations.clone();
        pod_annotations.extend([
            (CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string()),
            ("prometheus.io/scrape".into(), "true".into()),
            ("prometheus.io/port".into(), metrics_port.to_string()),
            ("prometheus.io/path".into(), "/metrics".into()),
        ]);

        let probe = |path: &str, period: i32, failures: i32| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::String("metrics".into()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(period),
            failure_threshold: Some(failures),
            ..Probe::default()
        };

        let container = Container {
            name: CONTAINER_NAME.into(),
            image: Some(
                spec.image
                    .clone()
                    .unwrap_or_else(|| self.settings.exporter_image.clone()),
            ),
            image_pull_policy: spec
                .image_pull_policy
                .or(self.pod_defaults.image_pull_policy)
                .map(|p| p.as_str().to_string()),
            args: Some(vec![
                "run".into(),
                "--config".into(),
                format!("{CONFIG_DIR}/{CONFIG_KEY}"),
            ]),
            ports: Some(self.container_ports()),
            env: (!spec.env.is_empty()).then(|| spec.env.clone()),
            env_from: (!spec.env_from.is_empty()).then(|| spec.env_from.clone()),
            resources: spec.resources.clone(),
            liveness_probe: Some(probe("/healthz", 10, 3)),
            readiness_probe: Some(probe("/readyz", 5, 2)),
            security_context: Some(SecurityContext {
                run_as_non_root: Some(true),
                read_only_root_filesystem: Some(true),
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    ..Capabilities::default()
                }),
                seccomp_profile: Some(runtime_default_seccomp()),
                ..SecurityContext::default()
            }),
            volume_mounts: Some(
                vec![
                    VolumeMount {
                        name: "config".into(),
                        mount_path: CONFIG_DIR.into(),
                        read_only: Some(true),
                        ..VolumeMount::default()
                    },
                    VolumeMount {
                        name: DATA_VOLUME.into(),
                        mount_path: DATA_DIR.into(),
                        ..VolumeMount::default()
                    },
                    VolumeMount {
                        name: "tmp".into(),
                        mount_path: "/tmp".into(),
                        ..VolumeMount::default()
                    },
                ]
                .into_iter()
                .chain(secret_mounts::volume_mounts(&spec.secret_mounts))
                .collect(),
            ),
            ..Container::default()
        };

        // The StatefulSet's claim template provides the data volume of its pods.
        let mut volumes = vec![Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(&self.name),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        }];
        volumes.extend(self.data_volume());
        volumes.push(Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
        // No hash of the Secrets' contents on the template: their updates reach the pods
        // through the kubelet's volume refresh, without a rollout.
        volumes.extend(secret_mounts::volumes(&spec.secret_mounts));

        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(pod_labels),
                annotations: Some(pod_annotations),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![container],
                service_account_name: spec.service_account_name.clone(),
                node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
                tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
                affinity: spec.affinity.clone(),
                termination_grace_period_seconds: Some(termination_grace_period_seconds(
                    self.pipeline(),
                )),
                image_pull_secrets: self.image_pull_secrets(),
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    run_as_user: Some(RUN_AS),
                    run_as_group: Some(RUN_AS),
                    fs_group: Some(RUN_AS),
                    seccomp_profile: Some(runtime_default_seccomp()),
                    ..PodSecurityContext::default()
                }),
                volumes: Some(volumes),
                ..PodSpec::default()
            }),
        }
    }

    /// Pods kept by the workload: unset with autoscaling, where the HPA owns the count
    /// (leaving the field out of our apply keeps server-side apply from fighting it).
    fn replicas(&self) -> Option<i32> {
        match self.sink.spec.autoscaling {
            Some(_) => None,
            None => Some(self.sink.spec.replicas.unwrap_or(1)),
        }
    }

    fn deployment(&self, template: PodTemplateSpec) -> Deployment {
        Deployment {
            metadata: self.meta(self.name.clone()),
            spec: Some(DeploymentSpec {
                replicas: self.replicas(),
                selector: self.selector(),
                // Surge before removing an old pod, so a rollout never drops capacity.
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(1)),
                        max_unavailable: Some(IntOrString::Int(0)),
                    }),
                }),
                template,
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }
    }

    /// The SpanSink's list when set (even empty), else the operator's default; `None` when
    /// empty so the field stays out of the apply.
    fn image_pull_secrets(&self) -> Option<Vec<LocalObjectReference>> {
        let secrets = match &self.sink.spec.image_pull_secrets {
            Some(own) => own.clone(),
            None => self
                .pod_defaults
                .image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect(),
        };
        (!secrets.is_empty()).then_some(secrets)
    }

    /// The data volume of the pod template; none for a persistent queue volume, which the
    /// StatefulSet's claim template provides under the same name.
    fn data_volume(&self) -> Option<Volume> {
        let mut volume = Volume {
            name: DATA_VOLUME.into(),
            ..Volume::default()
        };
        match &self.sink.spec.queue_volume {
            Some(QueueVolumeSpec {
                persistent: Some(_),
                ..
            }) => return None,
            Some(QueueVolumeSpec {
                ephemeral: Some(ephemeral),
                ..
            }) => {
                volume.ephemeral = Some(EphemeralVolumeSource {
                    volume_claim_template: Some(PersistentVolumeClaimTemplate {
                        metadata: Some(ObjectMeta {
                            labels: Some(child_labels(&self.name)),
                            ..ObjectMeta::default()
                        }),
                        spec: PersistentVolumeClaimSpec {
                            access_modes: Some(vec!["ReadWriteOnce".into()]),
                            storage_class_name: ephemeral.storage_class_name.clone(),
                            resources: Some(VolumeResourceRequirements {
                                requests: Some(BTreeMap::from([(
                                    "storage".to_string(),
                                    ephemeral.size.clone(),
                                )])),
                                ..VolumeResourceRequirements::default()
                            }),
                            ..PersistentVolumeClaimSpec::default()
                        },
                    }),
                })
            }
            Some(QueueVolumeSpec {
                empty_dir: Some(dir),
                ..
            }) => {
                volume.empty_dir = Some(EmptyDirVolumeSource {
                    medium: dir.medium.clone(),
                    size_limit: dir.size_limit.clone(),
                })
            }
            _ => volume.empty_dir = Some(EmptyDirVolumeSource::default()),
        }
        Some(volume)
    }

    /// The ports of the enabled OTLP receivers.
    fn otlp_ports(&self) -> Vec<ServicePort> {
        let r = &self.pipeline().receivers;
        let mut ports = Vec::new();
        if r.grpc.enabled {
            ports.push(service_port("otlp-grpc", GRPC_PORT, Some("grpc")));
        }
        if r.http.enabled {
            ports.push(service_port("otlp-http", HTTP_PORT, Some("http")));
        }
        ports
    }

    fn service(&self) -> Service {
        let mut ports = self.otlp_ports();
        ports.push(service_port("metrics", METRICS_PORT, Some("http")));
        let mut metadata = self.meta(self.name.clone());
        if !self.sink.spec.service.annotations.is_empty() {
            metadata.annotations = Some(self.sink.spec.service.annotations.clone());
        }
        Service {
            metadata,
            spec: Some(ServiceSpec {
                type_: Some(self.sink.spec.service.type_.as_str().into()),
                selector: Some(selector_labels(&self.name)),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    /// The OTLP ports only, with no cluster IP: DNS answers with every ready pod.
    fn headless_service(&self) -> Service {
        let ports = self.otlp_ports();
        Service {
            metadata: self.meta(headless_service_name(&self.name)),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: Some("None".into()),
                selector: Some(selector_labels(&self.name)),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn autoscaler(&self) -> Option<HorizontalPodAutoscaler> {
        let auto = self.sink.spec.autoscaling.as_ref()?;
        let utilization = |resource: &str, percent: i32| MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: resource.into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(percent),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        };
        let mut metrics = Vec::new();
        let cpu = match (
            auto.target_cpu_utilization_percentage,
            auto.target_memory_utilization_percentage,
        ) {
            (None, None) => Some(80),
            (cpu, _) => cpu,
        };
        if let Some(cpu) = cpu {
            metrics.push(utilization("cpu", cpu));
        }
        if let Some(memory) = auto.target_memory_utilization_percentage {
            metrics.push(utilization("memory", memory));
        }
        Some(HorizontalPodAutoscaler {
            metadata: self.meta(self.name.clone()),
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: WorkloadKind::of(self.sink).as_str().into(),
                    name: self.name.clone(),
                },
                min_replicas: Some(auto.min_replicas.unwrap_or(1)),
                max_replicas: auto.max_replicas,
                metrics: Some(metrics),
                ..HorizontalPodAutoscalerSpec::default()
            }),
            ..HorizontalPodAutoscaler::default()
        })
    }

    fn disruption_budget(&self) -> Option<PodDisruptionBudget> {
        let budget = self.sink.spec.pod_disruption_budget.as_ref()?;
        Some(PodDisruptionBudget {
            metadata: self.meta(self.name.clone()),
            spec: Some(PodDisruptionBudgetSpec {
                min_available: budget.min_available.clone(),
                max_unavailable: budget.max_unavailable.clone(),
                selector: Some(self.selector()),
                ..PodDisruptionBudgetSpec::default()
            }),
            ..PodDisruptionBudget::default()
        })
    }

    fn service_monitor(&self) -> DynamicObject {
        let monitor = &self.sink.spec.service_monitor;
        let mut metadata = self.meta(self.name.clone());
        if let Some(labels) = metadata.labels.as_mut() {
            // Our labels win: they are how the operator finds its children.
            let ours = std::mem::take(labels);
            labels.extend(monitor.labels.clone());
            labels.extend(ours);
        }
        let mut endpoint = json!({"port": "metrics", "path": "/metrics"});
        if let Some(interval) = &monitor.interval {
            endpoint["interval"] = json!(interval);
        }
        let mut object = DynamicObject::new(&self.name, &service_monitor_resource()).data(json!({
            "spec": {
                "selector": {"matchLabels": selector_labels(&self.name)},
                "endpoints": [endpoint],
            }
        }));
        object.metadata = metadata;
        object
    }
}

/// `terminationGracePeriodSeconds` of the exporter pods, in whole seconds rounded up. On
/// SIGTERM the exporter stops its receivers, delivers what is queued for up to
/// `shutdown.drain_timeout`, then gives its sinks up to
/// [`ShutdownConfig::SINK_SHUTDOWN_TIMEOUT`](spansink_config::ShutdownConfig::SINK_SHUTDOWN_TIMEOUT)
/// to flush and close; a kubelet SIGKILL before that end loses spans the exporter already
/// accepted. [`GRACE_MARGIN`] covers what happens around the chain's shutdown.
pub fn termination_grace_period_seconds(pipeline: &ExporterConfig) -> i64 {
    let bound = pipeline
        .shutdown
        .max_chain_shutdown()
        .saturating_add(GRACE_MARGIN);
    let whole = bound.as_secs() + u64::from(bound.subsec_nanos() > 0);
    i64::try_from(whole).unwrap_or(i64::MAX)
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: number,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn service_port(name: &str, number: i32, app_protocol: Option<&str>) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        app_protocol: app_protocol.map(Into::into),
        ..ServicePort::default()
    }
}

/// The port of a validated `host:port` listen address; `fallback` if it cannot be read
/// (validation already refused such configs) or is 0 (a random port cannot be probed).
fn listen_port(endpoint: &str, fallback: i32) -> i32 {
    endpoint
        .parse::<SocketAddr>()
        .ok()
        .map(|a| i32::from(a.port()))
        .filter(|p| *p != 0)
        .unwrap_or(fallback)
}

#[cfg(test)]
mod tests;
