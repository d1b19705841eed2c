//! The README's properties, as unit and property tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mycel_protocol::{Runtime, app::Relaxation};
use proptest::prelude::*;

use crate::{
    AppSpec, LabelRule, NodeState, NodeView, Placement, Problem, Solution, Strategy as Packing,
    solve,
};

fn node(id: &str, memory_mb: u64, zone: &str) -> NodeView {
    NodeView {
        id: id.into(),
        state: NodeState::Alive,
        runtimes: BTreeSet::from([Runtime::Wasm]),
        labels: BTreeMap::from([("zone".into(), zone.into())]),
        memory_mb,
        cpu_millis: 4000,
        max_instances: None,
        allowed_owners: None,
        relaxations_allowed: BTreeSet::new(),
    }
}

fn app(name: &str, replicas: u32, memory_mb: u64) -> AppSpec {
    AppSpec {
        name: name.into(),
        owner: "alice".into(),
        runtimes: vec![Runtime::Wasm],
        replicas,
        memory_mb,
        cpu_millis: 100,
        required: vec![],
        preferred: vec![],
        strategy: Packing::Spread,
        relaxations: BTreeSet::new(),
        holders: BTreeSet::new(),
        grace_ms: None,
    }
}

/// A set of relaxations, or none, from a test's coin.
fn writable_root(yes: bool) -> BTreeSet<Relaxation> {
    yes.then_some(Relaxation::WritableRoot)
        .into_iter()
        .collect()
}

fn nodes_of(solution: &Solution, app: &str) -> Vec<String> {
    solution
        .placements
        .iter()
        .filter(|p| p.app == app)
        .map(|p| p.node.clone())
        .collect()
}

#[test]
fn replicas_spread_over_nodes_and_zones() {
    let problem = Problem {
        nodes: vec![
            node("a", 1000, "z1"),
            node("b", 1000, "z1"),
            node("c", 1000, "z2"),
        ],
        apps: vec![app("web", 2, 100)],
        dead_grace_ms: 0,
    };
    let solution = solve(&problem, &[]);
    let mut nodes = nodes_of(&solution, "web");
    nodes.sort();
    // One per zone: a (or b) in z1, and c in z2.
    assert!(nodes.contains(&"c".to_string()), "{nodes:?}");
    assert_eq!(nodes.len(), 2);
}

#[test]
fn required_rules_runtimes_owners_and_room_are_respected() {
    let mut gpu = node("gpu", 1000, "z1");
    gpu.labels.insert("gpu".into(), "yes".into());
    let mut docker_only = node("docker", 1000, "z1");
    docker_only.runtimes = BTreeSet::from([Runtime::Docker]);
    let mut private = node("private", 1000, "z1");
    private.labels.insert("gpu".into(), "yes".into());
    private.allowed_owners = Some(BTreeSet::from(["bob".to_string()]));
    let mut wanting = app("train", 3, 400);
    wanting.required = vec![LabelRule::Exists { key: "gpu".into() }];
    let problem = Problem {
        nodes: vec![gpu, docker_only, private],
        apps: vec![wanting],
        dead_grace_ms: 0,
    };
    let solution = solve(&problem, &[]);
    assert_eq!(
        nodes_of(&solution, "train"),
        ["gpu", "gpu"],
        "two fit in 1000 MiB"
    );
    assert_eq!(solution.unplaced.len(), 1);
    assert_eq!(solution.unplaced[0].replicas, 1);
    assert!(
        solution.unplaced[0].reason.contains("memory"),
        "{:?}",
        solution.unplaced
    );
}

#[test]
fn a_wasm_only_node_gets_no_container_and_unplaced_names_the_owners_limit() {
    let mut wasm_only = node("a", 4000, "z1");
    wasm_only.runtimes = BTreeSet::from([Runtime::Wasm]);
    let capped = |id: &str| NodeView {
        runtimes: BTreeSet::from([Runtime::Wasm, Runtime::Docker]),
        max_instances: Some(1),
        ..node(id, 4000, "z1")
    };
    let mut web = app("web", 3, 32);
    web.runtimes = vec![Runtime::Docker];
    let problem = Problem {
        nodes: vec![wasm_only, capped("b"), capped("c")],
        apps: vec![web],
        dead_grace_ms: 0,
    };
    let solution = solve(&problem, &[]);
    let mut nodes = nodes_of(&solution, "web");
    nodes.sort();
    assert_eq!(nodes, ["b", "c"]);
    assert_eq!(solution.unplaced.len(), 1);
    assert_eq!(solution.unplaced[0].replicas, 1);
    assert_eq!(
        solution.unplaced[0].reason,
        "every node that may run it is full: 2 at the most instances their owner allows \
         (policy.max_instances)"
    );
}

