//! An in-process, stateful stand-in for the Kubernetes API server, served to `kube::Client`
//! as a `tower::Service`: discovery, list, watch, get, create, server-side apply (with field
//! managers and conflicts, `fields.rs`), status, delete. Test and benchmark support only.
//!
//! It answers as kube-apiserver does where the operator depends on it: a group version that
//! is not served (or any unknown path) is HTTP 404 with the plain-text body
//! `404 page not found`; a missing object is 404 with a `Status` of reason `NotFound`; an
//! apply without `fieldManager` is 400; an unforced apply over another manager's field is
//! 409 `Conflict`; a create over an existing object is 409 `AlreadyExists`; a changed
//! Deployment `spec.selector`, or a change to a StatefulSet spec field other than those its
//! controller rolls out (`volumeClaimTemplates`, `serviceName`, ...), is 422 `Invalid`; a watch from a resourceVersion older than
//! the retained history gets a 410 `Expired` ERROR event. Not modelled: garbage
//! collection, admission, defaulting (but a Secret's `stringData` is folded into `data`,
//! `secrets.rs`), schema validation, RBAC (calls are recorded instead). A get that asks for
//! `PartialObjectMetadata` gets only the metadata; lists and watches answer whole objects.

mod fields;
mod secrets;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Response body of the double.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Which kind of object a path names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kind {
    pub group: String,
    pub version: String,
    pub plural: String,
}

/// One API call, as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub verb: String,
    pub group: String,
    /// `plural` or `plural/subresource`.
    pub resource: String,
    pub namespace: Option<String>,
}

type Key = (Kind, String, String); // kind, namespace, name

struct Watcher {
    kind: Kind,
    namespace: Option<String>,
    selector: Vec<(String, String)>,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
    next_uid: u64,
    /// Recent changes, for watches that start from an older resourceVersion.
    history: std::collections::VecDeque<(u64, Kind, String, Value)>,
    /// The resourceVersion of the newest change no longer in `history`.
    history_expired_through: u64,
    watchers: Vec<Watcher>,
    calls: Vec<Call>,
    /// Group versions discovery and resource paths answer for (`v1` is the core group).
    served_group_versions: BTreeSet<String>,
}

/// Watch events kept for watches that resume from an older resourceVersion; the real
/// server's watch cache is bounded too, and older resumptions get 410 Expired.
const HISTORY_LIMIT: usize = 20_000;

/// Group versions a cluster serves without add-ons, among those the operator calls.
const BUILT_IN_GROUP_VERSIONS: &[&str] = &[
    "v1",
    "apps/v1",
    "autoscaling/v2",
    "policy/v1",
    "events.k8s.io/v1",
    "coordination.k8s.io/v1",
    "spansink.dev/v1alpha1",
];

/// The field manager recorded for writes that name none (as kubectl's would be).
const DEFAULT_MANAGER: &str = "kubectl";

/// The fake API server; clones share state.
#[derive(Clone)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        let state = State {
            served_group_versions: BUILT_IN_GROUP_VERSIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ..State::default()
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }
}

