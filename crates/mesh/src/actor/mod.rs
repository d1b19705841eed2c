//! The mesh actor: owns the swarm and the membership view; nothing else touches either.
//!
//! The loop is a `biased` select: commands first (the API must stay responsive), then swarm
//! events, then the timers. Nothing in it awaits anything slow: replies go to oneshot channels
//! whose receivers may have gone (ignored), and disk writes are a few hundred bytes.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm, gossipsub, identify, kad,
    multiaddr::Protocol,
    ping, request_response,
    swarm::{DialError, SwarmEvent, dial_opts::DialOpts, dial_opts::PeerCondition},
};
use mycel_protocol::{
    Advert, Announcement, Departure, EnvelopeError, Signed, Suspicion,
    api::MemberStatus,
    codec::CodecError,
    membership::{
        MAX_ANNOUNCEMENT_BYTES, MAX_ANNOUNCEMENT_FRAME_BYTES, MAX_MEMBER_SYNC_ENTRIES,
        MemberSyncEntry, MemberSyncRequest, MemberSyncResponse,
    },
    names,
    ticket::JoinTicket,
};
use prometheus_client::registry::Registry;
use tokio::{
    sync::{mpsc, oneshot},
    time::MissedTickBehavior,
};

use crate::{
    LocalNode, MeshConfig, MeshError,
    behaviour::{Behaviour, BehaviourEvent, membership_topic},
    handle::{Command, Mesh, MeshHandle},
    membership::{Membership, Observed, Suspected},
    metrics::{DropReason, MeshMetrics},
    peer_store::{self, RememberedPeer},
    transport,
};

/// How often liveness is re-judged: the resolution of suspect/dead transitions.
const JUDGE_INTERVAL: Duration = Duration::from_millis(250);
/// How often the node tops up its connections and, when alone, redials its bootstrap peers.
const MAINTAIN_INTERVAL: Duration = Duration::from_secs(2);
/// How often remembered peers are written, when they changed: soon enough that a node killed
/// shortly after joining, or after a peer moved to a new address, still finds its way back (a
/// restarted node with only stale addresses is alone for good).
const REMEMBER_INTERVAL: Duration = Duration::from_secs(1);
/// How often a silent (dead, not departed) member is redialled: what heals a partition.
const REDIAL_SILENT_EVERY: Duration = Duration::from_secs(10);
/// How many silent members one maintenance round redials.
const REDIAL_SILENT_PER_ROUND: usize = 2;
/// How long a forger stays blocked.
const BLOCK_FOR: Duration = Duration::from_secs(600);
/// A gossiped announcement this far behind what we hold is a replay, not reordering.
const REPLAY_AFTER_MS: u64 = 10_000;
/// The shortest time between two refutations (or two partition-heal announcements) of this node.
const ANNOUNCE_AGAIN_AFTER: Duration = Duration::from_millis(500);
/// How long a leaving node keeps its connections open so its departure notice gets out.
const DEPARTURE_FLUSH: Duration = Duration::from_millis(300);
/// After a wildcard listener's first address: how long to wait for each further interface's...
const WILDCARD_QUIET: Duration = Duration::from_millis(25);
/// ...and at most, in all.
const WILDCARD_SETTLE: Duration = Duration::from_millis(250);