#[test]
fn a_process_app_goes_to_nodes_with_sandboxes_or_docker_and_unplaced_names_both() {
    let with = |id: &str, runtimes: &[Runtime]| NodeView {
        runtimes: runtimes.iter().copied().collect(),
        ..node(id, 4000, "z1")
    };
    let mut tool = app("tool", 3, 32);
    tool.runtimes = vec![Runtime::Process, Runtime::Docker];
    let problem = Problem {
        nodes: vec![
            with("sandboxes", &[Runtime::Wasm, Runtime::Process]),
            with("docker", &[Runtime::Wasm, Runtime::Docker]),
            with("wasm", &[Runtime::Wasm]),
        ],
        apps: vec![tool.clone()],
        dead_grace_ms: 0,
    };
    let solution = solve(&problem, &[]);
    let mut nodes = nodes_of(&solution, "tool");
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes, ["docker", "sandboxes"]);

    let problem = Problem {
        nodes: vec![with("wasm", &[Runtime::Wasm])],
        apps: vec![tool],
        dead_grace_ms: 0,
    };
    let solution = solve(&problem, &[]);
    assert!(
        solution.unplaced[0]
            .reason
            .starts_with("no alive node offers runtime process or docker"),
        "{}",
        solution.unplaced[0].reason
    );
}

#[test]
fn relaxations_go_only_where_the_owner_allows_them_and_unplaced_says_which() {
    let mut open = node("open", 1000, "z1");
    open.relaxations_allowed = BTreeSet::from([Relaxation::WritableRoot, Relaxation::RunAsRoot]);
    let mut relaxed = app("relaxed", 3, 100);
    relaxed.relaxations = BTreeSet::from([Relaxation::WritableRoot]);
    let problem = Problem {
        nodes: vec![open.clone(), node("strict", 1000, "z1")],
        apps: vec![relaxed.clone(), app("plain", 2, 100)],
        dead_grace_ms: 0,
    };
    let solution = solve(&problem, &[]);
    assert_eq!(nodes_of(&solution, "relaxed"), ["open", "open", "open"]);
    let mut plain = nodes_of(&solution, "plain");
    plain.sort();
    assert_eq!(plain, ["open", "strict"], "hardened apps go anywhere");

    relaxed.relaxations.insert(Relaxation::Capabilities);
    let problem = Problem {
        nodes: vec![open, node("strict", 1000, "z1")],
        apps: vec![relaxed],
        dead_grace_ms: 0,
    };
    let solution = solve(&problem, &[]);
    assert!(solution.placements.is_empty());
    assert_eq!(solution.unplaced.len(), 1);
    assert!(
        solution.unplaced[0]
            .reason
            .starts_with("no alive node allows capabilities"),
        "{:?}",
        solution.unplaced
    );
    assert_eq!(solution, crate::reference::solve(&problem, &[]));
}

#[test]
fn binpack_fills_one_node_before_the_next() {
    let mut packed = app("batch", 2, 100);
    packed.strategy = Packing::Binpack;
    let problem = Problem {
        nodes: vec![node("a", 300, "z1"), node("b", 1000, "z1")],
        apps: vec![packed, app("anchor", 1, 100)],
        dead_grace_ms: 0,
    };
    let solution = solve(&problem, &[]);
    // anchor (spread) takes b, the roomiest; batch replicas still avoid sharing a node.
    assert_eq!(nodes_of(&solution, "anchor"), ["b"]);
    let mut batch = nodes_of(&solution, "batch");
    batch.sort();
    assert_eq!(batch, ["a", "b"]);
}

