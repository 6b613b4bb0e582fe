//! The container shim (conmon's and containerd-shim's job): one small blocking process per
//! container, started detached by the runtime as `keelson shim ...`. It creates and starts
//! the container with runc, becomes the parent of the container's init (child subreaper),
//! copies the container's stdout and stderr into the CRI log file (rotating it), and records
//! `started.json` and `exit.json` in the container's directory, so the container, its logs
//! and its exit code outlive the node process that started it.
//!
//! The protocol with the runtime is files in the container directory: `started.json` once
//! the container runs, `start-error` (runc's message) when it could not be started,
//! `exit.json` once it exited and its output was drained. Each is written atomically. The
//! shim's stdout is a pipe to the runtime that started it: the shim closes it once its start
//! record is written, so the runtime wakes at once instead of at its next look at the files.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// A record longer than this is split into `P` (partial) records, as the kubelet does.
pub const MAX_LOG_LINE_BYTES: usize = 16 * 1024;
/// How long the shim waits for the container's output to reach EOF after its init exited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

pub const DEFAULT_MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_MAX_LOG_FILES: u32 = 5;

/// File names inside a container's directory.
pub const STARTED_FILE: &str = "started.json";
pub const EXIT_FILE: &str = "exit.json";
pub const START_ERROR_FILE: &str = "start-error";
pub const PID_FILE: &str = "pid";
pub const RUNC_LOG_FILE: &str = "runc.log";
pub const SHIM_LOG_FILE: &str = "shim.log";

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("bad shim arguments: {0}")]
    Args(String),
    #[error("{0}")]
    Io(String),
}

/// What the shim is told on its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShimArgs {
    pub id: String,
    /// The runc binary (`runc` from PATH by default).
    pub runc: PathBuf,
    /// runc's `--root`.
    pub runc_root: PathBuf,
    /// The OCI bundle; also where the shim writes its files.
    pub bundle: PathBuf,
    pub log_path: PathBuf,
    /// The container's cgroup path relative to the cgroup mounts (`/keelson/<id>`), read for
    /// OOM kills after the container exits.
    pub cgroup_path: String,
    pub max_log_bytes: u64,
    /// How many log files to keep, the current one included (at least 1).
    pub max_log_files: u32,
    /// Run `process.json` as a supervised host process instead of a runc container.
    pub process_mode: bool,
    /// Write `shim.log` (and argument errors) as JSON lines (`--log-format json`, which the
    /// node's [`super::ShimCommand`] passes when the node itself logs JSON).
    pub log_json: bool,
}

/// `process.json`: the command of a process-runtime container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Applied as RLIMIT_AS (through `prlimit`).
    pub memory_limit_bytes: Option<u64>,
}

pub const PROCESS_FILE: &str = "process.json";

