//! Keelson's node agent. It talks to the masters over its QUIC link (`link`, joined with a
//! join token) or their HTTPS API with a kubeconfig; the only runtime so far is `hollow`: nodes that register, heartbeat and report pods
//! Running without running anything (as kubemark's hollow kubelets do), for tests and
//! benchmarks with many nodes.
//!
//! Architecture invariant: this crate depends on `keelson-api` only among Keelson's crates; it
//! knows the master solely through the Kubernetes HTTP API (over HTTPS, or carried by the
//! node link's streams).

pub mod api;
pub mod dns;
pub mod hollow;
pub mod images;
pub mod kubeconfig;
pub mod kubelet;
pub mod link;
pub mod monitoring;
pub mod network;
pub mod pod_status;
pub mod proxy;
pub mod runtime;

pub use api::{ApiClient, ApiError};
pub use dns::{ClusterDns, DnsConfig, DnsError};
pub use hollow::{HollowConfig, HollowError};
pub use kubeconfig::{Kubeconfig, KubeconfigError};
pub use link::{CallbackError, Callbacks, LinkError, LogStream, NodeLink};
