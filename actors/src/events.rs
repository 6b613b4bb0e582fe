//! Events for what the scheduler and controllers do, as `kubectl describe` shows them.
//! Recording never blocks a control loop: events go through a bounded queue (dropped with a
//! metric when it is full), and a repeated event (same object, reason and message) bumps the
//! count of the one already written instead of creating another.

use std::collections::{HashMap, VecDeque};

use keelson_api::object;
use keelson_api::resources;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::client::ApiClient;
use crate::supervisor::StopSignal;

/// Events waiting to be written.
const QUEUE_EVENTS_MAX: usize = 4096;
/// Recent events remembered for aggregation.
const RECENT_EVENTS_MAX: usize = 4096;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

#[derive(Debug)]
struct Pending {
    involved: Value,
    namespace: String,
    event_type: EventType,
    reason: String,
    message: String,
    component: &'static str,
}

/// Records events; clones share one queue.
#[derive(Clone)]
pub struct EventRecorder {
    tx: mpsc::Sender<Pending>,
    component: &'static str,
}

impl EventRecorder {
    /// A recorder and the loop that writes its events until `stop`.
    pub fn start(client: ApiClient, stop: StopSignal) -> EventRecorder {
        let (tx, rx) = mpsc::channel(QUEUE_EVENTS_MAX);
        tokio::spawn(write_loop(client, rx, stop));
        EventRecorder {
            tx,
            component: "keelson",
        }
    }

    /// The same recorder, naming `component` as the source.
    pub fn for_component(&self, component: &'static str) -> EventRecorder {
        EventRecorder {
            tx: self.tx.clone(),
            component,
        }
    }

    /// Records an event about `obj` (any object with kind, apiVersion and metadata).
    pub fn record(&self, obj: &Value, event_type: EventType, reason: &str, message: &str) {
        let namespace = object::namespace(obj)
            .filter(|ns| !ns.is_empty())
            .unwrap_or("default")
            .to_string();
        let involved = json!({
            "kind": object::kind(obj).unwrap_or_default(),
            "apiVersion": object::api_version(obj).unwrap_or_default(),
            "namespace": object::namespace(obj).unwrap_or_default(),
            "name": object::name(obj).unwrap_or_default(),
            "uid": object::uid(obj).unwrap_or_default(),
            "resourceVersion": object::resource_version(obj).unwrap_or_default(),
        });
        let pending = Pending {
            involved,
            namespace,
            event_type,
            reason: reason.to_string(),
            message: message.to_string(),
            component: self.component,
        };
        if self.tx.try_send(pending).is_err() {
            metrics::counter!("keelson_events_dropped_total").increment(1);
        }
    }
}

/// What was written for a (uid, reason, message).
struct Written {
    namespace: String,
    name: String,
    count: i64,
}

async fn write_loop(client: ApiClient, mut rx: mpsc::Receiver<Pending>, mut stop: StopSignal) {
    let Some(events) = resources::find("", "v1", "events") else {
        return;
    };
    let mut recent: HashMap<(String, String, String), Written> = HashMap::new();
    let mut order: VecDeque<(String, String, String)> = VecDeque::new();
    loop {
        let pending = tokio::select! {
            _ = stop.stopped() => return,
            pending = rx.recv() => match pending {
                Some(p) => p,
                None => return,
            },
        };
        let now = object::format_time(jiff::Timestamp::now());
        let uid = pending.involved["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let identity = (uid, pending.reason.clone(), pending.message.clone());
        if let Some(written) = recent.get_mut(&identity) {
            let count = written.count + 1;
            let patch = json!({"count": count, "lastTimestamp": now});
            let result = client
                .merge_patch(
                    events,
                    Some(&written.namespace),
                    &written.name,
                    None,
                    &patch,
                )
                .await;
            if result.is_ok() {
                written.count = count;
                continue;
            }
            recent.remove(&identity);
        }
        let object_name = pending.involved["name"].as_str().unwrap_or("object");
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                // Named as Kubernetes names events (`object.hex`): a generateName ending
                // in "." fails validation of the name prefix.
                "name": format!("{}.{:016x}", truncate(object_name, 200), rand::random::<u64>()),
                "namespace": pending.namespace,
            },
            "involvedObject": pending.involved,
            "reason": pending.reason,
            "message": truncate(&pending.message, 1024),
            "type": pending.event_type.as_str(),
            "source": {"component": pending.component},
            "reportingComponent": pending.component,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
        });
        match client
            .create(events, Some(&pending.namespace), &event)
            .await
        {
            Ok(created) => {
                let name = object::name(&created).unwrap_or_default().to_string();
                if order.len() >= RECENT_EVENTS_MAX {
                    if let Some(oldest) = order.pop_front() {
                        recent.remove(&oldest);
                    }
                }
                order.push_back(identity.clone());
                recent.insert(
                    identity,
                    Written {
                        namespace: pending.namespace,
                        name,
                        count: 1,
                    },
                );
            }
            Err(e) => {
                tracing::debug!(error = %e, reason = %pending.reason, "cannot write an event");
            }
        }
    }
}

fn truncate(text: &str, bytes_max: usize) -> &str {
    if text.len() <= bytes_max {
        return text;
    }
    let mut end = bytes_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
