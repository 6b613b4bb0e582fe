//! A cluster of real `keelson master` processes on loopback for end-to-end tests, and an
//! HTTPS client that speaks to their API with the admin kubeconfig's CA and token.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "e2e-cluster-token-0123456789";

pub fn keelson() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
}

/// `keelson`, run inside the network namespace `netns` (an `ip netns` name) when one is given.
/// Only the network namespace is entered: the process shares the machine's mounts.
pub fn keelson_in(netns: Option<&str>) -> Command {
    match netns {
        None => keelson(),
        Some(netns) => {
            let mut command = Command::new("nsenter");
            command
                .arg(format!("--net=/run/netns/{netns}"))
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_keelson"));
            command
        }
    }
}

pub fn free_udp_port() -> u16 {
    super::ports::free_port(|port| std::net::UdpSocket::bind(("127.0.0.1", port)))
}

pub fn free_tcp_port() -> u16 {
    super::ports::free_port(|port| std::net::TcpListener::bind(("127.0.0.1", port)))
}

pub struct Master {
    pub name: String,
    pub peer: String,
    pub api: String,
    pub dir: PathBuf,
    /// The network namespace it runs in (`None`: the test's own).
    pub netns: Option<String>,
    child: Option<Child>,
}

impl Master {
    pub fn url(&self) -> String {
        format!("https://{}", self.api)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A failing test must not leave masters running.
impl Drop for Master {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct Cluster {
    pub masters: Vec<Master>,
    peers: String,
    /// Extra `keelson master` arguments every master starts with.
    extra_args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` masters and waits until each serves its API.
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[]).await
    }

    /// Starts `n` masters with `extra_args` (e.g. `--controllers=scheduler`).
    pub async fn start_with(n: usize, extra_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let masters: Vec<Master> = (0..n)
            .map(|i| Master {
                name: format!("m{i}"),
                peer: format!("127.0.0.1:{}", free_udp_port()),
                api: format!("127.0.0.1:{}", free_tcp_port()),
                dir: dir.path().join(format!("m{i}")),
                netns: None,
                child: None,
            })
            .collect();
        Cluster::launch(masters, extra_args, dir).await
    }

    /// Starts one master in each of `hosts` (network namespace, address), on the standard
    /// ports of its own address.
    pub async fn start_on(hosts: &[(String, std::net::Ipv4Addr)], extra_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let masters: Vec<Master> = hosts
            .iter()
            .enumerate()
            .map(|(i, (netns, ip))| Master {
                name: format!("m{i}"),
                peer: format!("{ip}:7000"),
                api: format!("{ip}:6443"),
                dir: dir.path().join(format!("m{i}")),
                netns: Some(netns.clone()),
                child: None,
            })
            .collect();
        Cluster::launch(masters, extra_args, dir).await
    }

    async fn launch(masters: Vec<Master>, extra_args: &[&str], dir: tempfile::TempDir) -> Cluster {
        let n = masters.len();
        let peers: Vec<String> = masters
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect();
        let mut cluster = Cluster {
            masters,
            peers: peers.join(","),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            _dir: dir,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_serving(i, Duration::from_secs(60)).await;
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.masters[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.dir.with_extension("log"))
            .unwrap();
        let child = keelson_in(m.netns.as_deref())
            .args([
                "master", "--name", &m.name, "--peer", &m.peer, "--api", &m.api,
            ])
            .args(["--peers", &self.peers, "--token", TOKEN])
            .args(&self.extra_args)
            .arg("--data-dir")
            .arg(&m.dir)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start keelson master");
        m.child = Some(child);
    }

    /// Waits until master `i` answers `/readyz` with 200.
    pub async fn wait_serving(&self, i: usize, timeout: Duration) {
        let m = &self.masters[i];
        let deadline = Instant::now() + timeout;
        loop {
            if m.kubeconfig().exists() {
                let api = self.client(i);
                let ready = api
                    .http
                    .get(format!("{}/readyz", m.url()))
                    .send()
                    .await
                    .map(|r| r.status().as_u16() == 200)
                    .unwrap_or(false);
                if ready {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "master {} did not serve its API in {timeout:?}; log:\n{}",
                m.name,
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.masters[i].dir.with_extension("log")).unwrap_or_default()
    }

    /// `kill -9`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.masters[i].child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGSTOP of master `i` (a paused host).
    pub fn pause(&self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT of master `i`.
    pub fn resume(&self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, i: usize, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid(i) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
        }
    }

    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.masters.len())
            .filter(|i| self.masters[*i].is_running())
            .collect()
    }

    /// The store endpoints of the running masters, for `keelson store`.
    pub fn store_endpoints(&self) -> String {
        let running: Vec<&str> = self
            .running()
            .into_iter()
            .map(|i| self.masters[i].peer.as_str())
            .collect();
        running.join(",")
    }

    /// The directory the masters (and nodes) keep their data in.
    pub fn base_dir(&self) -> &Path {
        self._dir.path()
    }

    /// The pid of master `i`'s process, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.masters[i].child.as_ref().map(Child::id)
    }

    pub fn client(&self, i: usize) -> Api {
        Api::from_kubeconfig(&self.masters[i].kubeconfig(), &self.masters[i].url())
    }
}

/// An HTTPS client for one master's API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

pub struct Reply {
    pub code: u16,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn rv(&self) -> String {
        self.body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Api {
    pub fn from_kubeconfig(path: &Path, base: &str) -> Api {
        use base64::Engine;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let text = std::fs::read_to_string(path).unwrap();
        let config: Value = serde_norway::from_str(&text).unwrap();
        let ca = base64::engine::general_purpose::STANDARD
            .decode(
                config["clusters"][0]["cluster"]["certificate-authority-data"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        let token = config["users"][0]["user"]["token"]
            .as_str()
            .unwrap()
            .to_string();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Api {
            base: base.to_string(),
            token,
            http,
        }
    }

    pub fn with_base(&self, base: &str) -> Api {
        Api {
            base: base.to_string(),
            ..self.clone()
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("request");
        let code = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { code, body, text }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(
            reqwest::Method::POST,
            path,
            Some("application/json"),
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(
            reqwest::Method::PUT,
            path,
            Some("application/json"),
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    pub async fn patch(&self, path: &str, content_type: &str, body: &str) -> Reply {
        self.send(
            reqwest::Method::PATCH,
            path,
            Some(content_type),
            Some(body.as_bytes().to_vec()),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(reqwest::Method::DELETE, path, None, None).await
    }
}
