//! The membership view and its failure detector: a pure state machine.
//!
//! It owns what this node believes about every other node: each member's latest signed
//! announcement, when it was last heard from, and its status. It does no I/O and reads no clock:
//! callers pass `now`, so tests and simulations drive time themselves.
//!
//! Liveness works like SWIM's suspicion mechanism, with signed messages:
//! - a node's neighbours notice first (a broken connection that cannot be redialled, or pings
//!   that time out) and publish a signed suspicion; every receiver marks the suspect `suspect`;
//! - the suspect, if it is alive, refutes by announcing a newer advert;
//! - a suspect that has not refuted within `suspicion_timeout` is `dead`;
//! - as a backstop, a member silent for `suspect_after` (several advert intervals) turns suspect
//!   by itself, and dies the same way;
//! - a member that announced its departure is dead at once.
//!
//! So a node does not need to hear from every other node every second: adverts can be rare
//! (resources change slowly), and detection costs each node a few pings to its neighbours,
//! whatever the size of the mesh. Dead members are forgotten after `forget_after`.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::PeerId;
use mycel_protocol::{
    Advert, Announcement, Signed,
    api::{MemberStatus, NodeInfo, RaftRole},
};

/// How fast the failure detector judges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How often a node re-announces its advert (it also does on every change).
    pub advert_interval: Duration,
    /// Silence after which a member turns suspect without anybody accusing it.
    pub suspect_after: Duration,
    /// How long a suspect has to refute before it is declared dead.
    pub suspicion_timeout: Duration,
    /// How often a node pings each neighbour, and how long it waits for the answer.
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub forget_after: Duration,
}

impl Default for Timing {
    /// A killed node is suspect as soon as a neighbour fails to redial it and dead 2.5 s later; a
    /// frozen one turns suspect once it has missed pongs for a ping interval plus timeout (4 s).
    /// Pings run on every connection, so their interval is most of an idle node's CPU: 2 s keeps
    /// a node of a 20-node mesh under 1% of a core.
    fn default() -> Self {
        Self {
            advert_interval: Duration::from_secs(5),
            suspect_after: Duration::from_secs(16),
            suspicion_timeout: Duration::from_millis(2500),
            ping_interval: Duration::from_secs(2),
            ping_timeout: Duration::from_secs(2),
            forget_after: Duration::from_secs(600),
        }
    }
}

/// What happened to an announcement handed to [`Membership::observe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// A member we did not know.
    Joined,
    /// Newer news of a known member.
    Updated,
    /// The member announced its departure.
    Departed,
    /// Not newer than what we hold: dropped.
    Stale { behind_ms: u64 },
    /// A suspicion: handled by [`Membership::suspect`], not here.
    NotAboutSigner,
}

/// What a suspicion handed to [`Membership::suspect`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suspected {
    /// The member is now suspect.
    Now,
    /// It was suspect already, dead, unknown, or has refuted this suspicion: nothing changed.
    Nothing,
    /// The suspicion is about this node: it must refute by announcing itself.
    Me,
}

/// A change of a member's status, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub peer: PeerId,
    pub name: String,
    pub from: MemberStatus,
    pub to: MemberStatus,
}

#[derive(Clone, Debug)]
struct Member {
    /// The latest advert (kept when a departure follows, so the dead entry still has a name).
    advert: Option<Advert>,
    latest: Signed<Announcement>,
    seq: u64,
    last_seen: Instant,
    /// When a neighbour's suspicion arrived, if one is pending.
    suspected_at: Option<Instant>,
    /// Set when a suspicion (or silence) ran out; cleared only by newer news.
    declared_dead: bool,
    status: MemberStatus,
    departed: bool,
}

/// This node's view of the mesh.
#[derive(Debug)]
pub struct Membership {
    local: PeerId,
    timing: Timing,
    members: HashMap<PeerId, Member>,
    /// Status changes not yet handed out by [`Membership::tick`].
    changes: Vec<StatusChange>,
}

