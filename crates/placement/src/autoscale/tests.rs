use super::*;
use proptest::prelude::*;

const TICK_MS: u64 = 500;
/// 64 MiB and half a core per instance.
const CAPACITY: Capacity = Capacity {
    memory_mb: 64,
    cpu_cores: 0.5,
};

fn spec(min: u32, max: u32, target: f64) -> ScaleSpec {
    ScaleSpec {
        min,
        max,
        target_concurrency: Some(target),
        scale_to_zero_after_ms: 30_000,
        cooldown_ms: 10_000,
        ..ScaleSpec::default()
    }
}

/// An app under a load the test sets, decided on every tick as the leader does.
struct Sim {
    spec: ScaleSpec,
    window: Window,
    count: u32,
    last_change_ms: u64,
    now_ms: u64,
    /// (time, count) after each change.
    changes: Vec<(u64, u32)>,
}

impl Sim {
    fn new(spec: ScaleSpec, count: u32) -> Self {
        Sim {
            spec,
            window: Window::default(),
            count,
            last_change_ms: 0,
            now_ms: 1_000_000,
            changes: vec![],
        }
    }

    /// `ticks` ticks at `load` requests in flight in all.
    fn run(&mut self, load: f64, ticks: usize) {
        for _ in 0..ticks {
            self.now_ms += TICK_MS;
            let requests = if load > 0.0 { 10 } else { 0 };
            self.window.observe(Sample {
                at_ms: self.now_ms,
                in_flight: load,
                requests,
                memory_bytes: 0,
                cpu_cores: 0.0,
            });
            let d = self.window.decide(
                &self.spec,
                CAPACITY,
                self.count,
                self.last_change_ms,
                self.now_ms,
            );
            assert!(
                d.desired >= self.spec.min && d.desired <= self.spec.max,
                "{} outside {}..={}",
                d.desired,
                self.spec.min,
                self.spec.max
            );
            if d.desired != self.count {
                self.count = d.desired;
                self.last_change_ms = self.now_ms;
                self.changes.push((self.now_ms, d.desired));
            }
        }
    }
}

#[test]
fn a_steady_load_settles_on_its_count_and_stays() {
    let mut sim = Sim::new(spec(1, 10, 2.0), 1);
    sim.run(5.8, 240); // two minutes
    assert_eq!(sim.count, 3, "ceil(5.8 / 2)");
    let settled = sim.changes.len();
    sim.run(5.8, 240);
    assert_eq!(
        sim.changes.len(),
        settled,
        "no change under the same load: {:?}",
        sim.changes
    );
}

#[test]
fn a_burst_panics_up_within_seconds_and_holds_through_the_panic() {
    let mut sim = Sim::new(spec(1, 20, 1.0), 1);
    sim.run(0.5, 130); // a calm minute and more
    assert_eq!(sim.count, 1);
    let burst_at = sim.now_ms;
    sim.run(12.0, 6);
    assert!(sim.count >= 2, "up within 3 s: {:?}", sim.changes);
    assert!(sim.changes[0].0 - burst_at <= 3_000);
    sim.run(12.0, 20);
    assert_eq!(sim.count, 12, "{:?}", sim.changes);
    // The burst ends: nothing goes down during the panic (a stable window from when it last
    // called for twice the count), then it comes back down.
    let peak = sim.count;
    sim.run(0.5, 60);
    assert_eq!(sim.count, peak, "held through the panic window");
    sim.run(0.5, 400);
    assert_eq!(sim.count, 1);
}

#[test]
fn an_idle_app_with_min_zero_drops_to_zero_and_a_request_brings_one_back() {
    let mut sim = Sim::new(spec(0, 5, 1.0), 2);
    sim.run(0.0, 50);
    assert_eq!(sim.count, 2, "not before scale_to_zero_after_ms");
    sim.run(0.0, 40);
    assert_eq!(sim.count, 0, "{:?}", sim.changes);
    // A request held at a gateway counts as load: one instance comes at once.
    sim.run(1.0, 1);
    assert_eq!(sim.count, 1);
    // Activated, it gets its whole idle time again (and its window forgets the request) before
    // it stops.
    sim.run(0.0, 50);
    assert_eq!(sim.count, 1);
    sim.run(0.0, 100);
    assert_eq!(sim.count, 0);
}

#[test]
fn an_app_activated_before_its_load_is_reported_is_not_stopped_at_once() {
    let mut sim = Sim::new(spec(0, 5, 1.0), 0);
    sim.run(0.0, 100);
    assert_eq!(sim.count, 0);
    // The leader activates it for a held request (a change at now); no load reported yet.
    sim.count = 1;
    sim.last_change_ms = sim.now_ms;
    sim.run(0.0, 4);
    assert_eq!(sim.count, 1, "{:?}", sim.changes);
}

#[test]
fn a_min_above_zero_is_kept_however_idle() {
    let mut sim = Sim::new(spec(2, 5, 1.0), 4);
    sim.run(0.0, 600);
    assert_eq!(sim.count, 2);
}

#[test]
fn memory_drives_the_count_when_it_is_the_target() {
    let mut window = Window::default();
    let spec = ScaleSpec {
        target_memory: Some(0.5),
        ..ScaleSpec::default()
    };
    assert_eq!(spec.concurrency_target(), None);
    // 2 instances of 64 MiB using 100 MiB in all, against 32 MiB each: 4 instances.
    window.observe(Sample {
        at_ms: 1000,
        in_flight: 1.0,
        requests: 1,
        memory_bytes: 100 * 1024 * 1024,
        cpu_cores: 0.0,
    });
    let d = window.decide(&spec, CAPACITY, 2, 0, 1000);
    assert_eq!(d.desired, 4, "{d:?}");
    assert!(d.reason.contains("memory"), "{}", d.reason);
}

#[test]
fn cpu_drives_the_count_when_it_is_the_target() {
    let mut window = Window::default();
    let spec = ScaleSpec {
        target_cpu: Some(0.5),
        ..ScaleSpec::default()
    };
    // A core and a half busy, against a quarter of a core per instance (half of 0.5): 6.
    window.observe(Sample {
        at_ms: 1000,
        in_flight: 1.0,
        requests: 1,
        memory_bytes: 0,
        cpu_cores: 1.5,
    });
    let d = window.decide(&spec, CAPACITY, 1, 0, 1000);
    assert_eq!(d.desired, 6, "{d:?}");
    assert!(
        d.reason.contains("300% of cpu per instance, target 50%"),
        "{}",
        d.reason
    );
    assert_eq!(d.signals.cpu_cores, 1.5);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the settings and the load: never outside min..=max, and a constant load ends on
    /// one count that no longer changes.
    #[test]
    fn a_constant_load_never_flaps(
        min in 0u32..4,
        extra in 0u32..20,
        target in 0.5f64..20.0,
        load in 0.0f64..100.0,
        start in 0u32..30,
    ) {
        let max = min.max(1) + extra;
        let spec = spec(min, max, target);
        let mut sim = Sim::new(spec.clone(), start.clamp(min, max));
        sim.run(load, 600); // five minutes
        let settled = sim.changes.len();
        sim.run(load, 600);
        prop_assert_eq!(sim.changes.len(), settled, "flapping: {:?}", sim.changes);
        let wanted = if load > 0.0 {
            ((load / target).ceil() as u32).clamp(min.max(1), max)
        } else {
            min
        };
        prop_assert_eq!(sim.count, wanted);
    }
}
