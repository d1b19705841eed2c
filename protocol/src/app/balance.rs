//! `[balance]`: how every gateway spreads an app's requests over its healthy instances, how many
//! times a failed request is retried elsewhere, and when an instance that keeps failing is
//! ejected for a while (`[balance.outlier]`, the circuit breaker).
//!
//! Every field has a default, so an absent or partial section keeps the defaults for what it
//! omits; an unknown strategy or field is a parse error, a value out of range a validation error.

use serde::{Deserialize, Serialize};

use super::{ManifestError, invalid};

/// Most retries `[balance] retries` may ask for: each goes to another instance.
pub const MAX_RETRIES: u32 = 10;
pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
pub const MAX_CONSECUTIVE_FAILURES: u32 = 1000;
pub const DEFAULT_BASE_EJECTION_MS: u64 = 30_000;
/// An hour: an ejection longer than that is a stopped app, which `mycel stop` says better.
pub const MAX_BASE_EJECTION_MS: u64 = 3_600_000;
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 50;

/// `[balance]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BalanceSpec {
    pub strategy: BalanceStrategy,
    /// How many times a failed request may be sent again, each time to another instance (when
    /// that is safe, and within the gateway's retry budget).
    pub retries: Retries,
    pub outlier: OutlierSpec,
    /// Whether a request without a body that is safe to send twice goes to a second instance
    /// too when its first stays silent past its hedge delay (8 times its usual latency, at least
    /// a second); the first answer wins. Off for apps whose requests may legitimately wait long
    /// (long polls) and are costly to run twice.
    pub hedge: Hedge,
}

/// `[balance] hedge`, on by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hedge(pub bool);

impl Default for Hedge {
    fn default() -> Self {
        Self(true)
    }
}

impl BalanceSpec {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub(super) fn validate(&self) -> Result<(), ManifestError> {
        if self.retries.0 > MAX_RETRIES {
            return Err(invalid(
                "balance.retries",
                format!("at most {MAX_RETRIES} (got {})", self.retries.0),
            ));
        }
        self.outlier.validate()
    }
}

/// `[balance] retries`, with its default of [`DEFAULT_RETRIES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Retries(pub u32);

impl Default for Retries {
    fn default() -> Self {
        Self(DEFAULT_RETRIES)
    }
}

/// Which instance takes the next request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceStrategy {
    /// Power of two random choices over in-flight requests weighted by a peak-EWMA of latency.
    #[default]
    LeastRequest,
    /// Each instance in turn.
    RoundRobin,
    /// The instance with the fewest requests in flight from this gateway.
    LeastConnections,
    /// In proportion to the instance's node: its `weight` label, else its advertised cores.
    Weighted,
    /// The lowest EWMA latency; the local instance when it is close to the lowest.
    Latency,
}

impl BalanceStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            BalanceStrategy::LeastRequest => "least_request",
            BalanceStrategy::RoundRobin => "round_robin",
            BalanceStrategy::LeastConnections => "least_connections",
            BalanceStrategy::Weighted => "weighted",
            BalanceStrategy::Latency => "latency",
        }
    }
}

/// `[balance.outlier]`: an instance failing `consecutive_failures` requests in a row (a
/// connection error, a timeout, a 5xx answer) is ejected for `base_ejection_ms` × the times it
/// was ejected, never more than `max_ejection_percent` of the app's instances at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierSpec {
    pub consecutive_failures: u32,
    pub base_ejection_ms: u64,
    /// 0 turns ejection off.
    pub max_ejection_percent: u32,
}

impl Default for OutlierSpec {
    fn default() -> Self {
        Self {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            base_ejection_ms: DEFAULT_BASE_EJECTION_MS,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
        }
    }
}

