//! Who is in the placement group, pure: the leader's membership view in, the one change to make
//! next out. Every live node is a learner (it replicates the state); 1, 3 or 5 of them vote,
//! spread over `zone` labels; dead voters are replaced, long-dead or departed members removed.

use std::collections::{BTreeMap, BTreeSet};

/// What the leader knows of one node, for the group's sake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: u64,
    pub peer_id: String,
    /// Alive or suspect: worth keeping; a suspect may only be slow.
    pub live: bool,
    /// Dead (or departed) for long enough to drop from the group altogether.
    pub gone: bool,
    pub zone: Option<String>,
}

/// The group as it stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    pub leader: u64,
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
}

/// The next membership change; one at a time, since Raft changes membership one step at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    AddLearner {
        id: u64,
        peer_id: String,
    },
    /// The new voter set; voters left out stay as learners.
    SetVoters(BTreeSet<u64>),
    Remove(BTreeSet<u64>),
}

/// How many voters a group of `live` nodes should have: odd, at most 5.
pub fn voter_target(live: usize) -> usize {
    match live {
        0..=2 => 1,
        3 | 4 => 3,
        _ => 5,
    }
}

/// The next change that brings `group` closer to what `nodes` call for, if any.
pub fn next_change(group: &Group, nodes: &[Candidate]) -> Option<Change> {
    let by_id: BTreeMap<u64, &Candidate> = nodes.iter().map(|n| (n.id, n)).collect();
    let live = |id: &u64| *id == group.leader || by_id.get(id).is_some_and(|n| n.live);
    let members: BTreeSet<u64> = group.voters.union(&group.learners).copied().collect();

    // 1. Every live node replicates the state.
    if let Some(node) = nodes
        .iter()
        .find(|n| n.live && !members.contains(&n.id) && n.id != group.leader)
    {
        return Some(Change::AddLearner {
            id: node.id,
            peer_id: node.peer_id.clone(),
        });
    }

    // 2. The right number of live voters, spread over zones.
    let live_members: Vec<u64> = members.iter().copied().filter(live).collect();
    let target = voter_target(live_members.len());
    let voters = choose_voters(group, &live_members, &by_id, target);
    if voters != group.voters {
        return Some(Change::SetVoters(voters));
    }

    // 3. Members that are gone for good leave (voters were demoted in step 2 first).
    let gone: BTreeSet<u64> = group
        .learners
        .iter()
        .copied()
        .filter(|id| by_id.get(id).is_some_and(|n| n.gone))
        .collect();
    (!gone.is_empty()).then_some(Change::Remove(gone))
}

