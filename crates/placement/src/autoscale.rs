//! The autoscaler's pure core: an app's `[scale]`, its count now and what the leader observed of
//! its load in, the count it should run out. No I/O, no clock: the leader feeds samples (the
//! nodes' load reports summed, see `mycel_protocol::placement::LoadReport`) and `now`.
//!
//! It works as Knative's KPA does:
//! - the stable count is the load averaged over the app's `window_ms` (60 s by default) against
//!   the target (the requests in flight per instance; the memory per instance with
//!   `target_memory`);
//! - the panic count is the same over a tenth of it: when it reaches [`PANIC_THRESHOLD`]
//!   times the count now, the app panics for a stable window: it follows the panic count up and
//!   never goes down meanwhile;
//! - a step up is at most [`MAX_SCALE_UP_RATE`] times the count, a step down at most halves it,
//!   and only once the window holds a whole stable window of samples and `cooldown_ms` passed
//!   since the last change;
//! - the count stays within `min..=max`; with `min = 0` it drops to zero once no request came for
//!   `scale_to_zero_after_ms`, and any request (one held by a gateway counts) brings one back.

use std::collections::VecDeque;

use mycel_protocol::{app::ScaleSpec, placement::ScaleSignals};

pub const PANIC_THRESHOLD: f64 = 2.0;
/// Samples are kept this long: the longest window an app may ask for.
const KEPT_MS: u64 = mycel_protocol::app::MAX_WINDOW_MS;
pub const MAX_SCALE_UP_RATE: u32 = 10;

/// One observation of an app's load, summed over the nodes' latest reports.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub at_ms: u64,
    /// Requests in flight at every gateway, held ones included.
    pub in_flight: f64,
    /// Requests taken since the previous sample.
    pub requests: u64,
    /// Memory the app's instances use.
    pub memory_bytes: u64,
    /// CPU the app's instances use, in cores.
    pub cpu_cores: f64,
}

/// What one instance of the app may use: its manifest's `memory_mb` and `cpu`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Capacity {
    pub memory_mb: u64,
    pub cpu_cores: f64,
}

/// What the leader remembers of one app's load between decisions (in its memory only: a new
/// leader starts an empty window, and scales nothing down until it is whole).
#[derive(Clone, Debug, Default)]
pub struct Window {
    samples: VecDeque<Sample>,
    /// When this leader began to observe the app.
    since_ms: Option<u64>,
    last_request_ms: Option<u64>,
    panic_until_ms: Option<u64>,
}

/// What the app should run, and why (for a person).
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub desired: u32,
    pub reason: String,
    pub signals: ScaleSignals,
}

impl Window {
    /// Adds a sample, forgetting those older than any window.
    pub fn observe(&mut self, sample: Sample) {
        self.since_ms.get_or_insert(sample.at_ms);
        if sample.requests > 0 || sample.in_flight > 0.0 {
            self.last_request_ms = Some(sample.at_ms);
        }
        self.samples.push_back(sample);
        let horizon = sample.at_ms.saturating_sub(KEPT_MS);
        while self.samples.front().is_some_and(|s| s.at_ms < horizon) {
            self.samples.pop_front();
        }
    }

    /// The mean of `value` over the samples of the last `span_ms`.
    fn mean(&self, now_ms: u64, span_ms: u64, value: impl Fn(&Sample) -> f64) -> f64 {
        let from = now_ms.saturating_sub(span_ms);
        let (sum, n) = self
            .samples
            .iter()
            .filter(|s| s.at_ms >= from)
            .fold((0.0, 0u32), |(sum, n), s| (sum + value(s), n + 1));
        if n == 0 { 0.0 } else { sum / f64::from(n) }
    }

