//! balance_bench: what least_request costs and what it buys, against round_robin, in one run.
//!
//! ```text
//! examples/hello/build.sh
//! cargo build --release -p mycel -p mycel-tests --bins && target/release/balance_bench
//! ```
//!
//! Three nodes on 127.0.0.1, examples/hello deployed twice with 3 replicas (one per node): once
//! balanced `round_robin`, once `least_request`. All load goes through node 0's gateway, from
//! keep-alive clients sending `GET /` back to back:
//! - throughput: no delay in the app; [`CLIENTS`] clients; rounds alternate between the two apps
//!   so drift in the machine's load hits both alike;
//! - tail latency: every instance waits [`DELAY_MS`] before answering, the one on node 2
//!   [`SLOW_FACTOR`] times longer; [`SLOW_CLIENTS`] clients.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result, ensure};
use futures::future::join_all;
use mycel_protocol::api::InstanceState;
use mycel_tests::{Mesh, NodeProcess, apps::manifest, hello_example, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

const CLIENTS: usize = 16;
const SLOW_CLIENTS: usize = 8;
const WINDOW: Duration = Duration::from_secs(5);
const WARMUP: Duration = Duration::from_secs(1);
const ROUNDS: usize = 2;
const DELAY_MS: u64 = 5;
const SLOW_FACTOR: u64 = 10;

/// What one load run measured.
struct Load {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `clients` keep-alive clients send `GET /` for `app` to `gateway` for `WINDOW` (after
/// `WARMUP`); every answer must be 200.
async fn load(gateway: SocketAddr, app: &str, clients: usize) -> Result<Load> {
    let host = format!("{app}.localhost");
    let url = format!("http://{host}:{}/", gateway.port());
    let runs = (0..clients).map(|_| {
        let (url, host) = (url.clone(), host.clone());
        async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .resolve(&host, gateway)
                .pool_max_idle_per_host(1)
                .build()?;
            let warm_until = Instant::now() + WARMUP;
            let until = warm_until + WINDOW;
            let mut latencies = Vec::new();
            loop {
                let started = Instant::now();
                if started >= until {
                    break;
                }
                let response = client.get(&url).send().await?;
                ensure!(response.status() == StatusCode::OK, "{response:?}");
                response.bytes().await?;
                if started >= warm_until {
                    latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
            anyhow::Ok(latencies)
        }
    });
    let mut all = Vec::new();
    for latencies in join_all(runs).await {
        all.extend(latencies?);
    }
    all.sort_by(f64::total_cmp);
    ensure!(!all.is_empty(), "no request finished");
    Ok(Load {
        per_second: all.len() as f64 / WINDOW.as_secs_f64(),
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
    })
}

/// Deploys hello as `name` with 3 replicas, `env` and `balance`; waits for one on each node.
async fn deploy(mesh: &Mesh, module: &str, name: &str, env: Value, balance: Value) -> Result<()> {
    let mut m = manifest(name, "1.0.0", 3, module);
    m["env"] = env;
    m["balance"] = balance;
    let (status, body) = mesh[0].deploy(&m).await?;
    ensure!(
        status == StatusCode::CREATED,
        "deploy {name}: {status} {body}"
    );
    wait_until(
        &format!("{name} to run on every node"),
        Duration::from_secs(120),
        Duration::from_millis(50),
        async || {
            let app = mesh[0].app(name).await?;
            let mut nodes: Vec<&str> = app
                .instances
                .iter()
                .filter(|i| i.state == InstanceState::Running)
                .map(|i| i.node.as_str())
                .collect();
            nodes.sort();
            nodes.dedup();
            Ok(nodes.len() == 3)
        },
    )
    .await
}

fn gateway_addr(node: &NodeProcess) -> Result<SocketAddr> {
    node.gateway()
        .trim_start_matches("http://")
        .parse()
        .context("the gateway address")
}

/// The mean of several runs' rates, and the mean of their p50s and p99s.
fn mean(runs: &[Load]) -> Load {
    let n = runs.len() as f64;
    Load {
        per_second: runs.iter().map(|r| r.per_second).sum::<f64>() / n,
        p50_ms: runs.iter().map(|r| r.p50_ms).sum::<f64>() / n,
        p99_ms: runs.iter().map(|r| r.p99_ms).sum::<f64>() / n,
    }
}

fn row(what: &str, l: &Load) -> String {
    format!(
        "| {what} | {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms |",
        l.per_second, l.p50_ms, l.p99_ms
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let mesh = Mesh::star(3).await?;
    let result = run(&mesh).await;
    mesh.report(result)
}

async fn run(mesh: &Mesh) -> Result<()> {
    mesh.wait_converged(Duration::from_secs(30)).await?;
    let (component, _) = hello_example()?;
    let module = mesh[0].push(std::fs::read(component)?).await?;
    let rr = json!({"strategy": "round_robin"});
    let lr = json!({"strategy": "least_request"});
    deploy(mesh, &module, "rr", json!({}), rr.clone()).await?;
    deploy(mesh, &module, "lr", json!({}), lr.clone()).await?;
    let slow = json!({
        "DELAY_MS": DELAY_MS.to_string(),
        "SLOW_NODE": mesh[2].peer_id(),
        "SLOW_MS": (DELAY_MS * SLOW_FACTOR).to_string(),
    });
    deploy(mesh, &module, "rr-slow", slow.clone(), rr).await?;
    deploy(mesh, &module, "lr-slow", slow, lr).await?;
    let gateway = gateway_addr(&mesh[0])?;

    let (mut rr_fast, mut lr_fast, mut rr_slow, mut lr_slow) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        rr_fast.push(load(gateway, "rr", CLIENTS).await?);
        lr_fast.push(load(gateway, "lr", CLIENTS).await?);
        rr_slow.push(load(gateway, "rr-slow", SLOW_CLIENTS).await?);
        lr_slow.push(load(gateway, "lr-slow", SLOW_CLIENTS).await?);
    }
    let (rr_fast, lr_fast, rr_slow, lr_slow) = (
        mean(&rr_fast),
        mean(&lr_fast),
        mean(&rr_slow),
        mean(&lr_slow),
    );

    println!(
        "balancing, 3 nodes on loopback, hello with 3 replicas (one per node), all load through \
         node 0's gateway, {ROUNDS} alternating rounds of {} s each",
        WINDOW.as_secs()
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "{}",
        row(&format!("round_robin, {CLIENTS} clients"), &rr_fast)
    );
    println!(
        "{}",
        row(&format!("least_request, {CLIENTS} clients"), &lr_fast)
    );
    println!(
        "| least_request / round_robin requests/s | {:.2}x |",
        lr_fast.per_second / rr_fast.per_second
    );
    let slow_setup =
        format!("{SLOW_CLIENTS} clients, {DELAY_MS} ms app, one instance {SLOW_FACTOR}x slower");
    println!("{}", row(&format!("round_robin, {slow_setup}"), &rr_slow));
    println!("{}", row(&format!("least_request, {slow_setup}"), &lr_slow));
    println!(
        "| p99 round_robin / least_request, one instance {SLOW_FACTOR}x slower | {:.1}x better |",
        rr_slow.p99_ms / lr_slow.p99_ms
    );
    Ok(())
}
