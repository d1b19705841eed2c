//! What the leader knows of the apps' load: the latest report of each node (kept in its memory,
//! never in the log), summed into one sample per app on each upkeep tick and fed to that app's
//! autoscaler window (see [`crate::autoscale`]).

use std::collections::HashMap;

use mycel_protocol::placement::LoadReport;

use crate::{
    autoscale::{Capacity, Decision, Sample, Window},
    state::PlacementState,
};

/// A report older than this no longer counts: its node stopped reporting (it left, or cannot
/// reach the leader), and what it last saw is stale.
pub const REPORT_TTL_MS: u64 = 3_000;

/// The nodes' latest load reports, and the autoscaler's windows, on the leader.
#[derive(Debug, Default)]
pub struct Autoscaler {
    /// By node (its peer id, from the connection that carried it): when it arrived, and what.
    reports: HashMap<String, (u64, LoadReport)>,
    windows: HashMap<String, Window>,
}

impl Autoscaler {
    /// Keeps `report` as `node`'s latest.
    pub fn report(&mut self, node: String, report: LoadReport, now_ms: u64) {
        self.reports.insert(node, (now_ms, report));
    }

    /// Forgets everything: this node no longer leads (a later term starts afresh).
    pub fn clear(&mut self) {
        self.reports.clear();
        self.windows.clear();
    }

    /// One tick: sums the fresh reports per app into a sample for each app with `[scale]`, and
    /// returns each such app's decision.
    pub fn tick(&mut self, state: &PlacementState, now_ms: u64) -> Vec<(String, Decision)> {
        self.reports
            .retain(|_, (at, _)| now_ms.saturating_sub(*at) <= REPORT_TTL_MS);
        let mut sums: HashMap<String, Sample> = HashMap::new();
        for (_, report) in self.reports.values() {
            for load in &report.apps {
                let sum = sums.entry(load.app.clone()).or_default();
                if load.in_flight.is_finite() && load.in_flight >= 0.0 {
                    sum.in_flight += load.in_flight;
                }
                sum.requests = sum.requests.saturating_add(load.requests);
                sum.memory_bytes = sum.memory_bytes.saturating_add(load.memory_bytes);
                if load.cpu_cores.is_finite() && load.cpu_cores >= 0.0 {
                    sum.cpu_cores += load.cpu_cores;
                }
            }
        }
        // Requests counted once: a report's `requests` covers its own window, and stays until
        // the next replaces it.
        for (_, report) in self.reports.values_mut() {
            for load in &mut report.apps {
                load.requests = 0;
            }
        }
        self.windows.retain(|app, _| state.apps.contains_key(app));
        let mut decisions = Vec::new();
        for (name, record) in &state.apps {
            let Some(spec) = &record.manifest.scale else {
                continue;
            };
            let sample = Sample {
                at_ms: now_ms,
                ..sums.get(name).copied().unwrap_or_default()
            };
            let window = self.windows.entry(name.clone()).or_default();
            window.observe(sample);
            let last_change_ms = record
                .scale
                .as_ref()
                .map_or(record.deployed_at_ms, |s| s.at_ms);
            let decision = window.decide(
                spec,
                Capacity {
                    memory_mb: record.manifest.memory_mb(),
                    cpu_cores: record.manifest.resources.cpu,
                },
                record.replicas(),
                last_change_ms,
                now_ms,
            );
            decisions.push((name.clone(), decision));
        }
        decisions
    }
}
