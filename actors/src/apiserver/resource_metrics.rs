//! The resource metrics API (`metrics.k8s.io/v1beta1`, as metrics-server serves it):
//! NodeMetrics and PodMetrics made from the nodes' stats, asked over the node link when they
//! are asked for. Every node concerned is asked at once with a short timeout, through this
//! master's link to it or through the master it is connected to; a node that does not answer
//! is left out, as metrics-server leaves out nodes it could not scrape.

use std::collections::HashMap;
use std::time::Duration;

use http::{Method, StatusCode};
use keelson_api::node_link::{NodeStats, StatsRequest, Usage, CONNECTED_MASTER_ANNOTATION};
use keelson_api::object;
use keelson_api::resources::{self, METRICS_GROUP, METRICS_VERSION};
use keelson_api::status::StatusError;
use keelson_raft::Consistency;
use serde_json::{json, Value};
use warp::reply::Response;

use super::forward::FORWARDED_HEADER;
use super::list::list_all;
use super::objects::{read, Reply};
use super::request::{json_reply, status_reply, ApiRequest};
use super::route::{MetricsPath, ResourcePath};
use super::ApiState;

/// How long a node (or the master holding its link) has to answer.
const NODE_STATS_TIMEOUT: Duration = Duration::from_secs(5);
/// Nodes asked at once.
const NODES_IN_FLIGHT_MAX: usize = 64;

/// The metrics API's `apiVersion`.
fn api_version() -> String {
    format!("{METRICS_GROUP}/{METRICS_VERSION}")
}

/// CPU as a Kubernetes quantity in nanocores (`123456n`), as metrics-server writes it.
pub(crate) fn cpu_quantity(nanocores: u64) -> String {
    if nanocores == 0 {
        "0".to_string()
    } else {
        format!("{nanocores}n")
    }
}

/// Memory as a binary Kubernetes quantity (`12345Ki` when a whole number of KiB, else bytes).
pub(crate) fn memory_quantity(bytes: u64) -> String {
    if bytes != 0 && bytes % 1024 == 0 {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// A window as Go prints a `time.Duration` (what `metav1.Duration` carries): `10.5s`,
/// `1m0.25s`, `500ms`, `0s`.
pub(crate) fn go_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = (ms / 60_000) % 60;
    let millis = ms % 60_000;
    let seconds = if millis % 1000 == 0 {
        format!("{}s", millis / 1000)
    } else {
        let text = format!("{}.{:03}", millis / 1000, millis % 1000);
        format!("{}s", text.trim_end_matches('0'))
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

/// RFC 3339 in whole seconds, as `metav1.Time` is written.
fn rfc3339(unix_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(unix_ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn usage_value(usage: &Usage) -> Value {
    json!({
        "cpu": cpu_quantity(usage.cpu_nanocores),
        "memory": memory_quantity(usage.memory_working_set_bytes),
    })
}

/// The NodeMetrics of a node object and its stats; `None` when the node had no sample yet.
pub(crate) fn node_metrics(node: &Value, stats: &NodeStats, now: &str) -> Option<Value> {
    if stats.usage.timestamp_unix_ms == 0 {
        return None;
    }
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": api_version(),
        "metadata": {
            "name": object::name(node).unwrap_or_default(),
            "labels": node.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({})),
            "creationTimestamp": now,
        },
        "timestamp": rfc3339(stats.usage.timestamp_unix_ms),
        "window": go_duration(stats.usage.window_ms),
        "usage": usage_value(&stats.usage),
    }))
}

/// The PodMetrics of a pod object from its node's stats; `None` when the node reported none
/// of its containers (not started yet, or sampled once only).
pub(crate) fn pod_metrics(pod: &Value, stats: &NodeStats, now: &str) -> Option<Value> {
    let namespace = object::namespace(pod).unwrap_or_default();
    let name = object::name(pod).unwrap_or_default();
    let uid = object::uid(pod).unwrap_or_default();
    let found = stats.pods.iter().find(|p| {
        p.namespace == namespace
            && p.name == name
            && (p.uid.is_empty() || uid.is_empty() || p.uid == uid)
    })?;
    let first = found.containers.first()?;
    let timestamp = found
        .containers
        .iter()
        .map(|c| c.usage.timestamp_unix_ms)
        .max()
        .unwrap_or(first.usage.timestamp_unix_ms);
    let window = found
        .containers
        .iter()
        .map(|c| c.usage.window_ms)
        .max()
        .unwrap_or(first.usage.window_ms);
    let containers: Vec<Value> = found
        .containers
        .iter()
        .map(|c| json!({"name": c.name, "usage": usage_value(&c.usage)}))
        .collect();
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": api_version(),
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": pod.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({})),
            "creationTimestamp": now,
        },
        "timestamp": rfc3339(timestamp),
        "window": go_duration(window),
        "containers": containers,
    }))
}