#[test]
fn dead_nodes_keep_their_replicas_for_the_grace_time_then_lose_them() {
    let problem = |for_ms| Problem {
        nodes: vec![
            NodeView {
                state: NodeState::Dead { for_ms },
                ..node("a", 1000, "z1")
            },
            node("b", 1000, "z1"),
        ],
        apps: vec![app("web", 1, 100)],
        dead_grace_ms: 30_000,
    };
    let previous = vec![Placement {
        app: "web".into(),
        replica: 0,
        node: "a".into(),
    }];
    assert_eq!(nodes_of(&solve(&problem(10_000), &previous), "web"), ["a"]);
    assert_eq!(nodes_of(&solve(&problem(40_000), &previous), "web"), ["b"]);
}

#[test]
fn an_app_with_volumes_waits_its_own_grace_and_prefers_the_nodes_holding_them() {
    let app_with_volumes = AppSpec {
        holders: BTreeSet::from(["c".to_string()]),
        grace_ms: Some(60_000),
        preferred: vec![LabelRule::Exists { key: "ssd".into() }],
        ..app("db", 1, 100)
    };
    let mut ssd = node("b", 4000, "z1");
    ssd.labels.insert("ssd".into(), "yes".into());
    let problem = |for_ms| Problem {
        nodes: vec![
            NodeView {
                state: NodeState::Dead { for_ms },
                ..node("a", 1000, "z1")
            },
            ssd.clone(),
            // Least free memory and no preferred label: only its volumes speak for it.
            node("c", 500, "z1"),
        ],
        apps: vec![app_with_volumes.clone()],
        dead_grace_ms: 10_000,
    };
    let previous = vec![Placement {
        app: "db".into(),
        replica: 0,
        node: "a".into(),
    }];
    // Past the mesh's grace, within its own: it stays.
    assert_eq!(nodes_of(&solve(&problem(30_000), &previous), "db"), ["a"]);
    // Past its own: it moves, to the node that holds its volumes.
    assert_eq!(nodes_of(&solve(&problem(70_000), &previous), "db"), ["c"]);
    // A new placement goes there too.
    assert_eq!(nodes_of(&solve(&problem(0), &[]), "db"), ["c"]);
}

#[test]
fn suspect_nodes_keep_replicas_but_get_no_new_ones_and_scale_down_drops_the_highest() {
    let mut problem = Problem {
        nodes: vec![
            NodeView {
                state: NodeState::Suspect,
                ..node("a", 1000, "z1")
            },
            node("b", 1000, "z2"),
        ],
        apps: vec![app("web", 2, 100)],
        dead_grace_ms: 0,
    };
    let previous = vec![Placement {
        app: "web".into(),
        replica: 0,
        node: "a".into(),
    }];
    let solution = solve(&problem, &previous);
    assert_eq!(nodes_of(&solution, "web"), ["a", "b"]);
    problem.apps[0].replicas = 1;
    let solution = solve(&problem, &solution.placements);
    assert_eq!(solution.placements, previous);
}

prop_compose! {
    fn arb_node(i: usize)(memory in 0u64..2000, cpu in 0u64..4000, zone in 0u8..3,
                          docker in any::<bool>(), max in proptest::option::of(0u32..4),
                          state in 0u8..6, relax in any::<bool>()) -> NodeView {
        NodeView {
            id: format!("n{i:02}"),
            state: match state { 0 => NodeState::Suspect, 1 => NodeState::Dead { for_ms: 5_000 }, _ => NodeState::Alive },
            runtimes: if docker { BTreeSet::from([Runtime::Wasm, Runtime::Docker]) } else { BTreeSet::from([Runtime::Wasm]) },
            labels: BTreeMap::from([("zone".to_string(), format!("z{zone}"))]),
            memory_mb: memory,
            cpu_millis: cpu,
            max_instances: max,
            allowed_owners: None,
            relaxations_allowed: writable_root(relax),
        }
    }
}

prop_compose! {
    fn arb_app(i: usize)(replicas in 0u32..6, memory in 1u64..600, cpu in 0u64..1500,
                         docker in any::<bool>(), binpack in any::<bool>(), zone in proptest::option::of(0u8..3),
                         relax in proptest::bool::weighted(0.2)) -> AppSpec {
        AppSpec {
            name: format!("app{i}"),
            owner: "alice".into(),
            runtimes: vec![if docker { Runtime::Docker } else { Runtime::Wasm }],
            replicas,
            memory_mb: memory,
            cpu_millis: cpu,
            required: zone.map(|z| LabelRule::NotIn { key: "zone".into(), values: vec![format!("z{z}")] }).into_iter().collect(),
            preferred: vec![],
            strategy: if binpack { Packing::Binpack } else { Packing::Spread },
            relaxations: writable_root(relax),
            holders: BTreeSet::new(),
            grace_ms: None,
        }
    }
}

