//! A watch cache of every Service and Endpoints object (all namespaces), published as whole
//! snapshots: list, then watch from the list's resourceVersion; list again after a 410, a
//! broken watch or the resync period. Bursts of changes are coalesced into one snapshot.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keelson_api::object;
use reqwest::Method;
use serde_json::Value;
use tokio::sync::{watch, Notify};

use crate::api::ApiClient;

/// How long changes are gathered before one snapshot is published.
const COALESCE_PERIOD: Duration = Duration::from_millis(150);
/// The first and the longest wait before listing again after a failure.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often everything is listed again even when the watch is healthy.
const RESYNC_PERIOD: Duration = Duration::from_secs(600);

/// Every Service and Endpoints object, as one consistent-enough picture.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceSnapshot {
    pub services: Vec<Value>,
    pub endpoints: Vec<Value>,
    /// Both kinds have been listed at least once (before that the snapshot is empty and must
    /// not be acted on).
    pub synced: bool,
}

#[derive(Default)]
struct Store {
    services: BTreeMap<String, Value>,
    endpoints: BTreeMap<String, Value>,
    services_synced: bool,
    endpoints_synced: bool,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Services,
    Endpoints,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Services => "/api/v1/services",
            Kind::Endpoints => "/api/v1/endpoints",
        }
    }

    fn map(self, store: &mut Store) -> &mut BTreeMap<String, Value> {
        match self {
            Kind::Services => &mut store.services,
            Kind::Endpoints => &mut store.endpoints,
        }
    }
}

/// The cache: [`ServiceCache::run`] fills it, [`ServiceCache::subscribe`] reads it.
pub struct ServiceCache {
    api: ApiClient,
    sender: watch::Sender<Arc<ServiceSnapshot>>,
}

impl ServiceCache {
    pub fn new(api: ApiClient) -> ServiceCache {
        let (sender, _) = watch::channel(Arc::new(ServiceSnapshot::default()));
        ServiceCache { api, sender }
    }

    /// The snapshots, from now on (the first is empty and unsynced).
    pub fn subscribe(&self) -> watch::Receiver<Arc<ServiceSnapshot>> {
        self.sender.subscribe()
    }

    /// Lists and watches until `stop` turns true.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let store = Arc::new(Mutex::new(Store::default()));
        let changed = Arc::new(Notify::new());
        let loops = [Kind::Services, Kind::Endpoints].map(|kind| {
            tokio::spawn(list_watch(
                self.api.clone(),
                kind,
                store.clone(),
                changed.clone(),
                stop.clone(),
            ))
        });
        let mut stop = stop;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                () = changed.notified() => {}
            }
            if *stop.borrow() {
                break;
            }
            tokio::time::sleep(COALESCE_PERIOD).await;
            let snapshot = match store.lock() {
                Ok(store) => ServiceSnapshot {
                    services: store.services.values().cloned().collect(),
                    endpoints: store.endpoints.values().cloned().collect(),
                    synced: store.services_synced && store.endpoints_synced,
                },
                Err(_) => break,
            };
            self.sender.send_if_modified(|current| {
                if **current == snapshot {
                    return false;
                }
                *current = Arc::new(snapshot);
                true
            });
        }
        for task in loops {
            task.abort();
        }
    }
}

fn key_of(obj: &Value) -> Option<String> {
    Some(format!(
        "{}/{}",
        object::namespace(obj)?,
        object::name(obj)?
    ))
}

/// One kind's list+watch loop; it writes into `store` and pokes `changed`.
async fn list_watch(
    api: ApiClient,
    kind: Kind,
    store: Arc<Mutex<Store>>,
    changed: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = RETRY_FIRST;
    'relist: loop {
        if *stop.borrow() {
            return;
        }
        let list = tokio::select! {
            _ = stop.changed() => return,
            list = api.request(Method::GET, kind.path(), "application/json", None) => list,
        };
        let list = match list {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(?kind, error = %e, "cannot list; retrying");
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RETRY_MAX);
                continue;
            }
        };
        let mut rv = object::resource_version(&list).unwrap_or("0").to_string();
        let listed: BTreeMap<String, Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|obj| Some((key_of(obj)?, obj.clone())))
            .collect();
        {
            let Ok(mut store) = store.lock() else { return };
            *kind.map(&mut store) = listed;
            match kind {
                Kind::Services => store.services_synced = true,
                Kind::Endpoints => store.endpoints_synced = true,
            }
        }
        changed.notify_one();
        let resync_at = tokio::time::Instant::now() + RESYNC_PERIOD;
        loop {
            let path = format!(
                "{}?watch=1&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion={rv}",
                kind.path()
            );
            let events = tokio::select! {
                _ = stop.changed() => return,
                events = api.watch(&path) => events,
            };
            let mut events = match events {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(?kind, error = %e, "the watch failed; listing again");
                    tokio::select! {
                        _ = stop.changed() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                    continue 'relist;
                }
            };
            loop {
                let event = tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep_until(resync_at) => continue 'relist,
                    event = events.next() => event,
                };
                let event = match event {
                    None => break,
                    Some(Err(e)) => {
                        tracing::info!(?kind, error = %e, "the watch ended; watching again");
                        break;
                    }
                    Some(Ok(event)) => event,
                };
                let object = &event["object"];
                if let Some(new_rv) = object::resource_version(object) {
                    rv = new_rv.to_string();
                }
                match event["type"].as_str() {
                    Some("ADDED") | Some("MODIFIED") | Some("DELETED") => {
                        let Some(key) = key_of(object) else {
                            tracing::warn!(?kind, "skipping an object without namespace or name");
                            continue;
                        };
                        let Ok(mut store) = store.lock() else { return };
                        if event["type"] == "DELETED" {
                            kind.map(&mut store).remove(&key);
                        } else {
                            kind.map(&mut store).insert(key, object.clone());
                        }
                        drop(store);
                        backoff = RETRY_FIRST;
                        changed.notify_one();
                    }
                    Some("BOOKMARK") => {}
                    Some("ERROR") => {
                        tracing::info!(?kind, status = %object, "the watch expired; listing again");
                        continue 'relist;
                    }
                    other => tracing::warn!(?kind, ?other, "skipping an unknown watch event"),
                }
            }
        }
    }
}
