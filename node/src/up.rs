//! `mycel up`: wires the crates into a running node, then waits for a signal to leave.
//!
//! Order matters: bind every listener first (port 0 resolves here), start the mesh, serve the API
//! and gateway, and only then write `node.json` — its presence means "ready".

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use mycel_mesh::{LocalNode, MeshConfig, MeshHandle};
use mycel_protocol::Runtime;
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, signal::unix::SignalKind};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    cli::Bootstrap,
    config::NodeConfig,
    datadir,
    mesh_mode::{self, MeshMode},
};

/// How often the node re-measures what it has free.
const MEASURE_INTERVAL: Duration = Duration::from_secs(5);
/// How many placement frames may wait for the placement group before peers are refused.
const PLACEMENT_INBOX: usize = 1024;
/// How long the API and gateway get to finish in-flight requests when the node stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a node until SIGINT or SIGTERM. `discovery_ttl` overrides how long app listings live
/// (a hidden flag, for tests).
pub(crate) async fn run(config: NodeConfig, discovery_ttl: Option<Duration>) -> anyhow::Result<()> {
    init_tracing();
    // rustls is linked with two crypto backends (through different crates); one must be chosen
    // before the first TLS use, e.g. an app's outgoing HTTPS request, or that use panics.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    datadir::prepare(&config.data_dir)?;
    datadir::remove_node_file(&config.data_dir);
    // Before the key: a data dir with a key but no mode is from before private meshes.
    let mode = mesh_mode::resolve(&config.data_dir, config.open, &config.bootstrap)?;
    let listen = listen_addrs(&config, &mode)?;
    let keypair = datadir::load_or_create_key(&config.data_dir)?;
    let peer_id = keypair.public().to_peer_id();
    // Off loopback (or when asked), API clients must send the token kept in the data dir; the
    // join ticket needs it everywhere (it may hold the mesh's secret), so there always is one.
    let api_access = mycel_api::Access {
        token: Some(datadir::load_or_create_api_token(&config.data_dir)?),
        everywhere: config.api_requires_token,
    };

    let api_listener = TcpListener::bind(config.api)
        .await
        .with_context(|| format!("binding the API to {}", config.api))?;
    let gateway_listener = TcpListener::bind(config.gateway)
        .await
        .with_context(|| format!("binding the gateway to {}", config.gateway))?;
    let api_addr = api_listener.local_addr()?;
    let gateway_addr = gateway_listener.local_addr()?;

    let name = config.name.clone().unwrap_or_else(|| {
        let id = peer_id.to_string();
        format!("{}-{}", datadir::hostname(), &id[id.len() - 6..])
    });
    let wanted = runtimes(config.runtimes.as_deref()).await;
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
    let blob_metrics = mycel_blobs::BlobMetrics::register(&mut registry);
    let blobs = mycel_blobs::BlobStore::open(
        &config.data_dir.join("blobs"),
        config.max_blob_bytes,
        blob_metrics,
    )
    .context("opening the blob store")?;
    // A node with nobody to join starts a new mesh, and founds its placement group.
    let peers_file = config.data_dir.join(datadir::PEERS_FILE);
    let founds_mesh =
        config.bootstrap.is_empty() && mycel_mesh::peer_store::load(&peers_file).is_empty();
    let mesh_secret = mode.secret().cloned();
    let (placement_inbox, placement_requests) = tokio::sync::mpsc::channel(PLACEMENT_INBOX);
    let discovery_ttl = discovery_ttl.unwrap_or(mycel_discovery::DiscoveryConfig::DEFAULT_LIFETIME);
    let mut mesh_config = MeshConfig::new(keypair.clone(), listen);
    mesh_config.app_provider_ttl = discovery_ttl;
    mesh_config.placement_inbox = Some(placement_inbox);
    mesh_config.bootstrap = config
        .bootstrap
        .iter()
        .flat_map(Bootstrap::dial_addrs)
        .collect();
    mesh_config.secret = mesh_secret.clone();
    mesh_config.peer_store = Some(peers_file);
    mesh_config.timing = config.timing;
    mesh_config.blob_server = Some(Arc::new(mycel_blobs::StoreServer {
        store: blobs.clone(),
    }));
    let mesh = mycel_mesh::start(mesh_config, local.clone(), &mut registry)
        .await
        .context("starting the mesh")?;
    let placement = mycel_placement::start(mycel_placement::GroupConfig {
        dir: config.data_dir.join("placement"),
        mesh: mesh.handle.clone(),
        inbox: placement_requests,
        found: founds_mesh,
        timing: Default::default(),
    })
    .await
    .context("starting the placement group")?;
    let registry = Arc::new(registry);
    // Every blob held here is announced in the DHT, so peers find this node as a provider.
    for hash in blobs.hashes().context("listing the blob store")? {
        mesh.handle
            .start_providing(hash.to_string().into_bytes())
            .await?;
    }

    let agent = mycel_agent::start(mycel_agent::AgentConfig {
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
    });

    // The API signs the app requests it takes unsigned with the node's key: the node owns them.
    let signer = mycel_api::NodeSigner::new(keypair.clone());
    let discovery = start_discovery(&mesh.handle, keypair, discovery_ttl, &agent, &placement);

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let api_state = mycel_api::ApiState {
        mesh: mesh.handle.clone(),
        blobs,
        placement: placement.clone(),
        registry,
        agent: agent.clone(),
        discovery: discovery.clone(),
        signer,
    };
    tasks.spawn(log_exit(
        "API",
        mycel_api::serve_with(
            api_listener,
            api_state,
            mycel_api::ServeOptions {
                access: api_access,
                rate_limit: config.api_rate_limit,
                metrics: api_metrics,
            },
            shutdown.clone(),
        ),
    ));
    let gateway_config = mycel_gateway::GatewayConfig {
        domain: config.domain.clone(),
        mesh: mesh.handle.clone(),
        placement: placement.clone(),
        local: Arc::new(AgentRoutes(agent.clone())),
    };
    tasks.spawn(log_exit(
        "gateway",
        mycel_gateway::serve(gateway_listener, gateway_config, shutdown.clone()),
    ));
    // Ends when the mesh stops.
    tokio::spawn(mycel_agent::serve_logs(agent.clone(), mesh.handle.clone()));
    tasks.spawn(measure_resources(
        mesh.handle.clone(),
        local,
        config.data_dir.clone(),
        shutdown.clone(),
    ));
    tasks.close();

    let ticket = mesh.handle.join_ticket().await?;
    let node_file = datadir::NodeFile {
        peer_id: peer_id.to_string(),
        name: name.clone(),
        listen_addrs: mesh.listen_addrs.iter().map(|a| a.to_string()).collect(),
        api: format!("http://{api_addr}"),
        gateway: format!("http://{gateway_addr}"),
        private: ticket.is_private(),
        join: Some(ticket.to_string()),
    };
    let mesh_kind = match &mesh_secret {
        Some(secret) => format!(
            "private (secret {})",
            mycel_mesh::transport::secret_fingerprint(secret)
        ),
        None => "open".to_string(),
    };
    datadir::write_node_file(&config.data_dir, &node_file)?;
    tracing::info!(
        peer_id = %peer_id,
        name = %name,
        p2p = %node_file.listen_addrs.join(","),
        mesh = %mesh_kind,
        api = %node_file.api,
        api_token_required = config.api_requires_token,
        gateway = %node_file.gateway,
        runtimes = %runtimes.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","),
        "mycel node ready"
    );

    wait_for_signal().await?;
    tracing::info!("leaving the mesh");
    datadir::remove_node_file(&config.data_dir);
    shutdown.cancel();
    discovery.shutdown().await;
    agent.stop().await;
    placement.shutdown().await;
    if let Err(e) = mesh.handle.leave().await {
        tracing::warn!(error = %e, "leaving the mesh");
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some requests did not finish in time");
    }
    Ok(())
}

