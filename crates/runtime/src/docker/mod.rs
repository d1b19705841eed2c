//! The Docker driver: each instance is one container on the node's Docker engine, hardened by
//! default, its app port published on the host's loopback address only.
//!
//! ```text
//! DockerDriver ── bollard::Docker (local socket, API version negotiated at connect)
//!    │
//!    ├─ start(spec) ─ start.rs: remove a leftover of the same name, create (spec.rs: the
//!    │                 hardened config), start, read the published port back, wait until it
//!    │                 accepts connections (or fail with the container's last log lines)
//!    │                 └─▶ UpstreamInstance (crate::upstream)
//!    │                       ├─ handle(request) ─ HTTP/1.1 to 127.0.0.1:<host port>,
//!    │                       │                    a few pooled keep-alive connections
//!    │                       ├─ follow.rs tasks: the container's stdout/stderr → LogBuffer,
//!    │                       │                   its memory from the engine's stats
//!    │                       └─ stop(): refuse, drain, then running.rs: stop and remove the
//!    │                                  container
//!    ├─ remove_orphans(keep) / remove_all(): containers labelled with this node's id
//!    └─ images.rs: load_archive (`docker load`), pull_image, has_image, image_diff_ids
//! ```
//!
//! Every container carries the labels `mycel.managed=true`, `mycel.node=<node id>`,
//! `mycel.app` and `mycel.instance`, and a name derived from node and instance, so several nodes
//! may share one engine (as tests do) without touching each other's containers. Starting never
//! pulls: images come from archives loaded with [`DockerDriver::load_archive`], or from a registry
//! through [`DockerDriver::pull_image`] when the agent (which knows the node's allow-list) asks.
//!
//! A dropped instance ends its background tasks but leaves its
//! container running: the agent stops instances it no longer wants, and reaps what a crash left
//! behind with [`DockerDriver::remove_orphans`].

mod follow;
mod images;
mod running;
mod spec;
mod start;

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use bollard::{
    Docker,
    query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder},
};
use futures::future::BoxFuture;

pub use images::EngineImage;

use crate::{Driver, Instance, InstanceSpec, RuntimeError};

/// The oldest Docker Engine API the driver speaks: 1.40 is Docker 19.03.
const MIN_API_VERSION: (u64, u64) = (1, 40);

/// Label keys on every container the driver creates.
const LABEL_MANAGED: &str = "mycel.managed";
const LABEL_NODE: &str = "mycel.node";
const LABEL_APP: &str = "mycel.app";
const LABEL_INSTANCE: &str = "mycel.instance";

/// How the Docker driver runs containers on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DockerConfig {
    /// This node's id: the `mycel.node` label of its containers and part of their names.
    pub node_id: String,
    /// The host address that containers' ports are published on, and that requests go to.
    pub host_address: IpAddr,
    /// How long a started container may take to accept connections on its port.
    pub start_timeout: Duration,
    /// How long a stopping container may take to exit after SIGTERM before it is killed.
    pub stop_timeout: Duration,
    /// Run Docker's init (tini) as each container's PID 1, so a SIGTERM reaches apps that do not
    /// handle signals themselves (a PID 1 ignores them) and zombies are reaped. Needs
    /// `docker-init` on the engine's host, which Docker's packages install.
    pub init: bool,
}

impl DockerConfig {
    /// The defaults for a node: ports on 127.0.0.1, 30 s to start, 2 s to stop, with init.
    pub fn new(node_id: impl Into<String>) -> Self {
        DockerConfig {
            node_id: node_id.into(),
            host_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(2),
            init: true,
        }
    }
}

/// Runs containers on the node's Docker engine. Cheap to clone; clones share one engine client.
#[derive(Clone)]
pub struct DockerDriver {
    inner: Arc<DriverInner>,
}

struct DriverInner {
    docker: Docker,
    config: DockerConfig,
    /// The engine host's CPUs: a CPU limit above them is refused by the engine, so it is capped.
    host_cpus: u64,
}

