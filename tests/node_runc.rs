//! End-to-end: a real node (`keelson node --runtime runc`, as root) runs pods' containers
//! through runc: logs, restarts with back-off, probes, memory limits, graceful deletion,
//! adoption after a node restart, and fail-over between masters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::cluster::{Api, Cluster};
use common::real_node::{container_status, node_ready, wait_for, RealNode};

const IMAGE: &str = "keelson.local/busybox:stable";
const NS: &str = "/api/v1/namespaces/default";

fn pod(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": spec,
    })
}

fn sh(name: &str, script: &str) -> Value {
    json!({"name": name, "image": IMAGE, "command": ["sh", "-c", script]})
}

async fn create(api: &Api, pod: &Value) {
    let reply = api.post(&format!("{NS}/pods"), pod).await;
    assert_eq!(reply.code, 201, "create pod: {}", reply.text);
}

/// Creates a pod while the masters may be electing a leader: an unknown outcome (504) or
/// unavailability (503) is retried, and "already exists" then means the earlier try worked.
async fn create_during_fail_over(api: &Api, pod: &Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = api.post(&format!("{NS}/pods"), pod).await;
        match reply.code {
            201 | 409 => return,
            500..=599 if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            _ => panic!("create pod: {}", reply.text),
        }
    }
}

async fn logs(api: &Api, pod: &str, query: &str) -> String {
    let reply = api.get(&format!("{NS}/pods/{pod}/log?{query}")).await;
    assert_eq!(reply.code, 200, "logs of {pod}: {}", reply.text);
    reply.text
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or_default()
}

