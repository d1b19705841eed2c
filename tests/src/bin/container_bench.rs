//! container_bench: how fast a container app answers after a deploy, against a plain `docker run`
//! of the same image on the same engine in the same run, and how many bytes a second image that
//! shares its base layers moves through the mesh.
//!
//! ```text
//! cargo build --release -p mycel -p mycel-tests --bins && target/release/container_bench
//! ```
//!
//! Two release nodes on 127.0.0.1 sharing the machine's Docker engine; n1 is labelled
//! `role=runner` so apps can be placed on the node that did not take the push.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mycel_tests::{
    Mesh, NodeProcess,
    apps::container_manifest,
    docker::{
        docker, docker_run_to_first_answer, first_answer, layered_image, remove_containers_of,
    },
    hello_container_example, metrics,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

const RUNS: usize = 5;
const IMAGE: &str = "mycel-hello-container:1.0";

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A deploy through `node` to the first answer through its gateway.
async fn deploy_to_first_answer(
    client: &reqwest::Client,
    node: &NodeProcess,
    manifest: &Value,
) -> Result<f64> {
    let name = manifest["name"].as_str().context("name")?;
    let url = format!("{}/", node.gateway());
    let host = format!("{name}.localhost");
    let started = Instant::now();
    let (status, answer) = node.deploy(manifest).await?;
    ensure!(status == StatusCode::CREATED, "deploy: {status} {answer}");
    first_answer(client, &url, Some(&host), started).await
}

async fn pushed(node: &NodeProcess, archive: &std::path::Path) -> Result<Value> {
    let (status, answer) = node.push_image(archive).await?;
    ensure!(status == StatusCode::CREATED, "push: {status} {answer}");
    Ok(answer)
}

fn on_runner(mut manifest: Value) -> Value {
    manifest["placement"] =
        json!({ "required": [{ "key": "role", "op": "in", "values": ["runner"] }] });
    manifest
}

#[tokio::main]
async fn main() -> Result<()> {
    let (archive, _) = hello_container_example()?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut baseline = Vec::new();
    for _ in 0..RUNS {
        baseline.push(docker_run_to_first_answer(&client, IMAGE).await?);
    }

    let mesh = Mesh::hub_and_runner().await?;
    let result = run(&mesh, &client, &archive, baseline).await;
    remove_containers_of(&mesh);
    mesh.report(result)
}

async fn run(
    mesh: &Mesh,
    client: &reqwest::Client,
    archive: &std::path::Path,
    baseline: Vec<f64>,
) -> Result<()> {
    mesh.wait_converged(Duration::from_secs(20)).await?;
    let base = pushed(&mesh[0], archive).await?;
    let base_hash = base["hash"].as_str().context("hash")?.to_owned();

    // The engine holds the image: a deploy is a container start plus mycel's own steps.
    let mut held = Vec::new();
    for i in 0..RUNS {
        let manifest = container_manifest(&format!("held{i}"), &base_hash, 1);
        held.push(deploy_to_first_answer(client, &mesh[0], &manifest).await?);
    }

    // A new image the engine lacks: the runner fetches it from n0 and loads it first.
    let dir = tempfile::tempdir()?;
    let mut cold = Vec::new();
    let mut moved_ratio = Vec::new();
    let mut last = (0.0, 0, 0);
    for i in 0..RUNS {
        let tag = format!("mycel-bench-layered-{}-{i}:1", std::process::id());
        let layered_archive = layered_image(&dir.path().join(i.to_string()), &tag, 4 << 20)?;
        let layered = pushed(&mesh[0], &layered_archive).await?;
        let total: u64 = layered["layers"]
            .as_array()
            .context("layers")?
            .iter()
            .filter_map(|l| l["size"].as_u64())
            .sum();
        let received = async || -> Result<f64> {
            Ok(metrics::value(
                &mesh[1].metrics().await?,
                "mycel_blob_bytes_received_total",
                &[],
            ))
        };
        let before = received().await?;
        let manifest = on_runner(container_manifest(
            &format!("cold{i}"),
            layered["hash"].as_str().context("hash")?,
            1,
        ));
        cold.push(deploy_to_first_answer(client, &mesh[0], &manifest).await?);
        let moved = received().await? - before;
        moved_ratio.push(moved / total as f64);
        last = (moved, total, layered_archive.metadata()?.len());
        let _ = docker(&["rmi", "-f", &tag]);
    }

    let docker_run = median(baseline);
    println!(
        "containers, 2 release nodes on loopback sharing one Docker engine, medians of {RUNS}"
    );
    println!();
    println!("| measure | value | ratio |");
    println!("|---|---|---|");
    println!("| `docker run` to first answer (baseline) | {docker_run:.3} s | 1.00 |");
    let held = median(held);
    println!(
        "| mycel deploy to first answer, image in the engine | {held:.3} s | {:.2}x docker run |",
        held / docker_run
    );
    let cold = median(cold);
    println!(
        "| mycel deploy to first answer, new image fetched from a peer and loaded | {cold:.3} s | {:.2}x docker run |",
        cold / docker_run
    );
    println!(
        "| bytes moved for a second image sharing its base layer | {:.0} of {} bytes ({} byte archive) | {:.3} of its size |",
        last.0,
        last.1,
        last.2,
        median(moved_ratio)
    );
    Ok(())
}
