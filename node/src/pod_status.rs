//! The hollow kubelet's decisions about one pod, without I/O: given the pod and the time,
//! what to write (a Running status, the final delete, or nothing).

use std::net::Ipv4Addr;

use keelson_api::object;
use serde_json::{json, Value};

/// The first address of the fake pod IP ranges: node `i` hands out addresses from the `/24`
/// at `POD_IP_BASE + 256 * i` (the 100.64.0.0/10 shared space holds 16384 of them).
const POD_IP_BASE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);
/// Nodes with their own fake `/24`; further nodes reuse the ranges (addresses then repeat,
/// which nothing in a hollow cluster depends on).
const POD_IP_RANGES_MAX: u32 = 16384;

/// What to do with one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum PodAction {
    /// Nothing: not ours, or already reported.
    Skip,
    /// The kubelet's final delete of a pod marked for deletion (grace period 0, this uid).
    Delete { uid: String },
    /// Merge-patch `pods/NAME/status` with this body.
    ReportRunning(Value),
}

/// The pod IP number `seq` of the node with index `node_index`: `.1` to `.254` of its range.
pub fn pod_ip(node_index: usize, seq: u32) -> Ipv4Addr {
    let range = (node_index as u32) % POD_IP_RANGES_MAX;
    let host = seq % 254 + 1;
    Ipv4Addr::from(u32::from(POD_IP_BASE) + range * 256 + host)
}

/// Whether the pod has reached a phase the hollow kubelet reports no further.
fn is_reported(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Running" | "Succeeded" | "Failed")
    )
}

/// Decides for a pod bound to one of this process's nodes. `ip` is the address to give it
/// if it starts now; `now` is RFC 3339.
pub fn decide(pod: &Value, ip: Ipv4Addr, now: &str) -> PodAction {
    if object::deletion_timestamp(pod).is_some() {
        return match object::uid(pod) {
            Some(uid) => PodAction::Delete {
                uid: uid.to_string(),
            },
            None => PodAction::Skip,
        };
    }
    if is_reported(pod) {
        return PodAction::Skip;
    }
    PodAction::ReportRunning(running_status(pod, ip, now))
}

/// The status patch of a pod that has just started every container.
pub fn running_status(pod: &Value, ip: Ipv4Addr, now: &str) -> Value {
    let uid = object::uid(pod).unwrap_or_default();
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let statuses: Vec<Value> = containers
        .iter()
        .filter_map(|c| {
            let name = c["name"].as_str()?;
            let image = c["image"].as_str().unwrap_or_default();
            Some(json!({
                "name": name,
                "ready": true,
                "started": true,
                "restartCount": 0,
                "image": image,
                "imageID": format!("hollow://{image}"),
                "containerID": format!("hollow://{uid}/{name}"),
                "state": {"running": {"startedAt": now}},
                "lastState": {},
            }))
        })
        .collect();
    let conditions: Vec<Value> = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        .iter()
        .map(|kind| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": now}))
        .collect();
    let ip = ip.to_string();
    json!({
        "status": {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": now,
            "qosClass": pod.pointer("/status/qosClass").cloned().unwrap_or(json!("BestEffort")),
            "conditions": conditions,
            "containerStatuses": statuses,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-27T12:00:00Z";

    fn pod(phase: Option<&str>, deleting: bool) -> Value {
        let mut pod = json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"nodeName": "n-0", "containers": [
                {"name": "a", "image": "nginx:1"}, {"name": "b", "image": "busybox"}
            ]},
            "status": {},
        });
        if let Some(phase) = phase {
            pod["status"]["phase"] = json!(phase);
        }
        if deleting {
            pod["metadata"]["deletionTimestamp"] = json!(NOW);
        }
        pod
    }

    #[test]
    fn decides_per_phase_and_deletion() {
        let ip = Ipv4Addr::new(100, 64, 0, 1);
        let cases = [
            (pod(None, false), "report"),
            (pod(Some("Pending"), false), "report"),
            (pod(Some("Running"), false), "skip"),
            (pod(Some("Succeeded"), false), "skip"),
            (pod(Some("Failed"), false), "skip"),
            (pod(Some("Pending"), true), "delete"),
            (pod(Some("Running"), true), "delete"),
        ];
        for (pod, want) in cases {
            let got = match decide(&pod, ip, NOW) {
                PodAction::Skip => "skip",
                PodAction::Delete { uid } => {
                    assert_eq!(uid, "u1");
                    "delete"
                }
                PodAction::ReportRunning(_) => "report",
            };
            assert_eq!(got, want, "{pod}");
        }
    }

    #[test]
    fn running_status_reports_every_container_ready() {
        let status = running_status(&pod(None, false), Ipv4Addr::new(100, 64, 1, 7), NOW);
        let s = &status["status"];
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "100.64.1.7");
        assert_eq!(s["hostIP"], "127.0.0.1");
        assert_eq!(s["startTime"], NOW);
        let statuses = s["containerStatuses"].as_array().unwrap();
        assert_eq!(statuses.len(), 2);
        assert_eq!(statuses[0]["name"], "a");
        assert_eq!(statuses[0]["ready"], true);
        assert_eq!(statuses[0]["restartCount"], 0);
        assert_eq!(statuses[0]["imageID"], "hollow://nginx:1");
        assert_eq!(statuses[1]["containerID"], "hollow://u1/b");
        assert_eq!(statuses[1]["state"]["running"]["startedAt"], NOW);
        for kind in ["Initialized", "Ready", "ContainersReady", "PodScheduled"] {
            let found = s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == kind && c["status"] == "True");
            assert!(found, "{kind}");
        }
    }

    #[test]
    fn pod_ips_stay_in_each_nodes_range() {
        let cases = [
            (0, 0, "100.64.0.1"),
            (0, 253, "100.64.0.254"),
            (0, 254, "100.64.0.1"),
            (1, 0, "100.64.1.1"),
            (300, 5, "100.65.44.6"),
            (16384, 0, "100.64.0.1"),
        ];
        for (node, seq, want) in cases {
            assert_eq!(pod_ip(node, seq).to_string(), want, "node {node} seq {seq}");
        }
    }
}
