//! The workloads: clients that run operations against the cluster until told to stop and
//! record each one (invoke, then ok / fail / info) — registers under independent keys, a
//! grow-only set, and watchers that resume from their last resourceVersion.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::Rng;
use serde_json::{json, Value as Json};

use crate::client::{status_message, transport_error, Api, ClientError, Register, NAMESPACE};
use crate::history::{Kind, Value, F};
use crate::recorder::Recorder;

/// Tells the clients to stop after their current operation.
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Keys for one group of register clients: the group works on one key until it has run
/// `ops_per_key` operations on it, then moves to the next, so each key's history stays small
/// enough to check.
pub struct KeyGroup {
    pub id: usize,
    pub ops_per_key: u64,
    ops: AtomicU64,
}

impl KeyGroup {
    pub fn new(id: usize, ops_per_key: u64) -> KeyGroup {
        KeyGroup {
            id,
            ops_per_key: ops_per_key.max(1),
            ops: AtomicU64::new(0),
        }
    }

    fn next_key(&self) -> String {
        let n = self.ops.fetch_add(1, Ordering::Relaxed) / self.ops_per_key;
        format!("r{}-{n}", self.id)
    }
}

/// A source of values never written twice.
#[derive(Default)]
pub struct Values(AtomicI64);

impl Values {
    pub fn next(&self) -> i64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// One register client: reads, writes and compare-and-sets (against the version of its last
/// read) on its group's current key, until stopped.
pub async fn register_client(
    recorder: Arc<Recorder>,
    client: Arc<dyn Register>,
    group: Arc<KeyGroup>,
    values: Arc<Values>,
    stop: Stop,
) {
    let mut process = recorder.new_process();
    // The last value and version this client read, per key.
    let mut seen: HashMap<String, (i64, String)> = HashMap::new();
    let node = client.node().to_string();
    while !stop.stopped() {
        let key = group.next_key();
        seen.retain(|k, _| *k == key);
        let roll: f64 = rand::rng().random();
        let known = seen.get(&key).cloned();
        let mut failed = false;
        let recorded = match known {
            Some((from, version)) if roll < 0.4 => {
                let to = values.next();
                let value = Value::Cas { from, to };
                recorder.op(
                    process,
                    Kind::Invoke,
                    F::Cas,
                    Some(&key),
                    value.clone(),
                    Some(&node),
                    None,
                );
                let (kind, error) = match client.cas(&key, &version, to).await {
                    Ok(true) => {
                        seen.remove(&key);
                        (Kind::Ok, None)
                    }
                    Ok(false) => (Kind::Fail, None),
                    // Refused for another reason than the comparison: a fail would claim
                    // the value was not `from`, so it is recorded as unknown.
                    Err(e) => (Kind::Info, Some(e.to_string())),
                };
                let info = kind == Kind::Info;
                failed = info;
                let ok = recorder.op(process, kind, F::Cas, Some(&key), value, Some(&node), error);
                if info {
                    process = recorder.new_process();
                }
                ok
            }
            _ if roll < 0.7 => {
                recorder.op(
                    process,
                    Kind::Invoke,
                    F::Read,
                    Some(&key),
                    Value::None,
                    Some(&node),
                    None,
                );
                match client.read(&key).await {
                    Ok(found) => {
                        let value = match &found {
                            Some(v) => {
                                seen.insert(key.clone(), (v.value, v.version.clone()));
                                Value::Int(v.value)
                            }
                            None => Value::None,
                        };
                        recorder.op(
                            process,
                            Kind::Ok,
                            F::Read,
                            Some(&key),
                            value,
                            Some(&node),
                            None,
                        )
                    }
                    // A read has no effect: whatever went wrong, it did not happen.
                    Err(e) => {
                        failed = true;
                        recorder.op(
                            process,
                            Kind::Fail,
                            F::Read,
                            Some(&key),
                            Value::None,
                            Some(&node),
                            Some(e.to_string()),
                        )
                    }
                }
            }
            _ => {
                let v = values.next();
                recorder.op(
                    process,
                    Kind::Invoke,
                    F::Write,
                    Some(&key),
                    Value::Int(v),
                    Some(&node),
                    None,
                );
                let (kind, error) = match client.write(&key, v).await {
                    Ok(()) => (Kind::Ok, None),
                    Err(ClientError::Definite(e)) => (Kind::Fail, Some(e)),
                    Err(ClientError::Indefinite(e)) => (Kind::Info, Some(e)),
                };
                seen.remove(&key);
                let info = kind == Kind::Info;
                failed = kind != Kind::Ok;
                let ok = recorder.op(
                    process,
                    kind,
                    F::Write,
                    Some(&key),
                    Value::Int(v),
                    Some(&node),
                    error,
                );
                if info {
                    process = recorder.new_process();
                }
                ok
            }
        };
        if !recorded {
            return;
        }
        if failed {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
}

/// How long a client waits after an error before its next operation, so that a member that
/// refuses connections at once does not turn the history into a flood of failures.
const ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The label the set's objects carry.
const SET_LABEL: &str = "jepsen-set";

/// One set client: adds unique elements (a ConfigMap `s-N` each) until stopped.
pub async fn set_client(recorder: Arc<Recorder>, api: Api, values: Arc<Values>, stop: Stop) {
    let mut process = recorder.new_process();
    let path = format!("/api/v1/namespaces/{NAMESPACE}/configmaps");
    while !stop.stopped() {
        let element = values.next();
        let body = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": format!("s-{element}"), "labels": {SET_LABEL: "true"}},
        });
        let node = api.node.clone();
        recorder.op(
            process,
            Kind::Invoke,
            F::Add,
            None,
            Value::Int(element),
            Some(&node),
            None,
        );
        let (kind, error) = match api.send(reqwest::Method::POST, &path, Some(&body)).await {
            Ok(reply) if reply.code == 201 || reply.code == 200 => (Kind::Ok, None),
            Ok(reply) if reply.code >= 500 => (Kind::Info, Some(status_message(&reply))),
            Ok(reply) => (Kind::Fail, Some(status_message(&reply))),
            Err(e) if e.is_connect() => (Kind::Fail, Some(transport_error(&e))),
            Err(e) => (Kind::Info, Some(transport_error(&e))),
        };
        let info = kind == Kind::Info;
        if !recorder.op(
            process,
            kind,
            F::Add,
            None,
            Value::Int(element),
            Some(&node),
            error,
        ) {
            return;
        }
        if info {
            process = recorder.new_process();
        }
        if kind != Kind::Ok {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
}

/// The final read of the set, retried (each attempt recorded) until one succeeds or
/// `timeout` passes.
pub async fn set_read_all(recorder: &Recorder, apis: &[Api], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut attempt = 0usize;
    while Instant::now() < deadline {
        let api = &apis[attempt % apis.len().max(1)];
        attempt += 1;
        let process = recorder.new_process();
        recorder.op(
            process,
            Kind::Invoke,
            F::ReadAll,
            None,
            Value::None,
            Some(&api.node),
            None,
        );
        match read_set(api).await {
            Ok(elements) => {
                recorder.op(
                    process,
                    Kind::Ok,
                    F::ReadAll,
                    None,
                    Value::Ints(elements),
                    Some(&api.node),
                    None,
                );
                return true;
            }
            Err(e) => {
                recorder.op(
                    process,
                    Kind::Fail,
                    F::ReadAll,
                    None,
                    Value::None,
                    Some(&api.node),
                    Some(e),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// The most pages one read of the set takes (of [`SET_PAGE`] elements each).
const SET_PAGES_MAX: usize = 10_000;
const SET_PAGE: usize = 500;

/// Every element of the set, in pages as kubectl reads (the API gives at most 5,000 objects
/// per answer, and a `continue` token reads the next page at the first page's revision).
async fn read_set(api: &Api) -> Result<Vec<i64>, String> {
    let mut elements = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..SET_PAGES_MAX {
        let mut path = format!(
            "/api/v1/namespaces/{NAMESPACE}/configmaps?labelSelector={SET_LABEL}%3Dtrue&limit={SET_PAGE}"
        );
        if let Some(token) = &token {
            path.push_str("&continue=");
            path.extend(form_urlencoded::byte_serialize(token.as_bytes()));
        }
        let body = get_ok(api, &path).await?;
        if let Some(items) = body["items"].as_array() {
            elements.extend(items.iter().filter_map(|i| {
                i["metadata"]["name"]
                    .as_str()?
                    .strip_prefix("s-")?
                    .parse::<i64>()
                    .ok()
            }));
        }
        match body["metadata"]["continue"].as_str() {
            Some(next) if !next.is_empty() => token = Some(next.to_string()),
            _ => {
                elements.sort_unstable();
                return Ok(elements);
            }
        }
    }
    Err(format!("the set did not fit in {SET_PAGES_MAX} pages"))
}

/// A GET answered 200: its body, or the transport error or Status as text.
async fn get_ok(api: &Api, path: &str) -> Result<Json, String> {
    let reply = api
        .send(reqwest::Method::GET, path, None)
        .await
        .map_err(|e| transport_error(&e))?;
    if reply.code != 200 {
        return Err(status_message(&reply));
    }
    Ok(reply.body)
}

/// The resourceVersion of a fresh list of the Jepsen namespace's ConfigMaps.
pub async fn list_revision(api: &Api) -> Result<u64, String> {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/configmaps?limit=1");
    get_ok(api, &path).await?["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .ok_or_else(|| "a list without a resourceVersion".to_string())
}

/// Where a watcher has got to, shared with the run so it can wait for watchers to catch up.
#[derive(Default)]
pub struct WatchProgress(AtomicU64);

impl WatchProgress {
    pub fn revision(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One watcher of the Jepsen namespace's ConfigMaps, on one master: records every event, and
/// after any interruption watches again from the last resourceVersion it saw; a 410 makes it
/// relist (recorded, as it breaks the sequence).
pub async fn watcher(recorder: Arc<Recorder>, api: Api, progress: Arc<WatchProgress>, stop: Stop) {
    let process = recorder.new_process();
    let node = api.node.clone();
    let mut from: Option<u64> = None;
    while !stop.stopped() {
        let rv = match from {
            Some(rv) => rv,
            None => match list_revision(&api).await {
                Ok(rv) => {
                    progress.0.fetch_max(rv, Ordering::Relaxed);
                    rv
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        let path = format!(
            "/api/v1/namespaces/{NAMESPACE}/configmaps?watch=1&resourceVersion={rv}&allowWatchBookmarks=true"
        );
        match watch_once(&recorder, &api, &path, process, &node, &progress, &stop).await {
            WatchEnd::Interrupted(last) => {
                from = Some(last.unwrap_or(rv));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            WatchEnd::Gone => {
                recorder.op(
                    process,
                    Kind::Info,
                    F::Relist,
                    None,
                    Value::None,
                    Some(&node),
                    Some("410 Gone".into()),
                );
                from = None;
            }
        }
    }
}

enum WatchEnd {
    /// The stream ended or failed; the last resourceVersion seen, if any.
    Interrupted(Option<u64>),
    /// The server said the revision is compacted.
    Gone,
}

/// The longest line a watch event may take (a ConfigMap of the workloads is tiny).
const WATCH_LINE_MAX: usize = 1 << 20;

async fn watch_once(
    recorder: &Recorder,
    api: &Api,
    path: &str,
    process: u64,
    node: &str,
    progress: &WatchProgress,
    stop: &Stop,
) -> WatchEnd {
    let mut last = None;
    let response = match api.stream(path).await {
        Ok(r) if r.status().as_u16() == 410 => return WatchEnd::Gone,
        Ok(r) if r.status().is_success() => r,
        _ => return WatchEnd::Interrupted(None),
    };
    let mut body = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        if stop.stopped() {
            return WatchEnd::Interrupted(last);
        }
        let chunk = match tokio::time::timeout(Duration::from_secs(1), body.next()).await {
            Err(_) => continue,
            Ok(Some(Ok(chunk))) => chunk,
            Ok(_) => return WatchEnd::Interrupted(last),
        };
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let Ok(event) = serde_json::from_slice::<Json>(&line) else {
                continue;
            };
            let kind = event["type"].as_str().unwrap_or_default().to_string();
            let object = &event["object"];
            if kind == "ERROR" {
                if object["code"].as_u64() == Some(410) {
                    return WatchEnd::Gone;
                }
                return WatchEnd::Interrupted(last);
            }
            let Some(rv) = object["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse::<u64>().ok())
            else {
                continue;
            };
            last = Some(rv);
            progress.0.fetch_max(rv, Ordering::Relaxed);
            if kind == "BOOKMARK" {
                continue;
            }
            let key = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let value = Value::Event { rv, key, kind };
            if !recorder.op(process, Kind::Ok, F::Event, None, value, Some(node), None) {
                return WatchEnd::Interrupted(last);
            }
        }
        if buffer.len() > WATCH_LINE_MAX {
            return WatchEnd::Interrupted(last);
        }
    }
}
