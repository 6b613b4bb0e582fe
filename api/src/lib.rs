//! Keelson's object model: the Kubernetes kinds it serves (types from `k8s-openapi`), the
//! registry of resources, defaulting and validation, label and field selectors, patches,
//! server-side tables and the `Status` error.
//!
//! Architecture invariant: this crate does no I/O. It knows nothing about the store, HTTP or
//! QUIC; the API actor and the clients build on it.

pub use k8s_openapi;

pub mod defaults;
pub mod node_link;
pub mod object;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod selectors;
pub mod status;
pub mod table;
pub mod validation;