impl ShimArgs {
    /// The arguments after `shim`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--id".into(),
            self.id.clone(),
            "--runc".into(),
            self.runc.display().to_string(),
            "--runc-root".into(),
            self.runc_root.display().to_string(),
            "--bundle".into(),
            self.bundle.display().to_string(),
            "--log".into(),
            self.log_path.display().to_string(),
            "--cgroup".into(),
            self.cgroup_path.clone(),
            "--max-log-bytes".into(),
            self.max_log_bytes.to_string(),
            "--max-log-files".into(),
            self.max_log_files.to_string(),
            "--mode".into(),
            if self.process_mode { "process" } else { "runc" }.into(),
        ];
        // Only when set: a `--log-format json` the shim command carries must not be undone.
        if self.log_json {
            args.extend(["--log-format".into(), "json".into()]);
        }
        args
    }

    /// The inverse of [`ShimArgs::to_args`].
    pub fn parse(args: &[String]) -> Result<ShimArgs, ShimError> {
        let mut parsed = ShimArgs {
            id: String::new(),
            runc: PathBuf::from("runc"),
            runc_root: PathBuf::new(),
            bundle: PathBuf::new(),
            log_path: PathBuf::new(),
            cgroup_path: String::new(),
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            max_log_files: DEFAULT_MAX_LOG_FILES,
            process_mode: false,
            log_json: false,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it
                .next()
                .ok_or_else(|| ShimError::Args(format!("{flag} needs a value")))?;
            match flag.as_str() {
                "--id" => parsed.id = value.clone(),
                "--runc" => parsed.runc = value.into(),
                "--runc-root" => parsed.runc_root = value.into(),
                "--bundle" => parsed.bundle = value.into(),
                "--log" => parsed.log_path = value.into(),
                "--cgroup" => parsed.cgroup_path = value.clone(),
                "--max-log-bytes" => {
                    parsed.max_log_bytes = value
                        .parse()
                        .map_err(|_| ShimError::Args(format!("bad --max-log-bytes {value}")))?
                }
                "--max-log-files" => {
                    parsed.max_log_files = value
                        .parse()
                        .map_err(|_| ShimError::Args(format!("bad --max-log-files {value}")))?
                }
                // Given twice when the shim command carries it too: the last one wins.
                "--log-format" => {
                    parsed.log_json = match value.as_str() {
                        "text" => false,
                        "json" => true,
                        _ => return Err(ShimError::Args(format!("bad --log-format {value}"))),
                    }
                }
                "--mode" => {
                    parsed.process_mode = match value.as_str() {
                        "runc" => false,
                        "process" => true,
                        _ => return Err(ShimError::Args(format!("bad --mode {value}"))),
                    }
                }
                other => return Err(ShimError::Args(format!("unknown flag {other}"))),
            }
        }
        if parsed.id.is_empty()
            || parsed.runc_root.as_os_str().is_empty()
            || parsed.bundle.as_os_str().is_empty()
            || parsed.log_path.as_os_str().is_empty()
        {
            return Err(ShimError::Args(
                "--id, --runc-root, --bundle and --log are required".into(),
            ));
        }
        Ok(parsed)
    }
}

/// `started.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedRecord {
    /// The container's init pid (host pid namespace).
    pub pid: u32,
    /// The shim's pid: while it lives, `exit.json` is still to come.
    pub shim_pid: u32,
    /// RFC 3339.
    pub started_at: String,
}

/// `exit.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit status, or 128 + the signal when a signal ended it (as shells report it).
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// RFC 3339.
    pub finished_at: String,
    pub oom_killed: bool,
}

/// The entry point of `keelson shim`: parses the arguments after `shim` and runs the shim.
pub fn run_from_args(args: &[String]) -> i32 {
    match ShimArgs::parse(args) {
        Ok(args) => shim_main(args),
        Err(e) => {
            let json = args
                .windows(2)
                .any(|w| w[0] == "--log-format" && w[1] == "json");
            eprintln!("{}", log_line(json, "ERROR", &format!("keelson shim: {e}")));
            2
        }
    }
}

/// Runs the shim to the container's end; returns the shim's exit status (0 when the
/// container ran, whatever its own exit code; 1 when it could not be started).
pub fn shim_main(args: ShimArgs) -> i32 {
    // Detach from the node's session and process group: the node's terminal signals and
    // its death do not reach us. Fails only if we already lead a group (then we are detached).
    let _ = nix::unistd::setsid();
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        shim_log(
            args_log(&args),
            &format!("cannot become child subreaper: {e}"),
        );
    }
    let result = if args.process_mode {
        run_process(&args)
    } else {
        run(&args)
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            shim_log(args_log(&args), &e.to_string());
            1
        }
    }
}

