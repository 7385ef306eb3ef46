//! The side-effecting half of reconciliation: kube's Controller watching SpanSinks and their
//! children, applying what `reconcile::desired` says, writing status and Events. No rendering here.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ObjectMeta, PartialObjectMeta, Patch,
    PatchParams,
};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::time::Instant;

use crate::crd::{SpanSink, SpanSinkStatus, condition};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::reconcile::{
    self, Children, Desired, ExporterPodDefaults, OperatorSettings, WorkloadKind,
    service_monitor_resource,
};
use crate::status::{self, Observed};

mod children;
mod secrets;
mod workload;
use children::{Cache, Holder, HoldsNames};
use workload::{AppliedWorkload, watch_stateful_sets};

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "spansink-operator";

/// Label selecting the children the operator watches (keeps its caches small).
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=spansink-operator";

/// How often a healthy SpanSink is reconciled without any watch event (drift safety net).
const RESYNC: Duration = Duration::from_secs(300);
/// First retry after a failure; doubles per consecutive failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// SpanSinks reconciled at the same time. Unbounded, a burst of 1,000 SpanSinks opens as
/// many concurrent API requests (on HTTP/1.1, as many connections, each with its buffers,
/// kept in the client's pool afterwards): 400 MiB of operator memory in the benchmark. A
/// few dozen keep the API server busy without flooding its fairness queues.
const RECONCILE_CONCURRENCY: u16 = 16;
/// How soon a SpanSink whose children's names are taken is looked at again.
const NAME_CONFLICT_RETRY: Duration = Duration::from_secs(30);
/// How soon a SpanSink whose mounted Secrets are missing is looked at again: Secrets are
/// not watched (that would need list and watch of every Secret), so this is how the
/// status notices one created later.
const SECRET_MISSING_RETRY: Duration = Duration::from_secs(30);
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
    pod_defaults: ExporterPodDefaults,
    metrics: Metrics,
    failures: Mutex<HashMap<ObjectRef<SpanSink>, u32>>,
    service_monitor_served: tokio::sync::Mutex<Option<(Instant, bool)>>,
    stores: Mutex<Vec<Store<SpanSink>>>,
    progress: Progress,
}

impl Context {
    /// A context for controllers using `client`; events are reported as `reporter`;
    /// exporter pods get `exporter_image` and `pod_defaults` where SpanSinks set neither.
    pub fn new(
        client: Client,
        reporter: Reporter,
        exporter_image: String,
        pod_defaults: ExporterPodDefaults,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            pod_defaults,
            recorder: Recorder::new(client.clone(), reporter),
            client,
            exporter_image,
            metrics,
            failures: Mutex::new(HashMap::new()),
            service_monitor_served: tokio::sync::Mutex::new(None),
            stores: Mutex::new(Vec::new()),
            progress: Progress::default(),
        })
    }

    /// The operator's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The controllers' progress, as `/healthz` reads it.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// `Err(why)` when the controllers are wedged (see [`Progress`]): `/healthz` fails.
    pub fn health(&self) -> std::result::Result<(), String> {
        let stores = self.stores.lock().map(|s| s.clone()).unwrap_or_default();
        let pending = stores
            .iter()
            .flat_map(|s| s.state())
            .filter(|s| {
                s.metadata.deletion_timestamp.is_none()
                    && s.status.as_ref().and_then(|st| st.observed_generation)
                        != s.metadata.generation
            })
            .count();
        self.progress.check(pending)
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
            // An unserved group version is the API server mux's plain-text
            // `404 page not found`, which kube reports as a Status with code 404 but no
            // `NotFound` reason: match the code, not the reason.
            Err(kube::Error::Api(status)) if status.code == 404 => false,
            Err(e) => return Err(Error::kube("discovering monitoring.coreos.com/v1")(e)),
        };
        *cached = Some((Instant::now(), served));
        Ok(served)
    }

    /// Resolves once discovery reports ServiceMonitors served (checked every TTL).
    async fn wait_until_service_monitors_served(&self) {
        loop {
            match self.service_monitor_served().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "ServiceMonitor discovery failed; retrying"),
            }
            tokio::time::sleep(DISCOVERY_TTL).await;
        }
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

