//! JSON shapes of the HTTP API (see the contract). The API server writes them, the CLI and the
//! tests read them; keeping them here keeps both sides in step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::membership::{Resources, Runtime};

/// `GET /v1/health`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub peer_id: String,
}

/// How a node judges another node's liveness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    Alive,
    Suspect,
    Dead,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Dead => "dead",
        }
    }
}

/// A node's role in the placement group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RaftRole {
    Leader,
    Voter,
    Learner,
    None,
}

/// One entry of `GET /v1/nodes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub peer_id: String,
    pub name: String,
    pub status: MemberStatus,
    pub addrs: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub runtimes: Vec<Runtime>,
    pub resources: Resources,
    pub raft: RaftRole,
    /// Milliseconds since the answering node last heard from this one (0 for itself).
    pub last_seen_ms: u64,
    /// True when the node announced its departure (a graceful leave), as opposed to going silent.
    #[serde(default)]
    pub departed: bool,
    /// True for the answering node's own entry.
    #[serde(default, rename = "self")]
    pub is_self: bool,
}

/// `GET /v1/nodes`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nodes {
    pub nodes: Vec<NodeInfo>,
}

/// Every API error body: a sentence for a person and a stable code for a program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    pub code: String,
}

/// `POST /v1/blobs`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStored {
    pub hash: crate::BlobHash,
    pub size: u64,
}
