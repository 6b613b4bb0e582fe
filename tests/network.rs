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

/// A Deployment of `replicas` httpd servers answering with their pod name, ready unless the
/// test drops a `<pod>.down` file into `ctl` (a hostPath), and its Service.
fn web_deployment(replicas: u32, ctl: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "web", "image": IMAGE,
                        "command": ["sh", "-c",
                            "mkdir -p /www && echo $HOSTNAME > /www/index.html && exec httpd -f -p 8080 -h /www"],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {
                            "exec": {"command": ["sh", "-c", "! test -f /ctl/$HOSTNAME.down"]},
                            "periodSeconds": 1, "failureThreshold": 1,
                        },
                        "volumeMounts": [{"name": "ctl", "mountPath": "/ctl"}],
                    }],
                    "volumes": [{"name": "ctl", "hostPath": {"path": ctl, "type": "DirectoryOrCreate"}}],
                },
            },
        },
    })
}

/// Runs a pod on `node` that fetches `url` `times` times; returns the bodies' lines.
async fn fetch_from_pod(api: &Api, pod: &str, node: &str, url: &str, times: u32) -> Vec<String> {
    let script = format!("for i in $(seq 1 {times}); do wget -qO- {url} || echo FAILED; done");
    create(api, &client(pod, node, &script)).await;
    let (_, log) = finished_log(api, pod).await;
    log.lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

fn distinct(lines: &[String]) -> std::collections::BTreeSet<String> {
    lines.iter().cloned().collect()
}

/// The names of the pods behind the Endpoints `web`, once it lists `ready` ready addresses.
async fn ready_endpoints(api: &Api, ready: usize) -> std::collections::BTreeSet<String> {
    let endpoints = wait_for(
        api,
        &format!("{NS}/endpoints/web"),
        Duration::from_secs(90),
        &format!("{ready} ready endpoints"),
        |e| {
            e["subsets"].as_array().map_or(0, |s| {
                s.iter()
                    .map(|s| s["addresses"].as_array().map_or(0, Vec::len))
                    .sum()
            }) == ready
        },
    )
    .await;
    endpoints["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["targetRef"]["name"].as_str().map(str::to_string))
        .collect()
}

/// An HTTP GET from the test process (the machine's root namespace, outside the cluster).
fn http_get(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        Duration::from_secs(3),
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok();
    stream
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| e.to_string())?;
    reply
        .split("\r\n\r\n")
        .nth(1)
        .map(|b| b.trim().to_string())
        .ok_or_else(|| format!("{addr}: no body in {reply:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reach_ready_endpoints_by_cluster_ip_dns_node_port_and_load_balancer() {
    let mut multi = MultiHost::start(3, 3, &[]).await;
    let api = multi.cluster.client(0);
    let ctl = multi.cluster.base_dir().join("ctl");
    std::fs::create_dir_all(&ctl).unwrap();
    let ctl = ctl.to_string_lossy().to_string();

    let reply = api
        .post(
            "/apis/apps/v1/namespaces/default/deployments",
            &web_deployment(3, &ctl),
        )
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {
            "type": "NodePort",
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    });
    let reply = api.post(&format!("{NS}/services"), &service).await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    let cluster_ip = reply.body["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let node_port = reply.body["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    let backends = ready_endpoints(&api, 3).await;

    // By ClusterIP and by DNS name (short, through the search path, and fully qualified),
    // spread over every replica.
    let by_ip = fetch_from_pod(&api, "c-ip", "n0", &format!("http://{cluster_ip}/"), 30).await;
    assert_eq!(
        distinct(&by_ip),
        backends,
        "requests by ClusterIP: {by_ip:?}"
    );
    let by_name = fetch_from_pod(&api, "c-dns", "n1", "http://web/", 30).await;
    assert_eq!(
        distinct(&by_name),
        backends,
        "requests by name: {by_name:?}"
    );
    let fqdn = fetch_from_pod(
        &api,
        "c-fqdn",
        "n2",
        "http://web.default.svc.cluster.local/",
        3,
    )
    .await;
    assert!(fqdn.iter().all(|l| backends.contains(l)), "{fqdn:?}");

    // A NodePort on every node, from outside the cluster.
    for host in &multi.node_hosts {
        let addr = format!("{}:{node_port}", host.ip);
        let body = http_get(&addr).unwrap_or_else(|e| panic!("NodePort on {}: {e}", host.name));
        assert!(backends.contains(&body), "{addr} answered {body:?}");
    }

    // A pod that turns not-ready stops receiving requests.
    let down = backends.iter().next().unwrap().clone();
    std::fs::write(format!("{ctl}/{down}.down"), "").unwrap();
    ready_endpoints(&api, 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = fetch_from_pod(
        &api,
        "c-notready",
        "n0",
        &format!("http://{cluster_ip}/"),
        20,
    )
    .await;
    assert!(
        !after.contains(&down),
        "{down} is not ready but got requests: {after:?}"
    );
    assert_eq!(distinct(&after).len(), 2, "{after:?}");
    std::fs::remove_file(format!("{ctl}/{down}.down")).unwrap();

    // Scaling down moves the traffic.
    let reply = api
        .patch(
            "/apis/apps/v1/namespaces/default/deployments/web",
            "application/merge-patch+json",
            r#"{"spec": {"replicas": 1}}"#,
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    let left = ready_endpoints(&api, 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let scaled = fetch_from_pod(&api, "c-scaled", "n1", &format!("http://{cluster_ip}/"), 10).await;
    assert_eq!(distinct(&scaled), left, "{scaled:?}");

    // Restarting a node (its kubelet and proxy) keeps the service working.
    multi.nodes[0].restart();
    let restarted =
        fetch_from_pod(&api, "c-restart", "n0", &format!("http://{cluster_ip}/"), 5).await;
    assert_eq!(distinct(&restarted), left, "{restarted:?}");

    // A LoadBalancer service is reachable from the host.
    let reply = api
        .patch(
            &format!("{NS}/services/web"),
            "application/merge-patch+json",
            r#"{"spec": {"type": "LoadBalancer"}}"#,
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    let lb = wait_for(
        &api,
        &format!("{NS}/services/web"),
        Duration::from_secs(30),
        "a load balancer address",
        |s| s["status"]["loadBalancer"]["ingress"][0]["ip"].is_string(),
    )
    .await;
    let lb_ip = lb["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        match http_get(&format!("{lb_ip}:80")) {
            Ok(body) => break body,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("load balancer {lb_ip}:80: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert!(left.contains(&body), "{body:?}");

    // Deleting the Service removes its rules from every node.
    let reply = api.delete(&format!("{NS}/services/web")).await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for host in &multi.node_hosts {
        loop {
            let out = host
                .command("nft")
                .args(["list", "ruleset"])
                .output()
                .unwrap();
            let rules = String::from_utf8_lossy(&out.stdout).to_string();
            if !rules.contains(&cluster_ip) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} still has rules for {cluster_ip}:\n{rules}",
                host.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