/// Keeps the live voters it can (the leader first), then adds learners from zones the voters do
/// not cover yet, then any; drops extras from the most crowded zones. Deterministic.
fn choose_voters(
    group: &Group,
    live_members: &[u64],
    by_id: &BTreeMap<u64, &Candidate>,
    target: usize,
) -> BTreeSet<u64> {
    let zone = |id: &u64| by_id.get(id).and_then(|n| n.zone.clone());
    let mut chosen: Vec<u64> = vec![group.leader];
    // Current live voters first, then learners; within each, ids in order.
    let mut rest: Vec<u64> = live_members
        .iter()
        .copied()
        .filter(|id| *id != group.leader)
        .collect();
    rest.sort_by_key(|id| (!group.voters.contains(id), *id));
    while chosen.len() < target && !rest.is_empty() {
        let covered: BTreeSet<Option<String>> = chosen.iter().map(zone).collect();
        // Prefer a node from a zone not covered yet; among equals, keep the order above.
        let pick = rest
            .iter()
            .position(|id| zone(id).is_some() && !covered.contains(&zone(id)))
            .unwrap_or(0);
        chosen.push(rest.remove(pick));
    }
    chosen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, live: bool, zone: Option<&str>) -> Candidate {
        Candidate {
            id,
            peer_id: format!("peer{id}"),
            live,
            gone: false,
            zone: zone.map(str::to_string),
        }
    }

    fn group(leader: u64, voters: &[u64], learners: &[u64]) -> Group {
        Group {
            leader,
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
        }
    }

    /// Applies changes until none is left, as the leader's loop does.
    fn settle(mut g: Group, nodes: &[Candidate]) -> Group {
        for _ in 0..20 {
            match next_change(&g, nodes) {
                None => return g,
                Some(Change::AddLearner { id, .. }) => {
                    g.learners.insert(id);
                }
                Some(Change::SetVoters(voters)) => {
                    for old in &g.voters {
                        if !voters.contains(old) {
                            g.learners.insert(*old);
                        }
                    }
                    for new in &voters {
                        g.learners.remove(new);
                    }
                    g.voters = voters;
                }
                Some(Change::Remove(ids)) => {
                    for id in ids {
                        g.learners.remove(&id);
                    }
                }
            }
        }
        panic!("membership did not settle: {g:?}");
    }

    #[test]
    fn grows_to_three_then_five_voters() {
        let mut nodes = vec![node(1, true, None), node(2, true, None)];
        let g = settle(group(1, &[1], &[]), &nodes);
        assert_eq!(g.voters.len(), 1);
        assert_eq!(g.learners, BTreeSet::from([2]));

        nodes.push(node(3, true, None));
        let g = settle(g, &nodes);
        assert_eq!(g.voters, BTreeSet::from([1, 2, 3]));

        nodes.push(node(4, true, None));
        let g = settle(g, &nodes);
        assert_eq!(g.voters.len(), 3, "four nodes keep three voters");

        nodes.push(node(5, true, None));
        nodes.push(node(6, true, None));
        let g = settle(g, &nodes);
        assert_eq!(g.voters.len(), 5);
        assert!(
            g.voters.is_superset(&BTreeSet::from([1, 2, 3])),
            "sitting voters stay"
        );
        assert_eq!(g.voters.len() + g.learners.len(), 6, "everyone replicates");
    }

    #[test]
    fn a_dead_voter_is_replaced_and_removed_once_gone() {
        let mut nodes: Vec<Candidate> = (1..=4).map(|i| node(i, true, None)).collect();
        let g = settle(group(1, &[1], &[]), &nodes);
        assert_eq!(g.voters, BTreeSet::from([1, 2, 3]));

        nodes[1].live = false; // node 2 died
        let g = settle(g, &nodes);
        assert_eq!(g.voters, BTreeSet::from([1, 3, 4]));
        assert!(g.learners.contains(&2), "kept as a learner until gone");

        nodes[1].gone = true;
        let g = settle(g, &nodes);
        assert!(!g.learners.contains(&2) && !g.voters.contains(&2));
    }

    #[test]
    fn voters_spread_over_zones() {
        let nodes = vec![
            node(1, true, Some("a")),
            node(2, true, Some("a")),
            node(3, true, Some("a")),
            node(4, true, Some("b")),
            node(5, true, Some("c")),
        ];
        let g = settle(group(1, &[1], &[]), &nodes);
        assert_eq!(g.voters.len(), 5);

        let nodes: Vec<Candidate> = nodes.into_iter().take(4).collect();
        let g = settle(group(1, &[1], &[]), &nodes);
        let zones: BTreeSet<_> = g
            .voters
            .iter()
            .map(|id| nodes[*id as usize - 1].zone.clone())
            .collect();
        assert_eq!(
            zones.len(),
            2,
            "three voters from four nodes cover both zones: {g:?}"
        );
    }

    #[test]
    fn too_few_live_nodes_shrink_to_one_voter_never_zero() {
        let nodes = vec![
            node(1, true, None),
            node(2, false, None),
            node(3, false, None),
        ];
        let g = settle(group(1, &[1, 2, 3], &[]), &nodes);
        assert_eq!(g.voters, BTreeSet::from([1]));
        assert_eq!(voter_target(0), 1);
    }
}
