//! What the agent does with volumes besides mounting them, decided on every tick from the
//! replicated state ([`due`], pure) and carried out on tasks of their own: snapshots (asked for,
//! or every `snapshot_every_ms`) by the node running the app's first replica, copies of each new
//! snapshot on the nodes it names, and the removal of volumes the state no longer gives this
//! node (a purge).

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use mycel_blobs::{BlobStore, MeshBlobs};
use mycel_placement::{PlacementHandle, PlacementState};
use mycel_protocol::{
    BlobHash,
    api::{InstanceState, MemberStatus},
    placement::{AppRecord, VolumeSnapshot, WriteRequest},
};
use mycel_runtime::VolumeMount;
use tokio_util::task::TaskTracker;

use super::{LocalVolumes, snapshot};
use crate::{AgentConfig, AgentError, Counts};

/// How many other nodes keep a copy of each snapshot.
pub(crate) const COPIES: usize = 2;

/// One piece of volume work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Job {
    /// Take a snapshot, on top of `previous`, answering `answers` requests.
    Snapshot {
        app: String,
        volume: String,
        previous: Option<BlobHash>,
        answers: u64,
    },
    /// Keep a copy of snapshot `index`.
    Copy {
        app: String,
        volume: String,
        index: BlobHash,
    },
}

impl Job {
    fn key(&self) -> (String, String, bool) {
        match self {
            Job::Snapshot { app, volume, .. } => (app.clone(), volume.clone(), true),
            Job::Copy { app, volume, .. } => (app.clone(), volume.clone(), false),
        }
    }
}

/// The node that snapshots `app`'s volumes: the one running its lowest running replica.
fn snapshotter<'a>(state: &'a PlacementState, app: &'a str) -> Option<&'a str> {
    state
        .instances_of(app)
        .filter(|i| i.state == InstanceState::Running)
        .min_by_key(|i| i.replica)
        .map(|i| i.node.as_str())
}

/// The volume work this node `me` should do now. `last_taken` says how long ago this node took
/// each volume's latest periodic snapshot (absent: not since it started).
pub(crate) fn due(
    state: &PlacementState,
    me: &str,
    since_taken: &BTreeMap<(String, String), Duration>,
) -> Vec<Job> {
    let mut jobs = Vec::new();
    for (app, held) in &state.volumes {
        let record = state.apps.get(app);
        let mine = snapshotter(state, app) == Some(me) && record.is_some();
        for (name, volume) in &held.volumes {
            let latest = volume.snapshot.as_ref();
            if let Some(snapshot) = latest
                && snapshot.copy_to.iter().any(|n| n == me)
                && !snapshot.copies.iter().any(|n| n == me)
            {
                jobs.push(Job::Copy {
                    app: app.clone(),
                    volume: name.clone(),
                    index: snapshot.index,
                });
            }
            if !mine {
                continue;
            }
            let answered = latest.map_or(0, |s| s.answers);
            let every = record
                .and_then(|r| r.manifest.volumes.iter().find(|v| &v.name == name))
                .and_then(|v| v.snapshot_every_ms)
                .map(Duration::from_millis);
            let periodic = every.is_some_and(|every| {
                since_taken
                    .get(&(app.clone(), name.clone()))
                    .is_some_and(|since| *since >= every)
            });
            if volume.requested > answered || periodic {
                jobs.push(Job::Snapshot {
                    app: app.clone(),
                    volume: name.clone(),
                    // This node's own latest, to build on (another node's it may not hold).
                    previous: latest.map(|s| s.index),
                    answers: volume.requested,
                });
            }
        }
    }
    jobs
}

/// The nodes that keep copies of a volume's snapshots: of the alive members but `me`, the
/// [`COPIES`] that rank first for this volume (rendezvous hashing: the choice stays put as
/// members come and go).
pub(crate) fn copy_targets(app: &str, volume: &str, me: &str, alive: &[String]) -> Vec<String> {
    let mut ranked: Vec<(blake3::Hash, &String)> = alive
        .iter()
        .filter(|n| n.as_str() != me)
        .map(|n| (blake3::hash(format!("{app}/{volume}/{n}").as_bytes()), n))
        .collect();
    ranked.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    ranked
        .into_iter()
        .take(COPIES)
        .map(|(_, n)| n.clone())
        .collect()
}

/// The agent's part that keeps volumes.
pub(crate) struct VolumeKeeper {
    worker: Worker,
    /// The volumes the state gave this node at the last tick (`None` before the first).
    given: Option<BTreeSet<(String, String)>>,
    tasks: TaskTracker,
}

