//! Private meshes, end to end: a new mesh is private; a node without its secret (an open node
//! given a member's plain address, or a node with a ticket whose secret is wrong) is refused at
//! the handshake and so is listed nowhere, hears no gossip, fetches no blob and reaches no app;
//! `mycel join-ticket` hands out the ticket that does join; `--open` makes an open mesh that
//! plain addresses join; a restarted member rejoins with the secret its data dir keeps, and a
//! data dir never switches meshes.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use mycel_mesh::{JoinTicket, MeshSecret};
use mycel_protocol::api::JoinTicketInfo;
use mycel_tests::{
    DataDir, Mesh, NodeProcess, apps::deploy_hello_as, metrics, mycel_cli_env, wait_until,
};
use reqwest::StatusCode;

const CONVERGE: Duration = Duration::from_secs(30);
const REFUSED: &str = "mycel_handshakes_refused_total";

async fn refused(node: &NodeProcess, direction: &str) -> Result<f64> {
    let text = node.metrics().await?;
    Ok(metrics::value(&text, REFUSED, &[("direction", direction)]))
}

/// `node`'s ticket with another secret: the same member and addresses, the wrong mesh.
fn forged_ticket(node: &NodeProcess) -> Result<String> {
    let mut ticket: JoinTicket = node.join_ticket().parse()?;
    ticket.secret = Some(MeshSecret::from_bytes([0x5a; 32]));
    Ok(ticket.to_string())
}

/// `GET /v1/blobs/{hash}` on `node`: the status only.
async fn blob_status(node: &NodeProcess, hash: &str) -> Result<StatusCode> {
    let url = format!("{}/v1/blobs/{hash}", node.api());
    let response = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()?
        .get(url)
        .send()
        .await?;
    Ok(response.status())
}

