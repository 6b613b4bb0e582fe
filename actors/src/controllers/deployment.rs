//! The deployment controller: one ReplicaSet per pod template (named `<deployment>-<hash>`,
//! selected by the `pod-template-hash` label), rolled by the `RollingUpdate` or `Recreate`
//! strategy, with revisions for `kctl rollout undo` and a bounded history. [`reconcile`] is
//! pure (deployment, its ReplicaSets and their pods → actions); the loop does the I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use keelson_api::object;
use keelson_api::resources::{self, Resource};
use keelson_api::status::StatusError;
use serde_json::{json, Map, Value};

use crate::client::DeleteOptions;
use crate::control_plane::ControllerContext;
use crate::controllers::replication::{available_in, controller_reference, is_active, is_ready};
use crate::events::{EventRecorder, EventType};
use crate::informer::{key_of, Change, Informer};
use crate::supervisor::StopSignal;
use crate::workqueue::WorkQueue;

/// The label that ties a ReplicaSet and its pods to one pod template.
pub(crate) const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The revision annotation on ReplicaSets and the deployment.
pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
/// Copied from the deployment to a new ReplicaSet, for `kctl rollout history`.
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// Kubernetes' default `revisionHistoryLimit`.
const REVISION_HISTORY_LIMIT_DEFAULT: usize = 10;
/// Deployments queued at most.
const QUEUE_KEYS_MAX: usize = 100_000;
/// Concurrent reconciles.
const WORKERS: usize = 2;
/// Every deployment is looked at again this often.
const RESYNC_PERIOD: Duration = Duration::from_secs(30);
const COMPONENT: &str = "deployment-controller";
/// Kubernetes' SafeEncodeString alphabet (no vowels, no look-alikes).
const HASH_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Errors of the deployment loop.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeploymentError {
    #[error("the {0} resource is not served")]
    UnknownResource(&'static str),
    #[error("{deployment}: {source}")]
    Api {
        deployment: String,
        #[source]
        source: StatusError,
    },
}

// ---------------------------------------------------------------------------------------------
// Template hashing.

/// JSON with object keys sorted, whatever the map type's order.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            out.push('{');
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*key).clone()).to_string());
                out.push(':');
                canonical_json(&map[*key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The template without the `pod-template-hash` label.
fn without_hash(template: &Value) -> Value {
    let mut template = template.clone();
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    template
}

/// A stable short name for a pod template: FNV-1a (32 bits) of its canonical JSON, written
/// as Kubernetes writes `pod-template-hash` (the decimal digits mapped into a safe alphabet).
pub(crate) fn template_hash(template: &Value) -> String {
    let mut text = String::new();
    canonical_json(&without_hash(template), &mut text);
    let mut hash: u32 = 0x811c_9dc5;
    for byte in text.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.to_string()
        .bytes()
        .map(|b| char::from(HASH_ALPHABET[usize::from(b) % HASH_ALPHABET.len()]))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Strategy arithmetic.

/// An `IntOrString` against a total: `5` or `"25%"`, rounded up or down.
fn scaled_value(value: &Value, total: i64, default_percent: i64, round_up: bool) -> i64 {
    let percent = |p: i64| {
        let product = p.saturating_mul(total);
        if round_up {
            (product + 99) / 100
        } else {
            product / 100
        }
    };
    match value {
        Value::Number(n) => n.as_i64().unwrap_or(0).max(0),
        Value::String(s) => match s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<i64>().ok())
        {
            Some(p) => percent(p.max(0)),
            None => s
                .trim()
                .parse::<i64>()
                .map_or(percent(default_percent), |n| n.max(0)),
        },
        _ => percent(default_percent),
    }
}

/// (maxSurge, maxUnavailable) of a rolling update for `replicas`, as Kubernetes resolves
/// them: surge rounds up, unavailable down, and both zero means one unavailable.
pub(crate) fn surge_and_unavailable(deployment: &Value, replicas: i64) -> (i64, i64) {
    let rolling = &deployment["spec"]["strategy"]["rollingUpdate"];
    let surge = scaled_value(&rolling["maxSurge"], replicas, 25, true);
    let mut unavailable = scaled_value(&rolling["maxUnavailable"], replicas, 25, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

fn revision_of(obj: &Value) -> i64 {
    object::annotations(obj)
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The pure core.

/// A change to one ReplicaSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaSetUpdate {
    pub(crate) name: String,
    /// (from, to) replicas.
    pub(crate) scale: Option<(i64, i64)>,
    pub(crate) revision: Option<String>,
}

/// What one reconcile decided.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Actions {
    /// A new ReplicaSet to create.
    pub(crate) create: Option<Value>,
    pub(crate) update: Vec<ReplicaSetUpdate>,
    /// Old ReplicaSets beyond `revisionHistoryLimit`.
    pub(crate) delete: Vec<String>,
    /// The deployment's new revision annotation.
    pub(crate) revision: Option<String>,
    /// The new status, when it differs.
    pub(crate) status: Option<Value>,
    pub(crate) requeue_after: Option<Duration>,
}

/// One ReplicaSet with what its pods say.
struct Set<'a> {
    rs: &'a Value,
    name: String,
    /// `spec.replicas` (after the updates decided so far).
    replicas: i64,
    /// Active pods.
    active: i64,
    ready: i64,
    available: i64,
}

impl Set<'_> {
    /// Pods it has or may have soon: its spec, or more while extras are being deleted.
    fn pods(&self) -> i64 {
        self.replicas.max(self.active)
    }

    /// Available pods it will keep: never more than its spec (extras are being deleted).
    fn kept_available(&self) -> i64 {
        self.available.min(self.replicas)
    }
}

/// Decides what to do for one deployment. `replica_sets` are those it controls; `pods` those
/// they control. Idempotent.
pub(crate) fn reconcile(
    deployment: &Value,
    replica_sets: &[Arc<Value>],
    pods: &[Arc<Value>],
    now: jiff::Timestamp,
) -> Actions {
    let mut actions = Actions::default();
    if object::deletion_timestamp(deployment).is_some() || object::uid(deployment).is_none() {
        return actions;
    }
    let spec = &deployment["spec"];
    let desired = spec["replicas"].as_i64().unwrap_or(1).max(0);
    let min_ready_seconds = spec["minReadySeconds"].as_i64().unwrap_or(0);
    let paused = spec["paused"].as_bool().unwrap_or(false);
    let recreate = spec["strategy"]["type"].as_str() == Some("Recreate");
    let template = &spec["template"];
    let hash = template_hash(template);
    let deploy_name = object::name(deployment).unwrap_or_default();
    let (surge, max_unavailable) = if recreate {
        (0, desired)
    } else {
        surge_and_unavailable(deployment, desired)
    };

    // Pods by their controlling ReplicaSet.
    let mut by_rs: HashMap<&str, Vec<&Value>> = HashMap::new();
    for pod in pods {
        if let Some(reference) = object::controller_of(pod) {
            if let Some(rs) = replica_sets
                .iter()
                .find(|rs| object::uid(rs) == Some(&reference.uid))
            {
                by_rs
                    .entry(object::uid(rs).unwrap_or_default())
                    .or_default()
                    .push(pod);
            }
        }
    }
    let mut sets: Vec<Set<'_>> = Vec::new();
    for rs in replica_sets {
        let rs: &Value = rs;
        let owned = by_rs
            .get(object::uid(rs).unwrap_or_default())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let active: Vec<&&Value> = owned.iter().filter(|p| is_active(p)).collect();
        let mut available = 0;
        for pod in &active {
            match available_in(pod, min_ready_seconds, now) {
                Some(Duration::ZERO) => available += 1,
                Some(wait) => {
                    actions.requeue_after =
                        Some(actions.requeue_after.map_or(wait, |r| r.min(wait)));
                }
                None => {}
            }
        }
        sets.push(Set {
            rs,
            name: object::name(rs).unwrap_or_default().to_string(),
            replicas: rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0),
            active: active.len() as i64,
            ready: active.iter().filter(|p| is_ready(p)).count() as i64,
            available,
        });
    }
    // Oldest first: old ReplicaSets scale down in this order.
    sets.sort_by(|a, b| {
        object::creation_timestamp(a.rs)
            .unwrap_or_default()
            .cmp(object::creation_timestamp(b.rs).unwrap_or_default())
            .then_with(|| a.name.cmp(&b.name))
    });
    let wanted = without_hash(template);
    let new_index = sets
        .iter()
        .position(|s| without_hash(&s.rs["spec"]["template"]) == wanted)
        .or_else(|| {
            sets.iter()
                .position(|s| s.name == format!("{deploy_name}-{hash}"))
        });
    let max_old_revision = sets
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_index)
        .map(|(_, s)| revision_of(s.rs))
        .max()
        .unwrap_or(0);

    let mut scaled = false;
    let mut scale = |actions: &mut Actions, set: &mut Set<'_>, to: i64| {
        actions.update.push(ReplicaSetUpdate {
            name: set.name.clone(),
            scale: Some((set.replicas, to)),
            revision: None,
        });
        set.replicas = to;
        scaled = true;
    };

    let mut new_revision = None;
    match new_index {
        Some(i) => {
            let current = revision_of(sets[i].rs);
            let revision = current.max(max_old_revision + 1);
            if revision != current {
                actions.update.push(ReplicaSetUpdate {
                    name: sets[i].name.clone(),
                    scale: None,
                    revision: Some(revision.to_string()),
                });
            }
            new_revision = Some(revision);
        }
        None if !paused => {
            let old_pods: i64 = sets.iter().map(Set::pods).sum();
            let old_active: i64 = sets.iter().map(|s| s.active).sum();
            let replicas = if recreate {
                (old_pods == 0 && old_active == 0).then_some(desired)
            } else {
                Some((desired + surge - old_pods).clamp(0, desired))
            };
            if let Some(replicas) = replicas {
                let revision = max_old_revision + 1;
                actions.create = Some(new_replica_set(deployment, &hash, replicas, revision));
                new_revision = Some(revision);
            } else {
                // Recreate: scale the old ones down first.
                for set in sets.iter_mut() {
                    if set.replicas > 0 {
                        scale(&mut actions, set, 0);
                    }
                }
            }
        }
        None => {}
    }

    if let (Some(i), false) = (new_index, paused) {
        let (new_sets, old_sets): (Vec<_>, Vec<_>) =
            sets.iter_mut().enumerate().partition(|(j, _)| *j == i);
        let mut old_sets: Vec<&mut Set<'_>> = old_sets.into_iter().map(|(_, s)| s).collect();
        let Some((_, new_set)) = new_sets.into_iter().next() else {
            return actions;
        };
        if recreate {
            let old_replicas: i64 = old_sets.iter().map(|s| s.replicas).sum();
            let old_active: i64 = old_sets.iter().map(|s| s.active).sum();
            if old_replicas > 0 {
                for set in old_sets.iter_mut() {
                    if set.replicas > 0 {
                        scale(&mut actions, set, 0);
                    }
                }
            } else if old_active == 0 && new_set.replicas != desired {
                scale(&mut actions, new_set, desired);
            }
        } else if new_set.replicas > desired {
            scale(&mut actions, new_set, desired);
        } else {
            let total: i64 = new_set.pods() + old_sets.iter().map(|s| s.pods()).sum::<i64>();
            let room = desired + surge - total;
            let up = room.min(desired - new_set.replicas);
            if new_set.replicas < desired && up > 0 {
                let to = new_set.replicas + up;
                scale(&mut actions, new_set, to);
            } else {
                // Old ReplicaSets down, as far as availability allows.
                let old_replicas: i64 = old_sets.iter().map(|s| s.replicas).sum();
                let all_pods = new_set.pods() + old_sets.iter().map(|s| s.pods()).sum::<i64>();
                let min_available = desired - max_unavailable;
                let new_unavailable = (new_set.replicas - new_set.kept_available()).max(0);
                let mut budget = all_pods - min_available - new_unavailable;
                if old_replicas > 0 && budget > 0 {
                    // First the unhealthy pods of old sets.
                    for set in old_sets.iter_mut() {
                        let unhealthy = set.replicas - set.kept_available();
                        if budget <= 0 || unhealthy <= 0 {
                            continue;
                        }
                        let down = unhealthy.min(budget);
                        budget -= down;
                        let to = set.replicas - down;
                        scale(&mut actions, set, to);
                    }
                    // Then available ones, down to the minimum.
                    let available: i64 = new_set.kept_available()
                        + old_sets.iter().map(|s| s.kept_available()).sum::<i64>();
                    let mut surplus = available - min_available;
                    for set in old_sets.iter_mut() {
                        if surplus <= 0 {
                            break;
                        }
                        if set.replicas == 0 {
                            continue;
                        }
                        let down = set.replicas.min(surplus);
                        surplus -= down;
                        let to = set.replicas - down;
                        scale(&mut actions, set, to);
                    }
                }
            }
        }
    }
    // Merge the scale and revision updates of one ReplicaSet into one.
    actions.update = merge_updates(std::mem::take(&mut actions.update));

    // Status, from the pods.
    let new_set = new_index.map(|i| &sets[i]);
    let replicas: i64 = sets.iter().map(|s| s.active).sum();
    let updated = new_set.map_or(0, |s| s.active);
    let ready: i64 = sets.iter().map(|s| s.ready).sum();
    let available: i64 = sets.iter().map(|s| s.available).sum();
    let spec_total: i64 = sets.iter().map(|s| s.replicas).sum();
    let generation = object::generation(deployment).unwrap_or(0);
    let complete = new_set.is_some()
        && updated == desired
        && replicas == desired
        && available >= desired
        && new_set.is_some_and(|s| s.replicas == desired)
        && !scaled;

    // History: old, empty ReplicaSets beyond the limit, oldest revisions first.
    if complete && !paused {
        let limit = spec["revisionHistoryLimit"]
            .as_i64()
            .map_or(REVISION_HISTORY_LIMIT_DEFAULT, |l| {
                usize::try_from(l).unwrap_or(0)
            });
        let mut empty: Vec<&Set<'_>> = sets
            .iter()
            .enumerate()
            .filter(|(i, s)| Some(*i) != new_index && s.replicas == 0 && s.active == 0)
            .map(|(_, s)| s)
            .collect();
        if empty.len() > limit {
            empty.sort_by_key(|s| revision_of(s.rs));
            actions.delete = empty[..empty.len() - limit]
                .iter()
                .map(|s| s.name.clone())
                .collect();
        }
    }

    let revision = new_revision.map(|r| r.to_string());
    if let Some(revision) = &revision {
        if object::annotations(deployment).get(REVISION) != Some(revision) {
            actions.revision = Some(revision.clone());
        }
    }

    let new_name = new_set
        .map(|s| s.name.clone())
        .unwrap_or_else(|| format!("{deploy_name}-{hash}"));
    let old_conditions = deployment["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let stamp = object::format_time(now);
    let condition = |kind: &str, status: &str, reason: &str, message: String| {
        let previous = old_conditions.iter().find(|c| c["type"] == kind);
        let same = previous.is_some_and(|c| {
            c["status"] == status && c["reason"] == reason && c["message"] == message.as_str()
        });
        match previous {
            Some(c) if same => c.clone(),
            _ => {
                let transition = previous
                    .filter(|c| c["status"] == status)
                    .and_then(|c| c.get("lastTransitionTime").cloned())
                    .unwrap_or_else(|| json!(stamp));
                json!({
                    "type": kind, "status": status, "reason": reason, "message": message,
                    "lastUpdateTime": stamp, "lastTransitionTime": transition,
                })
            }
        }
    };
    let available_condition = if available >= desired - max_unavailable {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let progressing = if paused {
        condition(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
        )
    } else if complete {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        )
    } else if actions.create.is_some() {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{new_name}\""),
        )
    } else {
        condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
        )
    };
    let mut status: Map<String, Value> = deployment["status"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    status.insert("observedGeneration".into(), json!(generation));
    status.insert("replicas".into(), json!(replicas));
    status.insert("updatedReplicas".into(), json!(updated));
    status.insert("readyReplicas".into(), json!(ready));
    status.insert("availableReplicas".into(), json!(available));
    status.insert(
        "unavailableReplicas".into(),
        json!((spec_total.max(desired) - available).max(0)),
    );
    status.insert(
        "conditions".into(),
        json!([available_condition, progressing]),
    );
    let status = Value::Object(status);
    if status != deployment["status"] {
        actions.status = Some(status);
    }
    actions
}

