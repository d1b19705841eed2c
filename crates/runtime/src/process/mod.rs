//! The process driver: each instance is one executable in a namespace sandbox of its own (see
//! [`sandbox`]), with a network of its own that only the node reaches into.
//!
//! ```text
//! ProcessDriver ── launcher.rs: one thread forks every sandbox (each in a fresh network
//!    │               namespace, loopback up) and makes sockets inside them
//!    ├─ start(spec) ─ the executable made runnable (a 0555 copy per hash), the sandbox spawned,
//!    │                 its port waited for (or its last lines quoted)
//!    │                 └─▶ UpstreamInstance (crate::upstream) with running.rs's backend:
//!    │                       stdout/stderr → LogBuffer, memory and CPU from its cgroup,
//!    │                       stop(): drain, then kill the sandbox (its whole process tree)
//!    └─ remove_orphans(keep): processes an earlier run of this node left (found by the
//!       MYCEL_NODE and MYCEL_INSTANCE it set) are killed
//! ```
//!
//! A sandbox dies with the node: its supervisor is bound to the launcher thread's life and the
//! app to its supervisor's (`PR_SET_PDEATHSIG`, set again through util-linux's `setpriv` once
//! the app runs as its own user), and the app is PID 1 of its own PID namespace, whose every
//! process the kernel kills when it ends. A restart still kills whatever is marked as the
//! node's, in case a host lacks `setpriv`. [`ProcessDriver::start`] proves that a
//! sandbox starts on this host before the node offers `process` at all.

mod cgroups;
mod launcher;
mod orphans;
mod running;
mod sandbox;

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
    os::{fd::OwnedFd, unix::fs::PermissionsExt},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use futures::future::BoxFuture;

use crate::{
    Driver, Instance, InstanceSpec, ProcessWorkload, RuntimeError, Workload,
    logs::{LogBuffer, Stream},
    upstream::{MakeSocket, Started, TcpPorts, Upstream, UpstreamInstance},
};
use launcher::Launcher;

/// The environment variables that mark a sandbox as this node's, for [`orphans`].
const NODE_VAR: &str = "MYCEL_NODE";
const INSTANCE_VAR: &str = "MYCEL_INSTANCE";
/// How often a starting app's port is tried.
const PROBE_EVERY: Duration = Duration::from_millis(2);
/// How many of a failed start's last lines its error quotes.
const FAILED_LINES: usize = 20;

/// How the process driver runs sandboxes on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessConfig {
    /// This node's id, set in every sandbox's environment so a restart finds what it left.
    pub node_id: String,
    /// Where the driver keeps runnable copies of executables.
    pub dir: PathBuf,
    /// How long a started app may take to listen on its port.
    pub start_timeout: Duration,
}

