//! autoscale_bench: what scaling costs the requests and the leader, in one run.
//!
//! ```text
//! examples/hello/build.sh && examples/hello-container/build.sh
//! cargo build -p mycel -p mycel-tests --bins && target/debug/autoscale_bench
//! ```
//!
//! - cold start: examples/hello with `min = 0` on 3 nodes on 127.0.0.1 (the module compiled and
//!   cached on the nodes by a first run); each round waits until the app runs no instance, then
//!   times one request through node 0's gateway (held while an instance starts), against the
//!   median of warm requests to the same app in the same run;
//! - the same for examples/hello-container (the image in the engine), against `docker run` of
//!   the image to its first answer on the same engine;
//! - scale up: 12 clients of a 400 ms endpoint on an app with `target_concurrency = 2`, 1..=4:
//!   the time from the load's start until 2 and then 4 instances serve, and requests that failed;
//! - the leader's autoscaler alone: one tick (sum the nodes' reports, decide every app) for 1,000
//!   autoscaled apps reported by 20 nodes, against a tick for 10 apps.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mycel_placement::{PlacementState, load::Autoscaler};
use mycel_protocol::{
    api::{AppStatus, InstanceState},
    app::Manifest,
    placement::{AppLoad, AppRecord, LoadReport},
};
use mycel_tests::{
    Mesh, NodeProcess,
    apps::{container_manifest, manifest},
    docker::{docker_run_to_first_answer, remove_containers_of},
    hello_container_example, hello_example, wait_until,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

const COLD_ROUNDS: usize = 5;
/// The image examples/hello-container builds.
const CONTAINER_IMAGE: &str = "mycel-hello-container:1.0";

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

/// Cold starts from zero of the app `m` (first round dropped), and warm requests to compare:
/// medians in ms.
async fn cold_start(mesh: &Mesh, mut m: Value) -> Result<(f64, f64)> {
    let name = m["name"].as_str().context("name")?.to_owned();
    m["scale"] = json!({"min": 0, "max": 1, "scale_to_zero_after_ms": 1000, "cooldown_ms": 0,
                        "window_ms": 6000});
    deploy(&mesh[0], &m).await?;
    let (client, url) = mesh[0].gateway_client(&name, Duration::from_secs(30))?;
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..=COLD_ROUNDS {
        wait_until(
            "the app to run no instance",
            Duration::from_secs(60),
            Duration::from_millis(50),
            async || Ok(mesh[0].app(&name).await?.instances.is_empty()),
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

/// `docker run` of the same image to its first answer, on the same engine: median in ms.
async fn docker_run_baseline() -> Result<f64> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut runs = Vec::new();
    for _ in 0..COLD_ROUNDS {
        runs.push(docker_run_to_first_answer(&client, CONTAINER_IMAGE).await? * 1000.0);
    }
    Ok(median(runs))
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
    let started = Instant::now();
    let load = mesh[0].closed_loop("busy", 12)?;
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
    let statuses = load.stop().await?;
    let failed = statuses.iter().filter(|s| **s != 200).count();
    Ok((at_two.unwrap_or(at_four), at_four, failed, statuses.len()))
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
    let (cold, warm) = cold_start(mesh, manifest("cold", "1", 1, &module)).await?;
    let (archive, _) = hello_container_example()?;
    let (status, image) = mesh[0].push_image(&archive).await?;
    ensure!(status == StatusCode::CREATED, "push: {status} {image}");
    let image = image["hash"].as_str().context("hash")?;
    let container = cold_start(mesh, container_manifest("coldbox", image, 1)).await;
    remove_containers_of(mesh);
    let (container_cold, container_warm) = container?;
    let docker_run = docker_run_baseline().await?;
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
        "| cold start from zero to first answer, container, image in the engine, median of {COLD_ROUNDS} | {container_cold:.0} ms (warm: {container_warm:.1} ms) vs `docker run` to first answer {docker_run:.0} ms ({:.2}x) |",
        container_cold / docker_run
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
