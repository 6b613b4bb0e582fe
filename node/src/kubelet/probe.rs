//! Liveness, readiness and startup probes: exec (through the runtime), HTTP GET and TCP
//! (inside the pod's network namespace), run on their timings by one task per probe, with
//! success and failure thresholds counted by the pure [`Threshold`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::watch;

use crate::runtime::Runtime;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }
}

/// Consecutive results against `successThreshold` / `failureThreshold`: the probe's verdict
/// changes only when a threshold is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold {
    success_max: u32,
    failure_max: u32,
    successes: u32,
    failures: u32,
    /// The current verdict (`None` until a threshold is first reached).
    pub verdict: Option<bool>,
}

impl Threshold {
    pub fn new(probe: &Probe) -> Threshold {
        Threshold {
            success_max: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure_max: probe.failure_threshold.unwrap_or(3).max(1) as u32,
            successes: 0,
            failures: 0,
            verdict: None,
        }
    }

    /// Records one result; returns the verdict when it changes.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let next = if self.successes >= self.success_max {
            Some(true)
        } else if self.failures >= self.failure_max {
            Some(false)
        } else {
            self.verdict
        };
        let changed = next != self.verdict;
        self.verdict = next;
        changed.then_some(next).flatten()
    }
}

/// Where the probe runs.
#[derive(Clone)]
pub struct Target {
    pub runtime: Arc<dyn Runtime>,
    pub container_id: String,
    /// The pod's network namespace (`None`: the host's).
    pub netns: Option<PathBuf>,
}

/// What a probe reports to its pod worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeReport {
    pub container_id: String,
    pub kind: ProbeKind,
    pub ok: bool,
    /// Why the last attempt failed.
    pub message: String,
}

fn port_of(port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range")),
        IntOrString::String(s) => s.parse().map_err(|_| {
            format!("named port {s:?} is not supported by this kubelet; use a number")
        }),
    }
}

/// Runs one attempt of a probe.
pub async fn attempt(probe: &Probe, target: &Target) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        let output = target
            .runtime
            .exec(&target.container_id, &command, timeout)
            .await
            .map_err(|e| e.to_string())?;
        return if output.exit_code == 0 {
            Ok(())
        } else {
            Err(format!(
                "command {command:?} exited with {}: {}",
                output.exit_code,
                output.output.trim()
            ))
        };
    }
    if let Some(http) = &probe.http_get {
        let port = port_of(&http.port)?;
        let path = http.path.clone().unwrap_or_else(|| "/".to_string());
        let host = http.host.clone().unwrap_or_else(|| "127.0.0.1".to_string());
        let netns = target.netns.clone();
        return blocking_in_netns(netns, timeout, move || {
            http_get(&host, port, &path, timeout)
        })
        .await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = port_of(&tcp.port)?;
        let host = tcp.host.clone().unwrap_or_else(|| "127.0.0.1".to_string());
        let netns = target.netns.clone();
        return blocking_in_netns(netns, timeout, move || {
            connect(&host, port, timeout).map(|_| ())
        })
        .await;
    }
    Err("the probe has no handler (exec, httpGet or tcpSocket)".to_string())
}

fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|_| format!("{host}:{port} is not an IP address and port"))?;
    TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("dial tcp {addr}: {e}"))
}

fn http_get(host: &str, port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    let mut stream = connect(host, port, timeout)?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.37\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("Get \"http://{host}:{port}{path}\": {e}"))?;
    let mut head = [0u8; 64];
    let n = stream
        .read(&mut head)
        .map_err(|e| format!("Get \"http://{host}:{port}{path}\": {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("Get \"http://{host}:{port}{path}\": malformed HTTP response"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// Runs `work` on a fresh thread that has joined `netns` (the thread ends with the work, so
/// no other code ever runs in the pod's namespace).
async fn blocking_in_netns<F>(
    netns: Option<PathBuf>,
    timeout: Duration,
    work: F,
) -> Result<(), String>
where
    F: FnOnce() -> Result<(), String> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("probe".to_string())
        .spawn(move || {
            let result = match netns {
                Some(path) => enter_netns(&path).and_then(|()| work()),
                None => work(),
            };
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start a probe thread: {e}"));
    }
    match tokio::time::timeout(timeout + Duration::from_secs(1), rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("the probe thread ended without a result".to_string()),
        Err(_) => Err(format!("timeout after {timeout:?}")),
    }
}

fn enter_netns(path: &std::path::Path) -> Result<(), String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot open network namespace {}: {e}", path.display()))?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("cannot enter network namespace {}: {e}", path.display()))
}

/// Probes one container until `stop` turns true, sending a report whenever the verdict
/// changes (and the first time a threshold is reached).
pub async fn run(
    kind: ProbeKind,
    probe: Probe,
    target: Target,
    reports: tokio::sync::mpsc::Sender<ProbeReport>,
    mut stop: watch::Receiver<bool>,
) {
    let initial = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    let mut threshold = Threshold::new(&probe);
    let mut delay = initial;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = period;
        let result = tokio::select! {
            _ = stop.changed() => return,
            result = attempt(&probe, &target) => result,
        };
        let ok = result.is_ok();
        if let Some(verdict) = threshold.record(ok) {
            let report = ProbeReport {
                container_id: target.container_id.clone(),
                kind,
                ok: verdict,
                message: result.err().unwrap_or_default(),
            };
            if reports.send(report).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(success: i32, failure: i32) -> Probe {
        Probe {
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Probe::default()
        }
    }

    #[test]
    fn verdicts_change_only_at_thresholds() {
        let mut t = Threshold::new(&probe(1, 3));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert_eq!(t.record(false), None, "no repeat of an unchanged verdict");
        assert_eq!(t.record(true), Some(true));
        let mut t = Threshold::new(&probe(2, 1));
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(false), Some(false));
    }

    #[test]
    fn ports_must_be_numbers_in_range() {
        assert_eq!(port_of(&IntOrString::Int(8080)), Ok(8080));
        assert!(port_of(&IntOrString::Int(70000)).is_err());
        assert_eq!(port_of(&IntOrString::String("81".into())), Ok(81));
        assert!(port_of(&IntOrString::String("http".into())).is_err());
    }

    #[tokio::test]
    async fn http_and_tcp_probes_reach_a_local_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(2).flatten() {
                let mut stream = stream;
                let mut buf = [0u8; 512];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
            }
        });
        let timeout = Duration::from_secs(1);
        let result = blocking_in_netns(None, timeout, move || {
            http_get("127.0.0.1", port, "/", timeout)
        })
        .await;
        assert_eq!(
            result,
            Err("HTTP probe failed with statuscode: 503".to_string())
        );
        let result = blocking_in_netns(None, timeout, move || {
            connect("127.0.0.1", port, timeout).map(|_| ())
        })
        .await;
        assert_eq!(result, Ok(()));
    }
}
