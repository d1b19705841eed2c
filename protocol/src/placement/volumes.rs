//! An app's volumes as the group holds them: which nodes hold a copy, and the latest snapshot
//! that lets the app move to a node that holds none (see the README's "Volumes").

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::BlobHash;

/// The volumes of one app name. They outlive a stop (not a purge), but only for the owner who
/// made them: a deploy of the name by anyone else starts with none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppVolumes {
    /// Who owns them: the app's owner key, or the peer id that took an unsigned deploy.
    pub owner: String,
    pub volumes: BTreeMap<String, VolumeRecord>,
}

/// One volume of an app.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub size_mb: u64,
    /// The nodes an instance of the app was placed on, each of which keeps a copy: the
    /// scheduler prefers them.
    pub holders: BTreeSet<String>,
    /// The latest snapshot in the mesh's blob store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<VolumeSnapshot>,
    /// How many snapshots were asked for (`mycel volume snapshot`): the node that runs the app
    /// takes one when its latest answers fewer.
    #[serde(default)]
    pub requested: u64,
}

/// A snapshot of a volume: a blob listing its chunks (see `mycel_agent`'s volumes module for the
/// format), held by the node that took it and the nodes it was copied to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSnapshot {
    /// The blob that lists the snapshot's chunks.
    pub index: BlobHash,
    /// The node that took it.
    pub node: String,
    /// That node's wall clock when it was taken.
    pub taken_at_ms: u64,
    /// The volume's size.
    pub size_bytes: u64,
    /// Bytes in use in the volume's file system when it was taken.
    pub used_bytes: u64,
    /// Bytes this snapshot added to the blob store (chunks no earlier snapshot had).
    pub stored_bytes: u64,
    /// The requests it answers (the volume's `requested` when it was started).
    #[serde(default)]
    pub answers: u64,
    /// The nodes asked to keep a copy, so that the volume can move when its node is gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_to: Vec<String>,
    /// Those of them that hold a whole copy now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<String>,
}
