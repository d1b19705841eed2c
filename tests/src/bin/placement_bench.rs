//! placement_bench: how fast the placement group commits, and how fast it recovers its leader.
//!
//! ```text
//! cargo build --release -p mycel -p mycel-tests --bins && target/release/placement_bench
//! ```
//!
//! Five release nodes on 127.0.0.1 form one group (five voters). Baseline in the same run:
//! deploys sent to the leader itself. Then the same deploys through a follower (forwarded over
//! the mesh), committed writes per second with concurrent clients on every node, and the time
//! from `kill -9` of the leader until the survivors agree on a new one.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::future::join_all;
use mycel_tests::{Mesh, NodeProcess, apps::manifest, wait_until};
use reqwest::StatusCode;
use tokio::time::Instant;

const DEPLOYS: usize = 200;
const CLIENTS_PER_NODE: usize = 4;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(5);
const FAILOVERS: usize = 3;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Deploys `name` `DEPLOYS` times through `node`; returns the latencies in ms, sorted.
async fn deploy_latencies(node: &NodeProcess, name: &str, module: &str) -> Result<Vec<f64>> {
    let mut ms = Vec::with_capacity(DEPLOYS);
    for i in 0..DEPLOYS {
        let body = manifest(name, &format!("1.0.{i}"), 1, module);
        let started = Instant::now();
        let (status, answer) = node.deploy(&body).await?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        ensure!(status == StatusCode::CREATED, "deploy: {status} {answer}");
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

async fn leader_index(mesh: &Mesh, among: &[usize]) -> Result<usize> {
    let mut found = None;
    wait_until(
        "one leader, known to every running node",
        Duration::from_secs(30),
        Duration::from_millis(10),
        async || {
            let mut leaders = Vec::new();
            for &i in among {
                leaders.push(mesh[i].cluster().await?.leader);
            }
            let Some(Some(leader)) = leaders.first().cloned() else {
                return Ok(false);
            };
            if leaders
                .iter()
                .any(|l| l.as_deref() != Some(leader.as_str()))
            {
                return Ok(false);
            }
            found = among.iter().copied().find(|&i| mesh[i].peer_id() == leader);
            Ok(found.is_some())
        },
    )
    .await?;
    found.context("leader")
}

async fn five_voters(mesh: &Mesh) -> Result<()> {
    wait_until(
        "five voters",
        Duration::from_secs(60),
        Duration::from_millis(100),
        async || {
            for node in mesh.iter() {
                let view = node.cluster().await?;
                if view.voters.len() != 5 || view.leader.is_none() {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut mesh = Mesh::star(5).await?;
    let result = run(&mut mesh).await;
    mesh.report(result)
}

async fn run(mesh: &mut Mesh) -> Result<()> {
    five_voters(mesh).await?;
    let all: Vec<usize> = (0..mesh.len()).collect();
    let leader = leader_index(mesh, &all).await?;
    let follower = (leader + 1) % mesh.len();
    let module = mesh[leader].push(b"bench module".to_vec()).await?;

    let at_leader = deploy_latencies(&mesh[leader], "via-leader", &module).await?;
    let via_follower = deploy_latencies(&mesh[follower], "via-follower", &module).await?;

    // Committed writes per second: every node takes deploys from several clients at once.
    let deadline = Instant::now() + THROUGHPUT_WINDOW;
    let clients = mesh.iter().enumerate().flat_map(|(n, node)| {
        let module = module.clone();
        (0..CLIENTS_PER_NODE).map(move |c| {
            let module = module.clone();
            async move {
                let mut done = 0u64;
                let mut i = 0;
                while Instant::now() < deadline {
                    let body = manifest(&format!("load-{n}-{c}"), &format!("1.0.{i}"), 1, &module);
                    i += 1;
                    if let Ok((StatusCode::CREATED, _)) = node.deploy(&body).await {
                        done += 1;
                    }
                }
                done
            }
        })
    });
    let started = Instant::now();
    let committed: u64 = join_all(clients).await.into_iter().sum();
    let writes_per_s = committed as f64 / started.elapsed().as_secs_f64();

    // Failover: kill the leader, time until the survivors agree on another, bring it back.
    let mut failovers = Vec::new();
    for _ in 0..FAILOVERS {
        let leader = leader_index(mesh, &all).await?;
        mesh[leader].sigkill()?;
        let killed = Instant::now();
        let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
        leader_index(mesh, &survivors).await?;
        failovers.push(killed.elapsed().as_secs_f64());
        mesh[leader].restart_in_place().await?;
        five_voters(mesh).await?;
    }
    failovers.sort_by(f64::total_cmp);

    let p = |v: &[f64], q| percentile(v, q);
    println!("placement group, 5 release nodes on loopback, {DEPLOYS} sequential deploys each way");
    println!();
    println!("| measure | value | baseline (same run) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| deploy commit latency through a follower, p50 | {:.1} ms | {:.1} ms at the leader | {:.2}x |",
        p(&via_follower, 0.5),
        p(&at_leader, 0.5),
        p(&via_follower, 0.5) / p(&at_leader, 0.5)
    );
    println!(
        "| deploy commit latency through a follower, p99 | {:.1} ms | {:.1} ms at the leader | {:.2}x |",
        p(&via_follower, 0.99),
        p(&at_leader, 0.99),
        p(&via_follower, 0.99) / p(&at_leader, 0.99)
    );
    println!(
        "| committed writes per second ({} clients over 5 nodes) | {writes_per_s:.0}/s | {:.0}/s sequential at the leader | {:.2}x |",
        CLIENTS_PER_NODE * mesh.len(),
        1000.0 / p(&at_leader, 0.5),
        writes_per_s * p(&at_leader, 0.5) / 1000.0
    );
    println!(
        "| leader killed (SIGKILL) to a new agreed leader, median of {FAILOVERS} | {:.2} s | election timeout 0.7-1.0 s | |",
        p(&failovers, 0.5)
    );
    println!("failovers: {failovers:.2?} s");
    Ok(())
}
