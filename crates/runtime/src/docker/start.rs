//! Starting one container: from the spec to a container that accepts connections on its port,
//! or to an error that says why it does not (with its last lines of output).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bollard::{
    Docker,
    query_parameters::{CreateContainerOptionsBuilder, WaitContainerOptionsBuilder},
};
use futures::StreamExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    DriverInner, engine_error, engine_reason, follow, force_remove, is_not_found,
    running::ContainerBackend,
    spec::{self, Plan},
};
use crate::{
    ContainerWorkload, InstanceSpec, RuntimeError, Workload,
    logs::LogBuffer,
    upstream::{Started, TcpPorts, Upstream, UpstreamInstance},
};

/// How many lines of a failed container's output its error quotes.
const FAILED_LINES: usize = 20;
/// How long a probe connection must stay open to count as reaching the app (see [`accepts`]).
const PROBE_HOLD: Duration = Duration::from_millis(50);
/// Pause between probes.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// Said when the container stopped but the engine cannot say more.
const EXITED: &str = "its container exited before it accepted connections";

/// Starts `spec`'s container and waits until its port accepts connections.
///
/// Cancel-safe in effect: if the future is dropped midway, the container it created is removed
/// in the background.
pub(super) async fn start(
    inner: Arc<DriverInner>,
    spec: InstanceSpec,
) -> Result<UpstreamInstance, RuntimeError> {
    let Workload::Container(workload) = &spec.workload else {
        return Err(RuntimeError::InvalidSpec(format!(
            "the docker runtime cannot run a {} workload",
            spec.workload.runtime()
        )));
    };
    if workload.port == 0 {
        return Err(RuntimeError::InvalidSpec(
            "a container's port must not be 0".to_owned(),
        ));
    }
    let docker = &inner.docker;
    let config = &inner.config;
    let context = || format!("starting instance {} of {}", spec.instance_id, spec.app);

    let image = match docker.inspect_image(&workload.image).await {
        Ok(image) => image,
        Err(e) if is_not_found(&e) => {
            return Err(RuntimeError::Engine {
                context: context(),
                reason: format!(
                    "image {} is not on this node's Docker engine (starting never pulls: \
                     load its archive first)",
                    workload.image
                ),
            });
        }
        Err(e) => return Err(engine_error(context(), e)),
    };
    let image_user = image.config.as_ref().and_then(|c| c.user.as_deref());
    let body = Plan {
        spec: &spec,
        workload,
        image_user,
        node_id: &config.node_id,
        host_address: config.host_address,
        init: config.init,
        host_cpus: inner.host_cpus,
    }
    .create_body();

    // A container of this name is a leftover of this very instance (a crash before its stop).
    let name = spec::container_name(&config.node_id, &spec.instance_id);
    if force_remove(docker, &name).await? {
        tracing::info!(container = %name, "removed a leftover container of the same name");
    }
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    let created = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| engine_error(format!("{}: creating container {name}", context()), e))?;
    for warning in &created.warnings {
        tracing::warn!(container = %name, %warning, "the engine warned about a new container");
    }
    let guard = RemoveOnDrop::new(docker.clone(), created.id.clone());
    let started_at = Instant::now();

    let failure = |reason: String| RuntimeError::Instantiate {
        app: spec.app.clone(),
        reason,
    };
    if let Err(e) = docker.start_container(&created.id, None).await {
        let lines = follow::last_lines(docker, &created.id, FAILED_LINES).await;
        guard.remove().await;
        return Err(failure(format!(
            "its container did not start: {}{}",
            engine_reason(&e),
            quoted(&lines)
        )));
    }
    let published = match published_ports(docker, &created.id, workload).await {
        Ok(published) => published,
        Err(reason) => {
            let reason = describe_failure(docker, &created.id, &reason).await;
            guard.remove().await;
            return Err(failure(reason));
        }
    };
    let to_addr = |port: u16| SocketAddr::new(config.host_address, port);
    let port = published[&workload.port];
    let addr = to_addr(port);
    if let Err(reason) = wait_until_ready(docker, &created.id, addr, config.start_timeout).await {
        let reason = describe_failure(docker, &created.id, &reason).await;
        guard.remove().await;
        return Err(failure(reason));
    }
    guard.disarm();
    tracing::info!(
        instance = %spec.instance_id,
        app = %spec.app,
        container = %name,
        %addr,
        elapsed_ms = started_at.elapsed().as_millis() as u64,
        "container started"
    );
    let log = Arc::new(LogBuffer::new());
    let followers = follow::Followers::start(docker, &created.id, log.clone());
    Ok(UpstreamInstance::new(Started {
        id: spec.instance_id.clone(),
        app: spec.app.clone(),
        kind: "container",
        upstream: Upstream::new(addr),
        tcp: TcpPorts::Published(
            published
                .into_iter()
                .map(|(app_port, host_port)| (app_port, to_addr(host_port)))
                .collect(),
        ),
        request_timeout: spec.request_timeout,
        max_concurrency: spec.max_concurrency,
        log,
        backend: Box::new(ContainerBackend {
            id: spec.instance_id.clone(),
            container: created.id,
            docker: docker.clone(),
            stop_timeout: config.stop_timeout,
            followers,
        }),
    }))
}

