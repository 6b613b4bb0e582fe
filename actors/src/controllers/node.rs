//! The node controller: node health from Leases, NoExecute taints and evictions, pod CIDRs.
//!
//! Level-triggered per node: the newest heartbeat (the Lease's renewTime or the Ready
//! condition's lastHeartbeatTime) older than the grace period turns the node `Ready=Unknown`;
//! the taints follow the Ready condition (`unreachable` for Unknown, `not-ready` for False,
//! none for True, so the kubelet's Ready=True removes them); pods on a node with a NoExecute
//! taint they do not tolerate are deleted once the taint is older than the eviction timeout
//! (or their toleration's `tolerationSeconds`). Each node gets a pod CIDR from the cluster
//! range, never one another node holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use keelson_api::object;
use keelson_api::resources::{self, Resource};
use keelson_api::status::StatusError;
use serde_json::{json, Value};

use crate::client::DeleteOptions;
use crate::control_plane::ControllerContext;
use crate::controllers::cidr::CidrAllocator;
use crate::events::{EventRecorder, EventType};
use crate::informer::{Change, Informer};
use crate::supervisor::StopSignal;
use crate::workqueue::WorkQueue;

/// The taint of a node whose heartbeats stopped.
pub(crate) const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node that reports Ready=False.
pub(crate) const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The namespace of node Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Nodes queued at most (distinct keys).
const QUEUE_KEYS_MAX: usize = 100_000;
/// Slack added to a requeue so the heartbeat has surely aged past the deadline.
const REQUEUE_SLACK: Duration = Duration::from_millis(200);
/// Pods evicted per node per reconcile (the rest on the next pass).
const EVICTIONS_PER_PASS_MAX: usize = 256;
/// The conditions the controller turns Unknown (as Kubernetes' node lifecycle controller).
const KUBELET_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

fn parse_time(value: Option<&Value>) -> Option<Timestamp> {
    value?.as_str()?.parse().ok()
}

fn condition<'a>(node: &'a Value, kind: &str) -> Option<&'a Value> {
    node.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"].as_str() == Some(kind))
}

/// What the controller writes for one node.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct NodePlan {
    /// The node's new `status.conditions`, when they change.
    pub(crate) conditions: Option<Vec<Value>>,
    /// The node's new `spec.taints`, when they change.
    pub(crate) taints: Option<Vec<Value>>,
    /// (type, reason, message) of Events to record about the node.
    pub(crate) events: Vec<(EventType, &'static str, String)>,
    /// When to look again to notice a missed heartbeat.
    pub(crate) requeue_after: Option<Duration>,
}

/// The newest heartbeat of a node: its Lease's renewTime or its Ready condition's
/// lastHeartbeatTime, falling back to its creation time.
pub(crate) fn last_heartbeat(node: &Value, lease_renew: Option<Timestamp>) -> Option<Timestamp> {
    let ready = parse_time(condition(node, "Ready").and_then(|c| c.get("lastHeartbeatTime")));
    match (lease_renew, ready) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a
            .or(b)
            .or_else(|| parse_time(node.pointer("/metadata/creationTimestamp"))),
    }
}

/// The health decision of one node (pure).
pub(crate) fn plan_node(
    node: &Value,
    lease_renew: Option<Timestamp>,
    now: Timestamp,
    grace: Duration,
) -> NodePlan {
    let name = object::name(node).unwrap_or_default();
    let mut plan = NodePlan::default();
    let ready = condition(node, "Ready").and_then(|c| c["status"].as_str());
    let heartbeat = last_heartbeat(node, lease_renew);
    let age = heartbeat.map(|t| now.duration_since(t).unsigned_abs());
    let stale = age.is_some_and(|age| age > grace);
    let now_text = object::format_time(now);
    if stale && ready != Some("Unknown") {
        plan.conditions = Some(unknown_conditions(node, &now_text));
        plan.events.push((
            EventType::Normal,
            "NodeNotReady",
            format!("Node {name} status is now: NodeNotReady"),
        ));
    }
    if let Some(age) = age.filter(|_| !stale) {
        plan.requeue_after = Some(grace.saturating_sub(age) + REQUEUE_SLACK);
    }
    let effective = if stale { Some("Unknown") } else { ready };
    let wanted_key = match effective {
        Some("Unknown") => Some(TAINT_UNREACHABLE),
        Some("False") => Some(TAINT_NOT_READY),
        _ => None,
    };
    plan.taints = retaint(node, wanted_key, &now_text);
    plan
}

