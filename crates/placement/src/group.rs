//! The placement group as a node runs it: the Raft instance, the task that answers peers'
//! placement frames, and the leader's upkeep (members in, voters chosen, instances of dead nodes
//! moved). [`PlacementHandle`] is how the rest of the node reads the replica and writes.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::FutureExt;
use mycel_mesh::{InboundPlacement, MeshHandle, PlacementFrame};
use mycel_protocol::{
    PeerId,
    api::{Cluster, MemberStatus, NodeInfo},
    placement::{Command, WriteError, WriteOutcome, WriteRequest},
};
use openraft::{
    ChangeMembers, Config, SnapshotPolicy,
    error::{CheckIsLeaderError, ClientWriteError, RaftError},
    raft::AppendEntriesResponse,
};
use tokio::{
    sync::{Mutex, mpsc, oneshot, watch},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

mod load_reports;
mod quorum;

use crate::{
    NodeId, Raft,
    load::Autoscaler,
    network::{self, CallError, Network, Rpc, RpcReply},
    plan::{self, View},
    storage::{LogStore, StateMachine, open_db},
    types::{Member, Replica, node_id},
    voters::{self, Candidate, Group},
};

/// How the group paces itself.
#[derive(Clone, Debug)]
pub struct GroupTiming {
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in this range stands for election.
    pub election: (Duration, Duration),
    /// How long a write may take before it fails with `no_quorum`.
    pub write_timeout: Duration,
    /// How long a leader may take to confirm it still has a quorum before a write fails.
    pub quorum_check: Duration,
    /// How often the leader looks after membership and dead nodes' instances.
    pub upkeep_interval: Duration,
    /// How long a dead node keeps its instances before they are placed elsewhere.
    pub dead_grace: Duration,
    /// How long a dead node stays a member of the group (it rejoins with its log meanwhile).
    pub gone_after: Duration,
    /// A snapshot is taken every this many log entries, and the log before it purged.
    pub snapshot_every: u64,
    /// How long after the node starts its view of the mesh counts as whole: by then the failure
    /// detector has heard from every live member. Before, a leader only adds members.
    pub view_settles_after: Duration,
}

impl Default for GroupTiming {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(150),
            // openraft's followers keep a leader's lease for the longest election timeout and
            // refuse votes until it runs out, so a failover takes one to two timeouts.
            election: (Duration::from_millis(700), Duration::from_millis(1000)),
            write_timeout: Duration::from_secs(5),
            quorum_check: Duration::from_millis(1500),
            upkeep_interval: Duration::from_millis(500),
            dead_grace: Duration::from_secs(10),
            gone_after: Duration::from_secs(120),
            snapshot_every: 1_000,
            // The membership defaults: adverts every 5 s, suspect after 16 s, dead 2.5 s later.
            view_settles_after: Duration::from_secs(20),
        }
    }
}

pub struct GroupConfig {
    /// Where the log and snapshots live (a sled database).
    pub dir: PathBuf,
    pub mesh: MeshHandle,
    /// Inbound placement frames from the mesh.
    pub inbox: mpsc::Receiver<InboundPlacement>,
    /// True for the first node of a new mesh: it founds the group as its only voter. Others
    /// wait to be added by the leader.
    pub found: bool,
    pub timing: GroupTiming,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("opening the placement store: {0}")]
    Storage(String),
    #[error("starting Raft: {0}")]
    Raft(String),
}

/// The most writes one batch commits together.
const MAX_WRITE_BATCH: usize = 256;

/// What became of a write forwarded to the leader.
enum Forwarded {
    /// The leader (or the mesh on its behalf) answered: the write may have committed.
    Answered(Result<WriteOutcome, WriteError>),
    /// It never left this node: asking again cannot commit it twice.
    NotSent(String),
}

/// A write this node commits as the leader, and where its outcome goes.
struct LeaderWrite {
    request: WriteRequest,
    reply: oneshot::Sender<Result<WriteOutcome, WriteError>>,
}

