//! Named constructors of SpanSinks for tests (`SpanSink::fixture().with_autoscaling(..)`).
//! Test-only; never compiled into the operator.

use k8s_openapi::api::core::v1::{EnvFromSource, SecretEnvSource};
use kube::api::ObjectMeta;

use crate::crd::{
    AutoscalingSpec, ManagementState, PersistentQueueVolume, PodDisruptionBudgetSpec,
    QueueVolumeSpec, SecretMount, SecretMountItem, SpanSink, SpanSinkSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use spansink_config::ExporterConfig;

/// A file sink writing into the data volume.
pub const FILE_PIPELINE: &str =
    "sinks:\n  main:\n    file:\n      path: /var/lib/spansink/spans/spans.jsonl\n";

/// The same pipeline with a larger batch (a config change).
pub const FILE_PIPELINE_BIG_BATCH: &str = "sinks:\n  main:\n    file:\n      path: /var/lib/spansink/spans/spans.jsonl\n    batch:\n      max_spans: 1024\n";

/// Parses a pipeline the schema admits, without semantic validation (so tests can build
/// pipelines that `validate` refuses).
pub fn pipeline(yaml: &str) -> ExporterConfig {
    serde_yaml::from_str(yaml).unwrap()
}

impl SpanSink {
    /// `team-a/traces`, generation 1, one file sink, everything else default.
    pub fn fixture() -> SpanSink {
        let mut sink = SpanSink::new(
            "traces",
            SpanSinkSpec {
                pipeline: pipeline(FILE_PIPELINE),
                replicas: None,
                autoscaling: None,
                image: None,
                image_pull_policy: None,
                image_pull_secrets: None,
                resources: None,
                env: Vec::new(),
                env_from: Vec::new(),
                secret_mounts: Vec::new(),
                node_selector: Default::default(),
                tolerations: Vec::new(),
                affinity: None,
                pod_annotations: Default::default(),
                pod_labels: Default::default(),
                service_account_name: None,
                service: Default::default(),
                pod_disruption_budget: None,
                service_monitor: Default::default(),
                queue_volume: None,
                management_state: ManagementState::Managed,
            },
        );
        sink.metadata = ObjectMeta {
            name: Some("traces".into()),
            namespace: Some("team-a".into()),
            uid: Some("6b1f6a2e-0000-4000-8000-000000000001".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        };
        sink
    }

    pub fn with_pipeline(mut self, yaml: &str) -> SpanSink {
        self.spec.pipeline = pipeline(yaml);
        self
    }

    pub fn with_autoscaling(mut self, min: i32, max: i32) -> SpanSink {
        self.spec.replicas = None;
        self.spec.autoscaling = Some(AutoscalingSpec {
            min_replicas: Some(min),
            max_replicas: max,
            target_cpu_utilization_percentage: None,
            target_memory_utilization_percentage: None,
        });
        self
    }

    pub fn with_max_unavailable(mut self, n: i32) -> SpanSink {
        self.spec.pod_disruption_budget = Some(PodDisruptionBudgetSpec {
            min_available: None,
            max_unavailable: Some(IntOrString::Int(n)),
        });
        self
    }

    pub fn with_secret_env(mut self, secret: &str) -> SpanSink {
        self.spec.env_from.push(EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: secret.into(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        });
        self
    }

    /// Mounts Secret `secret` at `mount_path`, every key as a file.
    pub fn with_secret_mount(mut self, secret: &str, mount_path: &str) -> SpanSink {
        self.spec.secret_mounts.push(SecretMount {
            secret_name: secret.into(),
            mount_path: mount_path.into(),
            items: Vec::new(),
            optional: false,
        });
        self
    }

    /// The receiver's certificate from cert-manager Secret `receiver-tls` (every key) at
    /// `/etc/spansink/tls`, and only `ca.crt` of Secret `postgres-ca` at
    /// `/etc/spansink/postgres/root.crt`.
    pub fn with_secret_mounts(self) -> SpanSink {
        let mut sink = self
            .with_secret_mount("receiver-tls", "/etc/spansink/tls")
            .with_secret_mount("postgres-ca", "/etc/spansink/postgres");
        sink.spec.secret_mounts[1].items = vec![SecretMountItem {
            key: "ca.crt".into(),
            path: "root.crt".into(),
        }];
        sink
    }

    pub fn with_service_monitor(mut self) -> SpanSink {
        self.spec.service_monitor.enabled = true;
        self.spec.service_monitor.interval = Some("15s".into());
        self
    }

    /// A `persistent` queue volume: the exporter runs as a StatefulSet.
    pub fn with_persistent_queue(mut self, size: &str, storage_class: Option<&str>) -> SpanSink {
        self.spec.queue_volume = Some(QueueVolumeSpec {
            empty_dir: None,
            ephemeral: None,
            persistent: Some(PersistentQueueVolume {
                size: Quantity(size.into()),
                storage_class_name: storage_class.map(Into::into),
                retention_policy: Default::default(),
            }),
        });
        self
    }

    /// Back to the default `emptyDir` queue volume (a Deployment).
    pub fn with_empty_dir_queue(mut self) -> SpanSink {
        self.spec.queue_volume = None;
        self
    }

    /// A durable queue for sink `main` in `path`.
    pub fn with_durable_queue_at(self, path: &str) -> SpanSink {
        self.with_pipeline(&format!(
            "sinks:\n  main:\n    file:\n      path: /var/lib/spansink/spans/spans.jsonl\n    queue:\n      durable:\n        path: {path}\n"
        ))
    }

    pub fn unmanaged(mut self) -> SpanSink {
        self.spec.management_state = ManagementState::Unmanaged;
        self
    }

    /// A fallback naming a sink that does not exist: admitted by the schema, refused by `validate`.
    pub fn with_dangling_fallback(self) -> SpanSink {
        self.with_pipeline(
            "sinks:\n  main:\n    file:\n      path: /var/lib/spansink/spans.jsonl\n    fallback: dead-letter\n",
        )
    }
}
