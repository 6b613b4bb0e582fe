//! The control: an etcd 3.4 cluster (Debian's `/usr/bin/etcd`) in the same network namespaces
//! the masters use, with a register client over its JSON gateway. The suite runs against it to
//! show that its checkers pass a store known to be linearizable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use serde_json::{json, Value};

use crate::client::{transport_error, ClientError, Register, Versioned};
use crate::net::Host;

/// Debian's etcd binary (package etcd-server).
pub const ETCD: &str = "/usr/bin/etcd";

/// How long a new cluster may take to accept its first write.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Every key the register writes lives under this prefix.
const KEY_PREFIX: &str = "jepsen/";

struct Member {
    name: String,
    host: Host,
    child: Option<Child>,
}

/// A running etcd cluster, one member per host. Dropping it kills every member.
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: PathBuf,
    initial_cluster: String,
}

impl EtcdCluster {
    /// Starts one member per host (data in `dir/eI`, logs in `dir/eI.log`) and waits until a
    /// write succeeds.
    pub async fn start(hosts: &[Host], dir: &Path) -> anyhow::Result<EtcdCluster> {
        if !Path::new(ETCD).exists() {
            bail!("no etcd at {ETCD}: apt-get install etcd-server");
        }
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let members: Vec<Member> = hosts
            .iter()
            .enumerate()
            .map(|(i, host)| Member {
                name: format!("e{i}"),
                host: host.clone(),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}:2380", m.name, m.host.ip))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            dir: dir.to_path_buf(),
            initial_cluster,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i)?;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            for host in hosts {
                let client = EtcdRegister::new(host, "probe", Duration::from_secs(2))?;
                match client.write("ready", 1).await {
                    Ok(()) => return Ok(cluster),
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!(
            "etcd did not accept a write within {START_TIMEOUT:?} (last error: {last}); see {}/e*.log",
            dir.display()
        )
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &self.members[i];
        let data = self.dir.join(&m.name);
        let log_path = self.dir.join(format!("{}.log", m.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let ip = m.host.ip;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", m.host.netns_path()))
            .arg("--")
            .arg(ETCD)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &format!("http://{ip}:2379")])
            .args(["--advertise-client-urls", &format!("http://{ip}:2379")])
            .args(["--listen-peer-urls", &format!("http://{ip}:2380")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{ip}:2380"),
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "jepsen"])
            // etcd 3.5's default, and what Keelson does: without it a leader cut off by a
            // partition campaigns at ever higher terms and, healed, deposes the new leader
            // (seen in CI: 5.5 s without a leader after the heal, past the recovery limit).
            .arg("--pre-vote")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start etcd member {}", m.name))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    fn signal(&self, i: usize, signal: nix::sys::signal::Signal) {
        // `nsenter` execs etcd: the child's pid is etcd's.
        if let Some(child) = &self.members[i].child {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
            }
        }
    }

    /// SIGKILLs member `i` and waits for it; its data directory stays.
    pub fn kill(&mut self, i: usize) {
        // A stopped process dies of SIGKILL too.
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts member `i` if it is not running, on its existing data directory.
    pub fn ensure_running(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(child) = &mut self.members[i].child {
            if matches!(child.try_wait(), Ok(None)) {
                return Ok(());
            }
            self.members[i].child = None;
        }
        self.spawn(i)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// The member id in a `/v3/maintenance/status` reply and the leader it reports.
async fn status(host: &Host) -> Option<(String, String)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .ok()?;
    let reply: Value = http
        .post(format!("http://{}:2379/v3/maintenance/status", host.ip))
        .json(&json!({}))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let member = reply["header"]["member_id"].as_str()?.to_string();
    let leader = reply["leader"].as_str()?.to_string();
    Some((member, leader))
}

#[async_trait::async_trait]
impl crate::nemesis::Db for EtcdCluster {
    fn hosts(&self) -> Vec<Host> {
        self.members.iter().map(|m| m.host.clone()).collect()
    }

    async fn leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leader = None;
        for m in &self.members {
            let answer = if m.child.is_some() {
                status(&m.host).await
            } else {
                None
            };
            if let Some((member, l)) = &answer {
                leader.get_or_insert(l.clone());
                ids.push(Some(member.clone()));
            } else {
                ids.push(None);
            }
        }
        let leader = leader?;
        ids.iter()
            .position(|id| id.as_deref() == Some(leader.as_str()))
    }

    fn kill(&mut self, i: usize) {
        EtcdCluster::kill(self, i);
    }

    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        self.ensure_running(i)
    }

    fn pause(&mut self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGSTOP);
    }

    fn resume(&mut self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGCONT);
    }

    fn skew_clock(&mut self, _i: usize, _seconds: i64) -> anyhow::Result<()> {
        bail!("not done for etcd")
    }

    async fn remove_member(&mut self, _i: usize) -> anyhow::Result<()> {
        bail!("not done for etcd")
    }

    async fn add_member(&mut self, _i: usize) -> anyhow::Result<()> {
        bail!("not done for etcd")
    }

    fn lose_unsynced(&mut self, _i: usize) -> anyhow::Result<String> {
        bail!("not done for etcd")
    }

    fn supports(&self, fault: crate::nemesis::Fault) -> Result<(), String> {
        use crate::nemesis::Fault;
        match fault {
            Fault::PartitionHalves
            | Fault::PartitionLeader
            | Fault::PartitionRing
            | Fault::PartitionBridge
            | Fault::Kill
            | Fault::Pause => Ok(()),
            Fault::Member | Fault::Clock | Fault::LoseUnsynced => {
                Err("not done for the etcd control".to_string())
            }
        }
    }
}

