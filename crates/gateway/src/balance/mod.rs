//! Which instances may serve an app, and in which order to try them. Pure: the replica, local
//! health, what earlier requests showed and `now` come in; an ordered list of targets goes out.
//!
//! - A candidate is an instance of the app that its node reports `Running`; an instance on this
//!   node must also pass its health check now. An instance on another node that has not passed
//!   its check is refused by that node's gateway before its app sees the request, and skipped
//!   here for [`UNHEALTHY_SKIP`] (see `inbound`).
//! - Of the candidates, those not held back are ordered by the app's `[balance] strategy`
//!   ([`pick`]); the first takes the request, the others take its retries.
//! - Held back: an instance whose node could not be reached, or turned out not to run it, for
//!   [`COOL_OFF`] (an answer ends that at once); one that stayed silent while another answered
//!   a hedged copy of its request, for [`STALLED_SKIP`]; an instance ejected as an outlier
//!   ([`outlier`]).
//!   When every candidate is held back, they are all tried anyway rather than failing every
//!   request until the first comes back.
//! - Retries, and hedged copies of requests left unanswered for [`Balancer::hedge_after`], come
//!   out of a per-app budget ([`budget`]).
//!
//! All of this is per gateway, local to its node: nothing here is agreed with other nodes.

pub mod budget;
pub mod ewma;
pub mod outlier;
pub mod pick;

use std::{collections::HashMap, time::Duration};

use mycel_placement::PlacementState;
use mycel_protocol::{api::InstanceState, app::BalanceSpec};
use tokio::time::Instant;

use budget::RetryBudget;
use ewma::PeakEwma;
use outlier::Outlier;
use pick::{Cursor, Rng, Scored};

/// How long an instance whose node could not be reached, or does not run it, is skipped.
pub const COOL_OFF: Duration = Duration::from_secs(5);
/// How long an instance its node refused as unhealthy is skipped: health checks come often, and
/// a new instance should get its share soon after its first good one.
pub const UNHEALTHY_SKIP: Duration = Duration::from_secs(1);
/// How long an instance that stayed silent past its hedge delay (see [`Balancer::hedge_after`])
/// is skipped: a frozen node's instance gets one request now and then, not a share.
pub const STALLED_SKIP: Duration = Duration::from_secs(2);
/// The shortest wait before a request is hedged, and how many times an instance's usual latency
/// a request may wait before it is.
pub const HEDGE_FLOOR: Duration = Duration::from_secs(1);
const HEDGE_LATENCIES: f64 = 8.0;
/// Past this many apps, the oldest state is forgotten (apps come and go).
const MAX_TRACKED: usize = 4096;
/// Endpoints kept for instances that are no longer candidates, before they are pruned.
const MAX_GONE: usize = 64;

/// One instance to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub instance: String,
    /// Peer id of the node that runs it.
    pub node: String,
    /// Whether it runs on this node.
    pub local: bool,
    /// Its share under the `weighted` strategy (at least 1).
    pub weight: u32,
}

/// What the replica says about an app, before ordering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Candidates {
    /// No app of that name is deployed.
    UnknownApp,
    /// Its instances that may serve, by instance id (empty when none is healthy), and how to
    /// balance over them.
    Healthy {
        targets: Vec<Target>,
        spec: BalanceSpec,
        /// Whether the app scales itself (`[scale]`): with no target, its request is held while
        /// an instance starts instead of refused.
        autoscaled: bool,
    },
}

/// The instances of `app` that may serve it: those `Running` in the replica, and of those on this
/// node (`me`), only the ones `is_healthy` says pass their health check.
pub fn candidates(
    state: &PlacementState,
    app: &str,
    me: &str,
    is_healthy: impl Fn(&str) -> bool,
) -> Candidates {
    let Some(record) = state.apps.get(app) else {
        return Candidates::UnknownApp;
    };
    let targets = state
        .instances_of(app)
        .filter(|i| i.state == InstanceState::Running)
        .map(|i| Target {
            instance: i.id.clone(),
            node: i.node.clone(),
            local: i.node == me,
            weight: 1,
        })
        .filter(|t| !t.local || is_healthy(&t.instance))
        .collect();
    Candidates::Healthy {
        targets,
        spec: record.manifest.balance.clone(),
        autoscaled: record.manifest.scale.is_some(),
    }
}

