//! Outlier ejection, the circuit breaker: an instance that fails `consecutive_failures` requests
//! in a row is ejected for `base_ejection_ms` × the times it was ejected (at most
//! [`MAX_MULTIPLIER`] times the base), then gets requests again; each base period it then serves
//! without being ejected takes one off the multiplier. Which failures count, and how many of an
//! app's instances may be out at once, the caller decides ([`super::Balancer`]). Pure: `now`
//! comes in.

use std::time::Duration;

use mycel_protocol::app::OutlierSpec;
use tokio::time::Instant;

/// The longest ejection, in base periods (Envoy's default maximum is ten bases, too).
pub const MAX_MULTIPLIER: u32 = 10;

/// One instance's failure record.
#[derive(Clone, Debug, Default)]
pub struct Outlier {
    consecutive: u32,
    ejected_until: Option<Instant>,
    times_ejected: u32,
    /// When the multiplier was last lowered (or the instance came back).
    calm_since: Option<Instant>,
}

impl Outlier {
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    pub fn times_ejected(&self) -> u32 {
        self.times_ejected
    }

    /// Records an answer that was not a failure.
    pub fn success(&mut self, spec: &OutlierSpec, now: Instant) {
        self.consecutive = 0;
        if self.times_ejected == 0 || self.is_ejected(now) {
            return;
        }
        let base = Duration::from_millis(spec.base_ejection_ms);
        let since = self.calm_since.or(self.ejected_until).unwrap_or(now);
        if now.saturating_duration_since(since) >= base {
            self.times_ejected -= 1;
            self.calm_since = Some(now);
        }
    }

    /// Records a failure; with `may_eject`, one that makes `consecutive_failures` in a row
    /// ejects the instance. Returns whether it did.
    pub fn failure(&mut self, spec: &OutlierSpec, may_eject: bool, now: Instant) -> bool {
        if self.is_ejected(now) {
            // Failures of requests sent before the ejection say nothing new.
            return false;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        if self.consecutive < spec.consecutive_failures || !may_eject {
            return false;
        }
        self.consecutive = 0;
        self.times_ejected = (self.times_ejected + 1).min(MAX_MULTIPLIER);
        let until = now + Duration::from_millis(spec.base_ejection_ms) * self.times_ejected;
        self.ejected_until = Some(until);
        self.calm_since = Some(until);
        true
    }
}

/// How many of `instances` may be ejected at once: `max_ejection_percent` of them, rounded down
/// but at least one (as Envoy does), and none when the percentage is 0.
pub fn max_ejected(spec: &OutlierSpec, instances: usize) -> usize {
    if spec.max_ejection_percent == 0 {
        return 0;
    }
    (instances * spec.max_ejection_percent as usize / 100).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(failures: u32, base_ms: u64) -> OutlierSpec {
        OutlierSpec {
            consecutive_failures: failures,
            base_ejection_ms: base_ms,
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn consecutive_failures_eject_for_a_growing_time() {
        let spec = spec(3, 1000);
        let t0 = Instant::now();
        let mut o = Outlier::default();
        assert!(!o.failure(&spec, true, t0));
        assert!(!o.failure(&spec, true, t0));
        o.success(&spec, t0);
        assert!(!o.failure(&spec, true, t0));
        assert!(!o.failure(&spec, true, t0), "a success restarts the count");
        assert!(o.failure(&spec, true, t0));
        assert!(o.is_ejected(t0 + Duration::from_millis(999)));
        let back = t0 + Duration::from_millis(1000);
        assert!(!o.is_ejected(back));

        // Ejected again at once: twice as long.
        for _ in 0..2 {
            assert!(!o.failure(&spec, true, back));
        }
        assert!(o.failure(&spec, true, back));
        assert_eq!(o.times_ejected(), 2);
        assert!(o.is_ejected(back + Duration::from_millis(1999)));
        assert!(!o.is_ejected(back + Duration::from_millis(2000)));

        // Serving well for a base period after it came back lowers the multiplier.
        let again = back + Duration::from_millis(2000);
        o.success(&spec, again);
        assert_eq!(o.times_ejected(), 2);
        o.success(&spec, again + Duration::from_millis(1000));
        assert_eq!(o.times_ejected(), 1);
    }

    #[test]
    fn the_multiplier_is_capped_and_a_refused_ejection_waits() {
        let spec = spec(1, 10);
        let mut now = Instant::now();
        let mut o = Outlier::default();
        for _ in 0..20 {
            assert!(o.failure(&spec, true, now));
            now += Duration::from_secs(1);
        }
        assert_eq!(o.times_ejected(), MAX_MULTIPLIER);
        let mut o = Outlier::default();
        assert!(
            !o.failure(&spec, false, now),
            "not allowed: the percentage is reached"
        );
        assert!(!o.is_ejected(now));
    }

    #[test]
    fn at_most_the_percentage_and_at_least_one() {
        let s = |p| OutlierSpec {
            max_ejection_percent: p,
            ..OutlierSpec::default()
        };
        assert_eq!(max_ejected(&s(50), 3), 1);
        assert_eq!(max_ejected(&s(50), 4), 2);
        assert_eq!(max_ejected(&s(50), 1), 1);
        assert_eq!(max_ejected(&s(100), 3), 3);
        assert_eq!(max_ejected(&s(0), 3), 0);
    }
}