impl VolumeKeeper {
    /// The keeper of the volumes under the agent's `volumes_dir`; `None` (logged) when that
    /// directory cannot be made.
    pub(crate) fn open(
        config: &AgentConfig,
        me: &str,
        counts: Arc<Counts>,
        tasks: TaskTracker,
    ) -> Option<Self> {
        let local = LocalVolumes::open(config.volumes_dir.clone())
            .inspect_err(|e| tracing::warn!(error = %e, "this node cannot keep volumes"))
            .ok()?;
        let worker = Worker {
            local,
            blobs: config.blobs.clone(),
            network: MeshBlobs {
                mesh: config.mesh.clone(),
            },
            placement: config.placement.clone(),
            me: me.to_owned(),
            taken: Default::default(),
            busy: Default::default(),
            counts,
        };
        Some(VolumeKeeper {
            worker,
            given: None,
            tasks,
        })
    }

    /// Unmounts every volume (the node is stopping; its instances have stopped).
    pub(crate) fn unmount_all(&self) {
        self.worker.local.unmount_all();
    }

    /// Starts what is due, and removes volumes a purge took from this node.
    pub(crate) fn tick(&mut self, state: &PlacementState) {
        self.purge(state);
        let since_taken: BTreeMap<(String, String), Duration> = {
            let mut taken = self.worker.taken.lock().unwrap_or_else(|e| e.into_inner());
            for (app, held) in &state.volumes {
                for name in held.volumes.keys() {
                    let key = (app.clone(), name.clone());
                    taken.entry(key).or_insert_with(Instant::now);
                }
            }
            taken
                .iter()
                .map(|(k, at)| (k.clone(), at.elapsed()))
                .collect()
        };
        for job in due(state, &self.worker.me, &since_taken) {
            if !self
                .worker
                .busy
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(job.key())
            {
                continue;
            }
            let worker = self.worker();
            self.tasks.spawn(async move {
                let key = job.key();
                if let Err(e) = worker.run(job.clone()).await {
                    tracing::warn!(?job, error = %e, "volume work failed (it is tried again)");
                }
                worker
                    .busy
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
            });
        }
    }

    /// Removes the volumes that the state gave this node at the last tick and no longer does.
    fn purge(&mut self, state: &PlacementState) {
        let given: BTreeSet<(String, String)> = state
            .volumes
            .iter()
            .flat_map(|(app, held)| {
                held.volumes
                    .iter()
                    .filter(|(_, v)| v.holders.contains(&self.worker.me))
                    .map(move |(name, _)| (app.clone(), name.clone()))
            })
            .collect();
        if let Some(before) = self.given.replace(given.clone()) {
            for (app, name) in before.difference(&given) {
                if state.apps.contains_key(app)
                    && state.instances_on(&self.worker.me).any(|i| &i.app == app)
                {
                    continue; // still in use here: taken again with the next owner's entry
                }
                match self.worker.local.remove(app, name) {
                    Ok(()) => tracing::info!(%app, volume = %name, "volume purged"),
                    Err(e) => {
                        tracing::warn!(%app, volume = %name, error = %e, "could not purge a volume")
                    }
                }
            }
        }
    }

    fn worker(&self) -> Worker {
        self.worker.clone()
    }

    /// Makes `app`'s volumes ready on this node (restoring a snapshot this node does not
    /// hold), to be bound into an instance: run before the instance starts.
    pub(crate) fn mounter(&self, app: &AppRecord, state: &PlacementState) -> Mounter {
        let name = &app.manifest.name;
        let owner = state.volume_owner(name);
        let held = state.volumes.get(name).filter(|v| v.owner == owner);
        let volumes = app
            .manifest
            .volumes
            .iter()
            .map(|spec| {
                let record = held.and_then(|h| h.volumes.get(&spec.name));
                let size_mb = record.map_or(spec.size_mb, |r| r.size_mb.max(spec.size_mb));
                let snapshot = record.and_then(|r| r.snapshot.clone());
                (spec.name.clone(), spec.path.clone(), size_mb, snapshot)
            })
            .collect();
        Mounter {
            worker: self.worker(),
            app: name.clone(),
            owner,
            volumes,
        }
    }
}

/// Volume work off the agent's loop.
#[derive(Clone)]
struct Worker {
    local: LocalVolumes,
    blobs: BlobStore,
    network: MeshBlobs,
    placement: PlacementHandle,
    me: String,
    taken: Arc<Mutex<BTreeMap<(String, String), Instant>>>,
    busy: Arc<Mutex<HashSet<(String, String, bool)>>>,
    counts: Arc<Counts>,
}

