//! Applying the exporter's workload: the Deployment or the StatefulSet the spec asks for,
//! the StatefulSet's unchangeable claim templates kept as they are, and the other kind
//! deleted once the new one serves (a switch of queue volume). Not the rendering (reconcile).

use futures::Stream;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::Client;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::{WatchStreamExt, watcher};

use super::children::HoldsNames;
use super::{ChildCaches, Scope, Scoped, apply, delete_owned, scoped_api};
use crate::crd::SpanSink;
use crate::error::Result;
use crate::reconcile::{Workload, WorkloadKind, keep_live_claims};

/// The workload after a reconcile, and what the status needs to say about it.
#[derive(Debug, Default)]
pub struct AppliedWorkload {
    /// As the API server has it (with its status); None if there is none of ours.
    pub workload: Option<Workload>,
    /// The other kind, kept running until this one has a ready pod.
    pub replacing: Option<WorkloadKind>,
    /// Why the claims the spec asks for were not applied.
    pub refused_claim_change: Option<String>,
}

/// The StatefulSet watch: full objects (their status feeds the SpanSink's) without managed
/// fields and pod template, but with the claim templates, which every apply must repeat.
pub fn watch_stateful_sets(
    client: &Client,
    scope: &Scope,
    owned: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<StatefulSet>, watcher::Error>> + Send + 'static {
    watcher(scoped_api::<StatefulSet>(client, scope), owned).modify(|s: &mut StatefulSet| {
        s.metadata.managed_fields = None;
        if let Some(spec) = s.spec.as_mut() {
            spec.template = Default::default();
        }
    })
}

impl ChildCaches {
    /// The cache holding workloads of `kind`.
    pub(super) fn workload_cache(&self, kind: WorkloadKind) -> &dyn HoldsNames {
        match kind {
            WorkloadKind::Deployment => &self.deployments,
            WorkloadKind::StatefulSet => &self.stateful_sets,
        }
    }

    /// This SpanSink's workload of kind `kind`, if cached.
    fn owned_of(
        &self,
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Option<Workload> {
        match kind {
            WorkloadKind::Deployment => self
                .deployments
                .owned(namespace, name, uid)
                .map(|d| Workload::Deployment((*d).clone())),
            WorkloadKind::StatefulSet => self
                .stateful_sets
                .owned(namespace, name, uid)
                .map(|s| Workload::StatefulSet((*s).clone())),
        }
    }

    /// This SpanSink's workload: of the `preferred` kind if there is one, else of the other.
    pub(super) fn owned_workload(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        preferred: WorkloadKind,
    ) -> Option<Workload> {
        self.owned_of(preferred, namespace, name, uid)
            .or_else(|| self.owned_of(preferred.other(), namespace, name, uid))
    }
}

impl Scoped {
    /// Applies `desired` and, once it has a ready pod (or is meant to have none), deletes
    /// this SpanSink's workload of the other kind.
    pub(super) async fn apply_workload(
        &self,
        sink: &SpanSink,
        desired: &Workload,
        namespace: &str,
        uid: &str,
    ) -> Result<AppliedWorkload> {
        let client = &self.ctx.client;
        let name = sink.name_any();
        let mut refused_claim_change = None;
        let live = match desired {
            Workload::Deployment(d) => Workload::Deployment(
                apply(
                    &Api::<Deployment>::namespaced(client.clone(), namespace),
                    d,
                    "Deployment",
                )
                .await?,
            ),
            Workload::StatefulSet(s) => {
                let mut s = s.clone();
                if let Some(live) = self.children.stateful_sets.owned(namespace, &name, uid) {
                    refused_claim_change = keep_live_claims(&mut s, &live).map(|c| c.message());
                }
                Workload::StatefulSet(
                    apply(
                        &Api::<StatefulSet>::namespaced(client.clone(), namespace),
                        &s,
                        "StatefulSet",
                    )
                    .await?,
                )
            }
        };

        let kind = live.kind();
        let old = kind.other();
        let rollout = live.rollout();
        let replacing = if self.children.owned_of(old, namespace, &name, uid).is_none() {
            None
        } else if rollout.available > 0 || rollout.wanted == 0 {
            if self.delete_workload(old, namespace, &name, uid).await? {
                self.ctx
                    .event(
                        sink,
                        EventType::Normal,
                        "Deleted",
                        format!(
                            "{old} {name} removed: the exporter runs as {kind} {name} now (spec.queueVolume)"
                        ),
                    )
                    .await;
            }
            None
        } else {
            Some(old)
        };
        Ok(AppliedWorkload {
            workload: Some(live),
            replacing,
            refused_claim_change,
        })
    }

    /// Deletes this SpanSink's workload of `kind` (its pods go with it; a StatefulSet's
    /// claims stay or go as its retention policy says); true if deleted.
    async fn delete_workload(
        &self,
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<bool> {
        let client = self.ctx.client.clone();
        match kind {
            WorkloadKind::Deployment => {
                delete_owned(
                    &self.children.deployments,
                    &Api::<Deployment>::namespaced(client, namespace),
                    namespace,
                    name,
                    uid,
                )
                .await
            }
            WorkloadKind::StatefulSet => {
                delete_owned(
                    &self.children.stateful_sets,
                    &Api::<StatefulSet>::namespaced(client, namespace),
                    namespace,
                    name,
                    uid,
                )
                .await
            }
        }
    }
}