impl FakeApiServer {
    /// A `kube::Client` talking to this server.
    pub fn client(&self) -> kube::Client {
        let server = self.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.handle(req).await) }
        });
        kube::Client::new(service, "default")
    }

    /// Every call made so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Stores (or replaces) an object as a client would, notifying watchers.
    pub fn put(&self, kind: &Kind, object: Value) -> Value {
        let mut st = self.state.lock().unwrap();
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let key = (kind.clone(), ns, name);
        let existing = st.objects.get(&key).cloned();
        let mut object = object;
        secrets::normalize(kind, &mut object);
        fields::record_update(existing.as_ref(), &mut object, DEFAULT_MANAGER);
        st.store(key, existing, object)
    }

    /// Deletes an object as a client would, notifying watchers; true if it existed.
    pub fn delete(&self, kind: &Kind, namespace: &str, name: &str) -> bool {
        let mut st = self.state.lock().unwrap();
        match st
            .objects
            .remove(&(kind.clone(), namespace.into(), name.into()))
        {
            Some(object) => {
                st.resource_version += 1;
                let rv = st.resource_version;
                st.notify(rv, kind, "DELETED", &object);
                true
            }
            None => false,
        }
    }

    /// The object, if it exists.
    pub fn get(&self, kind: &Kind, namespace: &str, name: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        st.objects
            .get(&(kind.clone(), namespace.into(), name.into()))
            .cloned()
    }

    /// All objects of a kind in a namespace.
    pub fn list(&self, kind: &Kind, namespace: &str) -> Vec<Value> {
        let st = self.state.lock().unwrap();
        st.objects_of(kind, Some(namespace)).cloned().collect()
    }

    /// Answers one request: the whole API server, for kube's client in-process or for an
    /// HTTP server in front of it (the benchmark serves it on loopback).
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes>,
    {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let query: BTreeMap<String, String> = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let Some(route) = Route::parse(parts.uri.path()) else {
            return page_not_found();
        };
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        // `kube::Api::get_metadata`'s Accept header: only the object's metadata comes back
        // (modelled for get; list and watch answer whole objects).
        let metadata_only = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("as=PartialObjectMetadata"));
        let mut st = self.state.lock().unwrap();
        let Route::Resource {
            kind,
            namespace,
            name,
            subresource,
        } = route
        else {
            let Route::Discovery(gv) = route else {
                unreachable!()
            };
            return if gv == "monitoring.coreos.com/v1" && st.served_group_versions.contains(&gv) {
                json_response(
                    StatusCode::OK,
                    json!({"kind": "APIResourceList", "groupVersion": gv,
                    "resources": [{"name": "servicemonitors", "singularName": "servicemonitor", "namespaced": true,
                                   "kind": "ServiceMonitor", "verbs": ["get", "list", "watch", "create", "patch", "delete"]}]}),
                )
            } else {
                // The operator only asks discovery about add-on groups; an unserved one is
                // the mux's plain-text 404, not a Status.
                page_not_found()
            };
        };
        if !st.served_group_versions.contains(&api_version(&kind)) {
            return page_not_found();
        }
        let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        let verb = match (&parts.method, name.is_some(), watch) {
            (&Method::GET, _, true) => "watch",
            (&Method::GET, true, _) => "get",
            (&Method::GET, false, _) => "list",
            (&Method::POST, _, _) => "create",
            (&Method::PATCH, _, _) => "patch",
            (&Method::PUT, _, _) => "update",
            (&Method::DELETE, _, _) => "delete",
            _ => "unknown",
        };
        let resource = match &subresource {
            Some(sub) => format!("{}/{sub}", kind.plural),
            None => kind.plural.clone(),
        };
        st.calls.push(Call {
            verb: verb.into(),
            group: kind.group.clone(),
            resource,
            namespace: namespace.clone(),
        });
        let selector = query
            .get("labelSelector")
            .map(|s| parse_selector(s))
            .unwrap_or_default();

        match verb {
            "list" => {
                let items: Vec<Value> = st
                    .objects_of(&kind, namespace.as_deref())
                    .filter(|v| matches(v, &selector))
                    .cloned()
                    .collect();
                json_response(
                    StatusCode::OK,
                    json!({"apiVersion": api_version(&kind), "kind": "List",
                           "metadata": {"resourceVersion": st.resource_version.to_string()}, "items": items}),
                )
            }
            "watch" => {
                let since: u64 = query
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let (tx, rx) = mpsc::unbounded_channel();
                if since < st.history_expired_through {
                    let _ = tx.send(watch_line(
                        "ERROR",
                        &status_body(
                            StatusCode::GONE,
                            "Expired",
                            &format!(
                                "too old resource version: {since} ({})",
                                st.history_expired_through + 1
                            ),
                        ),
                    ));
                }
                // History is in resourceVersion order: start at the first newer change.
                let newer = st.history.partition_point(|(rv, ..)| *rv <= since);
                for (_, k, type_, object) in st.history.range(newer..) {
                    if k == &kind
                        && namespace
                            .as_ref()
                            .is_none_or(|n| object["metadata"]["namespace"] == *n)
                        && matches(object, &selector)
                    {
                        let _ = tx.send(watch_line(type_, object));
                    }
                }
                st.watchers.push(Watcher {
                    kind,
                    namespace,
                    selector,
                    tx,
                });
                let stream = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
                });
                Response::builder()
                    .status(StatusCode::OK)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(StreamBody::new(stream).boxed_unsync())
                    .unwrap()
            }
            "get" => {
                let ns = namespace.unwrap_or_default();
                let name = name.unwrap_or_default();
                match st.objects.get(&(kind.clone(), ns, name.clone())) {
                    Some(o) if metadata_only => json_response(
                        StatusCode::OK,
                        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                               "metadata": o["metadata"]}),
                    ),
                    Some(o) => json_response(StatusCode::OK, o.clone()),
                    None => not_found(&kind, &name),
                }
            }
            "create" => {
                let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                    return status_response(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "body is not JSON",
                    );
                };
                let ns = namespace.unwrap_or_default();
                object["metadata"]["namespace"] = json!(ns);
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let key = (kind.clone(), ns, name);
                if st.objects.contains_key(&key) {
                    let message = format!("{} \"{}\" already exists", resource_name(&kind), key.2);
                    return status_response(StatusCode::CONFLICT, "AlreadyExists", &message);
                }
                let manager = query
                    .get("fieldManager")
                    .map(String::as_str)
                    .unwrap_or(DEFAULT_MANAGER);
                secrets::normalize(&kind, &mut object);
                fields::record_update(None, &mut object, manager);
                let stored = st.store(key, None, object);
                json_response(StatusCode::CREATED, stored)
            }
            "patch" => {
                let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                    return status_response(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "body is not JSON",
                    );
                };
                let ns = namespace.clone().unwrap_or_default();
                let key = (kind.clone(), ns.clone(), name.clone().unwrap_or_default());
                let existing = st.objects.get(&key).cloned();
                let is_apply = content_type.starts_with("application/apply-patch");
                let manager = query.get("fieldManager").cloned();
                let force = query.get("force").is_some_and(|f| f == "true");
                if is_apply && manager.is_none() {
                    return status_response(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    );
                }
                if force && !is_apply {
                    return status_response(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Invalid",
                        "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch",
                    );
                }
                let merged = match (&existing, is_apply, subresource.as_deref()) {
                    (None, _, Some(_)) | (None, false, None) => {
                        return not_found(&kind, &key.2);
                    }
                    (None, true, None) => {
                        // Server-side apply creates: RBAC checks `create` too.
                        st.calls.push(Call {
                            verb: "create".into(),
                            group: kind.group.clone(),
                            resource: kind.plural.clone(),
                            namespace: Some(ns),
                        });
                        let manager = manager.unwrap_or_default();
                        match fields::apply(None, &patch, &manager, force) {
                            Ok(mut object) => {
                                object["metadata"]["namespace"] = json!(key.1);
                                object
                            }
                            Err(conflicts) => return conflict_response(&kind, &key.2, &conflicts),
                        }
                    }
                    (Some(old), true, Some("status")) => {
                        let mut object = old.clone();
                        object["status"] = patch["status"].clone();
                        object
                    }
                    (Some(old), true, _) => {
                        let manager = manager.unwrap_or_default();
                        match fields::apply(Some(old), &patch, &manager, force) {
                            Ok(object) => object,
                            Err(conflicts) => return conflict_response(&kind, &key.2, &conflicts),
                        }
                    }
                    (Some(old), false, _) => {
                        let mut object = old.clone();
                        json_merge(&mut object, &patch);
                        let manager = manager.as_deref().unwrap_or(DEFAULT_MANAGER);
                        fields::record_update(Some(old), &mut object, manager);
                        object
                    }
                };
                let mut merged = merged;
                secrets::normalize(&kind, &mut merged);
                if let Some(refused) =
                    immutable_field_changed(&kind, existing.as_ref(), &merged, &key.2)
                {
                    return refused;
                }
                let stored = st.store(key, existing, merged);
                json_response(StatusCode::OK, stored)
            }
            "delete" => {
                let key = (
                    kind.clone(),
                    namespace.unwrap_or_default(),
                    name.unwrap_or_default(),
                );
                match st.objects.remove(&key) {
                    Some(object) => {
                        st.resource_version += 1;
                        let rv = st.resource_version;
                        st.notify(rv, &kind, "DELETED", &object);
                        json_response(StatusCode::OK, object)
                    }
                    None => not_found(&kind, &key.2),
                }
            }
            _ => status_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not supported",
            ),
        }
    }
}

