//! How long `solve` takes on a mesh-sized problem: 10,000 replicas over 1,000 nodes.
//!
//! Groups:
//! - `solve_from_scratch`: place everything, no previous solution.
//! - `solve_reschedule`: the steady state: re-solve with the previous solution after 10 nodes
//!   died past the grace time, so their replicas move and everything else stays.
//! - `baseline`: the floor to compare against, in the same run: cloning and sorting the 10,000
//!   placements, and the from-scratch case at a tenth of the size (1,000 replicas, 100 nodes).
//!
//! Run: `cargo bench -p mycel-scheduler --bench solve -- --measurement-time 5`

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mycel_protocol::Runtime;
use mycel_scheduler::{
    AppSpec, LabelRule, NodeState, NodeView, Placement, Problem, Strategy, solve,
};

const ZONES: u64 = 5;
const DEAD_GRACE_MS: u64 = 30_000;

/// A small deterministic generator (splitmix64): the same problem on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn node(i: usize, rng: &mut Rng) -> NodeView {
    let mut runtimes = BTreeSet::from([Runtime::Wasm]);
    if rng.chance(60) {
        runtimes.insert(Runtime::Docker);
    }
    if rng.chance(20) {
        runtimes.insert(Runtime::Process);
    }
    let mut labels = BTreeMap::from([
        ("zone".to_string(), format!("z{}", i as u64 % ZONES)),
        (
            "disk".to_string(),
            if rng.chance(40) { "ssd" } else { "hdd" }.to_string(),
        ),
        (
            "tier".to_string(),
            if rng.chance(30) { "core" } else { "edge" }.to_string(),
        ),
    ]);
    if rng.chance(10) {
        labels.insert("gpu".into(), "yes".into());
    }
    NodeView {
        id: format!("node-{i:04}"),
        // A few suspects: they keep what they have but get nothing new.
        state: if rng.chance(1) {
            NodeState::Suspect
        } else {
            NodeState::Alive
        },
        runtimes,
        labels,
        memory_mb: 1024 * rng.range(8, 64),
        cpu_millis: 1000 * rng.range(4, 32),
        max_instances: rng.chance(20).then(|| rng.range(8, 40) as u32),
        allowed_owners: rng
            .chance(5)
            .then(|| BTreeSet::from(["owner-0".to_string(), "owner-1".to_string()])),
        relaxations_allowed: BTreeSet::new(),
    }
}

fn app(i: usize, replicas: u32, rng: &mut Rng) -> AppSpec {
    let runtimes = match rng.next() % 10 {
        0..=5 => vec![Runtime::Wasm],
        6..=8 => vec![Runtime::Docker],
        _ => vec![Runtime::Process, Runtime::Docker],
    };
    let required = match rng.next() % 20 {
        0 => vec![LabelRule::In {
            key: "disk".into(),
            values: vec!["ssd".into()],
        }],
        1 => vec![LabelRule::NotIn {
            key: "zone".into(),
            values: vec!["z0".into()],
        }],
        2 => vec![LabelRule::Exists { key: "gpu".into() }],
        _ => vec![],
    };
    let preferred = match rng.next() % 10 {
        0 | 1 => vec![LabelRule::In {
            key: "tier".into(),
            values: vec!["core".into()],
        }],
        2 => vec![
            LabelRule::In {
                key: "disk".into(),
                values: vec!["ssd".into()],
            },
            LabelRule::NotIn {
                key: "zone".into(),
                values: vec!["z4".into()],
            },
        ],
        _ => vec![],
    };
    AppSpec {
        name: format!("app-{i:04}"),
        owner: format!("owner-{}", rng.next() % 20),
        runtimes,
        replicas,
        memory_mb: 64 * rng.range(1, 32),
        cpu_millis: 50 * rng.range(1, 20),
        required,
        preferred,
        strategy: if rng.chance(25) {
            Strategy::Binpack
        } else {
            Strategy::Spread
        },
        relaxations: BTreeSet::new(),
        holders: BTreeSet::new(),
        grace_ms: None,
    }
}

