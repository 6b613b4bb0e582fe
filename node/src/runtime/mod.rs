//! The container runtime seen by the kubelet: one trait, [`Runtime`], with the `runc`
//! implementation (the default where runc is installed and the node runs as root) and the
//! `process` fallback (supervised host processes); the kubelet never names either.
//!
//! A pod is a *sandbox* (its network namespace, shared by its containers) plus containers. A
//! container is created and started in one call, runs until it exits or is killed, and stays
//! listed (with its exit code) until it is removed, so the kubelet can report the last state
//! and restart it. Everything the runtime knows is on disk under its state directory, so a new
//! node process adopts what the previous one started: [`Runtime::list`] reports every sandbox
//! and container, running or exited, with the labels given when it was created.

pub mod cgroup;
pub mod metered;
pub mod oci;
pub mod process;
pub mod runc;
pub mod shim;

pub use metered::MeteredRuntime;
pub use process::ProcessRuntime;
pub use runc::{RuncRuntime, ShimCommand};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

/// The labels a container or sandbox is created with; they name what it belongs to, so the
/// kubelet can match runtime state to pods after a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerLabels {
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    /// The container's name in the pod spec.
    pub container_name: String,
    /// 0 for the first run, +1 per restart.
    pub attempt: u32,
}

/// A bind mount into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// Everything needed to create a container. The kubelet resolves image defaults
/// (entrypoint, cmd, env, working dir) before it calls the runtime.
#[derive(Clone, Debug)]
pub struct ContainerConfig {
    /// Unique among the runtime's containers; see [`container_id`].
    pub id: String,
    pub labels: ContainerLabels,
    /// The image's unpacked layers, lowest first: the container sees them as one read-only
    /// tree under its own writable layer.
    pub layers: Vec<PathBuf>,
    /// The full argv (never empty).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Absolute path inside the container; "/" when the image and the pod say nothing.
    pub working_dir: String,
    pub mounts: Vec<Mount>,
    pub hostname: String,
    /// uid and gid inside the container.
    pub user: (u32, u32),
    pub memory_limit_bytes: Option<u64>,
    /// CPU limit in millicores.
    pub cpu_limit_millis: Option<u64>,
    /// CPU request in millicores (becomes shares / weight).
    pub cpu_request_millis: Option<u64>,
    /// Where stdout and stderr go, in the CRI log format the kubelet reads back
    /// (`<RFC 3339 time> stdout|stderr F|P <text>` per line).
    pub log_path: PathBuf,
}

/// A pod's sandbox: what its containers share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Unique among the runtime's sandboxes; see [`sandbox_id`].
    pub id: String,
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    /// `spec.hostNetwork`: share the node's network namespace.
    pub host_network: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxInfo {
    pub id: String,
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    /// The network namespace its containers join (`None`: the host's).
    pub netns: Option<PathBuf>,
    /// The pod's own address (`None`: it has none, e.g. it uses the host's network).
    pub ip: Option<String>,
}

/// What a container is doing now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    /// Created but its process has not started (or the start failed).
    Created,
    Running {
        pid: u32,
        started_at: SystemTime,
    },
    Exited {
        /// `None` when the runtime cannot know (e.g. a process that exited while no node
        /// process watched it).
        exit_code: Option<i32>,
        /// The signal that killed it, if one did.
        signal: Option<i32>,
        started_at: Option<SystemTime>,
        finished_at: SystemTime,
        /// The kernel's OOM killer ended it (memory limit reached).
        oom_killed: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub sandbox_id: String,
    pub labels: ContainerLabels,
    pub state: ContainerState,
    pub log_path: PathBuf,
}

/// Resource usage of a container, from its cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_usage_nanos: u64,
    pub memory_bytes: u64,
}

/// What [`Runtime::list`] returns: every sandbox and every container.
pub type Listing = (Vec<SandboxInfo>, Vec<ContainerInfo>);

/// The result of running a command in a container (exec probes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    /// stdout and stderr, truncated to a few KiB.
    pub output: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no container or sandbox {0}")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The container could not be created or started (a bad command, a missing binary...):
    /// the message is what the user sees in the container's `waiting.message`.
    #[error("{0}")]
    StartFailed(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Other(String),
}

/// A container runtime. Every method is idempotent where that makes sense: removing what is
/// gone succeeds, killing what has exited succeeds.
pub trait Runtime: Send + Sync {
    /// `runc` or `process`.
    fn name(&self) -> &'static str;

    /// Creates the pod's sandbox (its network namespace unless `host_network`).
    fn create_sandbox(
        &self,
        config: &SandboxConfig,
    ) -> BoxFuture<'_, Result<SandboxInfo, RuntimeError>>;

    /// Removes a sandbox; its containers must have been removed first.
    fn remove_sandbox(&self, id: &str) -> BoxFuture<'_, Result<(), RuntimeError>>;

    /// Creates and starts a container in a sandbox. On success the container is running (or
    /// has already exited); on failure nothing of it is left behind.
    fn start_container(
        &self,
        sandbox: &SandboxInfo,
        config: &ContainerConfig,
    ) -> BoxFuture<'_, Result<ContainerInfo, RuntimeError>>;