fn merge_updates(updates: Vec<ReplicaSetUpdate>) -> Vec<ReplicaSetUpdate> {
    let mut merged: Vec<ReplicaSetUpdate> = Vec::new();
    for update in updates {
        match merged.iter_mut().find(|m| m.name == update.name) {
            Some(m) => {
                if let Some((from, to)) = update.scale {
                    let first = m.scale.map_or(from, |(first, _)| first);
                    m.scale = Some((first, to));
                }
                if update.revision.is_some() {
                    m.revision = update.revision;
                }
            }
            None => merged.push(update),
        }
    }
    merged
}

/// The ReplicaSet of the deployment's current template.
fn new_replica_set(deployment: &Value, hash: &str, replicas: i64, revision: i64) -> Value {
    let name = object::name(deployment).unwrap_or_default();
    let mut template = deployment["spec"]["template"].clone();
    if !template["metadata"].is_object() {
        template["metadata"] = json!({});
    }
    if !template["metadata"]["labels"].is_object() {
        template["metadata"]["labels"] = json!({});
    }
    template["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
    let mut selector = deployment["spec"]["selector"].clone();
    if !selector.is_object() {
        selector = json!({});
    }
    if !selector["matchLabels"].is_object() {
        selector["matchLabels"] = json!({});
    }
    selector["matchLabels"][POD_TEMPLATE_HASH] = json!(hash);
    let mut annotations = BTreeMap::new();
    annotations.insert(REVISION.to_string(), revision.to_string());
    if let Some(cause) = object::annotations(deployment).get(CHANGE_CAUSE) {
        annotations.insert(CHANGE_CAUSE.to_string(), cause.clone());
    }
    let mut spec = json!({
        "replicas": replicas,
        "selector": selector,
        "template": template,
    });
    if let Some(seconds) = deployment["spec"]["minReadySeconds"].as_i64() {
        spec["minReadySeconds"] = json!(seconds);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{name}-{hash}"),
            "namespace": object::namespace(deployment).unwrap_or("default"),
            "labels": template["metadata"]["labels"].clone(),
            "annotations": annotations,
            "ownerReferences": [controller_reference(deployment, "apps/v1", "Deployment")],
        },
        "spec": spec,
    })
}

