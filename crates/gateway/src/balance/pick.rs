//! The strategies: which of an app's eligible instances takes a request, and in which order the
//! others are tried if it fails. Pure: the instances' load and latency come in scored, the
//! randomness from a seeded [`Rng`], the app's position in [`Cursor`].

use std::{cmp::Ordering, collections::HashMap};

use mycel_protocol::app::BalanceStrategy;

use super::Target;

/// `latency`: the local instance is preferred while its estimate is within this factor of the
/// lowest (plus [`LOCAL_SLACK_NS`]); a request that stays on its node saves a mesh hop.
pub const LOCAL_FACTOR: f64 = 1.5;
pub const LOCAL_SLACK_NS: f64 = 1e6;

/// An eligible instance, with what this gateway knows of it.
#[derive(Clone, Debug)]
pub struct Scored {
    pub target: Target,
    /// Requests from this gateway that it has not finished answering.
    pub in_flight: u32,
    /// Its peak-EWMA latency, in nanoseconds.
    pub rtt_ns: f64,
}

impl Scored {
    /// `least_request`'s cost: the expected wait of one more request.
    fn cost(&self) -> f64 {
        self.rtt_ns * f64::from(self.in_flight.saturating_add(1))
    }
}

/// An app's rotation: the round-robin counter and the smooth weighted round robin's current
/// weights.
#[derive(Clone, Debug, Default)]
pub struct Cursor {
    next: usize,
    current: HashMap<String, i64>,
}

impl Cursor {
    /// Forgets the weights of instances that `keep` rejects.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.current.retain(|id, _| keep(id));
    }
}

/// A small, fast, seedable generator (xorshift64*): the picks need spread, not secrecy.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Zero is xorshift's one fixed point.
        Self(seed | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((u128::from(x) * n as u128) >> 64) as usize
    }
}

/// The order in which to try `eligible` for one request: the chosen instance first, then the
/// others, best first. Every instance appears once.
pub fn order(
    strategy: BalanceStrategy,
    mut eligible: Vec<Scored>,
    cursor: &mut Cursor,
    rng: &mut Rng,
) -> Vec<Target> {
    if eligible.len() <= 1 {
        return eligible.into_iter().map(|s| s.target).collect();
    }
    match strategy {
        BalanceStrategy::RoundRobin => {
            rotate(&mut eligible, cursor);
        }
        BalanceStrategy::LeastConnections => {
            // Rotated first, so ties (an idle app) take turns instead of piling on one.
            rotate(&mut eligible, cursor);
            eligible.sort_by_key(|s| s.in_flight);
        }
        BalanceStrategy::LeastRequest => {
            let n = eligible.len();
            let a = rng.below(n);
            let b = (a + 1 + rng.below(n - 1)) % n;
            let first = if eligible[b].cost() < eligible[a].cost() {
                b
            } else {
                a
            };
            let chosen = eligible.swap_remove(first);
            eligible.sort_by(|x, y| by(x.cost(), y.cost()));
            eligible.insert(0, chosen);
        }
        BalanceStrategy::Weighted => {
            let total: i64 = eligible.iter().map(|s| i64::from(s.target.weight)).sum();
            let mut best = 0;
            let mut best_current = i64::MIN;
            for (i, s) in eligible.iter().enumerate() {
                let current = cursor.current.entry(s.target.instance.clone()).or_default();
                *current += i64::from(s.target.weight);
                if *current > best_current {
                    best = i;
                    best_current = *current;
                }
            }
            if let Some(current) = cursor.current.get_mut(&eligible[best].target.instance) {
                *current -= total;
            }
            let chosen = eligible.remove(best);
            eligible.sort_by_key(|s| std::cmp::Reverse(s.target.weight));
            eligible.insert(0, chosen);
        }
        BalanceStrategy::Latency => {
            eligible.sort_by(|x, y| by(x.rtt_ns, y.rtt_ns));
            let lowest = eligible[0].rtt_ns;
            if let Some(local) = eligible.iter().position(|s| s.target.local)
                && eligible[local].rtt_ns <= lowest * LOCAL_FACTOR + LOCAL_SLACK_NS
            {
                let local = eligible.remove(local);
                eligible.insert(0, local);
            }
        }
    }
    eligible.into_iter().map(|s| s.target).collect()
}

fn rotate(eligible: &mut [Scored], cursor: &mut Cursor) {
    let start = cursor.next % eligible.len();
    cursor.next = cursor.next.wrapping_add(1);
    eligible.rotate_left(start);
}

fn by(a: f64, b: f64) -> Ordering {
    a.total_cmp(&b)
}
