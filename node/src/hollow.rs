//! The hollow runtime: N fake nodes in one process. Each registers its Node, renews its Lease
//! in `kube-node-lease` every heartbeat and refreshes its Ready condition less often; one
//! shared pod watch reports the pods bound to any of them Running and makes the kubelet's
//! final delete of pods marked for deletion. Nothing runs: the point is the load a node puts
//! on the masters.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keelson_api::object;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::api::{ApiClient, ApiError};
use crate::pod_status::{self, PodAction};

/// API writes in flight at once across every node of the process.
const WRITES_CONCURRENT_MAX: usize = 64;
/// Pods waiting between the watch and the writers; a full queue slows the watch down.
const POD_QUEUE_MAX: usize = 4096;
/// Uids remembered as reported Running (the set is cleared when it grows past this).
const REPORTED_PODS_MAX: usize = 100_000;
/// Items per page of the initial pod list.
const LIST_PAGE_ITEMS: u32 = 500;
/// Back-off bounds of registration, relists and re-watches.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The Lease duration written for each node (as the kubelet's default).
const LEASE_DURATION_SECS: u64 = 40;
/// The kubelet version hollow nodes report.
pub const KUBELET_VERSION: &str = "v1.37.0-keelson-hollow";
/// The field selector of the shared pod watch: every pod bound to some node.
const BOUND_PODS: &str = "fieldSelector=spec.nodeName%21%3D";

#[derive(Debug, thiserror::Error)]
pub enum HollowError {
    #[error("no node names given")]
    NoNodes,
    #[error("the heartbeat interval must be positive")]
    ZeroHeartbeat,
}

/// What the hollow nodes of one process look like.
#[derive(Debug, Clone)]
pub struct HollowConfig {
    /// One name per node.
    pub names: Vec<String>,
    pub heartbeat: Duration,
    /// Node status (the Ready heartbeat) is rewritten every this many Lease renewals.
    pub status_every_heartbeats: u32,
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    /// The process id, written in the `keelson.io/pid` annotation.
    pub pid: u32,
}

/// The Node object a hollow node registers (status included; it is written again through
/// the status subresource).
pub fn node_object(name: &str, config: &HollowConfig, now: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH,
                "keelson.io/runtime": "hollow",
            },
            "annotations": {"keelson.io/pid": config.pid.to_string()},
        },
        "spec": {},
        "status": node_status(name, config, now, now)["status"],
    })
}

/// The node status patch: capacity, conditions with heartbeat `now`, addresses, node info.
pub fn node_status(name: &str, config: &HollowConfig, now: &str, ready_since: &str) -> Value {
    let resources = json!({
        "cpu": config.cpu,
        "memory": config.memory,
        "pods": config.max_pods.to_string(),
        "ephemeral-storage": "100Gi",
    });
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": ready_since,
        })
    };
    json!({
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": name,
                "systemUUID": name,
                "bootID": format!("hollow-{}", config.pid),
                "kernelVersion": "hollow",
                "osImage": "Keelson hollow node",
                "containerRuntimeVersion": "hollow://0.1.0",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH,
            },
        }
    })
}

/// The Lease of a node renewed at `now` (a MicroTime).
pub fn lease_object(name: &str, node_uid: Option<&str>, now: &str) -> Value {
    let mut lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_SECS,
            "renewTime": now,
        },
    });
    if let Some(uid) = node_uid {
        lease["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]);
    }
    lease
}

fn now_seconds() -> String {
    object::format_time(jiff::Timestamp::now())
}

fn now_micros() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

fn merge_patch() -> &'static str {
    "application/merge-patch+json"
}

/// One hollow node's place among the process's nodes.
struct Slot {
    index: usize,
    next_ip: AtomicU32,
}

/// Runs the hollow nodes until `stop` turns true.
pub async fn run(
    api: ApiClient,
    config: HollowConfig,
    stop: watch::Receiver<bool>,
) -> Result<(), HollowError> {
    if config.names.is_empty() {
        return Err(HollowError::NoNodes);
    }
    if config.heartbeat.is_zero() {
        return Err(HollowError::ZeroHeartbeat);
    }
    let writes = Arc::new(Semaphore::new(WRITES_CONCURRENT_MAX));
    let slots: Arc<HashMap<String, Slot>> = Arc::new(
        config
            .names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let slot = Slot {
                    index,
                    next_ip: AtomicU32::new(0),
                };
                (name.clone(), slot)
            })
            .collect(),
    );
    let config = Arc::new(config);
    let mut tasks = Vec::new();
    for name in &config.names {
        tasks.push(tokio::spawn(node_loop(
            api.clone(),
            name.clone(),
            config.clone(),
            writes.clone(),
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(pod_loop(api, slots, writes, stop.clone())));
    tracing::info!(nodes = config.names.len(), "hollow nodes started");
    for task in tasks {
        let _ = task.await;
    }
    tracing::info!("hollow nodes stopped");
    Ok(())
}

/// Sleeps `delay`; false if `stop` turned true meanwhile.
async fn pause(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = stop.changed() => false,
        _ = tokio::time::sleep(delay) => !*stop.borrow(),
    }
}

fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(BACKOFF_MAX)
}

