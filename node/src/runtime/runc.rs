//! The `runc` runtime: each container is an OCI bundle on an overlayfs root, run by runc
//! under a detached [`shim`](super::shim) that owns its stdio and records its exit; each
//! sandbox is a named network namespace. All state lives under the state directory:
//!
//! ```text
//! <state>/sandboxes/<id>.json        the sandbox (SandboxRecord)
//! <state>/containers/<id>/meta.json  labels, sandbox, log path (ContainerMeta)
//!                        config.json the OCI spec
//!                        rootfs/     overlay of the image layers and upper/ (work/)
//!                        started.json, exit.json, start-error  written by the shim
//! <state>/runc/                      runc's --root
//! ```
//!
//! so a new node process adopts what an earlier one started by listing the directories.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use super::oci::build_spec;
use super::shim::{
    self, ExitRecord, ShimArgs, StartedRecord, EXIT_FILE, SHIM_LOG_FILE, STARTED_FILE,
    START_ERROR_FILE,
};
use super::{
    labels_from_map, labels_map, ContainerConfig, ContainerInfo, ContainerState, ExecOutput,
    Listing, Runtime, RuntimeError, SandboxConfig, SandboxInfo, Usage,
};
use crate::network::PodNetwork;

/// How long `start_container` waits for the shim to report.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `remove_container` waits for a killed container's exit to be recorded.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Exec output kept (stdout then stderr).
pub const EXEC_OUTPUT_MAX_BYTES: usize = 4096;
const NETNS_DIR: &str = "/run/netns";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How the runtime starts a shim: `program args... <shim args>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShimCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl ShimCommand {
    /// This executable's `shim` subcommand (production: the `keelson` binary).
    pub fn current_exe() -> Result<ShimCommand, RuntimeError> {
        let program = std::env::current_exe()
            .map_err(|e| RuntimeError::Io(format!("cannot find the keelson binary: {e}")))?;
        Ok(ShimCommand {
            program,
            args: vec!["shim".into()],
        })
    }

    /// Makes the shims write their own log (`shim.log`) as JSON lines.
    pub fn with_log_format_json(mut self, json: bool) -> Self {
        if json {
            self.args.extend(["--log-format".into(), "json".into()]);
        }
        self
    }
}

/// `sandboxes/<id>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct SandboxRecord {
    pub(super) id: String,
    pub(super) pod_uid: String,
    pub(super) pod_namespace: String,
    pub(super) pod_name: String,
    pub(super) host_network: bool,
    pub(super) netns: Option<PathBuf>,
    /// The pod's address on the pod network (none: no pod network, or the host's).
    #[serde(default)]
    pub(super) ip: Option<String>,
}

impl SandboxRecord {
    pub(super) fn info(&self) -> SandboxInfo {
        SandboxInfo {
            id: self.id.clone(),
            pod_uid: self.pod_uid.clone(),
            pod_namespace: self.pod_namespace.clone(),
            pod_name: self.pod_name.clone(),
            netns: self.netns.clone(),
            ip: self.ip.clone(),
        }
    }
}

/// `containers/<id>/meta.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct ContainerMeta {
    pub(super) id: String,
    pub(super) sandbox_id: String,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) log_path: PathBuf,
    pub(super) created_at: String,
}

/// `containers/<id>/lost.json`: when a container was first seen gone without an exit record.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LostRecord {
    noticed_at: String,
}

/// The runc runtime; cheap to create, all its state is on disk.
pub struct RuncRuntime {
    state_dir: PathBuf,
    shim: ShimCommand,
    runc: PathBuf,
    max_log_bytes: u64,
    max_log_files: u32,
    /// Wires sandboxes into the node's pod network (none: pods get a namespace with only
    /// loopback).
    network: Option<Arc<PodNetwork>>,
}

impl RuncRuntime {
    /// Opens (creating) the state directory.
    pub fn new(state_dir: impl Into<PathBuf>, shim: ShimCommand) -> Result<Self, RuntimeError> {
        let state_dir = state_dir.into();
        for sub in ["sandboxes", "containers", "runc"] {
            fs::create_dir_all(state_dir.join(sub)).map_err(|e| io("create state dir", e))?;
        }
        Ok(RuncRuntime {
            state_dir,
            shim,
            runc: PathBuf::from("runc"),
            max_log_bytes: shim::DEFAULT_MAX_LOG_BYTES,
            max_log_files: shim::DEFAULT_MAX_LOG_FILES,
            network: None,
        })
    }

