//! What `keelson store status` shows about a member and its cluster.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub name: String,
    pub addr: String,
    /// A voter (false: a learner still catching up).
    pub voter: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// The member that answered.
    pub name: String,
    pub leader: Option<String>,
    /// What this member is in Raft: leader, follower, candidate or learner.
    pub role: String,
    /// Whether the membership is a joint configuration (a change is under way or was cut off).
    pub joint: bool,
    pub term: u64,
    pub members: Vec<MemberStatus>,
    /// Whether this member has a log or vote (false: never initialized or joined).
    pub initialized: bool,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub revision: u64,
    pub compacted_revision: u64,
    pub db_size_bytes: u64,
    pub watchers: usize,
}
