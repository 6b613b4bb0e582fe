//! End-to-end: `keelson up` (a master and a node in one process) runs the README's example —
//! `kctl apply -f examples/hello.yaml`, pods Running and Ready (their HTTP readiness probes
//! pass inside the pods' network namespaces), `kctl logs deploy/hello` — and stops cleanly
//! on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{free_tcp_port, free_udp_port, keelson, Api};
use common::real_node::require_root_and_runc;

/// Removes what the node's runc still holds when the test ends (also on failure).
struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let root = self.0.join("node").join("runtime").join("runc");
        let out = Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["list", "-q"])
            .output();
        if let Ok(out) = out {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", id])
                    .output();
            }
        }
        common::real_node::remove_network_namespaces(&self.0.join("node"));
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let dir = self.0.to_string_lossy().to_string();
            for target in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
                if target.starts_with(&dir) {
                    let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
    }
}

fn kctl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new(common::kctl_bin())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keelson_up_runs_the_readme_example() {
    require_root_and_runc();
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(dir.path());
    let api_addr = format!("127.0.0.1:{}", free_tcp_port());
    let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
    let mut up = keelson()
        .args([
            "up",
            "--api",
            &api_addr,
            "--peer",
            &format!("127.0.0.1:{}", free_udp_port()),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();

    // Phase 1: the master writes its kubeconfig and the node registers Ready.
    let kubeconfig = dir.path().join("master").join("admin.kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kubeconfig.exists() {
        assert!(
            Instant::now() < deadline,
            "no kubeconfig: {}",
            std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let api = Api::from_kubeconfig(&kubeconfig, &format!("https://{api_addr}"));
    loop {
        let nodes = api.get("/api/v1/nodes").await.body;
        let ready = nodes["items"].as_array().into_iter().flatten().any(|n| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "no Ready node: {nodes}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Phase 2: the README's next three commands.
    kctl(&kubeconfig, &["apply", "-f", "examples/hello.yaml"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pods = api
            .get("/api/v1/namespaces/default/pods?labelSelector=app%3Dhello")
            .await
            .body;
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        let ready = items
            .iter()
            .filter(|p| {
                p["status"]["phase"] == "Running"
                    && p["status"]["containerStatuses"][0]["ready"] == true
            })
            .count();
        if ready == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the example's pods are not Running and Ready: {pods}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let listed = kctl(&kubeconfig, &["get", "pods", "-l", "app=hello"]);
    assert_eq!(listed.matches("Running").count(), 2, "{listed}");
    let logs = kctl(&kubeconfig, &["logs", "deploy/hello"]);
    assert!(logs.contains("serving on :8080 as hello-"), "{logs}");

    // Phase 3: SIGTERM stops master and node.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = up.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "keelson up did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        status.success(),
        "keelson up exited with {status}: {}",
        log_tail(&dir.path().join("up.log"))
    );
}

/// The last lines of a log, to say why a process ended as it did.
fn log_tail(path: &std::path::Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
