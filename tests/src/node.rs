//! One `mycel up` child process.
//!
//! A [`NodeProcess`] owns its child: dropping it sends SIGKILL and reaps it, so a failing test never
//! leaves processes behind. Its stdout and stderr go to `<data-dir>/node.log` (appended across
//! restarts), whose tail is printed when a test panics while the node is alive in it.

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use mycel_protocol::api::{Health, Nodes};
use nix::{sys::signal::Signal, unistd::Pid};
use serde::Deserialize;
use tempfile::TempDir;
use tokio::time::Instant;

use crate::{READY_TIMEOUT, clear_mycel_env, mycel_bin, tail};

/// How many log lines a failure prints per node: `$MYCEL_TEST_LOG_LINES`, else 60.
fn log_tail_lines() -> usize {
    std::env::var("MYCEL_TEST_LOG_LINES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(60)
}

/// `<data-dir>/node.json`, written by a node once it is ready.
#[derive(Clone, Debug, Deserialize)]
pub struct NodeJson {
    pub peer_id: String,
    pub name: String,
    pub listen_addrs: Vec<String>,
    pub api: String,
    pub gateway: String,
    /// Whether the node's mesh is private.
    #[serde(default)]
    pub private: bool,
    /// The join ticket: `mycel up --join` with it joins this node's mesh.
    #[serde(default)]
    pub join: Option<String>,
}

/// A node's data dir: a temporary one, removed when the last handle goes, or a given path.
#[derive(Clone, Debug)]
pub struct DataDir {
    path: PathBuf,
    _temp: Option<Arc<TempData>>,
}

/// A temporary data dir. A node killed with `kill -9` leaves its volumes mounted (as a crashed
/// machine's would be until it boots): they are unmounted before the directory goes.
#[derive(Debug)]
struct TempData(TempDir);

impl Drop for TempData {
    fn drop(&mut self) {
        unmount_under(self.0.path());
    }
}

/// Unmounts (lazily: a leftover container may still hold one) whatever is mounted under `dir`.
pub fn unmount_under(dir: &Path) {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.to_string_lossy().into_owned();
    let mounts: Vec<&str> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|mount| mount.starts_with(&dir))
        .collect();
    for mount in mounts {
        let _ = std::process::Command::new("umount")
            .args(["-l", mount])
            .status();
    }
}

impl DataDir {
    pub fn temp() -> Result<Self> {
        let temp = tempfile::Builder::new()
            .prefix("mycel-test-")
            .tempdir()
            .context("creating a temporary data dir")?;
        Ok(Self {
            path: temp.path().to_path_buf(),
            _temp: Some(Arc::new(TempData(temp))),
        })
    }

    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            _temp: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn node_json(&self) -> PathBuf {
        self.path.join("node.json")
    }

    pub fn log(&self) -> PathBuf {
        self.path.join("node.log")
    }

    /// The API token the node keeps here (`api.token`), when its API needs one.
    pub fn api_token(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.path.join("api.token")).ok()?;
        Some(text.trim().to_string())
    }
}

/// How to start a node; see [`NodeProcess::builder`].
#[derive(Clone, Debug)]
pub struct NodeBuilder {
    name: String,
    data_dir: Option<DataDir>,
    bootstrap: Vec<String>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    ip: String,
    netns: Option<String>,
    /// Runs in a mount namespace of its own, as systemd's sandboxing starts it.
    own_mounts: bool,
    listen: Option<String>,
}

impl NodeBuilder {
    /// Reuses a data dir (a restart keeps its identity).
    pub fn data_dir(mut self, dir: DataDir) -> Self {
        self.data_dir = Some(dir);
        self
    }

    /// Adds a `--bootstrap` multiaddr (which must end in `/p2p/<peer id>`) or join ticket.
    pub fn bootstrap(mut self, addr: impl Into<String>) -> Self {
        self.bootstrap.push(addr.into());
        self
    }

    /// Joins `node`'s mesh through it, with its join ticket (`--join`).
    pub fn join(self, node: &NodeProcess) -> Self {
        self.arg("--join").arg(node.join_ticket())
    }

    /// Starts (or joins) a deliberately open mesh: `--open`.
    pub fn open(self) -> Self {
        self.arg("--open")
    }

