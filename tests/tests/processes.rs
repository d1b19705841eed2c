//! Sandboxed processes end to end, on nodes that offer only `wasm,process` (no Docker): a static
//! binary deployed with the CLI runs as 2 replicas and answers through every gateway, as a
//! non-root host uid that sees only its own processes and cannot write its root, under a memory
//! limit that holds; removing the app leaves no process; `kill -9` of a node takes its sandboxes
//! with it, and restarted it runs its share again.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mycel_protocol::api::InstanceState;
use mycel_tests::{
    Mesh, NodeProcess, hello_container_binary, hello_container_example, mycel_cli, sandboxes,
    wait_until,
};
use reqwest::StatusCode;

async fn running(node: &NodeProcess, app: &str) -> Result<usize> {
    Ok(node
        .app(app)
        .await?
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .count())
}

async fn get(node: &NodeProcess, path: &str) -> Result<(StatusCode, String)> {
    let response = node.through_gateway("hello-process", path).await?;
    Ok((response.status(), response.text().await?))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binary_runs_sandboxed_on_nodes_without_docker() -> Result<()> {
    let (archive, _) = hello_container_example()?;
    let manifest = archive
        .parent()
        .and_then(|target| target.parent())
        .context("the example's directory")?
        .join("process.toml");
    let hub = NodeProcess::builder("n0")
        .arg("--runtimes")
        .arg("wasm,process")
        .start()
        .await?;
    let spoke = NodeProcess::builder("n1")
        .join(&hub)
        .arg("--runtimes")
        .arg("wasm,process")
        .start()
        .await?;
    let mut mesh = Mesh::from_nodes(vec![hub, spoke]);
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let out = mycel_cli([
            "deploy",
            "--node",
            mesh[0].api(),
            manifest.to_str().context("a UTF-8 path")?,
            "--wait",
            "--timeout",
            "60",
        ])
        .await?;
        ensure!(out.status.success(), "mycel deploy: {out:?}");
        let app = mesh[0].app("hello-process").await?;
        ensure!(app.kind.as_str() == "process", "{app:?}");
        let nodes: std::collections::BTreeSet<&str> =
            app.instances.iter().map(|i| i.node.as_str()).collect();
        ensure!(nodes.len() == 2, "one replica on each node: {app:?}");

        for node in mesh.iter() {
            let (status, body) = get(node, "/").await?;
            ensure!(
                status == StatusCode::OK && body == "hello from a mycel container: hi\n",
                "{} answers {status} {body}",
                node.name()
            );
        }
        let (_, whoami) = get(&mesh[0], "/whoami").await?;
        ensure!(
            whoami.starts_with("uid=1000 readonly_root=true "),
            "{whoami}"
        );
        let (_, seen) = get(&mesh[0], "/processes").await?;
        ensure!(seen == "1\n", "it sees its own process only: {seen}");
        for instance in &app.instances {
            let pids = sandboxes::marked("MYCEL_INSTANCE", &instance.id);
            ensure!(!pids.is_empty(), "{} runs", instance.id);
            for pid in pids {
                let uid = sandboxes::uid_of(pid).context("a running process")?;
                ensure!(uid != 0, "{} runs as host root", instance.id);
            }
        }
        // Its memory limit (32 MB) holds: 8 MiB is fine, 64 MiB is not.
        let (status, _) = get(&mesh[0], "/alloc/8").await?;
        ensure!(status == StatusCode::OK, "{status}");
        let (status, _) = get(&mesh[0], "/alloc/64").await?;
        ensure!(
            status != StatusCode::OK,
            "64 MiB under a 32 MB limit answered {status}"
        );

        // kill -9: the node's sandboxes die with it; restarted, it runs its share again.
        // (The instance the 64 MiB request killed is restarted first.)
        let victim = mesh[1].peer_id().to_owned();
        wait_until(
            "2 replicas running, one on the node to kill",
            Duration::from_secs(60),
            Duration::from_millis(100),
            async || {
                Ok(running(&mesh[0], "hello-process").await? == 2
                    && !sandboxes::marked("MYCEL_NODE", &victim).is_empty())
            },
        )
        .await?;
        mesh[1].sigkill()?;
        wait_until(
            "the killed node's sandboxes to die with it",
            Duration::from_secs(10),
            Duration::from_millis(50),
            async || Ok(sandboxes::marked("MYCEL_NODE", &victim).is_empty()),
        )
        .await?;
        mesh[1].restart_in_place().await?;
        wait_until(
            "2 replicas running again",
            Duration::from_secs(90),
            Duration::from_millis(200),
            async || Ok(running(&mesh[0], "hello-process").await? == 2),
        )
        .await?;

        // Removed: no process of it is left anywhere.
        let out = mycel_cli(["stop", "--node", mesh[0].api(), "hello-process"]).await?;
        ensure!(out.status.success(), "mycel stop: {out:?}");
        // A stop drains first: a request still running (one the 64 MiB allocation left stuck
        // at the memory limit, say) has its time limit, 30 s, and a second more.
        wait_until(
            "no process of the removed app",
            Duration::from_secs(60),
            Duration::from_millis(100),
            async || {
                Ok(mesh
                    .iter()
                    .all(|n| sandboxes::marked("MYCEL_NODE", n.peer_id()).is_empty()))
            },
        )
        .await?;
        Ok(())
    }
    .await;
    mesh.report(result)
}

