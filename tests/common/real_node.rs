//! Real nodes for end-to-end tests: `keelson node --runtime runc` processes joined to a
//! [`Cluster`] over QUIC with master 0's join token, which a test can kill and restart; they
//! are killed when dropped (their containers are removed too).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cluster::{keelson_in, Api, Cluster};

/// Fails (never skips) a test that needs root and runc on a machine without them.
pub fn require_root_and_runc() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs containers and must run as root (CI does)"
    );
    let runc = Command::new("runc").arg("--version").output();
    assert!(
        runc.is_ok_and(|o| o.status.success()),
        "this test needs runc: install it with `apt-get install runc` (scripts/install-deps.sh test does)"
    );
    assert!(
        Path::new("/bin/busybox").exists(),
        "this test needs /bin/busybox: install it with `apt-get install busybox-static`"
    );
}

pub struct RealNode {
    pub name: String,
    pub dir: PathBuf,
    masters: Vec<String>,
    token: String,
    extra: Vec<String>,
    log: PathBuf,
    /// The network namespace it runs in (`None`: the test's own).
    netns: Option<String>,
    child: Option<Child>,
}

impl RealNode {
    /// Starts node `name` with its data in the cluster's directory; `extra` are more
    /// `keelson node` arguments.
    pub fn start(cluster: &Cluster, name: &str, extra: &[&str]) -> RealNode {
        RealNode::start_in(cluster, name, None, extra)
    }

    /// Starts node `name` inside the network namespace `netns` (when given).
    pub fn start_in(
        cluster: &Cluster,
        name: &str,
        netns: Option<&str>,
        extra: &[&str],
    ) -> RealNode {
        require_root_and_runc();
        let base = cluster.masters[0]
            .dir
            .parent()
            .expect("masters live in the cluster directory")
            .to_path_buf();
        let token = std::fs::read_to_string(cluster.masters[0].dir.join("node-token"))
            .expect("the master wrote its node join token")
            .trim()
            .to_string();
        let mut node = RealNode {
            name: name.to_string(),
            dir: base.join(format!("node-{name}")),
            masters: cluster.masters.iter().map(|m| m.api.clone()).collect(),
            token,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            log: base.join(format!("node-{name}.log")),
            netns: netns.map(str::to_string),
            child: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = keelson_in(self.netns.as_deref())
            .args(["node", "--runtime", "runc", "--name", &self.name])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--masters", &self.masters.join(",")])
            .args(["--token", &self.token])
            .args(["--heartbeat-secs", "1"])
            .args([
                "--crash-backoff-initial-ms",
                "1000",
                "--crash-backoff-max-ms",
                "4000",
            ])
            .args(&self.extra)
            .env("RUST_LOG", "info,keelson_node=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start keelson node");
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The pid of the node process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGSTOP of the node process (a paused host; its containers keep running).
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
        }
    }

    /// `kill -9` of the node process (its containers keep running).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The ids `runc list` shows for this node's containers.
    pub fn runc_ids(&self) -> Vec<String> {
        let out = Command::new("runc")
            .arg("--root")
            .arg(self.dir.join("runtime").join("runc"))
            .args(["list", "-q"])
            .output()
            .expect("runc list");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Removes every container this node's runc holds (after the process is gone).
    fn clean(&self) {
        let root = self.dir.join("runtime").join("runc");
        for id in self.runc_ids() {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", &id])
                .output();
        }
        remove_network_namespaces(&self.dir);
        // Rootfs overlays of the node's pods.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let dir = self.dir.to_string_lossy().to_string();
            for line in mounts.lines() {
                if let Some(target) = line.split_whitespace().nth(1) {
                    if target.starts_with(&dir) {
                        let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
                    }
                }
            }
        }
    }
}

/// Deletes the network namespaces of the sandboxes a node's runtime recorded under `dir`.
pub fn remove_network_namespaces(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir.join("runtime").join("sandboxes")) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            if let Some(id) = path.file_stem().and_then(|s| s.to_str()) {
                let _ = Command::new("ip")
                    .args(["netns", "delete", &format!("keelson-{id}")])
                    .output();
            }
        }
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        self.kill();
        self.clean();
    }
}

/// Polls `path` until `check` accepts the object, or fails the test after `timeout` with the
/// last object and `context`.
pub async fn wait_for(
    api: &Api,
    path: &str,
    timeout: Duration,
    context: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let reply = api.get(path).await;
        if reply.code == 200 && check(&reply.body) {
            return reply.body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting on {path} ({context}); last: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits up to a minute until node `name` reports the Ready condition True.
pub async fn node_ready(api: &Api, name: &str) {
    wait_for(
        api,
        &format!("/api/v1/nodes/{name}"),
        Duration::from_secs(60),
        "node Ready",
        |n| {
            n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        },
    )
    .await;
}

/// The status of a pod's container by name.
pub fn container_status<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|s| s.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}
