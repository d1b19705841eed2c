//! The gateway's Prometheus metrics, per app: requests by answer status, their duration (until
//! the answer's last byte), how many are in flight and how many are held for an app scaled to
//! zero; the time such a request waited. Only deployed apps get a label: a `Host` that names no
//! app is not counted, so clients cannot grow the label set.
//!
//! The same counts feed the node's load reports to the autoscaler ([`GatewayMetrics::take_load`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use mycel_protocol::placement::AppLoad;
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
    held: Family<Labels, Gauge>,
    cold_start: Histogram,
    load: Arc<Mutex<HashMap<String, Meter>>>,
}

impl Default for GatewayMetrics {
    /// Metrics that count but are registered nowhere.
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            inflight: Family::default(),
            held: Family::default(),
            cold_start: duration_histogram(),
            load: Arc::default(),
        }
    }
}

/// One app's load at this gateway since the last report: requests in flight integrated over
/// time, and requests taken.
#[derive(Debug)]
struct Meter {
    in_flight: u32,
    /// Request-seconds since `since`.
    integral: f64,
    last_change: std::time::Instant,
    since: std::time::Instant,
    requests: u64,
}

impl Meter {
    fn new(now: std::time::Instant) -> Self {
        Self {
            in_flight: 0,
            integral: 0.0,
            last_change: now,
            since: now,
            requests: 0,
        }
    }

    fn advance(&mut self, now: std::time::Instant) {
        let elapsed = now
            .saturating_duration_since(self.last_change)
            .as_secs_f64();
        self.integral += f64::from(self.in_flight) * elapsed;
        self.last_change = now;
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
        registry.register(
            "mycel_gateway_held_requests",
            "Requests held for an app scaled to zero while an instance starts, by app",
            metrics.held.clone(),
        );
        registry.register(
            "mycel_cold_start_seconds",
            "Time a request held for an app scaled to zero waited for an instance",
            metrics.cold_start.clone(),
        );
        metrics
    }

    /// What this gateway saw of each app since the last call: requests in flight on average,
    /// and requests taken. Apps with neither are left out (and forgotten).
    pub fn take_load(&self) -> Vec<AppLoad> {
        let now = std::time::Instant::now();
        let mut meters = self.meters();
        let mut loads = Vec::new();
        meters.retain(|app, meter| {
            meter.advance(now);
            let span = now.saturating_duration_since(meter.since).as_secs_f64();
            let in_flight = if span > 0.0 {
                meter.integral / span
            } else {
                0.0
            };
            if in_flight > 0.0 || meter.requests > 0 {
                loads.push(AppLoad {
                    app: app.clone(),
                    in_flight,
                    requests: meter.requests,
                    memory_bytes: 0,
                    instances: 0,
                    cpu_cores: 0.0,
                });
            }
            meter.integral = 0.0;
            meter.since = now;
            meter.requests = 0;
            meter.in_flight > 0 || in_flight > 0.0
        });
        loads
    }

    fn meters(&self) -> std::sync::MutexGuard<'_, HashMap<String, Meter>> {
        self.load.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn held(&self, app: &str, by: i64) {
        self.held
            .get_or_create(&vec![("app", app.to_string())])
            .inc_by(by);
    }

    pub(crate) fn cold_start(&self, seconds: f64) {
        self.cold_start.observe(seconds);
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
        let now = std::time::Instant::now();
        let mut meters = self.meters();
        // Every request comes here: the app's name is copied only for its first.
        if !meters.contains_key(app) {
            meters.insert(app.to_string(), Meter::new(now));
        }
        let Some(meter) = meters.get_mut(app) else {
            return;
        };
        meter.advance(now);
        meter.in_flight += 1;
        meter.requests += 1;
    }

    pub(crate) fn finished(&self, app: &str, seconds: f64) {
        let labels = vec![("app", app.to_string())];
        self.inflight.get_or_create(&labels).dec();
        self.duration.get_or_create(&labels).observe(seconds);
        let now = std::time::Instant::now();
        if let Some(meter) = self.meters().get_mut(app) {
            meter.advance(now);
            meter.in_flight = meter.in_flight.saturating_sub(1);
        }
    }
}