/// `nodes` nodes over 5 zones and `replicas / 10` apps of 1..=20 replicas, summing to exactly
/// `replicas`.
fn problem(nodes: usize, replicas: u32) -> Problem {
    let mut rng = Rng(0x6d79_6365_6c00 + u64::from(replicas));
    let apps = (replicas / 10) as usize;
    // Start at 10 each, then move replicas between random pairs: the sum stays `replicas`.
    let mut counts = vec![10u32; apps];
    for _ in 0..apps * 5 {
        let from = rng.next() as usize % apps;
        let to = rng.next() as usize % apps;
        let most = (counts[from] - 1).min(20 - counts[to]);
        if from != to && most > 0 {
            let moved = rng.range(1, u64::from(most)) as u32;
            counts[from] -= moved;
            counts[to] += moved;
        }
    }
    assert_eq!(counts.iter().sum::<u32>(), replicas);
    Problem {
        nodes: (0..nodes).map(|i| node(i, &mut rng)).collect(),
        apps: counts
            .iter()
            .enumerate()
            .map(|(i, &n)| app(i, n, &mut rng))
            .collect(),
        dead_grace_ms: DEAD_GRACE_MS,
    }
}

/// `problem` after 10 alive nodes that hold replicas died past the grace time.
fn ten_dead(problem: &Problem, placements: &[Placement]) -> Problem {
    let used: BTreeSet<&str> = placements.iter().map(|p| p.node.as_str()).collect();
    let mut after = problem.clone();
    let mut killed = 0;
    let mut i = 0;
    while killed < 10 {
        let node = &mut after.nodes[i % problem.nodes.len()];
        if node.state == NodeState::Alive && used.contains(node.id.as_str()) {
            node.state = NodeState::Dead {
                for_ms: DEAD_GRACE_MS + 1,
            };
            killed += 1;
        }
        i += 97;
    }
    after
}

fn benches(c: &mut Criterion) {
    let big = problem(1_000, 10_000);
    let first = solve(&big, &[]);
    let after = ten_dead(&big, &first.placements);
    let healed = solve(&after, &first.placements);
    let before: BTreeSet<&Placement> = first.placements.iter().collect();
    let moved = healed
        .placements
        .iter()
        .filter(|p| !before.contains(p))
        .count();
    let unplaced = |s: &mut dyn Iterator<Item = u32>| s.sum::<u32>();
    eprintln!(
        "from scratch: {} placed, {} unplaced; after 10 dead nodes: {} placed, {} unplaced, {} moved",
        first.placements.len(),
        unplaced(&mut first.unplaced.iter().map(|u| u.replicas)),
        healed.placements.len(),
        unplaced(&mut healed.unplaced.iter().map(|u| u.replicas)),
        moved,
    );

    let mut group = c.benchmark_group("solve_from_scratch");
    group.bench_function("10k_replicas_1k_nodes", |b| {
        b.iter(|| solve(black_box(&big), black_box(&[])))
    });
    group.finish();

    let mut group = c.benchmark_group("solve_reschedule");
    group.bench_function("10k_replicas_1k_nodes_10_dead", |b| {
        b.iter(|| solve(black_box(&after), black_box(&first.placements)))
    });
    group.finish();

    let small = problem(100, 1_000);
    let mut group = c.benchmark_group("baseline");
    group.bench_function("clone_sort_10k_placements", |b| {
        b.iter(|| {
            let mut placements = black_box(&first.placements).clone();
            placements.sort();
            placements
        })
    });
    group.bench_function("solve_from_scratch_1k_replicas_100_nodes", |b| {
        b.iter(|| solve(black_box(&small), black_box(&[])))
    });
    group.finish();
}

criterion_group! {
    name = solve_benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(solve_benches);
