//! mesh_bench: how fast local meshes form and heal, and what an idle node costs.
//!
//! ```text
//! cargo build --release -p mycel && cargo run --release -p mycel-tests --bin mesh_bench
//! ```
//!
//! Uses `target/release/mycel` (next to this binary) unless `MYCEL_BIN` says otherwise. Every node
//! runs on 127.0.0.1 and is stopped before the bench exits; the result is a markdown table.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use mycel_protocol::api::MemberStatus;
use mycel_tests::{Mesh, NodeProcess, metrics, mycel_bin, rss_mib};
use tokio::time::Instant;

/// The node's default failure detector: a suspect that does not refute is dead after this long.
const SUSPICION_TIMEOUT: Duration = Duration::from_millis(2500);
const IDLE_SETTLE: Duration = Duration::from_secs(2);
const IDLE_WINDOW: Duration = Duration::from_secs(10);

struct Row {
    figure: String,
    value: String,
    note: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    eprintln!("mesh_bench: using {}", mycel_bin().display());
    let mut rows = Vec::new();

    let mut startups = Vec::new();
    for _ in 0..3 {
        let mut node = NodeProcess::start("baseline", None).await?;
        startups.push(node.startup_time().as_secs_f64());
        stop(&mut node).await;
    }
    let baseline = median(&mut startups);
    rows.push(Row {
        figure: "startup: spawn to node.json (median of 3)".into(),
        value: format!("{baseline:.3} s"),
        note: "baseline".into(),
    });

    let mut mesh = Mesh::default();
    for n in [5, 20] {
        eprintln!("mesh_bench: starting {n} nodes");
        // From launching the first node (the others join through it as soon as it is ready) to
        // every node listing every node alive: what a person starting a mesh waits for.
        let started = Instant::now();
        mesh = Mesh::star(n).await?;
        mesh.wait_converged(Duration::from_secs(120)).await?;
        let converge = started.elapsed().as_secs_f64();
        rows.push(Row {
            figure: format!("{n} nodes: launch to all seeing {n} alive"),
            value: format!("{converge:.3} s"),
            note: format!("{:.1}x baseline startup", converge / baseline),
        });
        eprintln!("mesh_bench: measuring {} s of idle", IDLE_WINDOW.as_secs());
        rows.extend(idle(&mesh).await?);
        if n != 20 {
            stop_all(&mut mesh).await;
        }
    }

    let victim = mesh.len() - 1;
    let victim_id = mesh[victim].peer_id().to_owned();
    mesh[victim].sigkill()?;
    let killed = Instant::now();
    loop {
        let views = mesh.views_of(&victim_id).await;
        if views
            .iter()
            .all(|v| v.as_ref().is_some_and(|i| i.status == MemberStatus::Dead))
        {
            break;
        }
        if killed.elapsed() > Duration::from_secs(30) {
            bail!("the killed node was not dead everywhere after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead_after = killed.elapsed().as_secs_f64();
    rows.push(Row {
        figure: format!("{} nodes: SIGKILL to dead on every survivor", mesh.len()),
        value: format!("{dead_after:.3} s"),
        note: format!(
            "{:.2}x the suspicion timeout ({:.1} s)",
            dead_after / SUSPICION_TIMEOUT.as_secs_f64(),
            SUSPICION_TIMEOUT.as_secs_f64()
        ),
    });
    stop_all(&mut mesh).await;

    println!("| figure | value | note |\n|---|---|---|");
    for row in rows {
        println!("| {} | {} | {} |", row.figure, row.value, row.note);
    }
    Ok(())
}

/// Memory, CPU and advert traffic of every running node over [`IDLE_WINDOW`].
async fn idle(mesh: &Mesh) -> Result<Vec<Row>> {
    let tick = clock_ticks_per_second();
    tokio::time::sleep(IDLE_SETTLE).await;
    let nodes: Vec<&NodeProcess> = mesh.running().collect();
    let mut start = Vec::new();
    for node in &nodes {
        start.push((cpu_ticks(node.pid())?, traffic(node).await?));
    }
    let began = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let mut cpu = Vec::new();
    let mut rss = Vec::new();
    let mut bytes = Vec::new();
    let mut adverts = Vec::new();
    for (node, (ticks0, (bytes0, adverts0))) in nodes.iter().zip(start) {
        let secs = began.elapsed().as_secs_f64();
        let ticks = cpu_ticks(node.pid())? - ticks0;
        cpu.push(100.0 * ticks as f64 / tick / secs);
        let (bytes1, adverts1) = traffic(node).await?;
        bytes.push((bytes1 - bytes0) / secs);
        adverts.push((adverts1 - adverts0) / secs);
        rss.push(rss_mib(node.pid())?);
    }
    let n = nodes.len();
    let (rss_median, rss_max) = (median(&mut rss), max(&rss));
    let (cpu_median, cpu_max) = (median(&mut cpu), max(&cpu));
    Ok(vec![
        Row {
            figure: format!("{n} nodes idle: resident memory per node"),
            value: format!("median {rss_median:.1} MiB, max {rss_max:.1} MiB"),
            note: "VmRSS".into(),
        },
        Row {
            figure: format!("{n} nodes idle: CPU per node"),
            value: format!("median {cpu_median:.2} %, max {cpu_max:.2} %"),
            note: format!("of one core, over {} s", IDLE_WINDOW.as_secs()),
        },
        Row {
            figure: format!("{n} nodes idle: libp2p traffic per node"),
            value: format!("median {:.0} B/s", median(&mut bytes)),
            note: format!(
                "inbound + outbound, all protocols; median {:.1} adverts received/s",
                median(&mut adverts)
            ),
        },
    ])
}

/// libp2p bytes (both directions) and adverts received so far.
async fn traffic(node: &NodeProcess) -> Result<(f64, f64)> {
    let text = node.metrics().await?;
    let bytes = metrics::bandwidth_bytes(&text);
    if bytes == 0.0 {
        eprintln!(
            "mesh_bench: {} exports no libp2p bandwidth counters",
            node.name()
        );
    }
    let adverts = metrics::value(&text, "mycel_adverts_received_total", &[]);
    Ok((bytes, adverts))
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

async fn stop(node: &mut NodeProcess) {
    if node.has_exited() {
        return;
    }
    let _ = node.sigterm();
    if node.wait_exit(Duration::from_secs(10)).await.is_err() {
        eprintln!("mesh_bench: {} ignored SIGTERM; killing it", node.name());
        let _ = node.sigkill();
    }
}

async fn stop_all(mesh: &mut Mesh) {
    for i in 0..mesh.len() {
        if !mesh[i].has_exited() {
            let _ = mesh[i].sigterm();
        }
    }
    for i in 0..mesh.len() {
        stop(&mut mesh[i]).await;
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}