/// One controller's view: the shared context plus the caches of its scope's children.
struct Scoped {
    ctx: Arc<Context>,
    children: ChildCaches,
}

/// The caches of every child kind for one controller scope.
struct ChildCaches {
    config_maps: Cache<PartialObjectMeta<ConfigMap>>,
    services: Cache<PartialObjectMeta<Service>>,
    deployments: Cache<Deployment>,
    stateful_sets: Cache<StatefulSet>,
    autoscalers: Cache<PartialObjectMeta<HorizontalPodAutoscaler>>,
    disruption_budgets: Cache<PartialObjectMeta<PodDisruptionBudget>>,
    service_monitors: Cache<PartialObjectMeta<DynamicObject>>,
}

impl ChildCaches {
    /// Resolves once the caches of the kinds every cluster serves are filled (the
    /// ServiceMonitor one only fills where its CRD is installed, so it is not waited for).
    async fn ready(&self) {
        futures::join!(
            self.config_maps.ready(),
            self.services.ready(),
            self.deployments.ready(),
            self.stateful_sets.ready(),
            self.autoscalers.ready(),
            self.disruption_budgets.ready(),
        );
    }
}

/// The Api of `K` for a controller scope.
fn scoped_api<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope {
        Scope::AllNamespaces => Api::all(client.clone()),
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    }
}

/// A metadata-only cache of one child kind, and the watch that fills it and triggers
/// reconciles of the owner.
fn metadata_cache<K>(
    client: &Client,
    scope: &Scope,
) -> (
    Cache<PartialObjectMeta<K>>,
    children::Trigger<PartialObjectMeta<K>>,
)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let owned = watcher::Config::default().labels(MANAGED_BY_SELECTOR);
    // An Api of PartialObjectMeta makes metadata-only requests.
    let events = watcher(scoped_api::<PartialObjectMeta<K>>(client, scope), owned)
        .modify(|o: &mut PartialObjectMeta<K>| o.metadata.managed_fields = None);
    Cache::new(client, ApiResource::erase::<K>(&()), (), events)
}