fn list_value(kind: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": kind,
        "apiVersion": api_version(),
        "metadata": {},
        "items": items,
    })
}

/// Serves a metrics API path.
pub(crate) async fn serve(state: &ApiState, req: &ApiRequest, path: &MetricsPath) -> Response {
    let reply = if req.method != Method::GET || req.flag("watch") {
        Err(StatusError::method_not_allowed(
            "the metrics API serves get and list only".to_string(),
        ))
    } else {
        match path {
            MetricsPath::Nodes { name } => nodes(state, req, name.as_deref()).await,
            MetricsPath::Pods { namespace, name } => {
                pods(state, req, namespace.as_deref(), name.as_deref()).await
            }
        }
    };
    match reply {
        Ok((code, value)) => json_reply(code, &value),
        Err(e) => status_reply(&e),
    }
}

/// `/keelson/v1/nodes/{name}/stats`: the node's stats through this master's link to it only
/// (another master asks this one because the node is connected here).
pub(crate) async fn node_stats_here(state: &ApiState, req: &ApiRequest, node: &str) -> Response {
    let request = StatsRequest {
        namespace: req.param("namespace").unwrap_or_default().to_string(),
    };
    let answer = tokio::time::timeout(NODE_STATS_TIMEOUT, state.node_links.stats(node, request))
        .await
        .unwrap_or_else(|_| {
            Err(StatusError::service_unavailable(
                format!("node {node} did not send its stats in time"),
                Some(1),
            ))
        });
    match answer {
        Ok(Some(stats)) => match serde_json::to_value(&stats) {
            Ok(value) => json_reply(StatusCode::OK, &value),
            Err(e) => status_reply(&StatusError::internal(&format!(
                "cannot encode the stats: {e}"
            ))),
        },
        Ok(None) => status_reply(&StatusError::service_unavailable(
            format!("node {node} is not connected to this master"),
            Some(1),
        )),
        Err(e) => status_reply(&e),
    }
}

fn core_path(plural: &str, namespace: Option<&str>, name: Option<&str>) -> Option<ResourcePath> {
    Some(ResourcePath {
        resource: resources::find("", "v1", plural)?,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        subresource: None,
        watch: false,
    })
}

/// A list request of this master's own state with the client's selectors.
fn local_list_request(req: &ApiRequest) -> ApiRequest {
    let mut query = HashMap::new();
    for key in ["labelSelector", "fieldSelector"] {
        if let Some(value) = req.param(key) {
            query.insert(key.to_string(), value.to_string());
        }
    }
    query.insert("resourceVersion".to_string(), "0".to_string());
    ApiRequest {
        method: Method::GET,
        path: req.path.clone(),
        query,
        headers: req.headers.clone(),
        body: bytes::Bytes::new(),
    }
}

/// Asks one node for its stats: through this master's link, else (for a request not
/// forwarded already) through the master named by the Node's connected-master annotation.
async fn ask_node(
    state: &ApiState,
    req: &ApiRequest,
    node: &Value,
    namespace: &str,
) -> Option<NodeStats> {
    let name = object::name(node)?;
    let request = StatsRequest {
        namespace: namespace.to_string(),
    };
    let asked = async {
        match state.node_links.stats(name, request).await {
            Ok(Some(stats)) => return Some(stats),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(node = %name, error = %e, "a node did not send its stats");
                return None;
            }
        }
        if req.headers.contains_key(FORWARDED_HEADER) {
            return None;
        }
        let master = object::annotations(node)
            .get(CONNECTED_MASTER_ANNOTATION)
            .cloned()
            .filter(|m| *m != *state.name)?;
        let mut path = format!("/keelson/v1/nodes/{name}/stats");
        if !namespace.is_empty() {
            path.push_str("?namespace=");
            path.push_str(
                &form_urlencoded::byte_serialize(namespace.as_bytes()).collect::<String>(),
            );
        }
        let body =
            super::forward::get_from_master(state, req, &master, &path, NODE_STATS_TIMEOUT).await?;
        serde_json::from_slice(&body).ok()
    };
    match tokio::time::timeout(NODE_STATS_TIMEOUT, asked).await {
        Ok(stats) => stats.filter(|s| s.node == name),
        Err(_) => {
            tracing::debug!(node = %name, "a node did not send its stats in time");
            None
        }
    }
}

