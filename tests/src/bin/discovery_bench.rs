//! discovery_bench: how fast a node finds the mesh's apps through the DHT.
//!
//! ```text
//! cargo build --release -p mycel -p mycel-tests --bins && target/release/discovery_bench
//! ```
//!
//! Four release nodes on 127.0.0.1 (a star around n0); examples/hello deployed through n0 with
//! two replicas. Then, five times, a new node joins through n3 (not the node deployed through)
//! and the bench times it from ready (`node.json` written) to its first browse that lists hello
//! with a provider. Then browses and lookups by name on an established node, and the time from
//! `mycel stop` until no node's browse lists the app. Baseline in the same run: `GET /v1/apps`
//! on the same node, a read of its own placement replica.

use std::time::Duration;

use anyhow::{Result, ensure};
use mycel_tests::{Mesh, NodeProcess, apps::deploy_hello_as, wait_until};
use tokio::time::Instant;

const LATE_JOINERS: usize = 5;
const CALLS: usize = 20;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Median milliseconds of `CALLS` runs of `call`.
async fn timed(mut call: impl AsyncFnMut() -> Result<()>) -> Result<f64> {
    let mut ms = Vec::new();
    for _ in 0..CALLS {
        let started = Instant::now();
        call().await?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(ms))
}

#[tokio::main]
async fn main() -> Result<()> {
    let mesh = Mesh::star(4).await?;
    let result = run(&mesh).await;
    mesh.report(result)
}

async fn run(mesh: &Mesh) -> Result<()> {
    mesh.wait_converged(Duration::from_secs(30)).await?;
    deploy_hello_as(&mesh[0], "hello", 2).await?;

    let mut joins = Vec::new();
    for i in 0..LATE_JOINERS {
        let late = NodeProcess::start(format!("late{i}"), Some(mesh[3].join_ticket())).await?;
        let ready = Instant::now();
        wait_until(
            "the late joiner to discover hello",
            Duration::from_secs(30),
            Duration::from_millis(10),
            async || {
                let apps = late.discovered_apps().await?;
                Ok(apps
                    .apps
                    .iter()
                    .any(|a| a.name == "hello" && !a.providers.is_empty()))
            },
        )
        .await?;
        joins.push(ready.elapsed().as_secs_f64());
    }
    let join = median(joins.clone());

    let node = &mesh[2];
    let baseline = timed(async || node.apps().await.map(drop)).await?;
    let browse = timed(async || {
        let apps = node.discovered_apps().await?;
        ensure!(apps.apps.len() == 1, "{apps:?}");
        Ok(())
    })
    .await?;
    let lookup = timed(async || {
        ensure!(node.discovered_app("hello").await?.is_some());
        Ok(())
    })
    .await?;
    let missing = timed(async || {
        ensure!(node.discovered_app("nope").await?.is_none());
        Ok(())
    })
    .await?;

    let (status, _) = mesh[0]
        .send_json(
            reqwest::Method::DELETE,
            "/v1/apps/hello",
            &serde_json::Value::Null,
        )
        .await?;
    ensure!(status.is_success(), "stopping hello: {status}");
    let stopped = Instant::now();
    wait_until(
        "hello to leave every browse",
        Duration::from_secs(60),
        Duration::from_millis(10),
        async || {
            for node in mesh.iter() {
                if !node.discovered_apps().await?.apps.is_empty() {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await?;
    let gone = stopped.elapsed().as_secs_f64();

    println!("| figure | measured | ratio |");
    println!("|---|---|---|");
    println!(
        "| `GET /v1/apps` (baseline: the node's own replica), median of {CALLS} | {baseline:.2} ms | 1.00 |"
    );
    println!(
        "| late joiner through another peer: ready to hello discovered, median of {LATE_JOINERS} ({}) | {join:.3} s | |",
        joins
            .iter()
            .map(|s| format!("{s:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| `GET /v1/discover/apps` (16 shard lookups + directory), median of {CALLS} | {browse:.1} ms | {:.1}x |",
        browse / baseline
    );
    println!(
        "| `GET /v1/discover/apps/hello`, median of {CALLS} | {lookup:.1} ms | {:.1}x |",
        lookup / baseline
    );
    println!(
        "| `GET /v1/discover/apps/nope` (404), median of {CALLS} | {missing:.1} ms | {:.1}x |",
        missing / baseline
    );
    println!("| stop to gone from every node's browse | {gone:.3} s | |");
    Ok(())
}