    /// Attaches every new sandbox to `network`, and releases addresses held for sandboxes
    /// that no longer exist.
    pub fn with_network(mut self, network: Arc<PodNetwork>) -> Result<Self, RuntimeError> {
        let live: std::collections::BTreeSet<String> =
            dir_names(&self.state_dir.join("sandboxes"))?
                .into_iter()
                .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
                .collect();
        match network.release_all_but(&live) {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "released addresses of vanished sandboxes"),
            Err(e) => tracing::warn!(error = %e, "cannot check the pod address reservations"),
        }
        self.network = Some(network);
        Ok(self)
    }

    /// Log rotation: rotate past `max_bytes`, keep `max_files` files (current included).
    pub fn with_log_limits(mut self, max_bytes: u64, max_files: u32) -> Self {
        self.max_log_bytes = max_bytes;
        self.max_log_files = max_files.max(1);
        self
    }

    /// The runc binary to use (default `runc` from PATH).
    pub fn with_runc(mut self, runc: impl Into<PathBuf>) -> Self {
        self.runc = runc.into();
        self
    }

    /// runc's `--root`.
    pub fn runc_root(&self) -> PathBuf {
        self.state_dir.join("runc")
    }

    fn sandbox_file(&self, id: &str) -> PathBuf {
        self.state_dir.join("sandboxes").join(format!("{id}.json"))
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("containers").join(id)
    }

    fn runc_cmd(&self) -> Command {
        let mut cmd = Command::new(&self.runc);
        cmd.arg("--root")
            .arg(self.runc_root())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn do_create_sandbox(&self, config: &SandboxConfig) -> Result<SandboxInfo, RuntimeError> {
        validate_id(&config.id)?;
        let file = self.sandbox_file(&config.id);
        if let Some(record) = read_json::<SandboxRecord>(&file) {
            return Ok(record.info());
        }
        let (netns, ip) = if config.host_network {
            (None, None)
        } else {
            let name = netns_name(&config.id);
            let path = Path::new(NETNS_DIR).join(&name);
            if !path.exists() {
                run_ip(&["netns", "add", &name]).await?;
            }
            let ip = match &self.network {
                Some(network) => match network.attach(&config.id, &name).await {
                    Ok(ip) => Some(ip.to_string()),
                    Err(e) => {
                        let _ = run_ip(&["netns", "delete", &name]).await;
                        return Err(RuntimeError::Other(format!(
                            "cannot attach the pod to the network: {e}"
                        )));
                    }
                },
                None => {
                    run_ip(&["-n", &name, "link", "set", "lo", "up"]).await?;
                    None
                }
            };
            (Some(path), ip)
        };
        let record = SandboxRecord {
            id: config.id.clone(),
            pod_uid: config.pod_uid.clone(),
            pod_namespace: config.pod_namespace.clone(),
            pod_name: config.pod_name.clone(),
            host_network: config.host_network,
            netns,
            ip,
        };
        shim::write_json_atomic(&file, &record).map_err(|e| RuntimeError::Io(e.to_string()))?;
        Ok(record.info())
    }

    async fn do_remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        validate_id(id)?;
        let name = netns_name(id);
        if Path::new(NETNS_DIR).join(&name).exists() {
            run_ip(&["netns", "delete", &name]).await?;
        }
        if let Some(network) = &self.network {
            network.detach(id).map_err(|e| {
                RuntimeError::Other(format!("cannot release the pod's address: {e}"))
            })?;
        }
        match fs::remove_file(self.sandbox_file(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove sandbox", e)),
        }
    }

    async fn do_start_container(
        &self,
        sandbox: &SandboxInfo,
        config: &ContainerConfig,
    ) -> Result<ContainerInfo, RuntimeError> {
        validate_id(&config.id)?;
        if config.args.is_empty() {
            return Err(RuntimeError::StartFailed("no command given".into()));
        }
        let dir = self.container_dir(&config.id);
        if dir.exists() {
            return Err(RuntimeError::AlreadyExists(config.id.clone()));
        }
        let began = Instant::now();
        match self.prepare_bundle(&dir, sandbox, config) {
            Ok(()) => {}
            Err(e) => {
                self.cleanup(&config.id).await;
                return Err(e);
            }
        }
        let prepared = began.elapsed();
        let result = self.spawn_shim_and_wait(&dir, config).await;
        tracing::debug!(id = %config.id, ?prepared, started = ?began.elapsed(), "container start");
        match result {
            Ok(()) => self
                .read_container(&config.id)
                .await
                .ok_or_else(|| RuntimeError::Other(format!("container {} vanished", config.id))),
            Err(e) => {
                self.cleanup(&config.id).await;
                Err(e)
            }
        }
    }

    /// Writes meta.json and config.json and mounts the root file system.
    fn prepare_bundle(
        &self,
        dir: &Path,
        sandbox: &SandboxInfo,
        config: &ContainerConfig,
    ) -> Result<(), RuntimeError> {
        let rootfs = dir.join("rootfs");
        let upper = dir.join("upper");
        let work = dir.join("work");
        for d in [&rootfs, &upper, &work] {
            fs::create_dir_all(d).map_err(|e| io("create bundle", e))?;
        }
        let meta = ContainerMeta {
            id: config.id.clone(),
            sandbox_id: sandbox.id.clone(),
            labels: labels_map(&config.labels),
            log_path: config.log_path.clone(),
            created_at: shim::now_rfc3339(),
        };
        shim::write_json_atomic(&dir.join("meta.json"), &meta)
            .map_err(|e| RuntimeError::Io(e.to_string()))?;
        let mut layers = config.layers.clone();
        if layers.is_empty() {
            let empty = dir.join("empty");
            fs::create_dir_all(&empty).map_err(|e| io("create bundle", e))?;
            layers.push(empty);
        }
        let options = overlay_options(&layers, &upper, &work);
        nix::mount::mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| RuntimeError::StartFailed(format!("cannot mount the image layers: {e}")))?;
        let spec = build_spec(
            config,
            &rootfs,
            sandbox.netns.as_deref(),
            &cgroup_path(&config.id),
        )
        .map_err(|e| RuntimeError::StartFailed(e.to_string()))?;
        spec.save(dir.join("config.json"))
            .map_err(|e| RuntimeError::Io(format!("write config.json: {e}")))?;
        Ok(())
    }

    async fn spawn_shim_and_wait(
        &self,
        dir: &Path,
        config: &ContainerConfig,
    ) -> Result<(), RuntimeError> {
        let args = ShimArgs {
            id: config.id.clone(),
            runc: self.runc.clone(),
            runc_root: self.runc_root(),
            bundle: dir.to_path_buf(),
            log_path: config.log_path.clone(),
            cgroup_path: cgroup_path(&config.id),
            max_log_bytes: self.max_log_bytes,
            max_log_files: self.max_log_files,
            process_mode: false,
            log_json: false,
        };
        let mut child = Command::new(&self.shim.program)
            .args(&self.shim.args)
            .args(args.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                RuntimeError::StartFailed(format!(
                    "cannot start the shim {}: {e}",
                    self.shim.program.display()
                ))
            })?;
        // Woken when the shim has written its start record (it closes its stdout).
        let mut report = shim::StartReport::new(child.stdout.take());
        // Reap the shim when it ends (it outlives the container's start, and maybe us).
        let (exited_tx, mut exited_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = exited_tx.send(status.map(|s| s.to_string()).unwrap_or_default());
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if dir.join(STARTED_FILE).exists() {
                return Ok(());
            }
            if let Ok(message) = fs::read_to_string(dir.join(START_ERROR_FILE)) {
                return Err(RuntimeError::StartFailed(message));
            }
            if let Ok(status) = exited_rx.try_recv() {
                // The shim may have written its report just before exiting.
                if dir.join(STARTED_FILE).exists() {
                    return Ok(());
                }
                if let Ok(message) = fs::read_to_string(dir.join(START_ERROR_FILE)) {
                    return Err(RuntimeError::StartFailed(message));
                }
                let log = fs::read_to_string(dir.join(SHIM_LOG_FILE)).unwrap_or_default();
                return Err(RuntimeError::StartFailed(format!(
                    "the shim exited ({status}) without starting the container: {}",
                    log.trim()
                )));
            }
            if Instant::now() >= deadline {
                let _ = self
                    .runc_cmd()
                    .args(["kill", &config.id, "9"])
                    .output()
                    .await;
                return Err(RuntimeError::Timeout(START_TIMEOUT));
            }
            report.wait(POLL_INTERVAL).await;
        }
    }

    /// Removes everything of a container: runc's state, the mount, the directory.
    async fn cleanup(&self, id: &str) {
        let _ = self
            .runc_cmd()
            .args(["delete", "--force", id])
            .output()
            .await;
        let dir = self.container_dir(id);
        let rootfs = dir.join("rootfs");
        if let Err(e) = nix::mount::umount2(&rootfs, MntFlags::MNT_DETACH) {
            if e != nix::errno::Errno::EINVAL && e != nix::errno::Errno::ENOENT {
                tracing::warn!(container = id, error = %e, "cannot unmount the container's root");
            }
        }
        if let Err(e) = fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(container = id, error = %e, "cannot remove the container's directory");
            }
        }
    }

    /// The container as recorded on disk; `None` if unknown or unreadable.
    async fn read_container(&self, id: &str) -> Option<ContainerInfo> {
        let dir = self.container_dir(id);
        let meta: ContainerMeta = read_json(&dir.join("meta.json"))?;
        let labels = labels_from_map(&meta.labels)?;
        let started: Option<StartedRecord> = read_json(&dir.join(STARTED_FILE));
        let exited: Option<ExitRecord> = read_json(&dir.join(EXIT_FILE));
        let state = match (started, exited) {
            (started, Some(exit)) => ContainerState::Exited {
                exit_code: Some(exit.exit_code),
                signal: exit.signal,
                started_at: started.and_then(|s| parse_time(&s.started_at)),
                finished_at: parse_time(&exit.finished_at).unwrap_or_else(SystemTime::now),
                oom_killed: exit.oom_killed,
            },
            (Some(started), None) => {
                let started_at = parse_time(&started.started_at).unwrap_or(SystemTime::UNIX_EPOCH);
                if shim_alive(started.shim_pid, id) || self.runc_status(id).await == "running" {
                    ContainerState::Running {
                        pid: started.pid,
                        started_at,
                    }
                } else {
                    // Its shim died before recording the exit: the code is lost.
                    ContainerState::Exited {
                        exit_code: None,
                        signal: None,
                        started_at: Some(started_at),
                        finished_at: lost_since(&dir),
                        oom_killed: false,
                    }
                }
            }
            (None, None) => ContainerState::Created,
        };
        Some(ContainerInfo {
            id: meta.id,
            sandbox_id: meta.sandbox_id,
            labels,
            state,
            log_path: meta.log_path,
        })
    }

    /// runc's status of a container ("running", "stopped", ...; "" if runc does not know it).
    async fn runc_status(&self, id: &str) -> String {
        let Ok(out) = self.runc_cmd().args(["state", id]).output().await else {
            return String::new();
        };
        if !out.status.success() {
            return String::new();
        }
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(String::from))
            .unwrap_or_default()
    }

    async fn do_kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        validate_id(id)?;
        let dir = self.container_dir(id);
        if !dir.exists() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        if dir.join(EXIT_FILE).exists() || !dir.join(STARTED_FILE).exists() {
            return Ok(());
        }
        let out = self
            .runc_cmd()
            .args(["kill", id, &signal.to_string()])
            .output()
            .await
            .map_err(|e| io("run runc kill", e))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("not running") || stderr.contains("does not exist") {
            Ok(())
        } else {
            Err(RuntimeError::Other(format!("runc kill: {}", stderr.trim())))
        }
    }

    async fn do_remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        validate_id(id)?;
        let dir = self.container_dir(id);
        if !dir.exists() {
            return Ok(());
        }
        if let Some(started) = read_json::<StartedRecord>(&dir.join(STARTED_FILE)) {
            if !dir.join(EXIT_FILE).exists() {
                let _ = self.do_kill(id, 9).await;
                let deadline = Instant::now() + STOP_TIMEOUT;
                while !dir.join(EXIT_FILE).exists()
                    && shim_alive(started.shim_pid, id)
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        }
        self.cleanup(id).await;
        if dir.exists() {
            return Err(RuntimeError::Io(format!("cannot remove {}", dir.display())));
        }
        Ok(())
    }

    async fn do_list(&self) -> Result<Listing, RuntimeError> {
        let mut sandboxes = Vec::new();
        for name in dir_names(&self.state_dir.join("sandboxes"))? {
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            match read_json::<SandboxRecord>(&self.sandbox_file(id)) {
                Some(record) => sandboxes.push(record.info()),
                None => tracing::warn!(sandbox = id, "skipping an unreadable sandbox record"),
            }
        }
        let mut containers = Vec::new();
        for id in dir_names(&self.state_dir.join("containers"))? {
            match self.read_container(&id).await {
                Some(info) => containers.push(info),
                None => tracing::debug!(container = id, "skipping a container without metadata"),
            }
        }
        Ok((sandboxes, containers))
    }

    async fn do_exec(
        &self,
        id: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        validate_id(id)?;
        if !self.container_dir(id).exists() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        let child = self
            .runc_cmd()
            .arg("exec")
            .arg(id)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io("run runc exec", e))?;
        // On timeout the future is dropped and kill_on_drop kills runc exec.
        let out = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| RuntimeError::Timeout(timeout))?
            .map_err(|e| io("run runc exec", e))?;
        let mut bytes = out.stdout;
        bytes.extend_from_slice(&out.stderr);
        Ok(ExecOutput {
            exit_code: exit_code(&out.status),
            output: truncate_output(&bytes, EXEC_OUTPUT_MAX_BYTES),
        })
    }

    async fn do_usage(&self, id: &str) -> Result<Usage, RuntimeError> {
        validate_id(id)?;
        if !self.container_dir(id).exists() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        let rel = cgroup_path(id);
        let rel = rel.trim_start_matches('/');
        let root = Path::new(CGROUP_ROOT);
        let read = |p: PathBuf| fs::read_to_string(&p).map_err(|e| io("read cgroup", e));
        let malformed = || RuntimeError::Io(format!("the cgroup of {id} has unreadable numbers"));
        if root.join("cgroup.controllers").exists() {
            let dir = root.join(rel);
            super::cgroup::usage_v2(
                &read(dir.join("memory.current"))?,
                &read(dir.join("memory.stat"))?,
                &read(dir.join("cpu.stat"))?,
            )
            .ok_or_else(malformed)
        } else {
            let mem = root.join("memory").join(rel);
            super::cgroup::usage_v1(
                &read(mem.join("memory.usage_in_bytes"))?,
                &read(mem.join("memory.stat"))?,
                &read(root.join("cpuacct").join(rel).join("cpuacct.usage"))?,
            )
            .ok_or_else(malformed)
        }
    }
}

