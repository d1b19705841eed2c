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
    noise, ping, request_response,
    swarm::{DialError, SwarmEvent, dial_opts::DialOpts, dial_opts::PeerCondition},
    tcp, yamux,
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
};
use prometheus_client::registry::Registry;
use tokio::{sync::mpsc, time::MissedTickBehavior};

use crate::{
    LocalNode, MeshConfig, MeshError,
    behaviour::{Behaviour, BehaviourEvent, membership_topic},
    handle::{Command, Mesh, MeshHandle},
    membership::{Membership, Observed, Suspected},
    metrics::{DropReason, MeshMetrics},
    peer_store::{self, RememberedPeer},
};

/// How often liveness is re-judged: the resolution of suspect/dead transitions.
const JUDGE_INTERVAL: Duration = Duration::from_millis(250);
/// How often the node tops up its connections and, when alone, redials its bootstrap peers.
const MAINTAIN_INTERVAL: Duration = Duration::from_secs(2);
/// How often remembered peers are written, when they changed.
const REMEMBER_INTERVAL: Duration = Duration::from_secs(30);
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

/// Starts the mesh: binds every listen address, then runs the actor on its own task.
pub async fn start(
    config: MeshConfig,
    local: LocalNode,
    registry: &mut Registry,
) -> Result<Mesh, MeshError> {
    let metrics = MeshMetrics::register(registry);
    let mut swarm = build_swarm(&config, registry)?;
    let peer_id = *swarm.local_peer_id();

    let listen_addrs = listen(&mut swarm, &config).await?;
    let mut actor = Actor {
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
        metrics,
        config,
        swarm,
    };
    for (peer, addrs) in actor.join_peers.clone() {
        actor.add_known_addresses(peer, &addrs);
    }
    actor.dial_join_peers();

    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(actor.run(rx));
    let listen_addrs = listen_addrs
        .into_iter()
        .map(|a| a.with(Protocol::P2p(peer_id)))
        .collect();
    Ok(Mesh {
        handle: MeshHandle {
            peer_id,
            commands: tx,
        },
        listen_addrs,
        task,
    })
}

