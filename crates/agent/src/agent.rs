//! The agent actor and its handle.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::future::{BoxFuture, FutureExt, Shared};
use mycel_blobs::{BlobStore, MeshBlobs};
use mycel_mesh::MeshHandle;
use mycel_placement::{PlacementHandle, Replica, plan::runtimes_of};
use mycel_protocol::{
    NodePolicy,
    api::InstanceState,
    placement::{AppRecord, WriteRequest},
};
use mycel_runtime::{Body, DockerDriver, Driver, Instance};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    AgentError, admission,
    images::ImageLoader,
    prepare::Prepared,
    reconcile::{self, Action, Local, Phase},
    secrets,
    volumes::keeper::VolumeKeeper,
};

/// A health check reads at most this much of the answer's body.
const MAX_PROBE_BODY: usize = 1 << 20;
/// How often a started instance is checked until it first passes: it serves (and a held
/// request is answered) a few milliseconds after it can, not a health interval later.
const STARTUP_PROBE_EVERY: Duration = Duration::from_millis(20);

/// How the agent paces itself.
#[derive(Clone, Debug)]
pub struct AgentTiming {
    /// How often it reconciles and reports even when nothing changed.
    pub tick: Duration,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    /// Health checks failed in a row before an instance is restarted.
    pub failed_checks_to_restart: u32,
    /// The longest wait between two attempts to start a failing instance.
    pub max_backoff: Duration,
    /// The longest a request to an instance may take.
    pub request_timeout: Duration,
    /// The most requests one instance serves at once.
    pub max_concurrency: usize,
}

impl AgentTiming {
    /// How long a started instance has to pass its first health check: as long as a running
    /// one takes to fail [`Self::failed_checks_to_restart`] in a row.
    pub fn startup_window(&self) -> Duration {
        self.health_interval * self.failed_checks_to_restart
    }
}

impl Default for AgentTiming {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(500),
            health_interval: Duration::from_secs(2),
            health_timeout: Duration::from_secs(2),
            failed_checks_to_restart: 3,
            max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            max_concurrency: 64,
        }
    }
}

pub struct AgentConfig {
    pub placement: PlacementHandle,
    pub mesh: MeshHandle,
    pub blobs: BlobStore,
    pub drivers: Vec<Arc<dyn Driver>>,
    /// The Docker driver (also among `drivers`), for loading images shared through the mesh.
    pub docker: Option<DockerDriver>,
    /// Scratch space for the agent's temporary files (image archives on their way to Docker).
    pub scratch_dir: PathBuf,
    /// This node's owner policy, as the node advertises it. The scheduler honours it; the agent
    /// enforces what concerns a single instance (container relaxations, registries to pull from)
    /// whatever was placed here.
    pub policy: NodePolicy,
    pub timing: AgentTiming,
    /// Opens the apps' secrets (`None` in an open mesh, which has no secrets).
    pub secrets_key: Option<Arc<mycel_protocol::secrets::SecretsKey>>,
    /// Where the apps' volumes live on this node.
    pub volumes_dir: PathBuf,
    /// The node's gateway address and domain: where apps reach their `[dependencies]`.
    pub gateway: Option<(std::net::SocketAddr, String)>,
}

/// What the rest of the node (the gateway, the API) asks of the agent. Dropping it does not stop
/// the agent: cancelling the token given to [`start`] does.
#[derive(Clone)]
pub struct AgentHandle {
    /// What runs here, as the agent last published it: it alone writes it.
    pub(crate) running: watch::Receiver<Running>,
    /// This node's peer id.
    pub(crate) node: String,
    pub(crate) counts: Arc<Counts>,
}

/// What the agent counts, for the node's metrics.
#[derive(Debug, Default)]
pub struct Counts {
    /// Instances restarted because they failed their health checks or ended.
    pub restarts: AtomicU64,
    /// Health checks that failed.
    pub failed_checks: AtomicU64,
    /// Volume snapshots this node took, the bytes they added to its blob store, volumes it
    /// restored from snapshots and the microseconds that took (fetching included).
    pub volume_snapshots: AtomicU64,
    pub volume_snapshot_bytes: AtomicU64,
    pub volume_restores: AtomicU64,
    pub volume_restore_micros: AtomicU64,
}

