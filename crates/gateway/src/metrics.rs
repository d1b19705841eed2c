//! The gateway's Prometheus metrics, per app: requests by answer status, their duration (until
//! the answer's last byte) and how many are in flight. Only deployed apps get a label: a `Host`
//! that names no app is not counted, so clients cannot grow the label set.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

type Labels = Vec<(&'static str, String)>;

/// Durations from 1 ms to about 16 s.
fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

/// Cheap to clone: every clone counts into the same metrics.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    inflight: Family<Labels, Gauge>,
}

impl Default for GatewayMetrics {
    /// Metrics that count but are registered nowhere.
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            inflight: Family::default(),
        }
    }
}

impl GatewayMetrics {
    /// Registers `mycel_gateway_requests_total{app,code}`,
    /// `mycel_gateway_request_duration_seconds{app}` and `mycel_gateway_inflight{app}`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "mycel_gateway_requests",
            "Requests the gateway answered, by app and status code",
            metrics.requests.clone(),
        );
        registry.register(
            "mycel_gateway_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by app",
            metrics.duration.clone(),
        );
        registry.register(
            "mycel_gateway_inflight",
            "Requests the gateway is answering now, by app",
            metrics.inflight.clone(),
        );
        metrics
    }

    pub(crate) fn answered(&self, app: &str, code: u16) {
        self.requests
            .get_or_create(&vec![("app", app.to_string()), ("code", code.to_string())])
            .inc();
    }

    pub(crate) fn started(&self, app: &str) {
        self.inflight
            .get_or_create(&vec![("app", app.to_string())])
            .inc();
    }

    pub(crate) fn finished(&self, app: &str, seconds: f64) {
        let labels = vec![("app", app.to_string())];
        self.inflight.get_or_create(&labels).dec();
        self.duration.get_or_create(&labels).observe(seconds);
    }
}
