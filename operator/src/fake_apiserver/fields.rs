//! Server-side apply as the API server does it, reduced to what the operator's objects use:
//! per-manager sets of leaf field paths (`metadata.managedFields`), merging an applied
//! configuration into the live object, dropping fields a manager stops applying, and 409
//! conflicts when another manager owns a field with a different value (unless `force`).
//!
//! Not a full structured-merge-diff: lists are atomic except the associative lists the
//! operator's kinds declare (`x-kubernetes-list-type: map`), keyed as in the OpenAPI schema.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// One step of a field path: an object field, or the element of an associative list whose
/// key fields have these values (rendered like the real server: `k:{"name":"x"}`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Field(String),
    Key(String),
}

pub type Path = Vec<Step>;

/// The key fields of the associative lists among the fields the operator applies, by the
/// list's own field name (as in the Kubernetes OpenAPI schema's list-map-keys).
fn list_map_keys(field: &str) -> Option<&'static [&'static str]> {
    Some(match field {
        "containers"
        | "initContainers"
        | "env"
        | "volumes"
        | "volumeMounts"
        | "imagePullSecrets"
        | "topologySpreadConstraints" => &["name"][..],
        "ports" => &["port", "containerPort", "protocol"][..],
        "ownerReferences" => &["uid"][..],
        _ => return None,
    })
}

/// Fields that are not part of any manager's set: identity, bookkeeping, and status (the
/// status subresource is written separately).
fn unmanaged(path_prefix: &[Step], field: &str) -> bool {
    match path_prefix {
        [] => matches!(field, "apiVersion" | "kind" | "status"),
        [Step::Field(m)] if m == "metadata" => !matches!(
            field,
            "labels" | "annotations" | "ownerReferences" | "finalizers"
        ),
        _ => false,
    }
}

fn element_key(field: &str, element: &Value) -> Option<String> {
    let keys = list_map_keys(field)?;
    let object = element.as_object()?;
    let mut key = Map::new();
    for k in keys {
        if let Some(v) = object.get(*k) {
            key.insert((*k).to_string(), v.clone());
        }
    }
    (!key.is_empty()).then(|| Value::Object(key).to_string())
}

/// Every leaf path of `object` that a manager can own.
pub fn leaf_paths(object: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    walk(object, &mut Vec::new(), &mut out);
    out
}

fn walk(value: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                if unmanaged(prefix, k) {
                    continue;
                }
                prefix.push(Step::Field(k.clone()));
                match v {
                    Value::Array(items)
                        if !items.is_empty()
                            && items.iter().all(|i| element_key(k, i).is_some()) =>
                    {
                        for item in items {
                            let key = element_key(k, item).unwrap_or_default();
                            prefix.push(Step::Key(key));
                            walk(item, prefix, out);
                            prefix.pop();
                        }
                    }
                    _ => walk(v, prefix, out),
                }
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The value at `path`, if present.
pub fn get<'a>(object: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut at = object;
    let mut field = "";
    for step in path {
        at = match step {
            Step::Field(f) => {
                field = f;
                at.get(f)?
            }
            Step::Key(k) => at
                .as_array()?
                .iter()
                .find(|e| element_key(field, e).as_deref() == Some(k.as_str()))?,
        };
    }
    Some(at)
}

/// Sets `path` in `object` to `value`, creating objects and list elements on the way.
fn set(object: &mut Value, path: &[Step], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        *object = value;
        return;
    };
    match first {
        Step::Field(f) => {
            if !object.is_object() {
                *object = json!({});
            }
            let slot = object
                .as_object_mut()
                .map(|m| m.entry(f.clone()).or_insert(Value::Null));
            if let Some(slot) = slot {
                match rest.first() {
                    Some(Step::Key(k)) => set_element(slot, f, k, &rest[1..], value),
                    _ => set(slot, rest, value),
                }
            }
        }
        Step::Key(_) => {}
    }
}

fn set_element(list: &mut Value, field: &str, key: &str, rest: &[Step], value: Value) {
    if !list.is_array() {
        *list = json!([]);
    }
    let Some(items) = list.as_array_mut() else {
        return;
    };
    let position = items
        .iter()
        .position(|e| element_key(field, e).as_deref() == Some(key));
    let index = match position {
        Some(i) => i,
        None => {
            // A new element starts as its key fields, after the live ones (as the server
            // merged a foreign Service's port 80 with the exporter's: 80 4317 4318 8888).
            let key_fields: Value = serde_json::from_str(key).unwrap_or(json!({}));
            items.push(key_fields);
            items.len() - 1
        }
    };
    set(&mut items[index], rest, value);
}

