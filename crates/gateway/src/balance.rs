//! Which instances may serve an app, and in which order to try them. Pure: the replica, local
//! health and `now` come in, an ordered list of targets goes out.
//!
//! - A candidate is an instance of the app that its node reports `Running`; an instance on this
//!   node must also pass its health check now (remote nodes' health is what they report).
//! - Candidates are tried in round-robin order, one counter per app, so successive requests start
//!   at successive instances.
//! - An instance whose node could not be reached, or turned out not to run it, is skipped for
//!   [`COOL_OFF`] (its breaker is open; an answer closes it again). When every candidate's
//!   breaker is open, they are tried anyway, in the same order, rather than failing every request
//!   until the first cools off.

use std::{collections::HashMap, time::Duration};

use mycel_placement::PlacementState;
use mycel_protocol::api::InstanceState;
use tokio::time::Instant;

/// How long an instance that could not be reached is skipped.
pub const COOL_OFF: Duration = Duration::from_secs(5);
/// Past this many apps or open breakers, the oldest state is forgotten (apps come and go).
const MAX_TRACKED: usize = 4096;

/// One instance to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub instance: String,
    /// Peer id of the node that runs it.
    pub node: String,
    /// Whether it runs on this node.
    pub local: bool,
}

/// What the replica says about an app, before ordering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Candidates {
    /// No app of that name is deployed.
    UnknownApp,
    /// Its instances that may serve, by instance id; empty when none is healthy.
    Healthy(Vec<Target>),
}

/// The instances of `app` that may serve it: those `Running` in the replica, and of those on this
/// node (`me`), only the ones `is_healthy` says pass their health check.
pub fn candidates(
    state: &PlacementState,
    app: &str,
    me: &str,
    is_healthy: impl Fn(&str) -> bool,
) -> Candidates {
    if !state.apps.contains_key(app) {
        return Candidates::UnknownApp;
    }
    let healthy = state
        .instances_of(app)
        .filter(|i| i.state == InstanceState::Running)
        .map(|i| Target {
            instance: i.id.clone(),
            node: i.node.clone(),
            local: i.node == me,
        })
        .filter(|t| !t.local || is_healthy(&t.instance))
        .collect();
    Candidates::Healthy(healthy)
}

/// The gateway's routing memory: the round-robin position of each app, and the open breakers.
#[derive(Debug, Default)]
pub struct Balancer {
    next: HashMap<String, usize>,
    /// Instances skipped until the given time.
    open_until: HashMap<String, Instant>,
}

impl Balancer {
    /// The order in which to try `candidates` (as [`candidates`] returns them) for one request to
    /// `app`: instances with a closed breaker, rotated by the app's counter, then those with an
    /// open one only when no other is left. Advances the counter.
    pub fn order(&mut self, app: &str, mut candidates: Vec<Target>, now: Instant) -> Vec<Target> {
        if candidates.is_empty() {
            return candidates;
        }
        if self.next.len() >= MAX_TRACKED && !self.next.contains_key(app) {
            self.next.clear();
        }
        let counter = self.next.entry(app.to_string()).or_default();
        let start = *counter % candidates.len();
        *counter = counter.wrapping_add(1);
        candidates.rotate_left(start);
        let (closed, open): (Vec<_>, Vec<_>) = candidates
            .into_iter()
            .partition(|t| !self.is_open(&t.instance, now));
        if closed.is_empty() { open } else { closed }
    }

    /// Whether `instance` is being skipped at `now`.
    pub fn is_open(&self, instance: &str, now: Instant) -> bool {
        self.open_until
            .get(instance)
            .is_some_and(|until| now < *until)
    }

    /// Records that reaching `instance` failed at `now`: it is skipped for [`COOL_OFF`].
    pub fn trip(&mut self, instance: &str, now: Instant) {
        if self.open_until.len() >= MAX_TRACKED {
            self.open_until.retain(|_, until| now < *until);
        }
        self.open_until.insert(instance.to_string(), now + COOL_OFF);
    }

    /// Records that `instance` answered: its breaker closes at once.
    pub fn reset(&mut self, instance: &str) {
        self.open_until.remove(instance);
    }
}

#[cfg(test)]
mod tests {
    use mycel_protocol::{
        app::Manifest,
        placement::{AppRecord, Instance},
    };

    use super::*;

