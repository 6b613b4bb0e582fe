//! Cluster DNS add-on: every node serves the cluster's names at a node-local address (like
//! Kubernetes' NodeLocal DNSCache), answering from an in-memory table built from the cluster's
//! Services and Endpoints and forwarding every other name to the node's upstream resolvers.
//!
//! `records` is the pure core (lists in, answers out); `server` is the UDP/TCP I/O around it
//! (hickory-server) and the bounded forwarder; `resolv_conf` reads the node's resolv.conf and
//! writes pods' ones.
//!
//! Architecture invariant: this module knows nothing of how Services and Endpoints are watched;
//! its owner calls [`ClusterDns::update`] with full lists whenever they change.

mod records;
mod resolv_conf;
mod server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use hickory_proto::rr::Name;
use hickory_proto::ProtoError;
use serde_json::Value;
use tokio::sync::{watch, Semaphore};

pub use resolv_conf::{upstreams_from_resolv_conf, UPSTREAMS_MAX};

use records::Table;

/// At most this many questions are being forwarded upstream at once; more wait (within the
/// forward timeout) for a slot.
pub const FORWARDS_CONCURRENT_MAX: usize = 128;

/// How the cluster DNS server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The zone answered from the table, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// Where names outside the cluster domain are forwarded, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// TTL of the cluster's records (and of negative answers).
    pub ttl_secs: u32,
}

/// Errors of the cluster DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("invalid cluster domain {domain:?}: {reason}")]
    Domain { domain: String, reason: String },
    #[error("binding dns {protocol} socket {addr}: {source}")]
    Bind {
        protocol: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("dns server failed: {0}")]
    Serve(#[source] ProtoError),
}

/// The cluster DNS server: a table swapped whole on each [`update`](Self::update), served by
/// [`serve`](Self::serve). Cheap to share behind an `Arc`.
pub struct ClusterDns {
    shared: Arc<Shared>,
}

/// What the request handler shares with [`ClusterDns`].
struct Shared {
    zone: Name,
    ttl_secs: u32,
    upstreams: Vec<SocketAddr>,
    table: RwLock<Arc<Table>>,
    /// The SOA serial: bumped on each update.
    serial: AtomicU32,
    forward_permits: Semaphore,
}

impl Shared {
    fn table(&self) -> Arc<Table> {
        // A poisoned lock only means a writer panicked between whole-table swaps; the table
        // in it is still a complete one.
        match self.table.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ClusterDns {
    /// A server with an empty table (every cluster name is NXDOMAIN until the first update).
    pub fn new(config: DnsConfig) -> Result<ClusterDns, DnsError> {
        let invalid = |reason: String| DnsError::Domain {
            domain: config.cluster_domain.clone(),
            reason,
        };
        let zone = Name::from_ascii(&config.cluster_domain).map_err(|e| invalid(e.to_string()))?;
        let zone = records::fqdn_lower(&zone);
        if zone.is_root() {
            return Err(invalid(
                "the root zone would leave nothing to forward".to_owned(),
            ));
        }
        let table = Table::build(&zone, config.ttl_secs, 1, &[], &[]);
        Ok(ClusterDns {
            shared: Arc::new(Shared {
                zone,
                ttl_secs: config.ttl_secs,
                upstreams: config.upstreams,
                table: RwLock::new(Arc::new(table)),
                serial: AtomicU32::new(1),
                forward_permits: Semaphore::new(FORWARDS_CONCURRENT_MAX),
            }),
        })
    }

    /// Rebuilds the table from full lists of Services and Endpoints (Kubernetes JSON) and swaps
    /// it in; answers change from the next question on. Bad objects are logged and skipped.
    pub fn update(&self, services: &[Value], endpoints: &[Value]) {
        let serial = self
            .shared
            .serial
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        let table = Table::build(
            &self.shared.zone,
            self.shared.ttl_secs,
            serial,
            services,
            endpoints,
        );
        let table = Arc::new(table);
        match self.shared.table.write() {
            Ok(mut guard) => *guard = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
    }

    /// Serves DNS on `addr` over UDP and TCP until `stop` turns true (or its sender is
    /// dropped). `addr` itself is removed from the upstreams, so that a resolv.conf naming
    /// this server does not make it forward to itself.
    pub async fn serve(
        &self,
        addr: SocketAddr,
        stop: watch::Receiver<bool>,
    ) -> Result<(), DnsError> {
        server::serve(self.shared.clone(), addr, stop).await
    }
}

#[cfg(test)]
mod tests;
