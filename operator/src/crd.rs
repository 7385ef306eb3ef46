//! The `SpanSink` custom resource (`spansink.dev/v1alpha1`): its spec, embedding the exporter's
//! own config type as `pipeline`, and its status. Only types and their schema; no cluster access.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvFromSource, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use spansink_config::ExporterConfig;

/// API group of every spansink resource.
pub const GROUP: &str = "spansink.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Desired state of one spansink exporter: the sink chain it runs and how its pods are
/// deployed. The operator renders `pipeline` into a ConfigMap and runs it in a Deployment
/// (a StatefulSet with a `persistent` queue volume) behind a Service (OTLP gRPC 4317, OTLP HTTP 4318, metrics 8888).
// Several `printcolumn(...)` entries repeat `type_ = ...`; clippy reads them as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "spansink.dev",
    version = "v1alpha1",
    kind = "SpanSink",
    plural = "spansinks",
    singular = "spansink",
    shortname = "ssink",
    category = "spansink",
    namespaced,
    doc = "A spansink exporter: receives OTLP traces and writes them to the sinks of its pipeline, with batching, retries, rate limits and fallbacks.",
    status = "SpanSinkStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        description = "Whether the exporter runs the current config and has ready pods",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        description = "Ready exporter pods",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        description = "OTLP/gRPC endpoint to send traces to",
        json_path = ".status.endpoints.grpc"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))").message("set either spec.replicas or spec.autoscaling, not both"))]
#[serde(rename_all = "camelCase")]
pub struct SpanSinkSpec {
    /// The exporter configuration (receivers, sinks with their policies, telemetry), in the
    /// same format as the exporter's config file. The operator checks it with the
    /// exporter's own validation before rolling it out; an invalid pipeline is reported
    /// in the `ConfigValid` condition and the running exporter is left untouched.
    pub pipeline: ExporterConfig,

    /// Number of exporter pods. Unset: 1 (or what `autoscaling` decides). Mutually
    /// exclusive with `autoscaling`; `kubectl scale` sets this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// Scale the exporter with a HorizontalPodAutoscaler (autoscaling/v2) instead of a
    /// fixed `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// Exporter container image. Unset: the operator's default exporter image
    /// (`--exporter-image`, by default the exporter of the operator's own version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// When the kubelet pulls the exporter image: `Always`, `IfNotPresent` or `Never`.
    /// Unset: the operator's default (`--exporter-image-pull-policy`); if that is unset
    /// too, Kubernetes decides (`Always` for a `:latest` or untagged image, else
    /// `IfNotPresent`).
    // Schema as a plain string enum: derived from `Option<ImagePullPolicy>` the field would
    // carry the enum type's description instead of this one in `kubectl explain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Secrets in the SpanSink's namespace holding the registry credentials to pull the
    /// exporter image, e.g. `[{name: regcred}]`. Unset: the operator's default
    /// (`--exporter-image-pull-secrets`); an empty list means none, whatever the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,

    /// CPU and memory requests and limits of the exporter container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra environment variables of the exporter container, e.g. a token taken from a
    /// Secret with `valueFrom.secretKeyRef`, referenced in the pipeline as `${env:NAME}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Environment variables taken whole from Secrets or ConfigMaps. This is how
    /// credentials reach the exporter: the operator never copies a Secret's value into
    /// the rendered ConfigMap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,

    /// Secrets mounted read-only as files in the exporter container, each in its own
    /// directory below `/etc/spansink`: the files the pipeline names by path (a sink's
    /// `ca_file`, `cert_file`, `key_file`). Files are readable by the exporter's user only
    /// (mode 0440, group 65532). A Secret update reaches running pods through the kubelet's
    /// volume update (typically within a minute), without a rollout; the exporter sees the
    /// new files when it next reads them. A missing Secret (or key) is reported in the
    /// `Ready` condition, since the pods cannot start without it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_mounts: Vec<SecretMount>,

    /// Node labels the exporter pods must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the exporter pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Scheduling affinity of the exporter pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Extra annotations on the exporter pods (merged over the operator's own, which win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// Extra labels on the exporter pods. The `app.kubernetes.io/*` labels the operator
    /// selects on cannot be overridden.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,

    /// ServiceAccount the exporter pods run as. Unset: the namespace's `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// The Service in front of the exporter pods.
    #[serde(default)]
    pub service: ServiceSpec,

    /// A PodDisruptionBudget for the exporter pods. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: Option<PodDisruptionBudgetSpec>,

    /// A Prometheus Operator ServiceMonitor for the exporter's metrics. Created only when
    /// enabled and the ServiceMonitor CRD is installed; otherwise the status says why not.
    #[serde(default)]
    pub service_monitor: ServiceMonitorSpec,

    /// The writable volume mounted at `/var/lib/spansink` (the durable queues, file sinks).
    /// Unset: an `emptyDir` without size limit. With `persistent`, the exporter runs as a
    /// StatefulSet instead of a Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_volume: Option<QueueVolumeSpec>,

