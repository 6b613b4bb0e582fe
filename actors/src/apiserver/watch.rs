//! Watch: a chunked stream of `{"type","object"}` lines from a resourceVersion, with initial
//! events, bookmarks, selectors (an object leaving the selection is DELETED, one entering it
//! is ADDED), `timeoutSeconds`, and the 410 `Expired` ERROR event.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use keelson_api::status::StatusError;
use keelson_api::table;
use keelson_raft::{EventKind, KeyRange, StoreError, WatchError, WatchRequest};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use warp::reply::Response;

use super::decoded::Decoded;
use super::list::Filter;
use super::objects::prefix_of;
use super::request::ApiRequest;
use super::route::ResourcePath;
use super::storage::{object_key, set_resource_version, store_status};
use super::ApiState;

/// Lines buffered between the watch task and the connection; a client that reads slower than
/// this is cut off by the store's own bounded buffer behind it.
const WATCH_LINES_BUFFERED: usize = 256;
/// The longest a watch runs when the client names no timeout, and the most it may ask.
const WATCH_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30 * 60);
const WATCH_TIMEOUT_MAX: Duration = Duration::from_secs(60 * 60);
/// How often an idle watch that allows bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(15);
/// The most objects sent as initial events.
const INITIAL_EVENTS_MAX: usize = 100_000;

struct WatchPlan {
    path: ResourcePath,
    filter: Filter,
    /// Send the current objects as ADDED first (resourceVersion unset or 0, or
    /// sendInitialEvents).
    initial: bool,
    /// After the initial events, a bookmark marking their end.
    initial_end_bookmark: bool,
    /// Changes after this revision are streamed (when not `initial`).
    from_revision: u64,
    bookmarks: bool,
    timeout: Duration,
    table: bool,
    /// The single key watched when the field selector names one object.
    single_key: Option<String>,
    /// Texts every matching object's stored JSON contains (see
    /// [`keelson_api::selectors::FieldSelector::required_texts`]).
    required: Vec<memchr::memmem::Finder<'static>>,
}

impl WatchPlan {
    /// Whether a stored object may match the selectors, judged from its bytes: `false` only
    /// when it lacks a required text, so it cannot match.
    fn may_match(&self, stored: &[u8]) -> bool {
        self.required.iter().all(|text| text.find(stored).is_some())
    }
}

fn plan(req: &ApiRequest, path: &ResourcePath) -> Result<WatchPlan, StatusError> {
    let filter = Filter::from_request(req, path)?;
    let send_initial = match req.param("sendInitialEvents") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(StatusError::bad_request(format!(
                "sendInitialEvents {other:?} is not true or false"
            )))
        }
    };
    if send_initial.is_some() && req.param("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(StatusError::bad_request(
            "sendInitialEvents requires resourceVersionMatch=NotOlderThan".to_string(),
        ));
    }
    let rv = req.param("resourceVersion");
    let from_revision = match rv {
        None | Some("0") => 0,
        Some(text) => text.parse::<u64>().map_err(|_| {
            StatusError::bad_request(format!("resourceVersion {text:?} is not valid"))
        })?,
    };
    let initial = send_initial.unwrap_or(from_revision == 0);
    let timeout = match req.param("timeoutSeconds") {
        None => WATCH_TIMEOUT_DEFAULT,
        Some(text) => {
            let secs: u64 = text.parse().map_err(|_| {
                StatusError::bad_request(format!("timeoutSeconds {text:?} is not a number"))
            })?;
            Duration::from_secs(secs).min(WATCH_TIMEOUT_MAX)
        }
    };
    let single_key = filter
        .fields
        .as_ref()
        .and_then(|f| f.exact("metadata.name"))
        .map(|name| object_key(path.resource, path.namespace.as_deref(), name))
        .filter(|_| {
            path.resource.namespaced == path.namespace.is_some() || !path.resource.namespaced
        });
    let required = filter
        .fields
        .as_ref()
        .map(|f| {
            f.required_texts()
                .into_iter()
                .map(|text| memchr::memmem::Finder::new(text).into_owned())
                .collect()
        })
        .unwrap_or_default();
    Ok(WatchPlan {
        path: path.clone(),
        filter,
        required,
        initial,
        initial_end_bookmark: send_initial == Some(true),
        from_revision,
        bookmarks: req.flag("allowWatchBookmarks"),
        timeout,
        table: req.wants_table(),
        single_key,
    })
}