    /// Adds an extra command-line argument after the harness's own.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Runs the node in a mount namespace of its own that receives the host's mounts and sends
    /// none back (`unshare --mount --propagation slave`), as systemd's `ProtectSystem=` does.
    pub fn own_mount_namespace(mut self) -> Self {
        self.own_mounts = true;
        self
    }

    /// Runs the node inside network namespace `netns` (via `ip netns exec`), listening, serving
    /// its API and its gateway on `ip` there. For partition tests.
    pub fn in_netns(mut self, netns: impl Into<String>, ip: impl Into<String>) -> Self {
        self.netns = Some(netns.into());
        self.ip = ip.into();
        self
    }

    /// Listens at published ports (`[[ports]]`) on `ip` (`--ingress-address`), e.g. 127.0.0.11,
    /// so that nodes on one machine each have their own.
    pub fn ingress(self, ip: impl Into<String>) -> Self {
        self.arg("--ingress-address").arg(ip)
    }

    /// Listens on `multiaddr` instead of the harness's TCP default (e.g. QUIC only).
    pub fn listen(mut self, multiaddr: impl Into<String>) -> Self {
        self.listen = Some(multiaddr.into());
        self
    }

    /// Sets an environment variable for the node (after the harness cleared every `MYCEL_*`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Spawns `mycel up` and waits until its `node.json` is written (at most [`READY_TIMEOUT`]).
    pub async fn start(self) -> Result<NodeProcess> {
        let dir = match self.data_dir {
            Some(dir) => dir,
            None => DataDir::temp()?,
        };
        // A restarted node must not be taken as ready because of its former self's file.
        match std::fs::remove_file(dir.node_json()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).context("removing a stale node.json");
            }
            _ => {}
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.log())
            .context("opening the node log")?;
        let mut command = match &self.netns {
            Some(netns) => {
                // `ip netns exec` execs the command, so the child's pid is the node's.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns]).arg(mycel_bin());
                c
            }
            // `unshare` without `--fork` execs the command: the child's pid is the node's.
            None if self.own_mounts => {
                // As on a systemd host, whose root mount is shared: what is mounted under the
                // data dir in the host's namespace reaches the node's. (Unmounted with the
                // rest when a temporary data dir goes.)
                let path = dir.path().to_string_lossy().into_owned();
                for args in [["--bind", &path, &path], ["--make-shared", &path, ""]] {
                    let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
                    let status = Command::new("mount").args(&args).status()?;
                    ensure!(status.success(), "mount {args:?}: {status}");
                }
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "slave", "--"])
                    .arg(mycel_bin());
                c
            }
            None => Command::new(mycel_bin()),
        };
        let ip = &self.ip;
        command
            .arg("up")
            .arg("--data-dir")
            .arg(dir.path())
            .args([
                "--listen",
                &self
                    .listen
                    .clone()
                    .unwrap_or_else(|| format!("/ip4/{ip}/tcp/0")),
            ])
            .args(["--api", &format!("{ip}:0"), "--gateway", &format!("{ip}:0")])
            .args(["--name", &self.name]);
        for addr in &self.bootstrap {
            command.args(["--bootstrap", addr]);
        }
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("sharing the node log")?)
            .stderr(log);
        clear_mycel_env(&mut command);
        // MYCEL_TEST_LOG=<filter> turns up the nodes' logging when a test needs a closer look.
        if let Ok(filter) = std::env::var("MYCEL_TEST_LOG") {
            command.env("MYCEL_LOG", filter);
        }
        command.envs(self.envs.iter().map(|(k, v)| (k, v)));
        // Log files are read by people, not terminals.
        command.env("NO_COLOR", "1");

        let spawned_at = Instant::now();
        let child = command.spawn().context("spawning mycel up")?;
        let mut node = NodeProcess {
            name: self.name,
            dir,
            child,
            exited: None,
            info: None,
            startup: Duration::ZERO,
            http: api_client(None)?,
        };
        node.wait_ready(spawned_at).await.map_err(|e| {
            anyhow!(
                "{e:#}\n--- log of {} ({}) ---\n{}",
                node.name,
                node.dir.log().display(),
                tail(&node.dir.log(), log_tail_lines())
            )
        })?;
        node.startup = spawned_at.elapsed();
        // A node whose API needs the token made it before it was ready: the harness's own calls
        // carry it, as a client on the node's machine would.
        node.http = api_client(node.dir.api_token().as_deref())?;
        Ok(node)
    }
}

