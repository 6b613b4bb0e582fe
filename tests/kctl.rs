//! `kctl` against a 3-master cluster of real processes: discovery, create/apply/get/describe/
//! label/scale/edit/delete, wait, watch, logs, cluster status, and errors that carry the server's
//! message with a non-zero exit code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::kctl::Kctl;

fn manifests(image: &str) -> String {
    format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data:
  mode: blue
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cart
  namespace: shop
spec:
  replicas: 1
  selector:
    matchLabels:
      app: cart
  template:
    metadata:
      labels:
        app: cart
    spec:
      containers:
      - name: cart
        image: {image}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kctl_drives_a_cluster() {
    let cluster = Cluster::start(3).await;
    let kctl = Kctl::new(&cluster);

    // Phase 1: version, discovery, cluster status.
    let version = kctl.ok(&["version"]);
    assert!(version.contains("v1.37"), "{version}");
    let resources = kctl.ok(&["api-resources"]);
    assert!(
        resources.contains("deployments") && resources.contains("deploy"),
        "{resources}"
    );
    let status = kctl.ok(&["cluster", "status"]);
    for m in &cluster.masters {
        assert!(status.contains(&m.name), "{status}");
    }
    assert!(status.contains("leader"), "{status}");

    // Phase 2: create from a multi-document file, then read back in every shape.
    let file = kctl.file("shop.yaml", &manifests("shop/cart:1"));
    let created = kctl.ok(&["create", "-f", &file]);
    assert!(created.contains("namespace/shop created"), "{created}");
    assert!(created.contains("configmap/settings created"), "{created}");
    assert!(
        created.contains("deployment.apps/cart created"),
        "{created}"
    );
    let table = kctl.ok(&["get", "deploy", "-n", "shop"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("cart ")), "{table}");
    let all = kctl.ok(&["get", "cm", "-A"]);
    assert!(all.starts_with("NAMESPACE"), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("shop ") && l.contains("settings")),
        "{all}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&kctl.ok(&["get", "cm", "settings", "-n", "shop", "-o", "json"]))
            .unwrap();
    assert_eq!(json["data"]["mode"], "blue");
    let yaml = kctl.ok(&["get", "cm", "settings", "-n", "shop", "-o", "yaml"]);
    assert!(yaml.contains("mode: blue"), "{yaml}");
    assert_eq!(
        kctl.ok(&["get", "deploy", "-n", "shop", "-o", "name"])
            .trim(),
        "deployment.apps/cart"
    );
    let described = kctl.ok(&["describe", "deploy", "cart", "-n", "shop"]);
    assert!(
        described.contains("Name:") && described.contains("cart"),
        "{described}"
    );

    // Phase 3: apply a change, then again unchanged; scale; label.
    let changed = kctl.file("shop2.yaml", &manifests("shop/cart:2"));
    let applied = kctl.ok(&["apply", "-f", &changed]);
    assert!(
        applied.contains("deployment.apps/cart configured"),
        "{applied}"
    );
    let again = kctl.ok(&["apply", "-f", &changed]);
    assert!(again.contains("deployment.apps/cart unchanged"), "{again}");
    let deploy: serde_json::Value =
        serde_json::from_str(&kctl.ok(&["get", "deploy", "cart", "-n", "shop", "-o", "json"]))
            .unwrap();
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "shop/cart:2"
    );
    assert!(kctl
        .ok(&["scale", "deploy/cart", "-n", "shop", "--replicas=4"])
        .contains("scaled"));
    let deploy: serde_json::Value =
        serde_json::from_str(&kctl.ok(&["get", "deploy", "cart", "-n", "shop", "-o", "json"]))
            .unwrap();
    assert_eq!(deploy["spec"]["replicas"], 4);
    assert!(kctl
        .ok(&["label", "cm", "settings", "-n", "shop", "tier=gold"])
        .contains("labeled"));
    assert_eq!(
        kctl.ok(&["get", "cm", "-n", "shop", "-l", "tier=gold", "-o", "name"])
            .trim(),
        "configmap/settings"
    );

    // Phase 3b: `kctl wait` on real conditions. With no node in the cluster the scheduler
    // marks each cart pod `PodScheduled=False`; none becomes Ready, so that wait times out.
    // `wait -l` fails at once when nothing matches (as kubectl's does): first let the
    // Deployment's controllers create the pods.
    let deadline = Instant::now() + Duration::from_secs(30);
    while kctl
        .ok(&["get", "pods", "-l", "app=cart", "-n", "shop", "-o", "name"])
        .trim()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the cart Deployment made no pods"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let waited = kctl.ok(&[
        "wait",
        "--for=condition=PodScheduled=false",
        "pods",
        "-l",
        "app=cart",
        "-n",
        "shop",
        "--timeout=60s",
    ]);
    assert!(
        waited.lines().count() >= 1 && waited.lines().all(|l| l.ends_with("condition met")),
        "{waited}"
    );
    let timed_out = kctl.run(&[
        "wait",
        "--for=condition=Ready",
        "pods",
        "-l",
        "app=cart",
        "-n",
        "shop",
        "--timeout=2s",
    ]);
    let stderr = String::from_utf8_lossy(&timed_out.stderr);
    assert!(
        !timed_out.status.success() && stderr.contains("timed out waiting for the condition"),
        "{stderr}"
    );

    // Phase 4: edit through $EDITOR.
    let edited = kctl
        .command()
        .args(["edit", "cm", "settings", "-n", "shop"])
        .env("EDITOR", "sed -i s/blue/green/")
        .output()
        .unwrap();
    assert!(edited.status.success(), "{edited:?}");
    let json: serde_json::Value =
        serde_json::from_str(&kctl.ok(&["get", "cm", "settings", "-n", "shop", "-o", "json"]))
            .unwrap();
    assert_eq!(json["data"]["mode"], "green");

    // Phase 5: a watch shows a change made elsewhere.
    let mut watcher = kctl
        .command()
        .args(["get", "cm", "-n", "shop", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let other = Kctl::with(common::kctl_bin(), cluster.masters[2].kubeconfig());
    let extra = other.file(
        "extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n  namespace: shop\n",
    );
    other.ok(&["create", "-f", &extra]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen: Vec<String> = Vec::new();
    while !seen.iter().any(|l| l.starts_with("extra")) {
        assert!(
            Instant::now() < deadline,
            "kctl get -w did not show the change: {seen:?}"
        );
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();

    // Phase 6: errors carry the server's message and exit non-zero.
    let missing = kctl.run(&["get", "cm", "nope", "-n", "shop"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("Error from server (NotFound)") && stderr.contains("\"nope\" not found"),
        "{stderr}"
    );
    let pod = kctl.file(
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: lonely\n  namespace: shop\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
    );
    kctl.ok(&["create", "-f", &pod]);
    let logs = kctl.run(&["logs", "lonely", "-n", "shop"]);
    assert!(!logs.status.success());
    assert!(
        String::from_utf8_lossy(&logs.stderr).contains("not been scheduled"),
        "{logs:?}"
    );
    let invalid = kctl.file(
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\n  namespace: shop\nspec:\n  containers: []\n",
    );
    let refused = kctl.run(&["create", "-f", &invalid]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is invalid"),
        "{refused:?}"
    );

    // Phase 7: delete from the file; the namespace and its contents go.
    let deleted = kctl.ok(&["delete", "-f", &changed, "--timeout=60s"]);
    assert!(deleted.contains("namespace \"shop\" deleted"), "{deleted}");
    let gone = kctl.run(&["get", "ns", "shop"]);
    assert!(!gone.status.success(), "{gone:?}");
}