/// The addresses to listen on. QUIC cannot carry a private mesh's secret: a private node drops
/// the default's QUIC address, and refuses one it was asked for.
fn listen_addrs(config: &NodeConfig, mode: &MeshMode) -> anyhow::Result<Vec<libp2p::Multiaddr>> {
    let quic = mycel_mesh::transport::is_quic;
    if mode == &MeshMode::Open {
        return Ok(config.listen.clone());
    }
    if config.listen_given
        && let Some(addr) = config.listen.iter().find(|a| quic(a))
    {
        anyhow::bail!(
            "--listen {addr}: a private mesh runs over TCP only (QUIC cannot carry its secret); \
             listen on a /tcp/ address, or start an open mesh (--open, with a new --data-dir)"
        );
    }
    let tcp: Vec<_> = config.listen.iter().filter(|a| !quic(a)).cloned().collect();
    if tcp.is_empty() {
        anyhow::bail!("a private mesh runs over TCP only, and no --listen address is TCP");
    }
    Ok(tcp)
}

/// The runtime drivers this node runs instances with.
struct Drivers {
    all: Vec<Arc<dyn mycel_runtime::Driver>>,
    docker: Option<mycel_runtime::DockerDriver>,
}

impl Drivers {
    /// Starts a driver for each wanted runtime. A Docker engine that answered detection but
    /// refuses the driver is not offered (with a warning): the node still runs wasm.
    async fn start(wanted: &[Runtime], data_dir: &Path, node_id: &str) -> anyhow::Result<Self> {
        let mut all: Vec<Arc<dyn mycel_runtime::Driver>> = Vec::new();
        let mut docker = None;
        if wanted.contains(&Runtime::Wasm) {
            let wasm = mycel_runtime::WasmDriver::new(data_dir.join("wasm-cache"))
                .context("starting the wasm runtime")?;
            all.push(Arc::new(wasm));
        }
        if wanted.contains(&Runtime::Docker) {
            let config = mycel_runtime::DockerConfig::new(node_id);
            match mycel_runtime::DockerDriver::connect(config).await {
                Ok(driver) => {
                    all.push(Arc::new(driver.clone()));
                    docker = Some(driver);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the Docker engine answered but its driver did not start; not offering docker")
                }
            }
        }
        Ok(Self { all, docker })
    }
}