fn build_swarm(
    config: &MeshConfig,
    registry: &mut Registry,
) -> Result<Swarm<Behaviour>, MeshError> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| MeshError::Transport(e.to_string()))?
        .with_quic()
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key| Behaviour::new(key, &config.timing))
        .map_err(|e| MeshError::Behaviour(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
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
    Ok(addrs)
}

/// The peers to dial at start: the bootstrap peers, and the remembered ones.
fn join_peers(config: &MeshConfig) -> Vec<(Option<PeerId>, Vec<Multiaddr>)> {
    let mut peers: Vec<(Option<PeerId>, Vec<Multiaddr>)> = config
        .bootstrap
        .iter()
        .map(|addr| (peer_of(addr), vec![addr.clone()]))
        .collect();
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

struct Actor {
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
    metrics: MeshMetrics,
}

impl Actor {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
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

    /// Publishes a suspicion that `peer` stopped answering, and applies it here (gossip does not
    /// deliver a node's own messages back to it). One per failure: not again within the
    /// suspicion timeout.
    fn accuse(&mut self, peer: PeerId, why: &str) {
        let now = Instant::now();
        let Some(seq) = self.membership.seq(&peer) else {
            return;
        };
        if self.membership.status(&peer) == Some(MemberStatus::Dead)
            || self
                .accused_at
                .get(&peer)
                .is_some_and(|at| now.duration_since(*at) < self.config.timing.suspicion_timeout)
        {
            return;
        }
        tracing::info!(%peer, why, "suspecting a member");
        self.accused_at.insert(peer, now);
        self.membership.suspect(now, peer, seq);
        self.publish(Announcement::Suspicion(Suspicion::new(&peer, seq)));
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
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, ..
            })) => {
                tracing::trace!(%peer, "kademlia routing updated");
            }
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

    /// Checks one gossiped announcement; the answer tells gossipsub whether to forward it.
    fn on_gossip(
        &mut self,
        from: PeerId,
        message: &gossipsub::Message,
    ) -> gossipsub::MessageAcceptance {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        if message.topic != membership_topic().hash() {
            return Reject;
        }
        let verified = match verify_frame(&message.data) {
            Ok(verified) => verified,
            Err(reason) => return self.reject(from, reason),
        };
        let (signer, announcement, envelope) = verified;
        // A node only publishes its own announcements; anything else on the topic is a forgery.
        if message.source != Some(signer) {
            return self.reject(from, DropReason::Forged);
        }
        if let Announcement::Suspicion(suspicion) = &announcement {
            return self.on_suspicion(signer, suspicion);
        }
        match self.observe(signer, &announcement, &envelope, Duration::ZERO) {
            Observed::Stale { behind_ms } => {
                self.metrics.dropped(DropReason::Stale);
                if behind_ms > REPLAY_AFTER_MS {
                    Reject
                } else {
                    Ignore
                }
            }
            _ => Accept,
        }
    }

    fn on_suspicion(
        &mut self,
        accuser: PeerId,
        suspicion: &Suspicion,
    ) -> gossipsub::MessageAcceptance {
        let Ok(suspect) = suspicion.suspect_id() else {
            return self.reject(accuser, DropReason::Invalid);
        };
        match self
            .membership
            .suspect(Instant::now(), suspect, suspicion.suspect_seq)
        {
            Suspected::Now => {
                tracing::info!(%suspect, %accuser, "member suspected by a neighbour");
                gossipsub::MessageAcceptance::Accept
            }
            Suspected::Me => {
                tracing::info!(%accuser, "suspected by a neighbour; refuting");
                self.announce_soon();
                gossipsub::MessageAcceptance::Accept
            }
            // Already known, or already refuted: nothing new to spread.
            Suspected::Nothing => gossipsub::MessageAcceptance::Ignore,
        }
    }

    /// Accuses the neighbours that stopped answering pings, and drops their connections (a later
    /// redial will tell whether they are really gone). libp2p's ping reports a failure only after
    /// a second one, which with a frozen peer takes a whole stream-negotiation timeout, so this
    /// watches the answers instead.
    fn check_pongs(&mut self, now: Instant) {
        let timing = self.config.timing;
        let silent_after = timing.ping_interval + timing.ping_timeout;
        let silent: Vec<PeerId> = self
            .last_pong
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= silent_after)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in silent {
            self.last_pong.remove(&peer);
            if self.membership.seq(&peer).is_some() {
                self.accuse(peer, "it stopped answering pings");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    /// Redials a member whose last connection just broke; if that fails, it gets accused.
    fn redial(&mut self, peer: PeerId) {
        let Some((_, addrs)) = self.membership.alive_or_suspect(&peer) else {
            return;
        };
        let addrs = parse_addrs(addrs);
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if self.swarm.dial(opts).is_ok() {
            self.redialling.insert(peer);
        }
    }

    fn reject(&mut self, from: PeerId, reason: DropReason) -> gossipsub::MessageAcceptance {
        self.metrics.dropped(reason);
        tracing::warn!(peer = %from, reason = reason.as_str(), "dropped an announcement");
        if reason == DropReason::Forged {
            self.block(from);
        }
        gossipsub::MessageAcceptance::Reject
    }

    /// Disconnects a peer that sent a forgery and refuses it for a while. Honest nodes check
    /// every announcement before forwarding it, so whoever hands us a forgery made it.
    fn block(&mut self, peer: PeerId) {
        tracing::warn!(%peer, "blocking a peer that sent a forged announcement");
        self.blocked_until.insert(peer, Instant::now() + BLOCK_FOR);
        self.swarm.behaviour_mut().blocked.block_peer(peer);
    }

    fn observe(
        &mut self,
        signer: PeerId,
        announcement: &Announcement,
        envelope: &Signed<Announcement>,
        age: Duration,
    ) -> Observed {
        let observed = self
            .membership
            .observe(Instant::now(), signer, announcement, envelope, age);
        match observed {
            Observed::Joined => {
                self.metrics.adverts_received.inc();
                self.remembered_dirty = true;
                if let Announcement::Advert(advert) = announcement {
                    tracing::info!(peer = %signer, name = %advert.name, "member joined");
                    let addrs = parse_addrs(&advert.addrs);
                    self.add_known_addresses(Some(signer), &addrs);
                }
            }
            Observed::Updated => {
                self.metrics.adverts_received.inc();
            }
            Observed::Departed => {
                self.metrics.adverts_received.inc();
                tracing::info!(peer = %signer, "member departed");
            }
            Observed::Stale { .. } | Observed::NotAboutSigner => {}
        }
        observed
    }

    fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
        let speaks = |name: &str| info.protocols.iter().any(|p| p.as_ref() == name);
        if speaks(names::KADEMLIA_PROTOCOL) {
            for addr in &info.listen_addrs {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
        }
        if speaks(names::MEMBER_SYNC_PROTOCOL) && self.synced.insert(peer) {
            self.swarm
                .behaviour_mut()
                .member_sync
                .send_request(&peer, MemberSyncRequest {});
        }
    }

    fn on_member_sync(
        &mut self,
        event: request_response::Event<MemberSyncRequest, MemberSyncResponse>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message: request_response::Message::Request { channel, .. },
                ..
            } => {
                let now = Instant::now();
                let mut members: Vec<MemberSyncEntry> = self
                    .local_envelope
                    .iter()
                    .map(|e| MemberSyncEntry {
                        announcement: e.clone(),
                        age_ms: 0,
                    })
                    .collect();
                members.extend(
                    self.membership
                        .entries(now)
                        .filter(|(e, _)| e.claimed_signer().ok() != Some(peer))
                        .take(MAX_MEMBER_SYNC_ENTRIES - 1)
                        .map(|(e, age)| MemberSyncEntry {
                            announcement: e.clone(),
                            age_ms: age.as_millis() as u64,
                        }),
                );
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .member_sync
                    .send_response(channel, MemberSyncResponse { members });
            }
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { response, .. },
                ..
            } => self.on_member_list(peer, response),
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "member sync failed");
                self.synced.remove(&peer);
            }
            _ => {}
        }
    }

    fn on_member_list(&mut self, from: PeerId, response: MemberSyncResponse) {
        let local = *self.membership.local();
        for entry in response.members.into_iter().take(MAX_MEMBER_SYNC_ENTRIES) {
            let (signer, announcement) = match entry.announcement.verify(MAX_ANNOUNCEMENT_BYTES) {
                Ok(v) => (v.signer, v.message),
                Err(e) => {
                    let reason = envelope_drop_reason(&e);
                    self.metrics.dropped(reason);
                    if reason == DropReason::Forged {
                        self.block(from);
                        return;
                    }
                    continue;
                }
            };
            if signer == local {
                continue;
            }
            if announcement.validate().is_err() {
                self.metrics.dropped(DropReason::Invalid);
                continue;
            }
            let age = Duration::from_millis(entry.age_ms);
            self.observe(signer, &announcement, &entry.announcement, age);
        }
    }

    fn add_known_addresses(&mut self, peer: Option<PeerId>, addrs: &[Multiaddr]) {
        let Some(peer) = peer else { return };
        for addr in addrs {
            let addr = strip_p2p(addr);
            self.swarm.behaviour_mut().kad.add_address(&peer, addr);
        }
    }

    fn dial_join_peers(&mut self) {
        for (peer, addrs) in self.join_peers.clone() {
            let opts = match peer {
                Some(peer) => DialOpts::peer_id(peer)
                    .addresses(addrs.iter().map(strip_p2p).collect())
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
                None => DialOpts::unknown_peer_id()
                    .address(addrs[0].clone())
                    .build(),
            };
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(error = %e, "dialing a join peer");
            }
        }
    }

    /// Keeps `target_peers` connections open by dialling alive members, so gossip never hangs
    /// on one link; redials the join peers while the node is alone, and a few silent members
    /// every round, so the two sides of a healed partition find each other again.
    fn maintain_connections(&mut self) {
        use rand::seq::SliceRandom;
        let connected: HashSet<PeerId> = self.swarm.connected_peers().copied().collect();
        if connected.is_empty() {
            self.dial_join_peers();
        }
        let dialable =
            |peer: &PeerId| !connected.contains(peer) && !self.blocked_until.contains_key(peer);
        let wanted = self.config.target_peers.saturating_sub(connected.len());
        let mut alive: Vec<(PeerId, Vec<Multiaddr>)> = self
            .membership
            .alive_peers()
            .filter(|(peer, _)| dialable(peer))
            .map(|(peer, addrs)| (*peer, parse_addrs(addrs)))
            .collect();
        // Random picks spread the connections: everyone dialling the same few would not.
        alive.shuffle(&mut rand::rng());
        alive.truncate(wanted);

        let now = Instant::now();
        let mut silent: Vec<(PeerId, Vec<Multiaddr>)> = self
            .membership
            .silent_peers()
            .filter(|(peer, _)| dialable(peer))
            .filter(|(peer, _)| {
                self.redialled_at
                    .get(*peer)
                    .is_none_or(|at| now.duration_since(*at) >= REDIAL_SILENT_EVERY)
            })
            .map(|(peer, addrs)| (*peer, parse_addrs(addrs)))
            .collect();
        silent.shuffle(&mut rand::rng());
        silent.truncate(REDIAL_SILENT_PER_ROUND);
        self.redialled_at
            .retain(|peer, _| self.membership.status(peer) == Some(MemberStatus::Dead));
        for (peer, _) in &silent {
            self.redialled_at.insert(*peer, now);
        }

        for (peer, addrs) in alive.into_iter().chain(silent) {
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, error = %e, "dialing a member");
            }
        }
    }

    /// Writes the alive members to the peer store (when they changed, or when `force`).
    fn remember_peers(&mut self, force: bool) {
        let Some(path) = self.config.peer_store.clone() else {
            return;
        };
        if !self.remembered_dirty && !force {
            return;
        }
        let peers: Vec<RememberedPeer> = self
            .membership
            .alive_peers()
            .filter(|(_, addrs)| !addrs.is_empty())
            .map(|(peer, addrs)| RememberedPeer {
                peer_id: peer.to_string(),
                addrs: addrs.to_vec(),
            })
            .collect();
        if peers.is_empty() && !force {
            return;
        }
        match peer_store::save(&path, peers) {
            Ok(()) => self.remembered_dirty = false,
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "remembering peers"),
        }
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

