//! Starting a node and stopping it.
//!
//! Order matters: bind every listener first (port 0 resolves here), start the mesh, serve the API
//! and gateway, and only then write `node.json` — its presence means "ready". Stopping runs the
//! other way: `node.json` goes first, the mesh last.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use libp2p::PeerId;
use mycel_mesh::{LocalNode, MeshConfig, MeshHandle};
use mycel_protocol::Runtime;
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    NodeConfig, NodeError,
    adapters::{AgentRoutes, start_discovery},
    datadir::{self, NodeFile},
    drivers::{self, Drivers},
    mesh_mode::{self, MeshMode},
};

/// How often the node re-measures what it has free.
const MEASURE_INTERVAL: Duration = Duration::from_secs(5);
/// The least time the agent gets to stop the node's instances when the node stops.
const AGENT_GRACE: Duration = Duration::from_secs(30);
/// How long what already runs gets to stop when a later step of starting fails.
const FAILED_START_GRACE: Duration = Duration::from_secs(5);
/// How many placement frames may wait for the placement group before peers are refused.
const PLACEMENT_INBOX: usize = 1024;

/// Starts nodes: see [`Node::start`].
pub struct Node;

/// A running node. Dropping it does not stop the node (its tasks run until the runtime ends):
/// stop it with [`NodeHandle::shutdown`].
pub struct NodeHandle {
    info: NodeFile,
    peer_id: PeerId,
    api: SocketAddr,
    gateway: SocketAddr,
    runtimes: Vec<Runtime>,
    mesh_kind: String,
    data_dir: std::path::PathBuf,
    parts: Parts,
}

/// What runs of a node, stopped in the reverse order of starting: by
/// [`NodeHandle::shutdown`], or by [`Node::start`] when a later step fails.
struct Parts {
    mesh: MeshHandle,
    mesh_task: JoinHandle<()>,
    placement: Stage,
    agent: Stage,
    discovery: Stage,
    /// API, gateway, logs server, metrics and resource measuring.
    servers: Stage,
}

impl Parts {
    async fn stop(self, grace: Duration) {
        // No new requests; those in flight still reach the instances, which stop only after.
        self.servers.stop.cancel();
        self.discovery.stop("discovery", grace).await;
        self.servers.stop("the API and gateway", grace).await;
        // An instance's stop may take a container's stop timeout.
        self.agent.stop("the agent", grace.max(AGENT_GRACE)).await;
        self.placement.stop("the placement group", grace).await;
        if let Err(e) = self.mesh.leave().await {
            tracing::warn!(error = %e, "leaving the mesh");
        }
        let _ = tokio::time::timeout(grace, self.mesh_task).await;
    }
}

/// Long-lived work that starts and stops together: a token that stops it, a tracker to wait on.
/// Every part of a node runs in one, and stops one way.
#[derive(Default)]
pub(crate) struct Stage {
    pub(crate) stop: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

impl Stage {
    /// Stops the stage's tasks and waits for them, at most `grace` (then they are left to end on
    /// their own).
    async fn stop(&self, what: &str, grace: Duration) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("{what}: some tasks did not finish within {grace:?}");
        }
    }
}

impl Node {
    /// Starts a node from `config`: data dir, mesh, placement group, agent, discovery, API and
    /// gateway. Returns once the node is ready and its `node.json` written.
    pub async fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
        // rustls is linked with two crypto backends (through different crates); one must be
        // chosen before the first TLS use, e.g. an app's outgoing HTTPS request, or that panics.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        datadir::prepare(&config.data_dir)?;
        datadir::remove_node_file(&config.data_dir);
        // Before the key: a data dir with a key but no mode is from before private meshes.
        let mode = mesh_mode::resolve(&config.data_dir, config.open, &config.bootstrap)?;
        let listen = listen_addrs(&config, &mode)?;
        let keypair = datadir::load_or_create_key(&config.data_dir)?;
        let peer_id = keypair.public().to_peer_id();
        // Off loopback (or when asked), API clients must send the token kept in the data dir;
        // the join ticket needs it everywhere (it may hold the mesh's secret), so there always
        // is one.
        let api_access = mycel_api::Access {
            token: Some(datadir::load_or_create_api_token(&config.data_dir)?),
            everywhere: config.api_requires_token,
        };
        let api_listener = bind("API", config.api).await?;
        let gateway_listener = bind("gateway", config.gateway).await?;
        let api = local_addr("API", config.api, &api_listener)?;
        let gateway = local_addr("gateway", config.gateway, &gateway_listener)?;

