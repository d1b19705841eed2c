//! A Jepsen-style workload: a stream of deploys through random nodes while the test kills and
//! restarts nodes, and the record of which writes were acknowledged, refused or lost in flight.
//!
//! The writers only know each node's API address ([`Targets`]), which the test updates as it
//! kills (`None`) and restarts (the new address) nodes. Every deploy names a new app, so "every
//! acknowledged write is still there" is a plain set inclusion over `GET /v1/apps`.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use futures::future::join_all;
use mycel_protocol::api::Cluster;
use reqwest::StatusCode;
use tokio::{task::JoinHandle, time::Instant};

use crate::{
    Mesh, NodeProcess,
    apps::{agreed_group, manifest},
    wait_until,
};

/// The API address of every node of a mesh, by index; `None` while a node is down.
#[derive(Clone, Debug, Default)]
pub struct Targets(Arc<RwLock<Vec<Option<String>>>>);

impl Targets {
    /// Every node of `mesh` that runs, at its current address.
    pub fn of(mesh: &Mesh) -> Self {
        let apis = mesh
            .iter()
            .map(|n| (!n.has_exited()).then(|| n.api().to_string()))
            .collect();
        Self(Arc::new(RwLock::new(apis)))
    }

    /// Node `i` is down (`None`) or answers at `api`.
    pub fn set(&self, i: usize, api: Option<&str>) {
        let mut apis = self.0.write().expect("targets lock");
        if i >= apis.len() {
            apis.resize(i + 1, None);
        }
        apis[i] = api.map(str::to_string);
    }

    fn pick(&self, roll: u64) -> Option<String> {
        let apis = self.0.read().expect("targets lock");
        let up: Vec<&String> = apis.iter().flatten().collect();
        (!up.is_empty()).then(|| up[(roll % up.len() as u64) as usize].clone())
    }
}

/// What happened to the writes of a [`WriteLoad`].
#[derive(Clone, Debug, Default)]
pub struct WriteLog {
    /// Apps whose deploy was answered `201`.
    pub acknowledged: BTreeSet<String>,
    /// Deploys answered with an error (status, code and message), with when they were answered.
    pub refused: Vec<(Instant, StatusCode, String)>,
    /// Deploys that got no answer (the node died under them, or the request timed out).
    pub unanswered: Vec<Instant>,
}

impl WriteLog {
    /// Writes refused or unanswered between `from` and `to`.
    pub fn failed_between(&self, from: Instant, to: Instant) -> usize {
        let refused = self
            .refused
            .iter()
            .filter(|(at, _, _)| (from..to).contains(at))
            .count();
        let unanswered = self
            .unanswered
            .iter()
            .filter(|at| (from..to).contains(at))
            .count();
        refused + unanswered
    }
}

/// Writers that deploy a new app through a random running node, one at a time each, with a
/// pause between writes; stopped with [`WriteLoad::stop`].
pub struct WriteLoad {
    log: Arc<Mutex<WriteLog>>,
    stop: Arc<tokio::sync::Notify>,
    writers: Vec<JoinHandle<()>>,
}

impl WriteLoad {
    /// Starts `writers` writers, each deploying apps `w<writer>-<n>` (no replicas: the workload is
    /// the placement group's, not the agents') that use `module`, pausing `pause` between writes.
    pub fn start(targets: &Targets, module: &str, writers: usize, pause: Duration) -> Self {
        let log = Arc::new(Mutex::new(WriteLog::default()));
        let stop = Arc::new(tokio::sync::Notify::new());
        let writers = (0..writers)
            .map(|w| {
                let (targets, log, stop) = (targets.clone(), log.clone(), stop.clone());
                let module = module.to_string();
                tokio::spawn(async move {
                    let stopped = stop.notified();
                    tokio::pin!(stopped);
                    // Registered now, so a stop that comes before the first poll is not missed.
                    stopped.as_mut().enable();
                    let mut roll = 0x9e37_79b9_7f4a_7c15_u64 ^ (w as u64 + 1);
                    for n in 0.. {
                        roll = xorshift(roll);
                        let name = format!("w{w}-{n}");
                        tokio::select! {
                            _ = &mut stopped => return,
                            () = write_once(&targets, &log, &name, &module, roll) => {}
                        }
                        tokio::select! {
                            _ = &mut stopped => return,
                            () = tokio::time::sleep(pause) => {}
                        }
                    }
                })
            })
            .collect();
        Self { log, stop, writers }
    }

