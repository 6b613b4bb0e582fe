//! Events about pods (Pulling, Started, Killing, BackOff, Unhealthy...), written in the
//! background through a bounded queue: a kubelet that cannot write events drops them rather
//! than slowing its pods down.

use keelson_api::object;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api::ApiClient;

/// Events waiting to be written; more are dropped.
const EVENTS_QUEUED_MAX: usize = 256;

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Value>,
    node: String,
}

impl Recorder {
    /// A recorder and the task that writes its events.
    pub fn start(api: ApiClient, node: &str) -> Recorder {
        let (tx, mut rx) = mpsc::channel::<Value>(EVENTS_QUEUED_MAX);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let namespace = object::namespace(&event).unwrap_or("default").to_string();
                let path = format!("/api/v1/namespaces/{namespace}/events");
                if let Err(e) = api
                    .request(Method::POST, &path, "application/json", Some(&event))
                    .await
                {
                    tracing::debug!(error = %e, "cannot write an event");
                }
            }
        });
        Recorder {
            tx,
            node: node.to_string(),
        }
    }

    /// Records an event about a pod (and one of its containers).
    pub fn pod(
        &self,
        pod: &Value,
        container: Option<&str>,
        kind: &str,
        reason: &str,
        message: &str,
    ) {
        let namespace = object::namespace(pod).unwrap_or("default");
        let name = object::name(pod).unwrap_or_default();
        let now = object::format_time(jiff::Timestamp::now());
        let mut involved = json!({
            "kind": "Pod",
            "apiVersion": "v1",
            "namespace": namespace,
            "name": name,
            "uid": object::uid(pod).unwrap_or_default(),
        });
        if let Some(container) = container {
            involved["fieldPath"] = json!(format!("spec.containers{{{container}}}"));
        }
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "namespace": namespace,
                "name": format!("{name}.{:x}", rand::random::<u64>()),
            },
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": self.node},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        if self.tx.try_send(event).is_err() {
            tracing::debug!(reason, "the event queue is full; dropping an event");
        }
    }
}