/// Removes `path` from `object`, then any object or list element left empty by it.
fn remove(object: &mut Value, path: &[Step]) {
    // `list` is the field of the associative list `at` is an element of, if it is one.
    fn go(at: &mut Value, path: &[Step], field: &str, list: Option<&str>) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return true;
        };
        match first {
            Step::Field(f) => {
                // An element's key fields go with the element, never on their own.
                if rest.is_empty()
                    && list
                        .and_then(list_map_keys)
                        .is_some_and(|keys| keys.contains(&f.as_str()))
                {
                    return false;
                }
                let Some(map) = at.as_object_mut() else {
                    return false;
                };
                let Some(child) = map.get_mut(f) else {
                    return false;
                };
                if go(child, rest, f, None) || is_empty(child) {
                    map.remove(f);
                }
            }
            Step::Key(k) => {
                let Some(items) = at.as_array_mut() else {
                    return false;
                };
                if let Some(i) = items
                    .iter()
                    .position(|e| element_key(field, e).as_deref() == Some(k.as_str()))
                {
                    let gone = go(&mut items[i], rest, field, Some(field));
                    // An element holding only its key fields is no longer applied by anyone.
                    let only_key = items[i].as_object().is_some_and(|m| {
                        list_map_keys(field)
                            .is_some_and(|keys| m.keys().all(|k| keys.contains(&k.as_str())))
                    });
                    if gone || only_key {
                        items.remove(i);
                    }
                }
            }
        }
        false
    }
    go(object, path, "", None);
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The managers of an object and the leaf paths each owns, from `metadata.managedFields`.
pub type Managers = BTreeMap<String, BTreeSet<Path>>;

/// The manager sets stored in `object` (this double keeps them as path lists, not FieldsV1).
pub fn managers(object: &Value) -> Managers {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let manager = entry["manager"].as_str()?.to_string();
            let paths = entry["fieldsV1"]["paths"]
                .as_array()?
                .iter()
                .filter_map(|p| serde_json::from_value::<Vec<(bool, String)>>(p.clone()).ok())
                .map(|steps| {
                    steps
                        .into_iter()
                        .map(|(key, s)| if key { Step::Key(s) } else { Step::Field(s) })
                        .collect()
                })
                .collect();
            Some((manager, paths))
        })
        .collect()
}

/// Writes `managers` into `object.metadata.managedFields`, `operation` per manager.
pub fn store_managers(
    object: &mut Value,
    managers: &Managers,
    operations: &BTreeMap<String, String>,
) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|(_, paths)| !paths.is_empty())
        .map(|(manager, paths)| {
            let paths: Vec<Value> = paths
                .iter()
                .map(|p| {
                    json!(
                        p.iter()
                            .map(|s| match s {
                                Step::Field(f) => (false, f.clone()),
                                Step::Key(k) => (true, k.clone()),
                            })
                            .collect::<Vec<_>>()
                    )
                })
                .collect();
            json!({
                "manager": manager,
                "operation": operations.get(manager).map(String::as_str).unwrap_or("Update"),
                "fieldsType": "FieldsV1",
                "fieldsV1": {"paths": paths},
            })
        })
        .collect();
    object["metadata"]["managedFields"] = json!(entries);
}

/// The operation recorded for each manager of `object`.
pub fn operations(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["manager"].as_str()?.into(),
                e["operation"].as_str()?.into(),
            ))
        })
        .collect()
}

/// A field owned by another manager with a different value than the apply sets.
#[derive(Debug)]
pub struct Conflict {
    pub manager: String,
    pub field: String,
}

/// Renders a path the way the API server's conflict messages do (`.spec.ports[port=80]`).
pub fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Step::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let inner: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", inner.join(",")));
            }
        }
    }
    out
}

