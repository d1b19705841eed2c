//! The balancer's properties: candidates come from the replica and local health; round robin is
//! even, weighted proportional, least_request avoids a slow instance, latency prefers the local
//! instance when it is close; outliers are ejected and come back, never more than the limit.

use std::collections::{BTreeMap, BinaryHeap};

use mycel_protocol::{
    app::{BalanceStrategy, Manifest, OutlierSpec},
    placement::{AppRecord, Instance},
};
use proptest::prelude::*;

use super::*;

const STRATEGIES: [BalanceStrategy; 5] = [
    BalanceStrategy::LeastRequest,
    BalanceStrategy::RoundRobin,
    BalanceStrategy::LeastConnections,
    BalanceStrategy::Weighted,
    BalanceStrategy::Latency,
];

fn state(instances: &[(&str, &str, InstanceState)]) -> PlacementState {
    let toml = format!(
        "name = \"web\"\nversion = \"1\"\n[wasm]\nmodule = \"blake3:{}\"\n[balance]\nstrategy = \"round_robin\"\n",
        "c".repeat(64)
    );
    let mut state = PlacementState::default();
    state.apps.insert(
        "web".into(),
        AppRecord {
            manifest: Manifest::from_toml(&toml).expect("a valid manifest"),
            deployed_by: "test".into(),
            deployed_at_ms: 0,
            generation: 1,
            unplaced: None,
            scale: None,
        },
    );
    for (replica, (id, node, state_)) in instances.iter().enumerate() {
        state.instances.insert(
            id.to_string(),
            Instance {
                id: id.to_string(),
                app: "web".into(),
                replica: replica as u32,
                node: node.to_string(),
                state: *state_,
                since_ms: 0,
                error: None,
            },
        );
    }
    state
}

fn target(id: &str, local: bool, weight: u32) -> Target {
    Target {
        instance: id.into(),
        node: format!("node-of-{id}"),
        local,
        weight,
    }
}

fn targets(n: usize) -> Vec<Target> {
    (0..n).map(|i| target(&format!("i{i}"), false, 1)).collect()
}

fn ids(targets: &[Target]) -> Vec<&str> {
    targets.iter().map(|t| t.instance.as_str()).collect()
}

fn spec(strategy: BalanceStrategy) -> BalanceSpec {
    BalanceSpec {
        strategy,
        ..BalanceSpec::default()
    }
}

/// One request: order, start the first, and answer it after `latency(instance)`.
fn serve(
    b: &mut Balancer,
    spec: &BalanceSpec,
    c: &[Target],
    latency: impl Fn(&str) -> Duration,
    now: Instant,
) -> String {
    let first = b.order("web", spec, c.to_vec(), now)[0].instance.clone();
    let took = latency(&first);
    b.start("web", &first, now);
    b.record(
        "web",
        spec,
        &first,
        Outcome::Answered,
        Some(took),
        now + took,
    );
    b.end("web", &first);
    first
}