/// Registers the node; returns its uid.
async fn register(
    api: &ApiClient,
    name: &str,
    config: &HollowConfig,
) -> Result<Option<String>, ApiError> {
    let node = node_object(name, config, &now_seconds());
    match api
        .request(
            Method::POST,
            "/api/v1/nodes",
            "application/json",
            Some(&node),
        )
        .await
    {
        Ok(created) => Ok(object::uid(&created).map(str::to_string)),
        Err(e) if e.is_conflict() => {
            // Registered before (a restart): refresh labels and annotations only; the spec
            // (pod CIDR, taints) belongs to the controllers.
            let patch = json!({"metadata": {
                "labels": node["metadata"]["labels"],
                "annotations": node["metadata"]["annotations"],
            }});
            let patched = api
                .request(
                    Method::PATCH,
                    &format!("/api/v1/nodes/{name}"),
                    merge_patch(),
                    Some(&patch),
                )
                .await?;
            Ok(object::uid(&patched).map(str::to_string))
        }
        Err(e) => Err(e),
    }
}

async fn renew_lease(api: &ApiClient, name: &str, node_uid: Option<&str>) -> Result<(), ApiError> {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}");
    let lease = lease_object(name, node_uid, &now_micros());
    let patch = json!({"spec": lease["spec"]});
    match api
        .write(Method::PATCH, &path, merge_patch(), Some(&patch))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => {
            api.write(
                Method::POST,
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                "application/json",
                Some(&lease),
            )
            .await
        }
        Err(e) => Err(e),
    }
}

async fn write_status(
    api: &ApiClient,
    name: &str,
    config: &HollowConfig,
    ready_since: &str,
) -> Result<(), ApiError> {
    let patch = node_status(name, config, &now_seconds(), ready_since);
    api.write(
        Method::PATCH,
        &format!("/api/v1/nodes/{name}/status"),
        merge_patch(),
        Some(&patch),
    )
    .await
}

async fn node_loop(
    api: ApiClient,
    name: String,
    config: Arc<HollowConfig>,
    writes: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    // Spread the nodes' heartbeats over one interval.
    let jitter = config
        .heartbeat
        .mul_f64(rand::random::<f64>().clamp(0.0, 1.0));
    if !pause(&mut stop, jitter).await {
        return;
    }
    let mut backoff = BACKOFF_MIN;
    let node_uid = loop {
        let registered = {
            let Ok(_permit) = writes.acquire().await else {
                return;
            };
            register(&api, &name, &config).await
        };
        match registered {
            Ok(uid) => break uid,
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "cannot register the node; retrying")
            }
        }
        if !pause(&mut stop, backoff).await {
            return;
        }
        backoff = next_backoff(backoff);
    };
    tracing::info!(node = %name, "node registered");
    let ready_since = now_seconds();
    let every = config.status_every_heartbeats.max(1);
    let mut beat: u32 = 0;
    let mut status_due = true;
    loop {
        {
            let Ok(_permit) = writes.acquire().await else {
                return;
            };
            if let Err(e) = renew_lease(&api, &name, node_uid.as_deref()).await {
                tracing::warn!(node = %name, error = %e, "cannot renew the node Lease");
                status_due = true;
            }
            if status_due || beat % every == 0 {
                match write_status(&api, &name, &config, &ready_since).await {
                    Ok(()) => status_due = false,
                    Err(e) => {
                        tracing::warn!(node = %name, error = %e, "cannot write the node status");
                        status_due = true;
                    }
                }
            }
        }
        beat = beat.wrapping_add(1);
        if !pause(&mut stop, config.heartbeat).await {
            return;
        }
    }
}

/// Why a watch ended.
enum WatchEnd {
    /// The server closed it (timeout): watch again from the last resourceVersion.
    Closed,
    /// 410 Gone or a broken stream: list again.
    Relist(String),
    Stopped,
}

