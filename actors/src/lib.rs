//! The master's actors: the API server (Kubernetes' REST API over HTTPS on every master,
//! backed by the replicated store, with the cluster CA and admin credentials), and the control
//! plane — the scheduler, the controllers and the cloud controllers — supervised and run on
//! the master that holds the controller Lease.
//!
//! Architecture invariant: the actors reach the store only through `keelson_raft::Store`;
//! they never name openraft or RocksDB types. Control loops write only through
//! [`client::ApiClient`], the same path as HTTPS requests.

pub mod apiserver;
pub mod client;
pub mod cloud;
pub mod control_plane;
pub(crate) mod controllers;
pub mod events;
pub mod informer;
pub mod leader;
pub(crate) mod nodelink;
pub mod pki;
pub(crate) mod scheduler;
pub mod supervisor;
pub mod workqueue;

pub use apiserver::{
    ApiServer, ApiServerConfig, ApiServerError, NodePortRange, RangeError, ServiceIpRange,
    ServiceRanges,
};
pub use control_plane::{ControlPlane, ControlPlaneConfig};
pub use controllers::event_ttl::{EventTtl, EventTtlError};