    /// `managed` (default): the operator keeps the children in sync with this spec.
    /// `unmanaged`: the operator leaves the children as they are (neither updated nor
    /// deleted), e.g. to debug an exporter by hand; status is still reported.
    #[serde(default)]
    pub management_state: ManagementState,
}

impl SpanSinkSpec {
    /// The persistent queue volume, when that is the kind chosen (the exporter then runs
    /// as a StatefulSet).
    pub fn persistent_queue_volume(&self) -> Option<&PersistentQueueVolume> {
        self.queue_volume.as_ref()?.persistent.as_ref()
    }
}

/// One Secret mounted as a directory of files, e.g. a cert-manager certificate Secret at
/// `/etc/spansink/tls` gives `/etc/spansink/tls/tls.crt`, `tls.key` and `ca.crt`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretMount {
    /// Name of the Secret, in the SpanSink's namespace.
    pub secret_name: String,
    /// Absolute path of the directory the Secret's files appear in: strictly below
    /// `/etc/spansink` (where the rendered config is mounted too), e.g. `/etc/spansink/tls`;
    /// not `/etc/spansink/config.yaml`, and neither inside nor around another secret mount.
    pub mount_path: String,
    /// Which keys to mount and the file name of each. Unset: every key of the Secret, as a
    /// file named after the key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<SecretMountItem>,
    /// Let the pods start without the Secret (an empty directory) or without a key named in
    /// `items`. Default: `false`: the pods wait for the Secret, and the status names it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// One key of a mounted Secret and the file it becomes.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretMountItem {
    /// Key in the Secret's `data`, e.g. `tls.crt`.
    pub key: String,
    /// File path relative to `mountPath`, e.g. `server.crt` or `client/tls.crt`; no `..`.
    pub path: String,
}

/// Kubernetes image pull policy of a container.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePullPolicy {
    /// Pull on every container start (registry credentials are checked each time).
    Always,
    /// Pull only when the node does not have the image yet.
    IfNotPresent,
    /// Never pull: the image must already be on the node (e.g. loaded into kind).
    Never,
}

impl ImagePullPolicy {
    /// Every policy, in the order Kubernetes documents them.
    pub const ALL: [ImagePullPolicy; 3] = [Self::Always, Self::IfNotPresent, Self::Never];

    /// The name Kubernetes uses in `Container.imagePullPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// A string that names no image pull policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown image pull policy {0:?}; use Always, IfNotPresent or Never")]
pub struct UnknownImagePullPolicy(pub String);

impl std::str::FromStr for ImagePullPolicy {
    type Err = UnknownImagePullPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownImagePullPolicy(s.to_string()))
    }
}

/// Autoscaling bounds and targets, rendered into a HorizontalPodAutoscaler (autoscaling/v2)
/// that scales the exporter Deployment (or StatefulSet).
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.minReplicas) || self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Fewest pods. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_replicas: Option<i32>,
    /// Most pods.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Target average CPU use, in percent of the requested CPU. Unset (and no memory
    /// target): 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_cpu_utilization_percentage: Option<i32>,
    /// Target average memory use, in percent of the requested memory. Unset: not a target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_memory_utilization_percentage: Option<i32>,
}

/// The Service that applications send traces to.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type. Default: `ClusterIP`.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Extra annotations on the Service (e.g. for a cloud load balancer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Kubernetes Service type.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also through a cloud load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The name Kubernetes uses in `Service.spec.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// How many exporter pods must stay up during voluntary disruptions (node drains).
/// Exactly one of the two fields is set.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("has(self.minAvailable) != has(self.maxUnavailable)").message("set exactly one of podDisruptionBudget.minAvailable and maxUnavailable"))]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Pods that must stay available: a number or a percentage such as `"50%"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    /// Pods that may be unavailable at once: a number or a percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// Prometheus Operator scraping of the exporter's `/metrics`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Create a ServiceMonitor. Default: `false`.
    #[serde(default)]
    pub enabled: bool,
    /// Scrape interval in Prometheus notation, e.g. `30s`. Unset: Prometheus' default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub interval: Option<String>,
    /// Extra labels on the ServiceMonitor, so that a Prometheus' `serviceMonitorSelector`
    /// picks it up.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The exporter's writable data volume, mounted at `/var/lib/spansink`: where the durable
/// queues (`queue.durable`) and file sinks write. Exactly one of `emptyDir`, `ephemeral` and
/// `persistent` is set.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.emptyDir) ? 1 : 0) + (has(self.ephemeral) ? 1 : 0) + (has(self.persistent) ? 1 : 0) == 1").message("set exactly one of queueVolume.emptyDir, queueVolume.ephemeral and queueVolume.persistent"))]
#[serde(rename_all = "camelCase")]
pub struct QueueVolumeSpec {
    /// A node-local `emptyDir`: kept across container restarts (crash, OOM kill), lost when
    /// the pod is deleted (rollout, scale-down, eviction, node loss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirQueueVolume>,
    /// A PersistentVolumeClaim created with each pod (a generic ephemeral volume): storage
    /// from a StorageClass, kept across container restarts, deleted with the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<EphemeralQueueVolume>,
    /// A PersistentVolumeClaim per replica that outlives its pod: the exporter runs as a
    /// StatefulSet, so a deleted, rescheduled or updated pod gets its claim (and the spans
    /// queued on it) back. The claim's size and class cannot change once the StatefulSet
    /// exists (see the README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<PersistentQueueVolume>,
}

