//! membership_sim: the real failure detector (`mycel_mesh::membership`) in a simulated mesh of
//! thousands of nodes, to see how detection time and per-node traffic scale.
//!
//! ```text
//! cargo run --release -p mycel-simulations --bin membership_sim -- [SEED]
//! ```
//!
//! One seed drives a whole run: the neighbour graph, link latencies, advert phases and which node
//! dies. Each node runs its own `Membership` and sees only what reaches it. Gossip is modelled as
//! flooding over each node's neighbours (gossipsub's mesh, degree `DEGREE`) with a random per-hop
//! latency; every copy a node receives is counted, duplicates included. At `KILL_AT` one node dies:
//! its neighbours notice the broken connections after a redial attempt and publish suspicions, as
//! the mesh actor does. The table shows, per mesh size, when the survivors see it suspect and dead,
//! and the gossip copies each node receives per second, next to the first design (every node
//! re-announced itself every second and was judged by silence alone).

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashSet},
    time::{Duration, Instant},
};

use libp2p::PeerId;
use mycel_mesh::membership::{Membership, Suspected, Timing};
use mycel_protocol::{Advert, Announcement, Keypair, Resources, Signed, api::MemberStatus};
use rand::{RngExt, SeedableRng, rngs::StdRng};

/// Gossip mesh degree: how many neighbours forward each message to a node.
const DEGREE: usize = 6;
/// One gossip hop takes between these many microseconds.
const HOP_LATENCY_US: (u64, u64) = (500, 20_000);
/// A failed redial of a killed neighbour takes this long to report.
const REDIAL_FAILS_AFTER: Duration = Duration::from_millis(5);
const KILL_AT: Duration = Duration::from_secs(6);
const RUN_FOR: Duration = Duration::from_secs(14);
const JUDGE_EVERY: Duration = Duration::from_millis(250);

#[derive(Clone)]
enum Message {
    Advert {
        origin: usize,
        envelope: Signed<Announcement>,
        // Boxed: an advert is far larger than the other messages.
        announcement: Box<Announcement>,
    },
    Suspicion {
        suspect: usize,
        suspect_seq: u64,
    },
}

struct Event {
    at: Duration,
    to: usize,
    from: usize,
    id: u64,
    message: Message,
}

struct Node {
    peer: PeerId,
    key: Keypair,
    view: Membership,
    seen: HashSet<u64>,
    neighbours: Vec<usize>,
    alive: bool,
    copies: u64,
    suspect_at: Option<Duration>,
    dead_at: Option<Duration>,
}

struct Sim {
    rng: StdRng,
    base: Instant,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    events: Vec<Option<Event>>,
    next_id: u64,
    victim: usize,
}

