//! The placement group, end to end with real nodes: it forms by itself, survives losing its
//! leader, refuses writes without a quorum (fast) while the majority keeps working, keeps every
//! app across a full restart, and a rejected manifest changes nothing anywhere.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context, Result, ensure};
use mycel_protocol::api::Apps;
use mycel_tests::{
    Mesh, NodeProcess,
    apps::{agreed_group, manifest},
    netns::{Net, namespaces_or_skip},
    wait_until,
};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::time::Instant;

/// Waits until every node in `nodes` lists the app `name` with `replicas` placed instances.
async fn everyone_has(nodes: &[&NodeProcess], name: &str, replicas: usize) -> Result<()> {
    wait_until(
        &format!("every node to show {name} with {replicas} instances"),
        Duration::from_secs(20),
        Duration::from_millis(100),
        async || {
            for node in nodes {
                let app = node.app(name).await?;
                ensure!(
                    app.instances.len() == replicas,
                    "{} shows {} instances of {name}",
                    node.name(),
                    app.instances.len()
                );
            }
            Ok(true)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn five_nodes_form_one_group_and_outlive_their_leader() -> Result<()> {
    let mut mesh = Mesh::star(5).await?;
    let result = async {
        let all: Vec<&NodeProcess> = mesh.iter().collect();
        let group = agreed_group(&all, 5, Duration::from_secs(30)).await?;
        ensure!(
            group.learners.is_empty(),
            "five nodes, five voters: {group:?}"
        );

        // A deploy through a follower is forwarded to the leader and shows on every node.
        let leader = mesh.index_of(group.leader.as_deref().unwrap_or_default())?;
        let follower = (leader + 1) % mesh.len();
        let module = mesh[follower]
            .push(b"not yet a real module".to_vec())
            .await?;
        let (status, body) = mesh[follower]
            .deploy(&manifest("first", "1.0.0", 5, &module))
            .await?;
        ensure!(status == StatusCode::CREATED, "deploy: {status} {body}");
        ensure!(
            body == json!({"name": "first", "version": "1.0.0"}),
            "{body}"
        );
        let all: Vec<&NodeProcess> = mesh.iter().collect();
        everyone_has(&all, "first", 5).await?;
        let placed: BTreeSet<String> = mesh[0]
            .app("first")
            .await?
            .instances
            .into_iter()
            .map(|i| i.node)
            .collect();
        ensure!(placed.len() == 5, "five replicas on five nodes: {placed:?}");

        // The leader dies; the others elect a new one and keep taking deploys.
        let old_leader = mesh[leader].peer_id().to_string();
        mesh[leader].sigkill()?;
        let killed_at = Instant::now();
        let survivors: Vec<&NodeProcess> = mesh.running().collect();
        wait_until(
            "a new leader",
            Duration::from_secs(15),
            Duration::from_millis(50),
            async || {
                let view = survivors[0].cluster().await?;
                Ok(view.leader.is_some_and(|l| l != old_leader))
            },
        )
        .await?;
        eprintln!(
            "new leader {:?} after the leader was killed",
            killed_at.elapsed()
        );

        let follower = survivors
            .iter()
            .find(|n| n.peer_id() != old_leader && Some(n.peer_id()) != group.leader.as_deref())
            .context("a survivor")?;
        wait_until(
            "a deploy through a follower after the leader died",
            Duration::from_secs(15),
            Duration::from_millis(200),
            async || {
                let (status, body) = follower
                    .deploy(&manifest("second", "1.0.0", 1, &module))
                    .await?;
                ensure!(status == StatusCode::CREATED, "deploy: {status} {body}");
                Ok(true)
            },
        )
        .await?;
        everyone_has(&survivors, "second", 1).await?;

        // The dead voter is replaced: four live nodes keep three voters, none of them dead...
        let group = agreed_group(&survivors, 3, Duration::from_secs(30)).await?;
        ensure!(!group.voters.contains(&old_leader), "{group:?}");
        // ...and its instances move to live nodes once it has been dead past the grace time.
        wait_until(
            "the dead node's instances to move",
            Duration::from_secs(40),
            Duration::from_millis(250),
            async || {
                let app = survivors[0].app("first").await?;
                ensure!(
                    app.instances.iter().all(|i| i.node != old_leader),
                    "an instance is still on the dead node"
                );
                Ok(app.instances.len() == 5)
            },
        )
        .await
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_survive_a_full_restart() -> Result<()> {
    let mut mesh = Mesh::star(3).await?;
    let result = async {
        let all: Vec<&NodeProcess> = mesh.iter().collect();
        agreed_group(&all, 3, Duration::from_secs(30)).await?;
        let module = mesh[1].push(b"module".to_vec()).await?;
        for (name, replicas) in [("alpha", 1), ("beta", 2)] {
            let (status, body) = mesh[1]
                .deploy(&manifest(name, "1.0.0", replicas, &module))
                .await?;
            ensure!(
                status == StatusCode::CREATED,
                "deploy {name}: {status} {body}"
            );
        }
        // Unsigned, through the node that took the deploy: its key owns the app.
        let (status, body) = mesh[1]
            .send_json(Method::POST, "/v1/apps/beta/scale", &json!({"replicas": 3}))
            .await?;
        ensure!(status == StatusCode::OK, "scale: {status} {body}");
        everyone_has(&all, "beta", 3).await?;
        let before = mesh[0].apps().await?;

        // Everything goes down at once: one node leaves, two are killed outright.
        mesh[2].sigterm()?;
        mesh[2].wait_exit(Duration::from_secs(10)).await?;
        mesh[0].sigkill()?;
        mesh[1].sigkill()?;
        for i in 0..3 {
            mesh[i].restart_in_place().await?;
        }

        let all: Vec<&NodeProcess> = mesh.iter().collect();
        wait_until(
            "every node to list the apps it had before",
            Duration::from_secs(30),
            Duration::from_millis(100),
            async || {
                for node in &all {
                    let apps: Apps = node.apps().await?;
                    ensure!(
                        apps == before,
                        "{} lists {apps:?}, before the restart {before:?}",
                        node.name()
                    );
                }
                Ok(true)
            },
        )
        .await?;
        // And the group takes writes again.
        wait_until(
            "a deploy after the restart",
            Duration::from_secs(20),
            Duration::from_millis(200),
            async || {
                let (status, body) = all[0]
                    .deploy(&manifest("gamma", "1.0.0", 1, &module))
                    .await?;
                ensure!(status == StatusCode::CREATED, "deploy: {status} {body}");
                Ok(true)
            },
        )
        .await
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_manifests_change_nothing_anywhere() -> Result<()> {
    let mesh = Mesh::star(3).await?;
    let result = async {
        let all: Vec<&NodeProcess> = mesh.iter().collect();
        agreed_group(&all, 3, Duration::from_secs(30)).await?;
        let module = mesh[0].push(b"module".to_vec()).await?;
        let (status, _) = mesh[0]
            .deploy(&manifest("kept", "1.0.0", 1, &module))
            .await?;
        ensure!(status == StatusCode::CREATED);
        everyone_has(&all, "kept", 1).await?;
        let before = mesh[0].apps().await?;

        let unknown_blob = format!("blake3:{}", "0".repeat(64));
        let rejected = [
            json!({"name": "Bad_Name", "version": "1", "wasm": {"module": module}}),
            json!({"name": "kept", "version": "2", "wasm": {"module": "./hello.wasm"}}),
            json!({"name": "kept", "version": "2", "wasm": {"module": module},
                   "container": {"image": "x:1"}}),
            json!({"name": "kept", "version": "2", "wasm": {"module": module}, "replicas": -1}),
            json!({"name": "kept", "version": "2", "wasm": {"module": module}, "colour": "red"}),
            json!({"name": "kept", "version": "2", "wasm": {"module": unknown_blob}}),
            json!("not a manifest"),
        ];
        for (i, body) in rejected.iter().enumerate() {
            let node = &mesh[i % mesh.len()];
            let (status, answer) = node.deploy(body).await?;
            ensure!(
                status.is_client_error(),
                "{body} was answered {status} {answer}"
            );
            ensure!(
                answer["code"].is_string() && answer["error"].is_string(),
                "{status} without a JSON error: {answer}"
            );
        }
        for node in &all {
            let apps = node.apps().await?;
            ensure!(apps == before, "{} now lists {apps:?}", node.name());
            ensure!(node.app("kept").await?.version == "1.0.0");
        }
        Ok(())
    }
    .await;
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_minority_answers_no_quorum_fast_and_the_majority_keeps_working() -> Result<()> {
    if !namespaces_or_skip()? {
        return Ok(());
    }
    let net = Net::new()?;
    let (ns_a, ns_b) = (net.netns("a"), net.netns("b"));
    let a0 = NodeProcess::builder("a0")
        .in_netns(&ns_a, net.addr("a"))
        .start()
        .await?;
    let join = a0.join_ticket().to_string();
    let mut nodes = vec![a0];
    for (name, ns, side) in [
        ("a1", &ns_a, "a"),
        ("a2", &ns_a, "a"),
        ("b0", &ns_b, "b"),
        ("b1", &ns_b, "b"),
    ] {
        let node = NodeProcess::builder(name)
            .in_netns(ns, net.addr(side))
            .bootstrap(&join)
            .start()
            .await?;
        nodes.push(node);
    }
    let mesh = Mesh::from_nodes(nodes);
    let result = async {
        let all: Vec<&NodeProcess> = mesh.iter().collect();
        agreed_group(&all, 5, Duration::from_secs(30)).await?;
        // Both sides hold the module, so the minority's answer is about quorum, not the blob.
        let module = mesh[0].push(b"module".to_vec()).await?;
        mesh[3].push(b"module".to_vec()).await?;

        net.isolate_b(true)?;
        // The minority (two of five voters) cannot commit: it says so, fast.
        for b in [3, 4] {
            let started = Instant::now();
            let (status, body) = mesh[b]
                .deploy(&manifest("minority", "1.0.0", 1, &module))
                .await?;
            let took = started.elapsed();
            ensure!(
                status == StatusCode::SERVICE_UNAVAILABLE && body["code"] == "no_quorum",
                "{} answered {status} {body}",
                mesh[b].name()
            );
            ensure!(took < Duration::from_secs(8), "no_quorum took {took:?}");
            eprintln!("{} answered no_quorum in {took:?}", mesh[b].name());
        }
        // The majority keeps working (after electing a leader of its own if it must).
        let majority: Vec<&NodeProcess> = mesh.iter().take(3).collect();
        wait_until(
            "a deploy on the majority side",
            Duration::from_secs(20),
            Duration::from_millis(200),
            async || {
                let (status, body) = majority[1]
                    .deploy(&manifest("majority", "1.0.0", 1, &module))
                    .await?;
                ensure!(status == StatusCode::CREATED, "deploy: {status} {body}");
                Ok(true)
            },
        )
        .await?;
        everyone_has(&majority, "majority", 1).await?;

        // Healed: one group again, and the minority has caught up on what it missed.
        net.isolate_b(false)?;
        everyone_has(&all, "majority", 1).await?;
        for node in &all {
            ensure!(
                node.apps().await?.apps.iter().all(|a| a.name != "minority"),
                "{} lists the write that was refused",
                node.name()
            );
        }
        agreed_group(&all, 5, Duration::from_secs(30)).await?;
        Ok(())
    }
    .await;
    let result = mesh.report(result);
    drop(mesh);
    drop(net);
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nodes_owner_policy_is_advertised_and_honoured() -> Result<()> {
    let config = tempfile::tempdir()?;
    let path = config.path().join("mycel.toml");
    std::fs::write(&path, "[policy]\nmax_instances = 0\n")?;
    let n0 = NodeProcess::start("n0", None).await?;
    let join = n0.join_ticket().to_string();
    let n1 = NodeProcess::start("n1", Some(&join)).await?;
    let closed = NodeProcess::builder("closed")
        .bootstrap(&join)
        .arg("--config")
        .arg(path.to_str().context("a UTF-8 path")?)
        .start()
        .await?;
    let mesh = Mesh::from_nodes(vec![n0, n1, closed]);
    let result = async {
        let all: Vec<&NodeProcess> = mesh.iter().collect();
        agreed_group(&all, 3, Duration::from_secs(30)).await?;
        let closed = mesh[2].peer_id();
        let seen = mesh[0].nodes().await?;
        let policy = &mycel_tests::mesh::find(&seen, closed)
            .context("n0 lists the closed node")?
            .policy;
        ensure!(policy.max_instances == Some(0), "{policy:?}");

        let module = mesh[0].push(b"module".to_vec()).await?;
        let (status, body) = mesh[2]
            .deploy(&manifest("web", "1.0.0", 4, &module))
            .await?;
        ensure!(status == StatusCode::CREATED, "deploy: {status} {body}");
        let app = mesh[2].app("web").await?;
        ensure!(app.instances.len() == 4, "{app:?}");
        ensure!(
            app.instances.iter().all(|i| i.node != closed),
            "an instance landed on the node whose owner allows none: {app:?}"
        );
        Ok(())
    }
    .await;
    mesh.report(result)
}