pub(crate) async fn watch(
    state: &ApiState,
    req: &ApiRequest,
    path: &ResourcePath,
) -> Result<Response, StatusError> {
    let plan = plan(req, path)?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(WATCH_LINES_BUFFERED);
    let state = state.clone();
    state.watches.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let watches = state.watches.clone();
        run(&state, plan, &tx).await;
        watches.fetch_sub(1, Ordering::Relaxed);
    });
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (line, rx))
    });
    let mut response = warp::reply::Reply::into_response(warp::reply::stream(lines));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(response)
}

/// `{"type":KIND,"object":OBJECT}` and a newline, written straight from the object (not
/// copied into an envelope first).
fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = Vec::with_capacity(1024);
    line.extend_from_slice(b"{\"type\":");
    // Strings and `Value`s always serialize.
    let _ = serde_json::to_writer(&mut line, kind);
    line.extend_from_slice(b",\"object\":");
    let _ = serde_json::to_writer(&mut line, object);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// Sends the event; false when the client has gone.
async fn send(tx: &mpsc::Sender<Result<Bytes, std::io::Error>>, line: Bytes) -> bool {
    tx.send(Ok(line)).await.is_ok()
}

fn render(plan: &WatchPlan, object: Value) -> Value {
    if plan.table {
        table::table(plan.path.resource.kind, &[object], jiff::Timestamp::now())
    } else {
        object
    }
}

/// A streamed change as the plan renders it; the shared object itself unless a table.
fn render_shared(plan: &WatchPlan, object: Arc<Value>) -> Arc<Value> {
    if plan.table {
        Arc::new(render(plan, Arc::unwrap_or_clone(object)))
    } else {
        object
    }
}

fn bookmark(plan: &WatchPlan, revision: u64, initial_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({
        "kind": plan.path.resource.kind,
        "apiVersion": plan.path.resource.api_version(),
        "metadata": metadata,
    })
}

fn expired_event(requested: u64, compacted: u64) -> Value {
    StatusError::expired(format!(
        "too old resource version: {requested} ({compacted})"
    ))
    .to_value()
}