impl Sim {
    fn new(n: usize, seed: u64) -> anyhow::Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let mut secret = [0u8; 32];
            secret[..8].copy_from_slice(&(i as u64 + seed.wrapping_mul(1_000_003)).to_le_bytes());
            let key = Keypair::ed25519_from_bytes(secret)?;
            let peer = key.public().to_peer_id();
            nodes.push(Node {
                peer,
                view: Membership::new(peer, Timing::default()),
                key,
                seen: HashSet::new(),
                neighbours: Vec::new(),
                alive: true,
                copies: 0,
                suspect_at: None,
                dead_at: None,
            });
        }
        // A ring (so the graph is connected) plus random links up to the degree.
        for i in 0..n {
            let j = (i + 1) % n;
            link(&mut nodes, i, j);
        }
        for i in 0..n {
            while nodes[i].neighbours.len() < DEGREE.min(n - 1) {
                let j = rng.random_range(0..n);
                if j != i && !nodes[i].neighbours.contains(&j) {
                    link(&mut nodes, i, j);
                }
            }
        }
        let victim = rng.random_range(0..n);
        Ok(Self {
            rng,
            base: Instant::now(),
            nodes,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            next_id: 0,
            victim,
        })
    }

    fn schedule(&mut self, event: Event) {
        let slot = self.events.len() as u64;
        self.queue.push(Reverse((event.at, slot)));
        self.events.push(Some(event));
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// `origin` hands a new message to its neighbours.
    fn publish(&mut self, at: Duration, origin: usize, message: Message) {
        let id = self.fresh_id();
        self.nodes[origin].seen.insert(id);
        self.forward(at, origin, usize::MAX, id, message);
    }

    fn forward(&mut self, at: Duration, node: usize, came_from: usize, id: u64, message: Message) {
        for next in self.nodes[node].neighbours.clone() {
            if next == came_from {
                continue;
            }
            let hop =
                Duration::from_micros(self.rng.random_range(HOP_LATENCY_US.0..HOP_LATENCY_US.1));
            self.schedule(Event {
                at: at + hop,
                to: next,
                from: node,
                id,
                message: message.clone(),
            });
        }
    }

    fn advert(&mut self, at: Duration, origin: usize) -> anyhow::Result<()> {
        let announcement = Announcement::Advert(Advert {
            seq: at.as_millis() as u64 + 1,
            name: format!("n{origin}"),
            addrs: vec![],
            labels: Default::default(),
            runtimes: vec![],
            resources: Resources::default(),
            policy: Default::default(),
        });
        let envelope = Signed::sign(&self.nodes[origin].key, &announcement)?;
        self.publish(
            at,
            origin,
            Message::Advert {
                origin,
                envelope,
                announcement: Box::new(announcement),
            },
        );
        Ok(())
    }

    fn run(&mut self) -> anyhow::Result<()> {
        let n = self.nodes.len();
        let interval = Timing::default().advert_interval;
        // Every node re-announces on its own phase; the first round fills every view.
        let mut next_advert: Vec<Duration> = (0..n)
            .map(|_| Duration::from_micros(self.rng.random_range(0..interval.as_micros() as u64)))
            .collect();
        let mut next_judge = Duration::ZERO;
        let mut killed = false;
        loop {
            let next_event = self.queue.peek().map(|Reverse((at, _))| *at);
            let next_timer = next_advert
                .iter()
                .min()
                .copied()
                .unwrap_or(RUN_FOR)
                .min(next_judge);
            let now = match next_event {
                Some(at) if at < next_timer => at,
                _ => next_timer,
            };
            if now >= RUN_FOR {
                return Ok(());
            }
            if !killed && now >= KILL_AT {
                killed = true;
                self.kill(KILL_AT);
                continue;
            }
            if next_event == Some(now) {
                let Reverse((_, slot)) = self.queue.pop().expect("peeked");
                let event = self.events[slot as usize].take().expect("scheduled once");
                self.deliver(event);
            } else if now == next_judge {
                self.judge(now);
                next_judge += JUDGE_EVERY;
            } else {
                let origin = (0..n)
                    .find(|i| next_advert[*i] == now)
                    .expect("a due advert");
                next_advert[origin] += interval;
                if self.nodes[origin].alive {
                    self.advert(now, origin)?;
                }
            }
        }
    }

    fn kill(&mut self, at: Duration) {
        let victim = self.victim;
        self.nodes[victim].alive = false;
        for accuser in self.nodes[victim].neighbours.clone() {
            let seq = self.nodes[accuser]
                .view
                .seq(&self.nodes[victim].peer)
                .unwrap_or(0);
            let when = at + REDIAL_FAILS_AFTER;
            let peer = self.nodes[victim].peer;
            self.note(accuser, when, |view, now| view.suspect(now, peer, seq));
            self.publish(
                when,
                accuser,
                Message::Suspicion {
                    suspect: victim,
                    suspect_seq: seq,
                },
            );
        }
    }

    fn note(
        &mut self,
        node: usize,
        at: Duration,
        act: impl FnOnce(&mut Membership, Instant) -> Suspected,
    ) {
        let now = self.base + at;
        let outcome = act(&mut self.nodes[node].view, now);
        if outcome == Suspected::Now && self.nodes[node].suspect_at.is_none() {
            self.nodes[node].suspect_at = Some(at);
        }
    }

    fn deliver(&mut self, event: Event) {
        let node = &mut self.nodes[event.to];
        if !node.alive {
            return;
        }
        node.copies += 1;
        if !node.seen.insert(event.id) {
            return;
        }
        let now = self.base + event.at;
        match &event.message {
            Message::Advert {
                origin,
                envelope,
                announcement,
            } => {
                let signer = self.nodes[*origin].peer;
                self.nodes[event.to].view.observe(
                    now,
                    signer,
                    announcement,
                    envelope,
                    Duration::ZERO,
                );
            }
            Message::Suspicion {
                suspect,
                suspect_seq,
            } => {
                let peer = self.nodes[*suspect].peer;
                let seq = *suspect_seq;
                self.note(event.to, event.at, |view, now| view.suspect(now, peer, seq));
            }
        }
        self.forward(event.at, event.to, event.from, event.id, event.message);
    }

    fn judge(&mut self, at: Duration) {
        let now = self.base + at;
        let victim = self.nodes[self.victim].peer;
        for node in self.nodes.iter_mut().filter(|n| n.alive) {
            node.view.tick(now);
            if node.dead_at.is_none() && node.view.status(&victim) == Some(MemberStatus::Dead) {
                node.dead_at = Some(at);
            }
        }
    }
}