/// The kubelet's conditions turned Unknown (those already Unknown unchanged); a node that
/// never posted Ready gets one.
fn unknown_conditions(node: &Value, now: &str) -> Vec<Value> {
    let mut conditions: Vec<Value> = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for c in conditions.iter_mut() {
        let kind = c["type"].as_str().unwrap_or_default();
        if !KUBELET_CONDITIONS.contains(&kind) || c["status"] == "Unknown" {
            continue;
        }
        c["status"] = json!("Unknown");
        c["reason"] = json!("NodeStatusUnknown");
        c["message"] = json!("Kubelet stopped posting node status.");
        c["lastTransitionTime"] = json!(now);
    }
    if !conditions.iter().any(|c| c["type"] == "Ready") {
        conditions.push(json!({
            "type": "Ready",
            "status": "Unknown",
            "reason": "NodeStatusNeverUpdated",
            "message": "Kubelet never posted node status.",
            "lastHeartbeatTime": null,
            "lastTransitionTime": now,
        }));
    }
    conditions
}

/// The node's taints with the health taints of `wanted` (NoSchedule and NoExecute) and no
/// other health taint; `None` if that is what it has.
fn retaint(node: &Value, wanted: Option<&str>, now: &str) -> Option<Vec<Value>> {
    let current: Vec<Value> = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_health = |t: &Value| {
        matches!(t["key"].as_str(), Some(TAINT_UNREACHABLE | TAINT_NOT_READY))
            && matches!(t["effect"].as_str(), Some("NoSchedule" | "NoExecute"))
    };
    let mut next: Vec<Value> = current
        .iter()
        .filter(|t| !is_health(t) || t["key"].as_str() == wanted)
        .cloned()
        .collect();
    if let Some(key) = wanted {
        for effect in ["NoSchedule", "NoExecute"] {
            let present = next
                .iter()
                .any(|t| t["key"].as_str() == Some(key) && t["effect"].as_str() == Some(effect));
            if !present {
                next.push(json!({"key": key, "effect": effect, "timeAdded": now}));
            }
        }
    }
    (next != current).then_some(next)
}

/// Whether `toleration` tolerates `taint`.
fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let effect = toleration["effect"].as_str().unwrap_or_default();
    if !effect.is_empty() && Some(effect) != taint["effect"].as_str() {
        return false;
    }
    let key = toleration["key"].as_str().unwrap_or_default();
    let taint_key = taint["key"].as_str().unwrap_or_default();
    match toleration["operator"].as_str().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint_key,
        "Equal" => {
            key == taint_key
                && toleration["value"].as_str().unwrap_or_default()
                    == taint["value"].as_str().unwrap_or_default()
        }
        _ => false,
    }
}

/// When a pod on a node with `taints` is to be evicted: the earliest over the NoExecute
/// taints of (timeAdded + the smallest matching tolerationSeconds, or + `timeout` if no
/// toleration matches); `None` if it tolerates them all for ever or is already terminating.
pub(crate) fn eviction_deadline(
    pod: &Value,
    taints: &[Value],
    timeout: Duration,
) -> Option<Timestamp> {
    if object::deletion_timestamp(pod).is_some() {
        return None;
    }
    let tolerations: Vec<Value> = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut deadline: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t["effect"] == "NoExecute") {
        // A taint without timeAdded counts from the epoch: it is evicted at once.
        let added = parse_time(taint.get("timeAdded")).unwrap_or(Timestamp::UNIX_EPOCH);
        let matching: Vec<&Value> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        let wait = if matching.is_empty() {
            timeout
        } else if matching
            .iter()
            .any(|t| t["tolerationSeconds"].as_i64().is_none())
        {
            continue;
        } else {
            let secs = matching
                .iter()
                .filter_map(|t| t["tolerationSeconds"].as_i64())
                .min()
                .unwrap_or(0)
                .max(0);
            Duration::from_secs(secs.unsigned_abs())
        };
        let at = added
            .checked_add(jiff::SignedDuration::try_from(wait).unwrap_or(jiff::SignedDuration::MAX))
            .unwrap_or(Timestamp::MAX);
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    }
    deadline
}

