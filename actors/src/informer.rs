//! Shared informers: watch-driven caches of one resource each, shared by every controller on
//! the leading master. An informer lists the collection at one revision, swaps its cache whole,
//! then watches from that revision; a compacted, overflowed or reset watch relists.
//!
//! Reads come from this master's store (the list linearizable, the watch local); writes never
//! do: controllers write through [`crate::client::ApiClient`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use keelson_api::object;
use keelson_api::resources::Resource;
use keelson_api::selectors::{LabelSelector, Operator, Requirement};
use keelson_raft::{Consistency, EventKind, KeyRange, Store, WatchError, WatchRequest};
use serde_json::Value;
use tokio::sync::{broadcast, watch as signal};

use crate::apiserver::decoded::Decoded;
use crate::apiserver::{collection_prefix, decode_stored, LIST_PAGE_ITEMS_MAX};

/// Changes buffered per subscriber; one that falls further behind gets a resync.
const CHANGES_BUFFER_MAX: usize = 16 * 1024;
/// The longest pause between relist attempts.
const RELIST_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The cache key of an object: `namespace/name`, or `name` for cluster-scoped objects.
pub fn key_of(obj: &Value) -> String {
    match (object::namespace(obj), object::name(obj)) {
        (Some(ns), Some(name)) if !ns.is_empty() => format!("{ns}/{name}"),
        (_, Some(name)) => name.to_string(),
        _ => String::new(),
    }
}

/// Splits a cache key into namespace and name.
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

/// One change seen by an informer.
#[derive(Debug, Clone)]
pub enum Change {
    /// An object was added or modified (`old` is what the cache held before).
    Applied {
        old: Option<Arc<Value>>,
        new: Arc<Value>,
    },
    Deleted(Arc<Value>),
    /// The cache was replaced after a (re)list, or this subscriber fell behind: look at
    /// everything again.
    Resynced,
}

#[derive(Default)]
struct Cache {
    objects: HashMap<String, Arc<Value>>,
    /// Keys of objects by the uid of each of their owners.
    by_owner: HashMap<String, HashSet<String>>,
    /// Objects no owner controls (orphans a controller may adopt), by namespace.
    uncontrolled: HashMap<String, Orphans>,
    /// Keys of pods by the node they are bound to (`spec.nodeName`).
    by_node: HashMap<String, HashSet<String>>,
    revision: u64,
}

/// The orphans of one namespace, with an index of their labels: a controller looks for the
/// orphans its selector matches at every sync, and a namespace may hold thousands of orphans
/// of which it selects none.
#[derive(Default)]
struct Orphans {
    keys: HashSet<String>,
    /// Keys by label (`key`, `value`).
    by_label: HashMap<(String, String), HashSet<String>>,
}

/// An object's labels with string values (any other value counts as absent, as in
/// [`LabelSelector::matches_object`]).
fn string_labels(obj: &Value) -> impl Iterator<Item = (&String, &str)> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| Some((key, value.as_str()?)))
}

impl Orphans {
    fn insert(&mut self, key: &str, obj: &Value) {
        self.keys.insert(key.to_string());
        for (label, value) in string_labels(obj) {
            self.by_label
                .entry((label.clone(), value.to_string()))
                .or_default()
                .insert(key.to_string());
        }
    }

    fn remove(&mut self, key: &str, obj: &Value) {
        self.keys.remove(key);
        for (label, value) in string_labels(obj) {
            let entry = (label.clone(), value.to_string());
            if let Some(keys) = self.by_label.get_mut(&entry) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_label.remove(&entry);
                }
            }
        }
    }

    /// The keys that may match `selector`: those carrying one of the values a requirement
    /// asks for (`key=value`, `key in (...)`; the requirement with the fewest), or every key
    /// when no requirement names values an object must carry.
    fn candidates(&self, selector: &LabelSelector) -> Vec<&String> {
        let carrying = |requirement: &Requirement| -> Option<Vec<&String>> {
            match requirement.operator() {
                Operator::Equals | Operator::DoubleEquals | Operator::In => Some(
                    requirement
                        .values()
                        .iter()
                        .filter_map(|value| {
                            self.by_label
                                .get(&(requirement.key().to_string(), value.clone()))
                        })
                        .flatten()
                        .collect(),
                ),
                _ => None,
            }
        };
        selector
            .requirements()
            .iter()
            .filter_map(carrying)
            .min_by_key(Vec::len)
            .unwrap_or_else(|| self.keys.iter().collect())
    }
}

