//! `/keelson/v1/cluster`: the masters, which one leads, and the store's state; and the record
//! each master keeps in the store of where its API is served.

use std::time::Duration;

use keelson_raft::Consistency;
use serde_json::{json, Value};
use tokio::sync::watch as signal;

use super::ApiState;

/// Where masters record their API address.
pub(crate) const MASTERS_PREFIX: &str = "/keelson/masters/";
/// How often registration is retried until it succeeds.
const REGISTER_RETRY: Duration = Duration::from_secs(2);
const REGISTER_ATTEMPTS_MAX: usize = 300;

/// Records this master's API address in the store (until it succeeds, bounded).
pub(crate) async fn register(state: ApiState, mut stopped: signal::Receiver<bool>) {
    let key = format!("{MASTERS_PREFIX}{}", state.name);
    let value = json!({"name": *state.name, "api": *state.api_url}).to_string();
    for _ in 0..REGISTER_ATTEMPTS_MAX {
        let txn = keelson_raft::Txn::put(key.as_bytes(), value.as_bytes());
        match state.storage.store().txn(txn).await {
            Ok(_) => return,
            Err(e) => tracing::debug!(error = %e, "cannot record this master's API address yet"),
        }
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tokio::time::sleep(REGISTER_RETRY) => {}
        }
    }
    tracing::warn!("gave up recording this master's API address in the store");
}

/// The cluster as this master sees it.
pub(crate) async fn cluster_info(state: &ApiState) -> Value {
    let store = state.storage.store();
    let status = store.status().await;
    let mut apis = std::collections::HashMap::new();
    let range = keelson_raft::RangeRequest {
        range: keelson_raft::KeyRange::prefix(MASTERS_PREFIX.as_bytes()),
        revision: 0,
        limit: 1000,
        consistency: Consistency::Serializable,
    };
    if let Ok(response) = store.range(range).await {
        for kv in response.kvs {
            if let Ok(record) = serde_json::from_slice::<Value>(&kv.value) {
                if let (Some(name), Some(api)) = (record["name"].as_str(), record["api"].as_str()) {
                    apis.insert(name.to_string(), api.to_string());
                }
            }
        }
    }
    let members: Vec<Value> = status
        .members
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "peer": m.addr,
                "api": apis.get(&m.name),
                "voter": m.voter,
                "leader": status.leader.as_deref() == Some(m.name.as_str()),
            })
        })
        .collect();
    json!({
        "kind": "Cluster",
        "apiVersion": "keelson/v1",
        "answeredBy": status.name,
        "leader": status.leader,
        "term": status.term,
        "revision": status.revision,
        "compactedRevision": status.compacted_revision,
        "appliedIndex": status.applied_index,
        "members": members,
    })
}
