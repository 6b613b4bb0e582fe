//! Hollow nodes against a real master: they register and turn Ready, the node controller
//! gives them pod CIDRs, a pod bound to one through the binding subresource is reported
//! Running, and a node whose process is killed turns Ready=Unknown, gets the unreachable
//! taints, and its pods are marked for deletion. One process can run several nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Api, Cluster};
use common::nodes::HollowNodes;
use serde_json::{json, Value};

/// Waits until GET `path` answers an object that satisfies `check`, and returns it.
async fn wait_for(
    api: &Api,
    path: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> bool,
    logs: impl Fn() -> String,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let reply = api.get(path).await;
        if reply.code == 200 && check(&reply.body) {
            return reply.body;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen in {timeout:?}; last {path}: {}\nlogs:\n{}",
            reply.text,
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ready_status(node: &Value) -> Option<&str> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?["status"]
        .as_str()
}

fn has_taint(node: &Value, key: &str, effect: &str) -> bool {
    node["spec"]["taints"]
        .as_array()
        .is_some_and(|ts| ts.iter().any(|t| t["key"] == key && t["effect"] == effect))
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "web", "image": "busybox:1.36"}]}
    })
}

async fn bind(api: &Api, pod: &str, node: &str) {
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": pod},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let reply = api
        .post(
            &format!("/api/v1/namespaces/default/pods/{pod}/binding"),
            &binding,
        )
        .await;
    assert_eq!(reply.code, 201, "bind {pod} to {node}: {}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_nodes_run_pods_and_dead_nodes_are_tainted_and_evicted() {
    let cluster = Cluster::start_with(
        1,
        &[
            "--node-monitor-grace-secs",
            "3",
            "--pod-eviction-timeout-secs",
            "3",
            // The test binds pods itself, and watches the killed node stay (the cloud node
            // controller would delete it, its process being gone).
            "--controllers=*,-scheduler,-cloud-node-controller",
        ],
    )
    .await;
    let api = cluster.client(0);
    let long = Duration::from_secs(60);

    // Phase 1: two node processes register, turn Ready and get distinct pod CIDRs.
    let alive = HollowNodes::start(&cluster, "alive", None, &[]);
    let mut doomed = HollowNodes::start(&cluster, "doomed", None, &[]);
    let paths = [alive.log_path(), doomed.log_path()];
    let logs = || {
        let nodes: Vec<String> = paths
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect();
        format!("{}\n{}", cluster.log(0), nodes.join("\n"))
    };
    let mut cidrs = Vec::new();
    for node in ["alive", "doomed"] {
        let body = wait_for(
            &api,
            &format!("/api/v1/nodes/{node}"),
            "a Ready node with a pod CIDR",
            long,
            |n| ready_status(n) == Some("True") && n["spec"]["podCIDR"].is_string(),
            logs,
        )
        .await;
        assert_eq!(body["metadata"]["labels"]["kubernetes.io/hostname"], node);
        assert_eq!(
            body["status"]["nodeInfo"]["kubeletVersion"],
            "v1.37.0-keelson-hollow"
        );
        assert_eq!(body["status"]["capacity"]["pods"], "110");
        cidrs.push(body["spec"]["podCIDR"].as_str().unwrap().to_string());
        let lease = api
            .get(&format!(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
            ))
            .await;
        assert_eq!(lease.code, 200, "{}", lease.text);
        assert_eq!(lease.body["spec"]["holderIdentity"], node);
    }
    assert_ne!(cidrs[0], cidrs[1], "pod CIDRs are handed out once");
    assert!(
        cidrs
            .iter()
            .all(|c| c.starts_with("10.244.") && c.ends_with("/24")),
        "{cidrs:?}"
    );

    // Phase 2: pods bound through the binding subresource are reported Running.
    for (pod_name, node) in [("on-alive", "alive"), ("on-doomed", "doomed")] {
        let reply = api
            .post("/api/v1/namespaces/default/pods", &pod(pod_name))
            .await;
        assert_eq!(reply.code, 201, "{}", reply.text);
        bind(&api, pod_name, node).await;
        let body = wait_for(
            &api,
            &format!("/api/v1/namespaces/default/pods/{pod_name}"),
            "a Running pod",
            long,
            |p| p["status"]["phase"] == "Running",
            logs,
        )
        .await;
        assert!(body["status"]["podIP"]
            .as_str()
            .unwrap()
            .starts_with("100.64."));
        assert_eq!(body["status"]["containerStatuses"][0]["ready"], true);
    }

    // Phase 3: the doomed node's process dies: Ready=Unknown, unreachable taints, its pod
    // marked for deletion (left Terminating: nobody finalizes it on a dead node).
    doomed.kill();
    let node = wait_for(
        &api,
        "/api/v1/nodes/doomed",
        "Ready=Unknown with the unreachable taints",
        long,
        |n| {
            ready_status(n) == Some("Unknown")
                && has_taint(n, "node.kubernetes.io/unreachable", "NoExecute")
                && has_taint(n, "node.kubernetes.io/unreachable", "NoSchedule")
        },
        logs,
    )
    .await;
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    wait_for(
        &api,
        "/api/v1/namespaces/default/pods/on-doomed",
        "the pod on the dead node marked for deletion",
        long,
        |p| p["metadata"]["deletionTimestamp"].is_string(),
        logs,
    )
    .await;
    // Events are written in the background: wait for the eviction's.
    wait_for(
        &api,
        "/api/v1/namespaces/default/events",
        "the TaintManagerEviction event",
        Duration::from_secs(30),
        |list| {
            list["items"].as_array().is_some_and(|items| {
                items.iter().any(|e| {
                    e["reason"] == "TaintManagerEviction"
                        && e["message"] == "Marking for deletion Pod default/on-doomed"
                })
            })
        },
        logs,
    )
    .await;

    // The live node and its pod are untouched.
    let node = api.get("/api/v1/nodes/alive").await.body;
    assert_eq!(ready_status(&node), Some("True"), "{node}");
    assert!(!has_taint(
        &node,
        "node.kubernetes.io/unreachable",
        "NoExecute"
    ));
    let pod = api
        .get("/api/v1/namespaces/default/pods/on-alive")
        .await
        .body;
    assert!(pod["metadata"]["deletionTimestamp"].is_null(), "{pod}");
    assert_eq!(pod["status"]["phase"], "Running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_runs_many_hollow_nodes_and_recovers_from_a_pause() {
    let cluster = Cluster::start_with(
        1,
        &[
            "--node-monitor-grace-secs",
            "3",
            "--pod-eviction-timeout-secs",
            "30",
        ],
    )
    .await;
    let api = cluster.client(0);
    let long = Duration::from_secs(60);
    let mut nodes = HollowNodes::start(&cluster, "many", Some(3), &[]);
    let path = nodes.log_path();
    let logs = || {
        format!(
            "{}\n{}",
            cluster.log(0),
            std::fs::read_to_string(&path).unwrap_or_default()
        )
    };

    // Phase 1: three nodes from one process, all Ready, one pid.
    let pid = nodes.pid().unwrap().to_string();
    for name in nodes.names() {
        let node = wait_for(
            &api,
            &format!("/api/v1/nodes/{name}"),
            "a Ready node",
            long,
            |n| ready_status(n) == Some("True"),
            logs,
        )
        .await;
        assert_eq!(
            node["metadata"]["annotations"]["keelson.io/pid"],
            pid.as_str()
        );
    }
    let list = api.get("/api/v1/nodes").await;
    assert_eq!(
        list.body["items"].as_array().unwrap().len(),
        3,
        "{}",
        list.text
    );

    // Phase 2: paused past the grace period, the nodes turn Unknown and tainted; resumed,
    // they report Ready=True again and the controller lifts the taints.
    nodes.pause();
    wait_for(
        &api,
        "/api/v1/nodes/many-0",
        "a paused node turning Unknown",
        long,
        |n| {
            ready_status(n) == Some("Unknown")
                && has_taint(n, "node.kubernetes.io/unreachable", "NoExecute")
        },
        logs,
    )
    .await;
    nodes.resume();
    wait_for(
        &api,
        "/api/v1/nodes/many-0",
        "a resumed node Ready without taints",
        long,
        |n| {
            ready_status(n) == Some("True")
                && !has_taint(n, "node.kubernetes.io/unreachable", "NoExecute")
        },
        logs,
    )
    .await;

    // Phase 3: SIGTERM stops the process cleanly.
    assert!(
        nodes.terminate(),
        "keelson node did not exit cleanly:\n{}",
        nodes.log()
    );
}
