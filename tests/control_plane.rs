//! The control plane end to end: real masters, hollow nodes, and the scheduler and
//! controllers elected onto one master. A Deployment becomes Running pods spread over the
//! nodes, scales, rolls while the leading master is killed (nothing lost, no extra replicas),
//! and injected panics in the scheduler and a controller are survived; a node that stops
//! heartbeating has its pods replaced elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::cluster::{Api, Cluster};
use common::nodes::HollowNodes;
use serde_json::{json, Value};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/keelson-controller-manager";

fn deployment(name: &str, replicas: u32, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "web", "image": image,
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }]}
            }
        }
    })
}

/// The deployment's pods that are not being deleted.
async fn live_pods(api: &Api, app: &str) -> Vec<Value> {
    let reply = api
        .get(&format!(
            "/api/v1/namespaces/default/pods?labelSelector=app%3D{app}"
        ))
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

fn running(pods: &[Value]) -> Vec<&Value> {
    pods.iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .collect()
}

fn node_of(pod: &Value) -> String {
    pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until exactly `n` live pods of `app` are Running; returns them.
async fn wait_running(api: &Api, app: &str, n: usize, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let pods = live_pods(api, app).await;
        if pods.len() == n && running(&pods).len() == n {
            return pods;
        }
        assert!(
            Instant::now() < deadline,
            "{app}: wanted {n} Running pods, have {} live, {} Running: {:?}",
            pods.len(),
            running(&pods).len(),
            pods.iter()
                .map(|p| (
                    p["metadata"]["name"].clone(),
                    p["status"]["phase"].clone(),
                    node_of(p)
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn wait_nodes_ready(api: &Api, names: &[String], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let reply = api.get("/api/v1/nodes").await;
        let ready: BTreeSet<String> = reply.body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|n| {
                        n["status"]["conditions"].as_array().is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                    })
                    .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if names.iter().all(|n| ready.contains(n)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nodes {names:?} not Ready; ready: {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The master that holds the controller Lease.
async fn lease_holder(api: &Api) -> Option<String> {
    let reply = api.get(LEASE).await;
    reply.body["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_string)
}

async fn metric(api: &Api, series: &str) -> f64 {
    let reply = api.get("/metrics").await;
    reply
        .text
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_run_spread_scale_and_roll_through_the_death_of_the_leading_master() {
    // The scheduler and the ReplicaSet controller each panic once at their first start.
    std::env::set_var("KEELSON_INJECT_PANIC", "scheduler,replicaset-controller");
    let mut cluster = Cluster::start(3).await;
    let api = cluster.client(0);
    let nodes = HollowNodes::start(&cluster, "n", Some(3), &[]);
    wait_nodes_ready(&api, &nodes.names(), Duration::from_secs(30)).await;

    // Phase 1: ten replicas, Running, on every node.
    let reply = api
        .post(DEPLOYMENTS, &deployment("web", 10, "nginx:1"))
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    let pods = wait_running(&api, "web", 10, Duration::from_secs(60)).await;
    let used: BTreeSet<String> = pods.iter().map(node_of).collect();
    assert_eq!(
        used.len(),
        3,
        "ten replicas spread over all three nodes, got {used:?}"
    );

    // Phase 2: the injected panics were survived and counted by the leader's supervisor.
    let holder = lease_holder(&api).await.expect("a master leads");
    let leader = cluster
        .masters
        .iter()
        .position(|m| m.name == holder)
        .expect("the holder is one of the masters");
    let leader_api = cluster.client(leader);
    let restarts = metric(
        &leader_api,
        "keelson_actor_restarts_total{actor=\"scheduler\"}",
    )
    .await;
    assert!(
        restarts >= 1.0,
        "the scheduler's panic was counted: {restarts}"
    );
    let restarts = metric(
        &leader_api,
        "keelson_actor_restarts_total{actor=\"replicaset-controller\"}",
    )
    .await;
    assert!(
        restarts >= 1.0,
        "the ReplicaSet controller's panic was counted: {restarts}"
    );

    // Phase 3: scale up, then down, through the scale subresource.
    for replicas in [15, 4] {
        let reply = api
            .patch(
                &format!("{DEPLOYMENTS}/web/scale"),
                "application/merge-patch+json",
                &json!({"spec": {"replicas": replicas}}).to_string(),
            )
            .await;
        assert_eq!(reply.code, 200, "{}", reply.text);
        wait_running(&api, "web", replicas, Duration::from_secs(60)).await;
    }

    // Phase 4: a rolling update; the leading master is killed in the middle of it.
    let survivor = (leader + 1) % 3;
    let api = cluster.client(survivor);
    let reply = api
        .patch(
            &format!("{DEPLOYMENTS}/web"),
            "application/strategic-merge-patch+json",
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}})
                .to_string(),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = live_pods(&api, "web").await;
        if pods
            .iter()
            .any(|p| p["spec"]["containers"][0]["image"] == "nginx:2")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the rollout did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.kill(leader);

    // Phase 5: another master takes the Lease and finishes the rollout: exactly four pods,
    // all of the new template, and no more than 4 + maxSurge at any moment seen.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut most_seen = 0;
    loop {
        let pods = live_pods(&api, "web").await;
        most_seen = most_seen.max(pods.len());
        let new_running = pods
            .iter()
            .filter(|p| {
                p["spec"]["containers"][0]["image"] == "nginx:2"
                    && p["status"]["phase"] == "Running"
            })
            .count();
        if pods.len() == 4 && new_running == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not finish after the leader died: {} live, {new_running} new Running",
            pods.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        most_seen <= 5,
        "at most replicas + maxSurge pods, saw {most_seen}"
    );
    // The rollout can finish before the dead master's Lease expires: wait for it to move.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let new_holder = lease_holder(&api).await;
        if new_holder.as_ref().is_some_and(|h| *h != holder) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Lease did not move to a live master: {new_holder:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The Deployment's status follows its pods (from the new leader's informers): poll it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = api.get(&format!("{DEPLOYMENTS}/web")).await;
        if reply.body["status"]["updatedReplicas"] == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Deployment's status never counted 4 updated replicas: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Phase 6: no pod was bound twice or left unbound, and the pods stay at four.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods = live_pods(&api, "web").await;
    assert_eq!(pods.len(), 4, "no extra replicas after the dust settles");
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for pod in &pods {
        let node = node_of(pod);
        assert!(!node.is_empty(), "every pod is bound");
        *per_node.entry(node).or_default() += 1;
    }
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_heartbeating_has_its_pods_replaced_elsewhere() {
    let cluster = Cluster::start_with(
        1,
        &[
            "--node-monitor-grace-secs",
            "3",
            "--pod-eviction-timeout-secs",
            "2",
        ],
    )
    .await;
    let api = cluster.client(0);
    let a = HollowNodes::start(&cluster, "a", None, &[]);
    let b = HollowNodes::start(&cluster, "b", None, &[]);
    wait_nodes_ready(
        &api,
        &["a".to_string(), "b".to_string()],
        Duration::from_secs(30),
    )
    .await;

    let reply = api
        .post(DEPLOYMENTS, &deployment("app", 4, "nginx:1"))
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    let pods = wait_running(&api, "app", 4, Duration::from_secs(60)).await;
    let on_a: Vec<String> = pods
        .iter()
        .filter(|p| node_of(p) == "a")
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(!on_a.is_empty(), "some pods run on node a");

    // Node a freezes: no more heartbeats.
    a.pause();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = live_pods(&api, "app").await;
        let all_on_b = pods.iter().all(|p| node_of(p) == "b");
        if pods.len() == 4 && running(&pods).len() == 4 && all_on_b {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pods were not replaced on b: {:?}",
            pods.iter()
                .map(|p| (
                    p["metadata"]["name"].clone(),
                    p["status"]["phase"].clone(),
                    node_of(p)
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let node = api.get("/api/v1/nodes/a").await;
    let ready = node.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(ready["status"], "Unknown", "{ready}");
    let taints = node.body["spec"]["taints"].to_string();
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "node a is tainted: {taints}"
    );
    for name in on_a {
        let reply = api
            .get(&format!("/api/v1/namespaces/default/pods/{name}"))
            .await;
        assert!(
            reply.code == 404 || !reply.body["metadata"]["deletionTimestamp"].is_null(),
            "pod {name} of node a was evicted: {}",
            reply.text
        );
    }
    a.resume();

    // Phase 2: node c joins; node b's process is killed. Its machine being gone, the cloud
    // node controller deletes the Node and its pods, which are replaced on the live nodes.
    let c = HollowNodes::start(&cluster, "c", None, &[]);
    wait_nodes_ready(&api, &["c".to_string()], Duration::from_secs(30)).await;
    let mut b = b;
    b.kill();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = live_pods(&api, "app").await;
        let none_on_b = pods.iter().all(|p| node_of(p) != "b");
        let node_b = api.get("/api/v1/nodes/b").await;
        if pods.len() == 4 && running(&pods).len() == 4 && none_on_b && node_b.code == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node b (killed) still has pods or exists ({}): {:?}",
            node_b.code,
            pods.iter()
                .map(|p| (
                    p["metadata"]["name"].clone(),
                    p["status"]["phase"].clone(),
                    node_of(p)
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(c);
}
