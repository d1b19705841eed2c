use super::*;
use mycel_protocol::{
    app::Manifest,
    placement::{AppRecord, Instance},
};
use proptest::prelude::*;

const APP: &str = "web";
const TICK_MS: u64 = 500;

fn record(generation: u64, version: &str, replicas: u32, update: &str) -> AppRecord {
    let manifest = Manifest::from_toml(&format!(
        "name = \"{APP}\"\nversion = \"{version}\"\nreplicas = {replicas}\n\
         [wasm]\nmodule = \"blake3:{}\"\n{update}",
        "a".repeat(64)
    ))
    .unwrap();
    AppRecord {
        manifest,
        deployed_by: "n".into(),
        deployed_at_ms: 0,
        generation,
        unplaced: None,
        scale: None,
    }
}

fn instance(generation: u64, replica: u32, state: InstanceState, since_ms: u64) -> Instance {
    Instance {
        id: Instance::id_for(APP, generation, replica),
        app: APP.into(),
        replica,
        node: "n".into(),
        state,
        since_ms,
        error: None,
    }
}

fn rollout_to(to: &AppRecord, from: Option<&AppRecord>, now_ms: u64) -> Rollout {
    Rollout {
        from: from.map(|f| Box::new(f.clone())),
        to_generation: to.generation,
        to_version: to.manifest.version.clone(),
        state: RolloutState::Progressing,
        active: true,
        reverting: false,
        promoted: to.manifest.update.canary == 0,
        healthy: 0,
        total: to.manifest.replicas,
        started_ms: now_ms,
        deadline_ms: now_ms + to.manifest.update.healthy_deadline_ms,
        message: String::new(),
        step: 1,
        max_generation: to.generation,
    }
}

/// A toy mesh: instances of a good generation turn running `start_ms` after they are placed,
/// those of a bad one never do. Drives the rollout the way the leader does, a step per tick,
/// and checks on every step that the app never has fewer healthy instances than it should.
struct Sim {
    record: AppRecord,
    rollout: Rollout,
    instances: Vec<Instance>,
    now_ms: u64,
    start_ms: u64,
    bad_generations: Vec<u64>,
    /// (time, running instances of any generation) after each step.
    trace: Vec<(u64, u32)>,
}

impl Sim {
    fn new(from: &AppRecord, to: &AppRecord, start_ms: u64) -> Self {
        let now_ms = 100_000;
        let instances = (0..from.manifest.replicas)
            .map(|r| instance(from.generation, r, InstanceState::Running, 0))
            .collect();
        Sim {
            record: to.clone(),
            rollout: rollout_to(to, Some(from), now_ms),
            instances,
            now_ms,
            start_ms,
            bad_generations: vec![],
            trace: vec![],
        }
    }

    fn tick(&mut self) {
        let refs: Vec<&Instance> = self.instances.iter().collect();
        let update = self.record.manifest.update.clone();
        let step = step(
            &self.rollout,
            &update,
            self.record.manifest.replicas,
            &refs,
            self.now_ms,
        );
        if step.revert {
            let (restored, rollout) = revert(&self.rollout, &self.record, self.now_ms).unwrap();
            self.record = restored;
            self.rollout = rollout;
        } else {
            self.instances.retain(|i| !step.retire.contains(&i.id));
            for replica in 0..step.new_wanted {
                let id = Instance::id_for(APP, self.rollout.to_generation, replica);
                if !self.instances.iter().any(|i| i.id == id) {
                    let placed = instance(
                        self.rollout.to_generation,
                        replica,
                        InstanceState::Pending,
                        self.now_ms,
                    );
                    self.instances.push(placed);
                }
            }
            self.rollout = step.rollout;
        }
        self.now_ms += TICK_MS;
        for i in &mut self.instances {
            let good = !self.bad_generations.contains(&i.generation().unwrap());
            if good
                && i.state == InstanceState::Pending
                && self.now_ms - i.since_ms >= self.start_ms
            {
                i.state = InstanceState::Running;
                i.since_ms = self.now_ms;
            }
        }
        let running = self
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .count();
        self.trace.push((self.now_ms, running as u32));
    }