    /// Sends a signal to the container's processes (no-op when it has exited).
    fn kill(&self, id: &str, signal: i32) -> BoxFuture<'_, Result<(), RuntimeError>>;

    /// Forgets an exited container: its process state, bundle and writable layer (its log
    /// file is the kubelet's to remove). Kills it first if it still runs.
    fn remove_container(&self, id: &str) -> BoxFuture<'_, Result<(), RuntimeError>>;

    /// Every sandbox and every container (running or exited) this runtime holds.
    fn list(&self) -> BoxFuture<'_, Result<Listing, RuntimeError>>;

    /// Runs `args` inside a running container, killing it after `timeout`.
    fn exec(
        &self,
        id: &str,
        args: &[String],
        timeout: Duration,
    ) -> BoxFuture<'_, Result<ExecOutput, RuntimeError>>;

    /// CPU and memory use of a running container.
    fn usage(&self, id: &str) -> BoxFuture<'_, Result<Usage, RuntimeError>>;

    /// Turns true once the pod network can take sandboxes; `None` when sandboxes never wait
    /// for one. Pod workers whose sandbox could not be created look again at once.
    /// No default: a runtime that wraps another must pass it on.
    fn network_ready(&self) -> Option<tokio::sync::watch::Receiver<bool>>;
}

/// Waits on a [`Runtime::network_ready`] signal: returns once it turns true (or its sender is
/// gone), then never again; never for `None`.
pub async fn became_ready(signal: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    let Some(receiver) = signal else {
        return std::future::pending().await;
    };
    let _ = receiver.wait_for(|ready| *ready).await;
    *signal = None;
}

/// The sandbox id of a pod: stable, so a restarted kubelet finds it again.
pub fn sandbox_id(pod_uid: &str) -> String {
    format!("k-{}", short_uid(pod_uid))
}

/// The container id of one run of one container of a pod.
pub fn container_id(pod_uid: &str, container_name: &str, attempt: u32) -> String {
    format!("k-{}-{container_name}-{attempt}", short_uid(pod_uid))
}

fn short_uid(uid: &str) -> String {
    uid.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect()
}

/// Labels as a map, for runtimes that store them in annotations or files.
pub fn labels_map(labels: &ContainerLabels) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("keelson.io/pod-uid".to_string(), labels.pod_uid.clone()),
        (
            "keelson.io/pod-namespace".to_string(),
            labels.pod_namespace.clone(),
        ),
        ("keelson.io/pod-name".to_string(), labels.pod_name.clone()),
        (
            "keelson.io/container-name".to_string(),
            labels.container_name.clone(),
        ),
        ("keelson.io/attempt".to_string(), labels.attempt.to_string()),
    ])
}

/// The inverse of [`labels_map`]; `None` if a label is missing or malformed.
pub fn labels_from_map(map: &BTreeMap<String, String>) -> Option<ContainerLabels> {
    Some(ContainerLabels {
        pod_uid: map.get("keelson.io/pod-uid")?.clone(),
        pod_namespace: map.get("keelson.io/pod-namespace")?.clone(),
        pod_name: map.get("keelson.io/pod-name")?.clone(),
        container_name: map.get("keelson.io/container-name")?.clone(),
        attempt: map.get("keelson.io/attempt")?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::watch;

    #[test]
    fn ids_are_stable_and_distinct_per_attempt() {
        let uid = "0f8a1c2e-5b7d-4e11-9a3b-1234567890ab";
        assert_eq!(sandbox_id(uid), "k-0f8a1c2e5b7d");
        assert_eq!(container_id(uid, "web", 0), "k-0f8a1c2e5b7d-web-0");
        assert_ne!(container_id(uid, "web", 0), container_id(uid, "web", 1));
    }

    #[test]
    fn labels_round_trip() {
        let labels = ContainerLabels {
            pod_uid: "u".into(),
            pod_namespace: "default".into(),
            pod_name: "p".into(),
            container_name: "c".into(),
            attempt: 3,
        };
        assert_eq!(labels_from_map(&labels_map(&labels)), Some(labels));
        assert_eq!(labels_from_map(&BTreeMap::new()), None);
    }

    #[tokio::test]
    async fn the_network_becoming_ready_wakes_a_worker_once() {
        let (ready, receiver) = watch::channel(false);
        let mut signal = Some(receiver);
        let waited = tokio::time::timeout(Duration::from_millis(50), became_ready(&mut signal));
        assert!(waited.await.is_err(), "not ready: no wake");
        assert!(signal.is_some());

        ready.send_replace(true);
        tokio::time::timeout(Duration::from_millis(50), became_ready(&mut signal))
            .await
            .expect("ready: the worker wakes");
        assert!(signal.is_none(), "and only once");
        let again = tokio::time::timeout(Duration::from_millis(50), became_ready(&mut signal));
        assert!(again.await.is_err(), "no second wake");

        let mut none = None;
        let waited = tokio::time::timeout(Duration::from_millis(50), became_ready(&mut none));
        assert!(
            waited.await.is_err(),
            "a runtime without a pod network never wakes it"
        );
    }
}
