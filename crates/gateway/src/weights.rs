//! The `weighted` strategy's weights: each node's `weight` label (a whole number from 1 to
//! [`MAX_WEIGHT`]), else its advertised cores. Read from the mesh's membership every
//! [`REFRESH`] by a task of the gateway, so a request only looks them up.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use mycel_mesh::MeshHandle;
use mycel_protocol::api::NodeInfo;
use tokio_util::sync::CancellationToken;

pub(crate) const REFRESH: Duration = Duration::from_secs(5);
pub(crate) const MAX_WEIGHT: u32 = 1000;
pub(crate) const WEIGHT_LABEL: &str = "weight";

/// Weights by peer id; a node not (yet) listed weighs 1.
#[derive(Clone, Debug, Default)]
pub(crate) struct Weights(Arc<RwLock<HashMap<String, u32>>>);

impl Weights {
    pub(crate) fn of(&self, node: &str) -> u32 {
        self.0
            .read()
            .ok()
            .and_then(|w| w.get(node).copied())
            .unwrap_or(1)
    }

    fn set(&self, nodes: &[NodeInfo]) {
        let weights = nodes
            .iter()
            .map(|n| (n.peer_id.clone(), weight(n)))
            .collect();
        if let Ok(mut w) = self.0.write() {
            *w = weights;
        }
    }

    /// Refreshes the weights from `mesh` until `stop`.
    pub(crate) async fn follow(self, mesh: MeshHandle, stop: CancellationToken) {
        loop {
            match mesh.nodes().await {
                Ok(nodes) => self.set(&nodes),
                Err(e) => tracing::debug!(error = %e, "reading node weights"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
    }
}

/// A node's weight: its `weight` label when that is a number, else its cores; 1 to MAX_WEIGHT.
pub(crate) fn weight(node: &NodeInfo) -> u32 {
    let label = node
        .labels
        .get(WEIGHT_LABEL)
        .and_then(|w| w.trim().parse::<u32>().ok());
    let weight = label.unwrap_or(node.resources.cpu_cores);
    weight.clamp(1, MAX_WEIGHT)
}
