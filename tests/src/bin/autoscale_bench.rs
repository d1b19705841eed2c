//! autoscale_bench: what scaling costs the requests and the leader, in one run.
//!
//! ```text
//! examples/hello/build.sh
//! cargo build -p mycel -p mycel-tests --bins && target/debug/autoscale_bench
//! ```
//!
//! - cold start: examples/hello with `min = 0` on 3 nodes on 127.0.0.1 (the module compiled and
//!   cached on the nodes by a first run); each round waits until the app runs no instance, then
//!   times one request through node 0's gateway (held while an instance starts), against the
//!   median of warm requests to the same app in the same run;
//! - scale up: 12 clients of a 400 ms endpoint on an app with `target_concurrency = 2`, 1..=4:
//!   the time from the load's start until 2 and then 4 instances serve, and requests that failed;
//! - the leader's autoscaler alone: one tick (sum the nodes' reports, decide every app) for 1,000
//!   autoscaled apps reported by 20 nodes, against a tick for 10 apps.

use std::time::Duration;

use anyhow::{Result, ensure};
use mycel_placement::{PlacementState, load::Autoscaler};
use mycel_protocol::{
    api::{AppStatus, InstanceState},
    app::Manifest,
    placement::{AppLoad, AppRecord, LoadReport},
};
use mycel_tests::{Mesh, NodeProcess, apps::manifest, hello_example, wait_until};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

const COLD_ROUNDS: usize = 5;

fn running(app: &AppStatus) -> usize {
    app.instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .count()
}

async fn deploy(node: &NodeProcess, m: &Value) -> Result<()> {
    let (status, body) = node.deploy(m).await?;
    ensure!(status == StatusCode::CREATED, "deploy: {status} {body}");
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Cold starts from zero, and warm requests to compare: medians in ms.
async fn cold_start(mesh: &Mesh, module: &str) -> Result<(f64, f64)> {
    let mut m = manifest("cold", "1", 1, module);
    m["scale"] = json!({"min": 0, "max": 1, "scale_to_zero_after_ms": 1000, "cooldown_ms": 0,
                        "window_ms": 6000});
    deploy(&mesh[0], &m).await?;
    let (client, url) = mesh[0].gateway_client("cold", Duration::from_secs(30))?;
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..=COLD_ROUNDS {
        wait_until(
            "cold to run no instance",
            Duration::from_secs(60),
            Duration::from_millis(50),
            async || Ok(mesh[0].app("cold").await?.instances.is_empty()),
        )
        .await?;
        let started = Instant::now();
        let response = client.get(&url).send().await?;
        ensure!(response.status() == StatusCode::OK, "{}", response.status());
        response.bytes().await?;
        cold.push(started.elapsed().as_secs_f64() * 1000.0);
        for _ in 0..10 {
            let started = Instant::now();
            let response = client.get(&url).send().await?;
            ensure!(response.status() == StatusCode::OK);
            response.bytes().await?;
            warm.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    // The first round's instance may land on a node that never ran the app: not a cached start.
    cold.remove(0);
    Ok((median(cold), median(warm)))
}

/// Seconds from the load's start until 2 and 4 instances run, and requests failed / sent.
async fn scale_up(mesh: &Mesh, module: &str) -> Result<(f64, f64, usize, usize)> {
    let mut m = manifest("busy", "1", 1, module);
    m["env"] = json!({"DELAY_MS": "400"});
    m["scale"] = json!({"min": 1, "max": 4, "target_concurrency": 2, "window_ms": 6000});
    deploy(&mesh[0], &m).await?;
    wait_until(
        "busy to run",
        Duration::from_secs(60),
        Duration::from_millis(50),
        async || Ok(running(&mesh[0].app("busy").await?) == 1),
    )
    .await?;
    let (client, url) = mesh[0].gateway_client("busy", Duration::from_secs(30))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..12)
        .map(|_| {
            let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut failed, mut sent) = (0, 0);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    sent += 1;
                    match client.get(&url).send().await {
                        Ok(r) if r.status() == StatusCode::OK => {}
                        _ => failed += 1,
                    }
                }
                (failed, sent)
            })
        })
        .collect();
    let mut at_two = None;
    wait_until(
        "busy at 4",
        Duration::from_secs(60),
        Duration::from_millis(50),
        async || {
            let n = running(&mesh[0].app("busy").await?);
            if n >= 2 && at_two.is_none() {
                at_two = Some(started.elapsed().as_secs_f64());
            }
            Ok(n >= 4)
        },
    )
    .await?;
    let at_four = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut failed, mut sent) = (0, 0);
    for client in clients {
        let (f, s) = client.await?;
        failed += f;
        sent += s;
    }
    Ok((at_two.unwrap_or(at_four), at_four, failed, sent))
}

/// A state of `apps` autoscaled apps and an autoscaler holding 20 nodes' reports on them.
fn leader_with(apps: usize) -> Result<(PlacementState, Autoscaler)> {
    let mut state = PlacementState::default();
    for i in 0..apps {
        let toml = format!(
            "name = \"app{i}\"\nversion = \"1\"\n[wasm]\nmodule = \"blake3:{}\"\n[scale]\nmax = 20\n",
            "a".repeat(64)
        );
        state.apps.insert(
            format!("app{i}"),
            AppRecord {
                manifest: Manifest::from_toml(&toml)?,
                deployed_by: "n".into(),
                deployed_at_ms: 0,
                generation: 1,
                unplaced: None,
                scale: None,
            },
        );
    }
    let mut autoscaler = Autoscaler::default();
    for node in 0..20 {
        let report = LoadReport {
            apps: (0..apps)
                .map(|i| AppLoad {
                    app: format!("app{i}"),
                    in_flight: (i % 7) as f64,
                    requests: 10,
                    memory_bytes: 1 << 20,
                    instances: 1,
                    cpu_cores: 0.05,
                })
                .collect(),
        };
        autoscaler.report(format!("node{node}"), report, 0);
    }
    Ok((state, autoscaler))
}

/// Microseconds per tick, over many ticks.
fn tick_cost(apps: usize) -> Result<f64> {
    let (state, mut autoscaler) = leader_with(apps)?;
    let ticks = 200;
    let started = std::time::Instant::now();
    for t in 0..ticks {
        std::hint::black_box(autoscaler.tick(&state, 500 * t));
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / ticks as f64)
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
    let (cold, warm) = cold_start(mesh, &module).await?;
    let (at_two, at_four, failed, sent) = scale_up(mesh, &module).await?;
    let small = tick_cost(10)?;
    let large = tick_cost(1000)?;

    println!("autoscaling, 3 nodes on loopback, examples/hello");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| cold start from zero to first answer, module cached, median of {COLD_ROUNDS} | {cold:.0} ms, {:.0} ms more than a warm request ({warm:.1} ms) |",
        cold - warm
    );
    println!(
        "| 12 clients of a 400 ms endpoint, target 2 in flight: load start to 2 / 4 instances serving | {at_two:.1} / {at_four:.1} s |"
    );
    println!("| requests failed while scaling up | {failed} of {sent} |");
    println!(
        "| leader's autoscaler tick, 1,000 apps from 20 nodes' reports vs 10 apps | {large:.0} µs vs {small:.1} µs ({:.0}x) |",
        large / small
    );
    Ok(())
}