/// A register client of one etcd member over its JSON gateway (`/v3/` in etcd 3.4).
pub struct EtcdRegister {
    base: String,
    node: String,
    http: reqwest::Client,
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

impl EtcdRegister {
    pub fn new(host: &Host, name: &str, timeout: Duration) -> anyhow::Result<EtcdRegister> {
        // reqwest is built without a default TLS provider (the workspace picks ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .context("build HTTP client")?;
        Ok(EtcdRegister {
            base: format!("http://{}:2379", host.ip),
            node: name.to_string(),
            http,
        })
    }

    fn key(key: &str) -> String {
        b64(&format!("{KEY_PREFIX}{key}"))
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .map_err(|e| {
                // Without a connection the request was never sent.
                if e.is_connect() {
                    ClientError::Definite(transport_error(&e))
                } else {
                    ClientError::Indefinite(transport_error(&e))
                }
            })?;
        let code = response.status().as_u16();
        let reply: Value = response
            .json()
            .await
            .map_err(|e| ClientError::Indefinite(transport_error(&e)))?;
        if code >= 500 {
            return Err(ClientError::Indefinite(format!("{code}: {reply}")));
        }
        if code >= 400 {
            return Err(ClientError::Definite(format!("{code}: {reply}")));
        }
        Ok(reply)
    }

    fn put_body(key: &str, value: i64) -> Value {
        json!({"key": Self::key(key), "value": b64(&value.to_string())})
    }
}

/// The value and mod revision of the first kv in a range reply.
fn parse_range(reply: &Value) -> Result<Option<Versioned>, ClientError> {
    let Some(kv) = reply["kvs"].as_array().and_then(|kvs| kvs.first()) else {
        return Ok(None);
    };
    let bad = |what: &str| ClientError::Indefinite(format!("etcd returned {what}: {kv}"));
    let raw = kv["value"].as_str().unwrap_or("");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| bad("a value that is not base64"))?;
    let value = String::from_utf8_lossy(&bytes)
        .parse::<i64>()
        .map_err(|_| bad("a value that is not an integer"))?;
    let version = kv["mod_revision"]
        .as_str()
        .ok_or_else(|| bad("no mod_revision"))?
        .to_string();
    Ok(Some(Versioned { value, version }))
}

#[async_trait::async_trait]
impl Register for EtcdRegister {
    fn node(&self) -> &str {
        &self.node
    }

    async fn read(&self, key: &str) -> Result<Option<Versioned>, ClientError> {
        let reply = self
            .post("/v3/kv/range", &json!({"key": Self::key(key)}))
            .await?;
        parse_range(&reply)
    }

    async fn write(&self, key: &str, value: i64) -> Result<(), ClientError> {
        self.post("/v3/kv/put", &Self::put_body(key, value))
            .await
            .map(|_| ())
    }

    async fn cas(&self, key: &str, version: &str, to: i64) -> Result<bool, ClientError> {
        let body = json!({
            "compare": [{
                "target": "MOD",
                "key": Self::key(key),
                "mod_revision": version,
                "result": "EQUAL",
            }],
            "success": [{"request_put": Self::put_body(key, to)}],
        });
        let reply = self.post("/v3/kv/txn", &body).await?;
        Ok(reply["succeeded"].as_bool().unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::net::Net;

    #[test]
    fn parse_range_reads_value_and_mod_revision() {
        let cases = [
            (json!({"header": {}}), None),
            (
                json!({"kvs": [{"value": b64("5"), "mod_revision": "7"}]}),
                Some(Versioned {
                    value: 5,
                    version: "7".to_string(),
                }),
            ),
        ];
        for (reply, want) in cases {
            assert_eq!(parse_range(&reply).unwrap(), want, "{reply}");
        }
        assert!(parse_range(&json!({"kvs": [{"value": b64("x"), "mod_revision": "1"}]})).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd_register_reads_writes_and_cas_and_survives_a_kill() {
        assert!(
            Path::new(ETCD).exists(),
            "no etcd at {ETCD}: apt-get install etcd-server"
        );
        let mut net = Net::new().expect("network namespaces (run as root)");
        let hosts: Vec<Host> = (0..3)
            .map(|i| net.add_host(&format!("e{i}")).expect("host"))
            .collect();
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut cluster = EtcdCluster::start(&hosts, dir.path())
            .await
            .expect("etcd cluster");
        let timeout = Duration::from_secs(5);
        let c0 = EtcdRegister::new(&hosts[0], "e0", timeout).unwrap();
        let c1 = EtcdRegister::new(&hosts[1], "e1", timeout).unwrap();

        assert_eq!(c0.read("k").await.unwrap(), None);
        c0.write("k", 5).await.unwrap();
        let first = c1.read("k").await.unwrap().expect("written");
        assert_eq!(first.value, 5);
        assert!(c0.cas("k", &first.version, 6).await.unwrap());
        assert!(!c1.cas("k", &first.version, 7).await.unwrap());
        assert_eq!(c1.read("k").await.unwrap().map(|v| v.value), Some(6));

        crate::nemesis::Db::kill(&mut cluster, 0);
        // The killed member may have led: writes succeed again after an election.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while let Err(e) = c1.write("k", 8).await {
            assert!(
                std::time::Instant::now() < deadline,
                "no write with one member down: {e}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(c1.read("k").await.unwrap().map(|v| v.value), Some(8));
        assert!(matches!(c0.read("k").await, Err(ClientError::Definite(_))));
        crate::nemesis::Db::start(&mut cluster, 0).expect("restart");
        drop(cluster);
    }
}