fn node_name_of(obj: &Value) -> Option<&str> {
    obj.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

impl Cache {
    fn insert(&mut self, key: String, obj: Arc<Value>) -> Option<Arc<Value>> {
        let old = self.objects.insert(key.clone(), obj.clone());
        if let Some(old) = &old {
            self.unindex(&key, old);
        }
        let owners = object::owner_references(&obj);
        if !owners.iter().any(|o| o.controller == Some(true)) {
            let namespace = split_key(&key).0.unwrap_or_default();
            self.uncontrolled
                .entry(namespace.to_string())
                .or_default()
                .insert(&key, &obj);
        }
        for owner in owners {
            self.by_owner
                .entry(owner.uid)
                .or_default()
                .insert(key.clone());
        }
        if let Some(node) = node_name_of(&obj) {
            self.by_node
                .entry(node.to_string())
                .or_default()
                .insert(key);
        }
        old
    }

    fn remove(&mut self, key: &str) -> Option<Arc<Value>> {
        let old = self.objects.remove(key)?;
        self.unindex(key, &old);
        Some(old)
    }

    fn unindex(&mut self, key: &str, obj: &Value) {
        let namespace = split_key(key).0.unwrap_or_default();
        if let Some(orphans) = self.uncontrolled.get_mut(namespace) {
            orphans.remove(key, obj);
            if orphans.keys.is_empty() {
                self.uncontrolled.remove(namespace);
            }
        }
        if let Some(node) = node_name_of(obj) {
            if let Some(keys) = self.by_node.get_mut(node) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_node.remove(node);
                }
            }
        }
        for owner in object::owner_references(obj) {
            if let Some(keys) = self.by_owner.get_mut(&owner.uid) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_owner.remove(&owner.uid);
                }
            }
        }
    }
}

struct Inner {
    resource: &'static Resource,
    /// The store prefix of the collection.
    prefix: String,
    cache: RwLock<Cache>,
    changes: broadcast::Sender<Change>,
    synced: signal::Sender<bool>,
    /// Changes parsed once for this master's watches and informers alike.
    decoded: Arc<Decoded>,
}

/// A watch-driven cache of one resource; clones share it.
#[derive(Clone)]
pub struct Informer {
    inner: Arc<Inner>,
}

/// A subscriber's stream of changes.
pub struct Subscription {
    changes: broadcast::Receiver<Change>,
}

impl Subscription {
    /// The next change; `None` once the informer has stopped. A subscriber that fell behind
    /// gets `Resynced`.
    pub async fn recv(&mut self) -> Option<Change> {
        match self.changes.recv().await {
            Ok(change) => Some(change),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Change::Resynced),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Informer {
    /// Starts informing on `resource` until `stopped` turns true.
    pub(crate) fn start(
        store: Store,
        decoded: Arc<Decoded>,
        resource: &'static Resource,
        stopped: signal::Receiver<bool>,
    ) -> Informer {
        let (changes, _) = broadcast::channel(CHANGES_BUFFER_MAX);
        let (synced, _) = signal::channel(false);
        let informer = Informer {
            inner: Arc::new(Inner {
                resource,
                prefix: collection_prefix(resource, None),
                cache: RwLock::new(Cache::default()),
                changes,
                synced,
                decoded,
            }),
        };
        tokio::spawn(informer.clone().run(store, stopped));
        informer
    }

    pub fn resource(&self) -> &'static Resource {
        self.inner.resource
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            changes: self.inner.changes.subscribe(),
        }
    }

    /// Waits until the first list is in the cache.
    pub async fn wait_synced(&self) {
        let mut synced = self.inner.synced.subscribe();
        let _ = synced.wait_for(|s| *s).await;
    }

    pub fn has_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    /// The revision the cache reflects.
    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    pub fn get(&self, key: &str) -> Option<Arc<Value>> {
        self.read().objects.get(key).cloned()
    }

    /// Every object in the cache.
    pub fn list(&self) -> Vec<Arc<Value>> {
        self.read().objects.values().cloned().collect()
    }