// ---------------------------------------------------------------------------------------------
// The loop.

struct Shared {
    ctx: ControllerContext,
    events: EventRecorder,
    deployments_resource: &'static Resource,
    rs_resource: &'static Resource,
    deployments: Informer,
    replica_sets: Informer,
    pods: Informer,
    queue: WorkQueue<String>,
}

pub(crate) async fn run(ctx: ControllerContext, mut stop: StopSignal) -> anyhow::Result<()> {
    let find = |group, plural, kind| {
        resources::find(group, "v1", plural).ok_or(DeploymentError::UnknownResource(kind))
    };
    let deployments_resource = find("apps", "deployments", "Deployment")?;
    let rs_resource = find("apps", "replicasets", "ReplicaSet")?;
    let pods_resource = find("", "pods", "Pod")?;
    let deployments = ctx.informers.of(deployments_resource);
    let replica_sets = ctx.informers.of(rs_resource);
    let pods = ctx.informers.of(pods_resource);
    let mut deployment_changes = deployments.subscribe();
    let mut rs_changes = replica_sets.subscribe();
    let mut pod_changes = pods.subscribe();
    tokio::select! {
        _ = stop.stopped() => return Ok(()),
        _ = async {
            deployments.wait_synced().await;
            replica_sets.wait_synced().await;
            pods.wait_synced().await;
        } => {}
    }
    let shared = Arc::new(Shared {
        events: ctx.events.for_component(COMPONENT),
        ctx: ControllerContext {
            client: ctx.client.for_component(COMPONENT),
            ..ctx.clone()
        },
        deployments_resource,
        rs_resource,
        deployments,
        replica_sets,
        pods,
        queue: WorkQueue::new(COMPONENT, QUEUE_KEYS_MAX),
    });
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| tokio::spawn(work(shared.clone())))
        .collect();
    enqueue_all(&shared);
    let mut resync = tokio::time::interval(RESYNC_PERIOD);
    loop {
        tokio::select! {
            _ = stop.stopped() => break,
            _ = resync.tick() => enqueue_all(&shared),
            change = deployment_changes.recv() => match change {
                Some(Change::Applied { new, .. }) => { shared.queue.add(key_of(&new)); }
                Some(Change::Deleted(old)) => { shared.queue.add(key_of(&old)); }
                Some(Change::Resynced) => enqueue_all(&shared),
                None => break,
            },
            change = rs_changes.recv() => match change {
                Some(Change::Applied { new, old }) => {
                    enqueue_controller(&shared, &new);
                    if let Some(old) = old { enqueue_controller(&shared, &old); }
                }
                Some(Change::Deleted(old)) => enqueue_controller(&shared, &old),
                Some(Change::Resynced) => enqueue_all(&shared),
                None => break,
            },
            change = pod_changes.recv() => match change {
                Some(Change::Applied { new, .. }) => enqueue_for_pod(&shared, &new),
                Some(Change::Deleted(old)) => enqueue_for_pod(&shared, &old),
                Some(Change::Resynced) => enqueue_all(&shared),
                None => break,
            },
        }
    }
    shared.queue.shut_down();
    for worker in workers {
        let _ = worker.await;
    }
    Ok(())
}

