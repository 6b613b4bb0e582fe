//! The control-plane workload: hollow nodes and a Deployment that a client keeps scaling while
//! the nemesis works on the masters. Checked: no pod is ever bound to a second node, and once
//! the faults heal the Deployment settles at its replica count and never exceeds it.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use serde_json::json;

use crate::checker::{Anomaly, CheckResult, Validity};
use crate::client::{status_message, Api, NAMESPACE};
use crate::workload::Stop;

const DEPLOYMENT: &str = "jepsen-web";
/// The replica count the Deployment is given once the faults heal.
const FINAL_REPLICAS: usize = 3;

/// A `keelson node --runtime hollow` process with a few nodes, killed on drop.
pub struct HollowNodes {
    child: Child,
}

impl HollowNodes {
    /// Starts `count` hollow nodes that speak HTTPS to every master in `servers`.
    pub fn start(
        keelson: &Path,
        kubeconfig: &Path,
        servers: &[String],
        count: usize,
        log: &Path,
    ) -> anyhow::Result<HollowNodes> {
        let log = std::fs::File::create(log)?;
        let child = Command::new(keelson)
            .args(["node", "--runtime", "hollow", "--name", "jepsen-node"])
            .args(["--count", &count.to_string(), "--heartbeat-secs", "1"])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--server", &servers.join(",")])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .context("start hollow nodes")?;
        Ok(HollowNodes { child })
    }
}

impl Drop for HollowNodes {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn deployment(replicas: usize) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": DEPLOYMENT}},
            "template": {
                "metadata": {"labels": {"app": DEPLOYMENT}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    })
}

/// Creates the Deployment (retrying until `timeout`).
pub async fn create(api: &Api, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let path = format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments");
    loop {
        match api
            .send(
                reqwest::Method::POST,
                &path,
                Some(&deployment(FINAL_REPLICAS)),
            )
            .await
        {
            Ok(r) if r.code == 201 || r.code == 409 => return Ok(()),
            Ok(r) if Instant::now() > deadline => {
                anyhow::bail!("create the deployment: {}", status_message(&r))
            }
            Err(e) if Instant::now() > deadline => anyhow::bail!("create the deployment: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

async fn scale(api: &Api, replicas: usize) -> bool {
    let path = format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}");
    let patch = json!({"spec": {"replicas": replicas}});
    api.send_with_type(
        reqwest::Method::PATCH,
        &path,
        "application/merge-patch+json",
        &patch,
    )
    .await
    .is_ok_and(|r| r.code == 200)
}

/// Pods of the Deployment: uid → node it is bound to, whether it is terminating.
async fn pods(api: &Api) -> Option<Vec<(String, String, bool)>> {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app%3D{DEPLOYMENT}");
    let reply = api.send(reqwest::Method::GET, &path, None).await.ok()?;
    if reply.code != 200 {
        return None;
    }
    Some(
        reply.body["items"]
            .as_array()?
            .iter()
            .map(|p| {
                (
                    p["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    p["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    !p["metadata"]["deletionTimestamp"].is_null(),
                )
            })
            .collect(),
    )
}

/// What the observer saw: for each pod the nodes it was seen bound to.
#[derive(Default)]
pub struct Bindings {
    nodes: Mutex<HashMap<String, Vec<String>>>,
}

impl Bindings {
    fn see(&self, uid: &str, node: &str) {
        if node.is_empty() {
            return;
        }
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let seen = nodes.entry(uid.to_string()).or_default();
        if !seen.iter().any(|n| n == node) {
            seen.push(node.to_string());
        }
    }
}

/// Scales the Deployment to random sizes every couple of seconds, through each master in
/// turn, and watches bindings, until stopped.
pub async fn scaler(apis: Vec<Api>, bindings: Arc<Bindings>, stop: Stop) {
    let mut k = 0usize;
    let mut last_scale = Instant::now();
    while !stop.stopped() {
        let api = &apis[k % apis.len().max(1)];
        k += 1;
        if last_scale.elapsed() > Duration::from_secs(2) {
            let replicas = rand::rng().random_range(1..=6);
            scale(api, replicas).await;
            last_scale = Instant::now();
        }
        if let Some(pods) = pods(api).await {
            for (uid, node, _) in pods {
                bindings.see(&uid, &node);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// After the heal: scales to the final size, waits for the Deployment to settle, watches a
/// while longer, and checks bindings and the replica count.
pub async fn settle_and_check(apis: &[Api], bindings: &Bindings, timeout: Duration) -> CheckResult {
    let mut anomalies = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut k = 0usize;
    while !scale(&apis[k % apis.len()], FINAL_REPLICAS).await && Instant::now() < deadline {
        k += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut settled_at = None;
    let mut most = 0usize;
    let mut last_live = 0usize;
    while Instant::now() < deadline {
        k += 1;
        if let Some(pods) = pods(&apis[k % apis.len()]).await {
            for (uid, node, _) in &pods {
                bindings.see(uid, node);
            }
            let live: Vec<_> = pods
                .iter()
                .filter(|(_, node, gone)| !gone && !node.is_empty())
                .collect();
            let all_live = pods.iter().filter(|(_, _, gone)| !gone).count();
            last_live = all_live;
            match settled_at {
                None if all_live == FINAL_REPLICAS && live.len() == FINAL_REPLICAS => {
                    settled_at = Some(Instant::now());
                }
                Some(at) => {
                    most = most.max(all_live);
                    if at.elapsed() > Duration::from_secs(5) {
                        break;
                    }
                }
                None => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if settled_at.is_none() {
        anomalies.push(Anomaly {
            kind: "did-not-settle".into(),
            key: Some(DEPLOYMENT.into()),
            message: format!("{timeout:?} after the heal the Deployment has {last_live} live pods, not {FINAL_REPLICAS} bound ones"),
            ops: Vec::new(),
        });
    } else if most > FINAL_REPLICAS {
        anomalies.push(Anomaly {
            kind: "too-many-replicas".into(),
            key: Some(DEPLOYMENT.into()),
            message: format!(
                "after settling at {FINAL_REPLICAS} replicas, {most} live pods were seen"
            ),
            ops: Vec::new(),
        });
    }
    let nodes = bindings.nodes.lock().unwrap_or_else(|e| e.into_inner());
    for (uid, seen) in nodes.iter().filter(|(_, seen)| seen.len() > 1) {
        anomalies.push(Anomaly {
            kind: "double-binding".into(),
            key: Some(uid.clone()),
            message: format!("pod {uid} was seen bound to {}", seen.join(" and then ")),
            ops: Vec::new(),
        });
    }
    CheckResult {
        name: "control-plane".into(),
        validity: if anomalies.is_empty() {
            Validity::Valid
        } else {
            Validity::Invalid
        },
        summary: format!(
            "{} pods seen bound; deployment settled at {FINAL_REPLICAS}: {}",
            nodes.len(),
            settled_at.is_some()
        ),
        anomalies,
    }
}