/// Pods already reported Running, and pods with a write in flight.
#[derive(Default)]
struct PodMemory {
    reported: HashSet<String>,
    in_flight: HashSet<String>,
}

async fn pod_loop(
    api: ApiClient,
    slots: Arc<HashMap<String, Slot>>,
    writes: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let (tx, rx) = mpsc::channel::<(String, Value)>(POD_QUEUE_MAX);
    let dispatcher = tokio::spawn(dispatch(api.clone(), slots.clone(), writes, rx));
    let mut backoff = BACKOFF_MIN;
    'relist: loop {
        let mut rv = match list_pods(&api, &slots, &tx).await {
            Ok(rv) => rv,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list pods; retrying");
                if !pause(&mut stop, backoff).await {
                    break;
                }
                backoff = next_backoff(backoff);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        loop {
            match watch_pods(&api, &slots, &tx, &mut rv, &mut stop).await {
                WatchEnd::Closed => continue,
                WatchEnd::Stopped => break 'relist,
                WatchEnd::Relist(why) => {
                    tracing::info!(reason = %why, "pod watch ended; relisting");
                    if !pause(&mut stop, backoff).await {
                        break 'relist;
                    }
                    backoff = next_backoff(backoff);
                    continue 'relist;
                }
            }
        }
    }
    drop(tx);
    let _ = dispatcher.await;
}

/// Queues a watched pod if it is bound to one of this process's nodes.
async fn offer(
    slots: &HashMap<String, Slot>,
    tx: &mpsc::Sender<(String, Value)>,
    kind: &str,
    pod: Value,
) {
    let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str) else {
        return;
    };
    if !slots.contains_key(node) {
        return;
    }
    let _ = tx.send((kind.to_string(), pod)).await;
}

/// Lists every bound pod page by page, queues ours, and returns the list's resourceVersion.
async fn list_pods(
    api: &ApiClient,
    slots: &HashMap<String, Slot>,
    tx: &mpsc::Sender<(String, Value)>,
) -> Result<String, ApiError> {
    let mut token: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/pods?{BOUND_PODS}&limit={LIST_PAGE_ITEMS}");
        if let Some(token) = &token {
            path.push_str("&continue=");
            path.push_str(&percent_encode(token));
        }
        let mut list = api
            .request(Method::GET, &path, "application/json", None)
            .await?;
        let items = match list.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        for pod in items {
            offer(slots, tx, "ADDED", pod).await;
        }
        let rv = list
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match list
            .pointer("/metadata/continue")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            Some(next) => token = Some(next.to_string()),
            None => return Ok(rv),
        }
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn watch_pods(
    api: &ApiClient,
    slots: &HashMap<String, Slot>,
    tx: &mpsc::Sender<(String, Value)>,
    rv: &mut String,
    stop: &mut watch::Receiver<bool>,
) -> WatchEnd {
    let path = format!(
        "/api/v1/pods?watch=1&{BOUND_PODS}&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion={rv}"
    );
    let events = tokio::select! {
        _ = stop.changed() => return WatchEnd::Stopped,
        events = api.watch(&path) => events,
    };
    let mut events = match events {
        Ok(events) => events,
        Err(e) => return WatchEnd::Relist(e.to_string()),
    };
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return WatchEnd::Stopped,
            event = events.next() => event,
        };
        let mut event = match event {
            None => return WatchEnd::Closed,
            Some(Err(e)) => return WatchEnd::Relist(e.to_string()),
            Some(Ok(event)) => event,
        };
        let kind = event["type"].as_str().unwrap_or_default().to_string();
        let object = event["object"].take();
        if kind == "ERROR" {
            let code = object["code"].as_u64().unwrap_or(0);
            return WatchEnd::Relist(format!(
                "watch error {code}: {}",
                object["message"].as_str().unwrap_or_default()
            ));
        }
        if let Some(next) = object::resource_version(&object) {
            *rv = next.to_string();
        }
        if kind != "BOOKMARK" {
            offer(slots, tx, &kind, object).await;
        }
    }
}

