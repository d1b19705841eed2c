//! blob_bench: how fast blobs move between nodes, next to a plain HTTP copy of the same bytes.
//!
//! ```text
//! cargo build --release -p mycel -p mycel-tests --bins && target/release/blob_bench
//! ```
//!
//! Six release nodes on 127.0.0.1. Baseline: reading a 96 MiB blob over HTTP from the node that
//! holds it (a plain copy: file to socket). Then the same size fetched by one node from one peer,
//! and by five nodes at once from whoever has it; every transfer is verified end to end.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mycel_tests::{Mesh, NodeProcess, metrics, mycel_cli, rss_mib};
use tokio::time::Instant;

const MIB: f64 = 1024.0 * 1024.0;
const SIZE: usize = 96 * 1024 * 1024;

fn sample(seed: u8) -> Vec<u8> {
    let mut bytes = vec![0u8; SIZE];
    let mut x = seed as u64 | 1;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    bytes
}

/// GETs the blob from `node`, hashing as it streams; returns the seconds it took.
async fn timed_get(node: &NodeProcess, hash: &str) -> Result<f64> {
    let started = Instant::now();
    let mut response = reqwest::get(format!("{}/v1/blobs/{hash}", node.api())).await?;
    ensure!(
        response.status() == 200,
        "{} answered {}",
        node.name(),
        response.status()
    );
    let mut hasher = blake3::Hasher::new();
    while let Some(chunk) = response.chunk().await? {
        hasher.update(&chunk);
    }
    let got = format!("blake3:{}", hasher.finalize().to_hex());
    ensure!(got == hash, "{} served {got}, not {hash}", node.name());
    Ok(started.elapsed().as_secs_f64())
}

async fn push(node: &NodeProcess, seed: u8) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("blob.bin");
    std::fs::write(&file, sample(seed))?;
    let out = mycel_cli([
        "push",
        "--node",
        node.api(),
        file.to_str().context("utf-8")?,
    ])
    .await?;
    ensure!(out.status.success(), "{out:?}");
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

async fn bytes_sent(node: &NodeProcess) -> Result<f64> {
    Ok(metrics::value(
        &node.metrics().await?,
        "mycel_blob_bytes_sent_total",
        &[],
    ))
}

#[tokio::main]
async fn main() -> Result<()> {
    let mesh = Mesh::star(6).await?;
    mesh.wait_converged(Duration::from_secs(60)).await?;
    let mb = SIZE as f64 / MIB;

    let first = push(&mesh[0], 1).await?;
    let plain = timed_get(&mesh[0], &first).await?;
    let single = timed_get(&mesh[1], &first).await?;

    let second = push(&mesh[0], 2).await?;
    let idle_rss = rss_mib(mesh[0].pid())?;
    let sent_before: Vec<f64> = futures::future::try_join_all(mesh.iter().map(bytes_sent)).await?;
    // Sample the origin's memory while it serves, to see whether it grows with the blob.
    let origin_pid = mesh[0].pid();
    let peak = std::sync::Arc::new(std::sync::Mutex::new(idle_rss));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let (Ok(rss), Ok(mut peak)) = (rss_mib(origin_pid), peak.lock()) {
                    *peak = peak.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    futures::future::try_join_all((1..6).map(|i| timed_get(&mesh[i], &second))).await?;
    let five = started.elapsed().as_secs_f64();
    sampler.abort();
    let peak_rss = *peak
        .lock()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    let sent_after: Vec<f64> = futures::future::try_join_all(mesh.iter().map(bytes_sent)).await?;
    let sent: Vec<f64> = sent_after
        .iter()
        .zip(&sent_before)
        .map(|(a, b)| a - b)
        .collect();
    let total: f64 = sent.iter().sum();
    let others: f64 = sent[1..].iter().sum();

    println!("| figure | value | ratio |\n|---|---|---|");
    println!(
        "| plain HTTP copy of {mb:.0} MiB from the node that holds it (baseline) | {:.0} MiB/s | 1.00 |",
        mb / plain
    );
    println!(
        "| {mb:.0} MiB fetched by one node from one peer, verified, then served | {:.0} MiB/s | {:.2}x baseline |",
        mb / single,
        plain / single
    );
    println!(
        "| five nodes fetching {mb:.0} MiB at once: aggregate | {:.0} MiB/s | {:.2}x baseline |",
        5.0 * mb / five,
        5.0 * plain / five
    );
    println!(
        "| five fetchers: share served by nodes other than the origin | {:.0}% | |",
        100.0 * others / total.max(1.0)
    );
    println!(
        "| origin resident memory: idle with the blob stored / peak while serving five | {idle_rss:.1} / {peak_rss:.1} MiB | |"
    );
    Ok(())
}