fn arb_problem() -> impl proptest::strategy::Strategy<Value = Problem> {
    (1usize..8, 1usize..5).prop_flat_map(|(n, a)| {
        let nodes: Vec<_> = (0..n).map(arb_node).collect();
        let apps: Vec<_> = (0..a).map(arb_app).collect();
        (nodes, apps).prop_map(|(nodes, apps)| Problem {
            nodes,
            apps,
            dead_grace_ms: 10_000,
        })
    })
}

fn by_id(problem: &Problem) -> HashMap<&str, &NodeView> {
    problem.nodes.iter().map(|n| (n.id.as_str(), n)).collect()
}

proptest! {
    #[test]
    fn placements_are_feasible_and_never_overcommit(problem in arb_problem()) {
        let solution = solve(&problem, &[]);
        let nodes = by_id(&problem);
        let mut used: HashMap<&str, (u64, u64, u32)> = HashMap::new();
        for p in &solution.placements {
            let node = nodes[p.node.as_str()];
            let app = problem.apps.iter().find(|a| a.name == p.app).unwrap();
            prop_assert_eq!(node.state, NodeState::Alive);
            prop_assert!(app.runs_on(&node.runtimes));
            prop_assert!(node.allows_relaxations(app));
            prop_assert!(app.required.iter().all(|r| r.matches(&node.labels)));
            let u = used.entry(node.id.as_str()).or_default();
            u.0 += app.memory_mb;
            u.1 += app.cpu_millis;
            u.2 += 1;
        }
        for (id, (memory, cpu, count)) in used {
            let node = nodes[id];
            prop_assert!(memory <= node.memory_mb && cpu <= node.cpu_millis);
            prop_assert!(node.max_instances.is_none_or(|max| count <= max));
        }
    }

    #[test]
    fn replicas_share_a_node_only_when_no_other_node_fits(problem in arb_problem()) {
        // Give every node room for everything, so only eligibility limits spreading.
        let mut roomy = problem.clone();
        for node in &mut roomy.nodes {
            node.memory_mb = 1 << 30;
            node.cpu_millis = 1 << 30;
            node.max_instances = None;
        }
        let solution = solve(&roomy, &[]);
        for app in &roomy.apps {
            let eligible = roomy.nodes.iter().filter(|n| {
                n.state == NodeState::Alive && app.runs_on(&n.runtimes)
                    && n.allows_relaxations(app) && app.required.iter().all(|r| r.matches(&n.labels))
            }).count();
            let mut nodes = nodes_of(&solution, &app.name);
            let placed = nodes.len();
            nodes.sort();
            nodes.dedup();
            prop_assert_eq!(nodes.len(), placed.min(eligible), "{} on {:?}", app.name, nodes);
        }
    }

    #[test]
    fn the_same_problem_in_any_order_gives_the_same_solution(problem in arb_problem()) {
        let solution = solve(&problem, &[]);
        let mut shuffled = problem.clone();
        shuffled.nodes.reverse();
        shuffled.apps.reverse();
        prop_assert_eq!(&solve(&shuffled, &[]), &solution);
        prop_assert_eq!(&solve(&problem, &[]), &solution);
    }

    #[test]
    fn solving_again_changes_nothing(problem in arb_problem()) {
        let first = solve(&problem, &[]);
        let second = solve(&problem, &first.placements);
        prop_assert_eq!(second, first);
    }
}

// The fast solver against the plain one it replaced (`reference.rs`), on problems with the odd
// corners: shared node ids and app names, nodes without a zone, dead nodes either side of the
// grace time, owners, instance limits, preferred rules, and stale or duplicate previous placements.