fn enqueue_all(shared: &Shared) {
    for key in shared.deployments.keys() {
        shared.queue.add(key);
    }
}

/// Queues the deployment controlling `rs`.
fn enqueue_controller(shared: &Shared, rs: &Value) {
    if let (Some(reference), Some(ns)) = (object::controller_of(rs), object::namespace(rs)) {
        if reference.kind == "Deployment" {
            shared.queue.add(format!("{ns}/{}", reference.name));
        }
    }
}

fn enqueue_for_pod(shared: &Shared, pod: &Value) {
    let (Some(reference), Some(ns)) = (object::controller_of(pod), object::namespace(pod)) else {
        return;
    };
    if reference.kind != "ReplicaSet" {
        return;
    }
    if let Some(rs) = shared.replica_sets.get(&format!("{ns}/{}", reference.name)) {
        enqueue_controller(shared, &rs);
    }
}

async fn work(shared: Arc<Shared>) {
    while let Some(key) = shared.queue.next().await {
        match sync(&shared, &key).await {
            Ok(requeue) => {
                shared.queue.forget(&key);
                if let Some(after) = requeue {
                    shared.queue.add_after(key.clone(), after);
                }
            }
            Err(e) => {
                tracing::info!(controller = COMPONENT, error = %e, "reconcile failed; retrying");
                shared.queue.retry(key.clone());
            }
        }
        shared.queue.done(&key);
    }
}