#[derive(Clone)]
pub(crate) struct RunningEntry {
    pub(crate) instance: Arc<dyn Instance>,
    /// The name of the instance's app.
    pub(crate) app: String,
    pub(crate) healthy: bool,
    /// The path its health check GETs, from the manifest it was started with (`None`: running
    /// is healthy).
    pub(crate) health: Option<String>,
}

/// The instances that run here, by id.
pub(crate) type Running = HashMap<String, RunningEntry>;

type ServeFuture = BoxFuture<'static, Result<http::Response<Body>, mycel_runtime::RuntimeError>>;

impl AgentHandle {
    /// Serves `request` with local instance `id`, if it runs here.
    pub fn serve(&self, id: &str, request: http::Request<Body>) -> Option<ServeFuture> {
        Some(self.instance(id)?.handle(request))
    }

    /// Local instance `id`, if it runs here.
    pub fn instance(&self, id: &str) -> Option<Arc<dyn Instance>> {
        Some(self.running.borrow().get(id)?.instance.clone())
    }

    /// Whether local instance `id` runs and passed its last health check.
    pub fn is_healthy(&self, id: &str) -> bool {
        self.running.borrow().get(id).is_some_and(|e| e.healthy)
    }

    /// What the agent counted since it started.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// The instances that run here now, each with its app's name.
    pub fn instances_by_app(&self) -> Vec<(String, Arc<dyn Instance>)> {
        let running = self.running.borrow();
        let entries = running.values();
        entries
            .map(|e| (e.app.clone(), e.instance.clone()))
            .collect()
    }

    /// The instances that run here now.
    pub fn instances(&self) -> Vec<Arc<dyn Instance>> {
        let running = self.running.borrow();
        running.values().map(|e| e.instance.clone()).collect()
    }
}

/// What a task tells the actor.
enum Event {
    Started {
        id: String,
        app: String,
        health: Option<String>,
        result: Result<Arc<dyn Instance>, AgentError>,
    },
    Checked {
        id: String,
        healthy: bool,
        /// How it ended, when its process (or container) is gone: restarted at once.
        ended: Option<String>,
    },
    Reported {
        ok: bool,
    },
}

/// An instance's stop, running on its own task; awaited by a start of the same instance.
type Stopping = Shared<BoxFuture<'static, ()>>;

struct Agent {
    me: String,
    config: AgentConfig,
    counts: Arc<Counts>,
    local: BTreeMap<String, Local>,
    running: watch::Sender<Running>,
    /// Start tasks in flight, by instance (aborted when their instance is no longer wanted).
    starting: HashMap<String, JoinHandle<()>>,
    /// Stops in flight, by instance. A stop (a container's can take seconds) runs on its own
    /// task so health checks and reconciles keep their cadence; a new start of the same
    /// instance waits for it, so the two never hold the same name at once.
    stopping: HashMap<String, Stopping>,
    last_check: HashMap<String, Instant>,
    checking: BTreeSet<String>,
    /// Instances started with a health check that has not passed yet, and when they started.
    proving: HashMap<String, Instant>,
    reporting: bool,
    /// A report was asked for while one was in flight: make it when that one lands.
    report_again: bool,
    events: mpsc::Sender<Event>,
    /// Held while an image loads into the engine.
    image_loading: Arc<tokio::sync::Mutex<()>>,
    /// Where every task of the agent runs: its loop, starts, stops, checks and reports.
    tasks: TaskTracker,
    /// The apps' volumes here (`None`: this node cannot keep any; apps with volumes fail here).
    volumes: Option<VolumeKeeper>,
}

/// Starts the agent's loop on `tasks`. Cancelling `stop` stops every local instance (and removes
/// what they left behind), then the agent: the node is leaving. Wait on `tasks` for it to end.
pub fn start(config: AgentConfig, stop: CancellationToken, tasks: TaskTracker) -> AgentHandle {
    let (running, running_rx) = watch::channel(Running::new());
    let (events, events_rx) = mpsc::channel(256);
    let node = config.mesh.peer_id().to_string();
    let counts = Arc::new(Counts::default());
    let volumes = VolumeKeeper::open(&config, &node, counts.clone(), tasks.clone());
    let agent = Agent {
        me: node.clone(),
        config,
        counts: counts.clone(),
        local: BTreeMap::new(),
        running,
        starting: HashMap::new(),
        stopping: HashMap::new(),
        last_check: HashMap::new(),
        checking: BTreeSet::new(),
        proving: HashMap::new(),
        reporting: false,
        report_again: false,
        events,
        image_loading: Arc::default(),
        volumes,
        tasks: tasks.clone(),
    };
    tasks.spawn(agent.run(events_rx, stop));
    AgentHandle {
        running: running_rx,
        node,
        counts,
    }
}

