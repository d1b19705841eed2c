//! App ownership as the replicated state holds it, and the rule every replica applies. Pure.
//!
//! Every deploy, scale and stop carries a [`SignedRequest`]. The leader checks it when it plans
//! (so the client hears why it was refused), and every replica checks it again when it applies
//! the entry, against the state it holds and the leader's clock as written in the entry: the
//! signature, that it signs exactly what the entry does, freshness, replays, and the owner rule.
//! An entry that fails changes nothing, on every replica alike.
//!
//! - The first key to deploy an app (or set one of its secrets) owns it; only that key may
//!   redeploy, scale or stop it, or set or remove its secrets.
//! - An app recorded before apps had owners is owned by the node that took its deploy (its
//!   peer id embeds its key): what it would be had it been deployed unsigned through that node
//!   today. Only an app whose deployer names no ed25519 key is claimed by the next signed change.
//! - A request from a key for an app must be issued after the newest one accepted from that key
//!   for that app: a captured request cannot be replayed, not even after the app was stopped.

use std::collections::BTreeMap;

use mycel_protocol::{
    ownership::{AppAction, MAX_SKEW_MS, OwnerKey},
    placement::{Authorized, WriteError},
};
use serde::{Deserialize, Serialize};

/// Who owns each app, and the newest request accepted from each key for each app.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owners {
    /// The owner of each app, by app name.
    pub apps: BTreeMap<String, OwnerKey>,
    /// When the newest request accepted from a key for an app was issued. Kept for twice the
    /// freshness window after that (older requests are stale anyway, even under a leader whose
    /// clock is behind), including after the app was stopped.
    pub latest: BTreeMap<(OwnerKey, String), u64>,
}

/// Checks that `auth` may do `expected` given `owners` and the app's current `owner` (see
/// `PlacementState::owner_of`): it signs exactly `expected`, the signature holds, it was issued
/// within [`MAX_SKEW_MS`] of when the leader accepted it, it is newer than every request accepted
/// from its key for that app, and its key owns the app (or nobody does). Answers the signer.
pub fn check(
    owners: &Owners,
    owner: Option<OwnerKey>,
    auth: &Authorized,
    expected: &AppAction,
) -> Result<OwnerKey, WriteError> {
    let request = &auth.request;
    let app = expected.app();
    if &request.action != expected {
        return Err(WriteError::BadSignature(format!(
            "the signature is for a {} of '{}', not for this {} of '{app}' (or not for these \
             replicas, or this manifest)",
            request.action.verb(),
            request.action.app(),
            expected.verb(),
        )));
    }
    request.verify().map_err(|e| {
        WriteError::BadSignature(format!("{e}: the request is not signed by {}", request.key))
    })?;
    if !request.is_fresh(auth.accepted_at_ms) {
        let off_s = request.issued_at_ms.abs_diff(auth.accepted_at_ms) / 1000;
        return Err(WriteError::Stale(format!(
            "the request was signed {off_s} s away from the placement group's clock; a request \
             must be signed within {} s of when it is sent (check the clock, and sign again)",
            MAX_SKEW_MS / 1000
        )));
    }
    if let Some(latest) = owners.latest.get(&(request.key, app.to_string()))
        && request.issued_at_ms <= *latest
    {
        return Err(WriteError::Stale(format!(
            "a request of {} for '{app}' signed at or after this one was already accepted: this \
             one is a replay, or arrived late; sign it again",
            request.key
        )));
    }
    match owner {
        Some(owner) if owner != request.key => Err(WriteError::NotOwner {
            app: app.to_string(),
            owner,
            signer: request.key,
        }),
        _ => Ok(request.key),
    }
}

impl Owners {
    /// Records an accepted request: its key owns the app from now on (or nobody does, once it is
    /// stopped), and no request of that key for that app issued no later is accepted again.
    /// Forgets what no fresh request can collide with any more.
    pub(crate) fn accept(&mut self, auth: &Authorized) {
        let request = &auth.request;
        let app = request.action.app().to_string();
        match request.action {
            AppAction::Stop { .. } | AppAction::StopAndPurge { .. } => {
                self.apps.remove(&app);
            }
            AppAction::Deploy { .. }
            | AppAction::Scale { .. }
            | AppAction::Promote { .. }
            | AppAction::SetSecret { .. }
            | AppAction::RemoveSecret { .. } => {
                self.apps.insert(app.clone(), request.key);
            }
        }
        self.latest.insert((request.key, app), request.issued_at_ms);
        let horizon = auth.accepted_at_ms.saturating_sub(2 * MAX_SKEW_MS);
        self.latest.retain(|_, issued| *issued >= horizon);
    }
}

#[cfg(test)]
mod tests;