async fn run(state: &ApiState, plan: WatchPlan, tx: &mpsc::Sender<Result<Bytes, std::io::Error>>) {
    let deadline = tokio::time::Instant::now() + plan.timeout;
    let range = match &plan.single_key {
        Some(key) => KeyRange::key(key.as_bytes()),
        None => KeyRange::prefix(prefix_of(&plan.path).as_bytes()),
    };
    // Initial events: the current state, then changes after its revision.
    let mut from = plan.from_revision;
    if plan.initial {
        let listed = match initial_state(state, &plan, &range).await {
            Ok(listed) => listed,
            Err(e) => {
                let _ = send(tx, event_line("ERROR", &e.to_value())).await;
                return;
            }
        };
        for object in listed.0 {
            if !send(tx, event_line("ADDED", &render(&plan, object))).await {
                return;
            }
        }
        from = listed.1;
        if plan.initial_end_bookmark
            && plan.bookmarks
            && !send(tx, event_line("BOOKMARK", &bookmark(&plan, from, true))).await
        {
            return;
        }
    }
    let request = WatchRequest {
        range,
        start_revision: from + 1,
    };
    let mut stream = match state.storage.store().watch(request) {
        Ok(stream) => stream,
        Err(StoreError::Watch(WatchError::Compacted { .. }))
        | Err(StoreError::Compacted { .. }) => {
            let compacted = state.storage.store().status().await.compacted_revision;
            let _ = send(tx, event_line("ERROR", &expired_event(from, compacted))).await;
            return;
        }
        Err(e) => {
            let _ = send(tx, event_line("ERROR", &store_status(e).to_value())).await;
            return;
        }
    };
    let mut last_revision = from;
    let mut bookmark_timer = tokio::time::interval(BOOKMARK_INTERVAL);
    bookmark_timer.tick().await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tx.closed() => return,
            _ = bookmark_timer.tick(), if plan.bookmarks => {
                let current = state.storage.store().revision();
                if current > last_revision {
                    last_revision = current;
                }
                if !send(tx, event_line("BOOKMARK", &bookmark(&plan, last_revision, false))).await {
                    return;
                }
            }
            next = stream.next() => {
                let events = match next {
                    None => return,
                    Some(Ok(events)) => events,
                    Some(Err(WatchError::Compacted { requested, compacted })) => {
                        let _ = send(tx, event_line("ERROR", &expired_event(requested, compacted))).await;
                        return;
                    }
                    // Cut off or reset: end the stream; the client watches again from the last
                    // resourceVersion it saw.
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "watch ended");
                        return;
                    }
                };
                for event in events {
                    last_revision = last_revision.max(event.kv.mod_revision);
                    let Some((kind, object)) = convert(&plan, &event, &state.decoded) else {
                        continue;
                    };
                    if !send(tx, event_line(kind, &render_shared(&plan, object))).await {
                        return;
                    }
                }
            }
        }
    }
}

/// The objects matching the plan now, and the revision they were read at.
async fn initial_state(
    state: &ApiState,
    plan: &WatchPlan,
    range: &KeyRange,
) -> Result<(Vec<Value>, u64), StatusError> {
    let prefix = String::from_utf8_lossy(&range.start).to_string();
    let mut objects = Vec::new();
    let mut start: Option<Vec<u8>> = None;
    let mut revision = 0;
    let mut consistency = keelson_raft::Consistency::Linearizable;
    loop {
        let page = match &plan.single_key {
            Some(key) => {
                let stored = state.storage.get(key, consistency).await?;
                let revision = state.storage.store().revision();
                return Ok((
                    stored
                        .into_iter()
                        .map(|s| s.object)
                        .filter(|o| plan.filter.matches(o))
                        .collect(),
                    revision,
                ));
            }
            None => {
                state
                    .storage
                    .page(&prefix, start.as_deref(), revision, 1000, consistency)
                    .await?
            }
        };
        revision = page.revision;
        consistency = keelson_raft::Consistency::Serializable;
        for stored in page.items {
            if plan.filter.matches(&stored.object) {
                objects.push(stored.object);
            }
        }
        if objects.len() > INITIAL_EVENTS_MAX {
            return Err(StatusError::internal(&format!(
                "more than {INITIAL_EVENTS_MAX} objects to send as initial events; list with \
                 a limit instead"
            )));
        }
        match page.next_key {
            Some(next) => start = Some(next),
            None => return Ok((objects, revision)),
        }
    }
}

