//! Several nodes started together, and conditions over all of them.

use std::{
    ops::{Index, IndexMut},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use futures::future::{join_all, try_join_all};
use mycel_protocol::api::{MemberStatus, NodeInfo, Nodes};

use crate::{NodeProcess, wait_until};

/// Nodes `n0`, `n1`, … on 127.0.0.1; dropping the mesh kills every one of them.
#[derive(Debug, Default)]
pub struct Mesh {
    nodes: Vec<NodeProcess>,
}

impl Mesh {
    /// `n` nodes where node `i` joins with node `i - 1`'s ticket, each started once the previous
    /// one is ready: a private mesh. Returns as soon as every node is ready; see
    /// [`Mesh::wait_converged`].
    pub async fn chain(n: usize) -> Result<Self> {
        let mut mesh = Self::default();
        for i in 0..n {
            let previous = mesh.nodes.last().map(|p| p.join_ticket().to_owned());
            let node = NodeProcess::start(format!("n{i}"), previous.as_deref()).await?;
            mesh.nodes.push(node);
        }
        Ok(mesh)
    }

    /// Node `n0`, then the other `n - 1` spawned at once, each joining with `n0`'s ticket.
    pub async fn star(n: usize) -> Result<Self> {
        let mut mesh = Self::default();
        if n == 0 {
            return Ok(mesh);
        }
        let hub = NodeProcess::start("n0", None).await?;
        let hub_addr = hub.join_ticket().to_owned();
        mesh.nodes.push(hub);
        let spokes = (1..n).map(|i| NodeProcess::start(format!("n{i}"), Some(&hub_addr)));
        mesh.nodes.extend(try_join_all(spokes).await?);
        Ok(mesh)
    }

    /// As [`Mesh::star`], every node labelled `host=<its name>`, so that a placement rule can keep
    /// an app off one node.
    pub async fn star_labelled(n: usize) -> Result<Self> {
        let mut mesh = Self::default();
        if n == 0 {
            return Ok(mesh);
        }
        let hub = NodeProcess::builder("n0")
            .arg("--label")
            .arg("host=n0")
            .start()
            .await?;
        let spokes = (1..n).map(|i| {
            NodeProcess::builder(format!("n{i}"))
                .join(&hub)
                .arg("--label")
                .arg(format!("host=n{i}"))
                .start()
        });
        let spokes = try_join_all(spokes).await?;
        mesh.nodes.push(hub);
        mesh.nodes.extend(spokes);
        Ok(mesh)
    }

    /// `n0`, and `n1` labelled `role=runner` joined through it: an app required on
    /// `role=runner` runs on the node that did not take the push or the deploy.
    pub async fn hub_and_runner() -> Result<Self> {
        let hub = NodeProcess::start("n0", None).await?;
        let runner = NodeProcess::builder("n1")
            .join(&hub)
            .arg("--label")
            .arg("role=runner")
            .start()
            .await?;
        Ok(Self::from_nodes(vec![hub, runner]))
    }

    pub fn from_nodes(nodes: Vec<NodeProcess>) -> Self {
        Self { nodes }
    }

    /// The index of the node with `peer_id`.
    pub fn index_of(&self, peer_id: &str) -> Result<usize> {
        (0..self.nodes.len())
            .find(|&i| self.nodes[i].peer_id() == peer_id)
            .with_context(|| format!("{peer_id} is not one of the test's nodes"))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &NodeProcess> {
        self.nodes.iter()
    }

    /// The nodes the harness has not seen exit.
    pub fn running(&self) -> impl Iterator<Item = &NodeProcess> {
        self.nodes.iter().filter(|n| !n.has_exited())
    }

    /// `Ok(true)` when every running node lists every running node `alive`; otherwise an error
    /// naming the first node that sees things differently.
    pub async fn converged(&self) -> Result<bool> {
        let observers: Vec<&NodeProcess> = self.running().collect();
        let views = try_join_all(observers.iter().map(|n| n.nodes())).await?;
        let names: Vec<_> = observers.iter().map(|n| (n.name(), n.peer_id())).collect();
        all_alive(&names, &views)?;
        Ok(true)
    }

    /// Waits until every running node lists every running node `alive`.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<()> {
        let what = format!("{} nodes to see each other alive", self.running().count());
        wait_until(&what, timeout, Duration::from_millis(50), async || {
            self.converged().await
        })
        .await
    }

    /// What every running node reports about `peer_id` (`None` where it is not listed, or the
    /// node did not answer), in the order of [`Mesh::running`] minus `peer_id` itself.
    pub async fn views_of(&self, peer_id: &str) -> Vec<Option<NodeInfo>> {
        let observers = self.running().filter(|n| n.peer_id() != peer_id);
        join_all(observers.map(|n| async move {
            n.nodes()
                .await
                .ok()
                .and_then(|v| find(&v, peer_id).cloned())
        }))
        .await
    }

    /// Prints the log tail of every node.
    pub fn print_logs(&self) {
        for node in &self.nodes {
            node.print_log_tail();
        }
    }

    /// Passes `result` through, printing every node's log tail first when it is an error.
    pub fn report<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.print_logs();
        }
        result
    }
}

/// The entry for `peer_id` in a `/v1/nodes` answer.
/// Errs naming the first node that does not list every node `alive`: `views[i]` is what node
/// `nodes[i]` (its name and peer id) lists.
pub fn all_alive(nodes: &[(&str, &str)], views: &[Nodes]) -> Result<()> {
    for ((observer, _), view) in nodes.iter().zip(views) {
        for (expected, peer_id) in nodes {
            match find(view, peer_id) {
                Some(info) if info.status == MemberStatus::Alive => {}
                Some(info) => bail!("{observer} sees {expected} as {}", info.status.as_str()),
                None => bail!("{observer} does not list {expected}"),
            }
        }
    }
    Ok(())
}

pub fn find<'a>(nodes: &'a Nodes, peer_id: &str) -> Option<&'a NodeInfo> {
    nodes.nodes.iter().find(|n| n.peer_id == peer_id)
}

impl Index<usize> for Mesh {
    type Output = NodeProcess;
    fn index(&self, i: usize) -> &NodeProcess {
        &self.nodes[i]
    }
}

impl IndexMut<usize> for Mesh {
    fn index_mut(&mut self, i: usize) -> &mut NodeProcess {
        &mut self.nodes[i]
    }
}
