//! Membership as users see it through `GET /v1/nodes`: joining, failure detection, graceful
//! leave and rejoin after a restart.
//!
//! Timings assume the defaults: a neighbour that cannot redial a killed node (or stops getting
//! pongs from a frozen one within 4 s) publishes a suspicion; a suspect that does not refute within
//! 2.5 s is dead.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use mycel_protocol::{Runtime, api::MemberStatus};
use mycel_tests::{InProcessMesh, Mesh, NodeProcess, mesh::find, wait_until};
use tokio::time::Instant;

const CONVERGE: Duration = Duration::from_secs(30);

/// In process: membership needs no separate processes.
#[tokio::test(flavor = "multi_thread")]
async fn five_nodes_in_a_chain_all_see_each_other_alive() -> Result<()> {
    let mesh = InProcessMesh::chain(5).await?;
    mesh.wait_converged(CONVERGE).await?;
    for observer in &mesh.nodes {
        let view = observer.nodes().await?;
        ensure!(
            view.nodes.len() == 5,
            "{} lists {} nodes",
            observer.name(),
            view.nodes.len()
        );
        for node in &mesh.nodes {
            let info = find(&view, node.peer_id()).context("listed")?;
            let seen_by = observer.name();
            ensure!(info.name == node.name(), "{seen_by}: {info:?}");
            ensure!(
                info.runtimes.contains(&Runtime::Wasm),
                "{seen_by}: {info:?}"
            );
            ensure!(info.resources.cpu_cores > 0, "{seen_by}: {info:?}");
            ensure!(info.resources.memory_mb > 0, "{seen_by}: {info:?}");
        }
    }
    mesh.shutdown().await;
    Ok(())
}

