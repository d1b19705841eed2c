//! Rollouts, as the leader plans them: a deploy starts one, the upkeep loop steps every active
//! one. [`crate::rollout`] decides how many new instances to have and which old ones to retire;
//! this places the new ones with the scheduler and writes the entries.

use std::collections::BTreeSet;

use mycel_protocol::placement::{AppRecord, Command, Instance, Rollout, RolloutState};
use mycel_scheduler::Placement;

use super::{View, instances, owner_text, solve, unplaced_reason};
use crate::{rollout, state::PlacementState};

/// An app after one step of its rollout.
pub(super) struct Rolled {
    pub record: AppRecord,
    pub instances: Vec<Instance>,
    pub rollout: Rollout,
}

/// The rollout a deploy of `record` (a new generation of its app) starts.
pub(super) fn start(state: &PlacementState, record: &AppRecord, now_ms: u64) -> Rollout {
    let name = &record.manifest.name;
    let earlier = state.rollouts.get(name);
    // A deploy over a rollout still under way replaces what that one replaced: the last
    // version known to run well, not one that may never have turned healthy.
    let from = match earlier {
        Some(r) if r.active && !r.reverting => r.from.clone(),
        _ => state.apps.get(name).cloned().map(Box::new),
    };
    let update = &record.manifest.update;
    Rollout {
        promoted: update.canary == 0 || from.is_none(),
        from,
        to_generation: record.generation,
        to_version: record.manifest.version.clone(),
        state: RolloutState::Progressing,
        active: true,
        reverting: false,
        healthy: 0,
        total: record.replicas(),
        started_ms: now_ms,
        deadline_ms: now_ms + update.healthy_deadline_ms,
        message: format!("rolling out version {}", record.manifest.version),
        step: earlier.map_or(0, |r| r.step) + 1,
        max_generation: record.generation,
    }
}

/// One step of `rollout` for `record` (owned by `owner`), against the app's instances in
/// `state`. A failed rollout that reverts takes the revert's first step at once.
pub(super) fn step(
    state: &PlacementState,
    view: &View,
    record: &AppRecord,
    rollout: &Rollout,
    owner: String,
) -> Rolled {
    let name = &record.manifest.name;
    let current: Vec<&Instance> = state.instances_of(name).collect();
    let next = rollout::step(
        rollout,
        &record.manifest.update,
        record.replicas(),
        &current,
        view.now_ms,
    );
    if next.revert
        && let Some((restored, reverted)) = rollout::revert(rollout, record, view.now_ms)
    {
        return step(state, view, &restored, &reverted, owner);
    }
    if rollout.from.is_none() {
        // A first deploy is placed as any app is: its rollout only follows its health.
        return Rolled {
            record: record.clone(),
            instances: current.into_iter().cloned().collect(),
            rollout: next.rollout,
        };
    }
    // The scheduler places the new generation's wanted replicas; the old instances it keeps
    // count as their previous placements, so new ones land where old ones run.
    let mut sized = record.clone();
    sized.manifest.replicas = next.new_wanted;
    sized.scale = None;
    let solution = solve(state, view, Some((&sized, owner)));
    let placed: Vec<&Placement> = solution
        .placements
        .iter()
        .filter(|p| &p.app == name)
        .collect();
    let mut record = record.clone();
    if next.new_wanted == record.replicas() {
        record.unplaced = unplaced_reason(&solution, name);
    }
    let retire: BTreeSet<&str> = next.retire.iter().map(String::as_str).collect();
    let mut kept: Vec<Instance> = current
        .into_iter()
        .filter(|i| i.generation() != Some(record.generation) && !retire.contains(i.id.as_str()))
        .cloned()
        .collect();
    kept.extend(instances(state, view, &record, &placed));
    Rolled {
        record,
        instances: kept,
        rollout: next.rollout,
    }
}

/// A `Roll` entry for every active rollout whose step changes something.
pub fn plan_rollouts(state: &PlacementState, view: &View) -> Vec<Command> {
    let mut commands = Vec::new();
    for (name, rollout) in state.rollouts.iter().filter(|(_, r)| r.active) {
        let Some(record) = state.apps.get(name) else {
            continue;
        };
        let rolled = step(state, view, record, rollout, owner_text(state, record));
        let placed = |list: &mut dyn Iterator<Item = &Instance>| -> BTreeSet<(String, String)> {
            list.map(|i| (i.id.clone(), i.node.clone())).collect()
        };
        let unchanged = rolled.record == *record
            && rolled.rollout == *rollout
            && placed(&mut rolled.instances.iter()) == placed(&mut state.instances_of(name));
        if unchanged {
            continue;
        }
        let mut next = rolled.rollout;
        next.step = rollout.step + 1;
        commands.push(Command::Roll {
            app: Box::new(rolled.record),
            instances: rolled.instances,
            rollout: Box::new(next),
            after_step: rollout.step,
        });
    }
    commands
}