fn link(nodes: &mut [Node], a: usize, b: usize) {
    if a != b && !nodes[a].neighbours.contains(&b) {
        nodes[a].neighbours.push(b);
        nodes[b].neighbours.push(a);
    }
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

/// What one simulated run measured, in seconds after the kill (NaN where it never happened).
struct Outcome {
    suspect: Vec<f64>,
    dead: Vec<f64>,
    copies_per_second: Vec<f64>,
}

fn simulate(n: usize, seed: u64) -> anyhow::Result<Outcome> {
    let mut sim = Sim::new(n, seed)?;
    sim.run()?;
    let survivors: Vec<&Node> = sim.nodes.iter().filter(|x| x.alive).collect();
    let since_kill = |t: Option<Duration>| t.map_or(f64::NAN, |t| (t - KILL_AT).as_secs_f64());
    Ok(Outcome {
        suspect: survivors.iter().map(|x| since_kill(x.suspect_at)).collect(),
        dead: survivors.iter().map(|x| since_kill(x.dead_at)).collect(),
        copies_per_second: survivors
            .iter()
            .map(|x| x.copies as f64 / RUN_FOR.as_secs_f64())
            .collect(),
    })
}

fn main() -> anyhow::Result<()> {
    let seed = std::env::args().nth(1).map_or(Ok(1), |s| s.parse())?;
    println!(
        "seed {seed}, gossip degree {DEGREE}, hop latency {}-{} ms, one node killed at {} s\n",
        HOP_LATENCY_US.0 as f64 / 1000.0,
        HOP_LATENCY_US.1 as f64 / 1000.0,
        KILL_AT.as_secs()
    );
    println!(
        "| nodes | suspect everywhere (p50 / max) | dead everywhere (p50 / max) | gossip copies per node per s | first design: copies per node per s |"
    );
    println!("|---|---|---|---|---|");
    for n in [20, 100, 1000] {
        let mut outcome = simulate(n, seed)?;
        let missed = outcome.dead.iter().filter(|d| d.is_nan()).count();
        // The first design: every node announced itself every second to every node, each copy
        // arriving from each gossip neighbour.
        let first_design = (n - 1) as f64 * DEGREE.min(n - 1) as f64;
        println!(
            "| {n} | {:.3} / {:.3} s | {:.3} / {:.3} s{} | {:.0} | {:.0} |",
            percentile(&mut outcome.suspect, 0.5),
            percentile(&mut outcome.suspect, 1.0),
            percentile(&mut outcome.dead, 0.5),
            percentile(&mut outcome.dead, 1.0),
            if missed > 0 {
                format!(" ({missed} never)")
            } else {
                String::new()
            },
            percentile(&mut outcome.copies_per_second, 0.5),
            first_design,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_node_is_suspect_at_once_and_dead_after_the_timeout_everywhere() {
        let outcome = simulate(30, 7).unwrap();
        let timeout = Timing::default().suspicion_timeout.as_secs_f64();
        assert!(
            outcome.suspect.iter().all(|t| *t < 0.5),
            "{:?}",
            outcome.suspect
        );
        assert!(
            outcome
                .dead
                .iter()
                .all(|t| *t >= timeout && *t < timeout + 0.5),
            "{:?}",
            outcome.dead
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let a = simulate(15, 3).unwrap();
        let b = simulate(15, 3).unwrap();
        assert_eq!(a.suspect, b.suspect);
        assert_eq!(a.copies_per_second, b.copies_per_second);
    }
}
