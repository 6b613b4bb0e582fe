//! The Node object of a real node: capacity read from the machine, node info, addresses;
//! registration, the Lease renewed every heartbeat and the status rewritten every few.
//!
//! The node is `Ready` only once its container runtime's pod network is (a runc node waits for
//! the podCIDR the node controller allocates), as Kubernetes' kubelet reports NotReady while its
//! network plugin is not ready: until then the node is tainted not-ready and the scheduler
//! places no pod there that could not start.

use std::time::Duration;

use keelson_api::object;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::api::{ApiClient, ApiError};
use crate::runtime::became_ready;

pub const KUBELET_VERSION: &str = "v1.37.0-keelson";
const LEASE_DURATION_SECS: u64 = 40;
/// The node status is rewritten every this many heartbeats.
const STATUS_EVERY_HEARTBEATS: u32 = 5;

/// The Ready condition's reason and message while the pod network is not ready.
const NETWORK_NOT_READY: (&str, &str) = (
    "KubeletNotReady",
    "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:the pod network waits for the node's podCIDR",
);

/// The node's Ready condition as the kubelet reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Readiness {
    pub network_ready: bool,
    /// When it last changed (the condition's lastTransitionTime).
    pub since: String,
}

/// What the Node object says about the machine.
#[derive(Clone, Debug)]
pub struct Machine {
    pub name: String,
    pub ip: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub max_pods: u32,
    pub runtime_version: String,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `PRETTY_NAME` of `/etc/os-release`.
pub fn parse_os_release(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
    Some(line["PRETTY_NAME=".len()..].trim_matches('"').to_string())
}

impl Machine {
    /// Reads this machine.
    pub fn detect(name: &str, ip: &str, max_pods: u32, runtime_version: &str) -> Machine {
        Machine {
            name: name.to_string(),
            ip: ip.to_string(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_bytes: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|t| parse_meminfo(&t))
                .unwrap_or(0),
            max_pods,
            runtime_version: runtime_version.to_string(),
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            os_image: std::fs::read_to_string("/etc/os-release")
                .ok()
                .and_then(|t| parse_os_release(&t))
                .unwrap_or_else(|| "Linux".to_string()),
            machine_id: read_trimmed("/etc/machine-id").unwrap_or_else(|| name.to_string()),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
        }
    }

    pub fn node_object(&self, now: &str, readiness: &Readiness) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": std::env::consts::ARCH,
                    "keelson.io/runtime": self.runtime_version.split("://").next().unwrap_or(""),
                },
            },
            "spec": {},
            "status": self.status(now, readiness),
        })
    }

    pub fn status(&self, now: &str, readiness: &Readiness) -> Value {
        // A share of the memory is kept for the system, as the kubelet's reservations do.
        let reserved = (self.memory_bytes / 20).min(512 << 20);
        let capacity = json!({
            "cpu": self.cpus.to_string(),
            "memory": format!("{}Ki", self.memory_bytes / 1024),
            "pods": self.max_pods.to_string(),
            "ephemeral-storage": "100Gi",
        });
        let allocatable = json!({
            "cpu": self.cpus.to_string(),
            "memory": format!("{}Ki", (self.memory_bytes - reserved) / 1024),
            "pods": self.max_pods.to_string(),
            "ephemeral-storage": "90Gi",
        });
        let condition = |kind: &str, status: &str, reason: &str, message: &str| {
            json!({
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": readiness.since,
            })
        };
        let ready = if readiness.network_ready {
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            )
        } else {
            condition("Ready", "False", NETWORK_NOT_READY.0, NETWORK_NOT_READY.1)
        };
        json!({
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                ready,
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.ip},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": self.machine_id,
                "systemUUID": self.machine_id,
                "bootID": self.boot_id,
                "kernelVersion": self.kernel_version,
                "osImage": self.os_image,
                "containerRuntimeVersion": self.runtime_version,
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH,
            },
        })
    }
}

fn now_seconds() -> String {
    object::format_time(jiff::Timestamp::now())
}

fn now_micros() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

const MERGE_PATCH: &str = "application/merge-patch+json";

/// Registers the node (or refreshes its labels after a restart); returns its uid.
pub async fn register(
    api: &ApiClient,
    machine: &Machine,
    readiness: &Readiness,
) -> Result<Option<String>, ApiError> {
    let node = machine.node_object(&now_seconds(), readiness);
    match api
        .request(
            Method::POST,
            "/api/v1/nodes",
            "application/json",
            Some(&node),
        )
        .await
    {
        Ok(created) => Ok(object::uid(&created).map(str::to_string)),
        Err(e) if e.is_conflict() => {
            let patch = json!({"metadata": {"labels": node["metadata"]["labels"]}});
            let patched = api
                .request(
                    Method::PATCH,
                    &format!("/api/v1/nodes/{}", machine.name),
                    MERGE_PATCH,
                    Some(&patch),
                )
                .await?;
            write_status(api, machine, readiness).await?;
            Ok(object::uid(&patched).map(str::to_string))
        }
        Err(e) => Err(e),
    }
}

