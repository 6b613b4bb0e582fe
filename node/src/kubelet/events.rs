//! Events about pods (Pulling, Started, Killing, BackOff, Unhealthy...), written in the
//! background through a bounded queue: a kubelet that cannot write events drops them rather
//! than slowing its pods down. A repeat of an event (same pod, container, reason and message,
//! e.g. a crash-looping container's BackOff) bumps the `count` and `lastTimestamp` of the one
//! already written, as client-go's event correlator does, instead of creating another. A
//! progress event (an image pull's) is one Event per pod, container and reason whose message
//! is replaced as the work advances.

use std::collections::{HashMap, VecDeque};

use keelson_api::object;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api::{ApiClient, ApiError};

/// Events waiting to be written; more are dropped.
const EVENTS_QUEUED_MAX: usize = 256;
/// Events remembered for aggregation (the oldest are forgotten first).
const RECENT_EVENTS_MAX: usize = 1024;

/// What identifies repeats of one event: pod uid, field path, reason, message (empty for a
/// progress event, whose message changes).
type Identity = (String, String, String, String);

fn identity(event: &Value, progress: bool) -> Identity {
    let text = |p: &str| {
        event
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (
        text("/involvedObject/uid"),
        text("/involvedObject/fieldPath"),
        text("/reason"),
        if progress {
            String::new()
        } else {
            text("/message")
        },
    )
}

/// The events written lately and their counts: a pure, bounded memory.
#[derive(Default)]
pub(crate) struct Aggregator {
    written: HashMap<Identity, (String, String, i64)>,
    order: VecDeque<Identity>,
}

/// What to do with an event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// Create it.
    Create,
    /// Patch the event `namespace/name` already written to this count.
    Bump {
        namespace: String,
        name: String,
        count: i64,
    },
}

impl Aggregator {
    pub(crate) fn decide(&self, event: &Value, progress: bool) -> Write {
        match self.written.get(&identity(event, progress)) {
            Some((namespace, name, count)) => Write::Bump {
                namespace: namespace.clone(),
                name: name.clone(),
                count: count + 1,
            },
            None => Write::Create,
        }
    }

    /// Remembers that `event` was written as `namespace/name` with `count`.
    pub(crate) fn written(
        &mut self,
        event: &Value,
        progress: bool,
        namespace: &str,
        name: &str,
        count: i64,
    ) {
        let id = identity(event, progress);
        if !self.written.contains_key(&id) {
            if self.order.len() >= RECENT_EVENTS_MAX {
                if let Some(oldest) = self.order.pop_front() {
                    self.written.remove(&oldest);
                }
            }
            self.order.push_back(id.clone());
        }
        self.written
            .insert(id, (namespace.to_string(), name.to_string(), count));
    }

    /// Forgets `event` (its object is gone: the next repeat creates a new one).
    pub(crate) fn forget(&mut self, event: &Value, progress: bool) {
        let id = identity(event, progress);
        self.written.remove(&id);
        self.order.retain(|o| o != &id);
    }
}

async fn write(api: &ApiClient, recent: &mut Aggregator, event: Value, progress: bool) {
    let namespace = object::namespace(&event).unwrap_or("default").to_string();
    if let Write::Bump {
        namespace,
        name,
        count,
    } = recent.decide(&event, progress)
    {
        let path = format!("/api/v1/namespaces/{namespace}/events/{name}");
        let mut patch = json!({"count": count, "lastTimestamp": event["lastTimestamp"]});
        if progress {
            patch["message"] = event["message"].clone();
        }
        match api
            .request(
                Method::PATCH,
                &path,
                "application/merge-patch+json",
                Some(&patch),
            )
            .await
        {
            Ok(_) => {
                recent.written(&event, progress, &namespace, &name, count);
                return;
            }
            // Expired (the event TTL) or deleted: write a new one.
            Err(ApiError::Status { code: 404, .. }) => recent.forget(&event, progress),
            Err(e) => {
                tracing::debug!(error = %e, "cannot update an event");
                return;
            }
        }
    }
    let path = format!("/api/v1/namespaces/{namespace}/events");
    match api
        .request(Method::POST, &path, "application/json", Some(&event))
        .await
    {
        Ok(created) => {
            let name = object::name(&created).unwrap_or_default().to_string();
            recent.written(&event, progress, &namespace, &name, 1);
        }
        Err(e) => tracing::debug!(error = %e, "cannot write an event"),
    }
}

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<(Value, bool)>,
    node: String,
}

