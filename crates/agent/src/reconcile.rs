//! The reconciler's pure core: what should run here (from the placement replica) against what
//! does (the agent's local view) in, the next actions and the states to report out. No I/O and
//! no clock of its own: the agent passes `now` in.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use mycel_protocol::{api::InstanceState, placement::instance_error};
use tokio::time::Instant;

/// Where a local instance is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Its module is being fetched or it is being started.
    Starting,
    /// It runs; `healthy` is the last health check's verdict.
    Running { healthy: bool },
    /// It failed (to start, or its health checks); it is tried again at `retry_at`.
    Failed { retry_at: Instant },
}

/// The agent's record of one instance on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Local {
    pub phase: Phase,
    /// Failures in a row: the backoff grows with them; a healthy run resets them.
    pub failures: u32,
    /// Health checks failed in a row while running.
    pub failed_checks: u32,
    /// Why it last failed; kept through its retries, cleared once it runs.
    pub error: Option<String>,
}

impl Local {
    pub fn starting() -> Self {
        Self {
            phase: Phase::Starting,
            failures: 0,
            failed_checks: 0,
            error: None,
        }
    }

    /// Records a failure and why: it is tried again after a backoff that grows with failures in
    /// a row. Returns the wait.
    pub fn fail(&mut self, now: Instant, max_backoff: Duration, why: String) -> Duration {
        self.failures += 1;
        self.error = Some(why);
        let wait = backoff(self.failures, max_backoff);
        self.phase = Phase::Failed {
            retry_at: now + wait,
        };
        wait
    }

    /// The state to report for it: running only while it passes its health checks, so every
    /// gateway routes to it and a rollout counts it only then.
    pub fn reported(&self) -> InstanceState {
        match self.phase {
            Phase::Starting | Phase::Running { healthy: false } => InstanceState::Starting,
            Phase::Running { healthy: true } => InstanceState::Running,
            Phase::Failed { .. } => InstanceState::Failed,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Fetch what it needs and start it (also a retry after a failure).
    Start(String),
    /// Stop it and forget it: it is no longer placed here.
    Stop(String),
}

/// The actions that bring `local` to `desired` (the ids placed on this node) at `now`: start
/// what is placed here and not running (or failed and due for a retry), stop what runs here and
/// is not placed here any more. Instances being started are left alone.
pub fn plan(
    desired: &BTreeSet<String>,
    local: &BTreeMap<String, Local>,
    now: Instant,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for id in desired {
        match local.get(id) {
            None => actions.push(Action::Start(id.clone())),
            Some(Local {
                phase: Phase::Failed { retry_at },
                ..
            }) if *retry_at <= now => actions.push(Action::Start(id.clone())),
            Some(_) => {}
        }
    }
    for id in local.keys() {
        if !desired.contains(id) {
            actions.push(Action::Stop(id.clone()));
        }
    }
    actions
}

/// How long to wait before the next attempt after `failures` failures in a row: 1 s, doubling,
/// at most `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(max)
}

/// What the replica says of an instance: its state and why it failed.
pub type Known = (InstanceState, Option<String>);

/// The states (and failure reasons) to report: each local instance whose state or reason differs
/// from what the replica says.
pub fn reports(
    replica: &BTreeMap<String, Known>,
    local: &BTreeMap<String, Local>,
) -> Vec<(String, InstanceState, Option<String>)> {
    local
        .iter()
        .filter_map(|(id, l)| {
            let state = l.reported();
            let (known_state, known_error) = replica.get(id)?;
            // Cut as the state keeps it, so that an unchanged reason compares equal.
            let error = l.error.as_deref().map(instance_error);
            (*known_state != state || *known_error != error).then(|| (id.clone(), state, error))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycel_protocol::placement::MAX_INSTANCE_ERROR_BYTES;

    fn ids(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn starts_what_is_placed_and_stops_what_is_not() {
        let now = Instant::now();
        let mut local = BTreeMap::new();
        local.insert("old".to_string(), Local::starting());
        local.insert(
            "kept".to_string(),
            Local {
                phase: Phase::Running { healthy: true },
                failures: 0,
                failed_checks: 0,
                error: None,
            },
        );
        let actions = plan(&ids(&["kept", "new"]), &local, now);
        assert_eq!(
            actions,
            vec![Action::Start("new".into()), Action::Stop("old".into())]
        );
        assert!(
            plan(&ids(&["kept", "old"]), &local, now).is_empty(),
            "settled"
        );
    }

    #[test]
    fn failed_instances_wait_for_their_backoff() {
        let now = Instant::now();
        let failed = |retry_at| Local {
            phase: Phase::Failed { retry_at },
            failures: 2,
            failed_checks: 0,
            error: Some("it crashed".into()),
        };
        let mut local = BTreeMap::new();
        local.insert("a".to_string(), failed(now + Duration::from_secs(1)));
        assert!(plan(&ids(&["a"]), &local, now).is_empty());
        local.insert("a".to_string(), failed(now));
        assert_eq!(
            plan(&ids(&["a"]), &local, now),
            vec![Action::Start("a".into())]
        );
    }

    #[test]
    fn backoff_doubles_up_to_a_ceiling() {
        let max = Duration::from_secs(30);
        let waits: Vec<u64> = (1..=7).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(u32::MAX, max), max);
    }

    #[test]
    fn only_changes_are_reported() {
        let replica = BTreeMap::from([
            ("a".to_string(), (InstanceState::Pending, None)),
            ("b".to_string(), (InstanceState::Running, None)),
            ("d".to_string(), (InstanceState::Starting, None)),
        ]);
        let running = Local {
            phase: Phase::Running { healthy: true },
            failures: 0,
            failed_checks: 0,
            error: None,
        };
        let mut failed = Local::starting();
        failed.fail(Instant::now(), Duration::from_secs(30), "refused".into());
        let local = BTreeMap::from([
            ("a".to_string(), Local::starting()),
            ("b".to_string(), running.clone()),
            // Not in the replica (removed meanwhile): nothing to report.
            ("c".to_string(), running),
            ("d".to_string(), failed),
        ]);
        assert_eq!(
            reports(&replica, &local),
            vec![
                ("a".to_string(), InstanceState::Starting, None),
                (
                    "d".to_string(),
                    InstanceState::Failed,
                    Some("refused".to_string())
                ),
            ]
        );
    }

    #[test]
    fn a_reason_is_reported_once_whatever_its_length() {
        let long = "é".repeat(1000);
        let mut local = Local::starting();
        local.fail(Instant::now(), Duration::from_secs(30), long.clone());
        let local = BTreeMap::from([("a".to_string(), local)]);
        let sent = reports(
            &BTreeMap::from([("a".to_string(), (InstanceState::Starting, None))]),
            &local,
        );
        let cut = sent[0].2.clone().unwrap();
        assert!(cut.len() <= MAX_INSTANCE_ERROR_BYTES && long.starts_with(&cut));
        let replica = BTreeMap::from([("a".to_string(), (InstanceState::Failed, Some(cut)))]);
        assert!(
            reports(&replica, &local).is_empty(),
            "the state holds it already"
        );
    }
}
