//! The retry budget: retries may add about [`RATIO`] to an app's requests (plus a small floor, so
//! an app with little traffic can still retry), counted over a sliding window of two
//! [`WINDOW`]s. Without it, retries multiply the load on an app that fails because it is
//! overloaded. Pure: `now` comes in.

use std::time::Duration;

use tokio::time::Instant;

pub const WINDOW: Duration = Duration::from_secs(10);
/// Retries allowed per request.
pub const RATIO: f64 = 0.2;
/// Retries always allowed per window, whatever the traffic.
pub const MIN_RETRIES: u32 = 10;

#[derive(Clone, Debug)]
pub struct RetryBudget {
    window_start: Instant,
    requests: u32,
    retries: u32,
    previous_requests: u32,
    previous_retries: u32,
}

impl RetryBudget {
    pub fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            requests: 0,
            retries: 0,
            previous_requests: 0,
            previous_retries: 0,
        }
    }

    /// Counts a request (its first attempt).
    pub fn request(&mut self, now: Instant) {
        self.roll(now);
        self.requests = self.requests.saturating_add(1);
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn try_retry(&mut self, now: Instant) -> bool {
        self.roll(now);
        let requests = f64::from(self.requests) + f64::from(self.previous_requests);
        let retries = self.retries + self.previous_retries;
        if f64::from(retries) >= f64::from(MIN_RETRIES) + RATIO * requests {
            return false;
        }
        self.retries += 1;
        true
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < WINDOW {
            return;
        }
        if elapsed < 2 * WINDOW {
            self.previous_requests = self.requests;
            self.previous_retries = self.retries;
            self.window_start += WINDOW;
        } else {
            self.previous_requests = 0;
            self.previous_retries = 0;
            self.window_start = now;
        }
        self.requests = 0;
        self.retries = 0;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// However requests and retries interleave within a window, retries stay within the
        /// floor plus RATIO of the requests.
        #[test]
        fn retries_stay_within_a_fifth_of_requests(requests in 0u32..5000, tries in 0u32..5000) {
            let now = Instant::now();
            let mut budget = RetryBudget::new(now);
            let mut granted = 0;
            for i in 0..requests.max(tries) {
                if i < requests {
                    budget.request(now);
                }
                if i < tries && budget.try_retry(now) {
                    granted += 1;
                }
            }
            let limit = f64::from(MIN_RETRIES) + RATIO * f64::from(requests);
            prop_assert!(f64::from(granted) <= limit.ceil());
            // And the budget is not stingier than that when retries come after the requests.
            let mut budget = RetryBudget::new(now);
            for _ in 0..requests { budget.request(now); }
            let after = (0..tries).filter(|_| budget.try_retry(now)).count() as f64;
            prop_assert!(after >= limit.floor().min(f64::from(tries)));
        }
    }

    #[test]
    fn a_spent_budget_refills_as_windows_pass() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(t0);
        while budget.try_retry(t0) {}
        assert!(
            !budget.try_retry(t0 + WINDOW),
            "the previous window still counts"
        );
        assert!(budget.try_retry(t0 + 2 * WINDOW));
    }
}
