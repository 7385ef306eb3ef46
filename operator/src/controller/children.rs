//! The controller's watch caches of the children it manages, and the one question they
//! answer before any write: does this name belong to this SpanSink, to nobody, or to
//! someone else? Not the applying itself (`controller.rs`).
//!
//! The caches are filled by the same watches that trigger reconciles: label-filtered to
//! the operator's own objects, metadata only, except Deployments and StatefulSets, whose
//! status the SpanSink reports. An object missing from them may still exist without the operator's label, so a
//! miss is confirmed with one GET; a hit needs no API call.

use std::fmt::Debug;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};

use crate::error::{Error, Result};

/// Who holds a child's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Nothing by that name exists: applying creates it.
    Nobody,
    /// It exists and this SpanSink is its controller: applying updates it.
    ThisSpanSink,
    /// It exists without this SpanSink's controller reference: it must be left alone.
    Someone,
}

/// Whether `meta` names the SpanSink with `uid` as its controlling owner.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == uid && r.controller == Some(true))
}

fn holder_of(meta: Option<&ObjectMeta>, uid: &str) -> Holder {
    match meta {
        None => Holder::Nobody,
        Some(m) if controlled_by(m, uid) => Holder::ThisSpanSink,
        Some(_) => Holder::Someone,
    }
}

/// A stream of touched objects that also keeps a cache filled.
pub type Trigger<K> = Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// One child kind's cache, and what a miss is confirmed with.
pub struct Cache<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    dyntype: K::DynamicType,
    client: Client,
    resource: ApiResource,
}

impl<K> Cache<K>
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    /// A cache of `resource` filled by `events` (a watch of it, full objects or metadata);
    /// returns it and the stream to hand to the Controller as a trigger.
    pub fn new(
        client: &Client,
        resource: ApiResource,
        dyntype: K::DynamicType,
        events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    ) -> (Self, Trigger<K>) {
        let writer = Writer::new(dyntype.clone());
        let store = writer.as_reader();
        let trigger = reflector::reflector(writer, events)
            .default_backoff()
            .touched_objects()
            .boxed();
        let cache = Cache {
            store,
            dyntype,
            client: client.clone(),
            resource,
        };
        (cache, trigger)
    }

    /// The cached object, if this SpanSink controls it.
    pub fn owned(&self, namespace: &str, name: &str, uid: &str) -> Option<Arc<K>> {
        self.store
            .get(&self.key(namespace, name))
            .filter(|o| controlled_by(o.meta(), uid))
    }

    /// Resolves once the first list has filled the cache (at once if it has).
    pub async fn ready(&self) {
        // Err only if the watch is gone, i.e. the controller is stopping: nothing to wait for.
        let _ = self.store.wait_until_ready().await;
    }

    fn key(&self, namespace: &str, name: &str) -> ObjectRef<K> {
        ObjectRef::new_with(name, self.dyntype.clone()).within(namespace)
    }
}

/// A cache of any child kind, asked who holds a name (so all kinds can be checked in one
/// list).
pub trait HoldsNames: Sync {
    /// The kind, for messages.
    fn kind(&self) -> &str;
    /// Who holds `namespace/name`: from the cache, or with one GET on a miss.
    fn holder<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<Holder>>;
}

impl<K> HoldsNames for Cache<K>
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    fn kind(&self) -> &str {
        &self.resource.kind
    }

    fn holder<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<Holder>> {
        async move {
            if let Some(cached) = self.store.get(&self.key(namespace, name)) {
                return Ok(holder_of(Some(cached.meta()), uid));
            }
            // Absent from the label-filtered cache: new, or someone else's (without our label).
            let found = Api::<DynamicObject>::namespaced_with(
                self.client.clone(),
                namespace,
                &self.resource,
            )
            .get_opt(name)
            .await
            .map_err(Error::kube(format!(
                "reading {} {namespace}/{name}",
                self.resource.kind
            )))?;
            Ok(holder_of(found.as_ref().map(|o| &o.metadata), uid))
        }
        .boxed()
    }
}
