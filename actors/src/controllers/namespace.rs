//! The namespace controller: deleting a namespace deletes everything in it, then the namespace.
//!
//! A namespace with a deletionTimestamp turns `Terminating`; every namespaced object in it is
//! deleted through the API; once none is left the `kubernetes` finalizer is removed from
//! `spec.finalizers` and the API deletes the namespace.

use std::time::Duration;

use keelson_api::object;
use keelson_api::resources::{self, Resource};
use keelson_api::status::StatusError;
use serde_json::Value;

use super::{feed, work, Requeue, QUEUE_KEYS_MAX};
use crate::client::DeleteOptions;
use crate::control_plane::ControllerContext;
use crate::informer::Change;
use crate::supervisor::StopSignal;
use crate::workqueue::WorkQueue;

/// The finalizer this controller owns in `spec.finalizers`.
const NAMESPACE_FINALIZER: &str = "kubernetes";
/// How soon a namespace whose objects are still going is looked at again.
const CONTENT_POLL: Duration = Duration::from_millis(500);

/// What to do with one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NamespaceAction {
    /// Not being deleted, or already finalized.
    Nothing,
    /// Mark it `Terminating` first.
    SetTerminating,
    /// Delete what is left in it (these namespaced resources are not known empty).
    DeleteContent,
    /// Empty: remove the finalizer.
    Finalize,
}

/// The pure decision: `remaining` is how many objects are still in the namespace (`None` when
/// not counted yet).
pub(crate) fn decide(namespace: &Value, remaining: Option<usize>) -> NamespaceAction {
    if object::deletion_timestamp(namespace).is_none() {
        return NamespaceAction::Nothing;
    }
    let has_finalizer = spec_finalizers(namespace)
        .iter()
        .any(|f| f == NAMESPACE_FINALIZER);
    if !has_finalizer {
        return NamespaceAction::Nothing;
    }
    if namespace.pointer("/status/phase").and_then(Value::as_str) != Some("Terminating") {
        return NamespaceAction::SetTerminating;
    }
    match remaining {
        Some(0) => NamespaceAction::Finalize,
        _ => NamespaceAction::DeleteContent,
    }
}

fn spec_finalizers(namespace: &Value) -> Vec<String> {
    namespace
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The namespace without this controller's finalizer.
pub(crate) fn without_finalizer(namespace: &Value) -> Value {
    let mut updated = namespace.clone();
    let rest: Vec<Value> = spec_finalizers(namespace)
        .into_iter()
        .filter(|f| f != NAMESPACE_FINALIZER)
        .map(Value::String)
        .collect();
    if let Some(spec) = updated.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("finalizers".into(), Value::Array(rest));
    }
    updated
}

fn namespaced_resources() -> impl Iterator<Item = &'static Resource> {
    resources::RESOURCES.iter().filter(|r| r.namespaced)
}

