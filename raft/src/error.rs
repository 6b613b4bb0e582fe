//! The errors the store reports to its users, and their form on the wire between members.

use serde::{Deserialize, Serialize};

use crate::keyspace::KeyspaceError;
use crate::watch::WatchError;

/// What went wrong with a store operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The request itself is wrong (too large, empty key, ...); retrying will not help.
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("revision {requested} has been compacted (oldest available: {compacted})")]
    Compacted { requested: u64, compacted: u64 },
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision { requested: u64, current: u64 },
    /// No leader is known (election in progress, or no quorum); nothing was written.
    #[error("no leader: {0}")]
    NoLeader(String),
    /// The write may or may not have been committed (e.g. a timeout after it was sent).
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The member could not be reached; the request was not delivered.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("watch ended: {0}")]
    Watch(WatchError),
    #[error("the store is shutting down")]
    Shutdown,
}

impl StoreError {
    /// Whether the same request may succeed if sent again, to this or another member.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::NoLeader(_) | StoreError::Unavailable(_) | StoreError::Shutdown
        )
    }
}

impl From<KeyspaceError> for StoreError {
    fn from(e: KeyspaceError) -> Self {
        match e {
            KeyspaceError::Compacted {
                requested,
                compacted,
            } => StoreError::Compacted {
                requested,
                compacted,
            },
            KeyspaceError::FutureRevision { requested, current } => {
                StoreError::FutureRevision { requested, current }
            }
            other => StoreError::Storage(other.to_string()),
        }
    }
}

impl From<WatchError> for StoreError {
    fn from(e: WatchError) -> Self {
        match e {
            WatchError::Compacted {
                requested,
                compacted,
            } => StoreError::Compacted {
                requested,
                compacted,
            },
            other => StoreError::Watch(other),
        }
    }
}

/// [`StoreError`] as members send it to each other and to clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireError {
    Invalid(String),
    Compacted { requested: u64, compacted: u64 },
    FutureRevision { requested: u64, current: u64 },
    NoLeader(String),
    Unknown(String),
    Unavailable(String),
    Unauthenticated(String),
    Storage(String),
    WatchOverflowed(usize),
    WatchReset,
    WatchClosed,
    Shutdown,
}

impl From<StoreError> for WireError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(m) => WireError::Invalid(m),
            StoreError::Compacted {
                requested,
                compacted,
            } => WireError::Compacted {
                requested,
                compacted,
            },
            StoreError::FutureRevision { requested, current } => {
                WireError::FutureRevision { requested, current }
            }
            StoreError::NoLeader(m) => WireError::NoLeader(m),
            StoreError::Unknown(m) => WireError::Unknown(m),
            StoreError::Unavailable(m) => WireError::Unavailable(m),
            StoreError::Unauthenticated(m) => WireError::Unauthenticated(m),
            StoreError::Storage(m) => WireError::Storage(m),
            StoreError::Watch(WatchError::Overflowed(n)) => WireError::WatchOverflowed(n),
            StoreError::Watch(WatchError::Reset) => WireError::WatchReset,
            StoreError::Watch(WatchError::Closed) => WireError::WatchClosed,
            StoreError::Watch(WatchError::Compacted {
                requested,
                compacted,
            }) => WireError::Compacted {
                requested,
                compacted,
            },
            StoreError::Watch(WatchError::Storage(m)) => WireError::Storage(m),
            StoreError::Shutdown => WireError::Shutdown,
        }
    }
}

impl From<WireError> for StoreError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Invalid(m) => StoreError::Invalid(m),
            WireError::Compacted {
                requested,
                compacted,
            } => StoreError::Compacted {
                requested,
                compacted,
            },
            WireError::FutureRevision { requested, current } => {
                StoreError::FutureRevision { requested, current }
            }
            WireError::NoLeader(m) => StoreError::NoLeader(m),
            WireError::Unknown(m) => StoreError::Unknown(m),
            WireError::Unavailable(m) => StoreError::Unavailable(m),
            WireError::Unauthenticated(m) => StoreError::Unauthenticated(m),
            WireError::Storage(m) => StoreError::Storage(m),
            WireError::WatchOverflowed(n) => StoreError::Watch(WatchError::Overflowed(n)),
            WireError::WatchReset => StoreError::Watch(WatchError::Reset),
            WireError::WatchClosed => StoreError::Watch(WatchError::Closed),
            WireError::Shutdown => StoreError::Shutdown,
        }
    }
}
