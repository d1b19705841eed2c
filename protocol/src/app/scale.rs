//! `[scale]`: the app scales itself between `min` and `max` instances on the load its gateways
//! see (requests in flight per instance against `target_concurrency`, by default) and the memory
//! its instances use (`target_memory`). With `min = 0` it drops to no instance after
//! `scale_to_zero_after_ms` without a request, and the next request brings one back. `replicas`
//! is where it starts.
//!
//! Every field has a default, so an absent or partial section keeps the defaults for what it
//! omits; an unknown field is a parse error, a value out of range a validation error.

use serde::{Deserialize, Serialize};

use super::{ManifestError, invalid};

pub const DEFAULT_SCALE_MIN: u32 = 1;
pub const DEFAULT_SCALE_MAX: u32 = 10;
/// Requests in flight per instance the autoscaler aims for when no other target is given.
pub const DEFAULT_TARGET_CONCURRENCY: f64 = 10.0;
pub const MAX_TARGET_CONCURRENCY: f64 = 100_000.0;
pub const DEFAULT_SCALE_TO_ZERO_AFTER_MS: u64 = 60_000;
pub const DEFAULT_COOLDOWN_MS: u64 = 30_000;
/// A day: the longest idle time or cooldown worth waiting for.
pub const MAX_SCALE_WAIT_MS: u64 = 86_400_000;
/// The shortest idle time before scaling to zero: less would stop an app between two requests.
pub const MIN_SCALE_TO_ZERO_AFTER_MS: u64 = 1_000;
/// The load is averaged over this window (the panic window is a tenth of it).
pub const DEFAULT_WINDOW_MS: u64 = 60_000;
pub const MIN_WINDOW_MS: u64 = 6_000;
pub const MAX_WINDOW_MS: u64 = 3_600_000;

/// `[scale]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScaleSpec {
    /// Fewest instances; 0 lets the app scale to zero when idle.
    pub min: u32,
    pub max: u32,
    /// Requests in flight per instance to aim for (the default signal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_concurrency: Option<f64>,
    /// Fraction of `cpu` each instance should use (its CPU time: the wasm guest's, the
    /// container's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_cpu: Option<f64>,
    /// Fraction of `memory_mb` each instance should use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_memory: Option<f64>,
    /// How long without a request before an app with `min = 0` runs no instance.
    pub scale_to_zero_after_ms: u64,
    /// How long after a change before the count may go down.
    pub cooldown_ms: u64,
    /// The load is averaged over this long (Knative's stable window); a tenth of it is the
    /// panic window that catches bursts.
    pub window_ms: u64,
}

impl Default for ScaleSpec {
    fn default() -> Self {
        Self {
            min: DEFAULT_SCALE_MIN,
            max: DEFAULT_SCALE_MAX,
            target_concurrency: None,
            target_cpu: None,
            target_memory: None,
            scale_to_zero_after_ms: DEFAULT_SCALE_TO_ZERO_AFTER_MS,
            cooldown_ms: DEFAULT_COOLDOWN_MS,
            window_ms: DEFAULT_WINDOW_MS,
        }
    }
}

impl ScaleSpec {
    /// The concurrency target: the one given, else the default unless another target is given.
    pub fn concurrency_target(&self) -> Option<f64> {
        match (self.target_concurrency, self.target_cpu, self.target_memory) {
            (Some(target), _, _) => Some(target),
            (None, None, None) => Some(DEFAULT_TARGET_CONCURRENCY),
            _ => None,
        }
    }

    /// `count` within `min..=max`.
    pub fn clamp(&self, count: u32) -> u32 {
        count.clamp(self.min, self.max)
    }

