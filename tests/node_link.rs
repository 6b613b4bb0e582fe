//! The node link end to end: hollow nodes join a 3-master cluster over QUIC with the join
//! token, register and run a Deployment's pods; wrong join tokens are refused with a clear
//! reason; a node whose master is killed fails over and still runs a pod created afterwards;
//! the node credential works as a bearer token over HTTPS; `pods/NAME/log` streams from an
//! in-process node through whichever master the client asks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{Api, Cluster};
use common::nodes::HollowNodes;
use futures::future::BoxFuture;
use keelson_node::link::{CallbackError, Callbacks, LogRequest, LogStream, NodeLink};
use serde_json::{json, Value};

const ANNOTATION: &str = "keelson.io/connected-master";

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

fn ready(node: &Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn master_index(cluster: &Cluster, name: &str) -> usize {
    cluster
        .masters
        .iter()
        .position(|m| m.name == name)
        .unwrap_or_else(|| panic!("no master {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_link_nodes_join_run_pods_and_fail_over() {
    let mut cluster = Cluster::start(3).await;
    let token = std::fs::read_to_string(cluster.masters[0].dir.join("node-token"))
        .unwrap()
        .trim()
        .to_string();
    assert!(token.starts_with("K10"), "{token}");
    for m in &cluster.masters[1..] {
        let other = std::fs::read_to_string(m.dir.join("node-token")).unwrap();
        assert_eq!(
            other.trim(),
            token,
            "every master writes the same join token"
        );
    }
    let long = Duration::from_secs(60);

    // Phase 1: wrong join tokens are refused with a reason the node logs, and it exits.
    let (hash_part, _) = token.split_once("::").unwrap();
    let wrong_secret = format!("{hash_part}::{}", "0".repeat(64));
    let mut intruder = HollowNodes::start_quic(&cluster, "intruder", &wrong_secret, &[]);
    assert_eq!(
        intruder.wait_exit(long),
        Some(false),
        "a wrong secret must end the node"
    );
    assert!(
        intruder.log().contains("the join token is wrong"),
        "{}",
        intruder.log()
    );
    let wrong_ca = format!("K10{}::whatever", "ab".repeat(32));
    let mut stranger = HollowNodes::start_quic(&cluster, "stranger", &wrong_ca, &[]);
    assert_eq!(stranger.wait_exit(long), Some(false));
    assert!(
        stranger
            .log()
            .contains("does not match the join token's hash"),
        "{}",
        stranger.log()
    );

    // Phase 2: two nodes join over QUIC, register and turn Ready.
    let q1 = HollowNodes::start_quic(&cluster, "q1", &token, &[]);
    let q2 = HollowNodes::start_quic(&cluster, "q2", &token, &[]);
    let node_logs = || format!("q1:\n{}\nq2:\n{}", tail(&q1.log()), tail(&q2.log()));
    let api = cluster.client(0);
    for node in ["q1", "q2"] {
        wait_for(
            &api,
            &format!("/api/v1/nodes/{node}"),
            "a Ready node",
            long,
            ready,
            node_logs,
        )
        .await;
    }
    let data_dir = HollowNodes::quic_data_dir(&cluster, "q1");
    let credential = std::fs::read_to_string(data_dir.join("node-credential")).unwrap();
    let credential = credential.trim().to_string();
    assert!(credential.starts_with("keelson-node:q1:"), "{credential}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data_dir.join("node-credential"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(data_dir.join("ca.crt").exists());

    // Phase 3: the node credential is a bearer token over HTTPS too; a forged one is not.
    let as_node = Api {
        token: credential.clone(),
        ..cluster.client(1)
    };
    let reply = as_node.get("/api/v1/nodes").await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    let forged = Api {
        token: credential.replace("keelson-node:q1:", "keelson-node:q2:"),
        ..cluster.client(1)
    };
    assert_eq!(forged.get("/api/v1/nodes").await.code, 401);

    // Phase 4: a Deployment's pods run on the QUIC nodes.
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "busybox:1.36"}]}},
        },
    });
    let reply = api
        .post("/apis/apps/v1/namespaces/default/deployments", &deployment)
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    wait_for(
        &api,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
        "4 Running pods",
        Duration::from_secs(90),
        |list| {
            list["items"].as_array().is_some_and(|items| {
                items.len() == 4 && items.iter().all(|p| p["status"]["phase"] == "Running")
            })
        },
        node_logs,
    )
    .await;

    // Phase 5: kill the master q1 is connected to; q1 fails over and runs a new pod.
    let node = wait_for(
        &api,
        "/api/v1/nodes/q1",
        "the connected-master annotation",
        long,
        |n| n["metadata"]["annotations"][ANNOTATION].is_string(),
        node_logs,
    )
    .await;
    let first = node["metadata"]["annotations"][ANNOTATION]
        .as_str()
        .unwrap()
        .to_string();
    let doomed = master_index(&cluster, &first);
    tracing_log(&format!("killing {first}, q1's master"));
    cluster.kill(doomed);
    let survivor = (doomed + 1) % 3;
    let api = cluster.client(survivor);
    let node = wait_for(
        &api,
        "/api/v1/nodes/q1",
        "q1 connected to another master",
        long,
        |n| {
            n["metadata"]["annotations"][ANNOTATION]
                .as_str()
                .is_some_and(|m| m != first)
        },
        node_logs,
    )
    .await;
    assert_ne!(node["metadata"]["annotations"][ANNOTATION], first.as_str());
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "after-failover"},
        "spec": {"nodeName": "q1", "containers": [{"name": "web", "image": "busybox:1.36"}]},
    });
    let mut created = false;
    let deadline = Instant::now() + long;
    while !created {
        let reply = api.post("/api/v1/namespaces/default/pods", &pod).await;
        created = reply.code == 201 || reply.code == 409;
        assert!(
            created || Instant::now() < deadline,
            "create: {}",
            reply.text
        );
        if !created {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    wait_for(
        &api,
        "/api/v1/namespaces/default/pods/after-failover",
        "the pod created after the fail-over Running",
        long,
        |p| p["status"]["phase"] == "Running",
        node_logs,
    )
    .await;
    assert!(q1.log().contains("connected to a master"), "{}", q1.log());
}

fn tracing_log(message: &str) {
    eprintln!("--- {message}");
}

/// A node's logs for the test: `line N of POD/CONTAINER`, forever when following.
struct TestLogs;

impl Callbacks for TestLogs {
    fn logs(&self, request: LogRequest) -> BoxFuture<'static, Result<LogStream, CallbackError>> {
        Box::pin(async move {
            if request.container == "missing" {
                return Err(CallbackError::not_found(format!(
                    "container \"missing\" is not in pod {}",
                    request.pod
                )));
            }
            let prefix = format!(
                "{}/{} tail={:?}",
                request.pod, request.container, request.tail_lines
            );
            let follow = request.follow;
            let lines = futures::stream::unfold(0u64, move |n| {
                let prefix = prefix.clone();
                async move {
                    if n >= 3 && !follow {
                        return None;
                    }
                    if n >= 3 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Some((Ok(format!("line {n} of {prefix}\n").into_bytes()), n + 1))
                }
            });
            Ok(Box::pin(lines) as LogStream)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_link_logs_stream_from_the_node_through_any_master() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = Cluster::start(2).await;
    let token = std::fs::read_to_string(cluster.masters[0].dir.join("node-token")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let masters: Vec<String> = cluster.masters.iter().map(|m| m.api.clone()).collect();

    // Phase 1: an in-process node joins over QUIC, registers its Node and serves logs.
    let link = NodeLink::connect(masters, dir.path(), token.trim(), "logger")
        .await
        .unwrap();
    link.set_callbacks(Arc::new(TestLogs));
    let connected = link.connected_master().await.unwrap();
    let client = keelson_node::ApiClient::over_quic(link.clone());
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "logger"}});
    client
        .request(
            reqwest::Method::POST,
            "/api/v1/nodes",
            "application/json",
            Some(&node),
        )
        .await
        .unwrap();
    // A watch over QUIC yields events like one over HTTPS.
    let mut events = client
        .watch("/api/v1/nodes?watch=1&fieldSelector=metadata.name%3Dlogger")
        .await
        .unwrap();
    let event = events.next().await.unwrap().unwrap();
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["metadata"]["name"], "logger");
    drop(events);

    let api = cluster.client(0);
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "chatty"},
        "spec": {"nodeName": "logger", "containers": [{"name": "app", "image": "busybox:1.36"}]},
    });
    let reply = api.post("/api/v1/namespaces/default/pods", &pod).await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    let logs_of = || format!("{}\n{}", tail(&cluster.log(0)), tail(&cluster.log(1)));
    wait_for(
        &api,
        "/api/v1/nodes/logger",
        "the connected-master annotation",
        Duration::from_secs(30),
        |n| n["metadata"]["annotations"][ANNOTATION] == connected.as_str(),
        logs_of,
    )
    .await;

    // Phase 2: the logs come through either master (the other forwards to the node's).
    for i in 0..2 {
        let api = cluster.client(i);
        let reply = api
            .get("/api/v1/namespaces/default/pods/chatty/log?container=app&tailLines=5")
            .await;
        assert_eq!(reply.code, 200, "master {i}: {}", reply.text);
        assert_eq!(
            reply.text,
            "line 0 of chatty/app tail=Some(5)\nline 1 of chatty/app tail=Some(5)\nline 2 of chatty/app tail=Some(5)\n",
            "master {i}"
        );
        let missing = api
            .get("/api/v1/namespaces/default/pods/chatty/log?container=missing")
            .await;
        assert_eq!(missing.code, 404, "master {i}: {}", missing.text);
        assert!(
            missing.text.contains("is not in pod chatty"),
            "{}",
            missing.text
        );
    }

    // Phase 3: a followed log streams until the client goes away.
    let api = cluster.client(1);
    let response = api
        .http
        .get(format!(
            "{}/api/v1/namespaces/default/pods/chatty/log?follow=true",
            api.base
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    while text.lines().count() < 6 {
        use futures::StreamExt;
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a followed log keeps coming")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("line 0 of chatty/ tail=None"), "{text}");
    drop(stream);

    // Phase 4: a pod on a node nobody holds is 503.
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orphan"},
        "spec": {"nodeName": "ghost", "containers": [{"name": "app", "image": "busybox:1.36"}]},
    });
    assert_eq!(
        api.post("/api/v1/namespaces/default/pods", &pod).await.code,
        201
    );
    let reply = api.get("/api/v1/namespaces/default/pods/orphan/log").await;
    assert_eq!(reply.code, 503, "{}", reply.text);
    assert!(
        reply
            .text
            .contains("node ghost is not connected to any master"),
        "{}",
        reply.text
    );
    link.close().await;
}