impl Runtime for RuncRuntime {
    fn name(&self) -> &'static str {
        "runc"
    }

    fn network_ready(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.network.as_ref().map(|network| network.ready_signal())
    }

    fn create_sandbox(
        &self,
        config: &SandboxConfig,
    ) -> BoxFuture<'_, Result<SandboxInfo, RuntimeError>> {
        let config = config.clone();
        Box::pin(async move { self.do_create_sandbox(&config).await })
    }

    fn remove_sandbox(&self, id: &str) -> BoxFuture<'_, Result<(), RuntimeError>> {
        let id = id.to_string();
        Box::pin(async move { self.do_remove_sandbox(&id).await })
    }

    fn start_container(
        &self,
        sandbox: &SandboxInfo,
        config: &ContainerConfig,
    ) -> BoxFuture<'_, Result<ContainerInfo, RuntimeError>> {
        let sandbox = sandbox.clone();
        let config = config.clone();
        Box::pin(async move { self.do_start_container(&sandbox, &config).await })
    }

    fn kill(&self, id: &str, signal: i32) -> BoxFuture<'_, Result<(), RuntimeError>> {
        let id = id.to_string();
        Box::pin(async move { self.do_kill(&id, signal).await })
    }

    fn remove_container(&self, id: &str) -> BoxFuture<'_, Result<(), RuntimeError>> {
        let id = id.to_string();
        Box::pin(async move { self.do_remove_container(&id).await })
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, RuntimeError>> {
        Box::pin(self.do_list())
    }

    fn exec(
        &self,
        id: &str,
        args: &[String],
        timeout: Duration,
    ) -> BoxFuture<'_, Result<ExecOutput, RuntimeError>> {
        let id = id.to_string();
        let args = args.to_vec();
        Box::pin(async move { self.do_exec(&id, &args, timeout).await })
    }

    fn usage(&self, id: &str) -> BoxFuture<'_, Result<Usage, RuntimeError>> {
        let id = id.to_string();
        Box::pin(async move { self.do_usage(&id).await })
    }
}