/// Decodes and verifies one announcement frame, or says why it must be dropped.
fn verify_frame(data: &[u8]) -> Result<(PeerId, Announcement, Signed<Announcement>), DropReason> {
    let envelope: Signed<Announcement> = mycel_protocol::decode(data, MAX_ANNOUNCEMENT_FRAME_BYTES)
        .map_err(|e| codec_drop_reason(&e))?;
    let verified = envelope
        .verify(MAX_ANNOUNCEMENT_BYTES)
        .map_err(|e| envelope_drop_reason(&e))?;
    verified
        .message
        .validate()
        .map_err(|_| DropReason::Invalid)?;
    Ok((verified.signer, verified.message, envelope))
}

fn codec_drop_reason(error: &CodecError) -> DropReason {
    match error {
        CodecError::TooLarge { .. } => DropReason::Oversized,
        _ => DropReason::Malformed,
    }
}

fn envelope_drop_reason(error: &EnvelopeError) -> DropReason {
    match error {
        EnvelopeError::BadSigner | EnvelopeError::BadSignature => DropReason::Forged,
        EnvelopeError::Payload(e) => codec_drop_reason(e),
        EnvelopeError::Signing(_) => DropReason::Malformed,
    }
}

fn parse_addrs(addrs: &[String]) -> Vec<Multiaddr> {
    addrs.iter().filter_map(|a| a.parse().ok()).collect()
}

fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}
