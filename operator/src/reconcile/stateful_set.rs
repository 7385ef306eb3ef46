//! The exporter as a StatefulSet, for a `persistent` queue volume: one claim per replica
//! from `volumeClaimTemplates`, and the rule for claim templates that can no longer change
//! (the API server refuses any change to them). Pure; the controller applies the result.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodTemplateSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

use super::{Context, child_labels};
use crate::crd::PersistentQueueVolume;
use crate::quantity::same_size;

/// Name of the data volume in the pod (and of the claim template: claims are named
/// `data-<spansink>-<ordinal>`).
pub const DATA_VOLUME: &str = "data";

impl Context<'_> {
    pub(super) fn stateful_set(
        &self,
        template: PodTemplateSpec,
        volume: &PersistentQueueVolume,
    ) -> StatefulSet {
        let retention = volume.retention_policy;
        StatefulSet {
            metadata: self.meta(self.name.clone()),
            spec: Some(StatefulSetSpec {
                replicas: self.replicas(),
                selector: self.selector(),
                // The SpanSink's own Service. Not headless, so pods get no DNS names of
                // their own: nothing addresses one exporter pod, clients use the Service.
                service_name: Some(self.name.clone()),
                // Exporter pods do not depend on each other: start and stop them all at
                // once rather than one by one (updates still replace one pod at a time).
                pod_management_policy: Some("Parallel".into()),
                // Replaces each pod in turn: the old pod drains, the new one takes its
                // claim over and delivers what the old one left queued.
                update_strategy: Some(StatefulSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: None,
                }),
                persistent_volume_claim_retention_policy: Some(
                    StatefulSetPersistentVolumeClaimRetentionPolicy {
                        when_deleted: Some(retention.when_deleted.as_str().into()),
                        when_scaled: Some(retention.when_scaled.as_str().into()),
                    },
                ),
                template,
                volume_claim_templates: Some(vec![claim_template(
                    child_labels(&self.name),
                    volume.storage_class_name.clone(),
                    volume.size.clone(),
                )]),
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        }
    }
}

fn claim_template(
    labels: BTreeMap<String, String>,
    storage_class_name: Option<String>,
    size: Quantity,
) -> PersistentVolumeClaim {
    ClaimShape {
        name: Some(DATA_VOLUME.into()),
        labels,
        access_modes: Some(vec!["ReadWriteOnce".into()]),
        storage_class_name,
        size: Some(size),
    }
    .into_claim()
}

/// What the spec asks of the claims and what the existing StatefulSet has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimChange {
    /// StatefulSet name.
    pub stateful_set: String,
    /// `size X, storageClassName Y` as the StatefulSet has them.
    pub live: String,
    /// The same as the spec asks.
    pub desired: String,
}

impl ClaimChange {
    /// The explanation the status carries: what is refused, why, and what to do.
    pub fn message(&self) -> String {
        let name = &self.stateful_set;
        format!(
            "spec.queueVolume.persistent asks for claims of {desired}, but StatefulSet {name} has \
             {live}: the API server refuses any change to a StatefulSet's volumeClaimTemplates, and \
             existing claims would keep their size and class anyway. The exporter keeps running on \
             the existing claims; other changes are still applied. To change the claims, resize \
             each PersistentVolumeClaim data-{name}-<ordinal> (if its StorageClass allows \
             expansion), then `kubectl delete statefulset {name} --cascade=orphan`: pods and claims \
             stay, and the operator recreates the StatefulSet with the new template. Or set \
             spec.queueVolume.persistent back to {live}.",
            desired = self.desired,
            live = self.live,
        )
    }
}

/// The fields of a claim template that the operator sets: for comparison, and to apply
/// back what the API server holds without the fields it filled in itself.
#[derive(Debug, Clone)]
struct ClaimShape {
    name: Option<String>,
    labels: BTreeMap<String, String>,
    access_modes: Option<Vec<String>>,
    storage_class_name: Option<String>,
    size: Option<Quantity>,
}

impl ClaimShape {
    fn of(claim: &PersistentVolumeClaim) -> ClaimShape {
        let spec = claim.spec.clone().unwrap_or_default();
        ClaimShape {
            name: claim.metadata.name.clone(),
            labels: claim.metadata.labels.clone().unwrap_or_default(),
            access_modes: spec.access_modes,
            storage_class_name: spec.storage_class_name,
            size: spec
                .resources
                .and_then(|r| r.requests)
                .and_then(|mut r| r.remove("storage")),
        }
    }

    fn into_claim(self) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: self.name,
                labels: (!self.labels.is_empty()).then_some(self.labels),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: self.access_modes,
                storage_class_name: self.storage_class_name,
                resources: self.size.map(|size| VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".to_string(), size)])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: None,
        }
    }

    fn same_as(&self, other: &ClaimShape) -> bool {
        self.storage_class_name == other.storage_class_name
            && match (&self.size, &other.size) {
                (Some(a), Some(b)) => same_size(a, b),
                (a, b) => a == b,
            }
    }

    fn describe(&self) -> String {
        let size = self.size.as_ref().map_or("no size", |q| q.0.as_str());
        match &self.storage_class_name {
            Some(class) => format!("size {size}, storageClassName {class:?}"),
            None => format!("size {size}, the default StorageClass"),
        }
    }
}

/// Makes `desired` carry the claim templates `live` already has, since they cannot change
/// once a StatefulSet exists (a different value, even `1024Mi` for the API server's `1Gi`,
/// would only be applied back as written). Returns the difference when the spec asks for
/// other claims than those, which the operator then reports instead of applying.
pub fn keep_live_claims(desired: &mut StatefulSet, live: &StatefulSet) -> Option<ClaimChange> {
    let live_claims = live
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.clone())
        .unwrap_or_default();
    let spec = desired.spec.as_mut()?;
    let wanted = spec.volume_claim_templates.clone().unwrap_or_default();
    let data = |claims: &[PersistentVolumeClaim]| {
        claims
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(DATA_VOLUME))
            .map(ClaimShape::of)
    };
    let (is, should) = (data(&live_claims), data(&wanted));
    // What the operator applied before, as the API server stores it: only the fields it sets.
    spec.volume_claim_templates = Some(
        live_claims
            .iter()
            .map(|claim| ClaimShape::of(claim).into_claim())
            .collect(),
    );
    match (is, should) {
        (Some(is), Some(should)) if is.same_as(&should) => None,
        (None, None) => None,
        (is, should) => Some(ClaimChange {
            stateful_set: desired.metadata.name.clone().unwrap_or_default(),
            live: is.map_or_else(|| "no data claim".into(), |c| c.describe()),
            desired: should.map_or_else(|| "no data claim".into(), |c| c.describe()),
        }),
    }
}