/// The network namespace name of a sandbox.
pub fn netns_name(sandbox_id: &str) -> String {
    format!("keelson-{sandbox_id}")
}

/// The container's cgroup, relative to the cgroup mounts.
pub fn cgroup_path(container_id: &str) -> String {
    format!("/keelson/{container_id}")
}

/// overlayfs mount options; `layers` lowest first (overlayfs wants the highest first).
pub fn overlay_options(layers: &[PathBuf], upper: &Path, work: &Path) -> String {
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    )
}

/// Ids become file names and runc ids: letters, digits, `-`, `_`, `.`, not starting with `.`.
pub(super) fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Other(format!("invalid id {id:?}")))
    }
}

/// stdout then stderr, lossily decoded, at most `max` bytes (cut at a character boundary).
pub fn truncate_output(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// A `key value` line of memory.stat or cpu.stat (0 if absent).
pub fn stat_value(stat: &str, key: &str) -> u64 {
    stat.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

pub(super) fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

pub(super) fn parse_time(s: &str) -> Option<SystemTime> {
    s.parse::<jiff::Timestamp>().ok().map(SystemTime::from)
}

/// Whether the shim with this pid still runs for this container (guards against pid reuse).
pub(super) fn shim_alive(pid: u32, id: &str) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == id.as_bytes()))
        .unwrap_or(false)
}

