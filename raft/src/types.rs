//! The openraft type configuration and the member description carried in membership entries.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandResponse};

/// A member's Raft id. Derived from the member's name (see [`member_id`]) so that every member
/// computes the same id for the same name from the shared `--peers` list.
pub type MemberId = u64;

openraft::declare_raft_types!(
    /// Keelson's Raft types: postcard-encoded [`Command`]s in the log, in-memory snapshot bytes.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = MemberId,
        Node = Member,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A store member as recorded in the cluster membership: its name and QUIC peer address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.addr)
    }
}

/// The Raft id of the member called `name`: FNV-1a over the name, never zero.
///
/// Stable across processes and versions, so the id needs no coordination and a member that is
/// removed and re-added under the same name keeps its id.
pub fn member_id(name: &str) -> MemberId {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = name
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    hash.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_stable_and_distinct() {
        assert_eq!(member_id("m1"), member_id("m1"));
        assert_ne!(member_id("m1"), member_id("m2"));
        assert_ne!(member_id(""), 0);
    }
}
