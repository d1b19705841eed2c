//! A mycel node as a library. [`Node::start`] wires mesh → placement → agent → discovery → API
//! and gateway into one running node; [`NodeHandle::shutdown`] stops them in reverse order and
//! leaves the mesh gracefully.
//!
//! This crate owns what sits between the other crates: the data dir ([`datadir`]), whether the
//! mesh is private or open ([`mesh_mode`]), the adapters that let the gateway and discovery see
//! the agent's instances, the runtime drivers a host offers, and the node's own upkeep (measuring
//! free resources, announcing held blobs, reporting the apps' load to the autoscaler). The `mycel` binary parses the command line, resolves
//! the configuration, sets up tracing and waits for a signal; tests start whole meshes in one
//! process through the same call.

pub mod datadir;
pub mod mesh_mode;

mod adapters;
mod app_metrics;
mod drivers;
mod load_reports;
mod node_metrics;
mod start;

use std::{
    collections::BTreeMap,
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use libp2p::Multiaddr;
use mycel_mesh::{JoinTicket, Timing};
use mycel_protocol::{NodePolicy, Runtime};

pub use start::{Node, NodeHandle};

/// A way into a mesh: a member's address, or a join ticket (addresses and, for a private mesh,
/// its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    Addr(Multiaddr),
    Ticket(JoinTicket),
}

impl Bootstrap {
    /// The addresses to dial, each ending in `/p2p/<peer id>`.
    pub fn dial_addrs(&self) -> Vec<Multiaddr> {
        match self {
            Bootstrap::Addr(addr) => vec![addr.clone()],
            Bootstrap::Ticket(ticket) => ticket.dial_addrs(),
        }
    }
}

/// A node's settings, resolved and checked (the binary merges flags, environment and file).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub listen: Vec<Multiaddr>,
    /// Whether `listen` was asked for rather than a default: a private mesh drops a default QUIC
    /// address, but refuses one asked for.
    pub listen_given: bool,
    pub api: SocketAddr,
    /// Whether API clients must send the token: always when the API is not on loopback.
    pub api_requires_token: bool,
    pub gateway: SocketAddr,
    /// Where this node listens at the ports apps publish (`[[ports]]`).
    pub ingress: IpAddr,
    /// Members' addresses and join tickets (`--bootstrap`, `--join`).
    pub bootstrap: Vec<Bootstrap>,
    /// A deliberately open mesh (see [`mesh_mode`]).
    pub open: bool,
    /// The name in listings; `None`: the host name and the end of the peer id.
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `None`: every runtime this host has.
    pub runtimes: Option<Vec<Runtime>>,
    pub domain: String,
    pub timing: Timing,
    /// The largest blob this node accepts.
    pub max_blob_bytes: u64,
    /// What this node's owner lets the mesh do here (advertised; the scheduler honours it).
    pub policy: NodePolicy,
    /// The longest one request to an app instance may run.
    pub request_timeout: Duration,
    /// How many API requests each client may make.
    pub api_rate_limit: mycel_api::RateLimit,
    /// How long this node's app listings live in the DHT.
    pub discovery_ttl: Duration,
}

impl NodeConfig {
    /// A node in `data_dir` listening on loopback only, every port chosen by the system: what
    /// tests and local meshes start from. It founds a new private mesh unless given `bootstrap`.
    pub fn loopback(data_dir: impl Into<PathBuf>) -> Self {
        let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        Self {
            data_dir: data_dir.into(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a valid multiaddr")],
            listen_given: false,
            api: any_port,
            api_requires_token: false,
            gateway: any_port,
            ingress: IpAddr::V4(Ipv4Addr::LOCALHOST),
            bootstrap: Vec::new(),
            open: false,
            name: None,
            labels: BTreeMap::new(),
            runtimes: None,
            domain: "localhost".into(),
            timing: Timing::default(),
            max_blob_bytes: 4096 * 1024 * 1024,
            policy: NodePolicy::default(),
            request_timeout: Duration::from_secs(30),
            api_rate_limit: mycel_api::RateLimit::default(),
            discovery_ttl: mycel_discovery::DiscoveryConfig::DEFAULT_LIFETIME,
        }
    }
}

/// Why a node did not start. Its text is one line, for the command line.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{doing} {}: {error}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    /// A file of the data dir holds something else: never silently replaced.
    #[error("{} is not {what}", path.display())]
    Unreadable { path: PathBuf, what: String },
    #[error(transparent)]
    Mode(#[from] mesh_mode::ModeError),
    #[error("{0}")]
    Listen(String),
    #[error("binding the {what} to {addr}: {error}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        error: io::Error,
    },
    #[error("starting the wasm runtime: {0}")]
    Wasm(mycel_runtime::RuntimeError),
    #[error("opening the blob store: {0}")]
    Blobs(mycel_blobs::StoreError),
    #[error("starting the mesh: {0}")]
    Mesh(mycel_mesh::MeshError),
    #[error("starting the placement group: {0}")]
    Placement(mycel_placement::GroupError),
}

impl NodeError {
    /// An I/O error while `doing` something to `path`.
    pub(crate) fn io(doing: &'static str, path: &Path) -> impl FnOnce(io::Error) -> NodeError {
        let path = path.to_path_buf();
        move |error| NodeError::Io { doing, path, error }
    }
}
