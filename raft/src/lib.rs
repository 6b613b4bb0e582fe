//! Keelson's replicated key-value store: openraft on RocksDB, with etcd-like MVCC revisions,
//! transactions, range reads at a revision, watch from a revision, and compaction.
//!
//! Architecture invariant: this crate knows nothing about Kubernetes objects. Keys and values
//! are bytes, and no other crate names openraft or RocksDB types.

// openraft's `StorageError` is large and its traits return it; boxing it here would only move
// the allocation.
#![allow(clippy::result_large_err)]

mod client;
mod codec;
pub mod command;
mod db;
mod error;
mod keyspace;
mod log_growth;
mod log_store;
mod metrics;
mod network;
mod newest;
mod pre_vote;
mod proposer;
mod protocol;
mod read_index;
mod state_machine;
mod status;
mod store;
mod transport;
mod types;
mod watch;

pub use client::{ClientWatch, StoreClient};
pub use error::StoreError;
pub use status::{MemberStatus, StoreStatus};
pub use store::{Store, StoreConfig, UnsafeMode};

pub use command::{
    Check, Command, CommandResponse, Compare, Consistency, Event, EventKind, KeyRange, KeyValue,
    Op, OpResult, RangeRequest, RangeResponse, Txn, TxnResponse, WatchRequest,
};
pub use keyspace::KeyspaceError;
pub use types::{member_id, Member, MemberId, TypeConfig};
pub use watch::{WatchError, WatchStream};

/// The storage layer on its own, for openraft's conformance suite and tools that open a
/// member's directory offline.
pub mod storage {
    pub use crate::db::{close, open};
    pub use crate::keyspace::Keyspace;
    pub use crate::log_store::{DurableSnapshot, LogStore};
    pub use crate::state_machine::{SnapshotBuilder, StateMachineStore};
}

/// Raw peer-protocol access, for tests that send peers malformed or unauthenticated messages.
pub mod wire {
    pub use crate::protocol::{PeerRequest, PeerResponse};
    pub use crate::transport::{encode_frame, Transport, TransportError, FRAME_BYTES_MAX};
}