        let name = config.name.clone().unwrap_or_else(|| {
            let id = peer_id.to_string();
            format!("{}-{}", datadir::hostname(), &id[id.len() - 6..])
        });
        let wanted = drivers::wanted(config.runtimes.as_deref()).await;
        let drivers = Drivers::start(&wanted, &config.data_dir, &peer_id.to_string()).await?;
        let runtimes: Vec<Runtime> = drivers.all.iter().map(|d| d.runtime()).collect();
        let local = LocalNode {
            name: name.clone(),
            labels: config.labels.clone(),
            runtimes: runtimes.clone(),
            resources: mycel_host::measure(&config.data_dir),
            policy: config.policy.clone(),
        };

        let mut registry = Registry::default();
        let api_metrics = mycel_api::ApiMetrics::register(&mut registry);
        let gateway_metrics = mycel_gateway::GatewayMetrics::register(&mut registry);
        let ingress_metrics = mycel_gateway::ingress::IngressMetrics::register(&mut registry);
        let app_metrics = crate::app_metrics::register(&mut registry);
        let node_metrics = crate::node_metrics::register(&mut registry);
        let blob_metrics = mycel_blobs::BlobMetrics::register(&mut registry);
        let blobs = mycel_blobs::BlobStore::open(
            &config.data_dir.join("blobs"),
            config.max_blob_bytes,
            blob_metrics,
        )
        .map_err(NodeError::Blobs)?;
        // A node with nobody to join starts a new mesh, and founds its placement group.
        let peers_file = config.data_dir.join(datadir::PEERS_FILE);
        let founds_mesh =
            config.bootstrap.is_empty() && mycel_mesh::peer_store::load(&peers_file).is_empty();
        let (placement_inbox, placement_requests) = tokio::sync::mpsc::channel(PLACEMENT_INBOX);
        let mut mesh_config = MeshConfig::new(keypair.clone(), listen);
        mesh_config.app_provider_ttl = config.discovery_ttl;
        mesh_config.placement_inbox = Some(placement_inbox);
        mesh_config.bootstrap = config
            .bootstrap
            .iter()
            .flat_map(crate::Bootstrap::dial_addrs)
            .collect();
        mesh_config.secret = mode.secret().cloned();
        mesh_config.peer_store = Some(peers_file);
        mesh_config.timing = config.timing;
        mesh_config.blob_server = Some(Arc::new(mycel_blobs::StoreServer {
            store: blobs.clone(),
        }));
        let mesh = mycel_mesh::start(mesh_config, local.clone(), &mut registry)
            .await
            .map_err(NodeError::Mesh)?;
        let parts = Parts {
            mesh: mesh.handle.clone(),
            mesh_task: mesh.task,
            placement: Stage::default(),
            agent: Stage::default(),
            discovery: Stage::default(),
            servers: Stage::default(),
        };
        // From here on a failure stops what already runs.
        let assembled = async {
            let group = mycel_placement::GroupConfig {
                dir: config.data_dir.join("placement"),
                mesh: mesh.handle.clone(),
                inbox: placement_requests,
                found: founds_mesh,
                timing: Default::default(),
            };
            let placement =
                mycel_placement::start(group, parts.placement.stop.clone(), &parts.placement.tasks)
                    .await
                    .map_err(NodeError::Placement)?;
            announce_blobs(&blobs, &mesh.handle).await?;

            // Every member of a private mesh derives the same key from its secret; an open mesh
            // has no secrets.
            let secrets_key = mode
                .secret()
                .map(|secret| Arc::new(mycel_protocol::secrets::SecretsKey::derive(secret)));
            let agent_config = mycel_agent::AgentConfig {
                placement: placement.clone(),
                mesh: mesh.handle.clone(),
                blobs: blobs.clone(),
                drivers: drivers.all,
                docker: drivers.docker,
                scratch_dir: config.data_dir.join("tmp"),
                policy: config.policy.clone(),
                timing: mycel_agent::AgentTiming {
                    request_timeout: config.request_timeout,
                    ..Default::default()
                },
                secrets_key: secrets_key.clone(),
                volumes_dir: config.data_dir.join("volumes"),
                gateway: Some((gateway, config.domain.clone())),
            };
            let agent = mycel_agent::start(
                agent_config,
                parts.agent.stop.clone(),
                parts.agent.tasks.clone(),
            );
            let discovery = start_discovery(
                &mesh.handle,
                keypair.clone(),
                config.discovery_ttl,
                &agent,
                &placement,
                &parts.discovery,
            );

            let (shutdown, tasks) = (&parts.servers.stop, &parts.servers.tasks);
            let api_state = mycel_api::ApiState {
                mesh: mesh.handle.clone(),
                blobs: blobs.clone(),
                placement: placement.clone(),
                registry: Arc::new(registry),
                agent: agent.clone(),
                discovery,
                // The API signs the app requests it takes unsigned with the node's key: the node
                // owns them.
                signer: mycel_api::NodeSigner::new(keypair),
                secrets_key,
            };
            let api_options = mycel_api::ServeOptions {
                access: api_access,
                rate_limit: config.api_rate_limit,
                metrics: api_metrics,
            };
            let api_server =
                mycel_api::serve_with(api_listener, api_state, api_options, shutdown.clone());
            tasks.spawn(log_exit("API", api_server));
            let gateway_config = mycel_gateway::GatewayConfig {
                domain: config.domain.clone(),
                mesh: mesh.handle.clone(),
                placement: placement.clone(),
                local: Arc::new(AgentRoutes(agent.clone())),
            };
            tasks.spawn(crate::load_reports::report(
                gateway_metrics.clone(),
                agent.clone(),
                placement.clone(),
                shutdown.clone(),
            ));
            let gateway_server = mycel_gateway::serve_with(
                gateway_listener,
                gateway_config,
                gateway_metrics,
                shutdown.clone(),
            );
            tasks.spawn(log_exit("gateway", gateway_server));
            let ingress_config = mycel_gateway::ingress::IngressConfig {
                address: config.ingress,
                mesh: mesh.handle.clone(),
                placement: placement.clone(),
                local: Arc::new(AgentRoutes(agent.clone())),
                policy: config.policy.clone(),
            };
            let ingress =
                mycel_gateway::ingress::serve(ingress_config, ingress_metrics, shutdown.clone());
            tasks.spawn(log_exit("ingress", ingress));
            let logs_server = mycel_agent::serve_logs(agent.clone(), mesh.handle.clone());
            let stop_logs = shutdown.clone();
            tasks.spawn(async move { stop_logs.run_until_cancelled(logs_server).await });
            tasks.spawn(crate::app_metrics::track(
                app_metrics,
                placement.clone(),
                shutdown.clone(),
            ));
            tasks.spawn(crate::node_metrics::track(
                node_metrics,
                placement.clone(),
                agent.clone(),
                blobs,
                shutdown.clone(),
            ));
            tasks.spawn(measure_resources(
                mesh.handle.clone(),
                local,
                config.data_dir.clone(),
                shutdown.clone(),
            ));

            let ticket = mesh.handle.join_ticket().await.map_err(NodeError::Mesh)?;
            let info = NodeFile {
                peer_id: peer_id.to_string(),
                name,
                listen_addrs: mesh.listen_addrs.iter().map(|a| a.to_string()).collect(),
                api: format!("http://{api}"),
                gateway: format!("http://{gateway}"),
                private: ticket.is_private(),
                join: Some(ticket.to_string()),
            };
            datadir::write_node_file(&config.data_dir, &info)?;
            Ok::<_, NodeError>(info)
        }
        .await;
        let info = match assembled {
            Ok(info) => info,
            Err(e) => {
                parts.stop(FAILED_START_GRACE).await;
                return Err(e);
            }
        };
        Ok(NodeHandle {
            info,
            peer_id,
            api,
            gateway,
            runtimes,
            mesh_kind: match mode.secret() {
                Some(secret) => format!(
                    "private (secret {})",
                    mycel_mesh::transport::secret_fingerprint(secret)
                ),
                None => "open".to_string(),
            },
            data_dir: config.data_dir,
            parts,
        })
    }
}

