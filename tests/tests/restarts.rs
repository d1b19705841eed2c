//! Nodes killed and restarted under a stream of writes (Jepsen-style): nothing acknowledged is
//! lost or hidden, and the group always takes a restarted member back. Every node is a real
//! `mycel` process; kills are SIGKILL; restarts reuse the data dir, on the same or a new port.
//!
//! `MYCEL_CHAOS_KILLS=N` sets how many times the long test kills the leader (default 4 in CI;
//! the acceptance run uses 8 or more, 20 times over).

use std::time::Duration;

use anyhow::Result;
use mycel_tests::{
    Mesh, NodeProcess,
    apps::agreed_group,
    chaos::{
        Port, Targets, WriteLoad, kill, kill_and_restart, restart, wait_agreed, wait_all_listed,
        wait_caught_up, wait_new_leader, wait_whole,
    },
};

/// How long the group may take to agree on one leader and term after the last restart.
const AGREE_WITHIN: Duration = Duration::from_secs(10);
const WRITERS: usize = 3;
const PAUSE: Duration = Duration::from_millis(150);

/// Five nodes, all voters, and a module to deploy.
async fn five_voters() -> Result<(Mesh, String)> {
    let mesh = Mesh::star(5).await?;
    let all: Vec<&NodeProcess> = mesh.iter().collect();
    agreed_group(&all, 5, Duration::from_secs(60)).await?;
    let module = mesh[0].push(b"not a real module".to_vec()).await?;
    Ok((mesh, module))
}

/// After the last restart: one leader and one term everywhere within [`AGREE_WITHIN`], the group
/// whole again and taking writes, and every acknowledged deploy listed by every node.
async fn check_after(mesh: &Mesh, load: WriteLoad) -> Result<()> {
    let (leader, term) = wait_agreed(mesh, AGREE_WITHIN).await?;
    settled(mesh, &load).await?;
    let log = load.stop().await;
    wait_all_listed(mesh, &log.acknowledged, Duration::from_secs(20)).await?;
    for (_, status, error) in log.refused.iter().take(5) {
        eprintln!("refused: {status} {error}");
    }
    eprintln!(
        "{} acknowledged, {} refused, {} unanswered; leader {} in term {term}",
        log.acknowledged.len(),
        log.refused.len(),
        log.unanswered.len(),
        mesh[leader].name()
    );
    Ok(())
}

async fn settled(mesh: &Mesh, load: &WriteLoad) -> Result<()> {
    wait_whole(mesh, load, Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_deploys_survive_leader_kills_and_restarts() -> Result<()> {
    let kills: usize = std::env::var("MYCEL_CHAOS_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(4);
    let (mut mesh, module) = five_voters().await?;
    let targets = Targets::of(&mesh);
    let load = WriteLoad::start(&targets, &module, WRITERS, PAUSE);
    let result = async {
        for round in 0..kills {
            settled(&mesh, &load).await?;
            let (leader, term) = wait_agreed(&mesh, AGREE_WITHIN).await?;
            // Every other kill, the others elect a new leader before the old one is back (the
            // case the group used to lose the restarted node in); otherwise it is back at once.
            let elect_first = round % 2 == 0;
            let port = if round % 4 < 2 { Port::Same } else { Port::New };
            kill(&mut mesh, &targets, leader)?;
            if elect_first {
                wait_new_leader(&mesh, term).await?;
            }
            restart(&mut mesh, &targets, leader, port).await?;
            wait_agreed(&mesh, AGREE_WITHIN).await?;
            let took = wait_caught_up(&mesh, leader, AGREE_WITHIN).await?;
            eprintln!(
                "kill {round}: {} (elect first: {elect_first}, {port:?} port) caught up {took:?} after its restart",
                mesh[leader].name()
            );
        }
        check_after(&mesh, load).await
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn followers_killed_one_or_two_at_once_catch_up() -> Result<()> {
    let (mut mesh, module) = five_voters().await?;
    let targets = Targets::of(&mesh);
    let load = WriteLoad::start(&targets, &module, WRITERS, PAUSE);
    let result = async {
        settled(&mesh, &load).await?;
        let (leader, _) = wait_agreed(&mesh, AGREE_WITHIN).await?;
        let followers: Vec<usize> = (0..mesh.len()).filter(|&i| i != leader).collect();

        kill_and_restart(&mut mesh, &targets, followers[0], Port::New).await?;
        wait_caught_up(&mesh, followers[0], AGREE_WITHIN).await?;
        settled(&mesh, &load).await?;

        // Two at once: the other three keep a quorum of five voters meanwhile.
        targets.set(followers[1], None);
        targets.set(followers[2], None);
        mesh[followers[1]].sigkill()?;
        mesh[followers[2]].sigkill()?;
        mesh[followers[1]].restart_in_place().await?;
        mesh[followers[2]].restart(&[]).await?;
        targets.set(followers[1], Some(mesh[followers[1]].api()));
        targets.set(followers[2], Some(mesh[followers[2]].api()));
        wait_agreed(&mesh, AGREE_WITHIN).await?;
        wait_caught_up(&mesh, followers[1], AGREE_WITHIN).await?;
        wait_caught_up(&mesh, followers[2], AGREE_WITHIN).await?;
        check_after(&mesh, load).await
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_killed_twice_in_a_row() -> Result<()> {
    let (mut mesh, module) = five_voters().await?;
    let targets = Targets::of(&mesh);
    let load = WriteLoad::start(&targets, &module, WRITERS, PAUSE);
    let result = async {
        settled(&mesh, &load).await?;
        let (first, term) = wait_agreed(&mesh, AGREE_WITHIN).await?;
        kill(&mut mesh, &targets, first)?;
        wait_new_leader(&mesh, term).await?;
        restart(&mut mesh, &targets, first, Port::Same).await?;
        // The next leader dies as soon as the others follow it, before the first has caught up.
        let (second, _) = wait_agreed(&mesh, AGREE_WITHIN).await?;
        kill_and_restart(&mut mesh, &targets, second, Port::New).await?;
        wait_agreed(&mesh, AGREE_WITHIN).await?;
        wait_caught_up(&mesh, first, AGREE_WITHIN).await?;
        wait_caught_up(&mesh, second, AGREE_WITHIN).await?;
        check_after(&mesh, load).await
    }
    .await;
    mesh.report(result)
}
