//! The side-effecting half of reconciliation: kube's Controller watching SpanSinks and their
//! children, applying what `reconcile::desired` says, writing status and Events. No rendering here.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::time::Instant;

use crate::crd::{SpanSink, SpanSinkStatus, condition};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::reconcile::{self, Children, Desired, OperatorSettings, service_monitor_resource};
use crate::status;

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "spansink-operator";

/// Label selecting the children the operator watches (keeps its caches small).
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=spansink-operator";

/// How often a healthy SpanSink is reconciled without any watch event (drift safety net).
const RESYNC: Duration = Duration::from_secs(300);
/// First retry after a failure; doubles per consecutive failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a ServiceMonitor discovery answer is trusted.
const DISCOVERY_TTL: Duration = Duration::from_secs(60);

/// Which SpanSinks one controller watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (needs the ClusterRole).
    AllNamespaces,
    /// One namespace (a Role there suffices).
    Namespace(String),
}

/// Everything a reconciliation needs; shared by all controllers of the process.
pub struct Context {
    client: Client,
    recorder: Recorder,
    exporter_image: String,
    metrics: Metrics,
    failures: Mutex<HashMap<ObjectRef<SpanSink>, u32>>,
    service_monitor_served: tokio::sync::Mutex<Option<(Instant, bool)>>,
    stores: Mutex<Vec<Store<SpanSink>>>,
}

impl Context {
    /// A context for controllers using `client`; events are reported as `reporter`.
    pub fn new(
        client: Client,
        reporter: Reporter,
        exporter_image: String,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            exporter_image,
            metrics,
            failures: Mutex::new(HashMap::new()),
            service_monitor_served: tokio::sync::Mutex::new(None),
            stores: Mutex::new(Vec::new()),
        })
    }

    /// The operator's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Refreshes the SpanSinks-by-condition gauge from the controllers' caches.
    pub fn refresh_condition_metrics(&self) {
        let stores = self.stores.lock().map(|s| s.clone()).unwrap_or_default();
        let sinks: Vec<Arc<SpanSink>> = stores.iter().flat_map(|s| s.state()).collect();
        let conditions = sinks.iter().flat_map(|s| {
            s.status
                .iter()
                .flat_map(|st| st.conditions.iter())
                .map(|c| (c.type_.as_str(), c.status.as_str()))
        });
        self.metrics.set_spansinks_by_condition(conditions);
    }

    /// Whether the cluster serves `monitoring.coreos.com/v1` ServiceMonitor, cached briefly.
    async fn service_monitor_served(&self) -> Result<bool> {
        let mut cached = self.service_monitor_served.lock().await;
        if let Some((at, served)) = *cached
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(served);
        }
        let served = match self
            .client
            .list_api_group_resources("monitoring.coreos.com/v1")
            .await
        {
            Ok(list) => list.resources.iter().any(|r| r.kind == "ServiceMonitor"),
            Err(kube::Error::Api(status)) if status.is_not_found() => false,
            Err(e) => return Err(Error::kube("discovering monitoring.coreos.com/v1")(e)),
        };
        *cached = Some((Instant::now(), served));
        Ok(served)
    }

    fn backoff(&self, sink: &SpanSink) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(ObjectRef::from(sink)).or_insert(0);
        *n = n.saturating_add(1);
        FIRST_BACKOFF
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(16)))
            .min(MAX_BACKOFF)
    }

    fn succeeded(&self, sink: &SpanSink) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&ObjectRef::from(sink));
        }
    }

    async fn event(&self, sink: &SpanSink, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        // An Event is a courtesy: failing to record one must not fail the reconciliation.
        if let Err(e) = self.recorder.publish(&event, &sink.object_ref(&())).await {
            tracing::warn!(spansink = %sink.name_any(), error = %e, "cannot record Event");
        }
    }
}

