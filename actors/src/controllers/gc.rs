//! The garbage collector: deletes dependents whose owners are gone, honouring propagation.
//!
//! As in Kubernetes: a Background delete removes the owner at once and the collector deletes
//! the dependents whose owners (by uid) no longer exist; an Orphan delete leaves the owner
//! with the `orphan` finalizer until the collector has removed the owner's reference from
//! every dependent; a Foreground delete leaves it with `foregroundDeletion` until the
//! dependents are deleted (in foreground, recursively) and those with `blockOwnerDeletion`
//! are gone.
//!
//! An owner counts as gone only when the cache lacks it and a live read confirms: 404, or an
//! object of that name with another uid.

use std::sync::Arc;
use std::time::Duration;

use keelson_api::object;
use keelson_api::resources::{self, Resource};
use keelson_api::status::StatusError;
use serde_json::{json, Value};

use super::{feed, work, Requeue, QUEUE_KEYS_MAX};
use crate::client::DeleteOptions;
use crate::control_plane::ControllerContext;
use crate::informer::{key_of, split_key, Change, Informer, Informers};
use crate::supervisor::StopSignal;
use crate::workqueue::WorkQueue;

const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";
/// How soon an owner waiting for blocking dependents is looked at again.
const FOREGROUND_POLL: Duration = Duration::from_secs(1);

/// The kinds whose objects the collector follows as dependents and owners
/// (group, version, plural). Events are left out.
const KINDS: &[(&str, &str, &str)] = &[
    ("", "v1", "pods"),
    ("apps", "v1", "replicasets"),
    ("apps", "v1", "deployments"),
    ("", "v1", "replicationcontrollers"),
    ("", "v1", "endpoints"),
    ("", "v1", "configmaps"),
    ("", "v1", "secrets"),
    ("", "v1", "services"),
    ("", "v1", "serviceaccounts"),
];

/// Whether an owner exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnerState {
    Present,
    /// Confirmed gone (404, or replaced by an object with another uid).
    Absent,
    /// Could not tell (a failed read): do nothing yet.
    Unknown,
}

/// What to do with an object as a dependent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DependentAction {
    Keep,
    /// Every owner is gone.
    Delete,
    /// Some owners are gone: drop the references (by uid) to them.
    RemoveOwners(Vec<String>),
    /// An owner's state is unknown: look again later.
    Retry,
}

/// The pure decision for a dependent whose owners (by uid) are in the given states.
pub(crate) fn plan_dependent(obj: &Value, owners: &[(String, OwnerState)]) -> DependentAction {
    if owners.is_empty() || object::deletion_timestamp(obj).is_some() {
        return DependentAction::Keep;
    }
    if owners.iter().any(|(_, s)| *s == OwnerState::Unknown) {
        return DependentAction::Retry;
    }
    let absent: Vec<String> = owners
        .iter()
        .filter(|(_, s)| *s == OwnerState::Absent)
        .map(|(uid, _)| uid.clone())
        .collect();
    if absent.is_empty() {
        DependentAction::Keep
    } else if absent.len() == owners.len() {
        DependentAction::Delete
    } else {
        DependentAction::RemoveOwners(absent)
    }
}

/// What to do with an object being deleted with a propagation finalizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnerAction {
    /// No propagation finalizer, or not being deleted.
    Nothing,
    /// Orphan: remove the owner's reference from these dependents (keys), then the finalizer.
    Orphan(Vec<String>),
    /// Foreground: delete these dependents (keys); `wait` while blocking ones remain.
    Foreground { delete: Vec<String>, wait: bool },
}

/// The pure decision for an owner given its dependents (objects naming its uid).
pub(crate) fn plan_owner(obj: &Value, dependents: &[(&str, Arc<Value>)]) -> OwnerAction {
    if object::deletion_timestamp(obj).is_none() {
        return OwnerAction::Nothing;
    }
    let finalizers = object::finalizers(obj);
    let uid = object::uid(obj).unwrap_or_default();
    if finalizers.iter().any(|f| f == ORPHAN) {
        return OwnerAction::Orphan(dependents.iter().map(|(_, d)| key_of(d)).collect());
    }
    if finalizers.iter().any(|f| f == FOREGROUND) {
        let delete = dependents
            .iter()
            .filter(|(_, d)| object::deletion_timestamp(d).is_none())
            .map(|(_, d)| key_of(d))
            .collect();
        let wait = dependents.iter().any(|(_, d)| {
            object::owner_references(d)
                .iter()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
        });
        return OwnerAction::Foreground { delete, wait };
    }
    OwnerAction::Nothing
}

