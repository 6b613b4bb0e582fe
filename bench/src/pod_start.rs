//! The pod start benchmark (`store-bench --pod-start`): how long a pod takes from its create
//! to `Running` seen through a watch, on one real node (`keelson node --runtime runc`) joined
//! to three masters, pod after pod; side by side with the same container started by raw
//! `runc run --detach` of one bundle and, where Debian's containerd runs, by `ctr run -d`;
//! then the node agent's resident memory (and its container shims') with all pods running.
//!
//! The baselines run first, on a quiet machine, and are removed before the masters start.
//! Goals (the issue's): Keelson's p99 within runc's p99 + 50 ms; the node agent under 25 MB
//! resident (k3s' agent is documented at 275 MB).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api_target::ApiTarget;
use crate::keelson_cluster::KeelsonCluster;
use crate::processes::Processes;

/// The most pods one run starts (a node's default pod capacity is 110).
pub(crate) const PODS_MAX: usize = 100;
/// Goal: Keelson's p99 may exceed runc's by at most this much.
const GOAL_P99_OVER_RUNC_MS: f64 = 50.0;
/// Goal: the node agent's resident memory with the pods running, in bytes (25 MB).
const GOAL_NODE_RSS_BYTES: u64 = 25_000_000;
/// k3s' agent, as its documentation gives it, in bytes (275 MB).
const K3S_AGENT_RSS_BYTES: u64 = 275_000_000;
const NODE_NAME: &str = "bench-node";
const IMAGE: &str = "keelson.local/busybox:stable";
const LABEL_SELECTOR: &str = "bench%3Dpod-start";
const PODS_PATH: &str = "/api/v1/namespaces/default/pods";
/// How long the masters get to write the node join token.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the node gets to be Ready.
const NODE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one pod gets to be Running.
const POD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the deleted pods get to be gone.
const DELETE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one `runc run` or `ctr run` may take.
const BASELINE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the node settles after the last pod before its memory is read.
const SETTLE: Duration = Duration::from_secs(3);
/// Watch events queued between the reader and the bookkeeping.
const EVENTS_QUEUE_MAX: usize = 4096;
/// How often the pod watch is reopened after it ends.
const WATCH_REOPENS_MAX: usize = 5;
/// The longest latency the histograms hold, in microseconds (10 minutes).
const LATENCY_US_MAX: u64 = 600_000_000;
/// containerd's socket; `ctr` is used only where it exists.
const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
const CTR_NAMESPACE: &str = "keelson-bench";

/// Latency percentiles of one system, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).context("cannot create a histogram")
}

fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    histogram.saturating_record(us);
}

/// p50/p90/p99/max of a histogram of microseconds.
pub(crate) fn summarize(histogram: &Histogram<u64>) -> Summary {
    let ms = |us: u64| us as f64 / 1000.0;
    Summary {
        count: histogram.len(),
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p90_ms: ms(histogram.value_at_quantile(0.9)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
    }
}

/// The table: one row per system, or why it was skipped.
pub(crate) fn table(rows: &[(&str, Result<Summary, String>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "system", "pods", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (system, row) in rows {
        match row {
            Ok(s) => {
                let _ = writeln!(
                    out,
                    "{:<8} {:>5} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                    system, s.count, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
                );
            }
            Err(why) => {
                let _ = writeln!(out, "{system:<8} skipped ({why})");
            }
        }
    }
    out
}

/// A summary for the progress output.
fn one_line(s: &Summary) -> String {
    format!(
        "{} starts, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        s.count, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
    )
}

fn ratio(ours: f64, theirs: f64) -> f64 {
    if theirs > 0.0 {
        ours / theirs
    } else {
        f64::INFINITY
    }
}

/// The goal line and the ratios of Keelson against a baseline.
pub(crate) fn comparison(keelson: &Summary, baseline_name: &str, baseline: &Summary) -> String {
    let mut out = String::new();
    if baseline_name == "runc" {
        let over = keelson.p99_ms - baseline.p99_ms;
        let verdict = if over <= GOAL_P99_OVER_RUNC_MS {
            "MET"
        } else {
            "NOT MET"
        };
        let _ = writeln!(
            out,
            "keelson p99 - runc p99 = {over:.1} ms (goal: <= {GOAL_P99_OVER_RUNC_MS:.0} ms): {verdict}"
        );
    }
    let _ = writeln!(
        out,
        "keelson/{baseline_name} p50 ratio = {:.2}x, p99 ratio = {:.2}x",
        ratio(keelson.p50_ms, baseline.p50_ms),
        ratio(keelson.p99_ms, baseline.p99_ms)
    );
    out
}

/// A `Key:   123 kB` line of `/proc/PID/status` or `smaps_rollup`, in bytes.
pub(crate) fn parse_kb(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let value: u64 = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") => value.checked_mul(1024),
            _ => None,
        }
    })
}

