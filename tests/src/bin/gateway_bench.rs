//! gateway_bench: requests per second and latency through mycel's gateway, against `wasmtime serve`
//! of the same component on the same machine, in the same run.
//!
//! ```text
//! cargo install wasmtime-cli@48.0.8 --locked   # once; or set WASMTIME=/path/to/wasmtime
//! cargo build --release -p mycel -p mycel-tests --bins && target/release/gateway_bench
//! ```
//!
//! Two release nodes on 127.0.0.1; examples/hello deployed with one replica. The same load (a fixed
//! number of keep-alive clients, each sending `GET /` back to back for a fixed time) goes to:
//! `wasmtime serve` (the baseline), the gateway of the node that runs the instance (same node),
//! and the gateway of the other node (cross node: every request crosses the mesh). Then the time
//! from a deploy to the first answer, with the module already compiled on every node.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use futures::future::join_all;
use mycel_protocol::api::InstanceState;
use mycel_tests::{Mesh, NodeProcess, apps::manifest, hello_example, wait_until};
use reqwest::StatusCode;
use tokio::time::Instant;

const CLIENTS: usize = 16;
const WINDOW: Duration = Duration::from_secs(5);
const WARMUP: Duration = Duration::from_secs(1);
const DEPLOYS: usize = 5;

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

/// `CLIENTS` keep-alive clients send `GET /` with `Host: host` to `target` for `WINDOW` (after
/// `WARMUP`); every answer must be 200.
async fn load(target: SocketAddr, host: &str) -> Result<Load> {
    let url = format!("http://{host}:{}/", target.port());
    let clients = (0..CLIENTS).map(|_| {
        let url = url.clone();
        let host = host.to_owned();
        async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .resolve(&host, target)
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
    for latencies in join_all(clients).await {
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

fn wasmtime_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("WASMTIME") {
        return Ok(path.into());
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("wasmtime"))
        .find(|p| p.is_file());
    on_path.context(
        "no wasmtime on PATH: install the baseline with `cargo install wasmtime-cli@48.0.8 \
         --locked` or set WASMTIME",
    )
}

/// Runs `wasmtime serve` on `component` at a free loopback port until dropped.
struct WasmtimeServe {
    child: tokio::process::Child,
    addr: SocketAddr,
}

impl WasmtimeServe {
    async fn start(component: &Path) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = tokio::process::Command::new(wasmtime_bin()?)
            .args(["serve", "-S", "cli", "--addr", &addr.to_string()])
            .arg(component)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting wasmtime serve")?;
        wait_until(
            "wasmtime serve to answer",
            Duration::from_secs(60),
            Duration::from_millis(50),
            async || Ok(tokio::net::TcpStream::connect(addr).await.is_ok()),
        )
        .await?;
        Ok(Self { child, addr })
    }
}

fn gateway_addr(node: &NodeProcess) -> Result<SocketAddr> {
    node.gateway()
        .trim_start_matches("http://")
        .parse()
        .context("the gateway address")
}

/// Deploys `name` with the hello module through `node` and waits until `replicas` run.
async fn deploy_running(node: &NodeProcess, name: &str, module: &str, replicas: u32) -> Result<()> {
    let (status, answer) = node
        .deploy(&manifest(name, "1.0.0", replicas, module))
        .await?;
    ensure!(status == StatusCode::CREATED, "deploy: {status} {answer}");
    wait_until(
        &format!("{name} to run {replicas} instances"),
        Duration::from_secs(60),
        Duration::from_millis(20),
        async || {
            let app = node.app(name).await?;
            Ok(app
                .instances
                .iter()
                .filter(|i| i.state == InstanceState::Running)
                .count()
                == replicas as usize)
        },
    )
    .await
}

/// Time from sending a deploy of `name` through `node` to the first 200 through `node`'s gateway.
async fn deploy_to_first_answer(node: &NodeProcess, name: &str, module: &str) -> Result<f64> {
    let gateway = gateway_addr(node)?;
    let host = format!("{name}.localhost");
    let client = reqwest::Client::builder()
        .no_proxy()
        .resolve(&host, gateway)
        .build()?;
    let url = format!("http://{host}:{}/", gateway.port());
    let started = Instant::now();
    let (status, answer) = node.deploy(&manifest(name, "1.0.0", 1, module)).await?;
    ensure!(status == StatusCode::CREATED, "deploy: {status} {answer}");
    loop {
        if let Ok(response) = client.get(&url).send().await
            && response.status() == StatusCode::OK
        {
            return Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{name} did not answer within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let (component, _) = hello_example()?;
    let baseline = {
        let serve = WasmtimeServe::start(&component).await?;
        let measured = load(serve.addr, "localhost").await;
        drop(serve.child);
        measured?
    };
    let mesh = Mesh::star(2).await?;
    let result = run(&mesh, &component, &baseline).await;
    mesh.report(result)
}

async fn run(mesh: &Mesh, component: &Path, baseline: &Load) -> Result<()> {
    let module = mesh[0].push(std::fs::read(component)?).await?;
    // Both nodes compile the module once (it stays cached on disk), then one replica serves.
    deploy_running(&mesh[0], "warm", &module, 2).await?;
    deploy_running(&mesh[0], "hello", &module, 1).await?;
    let app = mesh[0].app("hello").await?;
    let runs_it = mesh
        .iter()
        .position(|n| n.peer_id() == app.instances[0].node)
        .context("the node that runs hello")?;
    let other = 1 - runs_it;

    let same_node = load(gateway_addr(&mesh[runs_it])?, "hello.localhost").await?;
    let cross_node = load(gateway_addr(&mesh[other])?, "hello.localhost").await?;

    let mut first_answers = Vec::new();
    for i in 0..DEPLOYS {
        first_answers
            .push(deploy_to_first_answer(&mesh[i % 2], &format!("fresh{i}"), &module).await?);
    }
    first_answers.sort_by(f64::total_cmp);

    println!(
        "gateway, 2 release nodes on loopback, {CLIENTS} keep-alive clients, GET / for {} s each",
        WINDOW.as_secs()
    );
    println!();
    println!("| measure | value | ratio |");
    println!("|---|---|---|");
    println!(
        "| wasmtime serve, same component (baseline) | {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms | 1.00 |",
        baseline.per_second, baseline.p50_ms, baseline.p99_ms
    );
    println!(
        "| gateway, instance on the same node | {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms | {:.2}x wasmtime serve |",
        same_node.per_second,
        same_node.p50_ms,
        same_node.p99_ms,
        same_node.per_second / baseline.per_second
    );
    println!(
        "| gateway, instance on the other node (over the mesh) | {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms | {:.2}x same node |",
        cross_node.per_second,
        cross_node.p50_ms,
        cross_node.p99_ms,
        cross_node.per_second / same_node.per_second
    );
    println!(
        "| added p99 of the gateway hop (same node / cross node, over wasmtime serve) | {:+.2} / {:+.2} ms | |",
        same_node.p99_ms - baseline.p99_ms,
        cross_node.p99_ms - baseline.p99_ms
    );
    println!(
        "| deploy to first answer, module cached, median of {DEPLOYS} | {:.3} s (min {:.3}, max {:.3}) | |",
        percentile(&first_answers, 0.5),
        first_answers[0],
        first_answers[DEPLOYS - 1]
    );
    Ok(())
}
