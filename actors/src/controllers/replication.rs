//! The replication controllers: ReplicationControllers (core/v1, selector a label map) and
//! ReplicaSets (apps/v1, selector a `LabelSelector`) keep `spec.replicas` active pods. One
//! generic core serves both: [`reconcile`] is pure (owner, pods, expectations → actions) and
//! the loop around it only reads informers and writes through the API client.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keelson_api::object;
use keelson_api::resources::{self, Resource};
use keelson_api::selectors::LabelSelector;
use keelson_api::status::StatusError;
use serde_json::{json, Value};

use crate::client::DeleteOptions;
use crate::control_plane::ControllerContext;
use crate::events::{EventRecorder, EventType};
use crate::informer::{key_of, Change, Informer};
use crate::supervisor::StopSignal;
use crate::workqueue::WorkQueue;

/// Creates or deletes per reconcile, at most (Kubernetes' `burstReplicas`).
pub(crate) const BURST_REPLICAS: usize = 500;
/// Owners queued at most.
const QUEUE_KEYS_MAX: usize = 100_000;
/// Concurrent reconciles.
const WORKERS: usize = 4;
/// Every owner is looked at again this often, whatever the informers say.
const RESYNC_PERIOD: Duration = Duration::from_secs(30);
/// Expectations not met in this time are dropped (Kubernetes' `ExpectationsTimeout`).
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);
/// The first batch of a slow start; each following batch doubles.
const SLOW_START_INITIAL_BATCH: usize = 1;

/// Errors of the replication loop.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplicationError {
    #[error("the {0} resource is not served")]
    UnknownResource(&'static str),
    #[error("{owner}: {source}")]
    Api {
        owner: String,
        #[source]
        source: StatusError,
    },
}

/// Which kind of owner a loop reconciles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnerKind {
    ReplicationController,
    ReplicaSet,
}

impl OwnerKind {
    fn api_version(self) -> &'static str {
        match self {
            OwnerKind::ReplicationController => "v1",
            OwnerKind::ReplicaSet => "apps/v1",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            OwnerKind::ReplicationController => "ReplicationController",
            OwnerKind::ReplicaSet => "ReplicaSet",
        }
    }

    fn component(self) -> &'static str {
        match self {
            OwnerKind::ReplicationController => "replication-controller",
            OwnerKind::ReplicaSet => "replicaset-controller",
        }
    }

    fn resource(self) -> Result<&'static Resource, ReplicationError> {
        let found = match self {
            OwnerKind::ReplicationController => resources::find("", "v1", "replicationcontrollers"),
            OwnerKind::ReplicaSet => resources::find("apps", "v1", "replicasets"),
        };
        found.ok_or(ReplicationError::UnknownResource(self.kind()))
    }

    /// The owner's pod selector; `None` when it is missing or malformed (the owner is
    /// skipped: an empty selector must never select every pod).
    pub(crate) fn selector(self, owner: &Value) -> Option<LabelSelector> {
        let spec = &owner["spec"];
        let selector = match self {
            OwnerKind::ReplicationController => {
                // An RC without a selector selects its template's labels (API defaulting).
                let map = spec["selector"]
                    .as_object()
                    .filter(|m| !m.is_empty())
                    .or_else(|| spec["template"]["metadata"]["labels"].as_object())?;
                let labels: BTreeMap<String, String> = map
                    .iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect();
                LabelSelector::from_map(&labels).ok()?
            }
            OwnerKind::ReplicaSet => LabelSelector::from_value(&spec["selector"]).ok()?,
        };
        (!selector.is_empty()).then_some(selector)
    }

    /// Whether `reference` names an owner of this kind.
    fn names_kind(
        self,
        reference: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> bool {
        reference.kind == self.kind()
    }
}

// ---------------------------------------------------------------------------------------------
// Pod state, shared with the deployment controller.

/// A pod counts toward replicas: not being deleted and not finished.
pub(crate) fn is_active(pod: &Value) -> bool {
    object::deletion_timestamp(pod).is_none()
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
}

fn ready_condition(pod: &Value) -> Option<&Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

/// The pod's `Ready` condition is `True`.
pub(crate) fn is_ready(pod: &Value) -> bool {
    ready_condition(pod).is_some_and(|c| c["status"] == "True")
}