/// An `emptyDir` data volume.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirQueueVolume {
    /// Most space the volume may use, e.g. `1Gi`; the pod is evicted beyond it. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
    /// `Memory` to back the volume with RAM (tmpfs; what it holds counts against the
    /// container's memory limit). Unset: the node's disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
}

/// A per-pod PersistentVolumeClaim data volume.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EphemeralQueueVolume {
    /// Requested size: a positive Kubernetes quantity of bytes, e.g. `10Gi`, `500M`, `1e9`.
    #[schemars(schema_with = "crate::quantity::storage_size_schema")]
    pub size: Quantity,
    /// StorageClass of the claim. Unset: the cluster's default StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// One PersistentVolumeClaim per exporter replica, from the StatefulSet's
/// `volumeClaimTemplates` (claims named `data-<spansink>-<ordinal>`).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PersistentQueueVolume {
    /// Requested size of each replica's claim: a positive Kubernetes quantity of bytes,
    /// e.g. `10Gi`, `500M`, `1e9`. Size it for `queue.durable.max_bytes` of every sink plus
    /// what file sinks write.
    #[schemars(schema_with = "crate::quantity::storage_size_schema")]
    pub size: Quantity,
    /// StorageClass of the claims. Unset: the cluster's default StorageClass; `""`: no
    /// class (binds pre-provisioned PersistentVolumes without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// What happens to the claims when replicas are removed or the StatefulSet is
    /// deleted. Default: `Retain` for both, since the spans queued on a claim are lost
    /// with it.
    #[serde(default)]
    pub retention_policy: ClaimRetentionPolicy,
}

/// The StatefulSet's `persistentVolumeClaimRetentionPolicy`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRetentionPolicy {
    /// When the StatefulSet is deleted (the SpanSink is deleted, or its queue volume is
    /// no longer `persistent`): `Retain` (default) keeps the claims, which a StatefulSet of
    /// the same name takes up again; `Delete` deletes them with the spans still on them.
    #[serde(default)]
    pub when_deleted: ClaimRetention,
    /// When replicas are removed (scale-down): `Retain` (default) keeps each removed
    /// replica's claim, used again (and its queue delivered) when the replica comes back;
    /// `Delete` deletes it.
    #[serde(default)]
    pub when_scaled: ClaimRetention,
}

/// Keep or delete a PersistentVolumeClaim.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClaimRetention {
    /// The claim stays (and keeps its storage) until deleted by hand.
    #[default]
    Retain,
    /// The claim is deleted, and its volume with it unless the StorageClass retains it.
    Delete,
}

impl ClaimRetention {
    /// The name Kubernetes uses in `persistentVolumeClaimRetentionPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retain => "Retain",
            Self::Delete => "Delete",
        }
    }
}

/// Whether the operator keeps a SpanSink's children in sync.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ManagementState {
    /// Children are created, updated and deleted to match the spec.
    #[default]
    Managed,
    /// Children are left exactly as they are.
    Unmanaged,
}

/// Observed state of a SpanSink, written by the operator.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SpanSinkStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `ConfigValid`, `Available`, `Progressing`, `Ready` (and `ServiceMonitor` when one
    /// is requested), each with a reason and a message; an invalid spec's message names
    /// the offending field, e.g. `spec.pipeline.sinks.main.fallback`, and a Secret that
    /// `secretMounts` needs but the namespace lacks is named in `Ready` (`SecretMissing`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Exporter pods that exist (from the Deployment, or the StatefulSet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Exporter pods that are ready (from the Deployment, or the StatefulSet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Label selector of the exporter pods, for the scale subresource (and the HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// SHA-256 of the rendered exporter config the pods run; changes roll the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Where to send traces and scrape metrics, inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
}

/// In-cluster addresses of the exporter's Service.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// OTLP/gRPC, e.g. `http://traces.team-a.svc:4317`.
    pub grpc: String,
    /// OTLP/HTTP base URL, e.g. `http://traces.team-a.svc:4318` (POST `/v1/traces`).
    pub http: String,
    /// Prometheus metrics, e.g. `http://traces.team-a.svc:8888/metrics`.
    pub metrics: String,
}

/// Condition types, as written in `status.conditions[].type`.
pub mod condition {
    /// The spec passed validation: the pipeline the exporter's, `secretMounts` the operator's.
    pub const CONFIG_VALID: &str = "ConfigValid";
    /// At least one exporter pod is ready.
    pub const AVAILABLE: &str = "Available";
    /// A rollout is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// Config valid, rollout finished, pods ready.
    pub const READY: &str = "Ready";
    /// The requested ServiceMonitor exists (or why it does not).
    pub const SERVICE_MONITOR: &str = "ServiceMonitor";
}