/// The controller's memory: which node holds which pod CIDR.
struct CidrState {
    allocator: CidrAllocator,
    by_node: HashMap<String, String>,
}

impl CidrState {
    /// Rebuilds the allocation from the nodes' `spec.podCIDR`.
    fn rebuild(mut allocator: CidrAllocator, nodes: &[Arc<Value>]) -> CidrState {
        let mut by_node = HashMap::new();
        for node in nodes {
            let (Some(name), Some(cidr)) = (
                object::name(node),
                node.pointer("/spec/podCIDR").and_then(Value::as_str),
            ) else {
                continue;
            };
            match allocator.occupy(cidr) {
                Ok(true) => {
                    by_node.insert(name.to_string(), cidr.to_string());
                }
                Ok(false) => tracing::warn!(node = name, cidr, "pod CIDR held by two nodes"),
                Err(e) => {
                    tracing::warn!(node = name, error = %e, "node pod CIDR outside the cluster range")
                }
            }
        }
        CidrState { allocator, by_node }
    }
}

struct Controller {
    ctx: ControllerContext,
    events: EventRecorder,
    nodes_resource: &'static Resource,
    nodes: Informer,
    leases: Informer,
    pods: Informer,
    cidrs: Option<CidrState>,
}

fn has_no_execute(node: &Value) -> bool {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .is_some_and(|ts| ts.iter().any(|t| t["effect"] == "NoExecute"))
}