/// The harness's client for a node's API, sending `token` as `Authorization: Bearer` if given.
fn api_client(token: Option<&str>) -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the API token is not a header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .default_headers(headers)
        .build()
        .context("building the HTTP client")
}

/// A running (or stopped) `mycel up` child.
#[derive(Debug)]
pub struct NodeProcess {
    name: String,
    dir: DataDir,
    child: Child,
    exited: Option<ExitStatus>,
    info: Option<NodeJson>,
    startup: Duration,
    pub(crate) http: reqwest::Client,
}

impl NodeProcess {
    /// A node named `name` in a fresh temporary data dir, starting a new (private) mesh unless
    /// given bootstrap addresses or a ticket.
    pub fn builder(name: impl Into<String>) -> NodeBuilder {
        NodeBuilder {
            name: name.into(),
            data_dir: None,
            bootstrap: Vec::new(),
            args: Vec::new(),
            envs: Vec::new(),
            ip: "127.0.0.1".into(),
            netns: None,
            own_mounts: false,
            listen: None,
        }
    }

    /// Starts a fresh node, optionally bootstrapping off `bootstrap` (a multiaddr, which joins
    /// an open mesh, or a join ticket: see [`Self::join_ticket`]).
    pub async fn start(name: impl Into<String>, bootstrap: Option<&str>) -> Result<Self> {
        let mut builder = Self::builder(name);
        if let Some(addr) = bootstrap {
            builder = builder.bootstrap(addr);
        }
        builder.start().await
    }