/// How an attempt at an instance ended, as balancing counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer that is not a 5xx.
    Answered,
    /// A 5xx answer, or a connection that failed once the request was out: counts towards
    /// ejection.
    Failed,
    /// The node could not be reached: skipped for [`COOL_OFF`], and counts towards ejection.
    Unreachable,
    /// The node does not run the instance: skipped for [`COOL_OFF`].
    NotThere,
    /// The node refused it as unhealthy: skipped for [`UNHEALTHY_SKIP`].
    Unhealthy,
    /// It stayed silent past its hedge delay and another instance answered first: skipped for
    /// [`STALLED_SKIP`] (a frozen or overloaded node), not counted towards ejection.
    Stalled,
    /// Says nothing about the instance (a stale pooled connection, an overloaded instance).
    Neutral,
}

/// What this gateway knows about one instance.
#[derive(Debug)]
struct Endpoint {
    in_flight: u32,
    latency: PeakEwma,
    outlier: Outlier,
    skip_until: Option<Instant>,
}

impl Endpoint {
    fn new(now: Instant) -> Self {
        Self {
            in_flight: 0,
            latency: PeakEwma::new(now),
            outlier: Outlier::default(),
            skip_until: None,
        }
    }

    fn held_back(&self, now: Instant) -> bool {
        self.outlier.is_ejected(now) || self.skip_until.is_some_and(|until| now < until)
    }
}

/// One app's balancing state.
#[derive(Debug)]
struct AppState {
    cursor: Cursor,
    endpoints: HashMap<String, Endpoint>,
    budget: RetryBudget,
    /// How many candidates the app had at its last request: the base of the ejection limit.
    instances: usize,
}

impl AppState {
    fn new(now: Instant) -> Self {
        Self {
            cursor: Cursor::default(),
            endpoints: HashMap::new(),
            budget: RetryBudget::new(now),
            instances: 0,
        }
    }
}

/// The gateway's balancing memory, for every app it routed to.
#[derive(Debug)]
pub struct Balancer {
    apps: HashMap<String, AppState>,
    rng: Rng,
}

impl Balancer {
    /// `seed` drives `least_request`'s random choices; tests pass a fixed one.
    pub fn new(seed: u64) -> Self {
        Self {
            apps: HashMap::new(),
            rng: Rng::new(seed),
        }
    }

    fn app(&mut self, app: &str, now: Instant) -> &mut AppState {
        if self.apps.len() >= MAX_TRACKED && !self.apps.contains_key(app) {
            self.apps.clear();
        }
        self.apps
            .entry(app.to_string())
            .or_insert_with(|| AppState::new(now))
    }

    /// The order in which to try `candidates` (as [`candidates`] returns them) for one request
    /// to `app`: the instances not held back, ordered by `spec.strategy`; all of them when every
    /// one is held back. Counts the request in the app's retry budget.
    pub fn order(
        &mut self,
        app: &str,
        spec: &BalanceSpec,
        candidates: Vec<Target>,
        now: Instant,
    ) -> Vec<Target> {
        if candidates.is_empty() {
            return candidates;
        }
        let mut rng = self.rng.clone();
        let state = self.app(app, now);
        state.budget.request(now);
        state.instances = candidates.len();
        if state.endpoints.len() > candidates.len() + MAX_GONE {
            let ids: std::collections::HashSet<&str> =
                candidates.iter().map(|t| t.instance.as_str()).collect();
            state.endpoints.retain(|id, _| ids.contains(id.as_str()));
            state.cursor.retain(|id| ids.contains(id));
        }
        let scored: Vec<(Scored, bool)> = candidates
            .into_iter()
            .map(|target| {
                let endpoint = state
                    .endpoints
                    .entry(target.instance.clone())
                    .or_insert_with(|| Endpoint::new(now));
                let held_back = endpoint.held_back(now);
                let estimate = endpoint.latency.estimate(now);
                // An instance that never answered gets one request at a time until it has: it
                // is tried at once (a new replica takes load from its first request), and never
                // swamped on the strength of a default guess.
                let exploring = !endpoint.latency.is_measured() && endpoint.in_flight == 0;
                let scored = Scored {
                    in_flight: endpoint.in_flight,
                    rtt_ns: if exploring { 0.0 } else { estimate },
                    target,
                };
                (scored, held_back)
            })
            .collect();
        let (held_back, eligible): (Vec<_>, Vec<_>) = scored.into_iter().partition(|(_, h)| *h);
        let eligible: Vec<Scored> = if eligible.is_empty() {
            held_back.into_iter().map(|(s, _)| s).collect()
        } else {
            eligible.into_iter().map(|(s, _)| s).collect()
        };
        let order = pick::order(spec.strategy, eligible, &mut state.cursor, &mut rng);
        self.rng = rng;
        order
    }