/// Deletes what is in `namespace`; returns how many objects were still there.
async fn delete_content(ctx: &ControllerContext, namespace: &str) -> Result<usize, StatusError> {
    let mut remaining = 0;
    for resource in namespaced_resources() {
        let items = ctx.client.list(resource, Some(namespace), None).await?;
        remaining += items.len();
        for item in items {
            if object::deletion_timestamp(&item).is_some() {
                continue;
            }
            let Some(name) = object::name(&item) else {
                continue;
            };
            let options = DeleteOptions {
                propagation: Some("Background"),
                grace_period_seconds: None,
                precondition_uid: object::uid(&item).map(str::to_string),
            };
            match ctx
                .client
                .delete(resource, Some(namespace), name, &options)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == 404 || e.code() == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(remaining)
}

async fn count_content(ctx: &ControllerContext, namespace: &str) -> Result<usize, StatusError> {
    let mut remaining = 0;
    for resource in namespaced_resources() {
        remaining += ctx
            .client
            .list(resource, Some(namespace), None)
            .await?
            .len();
    }
    Ok(remaining)
}

async fn reconcile(
    ctx: &ControllerContext,
    resource: &'static Resource,
    name: &str,
) -> anyhow::Result<Requeue> {
    // A live read: the decision to finalize must not rest on a stale cache.
    let namespace = match ctx.client.get(resource, None, name).await {
        Ok(ns) => ns,
        Err(e) if e.code() == 404 => return Ok(Requeue::Done),
        Err(e) => return Err(e.into()),
    };
    match decide(&namespace, None) {
        NamespaceAction::Nothing | NamespaceAction::Finalize => Ok(Requeue::Done),
        NamespaceAction::SetTerminating => {
            let mut updated = namespace.clone();
            if let Some(map) = updated.as_object_mut() {
                map.insert("status".into(), serde_json::json!({"phase": "Terminating"}));
            }
            ctx.client
                .update_status(resource, None, name, &updated)
                .await?;
            Ok(Requeue::After(Duration::ZERO))
        }
        NamespaceAction::DeleteContent => {
            let remaining = match delete_content(ctx, name).await? {
                0 => 0,
                _ => count_content(ctx, name).await?,
            };
            if decide(&namespace, Some(remaining)) != NamespaceAction::Finalize {
                return Ok(Requeue::After(CONTENT_POLL));
            }
            match ctx
                .client
                .update(resource, None, name, &without_finalizer(&namespace))
                .await
            {
                Ok(_) => {
                    tracing::info!(namespace = name, "namespace emptied and finalized");
                    Ok(Requeue::Done)
                }
                Err(e) if e.code() == 404 => Ok(Requeue::Done),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Watches namespaces and finishes the deletion of those marked for it.
pub(crate) async fn run(ctx: ControllerContext, mut stop: StopSignal) -> anyhow::Result<()> {
    let resource = resources::find("", "v1", "namespaces")
        .ok_or_else(|| anyhow::anyhow!("namespaces are not registered"))?;
    let informer = ctx.informers.of(resource);
    let queue: WorkQueue<String> = WorkQueue::new("namespace", QUEUE_KEYS_MAX);
    let resync_informer = informer.clone();
    let feed_informer = informer.clone();
    let feeder = feed(&informer, &queue, move |change| match change {
        Change::Applied { new, .. } if object::deletion_timestamp(new).is_some() => {
            object::name(new).map(str::to_string).into_iter().collect()
        }
        Change::Applied { .. } | Change::Deleted(_) => Vec::new(),
        Change::Resynced => terminating(&feed_informer),
    });
    tokio::select! {
        _ = stop.stopped() => return Ok(()),
        _ = informer.wait_synced() => {}
    }
    work(
        "namespace",
        queue,
        vec![feeder],
        &mut stop,
        move |queue| {
            for name in terminating(&resync_informer) {
                queue.add(name);
            }
        },
        |name: String| {
            let ctx = ctx.clone();
            async move { reconcile(&ctx, resource, &name).await }
        },
    )
    .await;
    Ok(())
}

fn terminating(informer: &crate::informer::Informer) -> Vec<String> {
    informer
        .list()
        .iter()
        .filter(|ns| object::deletion_timestamp(ns).is_some())
        .filter_map(|ns| object::name(ns).map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(deleting: bool, phase: &str, finalizers: &[&str]) -> Value {
        let mut ns = json!({
            "metadata": {"name": "team"},
            "spec": {"finalizers": finalizers},
            "status": {"phase": phase},
        });
        if deleting {
            ns["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        ns
    }

    #[test]
    fn decides_each_step_of_a_namespace_deletion() {
        let cases = [
            (
                "live",
                ns(false, "Active", &["kubernetes"]),
                None,
                NamespaceAction::Nothing,
            ),
            (
                "marked",
                ns(true, "Active", &["kubernetes"]),
                None,
                NamespaceAction::SetTerminating,
            ),
            (
                "has content",
                ns(true, "Terminating", &["kubernetes"]),
                Some(3),
                NamespaceAction::DeleteContent,
            ),
            (
                "not counted",
                ns(true, "Terminating", &["kubernetes"]),
                None,
                NamespaceAction::DeleteContent,
            ),
            (
                "empty",
                ns(true, "Terminating", &["kubernetes"]),
                Some(0),
                NamespaceAction::Finalize,
            ),
            (
                "finalized",
                ns(true, "Terminating", &[]),
                Some(0),
                NamespaceAction::Nothing,
            ),
        ];
        for (name, namespace, remaining, want) in cases {
            assert_eq!(decide(&namespace, remaining), want, "{name}");
        }
    }

    #[test]
    fn finalizing_keeps_other_finalizers() {
        let updated = without_finalizer(&ns(true, "Terminating", &["kubernetes", "other"]));
        assert_eq!(updated["spec"]["finalizers"], json!(["other"]));
    }
}