impl Recorder {
    /// A recorder and the task that writes its events.
    pub fn start(api: ApiClient, node: &str) -> Recorder {
        let (tx, mut rx) = mpsc::channel::<(Value, bool)>(EVENTS_QUEUED_MAX);
        tokio::spawn(async move {
            let mut recent = Aggregator::default();
            while let Some((event, progress)) = rx.recv().await {
                write(&api, &mut recent, event, progress).await;
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
        self.send(pod, container, kind, reason, message, false);
    }

    /// Records progress (`reason` of a pod's container): the first call creates the Event,
    /// later ones replace its message and bump its count.
    pub fn progress(&self, pod: &Value, container: Option<&str>, reason: &str, message: &str) {
        self.send(pod, container, "Normal", reason, message, true);
    }

    fn send(
        &self,
        pod: &Value,
        container: Option<&str>,
        kind: &str,
        reason: &str,
        message: &str,
        progress: bool,
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
        if self.tx.try_send((event, progress)).is_err() {
            tracing::debug!(reason, "the event queue is full; dropping an event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(uid: &str, reason: &str, message: &str) -> Value {
        json!({"involvedObject": {"uid": uid, "fieldPath": "spec.containers{c}"},
            "reason": reason, "message": message})
    }

    #[test]
    fn repeats_bump_the_count_of_the_written_event() {
        let mut recent = Aggregator::default();
        let backoff = event("u1", "BackOff", "Back-off restarting failed container");
        assert_eq!(recent.decide(&backoff, false), Write::Create);
        recent.written(&backoff, false, "ns", "p.1", 1);
        for count in 2..5 {
            let decision = recent.decide(&backoff, false);
            assert_eq!(
                decision,
                Write::Bump {
                    namespace: "ns".into(),
                    name: "p.1".into(),
                    count
                }
            );
            recent.written(&backoff, false, "ns", "p.1", count);
        }
        // Another reason, message or pod is another event.
        let started = event("u1", "Started", "x");
        assert_eq!(recent.decide(&started, false), Write::Create);
        let other = event("u2", "BackOff", "Back-off restarting failed container");
        assert_eq!(recent.decide(&other, false), Write::Create);
        recent.forget(&backoff, false);
        assert_eq!(recent.decide(&backoff, false), Write::Create);
        // Progress: one event per reason whatever its message.
        let pulling = event("u1", "Pulling", "Pulling image \"x\"");
        recent.written(&pulling, true, "ns", "p.2", 1);
        let later = event("u1", "Pulling", "Pulling image \"x\": 1 MiB of 2 MiB");
        assert!(matches!(
            recent.decide(&later, true),
            Write::Bump { count: 2, .. }
        ));
        assert_eq!(recent.decide(&later, false), Write::Create);
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut recent = Aggregator::default();
        for i in 0..RECENT_EVENTS_MAX + 10 {
            let e = event(&format!("u{i}"), "Started", "x");
            recent.written(&e, false, "ns", &format!("e{i}"), 1);
        }
        assert_eq!(recent.written.len(), RECENT_EVENTS_MAX);
        assert_eq!(recent.order.len(), RECENT_EVENTS_MAX);
        assert_eq!(
            recent.decide(&event("u0", "Started", "x"), false),
            Write::Create
        );
        let newest = event(&format!("u{}", RECENT_EVENTS_MAX + 9), "Started", "x");
        assert!(matches!(recent.decide(&newest, false), Write::Bump { .. }));
    }
}
