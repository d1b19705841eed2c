//! volume_bench: what a snapshot of a 256 MiB volume stores and sends once 1 MiB of it changed,
//! and how long restoring it on another node takes against `cp -a` of its files, same machine,
//! same run.
//!
//! ```text
//! cargo build --release -p mycel -p mycel-tests --bins && target/release/volume_bench
//! ```
//!
//! Three release nodes; an app (examples/hello-container) with a 256 MiB volume fills 240 MiB of
//! it (`/fill/200`) on n1. A first snapshot stores it all; 1 MiB more is written (`/fill/1`) and
//! a second snapshot taken: its `stored_bytes` (new chunks and its index) and the bytes the two
//! copy nodes fetched for it are the figures. Then n1 is killed (`kill -9`), the app moves, its
//! new node restores the second snapshot (`mycel_volume_restore_seconds_total`, fetching
//! included); the baseline is `cp -a` of the dead node's mounted volume to the same disk.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, ensure};
use mycel_tests::{
    Mesh, NodeProcess, apps::agreed_group, docker::remove_containers_of, hello_container_example,
    metrics::value, wait_until,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

#[tokio::main]
async fn main() -> Result<()> {
    let (archive, _) = hello_container_example()?;
    let hub = NodeProcess::builder("n0").start().await?;
    let runner = NodeProcess::builder("n1")
        .join(&hub)
        .arg("--label")
        .arg("role=runner")
        .start()
        .await?;
    let third = NodeProcess::builder("n2").join(&hub).start().await?;
    let mut mesh = Mesh::from_nodes(vec![hub, runner, third]);
    let result = run(&mut mesh, &archive).await;
    remove_containers_of(&mesh);
    mesh.report(result)
}

async fn get(node: &NodeProcess, path: &str) -> Result<String> {
    let (client, url) = node.gateway_client("store", Duration::from_secs(120))?;
    let response = client.get(format!("{url}{}", &path[1..])).send().await?;
    ensure!(
        response.status() == StatusCode::OK,
        "{path}: {}",
        response.status()
    );
    Ok(response.text().await?.trim().to_owned())
}

/// Asks `node` for a snapshot and waits for both copies; the snapshot and the seconds taken.
async fn snapshot(mesh: &Mesh, node: usize) -> Result<(Value, f64)> {
    let started = Instant::now();
    let url = format!("{}/v1/apps/store/volumes/data/snapshot", mesh[node].api());
    let response = reqwest::Client::new().post(url).send().await?;
    ensure!(response.status() == StatusCode::OK, "{}", response.status());
    let taken: Value = response.json().await?;
    let seconds = started.elapsed().as_secs_f64();
    let mut copied = Value::Null;
    wait_until(
        "the snapshot's copies",
        Duration::from_secs(120),
        Duration::from_millis(100),
        async || {
            let url = format!("{}/v1/volumes?app=store", mesh[node].api());
            let list: Value = reqwest::get(url).await?.json().await?;
            copied = list["volumes"][0]["snapshot"].clone();
            Ok(copied["index"] == taken["index"]
                && copied["copies"].as_array().map_or(0, Vec::len) == 2)
        },
    )
    .await?;
    Ok((copied, seconds))
}

async fn fetched(mesh: &Mesh, nodes: &[usize]) -> Result<f64> {
    let mut total = 0.0;
    for &n in nodes {
        total += value(&mesh[n].metrics().await?, "mycel_blob_bytes_received", &[]);
    }
    Ok(total)
}

async fn run(mesh: &mut Mesh, archive: &Path) -> Result<()> {
    mesh.wait_converged(Duration::from_secs(30)).await?;
    let all: Vec<&NodeProcess> = mesh.iter().collect();
    agreed_group(&all, 3, Duration::from_secs(60)).await?;
    let mut hash = Value::Null;
    for node in mesh.iter() {
        let (status, pushed) = node.push_image(archive).await?;
        ensure!(status == StatusCode::CREATED, "{status} {pushed}");
        hash = pushed["hash"].clone();
    }
    let manifest = json!({
        "name": "store", "version": "1",
        "container": {"archive": hash, "port": 8080},
        "resources": {"memory_mb": 128},
        "health": {"path": "/healthz"},
        "placement": {"preferred": [{"key": "role", "op": "in", "values": ["runner"]}]},
        "volumes": [{"name": "data", "path": "/data", "size_mb": 256}],
        "volume_grace_ms": 0,
    });
    let (status, body) = mesh[0].deploy(&manifest).await?;
    ensure!(status == StatusCode::CREATED, "{status} {body}");
    mesh[0].wait_running("store", 1).await?;
    let first = mesh[0].app("store").await?.instances[0].node.clone();
    ensure!(first == mesh[1].peer_id(), "placed on the runner");
    let wrote = get(&mesh[0], "/fill/200").await?;
    ensure!(wrote == "wrote 200 MiB", "{wrote}");
    let (full, _) = snapshot(mesh, 0).await?;

    let copies: Vec<usize> = full["copies"]
        .as_array()
        .context("copies")?
        .iter()
        .map(|c| mesh.index_of(c.as_str().unwrap_or_default()))
        .collect::<Result<_>>()?;
    let wrote = get(&mesh[0], "/fill/1").await?;
    ensure!(wrote == "wrote 1 MiB", "{wrote}");
    let before = fetched(mesh, &copies).await?;
    let (changed, seconds) = snapshot(mesh, 0).await?;
    let sent = (fetched(mesh, &copies).await? - before) / copies.len() as f64;
    let stored = changed["stored_bytes"].as_f64().context("stored_bytes")?;
    let mib = |bytes: f64| bytes / f64::from(1 << 20);
    println!(
        "first snapshot: {:.1} MiB stored ({:.1} MiB in use)",
        mib(full["stored_bytes"].as_f64().unwrap_or(0.0)),
        mib(full["used_bytes"].as_f64().unwrap_or(0.0))
    );
    println!(
        "after 1 MiB changed: {:.2} MiB stored, {:.2} MiB sent to each copy, taken in {seconds:.2} s",
        mib(stored),
        mib(sent)
    );

    // The runner dies; the app moves and its new node restores the latest snapshot.
    let mount = mesh[1].data_dir().path().join("volumes/store/data/mnt");
    mesh[1].sigkill()?;
    let moved_to = wait_until_moved(mesh, &first).await?;
    // The node samples its counters every second.
    let mut restore = 0.0;
    wait_until(
        "the restore's time in the new node's metrics",
        Duration::from_secs(10),
        Duration::from_millis(100),
        async || {
            let text = mesh[moved_to].metrics().await?;
            restore = value(&text, "mycel_volume_restore_seconds_total", &[]);
            Ok(restore > 0.0)
        },
    )
    .await?;
    let count = get(&mesh[moved_to], "/count").await?;
    ensure!(count == "1", "the restored volume answers: {count}");

    let copy = tempfile::tempdir_in(mesh[0].data_dir().path())?;
    let started = Instant::now();
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(&mount)
        .arg(copy.path().join("data"))
        .output()?;
    ensure!(out.status.success(), "cp: {out:?}");
    let cp = started.elapsed().as_secs_f64();
    println!(
        "restore on another node: {restore:.2} s (fetching included); cp -a of its files: {cp:.2} s; ratio {:.2}x",
        restore / cp
    );
    Ok(())
}

async fn wait_until_moved(mesh: &Mesh, first: &str) -> Result<usize> {
    let mut moved = None;
    wait_until(
        "the app to run on another node",
        Duration::from_secs(120),
        Duration::from_millis(100),
        async || {
            let app = mesh[0].app("store").await?;
            moved = app
                .instances
                .iter()
                .find(|i| i.node != first && i.state == mycel_protocol::api::InstanceState::Running)
                .map(|i| i.node.clone());
            Ok(moved.is_some())
        },
    )
    .await?;
    mesh.index_of(&moved.context("moved")?)
}
