//! restart_bench: what SIGKILL and a restart cost the placement group under a stream of writes.
//!
//! ```text
//! cargo build --release -p mycel -p mycel-tests --bins && target/release/restart_bench [KILLS]
//! ```
//!
//! Five release nodes on 127.0.0.1 form one group of five voters; three writers deploy a new app
//! through a random running node every 150 ms each. The baseline, in the same run: followers
//! killed and restarted the same way. Then the leader, KILLS times (default 8): every other time
//! the others elect a new leader before it is back, and every other pair of kills it comes back
//! on a new port. Reported: acknowledged writes lost (must be 0), writes refused or unanswered
//! per kill, time from the restarted node being ready until it applied the newest entry, and
//! from its restart until every node named one leader in one term.

use std::time::Duration;

use anyhow::{Result, ensure};
use mycel_tests::{
    Mesh, NodeProcess,
    apps::agreed_group,
    chaos::{
        Port, Targets, WriteLoad, kill, restart, wait_agreed, wait_all_listed, wait_caught_up,
        wait_new_leader, wait_whole,
    },
};
use tokio::time::Instant;

const WRITERS: usize = 3;
const PAUSE: Duration = Duration::from_millis(150);
const FOLLOWER_KILLS: usize = 4;

/// What one kill cost.
struct Kill {
    failed_writes: usize,
    caught_up: Duration,
    agreed: Duration,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn whole(mesh: &Mesh, load: &WriteLoad) -> Result<()> {
    wait_whole(mesh, load, Duration::from_secs(60)).await
}

/// Kills the leader (or a follower), restarts it, and measures.
async fn one_kill(
    mesh: &mut Mesh,
    targets: &Targets,
    load: &WriteLoad,
    leader: bool,
    elect_first: bool,
    port: Port,
) -> Result<Kill> {
    whole(mesh, load).await?;
    let (current, term) = wait_agreed(mesh, Duration::from_secs(10)).await?;
    let victim = if leader {
        current
    } else {
        (current + 1) % mesh.len()
    };
    let killed = kill(mesh, targets, victim)?;
    if elect_first {
        wait_new_leader(mesh, term).await?;
    }
    let ready = restart(mesh, targets, victim, port).await?;
    let caught_up = wait_caught_up(mesh, victim, Duration::from_secs(30)).await?;
    wait_agreed(mesh, Duration::from_secs(30)).await?;
    let agreed = ready.elapsed();
    // Writes answered within a few seconds of the kill are the kill's.
    let settle = Instant::now() + Duration::from_secs(3);
    tokio::time::sleep_until(settle).await;
    let failed_writes = load.log().failed_between(killed, Instant::now());
    Ok(Kill {
        failed_writes,
        caught_up,
        agreed,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let kills: usize = std::env::args()
        .nth(1)
        .map(|k| k.parse())
        .transpose()?
        .unwrap_or(8);
    let mut mesh = Mesh::star(5).await?;
    let result = run(&mut mesh, kills).await;
    mesh.report(result)
}

async fn run(mesh: &mut Mesh, kills: usize) -> Result<()> {
    let all: Vec<&NodeProcess> = mesh.iter().collect();
    agreed_group(&all, 5, Duration::from_secs(60)).await?;
    let module = mesh[0].push(b"bench module".to_vec()).await?;
    let targets = Targets::of(mesh);
    let load = WriteLoad::start(&targets, &module, WRITERS, PAUSE);

    let mut followers = Vec::new();
    for round in 0..FOLLOWER_KILLS {
        let port = if round % 2 == 0 {
            Port::Same
        } else {
            Port::New
        };
        followers.push(one_kill(mesh, &targets, &load, false, false, port).await?);
    }
    let mut leaders = Vec::new();
    for round in 0..kills {
        let elect_first = round % 2 == 0;
        let port = if round % 4 < 2 { Port::Same } else { Port::New };
        leaders.push(one_kill(mesh, &targets, &load, true, elect_first, port).await?);
    }
    whole(mesh, &load).await?;
    let log = load.stop().await;
    let listed = wait_all_listed(mesh, &log.acknowledged, Duration::from_secs(30)).await;
    ensure!(listed.is_ok(), "acknowledged writes were lost: {listed:?}");

    let per_kill =
        |k: &[Kill]| k.iter().map(|k| k.failed_writes as f64).sum::<f64>() / k.len() as f64;
    let ms = |k: &[Kill], f: fn(&Kill) -> Duration| {
        median(k.iter().map(|k| f(k).as_secs_f64() * 1e3).collect())
    };
    let caught = |k: &Kill| k.caught_up;
    let agreed = |k: &Kill| k.agreed;
    println!(
        "placement group under {WRITERS} writers (a deploy every {PAUSE:?} each), 5 release nodes"
    );
    println!();
    println!("| figure | value | baseline: a follower killed the same way | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| acknowledged writes lost across {kills} leader kills | 0 of {} | | |",
        log.acknowledged.len()
    );
    println!(
        "| writes refused or unanswered per kill (mean) | {:.1} | {:.1} | |",
        per_kill(&leaders),
        per_kill(&followers)
    );
    println!(
        "| restarted node ready to applying the newest entry, median | {:.0} ms | {:.0} ms | {:.2}x |",
        ms(&leaders, caught),
        ms(&followers, caught),
        ms(&leaders, caught) / ms(&followers, caught).max(1.0)
    );
    println!(
        "| restarted node ready to one leader and term on every node, median | {:.0} ms | {:.0} ms | {:.2}x |",
        ms(&leaders, agreed),
        ms(&followers, agreed),
        ms(&leaders, agreed) / ms(&followers, agreed).max(1.0)
    );
    let worst = leaders.iter().map(|k| k.agreed).max().unwrap_or_default();
    println!("slowest agreement after a leader's restart: {worst:.2?}");
    println!(
        "writes: {} acknowledged, {} refused, {} unanswered",
        log.acknowledged.len(),
        log.refused.len(),
        log.unanswered.len()
    );
    Ok(())
}