/// Runs one controller for `scope` until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let owned = watcher::Config::default().labels(MANAGED_BY_SELECTOR);
    let controller = match &scope {
        Scope::AllNamespaces => Controller::new(
            Api::<SpanSink>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(Api::<ConfigMap>::all(client.clone()), owned.clone())
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(
            Api::<HorizontalPodAutoscaler>::all(client.clone()),
            owned.clone(),
        )
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), owned),
        Scope::Namespace(ns) => Controller::new(
            Api::<SpanSink>::namespaced(client.clone(), ns),
            watcher::Config::default(),
        )
        .owns(
            Api::<ConfigMap>::namespaced(client.clone(), ns),
            owned.clone(),
        )
        .owns(
            Api::<Deployment>::namespaced(client.clone(), ns),
            owned.clone(),
        )
        .owns(
            Api::<Service>::namespaced(client.clone(), ns),
            owned.clone(),
        )
        .owns(
            Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns),
            owned.clone(),
        )
        .owns(
            Api::<PodDisruptionBudget>::namespaced(client.clone(), ns),
            owned,
        ),
    };
    if let Ok(mut stores) = ctx.stores.lock() {
        stores.push(controller.store());
    }
    tracing::info!(?scope, "controller started");
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile_with_metrics, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(spansink = %object, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile loop error"),
            }
        })
        .await;
    tracing::info!(?scope, "controller stopped");
}

async fn reconcile_with_metrics(sink: Arc<SpanSink>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    match reconcile(&sink, &ctx).await {
        Ok(result) => {
            ctx.metrics.reconciled(result, started.elapsed());
            ctx.succeeded(&sink);
            Ok(Action::requeue(RESYNC))
        }
        Err(e) => {
            ctx.metrics.failed(e.metric_label(), started.elapsed());
            ctx.event(&sink, EventType::Warning, "ReconcileFailed", e.to_string())
                .await;
            Err(e)
        }
    }
}

fn error_policy(sink: Arc<SpanSink>, error: &Error, ctx: Arc<Context>) -> Action {
    let wait = ctx.backoff(&sink);
    tracing::warn!(spansink = %sink.name_any(), namespace = ?sink.namespace(), error = %error,
        retry_in_s = wait.as_secs(), "reconcile failed");
    Action::requeue(wait)
}

/// One reconciliation; returns the `result` metric label.
async fn reconcile(sink: &SpanSink, ctx: &Context) -> Result<&'static str> {
    let namespace = sink
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let name = sink.name_any();
    let settings = OperatorSettings {
        exporter_image: ctx.exporter_image.clone(),
        service_monitor_available: sink.spec.service_monitor.enabled
            && ctx.service_monitor_served().await?,
    };
    let desired = reconcile::desired(sink, &settings)?;
    let previous = sink.status.clone().unwrap_or_default();

    let (deployment, result) = match &desired {
        Desired::Children(children) => {
            let deployment = apply_children(sink, children, ctx, &namespace).await?;
            if previous.config_hash.as_deref() != Some(children.config_hash.as_str()) {
                ctx.event(
                    sink,
                    EventType::Normal,
                    "ConfigApplied",
                    format!(
                        "exporter config {} applied to ConfigMap {} and Deployment {name}",
                        short(&children.config_hash),
                        reconcile::config_map_name(&name)
                    ),
                )
                .await;
            }
            (Some(deployment), "applied")
        }
        Desired::InvalidPipeline(_) | Desired::Unmanaged => {
            let deployment = Api::<Deployment>::namespaced(ctx.client.clone(), &namespace)
                .get_opt(&name)
                .await
                .map_err(Error::kube(format!(
                    "reading Deployment {namespace}/{name}"
                )))?;
            let label = if matches!(desired, Desired::Unmanaged) {
                "unmanaged"
            } else {
                "invalid_pipeline"
            };
            (deployment, label)
        }
    };

    let now = Time(Timestamp::now());
    let new_status = status::compute(sink, &desired, deployment.as_ref(), now);
    if let Desired::InvalidPipeline(errors) = &desired {
        tracing::warn!(spansink = %name, namespace = %namespace, errors = %errors, "invalid pipeline; children left untouched");
        let was = status::find(&previous, condition::CONFIG_VALID)
            .map(|c| (c.status.clone(), c.message.clone()));
        let now_cond = status::find(&new_status, condition::CONFIG_VALID)
            .map(|c| (c.status.clone(), c.message.clone()));
        if was != now_cond
            && let Some((_, message)) = now_cond
        {
            ctx.event(sink, EventType::Warning, "InvalidPipeline", message)
                .await;
        }
    }
    if let Desired::Children(children) = &desired
        && let Some(why) = &children.service_monitor_skipped
        && status::find(&previous, condition::SERVICE_MONITOR).map(|c| c.status.as_str())
            != Some("False")
    {
        ctx.event(
            sink,
            EventType::Warning,
            "ServiceMonitorSkipped",
            why.clone(),
        )
        .await;
    }
    if sink.status.as_ref() != Some(&new_status) {
        write_status(ctx, &namespace, &name, &new_status).await?;
    }
    Ok(result)
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &SpanSinkStatus,
) -> Result<()> {
    let patch = json!({
        "apiVersion": SpanSink::api_version(&()),
        "kind": SpanSink::kind(&()),
        "status": status,
    });
    Api::<SpanSink>::namespaced(ctx.client.clone(), namespace)
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::kube(format!(
            "writing status of SpanSink {namespace}/{name}"
        )))?;
    Ok(())
}

