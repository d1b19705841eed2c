//! Starting one instance: what it runs made ready on this node (its module or binary fetched
//! from peers, its image loaded, its secrets opened and handed over) as the runtime's
//! [`InstanceSpec`], then started by the driver. Runs on a task of its own; the agent's loop
//! never waits for it.

use std::{collections::BTreeMap, sync::Arc};

use mycel_blobs::{BlobStore, MeshBlobs};
use mycel_protocol::{
    BlobHash, Runtime,
    app::AppKind,
    placement::{AppRecord, ImageEntry},
};
use mycel_runtime::{DependencyRoutes, Driver, Instance, InstanceSpec, ProcessWorkload, Workload};

use crate::{AgentError, AgentTiming, images::ImageLoader, secrets, volumes::keeper::Mounter};

/// Everything a start needs, taken from the agent when it decides to start.
pub(crate) struct Prepared {
    /// The first driver of the app's runtimes this node has.
    pub(crate) driver: Option<Arc<dyn Driver>>,
    /// The app's own runtime, as messages name it.
    pub(crate) runtime: Runtime,
    pub(crate) blobs: BlobStore,
    pub(crate) network: MeshBlobs,
    pub(crate) images: Option<ImageLoader>,
    pub(crate) mesh_images: BTreeMap<String, ImageEntry>,
    /// The app's secrets, opened (or why they could not be).
    pub(crate) secrets: Result<Vec<(String, Vec<u8>)>, AgentError>,
    /// The node's gateway and domain, for the app's dependencies.
    pub(crate) gateway: Option<(std::net::SocketAddr, String)>,
    /// Mounts the app's volumes (`None`: it has none; an error: this node cannot keep them).
    pub(crate) volumes: Result<Option<Mounter>, AgentError>,
    /// This node's peer id.
    pub(crate) node: String,
    pub(crate) timing: AgentTiming,
}

impl Prepared {
    /// Makes `app`'s workload ready and starts instance `id` of it.
    pub(crate) async fn start(
        self,
        id: String,
        app: AppRecord,
    ) -> Result<Arc<dyn Instance>, AgentError> {
        let Prepared {
            driver,
            runtime,
            blobs,
            network,
            images,
            mesh_images,
            secrets: opened,
            volumes,
            gateway,
            node,
            timing,
        } = self;
        let kind = app.manifest.kind();
        let driver = driver
            .ok_or_else(|| AgentError::Unrunnable(format!("this node has no {runtime} runtime")))?;
        let manifest = &app.manifest;
        let mut workload = match (kind, &manifest.wasm, &manifest.container, &manifest.process) {
            (AppKind::Wasm, Some(wasm), _, _) => {
                let (module, hash) = local_blob(&blobs, &network, &wasm.module, "module").await?;
                Workload::Wasm {
                    module,
                    module_hash: hash.to_string(),
                }
            }
            (AppKind::Container, _, Some(container), _) => {
                let images = images.ok_or_else(|| {
                    AgentError::Unrunnable("this node has no Docker engine".into())
                })?;
                Workload::Container(images.workload(container, &mesh_images).await?)
            }
            (AppKind::Process, _, _, Some(process)) => {
                let (binary, hash) =
                    local_blob(&blobs, &network, &process.binary, "binary").await?;
                match (driver.runtime(), images) {
                    // No sandbox here: the binary runs wrapped in an image of its own.
                    (Runtime::Docker, Some(images)) => {
                        Workload::Container(images.wrapped_binary(binary, hash, process).await?)
                    }
                    _ => Workload::Process(ProcessWorkload {
                        binary,
                        binary_hash: hash.to_string(),
                        args: process.args.clone(),
                        port: process.port(),
                        tcp_ports: manifest.ports.iter().map(|p| p.container).collect(),
                    }),
                }
            }
            _ => {
                return Err(AgentError::Unrunnable(format!(
                    "{runtime} apps cannot run here"
                )));
            }
        };
        if let Workload::Container(container) = &mut workload {
            container.tcp_ports = manifest.ports.iter().map(|p| p.container).collect();
        }
        let volumes = match volumes? {
            Some(mounter) => mounter.mount().await?,
            None => Vec::new(),
        };
        let wasm = matches!(workload, Workload::Wasm { .. });
        let (dir, secret_env) = secrets::hand_over(&opened?, &node, &id, wasm)?;
        let spec = InstanceSpec {
            instance_id: id,
            app: app.manifest.name.clone(),
            workload,
            env: manifest.env.clone().into_iter().chain(secret_env).collect(),
            memory_mb: app.manifest.memory_mb(),
            cpu_millis: app.manifest.cpu_millis(),
            request_timeout: timing.request_timeout,
            max_concurrency: timing.max_concurrency,
            secrets_dir: dir.as_ref().map(|d| d.path().to_path_buf()),
            volumes,
            dependencies: gateway.filter(|_| !manifest.dependencies.is_empty()).map(
                |(gateway, domain)| {
                    let names = manifest.dependencies.keys().cloned().collect();
                    Arc::new(DependencyRoutes::new(gateway, domain, names))
                },
            ),
        };
        Ok(secrets::holding(driver.start(spec).await?, dir))
    }
}

/// The blob `reference` names (`what` the app calls it), fetched from peers when this node
/// lacks it: its path in the store, and its hash.
async fn local_blob(
    blobs: &BlobStore,
    network: &MeshBlobs,
    reference: &str,
    what: &str,
) -> Result<(std::path::PathBuf, BlobHash), AgentError> {
    let hash: BlobHash = reference
        .parse()
        .map_err(|e| AgentError::Unrunnable(format!("the {what} is not a blob hash: {e}")))?;
    mycel_blobs::fetch(blobs, network, hash)
        .await
        .map_err(|e| AgentError::Fetch(format!("fetching the {what} {hash}: {e}")))?;
    let path = blobs
        .blob_path(&hash)
        .map_err(|e| AgentError::Node(format!("reading the blob store: {e}")))?
        .ok_or_else(|| AgentError::Node(format!("{hash} vanished from the blob store")))?;
    Ok((path, hash))
}
