//! The node's own figures, sampled every second from what its parts already know:
//! - the placement group: `mycel_raft_term`, `mycel_raft_commit_index`,
//!   `mycel_raft_applied_index`, `mycel_raft_leader_changes_total` (changes this node saw);
//! - the scheduler: `mycel_instances_placed` and `mycel_replicas_unplaced` (all apps);
//! - the blob store: `mycel_blobs` and `mycel_blob_store_bytes`;
//! - the agent: `mycel_instance_restarts_total` and `mycel_health_checks_failed_total`; of
//!   volumes, `mycel_volume_snapshots_total`, `mycel_volume_snapshot_bytes_total` (what they
//!   stored), `mycel_volume_restores_total` and `mycel_volume_restore_seconds_total`;
//! - every local instance: `mycel_instance_memory_bytes{app,instance}` and
//!   `mycel_instance_cpu_seconds_total{app,instance}`.

use std::{
    collections::BTreeSet,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use mycel_agent::AgentHandle;
use mycel_blobs::BlobStore;
use mycel_placement::PlacementHandle;
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio_util::sync::CancellationToken;

type Labels = Vec<(&'static str, String)>;

/// How often the figures are sampled.
const EVERY: Duration = Duration::from_secs(1);

/// The metrics, registered; [`track`] keeps them current.
#[derive(Clone, Default)]
pub(crate) struct NodeMetrics {
    term: Gauge,
    committed: Gauge,
    applied: Gauge,
    leader_changes: Counter,
    placed: Gauge,
    unplaced: Gauge,
    blobs: Gauge,
    blob_bytes: Gauge,
    restarts: Counter,
    failed_checks: Counter,
    volume_snapshots: Counter,
    volume_snapshot_bytes: Counter,
    volume_restores: Counter,
    volume_restore_seconds: Counter<f64, AtomicU64>,
    memory: Family<Labels, Gauge>,
    cpu: Family<Labels, Gauge<f64, AtomicU64>>,
}

pub(crate) fn register(registry: &mut Registry) -> NodeMetrics {
    let m = NodeMetrics::default();
    let gauges: [(&str, &str, &Gauge); 7] = [
        (
            "mycel_raft_term",
            "The placement group's term, as this node knows it",
            &m.term,
        ),
        (
            "mycel_raft_commit_index",
            "The last committed entry this node knows of",
            &m.committed,
        ),
        (
            "mycel_raft_applied_index",
            "The last entry this node's replica applied",
            &m.applied,
        ),
        (
            "mycel_instances_placed",
            "Instances the placement group placed, all apps",
            &m.placed,
        ),
        (
            "mycel_replicas_unplaced",
            "Wanted replicas that have no node, all apps",
            &m.unplaced,
        ),
        (
            "mycel_blobs",
            "Blobs this node's store holds whole",
            &m.blobs,
        ),
        (
            "mycel_blob_store_bytes",
            "Bytes of the blobs this node's store holds",
            &m.blob_bytes,
        ),
    ];
    for (name, help, gauge) in gauges {
        registry.register(name, help, gauge.clone());
    }
    let counters: [(&str, &str, &Counter); 6] = [
        (
            "mycel_raft_leader_changes",
            "Leader changes this node saw",
            &m.leader_changes,
        ),
        (
            "mycel_instance_restarts",
            "Local instances restarted after failing or ending",
            &m.restarts,
        ),
        (
            "mycel_health_checks_failed",
            "Failed health checks of local instances",
            &m.failed_checks,
        ),
        (
            "mycel_volume_snapshots",
            "Volume snapshots this node took",
            &m.volume_snapshots,
        ),
        (
            "mycel_volume_snapshot_bytes",
            "Bytes this node's volume snapshots added to the blob store",
            &m.volume_snapshot_bytes,
        ),
        (
            "mycel_volume_restores",
            "Volumes this node restored from a snapshot",
            &m.volume_restores,
        ),
    ];
    for (name, help, counter) in counters {
        registry.register(name, help, counter.clone());
    }
    registry.register(
        "mycel_volume_restore_seconds",
        "Time this node spent restoring volumes from snapshots, fetching included",
        m.volume_restore_seconds.clone(),
    );
    registry.register(
        "mycel_instance_memory_bytes",
        "Memory each local instance uses now",
        m.memory.clone(),
    );
    registry.register(
        "mycel_instance_cpu_seconds",
        "CPU time each local instance used since it started (a counter: it restarts with it)",
        m.cpu.clone(),
    );
    m
}

/// Samples every second until `shutdown`.
pub(crate) async fn track(
    metrics: NodeMetrics,
    placement: PlacementHandle,
    agent: AgentHandle,
    blobs: BlobStore,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    let mut leader = None;
    let mut counted = [0u64; 6];
    let mut instances: BTreeSet<Labels> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let cluster = placement.cluster();
        metrics.term.set(as_i64(cluster.term));
        metrics
            .committed
            .set(as_i64(cluster.committed.unwrap_or(0)));
        if cluster.leader.is_some() && cluster.leader != leader {
            if leader.is_some() {
                metrics.leader_changes.inc();
            }
            leader = cluster.leader;
        }
        let replica = placement.replica();
        metrics
            .applied
            .set(as_i64(replica.applied_index.unwrap_or(0)));
        metrics
            .placed
            .set(as_i64(replica.state.instances.len() as u64));
        let unplaced: u64 = replica
            .state
            .apps
            .values()
            .map(|record| {
                let placed = replica.state.instances_of(&record.manifest.name).count() as u64;
                u64::from(record.replicas()).saturating_sub(placed)
            })
            .sum();
        metrics.unplaced.set(as_i64(unplaced));
        drop(replica);
        if let Ok((count, bytes)) = blobs.totals() {
            metrics.blobs.set(as_i64(count));
            metrics.blob_bytes.set(as_i64(bytes));
        }
        let counts = agent.counts();
        let now = [
            &counts.restarts,
            &counts.failed_checks,
            &counts.volume_snapshots,
            &counts.volume_snapshot_bytes,
            &counts.volume_restores,
            &counts.volume_restore_micros,
        ]
        .map(|count| count.load(Ordering::Relaxed));
        let added: Vec<u64> = now
            .iter()
            .zip(counted)
            .map(|(now, then)| now.saturating_sub(then))
            .collect();
        metrics.restarts.inc_by(added[0]);
        metrics.failed_checks.inc_by(added[1]);
        metrics.volume_snapshots.inc_by(added[2]);
        metrics.volume_snapshot_bytes.inc_by(added[3]);
        metrics.volume_restores.inc_by(added[4]);
        metrics.volume_restore_seconds.inc_by(added[5] as f64 / 1e6);
        counted = now;
        let mut seen = BTreeSet::new();
        for (app, instance) in agent.instances_by_app() {
            let labels = vec![("app", app), ("instance", instance.id().to_owned())];
            let usage = instance.usage();
            if let Some(memory) = usage.memory_bytes {
                metrics.memory.get_or_create(&labels).set(as_i64(memory));
            }
            if let Some(nanos) = usage.cpu_nanos {
                metrics.cpu.get_or_create(&labels).set(nanos as f64 / 1e9);
            }
            seen.insert(labels);
        }
        // An instance that went takes its series with it.
        for gone in instances.difference(&seen) {
            metrics.memory.remove(gone);
            metrics.cpu.remove(gone);
        }
        instances = seen;
    }
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
