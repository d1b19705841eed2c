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

fn sample(seed: u8, size: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
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
    let got = node.blob_id(hash).await?;
    ensure!(got == hash, "{} served {got}, not {hash}", node.name());
    Ok(started.elapsed().as_secs_f64())
}

async fn push(node: &NodeProcess, seed: u8, size: usize) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("blob.bin");
    std::fs::write(&file, sample(seed, size))?;
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

/// What five nodes fetching one blob at once measured.
struct FiveFetch {
    seconds: f64,
    share_of_others: f64,
    idle_rss: f64,
    peak_rss: f64,
}

/// Pushes a fresh blob of `size` to node 0, then has nodes 1 to 5 fetch it at once.
async fn five_fetch(mesh: &Mesh, seed: u8, size: usize) -> Result<FiveFetch> {
    let hash = push(&mesh[0], seed, size).await?;
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
    futures::future::try_join_all((1..6).map(|i| timed_get(&mesh[i], &hash))).await?;
    let seconds = started.elapsed().as_secs_f64();
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
    Ok(FiveFetch {
        seconds,
        share_of_others: sent[1..].iter().sum::<f64>() / total.max(1.0),
        idle_rss,
        peak_rss,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let mesh = Mesh::star(6).await?;
    mesh.wait_converged(Duration::from_secs(60)).await?;
    let mb = SIZE as f64 / MIB;

    // Three blobs, each read plainly from the origin and fetched by node 1 from the origin
    // alone; medians of three.
    let (mut plain, mut single) = (Vec::new(), Vec::new());
    for seed in 1..=3 {
        let hash = push(&mesh[0], seed, SIZE).await?;
        plain.push(timed_get(&mesh[0], &hash).await?);
        single.push(timed_get(&mesh[1], &hash).await?);
    }
    let (plain, single) = (median(plain), median(single));
    let small = five_fetch(&mesh, 10, SIZE / 4).await?;
    let five = five_fetch(&mesh, 11, SIZE).await?;

    println!("| figure | value | ratio |\n|---|---|---|");
    println!(
        "| plain HTTP copy of {mb:.0} MiB from the node that holds it (baseline, median of 3) | {:.0} MiB/s | 1.00 |",
        mb / plain
    );
    println!(
        "| {mb:.0} MiB fetched by one node from one peer, verified, then served (median of 3) | {:.0} MiB/s | {:.2}x baseline |",
        mb / single,
        plain / single
    );
    println!(
        "| five nodes fetching {mb:.0} MiB at once: aggregate | {:.0} MiB/s | {:.2}x baseline |",
        5.0 * mb / five.seconds,
        5.0 * plain / five.seconds
    );
    println!(
        "| five fetchers: share served by nodes other than the origin | {:.0}% | |",
        100.0 * five.share_of_others
    );
    println!(
        "| origin memory serving five fetchers of {:.0} MiB: idle / peak | {:.1} / {:.1} MiB | |",
        mb / 4.0,
        small.idle_rss,
        small.peak_rss
    );
    println!(
        "| origin memory serving five fetchers of {mb:.0} MiB: idle / peak | {:.1} / {:.1} MiB | peak {:.2}x the {:.0} MiB run's |",
        five.idle_rss,
        five.peak_rss,
        five.peak_rss / small.peak_rss,
        mb / 4.0
    );
    Ok(())
}