impl State {
    /// The objects of one kind (in one namespace, if given): a range of the map, not a
    /// scan of every object, so lists stay cheap with thousands of objects stored.
    fn objects_of<'a>(
        &'a self,
        kind: &'a Kind,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        let start = (
            kind.clone(),
            namespace.unwrap_or_default().to_string(),
            String::new(),
        );
        self.objects
            .range(start..)
            .take_while(move |((k, ns, _), _)| k == kind && namespace.is_none_or(|n| n == ns))
            .map(|(_, v)| v)
    }

    /// Stores `object` under `key`; a change bumps resourceVersion (and generation when
    /// anything but metadata/status changed) and notifies watchers. A no-op is not a change,
    /// as on a real API server.
    fn store(&mut self, key: Key, existing: Option<Value>, mut object: Value) -> Value {
        if let Some(old) = &existing {
            for field in ["uid", "creationTimestamp", "resourceVersion", "generation"] {
                object["metadata"][field] = old["metadata"][field].clone();
            }
            if object == *old {
                return object;
            }
            let spec_changed = object
                .as_object()
                .unwrap()
                .iter()
                .any(|(k, v)| k != "metadata" && k != "status" && old.get(k) != Some(v))
                || old
                    .as_object()
                    .unwrap()
                    .keys()
                    .any(|k| k != "metadata" && k != "status" && object.get(k).is_none());
            if spec_changed {
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                object["metadata"]["generation"] = json!(generation);
            }
        } else {
            self.next_uid += 1;
            object["metadata"]["uid"] =
                json!(format!("00000000-0000-4000-8000-{:012}", self.next_uid));
            object["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
            object["metadata"]["generation"] = json!(1);
        }
        self.resource_version += 1;
        let rv = self.resource_version;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects.insert(key.clone(), object.clone());
        let type_ = if existing.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.notify(rv, &key.0, type_, &object);
        object
    }

    fn notify(&mut self, rv: u64, kind: &Kind, type_: &str, object: &Value) {
        self.history
            .push_back((rv, kind.clone(), type_.into(), object.clone()));
        while self.history.len() > HISTORY_LIMIT {
            if let Some((old, ..)) = self.history.pop_front() {
                self.history_expired_through = old;
            }
        }
        let line = watch_line(type_, object);
        self.watchers.retain(|w| {
            if &w.kind != kind
                || w.namespace
                    .as_ref()
                    .is_some_and(|n| object["metadata"]["namespace"] != *n)
                || !matches(object, &w.selector)
            {
                return true;
            }
            w.tx.send(line.clone()).is_ok()
        });
    }
}