/// Whether a `/proc/PID/cmdline` is a container shim of the node whose data is under `dir`:
/// `<keelson> shim ...` with an argument inside `dir` (its runc root or bundle).
pub(crate) fn is_shim_of(cmdline: &[u8], dir: &str) -> bool {
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let program_is_keelson = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        // `keelson (deleted)` once the binary has been replaced.
        .is_some_and(|n| n.starts_with("keelson"));
    program_is_keelson
        && args.get(1).is_some_and(|a| a == "shim")
        && args.iter().skip(2).any(|a| a.contains(dir))
}

/// The mount points inside `dir` in `/proc/self/mounts`, deepest first.
pub(crate) fn mounts_under(mounts: &str, dir: &str) -> Vec<String> {
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    let mut found: Vec<String> = mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(|target| target.replace("\\040", " "))
        .filter(|target| target.starts_with(&prefix) || target == dir)
        .collect();
    found.sort_by_key(|t| std::cmp::Reverse(t.len()));
    found.dedup();
    found
}

/// Edits the config.json `runc spec` wrote: runs `args`, no terminal, the bundle's `rootfs`
/// read-only, and `hostname`.
pub(crate) fn edit_spec(spec: &mut Value, args: &[&str], hostname: &str) -> anyhow::Result<()> {
    let Some(object) = spec.as_object_mut() else {
        bail!("config.json is not an object");
    };
    let Some(process) = object.get_mut("process").and_then(Value::as_object_mut) else {
        bail!("config.json has no process object");
    };
    process.insert("args".into(), json!(args));
    process.insert("terminal".into(), json!(false));
    object.insert("root".into(), json!({"path": "rootfs", "readonly": true}));
    object.insert("hostname".into(), json!(hostname));
    Ok(())
}

/// The pod the benchmark creates, bound to the node so the scheduler is not measured.
pub(crate) fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "pod-start"}},
        "spec": {
            "nodeName": NODE_NAME,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "sleep",
                "image": IMAGE,
                "command": ["sleep", "3600"],
            }],
        },
    })
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// A program on PATH.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// Runs a short command; fails with its stderr.
fn run_quiet(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {:?}", command.get_program()))?;
    if !output.status.success() {
        bail!(
            "{:?} {:?} failed ({}): {}",
            command.get_program(),
            command.get_args().collect::<Vec<_>>(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Removes every container of a runc root.
fn runc_delete_all(runc: &Path, root: &Path) {
    let Ok(output) = Command::new(runc)
        .arg("--root")
        .arg(root)
        .args(["list", "-q"])
        .stdin(Stdio::null())
        .output()
    else {
        return;
    };
    for id in String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.is_empty())
    {
        let _ = Command::new(runc)
            .arg("--root")
            .arg(root)
            .args(["kill", id, "KILL"])
            .stdin(Stdio::null())
            .output();
        let _ = Command::new(runc)
            .arg("--root")
            .arg(root)
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .output();
    }
}

/// The network namespace names (in /run/netns) the node's sandbox records hold
/// (`sandboxes/<id>.json` with `"netns": "/run/netns/NAME"`).
fn sandbox_netns(sandboxes: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sandboxes) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| netns_name(&serde_json::from_slice(&bytes).ok()?))
        .collect()
}

/// The name of a sandbox record's network namespace, if it is one of /run/netns.
pub(crate) fn netns_name(record: &Value) -> Option<String> {
    let path = Path::new(record["netns"].as_str()?);
    if path.parent() != Some(Path::new("/run/netns")) {
        return None;
    }
    let name = path.file_name()?.to_str()?;
    (!name.is_empty() && name != "..").then(|| name.to_string())
}

/// Leaves nothing behind when dropped (after the processes' guards, which stop the node and
/// masters): the containers of the runc roots, the node's shims, the network namespaces of
/// its sandboxes, the mounts inside `dir`.
struct Cleanup {
    runc: PathBuf,
    runc_roots: Vec<PathBuf>,
    /// The node's sandbox records.
    sandboxes: Option<PathBuf>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for root in &self.runc_roots {
            if root.exists() {
                runc_delete_all(&self.runc, root);
            }
        }
        if let Some(sandboxes) = &self.sandboxes {
            for name in sandbox_netns(sandboxes) {
                if Path::new("/run/netns").join(&name).exists() {
                    if let Err(e) = run_quiet(Command::new("ip").args(["netns", "delete", &name])) {
                        eprintln!("cannot remove network namespace {name}: {e:#}");
                    }
                }
            }
        }
        let dir = self.dir.to_string_lossy().into_owned();
        for (pid, _) in shims_of(&dir) {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            for target in mounts_under(&mounts, &dir) {
                if let Err(e) =
                    nix::mount::umount2(target.as_str(), nix::mount::MntFlags::MNT_DETACH)
                {
                    eprintln!("cannot unmount {target}: {e}");
                }
            }
        }
    }
}

