//! `mycel_instances{app,state}`: how many instances of each app the placement group holds in each
//! state, as this node's replica says (every node answers the same once it has caught up).

use std::collections::BTreeMap;

use mycel_placement::{PlacementHandle, PlacementState};
use prometheus_client::{
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio_util::sync::CancellationToken;

type Labels = Vec<(&'static str, String)>;

/// The gauges, registered; [`track`] keeps them current.
pub(crate) fn register(registry: &mut Registry) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    registry.register(
        "mycel_instances",
        "Instances of each app by state, as the placement group holds them",
        family.clone(),
    );
    family
}

/// Sets `family` from the replica at every change, until `stop`.
pub(crate) async fn track(
    family: Family<Labels, Gauge>,
    placement: PlacementHandle,
    stop: CancellationToken,
) {
    let mut replica = placement.subscribe();
    loop {
        let counts = count(&replica.borrow_and_update().state);
        // A removed app or an emptied state must not linger at its last value.
        family.clear();
        for ((app, state), n) in counts {
            family
                .get_or_create(&vec![("app", app), ("state", state.to_string())])
                .set(n);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = replica.changed() => if changed.is_err() { return },
        }
    }
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
