//! Kubernetes' defaulting of the kinds Keelson serves, on objects held as JSON, and the
//! registry strategies that go with writes (what create, update and status update keep).
//!
//! Defaulting never fails: a malformed part is left as it is, for validation to report.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::resources::Resource;
use crate::validation::Quantity;

/// The default `terminationGracePeriodSeconds` of a pod.
pub const TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
/// How long a Deployment may make no progress before it is reported as failed.
pub const PROGRESS_DEADLINE_SECONDS: i64 = 600;
/// How many old ReplicaSets a Deployment keeps.
pub const REVISION_HISTORY_LIMIT: i64 = 10;
/// ClientIP session affinity timeout.
pub const SESSION_AFFINITY_TIMEOUT_SECONDS: i64 = 10800;
/// The mode of files projected from Secrets and ConfigMaps (0644).
pub const VOLUME_DEFAULT_MODE: i64 = 420;

fn is_unset(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    }
}

/// Sets `key` when it is absent, null or "" (Go's zero value for strings).
fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if is_unset(map.get(key)) {
        map.insert(key.to_owned(), value);
    }
}

/// Sets a non-pointer number field when it is absent or 0 (Go's zero value).
fn default_nonzero(map: &mut Map<String, Value>, key: &str, value: i64) {
    if is_unset(map.get(key)) || map.get(key).and_then(Value::as_i64) == Some(0) {
        map.insert(key.to_owned(), Value::from(value));
    }
}

/// The child object at `key`, created when absent or null; `None` when it is something else.
fn child<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if entry.is_null() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut()
}

/// The existing child object at `key`.
fn existing<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    map.get_mut(key).and_then(Value::as_object_mut)
}

/// The objects in the array at `key` (other entries skipped).
fn each<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// Applies Kubernetes' defaults for `resource` to `obj` (and fills `apiVersion` and `kind`
/// when absent).
pub fn apply(resource: &Resource, obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    default(map, "apiVersion", Value::from(resource.api_version()));
    default(map, "kind", Value::from(resource.kind));
    match (resource.group, resource.kind) {
        ("", "Pod") => pod(map),
        ("", "Service") => service(map),
        ("", "ReplicationController") => replication_controller(map),
        ("apps", "ReplicaSet") => replica_set(map),
        ("apps", "Deployment") => deployment(map),
        ("", "Namespace") => namespace(map),
        ("", "Secret") => secret(map),
        ("", "Node") => node(map),
        ("", "Endpoints") => endpoints(map),
        _ => {}
    }
}

/// `Always` for `:latest` or untagged images, `IfNotPresent` otherwise (a digest without a
/// tag counts as tagged), as Kubernetes decides.
pub fn image_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last_component = name.rsplit('/').next().unwrap_or(name);
    let tag = last_component.split_once(':').map(|(_, tag)| tag);
    match (tag, digest) {
        (Some("latest"), _) | (None, None) => "Always",
        _ => "IfNotPresent",
    }
}

fn probe(probe: &mut Map<String, Value>) {
    default_nonzero(probe, "timeoutSeconds", 1);
    default_nonzero(probe, "periodSeconds", 10);
    default_nonzero(probe, "successThreshold", 1);
    default_nonzero(probe, "failureThreshold", 3);
    http_get(probe);
}

fn http_get(handler: &mut Map<String, Value>) {
    if let Some(http) = existing(handler, "httpGet") {
        default(http, "path", Value::from("/"));
        default(http, "scheme", Value::from("HTTP"));
    }
}

fn container(container: &mut Map<String, Value>, host_network: bool) {
    if let Some(image) = container
        .get("image")
        .and_then(Value::as_str)
        .filter(|i| !i.is_empty())
    {
        let policy = image_pull_policy(image);
        default(container, "imagePullPolicy", Value::from(policy));
    }
    default(
        container,
        "terminationMessagePath",
        Value::from("/dev/termination-log"),
    );
    default(container, "terminationMessagePolicy", Value::from("File"));
    for port in each(container, "ports") {
        default(port, "protocol", Value::from("TCP"));
        if host_network && is_unset(port.get("hostPort")) {
            if let Some(container_port) = port.get("containerPort").cloned() {
                port.insert("hostPort".to_owned(), container_port);
            }
        }
    }
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = existing(container, key) {
            probe(p);
        }
    }
    if let Some(lifecycle) = existing(container, "lifecycle") {
        for key in ["postStart", "preStop"] {
            if let Some(handler) = existing(lifecycle, key) {
                http_get(handler);
            }
        }
    }
    for env in each(container, "env") {
        if let Some(field_ref) =
            existing(env, "valueFrom").and_then(|from| existing(from, "fieldRef"))
        {
            default(field_ref, "apiVersion", Value::from("v1"));
        }
    }
}

