//! The rollout plan's pure core: an app's rollout, its `[update]` settings and its instances
//! in, the next step out (how many new instances to have, which old ones to retire, where the
//! rollout stands). No I/O, no clock: the leader passes `now` in and places the new instances
//! itself (see [`crate::plan`]).
//!
//! Instances of the rollout's generation are new, every other is old. A new instance counts as
//! healthy once its node has reported it running (which it does only while it passes its health
//! checks) for `min_healthy_ms`:
//!
//! - new instances wanted = the target (all replicas, or the canaries until promoted), at most
//!   `max_parallel` more than the healthy ones;
//! - old instances kept = the replicas not yet covered by healthy new ones (`start_first`), or
//!   by new ones wanted (`stop_first`); all of them while canaries run;
//! - the rollout succeeds when the target is healthy and no old instance is left; it fails when
//!   no new instance turned healthy within `healthy_deadline_ms` of the last that did; then,
//!   with `auto_revert`, the previous version comes back as a rollout of its own.

use mycel_protocol::{
    api::InstanceState,
    app::{UpdateOrder, UpdateSpec},
    placement::{Instance, Rollout, RolloutState},
};

/// What the leader should do next for one rollout.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// How many new instances (replicas `0..new_wanted` of the new generation) should be placed.
    pub new_wanted: u32,
    /// Instances to stop now: old ones no longer needed, new ones past the replicas.
    pub retire: Vec<String>,
    /// The rollout after this step.
    pub rollout: Rollout,
    /// It failed and the previous version should come back (see [`revert`]).
    pub revert: bool,
}

/// The next step of `rollout` for an app of `replicas` whose instances are `instances`.
pub fn step(
    rollout: &Rollout,
    update: &UpdateSpec,
    replicas: u32,
    instances: &[&Instance],
    now_ms: u64,
) -> Step {
    let is_new = |i: &Instance| i.generation() == Some(rollout.to_generation);
    let canary_phase = !rollout.promoted && update.canary > 0;
    let target = if canary_phase {
        update.canary.min(replicas)
    } else {
        replicas
    };
    let healthy_for = |i: &Instance| {
        i.state == InstanceState::Running
            && now_ms.saturating_sub(i.since_ms) >= update.min_healthy_ms
    };
    let new: Vec<&Instance> = instances
        .iter()
        .copied()
        .filter(|i| is_new(i) && i.replica < target)
        .collect();
    let healthy = new.iter().filter(|i| healthy_for(i)).count() as u32;
    let placed = new.len() as u32;
    // A first deploy protects nothing: all at once.
    let parallel = match (update.max_parallel, &rollout.from) {
        (0, _) | (_, None) => target,
        (n, Some(_)) => n,
    };
    let new_wanted = target.min(healthy.saturating_add(parallel)).max(placed);
    let old_kept = if canary_phase {
        replicas
    } else {
        match update.order {
            UpdateOrder::StartFirst => replicas.saturating_sub(healthy),
            UpdateOrder::StopFirst => replicas.saturating_sub(new_wanted),
        }
    };

    // Retire new instances past the target, then the old ones least worth keeping: those not
    // running first, then the highest replicas.
    let mut retire: Vec<String> = instances
        .iter()
        .filter(|i| is_new(i) && i.replica >= target)
        .map(|i| i.id.clone())
        .collect();
    let mut old: Vec<&Instance> = instances.iter().copied().filter(|i| !is_new(i)).collect();
    old.sort_by_key(|i| {
        (
            i.state == InstanceState::Running,
            std::cmp::Reverse(i.replica),
        )
    });
    let old_retired = old.len().saturating_sub(old_kept as usize);
    retire.extend(old.iter().take(old_retired).map(|i| i.id.clone()));
    let old_left = old.len() - old_retired;

    let mut next = rollout.clone();
    next.healthy = healthy;
    next.total = target;
    let mut revert = false;
    if healthy >= target && (canary_phase || old_left == 0) {
        if canary_phase {
            next.state = RolloutState::AwaitingPromotion;
            next.message = format!(
                "{healthy} canary instance(s) of version {} are healthy: promote or roll back",
                rollout.to_version
            );
        } else {
            next.active = false;
            next.state = if rollout.reverting {
                RolloutState::Reverted
            } else {
                RolloutState::Succeeded
            };
            next.message = format!(
                "version {} runs on {healthy} healthy instance(s)",
                rollout.to_version
            );
            if rollout.reverting {
                next.message = format!("{}; {}", rollout.message, next.message);
            }
        }
    } else if healthy > rollout.healthy || next.state == RolloutState::AwaitingPromotion {
        // Progress pushes the deadline back; so does waiting for a promote (canaries that stop
        // being healthy while it waits have a whole deadline to recover).
        next.deadline_ms = now_ms + update.healthy_deadline_ms;
        if !rollout.reverting {
            next.state = RolloutState::Progressing;
            next.message = format!("{healthy} of {target} new instance(s) healthy");
        }
    } else if now_ms >= rollout.deadline_ms {
        let why = format!(
            "{healthy} of {target} instance(s) of version {} turned healthy within {} ms",
            rollout.to_version, update.healthy_deadline_ms
        );
        match &rollout.from {
            Some(_) if update.auto_revert && !rollout.reverting => revert = true,
            _ => {
                next.active = false;
                next.state = RolloutState::Failed;
                next.message = if rollout.reverting {
                    format!("{}; the revert failed too: {why}", rollout.message)
                } else {
                    format!("failed: {why}")
                };
            }
        }
    }
    Step {
        new_wanted,
        retire,
        rollout: next,
        revert,
    }
}

/// The rollout that brings back `failed.from` after `failed` missed its deadline: the restored
/// version is the new one, the failed one's instances are old. `None` when there is nothing to
/// bring back.
pub fn revert(
    failed: &Rollout,
    failed_record: &mycel_protocol::placement::AppRecord,
    now_ms: u64,
) -> Option<(mycel_protocol::placement::AppRecord, Rollout)> {
    let restored = failed.from.as_deref()?.clone();
    let update = &restored.manifest.update;
    let rollout = Rollout {
        from: Some(Box::new(failed_record.clone())),
        to_generation: restored.generation,
        to_version: restored.manifest.version.clone(),
        state: RolloutState::Reverted,
        active: true,
        reverting: true,
        promoted: true,
        healthy: 0,
        total: restored.replicas(),
        started_ms: now_ms,
        deadline_ms: now_ms + update.healthy_deadline_ms,
        message: format!(
            "version {} did not turn healthy within {} ms: reverted to version {}",
            failed.to_version,
            failed_record.manifest.update.healthy_deadline_ms,
            restored.manifest.version
        ),
        step: failed.step + 1,
        max_generation: failed.max_generation,
    };
    Some((restored, rollout))
}

#[cfg(test)]
mod tests;