    async fn wait_ready(&mut self, spawned_at: Instant) -> Result<()> {
        let deadline = spawned_at + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("polling the child")? {
                self.exited = Some(status);
                bail!("mycel up exited before it was ready: {status}");
            }
            // Written atomically, so a file that exists but does not parse is a node bug.
            match std::fs::read(self.dir.node_json()) {
                Ok(bytes) => {
                    let info: NodeJson = serde_json::from_slice(&bytes).with_context(|| {
                        format!(
                            "node.json does not parse: {}",
                            String::from_utf8_lossy(&bytes)
                        )
                    })?;
                    self.info = Some(info);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).context("reading node.json"),
            }
            if Instant::now() >= deadline {
                bail!("no node.json after {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn info(&self) -> &NodeJson {
        self.info
            .as_ref()
            .expect("a started node has read its node.json")
    }

    /// The node as its `node.json` describes it.
    pub fn node_json(&self) -> &NodeJson {
        self.info()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn peer_id(&self) -> &str {
        &self.info().peer_id
    }

    /// The API base URL, `http://HOST:PORT`.
    pub fn api(&self) -> &str {
        &self.info().api
    }

    /// The gateway base URL, `http://HOST:PORT`.
    pub fn gateway(&self) -> &str {
        &self.info().gateway
    }

    /// The first listen address, a full multiaddr ending in `/p2p/<peer id>`.
    pub fn listen_addr(&self) -> &str {
        self.info()
            .listen_addrs
            .first()
            .map(String::as_str)
            .expect("node.json lists at least one listen address")
    }

    /// The join ticket of `node.json`: `--join` or `--bootstrap` with it joins this node's mesh.
    pub fn join_ticket(&self) -> &str {
        self.info()
            .join
            .as_deref()
            .expect("node.json has a join ticket")
    }

    /// The mesh's secret, from the join ticket; `None` for an open mesh.
    pub fn mesh_secret(&self) -> Option<mycel_mesh::MeshSecret> {
        let ticket: mycel_mesh::JoinTicket = self
            .join_ticket()
            .parse()
            .expect("node.json's join ticket parses");
        ticket.secret
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Time from spawn to `node.json`.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// True once the harness has seen the process end (after [`Self::sigkill`] or
    /// [`Self::wait_exit`]).
    pub fn has_exited(&self) -> bool {
        self.exited.is_some()
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response> {
        let url = format!("{}{path}", self.api());
        self.http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {url} on {}", self.name))
    }

    /// `GET /v1/nodes`
    pub async fn nodes(&self) -> Result<Nodes> {
        let response = self.get("/v1/nodes").await?;
        response.json().await.context("decoding /v1/nodes")
    }

    /// `GET /v1/health`
    pub async fn health(&self) -> Result<Health> {
        let response = self.get("/v1/health").await?;
        response.json().await.context("decoding /v1/health")
    }

    /// `GET /metrics`, the Prometheus text.
    pub async fn metrics(&self) -> Result<String> {
        let response = self.get("/metrics").await?;
        response.text().await.context("reading /metrics")
    }

    /// Downloads blob `hash` from this node, hashing it as it streams (a large blob never sits
    /// in memory), and returns the BLAKE3 id of what arrived. No overall timeout: a blob the node
    /// must first fetch from its peers takes as long as it takes.
    pub async fn blob_id(&self, hash: &str) -> Result<String> {
        let url = format!("{}/v1/blobs/{hash}", self.api());
        let mut request = reqwest::Client::new().get(url);
        if let Some(token) = self.dir.api_token() {
            request = request.bearer_auth(token);
        }
        let mut response = request.send().await?;
        if response.status() != 200 {
            bail!("{} answered {}", self.name, response.status());
        }
        let mut hasher = blake3::Hasher::new();
        while let Some(chunk) = response.chunk().await? {
            hasher.update(&chunk);
        }
        Ok(format!("blake3:{}", hasher.finalize().to_hex()))
    }

    /// Asks the node to leave gracefully.
    pub fn sigterm(&self) -> Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Freezes the node (SIGSTOP): it stays connected but silent, like a stalled machine or a
    /// partition that keeps TCP open.
    pub fn freeze(&self) -> Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// Wakes a frozen node (SIGCONT).
    pub fn thaw(&self) -> Result<()> {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        let pid = i32::try_from(self.child.id()).context("pid out of range")?;
        nix::sys::signal::kill(Pid::from_raw(pid), signal)
            .with_context(|| format!("sending {signal} to {}", self.name))
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited {
                return Ok(status);
            }
            if let Some(status) = self.child.try_wait().context("polling the child")? {
                self.exited = Some(status);
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the process outright (SIGKILL) and reaps it.
    pub fn sigkill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        self.child
            .kill()
            .with_context(|| format!("killing {}", self.name))?;
        let status = self.child.wait().context("reaping the child")?;
        self.exited = Some(status);
        Ok(status)
    }

    /// Stops the node gracefully and starts it again in the same data dir, with `bootstrap` only.
    pub async fn restart(&mut self, bootstrap: &[String]) -> Result<()> {
        if self.exited.is_none() {
            self.sigterm()?;
            let status = self.wait_exit(Duration::from_secs(10)).await?;
            if !status.success() {
                bail!("{} exited with {status} on SIGTERM", self.name);
            }
        }
        let mut builder = Self::builder(self.name.clone()).data_dir(self.dir.clone());
        for addr in bootstrap {
            builder = builder.bootstrap(addr.clone());
        }
        // Replacing `self` drops the old, already reaped, child.
        *self = builder.start().await?;
        Ok(())
    }

    /// Starts a node that was killed again, in the same data dir and on the same listen
    /// address, as a machine's node comes back after a crash: it rejoins from what it remembers.
    pub async fn restart_in_place(&mut self) -> Result<()> {
        if self.exited.is_none() {
            bail!("{} is still running", self.name);
        }
        let listen = self
            .listen_addr()
            .split("/p2p/")
            .next()
            .unwrap_or_default()
            .to_string();
        let builder = Self::builder(self.name.clone())
            .data_dir(self.dir.clone())
            .listen(listen);
        *self = builder.start().await?;
        Ok(())
    }

    /// The tail of this node's log.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.log(), log_tail_lines())
    }

    /// Prints the tail of this node's log to stderr.
    pub fn print_log_tail(&self) {
        let id = self.info.as_ref().map_or("?", |i| i.peer_id.as_str());
        eprintln!(
            "--- {} ({id}) log tail, {} ---\n{}",
            self.name,
            self.dir.log().display(),
            self.log_tail()
        );
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            self.print_log_tail();
        }
    }
}