fn volume(volume: &mut Map<String, Value>) {
    if volume.keys().all(|k| k == "name") {
        volume.insert("emptyDir".to_owned(), json!({}));
    }
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(source) = existing(volume, key) {
            default(source, "defaultMode", Value::from(VOLUME_DEFAULT_MODE));
        }
    }
    if let Some(host_path) = existing(volume, "hostPath") {
        if !host_path.contains_key("type") {
            host_path.insert("type".to_owned(), Value::from(""));
        }
    }
}

/// Defaults of a pod spec, for pods and pod templates alike.
fn pod_spec(spec: &mut Map<String, Value>) {
    default(spec, "dnsPolicy", Value::from("ClusterFirst"));
    default(spec, "restartPolicy", Value::from("Always"));
    default(spec, "schedulerName", Value::from("default-scheduler"));
    default(
        spec,
        "terminationGracePeriodSeconds",
        Value::from(TERMINATION_GRACE_PERIOD_SECONDS),
    );
    default(spec, "securityContext", json!({}));
    let host_network = spec
        .get("hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for key in ["containers", "initContainers"] {
        for c in each(spec, key) {
            container(c, host_network);
        }
    }
    for v in each(spec, "volumes") {
        volume(v);
    }
}

fn pod_template(map: &mut Map<String, Value>) {
    if let Some(template) = existing(map, "template") {
        if let Some(spec) = existing(template, "spec") {
            pod_spec(spec);
        }
    }
}

/// The requests and limits (cpu and memory) of every container of a pod spec.
fn container_resources(
    spec: &Map<String, Value>,
) -> Vec<(BTreeMap<String, Quantity>, BTreeMap<String, Quantity>)> {
    let parse = |resources: Option<&Value>, key: &str| -> BTreeMap<String, Quantity> {
        resources
            .and_then(|r| r.get(key))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(name, _)| *name == "cpu" || *name == "memory")
                    .filter_map(|(name, q)| {
                        Some((name.clone(), Quantity::parse(q.as_str()?).ok()?))
                    })
                    .filter(|(_, q)| !q.is_zero())
                    .collect()
            })
            .unwrap_or_default()
    };
    ["containers", "initContainers"]
        .iter()
        .filter_map(|key| spec.get(*key).and_then(Value::as_array))
        .flatten()
        .map(|c| {
            (
                parse(c.get("resources"), "requests"),
                parse(c.get("resources"), "limits"),
            )
        })
        .collect()
}

