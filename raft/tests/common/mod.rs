//! Test harness: store members in this process on loopback QUIC, each behind a UDP proxy that
//! can cut it off from the others.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod netproxy;
pub mod ports;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use keelson_raft::{Member, Store, StoreClient, StoreConfig};
use netproxy::{Net, UdpProxy};

pub const TOKEN: &str = "test-cluster-token-0123456789";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,openraft=error".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A free UDP address on loopback for a member (see [`ports`]).
pub fn free_udp_addr() -> SocketAddr {
    let port = ports::free_port(|port| UdpSocket::bind(("127.0.0.1", port)));
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub struct TestCluster {
    pub configs: Vec<StoreConfig>,
    pub members: Vec<Option<Store>>,
    pub dirs: Vec<tempfile::TempDir>,
    pub net: Net,
    pub proxies: Vec<UdpProxy>,
}

impl TestCluster {
    /// Starts `n` members named m0..m{n-1}; `tweak` adjusts each configuration.
    pub async fn start(n: usize, tweak: impl Fn(&mut StoreConfig)) -> TestCluster {
        Self::start_with_spares(n, 0, tweak).await
    }

    /// Starts `n` members, and prepares `spares` more (m{n}..) that are not in `--peers` and
    /// not running: tests start them with [`TestCluster::start_member`] and add them.
    pub async fn start_with_spares(
        n: usize,
        spares: usize,
        tweak: impl Fn(&mut StoreConfig),
    ) -> TestCluster {
        let total = n + spares;
        let net = Net::default();
        let mut real = Vec::new();
        let mut proxies = Vec::new();
        for _ in 0..total {
            let addr = free_udp_addr();
            proxies.push(UdpProxy::start(addr, net.clone()).await);
            real.push(addr);
        }
        let peers: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                addr: proxies[i].addr().to_string(),
            })
            .collect();
        let mut configs = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..total {
            let dir = tempfile::tempdir().expect("temporary directory");
            let mut config = StoreConfig::new(&format!("m{i}"), dir.path(), real[i], TOKEN);
            config.advertise = proxies[i].addr().to_string();
            config.peers = peers.clone();
            config.heartbeat_interval_ms = 100;
            config.write_timeout = Duration::from_secs(5);
            tweak(&mut config);
            configs.push(config);
            dirs.push(dir);
        }
        let mut cluster = TestCluster {
            configs,
            members: (0..total).map(|_| None).collect(),
            dirs,
            net,
            proxies,
        };
        for i in 0..n {
            cluster.start_member(i).await;
        }
        cluster
    }

    pub async fn start_member(&mut self, i: usize) {
        let mut last = None;
        // The UDP port of a member just stopped may take a moment to be released.
        for _ in 0..50 {
            match Store::open(self.configs[i].clone()).await {
                Ok(store) => {
                    self.members[i] = Some(store);
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("member m{i} did not start: {last:?}");
    }

    pub fn store(&self, i: usize) -> &Store {
        self.members[i].as_ref().expect("member is running")
    }

    /// Stops member `i` (its directory stays).
    pub async fn stop(&mut self, i: usize) {
        if let Some(store) = self.members[i].take() {
            store.shutdown().await;
        }
    }

    /// Stops member `i` and deletes its data.
    pub async fn wipe(&mut self, i: usize) {
        self.stop(i).await;
        let dir = &self.configs[i].data_dir;
        std::fs::remove_dir_all(dir).expect("remove the member's directory");
        std::fs::create_dir_all(dir).expect("recreate the member's directory");
    }

    /// The index of the member that all running members agree leads.
    pub async fn leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            for store in self.members.iter().flatten() {
                if self.net.is_isolated(store.name()) {
                    continue;
                }
                leaders.push(store.status().await.leader);
            }
            if let Some(Some(name)) = leaders.first() {
                if leaders.iter().all(|l| l.as_deref() == Some(name.as_str())) {
                    let i = self.index_of(name);
                    if self.members[i].as_ref().is_some_and(|s| s.is_leader()) {
                        return i;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {timeout:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn index_of(&self, name: &str) -> usize {
        self.configs
            .iter()
            .position(|c| c.name == name)
            .expect("known member")
    }

    /// Cuts member `i` off from every other member (and from clients going through proxies).
    pub fn isolate(&self, i: usize) {
        self.net
            .isolate(&self.configs[i].name, self.configs[i].listen);
    }

    /// Cuts the link between members `i` and `j`; both still reach everyone else.
    pub fn cut(&self, i: usize, j: usize) {
        self.net.cut(self.configs[i].listen, self.configs[j].listen);
    }

    pub fn heal(&self) {
        self.net.heal();
    }

    /// A client that reaches the members through their proxies.
    pub fn client(&self) -> StoreClient {
        let endpoints = self.proxies.iter().map(|p| p.addr().to_string()).collect();
        StoreClient::new(endpoints, TOKEN).expect("client")
    }

    /// A client that talks to member `i` directly, bypassing its proxy.
    pub fn direct_client(&self, i: usize) -> StoreClient {
        StoreClient::new(vec![self.configs[i].listen.to_string()], TOKEN).expect("client")
    }

    /// Waits until every running member has applied up to `revision`.
    pub async fn wait_revision(&self, revision: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for (i, store) in self.members.iter().enumerate() {
            let Some(store) = store else { continue };
            while store.keyspace().revision() < revision {
                assert!(
                    Instant::now() < deadline,
                    "m{i} stuck at revision {} < {revision}",
                    store.keyspace().revision()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.members.len() {
            self.stop(i).await;
        }
    }
}

impl TestCluster {
    /// The member `i` as the cluster membership names it.
    pub fn member(&self, i: usize) -> Member {
        Member {
            name: self.configs[i].name.clone(),
            addr: self.proxies[i].addr().to_string(),
        }
    }
}