/// A store event as a watch event of the plan's selection, if it concerns it.
fn convert(
    plan: &WatchPlan,
    event: &keelson_raft::Event,
    decoded: &Decoded,
) -> Option<(&'static str, Arc<Value>)> {
    // Most events concern none of a narrow watch's objects (a kubelet's pods among a
    // cluster's): pass over those without parsing them.
    let prev_may_match = event
        .prev
        .as_ref()
        .is_some_and(|kv| plan.may_match(&kv.value));
    let now_may_match = event.kind == EventKind::Put && plan.may_match(&event.kv.value);
    if !prev_may_match && !now_may_match {
        return None;
    }
    if event.kind == EventKind::Put && plan.filter.is_empty() {
        // Every object matches: the previous value only tells an addition from a change, which
        // its presence does; parsing it (when no longer kept parsed) would be wasted.
        let now = decoded.get(&event.kv).ok()?;
        let kind = if event.prev.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        return Some((kind, now));
    }
    let prev = event.prev.as_ref().and_then(|kv| decoded.get(kv).ok());
    let prev_matches = prev.as_ref().is_some_and(|p| plan.filter.matches(p));
    match event.kind {
        EventKind::Put => {
            let now = decoded.get(&event.kv).ok()?;
            let now_matches = plan.filter.matches(&now);
            match (prev_matches, now_matches) {
                (false, true) => Some(("ADDED", now)),
                (true, true) => Some(("MODIFIED", now)),
                (true, false) => Some(("DELETED", now)),
                (false, false) => None,
            }
        }
        EventKind::Delete => {
            let gone = prev?;
            if !prev_matches {
                return None;
            }
            let mut gone = Arc::unwrap_or_clone(gone);
            set_resource_version(&mut gone, event.kv.mod_revision);
            Some(("DELETED", Arc::new(gone)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_api::selectors::FieldSelector;
    use keelson_raft::{Event, KeyValue};

    fn pods() -> &'static keelson_api::resources::Resource {
        keelson_api::resources::find("", "v1", "pods").expect("pods are served")
    }

    fn plan(fields: Option<&str>) -> WatchPlan {
        WatchPlan {
            path: ResourcePath {
                resource: pods(),
                namespace: None,
                name: None,
                subresource: None,
                watch: false,
            },
            filter: Filter {
                labels: None,
                fields: fields.map(|f| FieldSelector::parse(pods(), f).expect("valid selector")),
            },
            initial: false,
            initial_end_bookmark: false,
            from_revision: 0,
            bookmarks: false,
            timeout: WATCH_TIMEOUT_DEFAULT,
            table: false,
            single_key: None,
            required: Vec::new(),
        }
    }

    fn kv(revision: u64, value: &[u8]) -> KeyValue {
        KeyValue {
            key: b"/registry/pods/default/p".to_vec(),
            value: value.to_vec(),
            create_revision: 1,
            mod_revision: revision,
            version: revision,
        }
    }

    fn put(prev: Option<KeyValue>, now: KeyValue) -> Event {
        Event {
            kind: EventKind::Put,
            kv: now,
            prev,
        }
    }

    #[test]
    fn an_unfiltered_watch_tells_a_change_from_an_addition_without_the_previous_value() {
        let decoded = Decoded::default();
        let pod = br#"{"metadata":{"name":"p"},"spec":{"nodeName":"n1"}}"#;
        // The previous value is not even JSON: an unfiltered watch never reads it.
        let changed = put(Some(kv(1, b"{not json")), kv(2, pod));
        let (kind, object) = convert(&plan(None), &changed, &decoded).expect("sent");
        assert_eq!(kind, "MODIFIED");
        assert_eq!(object["metadata"]["resourceVersion"], "2");
        let added = put(None, kv(3, pod));
        assert_eq!(
            convert(&plan(None), &added, &decoded).expect("sent").0,
            "ADDED"
        );
    }

    #[test]
    fn a_filtered_watch_sees_objects_enter_and_leave_its_selection() {
        let decoded = Decoded::default();
        let unbound = kv(1, br#"{"metadata":{"name":"p"},"spec":{}}"#);
        let bound = kv(2, br#"{"metadata":{"name":"p"},"spec":{"nodeName":"n1"}}"#);
        let moved = kv(3, br#"{"metadata":{"name":"p"},"spec":{"nodeName":"n2"}}"#);
        let on_n1 = plan(Some("spec.nodeName=n1"));
        let bind = put(Some(unbound), bound.clone());
        assert_eq!(convert(&on_n1, &bind, &decoded).expect("sent").0, "ADDED");
        let leave = put(Some(bound), moved.clone());
        assert_eq!(
            convert(&on_n1, &leave, &decoded).expect("sent").0,
            "DELETED"
        );
        let elsewhere = put(Some(moved.clone()), kv(4, &moved.value));
        assert!(convert(&on_n1, &elsewhere, &decoded).is_none());
    }
}