/// Starts the mesh: binds every listen address, then runs the actor on its own task.
pub async fn start(
    config: MeshConfig,
    local: LocalNode,
    registry: &mut Registry,
) -> Result<Mesh, MeshError> {
    if config.secret.is_some()
        && let Some(addr) = config.listen.iter().find(|a| transport::is_quic(a))
    {
        return Err(MeshError::QuicInPrivateMesh { addr: addr.clone() });
    }
    let metrics = MeshMetrics::register(registry);
    let mut swarm = transport::build_swarm(&config, registry, metrics.refusals())?;
    let peer_id = *swarm.local_peer_id();
    let streams = swarm.behaviour().streams.new_control();

    let listen_addrs = listen(&mut swarm, &config).await?;
    let (answers, answers_rx) = mpsc::channel(blobs::ANSWER_QUEUE);
    let (placement_answers, placement_answers_rx) = mpsc::channel(blobs::ANSWER_QUEUE);
    let mut actor = Actor {
        blob_traffic: Default::default(),
        placement_traffic: Default::default(),
        placement_answers,
        dht: Default::default(),
        answers,
        membership: Membership::new(peer_id, config.timing),
        local,
        listen_addrs: listen_addrs.clone(),
        seq: 0,
        local_envelope: None,
        synced: HashSet::new(),
        blocked_until: HashMap::new(),
        join_peers: join_peers(&config),
        redialled_at: HashMap::new(),
        redialling: HashSet::new(),
        accused_at: HashMap::new(),
        last_pong: HashMap::new(),
        judged_at: Instant::now(),
        announced_at: None,
        announce_pending: false,
        remembered_dirty: false,
        remembered_once: false,
        hinted_private: false,
        metrics,
        config,
        swarm,
    };
    for (peer, addrs) in actor.join_peers.clone() {
        actor.add_known_addresses(peer, &addrs);
    }
    actor.dial_join_peers();

    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(actor.run(rx, answers_rx, placement_answers_rx));
    let listen_addrs = listen_addrs
        .into_iter()
        .map(|a| a.with(Protocol::P2p(peer_id)))
        .collect();
    Ok(Mesh {
        handle: MeshHandle {
            peer_id,
            commands: tx,
            streams,
        },
        listen_addrs,
        task,
    })
}

/// Binds every listen address and waits until each has reported where it listens.
async fn listen(
    swarm: &mut Swarm<Behaviour>,
    config: &MeshConfig,
) -> Result<Vec<Multiaddr>, MeshError> {
    let mut pending = HashMap::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| MeshError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        pending.insert(id, addr.clone());
    }
    let mut addrs = Vec::new();
    let deadline = tokio::time::sleep(config.listen_timeout);
    tokio::pin!(deadline);
    while !pending.is_empty() {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    pending.remove(&listener_id);
                    addrs.push(address);
                }
                SwarmEvent::ListenerError { listener_id, error } => {
                    if let Some(addr) = pending.remove(&listener_id) {
                        return Err(MeshError::Listen { addr, reason: error.to_string() });
                    }
                }
                SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                    if let Some(addr) = pending.remove(&listener_id) {
                        let reason = reason.err().map_or("closed".to_string(), |e| e.to_string());
                        return Err(MeshError::Listen { addr, reason });
                    }
                }
                _ => {}
            },
            _ = &mut deadline => {
                let addr = pending.into_values().next().expect("pending is not empty");
                return Err(MeshError::Listen { addr, reason: "no address reported in time".into() });
            }
        }
    }
    // A wildcard address reports one address per interface, an event each: take those that come
    // at once too, so node.json and its join ticket name every interface from the start (later
    // ones are announced as they come).
    if config.listen.iter().any(is_wildcard) {
        let settle = tokio::time::sleep(WILDCARD_SETTLE);
        tokio::pin!(settle);
        loop {
            tokio::select! {
                event = tokio::time::timeout(WILDCARD_QUIET, swarm.select_next_some()) => match event {
                    Ok(SwarmEvent::NewListenAddr { address, .. }) => addrs.push(address),
                    Ok(_) => {}
                    Err(_) => break,
                },
                _ = &mut settle => break,
            }
        }
    }
    Ok(addrs)
}

