//! The pod network of a node (what CNI's `bridge` + `host-local` plugins do): a bridge with the
//! first address of the node's pod CIDR, a veth pair per pod from the bridge to the pod's
//! network namespace (`eth0`, an address from [`ipam`], the bridge as default route), IP
//! forwarding, and masquerading of pod traffic that leaves the cluster CIDR.
//!
//! The pod CIDR comes from the Node object (the node controller allocates it); until it is
//! known, attaching fails with [`NetworkError::NotReady`] and pods wait. It is kept on disk so
//! that a restarted node serves its pods before it hears from a master.

pub mod ipam;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use ipam::Ipam;

/// The bridge pods are attached to.
pub const BRIDGE: &str = "keelson0";
/// The nftables table masquerading pod traffic that leaves the cluster.
pub const NAT_TABLE: &str = "keelson-pod-nat";
/// How much of a command's stderr an error keeps.
const STDERR_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("the pod network is not ready: the node has no podCIDR yet")]
    NotReady,
    #[error("no pod address left in {0}")]
    Exhausted(String),
    #[error("invalid CIDR {0:?}")]
    Cidr(String),
    #[error("the node's podCIDR changed from {old} to {new}; restart the node to use the new one")]
    CidrChanged { old: String, new: String },
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("{0}")]
    Io(String),
}

#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// Where the pod CIDR and the address reservations are kept.
    pub dir: PathBuf,
    /// All pods' addresses (every node's pod CIDR): traffic to it is not masqueraded.
    pub cluster_cidr: Ipv4Net,
    /// The bridge's name.
    pub bridge: String,
}

struct Ready {
    cidr: Ipv4Net,
    ipam: Ipam,
}

/// One node's pod network.
pub struct PodNetwork {
    config: NetworkConfig,
    ready: Mutex<Option<Ready>>,
    /// Turns true when `ready` is set.
    became_ready: tokio::sync::watch::Sender<bool>,
}

/// The host side of a sandbox's veth pair: `kv` and a hash of the id (names are 15 bytes).
pub fn host_veth(sandbox_id: &str) -> String {
    let digest = Sha256::digest(sandbox_id.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("kv{hex}")
}

/// Pure: the `ip -batch` commands that wire a pod's namespace to the bridge.
pub fn attach_commands(
    bridge: &str,
    veth: &str,
    netns: &str,
    ip: Ipv4Addr,
    cidr: Ipv4Net,
) -> (String, String) {
    let node_side = format!(
        "link add {veth} type veth peer name eth0 netns {netns}\n\
         link set {veth} master {bridge}\n\
         link set {veth} up\n"
    );
    let pod_side = format!(
        "link set lo up\n\
         addr add {ip}/{prefix} dev eth0\n\
         link set eth0 up\n\
         route add default via {gateway} dev eth0\n",
        prefix = cidr.prefix_len(),
        gateway = ipam::gateway(cidr),
    );
    (node_side, pod_side)
}

/// Pure: the masquerade table for pods of `pod_cidr` leaving `cluster_cidr` (one nft
/// transaction that replaces the table).
pub fn nat_ruleset(pod_cidr: Ipv4Net, cluster_cidr: Ipv4Net, bridge: &str) -> String {
    format!(
        "table ip {NAT_TABLE} {{}}\n\
         delete table ip {NAT_TABLE}\n\
         table ip {NAT_TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {pod_cidr} ip daddr != {cluster_cidr} oifname != \"{bridge}\" masquerade\n\
         \t}}\n\
         }}\n"
    )
}

fn io_error(what: &str, e: std::io::Error) -> NetworkError {
    NetworkError::Io(format!("{what}: {e}"))
}

/// Runs `program args`, feeding `input` to its stdin.
async fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<(), NetworkError> {
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| io_error(&command, e))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| io_error(&command, e))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| io_error(&command, e))?;
    if out.status.success() {
        return Ok(());
    }
    let mut message = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if message.len() > STDERR_MAX {
        let cut = (0..=STDERR_MAX)
            .rev()
            .find(|i| message.is_char_boundary(*i))
            .unwrap_or(0);
        message.truncate(cut);
    }
    Err(NetworkError::Command { command, message })
}

/// Pure: the interface names in `/proc/net/dev`'s text.
pub fn interfaces(proc_net_dev: &str) -> Vec<&str> {
    proc_net_dev
        .lines()
        .filter_map(|line| line.split_once(':').map(|(name, _)| name.trim()))
        .filter(|name| !name.contains(' ') && !name.contains('|'))
        .collect()
}

/// Whether this network namespace has the interface. `/proc/self/net` follows the process's
/// namespace (`/sys/class/net` follows the one sysfs was mounted in).
fn link_exists(name: &str) -> bool {
    std::fs::read_to_string("/proc/self/net/dev")
        .is_ok_and(|text| interfaces(&text).contains(&name))
}

