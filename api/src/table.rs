//! Server-side tables: the `meta.k8s.io/v1` `Table` the API server answers to
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` (what `kubectl get` prints), with the
//! columns and cells of Kubernetes' printers (`pkg/printers/internalversion/printers.go`).
//!
//! Like the real server, every row carries all cells, the wide ones (`priority: 1`) included;
//! kubectl hides those unless `-o wide`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Value};

/// Endpoints shown in the Endpoints column before " + N more..." (Kubernetes' `formatEndpoints`).
pub const ENDPOINTS_SHOWN_MAX: usize = 3;

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DESCRIPTION: &str = "Names of each container in the template.";
const IMAGES_DESCRIPTION: &str = "Images referenced by each container in the template.";

struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    description: &'static str,
    priority: u8,
}

const fn column(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 1,
    }
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: NAME_DESCRIPTION,
    priority: 0,
};
const AGE: Column = column("Age", "string", AGE_DESCRIPTION);

const POD_COLUMNS: &[Column] = &[
    NAME,
    column("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    column("Status", "string", "The aggregate status of the containers in this pod."),
    column(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
    wide("Node", "string", "NodeName indicates in which node this pod is scheduled."),
    wide("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node."),
    wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness."),
];

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    column("Type", "string", "type determines how the Service is exposed."),
    column("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly."),
    column("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
    column("Port(s)", "string", "The list of ports that are exposed by this service."),
    AGE,
    wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector."),
];

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    column("Ready", "string", "Number of the pod with ready state"),
    column("Up-to-date", "string", "Total number of non-terminating pods targeted by this deployment that have the desired template spec."),
    column("Available", "string", "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment."),
    AGE,
    wide("Containers", "string", CONTAINERS_DESCRIPTION),
    wide("Images", "string", IMAGES_DESCRIPTION),
    wide("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
];

const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Desired",
        "integer",
        "Replicas is the number of desired pods.",
    ),
    column(
        "Current",
        "integer",
        "Replicas is the most recently observed number of non-terminating pods.",
    ),
    column(
        "Ready",
        "integer",
        "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
    ),
    AGE,
    wide("Containers", "string", CONTAINERS_DESCRIPTION),
    wide("Images", "string", IMAGES_DESCRIPTION),
    wide(
        "Selector",
        "string",
        "Selector is a label query over pods that should match the replica count.",
    ),
];

const NODE_COLUMNS: &[Column] = &[
    NAME,
    column("Status", "string", "The status of the node"),
    column("Roles", "string", "The roles of the node"),
    AGE,
    column("Version", "string", "Kubelet Version reported by the node."),
    wide("Internal-IP", "string", "List of addresses reachable to the node."),
    wide("External-IP", "string", "List of addresses reachable to the node."),
    wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
    wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
    wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
];

const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    column("Status", "string", "The status of the namespace"),
    AGE,
];

const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets.",
    ),
    AGE,
];

const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    column("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
    AGE,
];

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data.",
    ),
    column("Data", "string", "Data contains the secret data."),
    AGE,
];

const CONFIG_MAP_COLUMNS: &[Column] = &[
    NAME,
    column("Data", "string", "Data contains the configuration data."),
    AGE,
];

const EVENT_COLUMNS: &[Column] = &[
    column("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
    column("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
    column("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
    column("Object", "string", "The object that this event is about."),
    wide("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement."),
    wide("Source", "string", "The component reporting this event. Should be a short machine understandable string."),
    column("Message", "string", "A human-readable description of the status of this operation."),
    wide("First Seen", "string", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
    wide("Count", "string", "The number of times this event has occurred."),
    Column {
        name: "Name",
        kind: "string",
        format: "name",
        description: NAME_DESCRIPTION,
        priority: 1,
    },
];

const LEASE_COLUMNS: &[Column] = &[
    NAME,
    column(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease.",
    ),
    AGE,
];

const DEFAULT_COLUMNS: &[Column] = &[NAME, AGE];

#[derive(Clone, Copy)]
enum Printer {
    Pod,
    Service,
    Deployment,
    ReplicaSet,
    ReplicationController,
    Node,
    Namespace,
    Endpoints,
    ServiceAccount,
    Secret,
    ConfigMap,
    Event,
    Lease,
    Default,
}

impl Printer {
    fn for_kind(kind: &str) -> Printer {
        match kind {
            "Pod" => Printer::Pod,
            "Service" => Printer::Service,
            "Deployment" => Printer::Deployment,
            "ReplicaSet" => Printer::ReplicaSet,
            "ReplicationController" => Printer::ReplicationController,
            "Node" => Printer::Node,
            "Namespace" => Printer::Namespace,
            "Endpoints" => Printer::Endpoints,
            "ServiceAccount" => Printer::ServiceAccount,
            "Secret" => Printer::Secret,
            "ConfigMap" => Printer::ConfigMap,
            "Event" => Printer::Event,
            "Lease" => Printer::Lease,
            _ => Printer::Default,
        }
    }

    fn columns(self) -> &'static [Column] {
        match self {
            Printer::Pod => POD_COLUMNS,
            Printer::Service => SERVICE_COLUMNS,
            Printer::Deployment => DEPLOYMENT_COLUMNS,
            Printer::ReplicaSet | Printer::ReplicationController => REPLICA_SET_COLUMNS,
            Printer::Node => NODE_COLUMNS,
            Printer::Namespace => NAMESPACE_COLUMNS,
            Printer::Endpoints => ENDPOINTS_COLUMNS,
            Printer::ServiceAccount => SERVICE_ACCOUNT_COLUMNS,
            Printer::Secret => SECRET_COLUMNS,
            Printer::ConfigMap => CONFIG_MAP_COLUMNS,
            Printer::Event => EVENT_COLUMNS,
            Printer::Lease => LEASE_COLUMNS,
            Printer::Default => DEFAULT_COLUMNS,
        }
    }

    /// The row's cells, one per column, and its `conditions` if any.
    fn cells(self, object: &Value, now: Timestamp) -> (Vec<Value>, Option<Value>) {
        let name = text(object, &["metadata", "name"]);
        let age = since(timestamp(object, &["metadata", "creationTimestamp"]), now);
        let cells = match self {
            Printer::Pod => return pod_cells(object, now),
            Printer::Service => service_cells(object, name, age),
            Printer::Deployment => deployment_cells(object, name, age),
            Printer::ReplicaSet => replica_set_cells(
                object,
                name,
                age,
                label_selector(get(object, &["spec", "selector"])),
            ),
            Printer::ReplicationController => replica_set_cells(
                object,
                name,
                age,
                format_labels(get(object, &["spec", "selector"])),
            ),
            Printer::Node => node_cells(object, name, age),
            Printer::Namespace => {
                let phase = or(text(object, &["status", "phase"]), "Active");
                vec![json!(name), json!(phase), json!(age)]
            }
            Printer::Endpoints => vec![json!(name), json!(format_endpoints(object)), json!(age)],
            Printer::ServiceAccount => vec![
                json!(name),
                json!(list(object, &["secrets"]).len()),
                json!(age),
            ],
            Printer::Secret => {
                let kind = or(text(object, &["type"]), "Opaque");
                vec![
                    json!(name),
                    json!(kind),
                    json!(map_len(object, &["data"])),
                    json!(age),
                ]
            }
            Printer::ConfigMap => {
                let count = map_len(object, &["data"]) + map_len(object, &["binaryData"]);
                vec![json!(name), json!(count), json!(age)]
            }
            Printer::Event => event_cells(object, name, now),
            Printer::Lease => vec![
                json!(name),
                json!(text(object, &["spec", "holderIdentity"])),
                json!(age),
            ],
            Printer::Default => vec![json!(name), json!(age)],
        };
        (cells, None)
    }
}

/// The `meta.k8s.io/v1` `Table` of `objects`, all of `kind`, with ages relative to `now`.
///
/// Each row's `object` is a `PartialObjectMetadata` holding the object's metadata (kubectl's
/// NAMESPACE column for `-A` comes from it). The table's own `metadata` is left `{}`: the
/// server sets `metadata.resourceVersion` (and `metadata.continue` for a paged list) on the
/// returned value, as it does for a list. Unknown kinds get Name and Age.
pub fn table(kind: &str, objects: &[Value], now: Timestamp) -> Value {
    let printer = Printer::for_kind(kind);
    let columns: Vec<Value> = printer
        .columns()
        .iter()
        .map(|column| {
            json!({
                "name": column.name,
                "type": column.kind,
                "format": column.format,
                "description": column.description,
                "priority": column.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let (cells, conditions) = printer.cells(object, now);
            let metadata = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
            let mut row = json!({
                "cells": cells,
                "object": {
                    "apiVersion": "meta.k8s.io/v1",
                    "kind": "PartialObjectMetadata",
                    "metadata": metadata,
                },
            });
            if let (Some(conditions), Value::Object(row)) = (conditions, &mut row) {
                row.insert("conditions".to_string(), conditions);
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// A duration as Kubernetes prints ages (`k8s.io/apimachinery/pkg/util/duration.HumanDuration`):
/// seconds under 2 minutes, `5m3s` under 10 minutes, minutes under 3 hours, `3h30m` under 8
/// hours, hours under 2 days, `2d5h` under 8 days, days under 2 years, `2y30d` under 8 years,
/// then years.
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Kubernetes' `translateTimestampSince`: `<unknown>` without a timestamp; a time up to a
/// second ahead of `now` is `0s` (clock skew), further ahead `<invalid>`.
fn since(time: Option<Timestamp>, now: Timestamp) -> String {
    let Some(time) = time else {
        return "<unknown>".to_string();
    };
    let nanoseconds = now.as_nanosecond() - time.as_nanosecond();
    if nanoseconds < 0 {
        let seconds = nanoseconds / 1_000_000_000;
        return if seconds < -1 { "<invalid>" } else { "0s" }.to_string();
    }
    human_duration(Duration::from_nanos(
        u64::try_from(nanoseconds).unwrap_or(u64::MAX),
    ))
}

// ---------------------------------------------------------------------------------------------
// Field access
// ---------------------------------------------------------------------------------------------

fn get<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| value.get(*key))
}

fn text<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    get(value, path).and_then(Value::as_str).unwrap_or_default()
}

fn integer(value: &Value, path: &[&str]) -> i64 {
    get(value, path).and_then(Value::as_i64).unwrap_or(0)
}

fn flag(value: &Value, path: &[&str]) -> bool {
    get(value, path).and_then(Value::as_bool).unwrap_or(false)
}

fn list<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    get(value, path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn map_len(value: &Value, path: &[&str]) -> usize {
    get(value, path)
        .and_then(Value::as_object)
        .map_or(0, |map| map.len())
}

fn timestamp(value: &Value, path: &[&str]) -> Option<Timestamp> {
    get(value, path)
        .and_then(Value::as_str)
        .and_then(|text| text.parse().ok())
}

fn or<'a>(text: &'a str, default: &'a str) -> &'a str {
    if text.is_empty() {
        default
    } else {
        text
    }
}

fn later(current: Option<Timestamp>, candidate: Option<Timestamp>) -> Option<Timestamp> {
    match (current, candidate) {
        (Some(current), Some(candidate)) => Some(current.max(candidate)),
        (current, candidate) => current.or(candidate),
    }
}

fn condition_true(object: &Value, kind: &str) -> bool {
    list(object, &["status", "conditions"])
        .iter()
        .any(|condition| {
            text(condition, &["type"]) == kind && text(condition, &["status"]) == "True"
        })
}

// ---------------------------------------------------------------------------------------------
// Printers
// ---------------------------------------------------------------------------------------------

fn pod_cells(pod: &Value, now: Timestamp) -> (Vec<Value>, Option<Value>) {
    let init_specs = list(pod, &["spec", "initContainers"]);
    let restartable_init = |name: &str| {
        init_specs
            .iter()
            .any(|spec| text(spec, &["name"]) == name && text(spec, &["restartPolicy"]) == "Always")
    };
    let total = list(pod, &["spec", "containers"]).len()
        + init_specs
            .iter()
            .filter(|spec| text(spec, &["restartPolicy"]) == "Always")
            .count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut restartable_init_restarts = 0;
    let mut last_restart = None;
    let mut last_restartable_init_restart = None;

    let phase = or(text(pod, &["status", "phase"]), "Pending");
    let mut reason = or(text(pod, &["status", "reason"]), phase).to_string();
    let gated = list(pod, &["status", "conditions"])
        .iter()
        .any(|condition| {
            text(condition, &["type"]) == "PodScheduled"
                && text(condition, &["reason"]) == "SchedulingGated"
        });
    if gated {
        reason = "SchedulingGated".to_string();
    }

    let mut initializing = false;
    for (index, status) in list(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let count = integer(status, &["restartCount"]);
        let finished = timestamp(status, &["lastState", "terminated", "finishedAt"]);
        restarts += count;
        last_restart = later(last_restart, finished);
        let restartable = restartable_init(text(status, &["name"]));
        if restartable {
            restartable_init_restarts += count;
            last_restartable_init_restart = later(last_restartable_init_restart, finished);
        }
        let terminated = get(status, &["state", "terminated"]).filter(|t| !t.is_null());
        let waiting_reason = text(status, &["state", "waiting", "reason"]);
        if terminated.is_some_and(|t| integer(t, &["exitCode"]) == 0) {
            continue;
        }
        if restartable && flag(status, &["started"]) {
            if flag(status, &["ready"]) {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(terminated) = terminated {
            match text(terminated, &["reason"]) {
                "" => match integer(terminated, &["signal"]) {
                    0 => format!("Init:ExitCode:{}", integer(terminated, &["exitCode"])),
                    signal => format!("Init:Signal:{signal}"),
                },
                why => format!("Init:{why}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{index}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "Initialized") {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        for status in list(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += integer(status, &["restartCount"]);
            last_restart = later(
                last_restart,
                timestamp(status, &["lastState", "terminated", "finishedAt"]),
            );
            let waiting_reason = text(status, &["state", "waiting", "reason"]);
            let terminated = get(status, &["state", "terminated"]).filter(|t| !t.is_null());
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(terminated) = terminated {
                reason = match text(terminated, &["reason"]) {
                    "" => match integer(terminated, &["signal"]) {
                        0 => format!("ExitCode:{}", integer(terminated, &["exitCode"])),
                        signal => format!("Signal:{signal}"),
                    },
                    why => why.to_string(),
                };
            } else if flag(status, &["ready"])
                && get(status, &["state", "running"]).is_some_and(|r| !r.is_null())
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "Ready") {
                "Running"
            } else {
                "NotReady"
            }
            .to_string();
        }
    }

    let deleting = get(pod, &["metadata", "deletionTimestamp"]).is_some_and(|t| !t.is_null());
    if deleting && text(pod, &["status", "reason"]) == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(time) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(time), now)),
        _ => restarts.to_string(),
    };

    let ip = list(pod, &["status", "podIPs"])
        .first()
        .map(|ip| text(ip, &["ip"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| or(text(pod, &["status", "podIP"]), "<none>"));
    let gates = list(pod, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = list(pod, &["status", "conditions"]);
        let passed = gates
            .iter()
            .filter(|gate| {
                let kind = text(gate, &["conditionType"]);
                conditions
                    .iter()
                    .find(|condition| text(condition, &["type"]) == kind)
                    .is_some_and(|condition| text(condition, &["status"]) == "True")
            })
            .count();
        format!("{passed}/{}", gates.len())
    };

    let cells = vec![
        json!(text(pod, &["metadata", "name"])),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(since(
            timestamp(pod, &["metadata", "creationTimestamp"]),
            now
        )),
        json!(ip),
        json!(or(text(pod, &["spec", "nodeName"]), "<none>")),
        json!(or(text(pod, &["status", "nominatedNodeName"]), "<none>")),
        json!(readiness_gates),
    ];
    let conditions = match phase {
        "Succeeded" => Some(("Succeeded", "The pod has completed successfully.")),
        "Failed" => Some(("Failed", "The pod failed.")),
        _ => None,
    }
    .map(|(reason, message)| json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]));
    (cells, conditions)
}

fn service_cells(service: &Value, name: &str, age: String) -> Vec<Value> {
    let kind = or(text(service, &["spec", "type"]), "ClusterIP");
    let cluster_ip = list(service, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| or(text(service, &["spec", "clusterIP"]), "<none>"));
    let external_ips: Vec<&str> = list(service, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external_ip = match kind {
        "ClusterIP" | "NodePort" if !external_ips.is_empty() => external_ips.join(","),
        "ClusterIP" | "NodePort" => "<none>".to_string(),
        "LoadBalancer" => {
            let ingress: BTreeSet<&str> = list(service, &["status", "loadBalancer", "ingress"])
                .iter()
                .map(|ingress| or(text(ingress, &["ip"]), text(ingress, &["hostname"])))
                .filter(|address| !address.is_empty())
                .collect();
            let mut all: Vec<&str> = ingress.into_iter().collect();
            all.extend(external_ips);
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => text(service, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = list(service, &["spec", "ports"])
        .iter()
        .map(|port| {
            let number = integer(port, &["port"]);
            let protocol = or(text(port, &["protocol"]), "TCP");
            match integer(port, &["nodePort"]) {
                node_port if node_port > 0 => format!("{number}:{node_port}/{protocol}"),
                _ => format!("{number}/{protocol}"),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    vec![
        json!(name),
        json!(kind),
        json!(cluster_ip),
        json!(external_ip),
        json!(ports),
        json!(age),
        json!(format_labels(get(service, &["spec", "selector"]))),
    ]
}

/// Container names and images joined by commas (Kubernetes' `layoutContainerCells`).
fn container_cells(object: &Value) -> (String, String) {
    let containers = list(object, &["spec", "template", "spec", "containers"]);
    let names: Vec<&str> = containers.iter().map(|c| text(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

fn desired_replicas(object: &Value) -> i64 {
    get(object, &["spec", "replicas"])
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn deployment_cells(deployment: &Value, name: &str, age: String) -> Vec<Value> {
    let (containers, images) = container_cells(deployment);
    let ready = integer(deployment, &["status", "readyReplicas"]);
    vec![
        json!(name),
        json!(format!("{ready}/{}", desired_replicas(deployment))),
        json!(integer(deployment, &["status", "updatedReplicas"])),
        json!(integer(deployment, &["status", "availableReplicas"])),
        json!(age),
        json!(containers),
        json!(images),
        json!(selector_string(get(deployment, &["spec", "selector"]))),
    ]
}

fn replica_set_cells(object: &Value, name: &str, age: String, selector: String) -> Vec<Value> {
    let (containers, images) = container_cells(object);
    vec![
        json!(name),
        json!(desired_replicas(object)),
        json!(integer(object, &["status", "replicas"])),
        json!(integer(object, &["status", "readyReplicas"])),
        json!(age),
        json!(containers),
        json!(images),
        json!(selector),
    ]
}

fn node_cells(node: &Value, name: &str, age: String) -> Vec<Value> {
    let ready = list(node, &["status", "conditions"])
        .iter()
        .find(|condition| text(condition, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(condition) if text(condition, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if flag(node, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled");
    }
    let mut roles = BTreeSet::new();
    if let Some(labels) = get(node, &["metadata", "labels"]).and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role);
                }
            } else if key == "kubernetes.io/role" {
                if let Some(role) = value.as_str().filter(|role| !role.is_empty()) {
                    roles.insert(role);
                }
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };
    let address = |kind: &str| {
        list(node, &["status", "addresses"])
            .iter()
            .find(|address| text(address, &["type"]) == kind)
            .map_or("<none>", |address| text(address, &["address"]))
    };
    let info = |field: &str| or(text(node, &["status", "nodeInfo", field]), "<unknown>");
    vec![
        json!(name),
        json!(status.join(",")),
        json!(roles),
        json!(age),
        json!(text(node, &["status", "nodeInfo", "kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Kubernetes' `formatEndpoints`: the first [`ENDPOINTS_SHOWN_MAX`] `ip:port`s, then
/// ` + N more...`.
fn format_endpoints(endpoints: &Value) -> String {
    let subsets = list(endpoints, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut shown = Vec::new();
    let mut more = false;
    let mut count = 0;
    for subset in subsets {
        let addresses = list(subset, &["addresses"]);
        let ports = list(subset, &["ports"]);
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for address in addresses {
                if shown.len() == ENDPOINTS_SHOWN_MAX {
                    more = true;
                    break;
                }
                shown.push(text(address, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for address in addresses {
                if shown.len() == ENDPOINTS_SHOWN_MAX {
                    more = true;
                    break;
                }
                shown.push(join_host_port(
                    text(address, &["ip"]),
                    integer(port, &["port"]),
                ));
            }
        }
    }
    let joined = shown.join(",");
    if more {
        format!("{joined} + {} more...", count - ENDPOINTS_SHOWN_MAX)
    } else {
        joined
    }
}

fn event_cells(event: &Value, name: &str, now: Timestamp) -> Vec<Value> {
    let first_seen = match timestamp(event, &["firstTimestamp"]) {
        Some(first) => since(Some(first), now),
        None => since(timestamp(event, &["eventTime"]), now),
    };
    let mut last_seen = match timestamp(event, &["lastTimestamp"]) {
        Some(last) => since(Some(last), now),
        None => first_seen.clone(),
    };
    let mut count = integer(event, &["count"]);
    if let Some(series) = get(event, &["series"]).filter(|series| !series.is_null()) {
        last_seen = since(timestamp(series, &["lastObservedTime"]), now);
        count = integer(series, &["count"]);
    } else if count == 0 {
        count = 1;
    }
    let involved_kind = text(event, &["involvedObject", "kind"]).to_lowercase();
    let object = match text(event, &["involvedObject", "name"]) {
        "" => involved_kind,
        involved => format!("{involved_kind}/{involved}"),
    };
    let component = or(
        text(event, &["source", "component"]),
        text(event, &["reportingComponent"]),
    );
    let host = or(
        text(event, &["source", "host"]),
        text(event, &["reportingInstance"]),
    );
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    vec![
        json!(last_seen),
        json!(text(event, &["type"])),
        json!(text(event, &["reason"])),
        json!(object),
        json!(text(event, &["involvedObject", "fieldPath"])),
        json!(source),
        json!(text(event, &["message"]).trim()),
        json!(first_seen),
        json!(count),
        json!(name),
    ]
}

/// A label map as `k=v,k2=v2` sorted by key, `<none>` when empty (`labels.FormatLabels`).
fn format_labels(labels: Option<&Value>) -> String {
    let pairs: BTreeMap<&str, &str> = labels
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .map(|(key, value)| (key.as_str(), value.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        return "<none>".to_string();
    }
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A `LabelSelector` in selector syntax (`metav1.LabelSelectorAsSelector(...).String()`):
/// requirements sorted by key, `""` when it selects everything, `<invalid>` for an unknown
/// operator.
fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector.filter(|selector| selector.is_object()) else {
        return String::new();
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = get(selector, &["matchLabels"]).and_then(Value::as_object) {
        for (key, value) in labels {
            requirements.push((
                key.clone(),
                format!("{key}={}", value.as_str().unwrap_or_default()),
            ));
        }
    }
    for expression in list(selector, &["matchExpressions"]) {
        let key = text(expression, &["key"]);
        let values: BTreeSet<&str> = list(expression, &["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let values = values.into_iter().collect::<Vec<_>>().join(",");
        let requirement = match text(expression, &["operator"]) {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return "<invalid>".to_string(),
        };
        requirements.push((key.to_string(), requirement));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    requirements
        .into_iter()
        .map(|(_, requirement)| requirement)
        .collect::<Vec<_>>()
        .join(",")
}

/// [`selector_string`], `<none>` when empty (`metav1.FormatLabelSelector`).
fn label_selector(selector: Option<&Value>) -> String {
    match selector_string(selector) {
        empty if empty.is_empty() => "<none>".to_string(),
        selector => selector,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn now() -> Timestamp {
        "2026-11-27T16:20:00Z".parse().unwrap()
    }

    /// `now` minus `seconds`, in RFC 3339.
    fn ago(seconds: i64) -> String {
        (now() - jiff::SignedDuration::from_secs(seconds)).to_string()
    }

    fn cells(kind: &str, object: Value) -> Vec<Value> {
        table(kind, &[object], now())["rows"][0]["cells"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn column_names(kind: &str) -> Vec<(String, u64)> {
        table(kind, &[], now())["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|column| {
                (
                    column["name"].as_str().unwrap().to_string(),
                    column["priority"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn human_duration_boundaries() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (121, "2m1s"),
            (303, "5m3s"),
            (599, "9m59s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 30 * 60, "3h30m"),
            (8 * 3600 - 60, "7h59m"),
            (8 * 3600, "8h"),
            (48 * 3600 - 1, "47h"),
            (48 * 3600, "2d"),
            (53 * 3600, "2d5h"),
            (8 * 86400 - 3600, "7d23h"),
            (8 * 86400, "8d"),
            (10 * 86400, "10d"),
            (2 * 365 * 86400 - 1, "729d"),
            (2 * 365 * 86400, "2y"),
            (2 * 365 * 86400 + 30 * 86400, "2y30d"),
            (8 * 365 * 86400 - 1, "7y364d"),
            (8 * 365 * 86400, "8y"),
            (20 * 365 * 86400, "20y"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(
                human_duration(Duration::from_secs(seconds)),
                expected,
                "{seconds}s"
            );
        }
        assert_eq!(
            human_duration(Duration::from_millis(1_999)),
            "1s",
            "truncates"
        );
        let skew = [
            (None, "<unknown>"),
            (Some(-1), "0s"),
            (Some(-2), "<invalid>"),
            (Some(45), "45s"),
        ];
        for (offset, expected) in skew {
            let time = offset.map(|seconds| now() - jiff::SignedDuration::from_secs(seconds));
            assert_eq!(since(time, now()), expected, "{offset:?}");
        }
    }

    #[test]
    fn table_shape() {
        let pod = json!({"metadata": {"name": "web-1", "namespace": "default", "resourceVersion": "1003", "creationTimestamp": ago(3)}});
        let table = table("Pod", &[pod], now());
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(table["metadata"], json!({}), "left for the server to fill");
        assert_eq!(
            table["columnDefinitions"][0],
            json!({"name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0})
        );
        assert_eq!(
            table["rows"][0]["object"],
            json!({
                "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": {"name": "web-1", "namespace": "default", "resourceVersion": "1003", "creationTimestamp": ago(3)}
            })
        );
        assert!(table["rows"][0].get("conditions").is_none());
        for (kind, columns) in [
            ("Pod", POD_COLUMNS),
            ("Event", EVENT_COLUMNS),
            ("Widget", DEFAULT_COLUMNS),
        ] {
            let object = json!({"metadata": {"name": "x"}});
            assert_eq!(
                cells(kind, object).len(),
                columns.len(),
                "{kind}: one cell per column"
            );
        }
    }

    #[test]
    fn column_sets() {
        let wide = |names: &[&str], wide: &[&str]| -> Vec<(String, u64)> {
            names
                .iter()
                .map(|name| (name.to_string(), 0))
                .chain(wide.iter().map(|name| (name.to_string(), 1)))
                .collect()
        };
        let cases = [
            (
                "Pod",
                wide(
                    &["Name", "Ready", "Status", "Restarts", "Age"],
                    &["IP", "Node", "Nominated Node", "Readiness Gates"],
                ),
            ),
            (
                "Service",
                wide(
                    &[
                        "Name",
                        "Type",
                        "Cluster-IP",
                        "External-IP",
                        "Port(s)",
                        "Age",
                    ],
                    &["Selector"],
                ),
            ),
            (
                "Deployment",
                wide(
                    &["Name", "Ready", "Up-to-date", "Available", "Age"],
                    &["Containers", "Images", "Selector"],
                ),
            ),
            (
                "ReplicaSet",
                wide(
                    &["Name", "Desired", "Current", "Ready", "Age"],
                    &["Containers", "Images", "Selector"],
                ),
            ),
            (
                "ReplicationController",
                wide(
                    &["Name", "Desired", "Current", "Ready", "Age"],
                    &["Containers", "Images", "Selector"],
                ),
            ),
            (
                "Node",
                wide(
                    &["Name", "Status", "Roles", "Age", "Version"],
                    &[
                        "Internal-IP",
                        "External-IP",
                        "OS-Image",
                        "Kernel-Version",
                        "Container-Runtime",
                    ],
                ),
            ),
            ("Namespace", wide(&["Name", "Status", "Age"], &[])),
            ("Endpoints", wide(&["Name", "Endpoints", "Age"], &[])),
            ("ServiceAccount", wide(&["Name", "Secrets", "Age"], &[])),
            ("Secret", wide(&["Name", "Type", "Data", "Age"], &[])),
            ("ConfigMap", wide(&["Name", "Data", "Age"], &[])),
            ("Lease", wide(&["Name", "Holder", "Age"], &[])),
            ("Widget", wide(&["Name", "Age"], &[])),
        ];
        for (kind, expected) in cases {
            assert_eq!(column_names(kind), expected, "{kind}");
        }
        let events: Vec<(String, u64)> = column_names("Event");
        let expected: Vec<(String, u64)> = [
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Subobject", 1),
            ("Source", 1),
            ("Message", 0),
            ("First Seen", 1),
            ("Count", 1),
            ("Name", 1),
        ]
        .iter()
        .map(|(name, priority)| (name.to_string(), *priority))
        .collect();
        assert_eq!(events, expected);
    }

    fn pod(spec: Value, status: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": ago(300)},
            "spec": spec,
            "status": status
        })
    }

    fn one_container() -> Value {
        json!({"containers": [{"name": "main", "image": "nginx:1.27"}]})
    }

    fn container_status(state: Value, ready: bool, restarts: i64, last_state: Value) -> Value {
        json!({"name": "main", "image": "nginx:1.27", "imageID": "", "ready": ready, "restartCount": restarts, "state": state, "lastState": last_state})
    }

    #[test]
    fn pod_states() {
        let running = json!({"running": {"startedAt": ago(300)}});
        let cases = [
            (
                "running",
                pod(
                    one_container(),
                    json!({"phase": "Running", "containerStatuses": [container_status(running.clone(), true, 0, json!({}))]}),
                ),
                ["1/1", "Running", "0"],
            ),
            (
                "crash loop, restarts with the last restart's age",
                pod(
                    one_container(),
                    json!({"phase": "Running", "containerStatuses": [container_status(
                        json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}),
                        false,
                        3,
                        json!({"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(300)}})
                    )]}),
                ),
                ["0/1", "CrashLoopBackOff", "3 (5m ago)"],
            ),
            (
                "restarts without a known finish time",
                pod(
                    one_container(),
                    json!({"phase": "Running", "containerStatuses": [container_status(running.clone(), true, 2, json!({}))]}),
                ),
                ["1/1", "Running", "2"],
            ),
            (
                "completed",
                pod(
                    one_container(),
                    json!({"phase": "Succeeded", "containerStatuses": [container_status(
                        json!({"terminated": {"exitCode": 0, "reason": "Completed"}}), false, 0, json!({})
                    )]}),
                ),
                ["0/1", "Completed", "0"],
            ),
            (
                "container creating",
                pod(
                    one_container(),
                    json!({"phase": "Pending", "containerStatuses": [container_status(
                        json!({"waiting": {"reason": "ContainerCreating"}}), false, 0, json!({})
                    )]}),
                ),
                ["0/1", "ContainerCreating", "0"],
            ),
            (
                "no status yet",
                pod(one_container(), json!({})),
                ["0/1", "Pending", "0"],
            ),
            (
                "killed by a signal, no reason",
                pod(
                    one_container(),
                    json!({"phase": "Failed", "containerStatuses": [container_status(
                        json!({"terminated": {"exitCode": 137, "signal": 9}}), false, 0, json!({})
                    )]}),
                ),
                ["0/1", "Signal:9", "0"],
            ),
            (
                "terminating",
                {
                    let mut pod = pod(
                        one_container(),
                        json!({"phase": "Running", "containerStatuses": [container_status(running.clone(), true, 0, json!({}))]}),
                    );
                    pod["metadata"]["deletionTimestamp"] = json!(ago(1));
                    pod
                },
                ["1/1", "Terminating", "0"],
            ),
            (
                "terminating on a lost node",
                {
                    let mut pod = pod(
                        one_container(),
                        json!({"phase": "Running", "reason": "NodeLost"}),
                    );
                    pod["metadata"]["deletionTimestamp"] = json!(ago(1));
                    pod
                },
                ["0/1", "Unknown", "0"],
            ),
            (
                "scheduling gated",
                pod(
                    one_container(),
                    json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
                ),
                ["0/1", "SchedulingGated", "0"],
            ),
            (
                "waiting for an init container",
                pod(
                    json!({"initContainers": [{"name": "init", "image": "busybox"}], "containers": [{"name": "main", "image": "nginx"}]}),
                    json!({"phase": "Pending", "initContainerStatuses": [
                        {"name": "init", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
                    ]}),
                ),
                ["0/1", "Init:0/1", "0"],
            ),
            (
                "init container crash looping",
                pod(
                    json!({"initContainers": [{"name": "init", "image": "busybox"}], "containers": [{"name": "main", "image": "nginx"}]}),
                    json!({"phase": "Pending", "initContainerStatuses": [
                        {"name": "init", "ready": false, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                         "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(90)}}}
                    ]}),
                ),
                ["0/1", "Init:CrashLoopBackOff", "4 (90s ago)"],
            ),
            (
                "init container failed with an exit code",
                pod(
                    json!({"initContainers": [{"name": "init", "image": "busybox"}], "containers": [{"name": "main", "image": "nginx"}]}),
                    json!({"phase": "Pending", "initContainerStatuses": [
                        {"name": "init", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 2}}}
                    ]}),
                ),
                ["0/1", "Init:ExitCode:2", "0"],
            ),
            (
                "a started sidecar counts as a container",
                pod(
                    json!({"initContainers": [{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}], "containers": [{"name": "main", "image": "nginx"}]}),
                    json!({
                        "phase": "Running",
                        "conditions": [{"type": "Initialized", "status": "True"}],
                        "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true, "restartCount": 1, "state": {"running": {}}}],
                        "containerStatuses": [container_status(running.clone(), true, 0, json!({}))]
                    }),
                ),
                ["2/2", "Running", "1"],
            ),
            (
                "one container completed, one still running and ready",
                pod(
                    json!({"containers": [{"name": "main"}, {"name": "job"}]}),
                    json!({
                        "phase": "Running",
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "containerStatuses": [
                            container_status(running.clone(), true, 0, json!({})),
                            {"name": "job", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
                        ]
                    }),
                ),
                ["1/2", "Running", "0"],
            ),
            (
                "one container completed, the pod not ready",
                pod(
                    json!({"containers": [{"name": "main"}, {"name": "job"}]}),
                    json!({
                        "phase": "Running",
                        "containerStatuses": [
                            container_status(running.clone(), true, 0, json!({})),
                            {"name": "job", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
                        ]
                    }),
                ),
                ["1/2", "NotReady", "0"],
            ),
        ];
        for (name, pod, [ready, status, restarts]) in cases {
            let cells = cells("Pod", pod);
            assert_eq!(cells[0], "web-1", "{name}");
            assert_eq!(
                (cells[1].as_str(), cells[2].as_str(), cells[3].as_str()),
                (Some(ready), Some(status), Some(restarts)),
                "{name}"
            );
            assert_eq!(cells[4], "5m", "{name}");
        }
    }

    #[test]
    fn pod_wide_cells_and_row_conditions() {
        let mut scheduled = pod(
            json!({"containers": [{"name": "main"}], "nodeName": "node-1", "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]}),
            json!({
                "phase": "Running",
                "podIP": "10.0.0.5",
                "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
                "conditions": [{"type": "example.com/lb", "status": "True"}, {"type": "example.com/dns", "status": "False"}]
            }),
        );
        assert_eq!(
            cells("Pod", scheduled.clone())[5..],
            [
                json!("10.0.0.5"),
                json!("node-1"),
                json!("<none>"),
                json!("1/2")
            ]
        );
        scheduled["status"] =
            json!({"phase": "Pending", "podIP": "10.0.0.6", "nominatedNodeName": "node-2"});
        scheduled["spec"] = json!({"containers": [{"name": "main"}]});
        assert_eq!(
            cells("Pod", scheduled)[5..],
            [
                json!("10.0.0.6"),
                json!("<none>"),
                json!("node-2"),
                json!("<none>")
            ]
        );

        let done = pod(one_container(), json!({"phase": "Succeeded"}));
        let failed = pod(one_container(), json!({"phase": "Failed"}));
        let rows = table("Pod", &[done, failed], now())["rows"].clone();
        assert_eq!(
            rows[0]["conditions"],
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}])
        );
        assert_eq!(rows[1]["conditions"][0]["reason"], "Failed");
    }

    #[test]
    fn service_cells_by_type() {
        let service = |spec: Value, status: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "creationTimestamp": ago(7200)}, "spec": spec, "status": status});
        let cases = [
            (
                "node port",
                service(
                    json!({"type": "NodePort", "clusterIP": "10.96.0.12", "clusterIPs": ["10.96.0.12"], "selector": {"tier": "web", "app": "web"},
                           "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}),
                    json!({}),
                ),
                json!([
                    "web",
                    "NodePort",
                    "10.96.0.12",
                    "<none>",
                    "80:30080/TCP,53/UDP",
                    "120m",
                    "app=web,tier=web"
                ]),
            ),
            (
                "cluster IP with external IPs, no selector",
                service(
                    json!({"type": "ClusterIP", "clusterIPs": ["10.96.0.13"], "externalIPs": ["192.0.2.1"], "ports": [{"port": 443}]}),
                    json!({}),
                ),
                json!([
                    "web",
                    "ClusterIP",
                    "10.96.0.13",
                    "192.0.2.1",
                    "443/TCP",
                    "120m",
                    "<none>"
                ]),
            ),
            (
                "load balancer without ingress",
                service(
                    json!({"type": "LoadBalancer", "clusterIPs": ["10.96.0.14"], "ports": [{"port": 80, "nodePort": 31000}]}),
                    json!({"loadBalancer": {}}),
                ),
                json!([
                    "web",
                    "LoadBalancer",
                    "10.96.0.14",
                    "<pending>",
                    "80:31000/TCP",
                    "120m",
                    "<none>"
                ]),
            ),
            (
                "load balancer with ingress",
                service(
                    json!({"type": "LoadBalancer", "clusterIPs": ["10.96.0.14"], "ports": [{"port": 80, "nodePort": 31000}]}),
                    json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}, {"hostname": "lb.example.com"}]}}),
                ),
                json!([
                    "web",
                    "LoadBalancer",
                    "10.96.0.14",
                    "203.0.113.7,lb.example.com",
                    "80:31000/TCP",
                    "120m",
                    "<none>"
                ]),
            ),
            (
                "headless without ports",
                service(
                    json!({"clusterIP": "None", "clusterIPs": ["None"]}),
                    json!({}),
                ),
                json!([
                    "web",
                    "ClusterIP",
                    "None",
                    "<none>",
                    "<none>",
                    "120m",
                    "<none>"
                ]),
            ),
            (
                "external name",
                service(
                    json!({"type": "ExternalName", "externalName": "db.example.com"}),
                    json!({}),
                ),
                json!([
                    "web",
                    "ExternalName",
                    "<none>",
                    "db.example.com",
                    "<none>",
                    "120m",
                    "<none>"
                ]),
            ),
        ];
        for (name, service, expected) in cases {
            assert_eq!(Value::Array(cells("Service", service)), expected, "{name}");
        }
    }

    #[test]
    fn workload_cells() {
        let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "nginx", "image": "nginx:1.27"}, {"name": "sidecar", "image": "busybox"}
        ]}});
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": ago(3 * 86400)},
            "spec": {"replicas": 3, "template": template.clone(), "selector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend", "backend"]}, {"key": "canary", "operator": "DoesNotExist"}]
            }},
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            Value::Array(cells("Deployment", deployment)),
            json!([
                "web",
                "2/3",
                3,
                2,
                "3d",
                "nginx,sidecar",
                "nginx:1.27,busybox",
                "app=web,!canary,tier in (backend,frontend)"
            ])
        );

        let fresh = json!({"metadata": {"name": "new", "creationTimestamp": ago(10)}, "spec": {"template": template.clone(), "selector": {}}});
        assert_eq!(
            Value::Array(cells("Deployment", fresh.clone())),
            json!([
                "new",
                "0/1",
                0,
                0,
                "10s",
                "nginx,sidecar",
                "nginx:1.27,busybox",
                ""
            ])
        );
        assert_eq!(
            Value::Array(cells("ReplicaSet", fresh)),
            json!([
                "new",
                1,
                0,
                0,
                "10s",
                "nginx,sidecar",
                "nginx:1.27,busybox",
                "<none>"
            ])
        );

        let rc = json!({
            "apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": "rc-1", "creationTimestamp": ago(45)},
            "spec": {"replicas": 3, "selector": {"app": "rc-1"}, "template": template},
            "status": {"replicas": 3, "readyReplicas": 1}
        });
        assert_eq!(
            Value::Array(cells("ReplicationController", rc)),
            json!([
                "rc-1",
                3,
                3,
                1,
                "45s",
                "nginx,sidecar",
                "nginx:1.27,busybox",
                "app=rc-1"
            ])
        );
    }

    #[test]
    fn node_cells_by_state() {
        let node = |labels: Value, unschedulable: bool, conditions: Value| {
            json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "node-1", "labels": labels, "creationTimestamp": ago(16)},
                "spec": {"unschedulable": unschedulable},
                "status": {
                    "conditions": conditions,
                    "addresses": [{"type": "Hostname", "address": "node-1"}, {"type": "InternalIP", "address": "127.0.0.2"}],
                    "nodeInfo": {"kubeletVersion": "v1.37.0", "osImage": "Debian GNU/Linux 13 (trixie)", "kernelVersion": "6.12.0", "containerRuntimeVersion": ""}
                }
            })
        };
        let ready = json!([{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]);
        let cases = [
            (
                "ready",
                node(json!({}), false, ready.clone()),
                "Ready",
                "<none>",
            ),
            (
                "not ready",
                node(
                    json!({}),
                    false,
                    json!([{"type": "Ready", "status": "False"}]),
                ),
                "NotReady",
                "<none>",
            ),
            (
                "unknown, cordoned",
                node(json!({}), true, json!([])),
                "Unknown,SchedulingDisabled",
                "<none>",
            ),
            (
                "roles from labels",
                node(
                    json!({"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/": "", "kubernetes.io/role": "edge"}),
                    true,
                    ready.clone(),
                ),
                "Ready,SchedulingDisabled",
                "control-plane,edge,worker",
            ),
        ];
        for (name, node, status, roles) in cases {
            let cells = cells("Node", node);
            assert_eq!(
                (cells[1].as_str(), cells[2].as_str()),
                (Some(status), Some(roles)),
                "{name}"
            );
            assert_eq!(
                cells[3..],
                [
                    json!("16s"),
                    json!("v1.37.0"),
                    json!("127.0.0.2"),
                    json!("<none>"),
                    json!("Debian GNU/Linux 13 (trixie)"),
                    json!("6.12.0"),
                    json!("<unknown>")
                ],
                "{name}"
            );
        }
    }

    #[test]
    fn endpoints_cells() {
        let endpoints = |subsets: Value| json!({"metadata": {"name": "web", "creationTimestamp": ago(60)}, "subsets": subsets});
        let addresses =
            |ips: &[&str]| Value::Array(ips.iter().map(|ip| json!({"ip": ip})).collect());
        let cases = [
            ("none", endpoints(json!([])), "<none>"),
            (
                "two",
                endpoints(
                    json!([{"addresses": addresses(&["10.0.0.1", "10.0.0.2"]), "ports": [{"port": 80}]}]),
                ),
                "10.0.0.1:80,10.0.0.2:80",
            ),
            (
                "truncated after three",
                endpoints(json!([
                    {"addresses": addresses(&["10.0.0.1", "10.0.0.2"]), "ports": [{"port": 80}]},
                    {"addresses": addresses(&["10.0.0.3", "10.0.0.4", "10.0.0.5"]), "ports": [{"port": 80}]}
                ])),
                "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 2 more...",
            ),
            (
                "headless without ports, IPv6",
                endpoints(json!([{"addresses": addresses(&["fd00::1"])}])),
                "fd00::1",
            ),
            (
                "IPv6 with a port",
                endpoints(
                    json!([{"addresses": addresses(&["fd00::1"]), "ports": [{"port": 443}]}]),
                ),
                "[fd00::1]:443",
            ),
        ];
        for (name, endpoints, expected) in cases {
            assert_eq!(
                cells("Endpoints", endpoints),
                [json!("web"), json!(expected), json!("60s")],
                "{name}"
            );
        }
    }

    #[test]
    fn event_cells_cases() {
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web-1.17a2", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{main}"},
            "reason": "Pulled", "type": "Normal", "message": "Container image \"nginx:1.27\" already present on machine\n",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": ago(600), "lastTimestamp": ago(30), "count": 4
        });
        assert_eq!(
            Value::Array(cells("Event", event)),
            json!([
                "30s",
                "Normal",
                "Pulled",
                "pod/web-1",
                "spec.containers{main}",
                "kubelet, node-1",
                "Container image \"nginx:1.27\" already present on machine",
                "10m",
                4,
                "web-1.17a2"
            ])
        );
        let new_api = json!({
            "metadata": {"name": "e2"},
            "involvedObject": {"kind": "Node"},
            "reason": "Starting", "type": "Normal", "message": "",
            "eventTime": ago(90).replace('Z', ".000000Z"),
            "reportingComponent": "kubelet",
            "series": {"count": 7, "lastObservedTime": ago(5)}
        });
        assert_eq!(
            Value::Array(cells("Event", new_api)),
            json!(["5s", "Normal", "Starting", "node", "", "kubelet", "", "90s", 7, "e2"])
        );
    }

    #[test]
    fn small_kinds() {
        let meta = json!({"name": "x", "creationTimestamp": ago(86400 * 400)});
        let cases = [
            (
                "Namespace",
                json!({"metadata": meta.clone(), "status": {"phase": "Terminating"}}),
                json!(["x", "Terminating", "400d"]),
            ),
            (
                "Namespace",
                json!({"metadata": meta.clone()}),
                json!(["x", "Active", "400d"]),
            ),
            (
                "ServiceAccount",
                json!({"metadata": meta.clone(), "secrets": [{"name": "a"}]}),
                json!(["x", 1, "400d"]),
            ),
            (
                "Secret",
                json!({"metadata": meta.clone(), "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}),
                json!(["x", "kubernetes.io/tls", 2, "400d"]),
            ),
            (
                "Secret",
                json!({"metadata": meta.clone()}),
                json!(["x", "Opaque", 0, "400d"]),
            ),
            (
                "ConfigMap",
                json!({"metadata": meta.clone(), "data": {"a": "b"}, "binaryData": {"c": ""}}),
                json!(["x", 2, "400d"]),
            ),
            (
                "Lease",
                json!({"metadata": meta.clone(), "spec": {"holderIdentity": "node-1"}}),
                json!(["x", "node-1", "400d"]),
            ),
            (
                "Widget",
                json!({"metadata": {"name": "x"}}),
                json!(["x", "<unknown>"]),
            ),
        ];
        for (kind, object, expected) in cases {
            assert_eq!(Value::Array(cells(kind, object)), expected, "{kind}");
        }
    }
}
