//! What the placement group holds about apps, as metrics every node serves from its replica:
//! - `mycel_instances{app,state}`: how many instances of each app are in each state (every node
//!   answers the same once it has caught up);
//! - `mycel_rollouts_total{app,result}`: rollouts this node saw end, by how they ended
//!   (`succeeded`, `failed`, `reverted`);
//! - `mycel_autoscale_decisions_total{app,direction}`: autoscaler changes this node saw (`up`,
//!   `down`).

use std::collections::{BTreeMap, HashMap};

use mycel_placement::{PlacementHandle, PlacementState};
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio_util::sync::CancellationToken;

type Labels = Vec<(&'static str, String)>;

/// The metrics, registered; [`track`] keeps them current.
#[derive(Clone)]
pub(crate) struct AppMetrics {
    instances: Family<Labels, Gauge>,
    rollouts: Family<Labels, Counter>,
    decisions: Family<Labels, Counter>,
}

pub(crate) fn register(registry: &mut Registry) -> AppMetrics {
    let metrics = AppMetrics {
        instances: Family::default(),
        rollouts: Family::default(),
        decisions: Family::default(),
    };
    registry.register(
        "mycel_instances",
        "Instances of each app by state, as the placement group holds them",
        metrics.instances.clone(),
    );
    registry.register(
        "mycel_rollouts",
        "Rollouts seen ending, by app and result (succeeded, failed, reverted)",
        metrics.rollouts.clone(),
    );
    registry.register(
        "mycel_autoscale_decisions",
        "Autoscaler changes seen, by app and direction (up, down)",
        metrics.decisions.clone(),
    );
    metrics
}

/// Updates `metrics` from the replica at every change, until `stop`.
pub(crate) async fn track(
    metrics: AppMetrics,
    placement: PlacementHandle,
    stop: CancellationToken,
) {
    let mut replica = placement.subscribe();
    // Rollouts that ended before this node looked are not this node's to count.
    let mut seen = rollout_steps(&replica.borrow().state);
    let mut scaled = scale_decisions(&replica.borrow().state);
    loop {
        let state = replica.borrow_and_update().state.clone();
        let counts = count(&state);
        // A removed app or an emptied state must not linger at its last value.
        metrics.instances.clear();
        for ((app, state), n) in counts {
            metrics
                .instances
                .get_or_create(&vec![("app", app), ("state", state.to_string())])
                .set(n);
        }
        for (app, rollout) in &state.rollouts {
            let was = seen.insert(app.clone(), (rollout.step, rollout.active));
            let ended_now = !rollout.active && was != Some((rollout.step, false));
            if ended_now {
                metrics
                    .rollouts
                    .get_or_create(&vec![
                        ("app", app.clone()),
                        ("result", rollout.state.as_str().to_string()),
                    ])
                    .inc();
            }
        }
        let now = scale_decisions(&state);
        for (app, (at_ms, desired)) in &now {
            match scaled.get(app) {
                Some((was_at, was)) if was_at != at_ms && was != desired => {
                    let direction = if desired > was { "up" } else { "down" };
                    metrics
                        .decisions
                        .get_or_create(&vec![("app", app.clone()), ("direction", direction.into())])
                        .inc();
                }
                _ => {}
            }
        }
        scaled = now;
        tokio::select! {
            () = stop.cancelled() => return,
            changed = replica.changed() => if changed.is_err() { return },
        }
    }
}

fn rollout_steps(state: &PlacementState) -> HashMap<String, (u64, bool)> {
    state
        .rollouts
        .iter()
        .map(|(app, r)| (app.clone(), (r.step, r.active)))
        .collect()
}

/// Each autoscaled app's count and when it was decided.
fn scale_decisions(state: &PlacementState) -> HashMap<String, (u64, u32)> {
    state
        .apps
        .iter()
        .filter(|(_, r)| r.manifest.scale.is_some())
        .map(|(app, r)| {
            let at = r.scale.as_ref().map_or(0, |s| s.at_ms);
            (app.clone(), (at, r.replicas()))
        })
        .collect()
}

/// Instances by (app, state).
fn count(state: &PlacementState) -> BTreeMap<(String, &'static str), i64> {
    let mut counts = BTreeMap::new();
    for instance in state.instances.values() {
        *counts
            .entry((instance.app.clone(), instance.state.as_str()))
            .or_insert(0) += 1;
    }
    counts
}
