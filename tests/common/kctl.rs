//! Running `kctl` (or the real `kubectl`) from a test: one binary, one kubeconfig and a HOME of
//! its own; one-shot runs, runs that must succeed, polling until the output shows something,
//! and long-running commands whose output is collected.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cluster::Cluster;

pub struct Kctl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    /// HOME of the commands (their caches) and the folder of [`Kctl::file`].
    home: tempfile::TempDir,
}

impl Kctl {
    /// `kctl` against the cluster's master 0.
    pub fn new(cluster: &Cluster) -> Kctl {
        Kctl::with(super::kctl_bin(), cluster.masters[0].kubeconfig())
    }

    /// `bin` (kctl or kubectl) with `kubeconfig`.
    pub fn with(bin: PathBuf, kubeconfig: PathBuf) -> Kctl {
        Kctl {
            bin,
            kubeconfig,
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// The command with its environment, to add arguments and more to.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path());
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs `args`, fails the test unless they succeed, and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "{} {args:?} failed:\nstdout: {}\nstderr: {}",
            self.bin.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// Runs `args` until they succeed and `check` accepts stdout, or fails after `timeout`.
    pub fn eventually(
        &self,
        args: &[&str],
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.run(args);
            let out = String::from_utf8_lossy(&output.stdout).to_string();
            if output.status.success() && check(&out) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "{} {args:?} did not show what was expected in {timeout:?}:\nstdout: {out}\nstderr: {}",
                self.bin.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Writes `text` to `name` in the command's folder; returns the path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.home.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// Starts a long-running command whose stdout and stderr lines are collected.
    pub fn spawn(&self, args: &[&str]) -> Streaming {
        let mut child = self
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = collect(child.stdout.take().unwrap());
        let errors = collect(child.stderr.take().unwrap());
        Streaming {
            child,
            lines,
            errors,
        }
    }
}

/// The lines read from `pipe` so far, by a thread that ends with the pipe.
fn collect(pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// A running command (killed when dropped) and what it printed so far.
pub struct Streaming {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Streaming {
    /// The stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until some stdout line satisfies `check`; fails with the output otherwise.
    pub async fn wait_line(&self, timeout: Duration, what: &str, check: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        while !self.lines().iter().any(|l| check(l)) {
            assert!(
                Instant::now() < deadline,
                "the command printed no line with {what} in {timeout:?}; stdout:\n{}\nstderr:\n{}",
                self.lines().join("\n"),
                self.errors.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
