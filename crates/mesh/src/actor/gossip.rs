//! What arrives from peers: announcements and suspicions on the gossip topic, member lists,
//! identify info; what is checked, kept, forwarded or punished.

use super::*;

impl Actor {
    /// Publishes a suspicion that `peer` stopped answering, and applies it here (gossip does not
    /// deliver a node's own messages back to it). One per failure: not again within the
    /// suspicion timeout.
    pub(super) fn accuse(&mut self, peer: PeerId, why: &str) {
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

    /// Checks one gossiped announcement; the answer tells gossipsub whether to forward it.
    pub(super) fn on_gossip(
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

    pub(super) fn on_suspicion(
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

    pub(super) fn reject(
        &mut self,
        from: PeerId,
        reason: DropReason,
    ) -> gossipsub::MessageAcceptance {
        self.metrics.dropped(reason);
        tracing::warn!(peer = %from, reason = reason.as_str(), "dropped an announcement");
        if reason == DropReason::Forged {
            self.block(from);
        }
        gossipsub::MessageAcceptance::Reject
    }

    /// Disconnects a peer that sent a forgery and refuses it for a while. Honest nodes check
    /// every announcement before forwarding it, so whoever hands us a forgery made it.
    pub(super) fn block(&mut self, peer: PeerId) {
        tracing::warn!(%peer, "blocking a peer that sent a forged announcement");
        self.blocked_until.insert(peer, Instant::now() + BLOCK_FOR);
        self.swarm.behaviour_mut().blocked.block_peer(peer);
    }

    pub(super) fn observe(
        &mut self,
        signer: PeerId,
        announcement: &Announcement,
        envelope: &Signed<Announcement>,
        age: Duration,
    ) -> Observed {
        // A member that restarted on a new port is only reachable at its new address: learn it
        // from the advert (an existing connection may be gone, and Raft must reach it again).
        let addrs_before: Option<Vec<String>> = self
            .membership
            .alive_or_suspect(&signer)
            .map(|(_, addrs)| addrs.to_vec());
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
                if !self.remembered_once {
                    self.remember_peers(false);
                }
            }
            Observed::Updated => {
                self.metrics.adverts_received.inc();
                if let Announcement::Advert(advert) = announcement
                    && addrs_before.as_deref() != Some(&advert.addrs[..])
                {
                    let addrs = parse_addrs(&advert.addrs);
                    self.add_known_addresses(Some(signer), &addrs);
                    self.remembered_dirty = true;
                }
            }
            Observed::Departed => {
                self.metrics.adverts_received.inc();
                tracing::info!(peer = %signer, "member departed");
            }
            Observed::Stale { .. } | Observed::NotAboutSigner => {}
        }
        observed
    }

    pub(super) fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
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

    pub(super) fn on_member_sync(
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

    pub(super) fn on_member_list(&mut self, from: PeerId, response: MemberSyncResponse) {
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
