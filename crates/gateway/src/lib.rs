//! The gateway: every node answers `Host: <app>.<domain>` on its gateway port and proxies the
//! request to a healthy instance of the app, on this node or on any other.
//!
//! ```text
//!  client ──TCP──▶ listener ──▶ proxy ──host──▶ balance (replica + health + outliers)
//!                                 │                  │ ordered targets, by the app's strategy
//!                                 │◀─────────────────┘
//!                                 ├─ local target ──▶ LocalInstances::serve
//!                                 └─ remote target ─▶ remote pool ══ /mycel/gateway/1 ══▶ peer's
//!                                                     (HTTP/1.1 over a libp2p stream)     inbound
//!                                                                                           │
//!                                                              LocalInstances::serve ◀──────┘
//! ```
//!
//! The tree follows the path a request takes:
//! - [`host`]: which app a `Host` header names (pure).
//! - [`balance`]: the candidates for an app and their order by its `[balance]` strategy, outlier
//!   ejection, the retry budget (pure, takes `now`).
//! - [`forward`]: the headers a proxied request and answer get or lose (pure).
//! - `listener`: the TCP accept loop and per-connection HTTP/1.1 serving, drained on shutdown.
//! - `proxy`: one client request: route, try targets with retries when safe, stamp the answer.
//! - `activate`: a request for an app scaled to zero, held while an instance starts.
//! - `track`: an answer's body that reports when it is over (in flight, duration).
//! - `weights`: the `weighted` strategy's node weights, followed from the mesh's membership.
//! - `metrics`: `mycel_gateway_requests_total`, `…_request_duration_seconds`, `…_inflight`.
//! - `replay`: the request body lent to an attempt, so a failed attempt that never consumed it
//!   can be retried elsewhere.
//! - `remote`: the pool of HTTP/1.1 connections over libp2p streams, per peer.
//! - `inbound`: the mesh side: streams from peers' gateways, served by local instances.
//! - `error`: the failures of an attempt, whether a retry is safe, and the JSON error answers.
//!
//! Routing needs no quorum: it reads only this node's replica of the placement state and the
//! local health of local instances, so a gateway keeps routing while the group cannot commit.
//! Request and response bodies stream both ways; nothing is buffered whole.

mod activate;
pub mod balance;
mod error;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
mod inbound;
pub mod ingress;
mod listener;
mod metrics;
mod proxy;
mod remote;
mod replay;
mod track;
mod weights;

use std::{fmt, sync::Arc};

use futures::future::BoxFuture;
use mycel_mesh::MeshHandle;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use host::app_of_host;
pub use metrics::GatewayMetrics;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every request and answer the gateway hands on: streamed, never buffered whole.
pub type Body = http_body_util::combinators::BoxBody<bytes::Bytes, BoxError>;

/// Request header naming the instance a request over the mesh is for.
pub const INSTANCE_HEADER: &str = "x-mycel-instance";
/// Answer header naming the node (peer id) whose instance answered.
pub const NODE_HEADER: &str = "x-mycel-node";

/// What runs on this node, as the gateway needs it (the node's agent implements it).
pub trait LocalInstances: Send + Sync + 'static {
    /// Serves `request` with the local instance `id`; `None` when no such instance runs here.
    fn serve(
        &self,
        id: &str,
        request: http::Request<Body>,
    ) -> Option<BoxFuture<'static, Result<http::Response<Body>, BoxError>>>;
    /// Whether local instance `id` passes its health check now.
    fn is_healthy(&self, id: &str) -> bool;
    /// A TCP connection to `port` of local instance `id` (for the ingress); `None` when no such
    /// instance runs here.
    fn connect(
        &self,
        id: &str,
        port: u16,
    ) -> Option<BoxFuture<'static, Result<tokio::net::TcpStream, BoxError>>> {
        let _ = (id, port);
        None
    }
}

/// A node where nothing runs: every request its gateway takes goes to other nodes' instances.
/// For nodes without a runtime, and for wiring the gateway before the agent.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLocalInstances;

impl LocalInstances for NoLocalInstances {
    fn serve(
        &self,
        _id: &str,
        _request: http::Request<Body>,
    ) -> Option<BoxFuture<'static, Result<http::Response<Body>, BoxError>>> {
        None
    }

    fn is_healthy(&self, _id: &str) -> bool {
        false
    }
}

impl fmt::Debug for dyn LocalInstances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalInstances")
    }
}

/// What the gateway needs from the node.
#[derive(Clone)]
pub struct GatewayConfig {
    /// Apps are reached as `<app>.<domain>`.
    pub domain: String,
    /// Carries requests to instances on other nodes, and theirs to ours.
    pub mesh: MeshHandle,
    /// This node's replica says which apps exist and where their instances run.
    pub placement: mycel_placement::PlacementHandle,
    pub local: Arc<dyn LocalInstances>,
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("domain", &self.domain)
            .field("mesh", &self.mesh)
            .finish_non_exhaustive()
    }
}

/// Serves the gateway on `listener`, and peers' gateway streams on the mesh, until `shutdown` is
/// cancelled; then stops accepting and returns once the open connections have drained. Its
/// metrics are counted but registered nowhere: see [`serve_with`].
///
/// Fails at once when this mesh already has a gateway accepting streams.
pub async fn serve(
    listener: TcpListener,
    config: GatewayConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, config, GatewayMetrics::default(), shutdown).await
}

/// Peers' streams of `protocol`; fails when this node already accepts them.
fn accept_streams(
    mesh: &MeshHandle,
    protocol: &'static str,
) -> std::io::Result<mycel_mesh::libp2p_stream::IncomingStreams> {
    mesh.streams()
        .accept(mycel_mesh::StreamProtocol::new(protocol))
        .map_err(|e| std::io::Error::other(format!("accepting {protocol} streams: {e}")))
}

/// [`serve`], counting into `metrics` (see [`GatewayMetrics::register`]).
pub async fn serve_with(
    listener: TcpListener,
    config: GatewayConfig,
    metrics: GatewayMetrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let incoming = accept_streams(&config.mesh, mycel_protocol::names::GATEWAY_PROTOCOL)?;
    // Stops both accept loops: on shutdown, or when the listener fails.
    let stop = shutdown.child_token();
    let connections = TaskTracker::new();
    connections.spawn(inbound::accept(
        incoming,
        config.mesh.peer_id(),
        config.local.clone(),
        connections.clone(),
        stop.clone(),
    ));
    let weights = weights::Weights::default();
    connections.spawn(weights.clone().follow(config.mesh.clone(), stop.clone()));
    let proxy = Arc::new(proxy::Proxy::new(config, metrics, weights));
    let result = listener::accept(listener, proxy, &connections, &stop).await;
    stop.cancel();
    connections.close();
    connections.wait().await;
    result
}
