//! The node's service proxy (kube-proxy): makes ClusterIP:port, NodeIP:nodePort and
//! load-balancer IP:port reach a Service's ready endpoints. With root and `nft` it programs
//! the table `ip keelson-proxy` (see `rules`); otherwise it forwards node ports in user space.
//!
//! Architecture invariant: the table survives the proxy (it is not flushed on exit) and is
//! replaced atomically when the proxy starts again, so services keep working across restarts.

pub mod cache;
pub mod nft;
pub mod rules;
pub mod services;
pub mod userspace;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::ApiClient;
pub use cache::{ServiceCache, ServiceSnapshot};

/// The first and the longest wait before a failed `nft` apply is tried again.
const APPLY_RETRY_FIRST: Duration = Duration::from_millis(200);
const APPLY_RETRY_MAX: Duration = Duration::from_secs(5);

/// How the proxy forwards traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// nftables when running as root with a working `nft`, else user space.
    Auto,
    Nftables,
    Userspace,
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The node's addresses; node ports are served on these (every local address when empty).
    pub node_ips: Vec<IpAddr>,
    /// The pods' CIDR; ClusterIP traffic from outside it is masqueraded.
    pub cluster_cidr: String,
    pub mode: ProxyMode,
    /// The network namespace to program (tests); the proxy's own when `None`.
    pub netns: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("nftables mode was asked for, but nft cannot be used here (run as root with nftables installed)")]
    NftUnavailable,
    #[error(transparent)]
    Userspace(#[from] userspace::UserspaceError),
}

/// The proxy of one node.
pub struct Proxy {
    cache: ServiceCache,
    config: ProxyConfig,
}

impl Proxy {
    pub fn new(api: ApiClient, config: ProxyConfig) -> Proxy {
        Proxy {
            cache: ServiceCache::new(api),
            config,
        }
    }

    /// The snapshots of Services and Endpoints the proxy acts on (for cluster DNS too).
    pub fn subscribe(&self) -> watch::Receiver<Arc<ServiceSnapshot>> {
        self.cache.subscribe()
    }

    /// Runs until `stop` turns true. The nftables rules are left in place on return.
    pub async fn run(self, stop: watch::Receiver<bool>) -> Result<(), ProxyError> {
        let nft = nft::Nft::new(self.config.netns.clone());
        let use_nft = match self.config.mode {
            ProxyMode::Userspace => false,
            ProxyMode::Nftables => {
                if !nft.available().await {
                    return Err(ProxyError::NftUnavailable);
                }
                true
            }
            ProxyMode::Auto => is_root() && nft.available().await,
        };
        tracing::info!(
            mode = if use_nft { "nftables" } else { "userspace" },
            "starting the service proxy"
        );
        crate::monitoring::register();
        let snapshots = self.cache.subscribe();
        let cache = tokio::spawn(self.cache.run(stop.clone()));
        let result = if use_nft {
            if is_root() {
                enable_forwarding(self.config.netns.as_deref()).await;
            }
            run_nftables(nft, &self.config, snapshots, stop).await;
            Ok(())
        } else {
            userspace::run(snapshots, stop)
                .await
                .map_err(ProxyError::from)
        };
        cache.abort();
        result
    }
}

async fn run_nftables(
    mut nft: nft::Nft,
    config: &ProxyConfig,
    mut snapshots: watch::Receiver<Arc<ServiceSnapshot>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut retry: Option<Duration> = None;
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if snapshot.synced {
            let started = std::time::Instant::now();
            let text = rules::ruleset(&snapshot, &config.node_ips, &config.cluster_cidr);
            let applied = nft.apply(&text).await;
            crate::monitoring::record_proxy_sync(started.elapsed(), applied.is_ok());
            match applied {
                Ok(applied) => {
                    if applied {
                        tracing::debug!(
                            services = snapshot.services.len(),
                            "applied the service rules"
                        );
                    }
                    retry = None;
                }
                Err(e) => {
                    let wait = retry.map_or(APPLY_RETRY_FIRST, |w| (w * 2).min(APPLY_RETRY_MAX));
                    tracing::warn!(error = %e, ?wait, "cannot apply the service rules; retrying");
                    retry = Some(wait);
                }
            }
        }
        let wait = retry.unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = stop.changed() => return,
            changed = snapshots.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(wait) => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `net.ipv4.ip_forward=1` and `net.bridge.bridge-nf-call-iptables=1` (the latter only where
/// br_netfilter is loaded); failures are logged.
async fn enable_forwarding(netns: Option<&str>) {
    for path in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/bridge/bridge-nf-call-iptables",
    ] {
        let result = match netns {
            None if !std::path::Path::new(path).exists() => Ok(()),
            None => tokio::fs::write(path, b"1\n")
                .await
                .map_err(|e| e.to_string()),
            Some(ns) => tokio::process::Command::new("ip")
                .args(["netns", "exec", ns, "sh", "-c"])
                .arg(format!("test ! -e {path} || echo 1 > {path}"))
                .status()
                .await
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    if s.success() {
                        Ok(())
                    } else {
                        Err(format!("exited with {s}"))
                    }
                }),
        };
        if let Err(e) = result {
            tracing::warn!(path, error = %e, "cannot enable forwarding");
        }
    }
}
