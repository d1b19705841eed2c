//! The node owner's policy, end to end with real containers: a node whose owner allows only wasm
//! never receives a container instance, and when the nodes that allow containers are full (their
//! owners cap the instances), the replicas left over are reported unplaced, saying why.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mycel_protocol::api::InstanceState;
use mycel_tests::{
    Mesh, NodeProcess,
    apps::container_manifest,
    docker::{containers_of, remove_containers_of},
    hello_container_example, wait_until,
};
use reqwest::StatusCode;
use tempfile::TempDir;

/// Starts `name` joined through `join`, with `config` as its config file (kept in `dir`).
async fn start_with_policy(
    name: &str,
    join: Option<&str>,
    config: &str,
    dir: &TempDir,
) -> Result<NodeProcess> {
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, config)?;
    let mut builder = NodeProcess::builder(name)
        .arg("--config")
        .arg(path.to_str().context("a UTF-8 path")?);
    if let Some(join) = join {
        builder = builder.bootstrap(join);
    }
    builder.start().await
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_go_only_where_owners_allow_them_and_the_rest_is_unplaced_with_the_reason()
-> Result<()> {
    let (archive, _) = hello_container_example()?;
    let configs = tempfile::tempdir()?;
    let wasm_only = start_with_policy(
        "wasm-only",
        None,
        "[policy]\nruntimes = [\"wasm\"]\n",
        &configs,
    )
    .await?;
    let join = wasm_only.join_ticket().to_owned();
    let mut nodes = vec![wasm_only];
    for name in ["capped-1", "capped-2"] {
        nodes.push(
            start_with_policy(name, Some(&join), "[policy]\nmax_instances = 1\n", &configs).await?,
        );
    }
    let mesh = Mesh::from_nodes(nodes);
    let result = async {
        let all: Vec<&NodeProcess> = mesh.iter().collect();
        mycel_tests::apps::agreed_group(&all, 3, Duration::from_secs(30)).await?;
        let wasm_only = mesh[0].peer_id().to_owned();
        let seen = mesh[1].nodes().await?;
        let advertised = &mycel_tests::mesh::find(&seen, &wasm_only)
            .context("capped-1 lists the wasm-only node")?
            .runtimes;
        ensure!(
            advertised.iter().map(|r| r.as_str()).collect::<Vec<_>>() == ["wasm"],
            "the wasm-only node advertises {advertised:?}"
        );

        // Pushed and deployed through the wasm-only node: it takes part, it runs none.
        let (status, image) = mesh[0].push_image(&archive).await?;
        ensure!(status == StatusCode::CREATED, "push: {status} {image}");
        let hash = image["hash"].as_str().context("hash")?;
        let (status, answer) = mesh[0]
            .deploy(&container_manifest("capped", hash, 3))
            .await?;
        ensure!(status == StatusCode::CREATED, "deploy: {status} {answer}");

        wait_until(
            "two running instances and one replica unplaced",
            Duration::from_secs(90),
            Duration::from_millis(200),
            async || {
                let app = mesh[0].app("capped").await?;
                let running = app
                    .instances
                    .iter()
                    .filter(|i| i.state == InstanceState::Running)
                    .count();
                ensure!(running == 2 && app.unplaced.is_some(), "{app:?}");
                Ok(true)
            },
        )
        .await?;
        let app = mesh[2].app("capped").await?;
        ensure!(app.instances.len() == 2, "{app:?}");
        ensure!(
            app.instances.iter().all(|i| i.node != wasm_only),
            "a container instance was placed on the wasm-only node: {app:?}"
        );
        let mut nodes: Vec<&str> = app.instances.iter().map(|i| i.node.as_str()).collect();
        nodes.sort();
        let mut capped = vec![mesh[1].peer_id(), mesh[2].peer_id()];
        capped.sort();
        ensure!(nodes == capped, "one instance on each capped node: {app:?}");
        let reason = app.unplaced.as_deref().unwrap_or_default();
        ensure!(
            reason.contains("1 replica") && reason.contains("policy.max_instances"),
            "the reason names the owners' limit: {reason:?}"
        );
        ensure!(
            containers_of(&wasm_only)?.is_empty(),
            "the wasm-only node's engine runs a container for it"
        );
        Ok(())
    }
    .await;
    let result = mesh.report(result);
    remove_containers_of(&mesh);
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_its_node_refuses_is_reported_failed_with_the_reason() -> Result<()> {
    // The default policy pulls from no registry: an image that is neither in the mesh nor in the
    // engine cannot start, and the app's status says why, on every node.
    let mesh = Mesh::star(2).await?;
    let result = async {
        let manifest = serde_json::json!({
            "name": "unpullable",
            "version": "1.0.0",
            "container": {"image": "registry.example/team/none-such:1", "port": 8080},
            "resources": {"memory_mb": 32, "cpu": 0.1},
        });
        let (status, answer) = mesh[0].deploy(&manifest).await?;
        ensure!(status == StatusCode::CREATED, "deploy: {status} {answer}");
        wait_until(
            "the instance to be reported failed with its reason",
            Duration::from_secs(60),
            Duration::from_millis(200),
            async || {
                for node in mesh.iter() {
                    let app = node.app("unpullable").await?;
                    let failed = app.instances.iter().find(|i| {
                        i.state == InstanceState::Failed
                            && i.error.as_deref().is_some_and(|e| {
                                e.contains("registry.example") && e.contains("policy.registries")
                            })
                    });
                    ensure!(failed.is_some(), "{}: {app:?}", node.name());
                }
                Ok(true)
            },
        )
        .await?;
        Ok(())
    }
    .await;
    let result = mesh.report(result);
    remove_containers_of(&mesh);
    result
}