/// A cheap, cloneable handle to the node's placement group.
#[derive(Clone)]
pub struct PlacementHandle {
    inner: Arc<Inner>,
}

struct Inner {
    raft: Raft,
    replica: watch::Receiver<Arc<Replica>>,
    mesh: MeshHandle,
    me: NodeId,
    peer_id: String,
    /// Held by the leader while it plans and commits, so two writes never plan from one state.
    planning: Mutex<()>,
    /// Writes for this node to commit as the leader, batched by one task.
    leader_writes: mpsc::Sender<LeaderWrite>,
    timing: GroupTiming,
    /// When this node's group started: its view of the mesh settles some time after.
    started: Instant,
    /// The last node whose entries (or heartbeat) this node accepted, and when.
    heard_from_leader: std::sync::Mutex<Option<(NodeId, Instant)>>,
    /// The nodes' load reports and the autoscaler's windows, while this node leads.
    autoscaler: std::sync::Mutex<Autoscaler>,
}

/// Opens the store, starts Raft and the group's tasks on `tasks`. Cancelling `stop` stops them
/// and Raft (the store is flushed on every write already); wait on `tasks` for it. Dropping the
/// handle stops nothing.
pub async fn start(
    config: GroupConfig,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> Result<PlacementHandle, GroupError> {
    let db = open_db(&config.dir).map_err(|e| GroupError::Storage(e.to_string()))?;
    let log = LogStore::open(&db).map_err(|e| GroupError::Storage(e.to_string()))?;
    let (state_machine, replica) =
        StateMachine::open(&db).map_err(|e| GroupError::Storage(e.to_string()))?;
    let timing = config.timing;
    let raft_config = Config {
        cluster_name: "mycel".into(),
        heartbeat_interval: timing.heartbeat.as_millis() as u64,
        election_timeout_min: timing.election.0.as_millis() as u64,
        election_timeout_max: timing.election.1.as_millis() as u64,
        install_snapshot_timeout: 5_000,
        // A batch of entries must fit one placement frame: manifests are at most 64 KiB.
        max_payload_entries: 64,
        snapshot_max_chunk_size: 1024 * 1024,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(timing.snapshot_every),
        // Keep a little log behind the snapshot so a briefly lagging member catches up from
        // entries rather than a whole snapshot.
        max_in_snapshot_log_to_keep: timing.snapshot_every / 2,
        ..Default::default()
    }
    .validate()
    .map_err(|e| GroupError::Raft(e.to_string()))?;

    let peer = config.mesh.peer_id();
    let me = node_id(&peer);
    let network = Network {
        mesh: config.mesh.clone(),
    };
    let raft = Raft::new(me, Arc::new(raft_config), network, log, state_machine)
        .await
        .map_err(|e| GroupError::Raft(e.to_string()))?;
    if config.found
        && !raft
            .is_initialized()
            .await
            .map_err(|e| GroupError::Raft(e.to_string()))?
    {
        let founder = BTreeMap::from([(
            me,
            Member {
                peer_id: peer.to_string(),
            },
        )]);
        raft.initialize(founder)
            .await
            .map_err(|e| GroupError::Raft(e.to_string()))?;
        tracing::info!("founded a new placement group");
    }

    let (leader_writes, leader_queue) = mpsc::channel(MAX_WRITE_BATCH * 4);
    let handle = PlacementHandle {
        inner: Arc::new(Inner {
            raft,
            replica,
            mesh: config.mesh,
            me,
            peer_id: peer.to_string(),
            planning: Mutex::new(()),
            leader_writes,
            timing,
            started: Instant::now(),
            heard_from_leader: Default::default(),
            autoscaler: Default::default(),
        }),
    };
    let serving = handle.clone().serve(config.inbox);
    let upkeep = handle.clone().upkeep();
    let committer = handle.clone().commit_batches(leader_queue);
    for task in [serving.boxed(), upkeep.boxed(), committer.boxed()] {
        let stop = stop.clone();
        tasks.spawn(async move { stop.run_until_cancelled(task).await });
    }
    let raft = handle.inner.raft.clone();
    tasks.spawn(async move {
        stop.cancelled().await;
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(%e, "stopping Raft");
        }
    });
    Ok(handle)
}