impl Agent {
    async fn run(mut self, mut events: mpsc::Receiver<Event>, stop: CancellationToken) {
        // Nothing runs here yet: whatever an earlier run of this node left (a kill -9 leaves
        // containers) is an orphan. Instances still placed here start again, fresh.
        self.remove_leftovers(false).await;
        crate::secrets::sweep(&self.config.mesh.peer_id().to_string());
        let mut replica = self.config.placement.subscribe();
        let mut tick = tokio::time::interval(self.config.timing.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    self.stop_all().await;
                    return;
                }
                Some(event) = events.recv() => self.on_event(event),
                changed = replica.changed() => {
                    if changed.is_err() {
                        return; // the placement group is gone: the node is stopping
                    }
                    self.reconcile();
                }
                _ = tick.tick() => {
                    self.stopping.retain(|_, stop| stop.clone().now_or_never().is_none());
                    self.reconcile();
                    self.check_health();
                    self.report();
                    if let Some(volumes) = &mut self.volumes {
                        volumes.tick(&self.config.placement.replica().state);
                    }
                }
            }
        }
    }

    /// This node's share of the replica: instance id → (its app's record, what the group says).
    fn placed_here(&self, replica: &Replica) -> BTreeMap<String, (AppRecord, InstanceState)> {
        replica
            .state
            .instances_on(&self.me)
            .filter_map(|i| {
                let app = replica.state.record_for(i)?;
                Some((i.id.clone(), (app.clone(), i.state)))
            })
            .collect()
    }

    fn reconcile(&mut self) {
        let replica = self.config.placement.replica();
        let placed = self.placed_here(&replica);
        let desired: BTreeSet<String> = placed.keys().cloned().collect();
        let (stops, starts): (Vec<Action>, Vec<Action>) =
            reconcile::plan(&desired, &self.local, Instant::now())
                .into_iter()
                .partition(|a| matches!(a, Action::Stop(_)));
        // Stops first: what they free counts for the owner's limits on the starts.
        for action in stops.into_iter().chain(starts) {
            match action {
                Action::Start(id) => {
                    let Some((app, _)) = placed.get(&id) else {
                        continue;
                    };
                    match self.admit(&id, app, &placed, &replica) {
                        Ok(()) => self.start_instance(id, app.clone()),
                        Err(why) => self.refuse(id, why),
                    }
                }
                Action::Stop(id) => self.stop_instance(&id),
            }
        }
    }

    /// Checks the owner's policy against `app` and the instances starting or running here.
    fn admit(
        &self,
        id: &str,
        app: &AppRecord,
        placed: &BTreeMap<String, (AppRecord, InstanceState)>,
        replica: &Replica,
    ) -> Result<(), AgentError> {
        let others = self
            .local
            .iter()
            .filter(|(other, local)| {
                other.as_str() != id && !matches!(local.phase, Phase::Failed { .. })
            })
            .filter_map(|(other, _)| placed.get(other).map(|(app, _)| app));
        let owner = replica.state.owner_of(&app.manifest.name);
        admission::admit(&self.config.policy, app, owner.as_ref(), others)
    }

    /// Records that the owner's policy refused instance `id`: it is reported failed, and tried
    /// again after a backoff (room may appear here, or the group may move it elsewhere).
    fn refuse(&mut self, id: String, why: AgentError) {
        let why = why.to_string();
        let local = self.local.entry(id.clone()).or_insert_with(Local::starting);
        let wait = local.fail(Instant::now(), self.config.timing.max_backoff, why.clone());
        tracing::warn!(instance = %id, %why, retry_in = ?wait, "the owner's policy refuses the instance");
        self.report();
    }

    fn start_instance(&mut self, id: String, app: AppRecord) {
        // A retry keeps the count of failures in a row, and the last one's reason until it runs.
        let (failures, error) = self
            .local
            .get(&id)
            .map_or((0, None), |l| (l.failures, l.error.clone()));
        self.local.insert(
            id.clone(),
            Local {
                failures,
                error,
                ..Local::starting()
            },
        );
        tracing::info!(instance = %id, app = %app.manifest.name, "starting");
        let events = self.events.clone();
        let id_for_task = id.clone();
        let app_name = app.manifest.name.clone();
        let health = app.manifest.health.as_ref().map(|h| h.path.clone());
        let prepared = self.prepare(id.clone(), app);
        let earlier_stop = self.stopping.get(&id).cloned();
        let task = self.tasks.spawn(async move {
            if let Some(stop) = earlier_stop {
                stop.await;
            }
            let result = prepared.await;
            let _ = events
                .send(Event::Started {
                    id,
                    app: app_name,
                    health,
                    result,
                })
                .await;
        });
        if let Some(old) = self.starting.insert(id_for_task, task) {
            old.abort();
        }
    }

    /// Fetches what the app runs (from peers when this node lacks it) and starts the instance.
    fn prepare(
        &self,
        id: String,
        app: AppRecord,
    ) -> BoxFuture<'static, Result<Arc<dyn Instance>, AgentError>> {
        // The first runtime of the kind's this node has (a process app falls back to Docker).
        let runtimes = runtimes_of(app.manifest.kind());
        let driver = runtimes
            .iter()
            .find_map(|r| self.config.drivers.iter().find(|d| d.runtime() == *r))
            .cloned();
        let runtime = runtimes[0];
        let blobs = self.config.blobs.clone();
        let network = MeshBlobs {
            mesh: self.config.mesh.clone(),
        };
        let images = self.config.docker.clone().map(|docker| ImageLoader {
            docker,
            blobs: blobs.clone(),
            network: network.clone(),
            scratch: self.config.scratch_dir.join("images"),
            loading: self.image_loading.clone(),
            policy: self.config.policy.clone(),
        });
        let replica = self.config.placement.replica();
        let mesh_images = replica.state.images.clone();
        let key = self.config.secrets_key.as_deref();
        let opened = secrets::open_all(
            key,
            &replica.state,
            &app.manifest.name,
            &app.manifest.secrets,
        );
        let volumes = match &self.volumes {
            _ if app.manifest.volumes.is_empty() => Ok(None),
            Some(keeper) => Ok(Some(keeper.mounter(&app, &replica.state))),
            None => Err(AgentError::Unrunnable(
                "this node cannot keep volumes".into(),
            )),
        };
        let prepared = Prepared {
            gateway: self.config.gateway.clone(),
            volumes,
            driver,
            runtime,
            blobs,
            network,
            images,
            mesh_images,
            secrets: opened,
            node: self.config.mesh.peer_id().to_string(),
            timing: self.config.timing.clone(),
        };
        Box::pin(prepared.start(id, app))
    }

    fn stop_instance(&mut self, id: &str) {
        if let Some(task) = self.starting.remove(id) {
            task.abort();
        }
        self.local.remove(id);
        self.last_check.remove(id);
        self.proving.remove(id);
        let entry = self.unpublish(id);
        if let Some(entry) = entry {
            tracing::info!(instance = %id, "stopping");
            self.stop_in_background(id, entry.instance);
        }
    }

    /// Takes instance `id` out of what the gateway and the API see.
    fn unpublish(&mut self, id: &str) -> Option<RunningEntry> {
        let mut removed = None;
        self.running.send_if_modified(|r| {
            removed = r.remove(id);
            removed.is_some()
        });
        removed
    }

    /// Stops `instance` on its own task (see [`Agent::stopping`]). Unpublished first, it takes
    /// no new requests; its runtime lets the ones it has finish (within their time limit)
    /// before it stops it: an instance is drained, not cut off.
    fn stop_in_background(&mut self, id: &str, instance: Arc<dyn Instance>) {
        let earlier = self.stopping.remove(id);
        let task = self.tasks.spawn(async move { instance.stop().await });
        let stop = async move {
            if let Some(earlier) = earlier {
                earlier.await;
            }
            let _ = task.await;
        };
        self.stopping.insert(id.to_string(), stop.boxed().shared());
    }

    async fn stop_all(&mut self) {
        for task in self.starting.drain().map(|(_, t)| t) {
            task.abort();
        }
        let ids: Vec<String> = self.local.keys().cloned().collect();
        for id in ids {
            self.stop_instance(&id);
        }
        futures::future::join_all(self.stopping.drain().map(|(_, stop)| stop)).await;
        self.remove_leftovers(true).await;
        if let Some(volumes) = &self.volumes {
            volumes.unmount_all();
        }
    }

    /// Has every driver remove what this node's instances left behind: orphans at start, all
    /// at a graceful stop.
    async fn remove_leftovers(&self, leaving: bool) {
        for driver in &self.config.drivers {
            let removed = if leaving {
                driver.remove_all().await
            } else {
                driver.remove_orphans(BTreeSet::new()).await
            };
            match removed {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(runtime = %driver.runtime(), removed = n, "removed leftovers of earlier instances")
                }
                Err(e) => {
                    tracing::warn!(runtime = %driver.runtime(), error = %e, "could not remove leftovers of earlier instances")
                }
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Started {
                id,
                app,
                health,
                result,
            } => {
                self.starting.remove(&id);
                let Some(local) = self.local.get_mut(&id) else {
                    // No longer wanted: stop what just started.
                    if let Ok(instance) = result {
                        self.stop_in_background(&id, instance);
                    }
                    return;
                };
                match result {
                    Ok(instance) => {
                        // Without a declared check running is healthy: reported in the same
                        // write as the start, so a cold start waits for one commit, not two.
                        let healthy = health.is_none();
                        if !healthy {
                            self.proving.insert(id.clone(), Instant::now());
                        }
                        local.phase = Phase::Running { healthy };
                        local.failed_checks = 0;
                        local.error = None;
                        let entry = RunningEntry {
                            instance,
                            app,
                            healthy,
                            health,
                        };
                        self.running.send_modify(|r| {
                            r.insert(id.clone(), entry);
                        });
                        // Check at once: routing waits for the first good check.
                        self.last_check.remove(&id);
                        self.check_health();
                    }
                    Err(why) => {
                        let why = why.to_string();
                        let wait =
                            local.fail(Instant::now(), self.config.timing.max_backoff, why.clone());
                        tracing::warn!(instance = %id, %why, retry_in = ?wait, "instance failed to start");
                    }
                }
                self.report();
            }
            Event::Checked { id, healthy, ended } => {
                self.checking.remove(&id);
                let restart_after = self.config.timing.failed_checks_to_restart;
                let Some(local) = self.local.get_mut(&id) else {
                    return;
                };
                if !matches!(local.phase, Phase::Running { .. }) {
                    return;
                }
                let proving = self.proving.remove(&id).is_some();
                if ended.is_some() {
                    local.failed_checks = restart_after;
                } else if healthy {
                    local.failed_checks = 0;
                    local.failures = 0;
                } else if proving {
                    // It had its whole startup window (see `startup_window`) and never passed.
                    local.failed_checks = restart_after;
                } else {
                    local.failed_checks += 1;
                }
                if !healthy {
                    self.counts.failed_checks.fetch_add(1, Ordering::Relaxed);
                }
                let failed = local.failed_checks >= restart_after;
                local.phase = Phase::Running { healthy };
                let changed = self.running.send_if_modified(|r| match r.get_mut(&id) {
                    Some(entry) if entry.healthy != healthy => {
                        entry.healthy = healthy;
                        true
                    }
                    _ => false,
                });
                if failed {
                    let why = if let Some(how) = ended {
                        format!("it ended: {how}")
                    } else if proving {
                        format!(
                            "it did not pass a health check within {:?} of its start",
                            self.config.timing.startup_window()
                        )
                    } else {
                        format!("it failed {restart_after} health checks in a row")
                    };
                    let wait = local.fail(Instant::now(), self.config.timing.max_backoff, why);
                    tracing::warn!(instance = %id, retry_in = ?wait, "instance failed its health checks; restarting");
                    self.counts.restarts.fetch_add(1, Ordering::Relaxed);
                    let entry = self.unpublish(&id);
                    if let Some(entry) = entry {
                        self.stop_in_background(&id, entry.instance);
                    }
                    self.report();
                } else if changed {
                    // Routing follows the report: make it now, not at the next tick.
                    self.report();
                }
            }
            Event::Reported { ok } => {
                self.reporting = false;
                if ok {
                    if std::mem::take(&mut self.report_again) {
                        // What changed while the report was in flight goes now.
                        self.report();
                    }
                } else {
                    tracing::debug!("reporting instance states failed; retrying at the next tick");
                }
            }
        }
    }

    /// Starts a health check for every running instance whose last one is old enough.
    fn check_health(&mut self) {
        let now = Instant::now();
        let running: Vec<(String, Arc<dyn Instance>, Option<String>)> = self
            .running
            .borrow()
            .iter()
            .map(|(id, e)| (id.clone(), e.instance.clone(), e.health.clone()))
            .collect();
        let window = self.config.timing.startup_window();
        for (id, instance, path) in running {
            let due = self
                .last_check
                .get(&id)
                .is_none_or(|at| now.duration_since(*at) >= self.config.timing.health_interval);
            if !due || self.checking.contains(&id) {
                continue;
            }
            self.last_check.insert(id.clone(), now);
            self.checking.insert(id.clone());
            let events = self.events.clone();
            let timeout = self.config.timing.health_timeout;
            let proving_until = self.proving.get(&id).map(|started| *started + window);
            self.tasks.spawn(async move {
                let ended = instance.ended();
                let healthy = ended.is_none()
                    && match (path, proving_until) {
                        // No health check declared: running is healthy.
                        (None, _) => true,
                        (Some(path), Some(until)) => {
                            first_pass(instance.as_ref(), &path, timeout, until).await
                        }
                        (Some(path), None) => probe(instance.as_ref(), &path, timeout).await,
                    };
                let _ = events.send(Event::Checked { id, healthy, ended }).await;
            });
        }
    }

    /// Reports the states that differ from the replica's, one report in flight at a time.
    fn report(&mut self) {
        if self.reporting {
            self.report_again = true;
            return;
        }
        let replica = self.config.placement.replica();
        let known: BTreeMap<String, reconcile::Known> = replica
            .state
            .instances_on(&self.me)
            .map(|i| (i.id.clone(), (i.state, i.error.clone())))
            .collect();
        let changed = reconcile::reports(&known, &self.local);
        if changed.is_empty() {
            return;
        }
        let errors = changed
            .iter()
            .filter_map(|(id, _, error)| Some((id.clone(), error.clone()?)))
            .collect();
        let states = changed
            .into_iter()
            .map(|(id, state, _)| (id, state))
            .collect();
        self.reporting = true;
        self.report_again = false;
        let placement = self.config.placement.clone();
        let events = self.events.clone();
        let node = self.me.clone();
        self.tasks.spawn(async move {
            let ok = placement
                .write(WriteRequest::Report {
                    node,
                    states,
                    errors,
                })
                .await
                .is_ok();
            let _ = events.send(Event::Reported { ok }).await;
        });
    }
}

