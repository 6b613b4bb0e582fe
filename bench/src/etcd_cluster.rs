//! The baseline: a 3-member etcd (Debian's `etcd-server`) on loopback, driven through its gRPC
//! API with `etcd-client`, and that client as a load [`Target`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use etcd_client::{Client, ConnectOptions};

use crate::load::Target;
use crate::processes::{free_tcp_ports, Processes};

const MEMBERS: usize = 3;
/// Where Debian's `etcd-server` puts the binary.
pub(crate) const DEBIAN_ETCD: &str = "/usr/bin/etcd";
/// How long the members get to elect a leader that all of them know.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The running members and a client connected to all of them.
pub(crate) struct EtcdCluster {
    pub(crate) client: Client,
    // Declared last: dropped (members stopped) after the client.
    _processes: Processes,
}

/// The etcd binary to use: `given`, else Debian's, else one on `PATH`; `Err` says why there
/// is none.
pub(crate) fn find_etcd(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(format!("--etcd {} is not a file", path.display()))
        };
    }
    let debian = Path::new(DEBIAN_ETCD);
    if debian.is_file() {
        return Ok(debian.to_path_buf());
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file());
    on_path.ok_or_else(|| {
        format!(
            "no etcd binary at {DEBIAN_ETCD} or on PATH (install Debian's etcd-server: \
             scripts/install-deps.sh bench)"
        )
    })
}

/// The first line of `etcd --version`, e.g. "etcd Version: 3.4.23".
pub(crate) fn etcd_version(etcd: &Path) -> anyhow::Result<String> {
    let output = Command::new(etcd)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {} --version", etcd.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .next()
        .unwrap_or("etcd: unknown version")
        .trim()
        .to_string())
}

impl EtcdCluster {
    /// Starts etcd e0, e1, e2 with data under `dir`; returns once all three report the same
    /// leader.
    pub(crate) async fn start(etcd: &Path, dir: &Path) -> anyhow::Result<Self> {
        let ports = free_tcp_ports(2 * MEMBERS)?;
        let (client_ports, peer_ports) = ports.split_at(MEMBERS);
        let client_urls: Vec<String> = client_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let peer_urls: Vec<String> = peer_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let initial_cluster: Vec<String> = peer_urls
            .iter()
            .enumerate()
            .map(|(i, url)| format!("e{i}={url}"))
            .collect();
        let initial_cluster = initial_cluster.join(",");
        let mut processes = Processes::new();
        for i in 0..MEMBERS {
            let name = format!("e{i}");
            let mut command = Command::new(etcd);
            command
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(dir.join(&name))
                .args(["--listen-client-urls", &client_urls[i]])
                .args(["--advertise-client-urls", &client_urls[i]])
                .args(["--listen-peer-urls", &peer_urls[i]])
                .args(["--initial-advertise-peer-urls", &peer_urls[i]])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "keelson-bench"])
                .args(["--logger", "zap", "--log-level", "warn"]);
            processes.spawn(
                &format!("etcd {name}"),
                command,
                &dir.join(format!("{name}.log")),
            )?;
        }
        wait_ready(&client_urls, &mut processes).await?;
        let options = ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT);
        let client = Client::connect(&client_urls, Some(options))
            .await
            .context("cannot connect to etcd")?;
        Ok(EtcdCluster {
            client,
            _processes: processes,
        })
    }
}

/// Waits until every member answers a status request naming the same leader.
async fn wait_ready(client_urls: &[String], processes: &mut Processes) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        processes.check_running()?;
        let mut leaders = Vec::new();
        for url in client_urls {
            leaders.push(member_leader(url).await);
        }
        if let Some(Ok(first)) = leaders.first() {
            if *first != 0 && leaders.iter().all(|l| matches!(l, Ok(id) if id == first)) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = client_urls
                .iter()
                .zip(&leaders)
                .map(|(url, leader)| match leader {
                    Ok(id) => format!("{url}: leader {id:x}"),
                    Err(e) => format!("{url}: {e}"),
                })
                .collect();
            bail!(
                "the etcd members did not agree on a leader within {READY_TIMEOUT:?} ({}); their logs:\n{}",
                seen.join("; "),
                processes.log_tails()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The leader id one member reports (0: none).
async fn member_leader(url: &str) -> Result<u64, String> {
    let options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(CONNECT_TIMEOUT);
    let mut client = Client::connect([url], Some(options))
        .await
        .map_err(|e| e.to_string())?;
    let status = client.status().await.map_err(|e| e.to_string())?;
    Ok(status.leader())
}

impl Target for Client {
    async fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let response = Client::put(self, key, value, None)
            .await
            .map_err(|e| e.to_string())?;
        match response.header() {
            Some(header) if header.revision() > 0 => Ok(()),
            _ => Err(format!("a put answered {response:?}")),
        }
    }

    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        // etcd reads linearizably unless `GetOptions::with_serializable` is given.
        let response = Client::get(self, key, None)
            .await
            .map_err(|e| e.to_string())?;
        Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
    }
}