#[test]
fn an_app_not_in_the_replica_is_unknown() {
    let s = state(&[]);
    assert_eq!(
        candidates(&s, "other", "me", |_| true),
        Candidates::UnknownApp
    );
    match candidates(&s, "web", "me", |_| true) {
        Candidates::Healthy {
            targets,
            spec,
            autoscaled,
        } => {
            assert!(targets.is_empty());
            assert!(!autoscaled, "no [scale]");
            assert_eq!(
                spec.strategy,
                BalanceStrategy::RoundRobin,
                "the manifest's [balance]"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn only_running_instances_and_healthy_local_ones_are_candidates() {
    let s = state(&[
        ("web-1-0", "me", InstanceState::Running),
        ("web-1-1", "me", InstanceState::Running),
        ("web-1-2", "peer", InstanceState::Running),
        ("web-1-3", "peer", InstanceState::Starting),
        ("web-1-4", "peer", InstanceState::Failed),
    ]);
    let Candidates::Healthy { targets: c, .. } = candidates(&s, "web", "me", |id| id != "web-1-1")
    else {
        panic!("the app is known");
    };
    assert_eq!(ids(&c), ["web-1-0", "web-1-2"]);
    assert!(c[0].local && !c[1].local);
    assert_eq!(c[1].node, "peer");
}

#[test]
fn round_robin_per_app_and_every_order_holds_every_candidate() {
    let c = targets(3);
    let rr = spec(BalanceStrategy::RoundRobin);
    let mut b = Balancer::new(1);
    let now = Instant::now();
    let firsts: Vec<String> = (0..6)
        .map(|_| b.order("web", &rr, c.clone(), now)[0].instance.clone())
        .collect();
    assert_eq!(firsts, ["i0", "i1", "i2", "i0", "i1", "i2"]);
    assert_eq!(
        ids(&b.order("web", &rr, c.clone(), now)),
        ["i0", "i1", "i2"]
    );
    assert_eq!(b.order("api", &rr, c.clone(), now)[0].instance, "i0");
    assert!(b.order("web", &rr, vec![], now).is_empty());
}

#[test]
fn an_unreachable_instance_is_skipped_until_it_cools_off() {
    let c = targets(2);
    let rr = spec(BalanceStrategy::RoundRobin);
    let mut b = Balancer::new(1);
    let now = Instant::now();
    b.order("web", &rr, c.clone(), now);
    b.record("web", &rr, "i0", Outcome::Unreachable, None, now);
    for _ in 0..4 {
        assert_eq!(ids(&b.order("web", &rr, c.clone(), now)), ["i1"]);
    }
    let later = now + COOL_OFF;
    assert!(!b.is_held_back("web", "i0", later));
    assert_eq!(b.order("web", &rr, c.clone(), later).len(), 2);

    // When every instance is held back, all are tried anyway.
    b.record("web", &rr, "i0", Outcome::NotThere, None, later);
    b.record("web", &rr, "i1", Outcome::Unhealthy, None, later);
    assert_eq!(b.order("web", &rr, c.clone(), later).len(), 2);
    // An answer ends the skip at once; an unhealthy refusal is skipped only briefly.
    b.record("web", &rr, "i0", Outcome::Answered, None, later);
    assert_eq!(b.order("web", &rr, c.clone(), later).len(), 1);
    assert!(!b.is_held_back("web", "i1", later + UNHEALTHY_SKIP));
}

#[test]
fn a_silent_instance_is_hedged_after_a_multiple_of_its_latency_and_skipped_a_while() {
    let c = targets(2);
    let rr = spec(BalanceStrategy::RoundRobin);
    let mut b = Balancer::new(1);
    let now = Instant::now();
    b.order("web", &rr, c.clone(), now);
    // Nothing measured yet, or a fast app: the floor.
    assert_eq!(b.hedge_after("web", "i0", now), HEDGE_FLOOR);
    b.record(
        "web",
        &rr,
        "i0",
        Outcome::Answered,
        Some(Duration::from_millis(3)),
        now,
    );
    assert_eq!(b.hedge_after("web", "i0", now), HEDGE_FLOOR);
    // A slow app is given several times its usual latency.
    b.record(
        "web",
        &rr,
        "i1",
        Outcome::Answered,
        Some(Duration::from_millis(500)),
        now,
    );
    let wait = b.hedge_after("web", "i1", now);
    assert!(
        wait >= Duration::from_millis(3900) && wait <= Duration::from_millis(4000),
        "{wait:?}"
    );

    // Silent past it while a copy was answered elsewhere: skipped, not ejected.
    b.record("web", &rr, "i0", Outcome::Stalled, None, now);
    assert_eq!(ids(&b.order("web", &rr, c.clone(), now)), ["i1"]);
    assert_eq!(b.ejected("web", now), 0);
    assert!(!b.is_held_back("web", "i0", now + STALLED_SKIP));
}

#[test]
fn a_failing_instance_is_ejected_then_comes_back() {
    let c = targets(3);
    let s = BalanceSpec {
        outlier: OutlierSpec {
            consecutive_failures: 3,
            base_ejection_ms: 1000,
            max_ejection_percent: 50,
        },
        ..spec(BalanceStrategy::RoundRobin)
    };
    let mut b = Balancer::new(1);
    let now = Instant::now();
    b.order("web", &s, c.clone(), now);
    assert!(!b.record("web", &s, "i0", Outcome::Failed, None, now));
    assert!(!b.record("web", &s, "i0", Outcome::Failed, None, now));
    assert!(b.record("web", &s, "i0", Outcome::Failed, None, now));
    for _ in 0..3 {
        assert!(!ids(&b.order("web", &s, c.clone(), now)).contains(&"i0"));
    }
    // One of three at 50%: a second failing instance is not ejected.
    for _ in 0..5 {
        assert!(!b.record("web", &s, "i1", Outcome::Failed, None, now));
    }
    assert_eq!(b.ejected("web", now), 1);
    let back = now + Duration::from_millis(1000);
    assert!(ids(&b.order("web", &s, c.clone(), back)).contains(&"i0"));
    // Once i0 is back, i1's next failure ejects it.
    assert!(b.record("web", &s, "i1", Outcome::Failed, None, back));
}

#[test]
fn latency_prefers_a_slightly_slower_local_instance_but_not_a_much_slower_one() {
    let c = vec![target("local", true, 1), target("remote", false, 1)];
    let s = spec(BalanceStrategy::Latency);
    let now = Instant::now();
    for (local_ms, expect) in [(3, "local"), (30, "remote")] {
        let mut b = Balancer::new(1);
        b.order("web", &s, c.clone(), now);
        b.record(
            "web",
            &s,
            "local",
            Outcome::Answered,
            Some(Duration::from_millis(local_ms)),
            now,
        );
        b.record(
            "web",
            &s,
            "remote",
            Outcome::Answered,
            Some(Duration::from_millis(2)),
            now,
        );
        assert_eq!(b.order("web", &s, c.clone(), now)[0].instance, expect);
    }
}

/// A closed loop of `clients` clients in virtual time against instances whose answers take
/// `latencies`: how many requests each instance served.
fn simulate(
    strategy: BalanceStrategy,
    latencies: &[Duration],
    clients: usize,
    requests: usize,
    seed: u64,
) -> Vec<usize> {
    let c = targets(latencies.len());
    let s = spec(strategy);
    let mut b = Balancer::new(seed);
    let start = Instant::now();
    // (Reverse(time), client, instance index)
    let mut pending = BinaryHeap::new();
    let mut served = vec![0; latencies.len()];
    let send = |b: &mut Balancer, pending: &mut BinaryHeap<_>, client: usize, now: Duration| {
        let first = b.order("web", &s, c.clone(), start + now)[0]
            .instance
            .clone();
        let i: usize = first[1..].parse().unwrap();
        b.start("web", &first, start + now);
        pending.push((std::cmp::Reverse(now + latencies[i]), client, i, now));
    };
    for client in 0..clients {
        send(&mut b, &mut pending, client, Duration::ZERO);
    }
    for _ in 0..requests {
        let (std::cmp::Reverse(at), client, i, sent) = pending.pop().unwrap();
        let id = format!("i{i}");
        b.record(
            "web",
            &s,
            &id,
            Outcome::Answered,
            Some(at - sent),
            start + at,
        );
        b.end("web", &id);
        served[i] += 1;
        send(&mut b, &mut pending, client, at);
    }
    served
}

proptest! {
    #[test]
    fn every_order_is_a_permutation_of_the_candidates(
        n in 1usize..8, picks in 1usize..20, seed in any::<u64>(), weights in prop::collection::vec(1u32..5, 8),
    ) {
        let c: Vec<Target> = (0..n).map(|i| target(&format!("i{i}"), i == 0, weights[i])).collect();
        let now = Instant::now();
        for strategy in STRATEGIES {
            let mut b = Balancer::new(seed);
            for _ in 0..picks {
                let mut got = ids(&b.order("web", &spec(strategy), c.clone(), now)).into_iter().map(String::from).collect::<Vec<_>>();
                got.sort();
                let mut want: Vec<String> = c.iter().map(|t| t.instance.clone()).collect();
                want.sort();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn round_robin_is_even(n in 1usize..10, rounds in 1usize..20) {
        let c = targets(n);
        let mut b = Balancer::new(7);
        let mut count = BTreeMap::new();
        let now = Instant::now();
        for _ in 0..n * rounds {
            *count.entry(b.order("web", &spec(BalanceStrategy::RoundRobin), c.clone(), now)[0].instance.clone()).or_insert(0) += 1;
        }
        prop_assert!(count.values().all(|&k| k == rounds), "{:?}", count);
    }

    #[test]
    fn weighted_is_proportional(weights in prop::collection::vec(1u32..10, 1..6), rounds in 1usize..5) {
        let c: Vec<Target> = weights.iter().enumerate().map(|(i, w)| target(&format!("i{i}"), false, *w)).collect();
        let total: u32 = weights.iter().sum();
        let mut b = Balancer::new(7);
        let mut count = vec![0usize; weights.len()];
        let now = Instant::now();
        for _ in 0..total as usize * rounds {
            let first = b.order("web", &spec(BalanceStrategy::Weighted), c.clone(), now)[0].instance.clone();
            count[first[1..].parse::<usize>().unwrap()] += 1;
        }
        for (i, w) in weights.iter().enumerate() {
            prop_assert_eq!(count[i], *w as usize * rounds, "{:?} for {:?}", count, weights);
        }
    }

    #[test]
    fn least_request_avoids_a_slow_instance(
        fast in 2usize..5, fast_ms in 1u64..20, clients in 1usize..5, seed in any::<u64>(),
    ) {
        let mut latencies = vec![Duration::from_millis(fast_ms); fast];
        latencies.push(Duration::from_millis(fast_ms * 10));
        let requests = 2000;
        let served = simulate(BalanceStrategy::LeastRequest, &latencies, clients, requests, seed);
        let slow_share = served[fast] as f64 / requests as f64;
        // Round robin would give it 1/(fast + 1): a quarter to a third.
        prop_assert!(slow_share < 0.03, "the slow instance served {:?}", served);
        let rr = simulate(BalanceStrategy::RoundRobin, &latencies, clients, requests, seed);
        prop_assert!(rr[fast] as f64 / requests as f64 > 0.15, "{:?}", rr);
    }

    #[test]
    fn least_connections_takes_the_least_busy(busy in prop::collection::vec(0u32..6, 2..6)) {
        let c = targets(busy.len());
        let s = spec(BalanceStrategy::LeastConnections);
        let mut b = Balancer::new(3);
        let now = Instant::now();
        b.order("web", &s, c.clone(), now);
        for (i, k) in busy.iter().enumerate() {
            for _ in 0..*k { b.start("web", &format!("i{i}"), now); }
        }
        let first = b.order("web", &s, c.clone(), now)[0].instance.clone();
        let least = *busy.iter().min().unwrap();
        prop_assert_eq!(busy[first[1..].parse::<usize>().unwrap()], least);
    }

    #[test]
    fn latency_prefers_the_local_instance_when_close(local_ms in 1u64..50, remote_ms in 1u64..50) {
        let c = vec![target("remote", false, 1), target("local", true, 1)];
        let s = spec(BalanceStrategy::Latency);
        let mut b = Balancer::new(1);
        let now = Instant::now();
        b.order("web", &s, c.clone(), now);
        b.record("web", &s, "local", Outcome::Answered, Some(Duration::from_millis(local_ms)), now);
        b.record("web", &s, "remote", Outcome::Answered, Some(Duration::from_millis(remote_ms)), now);
        let first = b.order("web", &s, c.clone(), now)[0].instance.clone();
        let close = local_ms as f64 <= remote_ms as f64 * pick::LOCAL_FACTOR + 1.0;
        prop_assert_eq!(first == "local", close || local_ms <= remote_ms);
    }

    #[test]
    fn ejections_never_exceed_the_percentage(
        n in 1usize..10, percent in 0u32..=100, failures in prop::collection::vec((0usize..10, any::<bool>()), 0..200),
    ) {
        let c = targets(n);
        let s = BalanceSpec {
            outlier: OutlierSpec { consecutive_failures: 2, base_ejection_ms: 1000, max_ejection_percent: percent },
            ..BalanceSpec::default()
        };
        let mut b = Balancer::new(1);
        let mut now = Instant::now();
        for (i, failed) in failures {
            b.order("web", &s, c.clone(), now);
            let outcome = if failed { Outcome::Failed } else { Outcome::Answered };
            b.record("web", &s, &format!("i{}", i % n), outcome, None, now);
            prop_assert!(b.ejected("web", now) <= outlier::max_ejected(&s.outlier, n));
            now += Duration::from_millis(10);
        }
    }
}

#[test]
fn least_request_serves_a_slow_instance_now_and_then() {
    // The slow instance's estimate decays while nothing updates it: it is tried again, and
    // avoided again on its first slow answer.
    let c = targets(2);
    let s = spec(BalanceStrategy::LeastRequest);
    let mut b = Balancer::new(5);
    let mut now = Instant::now();
    b.order("web", &s, c.clone(), now);
    b.record(
        "web",
        &s,
        "i1",
        Outcome::Answered,
        Some(Duration::from_millis(100)),
        now,
    );
    let mut slow = 0;
    let latency = |id: &str| Duration::from_millis(if id == "i1" { 100 } else { 2 });
    for _ in 0..6000 {
        if serve(&mut b, &s, &c, latency, now) == "i1" {
            slow += 1;
        }
        now += Duration::from_millis(10);
    }
    assert!(
        (1..=20).contains(&slow),
        "served by the slow one {slow} times in a minute"
    );
}