impl NodeHandle {
    /// What `node.json` says: peer id, name, addresses, join ticket.
    pub fn info(&self) -> &NodeFile {
        &self.info
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The API's address (the port chosen when asked for port 0).
    pub fn api_addr(&self) -> SocketAddr {
        self.api
    }

    /// The gateway's address.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway
    }

    /// The runtimes this node offers.
    pub fn runtimes(&self) -> &[Runtime] {
        &self.runtimes
    }

    /// "open", or "private" and the secret's fingerprint (for the log).
    pub fn mesh_kind(&self) -> &str {
        &self.mesh_kind
    }

    /// Stops the node: removes `node.json`, stops taking requests, withdraws its listings,
    /// stops its instances, steps out of the placement group and leaves the mesh. In-flight API
    /// and gateway requests get `grace` to finish.
    pub async fn shutdown(self, grace: Duration) {
        datadir::remove_node_file(&self.data_dir);
        self.parts.stop(grace).await;
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| NodeError::Bind { what, addr, error })
}

fn local_addr(
    what: &'static str,
    addr: SocketAddr,
    listener: &TcpListener,
) -> Result<SocketAddr, NodeError> {
    listener
        .local_addr()
        .map_err(|error| NodeError::Bind { what, addr, error })
}

/// Announces every blob held here in the DHT, so peers find this node as a provider.
async fn announce_blobs(
    blobs: &mycel_blobs::BlobStore,
    mesh: &MeshHandle,
) -> Result<(), NodeError> {
    for hash in blobs.hashes().map_err(NodeError::Blobs)? {
        let key = hash.to_string().into_bytes();
        mesh.start_providing(key).await.map_err(NodeError::Mesh)?;
    }
    Ok(())
}