    fn run(&mut self, max_ticks: usize) {
        for _ in 0..max_ticks {
            if !self.rollout.active || self.rollout.state == RolloutState::AwaitingPromotion {
                return;
            }
            self.tick();
        }
    }

    fn generations(&self) -> Vec<u64> {
        let mut g: Vec<u64> = self
            .instances
            .iter()
            .filter_map(Instance::generation)
            .collect();
        g.sort();
        g.dedup();
        g
    }
}

fn update(max_parallel: u32, order: &str, canary: u32) -> String {
    format!(
        "[update]\nmax_parallel = {max_parallel}\nmin_healthy_ms = 1000\n\
         healthy_deadline_ms = 10000\norder = \"{order}\"\ncanary = {canary}\n"
    )
}

#[test]
fn a_good_version_replaces_the_old_one_by_one_never_below_the_replicas() {
    let from = record(1, "1", 3, "");
    let to = record(2, "2", 3, &update(1, "start_first", 0));
    let mut sim = Sim::new(&from, &to, 700);
    sim.run(200);
    assert_eq!(
        sim.rollout.state,
        RolloutState::Succeeded,
        "{:?}",
        sim.rollout
    );
    assert!(!sim.rollout.active);
    assert_eq!(sim.generations(), [2]);
    assert_eq!(sim.instances.len(), 3);
    assert!(
        sim.trace.iter().all(|(_, running)| *running >= 3),
        "{:?}",
        sim.trace
    );
}

#[test]
fn a_version_that_never_turns_healthy_is_reverted_and_the_old_one_kept_serving() {
    let from = record(1, "1", 3, "");
    let to = record(2, "2", 3, &update(1, "start_first", 0));
    let mut sim = Sim::new(&from, &to, 700);
    sim.bad_generations = vec![2];
    sim.run(200);
    assert_eq!(
        sim.rollout.state,
        RolloutState::Reverted,
        "{:?}",
        sim.rollout
    );
    assert!(!sim.rollout.active);
    assert_eq!(sim.record.manifest.version, "1");
    assert_eq!(sim.generations(), [1]);
    assert!(
        sim.rollout.message.contains("reverted to version 1"),
        "{}",
        sim.rollout.message
    );
    // Only one bad instance was ever tried, and no old one was retired for it.
    assert!(sim.trace.iter().all(|(_, running)| *running >= 3));
}

#[test]
fn without_auto_revert_a_stalled_rollout_fails_and_stays_put() {
    let from = record(1, "1", 2, "");
    let to = record(
        2,
        "2",
        2,
        "[update]\nauto_revert = false\nhealthy_deadline_ms = 3000\nmin_healthy_ms = 500\n",
    );
    let mut sim = Sim::new(&from, &to, 100);
    sim.bad_generations = vec![2];
    sim.run(100);
    assert_eq!(sim.rollout.state, RolloutState::Failed);
    assert!(
        sim.rollout.message.starts_with("failed:"),
        "{}",
        sim.rollout.message
    );
    assert_eq!(sim.record.manifest.version, "2");
    assert_eq!(
        sim.instances
            .iter()
            .filter(|i| i.generation() == Some(1))
            .count(),
        2,
        "the old instances keep serving"
    );
}

#[test]
fn canaries_wait_for_a_promote_beside_every_old_instance() {
    let from = record(1, "1", 3, "");
    let to = record(2, "2", 3, &update(1, "start_first", 1));
    let mut sim = Sim::new(&from, &to, 300);
    sim.run(100);
    assert_eq!(sim.rollout.state, RolloutState::AwaitingPromotion);
    assert_eq!((sim.rollout.healthy, sim.rollout.total), (1, 1));
    assert_eq!(
        sim.instances.len(),
        4,
        "one canary beside three old instances"
    );
    // Waiting is not stalling: no deadline runs out while it waits.
    for _ in 0..100 {
        sim.tick();
    }
    assert_eq!(sim.rollout.state, RolloutState::AwaitingPromotion);
    // What applying a promote does.
    sim.rollout.promoted = true;
    sim.rollout.state = RolloutState::Progressing;
    sim.rollout.deadline_ms = sim.now_ms + 10_000;
    sim.run(200);
    assert_eq!(sim.rollout.state, RolloutState::Succeeded);
    assert_eq!(sim.generations(), [2]);
    assert_eq!(sim.instances.len(), 3);
}

