//! blob_bench: how fast blobs move between nodes, next to a plain HTTP copy of the same bytes.
//!
//! ```text
//! cargo build --release -p mycel -p mycel-tests --bins && target/release/blob_bench [--single-peer]
//! ```
//!
//! Six release nodes on 127.0.0.1. Baseline: reading a 96 MiB blob over HTTP from the node that
//! holds it (a plain copy: file to socket). Then the same size fetched by one node from one peer,
//! and by five nodes at once from whoever has it; every transfer is verified end to end. A second
//! baseline, the encrypted link's own ceiling: 96 MiB written on one libp2p stream between two
//! bare swarms in this process, over the transport the nodes speak (TCP, Noise, Yamux; a private
//! mesh adds its proof of the secret), with no blob logic at all.
//!
//! `--single-peer` measures only the baselines and the one-peer fetch, on two nodes (for profiling).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{StreamProtocol, Swarm, SwarmBuilder, noise, swarm::SwarmEvent, tcp, yamux};
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

/// A bare swarm that only carries raw streams, over the transport a node of an open mesh
/// (`secret` `None`) or of a private one speaks.
fn bare_swarm(secret: Option<&mycel_mesh::MeshSecret>) -> Result<Swarm<libp2p_stream::Behaviour>> {
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
    let builder = SwarmBuilder::with_new_identity().with_tokio();
    Ok(match secret {
        Some(secret) => builder
            .with_other_transport(|key| {
                mycel_mesh::transport::private_tcp(
                    key,
                    secret,
                    mycel_mesh::transport::Refusals::default(),
                )
            })?
            .with_behaviour(|_| libp2p_stream::Behaviour::new())?
            .with_swarm_config(idle)
            .build(),
        None => builder
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| libp2p_stream::Behaviour::new())?
            .with_swarm_config(idle)
            .build(),
    })
}

/// The encrypted link's ceiling: seconds to move `size` bytes, written 1 MiB at a time on one
/// stream between two bare swarms on 127.0.0.1, until the reader has them all (median of 3
/// streams on one connection).
async fn raw_stream_seconds(size: usize, secret: Option<&mycel_mesh::MeshSecret>) -> Result<f64> {
    const PROTOCOL: StreamProtocol = StreamProtocol::new("/mycel-bench/sink/1");
    let mut server = bare_swarm(secret)?;
    let mut client = bare_swarm(secret)?;
    server.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_id = *server.local_peer_id();
    let mut incoming = server.behaviour().new_control().accept(PROTOCOL)?;
    client.dial(addr)?;
    loop {
        tokio::select! {
            event = client.select_next_some() => {
                if let SwarmEvent::ConnectionEstablished { .. } = event {
                    break;
                }
            }
            _ = server.select_next_some() => {}
        }
    }
    let mut control = client.behaviour().new_control();
    let drive = |mut swarm: Swarm<libp2p_stream::Behaviour>| {
        tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        })
    };
    let (server, client) = (drive(server), drive(client));
    let sink = tokio::spawn(async move {
        let mut buffer = vec![0u8; 1 << 20];
        while let Some((_, mut stream)) = incoming.next().await {
            let mut total = 0usize;
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            let _ = stream.write_all(&total.to_le_bytes()).await;
            let _ = stream.close().await;
        }
    });
    let chunk = vec![0x5a_u8; 1 << 20];
    let mut times = Vec::new();
    for _ in 0..3 {
        let mut stream = control.open_stream(server_id, PROTOCOL).await?;
        let started = Instant::now();
        for _ in 0..size / chunk.len() {
            stream.write_all(&chunk).await?;
        }
        stream.close().await?;
        let mut total = [0u8; 8];
        stream.read_exact(&mut total).await?;
        times.push(started.elapsed().as_secs_f64());
        ensure!(usize::from_le_bytes(total) == size, "the sink lost bytes");
    }
    for task in [server, client, sink] {
        task.abort();
    }
    Ok(median(times))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> Result<()> {
    let single_peer_only = std::env::args().any(|a| a == "--single-peer");
    let mesh = Mesh::star(if single_peer_only { 2 } else { 6 }).await?;
    mesh.wait_converged(Duration::from_secs(60)).await?;
    let mb = SIZE as f64 / MIB;
    let secret = mesh[0].mesh_secret();

    // Three blobs, each read plainly from the origin and fetched by node 1 from the origin
    // alone; medians of three.
    let (mut plain, mut single) = (Vec::new(), Vec::new());
    for seed in 1..=3 {
        let hash = push(&mesh[0], seed, SIZE).await?;
        plain.push(timed_get(&mesh[0], &hash).await?);
        single.push(timed_get(&mesh[1], &hash).await?);
    }
    let (plain, single) = (median(plain), median(single));
    // The same fetch between two nodes of an open mesh.
    let single_open = {
        let first = NodeProcess::builder("o0").open().start().await?;
        let second = NodeProcess::builder("o1")
            .open()
            .bootstrap(first.listen_addr())
            .start()
            .await?;
        let pair = Mesh::from_nodes(vec![first, second]);
        pair.wait_converged(Duration::from_secs(60)).await?;
        let mut times = Vec::new();
        for seed in 4..=6 {
            let hash = push(&pair[0], seed, SIZE).await?;
            times.push(timed_get(&pair[1], &hash).await?);
        }
        median(times)
    };
    // Both links, whichever the nodes speak.
    let some_secret = mycel_mesh::MeshSecret::from_bytes(*blake3::hash(b"blob_bench").as_bytes());
    let raw_open = raw_stream_seconds(SIZE, None).await?;
    let raw_private = raw_stream_seconds(SIZE, Some(&some_secret)).await?;
    let (raw, nodes_link) = if secret.is_some() {
        (raw_private, "private")
    } else {
        (raw_open, "open")
    };

    println!("| figure | value | ratio |\n|---|---|---|");
    println!(
        "| plain HTTP copy of {mb:.0} MiB from the node that holds it (baseline, median of 3) | {:.0} MiB/s | 1.00 |",
        mb / plain
    );
    println!(
        "| one raw libp2p stream, TCP + Noise + Yamux (open mesh), no blob logic (median of 3) | {:.0} MiB/s | {:.2}x baseline |",
        mb / raw_open,
        plain / raw_open
    );
    println!(
        "| one raw libp2p stream, TCP + proof of the secret + Noise + Yamux (private mesh), no blob logic (median of 3) | {:.0} MiB/s | {:.2}x baseline |",
        mb / raw_private,
        plain / raw_private
    );
    println!(
        "| {mb:.0} MiB fetched by one node from one peer, verified, then served, open mesh (median of 3) | {:.0} MiB/s | {:.2}x baseline, {:.2}x its raw stream |",
        mb / single_open,
        plain / single_open,
        raw_open / single_open
    );
    println!("| (the next figures: a {nodes_link} mesh, as the nodes start by default) | | |");
    println!(
        "| {mb:.0} MiB fetched by one node from one peer, verified, then served (median of 3) | {:.0} MiB/s | {:.2}x baseline, {:.2}x its raw stream |",
        mb / single,
        plain / single,
        raw / single
    );
    if single_peer_only {
        return Ok(());
    }
    let small = five_fetch(&mesh, 10, SIZE / 4).await?;
    let five = five_fetch(&mesh, 11, SIZE).await?;
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
