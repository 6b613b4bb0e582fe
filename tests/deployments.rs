//! Deployments, ReplicaSets and ReplicationControllers on a real master: scaling, a rolling
//! update watched pod by pod against its surge and unavailability bounds, `kctl rollout
//! status|history|undo|restart`, and an RC replacing a deleted pod. There are no nodes yet,
//! so the test plays kubelet: it marks every pod Running and Ready through `pods/NAME/status`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{Api, Cluster};
use serde_json::{json, Value};

const NS: &str = "roll";
const CONTROLLERS: &str =
    "--controllers=replicaset-controller,deployment-controller,replication-controller,garbage-collector";

/// `kctl` is another package's binary: it sits beside this test's `deps/` folder.
fn kctl_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("kctl"))
        .unwrap();
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first",
        bin.display()
    );
    bin
}

fn kctl(cluster: &Cluster, args: &[&str]) -> String {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(kctl_bin())
        .env("KUBECONFIG", cluster.masters[0].kubeconfig())
        .env("HOME", home.path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kctl {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn is_active(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn image(pod: &Value) -> &str {
    pod["spec"]["containers"][0]["image"].as_str().unwrap_or("")
}

async fn pods(api: &Api, selector: &str) -> Vec<Value> {
    let reply = api
        .get(&format!(
            "/api/v1/namespaces/{NS}/pods?labelSelector={selector}"
        ))
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    reply.body["items"].as_array().cloned().unwrap_or_default()
}

/// The test's kubelet: every pod in the namespace turns Running and Ready shortly after it
/// appears.
fn start_kubelet(api: Api, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            for pod in pods(&api, "").await {
                if is_ready(&pod) || !is_active(&pod) {
                    continue;
                }
                let name = pod["metadata"]["name"].as_str().unwrap();
                let patch = json!({"status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True"}]}});
                api.patch(
                    &format!("/api/v1/namespaces/{NS}/pods/{name}/status"),
                    "application/merge-patch+json",
                    &patch.to_string(),
                )
                .await;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    })
}

/// What the bounds watcher saw.
#[derive(Default)]
struct Observed {
    events: usize,
    violations: Vec<String>,
    max_total: usize,
    min_ready: usize,
}

/// Watches the pods of `selector` from a list's revision and checks, after every event, that
/// active pods <= `max_total` and ready active pods >= `min_ready`.
fn start_bounds_watcher(
    api: Api,
    selector: &'static str,
    max_total: usize,
    min_ready: usize,
    stop: Arc<AtomicBool>,
    observed: Arc<Mutex<Observed>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let list = api
            .get(&format!(
                "/api/v1/namespaces/{NS}/pods?labelSelector={selector}"
            ))
            .await;
        let mut state: HashMap<String, Value> = HashMap::new();
        for pod in list.body["items"].as_array().unwrap() {
            state.insert(
                pod["metadata"]["name"].as_str().unwrap().to_string(),
                pod.clone(),
            );
        }
        {
            let mut o = observed.lock().unwrap();
            o.min_ready = usize::MAX;
        }
        let mut rv = list.rv();
        if rv.is_empty() {
            rv = list.body["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string();
        }
        while !stop.load(Ordering::Relaxed) {
            let mut response = api
                .http
                .get(format!(
                    "{}/api/v1/namespaces/{NS}/pods?watch=1&labelSelector={selector}&resourceVersion={rv}&timeoutSeconds=20",
                    api.base
                ))
                .bearer_auth(&api.token)
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .unwrap();
            let mut buffer = Vec::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                buffer.extend_from_slice(&chunk);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                        continue;
                    };
                    let pod = &event["object"];
                    if let Some(v) = pod["metadata"]["resourceVersion"].as_str() {
                        rv = v.to_string();
                    }
                    let name = pod["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    match event["type"].as_str() {
                        Some("ADDED" | "MODIFIED") => {
                            state.insert(name, pod.clone());
                        }
                        Some("DELETED") => {
                            state.remove(&name);
                        }
                        _ => continue,
                    }
                    let total = state.values().filter(|p| is_active(p)).count();
                    let ready = state
                        .values()
                        .filter(|p| is_active(p) && is_ready(p))
                        .count();
                    let mut o = observed.lock().unwrap();
                    o.events += 1;
                    o.max_total = o.max_total.max(total);
                    o.min_ready = o.min_ready.min(ready);
                    if total > max_total || ready < min_ready {
                        o.violations.push(format!(
                            "at rv {rv}: {total} pods (max {max_total}), {ready} ready (min {min_ready})"
                        ));
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
        }
    })
}