fn run(args: &ShimArgs) -> Result<(), ShimError> {
    let dir = &args.bundle;
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let runc_log = dir.join(RUNC_LOG_FILE);
    let pid_file = dir.join(PID_FILE);

    // runc run, detached: runc hands its stdout and stderr (our pipes) to the container and
    // returns once the container's process runs (one runc process rather than create and
    // start: ~4 ms less per container). Its own messages go to the --log file, which is
    // read back if it fails.
    let status = Command::new(&args.runc)
        .arg("--root")
        .arg(&args.runc_root)
        .arg("--log")
        .arg(&runc_log)
        .arg("--log-format")
        .arg("json")
        .arg("run")
        .arg("--detach")
        .arg("--bundle")
        .arg(dir)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&args.id)
        .stdin(Stdio::null())
        .stdout(Stdio::from(clone_fd(&out_write)?))
        .stderr(Stdio::from(clone_fd(&err_write)?))
        .status();
    // Only the container holds the write ends now: EOF once it and its children are gone.
    drop(out_write);
    drop(err_write);
    let started = match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(runc_failure(&runc_log, &format!("runc run: {status}"))),
        Err(e) => Err(format!("cannot run {}: {e}", args.runc.display())),
    };
    if let Err(message) = started {
        return fail_start(args, &message);
    }
    let pid = match fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    {
        Some(pid) => pid,
        None => return fail_start(args, "runc run wrote no pid file"),
    };
    write_json_atomic(
        &dir.join(STARTED_FILE),
        &StartedRecord {
            pid,
            shim_pid: std::process::id(),
            started_at: now_rfc3339(),
        },
    )?;
    close_start_report();

    // Copy both streams into the log; each copier reports on `done` when its pipe closes.
    let writer = Arc::new(Mutex::new(LogWriter::open(
        &args.log_path,
        args.max_log_bytes,
        args.max_log_files,
    )?));
    let (done_tx, done_rx) = mpsc::channel();
    for (fd, stream) in [(out_read, Stream::Stdout), (err_read, Stream::Stderr)] {
        let writer = Arc::clone(&writer);
        let done = done_tx.clone();
        std::thread::spawn(move || {
            copy_stream(File::from(fd), stream, &writer);
            let _ = done.send(());
        });
    }
    drop(done_tx);

    let status = wait_for(pid);
    let oom_killed = oom_killed(&args.cgroup_path);
    // Drain what the container wrote before it died (bounded: a leaked descriptor in some
    // other process must not keep the exit from being recorded).
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    if let Ok(mut w) = writer.lock() {
        w.flush();
    }
    let (exit_code, signal) = status;
    write_json_atomic(
        &dir.join(EXIT_FILE),
        &ExitRecord {
            exit_code,
            signal,
            finished_at: now_rfc3339(),
            oom_killed,
        },
    )?;
    Ok(())
}

/// Process mode: runs `process.json` in its own process group; when its main process exits,
/// whatever it left in the group is killed (as a pid namespace would).
fn run_process(args: &ShimArgs) -> Result<(), ShimError> {
    let dir = &args.bundle;
    let spec: ProcessSpec = match fs::read(dir.join(PROCESS_FILE))
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
    {
        Some(spec) => spec,
        None => return fail_process_start(args, "unreadable process.json"),
    };
    let Some((program, rest)) = spec.args.split_first() else {
        return fail_process_start(args, "no command given");
    };
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let mut cmd = match spec.memory_limit_bytes {
        Some(limit) => {
            let mut cmd = Command::new("prlimit");
            cmd.arg(format!("--as={limit}")).arg("--").arg(program);
            cmd
        }
        None => Command::new(program),
    };
    use std::os::unix::process::CommandExt;
    cmd.args(rest)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_write))
        .stderr(Stdio::from(err_write));
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return fail_process_start(args, &format!("cannot run {program}: {e}")),
    };
    // The pipes' write ends went to the child with `cmd`; drop it so EOF comes at its end.
    drop(cmd);
    let pid = child.id();
    write_json_atomic(
        &dir.join(STARTED_FILE),
        &StartedRecord {
            pid,
            shim_pid: std::process::id(),
            started_at: now_rfc3339(),
        },
    )?;
    close_start_report();
    let writer = Arc::new(Mutex::new(LogWriter::open(
        &args.log_path,
        args.max_log_bytes,
        args.max_log_files,
    )?));
    let (done_tx, done_rx) = mpsc::channel();
    for (fd, stream) in [(out_read, Stream::Stdout), (err_read, Stream::Stderr)] {
        let writer = Arc::clone(&writer);
        let done = done_tx.clone();
        std::thread::spawn(move || {
            copy_stream(File::from(fd), stream, &writer);
            let _ = done.send(());
        });
    }
    drop(done_tx);
    let (exit_code, signal) = wait_for(pid);
    let _ = nix::sys::signal::killpg(Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    if let Ok(mut w) = writer.lock() {
        w.flush();
    }
    write_json_atomic(
        &dir.join(EXIT_FILE),
        &ExitRecord {
            exit_code,
            signal,
            finished_at: now_rfc3339(),
            oom_killed: false,
        },
    )
}