/// The shims of the node whose data is under `dir`: pid and cmdline.
fn shims_of(dir: &str) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            is_shim_of(&cmdline, dir)
                .then(|| (pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        })
        .collect()
}

/// VmRSS and Pss of a process, in bytes.
fn memory_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = parse_kb(&status, "VmRSS")?;
    let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| parse_kb(&s, "Pss"))
        .unwrap_or(0);
    Some((rss, pss))
}

/// One bundle for both baselines: busybox as `sleep` in a read-only root.
fn build_bundle(runc: &Path, bundle: &Path) -> anyhow::Result<()> {
    let bin = bundle.join("rootfs").join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(bundle.join("rootfs").join(d))?;
    }
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .context("cannot copy /bin/busybox (install busybox-static)")?;
    for link in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", bin.join(link))?;
    }
    run_quiet(Command::new(runc).arg("spec").current_dir(bundle))?;
    let path = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    edit_spec(&mut spec, &["sleep", "3600"], "bench")?;
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(())
}

/// Runs `command` (stdio null, stderr to `err_log`) to its end with a deadline; kills it
/// when late; fails with what it wrote to stderr. (A file, not a pipe: a detached container
/// inherits the stderr it is given.)
fn run_timed(command: &mut Command, err_log: &Path, what: &str) -> anyhow::Result<()> {
    let err = std::fs::File::create(err_log)
        .with_context(|| format!("cannot create {}", err_log.display()))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot run {:?}", command.get_program()))?;
    let deadline = Instant::now() + BASELINE_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            let stderr = std::fs::read_to_string(err_log).unwrap_or_default();
            bail!("{what} failed ({status}): {}", stderr.trim());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} took more than {BASELINE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// `runc run --detach` of the bundle, container after container; removes them after.
fn runc_baseline(runc: &Path, dir: &Path, pods: usize) -> anyhow::Result<Summary> {
    let bundle = dir.join("runc-bundle");
    let root = dir.join("runc-root");
    build_bundle(runc, &bundle)?;
    let _cleanup = Cleanup {
        runc: runc.to_path_buf(),
        runc_roots: vec![root.clone()],
        sandboxes: None,
        dir: bundle.clone(),
    };
    let err_log = dir.join("runc-run.err");
    let mut latencies = histogram()?;
    for i in 0..pods {
        let id = format!("bench-{i}");
        let mut command = Command::new(runc);
        command
            .arg("--root")
            .arg(&root)
            .args(["run", "--detach", "--bundle"])
            .arg(&bundle)
            .arg(&id);
        let started = Instant::now();
        run_timed(&mut command, &err_log, &format!("runc run {id}"))?;
        record(&mut latencies, started.elapsed());
    }
    Ok(summarize(&latencies))
}

/// `ctr run -d` of the same root file system (`--rootfs`: no image to import), where
/// containerd runs; removes the containers after.
fn ctr_baseline(ctr: &Path, dir: &Path, pods: usize) -> anyhow::Result<Summary> {
    let rootfs = dir.join("runc-bundle").join("rootfs");
    if !rootfs.join("bin").join("busybox").exists() {
        bail!("the runc baseline's bundle is missing");
    }
    let ids: Vec<String> = (0..pods).map(|i| format!("bench-ctr-{i}")).collect();
    let remove = |ids: &[String]| {
        for id in ids {
            let ctr_cmd = |args: &[&str]| {
                let _ = Command::new(ctr)
                    .args(["-n", CTR_NAMESPACE])
                    .args(args)
                    .stdin(Stdio::null())
                    .output();
            };
            ctr_cmd(&["task", "kill", "-s", "SIGKILL", id]);
            ctr_cmd(&["task", "rm", "-f", id]);
            ctr_cmd(&["container", "rm", id]);
        }
    };
    let err_log = dir.join("ctr-run.err");
    let mut latencies = histogram()?;
    let mut result = Ok(());
    for id in &ids {
        let mut command = Command::new(ctr);
        command
            .args(["-n", CTR_NAMESPACE, "run", "-d", "--null-io", "--rootfs"])
            .arg(&rootfs)
            .args([id.as_str(), "sleep", "3600"]);
        let started = Instant::now();
        if let Err(e) = run_timed(&mut command, &err_log, &format!("ctr run {id}")) {
            result = Err(e);
            break;
        }
        record(&mut latencies, started.elapsed());
    }
    remove(&ids);
    result.map(|()| summarize(&latencies))
}

/// One pod's change as the watch saw it.
struct Seen {
    name: String,
    phase: String,
    at: Instant,
}

/// Streams the benchmark's pod changes from `rv` into `tx`, reopening the watch (from the
/// last resourceVersion seen) when it ends, up to [`WATCH_REOPENS_MAX`] times.
async fn watch_pods(api: ApiTarget, mut rv: String, tx: mpsc::Sender<Seen>) -> anyhow::Result<()> {
    for _ in 0..=WATCH_REOPENS_MAX {
        let mut conn = api.connect().await.map_err(|e| anyhow!(e))?;
        conn.ready().await?;
        let request = hyper::Request::builder()
            .uri(format!(
                "{PODS_PATH}?watch=true&resourceVersion={rv}&labelSelector={LABEL_SELECTOR}"
            ))
            .header("host", api.addr().to_string())
            .header("authorization", api.authorization())
            .body(Full::new(Bytes::new()))?;
        let response = conn.send_request(request).await?;
        if response.status().as_u16() != 200 {
            bail!("the pod watch answered {}", response.status());
        }
        let mut body = response.into_body();
        let mut buffer = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buffer.extend_from_slice(data);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let at = Instant::now();
                let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                let object = &event["object"];
                if event["type"] == "ERROR" {
                    bail!("the pod watch sent an error: {object}");
                }
                if let Some(v) = object["metadata"]["resourceVersion"].as_str() {
                    rv = v.to_string();
                }
                if event["type"] == "BOOKMARK" {
                    continue;
                }
                let seen = Seen {
                    name: object["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    phase: object["status"]["phase"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    at,
                };
                if tx.send(seen).await.is_err() {
                    return Ok(());
                }
            }
        }
        eprintln!("the pod watch ended; reopening it from resourceVersion {rv}");
    }
    bail!("the pod watch ended {} times", WATCH_REOPENS_MAX + 1)
}