/// Writes a sysctl under /proc/sys (e.g. `net/ipv4/ip_forward`); absent ones are skipped.
fn sysctl(key: &str, value: &str) -> Result<(), NetworkError> {
    let path = Path::new("/proc/sys").join(key);
    if !path.exists() {
        tracing::debug!(key, "no such sysctl; skipped");
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|e| io_error(&path.display().to_string(), e))
}

impl PodNetwork {
    /// A network that becomes ready with [`set_pod_cidr`](Self::set_pod_cidr), or at once when
    /// a pod CIDR was recorded by an earlier run (call [`restore`](Self::restore)).
    pub fn new(config: NetworkConfig) -> PodNetwork {
        PodNetwork {
            config,
            ready: Mutex::new(None),
            became_ready: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Turns true once the network is set up.
    pub fn ready_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.became_ready.subscribe()
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, Option<Ready>> {
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cidr_file(&self) -> PathBuf {
        self.config.dir.join("pod-cidr")
    }

    /// The pod CIDR in use, if any.
    pub fn pod_cidr(&self) -> Option<Ipv4Net> {
        self.ready().as_ref().map(|r| r.cidr)
    }

    /// Sets up the network with the pod CIDR an earlier run recorded, if any.
    pub async fn restore(&self) -> Result<(), NetworkError> {
        match std::fs::read_to_string(self.cidr_file()) {
            Ok(text) => self.set_pod_cidr(text.trim()).await,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("read the pod CIDR", e)),
        }
    }

    /// Sets up the bridge, forwarding and masquerading for `cidr` (idempotent). A different
    /// CIDR than the one in use is refused: pods hold addresses from the old one.
    pub async fn set_pod_cidr(&self, cidr: &str) -> Result<(), NetworkError> {
        let parsed: Ipv4Net = cidr
            .parse()
            .map_err(|_| NetworkError::Cidr(cidr.to_string()))?;
        let parsed = parsed.trunc();
        if let Some(current) = self.pod_cidr() {
            if current == parsed {
                return Ok(());
            }
            return Err(NetworkError::CidrChanged {
                old: current.to_string(),
                new: parsed.to_string(),
            });
        }
        self.set_up_bridge(parsed).await?;
        std::fs::create_dir_all(&self.config.dir)
            .map_err(|e| io_error("create the network directory", e))?;
        std::fs::write(self.cidr_file(), parsed.to_string())
            .map_err(|e| io_error("record the pod CIDR", e))?;
        let ipam = Ipam::open(&self.config.dir.join("ipam"), parsed)?;
        *self.ready() = Some(Ready { cidr: parsed, ipam });
        self.became_ready.send_replace(true);
        tracing::info!(pod_cidr = %parsed, bridge = %self.config.bridge, "pod network ready");
        Ok(())
    }

    async fn set_up_bridge(&self, cidr: Ipv4Net) -> Result<(), NetworkError> {
        let bridge = self.config.bridge.as_str();
        let gateway = format!("{}/{}", ipam::gateway(cidr), cidr.prefix_len());
        if !link_exists(bridge) {
            run("ip", &["link", "add", bridge, "type", "bridge"], None).await?;
        }
        run("ip", &["addr", "replace", &gateway, "dev", bridge], None).await?;
        run("ip", &["link", "set", bridge, "up"], None).await?;
        sysctl("net/ipv4/ip_forward", "1")?;
        // Bridged pod-to-pod replies must pass conntrack for services' DNAT to be undone.
        sysctl("net/bridge/bridge-nf-call-iptables", "1")?;
        let rules = nat_ruleset(cidr, self.config.cluster_cidr, bridge);
        if let Err(e) = crate::proxy::nft::Nft::new(None).apply(&rules).await {
            tracing::warn!(error = %e, "pods cannot reach outside the cluster: no masquerading");
        }
        Ok(())
    }

    /// Gives the sandbox's namespace (`ip netns` name) an `eth0` on the bridge; returns its
    /// address. Idempotent for a sandbox already attached.
    pub async fn attach(&self, sandbox_id: &str, netns: &str) -> Result<Ipv4Addr, NetworkError> {
        let (cidr, ip) = {
            let ready = self.ready();
            let ready = ready.as_ref().ok_or(NetworkError::NotReady)?;
            (ready.cidr, ready.ipam.reserve(sandbox_id)?)
        };
        let veth = host_veth(sandbox_id);
        if link_exists(&veth) {
            return Ok(ip);
        }
        let (node_side, pod_side) = attach_commands(&self.config.bridge, &veth, netns, ip, cidr);
        let wired = async {
            run("ip", &["-batch", "-"], Some(&node_side)).await?;
            run("ip", &["-n", netns, "-batch", "-"], Some(&pod_side)).await
        };
        if let Err(e) = wired.await {
            let _ = run("ip", &["link", "delete", &veth], None).await;
            self.release(sandbox_id);
            return Err(e);
        }
        Ok(ip)
    }

    /// Releases the sandbox's address (its veth goes with its namespace).
    pub fn detach(&self, sandbox_id: &str) -> Result<(), NetworkError> {
        match self.ready().as_ref() {
            Some(ready) => ready.ipam.release(sandbox_id),
            None => Ok(()),
        }
    }

    fn release(&self, sandbox_id: &str) {
        if let Err(e) = self.detach(sandbox_id) {
            tracing::warn!(sandbox = sandbox_id, error = %e, "cannot release a pod address");
        }
    }

    /// Releases the addresses of sandboxes that no longer exist (a crash between reserving and
    /// recording the sandbox).
    pub fn release_all_but(&self, live: &BTreeSet<String>) -> Result<usize, NetworkError> {
        match self.ready().as_ref() {
            Some(ready) => ready.ipam.release_all_but(live),
            None => Ok(0),
        }
    }
}

/// How soon the Node is read again while it has no pod CIDR yet: the node controller assigns
/// one moments after the node registers, so the first looks after registration come quickly,
/// then every second.
const POD_CIDR_POLL_FIRST: std::time::Duration = std::time::Duration::from_millis(50);
const POD_CIDR_POLL: std::time::Duration = std::time::Duration::from_secs(1);
/// How soon the Node is read again while it is not registered yet (the kubelet registers it
/// concurrently): the quick looks above start from its registration.
const POD_CIDR_POLL_UNREGISTERED: std::time::Duration = std::time::Duration::from_millis(100);

/// Reads the Node until the node controller has given it a pod CIDR, and sets the network up
/// with it; returns then (a node's pod CIDR does not change), or at `stop`.
pub async fn follow_pod_cidr(
    api: crate::ApiClient,
    node_name: String,
    network: std::sync::Arc<PodNetwork>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let path = format!("/api/v1/nodes/{node_name}");
    let mut poll = POD_CIDR_POLL_FIRST;
    loop {
        match api
            .request(reqwest::Method::GET, &path, "application/json", None)
            .await
        {
            Ok(node) => {
                if let Some(cidr) = node.pointer("/spec/podCIDR").and_then(|c| c.as_str()) {
                    match network.set_pod_cidr(cidr).await {
                        Ok(()) => return,
                        Err(e @ NetworkError::CidrChanged { .. }) => {
                            tracing::error!(error = %e, "pods keep their old addresses");
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot set up the pod network"),
                    }
                }
            }
            Err(e) if e.is_not_found() => {
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(POD_CIDR_POLL_UNREGISTERED) => {}
                }
                poll = POD_CIDR_POLL_FIRST;
                continue;
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the node for its podCIDR"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(poll) => {}
        }
        poll = (poll * 2).min(POD_CIDR_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_are_read_from_proc_net_dev() {
        let text = "Inter-|   Receive                            |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes\n    \
                    lo:  1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n keelson0: 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(interfaces(text), vec!["lo", "keelson0"]);
    }

    #[test]
    fn host_veth_names_fit_and_differ() {
        let a = host_veth("k-0123456789abcdef");
        let b = host_veth("k-0123456789abcdee");
        assert!(a.len() <= 15 && a.starts_with("kv"), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn attach_commands_wire_the_pod_to_the_bridge() {
        let cidr: Ipv4Net = "10.244.3.0/24".parse().unwrap();
        let (node, pod) = attach_commands(
            "keelson0",
            "kvabc",
            "keelson-k-1",
            "10.244.3.7".parse().unwrap(),
            cidr,
        );
        assert!(node.contains("link add kvabc type veth peer name eth0 netns keelson-k-1"));
        assert!(node.contains("link set kvabc master keelson0"));
        assert!(pod.contains("addr add 10.244.3.7/24 dev eth0"));
        assert!(pod.contains("route add default via 10.244.3.1 dev eth0"));
    }

    #[test]
    fn nat_masquerades_only_traffic_leaving_the_cluster() {
        let rules = nat_ruleset(
            "10.244.3.0/24".parse().unwrap(),
            "10.244.0.0/16".parse().unwrap(),
            "keelson0",
        );
        assert!(rules.contains(
            "ip saddr 10.244.3.0/24 ip daddr != 10.244.0.0/16 oifname != \"keelson0\" masquerade"
        ));
        assert!(rules.starts_with("table ip keelson-pod-nat {}\ndelete table ip keelson-pod-nat"));
    }
}