/// Applies every desired child and deletes the optional ones no longer desired; returns the
/// Deployment as the API server has it (with its status).
async fn apply_children(
    sink: &SpanSink,
    children: &Children,
    ctx: &Context,
    namespace: &str,
) -> Result<Deployment> {
    let client = &ctx.client;
    let uid = sink.uid().ok_or(Error::MissingObjectKey("uid"))?;
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), namespace),
        &children.config_map,
        "ConfigMap",
    )
    .await?;
    apply(
        &Api::<Service>::namespaced(client.clone(), namespace),
        &children.service,
        "Service",
    )
    .await?;
    let deployment = apply(
        &Api::<Deployment>::namespaced(client.clone(), namespace),
        &children.deployment,
        "Deployment",
    )
    .await?;

    let name = sink.name_any();
    let hpa_api = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace);
    match &children.autoscaler {
        Some(hpa) => {
            apply(&hpa_api, hpa, "HorizontalPodAutoscaler").await?;
        }
        None => {
            if delete_if_owned(&hpa_api, &name, &uid, "HorizontalPodAutoscaler").await? {
                ctx.event(
                    sink,
                    EventType::Normal,
                    "Deleted",
                    format!("HorizontalPodAutoscaler {name} removed: spec.autoscaling is unset"),
                )
                .await;
            }
        }
    }
    let pdb_api = Api::<PodDisruptionBudget>::namespaced(client.clone(), namespace);
    match &children.disruption_budget {
        Some(pdb) => {
            apply(&pdb_api, pdb, "PodDisruptionBudget").await?;
        }
        None => {
            if delete_if_owned(&pdb_api, &name, &uid, "PodDisruptionBudget").await? {
                ctx.event(
                    sink,
                    EventType::Normal,
                    "Deleted",
                    format!(
                        "PodDisruptionBudget {name} removed: spec.podDisruptionBudget is unset"
                    ),
                )
                .await;
            }
        }
    }
    // Without the CRD there is nothing to apply or sweep (and asking would be a 404).
    let served = children.service_monitor.is_some()
        || (!sink.spec.service_monitor.enabled && ctx.service_monitor_served().await?);
    if served {
        let sm_api = Api::<DynamicObject>::namespaced_with(
            client.clone(),
            namespace,
            &service_monitor_resource(),
        );
        match &children.service_monitor {
            Some(sm) => {
                apply(&sm_api, sm, "ServiceMonitor").await?;
            }
            None => {
                delete_if_owned(&sm_api, &name, &uid, "ServiceMonitor").await?;
            }
        }
    }
    Ok(deployment)
}

async fn apply<K>(api: &Api<K>, object: &K, kind: &'static str) -> Result<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let patch = serde_json::to_value(object).map_err(|source| Error::Serialize { kind, source })?;
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(format!("applying {kind} {name}")))
}

/// Deletes `name` if it exists and this SpanSink (`uid`) controls it; true if deleted.
async fn delete_if_owned<K>(api: &Api<K>, name: &str, uid: &str, kind: &'static str) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let existing = api
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("reading {kind} {name}")))?;
    let owned = existing.is_some_and(|o| {
        o.meta()
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == uid && r.controller == Some(true))
    });
    if !owned {
        return Ok(false);
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(false),
        Err(e) => Err(Error::kube(format!("deleting {kind} {name}"))(e)),
    }
}

#[cfg(test)]
mod tests;