/// Locks `mutex`: what it guards is replaced whole, never left half-changed by a panic.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl PlacementHandle {
    /// This node's replica of the decided state (reads never leave the node).
    pub fn replica(&self) -> Arc<Replica> {
        self.inner.replica.borrow().clone()
    }

    /// Wakes on every applied change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Replica>> {
        self.inner.replica.clone()
    }

    /// The group as this node sees it. The leader is named only when this node is in touch with
    /// it (see [`Self::confirmed_leader`]); otherwise the answer says the node is catching up,
    /// with the last term it knows.
    pub fn cluster(&self) -> Cluster {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let leader = self.confirmed_leader_in(&metrics);
        let membership = metrics.membership_config.membership();
        let peer_of = |id: NodeId| membership.get_node(&id).map(|m| m.peer_id.clone());
        let mut voters: Vec<String> = membership.voter_ids().filter_map(peer_of).collect();
        let mut learners: Vec<String> = membership.learner_ids().filter_map(peer_of).collect();
        voters.sort();
        learners.sort();
        Cluster {
            leader: leader.and_then(peer_of),
            term: metrics.current_term,
            voters,
            learners,
            committed: metrics.last_applied.map(|l| l.index),
            catching_up: leader.is_none(),
        }
    }

    /// The leader this node is in touch with: itself once a quorum has acknowledged it in its
    /// term, or the node whose entries it accepted within two election timeouts. Raft's own
    /// idea of the leader is not enough: a leader restarts believing it still leads, in a term
    /// the others may have left long ago, and a follower restarts naming its old leader.
    pub fn confirmed_leader(&self) -> Option<NodeId> {
        self.confirmed_leader_in(&self.inner.raft.metrics().borrow())
    }

    fn confirmed_leader_in(
        &self,
        metrics: &openraft::RaftMetrics<NodeId, Member>,
    ) -> Option<NodeId> {
        let leader = metrics.current_leader?;
        if leader == self.inner.me {
            return metrics.millis_since_quorum_ack.map(|_| leader);
        }
        let heard = *self.inner.heard_from_leader.lock().expect("leader lock");
        let fresh = self.inner.timing.election.1 * 2;
        heard
            .filter(|(from, at)| *from == leader && at.elapsed() < fresh)
            .map(|_| leader)
    }

    /// Commits `request` through the leader, wherever it is, and returns once this node's
    /// replica shows it. Fails with `no_quorum` within the write timeout when the group cannot
    /// commit.
    pub async fn write(&self, request: WriteRequest) -> Result<WriteOutcome, WriteError> {
        let deadline = Instant::now() + self.inner.timing.write_timeout;
        let mut moved = 0;
        loop {
            let Some(leader) = self.wait_for_leader(deadline).await else {
                return Err(WriteError::NoQuorum(
                    "no leader: fewer than a majority of the voters are reachable".into(),
                ));
            };
            let result = if leader == self.inner.me {
                self.write_as_leader(&request, deadline).await
            } else {
                match self.forward(leader, &request, deadline).await {
                    Forwarded::Answered(result) => result,
                    // The leader died (or moved away) and the write never left this node: ask
                    // again, of whoever leads next, within the same deadline.
                    Forwarded::NotSent(why) => {
                        if Instant::now() + self.inner.timing.heartbeat >= deadline {
                            return Err(WriteError::LeaderUnreachable(why));
                        }
                        tokio::time::sleep(self.inner.timing.heartbeat).await;
                        continue;
                    }
                }
            };
            match result {
                Ok(outcome) => {
                    self.wait_applied(outcome.log_index, deadline).await;
                    return Ok(outcome);
                }
                // Leadership moved meanwhile: ask again once the group settles.
                Err(WriteError::NotLeader) if moved < 3 => {
                    moved += 1;
                    tokio::time::sleep(self.inner.timing.heartbeat).await;
                }
                Err(WriteError::NotLeader) => {
                    return Err(WriteError::NoQuorum("the leader keeps changing".into()));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The leader's id, waiting a little for one while an election may be under way, or while
    /// this node catches up with the group after a restart. Waits at most two election
    /// timeouts: longer than that, no majority is reachable.
    async fn wait_for_leader(&self, deadline: Instant) -> Option<NodeId> {
        let until = deadline.min(Instant::now() + self.inner.timing.election.1 * 2);
        let mut metrics = self.inner.raft.metrics();
        loop {
            metrics.borrow_and_update();
            if let Some(leader) = self.confirmed_leader() {
                return Some(leader);
            }
            // Hearing from a leader changes no metric: look again after a heartbeat.
            let recheck = (Instant::now() + self.inner.timing.heartbeat).min(until);
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return None },
                () = tokio::time::sleep_until(recheck) => {}
            }
            if Instant::now() >= until {
                return None;
            }
        }
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) {
        let mut replica = self.inner.replica.clone();
        let _ = tokio::time::timeout_at(
            deadline,
            replica.wait_for(|r| r.applied_index.is_some_and(|i| i >= index)),
        )
        .await;
    }

    /// The peer id of group member `node`, when the membership names it.
    fn peer_of(&self, node: NodeId) -> Option<PeerId> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&node)
            .and_then(|m| m.peer_id.parse::<PeerId>().ok())
    }

    async fn forward(
        &self,
        leader: NodeId,
        request: &WriteRequest,
        deadline: Instant,
    ) -> Forwarded {
        let Some(peer) = self.peer_of(leader) else {
            return Forwarded::NotSent("the leader is not a known member yet".into());
        };
        // A leader that does not answer within its own quorum check and a little more is cut
        // off from this node, or from its quorum: either way the write cannot commit now.
        let ttl = deadline
            .saturating_duration_since(Instant::now())
            .min(self.inner.timing.quorum_check + Duration::from_secs(1));
        let answer =
            match network::call(&self.inner.mesh, peer, &Rpc::Write(request.clone()), ttl).await {
                Ok(RpcReply::Write(result)) => result,
                Ok(other) => Err(WriteError::LeaderUnreachable(format!(
                    "the leader answered a write with {other:?}"
                ))),
                Err(CallError::NotSent(e)) => {
                    return Forwarded::NotSent(format!("the leader cannot be reached: {e}"));
                }
                Err(e) => Err(WriteError::LeaderUnreachable(format!("{peer}: {e}"))),
            };
        Forwarded::Answered(answer)
    }

    /// Hands `request` to this node's batch committer (it believes it leads) and waits for the
    /// outcome.
    async fn write_as_leader(
        &self,
        request: &WriteRequest,
        deadline: Instant,
    ) -> Result<WriteOutcome, WriteError> {
        let (reply, outcome) = oneshot::channel();
        let write = LeaderWrite {
            request: request.clone(),
            reply,
        };
        self.inner
            .leader_writes
            .send(write)
            .await
            .map_err(|_| WriteError::Stopped)?;
        match tokio::time::timeout_at(deadline, outcome).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(WriteError::Stopped),
            Err(_) => Err(WriteError::Unconfirmed(
                "no commit within the write timeout".into(),
            )),
        }
    }

    /// Commits leader writes in batches: whatever queued up while the last batch committed is
    /// planned in order (each against the state the ones before it leave) and proposed at once,
    /// so Raft appends, flushes and replicates them together.
    async fn commit_batches(self, mut queue: mpsc::Receiver<LeaderWrite>) {
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_WRITE_BATCH {
                match queue.try_recv() {
                    Ok(write) => batch.push(write),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch).await;
        }
    }

    async fn commit_batch(&self, batch: Vec<LeaderWrite>) {
        let raft = &self.inner.raft;
        // A leader cut off from its voters would accept entries and wait forever: confirm the
        // quorum first, quickly, once per batch.
        let check =
            tokio::time::timeout(self.inner.timing.quorum_check, raft.ensure_linearizable());
        let confirmed = match check.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                Err(WriteError::NotLeader)
            }
            Ok(Err(e)) => Err(WriteError::NoQuorum(e.to_string())),
            Err(_) => Err(WriteError::NoQuorum(
                "the leader cannot reach a majority of the voters".into(),
            )),
        };
        let _planning = self.inner.planning.lock().await;
        let view = match confirmed {
            Ok(()) => self.view().await,
            Err(e) => Err(e),
        };
        let view = match view {
            Ok(view) => view,
            Err(e) => {
                for write in batch {
                    let _ = write.reply.send(Err(e.clone()));
                }
                return;
            }
        };

        // Plan every write against the state the writes before it will leave, and propose.
        let mut state = self.replica().state.clone();
        let mut proposed = Vec::new();
        for write in batch {
            let commands = match plan::plan_write(&state, &view, &write.request) {
                Ok(commands) => commands,
                Err(e) => {
                    let _ = write.reply.send(Err(e));
                    continue;
                }
            };
            // The entries must apply to the state the writes before them leave, as they will on
            // every replica; a write whose entry would be refused is not proposed (a write plans
            // one entry, and a refused entry changes nothing).
            if let Err(e) = commands.iter().try_for_each(|c| state.try_apply(c)) {
                let _ = write.reply.send(Err(e));
                continue;
            }
            let mut receivers = Vec::new();
            for command in commands {
                match raft.client_write_ff(command).await {
                    Ok(receiver) => receivers.push(receiver),
                    // Raft has stopped (a fatal error, or the node shuts down).
                    Err(e) => {
                        tracing::warn!(%e, "proposing a write");
                        let _ = write.reply.send(Err(WriteError::Stopped));
                        return;
                    }
                }
            }
            proposed.push((write.reply, receivers));
        }

        // Answer each write once all its entries committed.
        let deadline = Instant::now() + self.inner.timing.write_timeout;
        for (reply, receivers) in proposed {
            let mut outcome = Ok(WriteOutcome { log_index: 0 });
            for receiver in receivers {
                let committed = match tokio::time::timeout_at(deadline, receiver).await {
                    // Committed, but refused when applied (the state changed since planning).
                    Ok(Ok(Ok(response))) => response.data.map(|()| response.log_id.index),
                    Ok(Ok(Err(ClientWriteError::ForwardToLeader(_)))) => Err(WriteError::NotLeader),
                    Ok(Ok(Err(e))) => Err(WriteError::NoQuorum(e.to_string())),
                    Ok(Err(_)) => Err(WriteError::Stopped),
                    Err(_) => Err(WriteError::Unconfirmed(
                        "no commit within the write timeout".into(),
                    )),
                };
                outcome = match (outcome, committed) {
                    (Ok(_), Ok(log_index)) => Ok(WriteOutcome { log_index }),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
            }
            let _ = reply.send(outcome);
        }
    }

    /// The leader's view of the mesh, for planning.
    async fn view(&self) -> Result<View, WriteError> {
        let nodes = self
            .inner
            .mesh
            .nodes()
            .await
            .map_err(|_| WriteError::Stopped)?;
        Ok(View {
            nodes: plan::node_views(&nodes),
            now_ms: now_ms(),
            dead_grace_ms: self.inner.timing.dead_grace.as_millis() as u64,
        })
    }

    /// Whether this node leads, confirmed by a quorum in its term.
    fn is_leader(&self) -> bool {
        self.confirmed_leader() == Some(self.inner.me)
    }

    /// Whether this node's view of the mesh is old enough to be whole.
    fn view_settled(&self) -> bool {
        self.inner.started.elapsed() >= self.inner.timing.view_settles_after
    }

    /// Answers peers' placement frames, each on a task of its own: a slow write must not hold up
    /// heartbeats. Those tasks are detached: each ends with its answer, bounded by the write and
    /// Raft timeouts, and one still running when the group stops gets an error from Raft.
    async fn serve(self, mut inbox: mpsc::Receiver<InboundPlacement>) {
        while let Some(inbound) = inbox.recv().await {
            let handle = self.clone();
            tokio::spawn(async move {
                let reply = handle.answer(inbound.peer, &inbound.frame.0).await;
                match mycel_protocol::encode(&reply) {
                    Ok(bytes) => {
                        let _ = inbound.reply.send(PlacementFrame(bytes));
                    }
                    Err(e) => tracing::warn!(%e, "encoding a placement reply"),
                }
            });
        }
    }

    async fn answer(&self, peer: PeerId, frame: &[u8]) -> RpcReply {
        let rpc = match network::decode_rpc(frame) {
            Ok(rpc) => rpc,
            Err(e) => {
                tracing::debug!(%peer, %e, "malformed placement frame");
                return RpcReply::Refused(format!("malformed placement frame: {e}"));
            }
        };
        let sender = node_id(&peer);
        let raft = &self.inner.raft;
        // A Raft message speaks for the node named in its vote: only that node may send it.
        let forged = || RpcReply::Refused("a Raft message names another node as its sender".into());
        match rpc {
            Rpc::Append(request) if request.vote.leader_id.node_id == sender => {
                let answer = raft.append_entries(request).await;
                if matches!(&answer, Ok(a) if !matches!(a, AppendEntriesResponse::HigherVote(_))) {
                    *self.inner.heard_from_leader.lock().expect("leader lock") =
                        Some((sender, Instant::now()));
                }
                RpcReply::Append(answer)
            }
            Rpc::Vote(request) if request.vote.leader_id.node_id == sender => {
                RpcReply::Vote(raft.vote(request).await)
            }
            Rpc::Snapshot(request) if request.vote.leader_id.node_id == sender => {
                RpcReply::Snapshot(raft.install_snapshot(request).await)
            }
            Rpc::Append(_) | Rpc::Vote(_) | Rpc::Snapshot(_) => forged(),
            Rpc::Load(report) => RpcReply::Load(self.take_load(peer.to_string(), report)),
            Rpc::Write(mut request) => {
                // The forwarding node speaks for itself only (an app's owner is whoever signed
                // the request it carries, checked by the leader and by every replica).
                match &mut request {
                    WriteRequest::Deploy { by, .. } | WriteRequest::PutImage { by, .. } => {
                        *by = peer.to_string()
                    }
                    WriteRequest::Report { node, .. } if *node != peer.to_string() => {
                        return RpcReply::Refused("a node reports its own instances only".into());
                    }
                    WriteRequest::PutSnapshot { snapshot, .. }
                        if snapshot.node != peer.to_string() =>
                    {
                        return RpcReply::Refused("a node records its own snapshots only".into());
                    }
                    WriteRequest::SnapshotCopied { node, .. } if *node != peer.to_string() => {
                        return RpcReply::Refused("a node records its own copies only".into());
                    }
                    _ => {}
                }
                if !self.is_leader() {
                    return RpcReply::Write(Err(WriteError::NotLeader));
                }
                let deadline = Instant::now() + self.inner.timing.write_timeout;
                RpcReply::Write(self.write_as_leader(&request, deadline).await)
            }
        }
    }

    /// The leader's upkeep loop; other nodes only tick.
    async fn upkeep(self) {
        let mut tick = tokio::time::interval(self.inner.timing.upkeep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.is_leader() {
                lock(&self.inner.autoscaler).clear();
                continue;
            }
            let Ok(nodes) = self.inner.mesh.nodes().await else {
                return; // the mesh stopped: the node is shutting down
            };
            self.look_after_members(&nodes).await;
            let decisions = lock(&self.inner.autoscaler).tick(&self.replica().state, now_ms());
            let autoscale = move |state: &crate::PlacementState, view: &View| {
                plan::plan_autoscale(state, view, &decisions)
            };
            self.commit_planned(&nodes, "autoscaling", autoscale).await;
            self.commit_planned(&nodes, "stepping rollouts", plan::plan_rollouts)
                .await;
            // Instances move off nodes known dead, never off nodes not heard of yet.
            if self.view_settled() {
                self.commit_planned(&nodes, "moving instances", plan::plan_reschedule)
                    .await;
            }
        }
    }

    /// One membership change towards what the mesh calls for (see [`voters`]).
    async fn look_after_members(&self, nodes: &[NodeInfo]) {
        let raft = &self.inner.raft;
        let group = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            if membership.get_joint_config().len() > 1 {
                return; // a change is under way
            }
            Group {
                leader: self.inner.me,
                voters: membership.voter_ids().collect(),
                learners: membership.learner_ids().collect(),
            }
        };
        let gone_after = self.inner.timing.gone_after.as_millis() as u64;
        let candidates: Vec<Candidate> = nodes
            .iter()
            .filter_map(|node| {
                let peer: PeerId = node.peer_id.parse().ok()?;
                let dead = node.departed || node.status == MemberStatus::Dead;
                Some(Candidate {
                    id: node_id(&peer),
                    peer_id: node.peer_id.clone(),
                    live: node.is_self || !dead,
                    gone: !node.is_self
                        && (node.departed || (dead && node.last_seen_ms > gone_after)),
                    zone: node.labels.get("zone").cloned(),
                })
            })
            .collect();
        let settled = self.view_settled();
        let Some(change) = voters::next_change(&group, &candidates, settled) else {
            return;
        };
        let live = candidates.iter().filter(|c| c.live).count();
        tracing::info!(?change, live, settled, "changing the placement group");
        let limit = self.inner.timing.write_timeout * 2;
        let result = match change {
            voters::Change::AddLearner { id, peer_id } => {
                tokio::time::timeout(limit, raft.add_learner(id, Member { peer_id }, false)).await
            }
            voters::Change::SetVoters(voters) => {
                tokio::time::timeout(limit, raft.change_membership(voters, true)).await
            }
            voters::Change::Remove(ids) => {
                tokio::time::timeout(
                    limit,
                    raft.change_membership(ChangeMembers::RemoveNodes(ids), false),
                )
                .await
            }
        };
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::info!(%e, "placement group change not made"),
            Err(_) => tracing::info!("placement group change timed out"),
        }
    }

    /// Plans entries from the replica and the mesh (`plan`: instances off nodes dead past the
    /// grace time, unplaced replicas that found room, rollout steps) and commits them in turn.
    async fn commit_planned(
        &self,
        nodes: &[NodeInfo],
        what: &str,
        plan: impl FnOnce(&crate::PlacementState, &View) -> Vec<Command>,
    ) {
        let _planning = self.inner.planning.lock().await;
        let view = View {
            nodes: plan::node_views(nodes),
            now_ms: now_ms(),
            dead_grace_ms: self.inner.timing.dead_grace.as_millis() as u64,
        };
        for command in plan(&self.replica().state, &view) {
            tracing::info!(?command, "{what}");
            let write = self.inner.raft.client_write(command);
            match tokio::time::timeout(self.inner.timing.write_timeout, write).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::info!(%e, "{what} failed");
                    return;
                }
                Err(_) => {
                    tracing::info!("{what} timed out");
                    return;
                }
            }
        }
    }

    /// The last log index the latest snapshot of this node covers, if it has one.
    pub fn snapshot_index(&self) -> Option<u64> {
        self.inner.raft.metrics().borrow().snapshot.map(|l| l.index)
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> &str {
        &self.inner.peer_id
    }
}
