//! Peak-EWMA of an instance's latency (Finagle's, as tower's `load::PeakEwma` and linkerd2-proxy
//! use it): a latency above the estimate replaces it at once, so a slowing instance is avoided
//! from its first slow answer; one below it is blended in by how long ago the estimate was last
//! updated; and an estimate that nothing updates decays towards zero, so an instance avoided
//! for its slowness is tried again now and then. Pure: `now` comes in.

use std::time::Duration;

use tokio::time::Instant;

/// The estimate for an instance that never answered this gateway: low enough that a new instance
/// is tried soon, high enough that it does not take every request before its first answer.
pub const DEFAULT_RTT: Duration = Duration::from_millis(10);
/// How fast old latencies lose weight (linkerd2-proxy's and Finagle's default).
pub const DECAY: Duration = Duration::from_secs(10);

/// One instance's latency estimate, in nanoseconds.
#[derive(Clone, Debug)]
pub struct PeakEwma {
    rtt_ns: f64,
    updated: Instant,
    /// Whether an answer was ever observed; the first one replaces the default outright.
    measured: bool,
}

impl PeakEwma {
    pub fn new(now: Instant) -> Self {
        Self {
            rtt_ns: nanos(DEFAULT_RTT),
            updated: now,
            measured: false,
        }
    }

    /// Whether an answer was ever observed.
    pub fn is_measured(&self) -> bool {
        self.measured
    }

    /// The estimate at `now`, decayed for the time nothing updated it.
    pub fn estimate(&mut self, now: Instant) -> f64 {
        let decay = self.decay_since(now);
        self.rtt_ns *= decay;
        self.updated = self.updated.max(now);
        self.rtt_ns
    }

    /// Records an answer that took `rtt`, observed at `now`.
    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt = nanos(rtt);
        if !self.measured || rtt > self.rtt_ns {
            self.rtt_ns = rtt;
            self.measured = true;
        } else {
            let decay = self.decay_since(now);
            self.rtt_ns = self.rtt_ns * decay + rtt * (1.0 - decay);
        }
        self.updated = self.updated.max(now);
    }

    fn decay_since(&self, now: Instant) -> f64 {
        let elapsed = nanos(now.saturating_duration_since(self.updated));
        (-elapsed / nanos(DECAY)).exp()
    }
}

fn nanos(d: Duration) -> f64 {
    d.as_nanos() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e6;

    #[test]
    fn a_peak_replaces_the_estimate_and_a_lower_latency_blends_in() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        assert_eq!(e.estimate(t0), 10.0 * MS);
        e.observe(Duration::from_millis(2), t0);
        assert_eq!(
            e.estimate(t0),
            2.0 * MS,
            "the first answer replaces the default"
        );
        e.observe(Duration::from_millis(50), t0);
        assert_eq!(e.estimate(t0), 50.0 * MS, "a peak is taken at once");
        // A fast answer a decay period later pulls the estimate most of the way down.
        let later = t0 + DECAY;
        e.observe(Duration::from_millis(2), later);
        let est = e.estimate(later) / MS;
        assert!((19.0..21.0).contains(&est), "{est}");
    }

    #[test]
    fn an_idle_estimate_decays_towards_zero() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(Duration::from_millis(100), t0);
        let a = e.estimate(t0 + Duration::from_secs(1));
        let b = e.estimate(t0 + Duration::from_secs(5));
        assert!(a < 100.0 * MS && b < a && b > 50.0 * MS, "{a} {b}");
        // Reading twice at the same instant decays once.
        assert_eq!(e.estimate(t0 + Duration::from_secs(5)), b);
    }
}
