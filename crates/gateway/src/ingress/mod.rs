//! The TCP ingress: every node listens on its ingress address at each port the mesh's apps
//! publish (`[[ports]]`), and hands each client connection to a running instance of the app —
//! on this node when one runs here, else on another node over the mesh's own encrypted streams,
//! balanced as the gateway balances requests. Swarm's routing mesh, without its IPVS.
//!
//! ```text
//!  client ──TCP──▶ listener (published port) ──▶ connection ─ local instance ──▶ its port
//!                                                    └─ remote ══ /mycel/ingress/1 ══▶ peer's
//!                                                                                     inbound ─▶ its port
//! ```
//!
//! - `listeners`: which ports this node listens on (pure: the replica and the owner's policy),
//!   and one accept loop per port, started and stopped as apps come and go.
//! - `connection`: one client connection: pick an instance, connect, copy bytes both ways.
//! - `inbound`: the mesh side: a peer's connection for an instance that runs here.
//! - `metrics`: `mycel_ingress_connections_total`, bytes each way, per app.
//!
//! Like HTTP routing, it needs no quorum: the replica says where instances run. A connection to
//! an app scaled to zero is held while an instance starts, as a request is. A connection is
//! bound to one instance for its life: when that instance ends, its connections close, and new
//! ones go to the instances left.

mod connection;
mod inbound;
mod listeners;
mod metrics;

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
};

use mycel_mesh::MeshHandle;
use mycel_protocol::NodePolicy;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use listeners::{Published, wanted};
pub use metrics::IngressMetrics;

use crate::{GatewayMetrics, LocalInstances, activate::Activator, balance::Balancer};

/// What the ingress needs from the node.
#[derive(Clone)]
pub struct IngressConfig {
    /// Where this node listens for published ports (`--ingress-address`).
    pub address: IpAddr,
    /// Carries connections to instances on other nodes, and theirs to ours.
    pub mesh: MeshHandle,
    /// This node's replica says which ports are published and where their instances run.
    pub placement: mycel_placement::PlacementHandle,
    pub local: Arc<dyn LocalInstances>,
    /// Which ports this node's owner lets apps publish here.
    pub policy: NodePolicy,
}

/// What every connection shares.
struct Shared {
    config: IngressConfig,
    metrics: IngressMetrics,
    /// Open connections per instance, for the app's balancing strategy: its own, not the HTTP
    /// gateway's (a connection is not a request).
    balancer: Arc<Mutex<Balancer>>,
    /// Holds a connection for an app scaled to zero while an instance starts, as the gateway
    /// holds a request.
    activator: Activator,
}

/// Serves the ingress until `shutdown`: listens at every published port this node may open, and
/// takes peers' ingress streams. Returns once every listener and connection has closed.
pub async fn serve(
    config: IngressConfig,
    metrics: IngressMetrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let incoming = crate::accept_streams(&config.mesh, mycel_protocol::names::INGRESS_PROTOCOL)?;
    let connections = TaskTracker::new();
    let seed = u64::from(std::process::id());
    let shared = Arc::new(Shared {
        balancer: Arc::new(Mutex::new(Balancer::new(seed))),
        activator: Activator::new(config.placement.clone(), GatewayMetrics::default()),
        config,
        metrics,
    });
    connections.spawn(inbound::accept(
        incoming,
        shared.clone(),
        connections.clone(),
        shutdown.clone(),
    ));
    listeners::follow(shared, &connections, shutdown).await;
    connections.close();
    connections.wait().await;
    Ok(())
}
