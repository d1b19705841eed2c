//! mycel's runtimes: one [`Driver`]/[`Instance`] pair of traits that every runtime implements, the
//! wasm driver ([`WasmDriver`]), the Docker driver ([`DockerDriver`]) and the sandboxed process
//! driver ([`ProcessDriver`]).
//!
//! ```text
//! agent ──start(InstanceSpec)──▶ dyn Driver ──▶ Arc<dyn Instance> ◀──handle(Request)── gateway
//!                                  │                  │
//!                                  │                  ├─ logs(): recent lines + a follower
//!                                  │                  ├─ usage(): requests, in flight, failures
//!                                  │                  └─ stop(): refuse new work, drain
//!                                  ├─ wasm: wasmtime Engine (pooling allocator, epoch ticker),
//!                                  │  compiled components cached on disk by module hash
//!                                  ├─ docker: one hardened container per instance on the local
//!                                  │  engine, its port published on 127.0.0.1, HTTP/1.1 to it
//!                                  └─ process: one executable per instance in a namespace
//!                                     sandbox (hakoniwa) with a network of its own, HTTP/1.1
//!                                     to its port through sockets made in that network
//! ```
//!
//! A driver turns a verified module on disk into a running [`Instance`]; an instance answers HTTP
//! requests in process. Failures are typed ([`RuntimeError`]) so the gateway can map them to status
//! codes ([`RuntimeError::status_code`]) and decide whether to retry elsewhere.

mod admission;
mod body;
mod cpu;
mod docker;
mod error;
mod logs;
mod process;
mod upstream;
mod wasm;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use futures::future::BoxFuture;

pub use body::{Body, BoxError, empty_body, full_body};
pub use docker::{DockerConfig, DockerDriver, EngineImage};
pub use error::RuntimeError;
pub use logs::{LogLine, Logs, Stream};
pub use process::{ProcessConfig, ProcessDriver};
pub use wasm::{CacheStats, WasmDriver, outgoing::DependencyRoutes};

/// What a driver needs to start one instance of an app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSpec {
    /// Unique on this node; names the instance in logs and errors.
    pub instance_id: String,
    /// The app's name (a DNS label).
    pub app: String,
    /// What runs: a wasm component or a container image.
    pub workload: Workload,
    /// The app's environment variables.
    pub env: BTreeMap<String, String>,
    /// The most memory the app may use, per request for wasm (each request has its own instance).
    pub memory_mb: u64,
    /// The CPU the app may use, in thousandths of a core.
    pub cpu_millis: u64,
    /// How long one request may run, answer body included.
    pub request_timeout: Duration,
    /// How many requests may run at once; more are refused with [`RuntimeError::Overloaded`].
    pub max_concurrency: usize,
    /// A directory of the app's secrets, one file each, that containers and sandboxed processes
    /// see read-only at `/run/secrets` (wasm gets them in `env`).
    pub secrets_dir: Option<PathBuf>,
    /// The app's volumes: host directories it sees read-write at their paths.
    pub volumes: Vec<VolumeMount>,
    /// Where the app reaches its `[dependencies]` as `<dep>.localhost` (wasm only, yet).
    pub dependencies: Option<std::sync::Arc<DependencyRoutes>>,
}

/// A host directory an instance sees read-write at `path` (a volume, `[[volumes]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeMount {
    pub host: PathBuf,
    /// Absolute, checked by the manifest (no `..`, no `:` or `,`).
    pub path: String,
}

/// What an instance runs; each driver takes one kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// A `wasi:http/proxy` component.
    Wasm {
        /// The component as a file on disk whose content hashes to `module_hash`.
        module: PathBuf,
        /// `blake3:<64 hex>`: the module's content hash, also the key of the compiled cache.
        module_hash: String,
    },
    /// A container from an image the node's Docker engine holds.
    Container(ContainerWorkload),
    /// An executable run in a namespace sandbox.
    Process(ProcessWorkload),
}

/// A sandboxed process's executable and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessWorkload {
    /// The executable as a file on disk whose content hashes to `binary_hash`.
    pub binary: PathBuf,
    /// `blake3:<64 hex>`: the executable's content hash.
    pub binary_hash: String,
    pub args: Vec<String>,
    /// The port the app listens on in its own network; `$PORT` is set to it.
    pub port: u16,
    /// More ports it may listen on, for raw TCP connections (`[[ports]]`, for the node's ingress).
    pub tcp_ports: Vec<u16>,
}

/// A container instance's image and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerWorkload {
    /// An image id (`sha256:…`) or `name:tag` that the local engine holds.
    pub image: String,
    /// The port the app listens on inside the container; `$PORT` is set to it.
    pub port: u16,
    /// More ports of the app that take raw TCP connections (`[[ports]]`, for the node's
    /// ingress), published on the host's address like `port`.
    pub tcp_ports: Vec<u16>,
    /// Replaces the image's command when not empty.
    pub command: Vec<String>,
    /// The hardening this container drops; the default drops none.
    pub relax: ContainerRelax,
}