impl Worker {
    async fn run(&self, job: Job) -> Result<(), AgentError> {
        match job {
            Job::Snapshot {
                app,
                volume,
                previous,
                answers,
            } => {
                let started = Instant::now();
                let taken =
                    snapshot::take(&self.local, &self.blobs, &app, &volume, previous).await?;
                let alive: Vec<String> = self
                    .network
                    .mesh
                    .nodes()
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|n| n.status == MemberStatus::Alive && !n.departed)
                    .map(|n| n.peer_id)
                    .collect();
                let snapshot = VolumeSnapshot {
                    index: taken.index,
                    node: self.me.clone(),
                    taken_at_ms: now_ms(),
                    size_bytes: taken.size_bytes,
                    used_bytes: taken.used_bytes,
                    stored_bytes: taken.stored_bytes,
                    answers,
                    copy_to: copy_targets(&app, &volume, &self.me, &alive),
                    copies: Vec::new(),
                };
                self.taken
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((app.clone(), volume.clone()), started);
                tracing::info!(%app, %volume, index = %taken.index, stored = taken.stored_bytes, "volume snapshot taken");
                self.counts.volume_snapshots.fetch_add(1, Ordering::Relaxed);
                let stored = &self.counts.volume_snapshot_bytes;
                stored.fetch_add(taken.stored_bytes, Ordering::Relaxed);
                self.write(WriteRequest::PutSnapshot {
                    app,
                    volume,
                    snapshot: Box::new(snapshot),
                })
                .await
            }
            Job::Copy { app, volume, index } => {
                snapshot::fetch(&self.blobs, &self.network, index).await?;
                self.write(WriteRequest::SnapshotCopied {
                    app,
                    volume,
                    index,
                    node: self.me.clone(),
                })
                .await
            }
        }
    }

    async fn write(&self, request: WriteRequest) -> Result<(), AgentError> {
        self.placement
            .write(request)
            .await
            .map(|_| ())
            .map_err(|e| AgentError::Node(format!("recording volume work: {e}")))
    }
}

/// Mounts one app's volumes for an instance (see [`VolumeKeeper::mounter`]).
pub(crate) struct Mounter {
    worker: Worker,
    app: String,
    owner: String,
    /// (name, path, size MiB, latest snapshot).
    volumes: Vec<(String, String, u64, Option<VolumeSnapshot>)>,
}

impl Mounter {
    pub(crate) async fn mount(self) -> Result<Vec<VolumeMount>, AgentError> {
        let Mounter {
            worker,
            app,
            owner,
            volumes,
        } = self;
        let mut mounts = Vec::new();
        for (name, path, size_mb, snapshot) in volumes {
            let local = worker.local.clone();
            // A newer snapshot from another node: the app ran there since this copy was made.
            let base = std::fs::read_to_string(local.dir(&app, &name).join(super::BASE)).ok();
            let stale = snapshot.as_ref().is_some_and(|s| {
                s.node != worker.me && base.as_deref() != Some(&s.index.to_string())
            }) && local.holds(&app, &name, &owner);
            if stale {
                tracing::info!(%app, volume = %name, "this node's copy is older than the latest snapshot: restoring it");
                let (local, app, name) = (local.clone(), app.clone(), name.clone());
                blocking(move || local.remove(&app, &name)).await?;
            }
            let started = Instant::now();
            let restoring = match &snapshot {
                Some(s) if !local.holds(&app, &name, &owner) => Some((
                    s.index,
                    snapshot::fetch(&worker.blobs, &worker.network, s.index).await?,
                )),
                _ => None,
            };
            let restored = restoring.is_some();
            let blobs = worker.blobs.clone();
            let (app_name, volume_name, owner) = (app.clone(), name.clone(), owner.clone());
            let host = blocking(move || {
                local.ensure(&app_name, &volume_name, size_mb, &owner, |part| {
                    let Some((hash, index)) = restoring else {
                        return Ok(None);
                    };
                    snapshot::restore(&blobs, &index, part)?;
                    tracing::info!(app = %app_name, volume = %volume_name, snapshot = %hash, "volume restored");
                    Ok(Some(hash.to_string()))
                })
            })
            .await?;
            if restored {
                let counts = &worker.counts;
                counts.volume_restores.fetch_add(1, Ordering::Relaxed);
                let micros = started.elapsed().as_micros() as u64;
                counts
                    .volume_restore_micros
                    .fetch_add(micros, Ordering::Relaxed);
            }
            mounts.push(VolumeMount { host, path });
        }
        Ok(mounts)
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AgentError::Node(format!("volume work ended abnormally: {e}")))?
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