/// Checks a started instance every [`STARTUP_PROBE_EVERY`] until it passes (true) or `until`.
async fn first_pass(
    instance: &dyn Instance,
    path: &str,
    timeout: Duration,
    until: Instant,
) -> bool {
    loop {
        if probe(instance, path, timeout).await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(STARTUP_PROBE_EVERY).await;
    }
}

/// GETs `path` from the instance: healthy when it answers 2xx or 3xx in time.
async fn probe(instance: &dyn Instance, path: &str, timeout: Duration) -> bool {
    use http_body_util::{BodyExt, Empty};
    let Ok(request) = http::Request::get(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::USER_AGENT, "mycel-health")
        .body(Empty::new().map_err(|never| match never {}).boxed())
    else {
        return false;
    };
    // The answer is read to its end: an app whose body write fails because nobody reads it may
    // trap (wstd's server does), which would make every check log a crash.
    let answer = async {
        let response = instance.handle(request).await.ok()?;
        let status = response.status();
        let mut body = response.into_body();
        let mut read = 0;
        while let Some(frame) = body.frame().await {
            read += frame.ok()?.data_ref().map_or(0, |data| data.len());
            if read > MAX_PROBE_BODY {
                break;
            }
        }
        Some(status)
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(Some(status)) => status.is_success() || status.is_redirection(),
        _ => false,
    }
}