/// `metadata.ownerReferences` without the references to `uids`.
pub(crate) fn without_owners(obj: &Value, uids: &[String]) -> Vec<Value> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter(|r| {
                    !r.get("uid")
                        .and_then(Value::as_str)
                        .is_some_and(|u| uids.iter().any(|x| x == u))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The followed kinds with their informers.
#[derive(Clone)]
struct Graph {
    kinds: Vec<(&'static Resource, Informer)>,
}

impl Graph {
    fn new(informers: &Informers) -> Graph {
        let kinds = KINDS
            .iter()
            .filter_map(|(g, v, p)| resources::find(g, v, p))
            .map(|r| (r, informers.of(r)))
            .collect();
        Graph { kinds }
    }

    fn informer(&self, plural: &str) -> Option<&(&'static Resource, Informer)> {
        self.kinds.iter().find(|(r, _)| r.plural == plural)
    }

    /// Every object (as queue key) that names `uid` as an owner.
    fn dependents(&self, uid: &str) -> Vec<(&'static str, Arc<Value>)> {
        self.kinds
            .iter()
            .flat_map(|(r, i)| i.owned_by(uid).into_iter().map(move |o| (r.plural, o)))
            .collect()
    }

    /// The queue keys of the followed owners of `obj`.
    fn owner_keys(&self, obj: &Value) -> Vec<(&'static str, String)> {
        let namespace = object::namespace(obj).unwrap_or_default();
        object::owner_references(obj)
            .iter()
            .filter_map(|r| {
                let resource = resources::find_kind(&r.api_version, &r.kind)?;
                self.informer(resource.plural)?;
                let key = if resource.namespaced {
                    format!("{namespace}/{}", r.name)
                } else {
                    r.name.clone()
                };
                Some((resource.plural, key))
            })
            .collect()
    }

    /// The keys a change makes worth a look.
    fn keys_of(&self, plural: &'static str, change: &Change) -> Vec<(&'static str, String)> {
        match change {
            Change::Applied { new, .. } => {
                let mut keys = vec![(plural, key_of(new))];
                keys.extend(self.owner_keys(new));
                keys
            }
            Change::Deleted(old) => {
                let mut keys = self.owner_keys(old);
                if let Some(uid) = object::uid(old) {
                    keys.extend(
                        self.dependents(uid)
                            .into_iter()
                            .map(|(p, d)| (p, key_of(&d))),
                    );
                }
                keys
            }
            Change::Resynced => self.interesting(plural),
        }
    }

    /// The keys of one kind's objects that have owners or propagation finalizers.
    fn interesting(&self, plural: &'static str) -> Vec<(&'static str, String)> {
        let Some((_, informer)) = self.informer(plural) else {
            return Vec::new();
        };
        informer
            .list()
            .iter()
            .filter(|o| {
                !object::owner_references(o).is_empty()
                    || (object::deletion_timestamp(o).is_some()
                        && object::finalizers(o)
                            .iter()
                            .any(|f| f == ORPHAN || f == FOREGROUND))
            })
            .map(|o| (plural, key_of(o)))
            .collect()
    }
}

async fn owner_state(
    ctx: &ControllerContext,
    graph: &Graph,
    namespace: Option<&str>,
    reference: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> OwnerState {
    let Some(resource) = resources::find_kind(&reference.api_version, &reference.kind) else {
        // A kind this server does not serve cannot be checked: never delete on it.
        return OwnerState::Present;
    };
    let ns = if resource.namespaced { namespace } else { None };
    if let Some((_, informer)) = graph.informer(resource.plural) {
        let key = match ns {
            Some(ns) => format!("{ns}/{}", reference.name),
            None => reference.name.clone(),
        };
        if informer
            .get(&key)
            .is_some_and(|o| object::uid(&o) == Some(reference.uid.as_str()))
        {
            return OwnerState::Present;
        }
    }
    match ctx.client.get(resource, ns, &reference.name).await {
        Ok(live) if object::uid(&live) == Some(reference.uid.as_str()) => OwnerState::Present,
        Ok(_) => OwnerState::Absent,
        Err(e) if e.code() == 404 => OwnerState::Absent,
        Err(e) => {
            tracing::debug!(error = %e, owner = reference.name, "cannot read an owner");
            OwnerState::Unknown
        }
    }
}

fn ignore_gone(result: Result<Value, StatusError>) -> Result<(), StatusError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code() == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn remove_finalizer(
    ctx: &ControllerContext,
    resource: &Resource,
    obj: &Value,
    finalizer: &str,
) -> Result<(), StatusError> {
    let rest: Vec<String> = object::finalizers(obj)
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    let patch = json!({"metadata": {
        "finalizers": rest,
        "resourceVersion": object::resource_version(obj),
    }});
    let name = object::name(obj).unwrap_or_default();
    ignore_gone(
        ctx.client
            .merge_patch(resource, object::namespace(obj), name, None, &patch)
            .await,
    )
}

async fn reconcile(
    ctx: &ControllerContext,
    graph: &Graph,
    plural: &'static str,
    key: &str,
) -> anyhow::Result<Requeue> {
    let Some((resource, informer)) = graph.informer(plural) else {
        return Ok(Requeue::Done);
    };
    let Some(obj) = informer.get(key) else {
        return Ok(Requeue::Done);
    };
    let (namespace, name) = split_key(key);
    let uid = object::uid(&obj).unwrap_or_default().to_string();

    // As an owner being deleted with a propagation finalizer. Only then are its dependents
    // looked up: a ReplicaSet is reconciled at every change of one of its pods.
    let dependents = if object::deletion_timestamp(&obj).is_some() {
        graph.dependents(&uid)
    } else {
        Vec::new()
    };
    match plan_owner(&obj, &dependents) {
        OwnerAction::Nothing => {}
        OwnerAction::Orphan(_) => {
            for (dep_plural, dep) in &dependents {
                let Some((dep_resource, _)) = graph.informer(dep_plural) else {
                    continue;
                };
                let patch = json!({"metadata": {
                    "ownerReferences": without_owners(dep, std::slice::from_ref(&uid)),
                    "resourceVersion": object::resource_version(dep),
                }});
                let dep_name = object::name(dep).unwrap_or_default();
                ignore_gone(
                    ctx.client
                        .merge_patch(dep_resource, object::namespace(dep), dep_name, None, &patch)
                        .await,
                )?;
            }
            remove_finalizer(ctx, resource, &obj, ORPHAN).await?;
            tracing::info!(object = key, kind = resource.kind, "dependents orphaned");
            return Ok(Requeue::Done);
        }
        OwnerAction::Foreground { delete, wait } => {
            for (dep_plural, dep) in &dependents {
                if !delete.contains(&key_of(dep)) {
                    continue;
                }
                let Some((dep_resource, _)) = graph.informer(dep_plural) else {
                    continue;
                };
                let options = DeleteOptions {
                    propagation: Some("Foreground"),
                    grace_period_seconds: None,
                    precondition_uid: object::uid(dep).map(str::to_string),
                };
                let dep_name = object::name(dep).unwrap_or_default();
                match ctx
                    .client
                    .delete(dep_resource, object::namespace(dep), dep_name, &options)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.code() == 404 || e.code() == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if wait {
                return Ok(Requeue::After(FOREGROUND_POLL));
            }
            remove_finalizer(ctx, resource, &obj, FOREGROUND).await?;
            tracing::info!(
                object = key,
                kind = resource.kind,
                "foreground deletion done"
            );
            return Ok(Requeue::Done);
        }
    }

    // As a dependent.
    let references = object::owner_references(&obj);
    if references.is_empty() || object::deletion_timestamp(&obj).is_some() {
        return Ok(Requeue::Done);
    }
    let mut owners = Vec::with_capacity(references.len());
    for reference in &references {
        let state = owner_state(ctx, graph, namespace, reference).await;
        owners.push((reference.uid.clone(), state));
    }
    match plan_dependent(&obj, &owners) {
        DependentAction::Keep => Ok(Requeue::Done),
        DependentAction::Retry => Err(anyhow::anyhow!("an owner of {key} could not be read")),
        DependentAction::Delete => {
            let options = DeleteOptions {
                propagation: Some("Background"),
                grace_period_seconds: None,
                precondition_uid: Some(uid),
            };
            match ctx.client.delete(resource, namespace, name, &options).await {
                Ok(_) => {
                    tracing::info!(object = key, kind = resource.kind, "owners gone: deleted");
                    Ok(Requeue::Done)
                }
                Err(e) if e.code() == 404 || e.code() == 409 => Ok(Requeue::Done),
                Err(e) => Err(e.into()),
            }
        }
        DependentAction::RemoveOwners(gone) => {
            let patch = json!({"metadata": {
                "ownerReferences": without_owners(&obj, &gone),
                "resourceVersion": object::resource_version(&obj),
            }});
            ignore_gone(
                ctx.client
                    .merge_patch(resource, namespace, name, None, &patch)
                    .await,
            )?;
            Ok(Requeue::Done)
        }
    }
}

/// Follows the owner graph of the followed kinds and collects garbage.
pub(crate) async fn run(ctx: ControllerContext, mut stop: StopSignal) -> anyhow::Result<()> {
    let graph = Graph::new(&ctx.informers);
    let queue: WorkQueue<(&'static str, String)> =
        WorkQueue::new("garbage-collector", QUEUE_KEYS_MAX);
    let mut feeders = Vec::new();
    for (resource, informer) in &graph.kinds {
        let plural = resource.plural;
        let g = graph.clone();
        feeders.push(feed(informer, &queue, move |change| {
            g.keys_of(plural, change)
        }));
    }
    for (_, informer) in &graph.kinds {
        tokio::select! {
            _ = stop.stopped() => return Ok(()),
            _ = informer.wait_synced() => {}
        }
    }
    let resync_graph = graph.clone();
    work(
        "garbage-collector",
        queue,
        feeders,
        &mut stop,
        move |queue| {
            for (resource, _) in &resync_graph.kinds {
                for key in resync_graph.interesting(resource.plural) {
                    queue.add(key);
                }
            }
        },
        |(plural, key): (&'static str, String)| {
            let ctx = ctx.clone();
            let graph = graph.clone();
            async move { reconcile(&ctx, &graph, plural, &key).await }
        },
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str, deleting: bool, finalizers: &[&str], owners: &[(&str, bool)]) -> Value {
        let refs: Vec<Value> = owners
            .iter()
            .map(|(uid, block)| {
                json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": uid,
                       "blockOwnerDeletion": block})
            })
            .collect();
        let mut o = json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
            "finalizers": finalizers, "ownerReferences": refs}});
        if deleting {
            o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        o
    }

    #[test]
    fn dependents_go_only_when_every_owner_is_confirmed_gone() {
        use OwnerState::*;
        let d = obj("d", false, &[], &[("a", false), ("b", false)]);
        type Case = (&'static str, Vec<(String, OwnerState)>, DependentAction);
        let cases: Vec<Case> = vec![
            ("no owners", vec![], DependentAction::Keep),
            (
                "all present",
                vec![("a".into(), Present), ("b".into(), Present)],
                DependentAction::Keep,
            ),
            (
                "all gone",
                vec![("a".into(), Absent), ("b".into(), Absent)],
                DependentAction::Delete,
            ),
            (
                "one gone",
                vec![("a".into(), Absent), ("b".into(), Present)],
                DependentAction::RemoveOwners(vec!["a".into()]),
            ),
            (
                "unknown",
                vec![("a".into(), Absent), ("b".into(), Unknown)],
                DependentAction::Retry,
            ),
        ];
        for (name, owners, want) in cases {
            assert_eq!(plan_dependent(&d, &owners), want, "{name}");
        }
        let deleting = obj("d", true, &[], &[("a", false)]);
        assert_eq!(
            plan_dependent(&deleting, &[("a".into(), Absent)]),
            DependentAction::Keep
        );
    }

    #[test]
    fn owners_with_propagation_finalizers_orphan_or_wait() {
        let free = obj("free", false, &[], &[("uid-o", false)]);
        let blocking = obj("blocking", false, &[], &[("uid-o", true)]);
        let going = obj("going", true, &[], &[("uid-o", true)]);
        let cases = [
            (
                "live owner",
                obj("o", false, &[], &[]),
                vec![free.clone()],
                OwnerAction::Nothing,
            ),
            (
                "plain delete",
                obj("o", true, &["x"], &[]),
                vec![free.clone()],
                OwnerAction::Nothing,
            ),
            (
                "orphan",
                obj("o", true, &["orphan"], &[]),
                vec![free.clone()],
                OwnerAction::Orphan(vec!["ns/free".into()]),
            ),
            (
                "foreground, none blocking",
                obj("o", true, &["foregroundDeletion"], &[]),
                vec![free.clone()],
                OwnerAction::Foreground {
                    delete: vec!["ns/free".into()],
                    wait: false,
                },
            ),
            (
                "foreground, blocking",
                obj("o", true, &["foregroundDeletion"], &[]),
                vec![blocking, going],
                OwnerAction::Foreground {
                    delete: vec!["ns/blocking".into()],
                    wait: true,
                },
            ),
            (
                "foreground, done",
                obj("o", true, &["foregroundDeletion"], &[]),
                vec![],
                OwnerAction::Foreground {
                    delete: vec![],
                    wait: false,
                },
            ),
        ];
        for (name, owner, dependents, want) in cases {
            let dependents: Vec<(&str, Arc<Value>)> = dependents
                .into_iter()
                .map(|d| ("pods", Arc::new(d)))
                .collect();
            assert_eq!(plan_owner(&owner, &dependents), want, "{name}");
        }
    }

    #[test]
    fn removing_owners_keeps_the_others() {
        let d = obj("d", false, &[], &[("a", false), ("b", true)]);
        let left = without_owners(&d, &["a".to_string()]);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["uid"], "b");
    }
}
