//! The system under test: `keelson master` processes, one per host (network namespace), that
//! the nemeses kill, restart, pause, skew and cut off, and the clients reach over HTTPS.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keelson_raft::StoreClient;

use crate::client::Api;
use crate::lazyfs::{self, LazyFs};
use crate::net::Host;

/// The token every master of a Jepsen cluster shares.
pub const TOKEN: &str = "jepsen-cluster-token-0123456789";

/// Where Debian's `faketime` package puts the library that skews a process's clock.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A master's QUIC port (store peers and nodes) and HTTPS port, on its host's address.
const PEER_PORT: u16 = 7000;
const API_PORT: u16 = 6443;
/// How long one membership change may take: a little over the store client's bound (75 s) for a
/// learner to catch up and the change to commit.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(80);

/// Log entries between snapshots: as often as before the masters' default grew to etcd's
/// 100,000, so runs keep building snapshots and installing them on members that fell behind
/// (faults around both found storage bugs).
const SNAPSHOT_ENTRIES: &str = "10000";

/// How a cluster is started.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The `keelson` binary.
    pub keelson: PathBuf,
    /// Extra `keelson master` arguments (e.g. `--unsafe-stale-reads`).
    pub master_args: Vec<String>,
    /// Start masters under libfaketime so their wall clocks can be skewed.
    pub skewable_clocks: bool,
    /// Put each master's store database (`db/`: the Raft log, vote and state machine) on a lazy
    /// filesystem that can lose unsynced writes.
    pub lazy_data: bool,
}

/// The store's RocksDB directory inside a master's data directory (see `raft/src/store.rs`).
const STORE_DIRS: [&str; 1] = ["db"];

/// One master.
pub struct Master {
    pub name: String,
    pub host: Host,
    pub dir: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// The lazy filesystems under its store directories, when asked for.
    lazy: Vec<LazyFs>,
}

impl Master {
    pub fn peer(&self) -> String {
        format!("{}:{PEER_PORT}", self.host.ip)
    }

    pub fn url(&self) -> String {
        format!("https://{}:{API_PORT}", self.host.ip)
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.host.ip
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.with_extension("log")
    }

    /// The file libfaketime reads this master's clock offset from (e.g. `+12s`).
    pub fn clock_file(&self) -> PathBuf {
        self.dir.with_extension("faketime")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// The masters of one run.
pub struct KeelsonCluster {
    pub masters: Vec<Master>,
    options: ClusterOptions,
    peers: String,
}

impl KeelsonCluster {
    /// Starts one master on each host, data under `dir`, and waits until all serve their API.
    pub async fn start(
        hosts: &[Host],
        dir: &Path,
        options: ClusterOptions,
    ) -> anyhow::Result<KeelsonCluster> {
        if !options.keelson.exists() {
            bail!(
                "no keelson binary at {} (build it with `cargo build`)",
                options.keelson.display()
            );
        }
        if options.skewable_clocks && !Path::new(LIBFAKETIME).exists() {
            bail!("clock skew needs {LIBFAKETIME}: apt-get install faketime");
        }
        let masters: Vec<Master> = hosts
            .iter()
            .enumerate()
            .map(|(i, host)| Master {
                name: format!("m{i}"),
                host: host.clone(),
                dir: dir.join(format!("m{i}")),
                child: None,
                paused: false,
                lazy: Vec::new(),
            })
            .collect();
        let peers: Vec<String> = masters
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer()))
            .collect();
        let mut cluster = KeelsonCluster {
            masters,
            options,
            peers: peers.join(","),
        };
        for i in 0..cluster.masters.len() {
            std::fs::create_dir_all(&cluster.masters[i].dir)?;
            if cluster.options.lazy_data {
                let m = &mut cluster.masters[i];
                for dir in STORE_DIRS {
                    let backing = m.dir.with_extension(format!("{dir}-backing"));
                    let mountpoint = m.dir.join(dir);
                    std::fs::create_dir_all(&backing)?;
                    std::fs::create_dir_all(&mountpoint)?;
                    let fs = lazyfs::mount(&backing, &mountpoint).with_context(|| {
                        format!("mount a lazy filesystem on {}", mountpoint.display())
                    })?;
                    m.lazy.push(fs);
                }
            }
            std::fs::write(cluster.masters[i].clock_file(), "+0\n")?;
            cluster.spawn(i)?;
        }
        for i in 0..cluster.masters.len() {
            cluster.wait_serving(i, Duration::from_secs(60)).await?;
        }
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.masters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.masters.is_empty()
    }