/// Drops what the SpanSink cache never reads: managed fields and kubectl's
/// `last-applied-configuration` annotation (a second copy of the whole spec).
fn strip_for_cache(sink: &mut SpanSink) {
    sink.metadata.managed_fields = None;
    if let Some(annotations) = sink.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// Where `kubectl apply` (client-side) keeps the last applied object.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::AllNamespaces => f.write_str("all namespaces"),
            Scope::Namespace(ns) => write!(f, "namespace {ns}"),
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
    let (config_maps, config_map_events) = metadata_cache::<ConfigMap>(&client, &scope);
    let (services, service_events) = metadata_cache::<Service>(&client, &scope);
    let (autoscalers, autoscaler_events) =
        metadata_cache::<HorizontalPodAutoscaler>(&client, &scope);
    let (disruption_budgets, disruption_budget_events) =
        metadata_cache::<PodDisruptionBudget>(&client, &scope);
    let owned = watcher::Config::default().labels(MANAGED_BY_SELECTOR);
    // Full Deployments (their status feeds the SpanSink's), without what the status does
    // not read: managed fields and the pod template are most of an object's size.
    let deployment_events = watcher(scoped_api::<Deployment>(&client, &scope), owned.clone())
        .modify(|d: &mut Deployment| {
            d.metadata.managed_fields = None;
            if let Some(spec) = d.spec.as_mut() {
                spec.template = Default::default();
            }
        });
    let (deployments, deployment_events) = Cache::new(
        &client,
        ApiResource::erase::<Deployment>(&()),
        (),
        deployment_events,
    );
    // StatefulSets likewise, keeping the claim templates: they cannot change, so each
    // apply carries the ones the StatefulSet has.
    let stateful_set_events = watch_stateful_sets(&client, &scope, owned.clone());
    let (stateful_sets, stateful_set_events) = Cache::new(
        &client,
        ApiResource::erase::<StatefulSet>(&()),
        (),
        stateful_set_events,
    );
    // ServiceMonitors are watched like the other children once discovery reports the CRD
    // (a watch of an unserved kind would only fail); until then nothing can exist to repair.
    let monitors = service_monitor_resource();
    let monitor_api = match &scope {
        Scope::AllNamespaces => {
            Api::<PartialObjectMeta<DynamicObject>>::all_with(client.clone(), &monitors)
        }
        Scope::Namespace(ns) => {
            Api::<PartialObjectMeta<DynamicObject>>::namespaced_with(client.clone(), ns, &monitors)
        }
    };
    let served = ctx.clone();
    let monitor_events =
        futures::stream::once(async move { served.wait_until_service_monitors_served().await })
            .flat_map(move |()| {
                watcher(monitor_api.clone(), owned.clone()).modify(
                    |o: &mut PartialObjectMeta<DynamicObject>| o.metadata.managed_fields = None,
                )
            });
    let (service_monitors, monitor_events) =
        Cache::new(&client, monitors.clone(), monitors.clone(), monitor_events);

    // The SpanSink cache holds every object the operator manages; managed fields and
    // kubectl's last-applied copy of the spec are most of an applied object's size and
    // nothing here reads them, so they are dropped before the object is cached.
    let (spansinks, spansink_writer) = reflector::store();
    let spansink_events = watcher(
        scoped_api::<SpanSink>(&client, &scope),
        watcher::Config::default(),
    )
    .modify(strip_for_cache)
    .reflect(spansink_writer)
    .applied_objects();
    let controller = Controller::for_stream(spansink_events, spansinks)
        .owns_stream(config_map_events)
        .owns_stream(service_events)
        .owns_stream(deployment_events)
        .owns_stream(stateful_set_events)
        .owns_stream(autoscaler_events)
        .owns_stream(disruption_budget_events)
        .owns_stream_with(monitor_events, monitors)
        .with_config(
            kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
        );
    if let Ok(mut stores) = ctx.stores.lock() {
        stores.push(controller.store());
    }
    let scoped = Arc::new(Scoped {
        ctx: ctx.clone(),
        children: ChildCaches {
            config_maps,
            services,
            deployments,
            stateful_sets,
            autoscalers,
            disruption_budgets,
            service_monitors,
        },
    });
    tracing::info!(scope = %scope, "controller started");
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile_with_metrics, error_policy, scoped)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(spansink = %object, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile loop error"),
            }
        })
        .await;
    ctx.progress.controller_stopped(&scope.to_string());
    tracing::info!(scope = %scope, "controller stopped");
}

async fn reconcile_with_metrics(sink: Arc<SpanSink>, scoped: Arc<Scoped>) -> Result<Action> {
    let ctx = &scoped.ctx;
    let started = Instant::now();
    let key = format!(
        "{}/{}",
        sink.namespace().unwrap_or_default(),
        sink.name_any()
    );
    ctx.progress.started(&key);
    let outcome = reconcile(&sink, &scoped).await;
    ctx.progress.finished(&key);
    match outcome {
        Ok((result, action)) => {
            ctx.metrics.reconciled(result, started.elapsed());
            ctx.succeeded(&sink);
            Ok(action)
        }
        Err(e) => {
            ctx.metrics.failed(e.metric_label(), started.elapsed());
            ctx.event(&sink, EventType::Warning, "ReconcileFailed", e.to_string())
                .await;
            Err(e)
        }
    }
}

fn error_policy(sink: Arc<SpanSink>, error: &Error, scoped: Arc<Scoped>) -> Action {
    let wait = scoped.ctx.backoff(&sink);
    tracing::warn!(spansink = %sink.name_any(), namespace = %sink.namespace().unwrap_or_default(),
        error = %error, retry_in_s = wait.as_secs(), "reconcile failed");
    Action::requeue(wait)
}

