//! The endpoints controller: an Endpoints object per Service from its selector and ready pods.
//!
//! For a Service with a selector, the Endpoints of the same name lists the pods the selector
//! matches in its namespace: ready pods (condition `Ready=True`, with a podIP) as `addresses`,
//! the others as `notReadyAddresses`, grouped into subsets by the set of ports they resolve
//! (a named targetPort is looked up among each pod's container ports). Pods being deleted are
//! left out. Endpoints of Services without a selector are left alone; Endpoints this
//! controller wrote are deleted with their Service.

use std::collections::BTreeMap;

use keelson_api::object;
use keelson_api::resources::{self, Resource};
use keelson_api::selectors::LabelSelector;
use serde_json::{json, Value};

use super::{feed, work, Requeue, QUEUE_KEYS_MAX};
use crate::client::DeleteOptions;
use crate::control_plane::ControllerContext;
use crate::informer::{key_of, split_key, Change, Informer};
use crate::supervisor::StopSignal;
use crate::workqueue::WorkQueue;

/// The label marking Endpoints this controller manages.
pub(crate) const MANAGED_BY_LABEL: &str = "endpoints.kubernetes.io/managed-by";
const MANAGED_BY: &str = "endpoint-controller";

/// The Service's selector, if it has a non-empty one.
pub(crate) fn selector_of(service: &Value) -> Option<LabelSelector> {
    let map = service.pointer("/spec/selector")?.as_object()?;
    if map.is_empty() {
        return None;
    }
    let labels: BTreeMap<String, String> = map
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect();
    LabelSelector::from_map(&labels).ok()
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// The port a service port reaches on `pod`, if the pod has it.
fn resolve_port(service_port: &Value, pod: &Value) -> Option<i64> {
    match service_port.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(name)) => {
            if let Ok(n) = name.parse::<i64>() {
                return Some(n);
            }
            pod.pointer("/spec/containers")
                .and_then(Value::as_array)?
                .iter()
                .filter_map(|c| c.get("ports").and_then(Value::as_array))
                .flatten()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name.as_str()))
                .and_then(|p| p.get("containerPort").and_then(Value::as_i64))
        }
        _ => service_port.get("port").and_then(Value::as_i64),
    }
}

fn address(pod: &Value, ip: &str) -> Value {
    let mut address = json!({
        "ip": ip,
        "targetRef": {
            "kind": "Pod",
            "name": object::name(pod),
            "namespace": object::namespace(pod),
            "uid": object::uid(pod),
        },
    });
    if let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str) {
        if !node.is_empty() {
            address["nodeName"] = json!(node);
        }
    }
    address
}

/// One subset being built: its ports, ready and not-ready addresses.
type Group = (Vec<Value>, Vec<Value>, Vec<Value>);

/// The pure core: the subsets of `service`'s Endpoints given the pods of its namespace.
pub(crate) fn desired_subsets(service: &Value, pods: &[Value]) -> Vec<Value> {
    let Some(selector) = selector_of(service) else {
        return Vec::new();
    };
    let publish_not_ready = service
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let service_ports: Vec<Value> = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Port set (as JSON text, sorted) → (ports, ready addresses, not-ready addresses).
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for pod in pods {
        if object::deletion_timestamp(pod).is_some() || !selector.matches_object(pod) {
            continue;
        }
        let Some(ip) = pod
            .pointer("/status/podIP")
            .and_then(Value::as_str)
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let mut ports: Vec<Value> = service_ports
            .iter()
            .filter_map(|sp| {
                let port = resolve_port(sp, pod)?;
                let mut endpoint_port = json!({
                    "port": port,
                    "protocol": sp.get("protocol").and_then(Value::as_str).unwrap_or("TCP"),
                });
                if let Some(name) = sp.get("name").and_then(Value::as_str) {
                    if !name.is_empty() {
                        endpoint_port["name"] = json!(name);
                    }
                }
                Some(endpoint_port)
            })
            .collect();
        if ports.is_empty() && !service_ports.is_empty() {
            continue;
        }
        ports.sort_by_key(|p| p.to_string());
        let group_key = serde_json::to_string(&ports).unwrap_or_default();
        let group = groups
            .entry(group_key)
            .or_insert_with(|| (ports, Vec::new(), Vec::new()));
        if publish_not_ready || is_ready(pod) {
            group.1.push(address(pod, ip));
        } else {
            group.2.push(address(pod, ip));
        }
    }
    groups
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            let by_ip = |a: &Value, b: &Value| {
                (a["ip"].as_str(), a["targetRef"]["name"].as_str())
                    .cmp(&(b["ip"].as_str(), b["targetRef"]["name"].as_str()))
            };
            ready.sort_by(by_ip);
            not_ready.sort_by(by_ip);
            let mut subset = json!({});
            if !ready.is_empty() {
                subset["addresses"] = Value::Array(ready);
            }
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = Value::Array(not_ready);
            }
            if !ports.is_empty() {
                subset["ports"] = Value::Array(ports);
            }
            subset
        })
        .collect()
}

