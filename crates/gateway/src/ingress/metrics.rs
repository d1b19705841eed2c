//! The ingress's Prometheus metrics, per app: connections taken, and bytes carried each way.
//! Only apps that publish a port get a label, so clients cannot grow the label set.

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

type Labels = Vec<(&'static str, String)>;

/// Cheap to clone: every clone counts into the same metrics.
#[derive(Clone, Debug, Default)]
pub struct IngressMetrics {
    connections: Family<Labels, Counter>,
    received: Family<Labels, Counter>,
    sent: Family<Labels, Counter>,
}

impl IngressMetrics {
    /// Registers `mycel_ingress_connections_total{app}`, `mycel_ingress_bytes_received_total{app}`
    /// and `mycel_ingress_bytes_sent_total{app}`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "mycel_ingress_connections",
            "Client connections taken at this node's published ports",
            metrics.connections.clone(),
        );
        registry.register(
            "mycel_ingress_bytes_received",
            "Bytes received from clients at this node's published ports",
            metrics.received.clone(),
        );
        registry.register(
            "mycel_ingress_bytes_sent",
            "Bytes sent to clients from this node's published ports",
            metrics.sent.clone(),
        );
        metrics
    }

    pub(crate) fn connection(&self, app: &str) {
        self.connections.get_or_create(&labels(app)).inc();
    }

    /// The counters of `app`'s bytes received from and sent to clients, counted as they pass.
    pub(crate) fn bytes(&self, app: &str) -> (Counter, Counter) {
        let labels = labels(app);
        let received = self.received.get_or_create(&labels).clone();
        let sent = self.sent.get_or_create(&labels).clone();
        (received, sent)
    }
}

fn labels(app: &str) -> Labels {
    vec![("app", app.to_owned())]
}