/// One reconciliation; returns the `result` metric label and when to look again.
async fn reconcile(sink: &SpanSink, scoped: &Scoped) -> Result<(&'static str, Action)> {
    let ctx = &scoped.ctx;
    let namespace = sink
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let name = sink.name_any();
    let uid = sink.uid().ok_or(Error::MissingObjectKey("uid"))?;
    scoped.children.ready().await;
    let settings = OperatorSettings {
        exporter_image: ctx.exporter_image.clone(),
        service_monitor_available: sink.spec.service_monitor.enabled
            && ctx.service_monitor_served().await?,
        pod_defaults: ctx.pod_defaults.clone(),
    };
    let desired = reconcile::desired(sink, &settings)?;
    let previous = sink.status.clone().unwrap_or_default();

    let mut conflicts = Vec::new();
    let mut secret_problems = Vec::new();
    let mut applied = AppliedWorkload::default();
    let result = match &desired {
        Desired::Children(children) => {
            conflicts = scoped.name_conflicts(children, &namespace, &uid).await?;
            if conflicts.is_empty() {
                applied = scoped
                    .apply_children(sink, children, &namespace, &uid)
                    .await?;
                if previous.config_hash.as_deref() != Some(children.config_hash.as_str()) {
                    ctx.event(
                        sink,
                        EventType::Normal,
                        "ConfigApplied",
                        format!(
                            "exporter config {} applied to ConfigMap {} and {} {name}",
                            short(&children.config_hash),
                            reconcile::config_map_name(&name),
                            children.workload.kind(),
                        ),
                    )
                    .await;
                }
                secret_problems = secrets::missing(&ctx.client, &namespace, sink).await?;
                "applied"
            } else {
                "name_conflict"
            }
        }
        Desired::InvalidPipeline(_) | Desired::Unmanaged => {
            applied.workload =
                scoped
                    .children
                    .owned_workload(&namespace, &name, &uid, WorkloadKind::of(sink));
            if matches!(desired, Desired::Unmanaged) {
                "unmanaged"
            } else {
                "invalid_pipeline"
            }
        }
    };

    let now = Time(Timestamp::now());
    let observed = Observed {
        workload: applied.workload.as_ref(),
        replacing: applied.replacing,
        name_conflicts: &conflicts,
        refused_claim_change: applied.refused_claim_change.as_deref(),
        secret_problems: &secret_problems,
    };
    let new_status = status::compute(sink, &desired, &observed, now);
    let changed = |type_: &str| {
        let was = status::find(&previous, type_).map(|c| (&c.status, &c.reason, &c.message));
        let is = status::find(&new_status, type_).map(|c| (&c.status, &c.reason, &c.message));
        (was != is).then(|| is.map(|c| c.2.clone())).flatten()
    };
    if let Desired::InvalidPipeline(errors) = &desired {
        tracing::warn!(spansink = %name, namespace = %namespace, errors = %errors, "invalid spec; children left untouched");
        if let Some(message) = changed(condition::CONFIG_VALID) {
            // InvalidPipeline or InvalidSpec (secretMounts), as the condition says.
            let reason = status::find(&new_status, condition::CONFIG_VALID)
                .map_or("InvalidPipeline", |c| c.reason.as_str());
            ctx.event(sink, EventType::Warning, reason, message).await;
        }
    }
    if !conflicts.is_empty() {
        tracing::warn!(spansink = %name, namespace = %namespace, objects = %conflicts.join(", "),
            "children's names are taken by objects this SpanSink does not control; left untouched");
        if let Some(message) = changed(condition::READY) {
            ctx.event(sink, EventType::Warning, "NameConflict", message)
                .await;
        }
    }
    if applied.refused_claim_change.is_some()
        && let Some(message) = changed(condition::READY)
    {
        tracing::warn!(spansink = %name, namespace = %namespace,
            "the claims spec.queueVolume.persistent asks for differ from the StatefulSet's, which cannot change; kept them");
        ctx.event(
            sink,
            EventType::Warning,
            "QueueVolumeChangeRefused",
            message,
        )
        .await;
    }
    if let Some(first) = secret_problems.first()
        && let Some(message) = changed(condition::READY)
    {
        // Names and paths only: the message never holds a Secret's value.
        tracing::warn!(spansink = %name, namespace = %namespace, reason = %first.reason,
            problems = secret_problems.len(), "Secrets that spec.secretMounts needs are missing; the exporter pods cannot start");
        ctx.event(sink, EventType::Warning, first.reason, message)
            .await;
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
    // A conflicting object is not watched (it lacks the operator's label), so its removal
    // triggers nothing: look again soon.
    let action = if !conflicts.is_empty() {
        Action::requeue(NAME_CONFLICT_RETRY)
    } else if !secret_problems.is_empty() {
        Action::requeue(SECRET_MISSING_RETRY)
    } else {
        Action::requeue(RESYNC)
    };
    Ok((result, action))
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

impl Scoped {
    /// The desired children whose names are held by objects this SpanSink does not
    /// control, as `Kind namespace/name`.
    async fn name_conflicts(
        &self,
        children: &Children,
        namespace: &str,
        uid: &str,
    ) -> Result<Vec<String>> {
        let c = &self.children;
        let mut wanted: Vec<(&dyn HoldsNames, &ObjectMeta)> = vec![
            (&c.config_maps, &children.config_map.metadata),
            (&c.services, &children.service.metadata),
            (&c.services, &children.headless_service.metadata),
            (
                c.workload_cache(children.workload.kind()),
                children.workload.metadata(),
            ),
        ];
        if let Some(hpa) = &children.autoscaler {
            wanted.push((&c.autoscalers, &hpa.metadata));
        }
        if let Some(pdb) = &children.disruption_budget {
            wanted.push((&c.disruption_budgets, &pdb.metadata));
        }
        if let Some(sm) = &children.service_monitor {
            wanted.push((&c.service_monitors, &sm.metadata));
        }
        let holders = futures::future::try_join_all(wanted.iter().map(|(cache, meta)| {
            cache.holder(namespace, meta.name.as_deref().unwrap_or_default(), uid)
        }))
        .await?;
        Ok(wanted
            .iter()
            .zip(holders)
            .filter(|(_, holder)| *holder == Holder::Someone)
            .map(|((cache, meta), _)| {
                format!(
                    "{} {namespace}/{}",
                    cache.kind(),
                    meta.name.as_deref().unwrap_or_default()
                )
            })
            .collect())
    }

    /// Applies every desired child and deletes the optional ones no longer desired; returns
    /// the workload as the API server has it (with its status). Every name was checked
    /// by [`Scoped::name_conflicts`] first: force only ever takes fields of our own objects.
    async fn apply_children(
        &self,
        sink: &SpanSink,
        children: &Children,
        namespace: &str,
        uid: &str,
    ) -> Result<AppliedWorkload> {
        let ctx = &self.ctx;
        let client = &ctx.client;
        apply(
            &Api::<ConfigMap>::namespaced(client.clone(), namespace),
            &children.config_map,
            "ConfigMap",
        )
        .await?;
        for service in [&children.service, &children.headless_service] {
            apply(
                &Api::<Service>::namespaced(client.clone(), namespace),
                service,
                "Service",
            )
            .await?;
        }
        let workload = self
            .apply_workload(sink, &children.workload, namespace, uid)
            .await?;

        let name = sink.name_any();
        let hpa_api = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace);
        match &children.autoscaler {
            Some(hpa) => {
                apply(&hpa_api, hpa, "HorizontalPodAutoscaler").await?;
            }
            None => {
                if delete_owned(&self.children.autoscalers, &hpa_api, namespace, &name, uid).await?
                {
                    ctx.event(
                        sink,
                        EventType::Normal,
                        "Deleted",
                        format!(
                            "HorizontalPodAutoscaler {name} removed: spec.autoscaling is unset"
                        ),
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
                if delete_owned(
                    &self.children.disruption_budgets,
                    &pdb_api,
                    namespace,
                    &name,
                    uid,
                )
                .await?
                {
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
        let sm_api = Api::<DynamicObject>::namespaced_with(
            client.clone(),
            namespace,
            &service_monitor_resource(),
        );
        match &children.service_monitor {
            Some(sm) => {
                apply(&sm_api, sm, "ServiceMonitor").await?;
            }
            // Only a cached (hence served and ours) ServiceMonitor can need deleting.
            None => {
                delete_owned(
                    &self.children.service_monitors,
                    &sm_api,
                    namespace,
                    &name,
                    uid,
                )
                .await?;
            }
        }
        Ok(workload)
    }
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

/// Deletes `name` if the cache holds it controlled by this SpanSink (`uid`); true if
/// deleted. What the cache does not hold is not ours: every child carries our label.
async fn delete_owned<C, K>(
    cache: &Cache<C>,
    api: &Api<K>,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<bool>
where
    C: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    C::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if cache.owned(namespace, name, uid).is_none() {
        return Ok(false);
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(Error::kube(format!("deleting {} {name}", cache.kind()))(e)),
    }
}

#[cfg(test)]
mod tests;
