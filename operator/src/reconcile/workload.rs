//! The object that runs the exporter pods, one of two kinds: a Deployment, or a StatefulSet
//! when the queue volume is persistent; and the rollout figures both report the same way.
//! Not their rendering (`reconcile.rs`, `stateful_set.rs`) nor their status conditions.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::ObjectMeta;

use crate::crd::SpanSink;

/// Which kind of object runs the exporter pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// Interchangeable pods, each with its own `emptyDir` or ephemeral queue volume.
    Deployment,
    /// One PersistentVolumeClaim per replica, kept across pod deletions.
    StatefulSet,
}

impl WorkloadKind {
    /// The kind a SpanSink's spec asks for.
    pub fn of(sink: &SpanSink) -> WorkloadKind {
        match sink.spec.persistent_queue_volume() {
            Some(_) => WorkloadKind::StatefulSet,
            None => WorkloadKind::Deployment,
        }
    }

    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }

    /// The other kind (the one a switch of queue volume leaves behind).
    pub fn other(self) -> WorkloadKind {
        match self {
            WorkloadKind::Deployment => WorkloadKind::StatefulSet,
            WorkloadKind::StatefulSet => WorkloadKind::Deployment,
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Deployment or a StatefulSet: as rendered, or as the cluster reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// The exporter as a Deployment.
    Deployment(Deployment),
    /// The exporter as a StatefulSet.
    StatefulSet(StatefulSet),
}

/// What a workload reports about its pods, the same for both kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rollout {
    /// Pods asked for (`spec.replicas`; 1 when unset, as the API server defaults it).
    pub wanted: i32,
    /// Pods that exist.
    pub total: i32,
    /// Pods running the current template.
    pub updated: i32,
    /// Pods ready.
    pub ready: i32,
    /// Pods available (ready for `minReadySeconds`).
    pub available: i32,
    /// The workload's controller has not yet seen the latest spec, or (StatefulSet) some
    /// pods still run an older revision.
    pub behind: bool,
}

impl Workload {
    /// Which kind this is.
    pub fn kind(&self) -> WorkloadKind {
        match self {
            Workload::Deployment(_) => WorkloadKind::Deployment,
            Workload::StatefulSet(_) => WorkloadKind::StatefulSet,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Workload::Deployment(d) => &d.metadata,
            Workload::StatefulSet(s) => &s.metadata,
        }
    }

    /// The Deployment, if this is one.
    pub fn as_deployment(&self) -> Option<&Deployment> {
        match self {
            Workload::Deployment(d) => Some(d),
            Workload::StatefulSet(_) => None,
        }
    }

    /// The StatefulSet, if this is one.
    pub fn as_stateful_set(&self) -> Option<&StatefulSet> {
        match self {
            Workload::StatefulSet(s) => Some(s),
            Workload::Deployment(_) => None,
        }
    }

    /// The pod counts from the object's spec and status (zeros before its controller
    /// reports any).
    pub fn rollout(&self) -> Rollout {
        let generation = self.metadata().generation.unwrap_or(0);
        match self {
            Workload::Deployment(d) => {
                let status = d.status.clone().unwrap_or_default();
                Rollout {
                    wanted: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    total: status.replicas.unwrap_or(0),
                    updated: status.updated_replicas.unwrap_or(0),
                    ready: status.ready_replicas.unwrap_or(0),
                    available: status.available_replicas.unwrap_or(0),
                    behind: status.observed_generation.unwrap_or(0) < generation,
                }
            }
            Workload::StatefulSet(s) => {
                let status = s.status.clone().unwrap_or_default();
                // A finished rollout makes the update revision current; until then some
                // pods may run the old template even when the counts look complete.
                let revision_pending = matches!(
                    (&status.current_revision, &status.update_revision),
                    (Some(current), Some(update)) if current != update
                );
                Rollout {
                    wanted: s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    total: status.replicas,
                    updated: status.updated_replicas.unwrap_or(0),
                    ready: status.ready_replicas.unwrap_or(0),
                    available: status.available_replicas.unwrap_or(0),
                    behind: status.observed_generation.unwrap_or(0) < generation
                        || revision_pending,
                }
            }
        }
    }
}
