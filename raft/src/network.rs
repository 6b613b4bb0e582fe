//! openraft's network over the QUIC [`Transport`].

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::protocol::{PeerRequest, PeerResponse};
use crate::transport::{Transport, TransportError};
use crate::types::{Member, MemberId, TypeConfig};

pub(crate) struct Network {
    transport: Arc<Transport>,
}

impl Network {
    pub(crate) fn new(transport: Arc<Transport>) -> Self {
        Network { transport }
    }
}

pub(crate) struct PeerLink {
    transport: Arc<Transport>,
    target: MemberId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: MemberId, node: &Member) -> PeerLink {
        PeerLink {
            transport: self.transport.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<MemberId, Member, RaftError<MemberId, E>>>;

fn unexpected<E: std::error::Error>(response: &PeerResponse) -> RPCError<MemberId, Member, E> {
    let message = match response {
        PeerResponse::Refused(e) => format!("peer refused the request: {e:?}"),
        other => format!("unexpected answer: {other:?}"),
    };
    RPCError::Network(NetworkError::new(&std::io::Error::other(message)))
}

fn transport_error<E: std::error::Error>(e: TransportError) -> RPCError<MemberId, Member, E> {
    match e {
        TransportError::NotSent { .. } | TransportError::Unauthenticated { .. } => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

impl PeerLink {
    async fn call(
        &self,
        request: &PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, TransportError> {
        let timeout = option.hard_ttl().max(Duration::from_millis(50));
        self.transport.call(&self.addr, request, timeout).await
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<MemberId>> {
        let entries = rpc.entries.len();
        let request = PeerRequest::AppendEntries(rpc);
        match self.call(&request, &option).await {
            Ok(PeerResponse::AppendEntries(Ok(response))) => Ok(response),
            Ok(PeerResponse::AppendEntries(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(unexpected(&other)),
            // Ask openraft to send fewer entries per message.
            Err(TransportError::TooLarge(_)) if entries > 1 => Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint((entries / 2) as u64),
            )),
            Err(e) => Err(transport_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<MemberId>, InstallSnapshotError> {
        match self.call(&PeerRequest::InstallSnapshot(rpc), &option).await {
            Ok(PeerResponse::InstallSnapshot(Ok(response))) => Ok(response),
            Ok(PeerResponse::InstallSnapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(transport_error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<MemberId>> {
        match self.call(&PeerRequest::Vote(rpc), &option).await {
            Ok(PeerResponse::Vote(Ok(response))) => Ok(response),
            Ok(PeerResponse::Vote(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(transport_error(e)),
        }
    }
}