/// The addresses to listen on. QUIC cannot carry a private mesh's secret: a private node drops
/// the default's QUIC address, and refuses one it was asked for.
fn listen_addrs(config: &NodeConfig, mode: &MeshMode) -> Result<Vec<libp2p::Multiaddr>, NodeError> {
    let quic = mycel_mesh::transport::is_quic;
    if mode == &MeshMode::Open {
        return Ok(config.listen.clone());
    }
    if config.listen_given
        && let Some(addr) = config.listen.iter().find(|a| quic(a))
    {
        return Err(NodeError::Listen(format!(
            "--listen {addr}: a private mesh runs over TCP only (QUIC cannot carry its secret); \
             listen on a /tcp/ address, or start an open mesh (--open, with a new --data-dir)"
        )));
    }
    let tcp: Vec<_> = config.listen.iter().filter(|a| !quic(a)).cloned().collect();
    if tcp.is_empty() {
        return Err(NodeError::Listen(
            "a private mesh runs over TCP only, and no --listen address is TCP".into(),
        ));
    }
    Ok(tcp)
}

/// Re-measures free memory and disk so adverts stay current.
async fn measure_resources(
    mesh: MeshHandle,
    mut local: LocalNode,
    data_dir: std::path::PathBuf,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(MEASURE_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let resources = mycel_host::measure(&data_dir);
                if resources != local.resources {
                    local.resources = resources;
                    if mesh.update_local(local.clone()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

async fn log_exit(what: &'static str, server: impl Future<Output = std::io::Result<()>>) {
    if let Err(e) = server.await {
        tracing::error!(error = %e, "the {what} server stopped");
    }
}