impl Controller {
    /// Reconciles one node; returns when to look again.
    async fn reconcile(&mut self, name: &str) -> Result<Option<Duration>, StatusError> {
        let Some(node) = self.nodes.get(name) else {
            if let Some(state) = &mut self.cidrs {
                if let Some(cidr) = state.by_node.remove(name) {
                    state.allocator.release(&cidr);
                }
            }
            return Ok(None);
        };
        let lease_renew = self
            .leases
            .get(&format!("{LEASE_NAMESPACE}/{name}"))
            .and_then(|l| parse_time(l.pointer("/spec/renewTime")));
        let now = Timestamp::now();
        let plan = plan_node(&node, lease_renew, now, self.ctx.config.node_monitor_grace);
        let mut updated: Value = (*node).clone();
        let mut spec_changed = false;
        let mut new_cidr: Option<String> = None;
        if let Some(state) = &mut self.cidrs {
            match node.pointer("/spec/podCIDR").and_then(Value::as_str) {
                Some(cidr) => {
                    if state.by_node.get(name).map(String::as_str) != Some(cidr)
                        && state.allocator.occupy(cidr).unwrap_or(false)
                    {
                        state.by_node.insert(name.to_string(), cidr.to_string());
                    }
                }
                None => match state.allocator.allocate() {
                    Some(cidr) => {
                        updated["spec"]["podCIDR"] = json!(cidr);
                        updated["spec"]["podCIDRs"] = json!([cidr]);
                        spec_changed = true;
                        new_cidr = Some(cidr);
                    }
                    None => self.events.record(
                        &node,
                        EventType::Warning,
                        "CIDRNotAvailable",
                        &format!("Node {name} status is now: CIDRNotAvailable"),
                    ),
                },
            }
        }
        if let Some(taints) = &plan.taints {
            updated["spec"]["taints"] = json!(taints);
            spec_changed = true;
        }
        if spec_changed {
            match self
                .ctx
                .client
                .update(self.nodes_resource, None, name, &updated)
                .await
            {
                Ok(written) => updated = written,
                Err(e) => {
                    if let (Some(state), Some(cidr)) = (&mut self.cidrs, &new_cidr) {
                        state.allocator.release(cidr);
                    }
                    return Err(e);
                }
            }
            if let (Some(state), Some(cidr)) = (&mut self.cidrs, new_cidr) {
                tracing::info!(node = name, cidr = %cidr, "pod CIDR assigned");
                self.events.record(
                    &updated,
                    EventType::Normal,
                    "RegisteredNode",
                    &format!("Node {name} event: Registered Node {name} in Controller"),
                );
                state.by_node.insert(name.to_string(), cidr);
            }
        }
        if let Some(conditions) = plan.conditions {
            updated["status"]["conditions"] = json!(conditions);
            updated = self
                .ctx
                .client
                .update_status(self.nodes_resource, None, name, &updated)
                .await?;
            tracing::info!(node = name, "node stopped posting status: Ready=Unknown");
        }
        for (kind, reason, message) in &plan.events {
            self.events.record(&updated, *kind, reason, message);
        }
        let evict_again = self.evict(name, &updated, now).await?;
        Ok(match (plan.requeue_after, evict_again) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Deletes the pods on the node whose eviction time has come; returns when the next one's
    /// comes.
    async fn evict(
        &self,
        name: &str,
        node: &Value,
        now: Timestamp,
    ) -> Result<Option<Duration>, StatusError> {
        let taints: Vec<Value> = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !taints.iter().any(|t| t["effect"] == "NoExecute") {
            return Ok(None);
        }
        let Some(pods_resource) = resources::find("", "v1", "pods") else {
            return Ok(None);
        };
        let mut next: Option<Duration> = None;
        let mut evicted = 0;
        for pod in self.pods.on_node(name) {
            let Some(deadline) =
                eviction_deadline(&pod, &taints, self.ctx.config.pod_eviction_timeout)
            else {
                continue;
            };
            if deadline > now || evicted >= EVICTIONS_PER_PASS_MAX {
                let wait = now.duration_until(deadline).unsigned_abs() + REQUEUE_SLACK;
                next = Some(next.map_or(wait, |n| n.min(wait)));
                continue;
            }
            let (Some(namespace), Some(pod_name)) = (object::namespace(&pod), object::name(&pod))
            else {
                continue;
            };
            let options = DeleteOptions {
                precondition_uid: object::uid(&pod).map(str::to_string),
                ..DeleteOptions::default()
            };
            match self
                .ctx
                .client
                .delete(pods_resource, Some(namespace), pod_name, &options)
                .await
            {
                Ok(_) => {
                    evicted += 1;
                    tracing::info!(node = name, pod = %format!("{namespace}/{pod_name}"), "evicting pod from a tainted node");
                    self.events.record(
                        &pod,
                        EventType::Normal,
                        "TaintManagerEviction",
                        &format!("Marking for deletion Pod {namespace}/{pod_name}"),
                    );
                }
                Err(e) if e.code() == 404 || e.code() == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(next)
    }
}

/// Feeds the queue with the nodes whose node, Lease or pods changed.
async fn watch_changes(
    queue: WorkQueue<String>,
    nodes: Informer,
    leases: Informer,
    pods: Informer,
    mut stop: StopSignal,
) {
    let mut node_changes = nodes.subscribe();
    let mut lease_changes = leases.subscribe();
    let mut pod_changes = pods.subscribe();
    let add_all = |queue: &WorkQueue<String>| {
        for key in nodes.keys() {
            queue.add(key);
        }
    };
    loop {
        tokio::select! {
            _ = stop.stopped() => return,
            change = node_changes.recv() => match change {
                None => return,
                Some(Change::Applied { new, .. }) => {
                    if let Some(name) = object::name(&new) {
                        queue.add(name.to_string());
                    }
                }
                Some(Change::Deleted(old)) => {
                    if let Some(name) = object::name(&old) {
                        queue.add(name.to_string());
                    }
                }
                Some(Change::Resynced) => add_all(&queue),
            },
            change = lease_changes.recv() => match change {
                None => return,
                Some(Change::Applied { new: lease, .. }) | Some(Change::Deleted(lease)) => {
                    if object::namespace(&lease) == Some(LEASE_NAMESPACE) {
                        if let Some(name) = object::name(&lease) {
                            queue.add(name.to_string());
                        }
                    }
                }
                Some(Change::Resynced) => add_all(&queue),
            },
            change = pod_changes.recv() => match change {
                None => return,
                Some(Change::Applied { new: pod, .. }) => {
                    // Only a tainted node has anything to do with its pods.
                    if let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str) {
                        if nodes.get(node).is_some_and(|n| has_no_execute(&n)) {
                            queue.add(node.to_string());
                        }
                    }
                }
                Some(Change::Deleted(_)) => {}
                Some(Change::Resynced) => {
                    for node in nodes.list() {
                        if has_no_execute(&node) {
                            if let Some(name) = object::name(&node) {
                                queue.add(name.to_string());
                            }
                        }
                    }
                }
            },
        }
    }
}

pub(crate) async fn run(ctx: ControllerContext, mut stop: StopSignal) -> anyhow::Result<()> {
    let nodes_resource = resources::find("", "v1", "nodes").context("nodes are not served")?;
    let leases_resource =
        resources::find("coordination.k8s.io", "v1", "leases").context("leases are not served")?;
    let pods_resource = resources::find("", "v1", "pods").context("pods are not served")?;
    let nodes = ctx.informers.of(nodes_resource);
    let leases = ctx.informers.of(leases_resource);
    let pods = ctx.informers.of(pods_resource);
    let queue: WorkQueue<String> = WorkQueue::new("node-controller", QUEUE_KEYS_MAX);
    // Subscribe before the caches fill so no change is missed.
    let watcher = tokio::spawn(watch_changes(
        queue.clone(),
        nodes.clone(),
        leases.clone(),
        pods.clone(),
        stop.clone(),
    ));
    tokio::select! {
        _ = stop.stopped() => {
            watcher.abort();
            return Ok(());
        }
        _ = async { nodes.wait_synced().await; leases.wait_synced().await; pods.wait_synced().await } => {}
    }
    let cidrs = match CidrAllocator::new(&ctx.config.cluster_cidr, ctx.config.node_cidr_mask) {
        Ok(allocator) => Some(CidrState::rebuild(allocator, &nodes.list())),
        Err(e) => {
            tracing::error!(error = %e, "pod CIDRs are not allocated");
            None
        }
    };
    let mut controller = Controller {
        events: ctx.events.for_component("node-controller"),
        ctx,
        nodes_resource,
        nodes: nodes.clone(),
        leases,
        pods,
        cidrs,
    };
    for key in nodes.keys() {
        queue.add(key);
    }
    loop {
        let key = tokio::select! {
            _ = stop.stopped() => break,
            key = queue.next() => match key {
                Some(key) => key,
                None => break,
            },
        };
        match controller.reconcile(&key).await {
            Ok(requeue) => {
                queue.forget(&key);
                if let Some(after) = requeue {
                    queue.add_after(key.clone(), after);
                }
            }
            Err(e) => {
                let failures = queue.retry(key.clone());
                tracing::debug!(node = %key, failures, error = %e, "node reconcile failed; retrying");
            }
        }
        queue.done(&key);
    }
    queue.shut_down();
    watcher.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(40);

    fn t(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn node(ready: Option<(&str, &str)>, taints: Value) -> Value {
        let mut node = json!({
            "metadata": {"name": "n1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"taints": taints},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": "2026-01-01T00:00:00Z"},
            ]},
        });
        if let Some((status, heartbeat)) = ready {
            node["status"]["conditions"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "Ready", "status": status, "lastHeartbeatTime": heartbeat, "lastTransitionTime": "2026-01-01T00:00:00Z"}));
        }
        node
    }