fn fail_process_start(args: &ShimArgs, message: &str) -> Result<(), ShimError> {
    write_atomic(&args.bundle.join(START_ERROR_FILE), message.as_bytes())?;
    Err(ShimError::Io(format!("start failed: {message}")))
}

/// Closes the shim's stdout, the runtime's pipe (see the module's doc): the start record is
/// written. The shim writes nothing there; /dev/null takes the descriptor's place.
fn close_start_report() {
    let closed = File::open("/dev/null")
        .map_err(|e| e.to_string())
        .and_then(|null| nix::unistd::dup2_stdout(&null).map_err(|e| e.to_string()));
    if let Err(e) = closed {
        // The runtime then sees the record at its next look at the files.
        eprintln!("keelson shim: cannot close the start report pipe: {e}");
    }
}

/// The runtime's end of a shim's start report pipe (the shim's stdout).
pub struct StartReport(Option<tokio::process::ChildStdout>);

impl StartReport {
    pub fn new(pipe: Option<tokio::process::ChildStdout>) -> StartReport {
        StartReport(pipe)
    }

    /// Returns after `interval`, or as soon as the shim closes the pipe (its start record is
    /// written, or it exited).
    pub async fn wait(&mut self, interval: Duration) {
        use tokio::io::AsyncReadExt;
        let Some(pipe) = self.0.as_mut() else {
            tokio::time::sleep(interval).await;
            return;
        };
        let mut buf = [0u8; 64];
        tokio::select! {
            read = pipe.read(&mut buf) => {
                if matches!(read, Ok(0) | Err(_)) {
                    self.0 = None;
                }
            }
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Records why the container could not start and removes what runc made of it.
fn fail_start(args: &ShimArgs, message: &str) -> Result<(), ShimError> {
    let _ = Command::new(&args.runc)
        .arg("--root")
        .arg(&args.runc_root)
        .args(["delete", "--force"])
        .arg(&args.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    write_atomic(&args.bundle.join(START_ERROR_FILE), message.as_bytes())?;
    Err(ShimError::Io(format!("start failed: {message}")))
}

/// runc's error messages from its JSON log, or `fallback` when it logged none.
fn runc_failure(log: &Path, fallback: &str) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let message = runc_errors(&text);
    if message.is_empty() {
        fallback.to_string()
    } else {
        message
    }
}

/// The `msg` of every error-level record of a runc JSON log, joined by "; ".
pub fn runc_errors(log: &str) -> String {
    let mut messages: Vec<String> = Vec::new();
    for line in log.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let level = value.get("level").and_then(|l| l.as_str()).unwrap_or("");
        if level != "error" && level != "fatal" {
            continue;
        }
        if let Some(msg) = value.get("msg").and_then(|m| m.as_str()) {
            if !messages.iter().any(|m| m == msg) {
                messages.push(msg.to_string());
            }
        }
    }
    messages.join("; ")
}

/// Waits for the container's init, reaping every other orphan handed to us meanwhile.
/// Returns (exit code, signal).
fn wait_for(pid: u32) -> (i32, Option<i32>) {
    let target = Pid::from_raw(pid as i32);
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == target => return (code, None),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == target => {
                let sig = sig as i32;
                return (128 + sig, Some(sig));
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            // No children left: the init was not ours to wait for (should not happen with
            // the subreaper set); its status is unknown.
            Err(_) => return (-1, None),
        }
    }
}

/// Whether the kernel's OOM killer acted in the container's memory cgroup.
fn oom_killed(cgroup_path: &str) -> bool {
    if cgroup_path.is_empty() {
        return false;
    }
    let rel = cgroup_path.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let file = if root.join("cgroup.controllers").exists() {
        root.join(rel).join("memory.events")
    } else {
        root.join("memory").join(rel).join("memory.oom_control")
    };
    let content = fs::read_to_string(file);
    content.map(|c| oom_kill_count(&c) > 0).unwrap_or(false)
}

/// The `oom_kill N` counter of `memory.oom_control` (v1) or `memory.events` (v2).
pub fn oom_kill_count(content: &str) -> u64 {
    content
        .lines()
        .filter_map(|l| l.strip_prefix("oom_kill "))
        .filter_map(|n| n.trim().parse().ok())
        .next()
        .unwrap_or(0)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), ShimError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| ShimError::Io(format!("pipe: {e}")))
}

