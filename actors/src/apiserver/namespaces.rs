//! Namespace lifecycle on the API side: the namespaces every cluster has.

use std::time::Duration;

use keelson_api::resources::{self, Resource};
use keelson_api::status::StatusError;
use keelson_raft::Consistency;
use serde_json::json;
use tokio::sync::watch as signal;

use super::objects::now_rfc3339;
use super::storage::object_key;
use super::ApiState;

/// The namespaces a cluster starts with.
const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];
/// The finalizer the namespace controller owns in `spec.finalizers`.
const NAMESPACE_FINALIZER: &str = "kubernetes";
/// Start-up retries for creating the initial namespaces.
const CREATE_ATTEMPTS_MAX: usize = 300;

fn namespaces() -> Option<&'static Resource> {
    resources::find("", "v1", "namespaces")
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
        let _ = state.storage.create(&key, namespace).await?;
    }
    Ok(())
}

/// Creates the initial namespaces. Deleting a namespace's contents and then the namespace is
/// the namespace controller's work (`controllers::namespace`).
pub(crate) async fn run(state: ApiState, mut stopped: signal::Receiver<bool>) {
    for attempt in 0..CREATE_ATTEMPTS_MAX {
        match create_initial(&state).await {
            Ok(()) => return,
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
}