    /// Starts master `i`'s process (it must not be running).
    pub fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &self.masters[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.log_path())?;
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", m.host.netns_path()))
            .arg("--")
            .arg(&self.options.keelson)
            .args(["master", "--name", &m.name, "--peer", &m.peer()])
            .args(["--api", &format!("{}:{API_PORT}", m.host.ip)])
            .args(["--peers", &self.peers, "--token", TOKEN])
            .arg("--data-dir")
            .arg(&m.dir)
            .args(["--snapshot-entries", SNAPSHOT_ENTRIES])
            .args(&self.options.master_args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if self.options.skewable_clocks {
            // Only the wall clock is skewed: Raft's timers run on the monotonic clock, the
            // Leases that elect the controllers on wall-clock times.
            command
                .env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", m.clock_file())
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_CACHE_DURATION", "1");
        }
        let child = command.spawn().context("start keelson master")?;
        self.masters[i].child = Some(child);
        self.masters[i].paused = false;
        Ok(())
    }

    /// Waits until master `i` answers `/readyz` with 200.
    pub async fn wait_serving(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        self.wait_health(i, "/readyz", timeout).await
    }

    /// Waits until master `i` answers `/livez` (it runs, with or without a leader).
    pub async fn wait_live(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        self.wait_health(i, "/livez", timeout).await
    }

