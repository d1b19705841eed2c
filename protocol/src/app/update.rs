//! `[update]`: how a redeploy replaces an app's instances. New instances start beside the old
//! (or, with `order = "stop_first"`, in their place), `max_parallel` at a time; an old instance
//! is retired only once a new one has passed its health check for `min_healthy_ms`. A rollout
//! that makes no progress for `healthy_deadline_ms` fails, and with `auto_revert` the previous
//! version comes back the same way. With `canary = N`, N new instances run beside the old until
//! the owner promotes them.
//!
//! Every field has a default, so an absent or partial section keeps the defaults for what it
//! omits; an unknown field or order is a parse error, a value out of range a validation error.

use serde::{Deserialize, Serialize};

use super::{ManifestError, invalid};

pub const DEFAULT_MAX_PARALLEL: u32 = 1;
pub const DEFAULT_MIN_HEALTHY_MS: u64 = 2_000;
pub const DEFAULT_HEALTHY_DEADLINE_MS: u64 = 60_000;
/// A day: a rollout that may stall longer than that is better stopped and looked at.
pub const MAX_HEALTHY_DEADLINE_MS: u64 = 86_400_000;

/// `[update]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateSpec {
    /// New instances started at once; 0 replaces them all at once.
    pub max_parallel: u32,
    /// How long a new instance must pass its health check to count as healthy.
    pub min_healthy_ms: u64,
    /// How long a rollout may go without a new instance turning healthy before it fails.
    pub healthy_deadline_ms: u64,
    /// Whether a failed rollout brings the previous version back.
    pub auto_revert: bool,
    /// New instances that run beside the old until `mycel promote`; 0 rolls straight through.
    /// More than the replicas counts as all of them.
    pub canary: u32,
    pub order: UpdateOrder,
}

impl Default for UpdateSpec {
    fn default() -> Self {
        Self {
            max_parallel: DEFAULT_MAX_PARALLEL,
            min_healthy_ms: DEFAULT_MIN_HEALTHY_MS,
            healthy_deadline_ms: DEFAULT_HEALTHY_DEADLINE_MS,
            auto_revert: true,
            canary: 0,
            order: UpdateOrder::StartFirst,
        }
    }
}

impl UpdateSpec {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub(super) fn validate(&self) -> Result<(), ManifestError> {
        if !(1..=MAX_HEALTHY_DEADLINE_MS).contains(&self.healthy_deadline_ms) {
            return Err(invalid(
                "update.healthy_deadline_ms",
                format!(
                    "from 1 to {MAX_HEALTHY_DEADLINE_MS} (got {})",
                    self.healthy_deadline_ms
                ),
            ));
        }
        if self.min_healthy_ms >= self.healthy_deadline_ms {
            return Err(invalid(
                "update.min_healthy_ms",
                format!(
                    "less than healthy_deadline_ms ({}) (got {})",
                    self.healthy_deadline_ms, self.min_healthy_ms
                ),
            ));
        }
        if self.max_parallel > super::MAX_REPLICAS {
            return Err(invalid(
                "update.max_parallel",
                format!(
                    "at most {} (got {})",
                    super::MAX_REPLICAS,
                    self.max_parallel
                ),
            ));
        }
        if self.canary > super::MAX_REPLICAS {
            return Err(invalid(
                "update.canary",
                format!("at most {} (got {})", super::MAX_REPLICAS, self.canary),
            ));
        }
        Ok(())
    }
}

/// Whether a new instance starts before the old one it replaces stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateOrder {
    /// The new one starts beside the old, which stops once the new one is healthy: the app never
    /// has fewer healthy instances than it asks for, at the cost of some extra room.
    #[default]
    StartFirst,
    /// The old one stops first: no extra room, fewer instances during the rollout.
    StopFirst,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Manifest;

    fn with(section: &str) -> Result<Manifest, ManifestError> {
        Manifest::from_toml(&format!(
            "name = \"web\"\nversion = \"1\"\nreplicas = 3\n[wasm]\nmodule = \"blake3:{}\"\n{section}",
            "c".repeat(64)
        ))
    }

    #[test]
    fn defaults_hold_for_an_absent_or_partial_section() {
        let m = with("").unwrap();
        assert_eq!(m.update, UpdateSpec::default());
        assert_eq!(m.update.max_parallel, 1);
        assert_eq!(m.update.min_healthy_ms, 2000);
        assert_eq!(m.update.healthy_deadline_ms, 60_000);
        assert!(m.update.auto_revert);
        assert_eq!(m.update.canary, 0);
        assert_eq!(m.update.order, UpdateOrder::StartFirst);
        assert!(!serde_json::to_string(&m).unwrap().contains("update"));

        let m = with("[update]\ncanary = 1\norder = \"stop_first\"\n").unwrap();
        assert_eq!(m.update.canary, 1);
        assert_eq!(m.update.order, UpdateOrder::StopFirst);
        assert_eq!(m.update.max_parallel, 1);
        let json = serde_json::to_vec(&m).unwrap();
        assert_eq!(Manifest::from_json(&json).unwrap(), m);
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let parse = |section: &str| match with(section) {
            Err(ManifestError::Parse(e)) => e,
            other => panic!("{section}: expected a parse error, got {other:?}"),
        };
        assert!(parse("[update]\norder = \"sideways\"\n").contains("sideways"));
        assert!(parse("[update]\nmax_paralel = 2\n").contains("max_paralel"));
        assert!(!parse("[update]\ncanary = -1\n").is_empty());

        let field = |section: &str| match with(section) {
            Err(e @ ManifestError::Invalid { .. }) => {
                assert_eq!(e.code(), "invalid_manifest");
                match e {
                    ManifestError::Invalid { field, .. } => field,
                    _ => unreachable!(),
                }
            }
            other => panic!("{section}: expected a validation error, got {other:?}"),
        };
        assert_eq!(field("[update]\ncanary = 1001\n"), "update.canary");
        assert_eq!(
            field("[update]\nhealthy_deadline_ms = 0\n"),
            "update.healthy_deadline_ms"
        );
        assert_eq!(
            field("[update]\nmin_healthy_ms = 60000\n"),
            "update.min_healthy_ms"
        );
        assert_eq!(
            field("[update]\nmax_parallel = 1001\n"),
            "update.max_parallel"
        );
    }
}
