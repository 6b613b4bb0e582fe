//! Keelson's node agent. Until the QUIC transport lands it talks to a master's HTTPS API with
//! a kubeconfig; the only runtime is `hollow`: nodes that register, heartbeat and report pods
//! Running without running anything (as kubemark's hollow kubelets do), for tests and
//! benchmarks with many nodes.
//!
//! Architecture invariant: this crate depends on `keelson-api` only among Keelson's crates; it
//! knows the master solely through the Kubernetes HTTP API.

pub mod api;
pub mod hollow;
pub mod images;
pub mod kubeconfig;
pub mod kubelet;
pub mod pod_status;
pub mod runtime;

pub use api::{ApiClient, ApiError};
pub use hollow::{HollowConfig, HollowError};
pub use kubeconfig::{Kubeconfig, KubeconfigError};
