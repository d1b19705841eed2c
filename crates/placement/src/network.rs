//! Raft's network over the mesh: every Raft message (and every write a node forwards to the
//! leader) is one request-response exchange on `/mycel/placement/1`, in versioned CBOR.

// openraft's `RPCError` is large, and the trait's signatures fix it: boxing is not ours to choose.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use mycel_mesh::{MAX_PLACEMENT_FRAME_BYTES, MeshHandle, PlacementFrame};
use mycel_protocol::{
    PeerId,
    placement::{LoadReport, MAX_LOAD_APPS, WriteError, WriteOutcome, WriteRequest},
};
use openraft::{
    error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable},
    network::{RPCOption, RaftNetwork, RaftNetworkFactory},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use serde::{Deserialize, Serialize};

use crate::{NodeId, TypeConfig, storage::LOCAL_RECORD_LIMIT, types::Member};

/// A request on the placement protocol.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client's write, forwarded to the node the sender believes leads.
    Write(WriteRequest),
    /// What the sender saw of the apps' load, for the leader's autoscaler.
    Load(LoadReport),
}

/// The answer to an [`Rpc`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RpcReply {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Write(Result<WriteOutcome, WriteError>),
    /// Whether the load report was taken (false: the receiver does not lead).
    Load(bool),
    /// The request was malformed or not the sender's to make.
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// No connection could be made: the request was never sent.
    #[error("{0}")]
    NotSent(String),
    /// Sent, but the exchange failed: the peer may have acted on it.
    #[error("{0}")]
    Unreachable(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("bad reply: {0}")]
    BadReply(String),
}

/// Decodes a peer's placement frame. Beyond the frame's own limit, a snapshot chunk must end
/// within the largest snapshot a node reads back: openraft writes a chunk at the offset it names
/// into a buffer in memory, so an offset of 2^40 would have it allocate a terabyte.
pub(crate) fn decode_rpc(frame: &[u8]) -> Result<Rpc, String> {
    let rpc: Rpc =
        mycel_protocol::decode(frame, MAX_PLACEMENT_FRAME_BYTES).map_err(|e| e.to_string())?;
    if let Rpc::Load(report) = &rpc
        && report.apps.len() > MAX_LOAD_APPS
    {
        return Err(format!(
            "a load report names {} apps, at most {MAX_LOAD_APPS}",
            report.apps.len()
        ));
    }
    if let Rpc::Snapshot(request) = &rpc {
        let end = request.offset.checked_add(request.data.len() as u64);
        if end.is_none_or(|end| end > LOCAL_RECORD_LIMIT as u64) {
            return Err(format!(
                "a snapshot chunk at offset {} ends past the largest snapshot ({LOCAL_RECORD_LIMIT} \
                 bytes)",
                request.offset
            ));
        }
    }
    Ok(rpc)
}

/// Decodes the answer to an [`Rpc`].
pub(crate) fn decode_reply(frame: &[u8]) -> Result<RpcReply, String> {
    mycel_protocol::decode(frame, MAX_PLACEMENT_FRAME_BYTES).map_err(|e| e.to_string())
}

/// Sends `rpc` to `peer` and waits at most `ttl` for the reply.
pub(crate) async fn call(
    mesh: &MeshHandle,
    peer: PeerId,
    rpc: &Rpc,
    ttl: Duration,
) -> Result<RpcReply, CallError> {
    let frame = mycel_protocol::encode(rpc).map_err(|e| CallError::BadReply(e.to_string()))?;
    let answer = tokio::time::timeout(ttl, mesh.placement_request(peer, PlacementFrame(frame)))
        .await
        .map_err(|_| CallError::Timeout(ttl))?
        .map_err(|e| match e {
            mycel_mesh::MeshError::Unreachable { .. } => CallError::NotSent(e.to_string()),
            e => CallError::Unreachable(e.to_string()),
        })?;
    decode_reply(&answer.0).map_err(CallError::BadReply)
}

/// Makes a [`PeerLink`] per target, as openraft asks.
pub(crate) struct Network {
    pub(crate) mesh: MeshHandle,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerLink {
        PeerLink {
            mesh: self.mesh.clone(),
            target,
            peer: node.peer_id.parse().ok(),
        }
    }
}

/// Raft's connection to one member: a peer id to send frames to.
pub(crate) struct PeerLink {
    mesh: MeshHandle,
    target: NodeId,
    /// `None` when the member's recorded peer id does not parse (it cannot be reached).
    peer: Option<PeerId>,
}

impl PeerLink {
    async fn exchange<E: std::error::Error>(
        &self,
        rpc: Rpc,
        option: &RPCOption,
    ) -> Result<RpcReply, RPCError<NodeId, Member, E>> {
        let Some(peer) = self.peer else {
            let e = CallError::Unreachable("the member's peer id is malformed".into());
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        match call(&self.mesh, peer, &rpc, option.hard_ttl()).await {
            Ok(RpcReply::Refused(reason)) => {
                let e = CallError::BadReply(format!("refused: {reason}"));
                Err(RPCError::Network(NetworkError::new(&e)))
            }
            Ok(reply) => Ok(reply),
            // Unreachable makes openraft back off before it tries this member again.
            Err(
                e @ (CallError::NotSent(_) | CallError::Unreachable(_) | CallError::Timeout(_)),
            ) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    fn wrong_reply<E: std::error::Error>() -> RPCError<NodeId, Member, E> {
        let e = CallError::BadReply("a reply of the wrong kind".into());
        RPCError::Network(NetworkError::new(&e))
    }

    fn remote<T, E: std::error::Error>(
        &self,
        result: Result<T, E>,
    ) -> Result<T, RPCError<NodeId, Member, E>> {
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self.exchange(Rpc::Append(rpc), &option).await? {
            RpcReply::Append(result) => self.remote(result),
            _ => Err(Self::wrong_reply()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.exchange(Rpc::Snapshot(rpc), &option).await? {
            RpcReply::Snapshot(result) => self.remote(result),
            _ => Err(Self::wrong_reply()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self.exchange(Rpc::Vote(rpc), &option).await? {
            RpcReply::Vote(result) => self.remote(result),
            _ => Err(Self::wrong_reply()),
        }
    }
}
