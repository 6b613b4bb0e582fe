//! The scheduler: binds unscheduled pods to nodes (filters, then scores).
//!
//! One loop owns the [`cache::Cache`] and takes pod keys from a work queue; the decision for a
//! pod is pure ([`cache::Cache::find_node`]); binds run concurrently (at most
//! [`BINDS_IN_FLIGHT_MAX`]) while the pod is counted on its node as "assumed", so the next
//! decisions already see it. A pod no node fits gets `PodScheduled=False` and a
//! `FailedScheduling` Event, and is tried again when nodes change, pods go, and every
//! [`RETRY_INTERVAL`].

mod cache;
mod filter;
mod pod;
mod score;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use keelson_api::object;
use keelson_api::resources;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::control_plane::ControllerContext;
use crate::events::{EventRecorder, EventType};
use crate::informer::{key_of, split_key, Change, Informer};
use crate::supervisor::StopSignal;
use crate::workqueue::WorkQueue;

use cache::Cache;
use pod::{NodeView, PodView};

/// The scheduler's name, as pods ask for it in `spec.schedulerName`.
const SCHEDULER_NAME: &str = "default-scheduler";
/// Binds and status writes running at once.
const BINDS_IN_FLIGHT_MAX: usize = 64;
/// How often pods still unscheduled are tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// Distinct pod keys the queue holds (more wait for the next retry round).
const QUEUE_KEYS_MAX: usize = 1 << 20;
/// Failed binds of one pod retried with back-off before waiting for the next round.
const BIND_RETRIES_MAX: u32 = 8;
/// The shortest pause between two FailedScheduling Events with the same message for a pod.
const EVENT_REPEAT_INTERVAL: Duration = Duration::from_secs(60);

/// What a bind or status write reports back to the loop.
enum Outcome {
    Bound {
        key: String,
        pod: Arc<Value>,
        node: String,
        result: Result<(), keelson_api::status::StatusError>,
    },
    StatusWritten {
        key: String,
        result: Result<(), keelson_api::status::StatusError>,
    },
}

/// The last FailedScheduling of a pod.
struct Unschedulable {
    message: String,
    recorded: Instant,
}

struct Scheduler {
    ctx: ControllerContext,
    events: EventRecorder,
    pods: Informer,
    queue: WorkQueue<String>,
    cache: Cache,
    /// Unbound pods this scheduler is responsible for.
    pending: HashSet<String>,
    unschedulable: HashMap<String, Unschedulable>,
    in_flight: usize,
    outcomes: mpsc::Sender<Outcome>,
}