#[test]
fn a_first_deploy_places_everything_at_once() {
    let to = record(1, "1", 4, "");
    let rollout = rollout_to(&to, None, 0);
    let s = step(&rollout, &to.manifest.update, 4, &[], 0);
    assert_eq!(s.new_wanted, 4);
    assert!(s.retire.is_empty());
    assert_eq!(s.rollout.state, RolloutState::Progressing);
}

#[test]
fn scaling_to_zero_mid_rollout_retires_everything_and_succeeds() {
    let to = record(2, "2", 0, "");
    let from = record(1, "1", 2, "");
    let rollout = rollout_to(&to, Some(&from), 0);
    let old = [
        instance(1, 0, InstanceState::Running, 0),
        instance(2, 1, InstanceState::Running, 0),
    ];
    let refs: Vec<&Instance> = old.iter().collect();
    let s = step(&rollout, &to.manifest.update, 0, &refs, 10_000);
    assert_eq!(s.new_wanted, 0);
    assert_eq!(s.retire.len(), 2);
    assert_eq!(s.rollout.state, RolloutState::Succeeded);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the settings: a good version always ends the rollout with exactly its replicas,
    /// all new; with `start_first` the app never runs fewer instances than its replicas, with
    /// `stop_first` never fewer than replicas - max_parallel; and no more than `max_parallel`
    /// new instances are ever unhealthy at once.
    #[test]
    fn every_rollout_of_a_good_version_ends_new_and_whole(
        replicas in 0u32..8,
        max_parallel in 0u32..4,
        stop_first in any::<bool>(),
        start_ms in 0u64..3000,
        extra_old in 0u32..3,
    ) {
        let order = if stop_first { "stop_first" } else { "start_first" };
        let from = record(1, "1", replicas + extra_old, "");
        let to = record(2, "2", replicas, &update(max_parallel, order, 0));
        let mut sim = Sim::new(&from, &to, start_ms);
        let mut ticks = 0;
        while sim.rollout.active && ticks < 2000 {
            sim.tick();
            ticks += 1;
            let pending = sim.instances.iter()
                .filter(|i| i.generation() == Some(2) && i.state != InstanceState::Running)
                .count() as u32;
            if max_parallel > 0 {
                prop_assert!(pending <= max_parallel, "{pending} starting at once");
            }
        }
        prop_assert_eq!(sim.rollout.state, RolloutState::Succeeded);
        prop_assert_eq!(sim.instances.len() as u32, replicas);
        prop_assert!(sim.instances.iter().all(|i| i.generation() == Some(2)));
        let floor = match (stop_first, max_parallel) {
            (false, _) => replicas,
            (true, 0) => 0,
            (true, n) => replicas.saturating_sub(n),
        };
        for (_, running) in &sim.trace {
            prop_assert!(*running >= floor, "{running} running, floor {floor}: {:?}", sim.trace);
        }
    }

    /// A version that never turns healthy: with `start_first` nothing old is ever retired, and
    /// the app ends on the old version with all its replicas.
    #[test]
    fn a_bad_version_never_costs_an_old_instance(
        replicas in 1u32..8,
        max_parallel in 0u32..4,
    ) {
        let from = record(1, "1", replicas, "");
        let to = record(2, "2", replicas, &update(max_parallel, "start_first", 0));
        let mut sim = Sim::new(&from, &to, 100);
        sim.bad_generations = vec![2];
        sim.run(2000);
        prop_assert_eq!(sim.rollout.state, RolloutState::Reverted);
        prop_assert_eq!(sim.generations(), vec![1]);
        prop_assert_eq!(sim.instances.len() as u32, replicas);
        for (_, running) in &sim.trace {
            prop_assert!(*running >= replicas);
        }
    }
}