fn clone_fd(fd: &OwnedFd) -> Result<OwnedFd, ShimError> {
    fd.try_clone()
        .map_err(|e| ShimError::Io(format!("dup: {e}")))
}

/// Where and how the shim logs: its bundle directory, JSON or text.
fn args_log(args: &ShimArgs) -> (&Path, bool) {
    (&args.bundle, args.log_json)
}

/// Appends an error line to `shim.log`.
fn shim_log((dir, json): (&Path, bool), message: &str) {
    if let Ok(mut f) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(SHIM_LOG_FILE))
    {
        let _ = writeln!(f, "{}", log_line(json, "ERROR", message));
    }
}

/// One log line: `<time> <message>`, or a JSON object with `timestamp`, `level`, `message`
/// and `target` as the node's own JSON log has them.
pub fn log_line(json: bool, level: &str, message: &str) -> String {
    let now = now_rfc3339();
    if json {
        serde_json::json!({
            "timestamp": now,
            "level": level,
            "message": message,
            "target": "keelson_shim",
        })
        .to_string()
    } else {
        format!("{now} {message}")
    }
}

/// Now, RFC 3339 with nanoseconds (UTC).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// Writes `path` through a temporary file and a rename, so readers never see half of it.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ShimError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| ShimError::Io(format!("write {}: {e}", path.display())))
}

pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), ShimError> {
    let data = serde_json::to_vec(value).map_err(|e| ShimError::Io(e.to_string()))?;
    write_atomic(path, &data)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Formats one CRI log record: `<time> <stream> <F|P> <text>\n`.
pub fn cri_record(time: &str, stream: Stream, partial: bool, text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(time.len() + text.len() + 12);
    out.extend_from_slice(time.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(text);
    out.push(b'\n');
    out
}

/// Splits a stream into CRI records: a pure state machine fed with chunks as they arrive.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds a chunk; returns the finished records as (partial, text), without newlines.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<(bool, Vec<u8>)> {
        let mut records = Vec::new();
        for &b in chunk {
            if b == b'\n' {
                records.push((false, std::mem::take(&mut self.pending)));
            } else {
                self.pending.push(b);
                if self.pending.len() >= MAX_LOG_LINE_BYTES {
                    records.push((true, std::mem::take(&mut self.pending)));
                }
            }
        }
        records
    }

    /// At end of stream: an unterminated last line becomes a full record.
    pub fn finish(&mut self) -> Option<(bool, Vec<u8>)> {
        if self.pending.is_empty() {
            None
        } else {
            Some((false, std::mem::take(&mut self.pending)))
        }
    }
}