impl ProcessConfig {
    pub fn new(node_id: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        Self {
            node_id: node_id.into(),
            dir: dir.into(),
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// Runs executables in sandboxes. Cheap to clone; clones share one launcher thread.
#[derive(Clone)]
pub struct ProcessDriver {
    inner: Arc<Inner>,
}

struct Inner {
    config: ProcessConfig,
    launcher: Launcher,
    /// The host uids (and gids) apps may run as: root's subordinate range.
    ids: std::ops::Range<u32>,
}

impl ProcessDriver {
    /// Starts the driver and proves a sandbox starts here: the error says what the host lacks
    /// (a subordinate uid range for root, `newuidmap`, cgroups, seccomp…).
    pub async fn start(config: ProcessConfig) -> Result<Self, RuntimeError> {
        let ids = subordinate_ids()?;
        std::fs::create_dir_all(config.dir.join("bin")).map_err(|source| RuntimeError::Io {
            context: format!("creating {}", config.dir.display()),
            source,
        })?;
        let launcher = Launcher::start().map_err(|e| {
            RuntimeError::Setup(format!("starting the sandbox launcher thread: {e}"))
        })?;
        let driver = Self {
            inner: Arc::new(Inner {
                config,
                launcher,
                ids,
            }),
        };
        driver.prove().await?;
        Ok(driver)
    }

    /// Runs `/usr/bin/true` in a sandbox made as an app's is: it must start and exit 0.
    async fn prove(&self) -> Result<(), RuntimeError> {
        let plan = sandbox::Plan {
            app: "probe".into(),
            binary_dir: "/usr/bin".into(),
            program: "true".into(),
            args: Vec::new(),
            env: Default::default(),
            port: 8080,
            tcp_ports: Vec::new(),
            host_id: self.inner.ids.start,
            memory_mb: 64,
            cpu_millis: 100,
            hakoniwa_limits: !self.inner.launcher.sets_limits(),
            secrets_dir: None,
            volumes: Vec::new(),
        };
        let limits = self.own_limits(&plan);
        let spawned = self
            .inner
            .launcher
            .spawn(Box::new(move || sandbox::command(&plan)), limits)
            .await
            .map_err(|e| RuntimeError::Setup(format!("a sandbox does not start here: {e}")))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(ended) = self.inner.launcher.reap(spawned.key).await {
                return if ended.code == 0 {
                    Ok(())
                } else {
                    Err(RuntimeError::Setup(format!(
                        "a sandbox does not run here: {}",
                        ended.reason
                    )))
                };
            }
            if tokio::time::Instant::now() >= deadline {
                self.inner.launcher.kill(spawned.key).await;
                return Err(RuntimeError::Setup(
                    "a sandbox running /usr/bin/true did not end within 10 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A runnable copy of the executable: `<dir>/bin/<hash>/app`, mode 0555.
    fn runnable(&self, workload: &ProcessWorkload) -> Result<PathBuf, RuntimeError> {
        let hex = workload
            .binary_hash
            .strip_prefix("blake3:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                RuntimeError::InvalidSpec(format!(
                    "'{}' is not a blake3:<64 hex> hash",
                    workload.binary_hash
                ))
            })?;
        let dir = self.inner.config.dir.join("bin").join(hex);
        let path = dir.join("app");
        if path.is_file() {
            return Ok(dir);
        }
        let io = |context: String| move |source| RuntimeError::Io { context, source };
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        // Copied whole under a temporary name, then renamed: a start never sees half a file.
        let partial = dir.join(format!("app.{}", std::process::id()));
        std::fs::copy(&workload.binary, &partial)
            .map_err(io(format!("copying {}", workload.binary.display())))?;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o555))
            .map_err(io(format!("making {} runnable", partial.display())))?;
        std::fs::rename(&partial, &path).map_err(io(format!("placing {}", path.display())))?;
        Ok(dir)
    }

    /// The limits the launcher sets for `plan`, when it sets them (else hakoniwa does).
    fn own_limits(&self, plan: &sandbox::Plan) -> Option<cgroups::Limits> {
        self.inner
            .launcher
            .sets_limits()
            .then(|| sandbox::limits(plan))
    }

    /// The host id instance `id` runs as: spread over the range by its hash.
    fn host_id(&self, id: &str) -> u32 {
        let ids = &self.inner.ids;
        let hash = blake3::hash(id.as_bytes());
        let spread = u32::from_le_bytes(hash.as_bytes()[..4].try_into().unwrap_or_default());
        ids.start + 1 + spread % (ids.end - ids.start - 1)
    }

    async fn start_instance(&self, spec: InstanceSpec) -> Result<UpstreamInstance, RuntimeError> {
        let Workload::Process(workload) = &spec.workload else {
            return Err(RuntimeError::InvalidSpec(format!(
                "the process runtime cannot run a {} workload",
                spec.workload.runtime()
            )));
        };
        if workload.port == 0 {
            return Err(RuntimeError::InvalidSpec(
                "a process's port must not be 0".into(),
            ));
        }
        let dir = self.runnable(workload)?;
        let mut env = spec.env.clone();
        env.insert(NODE_VAR.into(), self.inner.config.node_id.clone());
        env.insert(INSTANCE_VAR.into(), spec.instance_id.clone());
        let plan = sandbox::Plan {
            app: spec.app.clone(),
            binary_dir: dir.to_string_lossy().into_owned(),
            program: "app".into(),
            args: workload.args.clone(),
            env,
            port: workload.port,
            tcp_ports: workload.tcp_ports.clone(),
            host_id: self.host_id(&spec.instance_id),
            memory_mb: spec.memory_mb,
            cpu_millis: spec.cpu_millis,
            hakoniwa_limits: !self.inner.launcher.sets_limits(),
            secrets_dir: spec
                .secrets_dir
                .as_ref()
                .map(|dir| dir.to_string_lossy().into_owned()),
            volumes: spec
                .volumes
                .iter()
                .map(|v| (v.host.to_string_lossy().into_owned(), v.path.clone()))
                .collect(),
        };
        let limits = self.own_limits(&plan);
        let launcher = self.inner.launcher.clone();
        let spawned = launcher
            .spawn(Box::new(move || sandbox::command(&plan)), limits)
            .await
            .map_err(|reason| RuntimeError::Engine {
                context: format!("starting instance {} of {}", spec.instance_id, spec.app),
                reason,
            })?;
        let log = Arc::new(LogBuffer::new());
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, workload.port));
        let sockets = make_sockets(&launcher, spawned.netns.clone());
        let backend = running::Sandbox::follow(
            spec.instance_id.clone(),
            launcher.clone(),
            &spawned,
            log.clone(),
        );
        let ready = wait_until_ready(&sockets, addr, &backend, self.inner.config.start_timeout);
        if let Err(reason) = ready.await {
            let lines = log.logs().recent;
            crate::upstream::Backend::shut_down(&backend).await;
            let mut text = reason;
            let last: Vec<&str> = lines
                .iter()
                .rev()
                .take(FAILED_LINES)
                .rev()
                .map(|l| l.line.as_str())
                .collect();
            if !last.is_empty() {
                text.push_str(&format!("; its last lines:\n{}", last.join("\n")));
            }
            return Err(RuntimeError::Engine {
                context: format!("starting instance {} of {}", spec.instance_id, spec.app),
                reason: text,
            });
        }
        log.push(
            Stream::Stderr,
            format!("[mycel] listening on port {} in its sandbox", workload.port),
        );
        Ok(UpstreamInstance::new(Started {
            id: spec.instance_id.clone(),
            app: spec.app.clone(),
            kind: "process",
            upstream: Upstream::through(addr, sockets.clone()),
            tcp: TcpPorts::Own {
                ip: addr.ip(),
                make_socket: sockets,
            },
            request_timeout: spec.request_timeout,
            max_concurrency: spec.max_concurrency,
            log,
            backend: Box::new(backend),
        }))
    }
}

