//! The runtime drivers a node runs instances with: those asked for that the host really has.

use std::{path::Path, sync::Arc};

use mycel_protocol::Runtime;

use crate::NodeError;

/// The runtime drivers this node runs instances with.
pub(crate) struct Drivers {
    pub(crate) all: Vec<Arc<dyn mycel_runtime::Driver>>,
    pub(crate) docker: Option<mycel_runtime::DockerDriver>,
}

impl Drivers {
    /// Starts a driver for each wanted runtime. A Docker engine that answered detection but
    /// refuses the driver is not offered (with a warning), nor is `process` when no sandbox
    /// starts here: the node still runs wasm.
    pub(crate) async fn start(
        wanted: &[Runtime],
        data_dir: &Path,
        node_id: &str,
    ) -> Result<Self, NodeError> {
        let mut all: Vec<Arc<dyn mycel_runtime::Driver>> = Vec::new();
        let mut docker = None;
        if wanted.contains(&Runtime::Wasm) {
            let wasm = mycel_runtime::WasmDriver::new(data_dir.join("wasm-cache"))
                .map_err(NodeError::Wasm)?;
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
        if wanted.contains(&Runtime::Process) {
            let config = mycel_runtime::ProcessConfig::new(node_id, data_dir.join("process"));
            match mycel_runtime::ProcessDriver::start(config).await {
                Ok(driver) => all.push(Arc::new(driver)),
                Err(e) => {
                    tracing::warn!(error = %e, "sandboxed processes cannot run on this host; not offering process")
                }
            }
        }
        Ok(Self { all, docker })
    }
}

/// The runtimes to offer: those asked for that this host really has (default: all it has).
pub(crate) async fn wanted(requested: Option<&[Runtime]>) -> Vec<Runtime> {
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
