//! End-to-end networking on several hosts of one machine (tests/common/hosts.rs): 3 masters
//! and 3 runc nodes, each in its own network namespace. Needs root, runc, busybox-static,
//! iproute2 and nftables (CI installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::cluster::Api;
use common::hosts::MultiHost;
use common::real_node::wait_for;
use serde_json::{json, Value};

const NS: &str = "/api/v1/namespaces/default";
const IMAGE: &str = "keelson.local/busybox:stable";

/// A busybox httpd on port 8080 that answers with `name`, pinned to `node`.
fn server(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "web", "image": IMAGE,
                "command": ["sh", "-c",
                    format!("mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 8080 -h /www")],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
            }],
        },
    })
}

/// A pod on `node` that runs `script` once.
fn client(name: &str, node: &str, script: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": IMAGE, "command": ["sh", "-c", script]}],
        },
    })
}

async fn create(api: &Api, pod: &Value) {
    let reply = api.post(&format!("{NS}/pods"), pod).await;
    assert_eq!(
        reply.code, 201,
        "create {}: {}",
        pod["metadata"]["name"], reply.text
    );
}

async fn ready_ip(api: &Api, name: &str) -> String {
    let pod = wait_for(
        api,
        &format!("{NS}/pods/{name}"),
        Duration::from_secs(90),
        "pod Ready with an IP",
        |p| {
            p["status"]["podIP"].is_string()
                && p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        },
    )
    .await;
    pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits for a run-once pod to finish; returns its log.
async fn finished_log(api: &Api, name: &str) -> (String, String) {
    let pod = wait_for(
        api,
        &format!("{NS}/pods/{name}"),
        Duration::from_secs(90),
        "pod finished",
        |p| p["status"]["phase"] == "Succeeded" || p["status"]["phase"] == "Failed",
    )
    .await;
    let log = api.get(&format!("{NS}/pods/{name}/log")).await;
    (
        pod["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        log.text,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_different_nodes_reach_each_other_by_pod_ip() {
    let multi = MultiHost::start(3, 3, &[]).await;
    let api = multi.cluster.client(0);

    create(&api, &server("web-a", "n0")).await;
    create(&api, &server("web-b", "n1")).await;
    let ip_a = ready_ip(&api, "web-a").await;
    let ip_b = ready_ip(&api, "web-b").await;
    assert_ne!(ip_a, ip_b);
    for ip in [&ip_a, &ip_b] {
        assert!(
            ip.starts_with(&multi.net.cluster_cidr[..multi.net.cluster_cidr.len() - 6]),
            "pod IP {ip} is not in the cluster CIDR {}",
            multi.net.cluster_cidr
        );
    }

    // From a pod on a third node, and from a pod on the same node as web-a.
    let script = format!("wget -qO- http://{ip_a}:8080/ && wget -qO- http://{ip_b}:8080/");
    create(&api, &client("from-n2", "n2", &script)).await;
    create(&api, &client("from-n0", "n0", &script)).await;
    for name in ["from-n2", "from-n0"] {
        let (phase, log) = finished_log(&api, name).await;
        assert_eq!(phase, "Succeeded", "{name}: {log}");
        assert!(
            log.contains("web-a") && log.contains("web-b"),
            "{name}: {log}"
        );
    }

    // A pod's own address is not handed to another pod while it lives, also after the
    // kubelet restarts.
    let mut multi = multi;
    multi.nodes[0].restart();
    create(&api, &server("web-c", "n0")).await;
    let ip_c = ready_ip(&api, "web-c").await;
    assert_ne!(ip_c, ip_a, "web-a's address was handed out again");
    let again = wait_for(
        &api,
        &format!("{NS}/pods/web-a"),
        Duration::from_secs(30),
        "web-a keeps its IP",
        |p| p["status"]["podIP"].is_string(),
    )
    .await;
    assert_eq!(again["status"]["podIP"], ip_a.as_str());
}
