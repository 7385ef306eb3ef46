//! An in-process, stateful stand-in for the Kubernetes API server, served to `kube::Client`
//! as a `tower::Service`: list, watch, get, create, server-side apply, status, delete. Test-only.
//!
//! Simplifications, all safe for a single-field-manager operator: an apply replaces the
//! applied top-level fields (and labels, annotations, owner references) instead of merging
//! per field; there is no garbage collection, admission, defaulting or schema validation.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use serde_json::{Value, json};
use tokio::sync::mpsc;

type Body = UnsyncBoxBody<Bytes, Infallible>;

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
    /// Every change, for watches that start from an older resourceVersion.
    history: Vec<(u64, Kind, String, Value)>,
    watchers: Vec<Watcher>,
    calls: Vec<Call>,
    served_group_versions: BTreeSet<String>,
}

/// The fake API server; clones share state.
#[derive(Clone, Default)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
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
        st.store(key, existing, object)
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
        st.objects
            .iter()
            .filter(|((k, ns, _), _)| k == kind && ns == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    async fn handle(&self, req: Request<kube::client::Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = body.collect_bytes().await.unwrap_or_default();
        let query: BTreeMap<String, String> = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let Some(route) = Route::parse(parts.uri.path()) else {
            return status_response(StatusCode::NOT_FOUND, "NotFound", "no such path");
        };
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
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
            return if st.served_group_versions.contains(&gv) {
                json_response(
                    StatusCode::OK,
                    json!({"kind": "APIResourceList", "groupVersion": gv,
                    "resources": [{"name": "servicemonitors", "singularName": "servicemonitor", "namespaced": true,
                                   "kind": "ServiceMonitor", "verbs": ["get", "create", "patch", "delete"]}]}),
                )
            } else {
                status_response(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "group version not served",
                )
            };
        };
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
                    .objects
                    .iter()
                    .filter(|((k, ns, _), v)| {
                        k == &kind
                            && namespace.as_ref().is_none_or(|n| n == ns)
                            && matches(v, &selector)
                    })
                    .map(|(_, v)| v.clone())
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
                for (rv, k, type_, object) in &st.history {
                    if *rv > since
                        && k == &kind
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
                match st.objects.get(&(kind, ns, name.unwrap_or_default())) {
                    Some(o) => json_response(StatusCode::OK, o.clone()),
                    None => status_response(StatusCode::NOT_FOUND, "NotFound", "not found"),
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
                let key = (kind, ns, name);
                if st.objects.contains_key(&key) {
                    return status_response(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        "already exists",
                    );
                }
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
                let merged = match (&existing, is_apply, subresource.as_deref()) {
                    (None, true, None) => {
                        // Server-side apply creates: RBAC checks `create` too.
                        st.calls.push(Call {
                            verb: "create".into(),
                            group: kind.group.clone(),
                            resource: kind.plural.clone(),
                            namespace: Some(ns),
                        });
                        let mut object = patch;
                        object["metadata"]["namespace"] = json!(key.1);
                        object
                    }
                    (None, _, _) => {
                        return status_response(StatusCode::NOT_FOUND, "NotFound", "not found");
                    }
                    (Some(old), true, Some("status")) => {
                        let mut object = old.clone();
                        object["status"] = patch["status"].clone();
                        object
                    }
                    (Some(old), true, _) => apply_fields(old, &patch),
                    (Some(old), false, _) => {
                        let mut object = old.clone();
                        json_merge(&mut object, &patch);
                        object
                    }
                };
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
                    None => status_response(StatusCode::NOT_FOUND, "NotFound", "not found"),
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
            .push((rv, kind.clone(), type_.into(), object.clone()));
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

/// A full-object apply by the only field manager: its fields replace the stored ones.
fn apply_fields(old: &Value, applied: &Value) -> Value {
    let mut object = old.clone();
    for (k, v) in applied.as_object().into_iter().flatten() {
        match k.as_str() {
            "metadata" => {
                for field in ["labels", "annotations", "ownerReferences"] {
                    match v.get(field) {
                        Some(value) => object["metadata"][field] = value.clone(),
                        None => {
                            if let Some(m) = object["metadata"].as_object_mut() {
                                m.remove(field);
                            }
                        }
                    }
                }
            }
            "status" => {}
            _ => object[k] = v.clone(),
        }
    }
    object
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

fn status_response(status: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "reason": reason, "message": message, "code": status.as_u16()}),
    )
}
