//! The master's actors. So far the API server: Kubernetes' REST API over HTTPS on every
//! master, backed by the replicated store, with the cluster CA and admin credentials.
//!
//! Architecture invariant: the actors reach the store only through `keelson_raft::Store`;
//! they never name openraft or RocksDB types.

pub mod apiserver;
pub mod pki;

pub use apiserver::{ApiServer, ApiServerConfig, ApiServerError};