/// Asks `nodes` at once, [`NODES_IN_FLIGHT_MAX`] at a time; those that answered.
async fn ask_nodes(
    state: &ApiState,
    req: &ApiRequest,
    nodes: &[Value],
    namespace: &str,
) -> HashMap<String, NodeStats> {
    let mut answered = HashMap::new();
    for batch in nodes.chunks(NODES_IN_FLIGHT_MAX) {
        let mut asked = Vec::with_capacity(batch.len());
        for node in batch {
            asked.push(ask_node(state, req, node, namespace));
        }
        for stats in futures::future::join_all(asked).await.into_iter().flatten() {
            answered.insert(stats.node.clone(), stats);
        }
    }
    answered
}

async fn nodes(state: &ApiState, req: &ApiRequest, name: Option<&str>) -> Reply {
    let path = core_path("nodes", None, name)
        .ok_or_else(|| StatusError::internal("nodes are not served"))?;
    let now = super::objects::now_rfc3339();
    let not_found = |name: &str| StatusError::not_found(METRICS_GROUP, "nodes", name);
    if let Some(name) = name {
        let node = match read(state, &path, Consistency::Serializable).await {
            Ok(stored) => stored.object,
            Err(e) if e.code() == 404 => return Err(not_found(name)),
            Err(e) => return Err(e),
        };
        let stats = ask_nodes(state, req, std::slice::from_ref(&node), "").await;
        return stats
            .get(name)
            .and_then(|s| node_metrics(&node, s, &now))
            .map(|m| (StatusCode::OK, m))
            .ok_or_else(|| not_found(name));
    }
    let listed = list_all(state, &local_list_request(req), &path).await?;
    let nodes: Vec<Value> = listed.items.into_iter().map(|s| s.object).collect();
    let stats = ask_nodes(state, req, &nodes, "").await;
    let items: Vec<Value> = nodes
        .iter()
        .filter_map(|node| {
            let stats = stats.get(object::name(node)?)?;
            node_metrics(node, stats, &now)
        })
        .collect();
    Ok((StatusCode::OK, list_value("NodeMetricsList", items)))
}

async fn pods(
    state: &ApiState,
    req: &ApiRequest,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Reply {
    let path = core_path("pods", namespace, name)
        .ok_or_else(|| StatusError::internal("pods are not served"))?;
    let now = super::objects::now_rfc3339();
    let not_found = |name: &str| StatusError::not_found(METRICS_GROUP, "pods", name);
    let pods: Vec<Value> = match name {
        Some(name) => match read(state, &path, Consistency::Serializable).await {
            Ok(stored) => vec![stored.object],
            Err(e) if e.code() == 404 => return Err(not_found(name)),
            Err(e) => return Err(e),
        },
        None => list_all(state, &local_list_request(req), &path)
            .await?
            .items
            .into_iter()
            .map(|s| s.object)
            .collect(),
    };
    let mut wanted: Vec<&str> = pods
        .iter()
        .filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str))
        .filter(|n| !n.is_empty())
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let nodes = node_objects(state, &wanted).await?;
    let stats = ask_nodes(state, req, &nodes, namespace.unwrap_or_default()).await;
    let items: Vec<Value> = pods
        .iter()
        .filter_map(|pod| {
            let node = pod.pointer("/spec/nodeName").and_then(Value::as_str)?;
            pod_metrics(pod, stats.get(node)?, &now)
        })
        .collect();
    match name {
        Some(name) => items
            .into_iter()
            .next()
            .map(|m| (StatusCode::OK, m))
            .ok_or_else(|| not_found(name)),
        None => Ok((StatusCode::OK, list_value("PodMetricsList", items))),
    }
}