/// The runtimes to offer: those asked for that this host really has (default: all it has).
async fn runtimes(requested: Option<&[Runtime]>) -> Vec<Runtime> {
    let available = mycel_host::detect_runtimes().await;
    let Some(requested) = requested else {
        return available;
    };
    for missing in requested.iter().filter(|r| !available.contains(r)) {
        tracing::warn!(runtime = %missing, "runtime requested but not available on this host; not offering it");
    }
    requested
        .iter()
        .copied()
        .filter(|r| available.contains(r))
        .collect()
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

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MYCEL_LOG")
        // kad warns at every periodic bootstrap of a node that is alone; that is not news.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,libp2p=warn,libp2p_kad=error,openraft=warn")
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// App discovery: announces the apps the agent runs here healthy, and browses the mesh.
fn start_discovery(
    mesh: &MeshHandle,
    keypair: libp2p::identity::Keypair,
    lifetime: Duration,
    agent: &mycel_agent::AgentHandle,
    placement: &mycel_placement::PlacementHandle,
) -> mycel_discovery::DiscoveryHandle {
    let mut config = mycel_discovery::DiscoveryConfig::new(mesh.clone(), keypair);
    config.lifetime = lifetime;
    let local = mycel_discovery::watch_local_apps(
        Arc::new(AgentInstances(agent.clone())),
        placement.clone(),
    );
    mycel_discovery::start(config, local)
}

/// Discovery's view of what runs here: the agent's healthy instances.
struct AgentInstances(mycel_agent::AgentHandle);

impl mycel_discovery::LocalInstances for AgentInstances {
    fn healthy_instances(&self) -> Vec<String> {
        self.0
            .instances()
            .iter()
            .map(|i| i.id().to_string())
            .filter(|id| self.0.is_healthy(id))
            .collect()
    }
}

/// The gateway's view of what runs here: the agent's instances. A runtime error that another
/// instance might not hit (overloaded, stopping) goes back to the gateway to retry elsewhere;
/// any other becomes this instance's answer (a trap is a 500, a timeout a 504).
struct AgentRoutes(mycel_agent::AgentHandle);

impl mycel_gateway::LocalInstances for AgentRoutes {
    fn serve(
        &self,
        id: &str,
        request: http::Request<mycel_gateway::Body>,
    ) -> Option<
        futures::future::BoxFuture<
            'static,
            Result<http::Response<mycel_gateway::Body>, mycel_gateway::BoxError>,
        >,
    > {
        let answer = self.0.serve(id, request)?;
        Some(Box::pin(async move {
            match answer.await {
                Ok(response) => Ok(response),
                Err(e) if e.is_retryable() => Err(Box::new(e) as mycel_gateway::BoxError),
                Err(e) => {
                    let body = serde_json::json!({"error": e.to_string(), "code": e.code()});
                    let mut response =
                        http::Response::new(mycel_runtime::full_body(body.to_string()));
                    *response.status_mut() = e.status_code();
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok(response)
                }
            }
        }))
    }

    fn is_healthy(&self, id: &str) -> bool {
        self.0.is_healthy(id)
    }
}