    pub(super) fn validate(&self, replicas: u32) -> Result<(), ManifestError> {
        if self.max == 0 || self.max > super::MAX_REPLICAS {
            return Err(invalid(
                "scale.max",
                format!("from 1 to {} (got {})", super::MAX_REPLICAS, self.max),
            ));
        }
        if self.min > self.max {
            return Err(invalid(
                "scale.min",
                format!("at most max ({}) (got {})", self.max, self.min),
            ));
        }
        if !(self.min..=self.max).contains(&replicas) {
            return Err(invalid(
                "replicas",
                format!(
                    "the starting count, from scale.min to scale.max ({}..={}) (got {replicas})",
                    self.min, self.max
                ),
            ));
        }
        let fraction = |field: &str, value: Option<f64>, most: f64| match value {
            Some(v) if !(v.is_finite() && v > 0.0 && v <= most) => Err(invalid(
                field,
                format!("a number above 0 and at most {most} (got {v})"),
            )),
            _ => Ok(()),
        };
        fraction(
            "scale.target_concurrency",
            self.target_concurrency,
            MAX_TARGET_CONCURRENCY,
        )?;
        fraction("scale.target_cpu", self.target_cpu, 1.0)?;
        fraction("scale.target_memory", self.target_memory, 1.0)?;
        if !(MIN_SCALE_TO_ZERO_AFTER_MS..=MAX_SCALE_WAIT_MS).contains(&self.scale_to_zero_after_ms)
        {
            return Err(invalid(
                "scale.scale_to_zero_after_ms",
                format!(
                    "from {MIN_SCALE_TO_ZERO_AFTER_MS} to {MAX_SCALE_WAIT_MS} (got {})",
                    self.scale_to_zero_after_ms
                ),
            ));
        }
        if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&self.window_ms) {
            return Err(invalid(
                "scale.window_ms",
                format!(
                    "from {MIN_WINDOW_MS} to {MAX_WINDOW_MS} (got {})",
                    self.window_ms
                ),
            ));
        }
        if self.cooldown_ms > MAX_SCALE_WAIT_MS {
            return Err(invalid(
                "scale.cooldown_ms",
                format!("at most {MAX_SCALE_WAIT_MS} (got {})", self.cooldown_ms),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Manifest;

    fn with(replicas: u32, section: &str) -> Result<Manifest, ManifestError> {
        Manifest::from_toml(&format!(
            "name = \"web\"\nversion = \"1\"\nreplicas = {replicas}\n[wasm]\n\
             module = \"blake3:{}\"\n{section}",
            "c".repeat(64)
        ))
    }

    #[test]
    fn defaults_hold_for_a_partial_section_and_no_section_means_no_autoscaling() {
        assert_eq!(with(1, "").unwrap().scale, None);
        let m = with(0, "[scale]\nmin = 0\n").unwrap();
        let scale = m.scale.clone().unwrap();
        assert_eq!((scale.min, scale.max), (0, 10));
        assert_eq!(scale.concurrency_target(), Some(10.0));
        assert_eq!(scale.scale_to_zero_after_ms, 60_000);
        assert_eq!(scale.cooldown_ms, 30_000);
        let json = serde_json::to_vec(&m).unwrap();
        assert_eq!(Manifest::from_json(&json).unwrap(), m);

        let memory = with(1, "[scale]\ntarget_memory = 0.8\n")
            .unwrap()
            .scale
            .unwrap();
        assert_eq!(
            memory.concurrency_target(),
            None,
            "another target replaces the default"
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let field = |replicas: u32, section: &str| match with(replicas, section) {
            Err(ManifestError::Invalid { field, .. }) => field,
            other => panic!("{section}: expected a validation error, got {other:?}"),
        };
        assert_eq!(field(1, "[scale]\nmax = 0\n"), "scale.max");
        assert_eq!(field(1, "[scale]\nmax = 1001\n"), "scale.max");
        assert_eq!(field(3, "[scale]\nmin = 3\nmax = 2\n"), "scale.min");
        assert_eq!(field(5, "[scale]\nmax = 4\n"), "replicas");
        assert_eq!(field(0, "[scale]\nmin = 1\n"), "replicas");
        assert_eq!(
            field(1, "[scale]\ntarget_concurrency = 0\n"),
            "scale.target_concurrency"
        );
        assert_eq!(
            field(1, "[scale]\ntarget_concurrency = nan\n"),
            "scale.target_concurrency"
        );
        assert_eq!(field(1, "[scale]\ntarget_cpu = 1.5\n"), "scale.target_cpu");
        assert_eq!(
            field(1, "[scale]\ntarget_memory = -0.1\n"),
            "scale.target_memory"
        );
        assert_eq!(
            field(1, "[scale]\nscale_to_zero_after_ms = 10\n"),
            "scale.scale_to_zero_after_ms"
        );
        assert_eq!(field(1, "[scale]\nwindow_ms = 1000\n"), "scale.window_ms");
        assert_eq!(
            field(1, "[scale]\ncooldown_ms = 100000000\n"),
            "scale.cooldown_ms"
        );
        assert!(matches!(
            with(1, "[scale]\nmaximum = 3\n"),
            Err(ManifestError::Parse(_))
        ));
    }
}