impl OutlierSpec {
    fn validate(&self) -> Result<(), ManifestError> {
        if !(1..=MAX_CONSECUTIVE_FAILURES).contains(&self.consecutive_failures) {
            return Err(invalid(
                "balance.outlier.consecutive_failures",
                format!(
                    "from 1 to {MAX_CONSECUTIVE_FAILURES} (got {})",
                    self.consecutive_failures
                ),
            ));
        }
        if !(1..=MAX_BASE_EJECTION_MS).contains(&self.base_ejection_ms) {
            return Err(invalid(
                "balance.outlier.base_ejection_ms",
                format!(
                    "from 1 to {MAX_BASE_EJECTION_MS} (got {})",
                    self.base_ejection_ms
                ),
            ));
        }
        if self.max_ejection_percent > 100 {
            return Err(invalid(
                "balance.outlier.max_ejection_percent",
                format!("at most 100 (got {})", self.max_ejection_percent),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Manifest;

    fn with(section: &str) -> Result<Manifest, ManifestError> {
        Manifest::from_toml(&format!(
            "name = \"web\"\nversion = \"1\"\n[wasm]\nmodule = \"blake3:{}\"\n{section}",
            "c".repeat(64)
        ))
    }

    #[test]
    fn defaults_hold_for_an_absent_or_partial_section() {
        let m = with("").unwrap();
        assert_eq!(m.balance, BalanceSpec::default());
        assert_eq!(m.balance.strategy, BalanceStrategy::LeastRequest);
        assert_eq!(m.balance.retries, Retries(2));
        assert_eq!(m.balance.outlier.consecutive_failures, 5);
        assert_eq!(m.balance.outlier.base_ejection_ms, 30_000);
        assert_eq!(m.balance.outlier.max_ejection_percent, 50);
        // A default section is not written out, so older readers see the manifest unchanged.
        assert!(!serde_json::to_string(&m).unwrap().contains("balance"));

        assert_eq!(m.balance.hedge, Hedge(true));
        let m = with("[balance]\nhedge = false\n").unwrap();
        assert_eq!(m.balance.hedge, Hedge(false));
        let m = with("[balance.outlier]\nbase_ejection_ms = 500\n").unwrap();
        assert_eq!(m.balance.strategy, BalanceStrategy::LeastRequest);
        assert_eq!(m.balance.outlier.base_ejection_ms, 500);
        assert_eq!(m.balance.outlier.consecutive_failures, 5);
    }

    #[test]
    fn every_strategy_reads_and_round_trips() {
        for s in [
            BalanceStrategy::LeastRequest,
            BalanceStrategy::RoundRobin,
            BalanceStrategy::LeastConnections,
            BalanceStrategy::Weighted,
            BalanceStrategy::Latency,
        ] {
            let m = with(&format!(
                "[balance]\nstrategy = \"{}\"\nretries = 0\n",
                s.as_str()
            ))
            .unwrap();
            assert_eq!(m.balance.strategy, s);
            assert_eq!(m.balance.retries, Retries(0));
            let json = serde_json::to_vec(&m).unwrap();
            assert_eq!(Manifest::from_json(&json).unwrap(), m);
        }
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let parse = |section: &str| match with(section) {
            Err(ManifestError::Parse(e)) => e,
            other => panic!("{section}: expected a parse error, got {other:?}"),
        };
        assert!(parse("[balance]\nstrategy = \"fastest\"\n").contains("fastest"));
        assert!(parse("[balance]\nstratgy = \"latency\"\n").contains("stratgy"));
        assert!(parse("[balance.outlier]\nconsecutive = 3\n").contains("consecutive"));
        assert!(!parse("[balance]\nretries = -1\n").is_empty());

        let field = |section: &str| match with(section) {
            Err(ManifestError::Invalid { field, .. }) => field,
            other => panic!("{section}: expected a validation error, got {other:?}"),
        };
        assert_eq!(field("[balance]\nretries = 11\n"), "balance.retries");
        assert_eq!(
            field("[balance.outlier]\nconsecutive_failures = 0\n"),
            "balance.outlier.consecutive_failures"
        );
        assert_eq!(
            field("[balance.outlier]\nbase_ejection_ms = 0\n"),
            "balance.outlier.base_ejection_ms"
        );
        assert_eq!(
            field("[balance.outlier]\nmax_ejection_percent = 101\n"),
            "balance.outlier.max_ejection_percent"
        );
        let e = with("[balance]\nretries = 11\n").unwrap_err();
        assert_eq!(e.code(), "invalid_manifest");
        assert_eq!(e.to_string(), "balance.retries: at most 10 (got 11)");
    }
}
