//! The placement group's Raft types: node ids derived from peer ids, and what a replica is.

use std::io::Cursor;

use mycel_protocol::{
    PeerId,
    placement::{Command, WriteError},
};
use serde::{Deserialize, Serialize};

use crate::state::PlacementState;

openraft::declare_raft_types!(
    /// mycel's Raft: log entries are placement commands; applying one answers whether it changed
    /// the state or was refused (a signed request that does not hold up; see `owners`).
    pub TypeConfig:
        D = Command,
        R = EntryOutcome,
        Node = Member,
);

/// What applying an entry did: `Err` when the state machine refused it and nothing changed.
pub type EntryOutcome = Result<(), WriteError>;

/// A Raft node id: derived from the peer id, so no node ever needs to be told its id.
pub type NodeId = u64;

pub type Raft = openraft::Raft<TypeConfig>;

/// What the group records about each member: the peer id the mesh reaches it by.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub peer_id: String,
}

/// The Raft node id of a peer: the first 8 bytes of the BLAKE3 hash of its peer id. Stable, and
/// collisions are as unlikely as 64 random bits make them.
pub fn node_id(peer: &PeerId) -> NodeId {
    let hash = blake3::hash(&peer.to_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

/// This node's copy of the decided state, as of `applied_index`.
#[derive(Clone, Debug, Default)]
pub struct Replica {
    pub state: PlacementState,
    pub applied_index: Option<u64>,
}
