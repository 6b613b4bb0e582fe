//! A 3-member Keelson store of real `keelson master` processes on loopback, and
//! [`StoreClient`] as a load [`Target`].

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keelson_raft::{KeyRange, RangeRequest, StoreClient, Txn};

use crate::load::Target;
use crate::processes::{free_tcp_ports, free_udp_ports, Processes};

const MEMBERS: usize = 3;
const TOKEN: &str = "keelson-bench-token-0123456789";
/// How long the members get to elect a leader that all of them know.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The running members and a client sending to all of them.
pub(crate) struct KeelsonCluster {
    pub(crate) client: StoreClient,
    /// Each master's API address and admin kubeconfig.
    pub(crate) apis: Vec<(std::net::SocketAddr, std::path::PathBuf)>,
    // Declared last: dropped (members stopped) after the client.
    _processes: Processes,
}

impl KeelsonCluster {
    /// Starts `keelson master` m0, m1, m2 with data under `dir`; returns once all three
    /// report the same leader.
    pub(crate) async fn start(keelson: &Path, dir: &Path) -> anyhow::Result<Self> {
        let peer_ports = free_udp_ports(MEMBERS)?;
        // Each master serves its API on a port of its own.
        let api_ports = free_tcp_ports(MEMBERS)?;
        let peers: Vec<String> = peer_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let peer_list: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("m{i}={addr}"))
            .collect();
        let peer_list = peer_list.join(",");
        let mut processes = Processes::new();
        for (i, peer) in peers.iter().enumerate() {
            let name = format!("m{i}");
            let mut command = Command::new(keelson);
            command
                .arg("master")
                .args([
                    "--name", &name, "--peer", peer, "--peers", &peer_list, "--token", TOKEN,
                ])
                .arg("--api")
                .arg(format!("127.0.0.1:{}", api_ports[i]))
                .arg("--data-dir")
                .arg(dir.join(&name))
                .env("RUST_LOG", "warn");
            processes.spawn(
                &format!("keelson master {name}"),
                command,
                &dir.join(format!("{name}.log")),
            )?;
        }
        let client = StoreClient::new(peers, TOKEN).context("cannot create a store client")?;
        wait_ready(&client, &mut processes).await?;
        let apis = api_ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                (
                    std::net::SocketAddr::from(([127, 0, 0, 1], *port)),
                    dir.join(format!("m{i}")).join("admin.kubeconfig"),
                )
            })
            .collect();
        Ok(KeelsonCluster {
            client,
            apis,
            _processes: processes,
        })
    }
}

async fn wait_ready(client: &StoreClient, processes: &mut Processes) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        processes.check_running()?;
        let statuses = client.status_all().await;
        let leaders: Vec<Option<String>> = statuses
            .iter()
            .map(|(_, status)| status.as_ref().ok().and_then(|s| s.leader.clone()))
            .collect();
        if leaders.len() == MEMBERS
            && leaders[0].is_some()
            && leaders.iter().all(|l| *l == leaders[0])
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = statuses
                .iter()
                .map(|(endpoint, status)| match status {
                    Ok(s) => format!("{endpoint}: leader {:?}", s.leader),
                    Err(e) => format!("{endpoint}: {e}"),
                })
                .collect();
            bail!(
                "the keelson members did not agree on a leader within {READY_TIMEOUT:?} ({}); their logs:\n{}",
                seen.join("; "),
                processes.log_tails()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Target for StoreClient {
    async fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let response = self
            .txn(Txn::put(key, value))
            .await
            .map_err(|e| e.to_string())?;
        if !response.succeeded || response.revision == 0 {
            return Err(format!("an unconditional put answered {response:?}"));
        }
        Ok(())
    }

    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        // `RangeRequest::new` reads linearizably (read index on the leader).
        let response = self
            .range(RangeRequest::new(KeyRange::key(key)))
            .await
            .map_err(|e| e.to_string())?;
        Ok(response.kvs.into_iter().next().map(|kv| kv.value))
    }
}