/// A process app on a mesh where one node has sandboxes and the other only Docker: one replica
/// on each, the second in an image its node made of the binary, both answering.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_docker_and_no_sandbox_runs_the_binary_in_an_image_of_its_own() -> Result<()> {
    let binary = hello_container_binary()?;
    let sandboxes = NodeProcess::builder("sandboxes")
        .arg("--runtimes")
        .arg("wasm,process")
        .start()
        .await?;
    let docker = NodeProcess::builder("docker")
        .join(&sandboxes)
        .arg("--runtimes")
        .arg("wasm,docker")
        .start()
        .await?;
    let mesh = Mesh::from_nodes(vec![sandboxes, docker]);
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let hash = mesh[0].push(std::fs::read(&binary)?).await?;
        let manifest = serde_json::json!({
            "name": "hello-process", "version": "1", "replicas": 2,
            "process": {"binary": hash},
            "resources": {"memory_mb": 32, "cpu": 0.25},
            "health": {"path": "/healthz"},
        });
        let (status, answer) = mesh[0].deploy(&manifest).await?;
        ensure!(status == StatusCode::CREATED, "{status} {answer}");
        wait_until(
            "2 replicas running",
            Duration::from_secs(60),
            Duration::from_millis(100),
            async || Ok(running(&mesh[0], "hello-process").await? == 2),
        )
        .await?;
        let app = mesh[0].app("hello-process").await?;
        let nodes: std::collections::BTreeSet<&str> =
            app.instances.iter().map(|i| i.node.as_str()).collect();
        ensure!(nodes.len() == 2, "one replica on each node: {app:?}");
        ensure!(
            mycel_tests::docker::containers_of(mesh[1].peer_id())?.len() == 1,
            "the Docker node runs it as a container"
        );
        ensure!(!sandboxes::marked("MYCEL_NODE", mesh[0].peer_id()).is_empty());
        // Both answer: as uid 1000 in the sandbox, as nobody (65534) in the hardened container.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let (status, whoami) = get(&mesh[1], "/whoami").await?;
            ensure!(status == StatusCode::OK, "{status} {whoami}");
            seen.insert(whoami.split(' ').take(2).collect::<Vec<_>>().join(" "));
        }
        let expected = [
            "uid=1000 readonly_root=true",
            "uid=65534 readonly_root=true",
        ];
        ensure!(
            seen.iter().map(String::as_str).eq(expected),
            "answers from both replicas: {seen:?}"
        );
        Ok(())
    }
    .await;
    mycel_tests::docker::remove_containers_of(&mesh);
    mesh.report(result)
}