impl Membership {
    pub fn new(local: PeerId, timing: Timing) -> Self {
        Self {
            local,
            timing,
            members: HashMap::new(),
            changes: Vec::new(),
        }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Takes a verified announcement by `signer`, heard `age` ago (zero when it came straight off
    /// the gossip topic, the relaying node's own age when it came through member sync).
    pub fn observe(
        &mut self,
        now: Instant,
        signer: PeerId,
        announcement: &Announcement,
        envelope: &Signed<Announcement>,
        age: Duration,
    ) -> Observed {
        let heard_at = now.checked_sub(age).unwrap_or(now);
        let (seq, departed, advert) = match announcement {
            Announcement::Advert(advert) => (advert.seq, false, Some(advert.clone())),
            Announcement::Departure(departure) => (departure.seq, true, None),
            Announcement::Suspicion(_) => return Observed::NotAboutSigner,
        };
        let Some(member) = self.members.get_mut(&signer) else {
            self.members.insert(
                signer,
                Member {
                    advert,
                    latest: envelope.clone(),
                    seq,
                    last_seen: heard_at,
                    suspected_at: None,
                    declared_dead: false,
                    status: if departed {
                        MemberStatus::Dead
                    } else {
                        MemberStatus::Alive
                    },
                    departed,
                },
            );
            self.judge(now);
            return if departed {
                Observed::Departed
            } else {
                Observed::Joined
            };
        };
        if seq <= member.seq {
            return Observed::Stale {
                behind_ms: member.seq - seq,
            };
        }
        member.seq = seq;
        member.latest = envelope.clone();
        member.last_seen = member.last_seen.max(heard_at);
        // Newer news refutes any suspicion and revives a member declared dead.
        member.suspected_at = None;
        member.declared_dead = false;
        member.departed = departed;
        if advert.is_some() {
            member.advert = advert;
        }
        let observed = if departed {
            Observed::Departed
        } else {
            Observed::Updated
        };
        self.judge(now);
        observed
    }

    /// Takes a verified suspicion that `suspect`, last known at `suspect_seq`, stopped answering.
    pub fn suspect(&mut self, now: Instant, suspect: PeerId, suspect_seq: u64) -> Suspected {
        if suspect == self.local {
            return Suspected::Me;
        }
        let Some(member) = self.members.get_mut(&suspect) else {
            return Suspected::Nothing;
        };
        if member.seq > suspect_seq
            || member.suspected_at.is_some()
            || member.status == MemberStatus::Dead
        {
            return Suspected::Nothing;
        }
        member.suspected_at = Some(now);
        self.judge(now);
        Suspected::Now
    }

    /// Re-judges every member against the clock and forgets long-dead ones. Returns the status
    /// changes since the last tick.
    pub fn tick(&mut self, now: Instant) -> Vec<StatusChange> {
        self.judge(now);
        let changes = std::mem::take(&mut self.changes);
        let forget_after =
            self.timing.suspect_after + self.timing.suspicion_timeout + self.timing.forget_after;
        self.members
            .retain(|_, m| now.saturating_duration_since(m.last_seen) < forget_after);
        changes
    }

    fn judge(&mut self, now: Instant) {
        let timing = self.timing;
        for (peer, member) in &mut self.members {
            let status = member.judged(now, &timing);
            member.declared_dead |= status == MemberStatus::Dead;
            if status != member.status {
                self.changes.push(StatusChange {
                    peer: *peer,
                    name: member.name().to_string(),
                    from: member.status,
                    to: status,
                });
                member.status = status;
            }
        }
    }

    /// The newest sequence number held for `peer`, for suspicions about it.
    pub fn seq(&self, peer: &PeerId) -> Option<u64> {
        self.members.get(peer).map(|m| m.seq)
    }

    pub fn status(&self, peer: &PeerId) -> Option<MemberStatus> {
        self.members.get(peer).map(|m| m.status)
    }

    /// Members other than this node, with their advertised addresses, that are alive.
    pub fn alive_peers(&self) -> impl Iterator<Item = (&PeerId, &[String])> {
        self.members
            .iter()
            .filter(|(_, m)| m.status == MemberStatus::Alive)
            .map(|(p, m)| (p, m.advert.as_ref().map_or(&[][..], |a| &a.addrs[..])))
    }

    /// A member's advertised addresses, if it is alive or suspect (not dead or departed).
    pub fn alive_or_suspect(&self, peer: &PeerId) -> Option<(&PeerId, &[String])> {
        let (peer, m) = self.members.get_key_value(peer)?;
        (m.status != MemberStatus::Dead)
            .then(|| (peer, m.advert.as_ref().map_or(&[][..], |a| &a.addrs[..])))
    }

    /// Members judged dead from silence (not departed), with their advertised addresses: the
    /// other side of a partition looks exactly like this, so they are worth redialling.
    pub fn silent_peers(&self) -> impl Iterator<Item = (&PeerId, &[String])> {
        self.members
            .iter()
            .filter(|(_, m)| m.status == MemberStatus::Dead && !m.departed)
            .map(|(p, m)| (p, m.advert.as_ref().map_or(&[][..], |a| &a.addrs[..])))
    }

    /// How many members have each status (this node not included).
    pub fn counts(&self) -> [(MemberStatus, usize); 3] {
        let count = |s| self.members.values().filter(|m| m.status == s).count();
        [
            (MemberStatus::Alive, count(MemberStatus::Alive)),
            (MemberStatus::Suspect, count(MemberStatus::Suspect)),
            (MemberStatus::Dead, count(MemberStatus::Dead)),
        ]
    }

    /// Every member's latest signed announcement and its age, for member sync.
    pub fn entries(&self, now: Instant) -> impl Iterator<Item = (&Signed<Announcement>, Duration)> {
        self.members
            .values()
            .map(move |m| (&m.latest, now.saturating_duration_since(m.last_seen)))
    }

    /// The view as the API shows it; `local` is this node's own advert.
    pub fn nodes(&self, now: Instant, local: &Advert) -> Vec<NodeInfo> {
        let mut nodes = vec![node_info(
            &self.local,
            Some(local),
            MemberStatus::Alive,
            Duration::ZERO,
            false,
            true,
        )];
        nodes.extend(self.members.iter().map(|(peer, m)| {
            node_info(
                peer,
                m.advert.as_ref(),
                m.status,
                now.saturating_duration_since(m.last_seen),
                m.departed,
                false,
            )
        }));
        nodes[1..].sort_by(|a, b| a.name.cmp(&b.name).then(a.peer_id.cmp(&b.peer_id)));
        nodes
    }

    pub fn local(&self) -> &PeerId {
        &self.local
    }
}

impl Member {
    /// Suspect from a pending suspicion or from long silence; dead when the suspicion outlived its
    /// timeout. Dead stays dead until newer news arrives (which clears `suspected_at`).
    fn judged(&self, now: Instant, timing: &Timing) -> MemberStatus {
        if self.departed || self.declared_dead {
            return MemberStatus::Dead;
        }
        let silent_since = self.last_seen + timing.suspect_after;
        let suspect_since = self
            .suspected_at
            .map_or(silent_since, |at| at.min(silent_since));
        if now < suspect_since {
            MemberStatus::Alive
        } else if now < suspect_since + timing.suspicion_timeout {
            MemberStatus::Suspect
        } else {
            MemberStatus::Dead
        }
    }

    fn name(&self) -> &str {
        self.advert.as_ref().map_or("", |a| a.name.as_str())
    }
}

fn node_info(
    peer: &PeerId,
    advert: Option<&Advert>,
    status: MemberStatus,
    silence: Duration,
    departed: bool,
    is_self: bool,
) -> NodeInfo {
    let advert = advert.cloned();
    NodeInfo {
        peer_id: peer.to_string(),
        name: advert.as_ref().map(|a| a.name.clone()).unwrap_or_default(),
        status,
        addrs: advert.as_ref().map(|a| a.addrs.clone()).unwrap_or_default(),
        labels: advert
            .as_ref()
            .map(|a| a.labels.clone())
            .unwrap_or_default(),
        runtimes: advert
            .as_ref()
            .map(|a| a.runtimes.clone())
            .unwrap_or_default(),
        policy: advert
            .as_ref()
            .map(|a| a.policy.clone())
            .unwrap_or_default(),
        resources: advert.map(|a| a.resources).unwrap_or_default(),
        raft: RaftRole::None,
        last_seen_ms: silence.as_millis() as u64,
        departed,
        is_self,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycel_protocol::{Departure, Keypair, Resources};

    struct Peer {
        key: Keypair,
        seq: u64,
    }

    impl Peer {
        fn new() -> Self {
            Self {
                key: Keypair::generate_ed25519(),
                seq: 0,
            }
        }
        fn id(&self) -> PeerId {
            self.key.public().to_peer_id()
        }
        fn advert(&mut self) -> (Announcement, Signed<Announcement>) {
            self.seq += 1000;
            let a = Announcement::Advert(Advert {
                seq: self.seq,
                name: "n".into(),
                addrs: vec![],
                labels: Default::default(),
                runtimes: vec![],
                resources: Resources::default(),
                policy: Default::default(),
            });
            let s = Signed::sign(&self.key, &a).unwrap();
            (a, s)
        }
        fn departure(&mut self) -> (Announcement, Signed<Announcement>) {
            self.seq += 1;
            let a = Announcement::Departure(Departure { seq: self.seq });
            let s = Signed::sign(&self.key, &a).unwrap();
            (a, s)
        }
    }

    fn view() -> Membership {
        Membership::new(PeerId::random(), Timing::default())
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn joined(m: &mut Membership, t: Instant) -> Peer {
        let mut p = Peer::new();
        let (a, s) = p.advert();
        assert_eq!(
            m.observe(t, p.id(), &a, &s, Duration::ZERO),
            Observed::Joined
        );
        p
    }

    fn statuses(changes: &[StatusChange]) -> Vec<MemberStatus> {
        changes.iter().map(|c| c.to).collect()
    }

    #[test]
    fn long_silence_turns_a_member_suspect_then_dead() {
        let t0 = Instant::now();
        let mut m = view();
        let p = joined(&mut m, t0);
        assert!(m.tick(t0 + secs(15.0)).is_empty());
        assert_eq!(statuses(&m.tick(t0 + secs(16.1))), [MemberStatus::Suspect]);
        assert_eq!(statuses(&m.tick(t0 + secs(18.6))), [MemberStatus::Dead]);
        assert_eq!(m.status(&p.id()), Some(MemberStatus::Dead));
    }

    #[test]
    fn a_suspicion_turns_a_member_suspect_then_dead() {
        let t0 = Instant::now();
        let mut m = view();
        let p = joined(&mut m, t0);
        let t1 = t0 + secs(1.0);
        assert_eq!(m.suspect(t1, p.id(), p.seq), Suspected::Now);
        assert_eq!(m.status(&p.id()), Some(MemberStatus::Suspect), "at once");
        assert_eq!(m.suspect(t1, p.id(), p.seq), Suspected::Nothing, "once");
        assert!(m.tick(t1 + secs(2.4)).len() == 1, "the suspect change");
        assert_eq!(statuses(&m.tick(t1 + secs(2.6))), [MemberStatus::Dead]);
    }

    #[test]
    fn a_newer_advert_refutes_a_suspicion_and_revives_the_dead() {
        let t0 = Instant::now();
        let mut m = view();
        let mut p = joined(&mut m, t0);
        m.suspect(t0, p.id(), p.seq);
        let (a, s) = p.advert();
        assert_eq!(
            m.observe(t0 + secs(1.0), p.id(), &a, &s, Duration::ZERO),
            Observed::Updated
        );
        m.tick(t0 + secs(5.0));
        assert_eq!(m.status(&p.id()), Some(MemberStatus::Alive), "refuted");

        m.suspect(t0 + secs(5.0), p.id(), p.seq);
        m.tick(t0 + secs(8.0));
        assert_eq!(m.status(&p.id()), Some(MemberStatus::Dead));
        m.tick(t0 + secs(9.0));
        assert_eq!(
            m.status(&p.id()),
            Some(MemberStatus::Dead),
            "dead stays dead"
        );
        let (a, s) = p.advert();
        m.observe(t0 + secs(10.0), p.id(), &a, &s, Duration::ZERO);
        assert_eq!(statuses(&m.tick(t0 + secs(10.0))), [MemberStatus::Alive]);
    }

    #[test]
    fn an_outdated_suspicion_is_ignored_and_one_about_me_asks_for_a_refutation() {
        let t0 = Instant::now();
        let mut m = view();
        let mut p = joined(&mut m, t0);
        let old_seq = p.seq;
        let (a, s) = p.advert();
        m.observe(t0, p.id(), &a, &s, Duration::ZERO);
        assert_eq!(m.suspect(t0, p.id(), old_seq), Suspected::Nothing);
        assert_eq!(
            m.suspect(t0, PeerId::random(), 1),
            Suspected::Nothing,
            "unknown"
        );
        let me = *m.local();
        assert_eq!(m.suspect(t0, me, 1), Suspected::Me);
    }

    #[test]
    fn a_departure_is_dead_at_once() {
        let t0 = Instant::now();
        let mut m = view();
        let mut p = joined(&mut m, t0);
        let (d, ds) = p.departure();
        assert_eq!(
            m.observe(t0, p.id(), &d, &ds, Duration::ZERO),
            Observed::Departed
        );
        assert_eq!(m.status(&p.id()), Some(MemberStatus::Dead));
        let nodes = m.nodes(t0, &sample_local());
        let entry = nodes
            .iter()
            .find(|n| n.peer_id == p.id().to_string())
            .unwrap();
        assert!(entry.departed);
        assert_eq!(entry.name, "n", "the name survives the departure");
    }

    #[test]
    fn stale_and_replayed_announcements_are_dropped() {
        let t0 = Instant::now();
        let mut m = view();
        let mut p = Peer::new();
        let old = p.advert();
        let new = p.advert();
        m.observe(t0, p.id(), &new.0, &new.1, Duration::ZERO);
        assert_eq!(
            m.observe(t0, p.id(), &old.0, &old.1, Duration::ZERO),
            Observed::Stale { behind_ms: 1000 }
        );
        assert_eq!(
            m.observe(t0, p.id(), &new.0, &new.1, Duration::ZERO),
            Observed::Stale { behind_ms: 0 }
        );
    }

    #[test]
    fn an_old_announcement_relayed_through_sync_is_not_a_sign_of_life() {
        let t0 = Instant::now() + secs(60.0);
        let mut m = view();
        let mut p = Peer::new();
        let (a, s) = p.advert();
        m.observe(t0, p.id(), &a, &s, secs(30.0));
        m.tick(t0);
        assert_eq!(m.status(&p.id()), Some(MemberStatus::Dead));
    }

    #[test]
    fn silent_members_are_redial_candidates_and_departed_ones_are_not() {
        let t0 = Instant::now();
        let mut m = view();
        let silent = joined(&mut m, t0);
        let mut leaving = joined(&mut m, t0);
        let (d, ds) = leaving.departure();
        m.observe(t0, leaving.id(), &d, &ds, Duration::ZERO);
        m.tick(t0 + secs(20.0));
        let candidates: Vec<PeerId> = m.silent_peers().map(|(p, _)| *p).collect();
        assert_eq!(candidates, vec![silent.id()]);
    }

    #[test]
    fn long_dead_members_are_forgotten() {
        let t0 = Instant::now();
        let mut m = view();
        let p = joined(&mut m, t0);
        m.tick(t0 + secs(700.0));
        assert_eq!(m.status(&p.id()), None);
    }

    fn sample_local() -> Advert {
        Advert {
            seq: 1,
            name: "me".into(),
            addrs: vec![],
            labels: Default::default(),
            runtimes: vec![],
            resources: Resources::default(),
            policy: Default::default(),
        }
    }
}
