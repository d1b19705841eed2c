//! The membership view and its failure detector: a pure state machine.
//!
//! It owns what this node believes about every other node: each member's latest signed
//! announcement, when it was last heard from, and its status. It does no I/O and reads no clock:
//! callers pass `now`, so tests and simulations drive time themselves.
//!
//! Liveness is judged from silence. Every node re-announces itself every `advert_interval`; a
//! member not heard from for `suspect_after` turns suspect, and after `dead_after` dead. A member
//! that announced its departure is dead at once. Dead members are forgotten after `forget_after`.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::PeerId;
use mycel_protocol::{
    Advert, Announcement, Signed,
    api::{MemberStatus, NodeInfo, RaftRole},
};

/// How fast the failure detector judges. Defaults: announce every second, suspect after 2.5 s of
/// silence, dead after 4.5 s, so a killed node is dead everywhere within 5 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub advert_interval: Duration,
    pub suspect_after: Duration,
    pub dead_after: Duration,
    pub forget_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            advert_interval: Duration::from_millis(1000),
            suspect_after: Duration::from_millis(2500),
            dead_after: Duration::from_millis(4500),
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
    status: MemberStatus,
    departed: bool,
}

/// This node's view of the mesh.
#[derive(Debug)]
pub struct Membership {
    local: PeerId,
    timing: Timing,
    members: HashMap<PeerId, Member>,
}

impl Membership {
    pub fn new(local: PeerId, timing: Timing) -> Self {
        Self {
            local,
            timing,
            members: HashMap::new(),
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
        let seq = announcement.seq();
        let departed = matches!(announcement, Announcement::Departure(_));
        let advert = match announcement {
            Announcement::Advert(advert) => Some(advert.clone()),
            Announcement::Departure(_) => None,
        };
        let Some(member) = self.members.get_mut(&signer) else {
            self.members.insert(
                signer,
                Member {
                    advert,
                    latest: envelope.clone(),
                    seq,
                    last_seen: heard_at,
                    status: MemberStatus::Alive,
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
        member.departed = departed;
        if advert.is_some() {
            member.advert = advert;
        }
        if departed {
            member.status = MemberStatus::Dead;
            Observed::Departed
        } else {
            Observed::Updated
        }
    }

    /// Re-judges every member against the clock and forgets long-dead ones. Returns the changes.
    pub fn tick(&mut self, now: Instant) -> Vec<StatusChange> {
        let changes = self.judge(now);
        let forget_after = self.timing.dead_after + self.timing.forget_after;
        self.members
            .retain(|_, m| now.saturating_duration_since(m.last_seen) < forget_after);
        changes
    }

    fn judge(&mut self, now: Instant) -> Vec<StatusChange> {
        let timing = self.timing;
        let mut changes = Vec::new();
        for (peer, member) in &mut self.members {
            let silence = now.saturating_duration_since(member.last_seen);
            let status = if member.departed || silence >= timing.dead_after {
                MemberStatus::Dead
            } else if silence >= timing.suspect_after {
                MemberStatus::Suspect
            } else {
                MemberStatus::Alive
            };
            if status != member.status {
                changes.push(StatusChange {
                    peer: *peer,
                    name: member.name().to_string(),
                    from: member.status,
                    to: status,
                });
                member.status = status;
            }
        }
        changes
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

    #[test]
    fn silence_turns_a_member_suspect_then_dead() {
        let t0 = Instant::now();
        let mut m = view();
        let mut p = Peer::new();
        let (a, s) = p.advert();
        assert_eq!(
            m.observe(t0, p.id(), &a, &s, Duration::ZERO),
            Observed::Joined
        );
        assert!(m.tick(t0 + Duration::from_millis(2000)).is_empty());
        let changes = m.tick(t0 + Duration::from_millis(2600));
        assert_eq!(changes[0].to, MemberStatus::Suspect);
        let changes = m.tick(t0 + Duration::from_millis(4600));
        assert_eq!(changes[0].to, MemberStatus::Dead);
        assert_eq!(m.status(&p.id()), Some(MemberStatus::Dead));
    }

    #[test]
    fn news_revives_a_suspect_member() {
        let t0 = Instant::now();
        let mut m = view();
        let mut p = Peer::new();
        let (a, s) = p.advert();
        m.observe(t0, p.id(), &a, &s, Duration::ZERO);
        m.tick(t0 + Duration::from_secs(3));
        assert_eq!(m.status(&p.id()), Some(MemberStatus::Suspect));
        let (a, s) = p.advert();
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(
            m.observe(t1, p.id(), &a, &s, Duration::ZERO),
            Observed::Updated
        );
        m.tick(t1);
        assert_eq!(m.status(&p.id()), Some(MemberStatus::Alive));
    }

    #[test]
    fn a_departure_is_dead_at_once() {
        let t0 = Instant::now();
        let mut m = view();
        let mut p = Peer::new();
        let (a, s) = p.advert();
        m.observe(t0, p.id(), &a, &s, Duration::ZERO);
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
        let t0 = Instant::now() + Duration::from_secs(60);
        let mut m = view();
        let mut p = Peer::new();
        let (a, s) = p.advert();
        m.observe(t0, p.id(), &a, &s, Duration::from_secs(10));
        m.tick(t0);
        assert_eq!(m.status(&p.id()), Some(MemberStatus::Dead));
    }

    #[test]
    fn silent_members_are_redial_candidates_and_departed_ones_are_not() {
        let t0 = Instant::now();
        let mut m = view();
        let mut silent = Peer::new();
        let mut leaving = Peer::new();
        for p in [&mut silent, &mut leaving] {
            let (a, s) = p.advert();
            m.observe(t0, p.id(), &a, &s, Duration::ZERO);
        }
        let (d, ds) = leaving.departure();
        m.observe(t0, leaving.id(), &d, &ds, Duration::ZERO);
        m.tick(t0 + Duration::from_secs(5));
        let candidates: Vec<PeerId> = m.silent_peers().map(|(p, _)| *p).collect();
        assert_eq!(candidates, vec![silent.id()]);
    }

    #[test]
    fn long_dead_members_are_forgotten() {
        let t0 = Instant::now();
        let mut m = view();
        let mut p = Peer::new();
        let (a, s) = p.advert();
        m.observe(t0, p.id(), &a, &s, Duration::ZERO);
        m.tick(t0 + Duration::from_secs(700));
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
        }
    }
}