/// Whether `addr` listens on every interface (`0.0.0.0`, `::`).
fn is_wildcard(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

/// The peers to dial at start: the bootstrap peers (one entry per peer, with all its addresses,
/// so one unreachable address does not hold up the others), and the remembered ones.
fn join_peers(config: &MeshConfig) -> Vec<(Option<PeerId>, Vec<Multiaddr>)> {
    let mut peers: Vec<(Option<PeerId>, Vec<Multiaddr>)> = Vec::new();
    for addr in &config.bootstrap {
        let peer = peer_of(addr);
        match peers.iter_mut().find(|(p, _)| peer.is_some() && *p == peer) {
            Some((_, addrs)) => addrs.push(addr.clone()),
            None => peers.push((peer, vec![addr.clone()])),
        }
    }
    if let Some(path) = &config.peer_store {
        let local = config.keypair.public().to_peer_id();
        peers.extend(
            peer_store::load(path)
                .into_iter()
                .filter(|(peer, _)| *peer != local)
                .map(|(peer, addrs)| (Some(peer), addrs)),
        );
    }
    peers
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

mod blobs;
mod connections;
mod dht;
mod gossip;
mod placement;
mod traffic;

struct Actor {
    blob_traffic: traffic::Traffic<mycel_protocol::blob::BlobResponse>,
    dht: dht::DhtQueries,
    /// Answers to inbound blob requests, from the tasks that made them.
    answers: mpsc::Sender<(u64, mycel_protocol::blob::BlobResponse)>,
    placement_traffic: traffic::Traffic<crate::PlacementFrame>,
    /// Answers to inbound placement requests (`None`: refused).
    placement_answers: mpsc::Sender<(u64, Option<crate::PlacementFrame>)>,
    swarm: Swarm<Behaviour>,
    config: MeshConfig,
    membership: Membership,
    local: LocalNode,
    listen_addrs: Vec<Multiaddr>,
    /// The sequence number of this node's last announcement.
    seq: u64,
    local_envelope: Option<Signed<Announcement>>,
    /// Peers asked for their member list on this connection.
    synced: HashSet<PeerId>,
    blocked_until: HashMap<PeerId, Instant>,
    join_peers: Vec<(Option<PeerId>, Vec<Multiaddr>)>,
    /// When each silent member was last redialled.
    redialled_at: HashMap<PeerId, Instant>,
    /// Members whose last connection broke and that are being redialled: if that fails, they
    /// are accused.
    redialling: HashSet<PeerId>,
    /// When this node last accused each member, so one failure makes one suspicion.
    accused_at: HashMap<PeerId, Instant>,
    /// When each connected peer last answered a ping (or connected).
    last_pong: HashMap<PeerId, Instant>,
    /// When the failure detector last ran: a long gap means this process was stalled (stopped,
    /// suspended, starved), and silence during the gap says nothing about the peers.
    judged_at: Instant,
    /// When this node last announced itself.
    announced_at: Option<Instant>,
    /// An announcement is due as soon as the last one is old enough.
    announce_pending: bool,
    remembered_dirty: bool,
    /// Whether this process has written the peer store yet: the first member it meets is written
    /// at once, so a node killed right after joining still finds its way back.
    remembered_once: bool,
    /// Whether this (open) node said that its join peer looks like a private mesh's.
    hinted_private: bool,
    metrics: MeshMetrics,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut answers: mpsc::Receiver<(u64, mycel_protocol::blob::BlobResponse)>,
        mut placement_answers: mpsc::Receiver<(u64, Option<crate::PlacementFrame>)>,
    ) {
        let _range_streams = self.accept_blob_streams();
        let mut advert_tick = tokio::time::interval(self.config.timing.advert_interval);
        let mut judge_tick = tokio::time::interval(JUDGE_INTERVAL);
        let mut maintain_tick = tokio::time::interval(MAINTAIN_INTERVAL);
        let mut remember_tick = tokio::time::interval(REMEMBER_INTERVAL);
        for tick in [
            &mut advert_tick,
            &mut judge_tick,
            &mut maintain_tick,
            &mut remember_tick,
        ] {
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::Leave(done)) => {
                        self.leave().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => self.on_command(command),
                    // Every handle is gone: the node is shutting down without a goodbye.
                    None => return,
                },
                Some((id, response)) = answers.recv() => self.answer_blob_request(id, response),
                Some((id, answer)) = placement_answers.recv() => {
                    self.answer_placement_request(id, answer)
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = advert_tick.tick() => self.announce(),
                _ = judge_tick.tick() => self.judge(),
                _ = maintain_tick.tick() => self.maintain_connections(),
                _ = remember_tick.tick() => self.remember_peers(false),
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Nodes(reply) => {
                let nodes = self.membership.nodes(Instant::now(), &self.local_advert());
                let _ = reply.send(nodes);
            }
            Command::JoinTicket(reply) => {
                let _ = reply.send(self.join_ticket());
            }
            Command::StartProviding(key) => self.start_providing(key),
            Command::StopProviding(key) => self.stop_providing(key),
            Command::FindProviders { key, reply } => self.find_providers(key, reply),
            Command::PutRecord {
                key,
                value,
                lifetime,
            } => self.put_record(key, value, lifetime),
            Command::RemoveRecord(key) => self.remove_record(key),
            Command::GetRecord { key, reply } => self.get_record(key, reply),
            Command::ClosestPeers { key, reply } => self.closest_peers(key, reply),
            Command::BlobRequest {
                peer,
                request,
                reply,
            } => self.send_blob_request(peer, request, reply),
            Command::PlacementRequest { peer, frame, reply } => {
                self.send_placement_request(peer, frame, reply)
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().count());
            }
            Command::UpdateLocal(local) => {
                let announce_now = local.name != self.local.name
                    || local.labels != self.local.labels
                    || local.runtimes != self.local.runtimes;
                self.local = local;
                if announce_now {
                    self.announce();
                }
            }
            Command::Leave(_) => unreachable!("handled in the loop"),
        }
    }

    /// Wall-clock milliseconds, strictly increasing within this run (see `membership` docs).
    fn next_seq(&mut self) -> u64 {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.seq = now_ms.max(self.seq + 1);
        self.seq
    }

    fn local_advert(&self) -> Advert {
        Advert {
            seq: self.seq,
            name: self.local.name.clone(),
            addrs: self.listen_addrs.iter().map(|a| a.to_string()).collect(),
            labels: self.local.labels.clone(),
            runtimes: self.local.runtimes.clone(),
            resources: self.local.resources.clone(),
            policy: self.local.policy.clone(),
        }
    }

    fn announce(&mut self) {
        self.next_seq();
        let announcement = Announcement::Advert(self.local_advert());
        if self.publish(announcement) {
            self.announced_at = Some(Instant::now());
        }
    }

    /// Announces at once, or, when this node just did, as soon as `ANNOUNCE_AGAIN_AFTER` has
    /// passed: for new subscribers, refuting a suspicion, or telling peers across a healed
    /// partition that it is alive. A burst of reasons makes one announcement.
    fn announce_soon(&mut self) {
        if self
            .announced_at
            .is_none_or(|at| at.elapsed() >= ANNOUNCE_AGAIN_AFTER)
        {
            self.announce_pending = false;
            self.announce();
        } else {
            self.announce_pending = true;
        }
    }

    /// Signs and publishes; true when at least one peer was sent it.
    fn publish(&mut self, announcement: Announcement) -> bool {
        let envelope = match Signed::sign(&self.config.keypair, &announcement) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::error!(error = %e, "signing this node's announcement");
                return false;
            }
        };
        let frame = match mycel_protocol::encode(&envelope) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::error!(error = %e, "encoding this node's announcement");
                return false;
            }
        };
        if !matches!(announcement, Announcement::Suspicion(_)) {
            self.local_envelope = Some(envelope);
        }
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(membership_topic(), frame)
        {
            Ok(_) => {
                self.metrics.adverts_published.inc();
                true
            }
            // Alone in the mesh, or not yet connected: nothing to tell anybody.
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => false,
            Err(e) => {
                tracing::debug!(error = %e, "publishing announcement");
                false
            }
        }
    }

    fn judge(&mut self) {
        let now = Instant::now();
        for change in self.membership.tick(now) {
            tracing::info!(peer = %change.peer, name = %change.name, from = change.from.as_str(), to = change.to.as_str(), "member status changed");
            self.remembered_dirty = true;
        }
        for (status, count) in self.membership.counts() {
            self.metrics.set_members(status, count);
        }
        let stalled =
            now.duration_since(self.judged_at) > JUDGE_INTERVAL + self.config.timing.ping_timeout;
        self.judged_at = now;
        if stalled {
            tracing::warn!("this node was stalled; not blaming its peers for the silence");
            for at in self.last_pong.values_mut() {
                *at = now;
            }
        }
        self.check_pongs(now);
        if self.announce_pending {
            self.announce_soon();
        }
        let suspicion_timeout = self.config.timing.suspicion_timeout;
        self.accused_at
            .retain(|_, at| now.duration_since(*at) < suspicion_timeout);
        let expired: Vec<PeerId> = self
            .blocked_until
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in expired {
            self.blocked_until.remove(&peer);
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let acceptance = self.on_gossip(propagation_source, &message);
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            // A new listener: the first announcement a joining node makes reaches nobody, and
            // adverts are rare, so each new subscriber hears this node at once.
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                ..
            })) => self.announce_soon(),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identified(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::MemberSync(event)) => self.on_member_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Blobs(event)) => self.on_blob_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Placement(event)) => {
                self.on_placement_event(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(_),
                ..
            })) => {
                self.last_pong.insert(peer, Instant::now());
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                tracing::debug!(peer = %peer_id, "connected");
                self.last_pong.insert(peer_id, Instant::now());
                self.redialling.remove(&peer_id);
                // A member we took for dead is back (a healed partition): it likely took us for
                // dead too, so tell everyone we are alive.
                if matches!(
                    self.membership.status(&peer_id),
                    Some(MemberStatus::Dead | MemberStatus::Suspect)
                ) {
                    self.announce_soon();
                }
                self.update_connected();
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.synced.remove(&peer_id);
                    self.last_pong.remove(&peer_id);
                    self.redial(peer_id);
                }
                self.update_connected();
            }
            SwarmEvent::NewListenAddr { address, .. } if !self.listen_addrs.contains(&address) => {
                tracing::info!(%address, "listening on a new address");
                self.listen_addrs.push(address);
                self.announce();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
                self.announce();
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. }
                if !matches!(error, DialError::DialPeerConditionFalse(_)) =>
            {
                tracing::debug!(peer = ?peer_id, error = %error, "dial failed");
                self.hint_private_mesh(peer_id, &error);
                if let Some(peer) = peer_id.filter(|p| self.redialling.remove(p)) {
                    self.accuse(peer, "its connection broke and redialling failed");
                }
            }
            _ => {}
        }
    }

    fn update_connected(&mut self) {
        self.metrics
            .peers_connected
            .set(self.swarm.connected_peers().count() as i64);
    }

    /// Announces the departure, gives the notice a moment to leave, and remembers the peers.
    async fn leave(&mut self) {
        self.remember_peers(true);
        let seq = self.next_seq();
        if !self.publish(Announcement::Departure(Departure { seq })) {
            tracing::debug!("nobody to tell about the departure");
        }
        let flush = tokio::time::sleep(DEPARTURE_FLUSH);
        tokio::pin!(flush);
        loop {
            tokio::select! {
                _ = &mut flush => break,
                event = self.swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message { propagation_source, message_id, .. })) = event {
                        // Leaving: forward nothing more.
                        self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            gossipsub::MessageAcceptance::Ignore,
                        );
                    }
                }
            }
        }
        tracing::info!("left the mesh");
    }
}

pub(super) fn parse_addrs(addrs: &[String]) -> Vec<Multiaddr> {
    addrs.iter().filter_map(|a| a.parse().ok()).collect()
}

pub(super) fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}