/// The QoS class of a pod spec: BestEffort (no cpu/memory requests or limits), Guaranteed
/// (every container limits cpu and memory and requests equal limits), else Burstable.
pub fn qos_class(spec: &Value) -> &'static str {
    let Some(spec) = spec.as_object() else {
        return "BestEffort";
    };
    let resources = container_resources(spec);
    if resources
        .iter()
        .all(|(requests, limits)| requests.is_empty() && limits.is_empty())
    {
        return "BestEffort";
    }
    let guaranteed = resources.iter().all(|(requests, limits)| {
        ["cpu", "memory"].iter().all(|name| {
            let limit = limits.get(*name);
            limit.is_some()
                && requests
                    .get(*name)
                    .is_none_or(|request| Some(request) == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn pod(map: &mut Map<String, Value>) {
    if let Some(spec) = child(map, "spec") {
        pod_spec(spec);
        default(spec, "enableServiceLinks", Value::from(true));
        // The ServiceAccount admission plugin's default, and the deprecated mirror field.
        let account = spec
            .get("serviceAccountName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .or_else(|| {
                spec.get("serviceAccount")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or("default")
            .to_owned();
        default(spec, "serviceAccountName", Value::from(account.as_str()));
        default(spec, "serviceAccount", Value::from(account));
        // A pod's container requests default to its limits.
        for key in ["containers", "initContainers"] {
            for c in each(spec, key) {
                if let Some(resources) = existing(c, "resources") {
                    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned()
                    else {
                        continue;
                    };
                    if let Some(requests) = child(resources, "requests") {
                        for (name, quantity) in limits {
                            requests.entry(name).or_insert(quantity);
                        }
                    }
                }
            }
        }
    }
    let qos = map.get("spec").map(qos_class).unwrap_or("BestEffort");
    if let Some(status) = child(map, "status") {
        default(status, "phase", Value::from("Pending"));
        default(status, "qosClass", Value::from(qos));
    }
}

fn service(map: &mut Map<String, Value>) {
    let Some(spec) = child(map, "spec") else {
        return;
    };
    default(spec, "type", Value::from("ClusterIP"));
    default(spec, "sessionAffinity", Value::from("None"));
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        default(
            spec,
            "sessionAffinityConfig",
            json!({"clientIP": {"timeoutSeconds": SESSION_AFFINITY_TIMEOUT_SECONDS}}),
        );
    }
    for port in each(spec, "ports") {
        default(port, "protocol", Value::from("TCP"));
        let unset = is_unset(port.get("targetPort"))
            || port.get("targetPort").and_then(Value::as_i64) == Some(0);
        if unset {
            if let Some(number) = port.get("port").cloned() {
                port.insert("targetPort".to_owned(), number);
            }
        }
    }
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_owned();
    if service_type == "NodePort" || service_type == "LoadBalancer" {
        default(spec, "externalTrafficPolicy", Value::from("Cluster"));
    }
    if service_type == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", Value::from(true));
    }
    if service_type != "ExternalName" {
        default(spec, "internalTrafficPolicy", Value::from("Cluster"));
        default(spec, "ipFamilyPolicy", Value::from("SingleStack"));
        let cluster_ip = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let family = if cluster_ip.contains(':') {
            "IPv6"
        } else {
            "IPv4"
        };
        default(spec, "ipFamilies", json!([family]));
    }
}

fn replication_controller(map: &mut Map<String, Value>) {
    let template_labels = map
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .filter(|l| l.as_object().is_some_and(|l| !l.is_empty()))
        .cloned();
    if let Some(labels) = template_labels {
        if let Some(spec) = existing(map, "spec") {
            if spec
                .get("selector")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty)
            {
                spec.insert("selector".to_owned(), labels.clone());
            }
        }
        if let Some(meta) = child(map, "metadata") {
            if meta
                .get("labels")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty)
            {
                meta.insert("labels".to_owned(), labels);
            }
        }
    }
    if let Some(spec) = child(map, "spec") {
        default(spec, "replicas", Value::from(1));
        pod_template(spec);
    }
}

fn replica_set(map: &mut Map<String, Value>) {
    if let Some(spec) = child(map, "spec") {
        default(spec, "replicas", Value::from(1));
        pod_template(spec);
    }
}

fn deployment(map: &mut Map<String, Value>) {
    let Some(spec) = child(map, "spec") else {
        return;
    };
    default(spec, "replicas", Value::from(1));
    default(
        spec,
        "revisionHistoryLimit",
        Value::from(REVISION_HISTORY_LIMIT),
    );
    default(
        spec,
        "progressDeadlineSeconds",
        Value::from(PROGRESS_DEADLINE_SECONDS),
    );
    if let Some(strategy) = child(spec, "strategy") {
        default(strategy, "type", Value::from("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
            if let Some(rolling) = child(strategy, "rollingUpdate") {
                default(rolling, "maxUnavailable", Value::from("25%"));
                default(rolling, "maxSurge", Value::from("25%"));
            }
        }
    }
    pod_template(spec);
}

fn namespace(map: &mut Map<String, Value>) {
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        if let Some(labels) = child(map, "metadata").and_then(|m| child(m, "labels")) {
            labels.insert("kubernetes.io/metadata.name".to_owned(), Value::from(name));
        }
    }
    if let Some(spec) = child(map, "spec") {
        default(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = child(map, "status") {
        default(status, "phase", Value::from("Active"));
    }
}

fn secret(map: &mut Map<String, Value>) {
    default(map, "type", Value::from("Opaque"));
    // `stringData` is write-only: merged into `data` (base64) as Kubernetes' conversion does.
    if let Some(Value::Object(string_data)) = map.get("stringData").cloned() {
        if let Some(data) = child(map, "data") {
            for (key, value) in string_data {
                if let Some(text) = value.as_str() {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
                    data.insert(key, Value::from(encoded));
                }
            }
            map.remove("stringData");
        }
    }
}

fn node(map: &mut Map<String, Value>) {
    if let Some(status) = existing(map, "status") {
        if let Some(capacity) = status.get("capacity").filter(|c| c.is_object()).cloned() {
            default(status, "allocatable", capacity);
        }
    }
}

fn endpoints(map: &mut Map<String, Value>) {
    for subset in each(map, "subsets") {
        for port in each(subset, "ports") {
            default(port, "protocol", Value::from("TCP"));
        }
    }
}

/// Whether the resource has a `status` subresource (so its main endpoint ignores status).
fn has_status(resource: &Resource) -> bool {
    resource.subresource("status").is_some()
}

fn meta_value<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.get("metadata").and_then(|m| m.get(key))
}

/// What the registry does to a new object before defaulting and validation: status is
/// cleared where it has its own subresource (Nodes keep theirs, as in Kubernetes), and
/// `metadata.generation` starts at 1.
pub fn prepare_for_create(resource: &Resource, obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    if has_status(resource) && resource.kind != "Node" {
        map.remove("status");
    }
    if let Some(meta) = child(map, "metadata") {
        meta.insert("generation".to_owned(), Value::from(1));
    }
}

/// What the registry does to an update before defaulting and validation: the fields the
/// server owns are carried over from `old` (uid, creationTimestamp, deletionTimestamp,
/// deletionGracePeriodSeconds; a Service's allocated clusterIP(s), IP families and
/// nodePorts when the update leaves them out), status is kept from `old` where it has its own
/// subresource, and `metadata.generation` goes up by one when the spec changes.
pub fn prepare_for_update(resource: &Resource, old: &Value, new: &mut Value) {
    let Some(map) = new.as_object_mut() else {
        return;
    };
    if has_status(resource) {
        match old.get("status") {
            Some(status) => map.insert("status".to_owned(), status.clone()),
            None => map.remove("status"),
        };
    }
    let spec_changed = old.get("spec") != map.get("spec");
    if let Some(meta) = child(map, "metadata") {
        for key in ["uid", "creationTimestamp"] {
            if is_unset(meta.get(key)) {
                if let Some(value) = meta_value(old, key) {
                    meta.insert(key.to_owned(), value.clone());
                }
            }
        }
        for key in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
            match meta_value(old, key) {
                Some(value) => meta.insert(key.to_owned(), value.clone()),
                None => meta.remove(key),
            };
        }
        let generation = meta_value(old, "generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let generation = if spec_changed {
            generation + 1
        } else {
            generation
        };
        meta.insert("generation".to_owned(), Value::from(generation));
    }
    if (resource.group, resource.kind) == ("", "Service") {
        carry_service_allocations(old, map);
    }
}

fn carry_service_allocations(old: &Value, new: &mut Map<String, Value>) {
    let Some(old_spec) = old.get("spec").and_then(Value::as_object) else {
        return;
    };
    let Some(spec) = existing(new, "spec") else {
        return;
    };
    let new_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_owned();
    if new_type == "ExternalName" {
        return;
    }
    for key in [
        "clusterIP",
        "clusterIPs",
        "ipFamilies",
        "ipFamilyPolicy",
        "healthCheckNodePort",
    ] {
        if is_unset(spec.get(key)) {
            if let Some(value) = old_spec.get(key) {
                spec.insert(key.to_owned(), value.clone());
            }
        }
    }
    let port_key = |p: &Value| {
        (
            p.get("port").and_then(Value::as_i64),
            p.get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP")
                .to_owned(),
        )
    };
    let old_ports: Vec<&Value> = old_spec
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if new_type == "NodePort" || new_type == "LoadBalancer" {
        for port in each(spec, "ports") {
            let unset = is_unset(port.get("nodePort"))
                || port.get("nodePort").and_then(Value::as_i64) == Some(0);
            if !unset {
                continue;
            }
            let key = port_key(&Value::Object(port.clone()));
            if let Some(node_port) = old_ports
                .iter()
                .find(|p| port_key(p) == key)
                .and_then(|p| p.get("nodePort"))
            {
                port.insert("nodePort".to_owned(), node_port.clone());
            }
        }
    }
}

/// What the registry does to a status update: everything but `status` (and labels,
/// annotations and finalizers in `metadata`) comes from `old`.
pub fn prepare_for_status_update(old: &Value, new: &mut Value) {
    let status = new.get("status").cloned();
    let mut merged = old.clone();
    if let Some(map) = merged.as_object_mut() {
        match status {
            Some(status) => map.insert("status".to_owned(), status),
            None => map.remove("status"),
        };
        if let (Some(meta), Some(new_meta)) = (
            child(map, "metadata"),
            new.get("metadata").and_then(Value::as_object),
        ) {
            for key in ["labels", "annotations", "finalizers", "resourceVersion"] {
                match new_meta.get(key) {
                    Some(value) => meta.insert(key.to_owned(), value.clone()),
                    None => meta.remove(key),
                };
            }
        }
    }
    *new = merged;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    fn defaulted(group: &str, plural: &str, mut obj: Value) -> Value {
        apply(find(group, "v1", plural).unwrap(), &mut obj);
        obj
    }

    #[test]
    fn pod_gets_kubernetes_defaults() {
        let pod = defaulted(
            "",
            "pods",
            json!({
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {
                    "containers": [{
                        "name": "main", "image": "nginx",
                        "ports": [{"containerPort": 80}],
                        "readinessProbe": {"httpGet": {"port": 80}},
                        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                        "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
                    }],
                    "initContainers": [{"name": "init", "image": "busybox:1.36"}],
                    // The init container has no limits: Burstable, as Kubernetes counts it.
                    "volumes": [{"name": "scratch"}, {"name": "cfg", "configMap": {"name": "cfg"}}]
                }
            }),
        );
        assert_eq!(
            pod,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {
                    "containers": [{
                        "name": "main", "image": "nginx", "imagePullPolicy": "Always",
                        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                                           "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}},
                        "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName", "apiVersion": "v1"}}}]
                    }],
                    "initContainers": [{
                        "name": "init", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
                        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"
                    }],
                    "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}}],
                    "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                    "terminationGracePeriodSeconds": 30, "securityContext": {}, "enableServiceLinks": true,
                    "serviceAccountName": "default", "serviceAccount": "default"
                },
                "status": {"phase": "Pending", "qosClass": "Burstable"}
            })
        );
    }

    #[test]
    fn defaults_keep_what_is_set() {
        let pod = defaulted(
            "",
            "pods",
            json!({"spec": {"restartPolicy": "Never", "serviceAccountName": "builder", "terminationGracePeriodSeconds": 0,
                            "hostNetwork": true,
                            "containers": [{"name": "c", "image": "x:latest", "imagePullPolicy": "Never",
                                            "ports": [{"containerPort": 53, "protocol": "UDP"}],
                                            "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5}}]},
                   "status": {"phase": "Running"}}),
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["serviceAccountName"], "builder");
        assert_eq!(pod["spec"]["serviceAccount"], "builder");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 0);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never");
        assert_eq!(
            pod["spec"]["containers"][0]["ports"][0],
            json!({"containerPort": 53, "protocol": "UDP", "hostPort": 53})
        );
        assert_eq!(
            pod["spec"]["containers"][0]["livenessProbe"]["periodSeconds"],
            5
        );
        assert_eq!(
            pod["spec"]["containers"][0]["livenessProbe"]["timeoutSeconds"],
            1
        );
        assert_eq!(
            pod["status"],
            json!({"phase": "Running", "qosClass": "BestEffort"})
        );
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        let cases = [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.27", "IfNotPresent"),
            ("localhost:5000/nginx", "Always"),
            ("localhost:5000/nginx:1.0", "IfNotPresent"),
            ("nginx@sha256:abcd", "IfNotPresent"),
            ("nginx:latest@sha256:abcd", "Always"),
            ("registry.example.com/team/app:v2", "IfNotPresent"),
        ];
        for (image, policy) in cases {
            assert_eq!(image_pull_policy(image), policy, "{image}");
        }
    }

    #[test]
    fn qos_classes() {
        let spec =
            |resources: Value| json!({"containers": [{"name": "c", "resources": resources}]});
        let cases = [
            (json!({}), "BestEffort"),
            (json!({"requests": {"cpu": "0"}}), "BestEffort"),
            (json!({"requests": {"cpu": "100m"}}), "Burstable"),
            (
                json!({"limits": {"cpu": "1", "memory": "1Gi"}}),
                "Guaranteed",
            ),
            (
                json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m", "memory": "1Gi"}}),
                "Guaranteed",
            ),
            (
                json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}),
                "Burstable",
            ),
            (json!({"limits": {"cpu": "1"}}), "Burstable"),
        ];
        for (resources, class) in cases {
            assert_eq!(qos_class(&spec(resources.clone())), class, "{resources}");
        }
        assert_eq!(qos_class(&json!("not a spec")), "BestEffort");
    }

    #[test]
    fn service_defaults() {
        let cases = [
            (
                json!({"spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}}),
                json!({"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}], "selector": {"app": "web"},
                       "type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                       "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]}),
            ),
            (
                json!({"spec": {"type": "LoadBalancer", "clusterIP": "fd00::10", "sessionAffinity": "ClientIP",
                                "ports": [{"port": 443, "targetPort": "https"}]}}),
                json!({"ports": [{"port": 443, "protocol": "TCP", "targetPort": "https"}], "type": "LoadBalancer",
                       "clusterIP": "fd00::10", "sessionAffinity": "ClientIP",
                       "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
                       "externalTrafficPolicy": "Cluster", "allocateLoadBalancerNodePorts": true,
                       "internalTrafficPolicy": "Cluster", "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"]}),
            ),
            (
                json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
                json!({"type": "ExternalName", "externalName": "db.example.com", "sessionAffinity": "None"}),
            ),
        ];
        for (input, spec) in cases {
            assert_eq!(defaulted("", "services", input)["spec"], spec);
        }
    }

    #[test]
    fn workload_defaults() {
        let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}});
        let deployment = defaulted(
            "apps",
            "deployments",
            json!({"spec": {"template": template}}),
        );
        let spec = &deployment["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            spec["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert!(
            spec["template"]["spec"].get("serviceAccountName").is_none(),
            "admission defaults are for pods only"
        );
        assert!(spec["template"]["spec"].get("enableServiceLinks").is_none());

        let recreate = defaulted(
            "apps",
            "deployments",
            json!({"spec": {"strategy": {"type": "Recreate"}, "replicas": 0}}),
        );
        assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(recreate["spec"]["replicas"], 0);

        let rs = defaulted(
            "apps",
            "replicasets",
            json!({"spec": {"template": template}}),
        );
        assert_eq!(rs["spec"]["replicas"], 1);
        assert!(
            rs["spec"].get("selector").is_none(),
            "apps/v1 does not default the selector"
        );
        assert_eq!(rs["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");

        let rc = defaulted(
            "",
            "replicationcontrollers",
            json!({"metadata": {"name": "rc"}, "spec": {"template": template}}),
        );
        assert_eq!(rc["spec"]["selector"], json!({"app": "web"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(rc["spec"]["replicas"], 1);
        let rc = defaulted(
            "",
            "replicationcontrollers",
            json!({"metadata": {"labels": {"own": "x"}}, "spec": {"selector": {"app": "web"}, "template": template}}),
        );
        assert_eq!(rc["metadata"]["labels"], json!({"own": "x"}));
    }

    #[test]
    fn other_kind_defaults() {
        let ns = defaulted("", "namespaces", json!({"metadata": {"name": "team-a"}}));
        assert_eq!(ns["spec"], json!({"finalizers": ["kubernetes"]}));
        assert_eq!(ns["status"], json!({"phase": "Active"}));
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team-a"
        );

        let secret = defaulted(
            "",
            "secrets",
            json!({"stringData": {"user": "admin"}, "data": {"x": "eQ=="}}),
        );
        assert_eq!(secret["type"], "Opaque");
        assert_eq!(secret["data"], json!({"user": "YWRtaW4=", "x": "eQ=="}));
        assert!(secret.get("stringData").is_none());

        let node = defaulted("", "nodes", json!({"status": {"capacity": {"cpu": "2"}}}));
        assert_eq!(node["status"]["allocatable"], json!({"cpu": "2"}));

        let endpoints = defaulted(
            "",
            "endpoints",
            json!({"subsets": [{"ports": [{"port": 80}]}]}),
        );
        assert_eq!(endpoints["subsets"][0]["ports"][0]["protocol"], "TCP");

        let lease = defaulted("coordination.k8s.io", "leases", json!({}));
        assert_eq!(
            lease,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease"})
        );
    }

    #[test]
    fn malformed_objects_do_not_panic_and_stay_malformed() {
        let cases = [
            ("", "pods", json!({"spec": "x"})),
            (
                "",
                "pods",
                json!({"spec": {"containers": 5, "volumes": [1, "x"]}}),
            ),
            (
                "",
                "pods",
                json!({"spec": {"containers": [null, {"ports": "x", "image": 3}]}}),
            ),
            (
                "",
                "services",
                json!({"spec": {"ports": [{"port": "x"}], "type": 7}}),
            ),
            (
                "apps",
                "deployments",
                json!({"spec": {"strategy": "fast", "template": 1}}),
            ),
            (
                "",
                "replicationcontrollers",
                json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}}}}, "metadata": 3}),
            ),
            ("", "secrets", json!({"stringData": {"a": 1}})),
            (
                "",
                "namespaces",
                json!({"metadata": {"name": 5}, "status": []}),
            ),
            ("", "pods", json!("not an object")),
        ];
        for (group, plural, obj) in cases {
            let out = defaulted(group, plural, obj.clone());
            if let (Some(before), Some(after)) = (obj.get("spec"), out.get("spec")) {
                if !before.is_object() {
                    assert_eq!(before, after, "{plural}: a malformed spec is left alone");
                }
            }
        }
    }

    #[test]
    fn registry_strategies() {
        let deployments = find("apps", "v1", "deployments").unwrap();
        let mut created =
            json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}, "status": {"replicas": 9}});
        prepare_for_create(deployments, &mut created);
        assert_eq!(
            created,
            json!({"metadata": {"name": "d", "generation": 1}, "spec": {"replicas": 1}})
        );
        let nodes = find("", "v1", "nodes").unwrap();
        let mut node = json!({"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "2"}}});
        prepare_for_create(nodes, &mut node);
        assert_eq!(
            node["status"]["capacity"]["cpu"], "2",
            "nodes may set status on create"
        );

        let old = json!({"metadata": {"name": "d", "uid": "u", "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 3},
                         "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let cases = [
            (
                json!({"metadata": {"name": "d"}, "spec": {"replicas": 2}, "status": {"replicas": 7}}),
                4,
            ),
            (
                json!({"metadata": {"name": "d", "labels": {"a": "b"}}, "spec": {"replicas": 1}}),
                3,
            ),
        ];
        for (mut new, generation) in cases {
            prepare_for_update(deployments, &old, &mut new);
            assert_eq!(new["metadata"]["generation"], generation, "{new}");
            assert_eq!(new["metadata"]["uid"], "u");
            assert_eq!(new["metadata"]["creationTimestamp"], "2026-01-01T00:00:00Z");
            assert_eq!(
                new["status"],
                json!({"replicas": 1}),
                "status comes from the old object"
            );
        }

        let services = find("", "v1", "services").unwrap();
        let old_service = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.5",
            "clusterIPs": ["10.96.0.5"], "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}, {"port": 81, "nodePort": 30081}]}});
        let mut new_service = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort",
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 82}]}});
        prepare_for_update(services, &old_service, &mut new_service);
        assert_eq!(new_service["spec"]["clusterIP"], "10.96.0.5");
        assert_eq!(new_service["spec"]["clusterIPs"], json!(["10.96.0.5"]));
        assert_eq!(new_service["spec"]["ports"][0]["nodePort"], 30080);
        assert!(
            new_service["spec"]["ports"][1].get("nodePort").is_none(),
            "a new port gets no old nodePort"
        );

        let old_pod = json!({"metadata": {"name": "p", "labels": {"a": "1"}, "resourceVersion": "5"},
                             "spec": {"nodeName": "n1"}, "status": {"phase": "Pending"}});
        let mut status_update = json!({"metadata": {"name": "p", "labels": {"a": "2"}, "resourceVersion": "5"},
                                       "spec": {"nodeName": "evil"}, "status": {"phase": "Running"}});
        prepare_for_status_update(&old_pod, &mut status_update);
        assert_eq!(status_update["spec"]["nodeName"], "n1");
        assert_eq!(status_update["status"]["phase"], "Running");
        assert_eq!(status_update["metadata"]["labels"]["a"], "2");
    }
}