/// The host port the engine picked for each of the app's ports; an error says why one has none.
async fn published_ports(
    docker: &Docker,
    container: &str,
    workload: &ContainerWorkload,
) -> Result<BTreeMap<u16, u16>, String> {
    let inspect = docker
        .inspect_container(container, None)
        .await
        .map_err(|e| format!("inspecting its container: {}", engine_reason(&e)))?;
    let mut bindings = inspect
        .network_settings
        .and_then(|n| n.ports)
        .unwrap_or_default();
    workload
        .ports()
        .map(|port| {
            let key = spec::port_key(port);
            bindings
                .remove(&key)
                .flatten()
                .into_iter()
                .flatten()
                .find_map(|binding| binding.host_port?.parse::<u16>().ok())
                .map(|host| (port, host))
                .ok_or_else(|| format!("the engine published no host port for {key}"))
        })
        .collect()
}

/// Waits until `addr` reaches the app, the container exits, or `limit` passes.
async fn wait_until_ready(
    docker: &Docker,
    container: &str,
    addr: SocketAddr,
    limit: Duration,
) -> Result<(), String> {
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    // Whatever this stream yields (an exit code, or an error for a non-zero one) means the
    // container is no longer running.
    let mut exited = docker.wait_container(container, Some(options));
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            biased;
            _ = exited.next() => return Err(EXITED.to_owned()),
            ready = accepts(addr) => if ready { return Ok(()) },
        }
        tokio::select! {
            biased;
            _ = exited.next() => return Err(EXITED.to_owned()),
            () = tokio::time::sleep_until(deadline) => {
                return Err(format!(
                    "its container did not accept connections on its port within {limit:?} \
                     (does the app listen on 0.0.0.0:$PORT?)"
                ));
            }
            () = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
}

/// Whether a connection to `addr` reaches a listening app. Docker's userland proxy accepts
/// connections to a published port even when nothing listens inside yet, and closes them once
/// its own connection into the container is refused: so a connection counts only when the app
/// answers the probe's request (at once, for an HTTP server: the start is not held back), or is
/// still open after [`PROBE_HOLD`].
async fn accepts(addr: SocketAddr) -> bool {
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
    else {
        return false;
    };
    // `OPTIONS *` asks the server about itself: no app route runs, any answer will do.
    let request = b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nUser-Agent: mycel-probe\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    match tokio::time::timeout(PROBE_HOLD, stream.read(&mut byte)).await {
        Err(_still_open) => true,
        Ok(Ok(read)) => read > 0,
        Ok(Err(_)) => false,
    }
}

/// Why the container cannot serve: how it ended if it did, else `reason`; then its last lines.
async fn describe_failure(docker: &Docker, container: &str, reason: &str) -> String {
    let state = docker
        .inspect_container(container, None)
        .await
        .ok()
        .and_then(|inspect| inspect.state)
        .filter(|state| state.running != Some(true));
    let mut text = match state {
        None => reason.to_owned(),
        Some(state) => {
            let mut text = "its container exited".to_owned();
            if let Some(code) = state.exit_code {
                text.push_str(&format!(" with code {code}"));
            }
            if state.oom_killed == Some(true) {
                text.push_str(", killed for exceeding its memory limit,");
            }
            if let Some(error) = state.error.filter(|e| !e.is_empty()) {
                text.push_str(&format!(" ({error})"));
            }
            text.push_str(" before it accepted connections");
            text
        }
    };
    let lines = follow::last_lines(docker, container, FAILED_LINES).await;
    text.push_str(&quoted(&lines));
    text
}

fn quoted(lines: &[String]) -> String {
    if lines.is_empty() {
        return "; it wrote nothing".to_owned();
    }
    let mut text = "; its last output:".to_owned();
    for line in lines {
        text.push_str("\n  ");
        text.push_str(line);
    }
    text
}

/// Removes a container that a start created, unless the start succeeded: awaited on the error
/// paths, and in the background when the start's future is dropped midway.
struct RemoveOnDrop {
    target: Option<(Docker, String)>,
}

impl RemoveOnDrop {
    fn new(docker: Docker, container: String) -> Self {
        RemoveOnDrop {
            target: Some((docker, container)),
        }
    }

    async fn remove(mut self) {
        if let Some((docker, container)) = self.target.take() {
            remove_logged(docker, container).await;
        }
    }

    fn disarm(mut self) {
        self.target = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some((docker, container)) = self.target.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(remove_logged(docker, container));
        }
    }
}

async fn remove_logged(docker: Docker, container: String) {
    if let Err(e) = force_remove(&docker, &container).await {
        tracing::warn!(%container, error = %e, "removing a container that failed to start");
    }
}
