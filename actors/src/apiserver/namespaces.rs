//! Namespace lifecycle on the API side: the namespaces every cluster has, and the removal of
//! a deleted namespace's contents before the namespace itself goes.
//!
//! Only the master whose store member leads does the removal; any master may resume it after
//! a failover, because the state (a namespace with a deletionTimestamp) is in the store.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use keelson_api::object;
use keelson_api::resources::{self, Resource};
use keelson_api::status::StatusError;
use keelson_raft::Consistency;
use serde_json::{json, Value};
use tokio::sync::watch as signal;

use super::objects::{delete, now_rfc3339};
use super::request::ApiRequest;
use super::route::ResourcePath;
use super::storage::{collection_prefix, object_key};
use super::ApiState;

/// The namespaces a cluster starts with.
const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];
/// The finalizer the namespace lifecycle owns in `spec.finalizers`.
const NAMESPACE_FINALIZER: &str = "kubernetes";
/// How often terminating namespaces are looked at without a nudge.
const SCAN_INTERVAL: Duration = Duration::from_secs(5);
/// Start-up retries for creating the initial namespaces.
const CREATE_ATTEMPTS_MAX: usize = 300;

fn namespaces() -> Option<&'static Resource> {
    resources::find("", "v1", "namespaces")
}

fn internal_request(method: Method) -> ApiRequest {
    ApiRequest {
        method,
        path: String::new(),
        query: Default::default(),
        headers: HeaderMap::new(),
        body: Bytes::new(),
    }
}

async fn create_initial(state: &ApiState) -> Result<(), StatusError> {
    let Some(resource) = namespaces() else {
        return Err(StatusError::internal("namespaces are not registered"));
    };
    for name in INITIAL_NAMESPACES {
        let key = object_key(resource, None, name);
        if state
            .storage
            .get(&key, Consistency::Linearizable)
            .await?
            .is_some()
        {
            continue;
        }
        let namespace = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": now_rfc3339(),
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": [NAMESPACE_FINALIZER]},
            "status": {"phase": "Active"},
        });
        // Another master may have created it meanwhile; either way it exists.
        let _ = state.storage.create(&key, &namespace).await?;
    }
    Ok(())
}

/// Creates the initial namespaces, then finishes the deletion of namespaces marked for it.
pub(crate) async fn run(state: ApiState, mut stopped: signal::Receiver<bool>) {
    for attempt in 0..CREATE_ATTEMPTS_MAX {
        match create_initial(&state).await {
            Ok(()) => break,
            Err(e) => {
                if attempt % 10 == 0 {
                    tracing::info!(error = %e, "cannot create the initial namespaces yet");
                }
            }
        }
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = state.namespaces_changed.notified() => {}
            _ = tokio::time::sleep(SCAN_INTERVAL) => {}
        }
        let store = state.storage.store();
        if store.leader().as_deref() != Some(store.name()) {
            continue;
        }
        if let Err(e) = finish_deletions(&state).await {
            tracing::info!(error = %e, "namespace cleanup did not finish; retrying");
        }
    }
}

async fn finish_deletions(state: &ApiState) -> Result<(), StatusError> {
    let Some(resource) = namespaces() else {
        return Ok(());
    };
    let page = state
        .storage
        .page(
            &collection_prefix(resource, None),
            None,
            0,
            10_000,
            Consistency::Linearizable,
        )
        .await?;
    for stored in page.items {
        if object::deletion_timestamp(&stored.object).is_none() {
            continue;
        }
        let Some(name) = object::name(&stored.object).map(str::to_string) else {
            continue;
        };
        if empty_namespace(state, &name).await? {
            finalize(state, resource, &name).await?;
        }
    }
    Ok(())
}

/// Deletes what is in the namespace; true when nothing is left.
async fn empty_namespace(state: &ApiState, namespace: &str) -> Result<bool, StatusError> {
    let mut empty = true;
    for resource in resources::RESOURCES.iter().filter(|r| r.namespaced) {
        let prefix = collection_prefix(resource, Some(namespace));
        let page = state
            .storage
            .page(&prefix, None, 0, 1000, Consistency::Linearizable)
            .await?;
        for stored in page.items {
            empty = false;
            if object::deletion_timestamp(&stored.object).is_some() {
                continue;
            }
            let path = ResourcePath {
                resource,
                namespace: Some(namespace.to_string()),
                name: object::name(&stored.object).map(str::to_string),
                subresource: None,
                watch: false,
            };
            match delete(state, &internal_request(Method::DELETE), &path).await {
                Ok(_) => {}
                Err(e) if e.code() == 404 || e.code() == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(empty)
}

/// Removes the namespace finalizer; the namespace goes when no finalizer is left.
async fn finalize(state: &ApiState, resource: &Resource, name: &str) -> Result<(), StatusError> {
    let key = object_key(resource, None, name);
    let Some(current) = state.storage.get(&key, Consistency::Linearizable).await? else {
        return Ok(());
    };
    let mut updated = current.object.clone();
    if let Some(finalizers) = updated
        .pointer_mut("/spec/finalizers")
        .and_then(Value::as_array_mut)
    {
        finalizers.retain(|f| f.as_str() != Some(NAMESPACE_FINALIZER));
    }
    let spec_empty = updated
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if spec_empty && object::finalizers(&updated).is_empty() {
        let _ = state.storage.delete(&key, current.revision).await?;
        tracing::info!(namespace = name, "namespace deleted");
    } else if updated != current.object {
        let _ = state
            .storage
            .update(&key, current.revision, &updated)
            .await?;
    }
    Ok(())
}
