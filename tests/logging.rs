//! End-to-end: logging and events. A master with `--log-format json` writes only JSON lines;
//! `--event-ttl` expires Events by their last time; `kctl get events -w` shows new Events;
//! and on a real node (root + runc): container logs rotate and the node's total stays under
//! its bound while `kctl logs` still shows the latest lines, and `kctl logs` merges and
//! follows several pods.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::cluster::Cluster;
use common::kctl::Kctl;
use common::real_node::{node_ready, RealNode};

const IMAGE: &str = "keelson.local/busybox:stable";
const NS: &str = "/api/v1/namespaces/default";

fn event(name: &str, pod: &str, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": "default", "name": pod},
        "reason": reason,
        "message": message,
        "type": "Normal",
        "source": {"component": "e2e"},
        "count": 1,
    })
}

/// Waits until the master logs that its control loops run (the controllers start only on
/// the leader, a little after the API serves).
async fn wait_leading(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.log(0).contains("expiring events") {
        assert!(
            Instant::now() < deadline,
            "the event TTL controller did not start; log:\n{}",
            cluster.log(0)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_logs_json_lines_when_asked() {
    let cluster = Cluster::start_with(1, &["--log-format", "json"]).await;
    let api = cluster.client(0);
    // Some work, so that more than start-up is logged: a leader, controllers, a bad request.
    wait_leading(&cluster).await;
    assert_eq!(api.get("/api/v1/namespaces/nope/pods/x").await.code, 404);

    let log = cluster.log(0);
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 5, "too few log lines:\n{log}");
    for line in &lines {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}\nlog:\n{log}"));
        let level = value["level"].as_str().unwrap_or_default();
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "no level in {line}"
        );
        assert!(value["message"].is_string(), "no message in {line}");
        assert!(value["timestamp"].is_string(), "no timestamp in {line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("master running")),
        "the start-up message is missing:\n{log}"
    );

    // A command that fails reports its error as JSON too.
    let out = common::cluster::keelson()
        .args([
            "--log-format",
            "json",
            "master",
            "--name",
            "x",
            "--peer",
            "127.0.0.1:1",
        ])
        .args(["--data-dir", "/proc/no-such-dir/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last: Value = serde_json::from_str(stderr.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the error is not JSON ({e}): {stderr}"));
    assert_eq!(last["level"], "ERROR", "{stderr}");
    assert!(
        last["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot create"),
        "{stderr}"
    );
}

/// The time now as a MicroTime (`2026-11-28T16:20:01.123456Z`).
fn now_micro() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"])
        .output()
        .expect("date runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_expire_after_the_event_ttl() {
    let cluster = Cluster::start_with(1, &["--event-ttl", "3s"]).await;
    let api = cluster.client(0);
    wait_leading(&cluster).await;

    // Phase 1: an Event that last happened long ago and one that happens now.
    let mut stale = event("stale", "p", "Old", "long ago");
    stale["firstTimestamp"] = json!("2020-01-01T00:00:00Z");
    stale["lastTimestamp"] = json!("2020-01-01T00:00:00Z");
    let created = Instant::now();
    assert_eq!(api.post(&format!("{NS}/events"), &stale).await.code, 201);
    let mut fresh = event("fresh", "p", "New", "just now");
    // With microseconds: the creation time alone has whole seconds, so the fresh Event could
    // expire up to a second before `created` + TTL.
    fresh["eventTime"] = json!(now_micro());
    assert_eq!(api.post(&format!("{NS}/events"), &fresh).await.code, 201);

    // Phase 2: the stale one goes at the next pass (every second with a 3 s TTL); the fresh
    // one is still there then.
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.get(&format!("{NS}/events/stale")).await.code != 404 {
        assert!(Instant::now() < deadline, "the stale event was not expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stale_gone = created.elapsed();
    assert!(
        stale_gone < Duration::from_millis(2800),
        "the stale event took {stale_gone:?} to go: too slow to tell it from the fresh one"
    );
    assert_eq!(
        api.get(&format!("{NS}/events/fresh")).await.code,
        200,
        "the fresh event went before its TTL"
    );

    // Phase 3: the fresh one goes once its TTL has passed, and not long after.
    let deadline = Instant::now() + Duration::from_secs(15);
    while api.get(&format!("{NS}/events/fresh")).await.code != 404 {
        assert!(
            Instant::now() < deadline,
            "the fresh event outlived its TTL"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        created.elapsed() >= Duration::from_secs(3),
        "the fresh event went after {:?}, before its 3 s TTL",
        created.elapsed()
    );

    // Phase 4: an Event whose count is bumped (a repeat) lives on from its last time.
    let mut repeated = event("repeated", "p", "Again", "over and over");
    repeated["lastTimestamp"] = json!("2020-01-01T00:00:00Z");
    let reply = api.post(&format!("{NS}/events"), &repeated).await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    let now = reply.body["metadata"]["creationTimestamp"].clone();
    let patched = api
        .patch(
            &format!("{NS}/events/repeated"),
            "application/merge-patch+json",
            &json!({"count": 2, "lastTimestamp": now}).to_string(),
        )
        .await;
    // The controller may have been faster than the patch; then the precondition-less patch
    // gets a 404 and the case says nothing. Otherwise the refreshed Event must stay a while.
    if patched.code == 200 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            api.get(&format!("{NS}/events/repeated")).await.code,
            200,
            "an Event refreshed just now was expired by its old time"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kctl_get_events_watch_shows_new_events() {
    let cluster = Cluster::start(1).await;
    let api = cluster.client(0);
    let kctl = Kctl::new(&cluster);
    let watch = kctl.spawn(&["get", "events", "-w"]);
    // Let the watch open (its header may come only with the first row).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reply = api
        .post(
            &format!("{NS}/events"),
            &event("hello.1", "hello", "HelloWatch", "watch me please"),
        )
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    watch
        .wait_line(Duration::from_secs(20), "the new event", |l| {
            l.contains("HelloWatch") && l.contains("pod/hello") && l.contains("watch me please")
        })
        .await;
    let lines = watch.lines();
    let header = lines
        .iter()
        .find(|l| l.starts_with("LAST SEEN"))
        .unwrap_or_else(|| panic!("no header: {lines:?}"));
    let columns: Vec<&str> = header
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        columns,
        ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{header}"
    );
    let row = lines.iter().find(|l| l.contains("HelloWatch")).unwrap();
    assert!(row.contains("Normal"), "{row}");
}

/// The bytes of every container log file (`N.log`, `N.log.K`) under a node's pods directory.
fn log_files(pods: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    for pod in std::fs::read_dir(pods).into_iter().flatten().flatten() {
        for container in std::fs::read_dir(pod.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for file in std::fs::read_dir(container.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = file.file_name().to_string_lossy().to_string();
                let is_log = name
                    .split_once(".log")
                    .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if is_log {
                    if let Ok(meta) = file.metadata() {
                        files.push((file.path(), meta.len()));
                    }
                }
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_logs_rotate_and_the_node_total_stays_bounded() {
    // Two full rotated files (2 x 64 KiB) alone are over it: the node must act.
    const TOTAL: u64 = 120 * 1024;
    let cluster = Cluster::start(1).await;
    let node = RealNode::start(
        &cluster,
        "logs1",
        &[
            "--container-log-max-size",
            "64Ki",
            "--container-log-max-files",
            "3",
            "--container-log-max-total-size",
            "120Ki",
        ],
    );
    let api = cluster.client(0);
    node_ready(&api, "logs1").await;
    let kctl = Kctl::new(&cluster);

    // Phase 1: a container writes about 2 MB of numbered lines, then idles.
    let script = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); \
                  echo \"line $i padding-padding-padding-padding\"; done; \
                  echo \"last line $i\"; sleep 3600";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "chatty"},
        "spec": {"nodeName": "logs1", "containers": [
            {"name": "main", "image": IMAGE, "command": ["sh", "-c", script]}]}});
    assert_eq!(api.post(&format!("{NS}/pods"), &pod).await.code, 201);

    // Phase 2: `kctl logs` shows the latest lines.
    let deadline = Instant::now() + Duration::from_secs(90);
    let tail = loop {
        let out = kctl.run(&["logs", "chatty", "--tail", "3"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("last line 20000") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "kctl logs never showed the last line; last output: {text}\n{}\nnode log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(tail.contains("line 19999 padding"), "{tail}");

    // Phase 3: the node's log directory comes under its total (it is measured every 5 s).
    let pods = node.dir.join("pods");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let files = log_files(&pods);
        let total: u64 = files.iter().map(|(_, n)| n).sum();
        if total <= TOTAL {
            let names: Vec<String> = files
                .iter()
                .map(|(p, _)| p.file_name().unwrap().to_string_lossy().to_string())
                .collect();
            // The running container's current file stays, and the oldest rotated file went
            // first (its rotations came faster than the file clock ticks).
            assert!(names.contains(&"0.log".to_string()), "{files:?}");
            assert!(!names.contains(&"0.log.2".to_string()), "{files:?}");
            assert!(files.len() <= 2, "{files:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node's logs stay at {total} bytes, over {TOTAL}: {files:?}\nnode log:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        node.log()
            .contains("removed container logs over the node's total"),
        "the node never had to enforce its total:\n{}",
        node.log()
    );
    // And the latest lines are still there.
    let out = kctl.ok(&["logs", "chatty", "--tail", "1"]);
    assert_eq!(out.trim(), "last line 20000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kctl_logs_merges_and_follows_the_pods_of_a_selector() {
    let cluster = Cluster::start(1).await;
    let node = RealNode::start(&cluster, "logs2", &[]);
    let api = cluster.client(0);
    node_ready(&api, "logs2").await;
    let kctl = Kctl::new(&cluster);

    // Phase 1: a Deployment of two pods, each printing its own name.
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app", "image": IMAGE,
                    "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                    "command": ["sh", "-c",
                        "i=0; while true; do i=$((i+1)); echo \"tick $i from $POD\"; sleep 0.3; done"]}]}}}});
    let reply = api
        .post("/apis/apps/v1/namespaces/default/deployments", &deployment)
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    let running = |min: usize| {
        let api = api.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let list = api.get(&format!("{NS}/pods?labelSelector=app%3Dweb")).await;
                let names: Vec<String> = list.body["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| {
                        p["status"]["phase"] == "Running"
                            && p["metadata"]["deletionTimestamp"].is_null()
                    })
                    .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                    .collect();
                if names.len() >= min {
                    return names;
                }
                assert!(
                    Instant::now() < deadline,
                    "fewer than {min} web pods run: {names:?}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    let first = running(2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Phase 2: `kctl logs deployment/web --prefix` merges both pods, each line named after
    // the pod that printed it.
    let out = kctl.ok(&["logs", "deployment/web", "--prefix", "--tail", "2"]);
    for pod in &first {
        let prefix = format!("[pod/{pod}/app] ");
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with(&prefix)).collect();
        assert_eq!(lines.len(), 2, "two lines of {pod}:\n{out}");
        for line in lines {
            assert!(line.ends_with(&format!("from {pod}")), "{line}");
        }
    }
    assert_eq!(out.lines().count(), 4, "{out}");
    // A selector without a prefix: the same lines, bare.
    let bare = kctl.ok(&["logs", "-l", "app=web", "--tail", "1"]);
    assert_eq!(bare.lines().count(), 2, "{bare}");
    assert!(bare.lines().all(|l| l.starts_with("tick ")), "{bare}");

    // Phase 3: following more pods than --max-log-requests allows is refused, as kubectl does.
    let refused = kctl.run(&["logs", "-l", "app=web", "-f", "--max-log-requests", "1"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(
            "you are attempting to follow 2 log streams, but maximum allowed concurrency is 1"
        ),
        "{stderr}"
    );

    // Phase 4: `-l app=web -f` follows both pods, then a third one once it starts.
    let follow = kctl.spawn(&["logs", "-l", "app=web", "-f", "--prefix", "--tail", "1"]);
    for pod in &first {
        let prefix = format!("[pod/{pod}/app] tick");
        follow
            .wait_line(Duration::from_secs(20), &prefix, |l| l.starts_with(&prefix))
            .await;
    }
    kctl.ok(&["scale", "deployment/web", "--replicas=3"]);
    let all = running(3).await;
    let third = all.iter().find(|p| !first.contains(p)).unwrap().clone();
    let prefix = format!("[pod/{third}/app] tick");
    follow
        .wait_line(Duration::from_secs(30), &prefix, |l| l.starts_with(&prefix))
        .await;

    // Phase 5: a deleted pod is no longer followed; the others are.
    let gone = first[0].clone();
    let reply = api.delete(&format!("{NS}/pods/{gone}")).await;
    assert!(reply.code == 200 || reply.code == 202, "{}", reply.text);
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.get(&format!("{NS}/pods/{gone}")).await.code != 404 {
        assert!(Instant::now() < deadline, "pod {gone} was not deleted");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The watch's DELETED event reaches kctl a moment later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let count = |pod: &str| {
        let prefix = format!("[pod/{pod}/app] ");
        follow
            .lines()
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .count()
    };
    let (gone_before, kept_before) = (count(&gone), count(&first[1]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        count(&gone),
        gone_before,
        "lines of a deleted pod kept coming"
    );
    assert!(
        count(&first[1]) > kept_before,
        "the other pod's lines stopped"
    );
    drop(follow);
    drop(node);
}
