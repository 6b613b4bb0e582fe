//! Subresources other than `status`: `scale` (autoscaling/v1 Scale of replicated kinds),
//! `binding` (a pod assigned to a node), `eviction`, and `log` (served by nodes).

use http::StatusCode;
use keelson_api::node_link::{log_request_from_query, CONNECTED_MASTER_ANNOTATION};
use keelson_api::resources::Resource;
use keelson_api::selectors::LabelSelector;
use keelson_api::status::StatusError;
use keelson_api::{object, patch};
use keelson_raft::Consistency;
use serde_json::{json, Value};
use warp::reply::Response;

use super::forward::FORWARDED_HEADER;
use super::objects::{decide_again, not_found, read, read_consistency, update_read, Reply};
use super::request::{status_reply, stream_reply, ApiRequest};
use super::route::ResourcePath;
use super::storage::object_key;
use super::ApiState;

const CONFLICT_RETRIES_MAX: usize = 8;

/// The Scale view of a Deployment, ReplicaSet or ReplicationController.
fn scale_of(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .cloned()
        .unwrap_or(Value::Null);
    // apps/v1 selectors are LabelSelectors; ReplicationControllers use a plain map.
    let selector_text =
        if selector.get("matchLabels").is_some() || selector.get("matchExpressions").is_some() {
            LabelSelector::from_value(&selector)
                .map(|s| s.to_string())
                .unwrap_or_default()
        } else {
            selector
                .as_object()
                .map(|m| {
                    let mut pairs: Vec<String> = m
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect();
                    pairs.sort();
                    pairs.join(",")
                })
                .unwrap_or_default()
        };
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector_text,
        },
    })
}

pub(crate) async fn get_scale(state: &ApiState, req: &ApiRequest, path: &ResourcePath) -> Reply {
    let stored = read(state, path, read_consistency(req)).await?;
    Ok((StatusCode::OK, scale_of(&stored.object)))
}