impl FakeApiServer {
    /// Makes discovery report monitoring.coreos.com/v1 (with its ServiceMonitor kind) as
    /// served, as after installing the Prometheus Operator's CRDs.
    pub fn serve_service_monitors(&self) {
        self.state
            .lock()
            .unwrap()
            .served_group_versions
            .insert("monitoring.coreos.com/v1".into());
    }
}

enum Route {
    Discovery(String),
    Resource {
        kind: Kind,
        namespace: Option<String>,
        name: Option<String>,
        subresource: Option<String>,
    },
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            rest => (None, rest),
        };
        let kind = |plural: &str| Kind {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
        };
        Some(match rest {
            [] => Route::Discovery(if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            }),
            [plural] => Route::Resource {
                kind: kind(plural),
                namespace,
                name: None,
                subresource: None,
            },
            [plural, name] => Route::Resource {
                kind: kind(plural),
                namespace,
                name: Some(name.to_string()),
                subresource: None,
            },
            [plural, name, sub] => Route::Resource {
                kind: kind(plural),
                namespace,
                name: Some(name.to_string()),
                subresource: Some(sub.to_string()),
            },
            _ => return None,
        })
    }
}

fn json_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    json_merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn parse_selector(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn matches(object: &Value, selector: &[(String, String)]) -> bool {
    selector
        .iter()
        .all(|(k, v)| object["metadata"]["labels"][k].as_str() == Some(v.as_str()))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn api_version(kind: &Kind) -> String {
    if kind.group.is_empty() {
        kind.version.clone()
    } else {
        format!("{}/{}", kind.group, kind.version)
    }
}

fn watch_line(type_: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())).boxed_unsync())
        .unwrap()
}

fn status_body(status: StatusCode, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": reason, "message": message, "code": status.as_u16()})
}

fn status_response(status: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(status, status_body(status, reason, message))
}

/// What the API server's mux answers for a path no handler serves (an unserved group
/// version, an unknown resource): not a `Status`, a plain-text body.
fn page_not_found() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("X-Content-Type-Options", "nosniff")
        .body(Full::new(Bytes::from_static(b"404 page not found\n")).boxed_unsync())
        .unwrap()
}

