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

    /// A ticket to join through this node: its addresses (see [`ticket_addrs`]) and, in a
    /// private mesh, the secret.
    pub(super) fn join_ticket(&self) -> JoinTicket {
        JoinTicket::new(
            *self.swarm.local_peer_id(),
            &ticket_addrs(&self.listen_addrs),
            self.config.secret.clone(),
        )
    }

    /// An open node whose join peer fails the handshake while it is alone is most likely
    /// knocking on a private mesh: says so once, at info (dial failures are only debug).
    pub(super) fn hint_private_mesh(&mut self, peer: Option<PeerId>, error: &DialError) {
        if self.config.secret.is_some()
            || self.hinted_private
            || self.swarm.connected_peers().next().is_some()
        {
            return;
        }
        let Some(peer) = peer.filter(|p| self.join_peers.iter().any(|(j, _)| *j == Some(*p)))
        else {
            return;
        };
        let DialError::Transport(errors) = error else {
            return;
        };
        // The reason is deep in each error's chain of sources.
        let handshake_failed = |e: &dyn std::error::Error| {
            std::iter::successors(Some(e), |e| e.source())
                .any(|e| e.to_string().contains("Handshake failed"))
        };
        if errors.iter().any(|(_, e)| handshake_failed(e)) {
            self.hinted_private = true;
            tracing::info!(%peer, "could not join: the peer failed the handshake; if its mesh is private, join it with a ticket (mycel up --join TICKET, from `mycel join-ticket` or node.json's \"join\" on a member)");
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
            Ok(()) => {
                self.remembered_dirty = false;
                self.remembered_once = true;
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "remembering peers"),
        }
    }
}

/// The addresses a join ticket names: those another machine may reach first, loopback last (it
/// only helps on this machine), and never a wildcard or an IPv6 link-local address (which needs
/// an interface name to be dialled).
pub(super) fn ticket_addrs(listen: &[Multiaddr]) -> Vec<Multiaddr> {
    let ip_of = |addr: &Multiaddr| {
        addr.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(std::net::IpAddr::from(ip)),
            Protocol::Ip6(ip) => Some(std::net::IpAddr::from(ip)),
            _ => None,
        })
    };
    let mut addrs: Vec<Multiaddr> = listen
        .iter()
        .filter(|a| match ip_of(a) {
            Some(std::net::IpAddr::V6(ip)) => !ip.is_unspecified() && !ip.is_unicast_link_local(),
            Some(ip) => !ip.is_unspecified(),
            None => true,
        })
        .cloned()
        .collect();
    addrs.sort_by_key(|a| ip_of(a).is_some_and(|ip| ip.is_loopback()));
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_name_reachable_addresses_first() {
        let addrs: Vec<Multiaddr> = [
            "/ip4/127.0.0.1/tcp/7400",
            "/ip4/192.0.2.10/tcp/7400",
            "/ip6/fe80::1/tcp/7400",
            "/ip4/0.0.0.0/tcp/7400",
            "/ip6/::1/tcp/7400",
            "/ip6/2001:db8::1/tcp/7400",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let picked: Vec<String> = ticket_addrs(&addrs).iter().map(|a| a.to_string()).collect();
        assert_eq!(
            picked,
            [
                "/ip4/192.0.2.10/tcp/7400",
                "/ip6/2001:db8::1/tcp/7400",
                "/ip4/127.0.0.1/tcp/7400",
                "/ip6/::1/tcp/7400",
            ]
        );
    }
}
