//! Who is in the placement group, pure: the leader's membership view in, the one change to make
//! next out. Every live node is a learner (it replicates the state); 1, 3 or 5 of them vote,
//! spread over `zone` labels; dead voters are replaced, long-dead or departed members removed.
//!
//! A member the view does not list at all is not known to be dead: a leader that has just
//! (re)started has heard of nobody yet. Until the view has settled (it has been up for as long
//! as the failure detector takes to hear from every live member), such a leader only adds
//! learners; reshaping the voters on half a view once shrank a five-voter group to its restarted
//! leader alone. Once the view has settled, a member it still does not list is long gone.

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

/// The next change that brings `group` closer to what `nodes` call for, if any. `settled`: the
/// leader's view of the mesh is old enough that a member missing from `nodes` is gone.
pub fn next_change(group: &Group, nodes: &[Candidate], settled: bool) -> Option<Change> {
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

    // Voters are chosen on a whole view only: a member nobody has heard of yet may be alive.
    let unknown = |id: &u64| *id != group.leader && !by_id.contains_key(id);
    if !settled && members.iter().any(unknown) {
        return None;
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
        .filter(|id| by_id.get(id).is_none_or(|n| n.gone))
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
            match next_change(&g, nodes, true) {
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
    fn a_leader_that_has_heard_of_nobody_yet_keeps_its_voters() {
        // Restarted with an empty view: everyone else is unknown, not dead.
        let g = group(1, &[1, 2, 3, 4, 5], &[6]);
        let alone = vec![node(1, true, None)];
        assert_eq!(next_change(&g, &alone, false), None);
        // Half a view: still no reshaping, but a live newcomer is added as a learner.
        let partial = vec![
            node(1, true, None),
            node(2, true, None),
            node(7, true, None),
        ];
        assert_eq!(
            next_change(&g, &partial, false),
            Some(Change::AddLearner {
                id: 7,
                peer_id: "peer7".into()
            })
        );
        // Once the view has settled, members it still does not list are gone: replaced, then
        // removed.
        let nodes: Vec<Candidate> = [1, 2, 3].iter().map(|&i| node(i, true, None)).collect();
        let g = settle(g, &nodes);
        assert_eq!(g.voters, BTreeSet::from([1, 2, 3]));
        assert!(g.learners.is_empty(), "{g:?}");
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

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// A group led by node 1 with up to 5 voters among nodes 1..=8, and a view listing some of
    /// the nodes (the leader always), each live or dead.
    fn group_and_view() -> impl Strategy<Value = (Group, Vec<Candidate>)> {
        (
            prop::collection::btree_set(2u64..=8, 0..=4),
            prop::collection::btree_set(2u64..=8, 0..=4),
            prop::collection::vec((2u64..=8, any::<bool>(), any::<bool>()), 0..8),
        )
            .prop_map(|(voters, learners, listed)| {
                let mut voters: BTreeSet<u64> = voters;
                voters.insert(1);
                let learners = learners.difference(&voters).copied().collect();
                let mut view = vec![Candidate {
                    id: 1,
                    peer_id: "peer1".into(),
                    live: true,
                    gone: false,
                    zone: None,
                }];
                for (id, live, gone) in listed {
                    if view.iter().all(|c| c.id != id) {
                        view.push(Candidate {
                            id,
                            peer_id: format!("peer{id}"),
                            live,
                            gone: gone && !live,
                            zone: None,
                        });
                    }
                }
                let group = Group {
                    leader: 1,
                    voters,
                    learners,
                };
                (group, view)
            })
    }

    proptest! {
        /// An unsettled view with a member it does not list never demotes or removes anyone.
        #[test]
        fn an_unsettled_partial_view_only_adds(
            (group, view) in group_and_view()
        ) {
            let listed: BTreeSet<u64> = view.iter().map(|c| c.id).collect();
            let partial = group.voters.union(&group.learners).any(|id| !listed.contains(id));
            let change = next_change(&group, &view, false);
            if partial {
                prop_assert!(
                    matches!(change, None | Some(Change::AddLearner { .. })),
                    "{change:?} on a partial view"
                );
            }
        }

        /// Whatever the view, the leader stays a voter and the group never has zero voters or
        /// more than five.
        #[test]
        fn voter_sets_keep_the_leader_and_stay_in_bounds(
            (group, view) in group_and_view(),
            settled in any::<bool>(),
        ) {
            if let Some(Change::SetVoters(voters)) = next_change(&group, &view, settled) {
                prop_assert!(voters.contains(&1));
                prop_assert!((1..=5).contains(&voters.len()), "{voters:?}");
                prop_assert!(voters.len() % 2 == 1, "an odd number of voters: {voters:?}");
            }
        }
    }
}
