//! End to end: the scheduler on a real master binds pods to Node objects made through the
//! API, honours selectors, taints, tolerations and anti-affinity, reports pods that fit
//! nowhere with Kubernetes' message, and binds them once a fitting node appears.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Api, Cluster};
use serde_json::{json, Value};

const PODS: &str = "/api/v1/namespaces/default/pods";
const WAIT: Duration = Duration::from_secs(30);

/// The master's log, shown when a wait fails.
static LOG: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

fn master_log() -> String {
    let text = LOG
        .get()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

fn node(name: &str, cpu: &str, labels: Value, taints: Value) -> Value {
    let mut labels = labels;
    labels["kubernetes.io/hostname"] = json!(name);
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
        "status": {
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    })
}

fn pod(name: &str, cpu: &str, labels: Value, extra_spec: Value) -> Value {
    let mut spec = json!({
        "containers": [{"name": "c", "image": "busybox:1.36",
            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    })
}

fn anti_affinity(app: &str) -> Value {
    json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}
    ]}}})
}

/// Creates a node, then writes its status if the create did not keep it.
async fn create_node(api: &Api, node: &Value) {
    let created = api.post("/api/v1/nodes", node).await;
    assert_eq!(created.code, 201, "{}", created.text);
    if created.body["status"]["allocatable"].is_null() {
        let mut with_status = created.body.clone();
        with_status["status"] = node["status"].clone();
        let name = node["metadata"]["name"].as_str().unwrap();
        let put = api
            .put(&format!("/api/v1/nodes/{name}/status"), &with_status)
            .await;
        assert_eq!(put.code, 200, "{}", put.text);
    }
}

async fn create_pod(api: &Api, pod: &Value) {
    let created = api.post(PODS, pod).await;
    assert_eq!(created.code, 201, "{}", created.text);
}

/// Waits until `check` returns something for the pod.
async fn wait_pod<T>(api: &Api, name: &str, what: &str, check: impl Fn(&Value) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = api.get(&format!("{PODS}/{name}")).await;
        if let Some(found) = check(&reply.body) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "pod {name}: {what} did not happen in {WAIT:?}; pod: {}\nmaster log:\n{}",
            reply.text,
            master_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_bound(api: &Api, name: &str) -> String {
    wait_pod(api, name, "binding", |p| {
        p["spec"]["nodeName"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    })
    .await
}

async fn wait_unschedulable(api: &Api, name: &str) -> String {
    wait_pod(api, name, "PodScheduled=False", |p| {
        p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
            .filter(|c| c["reason"] == "Unschedulable")
            .and_then(|c| c["message"].as_str().map(str::to_string))
    })
    .await
}

/// The Events about pod `name` with `reason`.
async fn events_about(api: &Api, name: &str, reason: &str) -> Vec<Value> {
    let events = api.get("/api/v1/namespaces/default/events").await;
    assert_eq!(events.code, 200, "{}", events.text);
    events.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
        .cloned()
        .collect()
}

/// Waits (up to 10 s) until at least one such Event exists.
async fn wait_events(api: &Api, name: &str, reason: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = events_about(api, name, reason).await;
        if !found.is_empty() {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {reason} Event about {name}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduler_binds_by_filters_and_scores_and_unschedulable_pods_wait_for_a_node() {
    let cluster = Cluster::start_with(1, &["--controllers=scheduler"]).await;
    let api = cluster.client(0);
    let _ = LOG.set(cluster.masters[0].dir.with_extension("log"));

    println!("phase 1: three nodes, one of them tainted");
    create_node(&api, &node("n1", "2", json!({"disk": "ssd"}), json!([]))).await;
    create_node(&api, &node("n2", "2", json!({"disk": "hdd"}), json!([]))).await;
    create_node(
        &api,
        &node(
            "n3",
            "4",
            json!({"gpu": "true"}),
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        ),
    )
    .await;

    println!("phase 2: plain pods spread over the untainted nodes");
    for i in 0..6 {
        create_pod(
            &api,
            &pod(
                &format!("plain-{i}"),
                "100m",
                json!({"app": "plain"}),
                json!({}),
            ),
        )
        .await;
    }
    let mut placed = Vec::new();
    for i in 0..6 {
        placed.push(wait_bound(&api, &format!("plain-{i}")).await);
    }
    assert!(placed.iter().all(|n| n == "n1" || n == "n2"), "{placed:?}");
    assert!(
        placed.iter().any(|n| n == "n1") && placed.iter().any(|n| n == "n2"),
        "{placed:?}"
    );
    let scheduled = wait_events(&api, "plain-0", "Scheduled").await;
    let message = scheduled[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Successfully assigned default/plain-0 to n"),
        "{scheduled:?}"
    );
    assert_eq!(scheduled[0]["type"], "Normal");

    println!("phase 3: nodeSelector, and a toleration with node affinity");
    create_pod(
        &api,
        &pod(
            "ssd",
            "100m",
            json!({}),
            json!({"nodeSelector": {"disk": "ssd"}}),
        ),
    )
    .await;
    assert_eq!(wait_bound(&api, "ssd").await, "n1");
    let gpu_spec = json!({
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}]
        }}},
    });
    create_pod(&api, &pod("gpu", "100m", json!({}), gpu_spec)).await;
    assert_eq!(wait_bound(&api, "gpu").await, "n3");

    println!("phase 4: anti-affinity keeps replicas apart; the third fits nowhere");
    for name in ["aa-1", "aa-2"] {
        create_pod(
            &api,
            &pod(name, "100m", json!({"app": "aa"}), anti_affinity("aa")),
        )
        .await;
    }
    let first = wait_bound(&api, "aa-1").await;
    let second = wait_bound(&api, "aa-2").await;
    assert_ne!(first, second);
    assert!(first != "n3" && second != "n3");
    create_pod(
        &api,
        &pod("aa-3", "100m", json!({"app": "aa"}), anti_affinity("aa")),
    )
    .await;
    assert_eq!(
        wait_unschedulable(&api, "aa-3").await,
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, \
         2 node(s) didn't match pod anti-affinity rules."
    );

    println!("phase 5: a pod too big for every node");
    create_pod(&api, &pod("big", "8", json!({}), json!({}))).await;
    let expected = "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, \
                    2 Insufficient cpu.";
    assert_eq!(wait_unschedulable(&api, "big").await, expected);
    let failed = wait_events(&api, "big", "FailedScheduling").await;
    assert_eq!(failed[0]["message"], expected, "{failed:?}");
    assert_eq!(failed[0]["type"], "Warning");
    assert_eq!(failed[0]["source"]["component"], "default-scheduler");

    println!("phase 6: a big node arrives; both waiting pods get it");
    create_node(&api, &node("n4", "16", json!({}), json!([]))).await;
    assert_eq!(wait_bound(&api, "big").await, "n4");
    assert_eq!(wait_bound(&api, "aa-3").await, "n4");
    let bound = api.get(&format!("{PODS}/big")).await.body;
    let condition = bound["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
        .unwrap();
    assert_eq!(condition["status"], "True", "{condition}");

    println!("phase 7: pods of another scheduler are left alone");
    create_pod(
        &api,
        &pod(
            "other",
            "100m",
            json!({}),
            json!({"schedulerName": "other"}),
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let other = api.get(&format!("{PODS}/other")).await.body;
    assert!(
        other["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{other}"
    );
}