async fn call(
    api: &mut ApiTarget,
    method: hyper::Method,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let body = body.map(serde_json::to_vec).transpose()?;
    let (code, bytes) = api
        .request(method, path, body)
        .await
        .map_err(|e| anyhow!("{path}: {e}"))?;
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((code, value))
}

/// The first master's node join token, once it has written it.
async fn join_token(master_dir: &Path) -> anyhow::Result<String> {
    let path = master_dir.join("node-token");
    let deadline = Instant::now() + TOKEN_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let token = text.trim();
            if !token.is_empty() {
                return Ok(token.to_string());
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not appear within {TOKEN_TIMEOUT:?} (does this keelson write node join tokens?)",
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_node_ready(api: &mut ApiTarget, processes: &mut Processes) -> anyhow::Result<()> {
    let deadline = Instant::now() + NODE_TIMEOUT;
    let path = format!("/api/v1/nodes/{NODE_NAME}");
    loop {
        processes.check_running()?;
        let (code, node) = call(api, hyper::Method::GET, &path, None).await?;
        let ready = code == 200
            && node["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "node {NODE_NAME} is not Ready after {NODE_TIMEOUT:?} (last answer {code}: {node}); logs:\n{}",
                processes.log_tails()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Creates the pods one after the other; each one's time from just before its create until
/// the watch shows it Running. Returns those and the creates' own latencies.
async fn start_pods(
    api: &mut ApiTarget,
    pods: usize,
    processes: &mut Processes,
) -> anyhow::Result<(Summary, Summary)> {
    let (code, list) = call(
        api,
        hyper::Method::GET,
        &format!("{PODS_PATH}?limit=1"),
        None,
    )
    .await?;
    if code != 200 {
        bail!("listing pods answered {code}: {list}");
    }
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let (tx, mut rx) = mpsc::channel(EVENTS_QUEUE_MAX);
    let mut watcher = tokio::spawn(watch_pods(api.clone(), rv, tx));
    // Give the watch time to be registered before the first create.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut to_running = histogram()?;
    let mut creates = histogram()?;
    let mut slowest: Option<(String, Duration)> = None;
    for i in 0..pods {
        let name = format!("start-{i}");
        let started = Instant::now();
        let (code, body) = call(api, hyper::Method::POST, PODS_PATH, Some(&pod(&name))).await?;
        if code != 201 {
            bail!("creating pod {name} answered {code}: {body}");
        }
        record(&mut creates, started.elapsed());
        loop {
            match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                Ok(Some(seen)) if seen.name == name && seen.phase == "Running" => {
                    let took = seen.at.duration_since(started);
                    record(&mut to_running, took);
                    if slowest.as_ref().is_none_or(|(_, most)| took > *most) {
                        slowest = Some((name.clone(), took));
                    }
                    break;
                }
                Ok(Some(seen)) if seen.name == name && seen.phase == "Failed" => {
                    let (_, pod) = call(
                        api,
                        hyper::Method::GET,
                        &format!("{PODS_PATH}/{name}"),
                        None,
                    )
                    .await?;
                    bail!(
                        "pod {name} Failed: {}; node log:\n{}",
                        pod["status"],
                        processes.log_tails()
                    );
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    let why = match (&mut watcher).await {
                        Ok(Err(e)) => format!("{e:#}"),
                        Ok(Ok(())) => "it ended".to_string(),
                        Err(e) => e.to_string(),
                    };
                    bail!("the pod watch failed: {why}");
                }
                Err(_) => {
                    processes.check_running()?;
                    if started.elapsed() > POD_TIMEOUT {
                        let (_, pod) = call(
                            api,
                            hyper::Method::GET,
                            &format!("{PODS_PATH}/{name}"),
                            None,
                        )
                        .await?;
                        bail!(
                            "pod {name} is not Running after {POD_TIMEOUT:?}; its status: {}; logs:\n{}",
                            pod["status"],
                            processes.log_tails()
                        );
                    }
                }
            }
        }
        if (i + 1) % 10 == 0 {
            eprintln!("{} of {pods} pods Running", i + 1);
        }
    }
    watcher.abort();
    if let Some((name, took)) = slowest {
        eprintln!(
            "slowest start: {name} ({:.1} ms; pods start-0.. were created in order)",
            took.as_secs_f64() * 1000.0
        );
    }
    Ok((summarize(&to_running), summarize(&creates)))
}

/// Deletes the pods through the API and waits (bounded) until the node has removed them, so
/// it tears their sandboxes down itself; says how long that took.
async fn delete_pods(api: &mut ApiTarget, pods: usize) -> String {
    let started = Instant::now();
    for i in 0..pods {
        let path = format!("{PODS_PATH}/start-{i}");
        match call(api, hyper::Method::DELETE, &path, None).await {
            Ok((200 | 202 | 404, _)) => {}
            Ok((code, body)) => return format!("deleting start-{i} answered {code}: {body}"),
            Err(e) => return format!("deleting start-{i}: {e:#}"),
        }
    }
    let list = format!("{PODS_PATH}?labelSelector={LABEL_SELECTOR}");
    let mut left = pods;
    while started.elapsed() < DELETE_TIMEOUT {
        if let Ok((200, body)) = call(api, hyper::Method::GET, &list, None).await {
            left = body["items"].as_array().map_or(left, Vec::len);
            if left == 0 {
                return format!(
                    "{pods} pods deleted and gone {:.1} s after the first delete",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    format!(
        "{left} of {pods} pods still present {} s after their deletes (removed by the clean-up)",
        DELETE_TIMEOUT.as_secs()
    )
}

/// The memory lines: the node agent's VmRSS (and Pss), its shims', against the goal.
fn memory_report(node_pid: u32, dir: &Path, pods: usize) -> anyhow::Result<String> {
    let (node_rss, node_pss) = memory_of(node_pid)
        .ok_or_else(|| anyhow!("cannot read /proc/{node_pid}/status of the node"))?;
    let shims = shims_of(&dir.to_string_lossy());
    let (mut shim_rss, mut shim_pss) = (0, 0);
    for (pid, _) in &shims {
        if let Some((rss, pss)) = memory_of(*pid) {
            shim_rss += rss;
            shim_pss += pss;
        }
    }
    let verdict = |bytes: u64| {
        if bytes < GOAL_NODE_RSS_BYTES {
            "MET"
        } else {
            "NOT MET"
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node agent (keelson node, pid {node_pid}) with {pods} pods running: VmRSS {:.1} MB (goal: < {:.0} MB: {}; k3s' agent is documented at {:.0} MB), Pss {:.1} MB",
        mb(node_rss),
        mb(GOAL_NODE_RSS_BYTES),
        verdict(node_rss),
        mb(K3S_AGENT_RSS_BYTES),
        mb(node_pss)
    );
    let each = if shims.is_empty() {
        0.0
    } else {
        mb(shim_rss) / shims.len() as f64
    };
    let _ = writeln!(
        out,
        "container shims (`keelson shim`): {} processes, VmRSS sum {:.1} MB ({each:.2} MB each), Pss sum {:.1} MB",
        shims.len(),
        mb(shim_rss),
        mb(shim_pss)
    );
    let _ = writeln!(
        out,
        "node agent + shims: VmRSS {:.1} MB, Pss {:.1} MB (against the {:.0} MB goal: {} by Pss)",
        mb(node_rss + shim_rss),
        mb(node_pss + shim_pss),
        mb(GOAL_NODE_RSS_BYTES),
        verdict(node_pss + shim_pss)
    );
    Ok(out)
}

pub(crate) async fn run(keelson: &Path, dir: &Path, pods: usize) -> anyhow::Result<()> {
    if pods == 0 || pods > PODS_MAX {
        bail!("--pods must be 1 to {PODS_MAX} with --pod-start");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("--pod-start runs containers and must run as root");
    }
    let runc =
        on_path("runc").ok_or_else(|| anyhow!("runc is not on PATH (apt-get install runc)"))?;
    println!(
        "pod start bench: {pods} pods one after the other, create -> Running seen through a watch, on one `keelson node --runtime runc`; baselines: `runc run --detach`, `ctr run -d`; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("keelson: {}", keelson.display());
    // A copy: builds replacing the binary during the run change nothing.
    let copy = dir.join("keelson");
    std::fs::copy(keelson, &copy)
        .with_context(|| format!("cannot copy {} into {}", keelson.display(), dir.display()))?;
    let is_debug = keelson.to_string_lossy().contains("/debug/");
    let keelson = copy.as_path();

    eprintln!("runc baseline: {pods} containers");
    let runc_result = {
        let (runc, dir) = (runc.clone(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || runc_baseline(&runc, &dir, pods)).await?
    };
    let runc_row = runc_result.context("the runc baseline failed")?;
    eprintln!("runc: {}", one_line(&runc_row));

    let ctr_row = match on_path("ctr") {
        Some(ctr) if Path::new(CONTAINERD_SOCKET).exists() => {
            eprintln!("ctr baseline: {pods} containers");
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || ctr_baseline(&ctr, &dir, pods))
                .await?
                .map_err(|e| format!("failed: {e:#}"))
        }
        _ => Err("containerd not installed".to_string()),
    };
    match &ctr_row {
        Ok(row) => eprintln!("ctr: {}", one_line(row)),
        Err(why) => println!("ctr: skipped ({why})"),
    }

    // Dropped last: after the node and the masters have stopped.
    let _cleanup = Cleanup {
        runc: runc.clone(),
        runc_roots: vec![dir.join("node").join("runtime").join("runc")],
        sandboxes: Some(dir.join("node").join("runtime").join("sandboxes")),
        dir: dir.to_path_buf(),
    };
    eprintln!("starting 3 keelson masters");
    let cluster = KeelsonCluster::start(keelson, dir).await?;
    let (addr, kubeconfig) = cluster.apis[0].clone();
    let deadline = Instant::now() + TOKEN_TIMEOUT;
    while !kubeconfig.exists() {
        if Instant::now() > deadline {
            bail!("{} did not appear", kubeconfig.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut api = ApiTarget::from_kubeconfig(&kubeconfig, addr)?;
    api.wait_ready(Duration::from_secs(60)).await?;
    let token = join_token(&dir.join("m0")).await?;
    let masters: Vec<String> = cluster.apis.iter().map(|(a, _)| a.to_string()).collect();

    eprintln!("starting node {NODE_NAME}");
    let mut processes = Processes::new();
    let mut command = Command::new(keelson);
    command
        .args(["node", "--runtime", "runc", "--name", NODE_NAME])
        .arg("--data-dir")
        .arg(dir.join("node"))
        .arg("--masters")
        .arg(masters.join(","))
        .arg("--token")
        .arg(&token)
        .args(["--heartbeat-secs", "2"])
        .env("RUST_LOG", "info");
    let node_pid = processes.spawn("keelson node", command, &dir.join("node.log"))?;
    let started = Instant::now();
    wait_node_ready(&mut api, &mut processes).await?;
    println!(
        "node {NODE_NAME} Ready {:.1} s after start",
        started.elapsed().as_secs_f64()
    );

    eprintln!("keelson: {pods} pods");
    let (keelson_row, creates) = start_pods(&mut api, pods, &mut processes).await?;
    eprintln!("keelson: {}", one_line(&keelson_row));
    println!(
        "keelson creates (POST answered): p50 {:.1} ms, p99 {:.1} ms",
        creates.p50_ms, creates.p99_ms
    );
    tokio::time::sleep(SETTLE).await;
    processes
        .check_running()
        .context("the node died during the benchmark")?;
    let memory = memory_report(node_pid, dir, pods)?;

    println!();
    println!(
        "{}",
        table(&[
            ("keelson", Ok(keelson_row)),
            ("runc", Ok(runc_row)),
            ("ctr", ctr_row.clone()),
        ])
    );
    print!("{}", comparison(&keelson_row, "runc", &runc_row));
    if let Ok(ctr) = &ctr_row {
        print!("{}", comparison(&keelson_row, "ctr", ctr));
    }
    print!("{memory}");
    if is_debug {
        println!(
            "(a debug build of keelson: its resident memory is larger than a release build's)"
        );
    }
    eprintln!("deleting the pods");
    println!("{}", delete_pods(&mut api, pods).await);
    // Stop the node before the masters, then the cleanup removes what it left.
    drop(processes);
    drop(cluster);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_give_percentiles_in_milliseconds() {
        let mut h = histogram().unwrap();
        for ms in 1..=100u64 {
            record(&mut h, Duration::from_millis(ms));
        }
        let s = summarize(&h);
        assert_eq!(s.count, 100);
        let near = |a: f64, b: f64| (a - b).abs() < b * 0.01;
        assert!(near(s.p50_ms, 50.0), "{s:?}");
        assert!(near(s.p90_ms, 90.0), "{s:?}");
        assert!(near(s.p99_ms, 99.0), "{s:?}");
        assert!(near(s.max_ms, 100.0), "{s:?}");
    }

    #[test]
    fn the_table_has_a_row_per_system_and_skips() {
        let s = Summary {
            count: 50,
            p50_ms: 120.04,
            p90_ms: 130.0,
            p99_ms: 150.5,
            max_ms: 160.0,
        };
        let text = table(&[
            ("keelson", Ok(s)),
            ("ctr", Err("containerd not installed".into())),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("system"), "{text}");
        assert!(
            lines[1].contains("keelson")
                && lines[1].contains("120.0")
                && lines[1].contains("150.5"),
            "{text}"
        );
        assert_eq!(lines[2], "ctr      skipped (containerd not installed)");
    }

    #[test]
    fn the_goal_is_runc_p99_plus_50_ms() {
        let s = |p50_ms, p99_ms| Summary {
            count: 50,
            p50_ms,
            p90_ms: p99_ms,
            p99_ms,
            max_ms: p99_ms,
        };
        let cases = [
            (
                s(80.0, 100.0),
                s(40.0, 60.0),
                "= 40.0 ms",
                ": MET",
                "p50 ratio = 2.00x",
            ),
            (
                s(80.0, 110.0),
                s(40.0, 60.0),
                "= 50.0 ms",
                ": MET",
                "p99 ratio = 1.83x",
            ),
            (
                s(80.0, 111.0),
                s(40.0, 60.0),
                "= 51.0 ms",
                "NOT MET",
                "p50 ratio = 2.00x",
            ),
        ];
        for (keelson, runc, over, verdict, ratio) in cases {
            let text = comparison(&keelson, "runc", &runc);
            assert!(text.contains(over), "{text}");
            assert!(text.contains(verdict), "{text}");
            assert!(text.contains(ratio), "{text}");
        }
        let ctr = comparison(&s(80.0, 100.0), "ctr", &s(40.0, 50.0));
        assert_eq!(ctr.lines().count(), 1, "no goal line against ctr: {ctr}");
        assert!(ctr.starts_with("keelson/ctr p50 ratio = 2.00x"), "{ctr}");
    }

    #[test]
    fn vmrss_is_read_from_proc_status() {
        let status = "Name:\tkeelson\nVmPeak:\t  100 kB\nVmRSS:\t   18432 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_kb(status, "VmRSS"), Some(18432 * 1024));
        assert_eq!(parse_kb(status, "VmSwap"), None);
        assert_eq!(parse_kb("VmRSS:\tlots kB\n", "VmRSS"), None);
        assert_eq!(parse_kb("VmRSS:\t12 MB\n", "VmRSS"), None);
        // A key is matched whole: `Pss` is not `Pss_Anon`.
        let rollup = "Rss:  900 kB\nPss_Anon:  5 kB\nPss:   300 kB\n";
        assert_eq!(parse_kb(rollup, "Pss"), Some(300 * 1024));
    }

    #[test]
    fn shims_are_keelson_shim_with_an_argument_in_the_dir() {
        let dir = "/tmp/keelson-bench-x";
        let cases: [(&[u8], bool); 6] = [
            (
                b"/var/tmp/keelson-target/debug/keelson\0shim\0--runc-root\0/tmp/keelson-bench-x/node/runtime/runc\0",
                true,
            ),
            (
                b"/var/tmp/keelson-target/debug/keelson\0shim\0--runc-root\0/tmp/other/runc\0",
                false,
            ),
            (
                b"/var/tmp/keelson-target/debug/keelson\0node\0--data-dir\0/tmp/keelson-bench-x/node\0",
                false,
            ),
            (b"/usr/bin/sleep\0shim\0/tmp/keelson-bench-x\0", false),
            (b"/tmp/keelson-bench-x/keelson (deleted)\0shim\0/tmp/keelson-bench-x/r\0", true),
            (b"", false),
        ];
        for (cmdline, expected) in cases {
            assert_eq!(
                is_shim_of(cmdline, dir),
                expected,
                "{}",
                String::from_utf8_lossy(cmdline)
            );
        }
    }

    #[test]
    fn mounts_inside_the_dir_deepest_first() {
        let mounts = "\
proc /proc proc rw 0 0
overlay /tmp/b/node/containers/a/rootfs overlay rw 0 0
nsfs /tmp/b/node/netns/p nsfs rw 0 0
overlay /tmp/bb/rootfs overlay rw 0 0
tmpfs /tmp/b/node/containers/a/rootfs/dev tmpfs rw 0 0
";
        assert_eq!(
            mounts_under(mounts, "/tmp/b"),
            vec![
                "/tmp/b/node/containers/a/rootfs/dev",
                "/tmp/b/node/containers/a/rootfs",
                "/tmp/b/node/netns/p",
            ]
        );
    }

    #[test]
    fn the_spec_runs_sleep_read_only_without_a_terminal() {
        let mut spec = json!({
            "ociVersion": "1.0.2",
            "process": {"terminal": true, "args": ["sh"], "cwd": "/"},
            "root": {"path": "rootfs", "readonly": false},
            "hostname": "runc",
            "linux": {"namespaces": [{"type": "network"}]},
        });
        edit_spec(&mut spec, &["sleep", "3600"], "bench").unwrap();
        assert_eq!(spec["process"]["args"], json!(["sleep", "3600"]));
        assert_eq!(spec["process"]["terminal"], json!(false));
        assert_eq!(spec["process"]["cwd"], json!("/"));
        assert_eq!(spec["root"], json!({"path": "rootfs", "readonly": true}));
        assert_eq!(spec["hostname"], json!("bench"));
        assert_eq!(spec["linux"]["namespaces"][0]["type"], json!("network"));
        assert!(edit_spec(&mut json!([]), &["sleep"], "b").is_err());
        assert!(edit_spec(&mut json!({"root": {}}), &["sleep"], "b").is_err());
    }

    #[test]
    fn netns_names_come_from_sandbox_records_in_run_netns_only() {
        let cases = [
            (
                json!({"id": "a", "netns": "/run/netns/keelson-a"}),
                Some("keelson-a"),
            ),
            (json!({"id": "a", "netns": null}), None),
            (json!({"id": "a"}), None),
            (json!({"netns": "/etc/passwd"}), None),
            (json!({"netns": "/run/netns/.."}), None),
            (json!({"netns": "/run/netns/"}), None),
        ];
        for (record, expected) in cases {
            assert_eq!(netns_name(&record).as_deref(), expected, "{record}");
        }
    }

    #[test]
    fn the_pod_is_bound_and_sleeps() {
        let p = pod("start-3");
        assert_eq!(p["metadata"]["name"], "start-3");
        assert_eq!(p["spec"]["nodeName"], NODE_NAME);
        assert_eq!(p["spec"]["containers"][0]["image"], IMAGE);
        assert_eq!(
            p["spec"]["containers"][0]["command"],
            json!(["sleep", "3600"])
        );
        assert_eq!(p["spec"]["automountServiceAccountToken"], false);
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 1);
    }
}
