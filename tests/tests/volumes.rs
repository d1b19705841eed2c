//! Volumes end to end, on real nodes with a real Docker engine: a counter kept on a volume
//! survives redeploys, a graceful restart and a `kill -9` of its node, and a stop (not a purge);
//! its size holds; hostile names and paths are refused; a sandboxed process keeps data too; and
//! after a snapshot and a `kill -9` of its node the app restarts elsewhere with the snapshot's
//! data.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, ensure};
use mycel_tests::{
    Mesh, NodeProcess, apps::agreed_group, docker::remove_containers_of, hello_container_binary,
    hello_container_example, hello_example, mycel_cli, wait_until,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// `mycel deploy` of `manifest` through `node`, with the CLI's user key.
async fn deploy(node: &NodeProcess, manifest: &Value) -> Result<std::process::Output> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("app.json");
    std::fs::write(&file, manifest.to_string())?;
    mycel_cli([
        "deploy",
        "--node",
        node.api(),
        file.to_str().context("utf-8")?,
    ])
    .await
}

async fn cli_ok<const N: usize>(args: [&str; N]) -> Result<String> {
    let out = mycel_cli(args).await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "mycel {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// `GET path` of `app` through `node`'s gateway, once it answers 200 (for `/count`, which
/// changes what it reads, `/` is waited on first and the count asked once).
async fn get(node: &NodeProcess, app: &str, path: &str) -> Result<String> {
    let (client, url) = node.gateway_client(app, Duration::from_secs(30))?;
    wait_until(
        &format!("{app} to answer"),
        Duration::from_secs(90),
        Duration::from_millis(200),
        async || Ok(client.get(&url).send().await?.status() == StatusCode::OK),
    )
    .await?;
    let response = client.get(format!("{url}{}", &path[1..])).send().await?;
    let status = response.status();
    let body = response.text().await?;
    ensure!(status == StatusCode::OK, "{path}: {status} {body}");
    Ok(body.trim().to_owned())
}

/// The volumes `node` lists for `app`.
async fn volumes(node: &NodeProcess, app: &str) -> Result<Vec<Value>> {
    let out = cli_ok(["volumes", "--node", node.api(), "--json", app]).await?;
    let list: Value = serde_json::from_str(&out)?;
    Ok(list["volumes"].as_array().cloned().unwrap_or_default())
}

fn counter(archive: &Value, version: &str, extra: Value) -> Value {
    let mut manifest = json!({
        "name": "counter", "version": version,
        "container": {"archive": archive, "port": 8080},
        "health": {"path": "/healthz"},
        "volumes": [{"name": "data", "path": "/data", "size_mb": 16}],
    });
    if let (Some(manifest), Value::Object(extra)) = (manifest.as_object_mut(), extra) {
        manifest.extend(extra);
    }
    manifest
}

#[tokio::test(flavor = "multi_thread")]
async fn a_counter_on_a_volume_outlives_redeploys_restarts_and_stops_until_a_purge() -> Result<()> {
    let (archive, _) = hello_container_example()?;
    let mut mesh = Mesh::from_nodes(vec![NodeProcess::start("n0", None).await?]);
    let result = async {
        let (status, pushed) = mesh[0].push_image(&archive).await?;
        ensure!(status == StatusCode::CREATED, "{status} {pushed}");
        let hash = &pushed["hash"];

        // Hostile names, paths and sizes: refused, nothing deployed.
        for volume in [
            json!({"name": "../x", "path": "/data", "size_mb": 16}),
            json!({"name": "data", "path": "/proc/self", "size_mb": 16}),
            json!({"name": "data", "path": "/data/../etc", "size_mb": 16}),
            json!({"name": "data", "path": "relative", "size_mb": 16}),
            json!({"name": "data", "path": "/run/secrets", "size_mb": 16}),
            json!({"name": "data", "path": "/data", "size_mb": 1}),
        ] {
            let out = deploy(&mesh[0], &counter(hash, "1", json!({"volumes": [volume]}))).await?;
            let err = String::from_utf8_lossy(&out.stderr);
            ensure!(
                !out.status.success() && err.contains("volumes[0]"),
                "{volume}: {err}"
            );
        }
        ensure!(volumes(&mesh[0], "counter").await?.is_empty());

        let out = deploy(&mesh[0], &counter(hash, "1", json!({}))).await?;
        ensure!(out.status.success(), "{out:?}");
        mesh[0].wait_running("counter", 1).await?;
        for want in 1..=3 {
            ensure!(get(&mesh[0], "counter", "/count").await? == want.to_string());
        }

        // A redeploy replaces the instance; the volume stays.
        let redeployed = counter(hash, "2", json!({"env": {"GREETING": "again"}}));
        ensure!(deploy(&mesh[0], &redeployed).await?.status.success());
        wait_until(
            "version 2 to answer",
            Duration::from_secs(90),
            Duration::from_millis(200),
            async || Ok(get(&mesh[0], "counter", "/").await?.ends_with("again")),
        )
        .await?;
        ensure!(get(&mesh[0], "counter", "/count").await? == "4");

        let listed = cli_ok(["volumes", "--node", mesh[0].api()]).await?;
        ensure!(
            listed.contains("counter") && listed.contains("/data") && listed.contains("16 MiB"),
            "{listed}"
        );

        // A graceful restart of the node, then a kill -9 and a start in place.
        mesh[0].restart(&[]).await?;
        mesh[0].wait_running("counter", 1).await?;
        ensure!(get(&mesh[0], "counter", "/count").await? == "5");
        mesh[0].sigkill()?;
        mesh[0].restart_in_place().await?;
        mesh[0].wait_running("counter", 1).await?;
        ensure!(get(&mesh[0], "counter", "/count").await? == "6");

        // Its size holds: 20 MiB do not fit in 16.
        let filled = get(&mesh[0], "counter", "/fill/20").await?;
        ensure!(filled.contains("No space left on device"), "{filled}");

        // A stop keeps the volume for the owner's next deploy.
        cli_ok(["stop", "--node", mesh[0].api(), "counter"]).await?;
        let kept = volumes(&mesh[0], "counter").await?;
        ensure!(kept.len() == 1 && kept[0]["deployed"] == false, "{kept:?}");
        ensure!(deploy(&mesh[0], &redeployed).await?.status.success());
        mesh[0].wait_running("counter", 1).await?;
        ensure!(get(&mesh[0], "counter", "/count").await? == "7");

        // A purge deletes it, here and in the mesh's records.
        cli_ok(["stop", "--node", mesh[0].api(), "--purge", "counter"]).await?;
        ensure!(volumes(&mesh[0], "counter").await?.is_empty());
        let dir = mesh[0].data_dir().path().join("volumes/counter");
        wait_until(
            "the volume's files to go",
            Duration::from_secs(20),
            Duration::from_millis(100),
            async || Ok(!dir.exists()),
        )
        .await?;
        Ok(())
    }
    .await;
    remove_containers_of(&mesh);
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandboxed_process_keeps_its_data_on_a_volume() -> Result<()> {
    let binary = hello_container_binary()?;
    let node = NodeProcess::builder("sandboxes")
        .arg("--runtimes")
        .arg("wasm,process")
        .start()
        .await?;
    let mesh = Mesh::from_nodes(vec![node]);
    let result = async {
        let hash = mesh[0].push(std::fs::read(&binary)?).await?;
        let manifest = |version: &str| {
            json!({
                "name": "notes", "version": version,
                "process": {"binary": hash},
                "health": {"path": "/healthz"},
                "env": {"DATA_DIR": "/var/notes"},
                "volumes": [{"name": "notes", "path": "/var/notes", "size_mb": 8}],
            })
        };
        ensure!(deploy(&mesh[0], &manifest("1")).await?.status.success());
        mesh[0].wait_running("notes", 1).await?;
        ensure!(get(&mesh[0], "notes", "/count").await? == "1");
        ensure!(get(&mesh[0], "notes", "/count").await? == "2");
        ensure!(deploy(&mesh[0], &manifest("2")).await?.status.success());
        wait_until(
            "version 2 to run",
            Duration::from_secs(60),
            Duration::from_millis(200),
            async || {
                let app = mesh[0].app("notes").await?;
                Ok(app.version == "2" && app.instances.iter().all(|i| i.id.contains("-2-")))
            },
        )
        .await?;
        mesh[0].wait_running("notes", 1).await?;
        ensure!(get(&mesh[0], "notes", "/count").await? == "3");
        let filled = get(&mesh[0], "notes", "/fill/12").await?;
        ensure!(filled.contains("No space left on device"), "{filled}");
        Ok(())
    }
    .await;
    mesh.report(result)
}

/// A wasm component keeps its counter in a preopened volume, across a redeploy; with
/// `snapshot_every_ms` its node snapshots the volume by itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_wasm_app_keeps_data_on_a_volume_that_is_snapshotted_by_itself() -> Result<()> {
    let (module, _) = hello_example()?;
    let mesh = Mesh::from_nodes(vec![NodeProcess::start("n0", None).await?]);
    let result = async {
        let hash = mesh[0].push(std::fs::read(&module)?).await?;
        let manifest = |version: &str| {
            json!({"name": "tally", "version": version, "wasm": {"module": hash},
                "volumes": [{"name": "data", "path": "/data", "size_mb": 8,
                    "snapshot_every_ms": 1000}]})
        };
        ensure!(deploy(&mesh[0], &manifest("1")).await?.status.success());
        mesh[0].wait_running("tally", 1).await?;
        ensure!(get(&mesh[0], "tally", "/count").await? == "1");
        ensure!(get(&mesh[0], "tally", "/count").await? == "2");
        ensure!(deploy(&mesh[0], &manifest("2")).await?.status.success());
        wait_until(
            "version 2 to run alone",
            Duration::from_secs(60),
            Duration::from_millis(200),
            async || {
                let app = mesh[0].app("tally").await?;
                Ok(app.version == "2" && app.instances.iter().all(|i| i.id.contains("-2-")))
            },
        )
        .await?;
        ensure!(get(&mesh[0], "tally", "/count").await? == "3");
        // No snapshot was asked for; two come by themselves.
        let mut first = Value::Null;
        wait_until(
            "periodic snapshots",
            Duration::from_secs(30),
            Duration::from_millis(200),
            async || {
                let listed = volumes(&mesh[0], "tally").await?;
                let snapshot = listed[0]["snapshot"].clone();
                if first.is_null() {
                    first = snapshot;
                    return Ok(false);
                }
                Ok(!snapshot.is_null() && snapshot["taken_at_ms"] != first["taken_at_ms"])
            },
        )
        .await?;
        Ok(())
    }
    .await;
    mesh.report(result)
}

/// A node run as systemd runs it, in a mount namespace of its own: its volumes still reach the
/// Docker engine (which binds them from the host's namespace), size and all.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_in_its_own_mount_namespace_gives_containers_its_volumes() -> Result<()> {
    let (archive, _) = hello_container_example()?;
    let node = NodeProcess::builder("n0")
        .own_mount_namespace()
        .start()
        .await?;
    let mesh = Mesh::from_nodes(vec![node]);
    let result = async {
        let (status, pushed) = mesh[0].push_image(&archive).await?;
        ensure!(status == StatusCode::CREATED, "{status} {pushed}");
        ensure!(
            deploy(&mesh[0], &counter(&pushed["hash"], "1", json!({})))
                .await?
                .status
                .success()
        );
        mesh[0].wait_running("counter", 1).await?;
        ensure!(get(&mesh[0], "counter", "/count").await? == "1");
        ensure!(
            mounted_under(mesh[0].data_dir().path()),
            "mounted in the host's namespace"
        );
        let filled = get(&mesh[0], "counter", "/fill/20").await?;
        ensure!(filled.contains("No space left on device"), "{filled}");
        Ok(())
    }
    .await;
    remove_containers_of(&mesh);
    mesh.report(result)
}

