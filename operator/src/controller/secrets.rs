//! Looks up the Secrets a SpanSink's `spec.secretMounts` names, for its status: the pods
//! cannot start without them, and would only sit in `ContainerCreating`. Not watched (a
//! SpanSink lacking one is looked at again soon), never copied, never logged.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::crd::SpanSink;
use crate::error::{Error, Result};
use crate::reconcile::{FoundSecret, SecretProblem, secret_problems};

/// What the mounts that are not optional lack in `namespace`, one GET per Secret named:
/// of its metadata only, unless a mount's `items` name keys to check. Then the keys are read
/// off the Secret and its values dropped at once.
pub async fn missing(
    client: &kube::Client,
    namespace: &str,
    sink: &SpanSink,
) -> Result<Vec<SecretProblem>> {
    let mounts = &sink.spec.secret_mounts;
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let mut found: BTreeMap<&str, FoundSecret> = BTreeMap::new();
    for mount in mounts.iter().filter(|m| !m.optional) {
        let name = mount.secret_name.as_str();
        if found.contains_key(name) {
            continue;
        }
        let action = || format!("looking up Secret {namespace}/{name} (spec.secretMounts)");
        let needs_keys = mounts
            .iter()
            .any(|m| m.secret_name == name && !m.optional && !m.items.is_empty());
        let keys = if needs_keys {
            api.get_opt(name)
                .await
                .map_err(Error::kube(action()))?
                .map(|secret| {
                    // `stringData` is write-only: the API server folds it into `data`.
                    secret
                        .data
                        .unwrap_or_default()
                        .into_keys()
                        .collect::<BTreeSet<String>>()
                })
        } else {
            api.get_metadata_opt(name)
                .await
                .map_err(Error::kube(action()))?
                .map(|_| BTreeSet::new())
        };
        found.insert(name, keys);
    }
    Ok(secret_problems(namespace, mounts, |name| {
        found.get(name).cloned().flatten()
    }))
}
