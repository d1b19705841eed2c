//! Load reports: every node sends the leader what its gateway saw of each app's load, about every
//! second, on the placement protocol (never through the log); the leader keeps the latest of each
//! node for its autoscaler (see [`crate::load`]).

use mycel_protocol::placement::LoadReport;

use super::{PlacementHandle, lock, now_ms};
use crate::network::{self, Rpc};

impl PlacementHandle {
    /// Keeps `node`'s load report for the autoscaler, when this node leads.
    pub(super) fn take_load(&self, node: String, report: LoadReport) -> bool {
        if !self.is_leader() {
            return false;
        }
        lock(&self.inner.autoscaler).report(node, report, now_ms());
        true
    }

    /// Sends what this node saw of the apps' load to the leader (or keeps it, when this node
    /// leads). Best effort: a report that does not arrive is replaced by the next.
    pub async fn report_load(&self, report: LoadReport) {
        let Some(leader) = self.confirmed_leader() else {
            return;
        };
        if leader == self.inner.me {
            self.take_load(self.inner.peer_id.clone(), report);
            return;
        }
        if let Some(peer) = self.peer_of(leader) {
            let ttl = self.inner.timing.quorum_check;
            let _ = network::call(&self.inner.mesh, peer, &Rpc::Load(report), ttl).await;
        }
    }
}