    /// Every object in one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<Value>> {
        self.read()
            .objects
            .values()
            .filter(|o| object::namespace(o) == Some(namespace))
            .cloned()
            .collect()
    }

    /// The objects of one namespace that no owner controls and `selector` matches, found
    /// through indexes of orphans and of their labels: a controller looks for orphans to
    /// adopt at every sync, among thousands of pods.
    pub fn uncontrolled_matching(
        &self,
        namespace: &str,
        selector: &LabelSelector,
    ) -> Vec<Arc<Value>> {
        let cache = self.read();
        let Some(orphans) = cache.uncontrolled.get(namespace) else {
            return Vec::new();
        };
        orphans
            .candidates(selector)
            .into_iter()
            .filter_map(|k| cache.objects.get(k))
            .filter(|obj| selector.matches_object(obj))
            .cloned()
            .collect()
    }

    /// Every cached key.
    pub fn keys(&self) -> Vec<String> {
        self.read().objects.keys().cloned().collect()
    }

    /// The objects that name `owner_uid` among their ownerReferences.
    pub fn owned_by(&self, owner_uid: &str) -> Vec<Arc<Value>> {
        let cache = self.read();
        cache
            .by_owner
            .get(owner_uid)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| cache.objects.get(k).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The pods bound to `node`, found through an index: the node controller looks at them
    /// whenever a tainted node changes, among thousands of pods.
    pub fn on_node(&self, node: &str) -> Vec<Arc<Value>> {
        let cache = self.read();
        cache
            .by_node
            .get(node)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| cache.objects.get(k).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The number of cached objects.
    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        // A panic while holding the lock leaves the cache as consistent as any single
        // insert or remove leaves it; keep serving it.
        self.inner
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.inner
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn run(self, store: Store, mut stopped: signal::Receiver<bool>) {
        let prefix = self.inner.prefix.clone();
        let mut backoff = Duration::from_millis(100);
        loop {
            if *stopped.borrow() {
                return;
            }
            let revision = tokio::select! {
                _ = stopped.changed() => return,
                listed = self.relist(&store, &prefix) => match listed {
                    Ok(revision) => revision,
                    Err(e) => {
                        tracing::warn!(resource = self.inner.resource.plural, error = %e, "informer list failed; retrying");
                        tokio::select! {
                            _ = stopped.changed() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(RELIST_BACKOFF_MAX);
                        continue;
                    }
                },
            };
            backoff = Duration::from_millis(100);
            let request = WatchRequest {
                range: KeyRange::prefix(prefix.as_bytes()),
                start_revision: revision + 1,
            };
            let mut stream = match store.watch(request) {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(resource = self.inner.resource.plural, error = %e, "informer watch failed; relisting");
                    continue;
                }
            };
            loop {
                let batch = tokio::select! {
                    _ = stopped.changed() => return,
                    batch = stream.next() => batch,
                };
                match batch {
                    Some(Ok(events)) => self.apply(&events),
                    Some(Err(WatchError::Closed)) | None => return,
                    Some(Err(e)) => {
                        tracing::info!(resource = self.inner.resource.plural, error = %e, "informer watch ended; relisting");
                        break;
                    }
                }
            }
        }
    }

    /// Lists the whole collection at one revision and swaps the cache.
    async fn relist(&self, store: &Store, prefix: &str) -> Result<u64, String> {
        let mut fresh = Cache::default();
        let mut start: Option<Vec<u8>> = None;
        let mut revision = 0;
        loop {
            let mut range = KeyRange::prefix(prefix.as_bytes());
            if let Some(start) = start.take() {
                range.start = start;
            }
            let request = keelson_raft::RangeRequest {
                range,
                revision,
                limit: LIST_PAGE_ITEMS_MAX,
                consistency: Consistency::Linearizable,
            };
            let page = store.range(request).await.map_err(|e| e.to_string())?;
            revision = page.revision;
            for kv in &page.kvs {
                match decode_stored(kv) {
                    Ok(obj) => {
                        let key = key_of(&obj);
                        fresh.insert(key, Arc::new(obj));
                    }
                    Err(e) => tracing::warn!(error = %e, "informer skips an undecodable object"),
                }
            }
            match page.next_key {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        fresh.revision = revision;
        *self.write() = fresh;
        // send_replace: the value must stick even if nobody waits yet.
        self.inner.synced.send_replace(true);
        let _ = self.inner.changes.send(Change::Resynced);
        Ok(revision)
    }

    fn apply(&self, events: &[keelson_raft::Event]) {
        let mut changes = Vec::with_capacity(events.len());
        {
            let mut cache = self.write();
            for event in events {
                cache.revision = cache.revision.max(event.kv.mod_revision);
                match event.kind {
                    EventKind::Put => match self.inner.decoded.get(&event.kv) {
                        Ok(new) => {
                            let old = cache.insert(key_of(&new), new.clone());
                            changes.push(Change::Applied { old, new });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "informer skips an undecodable object")
                        }
                    },
                    EventKind::Delete => {
                        let key = std::str::from_utf8(&event.kv.key)
                            .ok()
                            .and_then(|k| k.strip_prefix(self.inner.prefix.as_str()))
                            .map(str::to_string);
                        if let Some(old) = key.and_then(|k| cache.remove(&k)) {
                            changes.push(Change::Deleted(old));
                        }
                    }
                }
            }
        }
        for change in changes {
            // No subscriber is fine: the cache is still current.
            let _ = self.inner.changes.send(change);
        }
    }
}

/// The informers of one leadership term, one per resource, created on first use.
#[derive(Clone)]
pub struct Informers {
    store: Store,
    decoded: Arc<Decoded>,
    stopped: signal::Receiver<bool>,
    started: Arc<std::sync::Mutex<HashMap<&'static str, Informer>>>,
}

impl Informers {
    pub(crate) fn new(
        store: Store,
        decoded: Arc<Decoded>,
        stopped: signal::Receiver<bool>,
    ) -> Self {
        Informers {
            store,
            decoded,
            stopped,
            started: Arc::default(),
        }
    }

    /// The informer of `resource`, started on first use.
    pub fn of(&self, resource: &'static Resource) -> Informer {
        let mut started = self
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        started
            .entry(resource.plural)
            .or_insert_with(|| {
                Informer::start(
                    self.store.clone(),
                    self.decoded.clone(),
                    resource,
                    self.stopped.clone(),
                )
            })
            .clone()
    }

    /// The informer of a core or named-group resource by plural name (`pods`, `deployments`).
    ///
    /// Panics never: an unknown name is a programming error reported as `None`.
    pub fn by_plural(&self, plural: &str) -> Option<Informer> {
        keelson_api::resources::find_by_name(plural).map(|r| self.of(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_applied_change_shares_the_parse_of_the_masters_watches() {
        let decoded = Arc::new(Decoded::default());
        let Some(pods) = keelson_api::resources::find("", "v1", "pods") else {
            panic!("pods are registered");
        };
        let informer = Informer {
            inner: Arc::new(Inner {
                resource: pods,
                prefix: collection_prefix(pods, None),
                cache: RwLock::default(),
                changes: broadcast::channel(8).0,
                synced: signal::channel(false).0,
                decoded: decoded.clone(),
            }),
        };
        let kv = keelson_raft::KeyValue {
            key: format!("{}ns/a", collection_prefix(pods, None)).into_bytes(),
            value: serde_json::to_vec(&json!({"metadata": {"namespace": "ns", "name": "a"}}))
                .unwrap_or_default(),
            create_revision: 5,
            mod_revision: 5,
            version: 1,
        };
        let watched = decoded.get(&kv).expect("valid JSON");
        informer.apply(&[keelson_raft::Event {
            kind: EventKind::Put,
            kv,
            prev: None,
        }]);
        let cached = informer.get("ns/a").expect("in the cache");
        assert_eq!(cached["metadata"]["resourceVersion"], "5");
        assert!(Arc::ptr_eq(&watched, &cached), "parsed once, shared");
    }

    fn pod(name: &str, owners: Value) -> Arc<Value> {
        Arc::new(json!({"metadata": {"namespace": "ns", "name": name, "ownerReferences": owners}}))
    }

    fn uncontrolled(cache: &Cache) -> Vec<&str> {
        let mut keys: Vec<&str> = cache
            .uncontrolled
            .values()
            .flat_map(|orphans| orphans.keys.iter().map(String::as_str))
            .collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn the_orphan_index_follows_adoption_release_and_removal() {
        let controller = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
            "uid": "rs-uid", "controller": true}]);
        let other = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "cm",
            "uid": "cm-uid"}]);
        let mut cache = Cache::default();
        cache.insert("ns/a".into(), pod("a", json!([])));
        cache.insert("ns/b".into(), pod("b", controller.clone()));
        cache.insert("ns/c".into(), pod("c", other));
        assert_eq!(
            uncontrolled(&cache),
            ["ns/a", "ns/c"],
            "no controller: orphans"
        );

        cache.insert("ns/a".into(), pod("a", controller));
        assert_eq!(uncontrolled(&cache), ["ns/c"], "adopted");
        assert_eq!(cache.by_owner["rs-uid"].len(), 2);

        cache.insert("ns/b".into(), pod("b", json!([])));
        assert_eq!(uncontrolled(&cache), ["ns/b", "ns/c"], "released");
        assert_eq!(cache.by_owner["rs-uid"].len(), 1);

        cache.remove("ns/c");
        assert_eq!(uncontrolled(&cache), ["ns/b"], "removed");
        assert!(!cache.by_owner.contains_key("cm-uid"));
    }

    /// The orphans a selector matches, by the label index and by a scan of every object.
    fn matching(cache: &Cache, namespace: &str, selector: &str) -> (Vec<String>, Vec<String>) {
        let selector = LabelSelector::parse(selector).expect("a valid selector");
        let mut indexed: Vec<String> = cache
            .uncontrolled
            .get(namespace)
            .map(|orphans| orphans.candidates(&selector))
            .unwrap_or_default()
            .into_iter()
            .filter(|k| selector.matches_object(&cache.objects[*k]))
            .cloned()
            .collect();
        let mut scanned: Vec<String> = cache
            .objects
            .iter()
            .filter(|(k, obj)| {
                split_key(k).0 == Some(namespace)
                    && object::controller_of(obj).is_none()
                    && selector.matches_object(obj)
            })
            .map(|(k, _)| k.clone())
            .collect();
        indexed.sort_unstable();
        scanned.sort_unstable();
        (indexed, scanned)
    }

    #[test]
    fn the_label_index_of_orphans_finds_what_a_scan_finds() {
        let labelled = |ns: &str, name: &str, labels: Value, owners: Value| {
            Arc::new(
                json!({"metadata": {"namespace": ns, "name": name, "labels": labels,
                "ownerReferences": owners}}),
            )
        };
        let controller = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
            "uid": "rs-uid", "controller": true}]);
        let mut cache = Cache::default();
        for (ns, name, labels) in [
            ("ns", "a", json!({"app": "web", "tier": "front"})),
            ("ns", "b", json!({"app": "web"})),
            ("ns", "c", json!({"app": "db", "tier": "back"})),
            ("ns", "d", json!({"app": 7})),
            ("other", "e", json!({"app": "web"})),
        ] {
            cache.insert(
                format!("{ns}/{name}"),
                labelled(ns, name, labels, json!([])),
            );
        }
        cache.insert(
            "ns/owned".into(),
            labelled("ns", "owned", json!({"app": "web"}), controller.clone()),
        );
        let selectors = [
            "app=web",
            "app==web,tier=front",
            "app in (web,db)",
            "app=web,tier!=front",
            "tier",
            "!tier",
            "app notin (web)",
            "app=none",
            "",
        ];
        let check = |cache: &Cache, stage: &str| {
            for selector in selectors {
                let (indexed, scanned) = matching(cache, "ns", selector);
                assert_eq!(indexed, scanned, "{stage}: {selector:?}");
            }
        };
        check(&cache, "inserted");
        assert_eq!(matching(&cache, "ns", "app=web").0, ["ns/a", "ns/b"]);
        assert_eq!(
            matching(&cache, "ns", "app in (web,db)").0,
            ["ns/a", "ns/b", "ns/c"]
        );

        // Relabelled, adopted, released and removed: the index follows.
        cache.insert(
            "ns/b".into(),
            labelled("ns", "b", json!({"app": "db"}), json!([])),
        );
        cache.insert(
            "ns/a".into(),
            labelled("ns", "a", json!({"app": "web"}), controller),
        );
        cache.insert(
            "ns/owned".into(),
            labelled("ns", "owned", json!({"app": "web"}), json!([])),
        );
        cache.remove("ns/c");
        check(&cache, "changed");
        assert_eq!(matching(&cache, "ns", "app=web").0, ["ns/owned"]);
        assert_eq!(matching(&cache, "ns", "app=db").0, ["ns/b"]);

        for key in ["ns/b", "ns/d", "ns/owned", "other/e"] {
            cache.remove(key);
        }
        assert!(cache.uncontrolled.is_empty(), "emptied namespaces go");
    }

    #[test]
    fn the_node_index_follows_binding_and_removal() {
        let bound = |name: &str, node: &str| {
            let mut p = pod(name, json!([]));
            Arc::make_mut(&mut p)["spec"] = json!({"nodeName": node});
            p
        };
        let keys = |cache: &Cache, node: &str| {
            let mut keys: Vec<String> = cache
                .by_node
                .get(node)
                .map(|k| k.iter().cloned().collect())
                .unwrap_or_default();
            keys.sort_unstable();
            keys
        };
        let mut cache = Cache::default();
        cache.insert("ns/a".into(), pod("a", json!([])));
        assert!(cache.by_node.is_empty(), "an unbound pod is on no node");
        cache.insert("ns/a".into(), bound("a", "n1"));
        cache.insert("ns/b".into(), bound("b", "n1"));
        cache.insert("ns/c".into(), bound("c", "n2"));
        assert_eq!(keys(&cache, "n1"), ["ns/a", "ns/b"]);
        assert_eq!(keys(&cache, "n2"), ["ns/c"]);
        cache.remove("ns/c");
        assert!(!cache.by_node.contains_key("n2"), "an emptied node goes");
        cache.remove("ns/a");
        assert_eq!(keys(&cache, "n1"), ["ns/b"]);
    }
}