/// Waits until `check` holds of the pods of `selector`.
async fn wait_pods(
    cluster: &Cluster,
    selector: &str,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) {
    let api = &cluster.client(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let all: Vec<Value> = pods(api, selector)
            .await
            .into_iter()
            .filter(is_active)
            .collect();
        if check(&all) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log tail:\n{}\nreplica sets: {}\ndeployments: {}\npods: {:?}",
            tail(&cluster.log(0)),
            api.get(&format!("/apis/apps/v1/namespaces/{NS}/replicasets")).await.text,
            api.get(&format!("/apis/apps/v1/namespaces/{NS}/deployments")).await.text,
            all.iter()
                .map(|p| (
                    p["metadata"]["name"].clone(),
                    image(p).to_string(),
                    is_ready(p)
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn all_ready_with(pods: &[Value], count: usize, wanted: &str) -> bool {
    pods.len() == count && pods.iter().all(|p| is_ready(p) && image(p) == wanted)
}

fn deployment(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": image}]}},
        },
    })
}

async fn set_image(api: &Api, image: &str) {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}});
    let reply = api
        .patch(
            &format!("/apis/apps/v1/namespaces/{NS}/deployments/web"),
            "application/merge-patch+json",
            &patch.to_string(),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
}

async fn scale(api: &Api, replicas: i64) {
    let reply = api
        .patch(
            &format!("/apis/apps/v1/namespaces/{NS}/deployments/web"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": replicas}}).to_string(),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_roll_within_bounds_and_controllers_keep_replicas() {
    let cluster = Cluster::start_with(1, &[CONTROLLERS]).await;
    let api = cluster.client(0);
    let reply = api
        .post(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        )
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    let stop = Arc::new(AtomicBool::new(false));
    let kubelet = start_kubelet(api.clone(), stop.clone());

    eprintln!("phase 1: a deployment of 10 gets 10 pods");
    let reply = api
        .post(
            &format!("/apis/apps/v1/namespaces/{NS}/deployments"),
            &deployment(10, "web:v1"),
        )
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    wait_pods(&cluster, "app=web", "10 ready v1 pods", |p| {
        all_ready_with(p, 10, "web:v1")
    })
    .await;
    let out = kctl(
        &cluster,
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            NS,
            "--timeout",
            "2m",
        ],
    );
    assert!(
        out.ends_with("deployment \"web\" successfully rolled out\n"),
        "{out}"
    );

    eprintln!("phase 2: scale up to 15 and down to 10");
    scale(&api, 15).await;
    wait_pods(&cluster, "app=web", "15 ready pods", |p| {
        all_ready_with(p, 15, "web:v1")
    })
    .await;
    scale(&api, 10).await;
    wait_pods(&cluster, "app=web", "10 ready pods", |p| {
        all_ready_with(p, 10, "web:v1")
    })
    .await;

    eprintln!("phase 3: a rolling update replaces every pod within 10+3 pods and 10-2 ready");
    let observed = Arc::new(Mutex::new(Observed::default()));
    let watch_stop = Arc::new(AtomicBool::new(false));
    let watcher = start_bounds_watcher(
        api.clone(),
        "app%3Dweb",
        13,
        8,
        watch_stop.clone(),
        observed.clone(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<String> = pods(&api, "app=web")
        .await
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    set_image(&api, "web:v2").await;
    let out = kctl(
        &cluster,
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            NS,
            "--timeout",
            "2m",
        ],
    );
    assert!(
        out.ends_with("deployment \"web\" successfully rolled out\n"),
        "{out}"
    );
    wait_pods(&cluster, "app=web", "10 ready v2 pods", |p| {
        all_ready_with(p, 10, "web:v2")
    })
    .await;
    let after = pods(&api, "app=web").await;
    assert!(
        after
            .iter()
            .all(|p| !before.contains(&p["metadata"]["name"].as_str().unwrap().to_string())),
        "every pod was replaced"
    );
    let history = kctl(
        &cluster,
        &["rollout", "history", "deployment/web", "-n", NS],
    );
    assert!(
        history.contains("REVISION") && history.contains("\n1 ") && history.contains("\n2 "),
        "{history}"
    );

    eprintln!("phase 4: kctl rollout undo brings v1 back");
    let out = kctl(&cluster, &["rollout", "undo", "deployment/web", "-n", NS]);
    assert!(out.contains("rolled back"), "{out}");
    wait_pods(&cluster, "app=web", "10 ready v1 pods again", |p| {
        all_ready_with(p, 10, "web:v1")
    })
    .await;
    let out = kctl(
        &cluster,
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            NS,
            "--timeout",
            "2m",
        ],
    );
    assert!(out.ends_with("successfully rolled out\n"), "{out}");
    let d = api
        .get(&format!("/apis/apps/v1/namespaces/{NS}/deployments/web"))
        .await;
    assert_eq!(
        d.body["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let rs_list = api
        .get(&format!("/apis/apps/v1/namespaces/{NS}/replicasets"))
        .await;
    assert_eq!(
        rs_list.body["items"].as_array().unwrap().len(),
        2,
        "undo reuses the old ReplicaSet"
    );

    eprintln!("phase 5: kctl rollout restart rolls every pod");
    let out = kctl(
        &cluster,
        &["rollout", "restart", "deployment/web", "-n", NS],
    );
    assert!(out.contains("restarted"), "{out}");
    let out = kctl(
        &cluster,
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            NS,
            "--timeout",
            "2m",
        ],
    );
    assert!(out.ends_with("successfully rolled out\n"), "{out}");
    wait_pods(&cluster, "app=web", "10 restarted pods", |p| {
        all_ready_with(p, 10, "web:v1")
            && p.iter().all(|p| {
                p["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string()
            })
    })
    .await;
    watch_stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(30), watcher).await;
    {
        let o = observed.lock().unwrap();
        eprintln!(
            "bounds watcher: {} events, at most {} pods, at least {} ready",
            o.events, o.max_total, o.min_ready
        );
        assert!(
            o.events >= 60,
            "the watcher saw the rollouts ({} events)",
            o.events
        );
        assert!(
            o.violations.is_empty(),
            "bounds violated: {:?}",
            o.violations
        );
    }

    eprintln!("phase 6: a ReplicationController replaces a deleted pod");
    let rc = json!({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "rc", "namespace": NS},
        "spec": {"replicas": 3, "selector": {"app": "rc"},
                 "template": {"metadata": {"labels": {"app": "rc"}},
                              "spec": {"containers": [{"name": "c", "image": "rc:1"}]}}},
    });
    let reply = api
        .post(
            &format!("/api/v1/namespaces/{NS}/replicationcontrollers"),
            &rc,
        )
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    wait_pods(&cluster, "app=rc", "3 rc pods", |p| {
        all_ready_with(p, 3, "rc:1")
    })
    .await;
    let victim = pods(&api, "app=rc").await[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = api
        .delete(&format!("/api/v1/namespaces/{NS}/pods/{victim}"))
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    wait_pods(&cluster, "app=rc", "3 rc pods after a delete", |p| {
        all_ready_with(p, 3, "rc:1") && p.iter().all(|p| p["metadata"]["name"] != victim.as_str())
    })
    .await;
    let rc = api
        .get(&format!(
            "/api/v1/namespaces/{NS}/replicationcontrollers/rc"
        ))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut rc = rc.body;
    while rc["status"]["readyReplicas"] != 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rc = api
            .get(&format!(
                "/api/v1/namespaces/{NS}/replicationcontrollers/rc"
            ))
            .await
            .body;
    }
    assert_eq!(rc["status"]["replicas"], 3, "{rc}");
    assert_eq!(rc["status"]["readyReplicas"], 3, "{rc}");

    stop.store(true, Ordering::Relaxed);
    let _ = kubelet.await;
}
