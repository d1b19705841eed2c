//! Whether a quorum is in sight: a fast answer for callers that would rather fail at once than
//! wait out a write's timeout when the mesh already knows most voters are gone.

use mycel_protocol::api::MemberStatus;

use super::PlacementHandle;

impl PlacementHandle {
    /// False when this node's mesh view counts fewer than a majority of the group's voters as
    /// alive or suspect (this node counts as alive): no write can commit until some return.
    /// True otherwise, also while an election runs. Only a hint — a write is the proof.
    pub async fn quorum_in_sight(&self) -> bool {
        let voters = self.cluster().voters;
        if voters.is_empty() {
            return true; // not formed yet: its first write forms it
        }
        let Ok(nodes) = self.inner.mesh.nodes().await else {
            return false; // the mesh stopped: nothing commits through this node
        };
        let me = self.peer_id();
        let up = voters
            .iter()
            .filter(|voter| {
                voter.as_str() == me
                    || nodes.iter().any(|n| {
                        &n.peer_id == *voter && !n.departed && n.status != MemberStatus::Dead
                    })
            })
            .count();
        up * 2 > voters.len()
    }
}
