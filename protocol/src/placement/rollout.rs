//! An app's rollout as the group holds it: which version replaces which, how far it got, and
//! what a revert brings back. The leader drives it a step at a time (`Command::Roll`), so a
//! leader change mid-rollout picks it up where it stands.

use serde::{Deserialize, Serialize};

use super::AppRecord;
use crate::{BlobHash, app::Manifest};

/// How many earlier manifests of each app the group keeps for `versions` and `rollback`.
pub const MAX_VERSIONS: usize = 10;

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Progressing,
    Succeeded,
    /// It stalled past its deadline and nothing was reverted.
    Failed,
    /// It failed and the previous version was brought back (or is being brought back).
    Reverted,
    /// Its canaries are healthy: it waits for `promote` (or a rollback).
    AwaitingPromotion,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Progressing => "progressing",
            RolloutState::Succeeded => "succeeded",
            RolloutState::Failed => "failed",
            RolloutState::Reverted => "reverted",
            RolloutState::AwaitingPromotion => "awaiting_promotion",
        }
    }
}

/// The latest rollout of an app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The version it replaces, as it was deployed: what an automatic revert brings back. `None`
    /// for an app's first deploy. While reverting, the version that failed.
    pub from: Option<Box<AppRecord>>,
    /// The generation it brings (the app record's): instances of any other are old.
    pub to_generation: u64,
    pub to_version: String,
    pub state: RolloutState,
    /// Whether the leader still drives it (a revert under way shows `Reverted` and is active).
    pub active: bool,
    /// Whether it brings `from`'s predecessor back after a failure.
    pub reverting: bool,
    /// Whether the rest of the old instances may be replaced (always, without canaries).
    pub promoted: bool,
    /// New instances healthy for `min_healthy_ms` at the last step, and how many it aims for.
    pub healthy: u32,
    pub total: u32,
    pub started_ms: u64,
    /// It fails at this time unless a new instance turns healthy first.
    pub deadline_ms: u64,
    /// What it is doing or why it ended, for a person.
    pub message: String,
    /// Counts every change of the app's rollouts: a step planned from an older one changes
    /// nothing (a promote or a new deploy committed in between wins).
    pub step: u64,
    /// The highest generation the app has had: the next deploy takes the one after.
    pub max_generation: u64,
}

impl Rollout {
    /// Whether its steps place the app's instances (and rescheduling leaves them alone): an
    /// active rollout that replaces a version. An app's first deploy is placed as any app is;
    /// its rollout only follows its instances' health.
    pub fn places(&self) -> bool {
        self.active && self.from.is_some()
    }
}

/// One manifest an app was deployed with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: String,
    /// The manifest's digest, as a signed deploy names it.
    pub digest: BlobHash,
    /// The key that signed its deploy.
    pub by: String,
    pub at_ms: u64,
    pub manifest: Manifest,
}