    /// A request to `instance` of `app` is sent.
    pub fn start(&mut self, app: &str, instance: &str, now: Instant) {
        let state = self.app(app, now);
        let endpoint = state
            .endpoints
            .entry(instance.to_string())
            .or_insert_with(|| Endpoint::new(now));
        endpoint.in_flight = endpoint.in_flight.saturating_add(1);
    }

    /// The request to `instance` is over (its answer ended, or it failed).
    pub fn end(&mut self, app: &str, instance: &str) {
        if let Some(endpoint) = self
            .apps
            .get_mut(app)
            .and_then(|s| s.endpoints.get_mut(instance))
        {
            endpoint.in_flight = endpoint.in_flight.saturating_sub(1);
        }
    }

    /// Records how an attempt at `instance` ended at `now`; `latency` is how long its answer took
    /// to begin, when one began. Returns whether the instance was ejected by it.
    pub fn record(
        &mut self,
        app: &str,
        spec: &BalanceSpec,
        instance: &str,
        outcome: Outcome,
        latency: Option<Duration>,
        now: Instant,
    ) -> bool {
        let state = self.app(app, now);
        let limit = outlier::max_ejected(&spec.outlier, state.instances);
        let ejected = state
            .endpoints
            .values()
            .filter(|e| e.outlier.is_ejected(now))
            .count();
        let Some(endpoint) = state.endpoints.get_mut(instance) else {
            return false;
        };
        if let Some(latency) = latency {
            endpoint.latency.observe(latency, now);
        }
        match outcome {
            Outcome::Answered => {
                endpoint.skip_until = None;
                endpoint.outlier.success(&spec.outlier, now);
                false
            }
            Outcome::Failed | Outcome::Unreachable => {
                if outcome == Outcome::Unreachable {
                    endpoint.skip_until = Some(now + COOL_OFF);
                }
                endpoint
                    .outlier
                    .failure(&spec.outlier, ejected < limit, now)
            }
            Outcome::NotThere => {
                endpoint.skip_until = Some(now + COOL_OFF);
                false
            }
            Outcome::Unhealthy => {
                endpoint.skip_until = Some(now + UNHEALTHY_SKIP);
                false
            }
            Outcome::Stalled => {
                endpoint.skip_until = Some(now + STALLED_SKIP);
                false
            }
            Outcome::Neutral => false,
        }
    }

    /// How long a request to `instance` of `app` may go unanswered before a copy of it goes to
    /// another instance (when that is safe): [`HEDGE_LATENCIES`] times its usual latency, at
    /// least [`HEDGE_FLOOR`]. A slow app is given its time; a silent node costs a request one
    /// hedge delay, not its whole time limit.
    pub fn hedge_after(&mut self, app: &str, instance: &str, now: Instant) -> Duration {
        let usual = self
            .apps
            .get_mut(app)
            .and_then(|s| s.endpoints.get_mut(instance))
            .filter(|e| e.latency.is_measured())
            .map_or(0.0, |e| e.latency.estimate(now));
        let wait = Duration::from_nanos((usual * HEDGE_LATENCIES) as u64);
        wait.max(HEDGE_FLOOR)
    }

    /// Takes one retry from `app`'s budget; `false` when it is spent.
    pub fn try_retry(&mut self, app: &str, now: Instant) -> bool {
        self.app(app, now).budget.try_retry(now)
    }

    /// Whether `instance` of `app` is held back at `now` (skipped or ejected).
    pub fn is_held_back(&self, app: &str, instance: &str, now: Instant) -> bool {
        self.apps
            .get(app)
            .and_then(|s| s.endpoints.get(instance))
            .is_some_and(|e| e.held_back(now))
    }

    /// How many instances of `app` are ejected at `now`.
    pub fn ejected(&self, app: &str, now: Instant) -> usize {
        self.apps.get(app).map_or(0, |s| {
            s.endpoints
                .values()
                .filter(|e| e.outlier.is_ejected(now))
                .count()
        })
    }
}

#[cfg(test)]
mod tests;