/// Decides for each queued pod and starts its write, at most `WRITES_CONCURRENT_MAX` at once.
async fn dispatch(
    api: ApiClient,
    slots: Arc<HashMap<String, Slot>>,
    writes: Arc<Semaphore>,
    mut rx: mpsc::Receiver<(String, Value)>,
) {
    let memory = Arc::new(Mutex::new(PodMemory::default()));
    while let Some((kind, pod)) = rx.recv().await {
        let Some(uid) = object::uid(&pod).map(str::to_string) else {
            continue;
        };
        let Some(slot) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .and_then(|n| slots.get(n))
        else {
            continue;
        };
        if kind == "DELETED" {
            memory_of(&memory).reported.remove(&uid);
            continue;
        }
        {
            let memory = memory_of(&memory);
            if memory.in_flight.contains(&uid)
                || (memory.reported.contains(&uid) && object::deletion_timestamp(&pod).is_none())
            {
                continue;
            }
        }
        let seq = slot.next_ip.load(Ordering::Relaxed);
        let action = pod_status::decide(&pod, pod_status::pod_ip(slot.index, seq), &now_seconds());
        if action == PodAction::Skip {
            continue;
        }
        let Ok(permit) = writes.clone().acquire_owned().await else {
            return;
        };
        if matches!(action, PodAction::ReportRunning(_)) {
            slot.next_ip.fetch_add(1, Ordering::Relaxed);
        }
        memory_of(&memory).in_flight.insert(uid.clone());
        let api = api.clone();
        let memory = memory.clone();
        tokio::spawn(async move {
            let running = matches!(action, PodAction::ReportRunning(_));
            let result = write_pod(&api, &pod, action).await;
            drop(permit);
            let mut memory = memory_of(&memory);
            memory.in_flight.remove(&uid);
            match result {
                Ok(()) if running => {
                    if memory.reported.len() >= REPORTED_PODS_MAX {
                        memory.reported.clear();
                    }
                    memory.reported.insert(uid);
                }
                Ok(()) => {}
                Err(e) => tracing::warn!(
                    pod = object::name(&pod).unwrap_or_default(),
                    error = %e,
                    "cannot write the pod"
                ),
            }
        });
    }
}

fn memory_of(memory: &Mutex<PodMemory>) -> std::sync::MutexGuard<'_, PodMemory> {
    // A panicking writer leaves at worst a pod reported twice.
    memory
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn write_pod(api: &ApiClient, pod: &Value, action: PodAction) -> Result<(), ApiError> {
    let namespace = object::namespace(pod).unwrap_or("default");
    let name = object::name(pod).unwrap_or_default();
    let path = format!("/api/v1/namespaces/{namespace}/pods/{name}");
    let result = match action {
        PodAction::Skip => return Ok(()),
        PodAction::ReportRunning(patch) => {
            api.write(
                Method::PATCH,
                &format!("{path}/status"),
                merge_patch(),
                Some(&patch),
            )
            .await
        }
        PodAction::Delete { uid } => {
            let options = json!({
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": uid},
            });
            api.write(Method::DELETE, &path, "application/json", Some(&options))
                .await
        }
    };
    match result {
        // The pod is gone or was replaced: nothing left to do.
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HollowConfig {
        HollowConfig {
            names: vec!["n-0".to_string()],
            heartbeat: Duration::from_secs(2),
            status_every_heartbeats: 5,
            cpu: "4".to_string(),
            memory: "8Gi".to_string(),
            max_pods: 110,
            pid: 42,
        }
    }

    #[test]
    fn node_object_carries_labels_capacity_and_readiness() {
        let node = node_object("n-0", &config(), "2026-01-01T00:00:00Z");
        assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], "n-0");
        assert_eq!(node["metadata"]["labels"]["kubernetes.io/os"], "linux");
        assert_eq!(node["metadata"]["annotations"]["keelson.io/pid"], "42");
        let status = &node["status"];
        assert_eq!(status["capacity"]["cpu"], "4");
        assert_eq!(status["allocatable"]["memory"], "8Gi");
        assert_eq!(status["capacity"]["pods"], "110");
        assert_eq!(status["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
        let ready = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["lastHeartbeatTime"], "2026-01-01T00:00:00Z");
        assert_eq!(status["addresses"][0]["address"], "127.0.0.1");
        assert_eq!(status["addresses"][1]["type"], "Hostname");
    }

    #[test]
    fn lease_names_its_holder_and_owner() {
        let lease = lease_object("n-0", Some("u"), "2026-01-01T00:00:00.000001Z");
        assert_eq!(lease["metadata"]["namespace"], "kube-node-lease");
        assert_eq!(lease["spec"]["holderIdentity"], "n-0");
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(lease["metadata"]["ownerReferences"][0]["uid"], "u");
        assert!(lease_object("n-0", None, "t")["metadata"]
            .get("ownerReferences")
            .is_none());
    }

    #[test]
    fn continue_tokens_are_percent_encoded() {
        assert_eq!(percent_encode("a+b/c=="), "a%2Bb%2Fc%3D%3D");
    }
}