/// The Node objects named (those that exist), from this master's state.
async fn node_objects(state: &ApiState, names: &[&str]) -> Result<Vec<Value>, StatusError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let path = core_path("nodes", None, None)
        .ok_or_else(|| StatusError::internal("nodes are not served"))?;
    let mut query = HashMap::new();
    query.insert("resourceVersion".to_string(), "0".to_string());
    let req = ApiRequest {
        method: Method::GET,
        path: String::new(),
        query,
        headers: http::HeaderMap::new(),
        body: bytes::Bytes::new(),
    };
    Ok(list_all(state, &req, &path)
        .await?
        .items
        .into_iter()
        .map(|s| s.object)
        .filter(|n| object::name(n).is_some_and(|name| names.binary_search(&name).is_ok()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_api::node_link::{ContainerStats, PodStats};

    #[test]
    fn quantities_are_written_as_metrics_server_writes_them() {
        let cases: &[(u64, &str, &str)] = &[
            (0, "0", "0"),
            (1, "1n", "1"),
            (123_456, "123456n", "123456"),
            (1024, "1024n", "1Ki"),
            (20 * 1024 * 1024, "20971520n", "20480Ki"),
        ];
        for (n, cpu, memory) in cases {
            assert_eq!(cpu_quantity(*n), *cpu);
            assert_eq!(memory_quantity(*n), *memory);
        }
    }

    #[test]
    fn windows_are_go_durations() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (500, "500ms"),
            (1000, "1s"),
            (10_000, "10s"),
            (10_500, "10.5s"),
            (10_123, "10.123s"),
            (60_250, "1m0.25s"),
            (3_723_000, "1h2m3s"),
        ];
        for (ms, want) in cases {
            assert_eq!(go_duration(*ms), *want, "{ms}");
        }
    }

    fn usage(cpu: u64, memory: u64, window_ms: u64) -> Usage {
        Usage {
            timestamp_unix_ms: 1_800_000_000_000,
            window_ms,
            cpu_nanocores: cpu,
            memory_working_set_bytes: memory,
        }
    }

    #[test]
    fn metrics_objects_come_from_node_stats() {
        let stats = NodeStats {
            node: "n1".into(),
            usage: usage(2_000_000, 4096, 10_000),
            pods: vec![PodStats {
                namespace: "default".into(),
                name: "web".into(),
                uid: "u1".into(),
                containers: vec![
                    ContainerStats {
                        name: "main".into(),
                        usage: usage(1_000, 2048, 9_000),
                    },
                    ContainerStats {
                        name: "side".into(),
                        usage: usage(0, 100, 10_000),
                    },
                ],
            }],
        };
        let node = json!({"metadata": {"name": "n1", "labels": {"a": "b"}}});
        let metrics = node_metrics(&node, &stats, "now").unwrap();
        assert_eq!(metrics["kind"], "NodeMetrics");
        assert_eq!(metrics["apiVersion"], "metrics.k8s.io/v1beta1");
        assert_eq!(metrics["metadata"]["labels"]["a"], "b");
        assert_eq!(metrics["timestamp"], "2027-01-15T08:00:00Z");
        assert_eq!(metrics["window"], "10s");
        assert_eq!(
            metrics["usage"],
            json!({"cpu": "2000000n", "memory": "4Ki"})
        );

        let pod = |uid: &str, name: &str| json!({"metadata": {"name": name, "namespace": "default", "uid": uid, "labels": {"app": "web"}}});
        let metrics = pod_metrics(&pod("u1", "web"), &stats, "now").unwrap();
        assert_eq!(metrics["kind"], "PodMetrics");
        assert_eq!(metrics["metadata"]["namespace"], "default");
        assert_eq!(metrics["metadata"]["labels"]["app"], "web");
        assert_eq!(metrics["window"], "10s");
        assert_eq!(
            metrics["containers"],
            json!([
                {"name": "main", "usage": {"cpu": "1000n", "memory": "2Ki"}},
                {"name": "side", "usage": {"cpu": "0", "memory": "100"}},
            ])
        );
        // Another pod of the same name (recreated) or another name has no metrics.
        assert!(pod_metrics(&pod("u2", "web"), &stats, "now").is_none());
        assert!(pod_metrics(&pod("u1", "db"), &stats, "now").is_none());
        // A node without a sample yet is left out.
        let empty = NodeStats {
            node: "n1".into(),
            ..NodeStats::default()
        };
        assert!(node_metrics(&node, &empty, "now").is_none());
    }
}
