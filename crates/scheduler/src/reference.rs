//! The solver as first written: plain and slow (it recounts an app's replicas from all the
//! placements for every candidate node). Kept for the tests as the reference the fast one in
//! `solve.rs` must agree with, placement for placement.

use std::collections::BTreeMap;

use crate::model::{
    AppSpec, NodeState, NodeView, Placement, Problem, Solution, Strategy, Unplaced, why_ineligible,
    why_no_room,
};

/// What is left of a node while the solver fills it.
#[derive(Clone, Debug)]
struct Room<'a> {
    node: &'a NodeView,
    memory_mb: u64,
    cpu_millis: u64,
    instances: u32,
}

impl Room<'_> {
    fn fits(&self, app: &AppSpec) -> bool {
        self.memory_mb >= app.memory_mb
            && self.cpu_millis >= app.cpu_millis
            && self
                .node
                .max_instances
                .is_none_or(|max| self.instances < max)
    }

    fn take(&mut self, app: &AppSpec) {
        self.memory_mb -= app.memory_mb;
        self.cpu_millis -= app.cpu_millis;
        self.instances += 1;
    }
}

/// Whether `node` may run `app` at all, room aside.
fn eligible(node: &NodeView, app: &AppSpec) -> bool {
    app.runs_on(&node.runtimes)
        && app.required.iter().all(|rule| rule.matches(&node.labels))
        && node
            .allowed_owners
            .as_ref()
            .is_none_or(|owners| owners.contains(&app.owner))
        && node.allows_relaxations(app)
}

/// Places every app's replicas, keeping the `previous` placements that still hold.
pub(crate) fn solve(problem: &Problem, previous: &[Placement]) -> Solution {
    let mut nodes: Vec<&NodeView> = problem.nodes.iter().collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    let mut apps: Vec<&AppSpec> = problem.apps.iter().collect();
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rooms: BTreeMap<&str, Room> = nodes
        .iter()
        .map(|n| {
            (
                n.id.as_str(),
                Room {
                    node: n,
                    memory_mb: n.memory_mb,
                    cpu_millis: n.cpu_millis,
                    instances: 0,
                },
            )
        })
        .collect();

    // Keep what still holds, replica by replica, in a fixed order.
    let mut previous: Vec<&Placement> = previous.iter().collect();
    previous.sort();
    let mut kept: Vec<Placement> = Vec::new();
    for placement in previous {
        let Some(app) = apps.iter().find(|a| a.name == placement.app) else {
            continue; // the app is gone
        };
        if placement.replica >= app.replicas {
            continue; // scaled down: the highest replicas go first
        }
        let Some(room) = rooms.get_mut(placement.node.as_str()) else {
            continue; // the node is gone
        };
        let stays = match room.node.state {
            NodeState::Alive | NodeState::Suspect => true,
            NodeState::Dead { for_ms } => for_ms < app.grace_ms.unwrap_or(problem.dead_grace_ms),
        };
        if stays && eligible(room.node, app) && room.fits(app) {
            room.take(app);
            kept.push(placement.clone());
        }
    }

    let mut placements = kept;
    let mut short = Vec::new();
    for app in &apps {
        let mut missing = 0;
        for replica in 0..app.replicas {
            if placements
                .iter()
                .any(|p| p.app == app.name && p.replica == replica)
            {
                continue;
            }
            match best_node(app, &rooms, &placements) {
                Some(node) => {
                    rooms.get_mut(node).expect("a known node").take(app);
                    placements.push(Placement {
                        app: app.name.clone(),
                        replica,
                        node: node.to_string(),
                    });
                }
                None => missing += 1,
            }
        }
        if missing > 0 {
            short.push((app, missing));
        }
    }
    // Reasons from the rooms as finally left, so that solving again (in another order of
    // apps) gives the same sentence.
    let unplaced = short
        .into_iter()
        .map(|(app, missing)| Unplaced {
            app: app.name.clone(),
            replicas: missing,
            reason: why_unplaced(app, &rooms),
        })
        .collect();
    placements.sort();
    Solution {
        placements,
        unplaced,
    }
}

/// The best alive node with room for one more replica of `app`, by the README's order.
fn best_node<'a>(
    app: &AppSpec,
    rooms: &BTreeMap<&'a str, Room<'a>>,
    placements: &[Placement],
) -> Option<&'a str> {
    let replicas_on = |node: &str| {
        placements
            .iter()
            .filter(|p| p.app == app.name && p.node == node)
            .count()
    };
    let zone_of = |node: &str| rooms.get(node).and_then(|r| r.node.labels.get("zone"));
    let replicas_in_zone = |zone: Option<&String>| {
        zone.map_or(0, |zone| {
            placements
                .iter()
                .filter(|p| p.app == app.name && zone_of(&p.node) == Some(zone))
                .count()
        })
    };
    rooms
        .iter()
        .filter(|(_, room)| {
            room.node.state == NodeState::Alive && eligible(room.node, app) && room.fits(app)
        })
        .min_by_key(|(id, room)| {
            let preferred = app
                .preferred
                .iter()
                .filter(|rule| rule.matches(&room.node.labels))
                .count()
                + if app.holders.contains(&room.node.id) {
                    app.preferred.len() + 1
                } else {
                    0
                };
            let free = match app.strategy {
                Strategy::Spread => u64::MAX - room.memory_mb,
                Strategy::Binpack => room.memory_mb,
            };
            (
                replicas_on(id),
                replicas_in_zone(room.node.labels.get("zone")),
                usize::MAX - preferred,
                free,
                **id,
            )
        })
        .map(|(id, _)| *id)
}

/// A sentence on why no node could take another replica.
fn why_unplaced(app: &AppSpec, rooms: &BTreeMap<&str, Room>) -> String {
    let alive: Vec<&Room> = rooms
        .values()
        .filter(|r| r.node.state == NodeState::Alive)
        .collect();
    if alive.is_empty() {
        return "no node is alive".into();
    }
    let eligible: Vec<&&Room> = alive.iter().filter(|r| eligible(r.node, app)).collect();
    if eligible.is_empty() {
        return why_ineligible(app, alive.iter().map(|r| r.node));
    }
    why_no_room(
        app,
        eligible
            .iter()
            .map(|r| (r.node, r.memory_mb, r.cpu_millis, r.instances)),
    )
}