/// Whether `dir` (a node's data dir) holds a mounted volume.
fn mounted_under(dir: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.to_string_lossy();
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount| mount.starts_with(dir.as_ref()))
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_snapshot_and_a_kill_9_the_app_restarts_elsewhere_with_the_snapshot() -> Result<()>
{
    let (archive, _) = hello_container_example()?;
    let mut mesh = Mesh::star(3).await?;
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        // Three voters: the group keeps its quorum (and moves the app) when one node dies.
        let all: Vec<&NodeProcess> = mesh.iter().collect();
        agreed_group(&all, 3, Duration::from_secs(60)).await?;
        let (status, pushed) = mesh[0].push_image(&archive).await?;
        ensure!(status == StatusCode::CREATED, "{status} {pushed}");
        let manifest = counter(&pushed["hash"], "1", json!({"volume_grace_ms": 1000}));
        ensure!(deploy(&mesh[0], &manifest).await?.status.success());
        mesh[0].wait_running("counter", 1).await?;
        let first = mesh[0].app("counter").await?.instances[0].node.clone();
        let held = mesh.index_of(&first)?;
        let other = (held + 1) % 3;
        // The image too must outlive the node: pushed to the others as well.
        for node in mesh.iter().filter(|n| n.peer_id() != first) {
            let (status, again) = node.push_image(&archive).await?;
            ensure!(status == StatusCode::CREATED, "{status} {again}");
        }
        for want in 1..=3 {
            ensure!(get(&mesh[other], "counter", "/count").await? == want.to_string());
        }
        ensure!(mounted_under(mesh[held].data_dir().path()));

        // A snapshot, asked of another node; it answers once the snapshot is in the mesh.
        let out = cli_ok([
            "volume",
            "snapshot",
            "--node",
            mesh[other].api(),
            "--json",
            "counter",
            "data",
        ])
        .await?;
        let snapshot: Value = serde_json::from_str(&out)?;
        ensure!(snapshot["node"] == first.as_str(), "{snapshot}");
        // Two other nodes keep copies.
        wait_until(
            "the snapshot's copies",
            Duration::from_secs(60),
            Duration::from_millis(200),
            async || {
                let listed = volumes(&mesh[other], "counter").await?;
                let copies = listed[0]["snapshot"]["copies"]
                    .as_array()
                    .map_or(0, Vec::len);
                Ok(copies == 2)
            },
        )
        .await?;
        // Written after the snapshot: lost with the node.
        ensure!(get(&mesh[other], "counter", "/count").await? == "4");

        mesh[held].sigkill()?;
        remove_containers_of(&mesh); // its engine would stop them with the machine
        wait_until(
            "the counter to run on another node",
            Duration::from_secs(90),
            Duration::from_millis(250),
            async || {
                let app = mesh[other].app("counter").await?;
                Ok(app.instances.iter().any(|i| {
                    i.node != first && i.state == mycel_protocol::api::InstanceState::Running
                }))
            },
        )
        .await?;
        ensure!(get(&mesh[other], "counter", "/count").await? == "4");
        let listed = volumes(&mesh[other], "counter").await?;
        let nodes = listed[0]["nodes"].as_array().map_or(0, Vec::len);
        ensure!(nodes == 2, "the new node holds a copy too: {listed:?}");
        Ok(())
    }
    .await;
    remove_containers_of(&mesh);
    mesh.report(result)
}