fn node_name(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

/// Whether this scheduler places `pod` (`spec.schedulerName` empty or ours).
fn is_ours(pod: &Value) -> bool {
    pod.pointer("/spec/schedulerName")
        .and_then(Value::as_str)
        .is_none_or(|n| n.is_empty() || n == SCHEDULER_NAME)
}

fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// A pod's view for accounting: a pod that cannot be read counts with what could be.
fn view_of_bound(pod: &Value) -> PodView {
    PodView::parse(pod).unwrap_or_else(|e| {
        tracing::debug!(pod = %key_of(pod), error = %e, "counting a bound pod without requests");
        PodView {
            namespace: object::namespace(pod).unwrap_or_default().to_string(),
            labels: object::labels(pod),
            owner_uid: object::controller_of(pod).map(|o| o.uid),
            ..PodView::default()
        }
    })
}

/// The pod's `status.conditions` with `PodScheduled=False` for `message`; `None` when it
/// already says so.
fn unschedulable_conditions(pod: &Value, message: &str) -> Option<Vec<Value>> {
    let conditions = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let current = conditions
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled"));
    let field = |c: &Value, k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
    if let Some(c) = current {
        if field(c, "status").as_deref() == Some("False")
            && field(c, "reason").as_deref() == Some("Unschedulable")
            && field(c, "message").as_deref() == Some(message)
        {
            return None;
        }
    }
    let transition = current
        .filter(|c| field(c, "status").as_deref() == Some("False"))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(object::format_time(jiff::Timestamp::now())));
    let mut out: Vec<Value> = conditions
        .into_iter()
        .filter(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"))
        .collect();
    out.push(json!({
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": transition,
    }));
    Some(out)
}

/// The pod as an Event's subject (kind and apiVersion set).
fn event_subject(pod: &Arc<Value>) -> Arc<Value> {
    if object::kind(pod).is_some() {
        return pod.clone();
    }
    let mut pod = (**pod).clone();
    pod["kind"] = json!("Pod");
    pod["apiVersion"] = json!("v1");
    Arc::new(pod)
}

impl Scheduler {
    /// Follows one pod change.
    fn on_pod(&mut self, old: Option<&Value>, pod: &Arc<Value>) {
        let key = key_of(pod);
        if let Some(node) = node_name(pod) {
            self.pending.remove(&key);
            self.unschedulable.remove(&key);
            if is_terminal(pod) {
                if self.cache.unplace(&key).is_some() {
                    self.retry_unschedulable();
                }
                return;
            }
            let unchanged = old.is_some_and(|old| {
                old.get("spec") == pod.get("spec")
                    && object::labels(old) == object::labels(pod)
                    && object::controller_of(old).map(|o| o.uid)
                        == object::controller_of(pod).map(|o| o.uid)
            });
            let confirmed = self
                .cache
                .placed(&key)
                .is_some_and(|p| !p.assumed && p.node == node);
            if !(unchanged && confirmed) {
                self.cache
                    .place(&key, node, Arc::new(view_of_bound(pod)), false);
            }
            return;
        }
        if object::deletion_timestamp(pod).is_some() || !is_ours(pod) {
            self.pending.remove(&key);
            self.unschedulable.remove(&key);
            return;
        }
        if let Some(placed) = self.cache.placed(&key) {
            if placed.assumed {
                // Being bound: the informer shows the bind later.
                return;
            }
            self.cache.unplace(&key);
        }
        self.pending.insert(key.clone());
        self.queue.add(key);
    }

    fn on_pod_deleted(&mut self, pod: &Value) {
        let key = key_of(pod);
        self.pending.remove(&key);
        self.unschedulable.remove(&key);
        if self.cache.unplace(&key).is_some() {
            self.retry_unschedulable();
        }
    }

    /// Rebuilds the pods from the informer (assumed pods still unbound there stay).
    fn resync_pods(&mut self) {
        let mut seen = HashSet::new();
        for pod in self.pods.list() {
            seen.insert(key_of(&pod));
            self.on_pod(None, &pod);
        }
        for key in self.cache.placed_keys() {
            if !seen.contains(&key) {
                self.cache.unplace(&key);
            }
        }
        self.pending.retain(|k| seen.contains(k));
        self.unschedulable.retain(|k, _| seen.contains(k));
        self.retry_unschedulable();
    }

    fn on_node(&mut self, node: &Value) {
        let view = NodeView::parse(node);
        if self.cache.node(&view.name) == Some(&view) {
            return;
        }
        self.cache.set_node(view);
        self.retry_unschedulable();
    }

    fn resync_nodes(&mut self, nodes: &Informer) {
        let views = nodes.list().iter().map(|n| NodeView::parse(n)).collect();
        self.cache.replace_nodes(views);
        self.retry_unschedulable();
    }

    /// Queues every pod that did not fit anywhere.
    fn retry_unschedulable(&self) {
        for key in self.unschedulable.keys() {
            self.queue.add(key.clone());
        }
    }

    /// Queues every unbound pod (the periodic fallback).
    fn retry_pending(&self) {
        for key in &self.pending {
            self.queue.add(key.clone());
        }
    }

    /// Decides for one pod and starts its bind, or reports why it fits nowhere.
    fn schedule(&mut self, key: &str) {
        let Some(pod) = self.pods.get(key) else {
            return;
        };
        if node_name(&pod).is_some()
            || object::deletion_timestamp(&pod).is_some()
            || !is_ours(&pod)
            || self.cache.placed(key).is_some()
        {
            return;
        }
        let view = match PodView::parse(&pod) {
            Ok(view) => view,
            Err(e) => {
                tracing::warn!(pod = %key, error = %e, "cannot schedule a malformed pod");
                metrics::counter!("keelson_scheduler_schedule_attempts_total", "result" => "error")
                    .increment(1);
                self.pending.remove(key);
                return;
            }
        };
        match self.cache.find_node(&view) {
            Ok(node) => {
                let uid = view.uid.clone();
                self.cache.place(key, &node, Arc::new(view), true);
                self.start_bind(key.to_string(), pod, uid, node);
            }
            Err(fit) => self.fits_nowhere(key, pod, fit.message),
        }
    }

    fn start_bind(&mut self, key: String, pod: Arc<Value>, uid: String, node: String) {
        self.in_flight += 1;
        let client = self.ctx.client.clone();
        let outcomes = self.outcomes.clone();
        tokio::spawn(async move {
            let (namespace, name) = split_key(&key);
            let started = Instant::now();
            let result = client
                .bind(namespace.unwrap_or("default"), name, Some(&uid), &node)
                .await;
            metrics::histogram!("keelson_scheduler_binding_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            let _ = outcomes
                .send(Outcome::Bound {
                    key,
                    pod,
                    node,
                    result,
                })
                .await;
        });
    }

    fn fits_nowhere(&mut self, key: &str, pod: Arc<Value>, message: String) {
        metrics::counter!("keelson_scheduler_schedule_attempts_total", "result" => "unschedulable")
            .increment(1);
        tracing::debug!(pod = %key, %message, "unschedulable");
        let now = Instant::now();
        let record = match self.unschedulable.get(key) {
            Some(last) => {
                last.message != message
                    || now.duration_since(last.recorded) >= EVENT_REPEAT_INTERVAL
            }
            None => true,
        };
        if record {
            self.events.record(
                &event_subject(&pod),
                EventType::Warning,
                "FailedScheduling",
                &message,
            );
            self.unschedulable.insert(
                key.to_string(),
                Unschedulable {
                    message: message.clone(),
                    recorded: now,
                },
            );
        }
        let Some(conditions) = unschedulable_conditions(&pod, &message) else {
            return;
        };
        let Some(pods) = resources::find("", "v1", "pods") else {
            return;
        };
        self.in_flight += 1;
        let client = self.ctx.client.clone();
        let outcomes = self.outcomes.clone();
        let key = key.to_string();
        tokio::spawn(async move {
            let (namespace, name) = split_key(&key);
            let patch = json!({"status": {"conditions": conditions}});
            let result = client
                .merge_patch(pods, namespace, name, Some("status"), &patch)
                .await
                .map(|_| ());
            let _ = outcomes.send(Outcome::StatusWritten { key, result }).await;
        });
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Bound {
                key,
                pod,
                node,
                result: Ok(()),
            } => {
                metrics::counter!("keelson_scheduler_schedule_attempts_total", "result" => "scheduled")
                    .increment(1);
                self.queue.forget(&key);
                self.unschedulable.remove(&key);
                let (namespace, name) = split_key(&key);
                let message = format!(
                    "Successfully assigned {}/{name} to {node}",
                    namespace.unwrap_or("default")
                );
                self.events.record(
                    &event_subject(&pod),
                    EventType::Normal,
                    "Scheduled",
                    &message,
                );
            }
            Outcome::Bound {
                key,
                result: Err(e),
                ..
            } => {
                if self.cache.placed(&key).is_some_and(|p| p.assumed) {
                    self.cache.unplace(&key);
                }
                metrics::counter!("keelson_scheduler_schedule_attempts_total", "result" => "error")
                    .increment(1);
                if e.code() == 409 || e.code() == 404 {
                    // Bound elsewhere, being deleted or gone: the informer tells the rest.
                    tracing::debug!(pod = %key, error = %e, "bind refused; dropping");
                    self.queue.forget(&key);
                    return;
                }
                tracing::warn!(pod = %key, error = %e, "bind failed");
                if self.queue.retry(key.clone()) > BIND_RETRIES_MAX {
                    self.queue.forget(&key);
                }
            }
            Outcome::StatusWritten { key, result } => {
                if let Err(e) = result {
                    tracing::debug!(pod = %key, error = %e, "cannot write PodScheduled=False");
                }
            }
        }
    }
}

/// How often [`wait_listed`] looks.
const LISTED_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Waits until `informer` has listed once. Polls the revision as well as the synced flag:
/// the informer's first list can finish before anyone waits on the flag, and a watch
/// channel without receivers drops that value.
async fn wait_listed(informer: &Informer) {
    while !informer.has_synced() && informer.revision() == 0 {
        tokio::time::sleep(LISTED_POLL_INTERVAL).await;
    }
}

/// Runs the scheduler until `stop`.
pub(crate) async fn run(ctx: ControllerContext, mut stop: StopSignal) -> anyhow::Result<()> {
    let pods_resource = resources::find("", "v1", "pods").context("pods are not served")?;
    let nodes_resource = resources::find("", "v1", "nodes").context("nodes are not served")?;
    let pods = ctx.informers.of(pods_resource);
    let nodes = ctx.informers.of(nodes_resource);
    let mut pod_changes = pods.subscribe();
    let mut node_changes = nodes.subscribe();
    tokio::select! {
        _ = stop.stopped() => return Ok(()),
        _ = async { wait_listed(&pods).await; wait_listed(&nodes).await } => {}
    }
    let (outcomes_tx, mut outcomes) = mpsc::channel(BINDS_IN_FLIGHT_MAX);
    let queue = WorkQueue::new("scheduler", QUEUE_KEYS_MAX);
    let mut s = Scheduler {
        events: ctx.events.for_component(SCHEDULER_NAME),
        ctx,
        pods: pods.clone(),
        queue: queue.clone(),
        cache: Cache::default(),
        pending: HashSet::new(),
        unschedulable: HashMap::new(),
        in_flight: 0,
        outcomes: outcomes_tx,
    };
    s.resync_nodes(&nodes);
    s.resync_pods();
    tracing::info!(
        nodes = s.cache.node_count(),
        pending = s.pending.len(),
        "scheduler started"
    );
    let mut retry = tokio::time::interval(RETRY_INTERVAL);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        metrics::gauge!("keelson_scheduler_queue_depth").set(queue.len() as f64);
        tokio::select! {
            _ = stop.stopped() => break,
            Some(outcome) = outcomes.recv() => s.on_outcome(outcome),
            change = pod_changes.recv() => match change {
                Some(Change::Applied { old, new }) => s.on_pod(old.as_deref(), &new),
                Some(Change::Deleted(pod)) => s.on_pod_deleted(&pod),
                Some(Change::Resynced) => s.resync_pods(),
                None => break,
            },
            change = node_changes.recv() => match change {
                Some(Change::Applied { new, .. }) => s.on_node(&new),
                Some(Change::Deleted(node)) => {
                    s.cache.remove_node(object::name(&node).unwrap_or_default());
                }
                Some(Change::Resynced) => s.resync_nodes(&nodes),
                None => break,
            },
            _ = retry.tick() => s.retry_pending(),
            Some(key) = queue.next(), if s.in_flight < BINDS_IN_FLIGHT_MAX => {
                s.schedule(&key);
                queue.done(&key);
            }
        }
    }
    queue.shut_down();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_condition_is_written_only_when_it_changes() {
        let message = "0/1 nodes are available: 1 Insufficient cpu.";
        let cases = [
            (json!({}), true),
            (
                json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False",
                    "reason": "Unschedulable", "message": message}]}}),
                false,
            ),
            (
                json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False",
                    "reason": "Unschedulable", "message": "older"}]}}),
                true,
            ),
        ];
        for (pod, written) in cases {
            let conditions = unschedulable_conditions(&pod, message);
            assert_eq!(conditions.is_some(), written, "{pod}");
            if let Some(conditions) = conditions {
                assert_eq!(conditions.len(), 1);
                assert_eq!(conditions[0]["message"], message);
            }
        }
    }

    #[test]
    fn pods_of_other_schedulers_are_left_alone() {
        let cases = [
            (json!({"spec": {}}), true),
            (json!({"spec": {"schedulerName": ""}}), true),
            (
                json!({"spec": {"schedulerName": "default-scheduler"}}),
                true,
            ),
            (json!({"spec": {"schedulerName": "other"}}), false),
        ];
        for (pod, ours) in cases {
            assert_eq!(is_ours(&pod), ours, "{pod}");
        }
    }
}