/// Which of the driver's hardening defaults a container goes without, as its manifest asked and
/// its node's owner allowed (the agent checks that; the driver applies what it is given). Every
/// field's default is the hardened behaviour.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerRelax {
    /// A writable root filesystem instead of a read-only one.
    pub writable_root: bool,
    /// The image's user even when it is root (uid 0 when the image names none), instead of
    /// `nobody`.
    pub run_as_root: bool,
    /// Capabilities added back after all are dropped, named without `CAP_`. Only processes
    /// running as root (or binaries with file capabilities) hold them.
    pub capabilities: Vec<String>,
    /// Processes may gain privileges (setuid binaries): no `no-new-privileges`.
    pub new_privileges: bool,
}

impl ContainerWorkload {
    /// Every port the engine publishes: the app's port, then its TCP ports (each once).
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        let more = self
            .tcp_ports
            .iter()
            .copied()
            .enumerate()
            .filter(|(i, p)| *p != self.port && !self.tcp_ports[..*i].contains(p))
            .map(|(_, p)| p);
        std::iter::once(self.port).chain(more)
    }
}

impl Workload {
    /// The runtime that runs this kind of workload.
    pub fn runtime(&self) -> mycel_protocol::Runtime {
        match self {
            Workload::Wasm { .. } => mycel_protocol::Runtime::Wasm,
            Workload::Container(_) => mycel_protocol::Runtime::Docker,
            Workload::Process(_) => mycel_protocol::Runtime::Process,
        }
    }
}

/// A runtime that can start instances: wasm, docker, later process and microVM.
pub trait Driver: Send + Sync {
    /// Which runtime this driver provides.
    fn runtime(&self) -> mycel_protocol::Runtime;

    /// Starts an instance. The future may be dropped; a start then simply never finishes.
    fn start(
        &self,
        spec: InstanceSpec,
    ) -> BoxFuture<'static, Result<Arc<dyn Instance>, RuntimeError>>;

    /// Removes what this node's earlier instances left behind (containers, for docker) unless
    /// their instance id is in `keep`, which must include the instances being started; returns
    /// how many it removed. Runtimes whose instances die with the process have nothing to do.
    fn remove_orphans(
        &self,
        keep: BTreeSet<String>,
    ) -> BoxFuture<'static, Result<usize, RuntimeError>> {
        let _ = keep;
        Box::pin(async { Ok(0) })
    }

    /// Removes everything this node's instances left behind, as when the node leaves the mesh.
    fn remove_all(&self) -> BoxFuture<'static, Result<usize, RuntimeError>> {
        Box::pin(async { Ok(0) })
    }
}

/// One running instance of an app.
pub trait Instance: Send + Sync {
    /// The spec's `instance_id`.
    fn id(&self) -> &str;

    /// Answers one HTTP request. The answer's body streams while the app still runs; an error that
    /// happens after the head was answered ends the body with an error.
    fn handle(
        &self,
        request: http::Request<Body>,
    ) -> BoxFuture<'static, Result<http::Response<Body>, RuntimeError>>;

    /// A TCP connection to the instance's `port`, for a port its app publishes (`[[ports]]`):
    /// the node's ingress copies a client's bytes over it. Runtimes without ports of their own
    /// (wasm) refuse.
    fn connect(
        &self,
        port: u16,
    ) -> BoxFuture<'static, Result<tokio::net::TcpStream, RuntimeError>> {
        let refused = RuntimeError::Unreachable {
            instance: self.id().to_owned(),
            reason: format!("its runtime has no TCP ports (asked for port {port})"),
        };
        Box::pin(async move { Err(refused) })
    }

    /// The instance's recent log lines and a receiver for the lines that follow.
    fn logs(&self) -> Logs;

    /// Counters for scheduling, health and metrics.
    fn usage(&self) -> Usage;

    /// How it ended, once what runs it (a process, a container) is gone for good; `None`
    /// while it runs, and for runtimes whose instances cannot end on their own.
    fn ended(&self) -> Option<String> {
        None
    }

    /// Refuses new requests ([`RuntimeError::Stopped`]), then waits for the running ones to end
    /// (each is bounded by its time limit). Stopping twice is harmless.
    fn stop(&self) -> BoxFuture<'static, ()>;
}

/// An instance's counters since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Requests accepted (not counting the ones refused as overloaded or stopped).
    pub requests: u64,
    /// Requests running now.
    pub in_flight: u64,
    /// Accepted requests that failed: traps, timeouts, guest errors.
    pub failures: u64,
    /// Requests refused because `max_concurrency` were already running.
    pub rejected: u64,
    /// Memory the instance uses now, when the runtime knows it (wasm: linear memory of the
    /// requests in flight).
    pub memory_bytes: Option<u64>,
    /// CPU time it used since it started, in nanoseconds, when the runtime knows it.
    pub cpu_nanos: Option<u64>,
}
