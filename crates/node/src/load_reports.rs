//! The node's load report: about every second, what its gateway saw of each app (requests in
//! flight on average, requests taken) and what the app's instances here use, sent to the
//! placement group's leader for its autoscaler (see `mycel_placement::load`).

use std::{collections::BTreeMap, time::Duration};

use mycel_agent::AgentHandle;
use mycel_gateway::GatewayMetrics;
use mycel_placement::PlacementHandle;
use mycel_protocol::placement::{AppLoad, LoadReport, MAX_LOAD_APPS};
use tokio_util::sync::CancellationToken;

/// How often a node reports.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Reports until `stop`.
pub(crate) async fn report(
    gateway: GatewayMetrics,
    agent: AgentHandle,
    placement: PlacementHandle,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let report = load_report(&gateway, &agent, &placement);
        if report.apps.is_empty() {
            continue;
        }
        let send = placement.report_load(report);
        if stop.run_until_cancelled(send).await.is_none() {
            return;
        }
    }
}

fn load_report(
    gateway: &GatewayMetrics,
    agent: &AgentHandle,
    placement: &PlacementHandle,
) -> LoadReport {
    let mut apps: BTreeMap<String, AppLoad> = gateway
        .take_load()
        .into_iter()
        .map(|load| (load.app.clone(), load))
        .collect();
    let replica = placement.replica();
    for instance in agent.instances() {
        let Some(placed) = replica.state.instances.get(instance.id()) else {
            continue;
        };
        let load = apps.entry(placed.app.clone()).or_insert_with(|| AppLoad {
            app: placed.app.clone(),
            in_flight: 0.0,
            requests: 0,
            memory_bytes: 0,
            instances: 0,
        });
        load.instances += 1;
        load.memory_bytes += instance.usage().memory_bytes.unwrap_or(0);
    }
    LoadReport {
        apps: apps.into_values().take(MAX_LOAD_APPS).collect(),
    }
}