prop_compose! {
    fn odd_node()(id in 0u8..10, memory in 0u64..2000, cpu in 0u64..4000,
                   zone in proptest::option::of(0u8..3), ssd in any::<bool>(),
                   docker in any::<bool>(), max in proptest::option::of(0u32..4),
                   owners in proptest::option::of(any::<bool>()),
                   state in 0u8..6, dead_for in 0u64..20_000, relax in any::<bool>()) -> NodeView {
        let mut labels = BTreeMap::new();
        if let Some(zone) = zone {
            labels.insert("zone".to_string(), format!("z{zone}"));
        }
        if ssd {
            labels.insert("disk".to_string(), "ssd".to_string());
        }
        NodeView {
            id: format!("n{id}"),
            state: match state { 0 => NodeState::Suspect, 1 => NodeState::Dead { for_ms: dead_for }, _ => NodeState::Alive },
            runtimes: if docker { BTreeSet::from([Runtime::Wasm, Runtime::Docker]) } else { BTreeSet::from([Runtime::Wasm]) },
            labels,
            memory_mb: memory,
            cpu_millis: cpu,
            max_instances: max,
            allowed_owners: owners.map(|alice| BTreeSet::from([if alice { "alice" } else { "bob" }.to_string()])),
            relaxations_allowed: writable_root(relax),
        }
    }
}

prop_compose! {
    fn odd_app()(name in 0u8..6, bob in any::<bool>(), replicas in 0u32..7, memory in 1u64..600,
                 cpu in 0u64..1500, docker in any::<bool>(), binpack in any::<bool>(),
                 zone in proptest::option::of(0u8..3), prefer_ssd in any::<bool>(),
                 prefer_zone in proptest::option::of(0u8..3), relax in any::<bool>(),
                 holders in proptest::collection::btree_set(0u8..8, 0..3),
                 grace_ms in proptest::option::of(0u64..20_000)) -> AppSpec {
        let mut preferred = vec![];
        if prefer_ssd {
            preferred.push(LabelRule::In { key: "disk".into(), values: vec!["ssd".into()] });
        }
        if let Some(z) = prefer_zone {
            preferred.push(LabelRule::In { key: "zone".into(), values: vec![format!("z{z}")] });
        }
        AppSpec {
            name: format!("app{name}"),
            owner: if bob { "bob" } else { "alice" }.into(),
            runtimes: vec![if docker { Runtime::Docker } else { Runtime::Wasm }],
            replicas,
            memory_mb: memory,
            cpu_millis: cpu,
            required: zone.map(|z| LabelRule::NotIn { key: "zone".into(), values: vec![format!("z{z}")] }).into_iter().collect(),
            preferred,
            strategy: if binpack { Packing::Binpack } else { Packing::Spread },
            relaxations: writable_root(relax),
            holders: holders.into_iter().map(|h| format!("n{h}")).collect(),
            grace_ms,
        }
    }
}

prop_compose! {
    fn odd_placement()(app in 0u8..7, replica in 0u32..8, node in 0u8..11) -> Placement {
        Placement { app: format!("app{app}"), replica, node: format!("n{node}") }
    }
}

fn odd_problem() -> impl proptest::strategy::Strategy<Value = Problem> {
    (
        proptest::collection::vec(odd_node(), 0..12),
        proptest::collection::vec(odd_app(), 0..8),
    )
        .prop_map(|(nodes, apps)| Problem {
            nodes,
            apps,
            dead_grace_ms: 10_000,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_fast_solver_agrees_with_the_reference(
        problem in odd_problem(),
        previous in proptest::collection::vec(odd_placement(), 0..16),
    ) {
        prop_assert_eq!(solve(&problem, &[]), crate::reference::solve(&problem, &[]));
        prop_assert_eq!(solve(&problem, &previous), crate::reference::solve(&problem, &previous));
    }

    #[test]
    fn the_fast_solver_agrees_with_the_reference_when_nodes_die(
        problem in odd_problem(),
        deaths in proptest::collection::vec(proptest::option::of(0u64..20_000), 12),
    ) {
        let first = crate::reference::solve(&problem, &[]);
        let mut later = problem.clone();
        for (node, death) in later.nodes.iter_mut().zip(deaths) {
            if let Some(for_ms) = death {
                node.state = NodeState::Dead { for_ms };
            }
        }
        prop_assert_eq!(
            solve(&later, &first.placements),
            crate::reference::solve(&later, &first.placements)
        );
    }
}