    /// The record so far.
    pub fn log(&self) -> WriteLog {
        self.log.lock().expect("write log lock").clone()
    }

    /// Stops every writer (a write in flight is abandoned: it counts as unanswered only if it
    /// had already failed) and returns the record.
    pub async fn stop(self) -> WriteLog {
        self.stop.notify_waiters();
        for writer in self.writers {
            let _ = writer.await;
        }
        self.log.lock().expect("write log lock").clone()
    }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

async fn write_once(targets: &Targets, log: &Mutex<WriteLog>, name: &str, module: &str, roll: u64) {
    let Some(api) = targets.pick(roll) else {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return;
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("an HTTP client");
    let answer = client
        .post(format!("{api}/v1/apps"))
        .json(&manifest(name, "1.0.0", 0, module))
        .send()
        .await;
    let at = Instant::now();
    let outcome = match answer {
        Ok(response) if response.status() == StatusCode::CREATED => Ok(()),
        Ok(response) => {
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let error = format!("{} {}", body["code"], body["error"]);
            Err(Some((status, error)))
        }
        Err(_) => Err(None),
    };
    let mut log = log.lock().expect("write log lock");
    match outcome {
        Ok(()) => {
            log.acknowledged.insert(name.to_string());
        }
        Err(Some((status, error))) => log.refused.push((at, status, error)),
        Err(None) => log.unanswered.push(at),
    }
}

/// The placement group as `nodes` see it: one leader and one term on all of them.
pub fn agreed(views: &[Cluster]) -> Option<(String, u64)> {
    let first = views.first()?;
    let leader = first.leader.clone()?;
    views
        .iter()
        .all(|v| v.leader.as_deref() == Some(leader.as_str()) && v.term == first.term)
        .then_some((leader, first.term))
}

/// The view of the group of every running node of `mesh` (an error names one that did not
/// answer).
pub async fn views(mesh: &Mesh) -> Result<Vec<Cluster>> {
    let nodes: Vec<&NodeProcess> = mesh.running().collect();
    join_all(nodes.iter().map(|n| n.cluster()))
        .await
        .into_iter()
        .collect()
}

/// Waits until every running node of `mesh` names the same leader in the same term; answers the
/// leader's index in `mesh` and the term.
pub async fn wait_agreed(mesh: &Mesh, timeout: Duration) -> Result<(usize, u64)> {
    let mut found = None;
    wait_until(
        "every running node to name one leader in one term",
        timeout,
        Duration::from_millis(25),
        async || {
            let views = views(mesh).await?;
            let Some((leader, term)) = agreed(&views) else {
                let seen: Vec<String> = mesh
                    .running()
                    .zip(&views)
                    .map(|(n, v)| {
                        format!("{}: {:?} in term {}", n.name(), short(&v.leader), v.term)
                    })
                    .collect();
                bail!("the nodes disagree: {}", seen.join(", "));
            };
            let index = (0..mesh.len())
                .find(|&i| mesh[i].peer_id() == leader)
                .context("the leader is not one of the mesh's nodes")?;
            found = Some((index, term));
            Ok(true)
        },
    )
    .await?;
    found.context("agreed")
}

/// Waits until node `i` has applied at least every entry the leader had committed when the wait
/// began (the newest entry of the group); answers how long that took.
pub async fn wait_caught_up(mesh: &Mesh, i: usize, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let (leader, _) = wait_agreed(mesh, timeout).await?;
    let newest = mesh[leader].cluster().await?.committed;
    wait_until(
        &format!("{} to apply the newest entry", mesh[i].name()),
        timeout,
        Duration::from_millis(10),
        async || {
            let applied = mesh[i].cluster().await?.committed;
            ensure!(
                applied >= newest,
                "{} applied {applied:?}, the leader had {newest:?}",
                mesh[i].name()
            );
            Ok(true)
        },
    )
    .await?;
    Ok(started.elapsed())
}

/// Waits until every running node lists every app in `acknowledged`; an error names a node and
/// an app it lacks.
pub async fn wait_all_listed(
    mesh: &Mesh,
    acknowledged: &BTreeSet<String>,
    timeout: Duration,
) -> Result<()> {
    wait_until(
        "every node to list every acknowledged deploy",
        timeout,
        Duration::from_millis(100),
        async || {
            for node in mesh.running() {
                let listed: BTreeSet<String> = node
                    .apps()
                    .await?
                    .apps
                    .into_iter()
                    .map(|a| a.name)
                    .collect();
                let missing: Vec<&String> = acknowledged.difference(&listed).collect();
                ensure!(
                    missing.is_empty(),
                    "{} lacks {} acknowledged deploys, such as {:?}",
                    node.name(),
                    missing.len(),
                    missing.first()
                );
            }
            Ok(true)
        },
    )
    .await
}

fn short(peer: &Option<String>) -> String {
    peer.as_deref().map_or("none".into(), |p| {
        p[p.len().saturating_sub(8)..].to_string()
    })
}

/// Where a restarted node listens again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// The address it had: a machine's node coming back after a crash.
    Same,
    /// A new port picked by the OS: its peers must learn the new address from the mesh.
    New,
}

/// Kills node `i` outright (SIGKILL) and takes it out of `targets`; answers when.
pub fn kill(mesh: &mut Mesh, targets: &Targets, i: usize) -> Result<Instant> {
    targets.set(i, None);
    mesh[i].sigkill()?;
    Ok(Instant::now())
}

/// Starts the killed node `i` again in its data dir and puts it back in `targets`; answers when
/// it was ready.
pub async fn restart(mesh: &mut Mesh, targets: &Targets, i: usize, port: Port) -> Result<Instant> {
    match port {
        Port::Same => mesh[i].restart_in_place().await?,
        Port::New => mesh[i].restart(&[]).await?,
    }
    targets.set(i, Some(mesh[i].api()));
    Ok(Instant::now())
}

/// [`kill`], then [`restart`] at once.
pub async fn kill_and_restart(
    mesh: &mut Mesh,
    targets: &Targets,
    i: usize,
    port: Port,
) -> Result<Instant> {
    kill(mesh, targets, i)?;
    restart(mesh, targets, i, port).await
}

/// Waits until every running node names one leader in a term after `term`: the survivors
/// elected a new leader.
pub async fn wait_new_leader(mesh: &Mesh, term: u64) -> Result<(usize, u64)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (leader, now) = wait_agreed(mesh, remaining).await?;
        if now > term {
            return Ok((leader, now));
        }
        ensure!(
            Instant::now() < deadline,
            "no new leader after term {term} within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the group is whole again (five voters, one leader everywhere) and the writers got
/// three more deploys through, so the next kill hits a group under load.
pub async fn wait_whole(mesh: &Mesh, load: &WriteLoad, timeout: Duration) -> Result<()> {
    let all: Vec<&NodeProcess> = mesh.iter().collect();
    agreed_group(&all, 5, timeout).await?;
    let before = load.log().acknowledged.len();
    wait_until(
        "the writers to get three more deploys through",
        timeout,
        Duration::from_millis(20),
        async || Ok(load.log().acknowledged.len() >= before + 3),
    )
    .await
}
