//! The messages members exchange over QUIC, and that clients send to members: one request
//! frame per stream, answered by one response frame (a watch by a frame per batch); small
//! writes share a multiplexed stream instead (see `transport::mux`).

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandResponse, Event, RangeRequest, RangeResponse, WatchRequest};
use crate::error::WireError;
use crate::pre_vote::PreVoteRequest;
use crate::status::StoreStatus;
use crate::types::{Member, MemberId, TypeConfig};

/// How many times a request may be forwarded towards the leader before it is refused.
pub(crate) const FORWARD_HOPS_MAX: u8 = 2;

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<MemberId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A replicated write, from a client or forwarded by a follower.
    Write {
        command: Command,
        hops: u8,
    },
    Range {
        request: RangeRequest,
        hops: u8,
    },
    Watch(WatchRequest),
    Status,
    AddMember {
        member: Member,
        hops: u8,
    },
    RemoveMember {
        name: String,
        hops: u8,
    },
    /// Would this member vote for the candidate now? (See `pre_vote`.)
    PreVote(PreVoteRequest),
    /// Opens a stream that carries many requests, each with an id (see `transport::mux`).
    Multiplexed,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    AppendEntries(Result<AppendEntriesResponse<MemberId>, RaftError<MemberId>>),
    Vote(Result<VoteResponse<MemberId>, RaftError<MemberId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<MemberId>, RaftError<MemberId, InstallSnapshotError>>,
    ),
    Write(Result<CommandResponse, WireError>),
    Range(Result<RangeResponse, WireError>),
    /// The first frame of a watch: the revision it starts at (a start of 0, "from now",
    /// resolved), so a client resuming elsewhere misses nothing.
    WatchStarted {
        start_revision: u64,
    },
    /// One batch of a watch; an error ends the stream.
    Watch(Result<Vec<Event>, WireError>),
    Status(Result<StoreStatus, WireError>),
    Membership(Result<(), WireError>),
    /// Whether it would grant the vote.
    PreVote(bool),
    /// The request could not be understood or was not allowed.
    Refused(WireError),
}