/// When a container without an exit record was first noticed gone (recorded, so stable).
pub(super) fn lost_since(dir: &Path) -> SystemTime {
    let file = dir.join("lost.json");
    if let Some(t) = read_json::<LostRecord>(&file).and_then(|r| parse_time(&r.noticed_at)) {
        return t;
    }
    let record = LostRecord {
        noticed_at: shim::now_rfc3339(),
    };
    let _ = shim::write_json_atomic(&file, &record);
    parse_time(&record.noticed_at).unwrap_or_else(SystemTime::now)
}

pub(super) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let data = fs::read(path).ok()?;
    serde_json::from_slice(&data).ok()
}

pub(super) fn dir_names(dir: &Path) -> Result<Vec<String>, RuntimeError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("list state dir", e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.ends_with(".tmp"))
        .collect();
    names.sort();
    Ok(names)
}

async fn run_ip(args: &[&str]) -> Result<(), RuntimeError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| io("run ip", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RuntimeError::Other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

pub(super) fn io(what: &str, e: std::io::Error) -> RuntimeError {
    RuntimeError::Io(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_lists_the_highest_layer_first() {
        let layers = vec![PathBuf::from("/l/base"), PathBuf::from("/l/top")];
        assert_eq!(
            overlay_options(&layers, Path::new("/c/upper"), Path::new("/c/work")),
            "lowerdir=/l/top:/l/base,upperdir=/c/upper,workdir=/c/work"
        );
    }

    #[test]
    fn ids_are_validated() {
        for (id, ok) in [
            ("k-abc-web-0", true),
            ("a_b.c", true),
            ("", false),
            (".hidden", false),
            ("a/b", false),
            ("a b", false),
        ] {
            assert_eq!(validate_id(id).is_ok(), ok, "{id}");
        }
    }

    #[test]
    fn output_is_truncated_at_a_char_boundary() {
        assert_eq!(truncate_output(b"hello", 10), "hello");
        assert_eq!(truncate_output(b"hello", 3), "hel");
        assert_eq!(truncate_output("aé".as_bytes(), 2), "a");
    }

    #[test]
    fn stat_values_are_read() {
        let stat = "cache 10\ntotal_inactive_file 4096\nusage_usec 77\n";
        assert_eq!(stat_value(stat, "total_inactive_file"), 4096);
        assert_eq!(stat_value(stat, "usage_usec"), 77);
        assert_eq!(stat_value(stat, "missing"), 0);
    }
}