    async fn wait_health(&self, i: usize, path: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(api) = self.api(i, Duration::from_secs(2)) {
                if api
                    .send(reqwest::Method::GET, path, None)
                    .await
                    .is_ok_and(|r| r.code == 200)
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "master {} did not answer {path} in {timeout:?}; see {}",
                    self.masters[i].name,
                    self.masters[i].log_path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An API client of master `i` whose requests give up after `timeout`.
    pub fn api(&self, i: usize, timeout: Duration) -> anyhow::Result<Api> {
        let m = &self.masters[i];
        Api::from_kubeconfig(&m.dir.join("admin.kubeconfig"), &m.url(), &m.name, timeout)
    }

    /// A store client of every master (membership changes, leader and status).
    pub fn store(&self) -> anyhow::Result<StoreClient> {
        let endpoints = self.masters.iter().map(Master::peer).collect();
        Ok(StoreClient::new(endpoints, TOKEN)?)
    }

    /// The index of the master the others agree leads the store, if any answers.
    pub async fn leader(&self) -> Option<usize> {
        let store = self.store().ok()?;
        let statuses = tokio::time::timeout(Duration::from_secs(3), store.status_all())
            .await
            .ok()?;
        statuses
            .into_iter()
            .filter_map(|(_, status)| status.ok()?.leader)
            .find_map(|leader| self.masters.iter().position(|m| m.name == leader))
    }

    /// What each master says of the store: role, term, leader, voters (for error reports).
    pub async fn membership_views(&self) -> String {
        let Ok(store) = self.store() else {
            return "no store client".to_string();
        };
        let statuses = tokio::time::timeout(Duration::from_secs(5), store.status_all()).await;
        let Ok(statuses) = statuses else {
            return "status timed out".to_string();
        };
        statuses
            .into_iter()
            .map(|(endpoint, status)| match status {
                Ok(s) => format!(
                    "{} {} T{} leader {} voters [{}]{}",
                    s.name,
                    s.role,
                    s.term,
                    s.leader.as_deref().unwrap_or("none"),
                    s.members
                        .iter()
                        .filter(|m| m.voter)
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                    if s.joint { " (joint)" } else { "" }
                ),
                Err(e) => format!("{endpoint}: {e}"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// `kill -9` of master `i` (also when paused).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.masters[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.masters[i].paused = false;
    }

    /// Starts master `i` again if it is not running.
    pub fn ensure_running(&mut self, i: usize) -> anyhow::Result<()> {
        if self.masters[i].child.is_none() {
            self.spawn(i)?;
        }
        Ok(())
    }

    pub fn pause(&mut self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGSTOP);
        self.masters[i].paused = true;
    }

    pub fn resume(&mut self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGCONT);
        self.masters[i].paused = false;
    }

    fn signal(&self, i: usize, signal: nix::sys::signal::Signal) {
        // `nsenter` execs keelson: the child's pid is keelson's.
        if let Some(child) = &self.masters[i].child {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
            }
        }
    }

    /// Sets master `i`'s wall clock offset in seconds (libfaketime re-reads it each second).
    pub fn skew_clock(&self, i: usize, seconds: i64) -> anyhow::Result<()> {
        let offset = if seconds >= 0 {
            format!("+{seconds}s\n")
        } else {
            format!("{seconds}s\n")
        };
        std::fs::write(self.masters[i].clock_file(), offset)?;
        Ok(())
    }
}

impl Drop for KeelsonCluster {
    fn drop(&mut self) {
        for i in 0..self.masters.len() {
            self.kill(i);
            // Unmounted (flushing what is held) once the master is gone.
            for fs in self.masters[i].lazy.drain(..) {
                fs.unmount();
            }
        }
    }
}

#[async_trait::async_trait]
impl crate::nemesis::Db for KeelsonCluster {
    fn hosts(&self) -> Vec<Host> {
        self.masters.iter().map(|m| m.host.clone()).collect()
    }

    async fn leader(&self) -> Option<usize> {
        KeelsonCluster::leader(self).await
    }

    fn kill(&mut self, i: usize) {
        KeelsonCluster::kill(self, i);
    }

    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        self.ensure_running(i)
    }

    fn pause(&mut self, i: usize) {
        KeelsonCluster::pause(self, i);
    }

    fn resume(&mut self, i: usize) {
        KeelsonCluster::resume(self, i);
    }

    fn skew_clock(&mut self, i: usize, seconds: i64) -> anyhow::Result<()> {
        if !self.options.skewable_clocks {
            bail!("the masters were not started under libfaketime");
        }
        KeelsonCluster::skew_clock(self, i, seconds)
    }

    async fn remove_member(&mut self, i: usize) -> anyhow::Result<()> {
        let store = self.store()?;
        let name = self.masters[i].name.clone();
        let removed = tokio::time::timeout(MEMBERSHIP_TIMEOUT, store.remove_member(&name))
            .await
            .context("removing a member timed out")
            .and_then(|r| r.map_err(anyhow::Error::from));
        if let Err(e) = removed {
            bail!("{e:#}; members' views: {}", self.membership_views().await);
        }
        // A master restarted outside the membership must still start and serve (it forwards
        // to the leader the others name) so that it can be added back.
        KeelsonCluster::kill(self, i);
        self.spawn(i)?;
        self.wait_live(i, Duration::from_secs(30))
            .await
            .context("the removed master, restarted, did not serve")?;
        Ok(())
    }

    async fn add_member(&mut self, i: usize) -> anyhow::Result<()> {
        let store = self.store()?;
        let member = keelson_raft::Member {
            name: self.masters[i].name.clone(),
            addr: self.masters[i].peer(),
        };
        let added = tokio::time::timeout(MEMBERSHIP_TIMEOUT, store.add_member(member))
            .await
            .context("adding a member timed out")
            .and_then(|r| r.map_err(anyhow::Error::from));
        if let Err(e) = added {
            bail!("{e:#}; members' views: {}", self.membership_views().await);
        }
        Ok(())
    }

    fn lose_unsynced(&mut self, i: usize) -> anyhow::Result<String> {
        let m = &self.masters[i];
        if m.lazy.is_empty() {
            bail!("the masters' data is not on a lazy filesystem");
        }
        if m.child.is_some() {
            bail!(
                "master {} must be stopped before its unsynced writes are lost",
                m.name
            );
        }
        let lost: Vec<String> = m
            .lazy
            .iter()
            .map(|fs| fs.lose_unsynced().to_string())
            .collect();
        Ok(lost.join(", "))
    }

    fn supports(&self, fault: crate::nemesis::Fault) -> Result<(), String> {
        use crate::nemesis::Fault;
        match fault {
            Fault::PartitionRing if self.masters.len() < 5 => {
                Err("a majorities ring needs at least 5 masters".to_string())
            }
            Fault::Clock if !self.options.skewable_clocks => Err(format!(
                "the masters were not started under libfaketime ({LIBFAKETIME}: apt-get install faketime)"
            )),
            Fault::LoseUnsynced if !self.options.lazy_data => {
                Err("the masters' data is not on a lazy filesystem".to_string())
            }
            _ => Ok(()),
        }
    }
}