/// Whether writing `record_len` more bytes to a file of `current_len` must rotate it first.
/// A record alone larger than the limit goes into an empty file rather than rotating forever.
pub fn should_rotate(current_len: u64, record_len: u64, max_bytes: u64) -> bool {
    current_len > 0 && current_len + record_len > max_bytes
}

/// The renames that rotate `log` keeping `max_files` files (the current one included), in
/// the order to perform them: `log.(n-2)` → `log.(n-1)`, ..., `log` → `log.1`. With one file
/// to keep, the log is removed instead (an empty list: the caller truncates).
pub fn rotation_renames(log: &Path, max_files: u32) -> Vec<(PathBuf, PathBuf)> {
    let numbered = |i: u32| PathBuf::from(format!("{}.{i}", log.display()));
    let mut renames = Vec::new();
    if max_files < 2 {
        return renames;
    }
    for i in (1..max_files - 1).rev() {
        renames.push((numbered(i), numbered(i + 1)));
    }
    renames.push((log.to_path_buf(), numbered(1)));
    renames
}

/// The CRI log file, rotated by size.
struct LogWriter {
    path: PathBuf,
    file: File,
    len: u64,
    max_bytes: u64,
    max_files: u32,
}

impl LogWriter {
    fn open(path: &Path, max_bytes: u64, max_files: u32) -> Result<LogWriter, ShimError> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| ShimError::Io(format!("create {}: {e}", parent.display())))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| ShimError::Io(format!("open {}: {e}", path.display())))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            len,
            max_bytes,
            max_files,
        })
    }

    fn write_record(&mut self, record: &[u8]) {
        if should_rotate(self.len, record.len() as u64, self.max_bytes) {
            self.rotate();
        }
        if self.file.write_all(record).is_ok() {
            self.len += record.len() as u64;
        }
    }

    fn rotate(&mut self) {
        let renames = rotation_renames(&self.path, self.max_files);
        for (from, to) in &renames {
            let _ = fs::rename(from, to);
        }
        let reopened = if renames.is_empty() {
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)
        } else {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
        };
        if let Ok(file) = reopened {
            self.file = file;
            self.len = 0;
        }
    }

    fn flush(&mut self) {
        let _ = self.file.flush();
    }
}

fn copy_stream(mut pipe: File, stream: Stream, writer: &Mutex<LogWriter>) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let records = splitter.push(&buf[..n]);
        write_records(writer, stream, records);
    }
    write_records(writer, stream, splitter.finish().into_iter().collect());
}

