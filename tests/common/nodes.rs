//! Hollow nodes for end-to-end tests: `keelson node --runtime hollow` processes against a
//! [`Cluster`] (master 0's kubeconfig, every master's URL to fail over to), which a test can
//! kill or pause; they are killed when dropped.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::cluster::{keelson, Cluster};

/// One `keelson node` process running one or more hollow nodes.
pub struct HollowNodes {
    pub name: String,
    pub count: Option<usize>,
    log: PathBuf,
    child: Option<Child>,
}

impl HollowNodes {
    /// Starts a process with the node `name` (or `name-0..name-(count-1)`), heartbeating
    /// every second; `extra` are more `keelson node` arguments.
    pub fn start(cluster: &Cluster, name: &str, count: Option<usize>, extra: &[&str]) -> Self {
        let master = &cluster.masters[0];
        let servers: Vec<String> = cluster.masters.iter().map(|m| m.url()).collect();
        let mut transport = vec!["--kubeconfig".to_string()];
        transport.push(master.kubeconfig().display().to_string());
        transport.extend(["--server".to_string(), servers.join(",")]);
        Self::spawn(cluster, name, count, &transport, extra)
    }

    /// Starts a process with the node `name` over the QUIC node link: `--masters` with every
    /// master's API address, `--token` the given join token, its own data directory.
    pub fn start_quic(cluster: &Cluster, name: &str, token: &str, extra: &[&str]) -> Self {
        let masters: Vec<String> = cluster.masters.iter().map(|m| m.api.clone()).collect();
        let data_dir = cluster.masters[0]
            .dir
            .parent()
            .expect("masters live in the cluster directory")
            .join(format!("node-{name}"));
        let transport = vec![
            "--masters".to_string(),
            masters.join(","),
            "--token".to_string(),
            token.to_string(),
            "--data-dir".to_string(),
            data_dir.display().to_string(),
        ];
        Self::spawn(cluster, name, None, &transport, extra)
    }

    /// The node data directory of a node started with [`HollowNodes::start_quic`].
    pub fn quic_data_dir(cluster: &Cluster, name: &str) -> PathBuf {
        cluster.masters[0]
            .dir
            .parent()
            .expect("masters live in the cluster directory")
            .join(format!("node-{name}"))
    }

    /// Waits up to `timeout` for the process to exit; its success, or `None` if it runs on.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<bool> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Some(status.success());
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }

    fn spawn(
        cluster: &Cluster,
        name: &str,
        count: Option<usize>,
        transport: &[String],
        extra: &[&str],
    ) -> Self {
        let master = &cluster.masters[0];
        let log = master
            .dir
            .parent()
            .expect("masters live in the cluster directory")
            .join(format!("node-{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = keelson();
        command
            .args(["node", "--runtime", "hollow", "--name", name])
            .args(transport)
            .args(["--heartbeat-secs", "1"]);
        if let Some(count) = count {
            command.args(["--count", &count.to_string()]);
        }
        let child = command
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start keelson node");
        HollowNodes {
            name: name.to_string(),
            count,
            log,
            child: Some(child),
        }
    }

    /// The node names this process runs.
    pub fn names(&self) -> Vec<String> {
        match self.count {
            None => vec![self.name.clone()],
            Some(n) => (0..n).map(|i| format!("{}-{i}", self.name)).collect(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            kill(Pid::from_raw(pid as i32), signal).unwrap();
        }
    }

    /// `kill -9`: the nodes stop heartbeating for good.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGSTOP: the nodes freeze (heartbeats stop) until [`HollowNodes::resume`].
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited with success.
    pub fn terminate(&mut self) -> bool {
        self.signal(Signal::SIGTERM);
        match self.child.take() {
            Some(mut child) => child.wait().map(|s| s.success()).unwrap_or(false),
            None => false,
        }
    }
}

/// A failing test must not leave nodes running.
impl Drop for HollowNodes {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