    /// The count `spec` calls for at `now_ms`, for an app running `current` instances of
    /// `capacity` each whose count last changed at `last_change_ms`.
    pub fn decide(
        &mut self,
        spec: &ScaleSpec,
        capacity: Capacity,
        current: u32,
        last_change_ms: u64,
        now_ms: u64,
    ) -> Decision {
        let stable_window = spec.window_ms;
        let stable_load = self.mean(now_ms, stable_window, |s| s.in_flight);
        let panic_load = self.mean(now_ms, stable_window / 10, |s| s.in_flight);
        let count_for = |load: f64, target: f64| (load / target).ceil().min(1e6) as u32;
        let (mut stable, mut panic) = (0, 0);
        let mut why = String::new();
        if let Some(target) = spec.concurrency_target() {
            stable = count_for(stable_load, target);
            panic = count_for(panic_load, target);
            let per_instance = stable_load / f64::from(current.max(1));
            why = format!("{per_instance:.1} in flight per instance, target {target}");
        }
        // A resource target: the count that keeps each instance at `fraction` of what it may
        // use, over the stable and the panic window; the reason names the one that decides.
        let mut resource = |name: &str, fraction: f64, limit: f64, used: (f64, f64)| {
            let per_instance = (fraction * limit).max(f64::MIN_POSITIVE);
            let (wanted, burst) = (
                count_for(used.0, per_instance),
                count_for(used.1, per_instance),
            );
            if wanted.max(burst) > stable.max(panic) || why.is_empty() {
                let share = used.0 / f64::from(current.max(1)) / limit.max(f64::MIN_POSITIVE);
                why = format!(
                    "{:.0}% of {name} per instance, target {:.0}%",
                    share * 100.0,
                    fraction * 100.0
                );
            }
            stable = stable.max(wanted);
            panic = panic.max(burst);
        };
        // Memory is a level, not a rate: its last sample counts for both windows.
        let memory = self.samples.back().map_or(0, |s| s.memory_bytes);
        if let Some(fraction) = spec.target_memory {
            let limit = (capacity.memory_mb * 1024 * 1024) as f64;
            resource("memory", fraction, limit, (memory as f64, memory as f64));
        }
        let stable_cpu = self.mean(now_ms, stable_window, |s| s.cpu_cores);
        if let Some(fraction) = spec.target_cpu {
            let panic_cpu = self.mean(now_ms, stable_window / 10, |s| s.cpu_cores);
            resource("cpu", fraction, capacity.cpu_cores, (stable_cpu, panic_cpu));
        }
        if current > 0 && f64::from(panic) >= PANIC_THRESHOLD * f64::from(current) {
            self.panic_until_ms = Some(now_ms + stable_window);
        }
        let panicking = self.panic_until_ms.is_some_and(|until| now_ms < until);
        let mut desired = if panicking {
            why = format!("panic: {why}");
            current.max(panic)
        } else {
            stable
        };

        // Some instance runs until the app has been idle long enough (min 0), or always.
        // Idle since the last request, this leader's first look, or the last change (an app
        // just activated for a held request gets its whole idle time before it stops again,
        // whenever the request's load report arrives).
        let since = self.since_ms.unwrap_or(now_ms);
        let active_at = self.last_request_ms.unwrap_or(since).max(last_change_ms);
        let idle_for = now_ms.saturating_sub(active_at);
        let may_stop = spec.min == 0 && (current == 0 || idle_for >= spec.scale_to_zero_after_ms);
        let floor = if may_stop { 0 } else { spec.min.max(1) };
        if desired < floor {
            desired = floor;
        }
        if desired == 0 && current > 0 {
            why = format!("no request for {} s", idle_for / 1000);
        }

        if desired > current {
            desired = desired.min(current.saturating_mul(MAX_SCALE_UP_RATE).max(1));
        } else if desired < current {
            let whole_window = now_ms.saturating_sub(since) >= stable_window;
            let cooled = now_ms.saturating_sub(last_change_ms) >= spec.cooldown_ms;
            if panicking || !cooled || !(whole_window || desired == 0) {
                desired = current;
            } else if desired > 0 {
                // Idle long enough goes straight to zero; a lighter load halves at most.
                desired = desired.max(current / 2);
            }
        }
        Decision {
            desired: spec.clamp(desired).max(floor.min(spec.max)),
            reason: why,
            signals: ScaleSignals {
                in_flight: stable_load,
                memory_bytes: memory,
                cpu_cores: stable_cpu,
            },
        }
    }
}

#[cfg(test)]
mod tests;