/// Server-side apply of `applied` by `manager` onto `live` (None: the apply creates).
/// Returns the new object, or the conflicts when `force` is false.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let mut object = live.cloned().unwrap_or_else(|| json!({}));
    let mut owners = live.map(managers).unwrap_or_default();
    let mut ops = live.map(operations).unwrap_or_default();
    let new_paths = leaf_paths(applied);

    let mut conflicts = Vec::new();
    for path in &new_paths {
        for (other, paths) in owners.iter_mut() {
            if other == manager || !paths.contains(path) {
                continue;
            }
            if get(&object, path) != get(applied, path) {
                if force {
                    paths.remove(path);
                } else {
                    conflicts.push(Conflict {
                        manager: other.clone(),
                        field: render(path),
                    });
                }
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }

    let previous = owners.remove(manager).unwrap_or_default();
    for path in previous.difference(&new_paths) {
        if !owners.values().any(|p| p.contains(path)) {
            remove(&mut object, path);
        }
    }
    for path in &new_paths {
        if let Some(value) = get(applied, path) {
            set(&mut object, path, value.clone());
        }
    }
    for field in ["apiVersion", "kind"] {
        if let Some(v) = applied.get(field) {
            object[field] = v.clone();
        }
    }
    for field in ["name", "namespace"] {
        if object["metadata"].get(field).is_none() {
            object["metadata"][field] = applied["metadata"][field].clone();
        }
    }
    owners.insert(manager.to_string(), new_paths);
    ops.insert(manager.to_string(), "Apply".into());
    store_managers(&mut object, &owners, &ops);
    Ok(object)
}

/// Records a non-apply write (create, update, merge patch) by `manager`: it comes to own
/// every leaf it changed or added, taking those from other managers, as the server does.
pub fn record_update(live: Option<&Value>, object: &mut Value, manager: &str) {
    let mut owners = live.map(managers).unwrap_or_default();
    let mut ops = live.map(operations).unwrap_or_default();
    let changed: BTreeSet<Path> = leaf_paths(object)
        .into_iter()
        .filter(|p| live.is_none_or(|l| get(l, p) != get(object, p)))
        .collect();
    let now: BTreeSet<Path> = leaf_paths(object);
    for paths in owners.values_mut() {
        paths.retain(|p| now.contains(p) && !changed.contains(p));
    }
    owners
        .entry(manager.to_string())
        .or_default()
        .extend(changed);
    ops.entry(manager.to_string())
        .or_insert_with(|| "Update".into());
    store_managers(object, &owners, &ops);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ports: &[i64]) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n"},
               "spec": {"ports": ports.iter().map(|p| json!({"port": p, "protocol": "TCP"})).collect::<Vec<_>>()}})
    }

    #[test]
    fn a_forced_apply_onto_a_foreign_object_merges_list_maps_as_the_server_does() {
        let mut live = service(&[80]);
        record_update(None, &mut live, "kubectl-create");
        let merged = apply(Some(&live), &service(&[4317, 4318]), "op", true).unwrap();
        let ports: Vec<i64> = merged["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_i64().unwrap())
            .collect();
        assert_eq!(ports, [80, 4317, 4318], "other managers' elements stay");
    }

    #[test]
    fn an_unforced_apply_conflicts_on_fields_owned_with_other_values() {
        let mut live = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3}});
        record_update(None, &mut live, "kubectl-edit");
        let applied = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}});
        let conflicts = apply(Some(&live), &applied, "op", false).unwrap_err();
        assert_eq!(conflicts[0].manager, "kubectl-edit");
        assert_eq!(conflicts[0].field, ".spec.replicas");
        // Same value: shared ownership, no conflict.
        let same = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3}});
        assert!(apply(Some(&live), &same, "op", false).is_ok());
    }

    #[test]
    fn fields_a_manager_stops_applying_are_removed_unless_someone_else_owns_them() {
        let first = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"},
                           "spec": {"env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}});
        let live = apply(None, &first, "op", true).unwrap();
        let second = json!({"metadata": {"name": "c"}, "data": {"a": "1"},
                            "spec": {"env": [{"name": "X", "value": "1"}]}});
        let after = apply(Some(&live), &second, "op", true).unwrap();
        assert_eq!(after["data"], json!({"a": "1"}));
        assert_eq!(after["spec"]["env"], json!([{"name": "X", "value": "1"}]));
        assert_eq!(managers(&after)["op"], leaf_paths(&second));
    }
}