    fn taint(key: &str, effect: &str, added: &str) -> Value {
        json!({"key": key, "effect": effect, "timeAdded": added})
    }

    /// (ready condition, lease renew, now) → (marks Unknown, taint key wanted or "" for none,
    /// taints change, requeue).
    #[test]
    fn plans_health_per_heartbeat() {
        let unreachable = json!([
            taint(TAINT_UNREACHABLE, "NoSchedule", "2026-01-01T00:01:00Z"),
            taint(TAINT_UNREACHABLE, "NoExecute", "2026-01-01T00:01:00Z"),
        ]);
        type Case<'a> = (
            &'a str,
            Value,
            Option<&'a str>,
            &'a str,
            bool,
            Option<&'a str>,
            Option<u64>,
        );
        let cases: Vec<Case> = vec![
            // Fresh Ready heartbeat: nothing to do, look again when it would go stale.
            (
                "fresh",
                node(Some(("True", "2026-01-01T00:00:30Z")), json!([])),
                None,
                "2026-01-01T00:00:40Z",
                false,
                None,
                Some(30_200),
            ),
            // The Lease is newer than the Ready heartbeat: it counts.
            (
                "lease",
                node(Some(("True", "2026-01-01T00:00:00Z")), json!([])),
                Some("2026-01-01T00:01:00Z"),
                "2026-01-01T00:01:10Z",
                false,
                None,
                Some(30_200),
            ),
            // Both older than the grace period: Unknown and unreachable taints.
            (
                "stale",
                node(Some(("True", "2026-01-01T00:00:00Z")), json!([])),
                Some("2026-01-01T00:00:10Z"),
                "2026-01-01T00:01:00Z",
                true,
                Some(TAINT_UNREACHABLE),
                None,
            ),
            // Already Unknown and tainted: nothing to write.
            (
                "still stale",
                node(
                    Some(("Unknown", "2026-01-01T00:00:00Z")),
                    unreachable.clone(),
                ),
                None,
                "2026-01-01T00:05:00Z",
                false,
                None,
                None,
            ),
            // Heartbeats resumed but the kubelet has not said Ready=True: taints stay.
            (
                "lease back",
                node(
                    Some(("Unknown", "2026-01-01T00:00:00Z")),
                    unreachable.clone(),
                ),
                Some("2026-01-01T00:04:59Z"),
                "2026-01-01T00:05:00Z",
                false,
                None,
                Some(39_200),
            ),
            // Ready=True again: the taints go.
            (
                "ready again",
                node(Some(("True", "2026-01-01T00:04:59Z")), unreachable),
                None,
                "2026-01-01T00:05:00Z",
                false,
                Some(""),
                Some(39_200),
            ),
            // The kubelet says Ready=False: not-ready taints.
            (
                "not ready",
                node(Some(("False", "2026-01-01T00:00:30Z")), json!([])),
                None,
                "2026-01-01T00:00:40Z",
                false,
                Some(TAINT_NOT_READY),
                Some(30_200),
            ),
            // Never posted status: judged from creation.
            (
                "never posted",
                node(None, json!([])),
                None,
                "2026-01-01T00:01:00Z",
                true,
                Some(TAINT_UNREACHABLE),
                None,
            ),
        ];
        for (label, node, lease, now, unknown, taint_key, requeue_ms) in cases {
            let plan = plan_node(&node, lease.map(t), t(now), GRACE);
            assert_eq!(plan.conditions.is_some(), unknown, "{label}: conditions");
            if unknown {
                let conditions = plan.conditions.as_ref().unwrap();
                let ready = conditions.iter().find(|c| c["type"] == "Ready").unwrap();
                assert_eq!(ready["status"], "Unknown", "{label}");
                for c in conditions {
                    assert_eq!(c["status"], "Unknown", "{label}: {c}");
                }
                assert_eq!(plan.events[0].1, "NodeNotReady", "{label}");
            }
            match (taint_key, &plan.taints) {
                (None, None) => {}
                (Some(""), Some(taints)) => assert!(taints.is_empty(), "{label}: {taints:?}"),
                (Some(key), Some(taints)) => {
                    let effects: Vec<&str> = taints
                        .iter()
                        .filter(|t| t["key"] == key)
                        .map(|t| t["effect"].as_str().unwrap())
                        .collect();
                    assert_eq!(effects, ["NoSchedule", "NoExecute"], "{label}");
                    assert!(taints.iter().all(|t| t["timeAdded"] == now), "{label}");
                }
                (want, got) => panic!("{label}: wanted taint {want:?}, got {got:?}"),
            }
            assert_eq!(
                plan.requeue_after.map(|d| d.as_millis() as u64),
                requeue_ms,
                "{label}: requeue"
            );
        }
    }

    #[test]
    fn retaint_keeps_other_taints_and_times() {
        let node = node(
            Some(("False", "2026-01-01T00:00:00Z")),
            json!([
                {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                taint(TAINT_UNREACHABLE, "NoExecute", "2026-01-01T00:00:00Z"),
                taint(TAINT_NOT_READY, "NoSchedule", "2026-01-01T00:00:05Z"),
            ]),
        );
        let next = retaint(&node, Some(TAINT_NOT_READY), "2026-01-01T00:00:10Z").unwrap();
        assert_eq!(
            next,
            vec![
                json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}),
                taint(TAINT_NOT_READY, "NoSchedule", "2026-01-01T00:00:05Z"),
                taint(TAINT_NOT_READY, "NoExecute", "2026-01-01T00:00:10Z"),
            ]
        );
        let node = json!({"spec": {"taints": next}});
        assert_eq!(
            retaint(&node, Some(TAINT_NOT_READY), "2026-01-01T00:09:00Z"),
            None
        );
    }

    #[test]
    fn eviction_deadlines_follow_tolerations() {
        let taints = vec![
            taint(TAINT_UNREACHABLE, "NoSchedule", "2026-01-01T00:00:00Z"),
            taint(TAINT_UNREACHABLE, "NoExecute", "2026-01-01T00:00:00Z"),
        ];
        let pod = |tolerations: Value, deleting: bool| {
            let mut pod = json!({"metadata": {"name": "p"}, "spec": {"tolerations": tolerations}});
            if deleting {
                pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:01Z");
            }
            pod
        };
        let timeout = Duration::from_secs(300);
        let cases = [
            (
                "no toleration",
                pod(json!([]), false),
                Some("2026-01-01T00:05:00Z"),
            ),
            ("terminating", pod(json!([]), true), None),
            (
                "tolerates for 30 s",
                pod(
                    json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]),
                    false,
                ),
                Some("2026-01-01T00:00:30Z"),
            ),
            (
                "smallest seconds wins",
                pod(
                    json!([
                        {"key": TAINT_UNREACHABLE, "operator": "Exists", "tolerationSeconds": 60},
                        {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10},
                    ]),
                    false,
                ),
                Some("2026-01-01T00:00:10Z"),
            ),
            (
                "tolerates for ever",
                pod(json!([{"operator": "Exists"}]), false),
                None,
            ),
            (
                "other key does not match",
                pod(
                    json!([{"key": "other", "operator": "Exists", "tolerationSeconds": 1}]),
                    false,
                ),
                Some("2026-01-01T00:05:00Z"),
            ),
            (
                "NoSchedule toleration does not match",
                pod(
                    json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}]),
                    false,
                ),
                Some("2026-01-01T00:05:00Z"),
            ),
            (
                "Equal with the empty value",
                pod(
                    json!([{"key": TAINT_UNREACHABLE, "operator": "Equal", "effect": "NoExecute"}]),
                    false,
                ),
                None,
            ),
        ];
        for (label, pod, want) in cases {
            assert_eq!(
                eviction_deadline(&pod, &taints, timeout),
                want.map(t),
                "{label}"
            );
        }
        assert_eq!(
            eviction_deadline(&pod(json!([]), false), &taints[..1], timeout),
            None
        );
    }

    #[test]
    fn cidr_state_rebuilds_and_skips_duplicates() {
        let nodes: Vec<Arc<Value>> = [
            ("a", Some("10.244.0.0/24")),
            ("b", Some("10.244.0.0/24")),
            ("c", Some("10.9.0.0/24")),
            ("d", None),
        ]
        .iter()
        .map(|(name, cidr)| {
            let mut node = json!({"metadata": {"name": name}, "spec": {}});
            if let Some(cidr) = cidr {
                node["spec"]["podCIDR"] = json!(cidr);
            }
            Arc::new(node)
        })
        .collect();
        let mut state =
            CidrState::rebuild(CidrAllocator::new("10.244.0.0/16", 24).unwrap(), &nodes);
        assert_eq!(state.by_node.len(), 1);
        assert_eq!(state.by_node["a"], "10.244.0.0/24");
        assert_eq!(state.allocator.allocate().as_deref(), Some("10.244.1.0/24"));
    }
}