/// The library's one way to stop (`NodeHandle::shutdown`, what `mycel up` runs on SIGTERM) leaves
/// the mesh with a departure notice: the others see it departed long before any failure detector
/// could.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_shut_down_in_process_departs_at_once() -> Result<()> {
    let mut mesh = InProcessMesh::chain(3).await?;
    mesh.wait_converged(CONVERGE).await?;
    let leaver = mesh.nodes.pop().context("three nodes")?;
    let peer_id = leaver.peer_id().to_owned();
    leaver.shutdown().await;
    wait_until(
        "the survivors to see the leaver departed",
        Duration::from_secs(2),
        Duration::from_millis(50),
        async || {
            for survivor in &mesh.nodes {
                let view = survivor.nodes().await?;
                let info = find(&view, &peer_id).context("still listed")?;
                if !(info.status == MemberStatus::Dead && info.departed) {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await?;
    mesh.shutdown().await;
    Ok(())
}

/// Polls every survivor's view of `victim` every `poll` until all see it `dead` (or `timeout`),
/// returning the statuses each survivor reported, consecutive repeats collapsed.
async fn watch(
    mesh: &Mesh,
    victim: &str,
    poll: Duration,
    timeout: Duration,
) -> Result<Vec<Vec<Option<(MemberStatus, bool)>>>> {
    let survivors = mesh.running().filter(|n| n.peer_id() != victim).count();
    let mut histories: Vec<Vec<Option<(MemberStatus, bool)>>> = vec![Vec::new(); survivors];
    let deadline = Instant::now() + timeout;
    loop {
        let views = mesh.views_of(victim).await;
        for (history, view) in histories.iter_mut().zip(views) {
            let seen = view.map(|i| (i.status, i.departed));
            if history.last() != Some(&seen) {
                history.push(seen);
            }
        }
        let all_dead = histories
            .iter()
            .all(|h| matches!(h.last(), Some(Some((MemberStatus::Dead, _)))));
        if all_dead {
            return Ok(histories);
        }
        if Instant::now() >= deadline {
            bail!("not every survivor saw the node dead within {timeout:?}: {histories:?}");
        }
        tokio::time::sleep(poll).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_turns_suspect_then_dead_everywhere() -> Result<()> {
    let mut mesh = Mesh::chain(4).await?;
    let result = async {
        mesh.wait_converged(CONVERGE).await?;
        let victim = mesh[3].peer_id().to_owned();
        mesh[3].sigkill()?;
        let histories = watch(
            &mesh,
            &victim,
            Duration::from_millis(100),
            Duration::from_secs(15),
        )
        .await?;
        for (survivor, history) in mesh.running().zip(&histories) {
            let first_dead = history
                .iter()
                .position(|s| matches!(s, Some((MemberStatus::Dead, _))))
                .context("dead")?;
            ensure!(
                history[..first_dead]
                    .iter()
                    .any(|s| matches!(s, Some((MemberStatus::Suspect, _)))),
                "{} never reported the killed node suspect before dead: {history:?}",
                survivor.name()
            );
            ensure!(
                history[first_dead] == Some((MemberStatus::Dead, false)),
                "{} reports a killed node as departed: {history:?}",
                survivor.name()
            );
        }
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_is_seen_as_a_departure_at_once() -> Result<()> {
    let mut mesh = Mesh::chain(4).await?;
    let result = async {
        mesh.wait_converged(CONVERGE).await?;
        let leaver = mesh[3].peer_id().to_owned();
        mesh[3].sigterm()?;
        // Faster than the failure detector could (suspect, then dead 2.5 s later), so only the departure
        // notice can explain it.
        let histories = watch(
            &mesh,
            &leaver,
            Duration::from_millis(50),
            Duration::from_secs(2),
        )
        .await;
        let status = mesh[3].wait_exit(Duration::from_secs(10)).await?;
        ensure!(status.code() == Some(0), "SIGTERM exit status: {status}");
        for (survivor, history) in mesh.running().zip(&histories?) {
            ensure!(
                history.last() == Some(&Some((MemberStatus::Dead, true))),
                "{} does not show the leaver dead and departed: {history:?}",
                survivor.name()
            );
            ensure!(
                !history
                    .iter()
                    .any(|s| matches!(s, Some((MemberStatus::Suspect, _)))),
                "{} saw the leaver as suspect: {history:?}",
                survivor.name()
            );
        }
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_node_keeps_its_identity_and_rejoins() -> Result<()> {
    let mut mesh = Mesh::chain(3).await?;
    let result = async {
        mesh.wait_converged(CONVERGE).await?;
        let before = mesh[2].peer_id().to_owned();
        // No bootstrap: it must rejoin from the peers it remembers.
        mesh[2].restart(&[]).await?;
        ensure!(
            mesh[2].peer_id() == before,
            "peer id changed across a restart: {before} -> {}",
            mesh[2].peer_id()
        );
        mesh.wait_converged(CONVERGE).await?;
        wait_until(
            "the rejoined node to be listed as not departed",
            Duration::from_secs(5),
            Duration::from_millis(100),
            async || {
                for view in mesh.views_of(&before).await {
                    let info = view.context("the rejoined node is not listed")?;
                    ensure!(!info.departed, "still marked departed: {info:?}");
                }
                Ok(true)
            },
        )
        .await
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_node_is_dead_then_alive_again_when_it_wakes() -> Result<()> {
    let mesh = Mesh::chain(3).await?;
    let result = async {
        mesh.wait_converged(CONVERGE).await?;
        let sleeper = mesh[2].peer_id().to_owned();
        mesh[2].freeze()?;
        let frozen = async {
            watch(
                &mesh,
                &sleeper,
                Duration::from_millis(100),
                Duration::from_secs(15),
            )
            .await
        }
        .await;
        // Wake it whatever happened, so the harness can stop it.
        mesh[2].thaw()?;
        frozen?;
        // Back from the dead: its next advert is newer than anything the others hold.
        mesh.wait_converged(CONVERGE).await
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_that_only_speak_quic_form_a_mesh() -> Result<()> {
    // QUIC cannot carry a private mesh's secret: only an open mesh speaks it.
    let quic = "/ip4/127.0.0.1/udp/0/quic-v1";
    let first = NodeProcess::builder("q0")
        .listen(quic)
        .open()
        .start()
        .await?;
    ensure!(
        first.listen_addr().contains("/quic-v1/"),
        "{}",
        first.listen_addr()
    );
    let join = first.listen_addr().to_string();
    let second = NodeProcess::builder("q1")
        .listen(quic)
        .bootstrap(&join)
        .start()
        .await?;
    let third = NodeProcess::builder("q2")
        .listen(quic)
        .bootstrap(&join)
        .start()
        .await?;
    let mesh = Mesh::from_nodes(vec![first, second, third]);
    let result = mesh.wait_converged(CONVERGE).await;
    mesh.report(result)
}