async fn write_status(
    api: &ApiClient,
    machine: &Machine,
    readiness: &Readiness,
) -> Result<(), ApiError> {
    let patch = json!({"status": machine.status(&now_seconds(), readiness)});
    api.write(
        Method::PATCH,
        &format!("/api/v1/nodes/{}/status", machine.name),
        MERGE_PATCH,
        Some(&patch),
    )
    .await
}

async fn renew_lease(api: &ApiClient, name: &str, node_uid: Option<&str>) -> Result<(), ApiError> {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}");
    let spec = json!({
        "holderIdentity": name,
        "leaseDurationSeconds": LEASE_DURATION_SECS,
        "renewTime": now_micros(),
    });
    match api
        .write(
            Method::PATCH,
            &path,
            MERGE_PATCH,
            Some(&json!({"spec": spec})),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => {
            let mut lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": spec,
            });
            if let Some(uid) = node_uid {
                lease["metadata"]["ownerReferences"] =
                    json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]);
            }
            api.write(
                Method::POST,
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                "application/json",
                Some(&lease),
            )
            .await
        }
        Err(e) => Err(e),
    }
}

/// Registers the node, then renews its Lease every `heartbeat` and rewrites its status every
/// few heartbeats, and at once when the pod network (`network`, None when the runtime needs
/// none) becomes ready, until `stop`.
pub async fn heartbeat_loop(
    api: ApiClient,
    machine: Machine,
    heartbeat: Duration,
    mut network: Option<watch::Receiver<bool>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut readiness = Readiness {
        network_ready: network.as_ref().is_none_or(|ready| *ready.borrow()),
        since: now_seconds(),
    };
    if readiness.network_ready {
        network = None;
    }
    let mut backoff = Duration::from_millis(200);
    let uid = loop {
        match register(&api, &machine, &readiness).await {
            Ok(uid) => break uid,
            Err(e) => {
                tracing::warn!(error = %e, "cannot register the node; retrying");
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    tracing::info!(node = %machine.name, ready = readiness.network_ready, "node registered");
    let mut beats: u32 = 0;
    loop {
        if let Err(e) = renew_lease(&api, &machine.name, uid.as_deref()).await {
            tracing::warn!(error = %e, "cannot renew the node Lease");
        }
        if beats % STATUS_EVERY_HEARTBEATS == 0 {
            if let Err(e) = write_status(&api, &machine, &readiness).await {
                tracing::warn!(error = %e, "cannot write the node status");
            }
        }
        beats = beats.wrapping_add(1);
        tokio::select! {
            _ = stop.changed() => return,
            () = became_ready(&mut network) => {
                readiness = Readiness { network_ready: true, since: now_seconds() };
                tracing::info!(node = %machine.name, "the pod network is ready: the node is Ready");
                // The next round writes the status at once.
                beats = 0;
            }
            () = tokio::time::sleep(heartbeat) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_facts_parse() {
        assert_eq!(
            parse_meminfo("MemTotal:       24614680 kB\nMemFree: 1 kB\n"),
            Some(24614680 * 1024)
        );
        assert_eq!(parse_meminfo("nothing"), None);
        assert_eq!(
            parse_os_release("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            Some("Debian GNU/Linux 12 (bookworm)".to_string())
        );
    }

    #[test]
    fn the_node_object_reports_capacity_and_runtime() {
        let machine = Machine {
            name: "n1".into(),
            ip: "10.0.0.5".into(),
            cpus: 2,
            memory_bytes: 4 << 30,
            max_pods: 110,
            runtime_version: "runc://1.1.5".into(),
            kernel_version: "6.1".into(),
            os_image: "Debian".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
        };
        let ready = Readiness {
            network_ready: true,
            since: "2026-01-01T00:00:00Z".into(),
        };
        let node = machine.node_object("2026-01-01T00:00:10Z", &ready);
        assert_eq!(node["metadata"]["labels"]["keelson.io/runtime"], "runc");
        assert_eq!(node["status"]["capacity"]["memory"], "4194304Ki");
        assert_eq!(node["status"]["allocatable"]["cpu"], "2");
        assert_eq!(node["status"]["addresses"][0]["address"], "10.0.0.5");
        assert_eq!(
            node["status"]["nodeInfo"]["containerRuntimeVersion"],
            "runc://1.1.5"
        );
        let ready_condition = |node: &Value| {
            node["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(ready_condition(&node)["status"], "True");
        let waiting = Readiness {
            network_ready: false,
            since: "2026-01-01T00:00:05Z".into(),
        };
        let node = machine.node_object("2026-01-01T00:00:10Z", &waiting);
        let condition = ready_condition(&node);
        assert_eq!(condition["status"], "False");
        assert_eq!(condition["reason"], "KubeletNotReady");
        assert!(
            condition["message"]
                .as_str()
                .is_some_and(|m| m.contains("network not ready") && m.contains("podCIDR")),
            "{condition}"
        );
        assert_eq!(condition["lastTransitionTime"], "2026-01-01T00:00:05Z");
    }
}
