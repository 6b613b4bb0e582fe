//! The `process` runtime, for nodes without runc or root: a container is its command run as
//! a supervised host process (own process group, RLIMIT_AS for the memory limit) under the
//! same shim as runc containers, so logs, exit records and adoption after a node restart work
//! alike. No isolation: no root file system (image layers are ignored), no namespaces, no
//! cgroup; sandboxes are records only and every pod shares the host network.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Command;

use super::oci::environment;
use super::runc::{
    dir_names, exit_code, io, lost_since, parse_time, read_json, shim_alive, truncate_output,
    validate_id, ContainerMeta, SandboxRecord, ShimCommand, EXEC_OUTPUT_MAX_BYTES,
};
use super::shim::{
    self, ExitRecord, ProcessSpec, ShimArgs, StartedRecord, EXIT_FILE, PROCESS_FILE, SHIM_LOG_FILE,
    STARTED_FILE, START_ERROR_FILE,
};
use super::{
    labels_from_map, labels_map, ContainerConfig, ContainerInfo, ContainerState, ExecOutput,
    Listing, Runtime, RuntimeError, SandboxConfig, SandboxInfo, Usage,
};

const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The process runtime; all its state is on disk under the state directory (same layout as
/// the runc runtime's, without bundles).
pub struct ProcessRuntime {
    state_dir: PathBuf,
    shim: ShimCommand,
    max_log_bytes: u64,
    max_log_files: u32,
}

impl ProcessRuntime {
    pub fn new(state_dir: impl Into<PathBuf>, shim: ShimCommand) -> Result<Self, RuntimeError> {
        let state_dir = state_dir.into();
        for sub in ["sandboxes", "containers"] {
            fs::create_dir_all(state_dir.join(sub)).map_err(|e| io("create state dir", e))?;
        }
        Ok(ProcessRuntime {
            state_dir,
            shim,
            max_log_bytes: shim::DEFAULT_MAX_LOG_BYTES,
            max_log_files: shim::DEFAULT_MAX_LOG_FILES,
        })
    }

    /// Log rotation: rotate past `max_bytes`, keep `max_files` files (current included).
    pub fn with_log_limits(mut self, max_bytes: u64, max_files: u32) -> Self {
        self.max_log_bytes = max_bytes;
        self.max_log_files = max_files.max(1);
        self
    }

    fn sandbox_file(&self, id: &str) -> PathBuf {
        self.state_dir.join("sandboxes").join(format!("{id}.json"))
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("containers").join(id)
    }

    async fn do_create_sandbox(&self, config: &SandboxConfig) -> Result<SandboxInfo, RuntimeError> {
        validate_id(&config.id)?;
        let file = self.sandbox_file(&config.id);
        if let Some(record) = read_json::<SandboxRecord>(&file) {
            return Ok(record.info());
        }
        let record = SandboxRecord {
            id: config.id.clone(),
            pod_uid: config.pod_uid.clone(),
            pod_namespace: config.pod_namespace.clone(),
            pod_name: config.pod_name.clone(),
            host_network: true,
            netns: None,
            ip: None,
        };
        shim::write_json_atomic(&file, &record).map_err(|e| RuntimeError::Io(e.to_string()))?;
        Ok(record.info())
    }

    async fn do_remove_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        validate_id(id)?;
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
        let result = match self.prepare(&dir, sandbox, config) {
            Ok(()) => self.spawn_shim_and_wait(&dir, config).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        read_container(&dir, &config.id)
            .ok_or_else(|| RuntimeError::Other(format!("container {} vanished", config.id)))
    }

    fn prepare(
        &self,
        dir: &Path,
        sandbox: &SandboxInfo,
        config: &ContainerConfig,
    ) -> Result<(), RuntimeError> {
        fs::create_dir_all(dir).map_err(|e| io("create container dir", e))?;
        let meta = ContainerMeta {
            id: config.id.clone(),
            sandbox_id: sandbox.id.clone(),
            labels: labels_map(&config.labels),
            log_path: config.log_path.clone(),
            created_at: shim::now_rfc3339(),
        };
        shim::write_json_atomic(&dir.join("meta.json"), &meta)
            .map_err(|e| RuntimeError::Io(e.to_string()))?;
        let env = environment(&config.env)
            .into_iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let spec = ProcessSpec {
            args: config.args.clone(),
            env,
            cwd: PathBuf::from(if config.working_dir.is_empty() {
                "/"
            } else {
                config.working_dir.as_str()
            }),
            memory_limit_bytes: config.memory_limit_bytes,
        };
        shim::write_json_atomic(&dir.join(PROCESS_FILE), &spec)
            .map_err(|e| RuntimeError::Io(e.to_string()))
    }

    async fn spawn_shim_and_wait(
        &self,
        dir: &Path,
        config: &ContainerConfig,
    ) -> Result<(), RuntimeError> {
        let args = ShimArgs {
            id: config.id.clone(),
            runc: PathBuf::from("runc"),
            runc_root: self.state_dir.clone(),
            bundle: dir.to_path_buf(),
            log_path: config.log_path.clone(),
            cgroup_path: String::new(),
            max_log_bytes: self.max_log_bytes,
            max_log_files: self.max_log_files,
            process_mode: true,
            log_json: false,
        };
        let mut child = Command::new(&self.shim.program)
            .args(&self.shim.args)
            .args(args.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| RuntimeError::StartFailed(format!("cannot start the shim: {e}")))?;
        let mut report = shim::StartReport::new(child.stdout.take());
        let (exited_tx, mut exited_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = exited_tx.send(status.map(|s| s.to_string()).unwrap_or_default());
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = exited_rx.try_recv().ok();
            if dir.join(STARTED_FILE).exists() {
                return Ok(());
            }
            if let Ok(message) = fs::read_to_string(dir.join(START_ERROR_FILE)) {
                return Err(RuntimeError::StartFailed(message));
            }
            if let Some(status) = exited {
                let log = fs::read_to_string(dir.join(SHIM_LOG_FILE)).unwrap_or_default();
                return Err(RuntimeError::StartFailed(format!(
                    "the shim exited ({status}) without starting the process: {}",
                    log.trim()
                )));
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Timeout(START_TIMEOUT));
            }
            report.wait(POLL_INTERVAL).await;
        }
    }

    async fn do_kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        validate_id(id)?;
        let dir = self.container_dir(id);
        if !dir.exists() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        if dir.join(EXIT_FILE).exists() {
            return Ok(());
        }
        let Some(started) = read_json::<StartedRecord>(&dir.join(STARTED_FILE)) else {
            return Ok(());
        };
        let signal = Signal::try_from(signal)
            .map_err(|_| RuntimeError::Other(format!("bad signal {signal}")))?;
        match killpg(Pid::from_raw(started.pid as i32), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(RuntimeError::Other(format!("kill: {e}"))),
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
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove container", e)),
        }
    }

    async fn do_list(&self) -> Result<Listing, RuntimeError> {
        let mut sandboxes = Vec::new();
        for name in dir_names(&self.state_dir.join("sandboxes"))? {
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if let Some(record) = read_json::<SandboxRecord>(&self.sandbox_file(id)) {
                sandboxes.push(record.info());
            }
        }
        let mut containers = Vec::new();
        for id in dir_names(&self.state_dir.join("containers"))? {
            if let Some(info) = read_container(&self.container_dir(&id), &id) {
                containers.push(info);
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
        let dir = self.container_dir(id);
        let spec: ProcessSpec = read_json(&dir.join(PROCESS_FILE))
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let Some((program, rest)) = args.split_first() else {
            return Err(RuntimeError::Other("no command given".into()));
        };
        let child = Command::new(program)
            .args(rest)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| io("exec", e))?;
        let out = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| RuntimeError::Timeout(timeout))?
            .map_err(|e| io("exec", e))?;
        let mut bytes = out.stdout;
        bytes.extend_from_slice(&out.stderr);
        Ok(ExecOutput {
            exit_code: exit_code(&out.status),
            output: truncate_output(&bytes, EXEC_OUTPUT_MAX_BYTES),
        })
    }

    /// The main process only (its children are not counted): resident memory and CPU time.
    async fn do_usage(&self, id: &str) -> Result<Usage, RuntimeError> {
        validate_id(id)?;
        let dir = self.container_dir(id);
        let started: StartedRecord = read_json(&dir.join(STARTED_FILE))
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let statm = fs::read_to_string(format!("/proc/{}/statm", started.pid))
            .map_err(|e| io("read statm", e))?;
        let stat = fs::read_to_string(format!("/proc/{}/stat", started.pid))
            .map_err(|e| io("read stat", e))?;
        let page = 4096u64;
        let resident: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Fields after the command name (which may hold spaces): utime is the 14th field.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15, i.e. 11 and 12 after the state field.
        let cpu_ticks = ticks(11) + ticks(12);
        Ok(Usage {
            // USER_HZ is 100 on Linux.
            cpu_usage_nanos: cpu_ticks.saturating_mul(10_000_000),
            memory_bytes: resident.saturating_mul(page),
        })
    }
}

/// A container's state from its directory (no runc: a dead shim means a lost exit).
fn read_container(dir: &Path, id: &str) -> Option<ContainerInfo> {
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
            if shim_alive(started.shim_pid, id) {
                ContainerState::Running {
                    pid: started.pid,
                    started_at,
                }
            } else {
                ContainerState::Exited {
                    exit_code: None,
                    signal: None,
                    started_at: Some(started_at),
                    finished_at: lost_since(dir),
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

impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    /// Processes share the host's network: sandboxes never wait for one.
    fn network_ready(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
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
