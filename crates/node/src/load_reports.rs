//! The node's load report: about every second, what its gateway saw of each app (requests in
//! flight on average, requests taken) and what the app's instances here use, sent to the
//! placement group's leader for its autoscaler (see `mycel_placement::load`).

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

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
    let mut cpu = CpuRates::default();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let report = load_report(&gateway, &agent, &placement, &mut cpu);
        if report.apps.is_empty() {
            continue;
        }
        let send = placement.report_load(report);
        if stop.run_until_cancelled(send).await.is_none() {
            return;
        }
    }
}

/// Each instance's CPU time at the last report, to turn its running total into a rate.
#[derive(Default)]
struct CpuRates {
    last: HashMap<String, (Instant, u64)>,
}

impl CpuRates {
    /// Cores `id` used since the last call, from its running total `nanos`.
    fn cores(&mut self, id: &str, nanos: u64, now: Instant) -> f64 {
        let rate = match self.last.get(id) {
            Some((at, before)) if nanos >= *before => {
                let elapsed = now.saturating_duration_since(*at).as_nanos() as f64;
                if elapsed > 0.0 {
                    (nanos - before) as f64 / elapsed
                } else {
                    0.0
                }
            }
            _ => 0.0,
        };
        self.last.insert(id.to_string(), (now, nanos));
        rate
    }
}

fn load_report(
    gateway: &GatewayMetrics,
    agent: &AgentHandle,
    placement: &PlacementHandle,
    cpu: &mut CpuRates,
) -> LoadReport {
    let now = Instant::now();
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
            cpu_cores: 0.0,
        });
        let usage = instance.usage();
        load.instances += 1;
        load.memory_bytes += usage.memory_bytes.unwrap_or(0);
        if let Some(nanos) = usage.cpu_nanos {
            load.cpu_cores += cpu.cores(instance.id(), nanos, now);
        }
    }
    // Instances that stopped are forgotten.
    let running: std::collections::HashSet<String> = agent
        .instances()
        .iter()
        .map(|i| i.id().to_string())
        .collect();
    cpu.last.retain(|id, _| running.contains(id));
    LoadReport {
        apps: apps.into_values().take(MAX_LOAD_APPS).collect(),
    }
}