/// What to write for one Service key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EndpointsAction {
    Nothing,
    Create(Value),
    /// Replace the existing Endpoints (with its resourceVersion) by this.
    Update(Value),
    Delete,
}

/// The pure decision from the Service (if it exists), the current Endpoints (if any) and the
/// pods of the namespace.
pub(crate) fn plan(
    namespace: &str,
    name: &str,
    service: Option<&Value>,
    current: Option<&Value>,
    pods: &[Value],
) -> EndpointsAction {
    let managed = current.is_some_and(|e| {
        object::labels(e).get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
    });
    let Some(service) = service else {
        return if managed {
            EndpointsAction::Delete
        } else {
            EndpointsAction::Nothing
        };
    };
    if selector_of(service).is_none() || object::deletion_timestamp(service).is_some() {
        return EndpointsAction::Nothing;
    }
    let subsets = desired_subsets(service, pods);
    match current {
        None => EndpointsAction::Create(json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY},
            },
            "subsets": subsets,
        })),
        Some(current) => {
            let have = current.get("subsets").cloned().unwrap_or_else(|| json!([]));
            if have == Value::Array(subsets.clone()) && managed {
                return EndpointsAction::Nothing;
            }
            let mut updated = current.clone();
            if let Ok(metadata) = object::metadata_mut(&mut updated) {
                let labels = metadata.entry("labels").or_insert_with(|| json!({}));
                if let Some(labels) = labels.as_object_mut() {
                    labels.insert(MANAGED_BY_LABEL.into(), json!(MANAGED_BY));
                }
            }
            updated["subsets"] = Value::Array(subsets);
            EndpointsAction::Update(updated)
        }
    }
}

struct Kinds {
    services: Informer,
    pods: Informer,
    endpoints: Informer,
    endpoints_resource: &'static Resource,
}

async fn reconcile(ctx: &ControllerContext, kinds: &Kinds, key: &str) -> anyhow::Result<Requeue> {
    let (Some(namespace), name) = split_key(key) else {
        return Ok(Requeue::Done);
    };
    let service = kinds.services.get(key);
    let current = kinds.endpoints.get(key);
    let pods: Vec<Value> = if service.is_some() {
        kinds
            .pods
            .list_namespace(namespace)
            .iter()
            .map(|p| (**p).clone())
            .collect()
    } else {
        Vec::new()
    };
    let resource = kinds.endpoints_resource;
    let result = match plan(
        namespace,
        name,
        service.as_deref(),
        current.as_deref(),
        &pods,
    ) {
        EndpointsAction::Nothing => return Ok(Requeue::Done),
        EndpointsAction::Create(e) => ctx.client.create(resource, Some(namespace), &e).await,
        EndpointsAction::Update(e) => ctx.client.update(resource, Some(namespace), name, &e).await,
        EndpointsAction::Delete => {
            let options = DeleteOptions {
                precondition_uid: current.as_deref().and_then(object::uid).map(str::to_string),
                ..DeleteOptions::default()
            };
            ctx.client
                .delete(resource, Some(namespace), name, &options)
                .await
        }
    };
    match result {
        Ok(_) => Ok(Requeue::Done),
        Err(e) if e.code() == 404 => Ok(Requeue::Done),
        // A stale cache (409) is retried once the cache has caught up.
        Err(e) => Err(e.into()),
    }
}

/// The Service keys a pod change concerns: every Service of its namespace.
fn services_of_namespace(services: &Informer, pod: &Value) -> Vec<String> {
    let Some(namespace) = object::namespace(pod) else {
        return Vec::new();
    };
    services
        .list_namespace(namespace)
        .iter()
        .map(|s| key_of(s))
        .collect()
}