/// `deployments.apps` / `configmaps`: how the server names a resource in messages.
fn resource_name(kind: &Kind) -> String {
    if kind.group.is_empty() {
        kind.plural.clone()
    } else {
        format!("{}.{}", kind.plural, kind.group)
    }
}

fn not_found(kind: &Kind, name: &str) -> Response<Body> {
    let message = format!("{} \"{name}\" not found", resource_name(kind));
    let mut body = status_body(StatusCode::NOT_FOUND, "NotFound", &message);
    body["details"] = json!({"name": name, "group": kind.group, "kind": kind.plural});
    json_response(StatusCode::NOT_FOUND, body)
}

fn conflict_response(kind: &Kind, name: &str, conflicts: &[fields::Conflict]) -> Response<Body> {
    let version = api_version(kind);
    let lines: Vec<String> = conflicts
        .iter()
        .map(|c| {
            format!(
                "conflict with \"{}\" using {version}: {}",
                c.manager, c.field
            )
        })
        .collect();
    let message = format!(
        "Apply failed with {} conflict{}: {}",
        conflicts.len(),
        if conflicts.len() == 1 { "" } else { "s" },
        lines.join("\n")
    );
    let mut body = status_body(StatusCode::CONFLICT, "Conflict", &message);
    body["details"] = json!({
        "name": name, "group": kind.group, "kind": kind.plural,
        "causes": conflicts.iter().map(|c| json!({
            "type": "FieldManagerConflict",
            "message": format!("conflict with \"{}\" using {version}", c.manager),
            "field": c.field,
        })).collect::<Vec<_>>(),
    });
    json_response(StatusCode::CONFLICT, body)
}

/// What apps/v1 validation refuses on update: a Deployment's `spec.selector`, and every
/// StatefulSet spec field but the few its controller can roll out.
fn immutable_field_changed(
    kind: &Kind,
    old: Option<&Value>,
    new: &Value,
    name: &str,
) -> Option<Response<Body>> {
    let old = old?;
    match (kind.group.as_str(), kind.plural.as_str()) {
        ("apps", "deployments") => {
            let (was, is) = (&old["spec"]["selector"], &new["spec"]["selector"]);
            (!was.is_null() && was != is).then(|| {
                let message = format!(
                    "Deployment.apps \"{name}\" is invalid: spec.selector: Invalid value: {is}: field is immutable"
                );
                invalid(name, "Deployment", &message, "FieldValueInvalid", "Invalid value: field is immutable", "spec.selector")
            })
        }
        ("apps", "statefulsets") => {
            let frozen = |object: &Value| {
                let mut spec = object["spec"].clone();
                if let Some(fields) = spec.as_object_mut() {
                    for mutable in STATEFUL_SET_MUTABLE_SPEC {
                        fields.remove(*mutable);
                    }
                }
                spec
            };
            (frozen(old) != frozen(new)).then(|| {
                let message = format!(
                    "StatefulSet.apps \"{name}\" is invalid: spec: {STATEFUL_SET_FORBIDDEN}"
                );
                invalid(
                    name,
                    "StatefulSet",
                    &message,
                    "FieldValueForbidden",
                    STATEFUL_SET_FORBIDDEN,
                    "spec",
                )
            })
        }
        _ => None,
    }
}

/// The StatefulSet spec fields an update may change (ValidateStatefulSetUpdate in
/// kube-apiserver 1.27 and later).
const STATEFUL_SET_MUTABLE_SPEC: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

/// kube-apiserver's message for any other change.
const STATEFUL_SET_FORBIDDEN: &str = "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";

/// A 422 `Invalid` Status with one cause, as apps/v1 validation answers.
fn invalid(
    name: &str,
    kind: &str,
    message: &str,
    reason: &str,
    cause: &str,
    field: &str,
) -> Response<Body> {
    let mut body = status_body(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message);
    body["details"] = json!({"name": name, "group": "apps", "kind": kind,
        "causes": [{"reason": reason, "message": cause, "field": field}]});
    json_response(StatusCode::UNPROCESSABLE_ENTITY, body)
}

