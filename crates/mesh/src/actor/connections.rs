//! Keeping the node connected: joining, topping up connections, redialling, noticing neighbours
//! that stopped answering, remembering peers across restarts.

use super::*;

impl Actor {
    /// Accuses the neighbours that stopped answering pings, and drops their connections (a later
    /// redial will tell whether they are really gone). libp2p's ping reports a failure only after
    /// a second one, which with a frozen peer takes a whole stream-negotiation timeout, so this
    /// watches the answers instead.
    pub(super) fn check_pongs(&mut self, now: Instant) {
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
    pub(super) fn redial(&mut self, peer: PeerId) {
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

    pub(super) fn add_known_addresses(&mut self, peer: Option<PeerId>, addrs: &[Multiaddr]) {
        let Some(peer) = peer else { return };
        for addr in addrs {
            let addr = strip_p2p(addr);
            self.swarm.behaviour_mut().kad.add_address(&peer, addr);
        }
    }

    pub(super) fn dial_join_peers(&mut self) {
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
    pub(super) fn maintain_connections(&mut self) {
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
    pub(super) fn remember_peers(&mut self, force: bool) {
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
}
