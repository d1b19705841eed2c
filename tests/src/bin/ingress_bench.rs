//! ingress_bench: a published TCP port reached through a node's ingress, against a direct
//! connection to the container's own published port on the same engine, in the same run.
//!
//! ```text
//! cargo build --release -p mycel -p mycel-tests --bins && target/release/ingress_bench
//! ```
//!
//! Two release nodes (ingress on 127.0.0.41 and .42); the echo app (examples/hello-container
//! with `TCP_PORTS=7000`) runs on n1 only. Through n0 a connection crosses the mesh to n1; through
//! n1 it goes straight to the local instance. Throughput is one connection echoing 256 MiB
//! (written and read back at once); setup is connect-to-greeting, the median of 300.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result, ensure};
use mycel_tests::{
    Mesh, NodeProcess,
    docker::{docker, remove_containers_of},
    hello_container_example, wait_until,
};
use reqwest::StatusCode;
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    time::Instant,
};

const TOTAL: usize = 256 << 20;
const CHUNK: usize = 64 << 10;
const SETUPS: usize = 300;

#[tokio::main]
async fn main() -> Result<()> {
    let (archive, _) = hello_container_example()?;
    let hub = NodeProcess::builder("n0")
        .ingress("127.0.0.41")
        .start()
        .await?;
    let runner = NodeProcess::builder("n1")
        .join(&hub)
        .ingress("127.0.0.42")
        .arg("--label")
        .arg("role=runner")
        .start()
        .await?;
    let mesh = Mesh::from_nodes(vec![hub, runner]);
    let result = run(&mesh, &archive).await;
    remove_containers_of(&mesh);
    mesh.report(result)
}

async fn run(mesh: &Mesh, archive: &std::path::Path) -> Result<()> {
    mesh.wait_converged(Duration::from_secs(30)).await?;
    let (status, pushed) = mesh[0].push_image(archive).await?;
    ensure!(status == StatusCode::CREATED, "{status} {pushed}");
    let manifest = json!({
        "name": "echo", "version": "1", "replicas": 1,
        "container": {"archive": pushed["hash"], "port": 8080},
        "env": {"TCP_PORTS": "7000"},
        "ports": [{"container": 7000, "published": 17400}],
        "placement": {"required": [{"key": "role", "op": "in", "values": ["runner"]}]}
    });
    let (status, answer) = mesh[0].deploy(&manifest).await?;
    ensure!(status == StatusCode::CREATED, "{status} {answer}");
    let remote = SocketAddr::from(([127, 0, 0, 41], 17400));
    let local = SocketAddr::from(([127, 0, 0, 42], 17400));
    wait_until(
        "the echo app through both nodes",
        Duration::from_secs(90),
        Duration::from_millis(200),
        async || {
            greeting(remote).await?;
            greeting(local).await?;
            Ok(true)
        },
    )
    .await?;
    let container = docker(&[
        "ps",
        "-q",
        "--filter",
        "label=mycel.app=echo",
        "--filter",
        &format!("label=mycel.node={}", mesh[1].peer_id()),
    ])?;
    let port = docker(&["port", &container, "7000/tcp"])?;
    let direct: SocketAddr = port
        .lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .context("the container's port on 127.0.0.1")?
        .parse()?;

    println!("TCP through a node's ingress, against a direct connection to the container");
    let direct_rate = throughput(direct).await?;
    let local_rate = throughput(local).await?;
    let remote_rate = throughput(remote).await?;
    println!(
        "throughput, one connection echoing {} MiB: direct {direct_rate:.0} MiB/s; ingress to \
         a local instance {local_rate:.0} MiB/s ({:.2}x); across the mesh {remote_rate:.0} MiB/s \
         ({:.2}x)",
        TOTAL >> 20,
        local_rate / direct_rate,
        remote_rate / direct_rate
    );
    let direct_setup = setup(direct).await?;
    let local_setup = setup(local).await?;
    let remote_setup = setup(remote).await?;
    println!(
        "connection setup (connect to greeting, median of {SETUPS}): direct {:.3} ms; ingress to \
         a local instance {:.3} ms (+{:.3} ms); across the mesh {:.3} ms (+{:.3} ms)",
        direct_setup * 1e3,
        local_setup * 1e3,
        (local_setup - direct_setup) * 1e3,
        remote_setup * 1e3,
        (remote_setup - direct_setup) * 1e3,
    );
    Ok(())
}

/// Connects to the echo app at `addr` and reads its greeting line.
async fn greeting(addr: SocketAddr) -> Result<BufReader<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut reader = BufReader::new(tcp);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
        .await
        .context("no greeting")??;
    ensure!(line.starts_with("hello from"), "{line:?}");
    Ok(reader)
}

/// MiB/s of one connection echoing [`TOTAL`] bytes, written and read at once.
async fn throughput(addr: SocketAddr) -> Result<f64> {
    let connection = greeting(addr).await?;
    let (mut read, mut write) = connection.into_inner().into_split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; CHUNK];
        for _ in 0..TOTAL / CHUNK {
            write.write_all(&chunk).await?;
        }
        anyhow::Ok(write)
    });
    let mut buffer = vec![0u8; CHUNK];
    let mut got = 0;
    while got < TOTAL {
        let n = read.read(&mut buffer).await?;
        ensure!(n > 0, "closed after {got} bytes");
        got += n;
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(writer.await??);
    Ok((TOTAL >> 20) as f64 / elapsed)
}

/// The median seconds from connect to greeting, over [`SETUPS`] connections.
async fn setup(addr: SocketAddr) -> Result<f64> {
    let mut times = Vec::with_capacity(SETUPS);
    for _ in 0..SETUPS {
        let started = Instant::now();
        let connection = greeting(addr).await?;
        times.push(started.elapsed().as_secs_f64());
        drop(connection);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
