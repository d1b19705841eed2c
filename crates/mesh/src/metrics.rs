//! The mesh's Prometheus metrics.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use mycel_protocol::api::MemberStatus;

/// Why an announcement was dropped; the label of `mycel_adverts_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The signature does not verify, or the signer is not the peer that published it.
    Forged,
    /// Not newer than what this node already holds.
    Stale,
    /// Larger than the announcement limit.
    Oversized,
    /// Not a well-formed frame.
    Malformed,
    /// Well-formed and signed, but breaks a limit (names, labels, addresses).
    Invalid,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Forged => "forged",
            DropReason::Stale => "stale",
            DropReason::Oversized => "oversized",
            DropReason::Malformed => "malformed",
            DropReason::Invalid => "invalid",
        }
    }
}

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Clone)]
pub(crate) struct MeshMetrics {
    pub(crate) peers_connected: Gauge,
    pub(crate) adverts_received: Counter,
    pub(crate) adverts_published: Counter,
    adverts_dropped: Family<Labels, Counter>,
    records_refused: Family<Labels, Counter>,
    members: Family<Labels, Gauge>,
    handshakes_refused: Family<Labels, Counter>,
}

impl MeshMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            peers_connected: Gauge::default(),
            adverts_received: Counter::default(),
            adverts_published: Counter::default(),
            adverts_dropped: Family::default(),
            records_refused: Family::default(),
            members: Family::default(),
            handshakes_refused: Family::default(),
        };
        registry.register(
            "mycel_peers_connected",
            "Peers this node holds a connection to",
            metrics.peers_connected.clone(),
        );
        registry.register(
            "mycel_adverts_received",
            "Valid announcements received (gossip and member sync)",
            metrics.adverts_received.clone(),
        );
        registry.register(
            "mycel_adverts_published",
            "Announcements this node published about itself",
            metrics.adverts_published.clone(),
        );
        registry.register(
            "mycel_adverts_dropped",
            "Announcements dropped, by reason",
            metrics.adverts_dropped.clone(),
        );
        registry.register(
            "mycel_dht_records_refused",
            "Records peers put into the DHT that this node refused, by reason",
            metrics.records_refused.clone(),
        );
        registry.register(
            "mycel_members",
            "Other nodes in this node's view, by status",
            metrics.members.clone(),
        );
        registry.register(
            "mycel_handshakes_refused",
            "Connections refused because the peer does not hold this private mesh's secret, by direction",
            metrics.handshakes_refused.clone(),
        );
        // Every reason shows from the start, so a dashboard sees zeros rather than gaps.
        for reason in [
            DropReason::Forged,
            DropReason::Stale,
            DropReason::Oversized,
            DropReason::Malformed,
            DropReason::Invalid,
        ] {
            let _ = metrics
                .adverts_dropped
                .get_or_create(&vec![("reason", reason.as_str())]);
        }
        metrics
    }

    /// The refusal counters the private transport increments (they show from the start).
    pub(crate) fn refusals(&self) -> crate::transport::Refusals {
        let counter = |direction| {
            self.handshakes_refused
                .get_or_create(&vec![("direction", direction)])
                .clone()
        };
        crate::transport::Refusals::new(counter("inbound"), counter("outbound"))
    }

    pub(crate) fn dropped(&self, reason: DropReason) {
        self.adverts_dropped
            .get_or_create(&vec![("reason", reason.as_str())])
            .inc();
    }

    /// A record a peer put was refused: `forged`, `oversized`, `malformed`, `invalid` or
    /// `expired`.
    pub(crate) fn record_refused(&self, reason: &'static str) {
        self.records_refused
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    pub(crate) fn set_members(&self, status: MemberStatus, count: usize) {
        self.members
            .get_or_create(&vec![("status", status.as_str())])
            .set(count as i64);
    }
}