/// Sockets in the sandbox's network, from the launcher.
fn make_sockets(launcher: &Launcher, netns: Arc<OwnedFd>) -> MakeSocket {
    let launcher = launcher.clone();
    Arc::new(move || {
        let (launcher, netns) = (launcher.clone(), netns.clone());
        Box::pin(async move {
            let fd = launcher.socket(netns).await?;
            Ok(tokio::net::TcpSocket::from_std_stream(
                std::net::TcpStream::from(fd),
            ))
        })
    })
}

/// Waits until the app accepts a connection on its port, or fails with why not.
async fn wait_until_ready(
    sockets: &MakeSocket,
    addr: SocketAddr,
    sandbox: &running::Sandbox,
    limit: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let socket = sockets()
            .await
            .map_err(|e| format!("making a socket in its network: {e}"))?;
        if socket.connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(ended) = sandbox.reaped().await {
            return Err(format!("it exited before it listened on its port: {ended}"));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "it did not listen on port {} within {limit:?} (does it listen on $PORT?)",
                addr.port()
            ));
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Root's subordinate uid and gid range (`/etc/subuid`, `/etc/subgid`): the host ids apps run
/// as. Both must name the same range.
fn subordinate_ids() -> Result<std::ops::Range<u32>, RuntimeError> {
    let read = |path: &str| -> Result<std::ops::Range<u32>, RuntimeError> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        root_range(&text).ok_or_else(|| {
            RuntimeError::Setup(format!(
                "{path} gives root no subordinate range for sandboxed apps to run as (add one, \
                 e.g. `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 root`)"
            ))
        })
    };
    let uids = read("/etc/subuid")?;
    let gids = read("/etc/subgid")?;
    if uids != gids {
        return Err(RuntimeError::Setup(
            "root's subordinate uid and gid ranges differ (/etc/subuid, /etc/subgid)".into(),
        ));
    }
    Ok(uids)
}

/// The first `root:<start>:<count>` (or `0:…`) line with room for at least two ids.
fn root_range(text: &str) -> Option<std::ops::Range<u32>> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let (user, start, count) = (fields.next()?, fields.next()?, fields.next()?);
        if user != "root" && user != "0" {
            return None;
        }
        let (start, count): (u32, u32) = (start.parse().ok()?, count.parse().ok()?);
        let end = start.checked_add(count)?;
        (count >= 2 && start > 0).then_some(start..end)
    })
}

impl Driver for ProcessDriver {
    fn runtime(&self) -> mycel_protocol::Runtime {
        mycel_protocol::Runtime::Process
    }

    fn start(
        &self,
        spec: InstanceSpec,
    ) -> BoxFuture<'static, Result<Arc<dyn Instance>, RuntimeError>> {
        let driver = self.clone();
        Box::pin(async move {
            let instance = driver.start_instance(spec).await?;
            Ok(Arc::new(instance) as Arc<dyn Instance>)
        })
    }

    fn remove_orphans(
        &self,
        keep: BTreeSet<String>,
    ) -> BoxFuture<'static, Result<usize, RuntimeError>> {
        let node = self.inner.config.node_id.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || orphans::kill(&node, &keep))
                .await
                .map_err(|e| RuntimeError::Setup(format!("looking for orphans: {e}")))
        })
    }

    fn remove_all(&self) -> BoxFuture<'static, Result<usize, RuntimeError>> {
        self.remove_orphans(BTreeSet::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_range_reads_subuid_lines() {
        assert_eq!(root_range("root:100000:65536\n"), Some(100000..165536));
        assert_eq!(root_range("alice:1:2\n0:200000:10\n"), Some(200000..200010));
        assert_eq!(root_range(""), None);
        assert_eq!(root_range("root:100000:1\n"), None);
        assert_eq!(root_range("root:x:10\n"), None);
        assert_eq!(root_range("root:4294967295:10\n"), None);
    }
}