impl DockerDriver {
    /// Connects to the local engine (`$DOCKER_HOST` if it names a unix socket, else
    /// `/var/run/docker.sock`), settles on an API version both sides speak and checks that the
    /// engine is recent enough.
    pub async fn connect(config: DockerConfig) -> Result<Self, RuntimeError> {
        let socket = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|host| host.starts_with("unix://"))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        let no_engine = |e: bollard::errors::Error| {
            RuntimeError::Setup(format!(
                "no Docker engine answers at {socket}: {e} (is dockerd running, and may this \
                 user use its socket?)"
            ))
        };
        let docker = Docker::connect_with_local_defaults().map_err(no_engine)?;
        // bollard speaks the newest API by default; an older engine refuses it unless told.
        let docker = docker.negotiate_version().await.map_err(no_engine)?;
        let version = docker.version().await.map_err(no_engine)?;
        let api = version.api_version.as_deref().unwrap_or("unknown");
        if parse_api_version(api).is_none_or(|v| v < MIN_API_VERSION) {
            return Err(RuntimeError::Setup(format!(
                "the Docker engine at {socket} speaks API {api} (Docker {}); mycel needs API \
                 {}.{} (Docker 19.03) or newer",
                version
                    .version
                    .as_deref()
                    .unwrap_or("of an unknown version"),
                MIN_API_VERSION.0,
                MIN_API_VERSION.1
            )));
        }
        let info = docker.info().await.map_err(no_engine)?;
        let host_cpus = info
            .ncpu
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(1);
        tracing::info!(
            engine = version.version.as_deref().unwrap_or("unknown"),
            api,
            node = %config.node_id,
            "connected to the Docker engine"
        );
        Ok(DockerDriver {
            inner: Arc::new(DriverInner {
                docker,
                config,
                host_cpus,
            }),
        })
    }

    /// The configuration the driver runs with.
    pub fn config(&self) -> &DockerConfig {
        &self.inner.config
    }

    /// Removes every container of this node whose `mycel.instance` is not in `keep` (whatever
    /// its state), and returns how many it removed. `keep` must name the instances being started
    /// too, or their containers go.
    pub async fn remove_orphans(&self, keep: &BTreeSet<String>) -> Result<usize, RuntimeError> {
        let node = &self.inner.config.node_id;
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_NODE}={node}"),
            ],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .inner
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine_error(format!("listing node {node}'s containers"), e))?;
        let mut removed = 0;
        for container in containers {
            let Some(id) = container.id else { continue };
            let labels = container.labels.unwrap_or_default();
            // The engine filtered by label; checking again costs nothing and guards the removal.
            if labels.get(LABEL_NODE) != Some(node) {
                continue;
            }
            let instance = labels.get(LABEL_INSTANCE);
            if instance.is_some_and(|i| keep.contains(i)) {
                continue;
            }
            if force_remove(&self.inner.docker, &id).await? {
                tracing::info!(container = %id, instance = ?instance, "removed an orphaned container");
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes every container of this node, as when it leaves the mesh.
    pub async fn remove_all(&self) -> Result<usize, RuntimeError> {
        self.remove_orphans(&BTreeSet::new()).await
    }
}

impl Driver for DockerDriver {
    fn runtime(&self) -> mycel_protocol::Runtime {
        mycel_protocol::Runtime::Docker
    }

    fn start(
        &self,
        spec: InstanceSpec,
    ) -> BoxFuture<'static, Result<Arc<dyn Instance>, RuntimeError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let instance = start::start(inner, spec).await?;
            Ok(Arc::new(instance) as Arc<dyn Instance>)
        })
    }

    fn remove_orphans(
        &self,
        keep: BTreeSet<String>,
    ) -> BoxFuture<'static, Result<usize, RuntimeError>> {
        let driver = self.clone();
        Box::pin(async move { driver.remove_orphans(&keep).await })
    }

    fn remove_all(&self) -> BoxFuture<'static, Result<usize, RuntimeError>> {
        let driver = self.clone();
        Box::pin(async move { driver.remove_all().await })
    }
}

/// Removes a container whatever its state (the engine kills it first); false when it was
/// already gone.
async fn force_remove(docker: &Docker, container: &str) -> Result<bool, RuntimeError> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(container, Some(options)).await {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        // 409: a removal is already under way (another stop, or the reaper).
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(false),
        Err(e) => Err(engine_error(format!("removing container {container}"), e)),
    }
}

/// An engine failure, in the engine's own words where it gave some.
fn engine_error(context: impl Into<String>, error: bollard::errors::Error) -> RuntimeError {
    RuntimeError::Engine {
        context: context.into(),
        reason: engine_reason(&error),
    }
}

fn engine_reason(error: &bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("the engine answered {status_code}: {message}"),
        other => other.to_string(),
    }
}

fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// `1.41` → `(1, 41)`.
fn parse_api_version(text: &str) -> Option<(u64, u64)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_compare_as_numbers() {
        assert_eq!(parse_api_version("1.41"), Some((1, 41)));
        assert!(parse_api_version("1.9").is_some_and(|v| v < MIN_API_VERSION));
        assert!(parse_api_version("1.100").is_some_and(|v| v >= MIN_API_VERSION));
        assert_eq!(parse_api_version("v1"), None);
    }
}
