//! process_bench: how fast a sandboxed process app answers after a deploy, against the same
//! binary started by hand under bubblewrap, in the same run.
//!
//! ```text
//! examples/hello-container/build.sh
//! cargo build -p mycel -p mycel-tests --bins && target/debug/process_bench
//! ```
//!
//! One node on 127.0.0.1 offering `wasm,process`; examples/hello-container's static binary.
//! - baseline: `bwrap` with a read-only `/usr`, the binary's directory at `/app`, its own
//!   user, pid, ipc and uts namespaces, a fresh `/proc` and `/dev`, a tmpfs `/tmp`, sharing the
//!   host's network (a free port in `$PORT`), from its spawn to the first `200` from it;
//! - the driver alone: mycel's sandbox (namespaces, network, seccomp, Landlock, cgroup) started
//!   by `ProcessDriver::start` to the first `200` from the instance, in this process;
//! - mycel: a deploy of the binary as `[process]` through the API, from the request to the first
//!   `200` through the node's gateway (the binary uploaded before: a first start on the node
//!   makes its runnable copy, later ones with a new app name reuse it).

use std::{collections::BTreeMap, process::Stdio, time::Duration};

use anyhow::{Context, Result, ensure};
use mycel_runtime::{
    Driver, InstanceSpec, ProcessConfig, ProcessDriver, ProcessWorkload, Workload,
};
use mycel_tests::{NodeProcess, docker::first_answer, hello_container_binary};
use reqwest::StatusCode;
use serde_json::json;
use tokio::time::Instant;

const RUNS: usize = 5;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A port nobody listens on now.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The binary under bwrap to its first answer; seconds.
async fn bwrap_to_first_answer(client: &reqwest::Client, binary: &std::path::Path) -> Result<f64> {
    let dir = binary.parent().context("the binary's directory")?;
    let name = binary.file_name().context("the binary's name")?;
    let port = free_port()?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new("bwrap")
        .args([
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
        ])
        .args(["--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin"])
        .args([
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
        ])
        .arg("--ro-bind")
        .arg(dir)
        .arg("/app")
        .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
        .args(["--uid", "1000", "--gid", "1000", "--die-with-parent"])
        .args(["--setenv", "PORT", &port.to_string()])
        .arg(std::path::Path::new("/app").join(name))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("running bwrap (Debian's bubblewrap)")?;
    let elapsed = first_answer(client, &format!("http://127.0.0.1:{port}/"), None, started).await;
    child.kill().await?;
    elapsed
}

#[tokio::main]
async fn main() -> Result<()> {
    let binary = hello_container_binary()?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut baseline = Vec::new();
    for _ in 0..RUNS {
        baseline.push(bwrap_to_first_answer(&client, &binary).await?);
    }

    let driver_dir = tempfile::tempdir()?;
    let driver = ProcessDriver::start(ProcessConfig::new("bench", driver_dir.path())).await?;
    let binary_hash = format!("blake3:{}", blake3::hash(&std::fs::read(&binary)?).to_hex());
    let mut sandboxed = Vec::new();
    for i in 0..=RUNS {
        let spec = InstanceSpec {
            instance_id: format!("bench-{i}"),
            app: "bench".into(),
            workload: Workload::Process(ProcessWorkload {
                binary: binary.clone(),
                binary_hash: binary_hash.clone(),
                args: vec![],
                port: 8080,
                tcp_ports: vec![],
            }),
            env: BTreeMap::new(),
            memory_mb: 32,
            cpu_millis: 250,
            request_timeout: Duration::from_secs(10),
            max_concurrency: 16,
            secrets_dir: None,
            volumes: Vec::new(),
            dependencies: None,
        };
        let started = Instant::now();
        let instance = driver.start(spec).await?;
        let request = http::Request::get("/")
            .header(http::header::HOST, "bench.localhost")
            .body(mycel_runtime::empty_body())?;
        let answer = instance.handle(request).await?;
        ensure!(answer.status() == StatusCode::OK, "{}", answer.status());
        sandboxed.push(started.elapsed().as_secs_f64());
        instance.stop().await;
    }
    // The first start makes the driver's runnable copy of the binary: not counted.
    sandboxed.remove(0);

    let node = NodeProcess::builder("n0")
        .arg("--runtimes")
        .arg("wasm,process")
        .start()
        .await?;
    let hash = node.push(std::fs::read(&binary)?).await?;
    let mut deployed = Vec::new();
    // The first deploy makes the node's runnable copy of the binary: not counted.
    for i in 0..=RUNS {
        let name = format!("proc{i}");
        let manifest = json!({
            "name": name, "version": "1", "replicas": 1,
            "process": {"binary": hash},
            "resources": {"memory_mb": 32, "cpu": 0.25},
        });
        let started = Instant::now();
        let (status, answer) = node.deploy(&manifest).await?;
        ensure!(status == StatusCode::CREATED, "deploy: {status} {answer}");
        let host = format!("{name}.localhost");
        let url = format!("{}/", node.gateway());
        deployed.push(first_answer(&client, &url, Some(&host), started).await?);
    }
    deployed.remove(0);

    let bwrap = median(baseline);
    let mycel = median(deployed);
    println!("sandboxed processes, 1 debug node on loopback, medians of {RUNS}");
    println!();
    println!("| measure | value | ratio |");
    println!("|---|---|---|");
    println!("| `bwrap` of the binary to its first answer (baseline) | {bwrap:.3} s | 1.00 |");
    let driver = median(sandboxed);
    println!(
        "| mycel's sandbox started by its driver to the first answer | {driver:.3} s | {:.2}x bwrap |",
        driver / bwrap
    );
    println!(
        "| mycel deploy of the binary as `[process]` to its first answer through the gateway | {mycel:.3} s | {:.2}x bwrap |",
        mycel / bwrap
    );
    Ok(())
}