/// Status, content type and body text of a response, for tests of HTTP answers.
#[cfg(test)]
pub(crate) async fn read<B>(resp: Response<B>) -> (StatusCode, String, String)
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams};

    use super::*;

    async fn raw(
        server: &FakeApiServer,
        method: Method,
        path: &str,
    ) -> (StatusCode, String, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(kube::client::Body::empty())
            .unwrap();
        read(server.handle(req).await).await
    }

    #[tokio::test]
    async fn unserved_group_versions_are_the_muxs_plain_text_404() {
        let server = FakeApiServer::default();
        for path in [
            "/apis/monitoring.coreos.com/v1",
            "/apis/monitoring.coreos.com/v1/namespaces/a/servicemonitors",
            "/version/nope/x/y/z",
        ] {
            let (status, ct, body) = raw(&server, Method::GET, path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(ct, "text/plain; charset=utf-8", "{path}");
            assert_eq!(body, "404 page not found\n", "{path}");
        }
        // A missing object of a served kind is a Status.
        let (status, ct, body) =
            raw(&server, Method::GET, "/api/v1/namespaces/a/configmaps/x").await;
        assert_eq!(
            (status, ct.as_str()),
            (StatusCode::NOT_FOUND, "application/json")
        );
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["reason"], "NotFound");
        assert_eq!(body["message"], "configmaps \"x\" not found");
    }

    #[tokio::test]
    async fn applies_conflict_with_other_managers_unless_forced() {
        let server = FakeApiServer::default();
        let api: Api<ConfigMap> = Api::namespaced(server.client(), "a");
        let cm = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": v}});
        api.patch("c", &PatchParams::apply("first"), &Patch::Apply(cm("1")))
            .await
            .unwrap();
        let err = api
            .patch("c", &PatchParams::apply("second"), &Patch::Apply(cm("2")))
            .await
            .unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("{err}")
        };
        assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
        assert!(
            status
                .message
                .contains("conflict with \"first\" using v1: .data.k"),
            "{}",
            status.message
        );
        let forced = api
            .patch(
                "c",
                &PatchParams::apply("second").force(),
                &Patch::Apply(cm("2")),
            )
            .await
            .unwrap();
        assert_eq!(forced.data.unwrap()["k"], "2");
        // No field manager: refused as by the real server.
        let err = api
            .patch("c", &PatchParams::default(), &Patch::Apply(cm("3")))
            .await
            .unwrap_err();
        assert!(matches!(err, kube::Error::Api(s) if s.code == 400));
    }

    #[tokio::test]
    async fn stateful_set_spec_fields_other_than_the_rollable_ones_are_immutable() {
        use k8s_openapi::api::apps::v1::StatefulSet;
        let server = FakeApiServer::default();
        let api: Api<StatefulSet> = Api::namespaced(server.client(), "a");
        let sts = |size: &str, replicas: i64, image: &str| {
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"},
                "spec": {"replicas": replicas, "serviceName": "s",
                    "selector": {"matchLabels": {"app": "s"}},
                    "template": {"metadata": {"labels": {"app": "s"}}, "spec": {"containers": [{"name": "c", "image": image}]}},
                    "volumeClaimTemplates": [{"metadata": {"name": "data"},
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}]}})
        };
        let apply = PatchParams::apply("op").force();
        api.patch("s", &apply, &Patch::Apply(sts("1Gi", 1, "a:1")))
            .await
            .unwrap();
        // Replicas and template roll out: accepted.
        let rolled = api
            .patch("s", &apply, &Patch::Apply(sts("1Gi", 3, "a:2")))
            .await
            .unwrap();
        assert_eq!(rolled.spec.unwrap().replicas, Some(3));
        // A claim template change: the real server's 422.
        let err = api
            .patch("s", &apply, &Patch::Apply(sts("2Gi", 3, "a:2")))
            .await
            .unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("{err}")
        };
        assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
        assert_eq!(
            status.message,
            "StatefulSet.apps \"s\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
        );
        let mut renamed = sts("1Gi", 3, "a:2");
        renamed["spec"]["serviceName"] = json!("other");
        assert!(
            api.patch("s", &apply, &Patch::Apply(renamed))
                .await
                .is_err()
        );
        let kept = server
            .get(
                &Kind {
                    group: "apps".into(),
                    version: "v1".into(),
                    plural: "statefulsets".into(),
                },
                "a",
                "s",
            )
            .unwrap();
        assert_eq!(
            kept["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
            "1Gi"
        );
    }
}
