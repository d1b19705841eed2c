//! mycel's mesh: the libp2p swarm as one actor, and the membership view it keeps.
//!
//! ```text
//!  MeshHandle ──Command──▶ actor (owns the Swarm and the Membership view)
//!      ▲                      │  gossipsub  : signed adverts and departures on one topic
//!      └──oneshot replies─────┤  member-sync: full view on connect (request-response, CBOR)
//!                             │  blobs      : `Have` questions, answered by a BlobServer task;
//!                             │               range streams, accepted off the actor
//!                             │  placement  : opaque Raft frames, answered through the placement inbox
//!                             │  kademlia   : peer discovery, provider records, app listings
//!                             │               (every inbound record checked: see [`records`])
//!                             │  streams    : raw streams (the gateway's HTTP tunnel), opened and
//!                             │               accepted through `MeshHandle::streams`, off the actor
//!                             │  identify, ping (liveness of neighbours), block list
//!                             └─ ticks: re-announce, judge liveness, keep peers, remember peers
//! ```
//!
//! Transports (see [`transport`]): an open mesh speaks TCP with Noise and Yamux, and QUIC; a
//! private mesh (`MeshConfig::secret`) speaks TCP only, where both sides prove they hold the
//! secret before Noise (itself bound to the secret), so no peer without it gets through. Every node announces its signed capability
//! advert every `advert_interval` and whenever it changes; each node keeps a view of all members
//! with alive / suspect / dead from how long each has been silent (see [`membership`]).
//! Announcements are checked before anything else sees them: a forged, oversized or malformed one
//! is rejected (the gossip score of whoever sent it drops, and a forger is disconnected and
//! blocked); a stale one is ignored.

mod actor;
mod behaviour;
pub mod codec;
mod handle;
pub mod membership;
mod metrics;
pub mod peer_store;
pub mod records;
pub mod transport;

use std::{collections::BTreeMap, fmt, path::PathBuf, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use libp2p::{Multiaddr, PeerId, identity::Keypair};
use mycel_protocol::{
    Resources, Runtime,
    blob::{BlobRequest, BlobResponse},
};
use tokio::sync::{mpsc, oneshot};

pub use actor::start;
pub use handle::{Mesh, MeshHandle};
pub use libp2p::StreamProtocol;
/// The raw-stream API that [`MeshHandle::streams`] hands out.
pub use libp2p_stream;
pub use membership::Timing;
pub use metrics::DropReason;
pub use mycel_protocol::ticket::{JoinTicket, MeshSecret};

/// How to run the mesh.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    pub keypair: Keypair,
    /// Multiaddrs to listen on (port 0 picks a free port).
    pub listen: Vec<Multiaddr>,
    /// Peers to join through, each a multiaddr ending in `/p2p/<peer id>` (several addresses of
    /// one peer are dialled together).
    pub bootstrap: Vec<Multiaddr>,
    /// A private mesh's secret: no connection completes with a peer that lacks it, and QUIC is
    /// off. `None`: an open mesh (the default, for in-process users).
    pub secret: Option<MeshSecret>,
    /// Where to remember peers across restarts; `None` remembers nothing.
    pub peer_store: Option<PathBuf>,
    pub timing: Timing,
    /// How many connections the node keeps open by dialling known members when it has fewer.
    pub target_peers: usize,
    /// How long a listener may take to report its address before start-up fails.
    pub listen_timeout: Duration,
    /// Who answers peers' blob requests; without one every request is answered `Missing`.
    pub blob_server: Option<Arc<dyn BlobServer>>,
    /// Where inbound placement-group requests go; without it they are refused.
    pub placement_inbox: Option<mpsc::Sender<InboundPlacement>>,
    /// The longest a peer's provider entry for an app key is kept: the app-listing lifetime,
    /// after which a node that stopped announcing the app is no longer its provider.
    pub app_provider_ttl: Duration,
}

/// The largest placement frame either way: a batch of Raft entries or one snapshot chunk.
pub const MAX_PLACEMENT_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// One frame of the placement protocol. The mesh carries the bytes; the placement group owns
/// their meaning (and their own versioned encoding).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlacementFrame(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// A placement request from a peer; the answer goes back through `reply` (dropping it refuses).
#[derive(Debug)]
pub struct InboundPlacement {
    pub peer: PeerId,
    pub frame: PlacementFrame,
    pub reply: oneshot::Sender<PlacementFrame>,
}

/// Answers blob requests from peers (the node's blob store does). Runs off the mesh actor.
pub trait BlobServer: Send + Sync {
    fn serve(&self, peer: PeerId, request: BlobRequest) -> BoxFuture<'static, BlobResponse>;
    /// Serves one inbound range stream (`/mycel/blob-ranges/1`) until it ends. The mesh runs each
    /// on a task of its own, a bounded number at once; dropping the future drops the stream.
    fn serve_stream(&self, peer: PeerId, stream: libp2p::Stream) -> BoxFuture<'static, ()>;
}

impl fmt::Debug for dyn BlobServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlobServer")
    }
}

impl MeshConfig {
    pub fn new(keypair: Keypair, listen: Vec<Multiaddr>) -> Self {
        Self {
            keypair,
            listen,
            bootstrap: Vec::new(),
            secret: None,
            peer_store: None,
            timing: Timing::default(),
            target_peers: 8,
            listen_timeout: Duration::from_secs(10),
            blob_server: None,
            placement_inbox: None,
            app_provider_ttl: Duration::from_millis(mycel_protocol::discovery::DEFAULT_LIFETIME_MS),
        }
    }
}

/// What this node says about itself in its advert (its addresses are added by the mesh).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub runtimes: Vec<Runtime>,
    pub resources: Resources,
    pub policy: mycel_protocol::NodePolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("setting up the transport: {0}")]
    Transport(String),
    #[error("setting up the mesh protocols: {0}")]
    Behaviour(String),
    #[error("listening on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    /// QUIC's TLS handshake cannot be bound to a private mesh's secret.
    #[error(
        "cannot listen on {addr}: a private mesh runs over TCP only (QUIC cannot carry its \
         secret); listen on a /tcp/ address, or start an open mesh"
    )]
    QuicInPrivateMesh { addr: Multiaddr },
    #[error("the mesh has stopped")]
    Stopped,
    /// The peer could not be reached, or did not answer in time: try another.
    #[error("request to {peer} failed: {reason}")]
    Request { peer: PeerId, reason: String },
    /// No connection to the peer could be made, so the request was never sent: sending it again
    /// (there, or to whoever replaces the peer) cannot do it twice.
    #[error("{peer} cannot be reached: {reason}")]
    Unreachable { peer: PeerId, reason: String },
}
