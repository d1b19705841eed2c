//! Meshes inside the test's own process: each node is a `mycel_node::Node`, started exactly as
//! `mycel up` starts one (real libp2p, openraft, sled and wasmtime, a temp data dir, every port
//! picked by the OS on 127.0.0.1), and talked to through its HTTP API like any other.
//!
//! For tests that need no separate process: no child to spawn and no `node.json` to poll, and a
//! graceful stop is one call. Tests of signals, `kill -9`, `SIGSTOP` and restarts of a killed node
//! keep [`crate::NodeProcess`].

use std::time::Duration;

use anyhow::{Context, Result};
use futures::future::try_join_all;
use mycel_node::{Bootstrap, Node, NodeConfig, NodeHandle};
use mycel_protocol::api::Nodes;

use crate::{DataDir, mesh::all_alive, wait_until};

/// How long an in-process node gets to finish requests when it stops.
const GRACE: Duration = Duration::from_secs(5);

/// One node in this process. Dropping it without [`InProcessNode::shutdown`] leaves its tasks
/// running until the test's runtime ends.
pub struct InProcessNode {
    name: String,
    api: String,
    handle: NodeHandle,
    http: reqwest::Client,
    _dir: DataDir,
}

impl InProcessNode {
    /// Starts a node named `name` in a temp data dir, joining the mesh of `join` (a join ticket)
    /// or founding a new private mesh; `configure` adjusts the rest.
    pub async fn start(
        name: &str,
        join: Option<&str>,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> Result<Self> {
        let dir = DataDir::temp()?;
        let mut config = NodeConfig::loopback(dir.path());
        config.name = Some(name.to_string());
        if let Some(ticket) = join {
            let ticket = ticket.parse().context("parsing a join ticket")?;
            config.bootstrap.push(Bootstrap::Ticket(ticket));
        }
        configure(&mut config);
        let handle = Node::start(config)
            .await
            .with_context(|| format!("starting {name} in process"))?;
        Ok(Self {
            name: name.to_string(),
            api: format!("http://{}", handle.api_addr()),
            handle,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            _dir: dir,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn api(&self) -> &str {
        &self.api
    }

    pub fn peer_id(&self) -> &str {
        &self.handle.info().peer_id
    }

    pub fn join_ticket(&self) -> &str {
        self.handle.info().join.as_deref().unwrap_or_default()
    }

    /// `GET /v1/nodes`
    pub async fn nodes(&self) -> Result<Nodes> {
        let url = format!("{}/v1/nodes", self.api);
        let response = self.http.get(&url).send().await;
        let response = response.and_then(reqwest::Response::error_for_status);
        let response = response.with_context(|| format!("GET {url} on {}", self.name))?;
        response.json().await.context("decoding /v1/nodes")
    }

    /// Stops the node the way `mycel up` does on SIGTERM, and waits until it has.
    pub async fn shutdown(self) {
        self.handle.shutdown(GRACE).await;
    }
}

/// Several in-process nodes.
#[derive(Default)]
pub struct InProcessMesh {
    pub nodes: Vec<InProcessNode>,
}

impl InProcessMesh {
    /// `n` nodes where node `i` joins with node `i - 1`'s ticket, each started once the previous
    /// one is ready.
    pub async fn chain(n: usize) -> Result<Self> {
        let mut mesh = Self::default();
        for i in 0..n {
            let previous = mesh.nodes.last().map(|p| p.join_ticket().to_owned());
            let node = InProcessNode::start(&format!("n{i}"), previous.as_deref(), |_| {}).await?;
            mesh.nodes.push(node);
        }
        Ok(mesh)
    }

    /// Waits until every node lists every node `alive`.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<()> {
        let what = format!(
            "{} in-process nodes to see each other alive",
            self.nodes.len()
        );
        wait_until(&what, timeout, Duration::from_millis(50), async || {
            let views = try_join_all(self.nodes.iter().map(|n| n.nodes())).await?;
            let names: Vec<_> = self.nodes.iter().map(|n| (n.name(), n.peer_id())).collect();
            all_alive(&names, &views)?;
            Ok(true)
        })
        .await
    }

    /// Stops every node, last first.
    pub async fn shutdown(mut self) {
        while let Some(node) = self.nodes.pop() {
            node.shutdown().await;
        }
    }
}
