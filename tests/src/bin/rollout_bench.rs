//! rollout_bench: what a redeploy and a frozen node cost the requests under load, in one run.
//!
//! ```text
//! examples/hello/build.sh
//! cargo build -p mycel -p mycel-tests --bins && target/debug/rollout_bench
//! ```
//!
//! Three nodes on 127.0.0.1, examples/hello with 3 replicas (one per node):
//! - rollout: [`CLIENTS`] keep-alive clients per gateway on nodes 0 and 1 send `GET /` back to
//!   back while the app is redeployed, rolled out (`max_parallel = 1`, `start_first`,
//!   `min_healthy_ms` = [`MIN_HEALTHY_MS`]) against the baseline of replacing everything at once
//!   (`max_parallel = 0`, `stop_first`: how every redeploy went before rollouts). Counted: failed
//!   requests, and the rollout's time from the deploy's answer to `succeeded` against
//!   3 × `min_healthy_ms`;
//! - frozen node: node 2 is stopped (SIGSTOP) for [`FROZEN_FOR`] while a request goes to node 0's
//!   gateway every 20 ms (open loop, as real traffic), `round_robin` so the frozen instance would
//!   get a full third: the share answered within 2 s, with `hedge` on (the default) and off.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::future::join_all;
use mycel_protocol::{api::InstanceState, placement::RolloutState};
use mycel_tests::{Mesh, NodeProcess, apps::manifest, hello_example, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

const CLIENTS: usize = 4;
const MIN_HEALTHY_MS: u64 = 2000;
const FROZEN_FOR: Duration = Duration::from_secs(8);
const OPEN_LOOP_EVERY: Duration = Duration::from_millis(20);

fn hello(module: &str, name: &str, version: &str, update: Value, balance: Value) -> Value {
    let mut m = manifest(name, version, 3, module);
    m["env"] = json!({ "GREETING": format!("version {version}") });
    m["update"] = update;
    m["balance"] = balance;
    m
}

async fn deploy(node: &NodeProcess, manifest: &Value) -> Result<()> {
    let (status, body) = node.deploy(manifest).await?;
    ensure!(status == StatusCode::CREATED, "deploy: {status} {body}");
    Ok(())
}

/// Waits until `node` shows the app's latest rollout succeeded with every instance running.
async fn rolled_out(node: &NodeProcess, name: &str, version: &str) -> Result<()> {
    wait_until(
        &format!("{name} {version} rolled out"),
        Duration::from_secs(120),
        Duration::from_millis(20),
        async || {
            let app = node.app(name).await?;
            let done = app.rollout.as_ref().is_some_and(|r| {
                r.to == version && r.state == RolloutState::Succeeded && r.healthy == r.total
            });
            Ok(done
                && app.instances.len() == 3
                && app
                    .instances
                    .iter()
                    .all(|i| i.state == InstanceState::Running))
        },
    )
    .await
}

/// Clients on two gateways send `GET /` back to back while `name` is redeployed as version 2
/// with `update`: the failed requests, all requests, and how long the rollout took.
async fn redeploy_under_load(
    mesh: &Mesh,
    module: &str,
    name: &str,
    update: Value,
) -> Result<(usize, usize, Duration)> {
    deploy(
        &mesh[0],
        &hello(module, name, "1", update.clone(), json!({})),
    )
    .await?;
    rolled_out(&mesh[0], name, "1").await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut runs = Vec::new();
    for node in [&mesh[0], &mesh[1]] {
        let (client, url) = node.gateway_client(name, Duration::from_secs(10))?;
        for _ in 0..CLIENTS {
            let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
            runs.push(tokio::spawn(async move {
                let (mut failed, mut sent) = (0usize, 0usize);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    sent += 1;
                    let ok = match client.get(&url).send().await {
                        Ok(r) => r.status() == StatusCode::OK && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if !ok {
                        failed += 1;
                        // A failing app answers at once: do not spin.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                (failed, sent)
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    deploy(&mesh[0], &hello(module, name, "2", update, json!({}))).await?;
    let started = Instant::now();
    rolled_out(&mesh[0], name, "2").await?;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut failed, mut sent) = (0, 0);
    for run in join_all(runs).await {
        let (f, s) = run?;
        failed += f;
        sent += s;
    }
    Ok((failed, sent, took))
}

/// A request every [`OPEN_LOOP_EVERY`] to `name` through node 0's gateway while node 2 is
/// frozen: the share answered 200 within 2 s, and the slowest answer.
async fn frozen_node(mesh: &Mesh, name: &str) -> Result<(f64, Duration)> {
    let app = mesh[0].app(name).await?;
    ensure!(
        app.instances
            .iter()
            .any(|i| i.node == mesh[2].peer_id() && i.state == InstanceState::Running),
        "an instance of {name} runs on the node about to freeze: {app:?}"
    );
    mesh[2].freeze()?;
    let count = (FROZEN_FOR.as_millis() / OPEN_LOOP_EVERY.as_millis()) as usize;
    let answered = mesh[0]
        .open_loop(name, OPEN_LOOP_EVERY, count, Duration::from_secs(2))
        .await;
    mesh[2].thaw()?;
    let (in_time, sent, slowest) = answered?;
    Ok((in_time as f64 / sent as f64, slowest))
}

#[tokio::main]
async fn main() -> Result<()> {
    let mesh = Mesh::star(3).await?;
    let result = run(&mesh).await;
    let _ = mesh[2].thaw();
    mesh.report(result)
}

async fn run(mesh: &Mesh) -> Result<()> {
    mesh.wait_converged(Duration::from_secs(30)).await?;
    let (component, _) = hello_example()?;
    let module = mesh[0].push(std::fs::read(component)?).await?;

    let rolling = json!({"min_healthy_ms": MIN_HEALTHY_MS});
    let at_once = json!({"max_parallel": 0, "order": "stop_first", "min_healthy_ms": 0});
    let (rolled_failed, rolled_sent, rolled_took) =
        redeploy_under_load(mesh, &module, "rolled", rolling).await?;
    let (once_failed, once_sent, _) =
        redeploy_under_load(mesh, &module, "at-once", at_once).await?;

    // Each app deployed just before its run, so that it has an instance on every node (a node
    // frozen long enough is declared dead and its instances move).
    let mut frozen = Vec::new();
    for (name, hedge) in [("unhedged", false), ("hedged", true)] {
        mesh.wait_converged(Duration::from_secs(60))
            .await
            .context("the mesh before a freeze")?;
        let balance = json!({"strategy": "round_robin", "hedge": hedge});
        deploy(&mesh[0], &hello(&module, name, "1", json!({}), balance)).await?;
        rolled_out(&mesh[0], name, "1").await?;
        frozen.push(frozen_node(mesh, name).await?);
    }
    let [
        (unhedged_rate, unhedged_slowest),
        (hedged_rate, hedged_slowest),
    ] = frozen[..]
    else {
        anyhow::bail!("two frozen runs");
    };

    println!(
        "rollouts and a frozen node, 3 nodes on loopback, hello with 3 replicas (one per node)"
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| redeploy under load ({} clients on 2 gateways), rolled out | {rolled_failed} of {rolled_sent} requests failed |",
        2 * CLIENTS
    );
    println!(
        "| the same, all replaced at once (before rollouts) | {once_failed} of {once_sent} requests failed |"
    );
    println!(
        "| rollout of 3 replicas, min_healthy_ms {MIN_HEALTHY_MS} | {:.1} s, {:.2}x 3 × min_healthy_ms |",
        rolled_took.as_secs_f64(),
        rolled_took.as_secs_f64() / (3.0 * MIN_HEALTHY_MS as f64 / 1000.0)
    );
    println!(
        "| one of 3 nodes frozen {} s, round_robin, hedged | {:.1}% answered within 2 s, slowest {:.2} s |",
        FROZEN_FOR.as_secs(),
        hedged_rate * 100.0,
        hedged_slowest.as_secs_f64()
    );
    println!(
        "| the same, hedge = false | {:.1}% answered within 2 s, slowest {:.2} s |",
        unhedged_rate * 100.0,
        unhedged_slowest.as_secs_f64()
    );
    Ok(())
}
