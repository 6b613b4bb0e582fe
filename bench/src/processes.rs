//! The server processes of one cluster under test, ended when their guard drops (at the end
//! of a run, on error and on Ctrl-C), and free loopback ports to start them on.

use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long members get to stop after SIGTERM before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a member's log an error quotes.
const LOG_TAIL_BYTES_MAX: usize = 2000;

struct Running {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Child processes that live as long as this guard.
pub(crate) struct Processes {
    running: Vec<Running>,
}

impl Processes {
    pub(crate) fn new() -> Self {
        Processes {
            running: Vec::new(),
        }
    }

    /// Starts `command` as `name`, its stdout and stderr going to `log`; returns its pid.
    pub(crate) fn spawn(
        &mut self,
        name: &str,
        mut command: Command,
        log: &Path,
    ) -> anyhow::Result<u32> {
        let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out
            .try_clone()
            .context("cannot duplicate a log file handle")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", command.get_program()))?;
        let pid = child.id();
        self.running.push(Running {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        });
        Ok(pid)
    }

    /// Fails, quoting its log, if any process has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        for running in &mut self.running {
            let status = running
                .child
                .try_wait()
                .with_context(|| format!("cannot check on {}", running.name))?;
            if let Some(status) = status {
                bail!(
                    "{} exited ({status}); the end of its log {}:\n{}",
                    running.name,
                    running.log.display(),
                    log_tail(&running.log)
                );
            }
        }
        Ok(())
    }

    /// The end of every process's log, for an error that is nobody's fault in particular.
    pub(crate) fn log_tails(&self) -> String {
        let mut out = String::new();
        for running in &self.running {
            out.push_str(&format!(
                "--- {} ({}):\n{}\n",
                running.name,
                running.log.display(),
                log_tail(&running.log)
            ));
        }
        out
    }
}

impl Drop for Processes {
    /// SIGTERM to all, then SIGKILL to whoever is still running after [`STOP_TIMEOUT`].
    fn drop(&mut self) {
        for running in &mut self.running {
            let terminated = i32::try_from(running.child.id())
                .ok()
                .is_some_and(|pid| kill(Pid::from_raw(pid), Signal::SIGTERM).is_ok());
            if !terminated {
                let _ = running.child.kill();
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for running in &mut self.running {
            loop {
                match running.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!(
                            "{} did not stop within {STOP_TIMEOUT:?} of SIGTERM; killing it",
                            running.name
                        );
                        let _ = running.child.kill();
                        let _ = running.child.wait();
                        break;
                    }
                    Ok(None) => sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(LOG_TAIL_BYTES_MAX);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("(cannot read it: {e})"),
    }
}

/// `n` distinct UDP ports on 127.0.0.1 that were free a moment ago (held together while
/// picked, so none repeats).
pub(crate) fn free_udp_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let sockets = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot bind a UDP socket on 127.0.0.1")?;
    let ports = sockets
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ports)
}

/// `n` distinct TCP ports on 127.0.0.1 that were free a moment ago.
pub(crate) fn free_tcp_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot bind a TCP socket on 127.0.0.1")?;
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ports)
}