fn write_records(writer: &Mutex<LogWriter>, stream: Stream, records: Vec<(bool, Vec<u8>)>) {
    if records.is_empty() {
        return;
    }
    let time = now_rfc3339();
    if let Ok(mut w) = writer.lock() {
        for (partial, text) in records {
            w.write_record(&cri_record(&time, stream, partial, &text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_records_are_formatted() {
        let t = "2026-01-02T03:04:05.123456789Z";
        let cases: [(Stream, bool, &str, &str); 3] = [
            (
                Stream::Stdout,
                false,
                "hello",
                "2026-01-02T03:04:05.123456789Z stdout F hello\n",
            ),
            (
                Stream::Stderr,
                false,
                "",
                "2026-01-02T03:04:05.123456789Z stderr F \n",
            ),
            (
                Stream::Stderr,
                true,
                "a b",
                "2026-01-02T03:04:05.123456789Z stderr P a b\n",
            ),
        ];
        for (stream, partial, text, want) in cases {
            let got = cri_record(t, stream, partial, text.as_bytes());
            assert_eq!(String::from_utf8_lossy(&got), want);
        }
    }

    #[test]
    fn lines_are_split_across_chunks_and_long_lines_become_partials() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"ab"), vec![]);
        assert_eq!(
            s.push(b"c\nd\n\ne"),
            vec![
                (false, b"abc".to_vec()),
                (false, b"d".to_vec()),
                (false, b"".to_vec())
            ]
        );
        assert_eq!(s.finish(), Some((false, b"e".to_vec())));
        assert_eq!(s.finish(), None);

        let long = vec![b'x'; MAX_LOG_LINE_BYTES * 2 + 5];
        let mut input = long.clone();
        input.push(b'\n');
        let records = s.push(&input);
        assert_eq!(records.len(), 3);
        assert!(records[0].0 && records[1].0 && !records[2].0);
        assert_eq!(records[0].1.len(), MAX_LOG_LINE_BYTES);
        assert_eq!(records[2].1.len(), 5);
    }

    #[test]
    fn rotation_decision() {
        // (current, record, max, rotate)
        let cases = [
            (0, 10, 5, false),
            (0, 3, 5, false),
            (2, 3, 5, false),
            (3, 3, 5, true),
            (100, 1, 100, true),
        ];
        for (current, record, max, want) in cases {
            assert_eq!(
                should_rotate(current, record, max),
                want,
                "{current} {record} {max}"
            );
        }
    }

    #[test]
    fn rotation_renames_shift_older_files() {
        let log = Path::new("/l/c.log");
        assert!(rotation_renames(log, 1).is_empty());
        assert_eq!(
            rotation_renames(log, 2),
            vec![(PathBuf::from("/l/c.log"), PathBuf::from("/l/c.log.1"))]
        );
        assert_eq!(
            rotation_renames(log, 3),
            vec![
                (PathBuf::from("/l/c.log.1"), PathBuf::from("/l/c.log.2")),
                (PathBuf::from("/l/c.log"), PathBuf::from("/l/c.log.1")),
            ]
        );
    }

    #[test]
    fn shim_args_round_trip() {
        let args = ShimArgs {
            id: "k-1".into(),
            runc: "/usr/sbin/runc".into(),
            runc_root: "/s/runc".into(),
            bundle: "/s/containers/k-1".into(),
            log_path: "/logs/c.log".into(),
            cgroup_path: "/keelson/k-1".into(),
            max_log_bytes: 123,
            max_log_files: 4,
            process_mode: true,
            log_json: true,
        };
        assert_eq!(ShimArgs::parse(&args.to_args()).ok(), Some(args.clone()));
        assert!(ShimArgs::parse(&["--id".into()]).is_err());
        assert!(ShimArgs::parse(&["--bogus".into(), "x".into()]).is_err());
        // The node's shim command puts `--log-format json` before the runtime's arguments.
        let text = ShimArgs {
            log_json: false,
            ..args.clone()
        };
        assert_eq!(ShimArgs::parse(&text.to_args()).ok(), Some(text.clone()));
        let mut prefixed: Vec<String> = vec!["--log-format".into(), "json".into()];
        prefixed.extend(text.to_args());
        assert_eq!(ShimArgs::parse(&prefixed).ok(), Some(args));
    }

    #[test]
    fn log_lines_are_text_or_json() {
        let line = log_line(true, "ERROR", "start failed: \"x\"");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["level"], "ERROR");
        assert_eq!(value["message"], "start failed: \"x\"");
        assert!(value["timestamp"].is_string());
        let text = log_line(false, "ERROR", "boom");
        assert!(text.ends_with(" boom") && !text.starts_with('{'), "{text}");
    }

    #[test]
    fn runc_errors_and_oom_counters_are_parsed() {
        let log = r#"{"level":"info","msg":"x","time":"t"}
{"level":"error","msg":"runc create failed: exec: \"/nonexistent\": stat /nonexistent: no such file or directory","time":"t"}
not json"#;
        assert_eq!(
            runc_errors(log),
            "runc create failed: exec: \"/nonexistent\": stat /nonexistent: no such file or directory"
        );
        assert_eq!(runc_errors(""), "");
        assert_eq!(
            oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(
            oom_kill_count("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
            1
        );
        assert_eq!(oom_kill_count("oom_kill_disable 0\n"), 0);
    }
}