/// PUT or PATCH of `scale`: the new Scale's `spec.replicas` goes into the object.
pub(crate) async fn update_scale(state: &ApiState, req: &ApiRequest, path: &ResourcePath) -> Reply {
    let resource = path.resource;
    let name = path.name.clone().unwrap_or_default();
    let key = object_key(resource, path.namespace.as_deref(), &name);
    for _ in 0..CONFLICT_RETRIES_MAX {
        let current = read(state, path, Consistency::Linearizable).await?;
        let scale = scale_of(&current.object);
        // Only a resourceVersion the client sent is a precondition: a patch applied to the
        // current Scale carries the current one, which must not fail a retry.
        let (new_scale, precondition) = if req.method == http::Method::PUT {
            let body = req.body_value()?;
            let precondition = object::resource_version(&body)
                .filter(|rv| !rv.is_empty())
                .map(str::to_string);
            (body, precondition)
        } else {
            let body = super::request::decode_json(&req.body)?;
            let precondition = body
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .filter(|rv| !rv.is_empty())
                .map(str::to_string);
            let patched = match req.content_type().as_str() {
                "application/json-patch+json" => patch::json_patch(&scale, &body)
                    .map_err(|e| StatusError::bad_request(e.to_string()))?,
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    patch::merge_patch(&scale, &body)
                        .map_err(|e| StatusError::bad_request(e.to_string()))?
                }
                other => return Err(super::request::unsupported_media_type(other)),
            };
            (patched, precondition)
        };
        if precondition
            .as_deref()
            .is_some_and(|rv| rv != current.revision.to_string())
        {
            return Err(StatusError::conflict(
                resource.group,
                resource.plural,
                &name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let Some(replicas) = new_scale.pointer("/spec/replicas").and_then(Value::as_i64) else {
            return Err(StatusError::bad_request(
                "the Scale has no spec.replicas".to_string(),
            ));
        };
        if replicas < 0 {
            return Err(StatusError::invalid(
                "autoscaling",
                "Scale",
                &name,
                vec![keelson_api::status::Cause::invalid(
                    "spec.replicas",
                    replicas,
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let mut updated = current.object.clone();
        updated["spec"]["replicas"] = json!(replicas);
        if updated == current.object {
            return Ok((StatusCode::OK, scale));
        }
        let generation = updated
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        updated["metadata"]["generation"] = json!(generation + 1);
        match state.storage.update(&key, current.revision, updated).await? {
            Ok(stored) => return Ok((StatusCode::OK, scale_of(&stored.object))),
            Err(_) if precondition.is_some() => {
                return Err(StatusError::conflict(
                    resource.group,
                    resource.plural,
                    &name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ))
            }
            Err(_) => continue,
        }
    }
    Err(StatusError::conflict(
        resource.group,
        resource.plural,
        &name,
        "too many concurrent changes; try again",
    ))
}

/// POST pods/NAME/binding: assigns the pod to a node, once.
pub(crate) async fn bind(state: &ApiState, req: &ApiRequest, path: &ResourcePath) -> Reply {
    let resource = path.resource;
    let name = path.name.clone().unwrap_or_default();
    let binding = req.body_value()?;
    let Some(node) = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
    else {
        return Err(StatusError::invalid(
            "",
            "Binding",
            &name,
            vec![keelson_api::status::Cause::required("target.name", "")],
        ));
    };
    let key = object_key(resource, path.namespace.as_deref(), &name);
    for attempt in 0..CONFLICT_RETRIES_MAX {
        let bound = async {
            let current = read(state, path, update_read(attempt)).await?;
            let revision = current.revision;
            let bound = bound_pod(current.object, &binding, &node, resource, &name)?;
            Ok(state.storage.update(&key, revision, bound).await?.is_ok())
        };
        match bound.await {
            Ok(true) => {
                return Ok((
                    StatusCode::CREATED,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ))
            }
            Ok(false) => continue,
            Err(e) if decide_again(attempt, &e) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StatusError::conflict(
        resource.group,
        resource.plural,
        &name,
        "too many concurrent changes; try again",
    ))
}

/// The pod `current` bound to `node` as `binding` asks: `spec.nodeName` set and
/// `PodScheduled=True`; refused for another pod of that name, a bound pod or a deleted one.
fn bound_pod(
    current: Value,
    binding: &Value,
    node: &str,
    resource: &Resource,
    name: &str,
) -> Result<Value, StatusError> {
    if let Some(uid) = binding.pointer("/metadata/uid").and_then(Value::as_str) {
        if object::uid(&current) != Some(uid) {
            return Err(not_found(resource, name));
        }
    }
    if let Some(existing) = current
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(StatusError::conflict(
            resource.group,
            resource.plural,
            name,
            &format!("pod {name} is already assigned to node \"{existing}\""),
        ));
    }
    if object::deletion_timestamp(&current).is_some() {
        return Err(StatusError::conflict(
            resource.group,
            resource.plural,
            name,
            &format!("pod {name} is being deleted, cannot be assigned to a host"),
        ));
    }
    let mut bound = current;
    bound["spec"]["nodeName"] = json!(node);
    let condition = json!({
        "type": "PodScheduled",
        "status": "True",
        "lastProbeTime": null,
        "lastTransitionTime": super::objects::now_rfc3339(),
    });
    let mut conditions: Vec<Value> = match bound["status"]["conditions"].take() {
        Value::Array(conditions) => conditions,
        _ => Vec::new(),
    }
    .into_iter()
    .filter(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"))
    .collect();
    conditions.push(condition);
    bound["status"]["conditions"] = Value::Array(conditions);
    Ok(bound)
}

/// `pods/NAME/log`: streamed from the node that runs the pod, through this master's link to
/// it, or through the API of the master the node is connected to (named by the Node's
/// `keelson.io/connected-master` annotation).
pub(crate) async fn log(state: &ApiState, req: &ApiRequest, path: &ResourcePath) -> Response {
    match log_stream(state, req, path).await {
        Ok(response) => response,
        Err(e) => status_reply(&e),
    }
}

async fn log_stream(
    state: &ApiState,
    req: &ApiRequest,
    path: &ResourcePath,
) -> Result<Response, StatusError> {
    let stored = read(state, path, Consistency::Linearizable).await?;
    let pod = &stored.object;
    let name = path.name.clone().unwrap_or_default();
    let namespace = path.namespace.clone().unwrap_or_default();
    let Some(node) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return Err(StatusError::bad_request(format!(
            "pod {name} has not been scheduled to a node yet, so it has no logs"
        )));
    };
    let request = log_request_from_query(
        &namespace,
        &name,
        object::uid(pod).unwrap_or_default(),
        |key| req.param(key).map(str::to_string),
    )
    .map_err(StatusError::bad_request)?;
    if let Some(chunks) = state.node_links.logs(node, request).await? {
        return Ok(text_stream(chunks));
    }
    let not_connected = || {
        StatusError::service_unavailable(
            format!("node {node} is not connected to any master"),
            Some(5),
        )
    };
    if req.headers.contains_key(FORWARDED_HEADER) {
        return Err(not_connected());
    }
    let node_obj = nodes_resource()
        .map(|resource| ResourcePath {
            resource,
            namespace: None,
            name: Some(node.to_string()),
            subresource: None,
            watch: false,
        })
        .ok_or_else(not_connected)?;
    let master = match read(state, &node_obj, Consistency::Serializable).await {
        Ok(stored) => object::annotations(&stored.object)
            .get(CONNECTED_MASTER_ANNOTATION)
            .cloned(),
        Err(_) => None,
    };
    match master {
        Some(master) if master != *state.name => super::forward::log_to_master(state, req, &master)
            .await
            .ok_or_else(not_connected)?,
        _ => Err(not_connected()),
    }
}

fn nodes_resource() -> Option<&'static keelson_api::resources::Resource> {
    keelson_api::resources::find("", "v1", "nodes")
}

/// A `text/plain` reply streaming `chunks`.
fn text_stream(chunks: crate::nodelink::LogChunks) -> Response {
    stream_reply(
        StatusCode::OK,
        http::HeaderValue::from_static("text/plain"),
        chunks,
    )
}