/// Keeps the Endpoints of every Service with a selector.
pub(crate) async fn run(ctx: ControllerContext, mut stop: StopSignal) -> anyhow::Result<()> {
    let find =
        |p| resources::find("", "v1", p).ok_or_else(|| anyhow::anyhow!("{p} are not registered"));
    let kinds = std::sync::Arc::new(Kinds {
        services: ctx.informers.of(find("services")?),
        pods: ctx.informers.of(find("pods")?),
        endpoints: ctx.informers.of(find("endpoints")?),
        endpoints_resource: find("endpoints")?,
    });
    let queue: WorkQueue<String> = WorkQueue::new("endpoints", QUEUE_KEYS_MAX);
    let all_keys = {
        let kinds = kinds.clone();
        move || {
            let mut keys: Vec<String> = kinds.services.keys();
            keys.extend(kinds.endpoints.keys());
            keys
        }
    };
    let feeders = vec![
        feed(&kinds.services, &queue, {
            let all_keys = all_keys.clone();
            move |change| match change {
                Change::Applied { new, .. } => vec![key_of(new)],
                Change::Deleted(old) => vec![key_of(old)],
                Change::Resynced => all_keys(),
            }
        }),
        feed(&kinds.endpoints, &queue, {
            let all_keys = all_keys.clone();
            move |change| match change {
                Change::Applied { new, .. } => vec![key_of(new)],
                Change::Deleted(old) => vec![key_of(old)],
                Change::Resynced => all_keys(),
            }
        }),
        feed(&kinds.pods, &queue, {
            let kinds = kinds.clone();
            let all_keys = all_keys.clone();
            move |change| match change {
                Change::Applied { new, .. } => services_of_namespace(&kinds.services, new),
                Change::Deleted(old) => services_of_namespace(&kinds.services, old),
                Change::Resynced => all_keys(),
            }
        }),
    ];
    for informer in [&kinds.services, &kinds.pods, &kinds.endpoints] {
        tokio::select! {
            _ = stop.stopped() => return Ok(()),
            _ = informer.wait_synced() => {}
        }
    }
    work(
        "endpoints",
        queue,
        feeders,
        &mut stop,
        move |queue| {
            for key in all_keys() {
                queue.add(key);
            }
        },
        |key: String| {
            let ctx = ctx.clone();
            let kinds = kinds.clone();
            async move { reconcile(&ctx, &kinds, &key).await }
        },
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(selector: Value, ports: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "ns"},
               "spec": {"selector": selector, "ports": ports}})
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool, port_name: &str, port: i64) -> Value {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"),
                         "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c",
                "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        });
        if let Some(ip) = ip {
            p["status"]["podIP"] = json!(ip);
        }
        p
    }

    #[test]
    fn subsets_follow_the_selector_readiness_and_ports() {
        let by_number = service(
            json!({"app": "web"}),
            json!([{"port": 80, "targetPort": 8080}]),
        );
        let by_name = service(
            json!({"app": "web"}),
            json!([{"name": "http", "port": 80, "targetPort": "web"}]),
        );
        let mut deleting = pod("d", Some("10.0.0.9"), true, "web", 8080);
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let mut other = pod("o", Some("10.0.0.8"), true, "web", 8080);
        other["metadata"]["labels"] = json!({"app": "db"});
        let cases: Vec<(&str, &Value, Vec<Value>, Value)> = vec![
            ("no pods", &by_number, vec![], json!([])),
            (
                "ready and not",
                &by_number,
                vec![
                    pod("b", Some("10.0.0.2"), false, "web", 8080),
                    pod("a", Some("10.0.0.1"), true, "web", 8080),
                ],
                json!([{
                    "addresses": [{"ip": "10.0.0.1", "nodeName": "n1", "targetRef": {"kind": "Pod", "name": "a", "namespace": "ns", "uid": "u-a"}}],
                    "notReadyAddresses": [{"ip": "10.0.0.2", "nodeName": "n1", "targetRef": {"kind": "Pod", "name": "b", "namespace": "ns", "uid": "u-b"}}],
                    "ports": [{"port": 8080, "protocol": "TCP"}],
                }]),
            ),
            (
                "no IP, deleting, not selected",
                &by_number,
                vec![pod("n", None, true, "web", 8080), deleting, other],
                json!([]),
            ),
            (
                "named ports group pods",
                &by_name,
                vec![
                    pod("a", Some("10.0.0.1"), true, "web", 8080),
                    pod("b", Some("10.0.0.2"), true, "web", 9090),
                    pod("c", Some("10.0.0.3"), true, "other", 1),
                ],
                json!([
                    {"addresses": [{"ip": "10.0.0.1", "nodeName": "n1", "targetRef": {"kind": "Pod", "name": "a", "namespace": "ns", "uid": "u-a"}}],
                     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
                    {"addresses": [{"ip": "10.0.0.2", "nodeName": "n1", "targetRef": {"kind": "Pod", "name": "b", "namespace": "ns", "uid": "u-b"}}],
                     "ports": [{"name": "http", "port": 9090, "protocol": "TCP"}]},
                ]),
            ),
        ];
        for (name, svc, pods, want) in cases {
            assert_eq!(Value::Array(desired_subsets(svc, &pods)), want, "{name}");
        }
    }

    #[test]
    fn plans_writes_only_when_needed() {
        let svc = service(json!({"app": "web"}), json!([{"port": 80}]));
        let headless = service(json!({}), json!([{"port": 80}]));
        let managed = json!({"metadata": {"name": "web", "namespace": "ns",
            "labels": {MANAGED_BY_LABEL: MANAGED_BY}}, "subsets": []});
        let foreign =
            json!({"metadata": {"name": "web", "namespace": "ns"}, "subsets": [{"x": 1}]});
        let pods = vec![pod("a", Some("10.0.0.1"), true, "web", 80)];
        assert!(matches!(
            plan("ns", "web", Some(&svc), None, &[]),
            EndpointsAction::Create(_)
        ));
        assert_eq!(
            plan("ns", "web", Some(&svc), Some(&managed), &[]),
            EndpointsAction::Nothing
        );
        assert!(matches!(
            plan("ns", "web", Some(&svc), Some(&managed), &pods),
            EndpointsAction::Update(_)
        ));
        assert_eq!(
            plan("ns", "web", Some(&headless), Some(&foreign), &pods),
            EndpointsAction::Nothing
        );
        assert_eq!(
            plan("ns", "web", None, Some(&managed), &[]),
            EndpointsAction::Delete
        );
        assert_eq!(
            plan("ns", "web", None, Some(&foreign), &[]),
            EndpointsAction::Nothing
        );
    }
}