async fn sync(shared: &Shared, key: &str) -> Result<Option<Duration>, DeploymentError> {
    let Some(deployment) = shared.deployments.get(key) else {
        return Ok(None);
    };
    let (Some(ns), Some(uid), Some(name)) = (
        object::namespace(&deployment),
        object::uid(&deployment),
        object::name(&deployment),
    ) else {
        tracing::warn!(
            key,
            "a deployment without namespace, name or uid is skipped"
        );
        return Ok(None);
    };
    let replica_sets: Vec<Arc<Value>> = shared
        .replica_sets
        .owned_by(uid)
        .into_iter()
        .filter(|rs| object::controller_of(rs).is_some_and(|r| r.uid == uid))
        .collect();
    let mut pods = Vec::new();
    for rs in &replica_sets {
        let Some(rs_uid) = object::uid(rs) else {
            continue;
        };
        pods.extend(
            shared
                .pods
                .owned_by(rs_uid)
                .into_iter()
                .filter(|p| object::controller_of(p).is_some_and(|r| r.uid == rs_uid)),
        );
    }
    let actions = reconcile(&deployment, &replica_sets, &pods, jiff::Timestamp::now());
    if actions.create.is_some() || !actions.update.is_empty() || !actions.delete.is_empty() {
        tracing::info!(
            deployment = key,
            create = actions.create.is_some(),
            updates = ?actions.update,
            delete = ?actions.delete,
            "rolling"
        );
    }
    let api_error = |source: StatusError| DeploymentError::Api {
        deployment: key.to_string(),
        source,
    };
    let client = &shared.ctx.client;
    let mut requeue = actions.requeue_after;

    if let Some(rs) = &actions.create {
        let rs_name = object::name(rs).unwrap_or_default();
        match client.create(shared.rs_resource, Some(ns), rs).await {
            Ok(_) => {
                let replicas = rs["spec"]["replicas"].as_i64().unwrap_or(0);
                shared.events.record(
                    &deployment,
                    EventType::Normal,
                    "ScalingReplicaSet",
                    &format!("Scaled up replica set {rs_name} from 0 to {replicas}"),
                );
            }
            // Our informer has not seen it yet, or a hash collision: look again shortly.
            Err(e) if e.code() == 409 => {
                tracing::info!(
                    key,
                    rs = rs_name,
                    "replica set already exists; waiting for the informer"
                );
                requeue = Some(Duration::from_secs(1));
            }
            Err(e) => return Err(api_error(e)),
        }
    }

    for update in &actions.update {
        let mut patch = json!({});
        if let Some((_, to)) = update.scale {
            patch["spec"] = json!({ "replicas": to });
        }
        if let Some(revision) = &update.revision {
            patch["metadata"] = json!({ "annotations": { REVISION: revision } });
        }
        match client
            .merge_patch(shared.rs_resource, Some(ns), &update.name, None, &patch)
            .await
        {
            Ok(_) => {
                if let Some((from, to)) = update.scale {
                    let direction = if to > from { "up" } else { "down" };
                    shared.events.record(
                        &deployment,
                        EventType::Normal,
                        "ScalingReplicaSet",
                        &format!(
                            "Scaled {direction} replica set {} from {from} to {to}",
                            update.name
                        ),
                    );
                }
            }
            Err(e) if e.code() == 404 => {}
            Err(e) => return Err(api_error(e)),
        }
    }

    for rs_name in &actions.delete {
        let options = DeleteOptions {
            propagation: Some("Background"),
            ..DeleteOptions::default()
        };
        match client
            .delete(shared.rs_resource, Some(ns), rs_name, &options)
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == 404 => {}
            Err(e) => return Err(api_error(e)),
        }
    }

    if let Some(revision) = &actions.revision {
        let patch = json!({ "metadata": { "annotations": { REVISION: revision } } });
        match client
            .merge_patch(shared.deployments_resource, Some(ns), name, None, &patch)
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == 404 => return Ok(None),
            Err(e) => return Err(api_error(e)),
        }
    }

    if let Some(status) = &actions.status {
        match client
            .merge_patch(
                shared.deployments_resource,
                Some(ns),
                name,
                Some("status"),
                &json!({ "status": status }),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == 404 => {}
            Err(e) => return Err(api_error(e)),
        }
    }
    Ok(requeue)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-01-01T01:00:00Z".parse().unwrap()
    }

    fn deployment(replicas: i64, image: &str, strategy: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 1},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": strategy,
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": image}]}},
            },
        })
    }

    fn rolling(surge: Value, unavailable: Value) -> Value {
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
    }

    #[test]
    fn surge_and_unavailable_round_as_kubernetes() {
        let cases = [
            (json!("25%"), json!("25%"), 10, (3, 2)),
            (json!("25%"), json!("25%"), 1, (1, 0)),
            (json!(0), json!(0), 5, (0, 1)),
            (json!(2), json!("50%"), 5, (2, 2)),
            (Value::Null, Value::Null, 4, (1, 1)),
            (json!("100%"), json!(7), 3, (3, 3)),
        ];
        for (surge, unavailable, replicas, expected) in cases {
            let d = deployment(replicas, "a", rolling(surge.clone(), unavailable.clone()));
            assert_eq!(
                surge_and_unavailable(&d, replicas),
                expected,
                "{surge} {unavailable} of {replicas}"
            );
        }
    }

    #[test]
    fn template_hash_is_stable_and_ignores_the_hash_label() {
        let a = json!({"metadata": {"labels": {"app": "web", "x": "1"}}, "spec": {"c": 1}});
        let b = json!({"spec": {"c": 1}, "metadata": {"labels": {"x": "1", "app": "web", POD_TEMPLATE_HASH: "zz"}}});
        assert_eq!(template_hash(&a), template_hash(&b));
        assert_ne!(template_hash(&a), template_hash(&json!({"spec": {"c": 2}})));
        let hash = template_hash(&a);
        assert!(hash.bytes().all(|c| HASH_ALPHABET.contains(&c)), "{hash}");
        assert!(!hash.is_empty() && hash.len() <= 10);
    }

    /// A simulated cluster: ReplicaSets and pods with the RS controller and a kubelet that
    /// makes pods ready at once, driven by the deployment core.
    struct Sim {
        deployment: Value,
        replica_sets: Vec<Arc<Value>>,
        pods: Vec<Arc<Value>>,
        serial: u64,
    }

    impl Sim {
        fn new(deployment: Value) -> Sim {
            Sim {
                deployment,
                replica_sets: Vec::new(),
                pods: Vec::new(),
                serial: 0,
            }
        }

        fn stamp(&mut self) -> String {
            self.serial += 1;
            format!(
                "2026-01-01T00:{:02}:{:02}Z",
                self.serial / 60 % 60,
                self.serial % 60
            )
        }

        /// One deployment reconcile, applied.
        fn deploy_step(&mut self) -> Actions {
            let actions = reconcile(&self.deployment, &self.replica_sets, &self.pods, now());
            if let Some(rs) = &actions.create {
                let mut rs = rs.clone();
                let stamp = self.stamp();
                rs["metadata"]["uid"] = json!(format!("uid-{}", object::name(&rs).unwrap()));
                rs["metadata"]["creationTimestamp"] = json!(stamp);
                self.replica_sets.push(Arc::new(rs));
            }
            for update in &actions.update {
                let rs = self
                    .replica_sets
                    .iter_mut()
                    .find(|r| object::name(r) == Some(update.name.as_str()))
                    .unwrap();
                let mut value = (**rs).clone();
                if let Some((from, to)) = update.scale {
                    assert_eq!(value["spec"]["replicas"], from);
                    value["spec"]["replicas"] = json!(to);
                }
                if let Some(revision) = &update.revision {
                    value["metadata"]["annotations"][REVISION] = json!(revision);
                }
                *rs = Arc::new(value);
            }
            self.replica_sets.retain(|r| {
                !actions
                    .delete
                    .iter()
                    .any(|d| object::name(r) == Some(d.as_str()))
            });
            if let Some(revision) = &actions.revision {
                self.deployment["metadata"]["annotations"][REVISION] = json!(revision);
            }
            if let Some(status) = &actions.status {
                self.deployment["status"] = status.clone();
            }
            actions
        }

        /// The ReplicaSet controller: creates or deletes pods (one set at a time).
        fn rs_step(&mut self) -> bool {
            for rs in self.replica_sets.clone() {
                let uid = object::uid(&rs).unwrap().to_string();
                let mut owned: Vec<Arc<Value>> = self
                    .pods
                    .iter()
                    .filter(|p| object::controller_of(p).unwrap().uid == uid)
                    .cloned()
                    .collect();
                let want = rs["spec"]["replicas"].as_i64().unwrap() as usize;
                if owned.len() < want {
                    self.serial += 1;
                    let mut pod = json!({
                        "metadata": {"name": format!("{}-{}", object::name(&rs).unwrap(), self.serial),
                                     "uid": format!("p{}", self.serial),
                                     "creationTimestamp": self.stamp(),
                                     "labels": rs["spec"]["template"]["metadata"]["labels"].clone(),
                                     "ownerReferences": [controller_reference(&rs, "apps/v1", "ReplicaSet")]},
                        "status": {"phase": "Pending"},
                    });
                    pod["spec"] = rs["spec"]["template"]["spec"].clone();
                    self.pods.push(Arc::new(pod));
                    return true;
                }
                if owned.len() > want {
                    owned.sort_by(|a, b| crate::controllers::replication::deletion_order(a, b));
                    let victim = object::name(&owned[0]).unwrap().to_string();
                    self.pods
                        .retain(|p| object::name(p) != Some(victim.as_str()));
                    return true;
                }
            }
            false
        }

        /// The kubelet: one pending pod turns ready.
        fn kubelet_step(&mut self) -> bool {
            let Some(pod) = self.pods.iter_mut().find(|p| !is_ready(p)) else {
                return false;
            };
            let mut value = (**pod).clone();
            value["status"] = json!({"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
            *pod = Arc::new(value);
            true
        }

        fn total(&self) -> i64 {
            self.pods.len() as i64
        }

        fn ready(&self) -> i64 {
            self.pods.iter().filter(|p| is_ready(p)).count() as i64
        }

        /// Runs the three loops in a fixed interleaving until nothing changes, checking the
        /// rollout bounds after every step.
        fn settle(&mut self, surge: i64, unavailable: i64, order: &[usize]) {
            let desired = self.deployment["spec"]["replicas"].as_i64().unwrap();
            for round in 0..10_000 {
                let mut changed = false;
                for step in order {
                    changed |= match step {
                        0 => {
                            let a = self.deploy_step();
                            a.create.is_some() || !a.update.is_empty() || !a.delete.is_empty()
                        }
                        1 => self.rs_step(),
                        _ => self.kubelet_step(),
                    };
                    assert!(
                        self.total() <= desired + surge,
                        "round {round}: {} pods > {desired} + {surge}",
                        self.total()
                    );
                    assert!(
                        self.ready() >= desired - unavailable,
                        "round {round}: {} ready < {desired} - {unavailable}",
                        self.ready()
                    );
                }
                if !changed {
                    return;
                }
            }
            panic!("did not settle");
        }

        fn images(&self) -> Vec<String> {
            let mut images: Vec<String> = self
                .pods
                .iter()
                .map(|p| {
                    p["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect();
            images.sort();
            images.dedup();
            images
        }
    }

    #[test]
    fn rolling_updates_keep_the_bounds_at_every_step() {
        let cases: &[(i64, Value, Value, &[usize])] = &[
            (10, json!("25%"), json!("25%"), &[0, 1, 2]),
            (10, json!("25%"), json!("25%"), &[2, 1, 0]),
            (10, json!(0), json!(1), &[0, 1, 1, 2]),
            (5, json!(1), json!(0), &[1, 0, 2, 2]),
            (3, json!("100%"), json!("100%"), &[0, 1, 2]),
            (1, json!(0), json!(0), &[0, 2, 1]),
        ];
        for (replicas, surge, unavailable, order) in cases {
            let mut sim = Sim::new(deployment(
                *replicas,
                "v1",
                rolling(surge.clone(), unavailable.clone()),
            ));
            let (s, u) = surge_and_unavailable(&sim.deployment, *replicas);
            // The first rollout starts from nothing: only the surge bound applies.
            sim.settle(s, *replicas, order);
            assert_eq!(sim.total(), *replicas);
            assert_eq!(sim.images(), vec!["v1"]);
            assert_eq!(sim.deployment["metadata"]["annotations"][REVISION], "1");
            for (revision, image) in [(2, "v2"), (3, "v3")] {
                sim.deployment["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
                sim.settle(s, u, order);
                assert_eq!(sim.total(), *replicas, "{replicas} {surge} {unavailable}");
                assert_eq!(sim.images(), vec![image]);
                assert_eq!(
                    sim.deployment["metadata"]["annotations"][REVISION],
                    revision.to_string()
                );
                let status = &sim.deployment["status"];
                assert_eq!(status["updatedReplicas"], *replicas);
                assert_eq!(status["availableReplicas"], *replicas);
                assert_eq!(status["conditions"][1]["reason"], "NewReplicaSetAvailable");
            }
            // Rolling back to v1's template reuses its ReplicaSet with a new revision.
            sim.deployment["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v1");
            sim.settle(s, u, order);
            assert_eq!(sim.images(), vec!["v1"]);
            assert_eq!(
                sim.replica_sets.len(),
                3,
                "no new ReplicaSet for an old template"
            );
            assert_eq!(sim.deployment["metadata"]["annotations"][REVISION], "4");
        }
    }

    #[test]
    fn recreate_removes_old_pods_before_new_ones() {
        let mut sim = Sim::new(deployment(4, "v1", json!({"type": "Recreate"})));
        sim.settle(0, 4, &[0, 1, 2]);
        assert_eq!(sim.total(), 4);
        sim.deployment["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2");
        for _ in 0..200 {
            sim.deploy_step();
            sim.rs_step();
            sim.kubelet_step();
            let images = sim.images();
            assert!(images.len() <= 1, "old and new pods at once: {images:?}");
        }
        assert_eq!(sim.images(), vec!["v2"]);
        assert_eq!(sim.total(), 4);
    }

    #[test]
    fn scaling_and_history_limit() {
        let mut d = deployment(3, "v0", rolling(json!(1), json!(1)));
        d["spec"]["revisionHistoryLimit"] = json!(2);
        let mut sim = Sim::new(d);
        sim.settle(1, 3, &[0, 1, 2]);
        for i in 1..=4 {
            sim.deployment["spec"]["template"]["spec"]["containers"][0]["image"] =
                json!(format!("v{i}"));
            sim.settle(1, 1, &[0, 1, 2]);
        }
        sim.deploy_step();
        assert_eq!(sim.replica_sets.len(), 3, "the new one and two old ones");
        sim.deployment["spec"]["replicas"] = json!(6);
        sim.settle(1, 6, &[0, 1, 2]);
        assert_eq!(sim.total(), 6);
        sim.deployment["spec"]["replicas"] = json!(2);
        // Scaling down is not a rollout: the old size exceeds the new bound for a while.
        sim.settle(4, 2, &[0, 1, 2]);
        assert_eq!(sim.total(), 2);
    }

    #[test]
    fn paused_deployments_are_not_rolled() {
        let mut sim = Sim::new(deployment(2, "v1", rolling(json!(1), json!(0))));
        sim.settle(1, 2, &[0, 1, 2]);
        sim.deployment["spec"]["paused"] = json!(true);
        sim.deployment["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2");
        let actions = sim.deploy_step();
        assert_eq!(actions.create, None);
        assert!(actions.update.is_empty());
        assert_eq!(
            sim.deployment["status"]["conditions"][1]["reason"],
            "DeploymentPaused"
        );
    }

    #[test]
    fn new_replica_sets_carry_hash_revision_and_owner() {
        let d = deployment(3, "v1", rolling(json!("25%"), json!("25%")));
        let actions = reconcile(&d, &[], &[], now());
        let rs = actions.create.unwrap();
        let hash = template_hash(&d["spec"]["template"]);
        assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
        assert_eq!(rs["spec"]["replicas"], 3);
        assert_eq!(
            rs["spec"]["selector"]["matchLabels"][POD_TEMPLATE_HASH],
            hash.as_str()
        );
        assert_eq!(
            rs["spec"]["template"]["metadata"]["labels"][POD_TEMPLATE_HASH],
            hash.as_str()
        );
        assert_eq!(rs["metadata"]["annotations"][REVISION], "1");
        assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
        assert_eq!(actions.revision.as_deref(), Some("1"));
    }
}