fn ready_since(pod: &Value) -> Option<jiff::Timestamp> {
    ready_condition(pod)?["lastTransitionTime"]
        .as_str()?
        .parse()
        .ok()
}

/// How long until a ready pod turns available; `Some(ZERO)` when it is available now, `None`
/// when it is not ready.
pub(crate) fn available_in(
    pod: &Value,
    min_ready_seconds: i64,
    now: jiff::Timestamp,
) -> Option<Duration> {
    if !is_ready(pod) {
        return None;
    }
    if min_ready_seconds <= 0 {
        return Some(Duration::ZERO);
    }
    // A ready pod without a transition time counts as ready from now on.
    let since = ready_since(pod).unwrap_or(now);
    let ready_for = now.duration_since(since).as_secs();
    if ready_for >= min_ready_seconds {
        Some(Duration::ZERO)
    } else {
        Some(Duration::from_secs(
            (min_ready_seconds - ready_for).unsigned_abs(),
        ))
    }
}

fn phase_rank(pod: &Value) -> u8 {
    match pod["status"]["phase"].as_str() {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    }
}

/// Kubernetes' order of pods to delete first: unscheduled, then pending, then not ready, then
/// ready for the shortest time, then newest.
pub(crate) fn deletion_order(a: &Value, b: &Value) -> Ordering {
    let scheduled = |p: &Value| {
        p["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    };
    scheduled(a)
        .cmp(&scheduled(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        // Both ready: the more recently ready first.
        .then_with(|| ready_since(b).cmp(&ready_since(a)))
        .then_with(|| {
            object::creation_timestamp(b)
                .unwrap_or_default()
                .cmp(object::creation_timestamp(a).unwrap_or_default())
        })
        .then_with(|| object::name(a).cmp(&object::name(b)))
}

// ---------------------------------------------------------------------------------------------
// The pure core.

/// What one reconcile decided.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Actions {
    /// Orphans to adopt: (pod name, the merge patch that adds the ownerReference).
    pub(crate) adopt: Vec<(String, Value)>,
    /// Owned pods that no longer match: (pod name, the merge patch that drops the reference).
    pub(crate) release: Vec<(String, Value)>,
    /// Pods to create, all from this body.
    pub(crate) create: usize,
    pub(crate) pod: Option<Value>,
    /// Pods to delete, in order.
    pub(crate) delete: Vec<String>,
    /// The new status, when it differs from the owner's.
    pub(crate) status: Option<Value>,
    /// Look again after this (a pod turning available after `minReadySeconds`).
    pub(crate) requeue_after: Option<Duration>,
}

/// What the core sees of one owner.
pub(crate) struct Inputs<'a> {
    pub(crate) kind: OwnerKind,
    pub(crate) owner: &'a Value,
    /// Pods that name the owner as controller, and orphans of its namespace.
    pub(crate) pods: &'a [Arc<Value>],
    /// No creates or deletes are in flight (they may be decided).
    pub(crate) expectations_met: bool,
    pub(crate) now: jiff::Timestamp,
}

/// The ownerReference a controlled object carries.
pub(crate) fn controller_reference(owner: &Value, api_version: &str, kind: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": object::name(owner).unwrap_or_default(),
        "uid": object::uid(owner).unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The pod `spec.template` describes, owned by `owner`.
fn pod_from_template(kind: OwnerKind, owner: &Value) -> Value {
    let template = &owner["spec"]["template"];
    let mut metadata = json!({
        "generateName": format!("{}-", object::name(owner).unwrap_or("pod")),
        "ownerReferences": [controller_reference(owner, kind.api_version(), kind.kind())],
    });
    for field in ["labels", "annotations", "finalizers"] {
        if let Some(value) = template["metadata"].get(field) {
            metadata[field] = value.clone();
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template["spec"].clone(),
    })
}

/// The ownerReferences of `pod` with `change` applied, as a merge patch guarded by the pod's
/// uid and resourceVersion.
fn owner_references_patch(pod: &Value, refs: Vec<Value>) -> Value {
    let mut metadata = json!({ "ownerReferences": refs });
    if let Some(uid) = object::uid(pod) {
        metadata["uid"] = json!(uid);
    }
    if let Some(rv) = object::resource_version(pod) {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({ "metadata": metadata })
}

fn raw_owner_references(pod: &Value) -> Vec<Value> {
    pod["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Decides what to do for one owner. Idempotent; asks nothing about what changed.
pub(crate) fn reconcile(inputs: &Inputs<'_>) -> Actions {
    let mut actions = Actions::default();
    let owner = inputs.owner;
    let Some(owner_uid) = object::uid(owner) else {
        return actions;
    };
    if object::deletion_timestamp(owner).is_some() {
        return actions;
    }
    let Some(selector) = inputs.kind.selector(owner) else {
        return actions;
    };
    let template_labels = labels_of(&owner["spec"]["template"]["metadata"]["labels"]);
    let min_ready_seconds = owner["spec"]["minReadySeconds"].as_i64().unwrap_or(0);

    // Claim: keep owned matching pods, adopt matching orphans, release owned non-matching.
    let mut claimed: Vec<&Value> = Vec::new();
    for pod in inputs.pods {
        let pod: &Value = pod;
        let matches = selector.matches_object(pod);
        match object::controller_of(pod) {
            Some(reference) if reference.uid == owner_uid => {
                if matches {
                    claimed.push(pod);
                } else if object::deletion_timestamp(pod).is_none() {
                    let refs = raw_owner_references(pod)
                        .into_iter()
                        .filter(|r| r["uid"] != owner_uid)
                        .collect();
                    let name = object::name(pod).unwrap_or_default().to_string();
                    actions
                        .release
                        .push((name, owner_references_patch(pod, refs)));
                }
            }
            Some(_) => {}
            None => {
                if matches && object::deletion_timestamp(pod).is_none() {
                    let mut refs = raw_owner_references(pod);
                    refs.push(controller_reference(
                        owner,
                        inputs.kind.api_version(),
                        inputs.kind.kind(),
                    ));
                    let name = object::name(pod).unwrap_or_default().to_string();
                    actions
                        .adopt
                        .push((name, owner_references_patch(pod, refs)));
                    claimed.push(pod);
                }
            }
        }
    }
    let mut active: Vec<&Value> = claimed.iter().copied().filter(|p| is_active(p)).collect();

    // Scale.
    let desired = owner["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
    if inputs.expectations_met {
        if active.len() < desired {
            actions.create = (desired - active.len()).min(BURST_REPLICAS);
            actions.pod = Some(pod_from_template(inputs.kind, owner));
        } else if active.len() > desired {
            let extra = (active.len() - desired).min(BURST_REPLICAS);
            active.sort_by(|a, b| deletion_order(a, b));
            actions.delete = active
                .iter()
                .take(extra)
                .filter_map(|p| object::name(p).map(str::to_string))
                .collect();
        }
    }

    // Status, from the pods as they are now.
    let active: Vec<&Value> = claimed.iter().copied().filter(|p| is_active(p)).collect();
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let labels = object::labels(p);
            template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .count();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let mut available = 0;
    for pod in &active {
        match available_in(pod, min_ready_seconds, inputs.now) {
            Some(Duration::ZERO) => available += 1,
            Some(wait) => {
                let soonest = actions.requeue_after.map_or(wait, |r| r.min(wait));
                actions.requeue_after = Some(soonest);
            }
            None => {}
        }
    }
    let current = &owner["status"];
    let mut status = current.as_object().cloned().unwrap_or_default();
    status.insert("replicas".into(), json!(active.len()));
    status.insert("fullyLabeledReplicas".into(), json!(fully_labeled));
    status.insert("readyReplicas".into(), json!(ready));
    status.insert("availableReplicas".into(), json!(available));
    if let Some(generation) = object::generation(owner) {
        status.insert("observedGeneration".into(), json!(generation));
    }
    let status = Value::Object(status);
    if !same_counts(current, &status) {
        actions.status = Some(status);
    }
    actions
}

/// Whether two statuses agree (a missing count is zero, as Kubernetes omits zeros).
fn same_counts(a: &Value, b: &Value) -> bool {
    [
        "replicas",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
        "observedGeneration",
    ]
    .iter()
    .all(|f| a[f].as_i64().unwrap_or(0) == b[f].as_i64().unwrap_or(0))
}

pub(crate) fn labels_of(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The sizes of successive create batches for `count` pods: 1, 2, 4, ... (Kubernetes'
/// slow start: a failing batch stops the rest).
pub(crate) fn slow_start_batches(count: usize) -> Vec<usize> {
    let mut batches = Vec::new();
    let mut remaining = count;
    let mut size = SLOW_START_INITIAL_BATCH;
    while remaining > 0 {
        let batch = size.min(remaining);
        batches.push(batch);
        remaining -= batch;
        size = size.saturating_mul(2);
    }
    batches
}

// ---------------------------------------------------------------------------------------------
// Expectations: creates and deletes in flight per owner.

#[derive(Debug)]
struct Expectation {
    creates: i64,
    /// Keys of pods being deleted.
    deletes: HashSet<String>,
    set_at: Instant,
}

/// Creates and deletes this controller made and has not yet seen in its pod informer, per
/// owner key, as Kubernetes' `UIDTrackingControllerExpectations`.
#[derive(Default)]
pub(crate) struct Expectations {
    owners: Mutex<HashMap<String, Expectation>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expectation>> {
        self.owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// No creates or deletes are outstanding (or they expired).
    pub(crate) fn satisfied(&self, owner: &str) -> bool {
        let mut owners = self.lock();
        let done = match owners.get(owner) {
            None => return true,
            Some(e) => {
                (e.creates <= 0 && e.deletes.is_empty())
                    || e.set_at.elapsed() > EXPECTATIONS_TIMEOUT
            }
        };
        if done {
            owners.remove(owner);
        }
        done
    }

    pub(crate) fn expect(&self, owner: &str, creates: usize, deletes: &[String]) {
        self.lock().insert(
            owner.to_string(),
            Expectation {
                creates: i64::try_from(creates).unwrap_or(i64::MAX),
                deletes: deletes.iter().cloned().collect(),
                set_at: Instant::now(),
            },
        );
    }

    pub(crate) fn creation_observed(&self, owner: &str) {
        if let Some(e) = self.lock().get_mut(owner) {
            e.creates -= 1;
        }
    }

    pub(crate) fn deletion_observed(&self, owner: &str, pod_key: &str) {
        if let Some(e) = self.lock().get_mut(owner) {
            e.deletes.remove(pod_key);
        }
    }

    pub(crate) fn forget(&self, owner: &str) {
        self.lock().remove(owner);
    }
}

// ---------------------------------------------------------------------------------------------
// The loop.

pub(crate) async fn run_replication_controllers(
    ctx: ControllerContext,
    stop: StopSignal,
) -> anyhow::Result<()> {
    run(ctx, stop, OwnerKind::ReplicationController).await
}

pub(crate) async fn run_replica_sets(
    ctx: ControllerContext,
    stop: StopSignal,
) -> anyhow::Result<()> {
    run(ctx, stop, OwnerKind::ReplicaSet).await
}

struct Shared {
    kind: OwnerKind,
    ctx: ControllerContext,
    resource: &'static Resource,
    pods_resource: &'static Resource,
    owners: Informer,
    pods: Informer,
    expectations: Expectations,
    events: EventRecorder,
    queue: WorkQueue<String>,
}

async fn run(ctx: ControllerContext, mut stop: StopSignal, kind: OwnerKind) -> anyhow::Result<()> {
    let resource = kind.resource()?;
    let pods_resource =
        resources::find("", "v1", "pods").ok_or(ReplicationError::UnknownResource("Pod"))?;
    let owners = ctx.informers.of(resource);
    let pods = ctx.informers.of(pods_resource);
    let mut owner_changes = owners.subscribe();
    let mut pod_changes = pods.subscribe();
    tokio::select! {
        _ = stop.stopped() => return Ok(()),
        _ = async { owners.wait_synced().await; pods.wait_synced().await } => {}
    }
    let shared = Arc::new(Shared {
        kind,
        events: ctx.events.for_component(kind.component()),
        ctx: ControllerContext {
            client: ctx.client.for_component(kind.component()),
            ..ctx.clone()
        },
        resource,
        pods_resource,
        owners,
        pods,
        expectations: Expectations::default(),
        queue: WorkQueue::new(kind.component(), QUEUE_KEYS_MAX),
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
            change = owner_changes.recv() => match change {
                Some(Change::Applied { new, .. }) => { shared.queue.add(key_of(&new)); }
                Some(Change::Deleted(old)) => {
                    let key = key_of(&old);
                    shared.expectations.forget(&key);
                    shared.queue.add(key);
                }
                Some(Change::Resynced) => enqueue_all(&shared),
                None => break,
            },
            change = pod_changes.recv() => match change {
                Some(change) => on_pod_change(&shared, change),
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
    for key in shared.owners.keys() {
        shared.queue.add(key);
    }
}

/// The key of the owner of this kind that controls `pod`.
fn controller_key(kind: OwnerKind, pod: &Value) -> Option<String> {
    let reference = object::controller_of(pod)?;
    if !kind.names_kind(&reference) {
        return None;
    }
    let ns = object::namespace(pod)?;
    Some(format!("{ns}/{}", reference.name))
}

/// Owners in the pod's namespace whose selector matches it (for orphans).
fn matching_owners(shared: &Shared, pod: &Value) -> Vec<String> {
    let Some(ns) = object::namespace(pod) else {
        return Vec::new();
    };
    let labels = object::labels(pod);
    shared
        .owners
        .list_namespace(ns)
        .iter()
        .filter(|o| shared.kind.selector(o).is_some_and(|s| s.matches(&labels)))
        .map(|o| key_of(o))
        .collect()
}

fn on_pod_change(shared: &Shared, change: Change) {
    match change {
        Change::Applied { old, new } => {
            let pod_key = key_of(&new);
            let owner = controller_key(shared.kind, &new);
            if let Some(owner) = &owner {
                if old.is_none() {
                    shared.expectations.creation_observed(owner);
                }
                let newly_deleting = object::deletion_timestamp(&new).is_some()
                    && old
                        .as_ref()
                        .is_none_or(|o| object::deletion_timestamp(o).is_none());
                if newly_deleting {
                    shared.expectations.deletion_observed(owner, &pod_key);
                }
                shared.queue.add(owner.clone());
            } else if object::controller_of(&new).is_none() {
                for key in matching_owners(shared, &new) {
                    shared.queue.add(key);
                }
            }
            if let Some(old) = old {
                let old_owner = controller_key(shared.kind, &old);
                if old_owner.is_some() && old_owner != owner {
                    if let Some(key) = old_owner {
                        shared.queue.add(key);
                    }
                }
                if object::labels(&old) != object::labels(&new)
                    && object::controller_of(&new).is_none()
                {
                    for key in matching_owners(shared, &old) {
                        shared.queue.add(key);
                    }
                }
            }
        }
        Change::Deleted(old) => {
            if let Some(owner) = controller_key(shared.kind, &old) {
                shared.expectations.deletion_observed(&owner, &key_of(&old));
                shared.queue.add(owner);
            }
        }
        Change::Resynced => enqueue_all(shared),
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
                tracing::info!(controller = shared.kind.component(), error = %e, "reconcile failed; retrying");
                shared.queue.retry(key.clone());
            }
        }
        shared.queue.done(&key);
    }
}

/// Reconciles one owner and carries the actions out.
async fn sync(shared: &Shared, key: &str) -> Result<Option<Duration>, ReplicationError> {
    let Some(owner) = shared.owners.get(key) else {
        shared.expectations.forget(key);
        return Ok(None);
    };
    let (Some(ns), Some(uid)) = (object::namespace(&owner), object::uid(&owner)) else {
        tracing::warn!(key, "an owner without namespace or uid is skipped");
        return Ok(None);
    };
    let mut seen = HashSet::new();
    let mut pods: Vec<Arc<Value>> = Vec::new();
    for pod in shared.pods.owned_by(uid) {
        if seen.insert(key_of(&pod)) {
            pods.push(pod);
        }
    }
    if let Some(selector) = shared.kind.selector(&owner) {
        for pod in shared.pods.uncontrolled_matching(ns, &selector) {
            if seen.insert(key_of(&pod)) {
                pods.push(pod);
            }
        }
    }
    let inputs = Inputs {
        kind: shared.kind,
        owner: &owner,
        pods: &pods,
        expectations_met: shared.expectations.satisfied(key),
        now: jiff::Timestamp::now(),
    };
    let actions = reconcile(&inputs);
    if actions.create > 0 || !actions.delete.is_empty() {
        tracing::info!(
            controller = shared.kind.component(),
            owner = key,
            create = actions.create,
            delete = actions.delete.len(),
            "scaling"
        );
    }
    let api_error = |source: StatusError| ReplicationError::Api {
        owner: key.to_string(),
        source,
    };
    let client = &shared.ctx.client;

    for (name, patch) in actions.adopt.iter().chain(&actions.release) {
        match client
            .merge_patch(shared.pods_resource, Some(ns), name, None, patch)
            .await
        {
            Ok(_) => {}
            // Gone or changed meanwhile: the next reconcile sees the new state.
            Err(e) if matches!(e.code(), 404 | 409) => {}
            Err(e) => return Err(api_error(e)),
        }
    }

    if actions.create > 0 {
        if let Some(pod) = &actions.pod {
            shared.expectations.expect(key, actions.create, &[]);
            let mut remaining = actions.create;
            let mut failure = None;
            for batch in slow_start_batches(actions.create) {
                let creates =
                    (0..batch).map(|_| client.create(shared.pods_resource, Some(ns), pod));
                let results = futures::future::join_all(creates).await;
                remaining -= batch;
                for result in results {
                    match result {
                        Ok(created) => shared.events.record(
                            &owner,
                            EventType::Normal,
                            "SuccessfulCreate",
                            &format!(
                                "Created pod: {}",
                                object::name(&created).unwrap_or_default()
                            ),
                        ),
                        Err(e) => {
                            shared.expectations.creation_observed(key);
                            shared.events.record(
                                &owner,
                                EventType::Warning,
                                "FailedCreate",
                                &format!("Error creating: {e}"),
                            );
                            failure = Some(e);
                        }
                    }
                }
                if failure.is_some() {
                    break;
                }
            }
            // The batches never sent are not expected either.
            for _ in 0..remaining {
                shared.expectations.creation_observed(key);
            }
            if let Some(e) = failure {
                return Err(api_error(e));
            }
        }
    }

    if !actions.delete.is_empty() {
        let keys: Vec<String> = actions.delete.iter().map(|n| format!("{ns}/{n}")).collect();
        shared.expectations.expect(key, 0, &keys);
        let deletes = actions.delete.iter().map(|name| async move {
            let result = client
                .delete(
                    shared.pods_resource,
                    Some(ns),
                    name,
                    &DeleteOptions::default(),
                )
                .await;
            (name, result)
        });
        let mut failure = None;
        for (name, result) in futures::future::join_all(deletes).await {
            match result {
                Ok(_) => shared.events.record(
                    &owner,
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {name}"),
                ),
                Err(e) => {
                    shared
                        .expectations
                        .deletion_observed(key, &format!("{ns}/{name}"));
                    if e.code() != 404 {
                        shared.events.record(
                            &owner,
                            EventType::Warning,
                            "FailedDelete",
                            &format!("Error deleting: {e}"),
                        );
                        failure = Some(e);
                    }
                }
            }
        }
        if let Some(e) = failure {
            return Err(api_error(e));
        }
    }

    if let Some(status) = actions.status {
        let name = object::name(&owner).unwrap_or_default();
        match client
            .merge_patch(
                shared.resource,
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
    Ok(actions.requeue_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:10:00Z";

    fn now() -> jiff::Timestamp {
        NOW.parse().unwrap()
    }

    fn rs(replicas: i64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": "default", "uid": "rs-uid", "generation": 2},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web", "tier": "fe"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
            },
            "status": {"replicas": 0},
        })
    }

    fn rc(replicas: i64) -> Value {
        json!({
            "apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": "rc", "namespace": "default", "uid": "rc-uid", "generation": 1},
            "spec": {
                "replicas": replicas,
                "selector": {"app": "web"},
                "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
            },
        })
    }

    /// A pod: `owner` is the controller uid (or `None` for an orphan); `state` is one of
    /// `unscheduled`, `pending`, `running`, `ready`, `terminating`, `failed`.
    fn pod(name: &str, owner: Option<&str>, state: &str, created: &str) -> Arc<Value> {
        let mut p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid"),
                         "labels": {"app": "web", "tier": "fe"}, "resourceVersion": "7",
                         "creationTimestamp": created},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running"},
        });
        if let Some(uid) = owner {
            p["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": uid,
                "controller": true, "blockOwnerDeletion": true}]);
        }
        match state {
            "unscheduled" => {
                p["spec"] = json!({});
                p["status"] = json!({"phase": "Pending"});
            }
            "pending" => p["status"] = json!({"phase": "Pending"}),
            "running" => {}
            "ready" => {
                p["status"]["conditions"] = json!([{"type": "Ready", "status": "True",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}])
            }
            "terminating" => p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z"),
            "failed" => p["status"]["phase"] = json!("Failed"),
            other => panic!("unknown state {other}"),
        }
        Arc::new(p)
    }

    fn run_core(owner: &Value, pods: &[Arc<Value>], met: bool) -> Actions {
        let kind = if owner["kind"] == "ReplicaSet" {
            OwnerKind::ReplicaSet
        } else {
            OwnerKind::ReplicationController
        };
        reconcile(&Inputs {
            kind,
            owner,
            pods,
            expectations_met: met,
            now: now(),
        })
    }

    #[test]
    fn scaling_decisions() {
        let t = "2026-01-01T00:00:00Z";
        let later = "2026-01-01T00:05:00Z";
        struct Case {
            name: &'static str,
            replicas: i64,
            pods: Vec<Arc<Value>>,
            met: bool,
            create: usize,
            delete: Vec<&'static str>,
        }
        let mine = Some("rs-uid");
        let cases = vec![
            Case {
                name: "creates the missing",
                replicas: 3,
                pods: vec![pod("a", mine, "ready", t)],
                met: true,
                create: 2,
                delete: vec![],
            },
            Case {
                name: "waits for expectations",
                replicas: 3,
                pods: vec![],
                met: false,
                create: 0,
                delete: vec![],
            },
            Case {
                name: "terminating and failed pods do not count",
                replicas: 2,
                pods: vec![
                    pod("a", mine, "terminating", t),
                    pod("b", mine, "failed", t),
                    pod("c", mine, "ready", t),
                ],
                met: true,
                create: 1,
                delete: vec![],
            },
            Case {
                name: "bounded by the burst",
                replicas: 10_000,
                pods: vec![],
                met: true,
                create: BURST_REPLICAS,
                delete: vec![],
            },
            Case {
                name: "deletes unscheduled, then pending, then not ready, then newest",
                replicas: 1,
                pods: vec![
                    pod("ready-old", mine, "ready", t),
                    pod("ready-new", mine, "ready", later),
                    pod("running", mine, "running", t),
                    pod("pending", mine, "pending", t),
                    pod("unscheduled", mine, "unscheduled", t),
                ],
                met: true,
                create: 0,
                delete: vec!["unscheduled", "pending", "running", "ready-new"],
            },
            Case {
                name: "pods of another controller are ignored",
                replicas: 1,
                pods: vec![pod("other", Some("x"), "ready", t)],
                met: true,
                create: 1,
                delete: vec![],
            },
            Case {
                name: "adopted orphans count",
                replicas: 1,
                pods: vec![pod("orphan", None, "ready", t)],
                met: true,
                create: 0,
                delete: vec![],
            },
        ];
        for case in cases {
            let actions = run_core(&rs(case.replicas), &case.pods, case.met);
            assert_eq!(actions.create, case.create, "{}", case.name);
            assert_eq!(actions.delete, case.delete, "{}", case.name);
        }
    }

    #[test]
    fn created_pods_come_from_the_template_and_are_owned() {
        let actions = run_core(&rs(1), &[], true);
        let pod = actions.pod.unwrap();
        assert_eq!(pod["metadata"]["generateName"], "web-");
        assert_eq!(
            pod["metadata"]["labels"],
            json!({"app": "web", "tier": "fe"})
        );
        assert_eq!(
            pod["metadata"]["ownerReferences"],
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-uid",
                    "controller": true, "blockOwnerDeletion": true}])
        );
        assert_eq!(pod["spec"]["containers"][0]["image"], "nginx");
        let actions = run_core(&rc(1), &[], true);
        let pod = actions.pod.unwrap();
        assert_eq!(
            pod["metadata"]["ownerReferences"][0]["kind"],
            "ReplicationController"
        );
        assert_eq!(pod["metadata"]["ownerReferences"][0]["apiVersion"], "v1");
    }

    #[test]
    fn orphans_are_adopted_and_strays_released() {
        let t = "2026-01-01T00:00:00Z";
        let mut stray = (*pod("stray", Some("rs-uid"), "ready", t)).clone();
        stray["metadata"]["labels"] = json!({"app": "other"});
        let pods = vec![pod("orphan", None, "ready", t), Arc::new(stray)];
        let actions = run_core(&rs(1), &pods, true);
        assert_eq!(actions.adopt.len(), 1);
        let (name, patch) = &actions.adopt[0];
        assert_eq!(name, "orphan");
        assert_eq!(patch["metadata"]["ownerReferences"][0]["uid"], "rs-uid");
        assert_eq!(patch["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(patch["metadata"]["uid"], "orphan-uid");
        assert_eq!(actions.release.len(), 1);
        assert_eq!(actions.release[0].0, "stray");
        assert_eq!(
            actions.release[0].1["metadata"]["ownerReferences"],
            json!([])
        );
        assert_eq!(actions.create, 0, "the adopted orphan is the one replica");
    }

    #[test]
    fn status_counts_and_changes_only_when_needed() {
        let t = "2026-01-01T00:00:00Z";
        let mut owner = rs(3);
        let pods = vec![
            pod("a", Some("rs-uid"), "ready", t),
            pod("b", Some("rs-uid"), "running", t),
            pod("c", Some("rs-uid"), "terminating", t),
        ];
        let status = run_core(&owner, &pods, false).status.unwrap();
        assert_eq!(status["replicas"], 2);
        assert_eq!(status["fullyLabeledReplicas"], 2);
        assert_eq!(status["readyReplicas"], 1);
        assert_eq!(status["availableReplicas"], 1);
        assert_eq!(status["observedGeneration"], 2);
        owner["status"] = status;
        assert_eq!(run_core(&owner, &pods, false).status, None);
    }

    #[test]
    fn min_ready_seconds_delays_availability() {
        let mut owner = rs(1);
        owner["spec"]["minReadySeconds"] = json!(60);
        let pods = vec![pod("a", Some("rs-uid"), "ready", "2026-01-01T00:00:00Z")];
        let mut p = (*pods[0]).clone();
        p["status"]["conditions"][0]["lastTransitionTime"] = json!("2026-01-01T00:09:30Z");
        let actions = run_core(&owner, &[Arc::new(p)], true);
        assert_eq!(actions.status.unwrap()["availableReplicas"], 0);
        assert_eq!(actions.requeue_after, Some(Duration::from_secs(30)));
        let actions = run_core(&owner, &pods, true);
        assert_eq!(actions.status.unwrap()["availableReplicas"], 1);
    }

    #[test]
    fn owners_being_deleted_do_nothing() {
        let mut owner = rs(3);
        owner["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(run_core(&owner, &[], true), Actions::default());
    }

    #[test]
    fn slow_start_doubles() {
        assert_eq!(slow_start_batches(0), Vec::<usize>::new());
        assert_eq!(slow_start_batches(10), vec![1, 2, 4, 3]);
        assert_eq!(slow_start_batches(7), vec![1, 2, 4]);
    }

    #[test]
    fn expectations_gate_until_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/a"));
        e.expect("ns/a", 2, &[]);
        assert!(!e.satisfied("ns/a"));
        e.creation_observed("ns/a");
        assert!(!e.satisfied("ns/a"));
        e.creation_observed("ns/a");
        assert!(e.satisfied("ns/a"));
        e.expect("ns/a", 0, &["ns/p".to_string()]);
        assert!(!e.satisfied("ns/a"));
        e.deletion_observed("ns/a", "ns/p");
        assert!(e.satisfied("ns/a"));
    }
}