/// Every member lists neither outsider, and each outsider lists only itself.
async fn nobody_lists(mesh: &Mesh, outsiders: &[&NodeProcess]) -> Result<()> {
    for outsider in outsiders {
        for (member, view) in mesh.iter().zip(mesh.views_of(outsider.peer_id()).await) {
            ensure!(
                view.is_none(),
                "{} lists the outsider {}: {view:?}",
                member.name(),
                outsider.name()
            );
        }
        let own = outsider.nodes().await?;
        ensure!(
            own.nodes.len() == 1 && own.nodes[0].peer_id == outsider.peer_id(),
            "{} sees more than itself: {own:?}",
            outsider.name()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_without_the_secret_are_refused_and_reach_nothing() -> Result<()> {
    let mesh = Mesh::star(3).await?;
    let result = async {
        mesh.wait_converged(CONVERGE).await?;
        for node in mesh.iter() {
            ensure!(node.node_json().private, "{} is not private", node.name());
            ensure!(node.mesh_secret() == mesh[0].mesh_secret(), "one secret");
        }
        let blob = mesh[0].push(b"held by a member".to_vec()).await?;
        deploy_hello_as(&mesh[1], "hello", 2).await?;
        let before = refused(&mesh[0], "inbound").await?;

        // An open node given a member's plain address, and a node whose ticket has another
        // secret: both dial mesh[0] (and keep retrying while alone).
        let plain = NodeProcess::builder("plain")
            .bootstrap(mesh[0].listen_addr())
            .start()
            .await?;
        let forged = NodeProcess::builder("forged")
            .arg("--join")
            .arg(forged_ticket(&mesh[0])?)
            .start()
            .await?;
        let outsiders = [&plain, &forged];
        let tried = async {
            ensure!(
                !plain.node_json().private,
                "a plain address joins an open mesh"
            );
            ensure!(
                forged.node_json().private,
                "a ticket's secret makes a private node"
            );
            // Both tried more than once (they retry every 2 s while alone), and both sides of
            // the forged ticket's handshake refused the other.
            wait_until(
                "mesh[0] to refuse both outsiders, and again",
                Duration::from_secs(20),
                Duration::from_millis(100),
                async || {
                    let inbound = refused(&mesh[0], "inbound").await?;
                    let outbound = refused(&forged, "outbound").await?;
                    ensure!(
                        inbound >= before + 4.0 && outbound >= 2.0,
                        "mesh[0] refused {} connections, the forged node {outbound}",
                        inbound - before
                    );
                    Ok(true)
                },
            )
            .await?;
            // Each side says why, once, at info.
            for (node, says) in [
                (&plain, "if its mesh is private, join it with a ticket"),
                (
                    &forged,
                    "could not connect: the peer is not in this private mesh",
                ),
                (
                    &mesh[0],
                    "refused a connection from a peer without this private mesh's secret",
                ),
            ] {
                wait_until(
                    &format!("{} to log why", node.name()),
                    Duration::from_secs(10),
                    Duration::from_millis(100),
                    async || {
                        let log = std::fs::read_to_string(node.data_dir().log())?;
                        ensure!(
                            log.matches(says).count() == 1,
                            "{} logged {says:?} {} times",
                            node.name(),
                            log.matches(says).count()
                        );
                        Ok(true)
                    },
                )
                .await?;
            }

            nobody_lists(&mesh, &outsiders).await?;
            for outsider in outsiders {
                let status = blob_status(outsider, &blob).await?;
                ensure!(
                    status == StatusCode::NOT_FOUND,
                    "{} fetched a member's blob: {status}",
                    outsider.name()
                );
                let reached = outsider.through_gateway("hello", "/").await?;
                ensure!(
                    matches!(
                        reached.status(),
                        StatusCode::NOT_FOUND | StatusCode::SERVICE_UNAVAILABLE
                    ),
                    "{}'s gateway reached hello: {}",
                    outsider.name(),
                    reached.status()
                );
                let metrics = outsider.metrics().await?;
                ensure!(
                    metrics::value(&metrics, "mycel_adverts_received_total", &[]) == 0.0,
                    "{} received gossip",
                    outsider.name()
                );
            }

            // The members carry on: a deploy after the outsiders knocked runs and answers
            // through another member's gateway.
            deploy_hello_as(&mesh[2], "after", 1).await?;
            let response = mesh[0].through_gateway("after", "/").await?;
            ensure!(response.status() == StatusCode::OK, "{response:?}");
            mesh.wait_converged(CONVERGE).await?;
            nobody_lists(&mesh, &outsiders).await
        }
        .await;
        if tried.is_err() {
            plain.print_log_tail();
            forged.print_log_tail();
        }
        tried
    }
    .await;
    mesh.report(result)
}

/// `mycel join-ticket` against `node`: with the node's token it prints node.json's ticket (and
/// its JSON with `--json`); without it, nothing but the API's refusal. Returns the ticket.
async fn ticket_from_the_cli(node: &NodeProcess) -> Result<String> {
    let dir = node.data_dir().path().to_str().context("a UTF-8 path")?;
    let output = mycel_cli_env(
        ["join-ticket", "--node", node.api()],
        &[("MYCEL_DATA_DIR", dir)],
    )
    .await?;
    ensure!(output.status.success(), "mycel join-ticket: {output:?}");
    let ticket = String::from_utf8(output.stdout)?.trim().to_string();
    ensure!(ticket == node.join_ticket(), "not node.json's ticket");
    let output = mycel_cli_env(
        ["join-ticket", "--json", "--node", node.api()],
        &[("MYCEL_DATA_DIR", dir)],
    )
    .await?;
    let info: JoinTicketInfo = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("mycel join-ticket --json: {output:?}"))?;
    ensure!(info.private && info.ticket == ticket, "{info:?}");

    // Without the node's token (a data dir that is not the node's), no ticket.
    let elsewhere = DataDir::temp()?;
    let elsewhere = elsewhere.path().to_str().context("a UTF-8 path")?;
    let output = mycel_cli_env(
        ["join-ticket", "--node", node.api()],
        &[("MYCEL_DATA_DIR", elsewhere)],
    )
    .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.code() == Some(1)
            && stderr.contains("(unauthorized)")
            && output.stdout.is_empty(),
        "{output:?}"
    );
    Ok(ticket)
}

#[tokio::test(flavor = "multi_thread")]
async fn mycel_join_ticket_prints_the_ticket_that_joins() -> Result<()> {
    let first = NodeProcess::start("first", None).await?;
    let ticket = match ticket_from_the_cli(&first).await {
        Ok(ticket) => ticket,
        Err(e) => {
            first.print_log_tail();
            return Err(e);
        }
    };
    let fresh = NodeProcess::builder("fresh")
        .arg("--join")
        .arg(&ticket)
        .start()
        .await?;
    let mesh = Mesh::from_nodes(vec![first, fresh]);
    let result = async {
        ensure!(
            mesh[1].mesh_secret() == mesh[0].mesh_secret(),
            "another secret"
        );
        mesh.wait_converged(CONVERGE).await
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_mesh_takes_plain_bootstrap_addresses() -> Result<()> {
    let first = NodeProcess::builder("o0").open().start().await?;
    let second = NodeProcess::start("o1", Some(first.listen_addr())).await?;
    // An open mesh's ticket joins it too.
    let third = NodeProcess::builder("o2").join(&first).start().await?;
    let mesh = Mesh::from_nodes(vec![first, second, third]);
    let result = async {
        mesh.wait_converged(CONVERGE).await?;
        for node in mesh.iter() {
            ensure!(!node.node_json().private, "{} is private", node.name());
            ensure!(
                node.mesh_secret().is_none(),
                "an open ticket holds no secret"
            );
        }
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_member_rejoins_with_its_stored_secret_and_never_switches_mesh() -> Result<()> {
    let mut mesh = Mesh::chain(3).await?;
    let result = async {
        mesh.wait_converged(CONVERGE).await?;
        let secret_file = mesh[2].data_dir().path().join("mesh.secret");
        let secret = std::fs::read_to_string(&secret_file)?;
        let peers_file = mesh[2].data_dir().path().join("peers.json");
        wait_until(
            "mesh[2] to remember its peers",
            Duration::from_secs(15),
            Duration::from_millis(100),
            async || Ok(std::fs::read_to_string(&peers_file)?.contains("12D3KooW")),
        )
        .await?;
        mesh[2].sigkill()?;

        // A data dir never leaves its mesh: not for --open, not for another mesh's ticket.
        let dir = mesh[2].data_dir().clone();
        for (flag, value, says) in [
            ("--open", None, "belongs to a private mesh"),
            ("--join", Some(forged_ticket(&mesh[0])?), "another mesh"),
        ] {
            let mut builder = NodeProcess::builder("switcher")
                .data_dir(dir.clone())
                .arg(flag);
            if let Some(value) = value {
                builder = builder.arg(value);
            }
            match builder.start().await {
                Ok(_) => bail!("{flag} started in a private mesh's data dir"),
                Err(e) => {
                    let e = format!("{e:#}");
                    ensure!(
                        e.contains("exit status: 1") && e.contains(says),
                        "{flag}: {e}"
                    );
                }
            }
        }

        mesh[2].restart_in_place().await?;
        ensure!(
            std::fs::read_to_string(&secret_file)? == secret,
            "the secret changed"
        );
        mesh.wait_converged(CONVERGE).await
    }
    .await;
    mesh.report(result)
}
