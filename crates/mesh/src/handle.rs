//! The handle through which the rest of the node talks to the mesh actor.

use std::{fmt, time::Duration};

use libp2p::{Multiaddr, PeerId};
use mycel_protocol::{
    api::NodeInfo,
    blob::{BlobRequest, BlobResponse},
    ticket::JoinTicket,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{LocalNode, MeshError, PlacementFrame};

pub(crate) enum Command {
    StartProviding(Vec<u8>),
    StopProviding(Vec<u8>),
    FindProviders {
        key: Vec<u8>,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    PutRecord {
        key: Vec<u8>,
        value: Vec<u8>,
        lifetime: Duration,
    },
    RemoveRecord(Vec<u8>),
    GetRecord {
        key: Vec<u8>,
        reply: oneshot::Sender<Vec<Vec<u8>>>,
    },
    ClosestPeers {
        key: Vec<u8>,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    BlobRequest {
        peer: PeerId,
        request: BlobRequest,
        reply: oneshot::Sender<Result<BlobResponse, MeshError>>,
    },
    PlacementRequest {
        peer: PeerId,
        frame: PlacementFrame,
        reply: oneshot::Sender<Result<PlacementFrame, MeshError>>,
    },
    Nodes(oneshot::Sender<Vec<NodeInfo>>),
    JoinTicket(oneshot::Sender<JoinTicket>),
    ConnectedPeers(oneshot::Sender<usize>),
    UpdateLocal(LocalNode),
    /// Announce the departure, remember peers, close connections, stop.
    Leave(oneshot::Sender<()>),
}

/// A cheap, cloneable handle to the mesh actor.
#[derive(Clone)]
pub struct MeshHandle {
    pub(crate) peer_id: PeerId,
    pub(crate) commands: mpsc::Sender<Command>,
    /// Opens and accepts raw streams without going through the actor.
    pub(crate) streams: libp2p_stream::Control,
}

impl fmt::Debug for MeshHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshHandle")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl MeshHandle {
    /// This node's id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// A control for raw streams on this node's connections: `open_stream` to a peer (dialling it
    /// when not connected) and `accept` a protocol's inbound streams. Streams bypass the actor, so
    /// their traffic never queues behind its commands. Each clone has one guaranteed slot for
    /// opening a stream; take a clone per concurrent opener rather than sharing one.
    pub fn streams(&self) -> libp2p_stream::Control {
        self.streams.clone()
    }

    /// The mesh as this node sees it, itself first.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, MeshError> {
        self.ask(Command::Nodes).await
    }

    /// A ticket to join this node's mesh through it: its current addresses and, in a private
    /// mesh, the secret. Hand it only to whoever may join.
    pub async fn join_ticket(&self) -> Result<JoinTicket, MeshError> {
        self.ask(Command::JoinTicket).await
    }

    /// How many peers this node holds a connection to.
    pub async fn connected_peers(&self) -> Result<usize, MeshError> {
        self.ask(Command::ConnectedPeers).await
    }

    /// Announces in the DHT that this node provides `key` (kept fresh until stopped).
    pub async fn start_providing(&self, key: Vec<u8>) -> Result<(), MeshError> {
        self.commands
            .send(Command::StartProviding(key))
            .await
            .map_err(|_| MeshError::Stopped)
    }

    /// Withdraws this node's provider record for `key`.
    pub async fn stop_providing(&self, key: Vec<u8>) -> Result<(), MeshError> {
        self.commands
            .send(Command::StopProviding(key))
            .await
            .map_err(|_| MeshError::Stopped)
    }

    /// The providers of `key` that a DHT lookup finds; this node included if it provides it.
    /// The lookup ends when Kademlia's does; callers that cannot wait that long put a timeout
    /// around it.
    pub async fn find_providers(&self, key: Vec<u8>) -> Result<Vec<PeerId>, MeshError> {
        self.ask(|reply| Command::FindProviders { key, reply })
            .await
    }

    /// Puts a record into the DHT: stored here and at the nodes closest to `key`, for `lifetime`.
    /// Peers store only records that pass their checks (see [`crate::records`]).
    pub async fn put_record(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        lifetime: Duration,
    ) -> Result<(), MeshError> {
        self.tell(Command::PutRecord {
            key,
            value,
            lifetime,
        })
        .await
    }

    /// Drops this node's own record for `key`, so it is no longer republished and runs out
    /// elsewhere.
    pub async fn remove_record(&self, key: Vec<u8>) -> Result<(), MeshError> {
        self.tell(Command::RemoveRecord(key)).await
    }

    /// The values a DHT lookup of `key` finds (this node's own copy first, if it holds one),
    /// unchecked: whoever reads them checks them. Ends when Kademlia's lookup does; callers that
    /// cannot wait that long put a timeout around it.
    pub async fn get_record(&self, key: Vec<u8>) -> Result<Vec<Vec<u8>>, MeshError> {
        self.ask(|reply| Command::GetRecord { key, reply }).await
    }

    /// The peers closest to `key` that a DHT lookup finds, closest first (this node excluded);
    /// empty when the node has no peers.
    pub async fn closest_peers(&self, key: Vec<u8>) -> Result<Vec<PeerId>, MeshError> {
        self.ask(|reply| Command::ClosestPeers { key, reply }).await
    }

    /// Sends a blob request to `peer` and waits for its answer.
    pub async fn blob_request(
        &self,
        peer: PeerId,
        request: BlobRequest,
    ) -> Result<BlobResponse, MeshError> {
        self.ask(|reply| Command::BlobRequest {
            peer,
            request,
            reply,
        })
        .await?
    }

    /// Sends a placement-group frame to `peer` and waits for its answer.
    pub async fn placement_request(
        &self,
        peer: PeerId,
        frame: PlacementFrame,
    ) -> Result<PlacementFrame, MeshError> {
        self.ask(|reply| Command::PlacementRequest { peer, frame, reply })
            .await?
    }

    /// Replaces what this node advertises about itself; a change other than resources is
    /// announced at once.
    pub async fn update_local(&self, local: LocalNode) -> Result<(), MeshError> {
        self.commands
            .send(Command::UpdateLocal(local))
            .await
            .map_err(|_| MeshError::Stopped)
    }

    /// Leaves the mesh gracefully: announces the departure and waits until the actor stopped.
    pub async fn leave(&self) -> Result<(), MeshError> {
        self.ask(Command::Leave).await
    }

    async fn tell(&self, command: Command) -> Result<(), MeshError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| MeshError::Stopped)
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .await
            .map_err(|_| MeshError::Stopped)?;
        rx.await.map_err(|_| MeshError::Stopped)
    }
}

/// A running mesh: its handle, where it listens, and its task.
#[derive(Debug)]
pub struct Mesh {
    pub handle: MeshHandle,
    /// The addresses the node listens on, each ending in `/p2p/<peer id>`.
    pub listen_addrs: Vec<Multiaddr>,
    pub task: JoinHandle<()>,
}
