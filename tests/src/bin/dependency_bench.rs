//! dependency_bench: a request a wasm app makes to its dependency at `http://back.localhost/`,
//! against the same request sent straight to the node's gateway (`Host: back.localhost`), same
//! node, same run.
//!
//! ```text
//! cargo build --release -p mycel -p mycel-tests --bins && target/release/dependency_bench
//! ```
//!
//! One release node runs `back` and `front` (examples/hello). `front`'s `/call/back.localhost/`
//! times its outgoing request inside the component (`x-call-micros`); the baseline is the
//! bench's own `GET /` of `back` through the gateway. Medians of 500 each, interleaved.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mycel_tests::{Mesh, NodeProcess, hello_example};
use reqwest::StatusCode;
use serde_json::json;
use tokio::time::Instant;

const ROUNDS: usize = 500;

#[tokio::main]
async fn main() -> Result<()> {
    let (module, _) = hello_example()?;
    let mesh = Mesh::from_nodes(vec![NodeProcess::start("n0", None).await?]);
    let result = run(&mesh, &module).await;
    mesh.report(result)
}

async fn run(mesh: &Mesh, module: &std::path::Path) -> Result<()> {
    let hash = mesh[0].push(std::fs::read(module)?).await?;
    for (name, dependencies) in [("back", json!({})), ("front", json!({"back": "^1"}))] {
        let manifest = json!({"name": name, "version": "1.0.0", "wasm": {"module": hash},
            "dependencies": dependencies});
        let (status, answer) = mesh[0].deploy(&manifest).await?;
        ensure!(status == StatusCode::CREATED, "{status} {answer}");
        mesh[0].wait_running(name, 1).await?;
    }
    let (front, front_url) = mesh[0].gateway_client("front", Duration::from_secs(10))?;
    let (back, back_url) = mesh[0].gateway_client("back", Duration::from_secs(10))?;
    let (mut inside, mut direct) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS + 50 {
        let response = front
            .get(format!("{front_url}call/back.localhost/"))
            .send()
            .await?;
        let micros: u64 = response
            .headers()
            .get("x-call-micros")
            .context("x-call-micros")?
            .to_str()?
            .parse()?;
        let body = response.text().await?;
        ensure!(body.starts_with("200 hello from mycel"), "{body}");
        let started = Instant::now();
        let response = back.get(&back_url).send().await?;
        ensure!(response.status() == StatusCode::OK);
        response.bytes().await?;
        let elapsed = started.elapsed();
        if round >= 50 {
            // The first rounds warm connections and caches.
            inside.push(Duration::from_micros(micros));
            direct.push(elapsed);
        }
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (inside, direct) = (median(inside), median(direct));
    println!(
        "through back.localhost from inside front: {:.3} ms; straight to the gateway: {:.3} ms; ratio {:.2}x",
        inside.as_secs_f64() * 1e3,
        direct.as_secs_f64() * 1e3,
        inside.as_secs_f64() / direct.as_secs_f64()
    );
    Ok(())
}