    fn state(instances: &[(&str, &str, InstanceState)]) -> PlacementState {
        let toml = format!(
            "name = \"web\"\nversion = \"1\"\n[wasm]\nmodule = \"blake3:{}\"\n",
            "c".repeat(64)
        );
        let mut state = PlacementState::default();
        state.apps.insert(
            "web".into(),
            AppRecord {
                manifest: Manifest::from_toml(&toml).expect("a valid manifest"),
                deployed_by: "test".into(),
                deployed_at_ms: 0,
                generation: 1,
                unplaced: None,
            },
        );
        for (replica, (id, node, state_)) in instances.iter().enumerate() {
            state.instances.insert(
                id.to_string(),
                Instance {
                    id: id.to_string(),
                    app: "web".into(),
                    replica: replica as u32,
                    node: node.to_string(),
                    state: *state_,
                    since_ms: 0,
                    error: None,
                },
            );
        }
        state
    }

    fn ids(targets: &[Target]) -> Vec<&str> {
        targets.iter().map(|t| t.instance.as_str()).collect()
    }

    fn healthy(c: Candidates) -> Vec<Target> {
        match c {
            Candidates::Healthy(targets) => targets,
            Candidates::UnknownApp => panic!("the app is known"),
        }
    }

    #[test]
    fn an_app_not_in_the_replica_is_unknown() {
        let s = state(&[]);
        assert_eq!(
            candidates(&s, "other", "me", |_| true),
            Candidates::UnknownApp
        );
        assert_eq!(
            candidates(&s, "web", "me", |_| true),
            Candidates::Healthy(vec![])
        );
    }

    #[test]
    fn only_running_instances_and_healthy_local_ones_are_candidates() {
        let s = state(&[
            ("web-1-0", "me", InstanceState::Running),
            ("web-1-1", "me", InstanceState::Running),
            ("web-1-2", "peer", InstanceState::Running),
            ("web-1-3", "peer", InstanceState::Starting),
            ("web-1-4", "peer", InstanceState::Failed),
        ]);
        let c = healthy(candidates(&s, "web", "me", |id| id != "web-1-1"));
        assert_eq!(ids(&c), ["web-1-0", "web-1-2"]);
        assert!(c[0].local && !c[1].local);
        assert_eq!(c[1].node, "peer");
    }

    #[test]
    fn round_robin_per_app() {
        let s = state(&[
            ("a", "n1", InstanceState::Running),
            ("b", "n2", InstanceState::Running),
            ("c", "n3", InstanceState::Running),
        ]);
        let c = healthy(candidates(&s, "web", "me", |_| true));
        let mut balancer = Balancer::default();
        let now = Instant::now();
        let firsts: Vec<String> = (0..6)
            .map(|_| balancer.order("web", c.clone(), now)[0].instance.clone())
            .collect();
        assert_eq!(firsts, ["a", "b", "c", "a", "b", "c"]);
        // Every order holds every candidate once: the rest are the retries.
        assert_eq!(ids(&balancer.order("web", c.clone(), now)), ["a", "b", "c"]);
        // Another app has its own counter.
        assert_eq!(balancer.order("api", c.clone(), now)[0].instance, "a");
        assert!(balancer.order("web", vec![], now).is_empty());
    }

    #[test]
    fn a_tripped_instance_is_skipped_until_it_cools_off() {
        let c = vec![
            Target {
                instance: "a".into(),
                node: "n1".into(),
                local: false,
            },
            Target {
                instance: "b".into(),
                node: "n2".into(),
                local: false,
            },
        ];
        let mut balancer = Balancer::default();
        let now = Instant::now();
        balancer.trip("a", now);
        for _ in 0..4 {
            assert_eq!(ids(&balancer.order("web", c.clone(), now)), ["b"]);
        }
        let later = now + COOL_OFF;
        assert!(!balancer.is_open("a", later));
        assert_eq!(ids(&balancer.order("web", c.clone(), later)), ["a", "b"]);

        // When every breaker is open, all are tried anyway.
        balancer.trip("a", later);
        balancer.trip("b", later);
        assert_eq!(balancer.order("web", c.clone(), later).len(), 2);
        // An answer closes the breaker at once.
        balancer.reset("b");
        assert_eq!(ids(&balancer.order("web", c, later)), ["b"]);
    }
}