fn condition<'a>(pod: &'a Value, kind: &str) -> &'a str {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_and_its_logs_are_read() {
    let cluster = Cluster::start(1).await;
    let node = RealNode::start(&cluster, "n1", &[]);
    let api = cluster.client(0);
    node_ready(&api, "n1").await;

    // Phase 1: a ConfigMap feeds a volume and an environment variable.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "greeting"},
        "data": {"word": "hello", "file.txt": "from a volume"}});
    assert_eq!(api.post(&format!("{NS}/configmaps"), &cm).await.code, 201);
    let mut main = sh("main", "echo \"$WORD world\"; cat /cfg/file.txt; echo; echo oops >&2; ls /var/run/secrets/kubernetes.io/serviceaccount; sleep 3600");
    main["env"] = json!([{"name": "WORD", "valueFrom": {"configMapKeyRef": {"name": "greeting", "key": "word"}}}]);
    main["volumeMounts"] = json!([{"name": "cfg", "mountPath": "/cfg"}]);
    let spec = json!({
        "nodeName": "n1",
        "containers": [main, sh(
                "side",
                "echo side car; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done",
            )],
        "volumes": [{"name": "cfg", "configMap": {"name": "greeting"}}],
    });
    create(&api, &pod("hello", spec)).await;
    let running = wait_for(
        &api,
        &format!("{NS}/pods/hello"),
        Duration::from_secs(60),
        "Running",
        |p| phase(p) == "Running" && condition(p, "Ready") == "True",
    )
    .await;
    assert_eq!(container_status(&running, "main")["restartCount"], 0);
    assert!(container_status(&running, "main")["containerID"]
        .as_str()
        .unwrap()
        .starts_with("runc://"));
    assert_eq!(running["status"]["hostIP"], "127.0.0.1");

    // Phase 2: logs, with their options.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = logs(&api, "hello", "container=main").await;
        if text.contains("token") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for want in [
        "hello world",
        "from a volume",
        "oops",
        "ca.crt",
        "namespace",
        "token",
    ] {
        assert!(
            text.contains(want),
            "{want:?} missing from the logs: {text}"
        );
    }
    let tail = logs(&api, "hello", "container=main&tailLines=1").await;
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let stamped = logs(&api, "hello", "container=side&timestamps=true").await;
    assert!(
        stamped.starts_with("20") && stamped.contains(" side car"),
        "{stamped}"
    );
    let reply = api.get(&format!("{NS}/pods/hello/log")).await;
    assert_eq!(
        reply.code, 400,
        "two containers need a name: {}",
        reply.text
    );

    // Phase 3: kctl reads the same logs.
    let kctl = common::kctl_bin();
    let out = std::process::Command::new(kctl)
        .arg("--kubeconfig")
        .arg(cluster.masters[0].kubeconfig())
        .args(["logs", "hello", "-c", "side"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("side car"),
        "{out:?}"
    );

    // Phase 4: following streams new lines as the container writes them.
    let response = api
        .http
        .get(format!(
            "{}{NS}/pods/hello/log?container=side&follow=true&tailLines=1",
            api.base
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    use futures::StreamExt;
    while seen.matches("tick").count() < 4 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.next()).await {
            Ok(Some(Ok(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the followed log ended or stalled after {seen:?}: {other:?}"),
        }
    }
    let numbers: Vec<u64> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "lines arrive in order, none lost: {seen:?}"
    );
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exited_containers_restart_per_policy_with_back_off() {
    let cluster = Cluster::start(1).await;
    let _node = RealNode::start(&cluster, "n1", &[]);
    let api = cluster.client(0);
    node_ready(&api, "n1").await;

    create(
        &api,
        &pod(
            "always",
            json!({"nodeName": "n1", "containers": [sh("c", "echo run; exit 3")]}),
        ),
    )
    .await;
    create(
        &api,
        &pod(
            "never",
            json!({"nodeName": "n1", "restartPolicy": "Never", "containers": [sh("c", "exit 1")]}),
        ),
    )
    .await;
    create(&api, &pod("onfailure", json!({"nodeName": "n1", "restartPolicy": "OnFailure", "containers": [sh("c", "echo done")]}))).await;

    let mut saw_backoff = false;
    let pod = wait_for(
        &api,
        &format!("{NS}/pods/always"),
        Duration::from_secs(60),
        "restartCount >= 3",
        |p| {
            container_status(p, "c")["restartCount"]
                .as_u64()
                .unwrap_or(0)
                >= 3
        },
    )
    .await;
    let status = container_status(&pod, "c");
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 3, "{status}");
    assert_eq!(status["lastState"]["terminated"]["reason"], "Error");
    for _ in 0..40 {
        let p = api.get(&format!("{NS}/pods/always")).await.body;
        if container_status(&p, "c")["state"]["waiting"]["reason"] == "CrashLoopBackOff" {
            saw_backoff = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        saw_backoff,
        "a crashing container waits in CrashLoopBackOff"
    );
    let previous = logs(&api, "always", "previous=true").await;
    assert_eq!(previous, "run\n");

    let never = wait_for(
        &api,
        &format!("{NS}/pods/never"),
        Duration::from_secs(30),
        "Failed",
        |p| phase(p) == "Failed",
    )
    .await;
    assert_eq!(
        container_status(&never, "c")["state"]["terminated"]["exitCode"],
        1
    );
    assert_eq!(container_status(&never, "c")["restartCount"], 0);
    wait_for(
        &api,
        &format!("{NS}/pods/onfailure"),
        Duration::from_secs(30),
        "Succeeded",
        |p| phase(p) == "Succeeded",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_restart_containers_and_gate_readiness() {
    let cluster = Cluster::start(1).await;
    let _node = RealNode::start(&cluster, "n1", &[]);
    let api = cluster.client(0);
    node_ready(&api, "n1").await;

    let mut live = sh(
        "live",
        "touch /tmp/alive; sleep 3; rm /tmp/alive; sleep 3600",
    );
    live["livenessProbe"] = json!({"exec": {"command": ["test", "-f", "/tmp/alive"]}, "periodSeconds": 1, "failureThreshold": 2});
    let mut ready = sh("ready", "sleep 3600");
    ready["readinessProbe"] =
        json!({"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1});
    create(&api, &pod("probed", json!({"nodeName": "n1", "terminationGracePeriodSeconds": 2, "containers": [live, ready]}))).await;

    let pod = wait_for(
        &api,
        &format!("{NS}/pods/probed"),
        Duration::from_secs(60),
        "liveness restart",
        |p| {
            container_status(p, "live")["restartCount"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        },
    )
    .await;
    assert_eq!(
        condition(&pod, "Ready"),
        "False",
        "the readiness probe fails until /tmp/ready exists"
    );
    assert_eq!(container_status(&pod, "ready")["ready"], false);

    // Make the readiness probe pass from inside the container.
    let id = container_status(&pod, "ready")["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("runc://")
        .to_string();
    let root = _node.dir.join("runtime").join("runc");
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["exec", &id, "touch", "/tmp/ready"])
        .output()
        .unwrap();
    assert!(out.status.success(), "runc exec: {out:?}");
    wait_for(
        &api,
        &format!("{NS}/pods/probed"),
        Duration::from_secs(30),
        "ready container",
        |p| container_status(p, "ready")["ready"] == true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_is_enforced_as_an_oom_kill() {
    let cluster = Cluster::start(1).await;
    let _node = RealNode::start(&cluster, "n1", &[]);
    let api = cluster.client(0);
    node_ready(&api, "n1").await;

    let mut hog = sh(
        "hog",
        "x=$(head -c 134217728 /dev/zero | tr '\\0' a); echo ${#x}; sleep 3600",
    );
    hog["resources"] = json!({"limits": {"memory": "32Mi"}});
    create(
        &api,
        &pod(
            "hog",
            json!({"nodeName": "n1", "restartPolicy": "Never", "containers": [hog]}),
        ),
    )
    .await;
    let pod = wait_for(
        &api,
        &format!("{NS}/pods/hog"),
        Duration::from_secs(60),
        "OOMKilled",
        |p| phase(p) == "Failed",
    )
    .await;
    let terminated = &container_status(&pod, "hog")["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{terminated}");
    assert_eq!(terminated["exitCode"], 137);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_and_secret_volumes_follow_their_sources() {
    let cluster = Cluster::start(1).await;
    let _node = RealNode::start(&cluster, "n1", &[]);
    let api = cluster.client(0);
    node_ready(&api, "n1").await;

    let reply = api
        .post(
            &format!("{NS}/configmaps"),
            &json!({"metadata": {"name": "cfg"}, "data": {"greeting": "hello-1"}}),
        )
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    let reply = api
        .post(
            &format!("{NS}/secrets"),
            &json!({"metadata": {"name": "pw"}, "stringData": {"password": "s3cret-1"}}),
        )
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    let reader = sh(
        "reader",
        "while true; do echo \"$(cat /cfg/greeting) $(cat /pw/password)\"; sleep 0.3; done",
    );
    let mut reader = reader;
    reader["volumeMounts"] = json!([
        {"name": "cfg", "mountPath": "/cfg"},
        {"name": "pw", "mountPath": "/pw"},
    ]);
    create(
        &api,
        &pod(
            "reader",
            json!({
                "nodeName": "n1",
                "containers": [reader],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "cfg"}},
                    {"name": "pw", "secret": {"secretName": "pw"}},
                ],
            }),
        ),
    )
    .await;
    wait_for(
        &api,
        &format!("{NS}/pods/reader"),
        Duration::from_secs(60),
        "Running",
        |p| phase(p) == "Running",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !logs(&api, "reader", "").await.contains("hello-1 s3cret-1") {
        assert!(Instant::now() < deadline, "never read the first values");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Both sources change; the running container sees the new files without a restart.
    let reply = api
        .patch(
            &format!("{NS}/configmaps/cfg"),
            "application/merge-patch+json",
            r#"{"data": {"greeting": "hello-2"}}"#,
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    let reply = api
        .patch(
            &format!("{NS}/secrets/pw"),
            "application/merge-patch+json",
            r#"{"stringData": {"password": "s3cret-2"}}"#,
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = logs(&api, "reader", "").await;
        if log.contains("hello-2 s3cret-2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the volumes did not follow their sources: {log}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let pod = api.get(&format!("{NS}/pods/reader")).await.body;
    assert_eq!(container_status(&pod, "reader")["restartCount"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_stops_containers_and_node_restarts_adopt_them() {
    let cluster = Cluster::start(1).await;
    let mut node = RealNode::start(&cluster, "n1", &[]);
    let api = cluster.client(0);
    node_ready(&api, "n1").await;

    // Phase 1: a container that ignores SIGTERM is killed when its grace period ends.
    let stubborn = sh("c", "trap '' TERM; while true; do sleep 1; done");
    create(
        &api,
        &pod(
            "stubborn",
            json!({"nodeName": "n1", "terminationGracePeriodSeconds": 3, "containers": [stubborn]}),
        ),
    )
    .await;
    let polite = sh("c", "trap 'exit 0' TERM; while true; do sleep 1; done");
    create(
        &api,
        &pod(
            "polite",
            json!({"nodeName": "n1", "terminationGracePeriodSeconds": 30, "containers": [polite]}),
        ),
    )
    .await;
    for name in ["stubborn", "polite"] {
        wait_for(
            &api,
            &format!("{NS}/pods/{name}"),
            Duration::from_secs(60),
            "Running",
            |p| phase(p) == "Running",
        )
        .await;
    }
    assert_eq!(node.runc_ids().len(), 2, "{:?}", node.runc_ids());
    let started = Instant::now();
    for name in ["stubborn", "polite"] {
        assert_eq!(api.delete(&format!("{NS}/pods/{name}")).await.code, 200);
    }
    for name in ["stubborn", "polite"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while api.get(&format!("{NS}/pods/{name}")).await.code != 404 {
            assert!(Instant::now() < deadline, "pod {name} was not deleted");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "both went within their grace periods"
    );
    assert!(
        node.runc_ids().is_empty(),
        "runc list still shows {:?}",
        node.runc_ids()
    );

    // Phase 2: the node process dies; its containers keep running and are adopted.
    create(
        &api,
        &pod(
            "keep",
            json!({"nodeName": "n1", "containers": [sh("c", "sleep 3600")]}),
        ),
    )
    .await;
    create(
        &api,
        &pod(
            "drop",
            json!({"nodeName": "n1", "containers": [sh("c", "sleep 3600")]}),
        ),
    )
    .await;
    for name in ["keep", "drop"] {
        wait_for(
            &api,
            &format!("{NS}/pods/{name}"),
            Duration::from_secs(60),
            "Running",
            |p| phase(p) == "Running",
        )
        .await;
    }
    let before = node.runc_ids();
    node.kill();
    // While the node is down: one pod is removed outright, one is created.
    let force = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0});
    let reply = api
        .send(
            reqwest::Method::DELETE,
            &format!("{NS}/pods/drop"),
            Some("application/json"),
            Some(serde_json::to_vec(&force).unwrap()),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    create(
        &api,
        &pod(
            "late",
            json!({"nodeName": "n1", "containers": [sh("c", "sleep 3600")]}),
        ),
    )
    .await;
    assert_eq!(
        node.runc_ids(),
        before,
        "containers outlive the node process"
    );
    node.restart();
    wait_for(
        &api,
        &format!("{NS}/pods/late"),
        Duration::from_secs(60),
        "Running",
        |p| phase(p) == "Running",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids = node.runc_ids();
        let keep = ids.iter().filter(|id| id.contains("-c-")).count();
        if ids.len() == 2 && keep == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expected keep and late only, runc has {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let keep = api.get(&format!("{NS}/pods/keep")).await.body;
    assert_eq!(
        container_status(&keep, "c")["restartCount"],
        0,
        "adopted, not restarted"
    );
    let keep_id = container_status(&keep, "c")["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("runc://")
        .to_string();
    assert!(
        before.contains(&keep_id),
        "{keep_id} was running before the restart: {before:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_fails_over_when_its_master_dies() {
    let mut cluster = Cluster::start(3).await;
    let _node = RealNode::start(&cluster, "n1", &[]);
    let api = cluster.client(0);
    node_ready(&api, "n1").await;
    create(
        &api,
        &pod(
            "before",
            json!({"nodeName": "n1", "containers": [sh("c", "sleep 3600")]}),
        ),
    )
    .await;
    wait_for(
        &api,
        &format!("{NS}/pods/before"),
        Duration::from_secs(60),
        "Running",
        |p| phase(p) == "Running",
    )
    .await;

    let node = wait_for(
        &api,
        "/api/v1/nodes/n1",
        Duration::from_secs(30),
        "the connected-master annotation",
        |n| n["metadata"]["annotations"]["keelson.io/connected-master"].is_string(),
    )
    .await;
    let master = node["metadata"]["annotations"]["keelson.io/connected-master"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let index = cluster
        .masters
        .iter()
        .position(|m| m.name == master)
        .unwrap_or_else(|| panic!("the node names its master: {node}"));
    cluster.kill(index);
    let other = (index + 1) % 3;
    let api = cluster.client(other);
    create_during_fail_over(
        &api,
        &pod(
            "after",
            json!({"nodeName": "n1", "containers": [sh("c", "echo moved; sleep 3600")]}),
        ),
    )
    .await;
    wait_for(
        &api,
        &format!("{NS}/pods/after"),
        Duration::from_secs(60),
        "Running after fail-over",
        |p| phase(p) == "Running",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = api.get(&format!("{NS}/pods/after/log")).await;
        if reply.code == 200 && reply.text.contains("moved") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "logs after fail-over: {} {}",
            reply.code,
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
